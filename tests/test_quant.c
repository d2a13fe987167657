/* test_quant.c - kernels/quant.c and kernels/matmul.c: every ggml type's
 * dequantisation and product, every kernel set this CPU has against the
 * plain-C set and against a float64 reference over the dequantised weights. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/qdot.h"
#include "kernels/quant.h"

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint32_t urand(void) {
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rs >> 33);
}
static float frand(void) { return (float)urand() / 2147483648.0f - 1.0f; } /* [-1, 1) */

static const int TYPES[] = {EGM_GGML_F16, EGM_GGML_BF16, EGM_GGML_Q8_0, EGM_GGML_Q4_0,
                            EGM_GGML_Q4_1, EGM_GGML_Q5_0, EGM_GGML_Q5_1, EGM_GGML_Q4_K, EGM_GGML_Q5_K, EGM_GGML_Q6_K};
#define NTYPES (int)(sizeof TYPES / sizeof *TYPES)

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Random bytes for every quant, sane fp16 scales (so values stay finite). */
static void *rand_matrix(int type, int rows, int cols) {
    size_t rb = egm_qtype_row_bytes(type, cols), bb = egm_qtype_block_bytes(type);
    uint8_t *w = malloc(rb * (size_t)rows);
    assert_non_null(w);
    for (size_t i = 0; i < rb * (size_t)rows; i++) w[i] = (uint8_t)urand();
    size_t nb = rb * (size_t)rows / bb;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = w + b * bb;
        switch (type) {
        case EGM_GGML_F16: put16(p, egm_f32_to_f16(frand())); break;
        case EGM_GGML_BF16: put16(p, egm_f32_to_bf16(frand())); break;
        case EGM_GGML_Q8_0: case EGM_GGML_Q4_0:
            put16(p, egm_f32_to_f16(frand() * 0.01f));
            break;
        case EGM_GGML_Q5_0: put16(p, egm_f32_to_f16(frand() * 0.01f)); break;
        case EGM_GGML_Q4_1: case EGM_GGML_Q5_1: case EGM_GGML_Q4_K: case EGM_GGML_Q5_K:
            put16(p, egm_f32_to_f16(frand() * 0.01f));
            put16(p + 2, egm_f32_to_f16(frand() * 0.01f));
            break;
        case EGM_GGML_Q6_K: put16(p + 208, egm_f32_to_f16(frand() * 0.001f)); break;
        }
    }
    return w;
}

/* Dequantisation against a literal decoding of one Q4_K and one Q6_K
 * element, and the simple types against their formulas. */
static void test_dequant_layouts(void **st) {
    (void)st;
    egm_block_q4_K k4;
    memset(&k4, 0, sizeof k4);
    k4.d = egm_f32_to_f16(0.5f);
    k4.dmin = egm_f32_to_f16(0.25f);
    k4.scales[1] = 3;       /* sub-block 1: scale 3 */
    k4.scales[5] = 2;       /* sub-block 1: min 2 */
    k4.scales[8] = 0x21;    /* sub-block 4: scale 1 (+ top bits of scales[0]), min 2 */
    k4.scales[0] = 0x40;    /* scale 0 = 0, its top bits make sub-block 4's scale 1 + 16 */
    k4.qs[5] = 0x70;        /* element 32 + 5 (high nibble of group 0) = 7 */
    k4.qs[64 + 2] = 0x09;   /* element 128 + 2 (low nibble of group 2) = 9 */
    float y[256];
    egm_dequant_row(EGM_GGML_Q4_K, &k4, y, 256);
    assert_true(y[37] == 0.5f * 3 * 7 - 0.25f * 2);
    assert_true(y[130] == 0.5f * 17 * 9 - 0.25f * 2);
    assert_true(y[0] == 0.0f);

    egm_block_q6_K k6;
    memset(&k6, 0, sizeof k6);
    k6.d = egm_f32_to_f16(2.0f);
    k6.scales[8 + 4 + 1] = -3; /* half 1, third quarter, l >= 16 */
    k6.ql[64 + 20] = 0x50;     /* high nibble: element 128 + 64 + 20 */
    k6.qh[32 + 20] = 0x20;     /* bits 4-5 = 2 -> q = 5 | 2 << 4 = 37 */
    egm_dequant_row(EGM_GGML_Q6_K, &k6, y, 256);
    assert_true(y[128 + 64 + 20] == 2.0f * -3 * (37 - 32));

    egm_block_q4_1 q41 = {egm_f32_to_f16(0.5f), egm_f32_to_f16(-1.0f), {0}};
    q41.qs[3] = 0xA2;
    egm_dequant_row(EGM_GGML_Q4_1, &q41, y, 32);
    assert_true(y[3] == 0.0f && y[19] == 4.0f && y[0] == -1.0f);
    assert_int_equal(egm_qtype_row_bytes(EGM_GGML_Q6_K, 512), 420);
    assert_int_equal(egm_qtype_row_bytes(EGM_GGML_Q4_0, 33), 0);
}

/* Activation quantisers: q = round(x / d) with llama.cpp's d. */
static void test_quantize_act(void **st) {
    (void)st;
    float x[256], y[256];
    for (int i = 0; i < 256; i++) x[i] = frand();
    x[77] = -1.5f;
    egm_block_q8_K k;
    egm_quantize_row_q8_K(x, &k, 256);
    assert_true(k.qs[77] == -128);
    egm_dequant_row(EGM_GGML_Q8_K, &k, y, 256);
    for (int i = 0; i < 256; i++) assert_true(fabsf(y[i] - x[i]) <= 1.5f / 256 + 1e-6f);
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += k.qs[16 * j + i];
        assert_int_equal(k.bsums[j], s);
    }
    egm_block_q8_0 q[8];
    egm_quantize_row_q8_0(x, q, 256);
    egm_dequant_row(EGM_GGML_Q8_0, q, y, 256);
    for (int i = 0; i < 256; i++) assert_true(fabsf(y[i] - x[i]) <= 1.5f / 254 * 1.01f);
}

typedef struct { double v, mag, qerr; } refv;

/* sum |w x| of each y element of the last check_mul, [M][N] */
static double g_mag[32 * 64];

/* float64 dot of the dequantised row with x, with sum |w x| and a bound on
 * what quantising x per block can change. */
static refv ref_dot(int type, const float *wrow, const float *x, int K) {
    int blk = egm_qtype_block(type) == 1 ? 1 : egm_qtype_block(type);
    int quant = type != EGM_GGML_F16 && type != EGM_GGML_BF16;
    refv r = {0, 0, 0};
    for (int b = 0; b < K; b += blk) {
        double amax = 0, sw = 0;
        for (int i = b; i < b + blk; i++) {
            r.v += (double)wrow[i] * x[i];
            r.mag += fabs((double)wrow[i] * x[i]);
            amax = fmax(amax, fabs(x[i]));
            sw += fabs(wrow[i]);
        }
        /* half a step of q, plus d rounded to fp16 (llama.cpp's rounding) */
        if (quant) r.qerr += amax / 127.0 * 0.75 * sw;
    }
    return r;
}

/* One type, shape and row count under the current kernel set: y from
 * egm_mat_mul (with a strided y and the accumulate form) against float64.
 * Returns y for the cross-set comparison. */
static float *check_mul(int type, int N, int K, int M, int acc) {
    void *w = rand_matrix(type, N, K);
    egm_mat W = egm_mat_of(type, w, N, K);
    float *x = malloc(sizeof(float) * (size_t)M * K), *wf = malloc(sizeof(float) * (size_t)K);
    int ldy = N + 3;
    float *y = malloc(sizeof(float) * (size_t)M * ldy);
    for (int i = 0; i < M * K; i++) x[i] = frand();
    for (int i = 0; i < M * ldy; i++) y[i] = acc ? frand() : NAN;
    float *y0 = malloc(sizeof(float) * (size_t)M * ldy);
    memcpy(y0, y, sizeof(float) * (size_t)M * ldy);
    egm_mat_mul(&W, M, x, K, y, ldy, acc);
    for (int n = 0; n < N; n++) {
        egm_mat_row(&W, n, wf);
        for (int m = 0; m < M; m++) {
            refv r = ref_dot(type, wf, x + (long)m * K, K);
            g_mag[m * N + n] = r.mag;
            double want = r.v + (acc ? y0[(long)m * ldy + n] : 0);
            /* more rows than EGM_QMM_DOT_MAX: fp32 sgemm, x not quantised */
            double tol = (M > EGM_QMM_DOT_MAX ? 0 : r.qerr) + 2e-6 * r.mag + 1e-6;
            double got = y[(long)m * ldy + n];
            if (!(fabs(got - want) <= tol))
                fail_msg("%s %s N=%d K=%d M=%d acc=%d: y[%d][%d] = %.9g, float64 %.9g (tol %.3g)",
                         egm_kernels_name(), egm_qtype_name(type), N, K, M, acc, m, n, got, want,
                         tol);
        }
    }
    for (int m = 0; m < M; m++) /* the padding of the strided y is untouched */
        for (int n = N; n < ldy; n++)
            assert_memory_equal(&y[(long)m * ldy + n], &y0[(long)m * ldy + n], sizeof(float));
    free(w), free(x), free(wf), free(y0);
    return y;
}

static const char *SETS[] = {"portable", "avx2", "avx512"};

/* Every set the CPU has; each set's y equals the portable one's within fp32
 * reordering of the per-block sums (2e-6 of sum |w x|). */
static void test_products(void **st) {
    (void)st;
    for (int t = 0; t < NTYPES; t++) {
        int type = TYPES[t], blk = egm_qtype_block(type);
        int K = blk == 1 ? 37 : blk == 32 ? 32 * 7 : 256 * 3;
        int Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 20};
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++) {
            int M = Ms[mi], N = 13 + (int)mi;
            uint64_t seed = rs;
            float *base = NULL;
            for (int s = 0; s < 3; s++) {
                if (egm_kernels_force(SETS[s])) continue;
                rs = seed; /* same weights and x for every set */
                float *y = check_mul(type, N, K, M, (int)(mi & 1));
                if (!base) {
                    base = y;
                    continue;
                }
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) {
                        float a = base[m * (N + 3) + n], b = y[m * (N + 3) + n];
                        if (!(fabs(a - b) <= 4e-6 * g_mag[m * N + n] + 1e-6))
                            fail_msg("%s vs portable, %s M=%d: %.9g vs %.9g", SETS[s],
                                     egm_qtype_name(type), M, b, a);
                    }
                free(y);
            }
            free(base);
        }
    }
    egm_kernels_force("portable");
    assert_string_equal(egm_kernels_name(), "portable");
}

/* The x86 activation rounding gives the plain-C one's bytes, block by
 * block: ordinary values, exact halves (round to even), an all-zero block,
 * tiny (fp16-subnormal d) and huge values, and NaN / inf entries. */
static void test_quantize_a8_sets(void **st) {
    (void)st;
    enum { NB = 12, N = NB * EGM_QK };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = frand() * 3.0f;
    for (int i = 0; i < EGM_QK; i++) x[EGM_QK + i] = (float)(i - 16) * 0.5f; /* amax 8: halves */
    for (int i = 0; i < EGM_QK; i++) x[2 * EGM_QK + i] = 0.0f;
    for (int i = 0; i < EGM_QK; i++) x[3 * EGM_QK + i] = frand() * 1e-6f;
    for (int i = 0; i < EGM_QK; i++) x[4 * EGM_QK + i] = frand() * 3e38f;
    x[5 * EGM_QK + 3] = NAN;
    x[6 * EGM_QK + 7] = INFINITY;
    x[7 * EGM_QK + 1] = -INFINITY;
    x[8 * EGM_QK] = -2.0f; /* the negative entry holds amax */
    egm_block_a8 want[NB], got[NB];
    egm_quantize_row_a8(x, want, N);
    int ran = 0;
    for (int s = 0; s < 3; s++) {
        if (egm_kernels_force(SETS[s])) continue;
        egm_mat W = egm_mat_of(EGM_GGML_Q4_1, NULL, 1, N);
        assert_int_equal(egm_mat_act_bytes(&W, 1), sizeof got);
        memset(got, 0x55, sizeof got);
        egm_mat_act_prepare(&W, 1, x, N, got);
        for (int b = 0; b < NB; b++) {
            assert_memory_equal(got[b].qs, want[b].qs, EGM_QK);
            assert_int_equal(got[b].sum, want[b].sum);
            assert_true(got[b].d == want[b].d || (isnan(got[b].d) && isnan(want[b].d)));
            assert_true(got[b].s == want[b].s || (isnan(got[b].s) && isnan(want[b].s)));
        }
        ran++;
    }
    assert_true(ran >= 1);
    egm_kernels_force("portable");
}

/* x prepared once and used for several blocks of W's rows gives
 * egm_mat_mul's bits; the formats say which matrices may share it. */
static void test_prepared(void **st) {
    (void)st;
    int types[] = {EGM_GGML_Q4_1, EGM_GGML_Q8_0, EGM_GGML_Q4_K, EGM_GGML_Q6_K};
    for (int s = 0; s < 3; s++) {
        if (egm_kernels_force(SETS[s])) continue;
        for (int t = 0; t < 4; t++)
            for (int M = 1; M <= EGM_QMM_DOT_MAX; M += 3) {
                int K = 512, N = 40, ty = types[t];
                void *w = rand_matrix(ty, N, K);
                egm_mat W = egm_mat_of(ty, w, N, K);
                float *x = malloc(sizeof(float) * M * K), *a = malloc(sizeof(float) * M * N),
                      *b = malloc(sizeof(float) * M * N);
                for (int i = 0; i < M * K; i++) x[i] = frand();
                egm_mat_mul(&W, M, x, K, a, N, 0);
                assert_true(egm_mat_act_format(&W, M) != 0);
                void *qx = malloc(egm_mat_act_bytes(&W, M));
                egm_mat_act_prepare(&W, M, x, K, qx);
                for (int n0 = 0; n0 < N; n0 += 16) { /* as a stage cuts it */
                    egm_mat blk = W;
                    blk.rows = N - n0 < 16 ? N - n0 : 16;
                    blk.data = (const char *)w + (size_t)n0 * W.row_bytes;
                    egm_mat_mul_prepared(&blk, M, qx, b + n0, N, 0);
                }
                assert_memory_equal(a, b, sizeof(float) * M * N);
                free(w), free(x), free(a), free(b), free(qx);
            }
    }
    egm_mat q41 = egm_mat_of(EGM_GGML_Q4_1, NULL, 8, 64), q80 = egm_mat_of(EGM_GGML_Q8_0, NULL, 8, 64);
    egm_mat q4k = egm_mat_of(EGM_GGML_Q4_K, NULL, 8, 256), f16 = egm_mat_of(EGM_GGML_F16, NULL, 8, 64);
    assert_int_equal(egm_mat_act_format(&q41, 1), egm_mat_act_format(&q80, 1));
    assert_int_not_equal(egm_mat_act_format(&q41, 1), egm_mat_act_format(&q4k, 1));
    assert_int_equal(egm_mat_act_format(&f16, 1), 0);
    assert_int_equal(egm_mat_act_format(&q41, EGM_QMM_DOT_MAX + 1), 0);
    egm_kernels_force("portable");
}

/* F32 keeps egm_gemm's path: the same bits as egm_linear. */
static void test_f32_is_linear(void **st) {
    (void)st;
    int Ms[] = {1, 3, 8, 30};
    for (int i = 0; i < 4; i++) {
        int M = Ms[i], N = 45, K = 70;
        float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * N * K);
        float *a = malloc(sizeof(float) * M * N), *b = malloc(sizeof(float) * M * N);
        for (int k = 0; k < M * K; k++) x[k] = frand();
        for (int k = 0; k < N * K; k++) w[k] = frand();
        egm_mat W = egm_mat_f32(w, N, K);
        egm_linear(a, x, w, M, N, K);
        egm_matmul(b, x, &W, M);
        assert_memory_equal(a, b, sizeof(float) * M * N);
        free(x), free(w), free(a), free(b);
    }
}

/* --batch-invariant: a row's product is the same bits whatever else shares
 * the call, for every type, every kernel set this CPU has and the F32
 * shapes of egm_gemm_batch (x W^T with and without accumulation, x W, a
 * scaled product): each row of an M-row product against the same row alone.
 * Off, at least one F32 row differs somewhere (sgemv, gemm_small and sgemm
 * sum in different orders): the check below can tell. */
static void test_batch_invariant(void **st) {
    (void)st;
    int K = 288, N = 37, Ms[] = {2, 5, 8, 9, 13, 20};
    float *x = malloc(sizeof(float) * 20 * K), *y = malloc(sizeof(float) * 20 * N),
          *one = malloc(sizeof(float) * N), *w = malloc(sizeof(float) * N * K),
          *wt = malloc(sizeof(float) * K * N);
    for (int i = 0; i < 20 * K; i++) x[i] = frand();
    for (int i = 0; i < N * K; i++) w[i] = wt[i] = frand();
    int differs_off = 0;
    for (int inv = 1; inv >= 0; inv--) {
        egm_set_batch_invariant(inv);
        for (int mi = 0; mi < 6; mi++) {
            int M = Ms[mi];
            for (int form = 0; form < 4; form++) {
                for (int i = 0; i < M * N; i++) y[i] = 0.5f;
                if (form == 0) egm_gemm_batch(1, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
                if (form == 1) egm_gemm_batch(1, M, N, K, 1.0f, x, K, w, K, 1.0f, y, N);
                if (form == 2) egm_gemm_batch(0, M, N, K, 1.0f, x, K, wt, N, 0.0f, y, N);
                if (form == 3) egm_gemm_batch(1, M, N, K, 0.25f, x, K, w, K, 0.0f, y, N);
                for (int r = 0; r < M; r++) {
                    for (int i = 0; i < N; i++) one[i] = 0.5f;
                    const float *xr = x + (long)r * K;
                    if (form == 0) egm_gemm_batch(1, 1, N, K, 1.0f, xr, K, w, K, 0.0f, one, N);
                    if (form == 1) egm_gemm_batch(1, 1, N, K, 1.0f, xr, K, w, K, 1.0f, one, N);
                    if (form == 2) egm_gemm_batch(0, 1, N, K, 1.0f, xr, K, wt, N, 0.0f, one, N);
                    if (form == 3) egm_gemm_batch(1, 1, N, K, 0.25f, xr, K, w, K, 0.0f, one, N);
                    int same = !memcmp(one, y + (long)r * N, sizeof(float) * N);
                    if (inv) assert_true(same);
                    else differs_off |= !same;
                }
            }
        }
    }
    assert_true(differs_off);
    egm_set_batch_invariant(1);
    for (int s = 0; s < 3; s++) {
        if (egm_kernels_force(SETS[s])) continue;
        for (int t = 0; t < NTYPES; t++) {
            int Kq = 512;
            void *wq = rand_matrix(TYPES[t], N, Kq);
            egm_mat W = egm_mat_of(TYPES[t], wq, N, Kq);
            float *xq = malloc(sizeof(float) * 20 * Kq);
            for (int i = 0; i < 20 * Kq; i++) xq[i] = frand();
            for (int mi = 0; mi < 6; mi++) {
                int M = Ms[mi];
                egm_mat_mul(&W, M, xq, Kq, y, N, 0);
                for (int r = 0; r < M; r++) {
                    egm_mat_mul(&W, 1, xq + (long)r * Kq, Kq, one, N, 0);
                    assert_memory_equal(one, y + (long)r * N, sizeof(float) * N);
                }
            }
            free(wq), free(xq);
        }
    }
    egm_set_batch_invariant(0);
    egm_kernels_force("portable");
    free(x), free(y), free(one), free(w), free(wt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_invariant),
        cmocka_unit_test(test_dequant_layouts),
        cmocka_unit_test(test_quantize_act),
        cmocka_unit_test(test_products),
        cmocka_unit_test(test_quantize_a8_sets),
        cmocka_unit_test(test_prepared),
        cmocka_unit_test(test_f32_is_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
