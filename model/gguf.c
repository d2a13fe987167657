/* gguf.c - GGUF reader: map, validate everything, dequantise (see gguf.h).
 *
 * Layout (v2/v3, little-endian):
 *   "GGUF" u32 version u64 n_tensors u64 n_kv
 *   n_kv x (string key, u32 type, value)         string = u64 len + bytes
 *   n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset)
 *   padding to general.alignment (default 32), then the data section.
 * Every read goes through a cursor that refuses to pass the end of the file,
 * and every count is checked against the bytes left before anything is
 * allocated for it, so a hostile header cannot make us allocate terabytes. */
#include "gguf.h"

#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/hash.h"

struct egm_gguf {
    char *path;
    int version;
    const uint8_t *map;
    size_t size;
    egm_gguf_kv *kv;
    int n_kv;
    egm_gguf_tensor *t;
    int n_t;
    size_t meta_end, info_end, data_off;
    uint32_t alignment;
};

/* ---- types ------------------------------------------------------------- */

typedef struct { int type; const char *name; int blck, size; } ggml_info;

/* Known ggml types; size 0 = known by name only (not supported). */
static const ggml_info GGML[] = {
    {0, "F32", 1, 4},      {1, "F16", 1, 2},     {2, "Q4_0", 32, 18},  {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},   {7, "Q5_1", 32, 24},   {8, "Q8_0", 32, 34},  {9, "Q8_1", 32, 0},
    {10, "Q2_K", 256, 0},  {11, "Q3_K", 256, 0}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 0}, {16, "IQ2_XXS", 256, 0},
    {17, "IQ2_XS", 256, 0}, {18, "IQ3_XXS", 256, 0}, {19, "IQ1_S", 256, 0},
    {20, "IQ4_NL", 32, 0}, {21, "IQ3_S", 256, 0}, {22, "IQ2_S", 256, 0},
    {23, "IQ4_XS", 256, 0}, {24, "I8", 1, 0},    {25, "I16", 1, 0},    {26, "I32", 1, 0},
    {27, "I64", 1, 0},     {28, "F64", 1, 0},    {29, "IQ1_M", 256, 0}, {30, "BF16", 1, 2},
    {34, "TQ1_0", 256, 0}, {35, "TQ2_0", 256, 0}, {39, "MXFP4", 32, 0},
};

static const ggml_info *ggml_info_of(int type) {
    for (size_t i = 0; i < sizeof GGML / sizeof *GGML; i++)
        if (GGML[i].type == type) return &GGML[i];
    return NULL;
}

int egm_ggml_type_supported(int type) {
    const ggml_info *g = ggml_info_of(type);
    return g && g->size > 0;
}

static const char *kv_type_name(int t) {
    static const char *n[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                              "string", "array", "u64", "i64", "f64"};
    return t >= 0 && t <= 12 ? n[t] : "?";
}

static size_t kv_scalar_size(int t) {
    static const size_t s[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t >= 0 && t <= 12 ? s[t] : 0;
}

static int is_int_type(int t) {
    return t == EGM_GGUF_U8 || t == EGM_GGUF_I8 || t == EGM_GGUF_U16 || t == EGM_GGUF_I16 ||
           t == EGM_GGUF_U32 || t == EGM_GGUF_I32 || t == EGM_GGUF_U64 || t == EGM_GGUF_I64;
}

/* ---- cursor ------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t n, off;
    const char *path;
    egm_err *e;
} cur;

static int need(cur *c, size_t k, const char *what) {
    if (k > c->n - c->off)
        return egm_fail(c->e, "%s: truncated: %s needs %zu bytes at offset %zu, but the file "
                        "has %zu bytes", c->path, what, k, c->off, c->n);
    return 0;
}

static int rd(cur *c, void *dst, size_t k, const char *what) {
    if (need(c, k, what)) return -1;
    memcpy(dst, c->p + c->off, k);
    c->off += k;
    return 0;
}

/* A string: u64 length + bytes. *s points into the mapping. */
static int rd_str(cur *c, const char **s, uint64_t *len, const char *what) {
    if (rd(c, len, 8, what)) return -1;
    if (need(c, *len, what)) return -1;
    *s = (const char *)c->p + c->off;
    c->off += *len;
    return 0;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* ---- parsing ----------------------------------------------------------- */

static int parse_kv(egm_gguf *g, cur *c, egm_gguf_kv *kv, uint64_t i) {
    char what[96];
    snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)i);
    const char *k;
    uint64_t klen;
    uint32_t type;
    if (rd_str(c, &k, &klen, what)) return -1;
    if (klen == 0 || klen > 65535 || memchr(k, 0, klen))
        return egm_fail(c->e, "%s: %s: expected a non-empty key name of at most 65535 bytes "
                        "without NUL, found %llu bytes", g->path, what, (unsigned long long)klen);
    if (!(kv->key = dup_n(k, klen))) return egm_fail(c->e, "%s: out of memory", g->path);
    snprintf(what, sizeof what, "key \"%.60s\"", kv->key);
    for (int j = 0; j < g->n_kv; j++)
        if (!strcmp(g->kv[j].key, kv->key))
            return egm_fail(c->e, "%s: %s: duplicate key", g->path, what);
    if (rd(c, &type, 4, what)) return -1;
    kv->type = (int)type;
    kv->n = 1;
    int et = (int)type;
    if (type == EGM_GGUF_ARRAY) {
        uint32_t at;
        if (rd(c, &at, 4, what) || rd(c, &kv->n, 8, what)) return -1;
        if (at == EGM_GGUF_ARRAY)
            return egm_fail(c->e, "%s: %s: arrays of arrays are not supported", g->path, what);
        kv->arr_type = et = (int)at;
    }
    if (et < 0 || et > 12 || et == EGM_GGUF_ARRAY)
        return egm_fail(c->e, "%s: %s: unknown value type %d (expected 0..12)", g->path, what, et);
    kv->data = c->p + c->off;
    size_t left = c->n - c->off;
    if (et != EGM_GGUF_STRING) {
        size_t es = kv_scalar_size(et);
        if (kv->n > left / es)
            return egm_fail(c->e, "%s: %s: %llu elements of %s (%zu bytes each) do not fit in "
                            "the %zu bytes left in the file", g->path, what,
                            (unsigned long long)kv->n, kv_type_name(et), es, left);
        if (et == EGM_GGUF_BOOL)
            for (uint64_t j = 0; j < kv->n; j++)
                if (kv->data[j] > 1)
                    return egm_fail(c->e, "%s: %s: expected a bool (0 or 1), found %u", g->path,
                                    what, kv->data[j]);
        c->off += (size_t)kv->n * es;
        return 0;
    }
    /* strings: each at least 8 bytes, so the count is bounded before we
     * allocate the index */
    if (type == EGM_GGUF_ARRAY && kv->n > left / 8)
        return egm_fail(c->e, "%s: %s: %llu strings do not fit in the %zu bytes left in the "
                        "file", g->path, what, (unsigned long long)kv->n, left);
    size_t n = kv->n ? (size_t)kv->n : 1;
    kv->str = malloc(n * sizeof *kv->str);
    kv->len = malloc(n * sizeof *kv->len);
    if (!kv->str || !kv->len) return egm_fail(c->e, "%s: out of memory", g->path);
    for (uint64_t j = 0; j < kv->n; j++)
        if (rd_str(c, &kv->str[j], &kv->len[j], what)) return -1;
    return 0;
}

static int by_offset(const void *a, const void *b, void *ctx) {
    const egm_gguf_tensor *t = ctx;
    uint64_t x = t[*(const int *)a].offset, y = t[*(const int *)b].offset;
    return x < y ? -1 : x > y;
}

static int by_tname(const void *a, const void *b, void *ctx) {
    const egm_gguf_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

static int parse_tensor(egm_gguf *g, cur *c, egm_gguf_tensor *t, uint64_t i) {
    char what[128];
    snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
    const char *s;
    uint64_t len;
    uint32_t nd, type;
    if (rd_str(c, &s, &len, what)) return -1;
    if (len == 0 || len > 1024 || memchr(s, 0, len))
        return egm_fail(c->e, "%s: %s: expected a tensor name of 1..1024 bytes without NUL, "
                        "found %llu bytes", g->path, what, (unsigned long long)len);
    if (!(t->name = dup_n(s, len))) return egm_fail(c->e, "%s: out of memory", g->path);
    snprintf(what, sizeof what, "tensor \"%.100s\"", t->name);
    if (rd(c, &nd, 4, what)) return -1;
    if (nd < 1 || nd > 4)
        return egm_fail(c->e, "%s: %s: expected 1 to 4 dimensions, found %u", g->path, what, nd);
    t->ndim = (int)nd;
    uint64_t elems = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if (rd(c, &ne, 8, what)) return -1;
        if (ne < 1 || ne > (uint64_t)INT64_MAX / elems)
            return egm_fail(c->e, "%s: %s: dimension %u is %llu (expected >= 1, and at most "
                            "2^63 elements in all)", g->path, what, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        elems *= ne;
    }
    for (int d = (int)nd; d < 4; d++) t->ne[d] = 1;
    if (rd(c, &type, 4, what) || rd(c, &t->offset, 8, what)) return -1;
    t->type = (int)type;
    const ggml_info *gi = ggml_info_of((int)type);
    if (!gi)
        return egm_fail(c->e, "%s: %s: unknown ggml type %u", g->path, what, type);
    if (!gi->size)
        return egm_fail(c->e, "%s: %s: type %s is not supported (expected F32, F16, BF16, Q8_0, "
                        "Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K)", g->path, what, gi->name);
    if (t->ne[0] % gi->blck)
        return egm_fail(c->e, "%s: %s: ne[0] = %lld is not a multiple of %s's block of %d",
                        g->path, what, (long long)t->ne[0], gi->name, gi->blck);
    uint64_t blocks = elems / (uint64_t)gi->blck;
    if (blocks > SIZE_MAX / (uint64_t)gi->size)
        return egm_fail(c->e, "%s: %s: too large", g->path, what);
    t->nbytes = (size_t)blocks * (size_t)gi->size;
    return 0;
}

/* Offsets: aligned, inside the data section, not overlapping; names unique. */
static int check_tensors(egm_gguf *g, egm_err *e) {
    int n = g->n_t;
    if (n == 0) return 0;
    int *ix = malloc((size_t)n * sizeof *ix);
    if (!ix) return egm_fail(e, "%s: out of memory", g->path);
    for (int i = 0; i < n; i++) ix[i] = i;
    int rc = 0;
    qsort_r(ix, (size_t)n, sizeof *ix, by_tname, g->t);
    for (int i = 1; i < n && !rc; i++)
        if (!strcmp(g->t[ix[i]].name, g->t[ix[i - 1]].name))
            rc = egm_fail(e, "%s: tensor \"%s\": duplicate name", g->path, g->t[ix[i]].name);
    size_t data_size = g->size - g->data_off;
    for (int i = 0; i < n && !rc; i++) {
        egm_gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment)
            rc = egm_fail(e, "%s: tensor \"%s\": offset %llu is not a multiple of the alignment "
                          "%u", g->path, t->name, (unsigned long long)t->offset, g->alignment);
        else if (t->offset > data_size || t->nbytes > data_size - t->offset)
            rc = egm_fail(e, "%s: tensor \"%s\": bytes [%llu, %llu) of the data section are out "
                          "of range (the data section has %zu bytes)", g->path, t->name,
                          (unsigned long long)t->offset,
                          (unsigned long long)(t->offset + t->nbytes), data_size);
        else
            t->data = g->map + g->data_off + t->offset;
    }
    qsort_r(ix, (size_t)n, sizeof *ix, by_offset, g->t);
    for (int i = 1; i < n && !rc; i++) {
        const egm_gguf_tensor *a = &g->t[ix[i - 1]], *b = &g->t[ix[i]];
        if (a->offset + a->nbytes > b->offset)
            rc = egm_fail(e, "%s: tensor \"%s\" (bytes [%llu, %llu)) overlaps tensor \"%s\" "
                          "(from byte %llu)", g->path, b->name, (unsigned long long)b->offset,
                          (unsigned long long)(b->offset + b->nbytes), a->name,
                          (unsigned long long)a->offset);
    }
    free(ix);
    return rc;
}

static int parse(egm_gguf *g, egm_err *e) {
    cur c = {g->map, g->size, 0, g->path, e};
    char magic[4];
    uint32_t ver;
    uint64_t n_t, n_kv;
    if (need(&c, 4, "the magic")) return -1;
    memcpy(magic, g->map, 4);
    if (memcmp(magic, "GGUF", 4))
        return egm_fail(e, "%s: not a GGUF file: expected the magic \"GGUF\", found bytes "
                        "%02x %02x %02x %02x", g->path, (uint8_t)magic[0], (uint8_t)magic[1],
                        (uint8_t)magic[2], (uint8_t)magic[3]);
    c.off = 4;
    if (rd(&c, &ver, 4, "the version")) return -1;
    if (ver != 2 && ver != 3)
        return egm_fail(e, "%s: GGUF version %u is not supported (expected 2 or 3)", g->path, ver);
    g->version = (int)ver;
    if (rd(&c, &n_t, 8, "the tensor count") || rd(&c, &n_kv, 8, "the metadata count")) return -1;
    /* a key/value takes >= 13 bytes and a tensor info >= 33 */
    size_t left = c.n - c.off;
    if (n_kv > left / 13 || n_kv > 1000000)
        return egm_fail(e, "%s: metadata count %llu is too large for a file of %zu bytes", g->path,
                        (unsigned long long)n_kv, c.n);
    if (n_t > left / 33 || n_t > 1000000)
        return egm_fail(e, "%s: tensor count %llu is too large for a file of %zu bytes", g->path,
                        (unsigned long long)n_t, c.n);
    g->kv = calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->t = calloc(n_t ? n_t : 1, sizeof *g->t);
    if (!g->kv || !g->t) return egm_fail(e, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        if (parse_kv(g, &c, &g->kv[i], i)) {
            g->n_kv = (int)i + 1; /* free what this one holds too */
            return -1;
        }
        g->n_kv = (int)i + 1;
    }
    g->meta_end = c.off;
    g->alignment = 32;
    const egm_gguf_kv *al = egm_gguf_kv_get(g, "general.alignment");
    if (al) {
        uint32_t a = 0;
        if (al->type == EGM_GGUF_U32) memcpy(&a, al->data, 4);
        if (al->type != EGM_GGUF_U32 || a == 0 || (a & (a - 1)))
            return egm_fail(e, "%s: key \"general.alignment\": expected a u32 power of two, "
                            "found %s %u", g->path, kv_type_name(al->type), a);
        g->alignment = a;
    }
    for (uint64_t i = 0; i < n_t; i++) {
        g->n_t = (int)i + 1;
        if (parse_tensor(g, &c, &g->t[i], i)) return -1;
    }
    g->info_end = c.off;
    size_t pad = (g->alignment - c.off % g->alignment) % g->alignment;
    g->data_off = c.off + pad;
    if (g->data_off > g->size) {
        if (n_t == 0) {
            g->data_off = g->size;
        } else {
            return egm_fail(e, "%s: truncated: the data section should start at byte %zu, but "
                            "the file has %zu bytes", g->path, g->data_off, g->size);
        }
    }
    return check_tensors(g, e);
}

int egm_gguf_is_file(const char *path) {
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) return 0;
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".gguf")) return 1;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4];
    int ok = fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
    fclose(f);
    return ok;
}

int egm_gguf_open(const char *path, egm_gguf **out, egm_err *e) {
    *out = NULL;
    egm_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return egm_fail(e, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        egm_fail(e, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        egm_gguf_close(g);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 4) {
        close(fd);
        egm_fail(e, "%s: %s", path, S_ISREG(st.st_mode) ? "truncated: shorter than the 4-byte "
                 "GGUF magic" : "not a regular file");
        egm_gguf_close(g);
        return -1;
    }
    g->size = (size_t)st.st_size;
    void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        egm_fail(e, "%s: cannot map: %s", path, strerror(errno));
        egm_gguf_close(g);
        return -1;
    }
    g->map = m;
    if (parse(g, e)) {
        egm_gguf_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

void egm_gguf_close(egm_gguf *g) {
    if (!g) return;
    for (int i = 0; i < g->n_kv; i++) {
        free((char *)g->kv[i].key);
        free(g->kv[i].str);
        free(g->kv[i].len);
    }
    free(g->kv);
    for (int i = 0; i < g->n_t; i++) free((char *)g->t[i].name);
    free(g->t);
    if (g->map) munmap((void *)g->map, g->size);
    free(g->path);
    free(g);
}

const char *egm_gguf_path(const egm_gguf *g) { return g->path; }
int egm_gguf_version(const egm_gguf *g) { return g->version; }
int egm_gguf_kv_count(const egm_gguf *g) { return g->n_kv; }
int egm_gguf_tensor_count(const egm_gguf *g) { return g->n_t; }

const egm_gguf_kv *egm_gguf_kv_at(const egm_gguf *g, int i) {
    return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

const egm_gguf_kv *egm_gguf_kv_get(const egm_gguf *g, const char *key) {
    for (int i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const egm_gguf_tensor *egm_gguf_tensor_at(const egm_gguf *g, int i) {
    return i >= 0 && i < g->n_t ? &g->t[i] : NULL;
}

const egm_gguf_tensor *egm_gguf_tensor_get(const egm_gguf *g, const char *name) {
    for (int i = 0; i < g->n_t; i++)
        if (!strcmp(g->t[i].name, name)) return &g->t[i];
    return NULL;
}

size_t egm_gguf_tensor_elems(const egm_gguf_tensor *t) {
    return (size_t)t->ne[0] * (size_t)t->ne[1] * (size_t)t->ne[2] * (size_t)t->ne[3];
}

/* ---- typed metadata getters -------------------------------------------- */

/* Reads element i of an integer-typed value as int64 (u64 above INT64_MAX
 * saturates, which every range check then refuses). */
static long long int_at(int type, const uint8_t *p, uint64_t i) {
    switch (type) {
    case EGM_GGUF_U8: return p[i];
    case EGM_GGUF_I8: return (int8_t)p[i];
    case EGM_GGUF_U16: { uint16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case EGM_GGUF_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); return v; }
    case EGM_GGUF_U32: { uint32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case EGM_GGUF_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); return v; }
    case EGM_GGUF_U64: {
        uint64_t v;
        memcpy(&v, p + 8 * i, 8);
        return v > (uint64_t)INT64_MAX ? INT64_MAX : (long long)v;
    }
    case EGM_GGUF_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); return v; }
    }
    return 0;
}

long long egm_gguf_arr_int(const egm_gguf_kv *kv, uint64_t i) {
    return int_at(kv->arr_type, kv->data, i);
}

static int missing(const egm_gguf *g, const char *key, const char *what, egm_err *e) {
    return egm_fail(e, "%s: key \"%s\": expected %s, found nothing (key missing)", g->path, key,
                    what);
}

static int wrong(const egm_gguf *g, const char *key, const egm_gguf_kv *kv, const char *what,
                 egm_err *e) {
    if (kv->type == EGM_GGUF_ARRAY)
        return egm_fail(e, "%s: key \"%s\": expected %s, found an array of %llu %s", g->path, key,
                        what, (unsigned long long)kv->n, kv_type_name(kv->arr_type));
    return egm_fail(e, "%s: key \"%s\": expected %s, found a %s", g->path, key, what,
                    kv_type_name(kv->type));
}

int egm_gguf_get_int(const egm_gguf *g, const char *key, int required, long long def,
                     long long min, long long max, long long *out, egm_err *e) {
    char what[96];
    snprintf(what, sizeof what, "an integer in [%lld, %lld]", min, max);
    const egm_gguf_kv *kv = egm_gguf_kv_get(g, key);
    if (!kv) {
        if (required) return missing(g, key, what, e);
        *out = def;
        return 0;
    }
    if (!is_int_type(kv->type)) return wrong(g, key, kv, what, e);
    long long v = int_at(kv->type, kv->data, 0);
    if (v < min || v > max)
        return egm_fail(e, "%s: key \"%s\": expected %s, found %lld", g->path, key, what, v);
    *out = v;
    return 0;
}

int egm_gguf_get_float(const egm_gguf *g, const char *key, int required, double def,
                       double *out, egm_err *e) {
    const egm_gguf_kv *kv = egm_gguf_kv_get(g, key);
    if (!kv) {
        if (required) return missing(g, key, "a number", e);
        *out = def;
        return 0;
    }
    if (kv->type == EGM_GGUF_F32) {
        float f;
        memcpy(&f, kv->data, 4);
        *out = f;
    } else if (kv->type == EGM_GGUF_F64) {
        memcpy(out, kv->data, 8);
    } else {
        return wrong(g, key, kv, "an f32 or f64", e);
    }
    return 0;
}

int egm_gguf_get_bool(const egm_gguf *g, const char *key, int required, int def, int *out,
                      egm_err *e) {
    const egm_gguf_kv *kv = egm_gguf_kv_get(g, key);
    if (!kv) {
        if (required) return missing(g, key, "a bool", e);
        *out = def;
        return 0;
    }
    if (kv->type != EGM_GGUF_BOOL) return wrong(g, key, kv, "a bool", e);
    *out = kv->data[0];
    return 0;
}

int egm_gguf_get_str(const egm_gguf *g, const char *key, int required, char **s, egm_err *e) {
    *s = NULL;
    const egm_gguf_kv *kv = egm_gguf_kv_get(g, key);
    if (!kv) return required ? missing(g, key, "a string", e) : 0;
    if (kv->type != EGM_GGUF_STRING) return wrong(g, key, kv, "a string", e);
    if (!(*s = dup_n(kv->str[0], kv->len[0]))) return egm_fail(e, "%s: out of memory", g->path);
    return 0;
}

int egm_gguf_get_arr(const egm_gguf *g, const char *key, int required, int elem_type,
                     const egm_gguf_kv **out, egm_err *e) {
    *out = NULL;
    char what[64];
    snprintf(what, sizeof what, "an array of %s",
             elem_type < 0 ? "integers" : kv_type_name(elem_type));
    const egm_gguf_kv *kv = egm_gguf_kv_get(g, key);
    if (!kv) return required ? missing(g, key, what, e) : 0;
    if (kv->type != EGM_GGUF_ARRAY ||
        (elem_type < 0 ? !is_int_type(kv->arr_type) : kv->arr_type != elem_type))
        return wrong(g, key, kv, what, e);
    *out = kv;
    return 0;
}

/* ---- dequantisation ---------------------------------------------------- */

/* Row by row, so the block layouts live in one place (kernels/quant.c). */
void egm_gguf_to_f32(const egm_gguf_tensor *t, float *dst) {
    int64_t cols = t->ne[0], rows = (int64_t)(egm_gguf_tensor_elems(t) / (size_t)cols);
    size_t rb = egm_qtype_row_bytes(t->type, cols);
    for (int64_t r = 0; r < rows; r++)
        egm_dequant_row(t->type, t->data + (size_t)r * rb, dst + r * cols, cols);
}

/* ---- fingerprint ------------------------------------------------------- */

int egm_gguf_fingerprint(const char *path, int with_weights, char out[40], egm_err *e) {
    egm_gguf *g;
    if (egm_gguf_open(path, &g, e)) return -1;
    uint64_t hc = egm_fnv1a(EGM_FNV_OFFSET, g->map, g->meta_end), hw = 0;
    if (with_weights) {
        uint64_t size = g->size;
        hw = egm_fnv1a(EGM_FNV_OFFSET, &size, sizeof size);
        hw = egm_fnv1a(hw, g->map + g->meta_end, g->info_end - g->meta_end);
    }
    snprintf(out, 40, "%016llx-%016llx", (unsigned long long)hc, (unsigned long long)hw);
    egm_gguf_close(g);
    return 0;
}
