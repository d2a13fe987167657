/* tokenizer_load.c - building a tokenizer: from tokenizer.json (jansson) or
 * from a GGUF file's tokenizer.ggml.* metadata, and its vocabulary lookups.
 *
 * Both loaders end in the same struct (tokenizer_impl.h): the vocab and
 * added-token maps, the merge table by rank, the pre-tokenizer as a list of
 * steps (PCRE2 regexes, JIT-compiled unless EGMLA_NO_JIT is set), the
 * post-processor template, and every id's decoded bytes, so encoding and
 * decoding never look at where a tokenizer came from.
 *
 * Not implemented (refused at load with the field named): normalizers, BPE
 * dropout, continuing_subword_prefix / end_of_word_suffix, byte_fallback,
 * pre-tokenizers other than ByteLevel / Split / Digits / Sequence, decoders
 * other than ByteLevel, post-processors other than TemplateProcessing /
 * ByteLevel / Sequence. truncation and padding are ignored: encode never
 * truncates. */
#include "tokenizer_impl.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Filling the hash maps (their lookups are in tokenizer_impl.h)             */

static int strmap_init(strmap *m, size_t n) {
    m->cap = 16;
    while (m->cap < 2 * n + 2) m->cap *= 2;
    m->n = 0;
    m->e = calloc(m->cap, sizeof *m->e);
    return m->e ? 0 : -1;
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

/* ------------------------------------------------------------------------ */
/* What both loaders use                                                     */

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
    free(t->score);
    free(t->origin);
    free(t);
}

/* A pre-tokenizer or character-class regex, in UTF mode with Unicode
 * properties for \p{L}, \s and the like (UCP). */
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

/* The order of a pass: by first byte, longest first, then as listed. */
static int cmp_added_tok(const void *x, const void *y, void *ctx) {
    const added_tok *A = ctx;
    const added_tok *a = &A[*(const int *)x], *b = &A[*(const int *)y];
    if ((u8)a->s[0] != (u8)b->s[0]) return (u8)a->s[0] - (u8)b->s[0];
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return *(const int *)x - *(const int *)y;
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

/* The id of each byte's byte-level symbol, once the vocab is in. */
static void map_bytes(egm_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        u8 s[4];
        int n = utf8_put(s, t->byte_char[b]);
        t->byte_id[b] = strmap_get(&t->vocab, (const char *)s, n);
    }
}

/* How both loaders end, once everything else is in: the character classes
 * added tokens test their neighbours with, and every id's decoded bytes. */
static int finish(egm_tokenizer *t, egm_err *e) {
    /* HF tests single_word and strips with the Rust regex crate's Unicode
     * \w and \s; these are their definitions (PCRE2 >= 10.40 properties). */
    t->word_re = compile_re(t, "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]",
                            PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED, "word class", e);
    t->space_re = compile_re(t, "\\p{White_Space}", PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED,
                             "space class", e);
    if (!t->word_re || !t->space_re) return -1;
    if (!t->spm && fill_bytes(t)) return egm_fail(e, "%s: out of memory", t->origin);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* From tokenizer.json                                                       */

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

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
            return add_step(t, (pretok_step){STEP_SPLIT, re, SPLIT_ISOLATED, 0, 1}, e);
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
        return add_step(t, (pretok_step){STEP_SPLIT, re, SPLIT_ISOLATED, 0, 0}, e);
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
        return add_step(t, (pretok_step){STEP_SPLIT, re, b, invert, 0}, e);
    }
    return egm_fail(e, "%s: %s: pre-tokenizer type \"%s\" is not supported (expected "
                    "ByteLevel, Split, Digits or Sequence)", t->origin, where, type);
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
    map_bytes(t);
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
    return finish(t, e);
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

/* The pre-tokenizer of a byte-level vocabulary (NULL and an error if we do
 * not know it). */
static const gguf_pre *gguf_pretok(egm_tokenizer *t, const egm_gguf *g, egm_err *e) {
    char *pre = NULL;
    if (egm_gguf_get_str(g, "tokenizer.ggml.pre", 0, &pre, e)) return NULL;
    const gguf_pre *pt = find_pre(pre ? pre : "default");
    if (!pt)
        egm_fail(e, "%s: key \"tokenizer.ggml.pre\": pre-tokenizer \"%s\" is not supported "
                 "(expected default, gpt-2, smollm, starcoder, llama3, llama-bpe, qwen2, ...)",
                 t->origin, pre);
    free(pre);
    return pt;
}

/* Every token of tokenizer.ggml.tokens, by id, with its bytes; control,
 * user-defined and unknown ones also become added tokens. */
static int gguf_vocab(egm_tokenizer *t, const egm_gguf_kv *tokens, const egm_gguf_kv *types,
                      egm_err *e) {
    int V = (int)tokens->n;
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
        /* llama.cpp makes its end-of-generation texts control tokens */
        if (egm_gguf_is_eog_text(s, len)) ty = TT_CONTROL;
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
    return 0;
}

static int gguf_build(egm_tokenizer *t, const egm_gguf *g, egm_err *e) {
    char *model = NULL;
    const egm_gguf_kv *tokens, *types, *merges = NULL;
    if (egm_gguf_get_str(g, "tokenizer.ggml.model", 1, &model, e)) return -1;
    /* "llama" is SentencePiece-style: scores, no merges (tokenizer_spm.c) */
    int gpt2 = !strcmp(model, "gpt2"), spm = !strcmp(model, "llama");
    if (!gpt2 && !spm)
        egm_fail(e, "%s: key \"tokenizer.ggml.model\": expected \"gpt2\" (byte-level BPE) or "
                 "\"llama\" (SentencePiece), found \"%s\"", t->origin, model);
    free(model);
    if (!gpt2 && !spm) return -1;
    static const gguf_pre SPM_DEFAULTS = {"", {NULL}, 0, 1};
    const gguf_pre *pt = spm ? &SPM_DEFAULTS : gguf_pretok(t, g, e);
    if (!pt) return -1;
    if (egm_gguf_get_arr(g, "tokenizer.ggml.tokens", 1, EGM_GGUF_STRING, &tokens, e) ||
        egm_gguf_get_arr(g, "tokenizer.ggml.token_type", 0, -1, &types, e) ||
        (gpt2 && egm_gguf_get_arr(g, "tokenizer.ggml.merges", 1, EGM_GGUF_STRING, &merges, e)))
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
    /* llama.cpp's defaults: 11 for byte-level vocabularies, 1 and 2 for SPM */
    long long dbos = spm ? 1 : 11, deos = spm ? 2 : 11;
    if (egm_gguf_get_int(g, "tokenizer.ggml.bos_token_id", 0, V > dbos ? dbos : -1, -1, V - 1,
                         &bos, e) ||
        egm_gguf_get_int(g, "tokenizer.ggml.eos_token_id", 0, V > deos ? deos : -1, -1, V - 1,
                         &eos, e) ||
        egm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", 0, pt->add_bos, &add_bos, e) ||
        egm_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", 0, 0, &add_eos, e))
        return -1;
    if ((add_bos && bos < 0) || (add_eos && eos < 0))
        return egm_fail(e, "%s: key \"tokenizer.ggml.add_%s_token\" is true but there is no "
                        "tokenizer.ggml.%s_token_id", t->origin, add_bos && bos < 0 ? "bos" : "eos",
                        add_bos && bos < 0 ? "bos" : "eos");

    if (gguf_vocab(t, tokens, types, e)) return -1;
    t->unk_id = -1;
    t->ignore_merges = pt->ignore_merges;
    if (spm ? egm_spm_setup(t, g, types, e) : (map_bytes(t), gguf_merges(t, merges, e)))
        return -1;
    if (index_added(t, e)) return -1;
    for (int i = 0; i < 4 && pt->re[i]; i++) {
        pcre2_code *re = compile_re(t, pt->re[i], PCRE2_ZERO_TERMINATED, 0,
                                    "tokenizer.ggml.pre", e);
        if (!re || add_step(t, (pretok_step){STEP_SPLIT, re, SPLIT_ISOLATED, 0, 0}, e)) return -1;
    }
    if (add_bos || add_eos) {
        if (!(t->tpl = malloc(3 * sizeof *t->tpl))) return egm_fail(e, "%s: out of memory", t->origin);
        t->has_tpl = 1;
        if (add_bos) t->tpl[t->n_tpl++] = (int)bos;
        t->tpl[t->n_tpl++] = -1;
        if (add_eos) t->tpl[t->n_tpl++] = (int)eos;
    }
    return finish(t, e);
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

/* ------------------------------------------------------------------------ */
/* Lookups                                                                   */

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
