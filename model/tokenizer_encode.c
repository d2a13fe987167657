/* tokenizer_encode.c - text to ids (egm_tok_encode).
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
 * The loaders (tokenizer_load.c) turn tokenizer.json or GGUF metadata into
 * those steps; nothing here knows which one it came from.
 *
 * HF runs its regexes with Oniguruma, we with PCRE2 (UTF + UCP); the two
 * agree on the GPT-2 / Llama-3 patterns (\p{L}, \p{N}, \s, (?i:...),
 * lookahead), checked against HF on the fixtures and on random text. */
#include "tokenizer_impl.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The merge of the pair (a, b), NULL if there is none. */
static const pair_ent *pairmap_get(const pairmap *m, int a, int b) {
    if (!m->cap) return NULL;
    const pair_ent *e = pairmap_slot(m, pair_key(a, b));
    return e->key == PAIR_EMPTY ? NULL : e;
}

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
    int after_added;         /* SPM: the last thing out was an added token (or nothing) */
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
    uint64_t h = egm_fnv1a(EGM_FNV_OFFSET, w, n);
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
    if (p == 2 && t->spm) { /* llama.cpp prefixes a space to text after a special token */
        int prefix = t->add_space_prefix && x->after_added;
        x->after_added = 0;
        return egm_spm_encode(t, s, n, prefix, &x->ids, &x->nids, &x->capids, x->e);
    }
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
        x->after_added = 1;
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
    enc x = {.t = t, .e = e, .after_added = 1};
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
