/* test_quantize.c - the reference quantizers (kernels/quantize.c) against
 * their definitions, through quant.h's dequantisation.
 *
 * Exact checks where the format pins the result (Q8_0's scale and levels,
 * F16/BF16 rounding, zero and constant blocks), and for the fitted formats
 * the relative RMS error on heavy-tailed data, bounded by what was measured
 * (Q4_0 0.134, Q4_1 0.113, Q4_K 0.101, Q6_K 0.029, Q8_0 0.0099: the bytes of
 * Q8_0/Q4_0/Q4_1 equal gguf-py's quantize on the same data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/quantize.h"

#define N 4096

/* Deterministic heavy-tailed data: gaussian * lognormal, like trained
 * weights with outliers. */
static void data(float *x, int n) {
    uint64_t s = 12345;
    for (int i = 0; i < n; i++) {
        float u[4];
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            u[k] = ((float)(s >> 40) + 0.5f) / 16777216.0f;
        }
        float g1 = sqrtf(-2 * logf(u[0])) * cosf(6.2831853f * u[1]);
        float g2 = sqrtf(-2 * logf(u[2])) * cosf(6.2831853f * u[3]);
        x[i] = g1 * expf(0.5f * g2);
    }
}

static double rel_rmse(int type, const float *x, int n) {
    size_t rb = egm_qtype_row_bytes(type, n);
    void *q = malloc(rb);
    float *y = malloc((size_t)n * sizeof *y);
    egm_quantize_row(type, x, q, n);
    egm_dequant_row(type, q, y, n);
    double se = 0, s2 = 0;
    for (int i = 0; i < n; i++) se += (double)(y[i] - x[i]) * (y[i] - x[i]), s2 += (double)x[i] * x[i];
    free(q);
    free(y);
    return sqrt(se / s2);
}

static void test_error_bounds(void **state) {
    (void)state;
    static float x[N];
    data(x, N);
    const struct { int type; double bound; } t[] = {
        {EGM_GGML_F32, 0},        {EGM_GGML_F16, 5e-4},    {EGM_GGML_BF16, 4e-3},
        {EGM_GGML_Q8_0, 0.012},   {EGM_GGML_Q6_K, 0.035},  {EGM_GGML_Q4_K, 0.12},
        {EGM_GGML_Q4_1, 0.135},   {EGM_GGML_Q4_0, 0.16},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        assert_true(egm_quantize_supported(t[i].type));
        double r = rel_rmse(t[i].type, x, N);
        if (r > t[i].bound) fail_msg("%s: relative RMS error %g > %g", egm_qtype_name(t[i].type), r, t[i].bound);
    }
    assert_false(egm_quantize_supported(EGM_GGML_Q5_K));
}

/* Q8_0 of 0..31: d = 31/127 (as fp16), q = round(i / d). */
static void test_q8_0_exact(void **state) {
    (void)state;
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)i;
    egm_block_q8_0 b;
    egm_quantize_row(EGM_GGML_Q8_0, x, &b, 32);
    assert_int_equal(b.d, egm_f32_to_f16(31.0f / 127));
    for (int i = 0; i < 32; i++) assert_int_equal(b.qs[i], (int)roundf(i * (127.0f / 31)));
}

/* Zero blocks dequantise to zeros; a constant block to itself (exactly for
 * the formats with an offset or a level at the value). */
static void test_zero_and_constant(void **state) {
    (void)state;
    const int types[] = {EGM_GGML_Q8_0, EGM_GGML_Q4_0, EGM_GGML_Q4_1, EGM_GGML_Q4_K, EGM_GGML_Q6_K};
    float x[256], y[256];
    unsigned char q[512];
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        memset(x, 0, sizeof x);
        egm_quantize_row(types[k], x, q, 256);
        egm_dequant_row(types[k], q, y, 256);
        for (int i = 0; i < 256; i++) assert_true(y[i] == 0.0f);
        for (int i = 0; i < 256; i++) x[i] = -0.5f;
        egm_quantize_row(types[k], x, q, 256);
        egm_dequant_row(types[k], q, y, 256);
        for (int i = 0; i < 256; i++)
            if (fabsf(y[i] + 0.5f) > 1e-3f)
                fail_msg("%s: constant -0.5 came back as %g", egm_qtype_name(types[k]), y[i]);
    }
}

/* F16/BF16 round to nearest even; BF16 keeps NaN a NaN. */
static void test_half_rounding(void **state) {
    (void)state;
    float x[4] = {1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 65504.0f, NAN};
    uint16_t h[4];
    egm_quantize_row(EGM_GGML_F16, x, h, 4);
    assert_int_equal(h[0], 0x3c00); /* tie -> even */
    assert_int_equal(h[1], 0x3c02);
    assert_int_equal(h[2], 0x7bff);
    x[0] = 1.0f + 1.0f / 256;       /* bf16 tie -> even */
    egm_quantize_row(EGM_GGML_BF16, x, h, 4);
    assert_int_equal(h[0], 0x3f80);
    assert_true(isnan(egm_bf16_to_f32(h[3])));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_bounds),
        cmocka_unit_test(test_q8_0_exact),
        cmocka_unit_test(test_zero_and_constant),
        cmocka_unit_test(test_half_rounding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
