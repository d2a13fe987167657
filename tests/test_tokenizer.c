/* test_tokenizer.c - byte-level BPE against the ids Hugging Face gives.
 *
 * Fixtures come from reference/make_tokenizer_fixtures.py: four tokenizer.json
 * files (GPT-2, GPT-2 with add_prefix_space and a template, Llama-3, SmolLM2
 * style) and cases.json with HF's ids and decodes for each string, plus
 * pre-tokenizer variants swapped into the GPT-2 file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/tokenizer.h"
#include "tests/tok_check.h"

#define FIX "tests/fixtures/tokenizer/"

static json_t *cases;

static int setup(void **state) {
    (void)state;
    json_error_t je;
    cases = json_load_file(FIX "cases.json", 0, &je);
    if (!cases) fprintf(stderr, "cases.json:%d: %s\n", je.line, je.text);
    return cases ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    json_decref(cases);
    return 0;
}

static egm_tokenizer *load(const char *file) {
    char path[256];
    snprintf(path, sizeof path, FIX "%s", file);
    egm_tokenizer *t = NULL;
    egm_err e = {{0}};
    if (egm_tok_load(path, &t, &e)) fail_msg("%s", e.msg);
    return t;
}

/* Every byte up to n is complete, valid UTF-8. */
static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int len = s[i] < 0x80 ? 1 : s[i] >= 0xF0 ? 4 : s[i] >= 0xE0 ? 3 : s[i] >= 0xC2 ? 2 : 0;
        if (!len || i + len > n) return 0;
        for (int k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

/* Streams ids through the decoder: each piece must be complete UTF-8 and
 * all of them together the whole decode. Returns how many ids produced no
 * output because they ended inside a character. */
static int check_stream(const egm_tokenizer *t, const int *ids, int n, const char *want) {
    size_t cap = egm_tok_stream_cap(t), total = 0;
    char *piece = malloc(cap), *all = malloc(strlen(want) + cap + 1);
    assert_non_null(piece);
    assert_non_null(all);
    egm_tok_stream s = {{0}, 0};
    int held = 0;
    for (int i = 0; i < n; i++) {
        size_t w = egm_tok_stream_feed(t, &s, ids[i], piece, cap);
        assert_true(valid_utf8((unsigned char *)piece, w));
        if (s.npend > 0) held++;
        memcpy(all + total, piece, w);
        total += w;
    }
    total += egm_tok_stream_flush(&s, all + total, cap);
    all[total] = 0;
    assert_string_equal(all, want);
    assert_int_equal(s.npend, 0);
    free(piece);
    free(all);
    return held;
}

static void run_file(const char *name) {
    const json_t *set = json_object_get(cases, name);
    assert_non_null(set);
    egm_tokenizer *t = load(json_string_value(json_object_get(set, "file")));
    const json_t *list = json_object_get(set, "cases");
    assert_true(json_array_size(list) >= 40);
    size_t i, roundtrips = 0;
    int held = 0;
    const json_t *c;
    json_array_foreach(list, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int *ids, n;
        egm_err e = {{0}};
        assert_int_equal(egm_tok_encode(t, text, len, 0, &ids, &n, &e), 0);
        check_ids(name, text, ids, n, json_object_get(c, "ids"));

        char *d = egm_tok_decode(t, ids, n, 0);
        assert_string_equal(d, json_string_value(json_object_get(c, "decoded")));
        if (json_is_true(json_object_get(c, "roundtrip"))) {
            assert_string_equal(d, text);
            roundtrips++;
        }
        free(d);
        d = egm_tok_decode(t, ids, n, 1);
        assert_string_equal(d, json_string_value(json_object_get(c, "decoded_skip")));
        free(d);
        held += check_stream(t, ids, n, json_string_value(json_object_get(c, "decoded")));
        free(ids);

        assert_int_equal(egm_tok_encode(t, text, len, 1, &ids, &n, &e), 0);
        check_ids(name, text, ids, n, json_object_get(c, "ids_special"));
        free(ids);
    }
    /* the strings exercise round trips and characters split across tokens */
    assert_true(roundtrips >= 8);
    assert_true(held > 0);
    egm_tok_free(t);
}

static void test_gpt2(void **state) { (void)state; run_file("gpt2"); }
static void test_gpt2_prefix(void **state) { (void)state; run_file("gpt2_prefix"); }
static void test_llama3(void **state) { (void)state; run_file("llama3"); }
static void test_smollm2(void **state) { (void)state; run_file("smollm2"); }

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(sz + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, sz, f), (size_t)sz);
    buf[sz] = 0;
    fclose(f);
    *n = sz;
    return buf;
}

/* Every Split behaviour / invert / pattern kind, Digits, prefix space. */
static void test_pretok_variants(void **state) {
    (void)state;
    json_error_t je;
    json_t *base = json_load_file(FIX "gpt2.json", 0, &je);
    assert_non_null(base);
    const json_t *vars = json_object_get(cases, "pretok_variants");
    assert_true(json_array_size(vars) >= 20);
    size_t vi, i;
    const json_t *v, *c;
    json_array_foreach(vars, vi, v) {
        json_object_set(base, "pre_tokenizer", json_object_get(v, "pre_tokenizer"));
        char *js = json_dumps(base, 0);
        egm_tokenizer *t = NULL;
        egm_err e = {{0}};
        if (egm_tok_parse(js, strlen(js), "variant", &t, &e)) fail_msg("%s", e.msg);
        free(js);
        char what[64];
        snprintf(what, sizeof what, "pretok_variants[%zu]", vi);
        json_array_foreach(json_object_get(v, "cases"), i, c) {
            const json_t *text = json_object_get(c, "text");
            int *ids, n;
            assert_int_equal(egm_tok_encode(t, json_string_value(text), json_string_length(text),
                                            0, &ids, &n, &e), 0);
            check_ids(what, json_string_value(text), ids, n, json_object_get(c, "ids"));
            free(ids);
        }
        egm_tok_free(t);
    }
    json_decref(base);
}

static void test_lookup_and_specials(void **state) {
    (void)state;
    egm_tokenizer *t = load("llama3.json");
    assert_int_equal(egm_tok_vocab_size(t), 1211);
    int bos = egm_tok_id(t, "<|begin_of_text|>");
    assert_int_equal(bos, 1202);
    assert_true(egm_tok_is_special(t, bos));
    assert_false(egm_tok_is_special(t, 5));
    assert_string_equal(egm_tok_token(t, bos), "<|begin_of_text|>");
    assert_int_equal(egm_tok_id(t, "zyzzyva"), 1201);
    assert_int_equal(egm_tok_id(t, "no such token"), -1);
    assert_null(egm_tok_token(t, 5000));
    /* unknown ids are skipped by decode and the stream */
    int ids[] = {-3, 5000, egm_tok_id(t, "a")};
    char *d = egm_tok_decode(t, ids, 3, 0);
    assert_string_equal(d, "a");
    free(d);
    egm_tok_free(t);

    t = load("gpt2.json");
    assert_int_equal(egm_tok_id(t, "<|endoftext|>"), 0);
    assert_int_equal(egm_tok_vocab_size(t), 1003);
    egm_tok_free(t);
}

/* Byte ids: each single byte has a token (the initial alphabet). */
static int byte_id(const egm_tokenizer *t, unsigned char b) {
    char s[3] = {(char)b, 0, 0};
    int *ids, n;
    assert_int_equal(egm_tok_encode(t, s, 1, 0, &ids, &n, NULL), 0);
    assert_int_equal(n, 1);
    int id = ids[0];
    free(ids);
    return id;
}

static void test_decode_invalid(void **state) {
    (void)state;
    egm_tokenizer *t = load("gpt2.json");
    /* byte tokens for bytes that never appear in text: find them by their
     * byte-level spelling (U+0100 + n) */
    int xe6 = egm_tok_id(t, "\xc3\xa6");  /* byte 0xE6 is printable: U+00E6 */
    int x97 = egm_tok_id(t, "\xc4\xb9");  /* byte 0x97 maps to U+0139 */
    int xff = egm_tok_id(t, "\xc3\xbf");  /* byte 0xFF: U+00FF */
    int a = byte_id(t, 'a');
    assert_true(xe6 >= 0 && x97 >= 0 && xff >= 0);
    /* E6 97 is a truncated 3-byte sequence: one U+FFFD, as from_utf8_lossy */
    int ids1[] = {xe6, x97, a};
    char *d = egm_tok_decode(t, ids1, 3, 0);
    assert_string_equal(d, "\xef\xbf\xbd" "a");
    free(d);
    int ids2[] = {xff, xff};
    d = egm_tok_decode(t, ids2, 2, 0);
    assert_string_equal(d, "\xef\xbf\xbd\xef\xbf\xbd");
    free(d);

    /* the stream holds E6 97 and flushes it as U+FFFD */
    char out[4096];
    egm_tok_stream s = {{0}, 0};
    assert_int_equal(egm_tok_stream_feed(t, &s, xe6, out, sizeof out), 0);
    assert_int_equal(egm_tok_stream_feed(t, &s, x97, out, sizeof out), 0);
    assert_int_equal(s.npend, 2);
    size_t w = egm_tok_stream_flush(&s, out, sizeof out);
    assert_int_equal(w, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(s.npend, 0);
    /* E6 followed by 'a': the held byte is invalid, then 'a' comes out */
    assert_int_equal(egm_tok_stream_feed(t, &s, xe6, out, sizeof out), 0);
    w = egm_tok_stream_feed(t, &s, a, out, sizeof out);
    assert_int_equal(w, 4);
    assert_memory_equal(out, "\xef\xbf\xbd" "a", 4);
    /* 日 = E6 97 A5 split over three byte tokens: only the last emits */
    int xa5 = egm_tok_id(t, "\xc2\xa5");
    assert_int_equal(egm_tok_stream_feed(t, &s, xe6, out, sizeof out), 0);
    assert_int_equal(egm_tok_stream_feed(t, &s, x97, out, sizeof out), 0);
    w = egm_tok_stream_feed(t, &s, xa5, out, sizeof out);
    assert_int_equal(w, 3);
    assert_memory_equal(out, "\xe6\x97\xa5", 3);
    egm_tok_free(t);
}

static void test_encode_invalid_utf8(void **state) {
    (void)state;
    egm_tokenizer *t = load("smollm2.json");
    int *ids, n;
    egm_err e = {{0}};
    const char bad[] = "ok \xe6\x97 broken";
    assert_int_equal(egm_tok_encode(t, bad, sizeof bad - 1, 0, &ids, &n, &e), -1);
    assert_non_null(strstr(e.msg, "smollm2.json"));
    assert_non_null(strstr(e.msg, "byte 3"));
    assert_null(ids);
    egm_tok_free(t);
}

/* A large text encodes and round-trips (no timing: just that it works). */
static void test_large_text(void **state) {
    (void)state;
    egm_tokenizer *t = load("llama3.json");
    size_t n;
    char *one = read_all(FIX "cases.json", &n);
    size_t reps = (1 << 20) / n + 1, len = reps * n;
    char *big = malloc(len + 1);
    assert_non_null(big);
    for (size_t r = 0; r < reps; r++) memcpy(big + r * n, one, n);
    big[len] = 0;
    int *ids, m;
    egm_err e = {{0}};
    assert_int_equal(egm_tok_encode(t, big, len, 0, &ids, &m, &e), 0);
    assert_true(m > 0 && (size_t)m < len);
    char *d = egm_tok_decode(t, ids, m, 0);
    assert_true(strlen(d) == len && memcmp(d, big, len) == 0);
    free(d);
    free(ids);
    free(big);
    free(one);
    egm_tok_free(t);
}

/* ---- errors on bad files: -1 and a message naming the file ---- */

static const char *MINI =
    "{\"version\": \"1.0\", \"added_tokens\": [], \"normalizer\": null,\n"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
    "\"use_regex\": true},\n"
    " \"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\"},\n"
    " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, "
    "\"\\u0120\": 3, \"\\u0120ab\": 4}, \"merges\": [\"a b\", \"\\u0120 ab\"]}}\n";

static char tmpdir[64];

static int make_tmp(void **state) {
    (void)state;
    strcpy(tmpdir, "/tmp/test_tokenizer.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmp(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/tokenizer.json", tmpdir);
    unlink(path);
    return rmdir(tmpdir);
}

/* Writes MINI with the first occurrence of from replaced by to (from NULL:
 * unchanged), loads it, and returns egm_tok_load's result. */
static int load_edited(const char *from, const char *to, egm_tokenizer **t, egm_err *e,
                       char *path) {
    sprintf(path, "%s/tokenizer.json", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    const char *at = from ? strstr(MINI, from) : NULL;
    if (from) assert_non_null(at);
    if (at) {
        fwrite(MINI, 1, at - MINI, f);
        fputs(to, f);
        fputs(at + strlen(from), f);
    } else {
        fputs(MINI, f);
    }
    fclose(f);
    return egm_tok_load(path, t, e);
}

static void test_mini(void **state) {
    (void)state;
    egm_tokenizer *t;
    egm_err e = {{0}};
    char path[128];
    if (load_edited(NULL, NULL, &t, &e, path)) fail_msg("%s", e.msg);
    int *ids, n;
    /* "abc ab": c is not in the vocab and is dropped (no unk_token), as HF */
    assert_int_equal(egm_tok_encode(t, "abc ab", 6, 1, &ids, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 4);
    free(ids);
    assert_int_equal(egm_tok_encode(t, "", 0, 1, &ids, &n, &e), 0);
    assert_int_equal(n, 0);
    free(ids);
    egm_tok_free(t);
}

static void expect_error(const char *from, const char *to, const char *needle) {
    egm_tokenizer *t = (egm_tokenizer *)&t; /* must be reset to NULL */
    egm_err e = {{0}};
    char path[128];
    assert_int_equal(load_edited(from, to, &t, &e, path), -1);
    assert_null(t);
    if (!strstr(e.msg, path) || !strstr(e.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\" or \"%s\"", e.msg, path, needle);
}

static void test_errors(void **state) {
    (void)state;
    egm_tokenizer *t = NULL;
    egm_err e = {{0}};
    assert_int_equal(egm_tok_load(FIX "no_such_tokenizer.json", &t, &e), -1);
    assert_null(t);
    assert_non_null(strstr(e.msg, "no_such_tokenizer.json"));

    expect_error("\"post_processor\": null,", "\"post_processor\": nul,", ":3:");
    expect_error("\"type\": \"BPE\"", "\"type\": \"WordPiece\"", "model.type");
    expect_error("\"vocab\":", "\"vocabulary\":", "model.vocab");
    expect_error("\"merges\":", "\"mergers\":", "model.merges");
    expect_error("\"a b\"", "\"a c\"", "\"c\" is not in model.vocab");
    expect_error("\"a b\"", "\"ab\"", "model.merges[0]");
    expect_error("\"\\u0120 ab\"", "\"\\u0120 a\"", "merged token");
    expect_error("\"a b\"", "[\"a\", \"b\", \"c\"]", "model.merges[0]");
    expect_error("\"b\": 1,", "\"b\": -1,", "model.vocab[\"b\"]");
    expect_error("\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}", "normalizer");
    expect_error("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}",
                 "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                 "\"pattern\": {\"Regex\": \"(\\\\p{L}+\"}, \"behavior\": \"Isolated\", "
                 "\"invert\": false}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}",
                 "pre_tokenizer.pretokenizers[0].pattern.Regex: bad regex at offset");
    expect_error("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}",
                 "{\"type\": \"Metaspace\"}", "\"Metaspace\" is not supported");
    expect_error("\"pre_tokenizer\"", "\"pre_tokenizr\"", "pre_tokenizer");
    expect_error("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": null", "decoder");
    expect_error("\"post_processor\": null", "\"post_processor\": {\"type\": \"BertProcessing\"}",
                 "post_processor");
    expect_error("\"added_tokens\": []", "\"added_tokens\": [{\"id\": 7}]",
                 "added_tokens[0].content");
}

int main(void) {
    const struct CMUnitTest fixtures[] = {
        cmocka_unit_test(test_gpt2),
        cmocka_unit_test(test_gpt2_prefix),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_smollm2),
        cmocka_unit_test(test_pretok_variants),
        cmocka_unit_test(test_lookup_and_specials),
        cmocka_unit_test(test_decode_invalid),
        cmocka_unit_test(test_encode_invalid_utf8),
        cmocka_unit_test(test_large_text),
    };
    const struct CMUnitTest files[] = {
        cmocka_unit_test(test_mini),
        cmocka_unit_test(test_errors),
    };
    int failed = cmocka_run_group_tests(fixtures, setup, teardown);
    failed += cmocka_run_group_tests(files, make_tmp, remove_tmp);
    return failed ? 1 : 0;
}
