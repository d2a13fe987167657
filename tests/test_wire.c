/* test_wire.c - activation encodings between stages: sizes, round trips,
 * bf16 rounding, int8 scales and zero rows. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker/wire.h"

static void test_sizes(void **st) {
    (void)st;
    assert_int_equal(egm_wire_bytes(EGM_WIRE_BF16, 3, 64), 3 * 64 * 2);
    assert_int_equal(egm_wire_bytes(EGM_WIRE_FP32, 3, 64), 3 * 64 * 4);
    assert_int_equal(egm_wire_bytes(EGM_WIRE_INT8, 3, 64), 3 * 4 + 3 * 64);
    assert_int_equal(egm_wire_bytes(EGM_WIRE_BF16, 0, 64), 0);
}

static void test_parse(void **st) {
    (void)st;
    egm_wire_dtype t;
    assert_int_equal(egm_wire_dtype_parse("fp32", &t), 0);
    assert_int_equal(t, EGM_WIRE_FP32);
    assert_int_equal(egm_wire_dtype_parse("bf16", &t), 0);
    assert_int_equal(t, EGM_WIRE_BF16);
    assert_int_equal(egm_wire_dtype_parse("int8", &t), 0);
    assert_int_equal(t, EGM_WIRE_INT8);
    assert_int_equal(egm_wire_dtype_parse("fp16", &t), -1);
    assert_int_equal(egm_wire_dtype_parse("", &t), -1);
}

static void fill(float *x, int n) {
    uint32_t s = 12345;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / (float)(1 << 24) - 0.5f) * 8.0f;
    }
}

static void test_fp32_exact(void **st) {
    (void)st;
    enum { N = 5, D = 37 };
    float x[N * D], y[N * D];
    fill(x, N * D);
    x[3] = -0.0f;
    x[4] = 1e-40f; /* denormal survives */
    unsigned char buf[N * D * 4];
    egm_wire_encode(EGM_WIRE_FP32, x, N, D, buf);
    egm_wire_decode(EGM_WIRE_FP32, buf, N, D, y);
    assert_memory_equal(x, y, sizeof x);
}

static void test_bf16_rounding(void **st) {
    (void)st;
    /* 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties go to even
     * (1.0); just above the tie rounds up; values exact in bf16 stay. */
    float x[6] = {1.0f + 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, 1.0f + 3 * 0x1p-8f,
                  -2.5f, 0.0f, 65280.0f};
    float want[6] = {1.0f, 1.0f + 0x1p-7f, 1.0f + 0x1p-6f, -2.5f, 0.0f, 65280.0f};
    uint16_t buf[6];
    float y[6];
    egm_wire_encode(EGM_WIRE_BF16, x, 2, 3, buf);
    assert_int_equal(buf[0], 0x3f80);
    egm_wire_decode(EGM_WIRE_BF16, buf, 2, 3, y);
    for (int i = 0; i < 6; i++) assert_true(y[i] == want[i]);
}

static void test_bf16_round_trip_error(void **st) {
    (void)st;
    enum { N = 4, D = 100 };
    float x[N * D], y[N * D];
    fill(x, N * D);
    uint16_t buf[N * D];
    egm_wire_encode(EGM_WIRE_BF16, x, N, D, buf);
    egm_wire_decode(EGM_WIRE_BF16, buf, N, D, y);
    for (int i = 0; i < N * D; i++) /* 8 significant bits: half an ulp <= 2^-8 relative */
        assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f);
    /* decoding again what we encode from the decoded values is exact */
    uint16_t buf2[N * D];
    egm_wire_encode(EGM_WIRE_BF16, y, N, D, buf2);
    assert_memory_equal(buf, buf2, sizeof buf);
}

static void test_int8(void **st) {
    (void)st;
    enum { N = 3, D = 64 };
    float x[N * D], y[N * D];
    fill(x, N * D);
    for (int i = 0; i < D; i++) x[D + i] = 0.0f; /* row 1: all zeros */
    x[2 * D + 7] = -10.0f;                       /* row 2: its max |x| */
    unsigned char buf[N * 4 + N * D];
    assert_int_equal(sizeof buf, egm_wire_bytes(EGM_WIRE_INT8, N, D));
    egm_wire_encode(EGM_WIRE_INT8, x, N, D, buf);
    float scale[N];
    memcpy(scale, buf, sizeof scale);
    assert_true(scale[1] == 0.0f);
    assert_true(scale[2] == 10.0f / 127.0f);
    assert_int_equal((int8_t)buf[N * 4 + 2 * D + 7], -127);
    egm_wire_decode(EGM_WIRE_INT8, buf, N, D, y);
    for (int r = 0; r < N; r++)
        for (int i = 0; i < D; i++) {
            float err = fabsf(y[r * D + i] - x[r * D + i]);
            assert_true(err <= scale[r] * 0.5f + 1e-6f);
        }
    for (int i = 0; i < D; i++) assert_true(y[D + i] == 0.0f);
    assert_true(y[2 * D + 7] == scale[2] * -127);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_fp32_exact),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bf16_round_trip_error),
        cmocka_unit_test(test_int8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
