/* test_gguf.c - GGUF files: reading, dequantising, refusing, loading a model.
 *
 * Every file here is written by the test itself (a small GGUF writer below),
 * into a mkdtemp directory: metadata of every value type, tensors of every
 * supported type with values worked out by hand, a tiny llama model with its
 * tokenizer, and one broken variant per rule the reader enforces. */
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

#include "model/gguf.h"
#include "model/source.h"
#include "model/tokenizer.h"
#include "model/weights.h"

/* ---- a GGUF writer ------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bb;

static void put(bb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u32(bb *b, uint32_t v) { put(b, &v, 4); }
static void u64(bb *b, uint64_t v) { put(b, &v, 8); }
static void gstr(bb *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}

typedef struct {
    bb kv, info, data;
    uint64_t n_kv, n_t;
    uint32_t align;
} gw;

static void kv_head(gw *w, const char *key, uint32_t type) {
    gstr(&w->kv, key);
    u32(&w->kv, type);
    w->n_kv++;
}
static void kv_u32(gw *w, const char *k, uint32_t v) { kv_head(w, k, EGM_GGUF_U32); u32(&w->kv, v); }
static void kv_i32(gw *w, const char *k, int32_t v) { kv_head(w, k, EGM_GGUF_I32); put(&w->kv, &v, 4); }
static void kv_f32(gw *w, const char *k, float v) { kv_head(w, k, EGM_GGUF_F32); put(&w->kv, &v, 4); }
static void kv_bool(gw *w, const char *k, int v) {
    uint8_t b = (uint8_t)v;
    kv_head(w, k, EGM_GGUF_BOOL);
    put(&w->kv, &b, 1);
}
static void kv_str(gw *w, const char *k, const char *v) { kv_head(w, k, EGM_GGUF_STRING); gstr(&w->kv, v); }
static void kv_arr_str(gw *w, const char *k, const char *const *v, int n) {
    kv_head(w, k, EGM_GGUF_ARRAY);
    u32(&w->kv, EGM_GGUF_STRING);
    u64(&w->kv, (uint64_t)n);
    for (int i = 0; i < n; i++) gstr(&w->kv, v[i]);
}
static void kv_arr_i32(gw *w, const char *k, const int32_t *v, int n) {
    kv_head(w, k, EGM_GGUF_ARRAY);
    u32(&w->kv, EGM_GGUF_I32);
    u64(&w->kv, (uint64_t)n);
    put(&w->kv, v, 4 * (size_t)n);
}

/* A tensor info with an explicit offset (no data written). */
static void tensor_info(gw *w, const char *name, int type, int ndim, const int64_t *ne,
                        uint64_t off) {
    gstr(&w->info, name);
    u32(&w->info, (uint32_t)ndim);
    for (int d = 0; d < ndim; d++) u64(&w->info, (uint64_t)ne[d]);
    u32(&w->info, (uint32_t)type);
    u64(&w->info, off);
    w->n_t++;
}

/* A tensor and its bytes, at the next aligned offset. */
static void tensor(gw *w, const char *name, int type, int ndim, const int64_t *ne,
                   const void *bytes, size_t n) {
    static const uint8_t zero[64];
    while (w->data.n % w->align) put(&w->data, zero, 1);
    tensor_info(w, name, type, ndim, ne, w->data.n);
    put(&w->data, bytes, n);
}

static bb finish(gw *w, uint32_t version) {
    static const uint8_t zero[64];
    bb f = {0};
    put(&f, "GGUF", 4);
    u32(&f, version);
    u64(&f, w->n_t);
    u64(&f, w->n_kv);
    put(&f, w->kv.p, w->kv.n);
    put(&f, w->info.p, w->info.n);
    while (f.n % w->align) put(&f, zero, 1);
    if (w->data.n) put(&f, w->data.p, w->data.n);
    return f;
}

static void gw_free(gw *w) {
    free(w->kv.p);
    free(w->info.p);
    free(w->data.p);
}

/* ---- temp files --------------------------------------------------------- */

static char tmpdir[256];

static const char *write_file(const char *name, const void *p, size_t n) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
    return path;
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_gguf.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd);
}

/* Opening must fail with a message naming the file and `what`. */
static void expect_refused(const char *name, bb f, const char *what) {
    const char *path = write_file(name, f.p, f.n);
    egm_gguf *g = NULL;
    egm_err e = {{0}};
    assert_int_equal(egm_gguf_open(path, &g, &e), -1);
    assert_null(g);
    free(f.p);
    if (!strstr(e.msg, path) || !strstr(e.msg, what)) fail_msg("message \"%s\" lacks \"%s\"", e.msg, what);
}

/* ---- metadata and tensor types ----------------------------------------- */

/* fp16 bit patterns used below */
enum { H_ONE = 0x3C00, H_MTWO = 0xC000, H_HALF = 0x3800, H_QUARTER = 0x3400,
       H_MONE = 0xBC00, H_TWO = 0x4000, H_MAX = 0x7BFF };

static void test_metadata_and_types(void **state) {
    (void)state;
    gw w = {.align = 64};
    kv_u32(&w, "general.alignment", 64);
    uint8_t u8v = 200;
    int8_t i8v = -5;
    uint16_t u16v = 60000;
    int16_t i16v = -30000;
    uint64_t u64v = 1ull << 40;
    int64_t i64v = -(1ll << 40);
    double f64v = 0.125;
    kv_head(&w, "t.u8", EGM_GGUF_U8); put(&w.kv, &u8v, 1);
    kv_head(&w, "t.i8", EGM_GGUF_I8); put(&w.kv, &i8v, 1);
    kv_head(&w, "t.u16", EGM_GGUF_U16); put(&w.kv, &u16v, 2);
    kv_head(&w, "t.i16", EGM_GGUF_I16); put(&w.kv, &i16v, 2);
    kv_i32(&w, "t.i32", -7);
    kv_f32(&w, "t.f32", 1.5f);
    kv_bool(&w, "t.bool", 1);
    kv_str(&w, "t.str", "hello");
    kv_head(&w, "t.u64", EGM_GGUF_U64); put(&w.kv, &u64v, 8);
    kv_head(&w, "t.i64", EGM_GGUF_I64); put(&w.kv, &i64v, 8);
    kv_head(&w, "t.f64", EGM_GGUF_F64); put(&w.kv, &f64v, 8);
    const char *strs[] = {"a", "", "ccc"};
    kv_arr_str(&w, "t.strs", strs, 3);
    int32_t ints[] = {3, -1, 7};
    kv_arr_i32(&w, "t.ints", ints, 3);

    float f32[4] = {1.0f, -2.5f, 0.0f, 3.25f};
    uint16_t f16[4] = {H_ONE, H_MTWO, H_HALF, H_MAX};
    uint16_t bf16[4] = {0x3F80, 0xC020, 0x0000, 0x4049}; /* 1, -2.5, 0, 3.140625 */
    uint8_t q8[34], q40[18], q41[40];
    uint16_t h;
    h = H_HALF; memcpy(q8, &h, 2);
    for (int j = 0; j < 32; j++) q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    h = H_TWO; memcpy(q40, &h, 2);
    for (int j = 0; j < 16; j++) q40[2 + j] = (uint8_t)(j | (15 - j) << 4);
    /* two Q4_1 blocks: d = 0.25, m = -1; then d = 1, m = 0.5 */
    h = H_QUARTER; memcpy(q41, &h, 2);
    h = H_MONE; memcpy(q41 + 2, &h, 2);
    for (int j = 0; j < 16; j++) q41[4 + j] = (uint8_t)(j | (15 - j) << 4);
    h = H_ONE; memcpy(q41 + 20, &h, 2);
    h = H_HALF; memcpy(q41 + 22, &h, 2);
    for (int j = 0; j < 16; j++) q41[24 + j] = (uint8_t)((j / 2) | 9 << 4);
    int64_t ne4[1] = {4}, ne32[1] = {32}, ne64[2] = {32, 2};
    tensor(&w, "f32", EGM_GGML_F32, 1, ne4, f32, sizeof f32);
    tensor(&w, "f16", EGM_GGML_F16, 1, ne4, f16, sizeof f16);
    tensor(&w, "bf16", EGM_GGML_BF16, 1, ne4, bf16, sizeof bf16);
    tensor(&w, "q8_0", EGM_GGML_Q8_0, 1, ne32, q8, sizeof q8);
    tensor(&w, "q4_0", EGM_GGML_Q4_0, 1, ne32, q40, sizeof q40);
    tensor(&w, "q4_1", EGM_GGML_Q4_1, 2, ne64, q41, sizeof q41);
    bb f = finish(&w, 3);
    const char *path = write_file("types.gguf", f.p, f.n);
    free(f.p);
    gw_free(&w);

    egm_gguf *g;
    egm_err e;
    assert_int_equal(egm_gguf_is_file(path), 1);
    if (egm_gguf_open(path, &g, &e)) fail_msg("%s", e.msg);
    assert_int_equal(egm_gguf_version(g), 3);
    assert_int_equal(egm_gguf_kv_count(g), 14);
    long long v;
    double d;
    int b;
    char *s;
    struct { const char *k; long long want; } ik[] = {
        {"t.u8", 200}, {"t.i8", -5}, {"t.u16", 60000}, {"t.i16", -30000}, {"t.i32", -7},
        {"t.u64", 1ll << 40}, {"t.i64", -(1ll << 40)}, {"general.alignment", 64}};
    for (size_t i = 0; i < sizeof ik / sizeof *ik; i++) {
        assert_int_equal(egm_gguf_get_int(g, ik[i].k, 1, 0, -(1ll << 50), 1ll << 50, &v, &e), 0);
        assert_true(v == ik[i].want);
    }
    assert_int_equal(egm_gguf_get_float(g, "t.f32", 1, 0, &d, &e), 0);
    assert_true(d == 1.5);
    assert_int_equal(egm_gguf_get_float(g, "t.f64", 1, 0, &d, &e), 0);
    assert_true(d == 0.125);
    assert_int_equal(egm_gguf_get_bool(g, "t.bool", 1, 0, &b, &e), 0);
    assert_int_equal(b, 1);
    assert_int_equal(egm_gguf_get_str(g, "t.str", 1, &s, &e), 0);
    assert_string_equal(s, "hello");
    free(s);
    /* defaults, and type/range errors naming the key */
    assert_int_equal(egm_gguf_get_int(g, "t.absent", 0, 42, 0, 100, &v, &e), 0);
    assert_int_equal(v, 42);
    assert_int_equal(egm_gguf_get_int(g, "t.absent", 1, 0, 0, 100, &v, &e), -1);
    assert_non_null(strstr(e.msg, "\"t.absent\""));
    assert_int_equal(egm_gguf_get_int(g, "t.str", 1, 0, 0, 100, &v, &e), -1);
    assert_non_null(strstr(e.msg, "\"t.str\""));
    assert_non_null(strstr(e.msg, "found a string"));
    assert_int_equal(egm_gguf_get_int(g, "t.u16", 1, 0, 0, 100, &v, &e), -1);
    assert_non_null(strstr(e.msg, "found 60000"));
    const egm_gguf_kv *kv;
    assert_int_equal(egm_gguf_get_arr(g, "t.strs", 1, EGM_GGUF_STRING, &kv, &e), 0);
    assert_int_equal(kv->n, 3);
    assert_int_equal(kv->len[1], 0);
    assert_memory_equal(kv->str[2], "ccc", 3);
    assert_int_equal(egm_gguf_get_arr(g, "t.ints", 1, -1, &kv, &e), 0);
    assert_int_equal(egm_gguf_arr_int(kv, 1), -1);
    assert_int_equal(egm_gguf_get_arr(g, "t.ints", 1, EGM_GGUF_STRING, &kv, &e), -1);
    assert_non_null(strstr(e.msg, "found an array of 3 i32"));

    assert_int_equal(egm_gguf_tensor_count(g), 6);
    float out[64];
    const egm_gguf_tensor *t;
    t = egm_gguf_tensor_get(g, "f32");
    assert_int_equal((uintptr_t)t->data % 64, 0); /* general.alignment honoured (mmap is page aligned) */
    egm_gguf_to_f32(t, out);
    assert_memory_equal(out, f32, sizeof f32);
    t = egm_gguf_tensor_get(g, "f16");
    egm_gguf_to_f32(t, out);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f && out[3] == 65504.0f);
    egm_gguf_to_f32(egm_gguf_tensor_get(g, "bf16"), out);
    assert_true(out[0] == 1.0f && out[1] == -2.5f && out[2] == 0.0f && out[3] == 3.140625f);
    egm_gguf_to_f32(egm_gguf_tensor_get(g, "q8_0"), out);
    for (int j = 0; j < 32; j++) assert_true(out[j] == 0.5f * (float)(j - 16));
    egm_gguf_to_f32(egm_gguf_tensor_get(g, "q4_0"), out);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 2.0f * (float)(j - 8));        /* low nibbles: 0..15 */
        assert_true(out[j + 16] == 2.0f * (float)(7 - j));   /* high nibbles: 16..31 */
    }
    t = egm_gguf_tensor_get(g, "q4_1");
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->ne[0], 32);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(egm_gguf_tensor_elems(t), 64);
    egm_gguf_to_f32(t, out);
    for (int j = 0; j < 16; j++) {
        assert_true(out[j] == 0.25f * (float)j - 1.0f);
        assert_true(out[j + 16] == 0.25f * (float)(15 - j) - 1.0f);
        assert_true(out[32 + j] == (float)(j / 2) + 0.5f);
        assert_true(out[48 + j] == 9.5f);
    }
    egm_gguf_close(g);
}

/* ---- malformed files ---------------------------------------------------- */

/* A small valid file: two keys, two F32 tensors of 8 floats. */
static bb base(gw *w, int variant) {
    float x[8] = {0};
    int64_t ne[1] = {8};
    memset(w, 0, sizeof *w);
    w->align = 32;
    kv_str(w, "general.architecture", "llama");
    kv_u32(w, "llama.block_count", 1);
    if (variant == 1) kv_u32(w, "llama.block_count", 2);          /* duplicate key */
    if (variant == 2) kv_u32(w, "general.alignment", 48);         /* not a power of two */
    tensor(w, "a", EGM_GGML_F32, 1, ne, x, sizeof x);
    if (variant == 3) tensor(w, "a", EGM_GGML_F32, 1, ne, x, sizeof x); /* duplicate name */
    else tensor(w, "b", EGM_GGML_F32, 1, ne, x, sizeof x);
    bb f = finish(w, 3);
    gw_free(w);
    return f;
}

static void patch32(bb *f, size_t at, uint32_t v) { memcpy(f->p + at, &v, 4); }
static void patch64(bb *f, size_t at, uint64_t v) { memcpy(f->p + at, &v, 8); }

/* Byte offset of the first tensor info (after the header and the two keys). */
static size_t info_at(void) {
    return 24 + (8 + 20 + 4 + 8 + 5) + (8 + 17 + 4 + 4);
}

static void test_malformed_header(void **state) {
    (void)state;
    gw w;
    bb f = base(&w, 0);
    const char *ok = write_file("ok.gguf", f.p, f.n);
    egm_gguf *g;
    egm_err e;
    if (egm_gguf_open(ok, &g, &e)) fail_msg("%s", e.msg);
    egm_gguf_close(g);
    free(f.p);

    f = base(&w, 0); f.p[0] = 'X';
    expect_refused("magic.gguf", f, "expected the magic \"GGUF\"");
    f = base(&w, 0); patch32(&f, 4, 1);
    expect_refused("v1.gguf", f, "GGUF version 1 is not supported");
    f = base(&w, 0); patch32(&f, 4, 4);
    expect_refused("v4.gguf", f, "GGUF version 4");
    f = base(&w, 0); patch64(&f, 8, 1ull << 40);
    expect_refused("ntensors.gguf", f, "tensor count 1099511627776 is too large");
    f = base(&w, 0); patch64(&f, 16, 1ull << 60);
    expect_refused("nkv.gguf", f, "metadata count");
    f = base(&w, 0); f.n = 3;
    expect_refused("tiny.gguf", f, "truncated");
    f = base(&w, 0); f.n = 60; patch64(&f, 8, 0); /* inside the first key */
    expect_refused("trunc_kv.gguf", f, "truncated: key \"general.architecture\" needs 8 bytes");
    f = base(&w, 0); f.n = info_at() + 10; /* inside the first tensor info */
    expect_refused("trunc_info.gguf", f, "truncated: tensor \"a\" needs");
    f = base(&w, 0); f.n -= 4;            /* last tensor's data cut */
    expect_refused("trunc_data.gguf", f, "tensor \"b\": bytes [32, 64) of the data section are out of range");
    f = base(&w, 0); patch64(&f, 24, 1ull << 50); /* first key's length */
    expect_refused("keylen.gguf", f, "metadata key 0");
    f = base(&w, 0); patch32(&f, 24 + 8 + 20, 13); /* unknown value type */
    expect_refused("kvtype.gguf", f, "key \"general.architecture\": unknown value type 13");
    f = base(&w, 1);
    expect_refused("dupkey.gguf", f, "key \"llama.block_count\": duplicate key");
    f = base(&w, 2);
    expect_refused("align.gguf", f, "key \"general.alignment\": expected a u32 power of two");
    f = base(&w, 3);
    expect_refused("dupname.gguf", f, "tensor \"a\": duplicate name");
}

static void test_malformed_tensors(void **state) {
    (void)state;
    gw w;
    size_t t0 = info_at() + 8 + 1;   /* first tensor info after its name "a" */
    bb f;
    f = base(&w, 0); patch32(&f, t0, 5);             /* n_dims */
    expect_refused("ndims.gguf", f, "tensor \"a\": expected 1 to 4 dimensions, found 5");
    f = base(&w, 0); patch64(&f, t0 + 4, 0);         /* ne[0] = 0 */
    expect_refused("ne0.gguf", f, "tensor \"a\": dimension 0 is 0");
    f = base(&w, 0); patch32(&f, t0 + 12, 99);       /* type */
    expect_refused("type.gguf", f, "tensor \"a\": unknown ggml type 99");
    f = base(&w, 0); patch32(&f, t0 + 12, 10);       /* Q2_K: known, not supported */
    expect_refused("q2k.gguf", f, "tensor \"a\": type Q2_K is not supported");
    f = base(&w, 0); patch32(&f, t0 + 12, EGM_GGML_Q8_0); /* 8 is not a multiple of 32 */
    expect_refused("block.gguf", f, "tensor \"a\": ne[0] = 8 is not a multiple of Q8_0's block of 32");
    f = base(&w, 0); patch64(&f, t0 + 16, 16);       /* offset */
    expect_refused("misaligned.gguf", f, "tensor \"a\": offset 16 is not a multiple of the alignment 32");
    f = base(&w, 0); patch64(&f, t0 + 16, 1 << 20);
    expect_refused("range.gguf", f, "tensor \"a\": bytes [1048576, 1048608) of the data section are out of range");
    f = base(&w, 0); patch64(&f, t0 + 16, 32);       /* a now sits on b */
    expect_refused("overlap.gguf", f, "overlaps tensor");
    /* huge ne: the product overflows */
    f = base(&w, 0); patch32(&f, t0, 2);
    expect_refused("ne_trunc.gguf", f, "tensor \"a\": dimension 1 is 0");
}

/* ---- a tiny llama model with its tokenizer ------------------------------ */

enum { TD = 32, TH = 2, THKV = 1, TDH = 16, TF = 64, TL = 2 };

/* Vocabulary: 3 control tokens, the 256 byte-level symbols, then merges. */
static int tiny_vocab(char ***out) {
    char **v = calloc(300, sizeof *v);
    int n = 0;
    v[n++] = strdup("<|endoftext|>");
    v[n++] = strdup("<|im_start|>");
    v[n++] = strdup("<|im_end|>");
    int k = 0;
    for (int b = 0; b < 256; b++) { /* GPT-2 bytes_to_unicode, in UTF-8 */
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)k++;
        char s[4] = {0};
        if (cp < 0x80) s[0] = (char)cp;
        else { s[0] = (char)(0xC0 | cp >> 6); s[1] = (char)(0x80 | (cp & 63)); }
        v[n++] = strdup(s);
    }
    v[n++] = strdup("ab");          /* 259 */
    v[n++] = strdup("\xC4\xA0" "ab"); /* 260: " ab" */
    v[n++] = strdup("\xC4\xA0" "a");  /* 261: " a" */
    *out = v;
    return n;
}

static float wval(const char *name, size_t i) {
    unsigned h = 2166136261u;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 16777619u;
    return (float)((int)((i * 5 + h) % 13) - 6) / 8.0f;
}

typedef struct {
    int bad_shape, no_block_count, extra_tensor, add_bos, q8_embed, pre_unknown;
} tiny_opts;

static const char *tiny_model(const char *name, tiny_opts o) {
    gw w = {.align = 32};
    char **vocab;
    int V = tiny_vocab(&vocab);
    kv_str(&w, "general.architecture", "llama");
    if (!o.no_block_count) kv_u32(&w, "llama.block_count", TL);
    kv_u32(&w, "llama.context_length", 128);
    kv_u32(&w, "llama.embedding_length", TD);
    kv_u32(&w, "llama.feed_forward_length", TF);
    kv_u32(&w, "llama.attention.head_count", TH);
    kv_u32(&w, "llama.attention.head_count_kv", THKV);
    kv_f32(&w, "llama.rope.freq_base", 10000.0f);
    kv_f32(&w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_str(&w, "tokenizer.ggml.model", "gpt2");
    kv_str(&w, "tokenizer.ggml.pre", o.pre_unknown ? "klingon" : "smollm");
    kv_arr_str(&w, "tokenizer.ggml.tokens", (const char *const *)vocab, V);
    int32_t types[300];
    for (int i = 0; i < V; i++) types[i] = i < 3 ? 3 : 1;
    kv_arr_i32(&w, "tokenizer.ggml.token_type", types, V);
    const char *merges[] = {"a b", "\xC4\xA0 a", "\xC4\xA0 ab"};
    kv_arr_str(&w, "tokenizer.ggml.merges", merges, 3);
    kv_u32(&w, "tokenizer.ggml.bos_token_id", 1);
    kv_u32(&w, "tokenizer.ggml.eos_token_id", 2);
    kv_bool(&w, "tokenizer.ggml.add_bos_token", o.add_bos);

    /* token_embd as Q8_0 (d = 1/8, q = (i % 9) - 4) or F32 from wval */
    size_t nemb = (size_t)V * TD;
    if (o.q8_embed) {
        size_t nb = nemb / 32;
        uint8_t *q = malloc(nb * 34);
        uint16_t h = 0x3000; /* 0.125 */
        for (size_t b = 0; b < nb; b++) {
            memcpy(q + 34 * b, &h, 2);
            for (int j = 0; j < 32; j++) q[34 * b + 2 + j] = (uint8_t)(int8_t)((int)((b * 32 + j) % 9) - 4);
        }
        int64_t ne[2] = {TD, V};
        tensor(&w, "token_embd.weight", EGM_GGML_Q8_0, 2, ne, q, nb * 34);
        free(q);
    } else {
        float *x = malloc(nemb * 4);
        for (size_t i = 0; i < nemb; i++) x[i] = wval("token_embd.weight", i);
        int64_t ne[2] = {TD, V};
        tensor(&w, "token_embd.weight", EGM_GGML_F32, 2, ne, x, nemb * 4);
        free(x);
    }
    struct { const char *n; int64_t in, out; } per[] = {
        {"attn_norm", TD, 0}, {"ffn_norm", TD, 0},
        {"attn_q", TD, TH * TDH}, {"attn_k", TD, THKV * TDH}, {"attn_v", TD, THKV * TDH},
        {"attn_output", TH * TDH, TD}, {"ffn_gate", TD, TF}, {"ffn_up", TD, TF},
        {"ffn_down", TF, TD}};
    float *x = malloc(TF * TD * 4);
    char nm[64];
    for (int l = 0; l < TL; l++)
        for (size_t k = 0; k < sizeof per / sizeof *per; k++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, per[k].n);
            int64_t ne[2] = {per[k].in, per[k].out};
            if (o.bad_shape && l == 1 && !strcmp(per[k].n, "attn_q")) ne[1] = TH * TDH + 2;
            size_t n = (size_t)ne[0] * (size_t)(ne[1] ? ne[1] : 1);
            for (size_t i = 0; i < n; i++) x[i] = wval(nm, i);
            tensor(&w, nm, EGM_GGML_F32, ne[1] ? 2 : 1, ne, x, n * 4);
        }
    int64_t ned[1] = {TD};
    for (int i = 0; i < TD; i++) x[i] = 1.0f;
    tensor(&w, "output_norm.weight", EGM_GGML_F32, 1, ned, x, TD * 4);
    if (o.extra_tensor) tensor(&w, "rope_freqs.weight", EGM_GGML_F32, 1, ned, x, TD * 4);
    free(x);
    bb f = finish(&w, 3);
    const char *path = write_file(name, f.p, f.n);
    free(f.p);
    gw_free(&w);
    for (int i = 0; i < V; i++) free(vocab[i]);
    free(vocab);
    return path;
}

static void test_model_load(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s", tiny_model("tiny.gguf", (tiny_opts){.q8_embed = 1}));
    egm_config c;
    egm_err e;
    if (egm_model_config(path, &c, &e)) fail_msg("%s", e.msg);
    assert_int_equal(c.arch, EGM_LLAMA);
    assert_int_equal(c.vocab_size, 262);
    assert_int_equal(c.hidden_size, TD);
    assert_int_equal(c.num_layers, TL);
    assert_int_equal(c.num_heads, TH);
    assert_int_equal(c.num_kv_heads, THKV);
    assert_int_equal(c.head_dim, TDH);
    assert_int_equal(c.intermediate_size, TF);
    assert_int_equal(c.max_position_embeddings, 128);
    assert_int_equal(c.rope_interleave, 1);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_int_equal(c.bos_token_id, 1);
    assert_true(egm_config_is_eos(&c, 2) && egm_config_is_eos(&c, 0) && !egm_config_is_eos(&c, 1));
    assert_true(fabsf(c.rope_theta - 10000.0f) < 1e-3f && fabsf(c.rms_norm_eps - 1e-5f) < 1e-9f);

    egm_model m;
    if (egm_model_load(path, 0, -1, EGM_LOAD_EMBED | EGM_LOAD_HEAD, &m, &e)) fail_msg("%s", e.msg);
    assert_ptr_equal(m.lm_head.data, m.embed.data); /* tied */
    assert_int_equal(m.embed.type, EGM_GGML_Q8_0); /* kept as stored, mapped */
    assert_ptr_equal(m.embed.data, egm_gguf_tensor_get(m.gg, "token_embd.weight")->data);
    float row[TD];
    for (size_t i = 0; i < (size_t)262 * TD; i++) {
        if (i % TD == 0) egm_mat_row(&m.embed, (int)(i / TD), row);
        assert_true(row[i % TD] == 0.125f * (float)((int)(i % 9) - 4));
    }
    /* blk.1.attn_q: ne [TD, H*dh] is our [H*dh, TD] row-major, used in place */
    const float *wq = m.layers[1].wq.data;
    for (size_t i = 0; i < (size_t)TH * TDH * TD; i++)
        assert_true(wq[i] == wval("blk.1.attn_q.weight", i));
    assert_true(((const float *)m.layers[0].w_down.data)[5] == wval("blk.0.ffn_down.weight", 5));
    egm_model_free(&m);

    /* a layer range: only layer 1, no embeddings */
    if (egm_model_load(path, 1, 2, 0, &m, &e)) fail_msg("%s", e.msg);
    assert_null(m.embed.data);
    assert_true(((const float *)m.layers[0].wk.data)[3] == wval("blk.1.attn_k.weight", 3));
    egm_model_free(&m);
}

static void test_model_refused(void **state) {
    (void)state;
    egm_model m;
    egm_err e;
    char path[512];
    snprintf(path, sizeof path, "%s", tiny_model("shape.gguf", (tiny_opts){.bad_shape = 1}));
    assert_int_equal(egm_model_load(path, 0, -1, 3, &m, &e), -1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "tensor \"blk.1.attn_q.weight\": expected ne [32, 32], found ne [32, 34]"));
    /* layers [0, 1) do not read it */
    assert_int_equal(egm_model_load(path, 0, 1, 1, &m, &e), 0);
    egm_model_free(&m);

    snprintf(path, sizeof path, "%s", tiny_model("nokey.gguf", (tiny_opts){.no_block_count = 1}));
    assert_int_equal(egm_model_load(path, 0, -1, 3, &m, &e), -1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "key \"llama.block_count\": expected an integer"));

    snprintf(path, sizeof path, "%s", tiny_model("extra.gguf", (tiny_opts){.extra_tensor = 1}));
    assert_int_equal(egm_model_load(path, 0, -1, 3, &m, &e), -1);
    assert_non_null(strstr(e.msg, "tensor \"rope_freqs.weight\" is not used"));

    egm_tokenizer *t;
    snprintf(path, sizeof path, "%s", tiny_model("pre.gguf", (tiny_opts){.pre_unknown = 1}));
    assert_int_equal(egm_model_tokenizer(path, &t, &e), -1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "key \"tokenizer.ggml.pre\": pre-tokenizer \"klingon\""));
}

static void test_tokenizer(void **state) {
    (void)state;
    egm_tokenizer *t;
    egm_err e;
    char path[512];
    snprintf(path, sizeof path, "%s", tiny_model("tok.gguf", (tiny_opts){0}));
    if (egm_model_tokenizer(path, &t, &e)) fail_msg("%s", e.msg);
    assert_int_equal(egm_tok_vocab_size(t), 262);
    const char *text = "ab ab a<|im_end|>12";
    int *ids, n;
    assert_int_equal(egm_tok_encode(t, text, strlen(text), 1, &ids, &n, &e), 0);
    /* "ab" " ab" " a" <|im_end|> "1" "2" (digits split one by one: smollm) */
    int want[] = {259, 260, 261, 2, 3 + '1', 3 + '2'};
    assert_int_equal(n, 6);
    assert_memory_equal(ids, want, sizeof want);
    assert_true(egm_tok_is_special(t, 2));
    char *s = egm_tok_decode(t, ids, n, 0);
    assert_string_equal(s, text);
    free(s);
    s = egm_tok_decode(t, ids, n, 1);
    assert_string_equal(s, "ab ab a12");
    free(s);
    free(ids);
    egm_tok_free(t);

    /* add_bos_token = true puts BOS in front when special tokens are asked for */
    snprintf(path, sizeof path, "%s", tiny_model("tokbos.gguf", (tiny_opts){.add_bos = 1}));
    if (egm_model_tokenizer(path, &t, &e)) fail_msg("%s", e.msg);
    assert_int_equal(egm_tok_encode(t, "ab", 2, 1, &ids, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 259);
    free(ids);
    assert_int_equal(egm_tok_encode(t, "ab", 2, 0, &ids, &n, &e), 0);
    assert_int_equal(n, 1);
    free(ids);
    egm_tok_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata_and_types),
        cmocka_unit_test(test_malformed_header),
        cmocka_unit_test(test_malformed_tensors),
        cmocka_unit_test(test_model_load),
        cmocka_unit_test(test_model_refused),
        cmocka_unit_test(test_tokenizer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
