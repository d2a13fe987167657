/* pipe.h - how the coordinator drives the stages, in-process or over MPI.
 *
 * The scheduler sees one interface: submit a micro-batch (with the sequence
 * admissions and releases that must take effect before it), and collect
 * results in the order micro-batches were submitted. Admissions travel with
 * micro-batches through the stages in order, so every stage sees them before
 * the first row of the new sequence, whatever the transport. With one rank
 * the stages run in-process (pipe_local.c); under mpirun the workers run
 * them (pipe_mpi.c). One scheduling code path for both. */
#ifndef EGM_PIPE_H
#define EGM_PIPE_H

#include "kernels/sampling.h"
#include "worker/admit.h"
#include "worker/head.h"
#include "worker/stage.h"

typedef struct {
    egm_mbatch b;
    const unsigned char *want;  /* [n]: rows that produce a result */
    const egm_admit *admits;
    int n_admits;
    const int *releases;        /* slots freed before this batch */
    int n_releases;
    int keep_logits;            /* send the wanted rows' logits back */
} egm_submit;

typedef struct {
    const egm_head_out *outs;
    int n_outs;
    const float *logits;        /* [n_outs, V] if keep_logits, else NULL */
} egm_result;

/* Per-stage facts the coordinator schedules with. */
typedef struct {
    int kv_blocks;              /* blocks in the smallest stage pool */
    int block_tokens;
    int n_slots;
} egm_pipe_caps;

/* One stage's cumulative time since it started: busy computing (stage
 * forward and head) out of elapsed; clock_s is the stage's own clock. */
typedef struct {
    int layer_lo, layer_hi;
    double busy_s, elapsed_s, clock_s;
} egm_stage_busy;

typedef struct egm_pipe egm_pipe;
struct egm_pipe {
    egm_pipe_caps caps;
    int n_stages;
    int (*submit)(egm_pipe *p, const egm_submit *s, egm_err *e);
    /* Results of the oldest submitted micro-batch; valid until next call. */
    int (*collect)(egm_pipe *p, egm_result *r, egm_err *e);
    void (*close)(egm_pipe *p);
    /* Asks every stage for its busy time, behind the micro-batches
     * submitted so far (it never delays them). */
    int (*busy_ask)(egm_pipe *p, egm_err *e);
    /* The answers to the oldest ask into out[n_stages]: 1 when all are
     * there, 0 not yet (wait=0 never blocks), -1 fatal. wait=1 only with
     * nothing in flight. */
    int (*busy_poll)(egm_pipe *p, int wait, egm_stage_busy *out, egm_err *e);
};

/* In-process pipeline: one stage holding every layer. */
typedef struct {
    int n_slots;
    size_t kv_budget;
    int block_tokens;
    int kv_bf16;
    int attn_bf16;      /* --attn-dtype bf16 */
} egm_pipe_opts;

int egm_pipe_local_open(const egm_model *m, const egm_pipe_opts *o,
                        egm_pipe **out, egm_err *e);

#endif
