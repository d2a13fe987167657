/* test_stage_threads.c - the stage's thread pool does not change results:
 * a micro-batch mixing a long prefill (many row groups, several position
 * ranges per group) with a short one, then batched decode steps, gives the
 * same bits with 1, 2 and 3 threads; and a long prompt fed in one chunk
 * agrees with the same prompt fed in small chunks (the causal triangle of
 * the split attention is exact). Random weights of the fixtures' shapes,
 * MHA, MLA and EG-MLA. The head, whose rows also split over the pool,
 * samples the same tokens with the same log-probs on 1 and 2 threads. */
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

#include "model/weights.h"
#include "worker/head.h"
#include "worker/stage.h"

#define NA 300  /* long prompt: > 256 positions, > 32 rows */
#define NB 37
#define STEPS 3

static void load(const char *name, egm_model *m) {
    char p[256];
    egm_config c;
    egm_err e;
    snprintf(p, sizeof p, "tests/fixtures/models/%s/config.json", name);
    if (egm_config_load(p, &c, &e)) fail_msg("%s", e.msg);
    c.max_position_embeddings = 4096;
    if (egm_model_random(&c, 7, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD | EGM_LOAD_GATE_TABLE, m, &e))
        fail_msg("%s", e.msg);
}

/* Runs the batch sequence with `threads`; returns every output row. */
static float *run(const egm_model *m, int threads, int chunk) {
    int D = m->cfg.hidden_size, n_out = (NA + NB + 2 * STEPS) * D;
    openblas_set_num_threads(threads);
    egm_stage st;
    egm_err e;
    if (egm_stage_init(&st, m, 2, 64 << 20, 16, 0, &e)) fail_msg("%s", e.msg);
    openblas_set_num_threads(1);
    assert_int_equal(egm_pool_size(st.pool), threads);
    assert_int_equal(egm_stage_reserve(&st, 0, NA + STEPS), 0);
    assert_int_equal(egm_stage_reserve(&st, 1, NB + STEPS), 0);
    float *out = calloc((size_t)n_out, sizeof(float)), *x = calloc((size_t)(NA + NB) * D, 4);
    int slot[NA + NB], pos[NA + NB], tok[NA + NB], k = 0;
    /* prefill: slot 0 in chunks of `chunk` rows, slot 1 with the first one */
    for (int p0 = 0; p0 < NA; p0 += chunk) {
        int n = 0;
        for (int t = p0; t < NA && t < p0 + chunk; t++, n++)
            slot[n] = 0, pos[n] = t, tok[n] = 3 + (t * 7) % (m->cfg.vocab_size - 3);
        for (int t = 0; p0 == 0 && t < NB; t++, n++)
            slot[n] = 1, pos[n] = t, tok[n] = 3 + (t * 11) % (m->cfg.vocab_size - 3);
        egm_mbatch b = {n, slot, pos, tok};
        egm_stage_forward(&st, &b, x);
        for (int r = 0; r < n; r++, k++) memcpy(out + (long)k * D, x + (long)r * D, 4 * D);
    }
    for (int s = 0; s < STEPS; s++) {
        int sl[2] = {0, 1}, ps[2] = {NA + s, NB + s}, tk[2] = {5 + s, 9 + s};
        egm_mbatch b = {2, sl, ps, tk};
        egm_stage_forward(&st, &b, x);
        for (int r = 0; r < 2; r++, k++) memcpy(out + (long)k * D, x + (long)r * D, 4 * D);
    }
    assert_int_equal(k * D, n_out);
    egm_stage_free(&st);
    free(x);
    return out;
}

/* Rows of slot 0's prefill are output in a different order when chunked:
 * compare the decode rows, which are last in both. */
static void check(const char *name) {
    egm_model m;
    load(name, &m);
    int D = m.cfg.hidden_size, n = (NA + NB + 2 * STEPS) * D;
    float *one = run(&m, 1, NA), *two = run(&m, 2, NA), *three = run(&m, 3, NA);
    assert_memory_equal(one, two, sizeof(float) * n);
    assert_memory_equal(one, three, sizeof(float) * n);
    float *chunked = run(&m, 2, 41);
    double worst = 0;
    for (int i = (NA + NB) * D; i < n; i++) {
        double d = fabs((double)one[i] - chunked[i]) / (1.0 + fabs((double)one[i]));
        if (d > worst) worst = d;
    }
    if (worst > 1e-4) fail_msg("%s: chunked prefill differs by %g", name, worst);
    free(one), free(two), free(three), free(chunked);
    egm_model_free(&m);
}

/* HEADS sequences generate HSTEPS tokens each with seeded sampling (top-k,
 * repetition penalty, 3 alternatives): every output of every step. */
#define HEADS 6
#define HSTEPS 8
static void run_head(const egm_model *m, int threads, egm_head_out *all) {
    int D = m->cfg.hidden_size;
    openblas_set_num_threads(threads);
    egm_stage st;
    egm_head hd;
    egm_err e;
    if (egm_stage_init(&st, m, HEADS, 16 << 20, 16, 0, &e) ||
        egm_head_init(&hd, HEADS, m->cfg.vocab_size, &e))
        fail_msg("%s", e.msg);
    openblas_set_num_threads(1);
    assert_int_equal(egm_pool_size(st.pool), threads);
    egm_sampling sp;
    egm_sampling_default(&sp);
    sp.temperature = 0.9f, sp.top_k = 20, sp.repetition_penalty = 1.3f;
    int slot[HEADS], pos[HEADS], tok[HEADS];
    unsigned char want[HEADS];
    for (int i = 0; i < HEADS; i++) {
        sp.seed = 100 + i;
        assert_int_equal(egm_stage_reserve(&st, i, HSTEPS + 1), 0);
        egm_head_open(&hd, i, EGM_MODE_GENERATE, &sp, NULL, 0);
        egm_head_set_top(&hd, i, 3);
        slot[i] = i, tok[i] = 3 + i, want[i] = 1;
    }
    float *x = calloc((size_t)HEADS * D, sizeof(float));
    for (int s = 0; s < HSTEPS; s++) {
        for (int i = 0; i < HEADS; i++) pos[i] = s;
        egm_mbatch b = {HEADS, slot, pos, tok};
        egm_stage_forward(&st, &b, x);
        egm_head_out *o = all + s * HEADS;
        assert_int_equal(egm_head_run(&hd, &st, &b, want, x, o), HEADS);
        for (int i = 0; i < HEADS; i++) tok[o[i].slot] = o[i].token;
    }
    free(x);
    egm_head_free(&hd);
    egm_stage_free(&st);
}

static void test_head(void **state) {
    (void)state;
    egm_model m;
    load("egmla_ln", &m);
    egm_head_out a[HSTEPS * HEADS], b[HSTEPS * HEADS];
    memset(a, 0, sizeof a), memset(b, 0, sizeof b);
    run_head(&m, 1, a);
    run_head(&m, 2, b);
    int distinct = 0;
    for (int k = 0; k < HSTEPS * HEADS; k++) {
        assert_int_equal(a[k].token, b[k].token);
        assert_memory_equal(&a[k].logprob, &b[k].logprob, sizeof(float));
        assert_int_equal(a[k].n_top, 3);
        assert_memory_equal(a[k].top_id, b[k].top_id, sizeof a[k].top_id);
        assert_memory_equal(a[k].top_lp, b[k].top_lp, sizeof a[k].top_lp);
        distinct += k >= HEADS && a[k].token != a[k - HEADS].token;
    }
    assert_true(distinct > 0); /* the sequences really sample */
    egm_model_free(&m);
}

static void test_egmla(void **st) { (void)st; check("egmla_ln"); }
static void test_mla(void **st) { (void)st; check("mla"); }
static void test_mha(void **st) { (void)st; check("llama_gqa_tied"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_egmla),
        cmocka_unit_test(test_mla),
        cmocka_unit_test(test_mha),
        cmocka_unit_test(test_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
