/* attn_bf16.h - attention's products with bf16 operands, fp32 accumulation
 * (`--attn-dtype bf16`): EG-MLA's rebuild up(c) and the latent / MHA score
 * products. Pure math.
 *
 * Operands are rounded to bf16 (round to nearest even: relative error at
 * most 2^-9 each); the product of two bf16 values is exact in fp32 (8 x 8
 * significant bits), so all the rest of the error is fp32 summation.
 *
 * Three kernels behind one reference order of summation:
 *   portable    plain C: 8 lane sums (lane l takes k = l, l+8, ...) over
 *               the first K & ~7 terms, folded pairwise, then the tail in order;
 *   avx2        the same order in ymm registers (bf16 widened by a shift,
 *               fp32 FMA): the same bits as portable;
 *   avx512bf16  _mm512_dpbf16_ps, 32 terms per instruction: another order
 *               (within fp32 summation error of the others). Chosen only on
 *               a CPU with AVX512-BF16 and the avx512 kernel set.
 * The set follows egm_kernels_name() (kernels/matmul.h): EGMLA_KERNELS=portable
 * forces the reference. */
#ifndef EGM_ATTN_BF16_H
#define EGM_ATTN_BF16_H

#include <stdint.h>

/* C[M, N] = alpha * A[M, K] B[N, K]^T + beta * C; A, B bf16 with row
 * strides lda, ldb (elements), C fp32 (stride ldc). beta == 0: C not read. */
void egm_gemm_bf16_nt(int M, int N, int K, float alpha, const uint16_t *A, int lda,
                      const uint16_t *B, int ldb, float beta, float *C, int ldc);

/* dst[r, k] = bf16(src[r, k]) for r < rows, k < cols (round to nearest even). */
void egm_bf16_round_rows(uint16_t *dst, int ldd, const float *src, int lds, int rows, int cols);

/* The kernel in use: "portable", "avx2" or "avx512bf16". */
const char *egm_gemm_bf16_kernel(void);

#endif
