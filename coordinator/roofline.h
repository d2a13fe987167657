/* roofline.h - what this machine can do, measured in the same run as a
 * benchmark, and what one forward step of a model asks of it.
 *
 * Two ceilings (the classic roofline):
 *   - sgemm GFLOP/s on the model's own projection shapes, through
 *     egm_linear (the call the engine makes: sgemm, or sgemv when M == 1),
 *     weights warm, best of a few repetitions;
 *   - memory bandwidth: a STREAM triad a = b + s*c over three arrays far
 *     larger than the last-level cache, split over the same number of
 *     threads as the BLAS (plain pthreads, no OpenMP).
 * A step is then compared with both: achieved projection GFLOP/s over the
 * sgemm ceiling, and weight bytes streamed per second over the bandwidth. */
#ifndef EGM_ROOFLINE_H
#define EGM_ROOFLINE_H

#include <stddef.h>

#include "base/clock.h"
#include "model/config.h"

/* One per-token linear layer y = x W^T, W [N, K], applied `count` times per
 * token over the whole model (L for a per-layer weight, 1 for lm_head). */
typedef struct {
    char name[40];      /* "gate+up" when weights share a shape */
    int N, K;
    int count;
} egm_proj_shape;

#define EGM_MAX_PROJ 16

/* The per-token projections of a config, one entry per distinct [N, K]
 * (names of merged weights are joined by "+"): the linears the stage runs
 * as one GEMM over the micro-batch (llama q/k/v/o; MLA q or q_a and q_b,
 * kv_a, o; the SwiGLU FFN) and lm_head. kv_b_proj is applied absorbed
 * inside attention, per sequence and head, and EG-MLA's eg_up_proj and gate
 * work on cached positions: they count as attention, not projections
 * (their weights still count in egm_step_cost.weight_bytes). Returns how
 * many. */
int egm_proj_shapes(const egm_config *c, egm_proj_shape out[EGM_MAX_PROJ]);

/* Analytic cost of one forward over `rows` tokens of which `head_rows` go
 * through lm_head, attending to `positions` cached positions in total
 * (summed over the rows' sequences, once per sequence segment). */
typedef struct {
    double proj_flops;    /* 2 * rows * N * K over every projection (+ lm_head rows) */
    double weight_bytes;  /* fp32 weight matrices read: all layers' linears
                           * (kv_b_proj, eg_up_proj included), lm_head if
                           * head_rows > 0 */
    double gate_bytes;    /* EG-MLA: gate-table rows gathered (positions x layers) */
    double kv_bytes;      /* KV cache read: positions x bytes per token */
    double attn_flops;    /* attention work (egm_attn_flops_of); decode: every
                           * row is its own segment of `positions / rows` */
} egm_step_cost;

/* Flops of attention over `rows` query rows, per the whole model:
 *   - every head's scores and weighted sum over every position a row
 *     attends (`row_positions`, summed over rows: the causal triangle in
 *     prefill): MHA 4 * H * dh, latent 2 * H * (2 * d_u + dr) per pair;
 *   - latent: the absorbed kv_b_proj products of each row,
 *     2 * H * (dn + dv) * d_u;
 *   - EG-MLA: the rebuild of z for every position of every segment
 *     (`seg_positions`): 2 * d_c * d_u for up(c) (when d_u != d_c), 8 * d_u
 *     for the gate product and the norm, and without the gate table
 *     2 * d_e * d_u for eg_gate_proj.
 * Softmax exponentials and masking are not counted. Times num_layers. */
double egm_attn_flops_of(const egm_config *c, long rows, long row_positions,
                         long seg_positions, int gate_table);

/* gate_table: EG-MLA gate rows come from G [V, d_u] (fp32) rather than
 * eg_embed [V, d_e] (fp32 in synthetic models) + eg_gate_proj. */
/* Bytes per projection weight element in egm_step_cost_of's weight_bytes:
 * 4 (fp32, the default) or the loaded model's stored average (a Q4_1 file
 * about 0.6), so that %bw compares the bytes a step really streams. */
void egm_set_weight_bytes_per_elem(double b);
void egm_step_cost_of(const egm_config *c, long rows, long head_rows, long positions,
                      int gate_table, int kv_bf16, egm_step_cost *out);

/* sgemm ceiling at M rows: for each shape, the best time of `reps`
 * repetitions of y[M,N] = x[M,K] W[N,K]^T; the result is the shapes' total
 * flops (weighted by count) over their total best time, i.e. the GFLOP/s a
 * step would reach if each of its projections ran as fast as alone and
 * warm. per_shape (optional, [n]) gets each shape's GFLOP/s. Returns -1 if
 * memory runs out. */
double egm_roofline_sgemm(const egm_proj_shape *s, int n, int M, int reps,
                          double *per_shape);

/* a[i] = b[i] + s * c[i] for i < n, split into `threads` contiguous slices
 * run by pthreads (threads <= 1: the calling thread). Returns -1 if a
 * thread cannot be started (the work is then done by the caller). */
int egm_triad(float *a, const float *b, const float *c, float s, size_t n, int threads);

/* Sum of x[0..n) over `threads` pthreads (a read-only stream). */
double egm_stream_sum(const float *x, size_t n, int threads);

/* Bandwidth ceiling: three arrays of `bytes` each, best of `reps` triad
 * passes, counted as STREAM does (3 * bytes per pass: 2 reads, 1 write; the
 * write-allocate read is not counted). read_gbs (optional) gets the best
 * read-only pass over one array. Returns GB/s (1e9 bytes), -1 on OOM. */
double egm_roofline_membw(size_t bytes, int threads, int reps, double *read_gbs);

#endif
