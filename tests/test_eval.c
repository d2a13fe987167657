/* test_eval.c - lm-eval semantics: token boundary, windows, metric math. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/eval.h"

static void test_chars_words(void **st) {
    (void)st;
    assert_int_equal(egm_utf8_chars("h\xc3\xa9llo", 6), 5);         /* é is one code point */
    assert_int_equal(egm_utf8_chars("\xe2\x82\xac\xf0\x9f\x98\x80", 7), 2);
    assert_int_equal(egm_count_words("a  b\tc", 6), 3);
    assert_int_equal(egm_count_words(" a b ", 5), 4);              /* re.split keeps empty ends */
    assert_int_equal(egm_count_words("a\xc2\xa0" "b", 4), 2);       /* U+00A0 is \s */
    assert_int_equal(egm_count_words("", 0), 1);
}

static void test_metrics(void **st) {
    (void)st;
    double x[] = {1, 0, 1, 1};
    /* mean .75, sample variance .25, / n = .0625 */
    assert_float_equal(egm_mean_stderr(x, 4), 0.25, 1e-12);
    assert_true(isnan(egm_mean_stderr(x, 1)));
    double l[] = {-3, -1, -1, -2};
    assert_int_equal(egm_argmax_d(l, 4), 1);                       /* the first maximum */
    double norm[] = {-6.0 / 3, -4.0 / 1};                          /* ll / chars flips the pick */
    assert_int_equal(egm_argmax_d(norm, 2), 0);
}

static egm_tokenizer *gpt2(void) {
    egm_tokenizer *t;
    egm_err e;
    if (egm_tok_load("tests/fixtures/tokenizer/gpt2.json", &t, &e)) fail_msg("%s", e.msg);
    return t;
}

static void enc(egm_tokenizer *t, const char *s, int **ids, int *n) {
    egm_err e;
    if (egm_tok_encode(t, s, strlen(s), 0, ids, n, &e)) fail_msg("%s", e.msg);
}

static void test_boundary(void **st) {
    (void)st;
    egm_tokenizer *t = gpt2();
    int *a, *b, na, nb, *x, nx;
    egm_err e;
    /* the trailing space moves to the continuation: " Paris" */
    const char *ctx = "The capital of France is ", *cont = "Paris";
    assert_int_equal(egm_ll_encode(t, 7, ctx, strlen(ctx), cont, strlen(cont), &a, &na, &b, &nb, &e), 0);
    enc(t, "The capital of France is", &x, &nx);
    assert_int_equal(na, nx);
    assert_memory_equal(a, x, sizeof(int) * (size_t)nx);
    free(x);
    enc(t, " Paris", &x, &nx);
    assert_int_equal(nb, nx);
    assert_memory_equal(b, x, sizeof(int) * (size_t)nx);
    free(x);
    free(a);
    free(b);
    /* a continuation merging with the context's end: whole-text tokens win */
    ctx = "hello wor";
    cont = "ld";
    assert_int_equal(egm_ll_encode(t, 7, ctx, strlen(ctx), cont, strlen(cont), &a, &na, &b, &nb, &e), 0);
    enc(t, "hello world", &x, &nx);
    assert_int_equal(na + nb >= nx, 1);
    assert_int_equal(nb, nx - na);
    assert_memory_equal(b, x + na, sizeof(int) * (size_t)nb);
    free(x);
    free(a);
    free(b);
    /* empty context: the prefix token alone */
    assert_int_equal(egm_ll_encode(t, 7, "", 0, "Hi", 2, &a, &na, &b, &nb, &e), 0);
    assert_int_equal(na, 1);
    assert_int_equal(a[0], 7);
    enc(t, "Hi", &x, &nx);
    assert_int_equal(nb, nx);
    free(x);
    free(a);
    free(b);
    egm_tok_free(t);
}

static void test_windows_and_sums(void **st) {
    (void)st;
    egm_ll_job j;
    egm_ll_init(&j, 4, 99);
    int ctx[] = {1, 2, 3, 4, 5}, cont[] = {6, 7};
    /* 7 tokens, max_len 4: the last 5 stay, the continuation starts at lp[2] */
    int k = egm_ll_add_tokens(&j, ctx, 5, cont, 2);
    assert_int_equal(k, 0);
    assert_int_equal(j.n_w, 1);
    assert_int_equal(j.w[0].n, 5);
    assert_int_equal(j.w[0].toks[0], 3);
    assert_int_equal(j.w[0].first, 2);
    assert_int_equal(egm_ll_add_tokens(&j, ctx, 0, cont, 2), 1);   /* empty: prefix */
    assert_int_equal(j.w[1].toks[0], 99);
    assert_int_equal(j.w[1].first, 0);
    int big[5] = {0};
    k = egm_ll_add_tokens(&j, ctx, 1, big, 5);                     /* longer than max_len */
    assert_non_null(j.r[k].error);
    k = egm_ll_add_tokens(&j, ctx, 1, big, 0);
    assert_non_null(j.r[k].error);

    /* rolling over 10 tokens, windows of 4: [P t0..t3], [t3..t7], [t5..t9] */
    int t[10] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
    int w0 = j.n_w;
    k = egm_ll_add_rolling(&j, t, 10);
    assert_int_equal(j.n_w - w0, 3);
    assert_int_equal(j.w[w0].n, 5);
    assert_int_equal(j.w[w0].toks[0], 99);
    assert_int_equal(j.w[w0].first, 0);
    assert_int_equal(j.w[w0 + 1].toks[0], 13);
    assert_int_equal(j.w[w0 + 1].n, 5);
    assert_int_equal(j.w[w0 + 1].first, 0);
    assert_int_equal(j.w[w0 + 2].toks[0], 15);
    assert_int_equal(j.w[w0 + 2].first, 2);
    assert_int_equal(j.r[k].n_tokens, 10);

    /* results add up over a request's windows, from `first` on */
    float lp[4] = {-100, -1, -2, -3};
    unsigned char g[4] = {0, 1, 1, 1};
    char id[16];
    for (int w = w0; w < w0 + 3; w++) {
        snprintf(id, sizeof id, "%d", w);
        egm_ll_on_score(&j, id, lp, g, 4, NULL);
    }
    /* windows 1, 2 start at 0 (take the -100, not greedy); window 3 at 2 */
    assert_float_equal(j.r[k].logprob, 2 * (-106.0) + (-5.0), 1e-9);
    assert_int_equal(j.r[k].is_greedy, 0);
    egm_ll_on_score(&j, "0", lp, g, 4, NULL);
    assert_float_equal(j.r[0].logprob, -5.0, 1e-9);
    assert_int_equal(j.r[0].is_greedy, 1);
    egm_ll_on_score(&j, "1", NULL, NULL, 0, "refused");
    assert_string_equal(j.r[1].error, "refused");
    egm_ll_free(&j);

    /* stride 2: later windows predict 2 tokens with 3 before them */
    egm_ll_init(&j, 4, 99);
    j.stride = 2;
    egm_ll_add_rolling(&j, t, 8);
    assert_int_equal(j.n_w, 3);
    assert_int_equal(j.w[1].toks[0], 1 + 10);
    assert_int_equal(j.w[1].first, 2);
    assert_int_equal(j.w[2].toks[0], 3 + 10);
    assert_int_equal(j.r[0].n_tokens, 8);
    egm_ll_free(&j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chars_words),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_windows_and_sums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
