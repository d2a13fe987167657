/* ops.h - the math of a transformer block, on fp32 rows. Pure: no I/O.
 *
 * Matrices are row-major. A "linear" y = x W^T takes x [M, K] and a weight
 * W [N, K] (PyTorch layout) and writes y [M, N]; it is one sgemm for the
 * whole micro-batch, or sgemv when M == 1. */
#ifndef EGM_OPS_H
#define EGM_OPS_H

#include <stddef.h>
#include <stdint.h>

/* y[M,N] = x[M,K] @ W[N,K]^T  (beta = 0) */
void egm_linear(float *y, const float *x, const float *W, int M, int N, int K);
/* y[M,N] += x[M,K] @ W[N,K]^T */
void egm_linear_acc(float *y, const float *x, const float *W, int M, int N, int K);
/* Batch invariance, process-wide (`--batch-invariant`; set before any
 * product runs). Off, a product's bits depend on its row count: one row
 * goes through sgemv, 2-8 through kernels/gemm_small.c, more through
 * sgemm (and quantised weights through dot kernels or dequantised tiles),
 * so a request's tokens can change with what shares its batch. On, every
 * row of egm_gemm_batch and egm_mat_mul is computed the same way whatever
 * M: groups of up to 8 rows through the few-rows kernels (each output's
 * sum in an order that does not depend on the group), other shapes row by
 * row. Slower for many rows. */
void egm_set_batch_invariant(int on);
int egm_batch_invariant(void);
/* C[M,N] = alpha * A op(B) + beta * C for products whose rows come from
 * different sequences (projections, the absorbed per-head products):
 * egm_gemm, or batch-invariant when that is on. A product within one
 * sequence (attention over its cache, EG-MLA's rebuild) depends only on
 * that sequence and keeps egm_gemm. */
void egm_gemm_batch(int transB, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc);

/* General row-major C[M,N] = alpha * op(A) op(B) + beta * C with leading
 * dimensions, a thin wrapper over cblas_sgemm (sgemv when M == 1). */
void egm_gemm(int transA, int transB, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb, float beta,
              float *C, int ldc);

void egm_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* w or b may be NULL (1 and 0). */
void egm_layernorm(float *out, const float *x, const float *w, const float *b,
                   int n, float eps);
/* Rotates one head vector x[d] at position pos in place.
 * interleave = 0: pairs (i, i + d/2); interleave = 1: pairs (2i, 2i+1).
 * inv_freq[i] = theta^(-2i/d). Like the PyTorch reference, inv_freq and the
 * angle pos * inv_freq are fp32 (cos/sin of that angle then rounded once), so
 * results stay within ~1 ulp of torch even at large positions. */
void egm_rope(float *x, int d, int pos, float theta, int interleave);
/* Numerically stable in-place softmax over n values. +inf entries share the
 * mass equally; an all -inf row becomes uniform. */
void egm_softmax(float *x, int n);
/* log-softmax value of x[idx]: x[idx] - logsumexp(x). */
float egm_logprob(const float *x, int n, int idx);
/* First index of the maximum; NaN never wins. */
int egm_argmax(const float *x, int n);
static inline float egm_silu(float x);
/* g[i] = silu(g[i]) * u[i] */
void egm_swiglu(float *g, const float *u, int n);
/* x[i] *= y[i] */
void egm_mul(float *x, const float *y, int n);
/* EG-MLA's gated latent in place: z = Norm(z * g), LayerNorm (w, b; either
 * may be NULL) or, with rms, RMSNorm (w). One pass multiplies and sums, so
 * the row is read from memory once; bit-identical to egm_mul followed by
 * egm_layernorm / egm_rmsnorm. */
void egm_gate_norm(float *z, const float *g, const float *w, const float *b, int n,
                   float eps, int rms);
/* x[i] += y[i] */
void egm_add(float *x, const float *y, int n);

/* bf16 / f16 conversion. f32 -> bf16 rounds to nearest even; NaN stays NaN. */
float egm_bf16_to_f32(uint16_t h);
uint16_t egm_f32_to_bf16(float f);
float egm_f16_to_f32(uint16_t h);
void egm_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void egm_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n);
void egm_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);

#include <math.h>
static inline float egm_silu(float x) { return x / (1.0f + expf(-x)); }

#endif
