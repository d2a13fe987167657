/* tokenizer.c - Hugging Face tokenizer.json, byte-level BPE (see tokenizer.h).
 *
 * Encoding follows the tokenizers library step by step:
 *   1. added tokens are cut out of the text first (leftmost-longest match;
 *      tokens with normalized=false in a first pass, the others in a second
 *      pass over what is left, as HF does), honouring single_word, lstrip and
 *      rstrip;
 *   2. each remaining chunk goes through the pre-tokenizer steps: Split
 *      (PCRE2 regex, HF split behaviours, invert), Digits, and ByteLevel
 *      (optional prefix space, optional GPT-2 regex) which must come last;
 *   3. each piece's bytes become the byte-level symbols (GPT-2's
 *      bytes_to_unicode) and are merged by rank with a min-heap, exactly the
 *      order HF's word.rs uses (lowest rank, then leftmost);
 *   4. a TemplateProcessing post-processor adds its special tokens when asked.
 * Decoding maps each token back through the inverse byte table, and turns
 * invalid UTF-8 into U+FFFD per maximal invalid subpart (Rust's
 * from_utf8_lossy, which HF uses).
 *
 * A loaded tokenizer is read-only: encode and decode keep their scratch per
 * call (including a word -> ids cache), so threads may share one.
 *
 * HF runs its regexes with Oniguruma, we with PCRE2 (UTF + UCP); the two
 * agree on the GPT-2 / Llama-3 patterns (\p{L}, \p{N}, \s, (?i:...),
 * lookahead), checked against HF on the fixtures and on random text.
 *
 * Not implemented (refused at load with the field named): normalizers, BPE
 * dropout, continuing_subword_prefix / end_of_word_suffix, byte_fallback,
 * pre-tokenizers other than ByteLevel / Split / Digits / Sequence, decoders
 * other than ByteLevel, post-processors other than TemplateProcessing /
 * ByteLevel / Sequence. truncation and padding are ignored: encode never
 * truncates. */
#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned char u8;

#define MAX_ID (1 << 24) /* ids index arrays: refuse absurd ones */

/* ------------------------------------------------------------------------ */
/* Small utilities                                                           */

/* Grows the array whose pointer is at pp to hold at least need elements.
 * Returns 1, or 0 when out of memory (the old block is left alone). */
static int grow(void *pp, size_t *cap, size_t need, size_t elem) {
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

static uint64_t fnv1a(const void *p, size_t n) {
    const u8 *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

/* UTF-8: classify the sequence at p. Returns 1 for a complete valid
 * character, 0 for a valid but truncated prefix (needs more bytes), -1 for an
 * invalid maximal subpart; *len is the bytes it covers. */
static int utf8_seq(const u8 *p, size_t n, int *len) {
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
static long utf8_invalid_at(const u8 *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int len;
        if (utf8_seq(s + i, n - i, &len) != 1) return (long)i;
        i += len;
    }
    return -1;
}

static int utf8_put(u8 *out, uint32_t cp) {
    if (cp < 0x80) { out[0] = cp; return 1; }
    if (cp < 0x800) { out[0] = 0xC0 | cp >> 6; out[1] = 0x80 | (cp & 63); return 2; }
    if (cp < 0x10000) {
        out[0] = 0xE0 | cp >> 12; out[1] = 0x80 | (cp >> 6 & 63);
        out[2] = 0x80 | (cp & 63); return 3;
    }
    out[0] = 0xF0 | cp >> 18; out[1] = 0x80 | (cp >> 12 & 63);
    out[2] = 0x80 | (cp >> 6 & 63); out[3] = 0x80 | (cp & 63); return 4;
}

/* Decodes the (valid) character at p; *len gets its length. */
static uint32_t utf8_get(const u8 *p, int *len) {
    if (p[0] < 0x80) { *len = 1; return p[0]; }
    if (p[0] < 0xE0) { *len = 2; return (p[0] & 31u) << 6 | (p[1] & 63u); }
    if (p[0] < 0xF0) {
        *len = 3; return (p[0] & 15u) << 12 | (p[1] & 63u) << 6 | (p[2] & 63u);
    }
    *len = 4;
    return (p[0] & 7u) << 18 | (p[1] & 63u) << 12 | (p[2] & 63u) << 6 | (p[3] & 63u);
}

/* ------------------------------------------------------------------------ */
/* Hash maps: token string -> id, and (left id, right id) -> merge            */

typedef struct { char *s; size_t len; int id; } str_ent;
typedef struct { str_ent *e; size_t cap, n; } strmap;

static str_ent *strmap_slot(const strmap *m, const char *s, size_t len) {
    size_t i = fnv1a(s, len) & (m->cap - 1);
    for (;;) {
        str_ent *e = &m->e[i];
        if (!e->s || (e->len == len && memcmp(e->s, s, len) == 0)) return e;
        i = (i + 1) & (m->cap - 1);
    }
}

static int strmap_init(strmap *m, size_t n) {
    m->cap = 16;
    while (m->cap < 2 * n + 2) m->cap *= 2;
    m->n = 0;
    m->e = calloc(m->cap, sizeof *m->e);
    return m->e ? 0 : -1;
}

static int strmap_get(const strmap *m, const char *s, size_t len) {
    if (!m->e) return -1;
    str_ent *e = strmap_slot(m, s, len);
    return e->s ? e->id : -1;
}

/* Inserts or overwrites; the map owns a copy of the key. */
static int strmap_put(strmap *m, const char *s, size_t len, int id) {
    str_ent *e = strmap_slot(m, s, len);
    if (e->s) { e->id = id; return 0; }
    if (2 * (m->n + 1) > m->cap) return -1; /* sized up front by the caller */
    e->s = malloc(len + 1);
    if (!e->s) return -1;
    memcpy(e->s, s, len);
    e->s[len] = 0;
    e->len = len;
    e->id = id;
    m->n++;
    return 0;
}

static void strmap_free(strmap *m) {
    for (size_t i = 0; m->e && i < m->cap; i++) free(m->e[i].s);
    free(m->e);
}

typedef struct { uint64_t key; int rank, id; } pair_ent;
typedef struct { pair_ent *e; size_t cap; int shift; } pairmap;
#define PAIR_EMPTY UINT64_MAX

static uint64_t pair_key(int a, int b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static pair_ent *pairmap_slot(const pairmap *m, uint64_t k) {
    /* Fibonacci hashing: the top bits of the product depend on both ids */
    size_t i = (size_t)((k * 0x9E3779B97F4A7C15ull) >> m->shift);
    while (m->e[i].key != PAIR_EMPTY && m->e[i].key != k) i = (i + 1) & (m->cap - 1);
    return &m->e[i];
}

static const pair_ent *pairmap_get(const pairmap *m, int a, int b) {
    if (!m->cap) return NULL;
    const pair_ent *e = pairmap_slot(m, pair_key(a, b));
    return e->key == PAIR_EMPTY ? NULL : e;
}

/* ------------------------------------------------------------------------ */
/* The tokenizer                                                             */

enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_PREVIOUS, SPLIT_NEXT, SPLIT_CONTIGUOUS };
enum { STEP_SPLIT, STEP_PREFIX_SPACE };

typedef struct {
    int kind;
    pcre2_code *re;  /* STEP_SPLIT */
    int behavior, invert;
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
};

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * others (control, space, ...) to 256 + n in byte order. */
static void byte_tables(egm_tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 324; i++) t->char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        t->byte_char[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        t->char_byte[t->byte_char[b]] = b;
    }
}

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

void egm_tok_free(egm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_ids && t->tok; i++) free(t->tok[i]);
    for (int i = 0; i < t->n_ids && t->bytes; i++) free(t->bytes[i]);
    free(t->tok);
    free(t->bytes);
    free(t->nbytes);
    free(t->special);
    strmap_free(&t->vocab);
    strmap_free(&t->added_map);
    free(t->merges.e);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].s);
    free(t->added);
    for (int p = 0; p < 2; p++) free(t->pass[p].idx);
    pcre2_code_free(t->word_re);
    pcre2_code_free(t->space_re);
    for (int i = 0; i < t->n_steps; i++) pcre2_code_free(t->steps[i].re);
    free(t->steps);
    free(t->tpl);
    free(t->origin);
    free(t);
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* Boolean field with a default; -1 (with a message) if present but not a
 * boolean. */
static int get_bool(const egm_tokenizer *t, const json_t *obj, const char *where,
                    const char *key, int dflt, int *out, egm_err *e) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) { *out = dflt; return 0; }
    if (!json_is_boolean(v))
        return egm_fail(e, "%s: %s.%s: expected a boolean, found %s", t->origin,
                        where, key, json_kind(v));
    *out = json_is_true(v);
    return 0;
}

static const char *get_type(const json_t *obj) {
    return json_string_value(json_object_get(obj, "type"));
}

static pcre2_code *compile_re(const egm_tokenizer *t, const char *pat, size_t len,
                              uint32_t extra, const char *where, egm_err *e) {
    int code;
    PCRE2_SIZE off;
    /* PCRE2_LITERAL allows UTF but not UCP (which only affects classes) */
    uint32_t opts = PCRE2_UTF | extra | (extra & PCRE2_LITERAL ? 0 : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        egm_fail(e, "%s: %s: bad regex at offset %zu: %s", t->origin, where,
                 (size_t)off, (const char *)msg);
        return NULL;
    }
    /* interpreter if JIT is absent; EGMLA_NO_JIT=1 forces it (valgrind
     * cannot see into JIT code and reports its word-sized reads of the
     * subject as uses of uninitialised bytes) */
    if (!getenv("EGMLA_NO_JIT")) pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static int add_step(egm_tokenizer *t, pretok_step s, egm_err *e) {
    pretok_step *n = realloc(t->steps, (t->n_steps + 1) * sizeof *n);
    if (!n) {
        pcre2_code_free(s.re);
        return egm_fail(e, "%s: out of memory", t->origin);
    }
    t->steps = n;
    t->steps[t->n_steps++] = s;
    return 0;
}

/* Appends the steps of one pre-tokenizer (recursing into Sequence). *bytelevel
 * counts ByteLevel steps seen; nothing may follow the ByteLevel one. */
static int parse_pretok(egm_tokenizer *t, const json_t *p, const char *where,
                        int *bytelevel, egm_err *e) {
    const char *type = get_type(p);
    if (!json_is_object(p) || !type)
        return egm_fail(e, "%s: %s: expected an object with a \"type\"", t->origin, where);
    if (*bytelevel)
        return egm_fail(e, "%s: %s: \"%s\" after ByteLevel is not supported (ByteLevel must "
                        "be the last pre-tokenizer)", t->origin, where, type);
    char sub[256];
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return egm_fail(e, "%s: %s.pretokenizers: expected an array", t->origin, where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
            if (parse_pretok(t, json_array_get(list, i), sub, bytelevel, e)) return -1;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        int prefix = 0, use_regex = 0;
        if (get_bool(t, p, where, "add_prefix_space", 1, &prefix, e) ||
            get_bool(t, p, where, "use_regex", 1, &use_regex, e))
            return -1;
        *bytelevel = 1;
        if (prefix && add_step(t, (pretok_step){.kind = STEP_PREFIX_SPACE}, e)) return -1;
        if (use_regex) {
            snprintf(sub, sizeof sub, "%s (GPT-2 regex)", where);
            pcre2_code *re = compile_re(t, GPT2_PATTERN, PCRE2_ZERO_TERMINATED, 0, sub, e);
            if (!re) return -1;
            return add_step(t, (pretok_step){STEP_SPLIT, re, SPLIT_ISOLATED, 0}, e);
        }
        return 0;
    }
    if (!strcmp(type, "Digits")) {
        int individual = 0;
        if (get_bool(t, p, where, "individual_digits", 0, &individual, e)) return -1;
        /* HF isolates each numeric char, or merges runs of them (Contiguous);
         * both are an Isolated split on \p{N} or \p{N}+. */
        pcre2_code *re = compile_re(t, individual ? "\\p{N}" : "\\p{N}+",
                                    PCRE2_ZERO_TERMINATED, 0, where, e);
        if (!re) return -1;
        return add_step(t, (pretok_step){STEP_SPLIT, re, SPLIT_ISOLATED, 0}, e);
    }
    if (!strcmp(type, "Split")) {
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                      "MergedWithNext", "Contiguous"};
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        int b = -1;
        for (int i = 0; beh && i < 5; i++)
            if (!strcmp(beh, names[i])) b = i;
        if (b < 0)
            return egm_fail(e, "%s: %s.behavior: expected one of Removed, Isolated, "
                            "MergedWithPrevious, MergedWithNext, Contiguous, found %s%s%s",
                            t->origin, where, beh ? "\"" : "", beh ? beh : "nothing",
                            beh ? "\"" : "");
        int invert = 0;
        if (get_bool(t, p, where, "invert", 0, &invert, e)) return -1;
        const json_t *pat = json_object_get(p, "pattern");
        const json_t *rx = json_object_get(pat, "Regex");
        const json_t *lit = json_object_get(pat, "String");
        pcre2_code *re;
        if (json_is_string(rx)) {
            snprintf(sub, sizeof sub, "%s.pattern.Regex", where);
            re = compile_re(t, json_string_value(rx), json_string_length(rx), 0, sub, e);
        } else if (json_is_string(lit) && json_string_length(lit) > 0) {
            snprintf(sub, sizeof sub, "%s.pattern.String", where);
            re = compile_re(t, json_string_value(lit), json_string_length(lit),
                            PCRE2_LITERAL, sub, e);
        } else {
            return egm_fail(e, "%s: %s.pattern: expected {\"Regex\": ...} or a non-empty "
                            "{\"String\": ...}", t->origin, where);
        }
        if (!re) return -1;
        return add_step(t, (pretok_step){STEP_SPLIT, re, b, invert}, e);
    }
    return egm_fail(e, "%s: %s: pre-tokenizer type \"%s\" is not supported (expected "
                    "ByteLevel, Split, Digits or Sequence)", t->origin, where, type);
}

/* Sets the id -> string slot (replacing a previous one). */
static int set_tok(egm_tokenizer *t, int id, const char *s, size_t len) {
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = 0;
    free(t->tok[id]);
    t->tok[id] = c;
    return 0;
}

static int parse_model(egm_tokenizer *t, const json_t *m, egm_err *e) {
    if (!json_is_object(m))
        return egm_fail(e, "%s: model: missing (expected an object)", t->origin);
    const json_t *type = json_object_get(m, "type");
    if (type && !json_is_null(type) &&
        !(json_is_string(type) && !strcmp(json_string_value(type), "BPE")))
        return egm_fail(e, "%s: model.type: expected \"BPE\", found %s%s%s", t->origin,
                        json_is_string(type) ? "\"" : "",
                        json_is_string(type) ? json_string_value(type) : json_kind(type),
                        json_is_string(type) ? "\"" : "");
    const json_t *v = json_object_get(m, "dropout");
    if (v && !json_is_null(v) && !(json_is_number(v) && json_number_value(v) == 0))
        return egm_fail(e, "%s: model.dropout: BPE dropout is not supported (expected null)",
                        t->origin);
    const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(m, keys[i]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return egm_fail(e, "%s: model.%s: not supported with byte-level BPE (expected "
                            "null)", t->origin, keys[i]);
    }
    int byte_fallback = 0;
    if (get_bool(t, m, "model", "fuse_unk", 0, &t->fuse_unk, e) ||
        get_bool(t, m, "model", "ignore_merges", 0, &t->ignore_merges, e) ||
        get_bool(t, m, "model", "byte_fallback", 0, &byte_fallback, e))
        return -1;
    if (byte_fallback)
        return egm_fail(e, "%s: model.byte_fallback: not supported with byte-level BPE "
                        "(expected false)", t->origin);

    const json_t *vocab = json_object_get(m, "vocab");
    if (!json_is_object(vocab))
        return egm_fail(e, "%s: model.vocab: %s (expected an object of token -> id)",
                        t->origin, vocab ? "wrong type" : "missing");
    const char *k;
    const json_t *val;
    json_object_foreach((json_t *)vocab, k, val) {
        if (!json_is_integer(val))
            return egm_fail(e, "%s: model.vocab[\"%s\"]: expected an integer id, found %s",
                            t->origin, k, json_kind(val));
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= MAX_ID)
            return egm_fail(e, "%s: model.vocab[\"%s\"]: id %lld is out of range [0, %d)",
                            t->origin, k, (long long)id, MAX_ID);
        if (id >= t->n_ids) t->n_ids = (int)id + 1;
    }
    return 0;
}

/* Fills vocab maps and merges once n_ids is known. */

/* An empty merge table with room for nm merges at under half load. */
static int merges_alloc(egm_tokenizer *t, size_t nm, egm_err *e) {
    t->merges.cap = 16;
    t->merges.shift = 60;
    while (t->merges.cap < 2 * nm + 2) t->merges.cap *= 2, t->merges.shift--;
    t->merges.e = malloc(t->merges.cap * sizeof *t->merges.e);
    if (!t->merges.e) return egm_fail(e, "%s: out of memory", t->origin);
    for (size_t i = 0; i < t->merges.cap; i++) t->merges.e[i].key = PAIR_EMPTY;
    return 0;
}
static int fill_model(egm_tokenizer *t, const json_t *m, egm_err *e) {
    const json_t *vocab = json_object_get(m, "vocab");
    if (strmap_init(&t->vocab, json_object_size(vocab)))
        return egm_fail(e, "%s: out of memory", t->origin);
    const char *k;
    const json_t *val;
    json_object_foreach((json_t *)vocab, k, val) {
        int id = (int)json_integer_value(val);
        size_t len = strlen(k);
        if (t->tok[id])
            return egm_fail(e, "%s: model.vocab[\"%s\"]: id %d is also used by \"%s\"",
                            t->origin, k, id, t->tok[id]);
        if (strmap_put(&t->vocab, k, len, id) || set_tok(t, id, k, len))
            return egm_fail(e, "%s: out of memory", t->origin);
    }
    for (int b = 0; b < 256; b++) {
        u8 s[4];
        int n = utf8_put(s, t->byte_char[b]);
        t->byte_id[b] = strmap_get(&t->vocab, (const char *)s, n);
    }
    t->unk_id = -1;
    const json_t *unk = json_object_get(m, "unk_token");
    if (json_is_string(unk)) {
        t->unk_id = strmap_get(&t->vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0)
            return egm_fail(e, "%s: model.unk_token: \"%s\" is not in model.vocab", t->origin,
                            json_string_value(unk));
    }

    const json_t *merges = json_object_get(m, "merges");
    if (!json_is_array(merges))
        return egm_fail(e, "%s: model.merges: %s (expected an array of \"a b\" or [\"a\", \"b\"])",
                        t->origin, merges ? "wrong type" : "missing");
    size_t nm = json_array_size(merges);
    if (merges_alloc(t, nm, e)) return -1;

    char *buf = NULL;
    size_t cap = 0;
    for (size_t r = 0; r < nm; r++) {
        const json_t *mg = json_array_get(merges, r);
        const char *a, *b;
        size_t la, lb;
        if (json_is_string(mg)) {
            a = json_string_value(mg);
            const char *sp = strchr(a, ' ');
            if (!sp) {
                free(buf);
                return egm_fail(e, "%s: model.merges[%zu]: \"%s\": expected two tokens "
                                "separated by a space", t->origin, r, a);
            }
            la = sp - a;
            b = sp + 1;
            lb = strlen(b);
        } else if (json_is_array(mg) && json_array_size(mg) == 2 &&
                   json_is_string(json_array_get(mg, 0)) && json_is_string(json_array_get(mg, 1))) {
            a = json_string_value(json_array_get(mg, 0));
            la = json_string_length(json_array_get(mg, 0));
            b = json_string_value(json_array_get(mg, 1));
            lb = json_string_length(json_array_get(mg, 1));
        } else {
            free(buf);
            return egm_fail(e, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"], found %s",
                            t->origin, r, json_kind(mg));
        }
        int ia = strmap_get(&t->vocab, a, la), ib = strmap_get(&t->vocab, b, lb);
        if (ia < 0 || ib < 0) {
            int bad_a = ia < 0;
            egm_fail(e, "%s: model.merges[%zu]: token \"%.*s\" is not in model.vocab", t->origin,
                     r, (int)(bad_a ? la : lb), bad_a ? a : b);
            free(buf);
            return -1;
        }
        if (!RESERVE(buf, cap, la + lb + 1)) {
            free(buf);
            return egm_fail(e, "%s: out of memory", t->origin);
        }
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        int id = strmap_get(&t->vocab, buf, la + lb);
        if (id < 0) {
            egm_fail(e, "%s: model.merges[%zu]: merged token \"%.*s\" is not in model.vocab",
                     t->origin, r, (int)(la + lb), buf);
            free(buf);
            return -1;
        }
        /* A repeated pair keeps its last rank, as HF's HashMap collect does. */
        pair_ent *s = pairmap_slot(&t->merges, pair_key(ia, ib));
        *s = (pair_ent){pair_key(ia, ib), (int)r, id};
    }
    free(buf);
    return 0;
}

/* First pass of added_tokens: ids, to size the tables. */
static int scan_added(egm_tokenizer *t, const json_t *list, egm_err *e) {
    if (!list || json_is_null(list)) return 0;
    if (!json_is_array(list))
        return egm_fail(e, "%s: added_tokens: expected an array, found %s", t->origin,
                        json_kind(list));
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *a = json_array_get(list, i);
        const json_t *c = json_object_get(a, "content"), *id = json_object_get(a, "id");
        if (!json_is_string(c) || json_string_length(c) == 0)
            return egm_fail(e, "%s: added_tokens[%zu].content: expected a non-empty string",
                            t->origin, i);
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= MAX_ID)
            return egm_fail(e, "%s: added_tokens[%zu].id: expected an id in [0, %d)",
                            t->origin, i, MAX_ID);
        if (json_integer_value(id) >= t->n_ids) t->n_ids = (int)json_integer_value(id) + 1;
    }
    return 0;
}

static int cmp_added_tok(const void *x, const void *y, void *ctx) {
    const added_tok *A = ctx;
    const added_tok *a = &A[*(const int *)x], *b = &A[*(const int *)y];
    if ((u8)a->s[0] != (u8)b->s[0]) return (u8)a->s[0] - (u8)b->s[0];
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return *(const int *)x - *(const int *)y;
}

static int index_added(egm_tokenizer *t, egm_err *e);

static int fill_added(egm_tokenizer *t, const json_t *list, egm_err *e) {
    size_t n = json_array_size(list);
    if (strmap_init(&t->added_map, n)) return egm_fail(e, "%s: out of memory", t->origin);
    if (n == 0) return 0;
    t->added = calloc(n, sizeof *t->added);
    if (!t->added) return egm_fail(e, "%s: out of memory", t->origin);
    char where[64];
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(list, i);
        const json_t *c = json_object_get(a, "content");
        added_tok *d = &t->added[t->n_added];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        if (get_bool(t, a, where, "single_word", 0, &d->single_word, e) ||
            get_bool(t, a, where, "lstrip", 0, &d->lstrip, e) ||
            get_bool(t, a, where, "rstrip", 0, &d->rstrip, e) ||
            get_bool(t, a, where, "special", 0, &d->special, e) ||
            get_bool(t, a, where, "normalized", !d->special, &d->normalized, e))
            return -1;
        d->len = json_string_length(c);
        d->s = malloc(d->len + 1);
        if (!d->s) return egm_fail(e, "%s: out of memory", t->origin);
        memcpy(d->s, json_string_value(c), d->len + 1);
        t->n_added++;
        /* HF keeps the model's id for a token already in the vocab. */
        int id = strmap_get(&t->vocab, d->s, d->len);
        d->id = id >= 0 ? id : (int)json_integer_value(json_object_get(a, "id"));
        if (strmap_put(&t->added_map, d->s, d->len, d->id) || set_tok(t, d->id, d->s, d->len))
            return egm_fail(e, "%s: out of memory", t->origin);
        if (d->special) t->special[d->id] = 1;
    }
    return index_added(t, e);
}

/* Sorts the added tokens of each pass for split_added. */
static int index_added(egm_tokenizer *t, egm_err *e) {
    size_t n = (size_t)t->n_added;
    for (int p = 0; p < 2; p++) {
        added_pass *ps = &t->pass[p];
        ps->idx = malloc((n ? n : 1) * sizeof *ps->idx);
        if (!ps->idx) return egm_fail(e, "%s: out of memory", t->origin);
        for (int i = 0; i < t->n_added; i++)
            if (t->added[i].normalized == p) ps->idx[ps->n++] = i;
        qsort_r(ps->idx, ps->n, sizeof *ps->idx, cmp_added_tok, t->added);
        int j = 0;
        for (int b = 0; b <= 256; b++) {
            while (j < ps->n && (u8)t->added[ps->idx[j]].s[0] < b) j++;
            ps->lo[b] = j;
        }
    }
    return 0;
}

static int parse_post(egm_tokenizer *t, const json_t *p, const char *where, egm_err *e) {
    if (!p || json_is_null(p)) return 0;
    const char *type = get_type(p);
    if (!type) return egm_fail(e, "%s: %s: expected an object with a \"type\"", t->origin, where);
    char sub[128];
    if (!strcmp(type, "ByteLevel")) return 0; /* only adjusts offsets */
    if (!strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(p, "processors");
        if (!json_is_array(list))
            return egm_fail(e, "%s: %s.processors: expected an array", t->origin, where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
            if (parse_post(t, json_array_get(list, i), sub, e)) return -1;
        }
        return 0;
    }
    if (strcmp(type, "TemplateProcessing"))
        return egm_fail(e, "%s: %s: post-processor type \"%s\" is not supported (expected "
                        "TemplateProcessing, ByteLevel, Sequence or null)", t->origin, where, type);
    if (t->has_tpl)
        return egm_fail(e, "%s: %s: more than one TemplateProcessing", t->origin, where);
    const json_t *single = json_object_get(p, "single");
    const json_t *specials = json_object_get(p, "special_tokens");
    if (!json_is_array(single))
        return egm_fail(e, "%s: %s.single: expected an array", t->origin, where);
    t->has_tpl = 1;
    for (size_t i = 0; i < json_array_size(single); i++) {
        const json_t *it = json_array_get(single, i);
        const json_t *sp = json_object_get(it, "SpecialToken");
        const json_t *sq = json_object_get(it, "Sequence");
        const char *name = json_string_value(json_object_get(sp ? sp : sq, "id"));
        if (!name)
            return egm_fail(e, "%s: %s.single[%zu]: expected {\"SpecialToken\": {\"id\": ...}} or "
                            "{\"Sequence\": {\"id\": \"A\"}}", t->origin, where, i);
        const json_t *ids = NULL;
        if (sq) {
            if (strcmp(name, "A"))
                return egm_fail(e, "%s: %s.single[%zu]: sequence \"%s\" in a single template "
                                "(expected \"A\")", t->origin, where, i, name);
        } else {
            ids = json_object_get(json_object_get(specials, name), "ids");
            if (!json_is_array(ids))
                return egm_fail(e, "%s: %s.special_tokens[\"%s\"].ids: missing (the template "
                                "uses it)", t->origin, where, name);
        }
        size_t add = sq ? 1 : json_array_size(ids);
        int *n = realloc(t->tpl, (t->n_tpl + add + 1) * sizeof *n);
        if (!n) return egm_fail(e, "%s: out of memory", t->origin);
        t->tpl = n;
        if (sq) t->tpl[t->n_tpl++] = -1;
        for (size_t j = 0; !sq && j < add; j++) {
            const json_t *v = json_array_get(ids, j);
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) >= t->n_ids)
                return egm_fail(e, "%s: %s.special_tokens[\"%s\"].ids[%zu]: expected an id in "
                                "[0, %d)", t->origin, where, name, j, t->n_ids);
            t->tpl[t->n_tpl++] = (int)json_integer_value(v);
        }
    }
    return 0;
}

/* Refuses normalizers (none is implemented); an empty Sequence is fine. */
static int check_normalizer(const egm_tokenizer *t, const json_t *n, egm_err *e) {
    if (!n || json_is_null(n)) return 0;
    const char *type = get_type(n);
    if (type && !strcmp(type, "Sequence") &&
        json_array_size(json_object_get(n, "normalizers")) == 0)
        return 0;
    return egm_fail(e, "%s: normalizer: type \"%s\" is not supported (expected null)",
                    t->origin, type ? type : "?");
}

static int check_decoder(const egm_tokenizer *t, const json_t *d, const char *where,
                         egm_err *e) {
    const char *type = get_type(d);
    if (type && !strcmp(type, "ByteLevel")) return 0;
    if (type && !strcmp(type, "Sequence")) {
        const json_t *list = json_object_get(d, "decoders");
        char sub[128];
        for (size_t i = 0; i < json_array_size(list); i++) {
            snprintf(sub, sizeof sub, "%s.decoders[%zu]", where, i);
            if (check_decoder(t, json_array_get(list, i), sub, e)) return -1;
        }
        if (json_array_size(list) > 0) return 0;
    }
    return egm_fail(e, "%s: %s: expected a ByteLevel decoder, found %s%s%s", t->origin, where,
                    type ? "\"" : "", type ? type : (d ? json_kind(d) : "nothing"),
                    type ? "\"" : "");
}

/* Decoded bytes of every id: each char through the inverse byte table, or
 * the raw UTF-8 if some char is not a byte-level one (as HF's decoder). */
static int fill_bytes(egm_tokenizer *t) {
    for (int id = 0; id < t->n_ids; id++) {
        const u8 *s = (const u8 *)t->tok[id];
        if (!s) continue;
        size_t n = strlen((const char *)s), k = 0;
        u8 *b = malloc(n + 1);
        if (!b) return -1;
        int mapped = 1;
        for (size_t i = 0; i < n && mapped;) {
            int len;
            uint32_t cp = utf8_get(s + i, &len);
            if (cp < 324 && t->char_byte[cp] >= 0) b[k++] = (u8)t->char_byte[cp];
            else mapped = 0;
            i += len;
        }
        if (!mapped) memcpy(b, s, k = n);
        t->bytes[id] = b;
        t->nbytes[id] = (int)k;
        if (k > t->max_bytes) t->max_bytes = k;
    }
    return 0;
}

static int build(egm_tokenizer *t, const json_t *root, egm_err *e) {
    if (!json_is_object(root))
        return egm_fail(e, "%s: expected a JSON object at the top level", t->origin);
    const json_t *model = json_object_get(root, "model");
    const json_t *added = json_object_get(root, "added_tokens");
    if (parse_model(t, model, e) || scan_added(t, added, e)) return -1;
    if (t->n_ids == 0) return egm_fail(e, "%s: model.vocab: empty", t->origin);
    t->tok = calloc(t->n_ids, sizeof *t->tok);
    t->bytes = calloc(t->n_ids, sizeof *t->bytes);
    t->nbytes = calloc(t->n_ids, sizeof *t->nbytes);
    t->special = calloc(t->n_ids, 1);
    if (!t->tok || !t->bytes || !t->nbytes || !t->special)
        return egm_fail(e, "%s: out of memory", t->origin);
    if (fill_model(t, model, e) || fill_added(t, added, e)) return -1;
    if (check_normalizer(t, json_object_get(root, "normalizer"), e)) return -1;
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    int bytelevel = 0;
    if (!pre || json_is_null(pre))
        return egm_fail(e, "%s: pre_tokenizer: missing (byte-level BPE needs a ByteLevel "
                        "pre-tokenizer)", t->origin);
    if (parse_pretok(t, pre, "pre_tokenizer", &bytelevel, e)) return -1;
    if (!bytelevel)
        return egm_fail(e, "%s: pre_tokenizer: no ByteLevel step (only byte-level BPE is "
                        "supported)", t->origin);
    if (check_decoder(t, json_object_get(root, "decoder"), "decoder", e)) return -1;
    if (parse_post(t, json_object_get(root, "post_processor"), "post_processor", e)) return -1;
    /* HF tests single_word and strips with the Rust regex crate's Unicode
     * \w and \s; these are their definitions (PCRE2 >= 10.40 properties). */
    t->word_re = compile_re(t, "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                            PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, "word class", e);
    t->space_re = compile_re(t, "\\p{White_Space}", PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED,
                             "space class", e);
    if (!t->word_re || !t->space_re) return -1;
    if (fill_bytes(t)) return egm_fail(e, "%s: out of memory", t->origin);
    return 0;
}

int egm_tok_parse(const char *json, size_t len, const char *origin, egm_tokenizer **out,
                  egm_err *e) {
    *out = NULL;
    if (!origin) origin = "tokenizer.json";
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root)
        return egm_fail(e, "%s:%d:%d: invalid JSON: %s", origin, je.line, je.column, je.text);
    egm_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->origin = strdup(origin))) {
        free(t);
        json_decref(root);
        return egm_fail(e, "%s: out of memory", origin);
    }
    byte_tables(t);
    int rc = build(t, root, e);
    json_decref(root);
    if (rc) { egm_tok_free(t); return -1; }
    *out = t;
    return 0;
}

int egm_tok_load(const char *path, egm_tokenizer **out, egm_err *e) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return egm_fail(e, "%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (!RESERVE(buf, cap, n + 65536)) {
            free(buf);
            fclose(f);
            return egm_fail(e, "%s: out of memory", path);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err) { free(buf); return egm_fail(e, "%s: read error: %s", path, strerror(err)); }
    int rc = egm_tok_parse(buf, n, path, out, e);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* From GGUF metadata (tokenizer.ggml.*), llama.cpp's way                     */

/* llama.cpp's pre-tokenizer regexes per tokenizer.ggml.pre (llama-vocab.cpp):
 * each regex is an isolated split of every piece the previous ones made,
 * then byte-level BPE. Only the byte-level families we can check are here. */
#define GPT2_NO_FALLBACK "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define LLAMA3_RE "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RE "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct {
    const char *names;      /* '|'-separated tokenizer.ggml.pre values */
    const char *re[4];
    int ignore_merges, add_bos;
} gguf_pre;

static const gguf_pre GGUF_PRE[] = {
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_NO_FALLBACK, "\\p{N}+", "[0-9][0-9][0-9]"}, 0, 0},
    {"gpt-2|phi-2|mpt|olmo|jais", {GPT2_NO_FALLBACK}, 0, 0},
    {"smollm|starcoder|refact|command-r|codeshell|exaone|minerva", {"\\p{N}", GPT2_NO_FALLBACK},
     0, 0},
    {"llama3|llama-v3|llama-bpe|falcon3", {LLAMA3_RE}, 1, 1},
    {"qwen2|stablelm2", {QWEN2_RE}, 0, 0},
};

static const gguf_pre *find_pre(const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof GGUF_PRE / sizeof *GGUF_PRE; i++)
        for (const char *p = GGUF_PRE[i].names; p;) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            if (len == n && !memcmp(p, name, n)) return &GGUF_PRE[i];
            p = bar ? bar + 1 : NULL;
        }
    return NULL;
}

/* llama.cpp token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

static int gguf_merges(egm_tokenizer *t, const egm_gguf_kv *m, egm_err *e) {
    size_t nm = (size_t)m->n;
    if (merges_alloc(t, nm, e)) return -1;
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (size_t r = 0; r < nm && !rc; r++) {
        const char *s = m->str[r];
        size_t n = (size_t)m->len[r];
        /* llama.cpp splits at the first space after the first byte */
        const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp) {
            rc = egm_fail(e, "%s: key \"tokenizer.ggml.merges\": element %zu \"%.*s\": expected "
                          "two tokens separated by a space", t->origin, r, (int)(n > 60 ? 60 : n), s);
            break;
        }
        size_t la = (size_t)(sp - s), lb = n - la - 1;
        int ia = strmap_get(&t->vocab, s, la), ib = strmap_get(&t->vocab, sp + 1, lb);
        if (!RESERVE(buf, cap, la + lb + 1)) {
            rc = egm_fail(e, "%s: out of memory", t->origin);
            break;
        }
        memcpy(buf, s, la);
        memcpy(buf + la, sp + 1, lb);
        int id = strmap_get(&t->vocab, buf, la + lb);
        if (ia < 0 || ib < 0 || id < 0) {
            rc = egm_fail(e, "%s: key \"tokenizer.ggml.merges\": element %zu \"%.*s\": token "
                          "\"%.*s\" is not in tokenizer.ggml.tokens", t->origin, r, (int)n, s,
                          ia < 0 ? (int)la : ib < 0 ? (int)lb : (int)(la + lb),
                          ia < 0 ? s : ib < 0 ? sp + 1 : buf);
            break;
        }
        /* a repeated pair keeps its first rank, as llama.cpp's emplace does */
        pair_ent *slot = pairmap_slot(&t->merges, pair_key(ia, ib));
        if (slot->key == PAIR_EMPTY) *slot = (pair_ent){pair_key(ia, ib), (int)r, id};
    }
    free(buf);
    return rc;
}

static int gguf_build(egm_tokenizer *t, const egm_gguf *g, egm_err *e) {
    char *model = NULL, *pre = NULL;
    const egm_gguf_kv *tokens, *types, *merges;
    if (egm_gguf_get_str(g, "tokenizer.ggml.model", 1, &model, e)) return -1;
    int gpt2 = !strcmp(model, "gpt2");
    if (!gpt2)
        egm_fail(e, "%s: key \"tokenizer.ggml.model\": expected \"gpt2\" (byte-level BPE), "
                 "found \"%s\"", t->origin, model);
    free(model);
    if (!gpt2) return -1;
    if (egm_gguf_get_str(g, "tokenizer.ggml.pre", 0, &pre, e)) return -1;
    const gguf_pre *pt = find_pre(pre ? pre : "default");
    if (!pt) {
        egm_fail(e, "%s: key \"tokenizer.ggml.pre\": pre-tokenizer \"%s\" is not supported "
                 "(expected default, gpt-2, smollm, starcoder, llama3, llama-bpe, qwen2, ...)",
                 t->origin, pre);
        free(pre);
        return -1;
    }
    free(pre);
    if (egm_gguf_get_arr(g, "tokenizer.ggml.tokens", 1, EGM_GGUF_STRING, &tokens, e) ||
        egm_gguf_get_arr(g, "tokenizer.ggml.token_type", 0, -1, &types, e) ||
        egm_gguf_get_arr(g, "tokenizer.ggml.merges", 1, EGM_GGUF_STRING, &merges, e))
        return -1;
    if (tokens->n == 0 || tokens->n >= MAX_ID)
        return egm_fail(e, "%s: key \"tokenizer.ggml.tokens\": expected 1 to %d tokens, found "
                        "%llu", t->origin, MAX_ID - 1, (unsigned long long)tokens->n);
    if (types && types->n != tokens->n)
        return egm_fail(e, "%s: key \"tokenizer.ggml.token_type\": expected %llu entries (one "
                        "per token), found %llu", t->origin, (unsigned long long)tokens->n,
                        (unsigned long long)types->n);
    int V = (int)tokens->n;
    long long bos, eos;
    int add_bos, add_eos;
    if (egm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", 0, V > 11 ? 11 : -1, -1, V - 1, &bos,
                         e) ||
        egm_gguf_get_int(g, "tokenizer.ggml.eos_token_id", 0, V > 11 ? 11 : -1, -1, V - 1, &eos,
                         e) ||
        egm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", 0, pt->add_bos, &add_bos, e) ||
        egm_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", 0, 0, &add_eos, e))
        return -1;
    if ((add_bos && bos < 0) || (add_eos && eos < 0))
        return egm_fail(e, "%s: key \"tokenizer.ggml.add_%s_token\" is true but there is no "
                        "tokenizer.ggml.%s_token_id", t->origin, add_bos && bos < 0 ? "bos" : "eos",
                        add_bos && bos < 0 ? "bos" : "eos");

    t->n_ids = V;
    t->tok = calloc((size_t)V, sizeof *t->tok);
    t->bytes = calloc((size_t)V, sizeof *t->bytes);
    t->nbytes = calloc((size_t)V, sizeof *t->nbytes);
    t->special = calloc((size_t)V, 1);
    t->added = calloc((size_t)V, sizeof *t->added);
    if (!t->tok || !t->bytes || !t->nbytes || !t->special || !t->added ||
        strmap_init(&t->vocab, (size_t)V) || strmap_init(&t->added_map, (size_t)V))
        return egm_fail(e, "%s: out of memory", t->origin);
    for (int id = 0; id < V; id++) {
        const char *s = tokens->str[id];
        size_t len = (size_t)tokens->len[id];
        long long ty = types ? egm_gguf_arr_int(types, (uint64_t)id) : TT_NORMAL;
        if (ty < TT_NORMAL || ty > TT_BYTE)
            return egm_fail(e, "%s: key \"tokenizer.ggml.token_type\": token %d has type %lld "
                            "(expected 1 to 6)", t->origin, id, ty);
        if (len == 0 || memchr(s, 0, len))
            return egm_fail(e, "%s: key \"tokenizer.ggml.tokens\": token %d is empty or holds a "
                            "NUL byte", t->origin, id);
        long bad = utf8_invalid_at((const u8 *)s, len);
        if (bad >= 0)
            return egm_fail(e, "%s: key \"tokenizer.ggml.tokens\": token %d is not valid UTF-8 "
                            "(byte %ld)", t->origin, id, bad);
        /* the last of duplicate strings wins the lookup, as llama.cpp's map */
        if (strmap_put(&t->vocab, s, len, id) || set_tok(t, id, s, len))
            return egm_fail(e, "%s: out of memory", t->origin);
        /* control, user-defined and unknown tokens are cut out of the text
         * before pre-tokenization (llama.cpp's special-token partition) */
        if (ty == TT_CONTROL || ty == TT_USER || ty == TT_UNKNOWN) {
            added_tok *d = &t->added[t->n_added++];
            if (!(d->s = malloc(len + 1))) return egm_fail(e, "%s: out of memory", t->origin);
            memcpy(d->s, s, len);
            d->s[len] = 0;
            d->len = len;
            d->id = id;
            d->special = ty != TT_USER;
            if (strmap_put(&t->added_map, s, len, id))
                return egm_fail(e, "%s: out of memory", t->origin);
            t->special[id] = (u8)d->special;
        }
    }
    for (int b = 0; b < 256; b++) {
        u8 s[4];
        int n = utf8_put(s, t->byte_char[b]);
        t->byte_id[b] = strmap_get(&t->vocab, (const char *)s, n);
    }
    t->unk_id = -1;
    t->ignore_merges = pt->ignore_merges;
    if (gguf_merges(t, merges, e) || index_added(t, e)) return -1;
    for (int i = 0; i < 4 && pt->re[i]; i++) {
        pcre2_code *re = compile_re(t, pt->re[i], PCRE2_ZERO_TERMINATED, 0,
                                    "tokenizer.ggml.pre", e);
        if (!re || add_step(t, (pretok_step){STEP_SPLIT, re, SPLIT_ISOLATED, 0}, e)) return -1;
    }
    if (add_bos || add_eos) {
        if (!(t->tpl = malloc(3 * sizeof *t->tpl))) return egm_fail(e, "%s: out of memory", t->origin);
        t->has_tpl = 1;
        if (add_bos) t->tpl[t->n_tpl++] = (int)bos;
        t->tpl[t->n_tpl++] = -1;
        if (add_eos) t->tpl[t->n_tpl++] = (int)eos;
    }
    t->word_re = compile_re(t, "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                            PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, "word class", e);
    t->space_re = compile_re(t, "\\p{White_Space}", PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED,
                             "space class", e);
    if (!t->word_re || !t->space_re) return -1;
    if (fill_bytes(t)) return egm_fail(e, "%s: out of memory", t->origin);
    return 0;
}

int egm_tok_from_gguf(const egm_gguf *g, egm_tokenizer **out, egm_err *e) {
    *out = NULL;
    egm_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->origin = strdup(egm_gguf_path(g)))) {
        free(t);
        return egm_fail(e, "%s: out of memory", egm_gguf_path(g));
    }
    byte_tables(t);
    if (gguf_build(t, g, e)) {
        egm_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int egm_tok_vocab_size(const egm_tokenizer *t) { return t->n_ids; }

int egm_tok_id(const egm_tokenizer *t, const char *token) {
    size_t n = strlen(token);
    int id = strmap_get(&t->added_map, token, n);
    return id >= 0 ? id : strmap_get(&t->vocab, token, n);
}

int egm_tok_is_special(const egm_tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids && t->special[id];
}

const char *egm_tok_token(const egm_tokenizer *t, int id) {
    return id >= 0 && id < t->n_ids ? t->tok[id] : NULL;
}

size_t egm_tok_stream_cap(const egm_tokenizer *t) {
    /* worst case: every byte of the longest token, plus the held bytes,
     * becomes a 3-byte U+FFFD */
    return 3 * (t->max_bytes + 8);
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

typedef struct { int id, prev, next; } sym;
typedef struct { int rank, pos, id; } merge_ent;

/* Per-call scratch, so a tokenizer can be shared between threads. */
typedef struct {
    const egm_tokenizer *t;
    egm_err *e;
    u8 *prefixed;            /* " " + piece, for ByteLevel's add_prefix_space */
    size_t capprefixed;
    sym *sy;
    size_t capsy;
    merge_ent *hp;
    size_t nhp, caphp;
    u8 *word;
    size_t capword;
    int *ids;
    size_t nids, capids;
    pcre2_match_data *md;
    /* word -> ids cache for this call (texts repeat their words a lot) */
    struct cache_ent { uint64_t h; size_t key, len, ids, n; } *ce;
    size_t nce, capce;
    u8 *ckey;
    size_t nckey, capckey;
    int *cids;
    size_t ncids, capcids;
} enc;

#define CACHE_MAX_WORD 48 /* longer pieces are rare and not worth keeping */

#define OOM(x) egm_fail((x)->e, "%s: out of memory while encoding", (x)->t->origin)

static int push_id(enc *x, int id) {
    if (!RESERVE(x->ids, x->capids, x->nids + 1)) return OOM(x);
    x->ids[x->nids++] = id;
    return 0;
}

/* Finds the next match of re in s[0, n) at or after pos: 1 and [*ms, *me)
 * on a match, 0 when none, -1 on a PCRE2 failure (limits). */
static int re_next(enc *x, const pcre2_code *re, const u8 *s, size_t n, size_t pos,
                   size_t *ms, size_t *me) {
    int rc = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK, x->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* the interpreter uses the heap */
        rc = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, x->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return egm_fail(x->e, "%s: regex match failed: %s", x->t->origin, (const char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

static void heap_push(enc *x, merge_ent m) {
    size_t i = x->nhp++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        merge_ent u = x->hp[up];
        if (u.rank < m.rank || (u.rank == m.rank && u.pos <= m.pos)) break;
        x->hp[i] = u;
        i = up;
    }
    x->hp[i] = m;
}

static merge_ent heap_pop(enc *x) {
    merge_ent top = x->hp[0], last = x->hp[--x->nhp];
    size_t i = 0, n = x->nhp;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && (x->hp[c + 1].rank < x->hp[c].rank ||
                          (x->hp[c + 1].rank == x->hp[c].rank && x->hp[c + 1].pos < x->hp[c].pos)))
            c++;
        if (last.rank < x->hp[c].rank || (last.rank == x->hp[c].rank && last.pos <= x->hp[c].pos))
            break;
        x->hp[i] = x->hp[c];
        i = c;
    }
    x->hp[i] = last;
    return top;
}

static void push_pair(enc *x, int pos) {
    const sym *s = x->sy;
    const pair_ent *m = pairmap_get(&x->t->merges, s[pos].id, s[s[pos].next].id);
    if (m) heap_push(x, (merge_ent){m->rank, pos, m->id});
}

static struct cache_ent *cache_slot(const enc *x, const u8 *w, size_t n, uint64_t h) {
    size_t i = h & (x->capce - 1);
    for (;;) {
        struct cache_ent *c = &x->ce[i];
        if (!c->len || (c->h == h && c->len == n && !memcmp(x->ckey + c->key, w, n))) return c;
        i = (i + 1) & (x->capce - 1);
    }
}

/* Remembers that w[0, n) encodes to ids[first ..]; failure to grow only
 * means no caching. */
static void cache_put(enc *x, const u8 *w, size_t n, uint64_t h, size_t first) {
    if (2 * (x->nce + 1) > x->capce) {
        size_t nc = x->capce ? 2 * x->capce : 1024;
        struct cache_ent *old = x->ce, *ne = calloc(nc, sizeof *ne);
        if (!ne) return;
        size_t oc = x->capce;
        x->ce = ne;
        x->capce = nc;
        for (size_t i = 0; i < oc; i++)
            if (old[i].len) *cache_slot(x, x->ckey + old[i].key, old[i].len, old[i].h) = old[i];
        free(old);
    }
    size_t m = x->nids - first;
    if (!RESERVE(x->ckey, x->capckey, x->nckey + n) || !RESERVE(x->cids, x->capcids, x->ncids + m))
        return;
    struct cache_ent *c = cache_slot(x, w, n, h);
    *c = (struct cache_ent){h, x->nckey, n, x->ncids, m};
    memcpy(x->ckey + x->nckey, w, n);
    if (m) memcpy(x->cids + x->ncids, x->ids + first, m * sizeof *x->ids); /* ids is NULL while empty */
    x->nckey += n;
    x->ncids += m;
    x->nce++;
}

static int bpe_word(enc *x, const u8 *w, size_t n);

/* BPE over one pre-tokenized piece (raw bytes), through the cache. */
static int bpe(enc *x, const u8 *w, size_t n) {
    if (n > CACHE_MAX_WORD) return bpe_word(x, w, n);
    uint64_t h = fnv1a(w, n);
    if (x->capce) {
        const struct cache_ent *c = cache_slot(x, w, n, h);
        if (c->len) {
            if (!RESERVE(x->ids, x->capids, x->nids + c->n)) return OOM(x);
            if (c->n) memcpy(x->ids + x->nids, x->cids + c->ids, c->n * sizeof *x->ids);
            x->nids += c->n;
            return 0;
        }
    }
    size_t first = x->nids;
    if (bpe_word(x, w, n)) return -1;
    cache_put(x, w, n, h, first);
    return 0;
}

static int bpe_word(enc *x, const u8 *w, size_t n) {
    const egm_tokenizer *t = x->t;
    if (t->ignore_merges) { /* a whole word in the vocab is taken as is */
        if (!RESERVE(x->word, x->capword, 2 * n + 1)) return OOM(x);
        size_t k = 0;
        for (size_t i = 0; i < n; i++) k += utf8_put(x->word + k, t->byte_char[w[i]]);
        int id = strmap_get(&t->vocab, (const char *)x->word, k);
        if (id >= 0) return push_id(x, id);
    }
    if (!RESERVE(x->sy, x->capsy, n) || !RESERVE(x->hp, x->caphp, 2 * n + 1)) return OOM(x);
    int ns = 0;
    for (size_t i = 0; i < n; i++) {
        int id = t->byte_id[w[i]];
        if (id < 0) { /* a byte the vocab lacks: unk, or dropped as HF does */
            if (t->unk_id < 0) continue;
            if (t->fuse_unk && ns > 0 && x->sy[ns - 1].id == t->unk_id) continue;
            id = t->unk_id;
        }
        x->sy[ns] = (sym){id, ns - 1, ns + 1};
        ns++;
    }
    if (ns == 0) return 0;
    x->sy[ns - 1].next = -1;
    x->nhp = 0;
    for (int i = 0; i + 1 < ns; i++) push_pair(x, i);
    /* Each merge can queue at most two new pairs, so the heap stays < 2n+1;
     * stale entries are recognised as HF does, by the pair's merged id. */
    while (x->nhp > 0) {
        merge_ent m = heap_pop(x);
        sym *a = &x->sy[m.pos];
        if (a->id < 0 || a->next < 0) continue;
        sym *b = &x->sy[a->next];
        const pair_ent *cur = pairmap_get(&t->merges, a->id, b->id);
        if (!cur || cur->id != m.id) continue;
        a->id = m.id;
        b->id = -1;
        a->next = b->next;
        if (a->next >= 0) x->sy[a->next].prev = m.pos;
        if (a->prev >= 0) push_pair(x, a->prev);
        if (a->next >= 0) push_pair(x, m.pos);
    }
    for (int i = 0; i >= 0; i = x->sy[i].next)
        if (push_id(x, x->sy[i].id)) return -1;
    return 0;
}

/* The pre-tokenizer runs depth first: each piece a step produces goes
 * through the remaining steps and BPE at once, so memory stays small however
 * long the text. */
static int run(enc *x, int k, const u8 *s, size_t n);

/* Fold state of one Split over one piece (HF's split(): adjacent segments
 * merge according to the behaviour; empty pieces take part in the folding and
 * are dropped at the end). */
typedef struct { size_t a, b; int has, prev_match; } fold;

static int fold_seg(enc *x, int k, const u8 *s, fold *f, size_t a, size_t b, int match) {
    const pretok_step *st = &x->t->steps[k];
    if (st->invert) match = !match;
    int join = 0;
    switch (st->behavior) {
    case SPLIT_ISOLATED: return run(x, k + 1, s + a, b - a);
    case SPLIT_REMOVED: return match ? 0 : run(x, k + 1, s + a, b - a);
    case SPLIT_CONTIGUOUS: join = match == f->prev_match; break;
    case SPLIT_PREVIOUS: join = match && !f->prev_match; break;
    /* HF folds this one from the right: a match joins the non-match after it */
    case SPLIT_NEXT: join = f->prev_match && !match; break;
    }
    f->prev_match = match;
    if (join && f->has) {
        f->b = b;
        return 0;
    }
    if (f->has && run(x, k + 1, s + f->a, f->b - f->a)) return -1;
    *f = (fold){a, b, 1, match};
    return 0;
}

/* One Split step over one piece, following HF's NormalizedString::split.
 * Matches and the gaps between them are found as onig's find_iter does: an
 * empty match right where the previous match ended is skipped. */
static int split_piece(enc *x, int k, const u8 *s, size_t n) {
    const pretok_step *st = &x->t->steps[k];
    size_t pos = 0, prev = 0;
    long last_end = -1;
    fold f = {0, 0, 0, 0};
    while (pos <= n) {
        size_t ms = 0, me = 0;
        int rc = re_next(x, st->re, s, n, pos, &ms, &me);
        if (rc < 0) return -1;
        if (rc == 0) break;
        if (ms == me && (long)me == last_end) {
            if (pos >= n) break;
            int len;
            utf8_seq(s + pos, n - pos, &len);
            pos += len;
            continue;
        }
        pos = me;
        last_end = (long)me;
        if (prev != ms && fold_seg(x, k, s, &f, prev, ms, 0)) return -1;
        if (fold_seg(x, k, s, &f, ms, me, 1)) return -1;
        prev = me;
    }
    if (prev != n && fold_seg(x, k, s, &f, prev, n, 0)) return -1;
    if (f.has) return run(x, k + 1, s + f.a, f.b - f.a);
    return 0;
}

static int run(enc *x, int k, const u8 *s, size_t n) {
    const egm_tokenizer *t = x->t;
    if (n == 0) return 0; /* HF drops empty pieces */
    if (k == t->n_steps) return bpe(x, s, n);
    const pretok_step *st = &t->steps[k];
    if (st->kind == STEP_SPLIT) return split_piece(x, k, s, n);
    /* HF prepends a space to every piece that lacks one. There is a single
     * ByteLevel step, so one buffer serves. */
    if (s[0] == ' ') return run(x, k + 1, s, n);
    if (!RESERVE(x->prefixed, x->capprefixed, n + 1)) return OOM(x);
    x->prefixed[0] = ' ';
    memcpy(x->prefixed + 1, s, n);
    return run(x, k + 1, x->prefixed, n + 1);
}

/* Does the character starting at s[at] match re (a one-character class)? */
static int char_is(enc *x, const pcre2_code *re, const u8 *s, size_t n, size_t at) {
    int rc = pcre2_match(re, s, n, at, PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, x->md, NULL);
    return rc >= 0;
}

static size_t char_before(const u8 *s, size_t i) {
    do i--; while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

/* Encodes s[0, n): cuts out added tokens of pass p (then pass p+1 on what is
 * left), and encodes the rest. Mirrors HF's AddedVocabulary::find_matches. */
static int split_added(enc *x, int p, const u8 *s, size_t n) {
    const egm_tokenizer *t = x->t;
    if (p == 2) return run(x, 0, s, n);
    const added_pass *ps = &t->pass[p];
    if (ps->n == 0) return split_added(x, p + 1, s, n);
    size_t done = 0, i = 0;
    while (i < n) {
        int lo = ps->lo[s[i]], hi = ps->lo[s[i] + 1], hit = -1;
        for (int k = lo; k < hi && hit < 0; k++) {
            const added_tok *a = &t->added[ps->idx[k]];
            if (a->len <= n - i && memcmp(s + i, a->s, a->len) == 0) hit = ps->idx[k];
        }
        if (hit < 0) { i++; continue; }
        const added_tok *a = &t->added[hit];
        size_t start = i, stop = i + a->len;
        i = stop; /* the matcher resumes after a match, even a discarded one */
        if (a->single_word) {
            int word_before = start > 0 && char_is(x, t->word_re, s, n, char_before(s, start));
            int word_after = stop < n && char_is(x, t->word_re, s, n, stop);
            if (word_before || word_after) continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            /* HF strips back over all the spaces, then clamps to the end of
             * the previous match; stopping there is the same */
            while (ns > done && char_is(x, t->space_re, s, n, char_before(s, ns)))
                ns = char_before(s, ns);
            start = ns;
        }
        if (a->rstrip) {
            while (stop < n && char_is(x, t->space_re, s, n, stop)) {
                int len;
                utf8_seq(s + stop, n - stop, &len);
                stop += len;
            }
            if (stop > i) i = stop;
        }
        if (done < start && split_added(x, p + 1, s + done, start - done)) return -1;
        if (push_id(x, a->id)) return -1;
        done = stop;
    }
    if (done < n) return split_added(x, p + 1, s + done, n - done);
    return 0;
}

int egm_tok_encode(const egm_tokenizer *t, const char *text, size_t len, int add_special,
                   int **ids, int *n, egm_err *e) {
    *ids = NULL;
    *n = 0;
    long bad = utf8_invalid_at((const u8 *)text, len);
    if (bad >= 0)
        return egm_fail(e, "%s: input text is not valid UTF-8 (byte %ld, value 0x%02x)",
                        t->origin, bad, (const u8)text[bad]);
    enc x = {.t = t, .e = e};
    x.md = pcre2_match_data_create(16, NULL);
    int rc = x.md ? 0 : OOM(&x);
    /* template ids before $A, the text, then the ids after $A */
    int with_tpl = add_special && t->has_tpl, k = 0;
    for (; !rc && with_tpl && k < t->n_tpl && t->tpl[k] != -1; k++) rc = push_id(&x, t->tpl[k]);
    if (!rc) rc = split_added(&x, 0, (const u8 *)text, len);
    for (k++; !rc && with_tpl && k < t->n_tpl; k++) rc = push_id(&x, t->tpl[k]);
    pcre2_match_data_free(x.md);
    free(x.prefixed);
    free(x.sy);
    free(x.hp);
    free(x.word);
    free(x.ce);
    free(x.ckey);
    free(x.cids);
    if (!rc && x.nids > INT_MAX) rc = egm_fail(e, "%s: text too long", t->origin);
    if (rc) { free(x.ids); return -1; }
    if (!x.ids) x.ids = malloc(sizeof(int)); /* a valid pointer even when empty */
    if (!x.ids) return egm_fail(e, "%s: out of memory while encoding", t->origin);
    *ids = x.ids;
    *n = (int)x.nids;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */

static const u8 REPLACEMENT[3] = {0xEF, 0xBF, 0xBD};

/* Copies s[0, n) to out as valid UTF-8 (one U+FFFD per maximal invalid
 * subpart). If hold, a truncated sequence at the end is left unconsumed.
 * Stops before a character that would not fit in cap. Returns bytes written;
 * *used gets the input consumed. */
static size_t lossy(const u8 *s, size_t n, int hold, u8 *out, size_t cap, size_t *used) {
    size_t i = 0, k = 0;
    while (i < n) {
        int len, r = utf8_seq(s + i, n - i, &len);
        if (r == 0 && hold) break;
        size_t w = r == 1 ? (size_t)len : 3;
        if (k + w > cap) break;
        if (r == 1) memcpy(out + k, s + i, len);
        else memcpy(out + k, REPLACEMENT, 3);
        k += w;
        i += len;
    }
    *used = i;
    return k;
}

char *egm_tok_decode(const egm_tokenizer *t, const int *ids, int n, int skip_special) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_ids) total += t->nbytes[ids[i]];
    u8 *raw = malloc(total + 1), *out = malloc(3 * total + 1);
    if (!raw || !out) { free(raw); free(out); return NULL; }
    size_t k = 0, used;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->bytes[id]) continue; /* HF skips unknown ids */
        if (skip_special && t->special[id]) continue;
        memcpy(raw + k, t->bytes[id], t->nbytes[id]);
        k += t->nbytes[id];
    }
    size_t m = lossy(raw, k, 0, out, 3 * total, &used);
    out[m] = 0;
    free(raw);
    return (char *)out;
}

size_t egm_tok_stream_feed(const egm_tokenizer *t, egm_tok_stream *s, int id, char *out,
                           size_t cap) {
    if (id < 0 || id >= t->n_ids || !t->bytes[id]) return 0;
    size_t np = s->npend > 0 ? (size_t)s->npend : 0, nb = (size_t)t->nbytes[id];
    u8 local[512], *buf = np + nb <= sizeof local ? local : malloc(np + nb);
    if (!buf) return 0;
    memcpy(buf, s->pend, np);
    memcpy(buf + np, t->bytes[id], nb);
    size_t used, w = lossy(buf, np + nb, 1, (u8 *)out, cap, &used);
    /* Keep what was not emitted: a truncated character (at most 3 bytes), or
     * whatever did not fit in out, as far as pend can hold it. */
    size_t rest = np + nb - used;
    if (rest > sizeof s->pend) rest = sizeof s->pend;
    memmove(s->pend, buf + used, rest);
    s->npend = (int)rest;
    if (buf != local) free(buf);
    return w;
}

size_t egm_tok_stream_flush(egm_tok_stream *s, char *out, size_t cap) {
    size_t used, w = lossy(s->pend, s->npend > 0 ? (size_t)s->npend : 0, 0, (u8 *)out, cap, &used);
    memmove(s->pend, s->pend + used, s->npend - used);
    s->npend -= (int)used;
    return w;
}
