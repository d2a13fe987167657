/* gguf_write.c - GGUF writer (see gguf_write.h; the layout is in gguf.c). */
#include "gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 32

typedef struct {
    char *name;
    int type, ndim;
    int64_t ne[4];
    void *data;
    size_t nbytes;
} wtensor;

struct egm_gguf_writer {
    uint8_t *kv;          /* serialised key/values */
    size_t nkv, capkv;
    char **keys;          /* for the duplicate check */
    int n_keys, cap_keys;
    wtensor *t;
    int n_t, cap_t;
};

egm_gguf_writer *egm_gguf_writer_new(void) { return calloc(1, sizeof(egm_gguf_writer)); }

void egm_gguf_writer_free(egm_gguf_writer *w) {
    if (!w) return;
    free(w->kv);
    for (int i = 0; i < w->n_keys; i++) free(w->keys[i]);
    free(w->keys);
    for (int i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->t);
    free(w);
}

static int put(egm_gguf_writer *w, const void *p, size_t n) {
    if (w->nkv + n > w->capkv) {
        size_t cap = w->capkv ? w->capkv : 4096;
        while (cap < w->nkv + n) cap *= 2;
        uint8_t *q = realloc(w->kv, cap);
        if (!q) return -1;
        w->kv = q;
        w->capkv = cap;
    }
    if (n) memcpy(w->kv + w->nkv, p, n);
    w->nkv += n;
    return 0;
}

static int put_str(egm_gguf_writer *w, const char *s, uint64_t n) {
    return put(w, &n, 8) || put(w, s, (size_t)n);
}

static int put_u32(egm_gguf_writer *w, uint32_t v) { return put(w, &v, 4); }

/* Key name and value type; refuses a key already written. */
static int head(egm_gguf_writer *w, const char *key, uint32_t type, egm_err *e) {
    for (int i = 0; i < w->n_keys; i++)
        if (!strcmp(w->keys[i], key)) return egm_fail(e, "GGUF writer: duplicate key \"%s\"", key);
    if (w->n_keys == w->cap_keys) {
        int cap = w->cap_keys ? 2 * w->cap_keys : 64;
        char **k = realloc(w->keys, (size_t)cap * sizeof *k);
        if (!k) return egm_fail(e, "GGUF writer: out of memory");
        w->keys = k;
        w->cap_keys = cap;
    }
    if (!(w->keys[w->n_keys] = strdup(key))) return egm_fail(e, "GGUF writer: out of memory");
    w->n_keys++;
    if (put_str(w, key, strlen(key)) || put_u32(w, type))
        return egm_fail(e, "GGUF writer: out of memory");
    return 0;
}

static int scalar(egm_gguf_writer *w, const char *key, uint32_t type, const void *v, size_t n,
                  egm_err *e) {
    if (head(w, key, type, e)) return -1;
    return put(w, v, n) ? egm_fail(e, "GGUF writer: out of memory") : 0;
}

int egm_gguf_w_str(egm_gguf_writer *w, const char *key, const char *v, egm_err *e) {
    if (head(w, key, EGM_GGUF_STRING, e)) return -1;
    return put_str(w, v, strlen(v)) ? egm_fail(e, "GGUF writer: out of memory") : 0;
}

int egm_gguf_w_u32(egm_gguf_writer *w, const char *key, uint32_t v, egm_err *e) {
    return scalar(w, key, EGM_GGUF_U32, &v, 4, e);
}

int egm_gguf_w_i32(egm_gguf_writer *w, const char *key, int32_t v, egm_err *e) {
    return scalar(w, key, EGM_GGUF_I32, &v, 4, e);
}

int egm_gguf_w_f32(egm_gguf_writer *w, const char *key, float v, egm_err *e) {
    return scalar(w, key, EGM_GGUF_F32, &v, 4, e);
}

int egm_gguf_w_bool(egm_gguf_writer *w, const char *key, int v, egm_err *e) {
    uint8_t b = v != 0;
    return scalar(w, key, EGM_GGUF_BOOL, &b, 1, e);
}

int egm_gguf_w_arr_str(egm_gguf_writer *w, const char *key, const char *const *s,
                       const uint64_t *lens, uint64_t n, egm_err *e) {
    if (head(w, key, EGM_GGUF_ARRAY, e)) return -1;
    int rc = put_u32(w, EGM_GGUF_STRING) || put(w, &n, 8);
    for (uint64_t i = 0; i < n && !rc; i++) rc = put_str(w, s[i], lens ? lens[i] : strlen(s[i]));
    return rc ? egm_fail(e, "GGUF writer: out of memory") : 0;
}

static size_t elem_size(int t) {
    static const size_t s[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t >= 0 && t <= 12 ? s[t] : 0;
}

int egm_gguf_w_arr(egm_gguf_writer *w, const char *key, int elem_type, const void *v,
                   uint64_t n, egm_err *e) {
    size_t es = elem_size(elem_type);
    if (!es) return egm_fail(e, "GGUF writer: key \"%s\": bad element type %d", key, elem_type);
    if (head(w, key, EGM_GGUF_ARRAY, e)) return -1;
    if (put_u32(w, (uint32_t)elem_type) || put(w, &n, 8) || put(w, v, (size_t)n * es))
        return egm_fail(e, "GGUF writer: out of memory");
    return 0;
}

int egm_gguf_w_copy(egm_gguf_writer *w, const egm_gguf_kv *kv, egm_err *e) {
    if (kv->type == EGM_GGUF_STRING)
        return egm_gguf_w_arr_str(w, kv->key, kv->str, kv->len, 1, e) ? -1 : 0;
    if (kv->type == EGM_GGUF_ARRAY && kv->arr_type == EGM_GGUF_STRING)
        return egm_gguf_w_arr_str(w, kv->key, kv->str, kv->len, kv->n, e);
    if (kv->type == EGM_GGUF_ARRAY) return egm_gguf_w_arr(w, kv->key, kv->arr_type, kv->data, kv->n, e);
    return scalar(w, kv->key, (uint32_t)kv->type, kv->data, elem_size(kv->type), e);
}

int egm_gguf_w_tensor(egm_gguf_writer *w, const char *name, int type, int ndim,
                      const int64_t *ne, const void *data, size_t nbytes, egm_err *e) {
    for (int i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return egm_fail(e, "GGUF writer: duplicate tensor \"%s\"", name);
    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return egm_fail(e, "GGUF writer: out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return egm_fail(e, "GGUF writer: out of memory for tensor \"%s\"", name);
    }
    memcpy(t->data, data, nbytes);
    t->type = type;
    t->ndim = ndim;
    for (int d = 0; d < 4; d++) t->ne[d] = d < ndim ? ne[d] : 1;
    t->nbytes = nbytes;
    w->n_t++;
    return 0;
}

static size_t pad_to(size_t off) { return (ALIGN - off % ALIGN) % ALIGN; }

static int write_all(egm_gguf_writer *w, FILE *f) {
    static const uint8_t zero[ALIGN];
    uint32_t ver = 3;
    uint64_t nt = (uint64_t)w->n_t, nk = (uint64_t)w->n_keys;
    size_t off = 0;
#define W(p, n) do { if (fwrite((p), 1, (n), f) != (size_t)(n)) return -1; off += (n); } while (0)
    W("GGUF", 4);
    W(&ver, 4);
    W(&nt, 8);
    W(&nk, 8);
    W(w->kv, w->nkv);
    uint64_t data_off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        uint64_t len = strlen(t->name);
        uint32_t nd = (uint32_t)t->ndim, ty = (uint32_t)t->type;
        W(&len, 8);
        W(t->name, len);
        W(&nd, 4);
        W(t->ne, 8 * (size_t)t->ndim);
        W(&ty, 4);
        W(&data_off, 8);
        data_off += t->nbytes + pad_to(t->nbytes);
    }
    W(zero, pad_to(off));
    for (int i = 0; i < w->n_t; i++) {
        W(w->t[i].data, w->t[i].nbytes);
        W(zero, pad_to(w->t[i].nbytes));
    }
#undef W
    return 0;
}

int egm_gguf_w_write(egm_gguf_writer *w, const char *path, egm_err *e) {
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp) return egm_fail(e, "%s: out of memory", path);
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        egm_fail(e, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int rc = write_all(w, f);
    int err = rc ? errno : 0;
    if (fclose(f) && !rc) rc = -1, err = errno;
    if (!rc && rename(tmp, path)) rc = -1, err = errno;
    if (rc) {
        egm_fail(e, "%s: write failed: %s", path, strerror(err));
        remove(tmp);
    }
    free(tmp);
    return rc;
}
