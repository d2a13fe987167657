/* tokenizer_impl.h - the tokenizer's insides, shared by its files (not an
 * API: include model/tokenizer.h).
 *
 * The struct, and the small helpers that more than one of loading
 * (tokenizer_load.c), encoding (tokenizer_encode.c) and decoding
 * (tokenizer_decode.c) use. The helpers are static inline, not exported:
 * they are tiny and sit in the encoder's and decoder's inner loops, where a
 * call into another object file would cost, and none of their short names
 * ends up in libegmla.a.
 *
 * A loaded tokenizer is read-only: encode and decode keep their scratch per
 * call (including a word -> ids cache), so threads may share one. */
#ifndef EGM_TOKENIZER_IMPL_H
#define EGM_TOKENIZER_IMPL_H

#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"

typedef unsigned char u8;

#define MAX_ID (1 << 24) /* ids index arrays: refuse absurd ones */

/* ------------------------------------------------------------------------ */
/* Small utilities                                                           */

/* Grows the array whose pointer is at pp to hold at least need elements.
 * Returns 1, or 0 when out of memory (the old block is left alone). */
static inline int grow(void *pp, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    void *p;
    memcpy(&p, pp, sizeof p);
    void *q = realloc(p, nc * elem);
    if (!q) return 0;
    memcpy(pp, &q, sizeof q);
    *cap = nc;
    return 1;
}
#define RESERVE(arr, cap, need) grow(&(arr), &(cap), (need), sizeof *(arr))

/* UTF-8: classify the sequence at p. Returns 1 for a complete valid
 * character, 0 for a valid but truncated prefix (needs more bytes), -1 for an
 * invalid maximal subpart; *len is the bytes it covers. */
static inline int utf8_seq(const u8 *p, size_t n, int *len) {
    u8 c = p[0], lo = 0x80, hi = 0xBF;
    int need;
    if (c < 0x80) { *len = 1; return 1; }
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) need = 2, lo = 0xA0;
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
    else if (c == 0xED) need = 2, hi = 0x9F;
    else if (c == 0xF0) need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) need = 3, hi = 0x8F;
    else { *len = 1; return -1; }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) { *len = k; return 0; }
        u8 b = p[k];
        int ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
        if (!ok) { *len = k; return -1; }
    }
    *len = need + 1;
    return 1;
}

/* Offset of the first invalid byte, or -1 if s is valid UTF-8. */
static inline long utf8_invalid_at(const u8 *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int len;
        if (utf8_seq(s + i, n - i, &len) != 1) return (long)i;
        i += len;
    }
    return -1;
}

static inline int utf8_put(u8 *out, uint32_t cp) {
    if (cp < 0x80) { out[0] = cp; return 1; }
    if (cp < 0x800) { out[0] = 0xC0 | cp >> 6; out[1] = 0x80 | (cp & 63); return 2; }
    if (cp < 0x10000) {
        out[0] = 0xE0 | cp >> 12; out[1] = 0x80 | (cp >> 6 & 63);
        out[2] = 0x80 | (cp & 63); return 3;
    }
    out[0] = 0xF0 | cp >> 18; out[1] = 0x80 | (cp >> 12 & 63);
    out[2] = 0x80 | (cp >> 6 & 63); out[3] = 0x80 | (cp & 63); return 4;
}

/* ------------------------------------------------------------------------ */
/* Hash maps: token string -> id, and (left id, right id) -> merge            */
/* Open addressing in power-of-two tables kept under half full. Only the
 * lookups are here; tokenizer_load.c fills the maps. */

typedef struct { char *s; size_t len; int id; } str_ent;
typedef struct { str_ent *e; size_t cap, n; } strmap;

static inline str_ent *strmap_slot(const strmap *m, const char *s, size_t len) {
    size_t i = egm_fnv1a(EGM_FNV_OFFSET, s, len) & (m->cap - 1);
    for (;;) {
        str_ent *e = &m->e[i];
        if (!e->s || (e->len == len && memcmp(e->s, s, len) == 0)) return e;
        i = (i + 1) & (m->cap - 1);
    }
}

static inline int strmap_get(const strmap *m, const char *s, size_t len) {
    if (!m->e) return -1;
    str_ent *e = strmap_slot(m, s, len);
    return e->s ? e->id : -1;
}

typedef struct { uint64_t key; int rank, id; } pair_ent;
typedef struct { pair_ent *e; size_t cap; int shift; } pairmap;
#define PAIR_EMPTY UINT64_MAX

static inline uint64_t pair_key(int a, int b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static inline pair_ent *pairmap_slot(const pairmap *m, uint64_t k) {
    /* Fibonacci hashing: the top bits of the product depend on both ids */
    size_t i = (size_t)((k * 0x9E3779B97F4A7C15ull) >> m->shift);
    while (m->e[i].key != PAIR_EMPTY && m->e[i].key != k) i = (i + 1) & (m->cap - 1);
    return &m->e[i];
}

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                             */

enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREVIOUS, SPLIT_NEXT, SPLIT_CONTIGUOUS };
enum { STEP_SPLIT, STEP_PREFIX_SPACE };

typedef struct {
    int kind;
    pcre2_code *re;  /* STEP_SPLIT */
    int behavior, invert;
    int gpt2;        /* ByteLevel's own GPT-2 regex (llama.cpp's "gpt-2" pre) */
} pretok_step;

typedef struct {
    char *s;
    size_t len;
    int id, single_word, lstrip, rstrip, normalized, special;
} added_tok;

/* Added tokens of one pass, sorted by first byte then longest first, so the
 * first hit at a position is the longest one. */
typedef struct {
    int *idx;      /* into t->added */
    int n;
    int lo[257];   /* tokens starting with byte b: idx[lo[b] .. lo[b+1]) */
} added_pass;

struct egm_tokenizer {
    char *origin;
    int n_ids;                /* max id + 1 */
    char **tok;               /* id -> token string (added content wins), or NULL */
    u8 **bytes;               /* id -> decoded bytes */
    int *nbytes;
    u8 *special;              /* id -> 1 if a special added token */
    size_t max_bytes;         /* longest decoded token */
    strmap vocab, added_map;
    pairmap merges;
    uint32_t byte_char[256];  /* GPT-2 bytes_to_unicode */
    int char_byte[324];       /* its inverse; -1 for unused code points */
    int byte_id[256];         /* id of each byte's byte-level symbol, -1 if none */
    int unk_id, fuse_unk, ignore_merges;
    added_tok *added;
    int n_added;
    added_pass pass[2];       /* [0] normalized=false, [1] normalized=true */
    pcre2_code *word_re, *space_re; /* for single_word / lstrip / rstrip */
    pretok_step *steps;
    int n_steps;
    int *tpl;                 /* template ids, -1 stands for $A */
    int n_tpl, has_tpl;
    /* SentencePiece-style GGUF vocabularies (tokenizer_spm.c): merged by
     * score instead of by merge rank; byte_id holds the <0xNN> tokens */
    int spm, add_space_prefix;
    float *score;             /* id -> score */
};

/* tokenizer_spm.c: after the vocab is in, reads the scores and
 * add_space_prefix and fills byte_id and every id's decoded bytes. */
int egm_spm_setup(egm_tokenizer *t, const egm_gguf *g, const egm_gguf_kv *types, egm_err *e);
/* Appends the ids of the raw-text fragment s[0, n) to *ids (growable:
 * *nids used of *cap), with a leading "\u2581" if prefix. */
int egm_spm_encode(const egm_tokenizer *t, const u8 *s, size_t n, int prefix, int **ids,
                   size_t *nids, size_t *cap, egm_err *e);

#endif
