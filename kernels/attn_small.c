/* attn_small.c - the weighted sum of a block of latents for a few query
 * rows (see attn_small.h): tiles of 6 rows x 16 columns, 12 ymm
 * accumulators, one broadcast of S[r, j] per row and two loads of z_j per
 * position: the 16 ymm registers of AVX2; one row (MHA decode's heads)
 * has its own kernel. (A register-blocked kernel for
 * the scores was tried, 4 rows x 3 positions: 20 % slower than OpenBLAS's
 * sgemm there, so the scores stay with BLAS.) */
#include "kernels/attn_small.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/ops.h"

/* 2^n as a float, for -126 <= n <= 127. */
static float u2f_pow2(int n) {
    uint32_t u = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---------------------------------------------------------------- plain C */

static void wsum_c(int R, int du, int nb, const float *S, int lds, const float *Z, int ldz,
                   float *O, int ldo) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < nb; j++) {
            float s = S[(long)r * lds + j];
            for (int k = 0; k < du; k++) O[(long)r * ldo + k] += s * Z[(long)j * ldz + k];
        }
}

/* exp(x) for x <= 0 (softmax after its max is subtracted), Cephes's
 * expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial in r, times
 * 2^n; within 2 ulp of expf. Every step is one IEEE operation (fmaf where
 * the AVX2 version fuses), so both versions give the same bits. Below
 * -87 (2^-125.5) it returns 0, and NaN stays NaN. */
static float exp_c(float x) {
    if (!(x >= -87.0f)) return x != x ? x : 0.0f;
    float n = nearbyintf(x * 1.44269504088896341f);
    float r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    float y = fmaf(p, r * r, r) + 1.0f;
    return y * u2f_pow2((int)n);
}

/* The sum of exps in eight lanes (lane i: positions i mod 8, in order),
 * added in a fixed tree: the AVX2 version's order. */
static double lanes_sum(const double *a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static double exp_sum_c(float *s, int n, float mx) {
    double a[8] = {0};
    for (int j = 0; j < n; j++) {
        s[j] = exp_c(s[j] - mx);
        a[j & 7] += s[j];
    }
    return lanes_sum(a);
}

static float max_c(const float *s, int n, float mx) {
    for (int j = 0; j < n; j++)
        if (s[j] > mx) mx = s[j];
    return mx;
}

/* ---------------------------------------------------------------- AVX2 */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* Rows r0.. (rr <= 6 valid; the others repeat the last and are not
 * stored) x columns k0..k0+15, over every position. Named accumulators:
 * an array indexed by a loop variable would live on the stack. */
AVX2 static void wsum_tile(int rr, int nb, const float *S, int lds, const float *Z, int ldz,
                           float *O, int ldo) {
    const float *s0 = S, *s1 = S + (long)(rr > 1 ? 1 : 0) * lds, *s2 = S + (long)(rr > 2 ? 2 : rr - 1) * lds;
    const float *s3 = S + (long)(rr > 3 ? 3 : rr - 1) * lds, *s4 = S + (long)(rr > 4 ? 4 : rr - 1) * lds;
    const float *s5 = S + (long)(rr > 5 ? 5 : rr - 1) * lds;
#define LD(i) O + (long)((i) < rr ? (i) : rr - 1) * ldo
    __m256 a0 = _mm256_loadu_ps(LD(0)), b0 = _mm256_loadu_ps(LD(0) + 8);
    __m256 a1 = _mm256_loadu_ps(LD(1)), b1 = _mm256_loadu_ps(LD(1) + 8);
    __m256 a2 = _mm256_loadu_ps(LD(2)), b2 = _mm256_loadu_ps(LD(2) + 8);
    __m256 a3 = _mm256_loadu_ps(LD(3)), b3 = _mm256_loadu_ps(LD(3) + 8);
    __m256 a4 = _mm256_loadu_ps(LD(4)), b4 = _mm256_loadu_ps(LD(4) + 8);
    __m256 a5 = _mm256_loadu_ps(LD(5)), b5 = _mm256_loadu_ps(LD(5) + 8);
#undef LD
    for (int j = 0; j < nb; j++) {
        const float *z = Z + (long)j * ldz;
        __m256 y0 = _mm256_loadu_ps(z), y1 = _mm256_loadu_ps(z + 8), x;
        x = _mm256_broadcast_ss(s0 + j), a0 = _mm256_fmadd_ps(x, y0, a0), b0 = _mm256_fmadd_ps(x, y1, b0);
        x = _mm256_broadcast_ss(s1 + j), a1 = _mm256_fmadd_ps(x, y0, a1), b1 = _mm256_fmadd_ps(x, y1, b1);
        x = _mm256_broadcast_ss(s2 + j), a2 = _mm256_fmadd_ps(x, y0, a2), b2 = _mm256_fmadd_ps(x, y1, b2);
        x = _mm256_broadcast_ss(s3 + j), a3 = _mm256_fmadd_ps(x, y0, a3), b3 = _mm256_fmadd_ps(x, y1, b3);
        x = _mm256_broadcast_ss(s4 + j), a4 = _mm256_fmadd_ps(x, y0, a4), b4 = _mm256_fmadd_ps(x, y1, b4);
        x = _mm256_broadcast_ss(s5 + j), a5 = _mm256_fmadd_ps(x, y0, a5), b5 = _mm256_fmadd_ps(x, y1, b5);
    }
    /* stores in reverse: padded rows alias the last valid one, whose own
     * (identical) values are then written last */
    if (rr > 5) _mm256_storeu_ps(O + 5L * ldo, a5), _mm256_storeu_ps(O + 5L * ldo + 8, b5);
    if (rr > 4) _mm256_storeu_ps(O + 4L * ldo, a4), _mm256_storeu_ps(O + 4L * ldo + 8, b4);
    if (rr > 3) _mm256_storeu_ps(O + 3L * ldo, a3), _mm256_storeu_ps(O + 3L * ldo + 8, b3);
    if (rr > 2) _mm256_storeu_ps(O + 2L * ldo, a2), _mm256_storeu_ps(O + 2L * ldo + 8, b2);
    if (rr > 1) _mm256_storeu_ps(O + 1L * ldo, a1), _mm256_storeu_ps(O + 1L * ldo + 8, b1);
    _mm256_storeu_ps(O, a0), _mm256_storeu_ps(O + 8, b0);
}

/* One row (MHA decode, a head at a time, kernels/attn_rows.c), where the
 * 6-row tile would compute its row six times: O in registers, 64 columns
 * at a time, across the positions; then 8 at a time, then the last few. */
AVX2 static void wsum_row(int dh, int n, const float *p, const float *V, int ldkv, float *o) {
    int c = 0;
    for (; c + 64 <= dh; c += 64) {
        __m256 o0 = _mm256_loadu_ps(o + c), o1 = _mm256_loadu_ps(o + c + 8);
        __m256 o2 = _mm256_loadu_ps(o + c + 16), o3 = _mm256_loadu_ps(o + c + 24);
        __m256 o4 = _mm256_loadu_ps(o + c + 32), o5 = _mm256_loadu_ps(o + c + 40);
        __m256 o6 = _mm256_loadu_ps(o + c + 48), o7 = _mm256_loadu_ps(o + c + 56);
        for (int j = 0; j < n; j++) {
            const float *v = V + (long)j * ldkv + c;
            __m256 x = _mm256_broadcast_ss(p + j);
            o0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v), o0);
            o1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v + 8), o1);
            o2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v + 16), o2);
            o3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v + 24), o3);
            o4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v + 32), o4);
            o5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v + 40), o5);
            o6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v + 48), o6);
            o7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(v + 56), o7);
        }
        _mm256_storeu_ps(o + c, o0), _mm256_storeu_ps(o + c + 8, o1);
        _mm256_storeu_ps(o + c + 16, o2), _mm256_storeu_ps(o + c + 24, o3);
        _mm256_storeu_ps(o + c + 32, o4), _mm256_storeu_ps(o + c + 40, o5);
        _mm256_storeu_ps(o + c + 48, o6), _mm256_storeu_ps(o + c + 56, o7);
    }
    for (; c + 8 <= dh; c += 8) {
        __m256 acc = _mm256_loadu_ps(o + c);
        for (int j = 0; j < n; j++)
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(V + (long)j * ldkv + c), acc);
        _mm256_storeu_ps(o + c, acc);
    }
    for (int j = 0; c < dh && j < n; j++)
        for (int k = c; k < dh; k++) o[k] += p[j] * V[(long)j * ldkv + k];
}

AVX2 static void wsum_avx2(int R, int du, int nb, const float *S, int lds, const float *Z,
                           int ldz, float *O, int ldo) {
    if (R == 1) {
        wsum_row(du, nb, S, Z, ldz, O);
        return;
    }
    int du16 = du & ~15;
    for (int r0 = 0; r0 < R; r0 += 6) {
        int rr = R - r0 < 6 ? R - r0 : 6;
        for (int k0 = 0; k0 < du16; k0 += 16)
            wsum_tile(rr, nb, S + (long)r0 * lds, lds, Z + k0, ldz, O + (long)r0 * ldo + k0, ldo);
    }
    if (du16 < du)
        for (int r = 0; r < R; r++)
            for (int j = 0; j < nb; j++) {
                float s = S[(long)r * lds + j];
                for (int k = du16; k < du; k++) O[(long)r * ldo + k] += s * Z[(long)j * ldz + k];
            }
}


/* exp_c on 8 lanes, the same operations in the same order. */
AVX2 static __m256 exp8(__m256 x) {
    __m256 ok = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    /* 2^n from its exponent bits; lanes that are not ok get n = 0 here */
    __m256i e = _mm256_cvtps_epi32(_mm256_and_ps(n, ok));
    __m256 two_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23));
    y = _mm256_mul_ps(y, two_n);
    return _mm256_or_ps(_mm256_and_ps(y, ok), _mm256_and_ps(x, nan));
}

AVX2 static double exp_sum_avx2(float *s, int n, float mx) {
    __m256 m = _mm256_set1_ps(mx);
    __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 y = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
        _mm256_storeu_ps(s + j, y);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(y)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)));
    }
    double a[8];
    _mm256_storeu_pd(a, lo);
    _mm256_storeu_pd(a + 4, hi);
    for (; j < n; j++) {
        s[j] = exp_c(s[j] - mx);
        a[j & 7] += s[j];
    }
    return lanes_sum(a);
}

AVX2 static float max_avx2(const float *s, int n, float mx) {
    __m256 m = _mm256_set1_ps(mx);
    int j = 0;
    for (; j + 8 <= n; j += 8) m = _mm256_max_ps(_mm256_loadu_ps(s + j), m); /* NaN never wins */
    float t[8];
    _mm256_storeu_ps(t, m);
    for (int i = 0; i < 8; i++)
        if (t[i] > mx) mx = t[i];
    return max_c(s + j, n - j, mx);
}

static int have_avx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static int have_avx2(void) { return 0; }
#define wsum_avx2 wsum_c
#define exp_sum_avx2 exp_sum_c
#define max_avx2 max_c
#endif

static int simd_off;

void egm_attn_small_allow_simd(int on) { simd_off = !on; }

int egm_attn_small_simd(void) { return !simd_off && have_avx2(); }

void egm_attn_wsum(int R, int du, int nb, const float *S, int lds, const float *Z, int ldz,
                   float *O, int ldo) {
    if (egm_attn_small_simd())
        wsum_avx2(R, du, nb, S, lds, Z, ldz, O, ldo);
    else
        wsum_c(R, du, nb, S, lds, Z, ldz, O, ldo);
}

double egm_attn_exp_sum(float *s, int n, float mx) {
    return egm_attn_small_simd() ? exp_sum_avx2(s, n, mx) : exp_sum_c(s, n, mx);
}

float egm_attn_max(const float *s, int n, float mx) {
    return egm_attn_small_simd() ? max_avx2(s, n, mx) : max_c(s, n, mx);
}

void egm_attn_softmax(float *s, int n) {
    if (n <= 0) return;
    float mx = egm_attn_max(s, n, -INFINITY);
    if (isinf(mx)) {
        egm_softmax(s, n);
        return;
    }
    float inv = (float)(1.0 / egm_attn_exp_sum(s, n, mx));
    for (int j = 0; j < n; j++) s[j] *= inv;
}
