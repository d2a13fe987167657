/* attn_rows.h - multi-head attention of a few query rows (decode) read
 * against the cache where it lies, a run of contiguous positions at a
 * time. Pure math.
 *
 * The GEMM form (egm_attn_mha) wants a sequence's keys and values in one
 * matrix, so decode copied 2 Hkv dh floats per position per layer out of
 * the paged cache and read them again per head: at 2,048 positions that is
 * 12 MiB per sequence and layer, far past the caches. Here the cache is
 * read where it lies, a KV block at a time: the keys' half of every row
 * for the scores, then the values' half for the weighted sum, so each byte
 * is read once; one row's products are too small for BLAS anyway. fp32:
 * AVX2 + FMA kernels where the CPU has them (the attn_small.h switch;
 * the weighted sum is egm_attn_wsum), plain C otherwise; agrees with
 * egm_attn_mha to rounding. */
#ifndef EGM_ATTN_ROWS_H
#define EGM_ATTN_ROWS_H

/* Positions [j0, j1) of the sequence: returns a pointer to position j0's
 * row (row stride ldkv as given to the kernel) and sets *n (1 .. j1 - j0)
 * to how many rows follow contiguously. The kernel reads columns [c0, c1)
 * of those rows only (one pass the keys, the other the values), so a
 * callback that converts rows (a bf16 cache) may convert just those.
 * Valid until the next call. */
typedef const float *(*egm_kv_run_fn)(void *ctx, int j0, int j1, int c0, int c1, int *n);

/* Rows this kernel is meant for (the stage uses the GEMM form above it). */
#define EGM_ATTN_ROWS_MAX_T 4

/* As egm_attn_mha (kernels/attention.h) for heads [h0, h1) only (heads
 * are independent: a caller may split them over threads): T rows at
 * positions pos0.., head h of row t at q[t*ldq + h*dh] and out[t*ldo +
 * h*dh]; position j's k of group g at run[j*ldkv + g*dh], v at
 * run[j*ldkv + (Hkv + g)*dh].
 * scratch: egm_attn_rows_scratch(T, H, pos0 + T) floats (the scores). */
void egm_attn_mha_rows(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                       egm_kv_run_fn run, void *ctx, int ldkv, int H, int Hkv, int dh,
                       int h0, int h1, float scale, float *scratch);
long egm_attn_rows_scratch(int T, int H, int P);

#endif
