/* attn_small.h - latent attention's weighted sum for a few query rows
 * (decode: one row per sequence, all heads stacked, R = H), where
 * OpenBLAS's packed sgemm reaches about 60 % of this kernel's speed
 * (R = 12, 128 positions, d_u = 256; one core). Pure math.
 *
 * Chosen at run time: an AVX2 + FMA register-blocked kernel when the CPU
 * has them, plain C otherwise. fp32 accumulation; each output is one
 * running sum over positions in order, so both agree with the naive loop
 * to rounding. */
#ifndef EGM_ATTN_SMALL_H
#define EGM_ATTN_SMALL_H

/* At most this many rows go through these kernels (stage decides). */
#define EGM_ATTN_SMALL_MAX_R 16

/* O[r, k] += sum_j S[r, j] Z[j, k], r < R, k < du, j < nb (in order). */
void egm_attn_wsum(int R, int du, int nb, const float *S, int lds, const float *Z, int ldz,
                   float *O, int ldo);

/* 1 if the AVX2 kernel is in use. */
int egm_attn_small_simd(void);
/* 0: use the plain C kernel even where AVX2 is there (tests). */
void egm_attn_small_allow_simd(int on);

#endif
