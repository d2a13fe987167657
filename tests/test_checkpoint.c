/* test_checkpoint.c - safetensors mapping, header validation, sharded index.
 *
 * Files are written here byte by byte: good ones from a list of tensors,
 * broken ones from hand-written headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/checkpoint.h"

static char dir[64];

static void path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
}

/* Writes u64 len(header) + header + data to dir/name. */
static void write_raw(const char *name, const char *header, const void *data, size_t n) {
    char p[256];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint64_t h = strlen(header);
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(h >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, h, f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static void write_bytes(const char *name, const void *b, size_t n) {
    char p[256];
    path_of(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

typedef struct {
    const char *name, *dtype;
    int ndim;
    int64_t shape[2];
    const void *data;
    size_t nbytes;
} spec;

/* A valid safetensors file from specs, data packed in order, header padded
 * with spaces to a multiple of 8 (as the Python writer does). */
static void write_st(const char *name, const spec *s, int n) {
    char hdr[4096];
    int k = snprintf(hdr, sizeof hdr, "{\"__metadata__\": {\"format\": \"pt\"}");
    size_t off = 0, total = 0;
    for (int i = 0; i < n; i++) total += s[i].nbytes;
    for (int i = 0; i < n; i++) {
        k += snprintf(hdr + k, sizeof hdr - k, ", \"%s\": {\"dtype\": \"%s\", \"shape\": [",
                      s[i].name, s[i].dtype);
        for (int d = 0; d < s[i].ndim; d++)
            k += snprintf(hdr + k, sizeof hdr - k, "%s%lld", d ? ", " : "",
                          (long long)s[i].shape[d]);
        k += snprintf(hdr + k, sizeof hdr - k, "], \"data_offsets\": [%zu, %zu]}", off,
                      off + s[i].nbytes);
        off += s[i].nbytes;
    }
    k += snprintf(hdr + k, sizeof hdr - k, "}");
    while ((8 + k) % 8) hdr[k++] = ' ';
    hdr[k] = 0;
    uint8_t *data = malloc(total + 1);
    off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(data + off, s[i].data, s[i].nbytes);
        off += s[i].nbytes;
    }
    write_raw(name, hdr, data, total);
    free(data);
}

static const float F32V[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f};
/* bf16: 1, -3, 3.140625, -0 */
static const uint16_t BF16V[4] = {0x3f80, 0xc040, 0x4049, 0x8000};
/* f16: 1, -2, 65504, smallest subnormal, min normal, inf, nan, -0 */
static const uint16_t F16V[8] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x7c00, 0x7e00, 0x8000};

static const spec GOOD[] = {
    {"b.weight", "BF16", 1, {4, 0}, BF16V, sizeof BF16V},
    {"a.weight", "F32", 2, {2, 3}, F32V, sizeof F32V},
    {"c.weight", "F16", 2, {2, 4}, F16V, sizeof F16V},
};

static int setup(void **st) {
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/egm_ckXXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    const char *names[] = {"model.safetensors", "model.safetensors.index.json", "s1.safetensors",
                           "s2.safetensors", "x.safetensors"};
    char p[256];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        path_of(p, sizeof p, names[i]);
        unlink(p);
    }
    return rmdir(dir);
}

/* Expect opening dir/name (a file) to fail naming the file and `what`. */
static void open_fails(const char *name, const char *what) {
    char p[256];
    path_of(p, sizeof p, name);
    egm_ckpt *ck = (egm_ckpt *)1;
    egm_err e = {{0}};
    int rc = egm_ckpt_open_file(p, &ck, &e);
    if (rc != -1 || !strstr(e.msg, p) || !strstr(e.msg, what))
        print_error("%s: rc %d msg \"%s\" (want \"%s\")\n", name, rc, e.msg, what);
    assert_int_equal(rc, -1);
    assert_null(ck);
    assert_non_null(strstr(e.msg, p));
    assert_non_null(strstr(e.msg, what));
}

static void dir_fails(const char *what1, const char *what2) {
    egm_ckpt *ck = (egm_ckpt *)1;
    egm_err e = {{0}};
    int rc = egm_ckpt_open(dir, &ck, &e);
    if (rc != -1 || !strstr(e.msg, what1) || !strstr(e.msg, what2))
        print_error("rc %d msg \"%s\" (want \"%s\", \"%s\")\n", rc, e.msg, what1, what2);
    assert_int_equal(rc, -1);
    assert_null(ck);
    assert_non_null(strstr(e.msg, what1));
    assert_non_null(strstr(e.msg, what2));
}

static void test_good_file(void **st) {
    (void)st;
    write_st("model.safetensors", GOOD, 3);
    egm_ckpt *ck;
    egm_err e;
    assert_int_equal(egm_ckpt_open(dir, &ck, &e), 0);
    assert_string_equal(egm_ckpt_origin(ck), dir);
    assert_int_equal(egm_ckpt_count(ck), 3); /* __metadata__ is not a tensor */
    /* in name order */
    assert_string_equal(egm_ckpt_at(ck, 0)->name, "a.weight");
    assert_string_equal(egm_ckpt_at(ck, 2)->name, "c.weight");
    assert_null(egm_ckpt_at(ck, 3));
    assert_null(egm_ckpt_get(ck, "d.weight"));

    const egm_tensor *a = egm_ckpt_get(ck, "a.weight");
    assert_non_null(a);
    assert_int_equal(a->dtype, EGM_DT_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->nbytes, 24);
    assert_non_null(strstr(a->file, "model.safetensors"));
    assert_memory_equal(a->data, F32V, sizeof F32V);

    const egm_tensor *b = egm_ckpt_get(ck, "b.weight");
    assert_int_equal(b->dtype, EGM_DT_BF16);
    assert_int_equal(b->ndim, 1);
    assert_int_equal(b->shape[0], 4);
    float f[8];
    egm_to_f32(f, b->data, b->dtype, 4);
    assert_true(f[0] == 1.0f && f[1] == -3.0f && f[2] == 3.140625f);
    assert_true(f[3] == 0.0f && signbit(f[3]));

    const egm_tensor *c = egm_ckpt_get(ck, "c.weight");
    assert_int_equal(c->dtype, EGM_DT_F16);
    egm_to_f32(f, c->data, c->dtype, 8);
    assert_true(f[0] == 1.0f && f[1] == -2.0f && f[2] == 65504.0f);
    assert_true(f[3] == ldexpf(1.0f, -24)); /* subnormal */
    assert_true(f[4] == ldexpf(1.0f, -14)); /* min normal */
    assert_true(isinf(f[5]) && f[5] > 0);
    assert_true(isnan(f[6]));
    assert_true(f[7] == 0.0f && signbit(f[7]));
    egm_ckpt_close(ck);
}

static void test_to_f32(void **st) {
    (void)st;
    float f[3];
    /* unaligned source */
    uint8_t buf[7] = {0xff, 0x00, 0x3c, 0x55, 0x35, 0x00, 0xfc};
    egm_to_f32(f, buf + 1, EGM_DT_F16, 3);
    assert_true(f[0] == 1.0f);
    assert_float_equal(f[1], 0.333251953125f, 0); /* 0x3555 */
    assert_true(isinf(f[2]) && f[2] < 0);
    egm_to_f32(f, F32V, EGM_DT_F32, 3);
    assert_memory_equal(f, F32V, 12);
    assert_int_equal(egm_dtype_size(EGM_DT_BF16), 2);
    assert_int_equal(egm_dtype_size(EGM_DT_F32), 4);
    assert_string_equal(egm_dtype_name(EGM_DT_F16), "F16");
}

static void test_sharded(void **st) {
    (void)st;
    write_st("s1.safetensors", GOOD, 2);
    write_st("s2.safetensors", GOOD + 2, 1);
    const char *idx = "{\"metadata\": {\"total_size\": 48}, \"weight_map\": {"
                      "\"a.weight\": \"s1.safetensors\", \"b.weight\": \"s1.safetensors\","
                      " \"c.weight\": \"s2.safetensors\"}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    egm_ckpt *ck;
    egm_err e;
    assert_int_equal(egm_ckpt_open(dir, &ck, &e), 0);
    assert_int_equal(egm_ckpt_count(ck), 3);
    const egm_tensor *c = egm_ckpt_get(ck, "c.weight");
    assert_non_null(c);
    assert_non_null(strstr(c->file, "s2.safetensors"));
    assert_memory_equal(c->data, F16V, sizeof F16V);
    assert_non_null(strstr(egm_ckpt_get(ck, "a.weight")->file, "s1.safetensors"));
    egm_ckpt_close(ck);

    /* the map puts a tensor in the wrong shard */
    idx = "{\"weight_map\": {\"a.weight\": \"s2.safetensors\", \"c.weight\": \"s2.safetensors\","
          " \"b.weight\": \"s1.safetensors\"}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("model.safetensors.index.json", "\"a.weight\"");

    /* the map names a shard that does not exist */
    idx = "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"c.weight\": \"s3.safetensors\"}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("s3.safetensors", "\"c.weight\"");
    dir_fails("model.safetensors.index.json", "cannot open");

    /* the same tensor in two shards */
    write_st("s2.safetensors", GOOD + 1, 2); /* a.weight again, and c.weight */
    idx = "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"c.weight\": \"s2.safetensors\"}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("\"a.weight\"", "twice");
    dir_fails("s1.safetensors", "s2.safetensors");

    /* a tensor the map names but no shard has */
    write_st("s2.safetensors", GOOD + 2, 1);
    idx = "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"z.weight\": \"s2.safetensors\"}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("model.safetensors.index.json", "\"z.weight\"");

    /* malformed indexes */
    idx = "{\"weight_map\": {\"a.weight\": \"../s1.safetensors\"}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("model.safetensors.index.json", "\"a.weight\"");
    idx = "{\"weight_map\": {\"a.weight\": 3}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("model.safetensors.index.json", "\"a.weight\"");
    idx = "{\"metadata\": {}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("model.safetensors.index.json", "weight_map");
    idx = "{\"weight_map\": {";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("model.safetensors.index.json", "line 1");

    /* a broken shard is reported with both the index and the shard */
    write_raw("s2.safetensors", "{\"c.weight\": {\"dtype\": \"I64\", \"shape\": [1],"
                                " \"data_offsets\": [0, 8]}}", "\0\0\0\0\0\0\0\0", 8);
    idx = "{\"weight_map\": {\"c.weight\": \"s2.safetensors\"}}";
    write_bytes("model.safetensors.index.json", idx, strlen(idx));
    dir_fails("s2.safetensors", "I64");
    dir_fails("model.safetensors.index.json", "\"c.weight\"");
}

static void test_missing(void **st) {
    (void)st;
    open_fails("nope.safetensors", "cannot open");
    dir_fails(dir, "model.safetensors");
}

static void test_bad_files(void **st) {
    (void)st;
    const char *X = "x.safetensors";
    uint8_t zeros[64] = {0};

    write_bytes(X, "", 0);
    open_fails(X, "0 bytes");
    write_bytes(X, "\x10\0\0\0", 4); /* not even the length */
    open_fails(X, "4 bytes");

    /* header length says 100, only 20 bytes follow */
    uint8_t trunc[28] = {100};
    memcpy(trunc + 8, "{\"a\": {\"dtype\": \"F32", 20);
    write_bytes(X, trunc, sizeof trunc);
    open_fails(X, "header length 100");
    /* header length near 2^64: must not wrap around */
    uint8_t huge[16] = {0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    write_bytes(X, huge, sizeof huge);
    open_fails(X, "past the end");

    write_raw(X, "{\"a\": {\"dtype\": \"F32\", ", zeros, 8);
    open_fails(X, "not valid JSON");
    write_raw(X, "[1, 2]", zeros, 0);
    open_fails(X, "object");
    write_raw(X, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                 " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
              zeros, 8);
    open_fails(X, "duplicate");

    write_raw(X, "{\"w.weight\": {\"dtype\": \"F32\", \"shape\": [2]}}", zeros, 8);
    open_fails(X, "\"w.weight\"");
    open_fails(X, "data_offsets");
    write_raw(X, "{\"w.weight\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", zeros, 8);
    open_fails(X, "dtype");
    write_raw(X, "{\"w.weight\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", zeros, 8);
    open_fails(X, "shape");
    write_raw(X, "{\"w.weight\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8]}}",
              zeros, 8);
    open_fails(X, "\"w.weight\"");
    open_fails(X, "I64");
    write_raw(X, "{\"w.weight\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
              zeros, 8);
    open_fails(X, "\"w.weight\"");
    open_fails(X, "needs 12 bytes");
    write_raw(X, "{\"w.weight\": {\"dtype\": \"BF16\", \"shape\": [-2], \"data_offsets\": [0, 4]}}",
              zeros, 8);
    open_fails(X, "\"w.weight\"");
    /* a shape whose byte count overflows 64 bits */
    write_raw(X, "{\"w.weight\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16],"
                 " \"data_offsets\": [0, 0]}}", zeros, 8);
    open_fails(X, "\"w.weight\"");
    write_raw(X, "{\"w.weight\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
              zeros, 8);
    open_fails(X, "\"w.weight\"");
    open_fails(X, "past the end");
    write_raw(X, "{\"w.weight\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}",
              zeros, 8);
    open_fails(X, "\"w.weight\"");
    write_raw(X, "{\"w.weight\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0.0, 4]}}",
              zeros, 8);
    open_fails(X, "\"w.weight\"");
    write_raw(X, "{\"p.weight\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"q.weight\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
              zeros, 16);
    open_fails(X, "overlap");
    open_fails(X, "\"p.weight\"");
    open_fails(X, "\"q.weight\"");

    /* adjacent, empty and unreferenced bytes are all fine */
    write_raw(X, "{\"p\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                 " \"e\": {\"dtype\": \"F16\", \"shape\": [0, 3], \"data_offsets\": [8, 8]},"
                 " \"q\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
              zeros, 32);
    char p[256];
    path_of(p, sizeof p, X);
    egm_ckpt *ck;
    egm_err e;
    assert_int_equal(egm_ckpt_open_file(p, &ck, &e), 0);
    assert_int_equal(egm_ckpt_count(ck), 3);
    assert_int_equal(egm_ckpt_get(ck, "e")->nbytes, 0);
    egm_ckpt_close(ck);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_file, setup, teardown),
        cmocka_unit_test(test_to_f32),
        cmocka_unit_test_setup_teardown(test_sharded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
