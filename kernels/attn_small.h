/* attn_small.h - the weighted sum of attention for a few query rows
 * (latent decode: one row per sequence, all heads stacked, R = H; MHA
 * decode: one head's row, R = 1), where
 * OpenBLAS's packed sgemm reaches about 60 % of this kernel's speed
 * (R = 12, 128 positions, d_u = 256; one core); and the softmax's max and
 * exp, which with glibc's scalar expf took about 10 % of a decode step at 2,048
 * positions (paper MLA, batch 32). Pure math.
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

/* s[j] = exp(s[j] - mx) for j < n, where mx >= every s[j] (softmax); the
 * sum of the results in double, in a fixed order. A polynomial exp within
 * 2 ulp of expf, the same bits from the plain C and the AVX2 version. */
double egm_attn_exp_sum(float *s, int n, float mx);
/* max(mx, s[0..n)). */
float egm_attn_max(const float *s, int n, float mx);
/* In-place softmax of s[0..n) with the two above; a row whose max is
 * infinite goes to egm_softmax (kernels/ops.h), which defines it. */
void egm_attn_softmax(float *s, int n);

/* 1 if the AVX2 kernel is in use. */
int egm_attn_small_simd(void);
/* 0: use the plain C kernel even where AVX2 is there (tests). */
void egm_attn_small_allow_simd(int on);

#endif
