/* test_roofline.c - the bench's cost model (projection shapes, flops and
 * bytes of a step, by hand for the paper's configs) and the roofline
 * kernels (triad, read stream, sgemm and bandwidth measurements). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/roofline.h"
#include "model/config.h"

static void load(const char *name, egm_config *c) {
    char path[256];
    egm_err e;
    snprintf(path, sizeof path, "deploy/examples/paper-%s.json", name);
    int rc = egm_config_load(path, c, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    assert_int_equal(rc, 0);
}

static const egm_proj_shape *find(const egm_proj_shape *s, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, name)) return &s[i];
    fail_msg("no projection named %s", name);
    return NULL;
}

/* The paper's cache sizes (MODEL.md): 18432 / 3840 / 1536 elements per token. */
static void test_paper_configs_kv(void **st) {
    (void)st;
    egm_config c;
    load("mha", &c);
    assert_int_equal(egm_config_kv_elems(&c) * c.num_layers, 18432);
    load("mla", &c);
    assert_int_equal(egm_config_kv_elems(&c) * c.num_layers, 3840);
    load("egmla", &c);
    assert_int_equal(egm_config_kv_elems(&c) * c.num_layers, 1536);
    assert_int_equal(c.eg_latent_dim, 256);
    assert_int_equal(c.eg_embed_dim, 256);
}

static void test_shapes_egmla(void **st) {
    (void)st;
    egm_config c;
    load("egmla", &c);
    egm_proj_shape s[EGM_MAX_PROJ];
    int n = egm_proj_shapes(&c, s);
    assert_int_equal(n, 6);
    const egm_proj_shape *p = find(s, n, "q");
    assert_int_equal(p->N, 12 * 128);
    assert_int_equal(p->K, 768);
    assert_int_equal(p->count, 12);
    p = find(s, n, "kv_a");
    assert_int_equal(p->N, 64 + 64);
    p = find(s, n, "o");
    assert_int_equal(p->N, 768);
    assert_int_equal(p->K, 768);
    p = find(s, n, "gate+up"); /* same [2048, 768]: one entry used twice per layer */
    assert_int_equal(p->N, 2048);
    assert_int_equal(p->count, 24);
    p = find(s, n, "down");
    assert_int_equal(p->K, 2048);
    p = find(s, n, "lm_head");
    assert_int_equal(p->N, 32000);
    assert_int_equal(p->count, 1);
}

static void test_shapes_mha(void **st) {
    (void)st;
    egm_config c;
    load("mha", &c);
    egm_proj_shape s[EGM_MAX_PROJ];
    int n = egm_proj_shapes(&c, s);
    assert_int_equal(n, 4);
    const egm_proj_shape *p = find(s, n, "q+k+v+o");
    assert_int_equal(p->N, 768);
    assert_int_equal(p->count, 48);
}

static void test_cost_egmla(void **st) {
    (void)st;
    egm_config c;
    load("egmla", &c);
    egm_step_cost k;
    long b = 32, P = 129;
    egm_step_cost_of(&c, b, b, b * P, 1, 0, &k);
    double layer = 1536.0 * 768 + 128.0 * 768 + 768.0 * 768 + 2 * 2048.0 * 768 + 768.0 * 2048;
    double head = 32000.0 * 768;
    assert_true(k.proj_flops == 2.0 * b * (12 * layer + head));
    /* + kv_b_proj [12*128, 256] and eg_up_proj [256, 64] per layer */
    assert_true(k.weight_bytes == 4.0 * (12 * (layer + 1536.0 * 256 + 256.0 * 64) + head));
    assert_true(k.gate_bytes == 4.0 * 12 * 256 * b * P);
    assert_true(k.kv_bytes == (double)b * P * (12 * 128 * 4 + 4));

    /* No head rows: lm_head neither computed nor read. bf16 cache halves it. */
    egm_step_cost_of(&c, 100, 0, 5050, 1, 1, &k);
    assert_true(k.proj_flops == 2.0 * 100 * 12 * layer);
    assert_true(k.weight_bytes == 4.0 * 12 * (layer + 1536.0 * 256 + 256.0 * 64));
    assert_true(k.kv_bytes == 5050.0 * (12 * 128 * 2 + 4));

    /* Without the precomputed table: eg_gate_proj is read, eg_embed rows gathered. */
    egm_step_cost_of(&c, 1, 1, 10, 0, 0, &k);
    assert_true(k.weight_bytes ==
                4.0 * (12 * (layer + 1536.0 * 256 + 256.0 * 64 + 256.0 * 256) + head));
    assert_true(k.gate_bytes == 4.0 * 12 * 256 * 10);
}

static void test_cost_mla_mha(void **st) {
    (void)st;
    egm_config c;
    egm_step_cost k;
    load("mla", &c);
    egm_step_cost_of(&c, 1, 1, 7, 1, 0, &k);
    double layer = 1536.0 * 768 + 320.0 * 768 + 768.0 * 768 + 3 * 2048.0 * 768;
    assert_true(k.proj_flops == 2.0 * (12 * layer + 32000.0 * 768));
    assert_true(k.weight_bytes == 4.0 * (12 * (layer + 1536.0 * 256) + 32000.0 * 768));
    assert_true(k.gate_bytes == 0);
    assert_true(k.kv_bytes == 7.0 * 3840 * 4);
    load("mha", &c);
    egm_step_cost_of(&c, 8, 8, 80, 1, 0, &k);
    layer = 4 * 768.0 * 768 + 3 * 2048.0 * 768;
    assert_true(k.proj_flops == 2.0 * 8 * (12 * layer + 32000.0 * 768));
    assert_true(k.weight_bytes == 4.0 * (12 * layer + 32000.0 * 768));
    assert_true(k.kv_bytes == 80.0 * 18432 * 4);
}

/* Attention flops by hand, per docs/PAPER.md's counts per cached position
 * and layer: 6,912 multiply-adds of absorbed attention (MLA and EG-MLA),
 * 16,384 more for EG-MLA's up(c), MHA 12 heads x 2 x 64. */
static void test_attn_flops(void **st) {
    (void)st;
    egm_config c;
    load("egmla", &c);
    /* one row, 100 positions, one segment */
    double per_pos = 2.0 * 6912 + 2.0 * 16384 + 8.0 * 256;
    double per_row = 2.0 * 12 * (64 + 64) * 256; /* W_UK and W_UV absorbed */
    assert_true(egm_attn_flops_of(&c, 1, 100, 100, 1) == 12 * (per_row + 100 * per_pos));
    /* prefill of 4 rows in one segment: the triangle 1+2+3+4 for scores,
     * 4 positions rebuilt once */
    assert_true(egm_attn_flops_of(&c, 4, 10, 4, 1) ==
                12 * (4 * per_row + 10 * 2.0 * 6912 + 4 * (2.0 * 16384 + 8.0 * 256)));
    /* no gate table: eg_gate_proj [256, 256] per position as well */
    assert_true(egm_attn_flops_of(&c, 1, 100, 100, 0) ==
                12 * (per_row + 100 * (per_pos + 2.0 * 256 * 256)));
    /* the step cost carries it, each decode row its own segment */
    egm_step_cost k;
    egm_step_cost_of(&c, 32, 32, 32 * 2049L, 1, 0, &k);
    assert_true(k.attn_flops == 12 * (32 * per_row + 32 * 2049.0 * per_pos));

    load("mla", &c);
    assert_true(egm_attn_flops_of(&c, 1, 100, 100, 1) == 12 * (per_row + 100 * 2.0 * 6912));
    /* z is cached: the segment's positions cost nothing more */
    assert_true(egm_attn_flops_of(&c, 1, 100, 5000, 1) == egm_attn_flops_of(&c, 1, 100, 0, 1));

    load("mha", &c);
    assert_true(egm_attn_flops_of(&c, 3, 100, 100, 1) == 12 * 100 * 4.0 * 12 * 64);
}

static void test_triad(void **st) {
    (void)st;
    size_t n = 1003;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    int threads[] = {1, 3, 7, 2000};
    for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
        for (size_t i = 0; i < n; i++) a[i] = -1, b[i] = (float)i, c[i] = 2.0f * (float)(i % 5);
        assert_int_equal(egm_triad(a, b, c, 0.5f, n, threads[t]), 0);
        for (size_t i = 0; i < n; i++) assert_true(a[i] == (float)i + (float)(i % 5));
        /* sum of i + i%5 over i < n, exact in double */
        double want = 0;
        for (size_t i = 0; i < n; i++) want += (double)i + (double)(i % 5);
        assert_true(egm_stream_sum(a, n, threads[t]) == want);
    }
    /* Empty and tiny ranges: nothing written out of bounds, sums of nothing. */
    assert_int_equal(egm_triad(a, b, c, 1.0f, 0, 4), 0);
    assert_true(egm_stream_sum(a, 0, 3) == 0);
    assert_true(egm_stream_sum(a, 3, 8) == 0 + 2 + 4);
    free(a), free(b), free(c);
}

static void test_measurements_sane(void **st) {
    (void)st;
    double rd = 0;
    double bw = egm_roofline_membw((size_t)1 << 20, 2, 2, &rd);
    assert_true(bw > 0 && bw < 1e5);
    assert_true(rd > 0 && rd < 1e5);
    egm_proj_shape s[2] = {{"a", 64, 32, 3}, {"b", 16, 128, 1}};
    double per[2] = {0, 0};
    double g = egm_roofline_sgemm(s, 2, 4, 2, per);
    assert_true(g > 0 && g < 1e6);
    assert_true(per[0] > 0 && per[1] > 0);
    /* The weighted ceiling lies between the shapes' own. */
    double lo = per[0] < per[1] ? per[0] : per[1], hi = per[0] + per[1] - lo;
    assert_true(g >= lo * 0.999 && g <= hi * 1.001);
    /* M = 1 goes through sgemv; still a positive rate. */
    assert_true(egm_roofline_sgemm(s, 2, 1, 1, NULL) > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paper_configs_kv), cmocka_unit_test(test_shapes_egmla),
        cmocka_unit_test(test_shapes_mha),       cmocka_unit_test(test_cost_egmla),
        cmocka_unit_test(test_cost_mla_mha),     cmocka_unit_test(test_attn_flops),
        cmocka_unit_test(test_triad),
        cmocka_unit_test(test_measurements_sane),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
