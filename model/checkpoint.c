/* checkpoint.c - safetensors files mapped read-only, headers fully checked.
 *
 * A safetensors file is: u64 little-endian N, N bytes of JSON header, data.
 * The header maps tensor name -> {dtype, shape, data_offsets [begin, end)},
 * offsets relative to the start of the data section; "__metadata__" is a
 * free-form string map we skip. All tensors of all files are kept in one
 * array sorted by name, so lookup is a binary search. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *path;
    const uint8_t *map;
    size_t size;
} ck_file;

struct egm_ckpt {
    char *origin;          /* the directory, or the file for open_file */
    ck_file *files;
    int n_files, cap_files;
    egm_tensor *t;         /* sorted by name once open */
    int n, cap;
};

size_t egm_dtype_size(egm_dtype t) { return t == EGM_DT_F32 ? 4 : 2; }

const char *egm_dtype_name(egm_dtype t) {
    switch (t) {
    case EGM_DT_F32: return "F32";
    case EGM_DT_BF16: return "BF16";
    case EGM_DT_F16: return "F16";
    }
    return "?";
}

/* IEEE half -> float, exact for every input (subnormals, inf, NaN). */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        float f = (float)man * (1.0f / 16777216.0f); /* man * 2^-24, exact */
        return sign ? -f : f;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13); /* rebias 15 -> 127 */
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void egm_to_f32(float *dst, const void *src, egm_dtype t, size_t n) {
    const uint8_t *s = src;
    if (t == EGM_DT_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2); /* src may be unaligned */
        if (t == EGM_DT_BF16) {
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        } else {
            dst[i] = f16_to_f32(h);
        }
    }
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const egm_tensor *)a)->name, ((const egm_tensor *)b)->name);
}

static int by_begin(const void *a, const void *b) {
    const uint8_t *x = ((const egm_tensor *)a)->data, *y = ((const egm_tensor *)b)->data;
    return x < y ? -1 : x > y;
}

/* A non-negative JSON integer, or -1. */
static long long nonneg(const json_t *v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    return json_integer_value(v);
}

/* One header entry -> tensor appended to ck->t. */
static int parse_entry(egm_ckpt *ck, const ck_file *f, const char *name, json_t *v,
                       const uint8_t *data, size_t data_len, egm_err *e) {
    const char *p = f->path;
    if (!json_is_object(v))
        return egm_fail(e, "%s: tensor \"%s\": expected an object in the header", p, name);
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_string(dt))
        return egm_fail(e, "%s: tensor \"%s\": expected a string \"dtype\"", p, name);
    if (!json_is_array(sh))
        return egm_fail(e, "%s: tensor \"%s\": expected an array \"shape\"", p, name);
    if (!json_is_array(off) || json_array_size(off) != 2)
        return egm_fail(e, "%s: tensor \"%s\": expected \"data_offsets\" [begin, end]", p, name);

    egm_tensor t = {0};
    const char *d = json_string_value(dt);
    if (!strcmp(d, "F32")) t.dtype = EGM_DT_F32;
    else if (!strcmp(d, "BF16")) t.dtype = EGM_DT_BF16;
    else if (!strcmp(d, "F16")) t.dtype = EGM_DT_F16;
    else
        return egm_fail(e, "%s: tensor \"%s\": expected dtype F32, BF16 or F16, found \"%s\"",
                        p, name, d);

    size_t nd = json_array_size(sh);
    if (nd > EGM_MAX_DIMS)
        return egm_fail(e, "%s: tensor \"%s\": expected at most %d dimensions, found %zu", p,
                        name, EGM_MAX_DIMS, nd);
    t.ndim = (int)nd;
    /* numel * itemsize; ~0 marks an overflow (such a tensor cannot fit in
     * the file anyway). */
    unsigned long long bytes = egm_dtype_size(t.dtype);
    for (size_t i = 0; i < nd; i++) {
        long long s = nonneg(json_array_get(sh, i));
        if (s < 0)
            return egm_fail(e, "%s: tensor \"%s\": shape[%zu]: expected a non-negative integer",
                            p, name, i);
        t.shape[i] = s;
        if (bytes != ~0ull && __builtin_mul_overflow(bytes, (unsigned long long)s, &bytes))
            bytes = ~0ull; /* stays "too many" unless a later 0 makes it empty */
        if (s == 0) bytes = 0;
    }
    long long b = nonneg(json_array_get(off, 0)), en = nonneg(json_array_get(off, 1));
    if (b < 0 || en < 0 || b > en)
        return egm_fail(e, "%s: tensor \"%s\": expected data_offsets [begin, end] with "
                        "0 <= begin <= end", p, name);
    if ((unsigned long long)en > data_len)
        return egm_fail(e, "%s: tensor \"%s\": data_offsets [%lld, %lld] past the end of the "
                        "data section (%zu bytes)", p, name, b, en, data_len);
    if (bytes != (unsigned long long)(en - b)) {
        char sbuf[160];
        int k = 0;
        for (int i = 0; i < t.ndim && k < (int)sizeof sbuf - 24; i++)
            k += snprintf(sbuf + k, sizeof sbuf - k, "%s%lld", i ? ", " : "", (long long)t.shape[i]);
        sbuf[k] = 0;
        if (bytes == ~0ull)
            return egm_fail(e, "%s: tensor \"%s\": shape [%s] of %s needs more than 2^64 "
                            "bytes, data_offsets give %lld", p, name, sbuf, d, en - b);
        return egm_fail(e, "%s: tensor \"%s\": shape [%s] of %s needs %llu bytes, "
                        "data_offsets give %lld", p, name, sbuf, d, bytes, en - b);
    }
    if (ck->n == ck->cap) {
        int cap = ck->cap ? ck->cap * 2 : 64;
        egm_tensor *nt = realloc(ck->t, (size_t)cap * sizeof *nt);
        if (!nt) return egm_fail(e, "%s: out of memory", p);
        ck->t = nt;
        ck->cap = cap;
    }
    t.name = strdup(name);
    if (!t.name) return egm_fail(e, "%s: out of memory", p);
    t.data = data + b;
    t.nbytes = (size_t)(en - b);
    t.file = f->path;
    ck->t[ck->n++] = t;
    return 0;
}

/* Maps `path`, validates its header and appends its tensors. */
static int add_file(egm_ckpt *ck, const char *path, egm_err *e) {
    if (ck->n_files == ck->cap_files) {
        int cap = ck->cap_files ? ck->cap_files * 2 : 4;
        ck_file *nf = realloc(ck->files, (size_t)cap * sizeof *nf);
        if (!nf) return egm_fail(e, "%s: out of memory", path);
        ck->files = nf;
        ck->cap_files = cap;
    }
    ck_file *f = &ck->files[ck->n_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return egm_fail(e, "%s: out of memory", path);
    ck->n_files++; /* from here on close() releases it */

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return egm_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return egm_fail(e, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return egm_fail(e, "%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return egm_fail(e, "%s: file is %lld bytes, expected at least 8 (the header length)",
                        path, (long long)st.st_size);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return egm_fail(e, "%s: cannot mmap: %s", path, strerror(errno));
    f->map = m;
    f->size = (size_t)st.st_size;

    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i];
    if (hlen > f->size - 8)
        return egm_fail(e, "%s: header length %llu runs past the end of the file (%zu bytes)",
                        path, (unsigned long long)hlen, f->size);
    json_error_t je;
    json_t *h = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!h)
        return egm_fail(e, "%s: header is not valid JSON (byte %d): %s", path, je.position,
                        je.text);
    if (!json_is_object(h)) {
        json_decref(h);
        return egm_fail(e, "%s: header: expected a JSON object", path);
    }
    const uint8_t *data = f->map + 8 + hlen;
    size_t data_len = f->size - 8 - (size_t)hlen;
    int first = ck->n, rc = 0;
    const char *key;
    json_t *v;
    json_object_foreach(h, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        if ((rc = parse_entry(ck, f, key, v, data, data_len, e))) break;
    }
    json_decref(h);
    if (rc) return rc;

    /* No two tensors of this file may share bytes. Empty ones share none.
     * A header may list no tensor at all (ck->t is then still NULL). */
    if (ck->n == first) return 0;
    qsort(ck->t + first, (size_t)(ck->n - first), sizeof *ck->t, by_begin);
    const egm_tensor *prev = NULL;
    for (int i = first; i < ck->n; i++) {
        const egm_tensor *t = &ck->t[i];
        if (!t->nbytes) continue;
        if (prev && t->data < prev->data + prev->nbytes)
            return egm_fail(e, "%s: tensors \"%s\" [%td, %td) and \"%s\" [%td, %td) overlap",
                            path, prev->name, prev->data - data,
                            prev->data + prev->nbytes - data, t->name, t->data - data,
                            t->data + t->nbytes - data);
        prev = t;
    }
    return 0;
}

/* Sorts all tensors by name; a name found twice is an error. */
static int finish(egm_ckpt *ck, egm_err *e) {
    if (ck->n) qsort(ck->t, (size_t)ck->n, sizeof *ck->t, by_name);
    for (int i = 1; i < ck->n; i++)
        if (!strcmp(ck->t[i - 1].name, ck->t[i].name))
            return egm_fail(e, "%s: tensor \"%s\" appears twice (also in %s)", ck->t[i].file,
                            ck->t[i].name, ck->t[i - 1].file);
    return 0;
}

static egm_ckpt *ck_new(const char *origin) {
    egm_ckpt *ck = calloc(1, sizeof *ck);
    if (ck && !(ck->origin = strdup(origin))) {
        free(ck);
        ck = NULL;
    }
    return ck;
}

int egm_ckpt_open_file(const char *path, egm_ckpt **out, egm_err *e) {
    *out = NULL;
    egm_ckpt *ck = ck_new(path);
    if (!ck) return egm_fail(e, "%s: out of memory", path);
    if (add_file(ck, path, e) || finish(ck, e)) {
        egm_ckpt_close(ck);
        return -1;
    }
    *out = ck;
    return 0;
}

/* model.safetensors.index.json: {"weight_map": {tensor: shard file}}. */
static int open_sharded(egm_ckpt *ck, const char *dir, const char *ipath, egm_err *e) {
    json_error_t je;
    json_t *root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return egm_fail(e, "%s: line %d column %d: %s", ipath, je.line, je.column, je.text);
    int rc = 0;
    json_t *wm = json_object_get(root, "weight_map");
    const char **shards = NULL;
    int n_shards = 0;
    char path[4096];
    const char *key;
    json_t *v;
    if (!json_is_object(wm)) {
        rc = egm_fail(e, "%s: key \"weight_map\": expected an object {tensor: shard file}", ipath);
        goto out;
    }
    shards = calloc(json_object_size(wm) + 1, sizeof *shards);
    if (!shards) {
        rc = egm_fail(e, "%s: out of memory", ipath);
        goto out;
    }
    /* Open each distinct shard once. A shard is a plain file name in dir. */
    json_object_foreach(wm, key, v) {
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (!s || !*s || strchr(s, '/') || !strcmp(s, "..") || !strcmp(s, ".")) {
            rc = egm_fail(e, "%s: weight_map[\"%s\"]: expected a shard file name in the "
                          "model directory", ipath, key);
            goto out;
        }
        int seen = 0;
        for (int i = 0; i < n_shards && !seen; i++) seen = !strcmp(shards[i], s);
        if (seen) continue;
        shards[n_shards++] = s;
        snprintf(path, sizeof path, "%s/%s", dir, s);
        if (add_file(ck, path, e)) {
            rc = egm_wrap(e, "%s: shard \"%s\" (for tensor \"%s\")", ipath, s, key);
            goto out;
        }
    }
    if ((rc = finish(ck, e))) goto out;
    /* Every tensor the map names must be in the shard it names. */
    json_object_foreach(wm, key, v) {
        const egm_tensor *t = egm_ckpt_get(ck, key);
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(v));
        if (!t) {
            rc = egm_fail(e, "%s: weight_map names tensor \"%s\" in %s, which has no such tensor",
                          ipath, key, path);
            goto out;
        }
        if (strcmp(t->file, path)) {
            rc = egm_fail(e, "%s: weight_map puts tensor \"%s\" in %s, but it is in %s", ipath,
                          key, path, t->file);
            goto out;
        }
    }
out:
    free(shards);
    json_decref(root);
    return rc;
}

int egm_ckpt_open(const char *dir, egm_ckpt **out, egm_err *e) {
    *out = NULL;
    char single[4096], index[4096];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    /* Like transformers, a single file wins over an index. */
    if (access(single, F_OK) == 0) {
        if (egm_ckpt_open_file(single, out, e)) return -1;
        free((*out)->origin);
        if (!((*out)->origin = strdup(dir))) {
            egm_ckpt_close(*out);
            *out = NULL;
            return egm_fail(e, "%s: out of memory", dir);
        }
        return 0;
    }
    if (access(index, F_OK) != 0)
        return egm_fail(e, "%s: no model.safetensors or model.safetensors.index.json", dir);
    egm_ckpt *ck = ck_new(dir);
    if (!ck) return egm_fail(e, "%s: out of memory", dir);
    if (open_sharded(ck, dir, index, e)) {
        egm_ckpt_close(ck);
        return -1;
    }
    *out = ck;
    return 0;
}

void egm_ckpt_close(egm_ckpt *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n; i++) free((char *)ck->t[i].name);
    for (int i = 0; i < ck->n_files; i++) {
        if (ck->files[i].map) munmap((void *)ck->files[i].map, ck->files[i].size);
        free(ck->files[i].path);
    }
    free(ck->t);
    free(ck->files);
    free(ck->origin);
    free(ck);
}

const egm_tensor *egm_ckpt_get(const egm_ckpt *ck, const char *name) {
    egm_tensor key = {.name = name};
    if (!ck->n) return NULL;
    return bsearch(&key, ck->t, (size_t)ck->n, sizeof *ck->t, by_name);
}

int egm_ckpt_count(const egm_ckpt *ck) { return ck->n; }

const egm_tensor *egm_ckpt_at(const egm_ckpt *ck, int i) {
    return i >= 0 && i < ck->n ? &ck->t[i] : NULL;
}

const char *egm_ckpt_origin(const egm_ckpt *ck) { return ck->origin; }
