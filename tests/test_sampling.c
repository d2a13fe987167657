/* test_sampling.c - kernels/sampling.c: the generator, each filter on logits
 * whose surviving set is known, and the empirical distribution. Every seed is
 * fixed, so the statistical checks are deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "kernels/sampling.h"

static uint64_t rs = 99;
static float frand(void) { /* [-1, 1) */
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* Draws n tokens from the same logits (copied each time: egm_sample uses
 * them as scratch), counting how often each id comes out. */
static void draw(const float *logits, int V, const egm_sampling *p, const int *hist,
                 int nh, egm_rng *rng, int n, int *counts, int *seq) {
    float *l = malloc((size_t)V * sizeof *l);
    int *scratch = malloc((size_t)V * sizeof *scratch);
    assert_true(l && scratch);
    if (counts) memset(counts, 0, (size_t)V * sizeof *counts);
    for (int i = 0; i < n; i++) {
        memcpy(l, logits, (size_t)V * sizeof *l);
        int t = egm_sample(l, V, p, hist, nh, rng, scratch);
        assert_true(t >= 0 && t < V);
        if (counts) counts[t]++;
        if (seq) seq[i] = t;
    }
    free(l);
    free(scratch);
}

static void test_rng(void **st) {
    (void)st;
    egm_rng r;
    egm_rng_seed(&r, 0);
    /* splitmix64(0)'s first output, the published reference value */
    assert_true(r.s[0] == 0xe220a8397b1dcdafull);
    egm_rng_seed(&r, 42);
    assert_true(egm_rng_next(&r) == 0x15780b2e0c2ec716ull);
    assert_true(egm_rng_next(&r) == 0x6104d9866d113a7eull);
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        double u = egm_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
    }
    assert_true(fabs(sum / 100000 - 0.5) < 0.01);
}

static void test_greedy_is_argmax(void **st) {
    (void)st;
    egm_sampling p;
    egm_sampling_default(&p);
    p.temperature = 0;
    for (int trial = 0; trial < 20; trial++) {
        int V = 1000 + trial;
        float *l = malloc(V * sizeof *l), *c = malloc(V * sizeof *c);
        int *scratch = malloc(V * sizeof *scratch);
        for (int i = 0; i < V; i++) l[i] = frand() * 10;
        memcpy(c, l, V * sizeof *l);
        egm_rng r;
        egm_rng_seed(&r, (uint64_t)trial);
        assert_int_equal(egm_sample(c, V, &p, NULL, 0, &r, scratch), egm_argmax(l, V));
        free(l); free(c); free(scratch);
    }
}

static void test_top_k_1_is_greedy(void **st) {
    (void)st;
    const int V = 500;
    float l[500];
    for (int i = 0; i < V; i++) l[i] = frand() * 3;
    int best = egm_argmax(l, V);
    egm_sampling p;
    egm_sampling_default(&p);
    p.top_k = 1;
    p.temperature = 1.7f;
    int counts[500];
    for (uint64_t seed = 0; seed < 20; seed++) {
        egm_rng r;
        egm_rng_seed(&r, seed);
        draw(l, V, &p, NULL, 0, &r, 50, counts, NULL);
        assert_int_equal(counts[best], 50);
    }
}

static void test_seed_reproducible(void **st) {
    (void)st;
    const int V = 50, n = 300;
    float l[50];
    for (int i = 0; i < V; i++) l[i] = frand();
    egm_sampling p;
    egm_sampling_default(&p);
    p.top_p = 0.9f;
    p.top_k = 40;
    int a[300], b[300], c[300];
    egm_rng r;
    egm_rng_seed(&r, 42);
    draw(l, V, &p, NULL, 0, &r, n, NULL, a);
    egm_rng_seed(&r, 42);
    draw(l, V, &p, NULL, 0, &r, n, NULL, b);
    egm_rng_seed(&r, 43);
    draw(l, V, &p, NULL, 0, &r, n, NULL, c);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < n; i++) {
        same_ab += a[i] == b[i];
        same_ac += a[i] == c[i];
    }
    assert_int_equal(same_ab, n);
    assert_true(same_ac < n / 4); /* ~1/40 agree by chance */
}

static void test_top_k(void **st) {
    (void)st;
    /* V = 50000, the 3 best at scattered ids */
    const int V = 50000;
    float *l = malloc(V * sizeof *l);
    int *counts = malloc(V * sizeof *counts);
    for (int i = 0; i < V; i++) l[i] = frand();
    l[123] = 3.0f; l[40000] = 2.9f; l[7] = 2.8f;
    egm_sampling p;
    egm_sampling_default(&p);
    p.top_k = 3;
    egm_rng r;
    egm_rng_seed(&r, 1);
    draw(l, V, &p, NULL, 0, &r, 3000, counts, NULL);
    assert_int_equal(counts[123] + counts[40000] + counts[7], 3000);
    assert_true(counts[123] > 0 && counts[40000] > 0 && counts[7] > 0);
    free(l); free(counts);

    /* ties with the k-th value stay in (as HF) */
    float t[5] = {5, 3, 3, 3, 1};
    int c5[5];
    p.top_k = 2;
    draw(t, 5, &p, NULL, 0, &r, 4000, c5, NULL);
    assert_int_equal(c5[4], 0);
    assert_true(c5[1] > 0 && c5[2] > 0 && c5[3] > 0);
    /* top_k larger than V is no filter */
    p.top_k = 100;
    draw(t, 5, &p, NULL, 0, &r, 4000, c5, NULL);
    assert_true(c5[4] > 0);
}

static void test_top_p_small(void **st) {
    (void)st;
    /* probs 0.5 0.3 0.1 0.05 0.05: top_p 0.7 keeps {0, 1}; 0.45 keeps {0} */
    const double pr[5] = {0.5, 0.3, 0.1, 0.05, 0.05};
    float l[5];
    for (int i = 0; i < 5; i++) l[i] = (float)log(pr[i]);
    egm_sampling p;
    egm_sampling_default(&p);
    p.top_p = 0.7f;
    egm_rng r;
    egm_rng_seed(&r, 7);
    int c[5];
    draw(l, 5, &p, NULL, 0, &r, 5000, c, NULL);
    assert_int_equal(c[2] + c[3] + c[4], 0);
    /* renormalised over {0, 1}: 0.625 / 0.375 */
    assert_true(fabs(c[0] / 5000.0 - 0.625) < 0.03);
    p.top_p = 0.45f;
    draw(l, 5, &p, NULL, 0, &r, 1000, c, NULL);
    assert_int_equal(c[0], 1000);
    p.top_p = 0.85f; /* 0.5 + 0.3 = 0.8 < 0.85: token 2 joins */
    draw(l, 5, &p, NULL, 0, &r, 5000, c, NULL);
    assert_int_equal(c[3] + c[4], 0);
    assert_true(c[2] > 0);
}

/* A nucleus bigger than the first sorted chunk: 300 tokens at logit 10 among
 * 50000 at 0. Their mass is ~0.9925, so top_p 0.95 keeps ~288 of them (the
 * lowest ids, since ties rank by id) and no token at logit 0. */
static void test_top_p_large(void **st) {
    (void)st;
    const int V = 50000;
    float *l = calloc(V, sizeof *l);
    int *counts = malloc(V * sizeof *counts);
    int hi[300];
    for (int i = 0; i < 300; i++) {
        hi[i] = (int)(((uint64_t)i * 7919u + 13u) % (uint64_t)V);
        l[hi[i]] = 10.0f;
    }
    egm_sampling p;
    egm_sampling_default(&p);
    p.top_p = 0.95f;
    egm_rng r;
    egm_rng_seed(&r, 3);
    draw(l, V, &p, NULL, 0, &r, 20000, counts, NULL);
    int in_hi = 0, distinct = 0;
    for (int i = 0; i < 300; i++) {
        in_hi += counts[hi[i]];
        distinct += counts[hi[i]] > 0;
    }
    assert_int_equal(in_hi, 20000);
    assert_true(distinct > 250 && distinct < 300);
    /* the kept ones are the lowest ids: the highest-id high token is out */
    int maxid = 0;
    for (int i = 0; i < 300; i++)
        if (hi[i] > maxid) maxid = hi[i];
    assert_int_equal(counts[maxid], 0);
    free(l); free(counts);
}

/* Top-p on many tied logits against a full sort: every drawn token ranks
 * inside the nucleus (rank order: logit desc, then id asc). */
static const float *cmp_l;
static int cmp_rank(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (cmp_l[x] != cmp_l[y]) return cmp_l[x] > cmp_l[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void test_top_p_vs_full_sort(void **st) {
    (void)st;
    const int V = 3000;
    float *l = malloc(V * sizeof *l);
    int *ord = malloc(V * sizeof *ord), *rank = malloc(V * sizeof *rank);
    int *counts = malloc(V * sizeof *counts);
    const float ps[] = {0.3f, 0.6f, 0.9f};
    for (int t = 0; t < 3; t++) {
        for (int i = 0; i < V; i++) l[i] = roundf(frand() * 16) / 4; /* many ties */
        for (int i = 0; i < V; i++) ord[i] = i;
        cmp_l = l;
        qsort(ord, V, sizeof *ord, cmp_rank);
        for (int i = 0; i < V; i++) rank[ord[i]] = i;
        double Z = 0, cum = 0;
        for (int i = 0; i < V; i++) Z += exp((double)l[i] - l[ord[0]]);
        int K = 0;
        while (cum < ps[t] * Z) cum += exp((double)l[ord[K++]] - l[ord[0]]);
        egm_sampling p;
        egm_sampling_default(&p);
        p.top_p = ps[t];
        egm_rng r;
        egm_rng_seed(&r, 77 + t);
        draw(l, V, &p, NULL, 0, &r, 20000, counts, NULL);
        int worst = 0;
        for (int i = 0; i < V; i++)
            if (counts[i] && rank[i] > worst) worst = rank[i];
        assert_true(worst <= K); /* K itself: one token of rounding slack */
        assert_true(worst >= K - K / 10); /* and the nucleus is not cut short */
    }
    free(l); free(ord); free(rank); free(counts);
}

static void test_min_p(void **st) {
    (void)st;
    /* ratios to the max: 1, e^-1 = 0.37, e^-2 = 0.135, ...; min_p 0.2 keeps {0, 1} */
    float l[5] = {0, -1, -2, -3, -5};
    egm_sampling p;
    egm_sampling_default(&p);
    p.min_p = 0.2f;
    egm_rng r;
    egm_rng_seed(&r, 11);
    int c[5];
    draw(l, 5, &p, NULL, 0, &r, 5000, c, NULL);
    assert_int_equal(c[2] + c[3] + c[4], 0);
    assert_true(c[0] > 0 && c[1] > 0);
    /* min_p 1 keeps only the max */
    p.min_p = 1.0f;
    draw(l, 5, &p, NULL, 0, &r, 500, c, NULL);
    assert_int_equal(c[0], 500);
    /* min_p applies to the temperature-scaled distribution: T = 2 halves the
     * gaps, e^-1 = 0.37 >= 0.3 and token 2 joins */
    p.min_p = 0.3f;
    p.temperature = 2.0f;
    draw(l, 5, &p, NULL, 0, &r, 5000, c, NULL);
    assert_true(c[2] > 0);
    assert_int_equal(c[3] + c[4], 0);
}

static void test_repetition_penalty(void **st) {
    (void)st;
    egm_sampling p;
    egm_sampling_default(&p);
    p.temperature = 0;
    p.repetition_penalty = 1.2f;
    int scratch[4];
    egm_rng r;
    egm_rng_seed(&r, 0);
    /* positive logit divided: 2.0 / 1.2 = 1.67 < 1.9 */
    float a[4] = {2.0f, 1.9f, -1.0f, -1.05f};
    int h1[] = {0, 5000, -3}; /* out-of-range ids are ignored */
    assert_int_equal(egm_sample(a, 4, &p, h1, 3, &r, scratch), 1);
    /* negative logit multiplied: -1.0 * 1.2 = -1.2 < -1.05 */
    float b[4] = {-5.0f, -5.0f, -1.0f, -1.05f};
    int h2[] = {2};
    assert_int_equal(egm_sample(b, 4, &p, h2, 1, &r, scratch), 3);
    /* once per distinct id: 2.0 / 1.2 = 1.67 > 1.5, twice would be 1.39 < 1.5 */
    float c[4] = {2.0f, 1.5f, 0.0f, 0.0f};
    int h3[] = {0, 0, 0};
    assert_int_equal(egm_sample(c, 4, &p, h3, 3, &r, scratch), 0);
    /* without the penalty the argmax is unchanged */
    p.repetition_penalty = 1.0f;
    float d[4] = {2.0f, 1.9f, -1.0f, -1.05f};
    assert_int_equal(egm_sample(d, 4, &p, h1, 3, &r, scratch), 0);
}

/* Empirical frequencies over 20000 draws match softmax(logits / T). */
static void test_distribution(void **st) {
    (void)st;
    const int V = 6, n = 20000;
    float l[6] = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, 0.3f};
    const float Ts[] = {1.0f, 0.7f, 1.5f};
    for (int t = 0; t < 3; t++) {
        egm_sampling p;
        egm_sampling_default(&p);
        p.temperature = Ts[t];
        p.seed = 1000 + t;
        egm_rng r;
        egm_rng_seed(&r, p.seed);
        int c[6];
        draw(l, V, &p, NULL, 0, &r, n, c, NULL);
        float q[6];
        for (int i = 0; i < V; i++) q[i] = l[i] / Ts[t];
        egm_softmax(q, V);
        for (int i = 0; i < V; i++) assert_true(fabs((double)c[i] / n - q[i]) < 0.015);
    }
    /* with top_k = 3: the 3 best, renormalised */
    egm_sampling p;
    egm_sampling_default(&p);
    p.top_k = 3;
    egm_rng r;
    egm_rng_seed(&r, 5);
    int c[6];
    draw(l, V, &p, NULL, 0, &r, n, c, NULL);
    float q[3] = {l[4], l[0], l[1]};
    egm_softmax(q, 3);
    assert_true(fabs((double)c[4] / n - q[0]) < 0.015);
    assert_true(fabs((double)c[0] / n - q[1]) < 0.015);
    assert_true(fabs((double)c[1] / n - q[2]) < 0.015);
    assert_int_equal(c[2] + c[3] + c[5], 0);
}

static void test_degenerate_logits(void **st) {
    (void)st;
    egm_sampling p;
    egm_sampling_default(&p);
    egm_rng r;
    egm_rng_seed(&r, 0);
    int c[4];
    float a[4] = {NAN, 1.0f, INFINITY, 0.0f}; /* +inf takes all the mass */
    draw(a, 4, &p, NULL, 0, &r, 100, c, NULL);
    assert_int_equal(c[2], 100);
    float b[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    draw(b, 4, &p, NULL, 0, &r, 10, c, NULL);
    assert_int_equal(c[0], 10);
    float d[4] = {-INFINITY, 0.0f, -INFINITY, 0.0f}; /* -inf is never drawn */
    draw(d, 4, &p, NULL, 0, &r, 1000, c, NULL);
    assert_int_equal(c[0] + c[2], 0);
    assert_true(c[1] > 0 && c[3] > 0);
}

static void test_check(void **st) {
    (void)st;
    egm_sampling ok;
    egm_sampling_default(&ok);
    assert_null(egm_sampling_check(&ok));
    ok.temperature = 0;
    ok.top_p = 1;
    ok.min_p = 1;
    ok.top_k = 5;
    assert_null(egm_sampling_check(&ok));
    struct { const char *field; int which; float v; } bad[] = {
        {"temperature", 0, -0.1f}, {"temperature", 0, NAN}, {"temperature", 0, INFINITY},
        {"top_k", 1, -1}, {"top_p", 2, 0.0f}, {"top_p", 2, 1.01f}, {"top_p", 2, NAN},
        {"min_p", 3, -0.01f}, {"min_p", 3, 1.5f}, {"min_p", 3, NAN},
        {"repetition_penalty", 4, 0.0f}, {"repetition_penalty", 4, -1.0f},
        {"repetition_penalty", 4, INFINITY}, {"repetition_penalty", 4, NAN},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        egm_sampling p;
        egm_sampling_default(&p);
        switch (bad[i].which) {
        case 0: p.temperature = bad[i].v; break;
        case 1: p.top_k = (int)bad[i].v; break;
        case 2: p.top_p = bad[i].v; break;
        case 3: p.min_p = bad[i].v; break;
        case 4: p.repetition_penalty = bad[i].v; break;
        }
        const char *m = egm_sampling_check(&p);
        assert_non_null(m);
        assert_non_null(strstr(m, bad[i].field));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_top_k_1_is_greedy),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p_small),
        cmocka_unit_test(test_top_p_large),
        cmocka_unit_test(test_top_p_vs_full_sort),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_degenerate_logits),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
