/* test_ops.c - kernels/ops.c against naive double-precision versions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_small.h"
#include "kernels/ops.h"

/* Deterministic uniform floats in [-1, 1). */
static uint64_t rs = 0x1234567u;
static float frand(void) {
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}
static float *rand_vec(size_t n, float scale) {
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}
static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* ------------------------------------------------------------- matmul */

static void check_linear(int M, int N, int K) {
    float *x = rand_vec((size_t)M * K, 1), *W = rand_vec((size_t)N * K, 1);
    float *y = rand_vec((size_t)M * N, 1), *y0 = malloc((size_t)M * N * sizeof *y0);
    memcpy(y0, y, (size_t)M * N * sizeof *y);
    egm_linear_acc(y, x, W, M, N, K);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)x[m * K + k] * W[n * K + k];
            assert_true(fabs(y[m * N + n] - (y0[m * N + n] + s)) < 1e-5 * (K + 1));
        }
    for (size_t i = 0; i < (size_t)M * N; i++) y[i] = NAN; /* beta 0 must not read y */
    egm_linear(y, x, W, M, N, K);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)x[m * K + k] * W[n * K + k];
            assert_true(fabs(y[m * N + n] - s) < 1e-5 * (K + 1));
        }
    free(x); free(W); free(y); free(y0);
}

static void test_linear_shapes(void **st) {
    (void)st;
    /* 2..8 rows go through kernels/gemm_small.c: tails of 4 columns and of
     * a vector of K, and every row count of its tiles */
    int shapes[][3] = {{1, 7, 13}, {1, 64, 64}, {1, 1, 1}, {3, 5, 7}, {17, 33, 29},
                       {8, 16, 1}, {2, 100, 257}, {1, 300, 33}, {5, 37, 35},
                       {8, 64, 768}, {4, 9, 16}, {7, 3, 100}, {6, 130, 48}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        check_linear(shapes[i][0], shapes[i][1], shapes[i][2]);
}

/* The few-rows kernel with padded row strides: the padding is left alone,
 * and splitting the columns over threads gives the same bits. */
static void test_gemm_small(void **st) {
    (void)st;
    enum { M = 6, N = 45, K = 70, LDX = 75, LDW = 73, LDY = 50 };
    float *x = rand_vec(M * LDX, 1), *W = rand_vec(N * LDW, 1);
    float *y1 = rand_vec(M * LDY, 1), *y2 = malloc(sizeof(float) * M * LDY);
    memcpy(y2, y1, sizeof(float) * M * LDY);
    float *y0 = malloc(sizeof(float) * M * LDY);
    memcpy(y0, y1, sizeof(float) * M * LDY);
    egm_gemm_small_nt(M, N, K, x, LDX, W, LDW, 1, y1, LDY, 1);
    egm_gemm_small_nt(M, N, K, x, LDX, W, LDW, 1, y2, LDY, 2);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < LDY; n++) {
            float a = y1[m * LDY + n];
            assert_int_equal(bits(a), bits(y2[m * LDY + n]));
            if (n >= N) { assert_int_equal(bits(a), bits(y0[m * LDY + n])); continue; }
            double s = y0[m * LDY + n];
            for (int k = 0; k < K; k++) s += (double)x[m * LDX + k] * W[n * LDW + k];
            assert_true(fabs(a - s) < 1e-5 * (K + 1));
        }
    free(x); free(W); free(y0); free(y1); free(y2);
}

/* egm_gemm with every transpose, padded leading dimensions, alpha and beta;
 * the padding of C must be left alone. */
static void test_gemm_trans_ld(void **st) {
    (void)st;
    const int Ms[] = {1, 5}, N = 6, K = 9;
    for (int mi = 0; mi < 2; mi++)
        for (int tA = 0; tA < 2; tA++)
            for (int tB = 0; tB < 2; tB++)
                for (int bz = 0; bz < 2; bz++) {
                    int M = Ms[mi];
                    /* stored shapes: A is [M,K] or [K,M]; B is [K,N] or [N,K] */
                    int arows = tA ? K : M, acols = tA ? M : K, lda = acols + 3;
                    int brows = tB ? N : K, bcols = tB ? K : N, ldb = bcols + 2;
                    int ldc = N + 4;
                    float *A = rand_vec((size_t)arows * lda, 1);
                    float *B = rand_vec((size_t)brows * ldb, 1);
                    float *C = rand_vec((size_t)M * ldc, 1);
                    float *C0 = malloc((size_t)M * ldc * sizeof *C0);
                    float alpha = 0.5f, beta = bz ? 0.0f : 2.0f;
                    if (bz)
                        for (int m = 0; m < M; m++)
                            for (int n = 0; n < N; n++) C[m * ldc + n] = NAN;
                    memcpy(C0, C, (size_t)M * ldc * sizeof *C);
                    egm_gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                    for (int m = 0; m < M; m++) {
                        for (int n = 0; n < N; n++) {
                            double s = 0;
                            for (int k = 0; k < K; k++) {
                                double a = tA ? A[k * lda + m] : A[m * lda + k];
                                double b = tB ? B[n * ldb + k] : B[k * ldb + n];
                                s += a * b;
                            }
                            double want = alpha * s + (bz ? 0.0 : beta * C0[m * ldc + n]);
                            assert_true(fabs(C[m * ldc + n] - want) < 1e-5);
                        }
                        for (int n = N; n < ldc; n++)
                            assert_int_equal(bits(C[m * ldc + n]), bits(C0[m * ldc + n]));
                    }
                    free(A); free(B); free(C); free(C0);
                }
}

/* -------------------------------------------------------------- norms */

static void test_rmsnorm(void **st) {
    (void)st;
    const int ns[] = {1, 7, 64, 768, 1001};
    const float scales[] = {1e-3f, 1.0f, 1e3f};
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 3; b++) {
            int n = ns[a];
            float *x = rand_vec(n, scales[b]), *w = rand_vec(n, 2), *out = malloc(n * sizeof *out);
            double ss = 0;
            for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
            double r = 1.0 / sqrt(ss / n + 1e-6);
            egm_rmsnorm(out, x, w, n, 1e-6f);
            for (int i = 0; i < n; i++) assert_true(fabs(out[i] - x[i] * r * w[i]) < 1e-5);
            egm_rmsnorm(x, x, w, n, 1e-6f); /* in place gives the same */
            for (int i = 0; i < n; i++) assert_int_equal(bits(x[i]), bits(out[i]));
            free(x); free(w); free(out);
        }
}

static void naive_layernorm(double *out, const float *x, const float *w, const float *b,
                            int n, double eps) {
    double mean = 0, var = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    for (int i = 0; i < n; i++)
        out[i] = (x[i] - mean) / sqrt(var + eps) * (w ? w[i] : 1) + (b ? b[i] : 0);
}

static void test_layernorm(void **st) {
    (void)st;
    const int ns[] = {2, 9, 256, 768};
    for (int a = 0; a < 4; a++) {
        int n = ns[a];
        float *x = rand_vec(n, 3), *w = rand_vec(n, 1), *b = rand_vec(n, 1);
        float *out = malloc(n * sizeof *out);
        double *ref = malloc(n * sizeof *ref);
        egm_layernorm(out, x, w, b, n, 1e-5f);
        naive_layernorm(ref, x, w, b, n, 1e-5);
        for (int i = 0; i < n; i++) assert_true(fabs(out[i] - ref[i]) < 1e-5);
        egm_layernorm(out, x, NULL, NULL, n, 1e-5f); /* NULL: weight 1, bias 0 */
        naive_layernorm(ref, x, NULL, NULL, n, 1e-5);
        for (int i = 0; i < n; i++) assert_true(fabs(out[i] - ref[i]) < 1e-5);
        /* a large common offset: one-pass E[x^2]-E[x]^2 would lose everything */
        for (int i = 0; i < n; i++) x[i] += 1000.0f;
        egm_layernorm(out, x, w, b, n, 1e-5f);
        naive_layernorm(ref, x, w, b, n, 1e-5);
        for (int i = 0; i < n; i++) assert_true(fabs(out[i] - ref[i]) < 2e-3);
        free(x); free(w); free(b); free(out); free(ref);
    }
}

/* EG-MLA's fused gate and norm: the same bits as multiply, then normalise. */
static void test_gate_norm(void **st) {
    (void)st;
    const int ns[] = {5, 64, 256, 259};
    for (int a = 0; a < 4; a++) {
        int n = ns[a];
        float *z = rand_vec(n, 3), *g = rand_vec(n, 2), *w = rand_vec(n, 1), *b = rand_vec(n, 1);
        float *got = malloc(n * sizeof *got), *want = malloc(n * sizeof *want);
        for (int v = 0; v < 4; v++) { /* layernorm w+b, w only, none; rmsnorm */
            const float *wv = v < 2 || v == 3 ? w : NULL, *bv = v == 0 ? b : NULL;
            memcpy(got, z, n * sizeof *z);
            memcpy(want, z, n * sizeof *z);
            egm_gate_norm(got, g, wv, bv, n, 1e-5f, v == 3);
            egm_mul(want, g, n);
            if (v == 3) egm_rmsnorm(want, want, wv, n, 1e-5f);
            else egm_layernorm(want, want, wv, bv, n, 1e-5f);
            for (int i = 0; i < n; i++) assert_int_equal(bits(got[i]), bits(want[i]));
        }
        free(z); free(g); free(w); free(b); free(got); free(want);
    }
}

/* --------------------------------------------------------------- rope */

static void naive_rope(double *out, const float *x, int d, int pos, double theta, int il) {
    int h = d / 2;
    for (int i = 0; i < h; i++) {
        double ang = pos * pow(theta, -2.0 * i / d), c = cos(ang), s = sin(ang);
        int a = il ? 2 * i : i, b = il ? 2 * i + 1 : i + h;
        out[a] = x[a] * c - x[b] * s;
        out[b] = x[b] * c + x[a] * s;
    }
}

static void test_rope_naive(void **st) {
    (void)st;
    const int ds[] = {2, 8, 64, 128}, poss[] = {0, 1, 5, 77, 300};
    for (int a = 0; a < 4; a++)
        for (int p = 0; p < 5; p++)
            for (int il = 0; il < 2; il++) {
                int d = ds[a];
                float *x = rand_vec(d, 1), *y = malloc(d * sizeof *y);
                double ref[128];
                memcpy(y, x, d * sizeof *x);
                egm_rope(y, d, poss[p], 10000.0f, il);
                naive_rope(ref, x, d, poss[p], 10000.0, il);
                for (int i = 0; i < d; i++) assert_true(fabs(y[i] - ref[i]) < 1e-4);
                /* rotation keeps each pair's norm */
                for (int i = 0; i < d / 2; i++) {
                    int ia = il ? 2 * i : i, ib = il ? 2 * i + 1 : i + d / 2;
                    double n0 = hypot(x[ia], x[ib]), n1 = hypot(y[ia], y[ib]);
                    assert_true(fabs(n0 - n1) < 1e-6);
                }
                free(x); free(y);
            }
}

/* The two conventions pair different elements: with pos > 0 they disagree. */
static void test_rope_conventions_differ(void **st) {
    (void)st;
    float a[8], b[8];
    for (int i = 0; i < 8; i++) a[i] = b[i] = (float)(i + 1);
    egm_rope(a, 8, 3, 10000.0f, 0);
    egm_rope(b, 8, 3, 10000.0f, 1);
    int differ = 0;
    for (int i = 0; i < 8; i++) differ |= fabsf(a[i] - b[i]) > 1e-3f;
    assert_true(differ);
    for (int i = 0; i < 8; i++) a[i] = b[i] = (float)(i + 1);
    egm_rope(a, 8, 0, 10000.0f, 0); /* position 0 is the identity */
    egm_rope(b, 8, 0, 10000.0f, 1);
    for (int i = 0; i < 8; i++) assert_true(a[i] == (float)(i + 1) && b[i] == (float)(i + 1));
}

/* rope(q, m) . rope(k, n) depends only on m - n. */
static void test_rope_relative(void **st) {
    (void)st;
    const int d = 64;
    for (int il = 0; il < 2; il++) {
        float *q = rand_vec(d, 1), *k = rand_vec(d, 1);
        const int pairs[][2] = {{3, 0}, {5, 2}, {13, 10}, {103, 100}};
        double dots[4];
        for (int t = 0; t < 4; t++) {
            float qq[64], kk[64];
            memcpy(qq, q, sizeof qq);
            memcpy(kk, k, sizeof kk);
            egm_rope(qq, d, pairs[t][0], 10000.0f, il);
            egm_rope(kk, d, pairs[t][1], 10000.0f, il);
            dots[t] = 0;
            for (int i = 0; i < d; i++) dots[t] += (double)qq[i] * kk[i];
        }
        for (int t = 1; t < 4; t++) assert_true(fabs(dots[t] - dots[0]) < 1e-4);
        /* and a different offset gives a different dot product */
        float qq[64], kk[64];
        memcpy(qq, q, sizeof qq);
        memcpy(kk, k, sizeof kk);
        egm_rope(qq, d, 7, 10000.0f, il);
        egm_rope(kk, d, 0, 10000.0f, il);
        double other = 0;
        for (int i = 0; i < d; i++) other += (double)qq[i] * kk[i];
        assert_true(fabs(other - dots[0]) > 1e-3);
        free(q); free(k);
    }
}

/* Agreement with PyTorch's HF computation (fp32 inv_freq and fp32 angle) at a
 * position where an angle taken in double would differ by ~5e-5 rad. Values
 * from torch 1.13: x[i] = (i - 7.5) / 4, d = 16, pos = 30000, theta = 1e4. */
static void test_rope_matches_torch(void **st) {
    (void)st;
    static const float half[16] = {
        1.21863854f, -0.896001816f, 1.20456922f, -1.05375206f, 1.1440599f, -1.30802047f,
        1.54770589f, 0.241039008f, 1.43044388f, 1.40656698f, -0.91118753f, 0.959612668f,
        0.849927664f, 0.755203545f, 0.621173382f, -1.86363888f};
    static const float inter[16] = {
        -0.186025977f, 2.47419548f, -1.76922059f, 0.161581516f, 0.990715623f, 0.418010116f,
        -0.38356477f, -0.0955408365f, 0.372146368f, -0.13325572f, -0.000333845615f,
        1.07529068f, 1.53207803f, -0.899436831f, -1.50559247f, -1.97216654f};
    for (int il = 0; il < 2; il++) {
        float x[16];
        for (int i = 0; i < 16; i++) x[i] = (i - 7.5f) / 4.0f;
        egm_rope(x, 16, 30000, 10000.0f, il);
        for (int i = 0; i < 16; i++) assert_true(fabsf(x[i] - (il ? inter : half)[i]) < 1e-6f);
    }
}

/* ------------------------------------------------ softmax / logprob */

static void test_softmax(void **st) {
    (void)st;
    float x[5] = {1e30f, 1e30f, -INFINITY, 0.0f, -1e30f};
    egm_softmax(x, 5);
    double s = 0;
    for (int i = 0; i < 5; i++) {
        assert_true(isfinite(x[i]));
        s += x[i];
    }
    assert_true(fabs(s - 1) < 1e-6);
    assert_true(fabsf(x[0] - 0.5f) < 1e-6f && fabsf(x[1] - 0.5f) < 1e-6f);
    assert_true(x[2] == 0.0f && x[3] == 0.0f && x[4] == 0.0f);

    /* random row vs naive double */
    int n = 1000;
    float *v = rand_vec(n, 20);
    double *ref = malloc(n * sizeof *ref), z = 0, mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = fmax(mx, v[i]);
    for (int i = 0; i < n; i++) z += ref[i] = exp(v[i] - mx);
    egm_softmax(v, n);
    s = 0;
    for (int i = 0; i < n; i++) {
        assert_true(fabs(v[i] - ref[i] / z) < 1e-6 + 1e-5 * ref[i] / z);
        s += v[i];
    }
    assert_true(fabs(s - 1) < 1e-5);
    free(v); free(ref);

    /* degenerate rows stay finite and sum to 1 */
    float all[3] = {-INFINITY, -INFINITY, -INFINITY};
    egm_softmax(all, 3);
    for (int i = 0; i < 3; i++) assert_true(fabsf(all[i] - 1.0f / 3) < 1e-6f);
    float pinf[3] = {INFINITY, 1.0f, INFINITY};
    egm_softmax(pinf, 3);
    assert_true(pinf[0] == 0.5f && pinf[1] == 0.0f && pinf[2] == 0.5f);
}

static void test_logprob(void **st) {
    (void)st;
    int n = 5000;
    float *v = rand_vec(n, 30);
    v[17] = -INFINITY;
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, v[i]);
    for (int i = 0; i < n; i++) z += exp(v[i] - mx);
    double lse = mx + log(z);
    for (int idx = 0; idx < n; idx += 97)
        if (idx != 17) assert_true(fabs(egm_logprob(v, n, idx) - (v[idx] - lse)) < 1e-4);
    assert_true(egm_logprob(v, n, 17) == -INFINITY);
    float big[3] = {1e30f, 1e30f, 0.0f};
    assert_true(fabsf(egm_logprob(big, 3, 0) - logf(0.5f)) < 1e-6f);
    float one[1] = {123.0f};
    assert_true(egm_logprob(one, 1, 0) == 0.0f);
    free(v);
}

static void test_argmax(void **st) {
    (void)st;
    float a[6] = {1, 5, 3, 5, -2, 4};
    assert_int_equal(egm_argmax(a, 6), 1); /* first of the tied maxima */
    float b[4] = {NAN, -1, 2, NAN};
    assert_int_equal(egm_argmax(b, 4), 2);
    float c[3] = {-INFINITY, -INFINITY, -5};
    assert_int_equal(egm_argmax(c, 3), 2);
}

static void test_elementwise(void **st) {
    (void)st;
    assert_true(egm_silu(0.0f) == 0.0f);
    assert_true(fabsf(egm_silu(1.0f) - (float)(1.0 / (1.0 + exp(-1.0)))) < 1e-7f);
    assert_true(fabsf(egm_silu(50.0f) - 50.0f) < 1e-5f);
    assert_true(fabsf(egm_silu(-50.0f)) < 1e-15f);
    float g[4] = {-2, -0.5f, 0.5f, 3}, u[4] = {1, 2, 3, 4}, g0[4];
    memcpy(g0, g, sizeof g);
    egm_swiglu(g, u, 4);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(g[i] - g0[i] / (1 + exp(-(double)g0[i])) * u[i]) < 1e-6);
    float x[3] = {1, 2, 3}, y[3] = {4, 5, 6};
    egm_mul(x, y, 3);
    assert_true(x[0] == 4 && x[1] == 10 && x[2] == 18);
    egm_add(x, y, 3);
    assert_true(x[0] == 8 && x[1] == 15 && x[2] == 24);
}

/* --------------------------------------------------------- conversions */

static void test_bf16(void **st) {
    (void)st;
    assert_int_equal(egm_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(egm_f32_to_bf16(-2.0f), 0xc000);
    assert_true(egm_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(egm_bf16_to_f32(0x4049) == 3.140625f);
    /* ties go to the even neighbour */
    assert_int_equal(egm_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);
    assert_int_equal(egm_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);
    assert_int_equal(egm_f32_to_bf16(from_bits(0xbf818000u)), 0xbf82);
    /* just off the tie */
    assert_int_equal(egm_f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
    assert_int_equal(egm_f32_to_bf16(from_bits(0x3f807fffu)), 0x3f80);
    /* overflow rounds to inf; inf stays inf */
    assert_int_equal(egm_f32_to_bf16(FLT_MAX), 0x7f80);
    assert_int_equal(egm_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(egm_f32_to_bf16(-INFINITY), 0xff80);
    /* NaN stays NaN, even one whose payload sits only in the low bits */
    uint16_t n1 = egm_f32_to_bf16(from_bits(0x7f800001u));
    uint16_t n2 = egm_f32_to_bf16(from_bits(0xffffffffu));
    assert_true(isnan(egm_bf16_to_f32(n1)) && isnan(egm_bf16_to_f32(n2)));
    assert_true((n2 & 0x8000) != 0);
    assert_true(isnan(egm_bf16_to_f32(egm_f32_to_bf16(NAN))));
    /* every non-NaN bf16 survives bf16 -> f32 -> bf16 bit for bit */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = egm_bf16_to_f32((uint16_t)h);
        if (isnan(f)) assert_true(isnan(egm_bf16_to_f32(egm_f32_to_bf16(f))));
        else assert_int_equal(egm_f32_to_bf16(f), h);
    }
    /* the array versions agree with the scalar ones; rounding error <= half ulp */
    float src[100], back[100];
    uint16_t mid[100];
    for (int i = 0; i < 100; i++) src[i] = frand() * 100;
    egm_f32_to_bf16_n(mid, src, 100);
    egm_bf16_to_f32_n(back, mid, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(mid[i], egm_f32_to_bf16(src[i]));
        assert_true(fabsf(back[i] - src[i]) <= fabsf(src[i]) * 0x1p-8f);
    }
}

static void test_f16(void **st) {
    (void)st;
    const struct { uint16_t h; float f; } known[] = {
        {0x3c00, 1.0f}, {0xc000, -2.0f}, {0x7bff, 65504.0f}, {0x3555, 0.333251953125f},
        {0x0400, 0x1p-14f}, {0x0001, 0x1p-24f}, {0x8001, -0x1p-24f},
        {0x03ff, 1023 * 0x1p-24f}, {0x0200, 0x1p-15f}, {0x0000, 0.0f},
        {0x7c00, INFINITY}, {0xfc00, -INFINITY}, {0x3800, 0.5f}, {0x5640, 100.0f},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        assert_int_equal(bits(egm_f16_to_f32(known[i].h)), bits(known[i].f));
    assert_int_equal(bits(egm_f16_to_f32(0x8000)), 0x80000000u); /* -0 keeps its sign */
    assert_true(isnan(egm_f16_to_f32(0x7e00)));
    assert_true(isnan(egm_f16_to_f32(0x7c01)));
    assert_true(isnan(egm_f16_to_f32(0xfe00)));
    /* exhaustive against the definition (-1)^s * 2^(e-15) * (1 + m/1024) */
    uint16_t all[65536];
    float got[65536];
    for (uint32_t h = 0; h < 65536; h++) all[h] = (uint16_t)h;
    egm_f16_to_f32_n(got, all, 65536);
    for (uint32_t h = 0; h < 65536; h++) {
        int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
        if (e == 31) continue;
        double v = e ? ldexp(1 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
        if (s) v = -v;
        assert_true(got[h] == (float)v);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_shapes),
        cmocka_unit_test(test_gemm_trans_ld),
        cmocka_unit_test(test_gemm_small),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_gate_norm),
        cmocka_unit_test(test_rope_naive),
        cmocka_unit_test(test_rope_conventions_differ),
        cmocka_unit_test(test_rope_relative),
        cmocka_unit_test(test_rope_matches_torch),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_logprob),
        cmocka_unit_test(test_argmax),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_f16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
