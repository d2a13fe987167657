/* test_stop.c - stop strings over text that arrives a token at a time:
 * split across tokens, inside multi-byte characters, overlapping and
 * competing candidates, what is held back for streaming, and real tokens
 * through the SmolLM2 tokenizer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/stop.h"

static int feed(egm_stop *m, const char *s) { return egm_stop_feed(m, s, strlen(s)); }

static void test_split_across_tokens(void **state) {
    (void)state;
    char *stops[] = {"\nUser:"};
    egm_stop m;
    egm_stop_init(&m, stops, 1);
    assert_int_equal(feed(&m, "Hel"), 0);
    assert_int_equal(egm_stop_stable(&m), 3);
    assert_int_equal(feed(&m, "lo\nUs"), 0);
    /* "\nUs" may still become the stop string: held back */
    assert_int_equal(egm_stop_stable(&m), 5);
    assert_int_equal(feed(&m, "er: more"), 1);
    assert_string_equal(m.text, "Hello");
    assert_int_equal(m.matched, 0);
    assert_int_equal(egm_stop_stable(&m), 5);
    /* after a match, input is ignored */
    assert_int_equal(feed(&m, "xyz"), 1);
    assert_string_equal(m.text, "Hello");
    egm_stop_free(&m);
}

static void test_false_start_released(void **state) {
    (void)state;
    char *stops[] = {"\nUser:"};
    egm_stop m;
    egm_stop_init(&m, stops, 1);
    assert_int_equal(feed(&m, "a\nUse"), 0);
    assert_int_equal(egm_stop_stable(&m), 1);
    assert_int_equal(feed(&m, "d it"), 0);
    assert_int_equal(egm_stop_stable(&m), strlen("a\nUsed it"));
    assert_string_equal(m.text, "a\nUsed it");
    egm_stop_free(&m);
}

/* A stop string and the text meet inside a multi-byte character. */
static void test_utf8_pieces(void **state) {
    (void)state;
    char *stops[] = {"\xC3\xA9!"};   /* "é!" */
    egm_stop m;
    egm_stop_init(&m, stops, 1);
    assert_int_equal(feed(&m, "caf\xC3"), 0);
    assert_int_equal(egm_stop_stable(&m), 3);
    assert_int_equal(feed(&m, "\xA9"), 0);
    assert_int_equal(feed(&m, "!"), 1);
    assert_string_equal(m.text, "caf");
    egm_stop_free(&m);
    /* "é" followed by something else: everything is released */
    egm_stop_init(&m, stops, 1);
    assert_int_equal(feed(&m, "caf\xC3\xA9."), 0);
    assert_int_equal(egm_stop_stable(&m), m.len);
    egm_stop_free(&m);
}

/* Candidates that overlap: the earliest occurrence wins, whichever string
 * it is and in whatever order they were given. */
static void test_overlapping_candidates(void **state) {
    (void)state;
    char *s1[] = {"cd", "bcd"};
    egm_stop m;
    egm_stop_init(&m, s1, 2);
    assert_int_equal(feed(&m, "abcde"), 1);
    assert_string_equal(m.text, "a");
    assert_int_equal(m.matched, 1);
    egm_stop_free(&m);
    char *s2[] = {"abc", "bcd"};
    egm_stop_init(&m, s2, 2);
    assert_int_equal(feed(&m, "xab"), 0);
    assert_int_equal(egm_stop_stable(&m), 1);   /* "ab" could start either */
    assert_int_equal(feed(&m, "cd"), 1);
    assert_string_equal(m.text, "x");
    assert_int_equal(m.matched, 0);
    egm_stop_free(&m);
    /* a stop string overlapping itself */
    char *s3[] = {"aab"};
    egm_stop_init(&m, s3, 1);
    for (int i = 0; i < 3; i++) assert_int_equal(feed(&m, "a"), 0);
    assert_int_equal(egm_stop_stable(&m), 1);
    assert_int_equal(feed(&m, "b"), 1);
    assert_string_equal(m.text, "a");
    egm_stop_free(&m);
}

/* Real tokens: the text is what decoding gives, cut before the stop. */
static void test_tokens(void **state) {
    (void)state;
    egm_tokenizer *tok;
    egm_err e;
    if (egm_tok_load("tests/fixtures/tokenizer/smollm2.json", &tok, &e)) fail_msg("%s", e.msg);
    const char *text = "The capital of France is Paris. It is big.";
    int *ids, n;
    assert_int_equal(egm_tok_encode(tok, text, strlen(text), 0, &ids, &n, &e), 0);
    assert_true(n > 8);
    char *stops[] = {"s. It", "zzz"};
    egm_stop m;
    egm_stop_init(&m, stops, 2);
    int hit = -1;
    for (int i = 0; i < n && hit < 0; i++)
        if (egm_stop_feed_token(&m, tok, ids[i])) hit = i;
    assert_true(hit > 0);
    assert_string_equal(m.text, "The capital of France is Pari");
    /* no stop: the whole decoded text, special tokens adding nothing */
    egm_stop_free(&m);
    egm_stop_init(&m, stops + 1, 1);
    for (int i = 0; i < n; i++) assert_int_equal(egm_stop_feed_token(&m, tok, ids[i]), 0);
    assert_int_equal(egm_stop_feed_token(&m, tok, 2), 0);   /* <|im_end|> */
    assert_int_equal(egm_stop_finish(&m), 0);
    assert_string_equal(m.text, text);
    egm_stop_free(&m);
    free(ids);
    egm_tok_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_across_tokens),
        cmocka_unit_test(test_false_start_released),
        cmocka_unit_test(test_utf8_pieces),
        cmocka_unit_test(test_overlapping_candidates),
        cmocka_unit_test(test_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
