/* calib.h - a node's calibration: what one layer, the head and the
 * embedding of a model cost on it, and its link to the next stage.
 * `egmla bench --calibrate` measures one (coordinator/calibrate.c) and
 * writes it as JSON; `egmla plan` and the `auto` split read it; a topology
 * names one per node (`calibration: FILE`).
 *
 * Decode: a layer's time for r rows (one per sequence) at C cached positions
 * is layer_s(r) + r * C * attend_s, where layer_s is interpolated in r
 * between the measured row counts (measured at `context` positions, so
 * layer_s(r) = measured - r * context * attend_s). Prefill: a chunk of T
 * rows starting at position p costs prefill_s(T) + T * (p + T / 2) *
 * prefill_attend_s. Times are seconds at `threads` threads. */
#ifndef EGM_CALIB_H
#define EGM_CALIB_H

#include "deploy/topology.h"
#include "model/config.h"
#include "base/err.h"

#define EGM_CALIB_MAX_ROWS 16
#define EGM_CALIB_MAX_COPIES 8
#define EGM_CALIB_COLO_ROWS 4

typedef struct {
    char model_type[32];
    int num_layers, hidden_size, vocab_size;
    int threads;
    int cores;                           /* the node's online CPUs (0: unknown) */
    int attn_bf16;                       /* measured with --attn-dtype bf16 */
    char host[128];
    int n_rows;
    int rows[EGM_CALIB_MAX_ROWS];        /* increasing */
    double layer_s[EGM_CALIB_MAX_ROWS];  /* one layer, attention at 0 positions */
    double head_s[EGM_CALIB_MAX_ROWS];   /* final norm + lm_head + sampling */
    double embed_s[EGM_CALIB_MAX_ROWS];
    int context;                         /* positions the decode rows were measured at */
    double attend_s;                     /* per row, per cached position, per layer */
    int n_chunks;
    int chunks[EGM_CALIB_MAX_ROWS];      /* prefill chunk rows, increasing */
    double prefill_s[EGM_CALIB_MAX_ROWS];/* one layer, a chunk at position 0 (attention removed) */
    double prefill_attend_s;             /* per row-position pair */
    /* the link to the next stage */
    int link_measured;                   /* 0: defaults (see egm_calib_link_default) */
    char transport[16];
    double link_latency_s;               /* one way, a small message */
    double link_bytes_per_s;
    double rank0_s;                      /* rank 0's work per micro-batch */
    /* co-location: stages on one node slow each other (memory bandwidth,
     * caches, and beyond its cores the cores). colo[n - 2][i]: a layer's
     * time when n copies of the measurement run at once (n = 2 ..
     * n_colo_copies + 1, each at `threads`), over its time alone, at
     * colo_rows[i] decode rows. n_colo_copies 0: not measured. */
    int n_colo_copies, n_colo_rows;
    int colo_rows[EGM_CALIB_COLO_ROWS];
    double colo[EGM_CALIB_MAX_COPIES][EGM_CALIB_COLO_ROWS];
} egm_calib;

/* Interpolated (linear in rows; beyond the ends, proportional). */
double egm_calib_layer(const egm_calib *k, int rows, long ctx_positions_per_row);
double egm_calib_head(const egm_calib *k, int rows);
double egm_calib_embed(const egm_calib *k, int rows);
/* One prefill chunk of T rows starting at position p, one layer. */
double egm_calib_prefill(const egm_calib *k, int T, long p);
/* The slowdown of a stage at `rows` rows while `copies` stages of this
 * node work at once (interpolated in rows, flat beyond the ends); 0 when
 * the calibration did not measure that many copies. */
double egm_calib_colocated(const egm_calib *k, int copies, int rows);

/* A synthetic calibration from the analytic cost (deploy/split.h): what
 * `plan` uses for a config when nothing was measured, and tests. */
void egm_calib_analytic(const egm_config *c, egm_calib *k);
/* Shared memory between two ranks on one host: 2 us, 5 GB/s. */
void egm_calib_link_default(egm_calib *k);

int egm_calib_load(const char *path, egm_calib *k, egm_err *e);
int egm_calib_save(const char *path, const egm_calib *k, egm_err *e);
/* The calibration a topology names for node `node` (a path relative to
 * the topology's folder), checked against the model; messages name the
 * topology's line too. */
int egm_calib_load_node(const egm_topology *t, int node, const egm_config *c, egm_calib *k,
                        egm_err *e);

/* Fails, naming the file, if the calibration is of another shape of model. */
int egm_calib_check(const egm_calib *k, const egm_config *c, const char *path, egm_err *e);

#endif
