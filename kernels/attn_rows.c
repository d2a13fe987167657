/* attn_rows.c - multi-head attention of a few rows against the cache in
 * place (see attn_rows.h). */
#include "kernels/attn_rows.h"

#include <math.h>
#include <string.h>

#include "kernels/attn_small.h"

long egm_attn_rows_scratch(int T, int H, int P) { return (long)T * H * P; }

/* a . b in eight lanes (lane i: elements i mod 8), added in a fixed tree:
 * GCC turns the lane loop into vector code and the bits do not depend on
 * how wide it is. */
static float dot8(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int i = 0; i < 8; i++) acc[i] += a[k + i] * b[k + i];
    for (; k < n; k++) acc[k & 7] += a[k] * b[k];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* s[j] = scale * q . K_j for j < n: the plain C and the AVX2 versions. */
static void scores_c(const float *q, const float *K, int ldkv, int n, int dh, float scale,
                     float *s) {
    for (int j = 0; j < n; j++) s[j] = scale * dot8(q, K + (long)j * ldkv, dh);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* The eight lanes' sums of a0..a7, as one vector [sum a0, .., sum a7]. */
AVX2 static __m256 hsum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5,
                         __m256 a6, __m256 a7) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* scores_c for dh a multiple of 8: eight positions at a time, one load
 * of q per eight FMAs. */
AVX2 static void scores_avx2(const float *q, const float *K, int ldkv, int n, int dh,
                             float scale, float *s) {
    for (int j0 = 0; j0 < n; j0 += 8) {
        const float *k[8]; /* rows past n repeat the last; their sums are dropped */
        for (int i = 0; i < 8; i++) k[i] = K + (long)(j0 + i < n ? j0 + i : n - 1) * ldkv;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int c = 0; c < dh; c += 8) {
            __m256 x = _mm256_loadu_ps(q + c);
            a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[0] + c), a0);
            a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[1] + c), a1);
            a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[2] + c), a2);
            a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[3] + c), a3);
            a4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[4] + c), a4);
            a5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[5] + c), a5);
            a6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[6] + c), a6);
            a7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k[7] + c), a7);
        }
        __m256 y = _mm256_mul_ps(_mm256_set1_ps(scale), hsum8(a0, a1, a2, a3, a4, a5, a6, a7));
        if (j0 + 8 <= n) {
            _mm256_storeu_ps(s + j0, y);
        } else {
            float t[8];
            _mm256_storeu_ps(t, y);
            for (int i = 0; j0 + i < n; i++) s[j0 + i] = t[i];
        }
    }
}

#else
#define scores_avx2 scores_c
#endif

/* Two passes over the runs, as egm_attn_mha does over the whole matrix:
 * every row's scores (the keys' half of each cached row), one softmax per
 * row and head, then the weighted sum (the values' half). Each half is
 * read once, so the cache is read once. */
void egm_attn_mha_rows(float *out, int ldo, const float *q, int ldq, int T, int pos0,
                       egm_kv_run_fn run, void *ctx, int ldkv, int H, int Hkv, int dh,
                       int h0, int h1, float scale, float *S) {
    int group = H / Hkv, P = pos0 + T, simd = egm_attn_small_simd() && dh % 8 == 0;
    int c0 = h0 / group * dh, c1 = ((h1 - 1) / group + 1) * dh; /* these heads' keys */
    for (int j0 = 0, nb; j0 < P; j0 += nb) {
        const float *kv = run(ctx, j0, P, c0, c1, &nb);
        for (int t = 0; t < T; t++) {
            int n = pos0 + t - j0 + 1; /* causal: positions <= pos0 + t */
            if (n > nb) n = nb;
            for (int h = h0; n > 0 && h < h1; h++)
                (simd ? scores_avx2 : scores_c)(q + (long)t * ldq + h * dh, kv + h / group * dh,
                                                ldkv, n, dh, scale,
                                                S + ((long)t * H + h) * P + j0);
        }
    }
    for (int t = 0; t < T; t++)
        for (int h = h0; h < h1; h++) {
            float *s = S + ((long)t * H + h) * P, *o = out + (long)t * ldo + h * dh;
            egm_attn_softmax(s, pos0 + t + 1);
            memset(o, 0, sizeof(float) * dh);
        }
    for (int j0 = 0, nb; j0 < P; j0 += nb) { /* and their values */
        const float *kv = run(ctx, j0, P, Hkv * dh + c0, Hkv * dh + c1, &nb);
        for (int t = 0; t < T; t++) {
            int n = pos0 + t - j0 + 1;
            if (n > nb) n = nb;
            for (int h = h0; n > 0 && h < h1; h++)
                egm_attn_wsum(1, dh, n, S + ((long)t * H + h) * P + j0, n,
                              kv + (Hkv + h / group) * dh, ldkv, out + (long)t * ldo + h * dh, dh);
        }
    }
}
