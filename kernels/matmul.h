/* matmul.h - y = x W^T over a weight matrix kept in its stored precision.
 *
 * An egm_mat is a [rows, cols] row-major matrix of one ggml type (F32, F16,
 * BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), usually pointing into a file
 * mapping. F32 takes egm_gemm's path unchanged (bit-identical to before).
 * Other types: up to EGM_QMM_DOT_MAX rows of x go through per-row dot
 * kernels (activations quantised per block as llama.cpp does: Q8_0-style
 * blocks for the 32-element types, Q8_K for the K-quants; fp32 for F16 and
 * BF16); more rows dequantise tiles of W into fp32 for sgemm. The kernel
 * set (plain C, AVX2, AVX-512 VNNI/BF16) is chosen at run time from the CPU;
 * EGMLA_KERNELS=portable forces the plain-C one. Pure math. */
#ifndef EGM_MATMUL_H
#define EGM_MATMUL_H

#include <stddef.h>

#include "kernels/quant.h"

typedef struct {
    int type;           /* EGM_GGML_* */
    int rows, cols;     /* out, in */
    const void *data;   /* rows * row_bytes bytes */
    size_t row_bytes;
} egm_mat;

#define EGM_QMM_DOT_MAX 8

/* An F32 matrix view. */
egm_mat egm_mat_f32(const float *w, int rows, int cols);
/* A matrix of any known type (row_bytes from the type). */
egm_mat egm_mat_of(int type, const void *data, int rows, int cols);
size_t egm_mat_bytes(const egm_mat *W);
/* Row r as fp32 into dst[cols] (embedding lookups). */
void egm_mat_row(const egm_mat *W, int r, float *dst);

/* y[M, rows] (row stride ldy) = x[M, cols] (stride ldx) W^T, or += with acc. */
void egm_mat_mul(const egm_mat *W, int M, const float *x, int ldx, float *y, int ldy, int acc);
/* x prepared once for several products: a pipeline stage cuts one product
 * into blocks of W's rows, and q/k/v (gate/up) share their x, so rounding x
 * per block in each call would repeat the same work many times over (it was
 * a fifth of a decode step). egm_mat_act_format is 0 when W takes fp32 x as
 * it is (F32, F16, BF16, or more than EGM_QMM_DOT_MAX rows); otherwise two
 * matrices with the same format and cols take the same prepared x.
 * egm_mat_act_bytes is what egm_mat_act_prepare writes for M rows. The
 * results are those of egm_mat_mul, bit for bit. */
int egm_mat_act_format(const egm_mat *W, int M);
size_t egm_mat_act_bytes(const egm_mat *W, int M);
void egm_mat_act_prepare(const egm_mat *W, int M, const float *x, int ldx, void *qx);
/* egm_mat_mul with x given as prepared for W (a format != 0). */
void egm_mat_mul_prepared(const egm_mat *W, int M, const void *qx, float *y, int ldy, int acc);

/* Contiguous forms: y = x W^T and y += x W^T. */
void egm_matmul(float *y, const float *x, const egm_mat *W, int M);
void egm_matmul_acc(float *y, const float *x, const egm_mat *W, int M);

/* The kernel set in use: "portable", "avx2" or "avx512" (VNNI + BF16).
 * Decided once, from the CPU and EGMLA_KERNELS (portable|avx2|avx512; a set
 * the CPU lacks falls back to the best it has). */
const char *egm_kernels_name(void);
/* Tests: force a set by name (returns 0, or -1 if the CPU lacks it). */
int egm_kernels_force(const char *name);

#endif
