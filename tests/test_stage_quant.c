/* test_stage_quant.c - a stage over quantised weights in decode (M <= 8
 * rows, the dot kernels): x is rounded once per product and shared by q/k/v
 * and gate/up when their formats agree (worker/stage.c, stage_prep). Layer
 * 0 mixes formats so that every case of the sharing runs: q Q8_0, k Q4_1
 * (shares q's x), v F16 (fp32 x), gate Q8_0, up Q4_1 (shares). The output
 * is the same bits with 1, 2 and 3 threads, and within the activations'
 * 8-bit rounding of the same weights in F32 (a wrong x would be off by
 * the size of the values). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quantize.h"
#include "model/weights.h"
#include "worker/stage.h"

#define STEPS 3

static void *owned[64];
static int n_owned;

/* W re-stored as `type` (from its dequantised rows); F32 keeps the values. */
static egm_mat restore(const egm_mat *W, int type) {
    float *row = malloc(sizeof(float) * (size_t)W->cols);
    size_t rb = type == EGM_GGML_F32 ? sizeof(float) * (size_t)W->cols
                                     : egm_qtype_row_bytes(type, W->cols);
    char *d = malloc(rb * (size_t)W->rows);
    assert_true(row && d && n_owned < 64);
    for (int r = 0; r < W->rows; r++) {
        egm_mat_row(W, r, row);
        if (type == EGM_GGML_F32) memcpy(d + rb * r, row, rb);
        else egm_quantize_row(type, row, d + rb * r, W->cols);
    }
    free(row);
    owned[n_owned++] = d;
    return type == EGM_GGML_F32 ? egm_mat_f32((float *)d, W->rows, W->cols)
                                : egm_mat_of(type, d, W->rows, W->cols);
}

/* Decode-sized batches: 6 + 2 prompt rows, then STEPS steps of 2 rows. */
static float *run(const egm_model *m, int threads) {
    int D = m->cfg.hidden_size, n_out = (8 + 2 * STEPS) * D, k = 0;
    openblas_set_num_threads(threads);
    egm_stage st;
    egm_err e;
    if (egm_stage_init(&st, m, 2, 16 << 20, 16, 0, &e)) fail_msg("%s", e.msg);
    openblas_set_num_threads(1);
    assert_int_equal(egm_stage_reserve(&st, 0, 6 + STEPS), 0);
    assert_int_equal(egm_stage_reserve(&st, 1, 2 + STEPS), 0);
    float *out = calloc((size_t)n_out, sizeof(float)), *x = calloc(8 * (size_t)D, sizeof(float));
    int slot[8] = {0, 0, 0, 0, 0, 0, 1, 1}, pos[8] = {0, 1, 2, 3, 4, 5, 0, 1};
    int tok[8] = {4, 17, 29, 3, 88, 41, 7, 150};
    egm_mbatch b = {8, slot, pos, tok};
    egm_stage_forward(&st, &b, x);
    memcpy(out, x, sizeof(float) * 8 * D);
    k = 8;
    for (int s = 0; s < STEPS; s++, k += 2) {
        int sl[2] = {0, 1}, ps[2] = {6 + s, 2 + s}, tk[2] = {5 + s, 9 + s};
        egm_mbatch d = {2, sl, ps, tk};
        egm_stage_forward(&st, &d, x);
        memcpy(out + (long)k * D, x, sizeof(float) * 2 * D);
    }
    egm_stage_free(&st);
    free(x);
    return out;
}

static void test_mixed_formats(void **st) {
    (void)st;
    egm_config c;
    egm_err e;
    egm_model m;
    if (egm_config_load("tests/fixtures/models/llama_gqa_tied/config.json", &c, &e))
        fail_msg("%s", e.msg);
    if (egm_model_random(&c, 7, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &m, &e) ||
        egm_model_convert(&m, EGM_GGML_Q8_0, &e))
        fail_msg("%s", e.msg);
    egm_layer *l0 = &m.layers[0];
    l0->wk = restore(&l0->wk, EGM_GGML_Q4_1);
    l0->wv = restore(&l0->wv, EGM_GGML_F16);
    l0->w_up = restore(&l0->w_up, EGM_GGML_Q4_1);

    /* the same weights in F32: no rounding of x anywhere */
    egm_model f = m;
    int nl = m.hi - m.lo;
    f.layers = malloc(sizeof *f.layers * (size_t)nl);
    memcpy(f.layers, m.layers, sizeof *f.layers * (size_t)nl);
    for (int i = 0; i < nl; i++) {
        egm_layer *w = &f.layers[i];
        egm_mat *mats[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (int j = 0; j < 7; j++) *mats[j] = restore(mats[j], EGM_GGML_F32);
    }

    int D = c.hidden_size, n = (8 + 2 * STEPS) * D;
    float *one = run(&m, 1), *two = run(&m, 2), *three = run(&m, 3), *ref = run(&f, 1);
    assert_memory_equal(one, two, sizeof(float) * n);
    assert_memory_equal(one, three, sizeof(float) * n);
    double worst = 0, mag = 0;
    for (int i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)one[i] - ref[i]));
        mag = fmax(mag, fabs((double)ref[i]));
    }
    print_message("worst |quantised - F32| %g, values up to %g\n", worst, mag);
    /* measured: 0.0113 for values up to 1.48 (0.8 %) */
    if (!(worst <= 0.02 * mag)) fail_msg("quantised x: off by %g (values up to %g)", worst, mag);
    free(one), free(two), free(three), free(ref), free(f.layers);
    while (n_owned) free(owned[--n_owned]);
    egm_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
