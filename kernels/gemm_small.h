/* gemm_small.h - the product of a few rows with a weight matrix, without
 * OpenBLAS's packing (see gemm_small.c). Pure math. */
#ifndef EGM_GEMM_SMALL_H
#define EGM_GEMM_SMALL_H

/* Rows at most this many go through egm_gemm_small_nt (egm_gemm decides). */
#define EGM_GEMM_SMALL_MAX_M 8

/* y[M, N] = x[M, K] W[N, K]^T, or y += that with acc_y; row strides ldx,
 * ldw, ldy. threads > 1 splits the columns across OpenMP threads. */
void egm_gemm_small_nt(int M, int N, int K, const float *x, int ldx, const float *W, int ldw,
                       int acc_y, float *y, int ldy, int threads);

#endif
