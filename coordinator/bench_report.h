/* bench_report.h - what `egmla bench` on one rank (cmd_bench.c) and on a
 * pipeline under mpirun (bench_mpi.c) share: the parsed options, the
 * machine's ceilings as the run measures them, a result row (its table
 * columns and JSON), the KV capacity report and the JSON report itself. */
#ifndef EGM_BENCH_REPORT_H
#define EGM_BENCH_REPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/roofline.h"
#include "model/config.h"

#define EGM_BENCH_MAX_LIST 16

typedef struct {
    const char *config, *model;       /* exactly one */
    const char *kv_dtype, *budget_s, *json_path;
    const char *attn_dtype;           /* "fp32" or "bf16": in every JSON row */
    const char *wire_dtype, *topology;  /* pipeline; NULL: the topology's */
    const char *weights;              /* synthetic weights: f32, bf16, f16 or q8_0 */
    int batches[EGM_BENCH_MAX_LIST], nb, max_b;
    int contexts[EGM_BENCH_MAX_LIST], nc, max_c;
    int steps, chunk, block_tokens, reps, bw_mib, once, no_gate_table, bf16, attn_bf16;
    int threads;                      /* 0: not given (one rank: one per CPU;
                                         pipeline: 1 per stage) */
    int micro_batches;                /* pipeline decode; 0: one per stage */
    int colo_copies;                  /* --calibrate: most copies timed alongside
                                         (-1: the node's cores + 1; 0: none) */
    size_t budget;                    /* --kv-budget, for the capacity report */
    uint64_t seed;
    double rank_timeout;
} egm_bench_opts;

/* One result row. */
typedef struct {
    const char *phase;    /* "prefill" or "decode" */
    int batch, context, steps;
    double secs;          /* prefill: whole prompt; decode: one step */
    double mean_secs;     /* decode: mean step */
    double proj_secs;     /* decode: the step's projections replayed alone (0: not measured) */
    double attn_secs;     /* decode: the step's attention replayed alone (0: not measured) */
    double tokens_per_s;
    egm_step_cost cost;   /* per step (decode) or whole prefill */
    double sgemm;         /* ceilings used for this row: GFLOP/s at its M, */
    double bw;            /* and triad GB/s */
    int sgemm_m;
    int first_token;      /* prefill: the greedy token after the prompt */
} egm_bench_row;

/* The ceilings of the run: measured once per M, or again for every row. */
typedef struct {
    int M;
    double gflops;
} egm_bench_ceiling;

typedef struct {
    const egm_config *c;
    egm_proj_shape shapes[EGM_MAX_PROJ];
    int n_shapes, reps, threads, remeasure;
    size_t bw_bytes;
    double bw, read_bw;   /* best seen in the run */
    egm_bench_ceiling ceil[2 * EGM_BENCH_MAX_LIST + 2];
    int n_ceil;
} egm_bench_roof;

/* sgemm ceiling at M rows: measured once per M, or again when `again`;
 * the run's roofline keeps the best. */
double egm_bench_sgemm_at(egm_bench_roof *r, int M, int again);
/* Triad bandwidth, measured now; the run's roofline keeps the best. */
double egm_bench_bw_now(egm_bench_roof *r);
/* The ceilings a row is divided by: by default measured again right after
 * the row's run, so the row and its ceilings see about the same load. */
void egm_bench_row_ceilings(egm_bench_roof *r, egm_bench_row *x, int M);

double egm_bench_median(double *v, int n);  /* sorts v */

/* A fixed pseudo-random prompt of n tokens, avoiding ids 0-2 (often special). */
void egm_bench_prompt(int *prompt, int n, int vocab);

/* Where the table goes: stdout, or stderr when the JSON goes to stdout. */
FILE *egm_bench_table(const egm_bench_opts *o);

/* Refuses (on stderr, -1) a context that with the steps after it runs past
 * the model's max_position_embeddings. */
int egm_bench_check_context(const egm_bench_opts *o, const egm_config *c);

/* What is counted for a row (roofline.h, egm_step_cost_of): a prefill of
 * ctx tokens in chunks of `chunk` rows attending `positions` in all (each
 * chunk reads the weights again; lm_head once); one decode step of b rows,
 * one per sequence, averaged over the `steps` timed steps after the
 * warm-up at position ctx. */
void egm_bench_prefill_cost(const egm_config *c, int ctx, int chunk, long positions,
                            int gate_table, int kv_bf16, egm_step_cost *out);
void egm_bench_decode_cost(const egm_config *c, int b, int ctx, int steps, int gate_table,
                           int kv_bf16, egm_step_cost *out);

/* The table's columns of a row (no newline) and their header. */
void egm_bench_print_head(FILE *f);
void egm_bench_print_row(FILE *f, const egm_bench_row *r);

/* A row's JSON object; "ranks" is `ranks`. */
json_t *egm_bench_row_json(const egm_bench_row *r, int ranks);

/* KV cache bytes per token and sequences of each context that fit the
 * budget, printed on f; the "kv" JSON object. *mismatch is set when a real
 * pool holds another count than the arithmetic says. */
json_t *egm_bench_kv(const egm_config *c, const egm_bench_opts *o, FILE *f, int *mismatch);

/* The "roofline" JSON object: the best ceilings of the run; its top-level
 * sgemm_gflops is the one at M = top_m. */
json_t *egm_bench_roof_json(egm_bench_roof *rf, int top_m);

/* The whole report: {"model", "model_type", "synthetic", "roofline",
 * "results", "kv"} plus extra's keys (may be NULL), written to
 * o->json_path (- = stdout). Steals the references it is given. 0, or -1
 * after saying why on stderr. */
int egm_bench_write_json(const egm_bench_opts *o, const egm_config *c, json_t *roofline,
                         json_t *results, json_t *kv, json_t *extra);

#endif
