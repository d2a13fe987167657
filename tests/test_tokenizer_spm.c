/* test_tokenizer_spm.c - SentencePiece-style GGUF vocabularies against
 * llama.cpp's own tokenizer.
 *
 * Fixtures come from reference/make_spm_fixture.py: a tiny SentencePiece BPE
 * vocabulary (byte fallback, a user-defined and a control token) as GGUF,
 * with and without add_space_prefix, and spm_cases.json holding what
 * llama.cpp (llama-cpp-python) gives for llama.cpp's tokenizer test texts
 * and a few more: ids without and with BOS, every id's piece with and
 * without special tokens rendered, and llama_detokenize of each case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/tokenizer.h"
#include "tests/tok_check.h"

#define FIX "tests/fixtures/tokenizer/"

static json_t *root;

static int setup(void **state) {
    (void)state;
    json_error_t je;
    root = json_load_file(FIX "spm_cases.json", 0, &je);
    if (!root) fprintf(stderr, "spm_cases.json:%d: %s\n", je.line, je.text);
    return root ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    json_decref(root);
    return 0;
}

static egm_tokenizer *load(const char *file) {
    egm_gguf *g = NULL;
    egm_tokenizer *t = NULL;
    egm_err e = {{0}};
    if (egm_gguf_open(file, &g, &e) || egm_tok_from_gguf(g, &t, &e)) fail_msg("%s", e.msg);
    egm_gguf_close(g);
    return t;
}

/* "68656c6c6f" -> bytes; returns the length. */
static size_t unhex(const char *h, char *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    out[n] = 0;
    return n;
}

/* Every id decodes to llama.cpp's token_to_piece, with specials rendered
 * (skip_special 0) and without (1); streaming gives the same bytes. */
static void check_pieces(const egm_tokenizer *t, const json_t *v) {
    const json_t *pieces = json_object_get(v, "pieces"), *plain = json_object_get(v, "pieces_plain");
    int n = (int)json_integer_value(json_object_get(v, "n_vocab"));
    assert_int_equal(egm_tok_vocab_size(t), n);
    char want[256], out[512];
    for (int id = 0; id < n; id++) {
        for (int skip = 0; skip < 2; skip++) {
            size_t wn = unhex(json_string_value(json_array_get(skip ? plain : pieces, id)), want);
            /* a lone byte token is not valid UTF-8 alone: compare raw bytes by stream */
            if (!skip) {
                egm_tok_stream s = {{0}, 0};
                size_t k = egm_tok_stream_feed(t, &s, id, out, sizeof out);
                k += egm_tok_stream_flush(&s, out + k, sizeof out - k);
                if (wn == 1 && (unsigned char)want[0] >= 0x80) continue; /* U+FFFD, checked below */
                if (k != wn || memcmp(out, want, wn))
                    fail_msg("id %d: piece \"%.*s\", llama.cpp \"%s\"", id, (int)k, out, want);
            } else {
                char *d = egm_tok_decode(t, &id, 1, 1);
                if (wn == 1 && (unsigned char)want[0] >= 0x80) wn = strlen(strcpy(want, "\xef\xbf\xbd"));
                if (strcmp(d, want)) fail_msg("id %d (skip_special): \"%s\", llama.cpp \"%s\"", id, d, want);
                free(d);
            }
        }
    }
}

static void check_vocab(const char *name, const char *file) {
    const json_t *v = json_object_get(root, name);
    assert_non_null(v);
    egm_tokenizer *t = load(file);
    check_pieces(t, v);
    int prefix = !strcmp(name, "spm");
    const json_t *cases = json_object_get(v, "cases");
    size_t i;
    const json_t *c;
    char want[8192];
    json_array_foreach(cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        int *ids, n;
        egm_err e = {{0}};
        for (int bos = 0; bos < 2; bos++) {
            if (egm_tok_encode(t, text, strlen(text), bos, &ids, &n, &e)) fail_msg("%s", e.msg);
            check_ids(bos ? "with BOS" : "no BOS", text, ids, n,
                      json_object_get(c, bos ? "ids_bos" : "ids"));
            if (bos) { free(ids); continue; }
            /* llama_detokenize is our decode, less the one leading space it
             * strips when add_space_prefix is set */
            char *d = egm_tok_decode(t, ids, n, 0);
            unhex(json_string_value(json_object_get(c, "detok")), want);
            const char *ours = d + (prefix && d[0] == ' ');
            if (strcmp(ours, want)) fail_msg("decode of \"%s\": \"%s\", llama.cpp \"%s\"", text, ours, want);
            free(d);
            free(ids);
        }
    }
    egm_tok_free(t);
}

static void test_spm(void **state) {
    (void)state;
    check_vocab("spm", FIX "spm.gguf");
}

static void test_spm_no_space_prefix(void **state) {
    (void)state;
    check_vocab("spm_nospace", FIX "spm_nospace.gguf");
}

/* A long text with no special tokens is one fragment: merging stays
 * n log n and the ids equal those of its halves' pattern. */
static void test_spm_long(void **state) {
    (void)state;
    egm_tokenizer *t = load(FIX "spm.gguf");
    size_t n = 1 << 20;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) s[i] = "in the beginning "[i % 17];
    s[n] = 0;
    int *ids, m;
    egm_err e = {{0}};
    assert_int_equal(egm_tok_encode(t, s, n, 0, &ids, &m, &e), 0);
    assert_true(m > 0 && m < (int)n / 2);
    char *d = egm_tok_decode(t, ids, m, 0);
    assert_int_equal(d[0], ' ');
    assert_string_equal(d + 1, s);
    free(d);
    free(ids);
    free(s);
    egm_tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm),
        cmocka_unit_test(test_spm_no_space_prefix),
        cmocka_unit_test(test_spm_long),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
