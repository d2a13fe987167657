/* test_regress.c - every input under tests/regress/<parser>/ (crashes the
 * fuzzers found, and hostile inputs worth keeping) fed to its parser, the
 * way the fuzz harness in tests/fuzz/ feeds it. Each must end in a clean
 * success or a clean error whose message names the input - never a crash,
 * a leak or undefined behaviour (run under `make SAN=1 test` and valgrind
 * to see those). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "coordinator/jsonl.h"
#include "coordinator/request.h"
#include "deploy/topology.h"
#include "egmla.pb-c.h"
#include "model/checkpoint.h"
#include "model/chat_template.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

#define ORIGIN "regress-input"

/* A failure must say what failed: a message that names the input. */
static void clean_error(const egm_err *e, const char *path) {
    if (!strstr(e->msg, ORIGIN)) fail_msg("%s: error message does not name the input: %s", path, e->msg);
}

static void feed_safetensors(const char *path, const uint8_t *d, size_t n) {
    (void)d;
    (void)n;
    egm_ckpt *ck = NULL;
    egm_err e = {{0}};
    /* from the file itself: the loader maps it as it would a checkpoint */
    if (egm_ckpt_open_file(path, &ck, &e) == 0) {
        for (int i = 0; i < egm_ckpt_count(ck); i++) {
            const egm_tensor *t = egm_ckpt_at(ck, i);
            size_t k = t->nbytes / egm_dtype_size(t->dtype);
            float *f = malloc(k ? k * sizeof *f : 1);
            assert_non_null(f);
            egm_to_f32(f, t->data, t->dtype, k);
            free(f);
        }
        egm_ckpt_close(ck);
    } else if (!strstr(e.msg, path)) {
        fail_msg("%s: error message does not name the file: %s", path, e.msg);
    }
}

static void feed_config(const char *path, const uint8_t *d, size_t n) {
    egm_config c;
    egm_err e = {{0}};
    if (egm_config_parse((const char *)d, n, ORIGIN, &c, &e) == 0) {
        assert_true(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0);
        assert_true(egm_config_kv_elems(&c) > 0);
    } else {
        clean_error(&e, path);
    }
}

static void feed_tokenizer(const char *path, const uint8_t *d, size_t n) {
    egm_tokenizer *t = NULL;
    egm_err e = {{0}};
    if (egm_tok_parse((const char *)d, n, ORIGIN, &t, &e)) {
        assert_null(t);
        clean_error(&e, path);
        return;
    }
    static const char *texts[] = {"Hello, world!", " a  b\n\nab's 123 ", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80",
                                  "<|endoftext|>a", ""};
    int V = egm_tok_vocab_size(t);
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        int *ids = NULL, m = 0;
        if (egm_tok_encode(t, texts[k], strlen(texts[k]), (int)(k & 1), &ids, &m, &e) == 0) {
            for (int i = 0; i < m; i++) assert_true(ids[i] >= 0 && ids[i] < V);
            free(egm_tok_decode(t, ids, m, 0));
        }
        free(ids);
    }
    egm_tok_free(t);
}

static egm_tokenizer *llama3;

static void feed_tok_encode(const char *path, const uint8_t *d, size_t n) {
    (void)path;
    int *ids = NULL, m = 0;
    egm_err e = {{0}};
    if (egm_tok_encode(llama3, (const char *)d, n, 1, &ids, &m, &e) == 0) {
        for (int i = 0; i < m; i++) assert_true(ids[i] >= 0 && ids[i] < egm_tok_vocab_size(llama3));
        free(egm_tok_decode(llama3, ids, m, 0));
    } else {
        assert_true(e.msg[0] != 0);
    }
    free(ids);
}

static void feed_topology(const char *path, const uint8_t *d, size_t n) {
    egm_topology t;
    egm_err e = {{0}};
    if (egm_topology_parse((const char *)d, n, ORIGIN, &t, &e) == 0) {
        if (egm_topology_resolve(&t, 12, NULL, &e) == 0)
            assert_int_equal(t.stages[t.n_stages - 1].layer_hi, 12);
        else
            clean_error(&e, path);
    } else {
        clean_error(&e, path);
    }
    egm_topology_free(&t);
}

static void feed_request(const char *path, const uint8_t *d, size_t n) {
    egm_request def, r;
    egm_err e = {{0}};
    egm_request_defaults(&def);
    memset(&r, 0, sizeof r);
    if (egm_request_parse((const char *)d, n, 1, ORIGIN, &def, &r, &e) == 0) {
        assert_non_null(r.id_json);
        assert_true(!r.prompt != !r.tokens);
    } else {
        clean_error(&e, path);
    }
    char *rec = egm_result_error(r.id_json, e.msg);
    assert_non_null(rec);
    assert_null(strchr(rec, '\n')); /* one record, one line */
    free(rec);
    egm_request_free(&r);
}

static void feed_jsonl(const char *path, const uint8_t *d, size_t n) {
    (void)d;
    (void)n;
    egm_err e = {{0}};
    egm_jsonl *r = egm_jsonl_open(path, &e);
    if (!r) fail_msg("%s: %s", path, e.msg);
    egm_request def;
    egm_request_defaults(&def);
    const char *line;
    size_t len;
    long lineno, last = 0;
    int rc;
    while ((rc = egm_jsonl_next(r, &line, &len, &lineno, &e)) == 1) {
        assert_true(lineno > last);
        last = lineno;
        egm_request q;
        memset(&q, 0, sizeof q);
        if (egm_request_parse(line, len, lineno, egm_jsonl_origin(r), &def, &q, &e))
            assert_non_null(strstr(e.msg, path));
        egm_request_free(&q);
    }
    assert_true(rc == 0 || e.msg[0]);
    egm_jsonl_close(r);
}

static void feed_envelope(const char *path, const uint8_t *d, size_t n) {
    (void)path;
    Egmla__Envelope *m = egmla__envelope__unpack(NULL, n, d);
    if (!m) return; /* refused: the receiver reports "does not decode" */
    size_t k = egmla__envelope__get_packed_size(m);
    uint8_t *buf = malloc(k ? k : 1);
    assert_non_null(buf);
    assert_int_equal(egmla__envelope__pack(m, buf), k);
    free(buf);
    egmla__envelope__free_unpacked(m, NULL);
}

static void feed_gguf(const char *path, const uint8_t *d, size_t n) {
    (void)d;
    (void)n;
    egm_gguf *g = NULL;
    egm_err e = {{0}};
    if (egm_gguf_open(path, &g, &e)) {
        if (!strstr(e.msg, path)) fail_msg("%s: error message does not name the file: %s", path, e.msg);
        return;
    }
    for (int i = 0; i < egm_gguf_tensor_count(g); i++) {
        const egm_gguf_tensor *t = egm_gguf_tensor_at(g, i);
        size_t k = egm_gguf_tensor_elems(t);
        if (!egm_ggml_type_supported(t->type) || k > (1u << 22)) continue;
        float *f = malloc(k ? k * sizeof *f : 1);
        assert_non_null(f);
        egm_gguf_to_f32(t, f);
        free(f);
    }
    egm_config c;
    (void)egm_config_from_gguf(g, &c, &e);
    egm_tokenizer *tok = NULL;
    if (egm_tok_from_gguf(g, &tok, &e) == 0) egm_tok_free(tok);
    egm_gguf_close(g);
}

/* A chat template: recognised and rendered (a two-message chat), or
 * refused with a message. */
static void feed_chat(const char *path, const uint8_t *d, size_t n) {
    (void)path;
    char *src = malloc(n + 1);
    assert_non_null(src);
    memcpy(src, d, n);
    src[n] = 0;
    egm_chat_template *t;
    egm_err e;
    if (egm_chat_template_parse(src, "regress", "<s>", "</s>", &t, &e) == 0) {
        egm_chat_msg m[] = {{"system", "a\\n"}, {"user", " b "}};
        free(egm_chat_render(t, m, 2, 1, &e));
        egm_chat_template_free(t);
    } else {
        assert_non_null(strstr(e.msg, "--chat-template"));
    }
    free(src);
}

typedef void (*feed_fn)(const char *path, const uint8_t *d, size_t n);

/* Feeds every file of tests/regress/<dir>/ to fn; the directory must hold
 * at least one. */
static void feed_dir(const char *dir, feed_fn fn) {
    char root[256];
    snprintf(root, sizeof root, "tests/regress/%s", dir);
    DIR *dp = opendir(root);
    if (!dp) fail_msg("cannot open %s (run from the repository root)", root);
    int files = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (de->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", root, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc((size_t)sz + 1);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t)sz, f), (size_t)sz);
        fclose(f);
        fn(path, buf, (size_t)sz);
        free(buf);
        files++;
    }
    closedir(dp);
    if (!files) fail_msg("%s holds no inputs", root);
}

static void test_safetensors(void **st) { (void)st; feed_dir("safetensors", feed_safetensors); }
static void test_config(void **st) { (void)st; feed_dir("config", feed_config); }
static void test_tokenizer(void **st) { (void)st; feed_dir("tokenizer", feed_tokenizer); }
static void test_topology(void **st) { (void)st; feed_dir("topology", feed_topology); }
static void test_request(void **st) { (void)st; feed_dir("request", feed_request); }
static void test_jsonl(void **st) { (void)st; feed_dir("jsonl", feed_jsonl); }
static void test_envelope(void **st) { (void)st; feed_dir("envelope", feed_envelope); }
static void test_gguf(void **st) { (void)st; feed_dir("gguf", feed_gguf); }
static void test_chat(void **st) { (void)st; feed_dir("chat", feed_chat); }

static void test_tok_encode(void **st) {
    (void)st;
    egm_err e = {{0}};
    if (egm_tok_load("tests/fixtures/tokenizer/llama3.json", &llama3, &e)) fail_msg("%s", e.msg);
    feed_dir("tok_encode", feed_tok_encode);
    egm_tok_free(llama3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors), cmocka_unit_test(test_config),
        cmocka_unit_test(test_tokenizer),   cmocka_unit_test(test_tok_encode),
        cmocka_unit_test(test_topology),    cmocka_unit_test(test_request),
        cmocka_unit_test(test_jsonl),       cmocka_unit_test(test_envelope),
        cmocka_unit_test(test_gguf),        cmocka_unit_test(test_chat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
