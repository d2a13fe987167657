/* tokenizer_spm.c - SentencePiece-style vocabularies from GGUF
 * (tokenizer.ggml.model = "llama"), tokenized as llama.cpp's
 * llm_tokenizer_spm does.
 *
 * Such a vocabulary has no merge list: every token has a score, and text is
 * merged greedily, the adjacent pair whose concatenation is the best-scoring
 * token first (ties: the leftmost pair). Before that, spaces become U+2581
 * ("▁") and, when tokenizer.ggml.add_space_prefix is set, a fragment that
 * starts the text or follows a special token gets one "▁" in front. A
 * character left over that is not a token is spelled as its bytes, the
 * "<0xNN>" byte tokens (byte fallback).
 *
 * llama.cpp also keeps a "reverse merge" map to re-split a symbol that is not
 * a token; it is never used, since a symbol only grows by merging into a
 * token and a single character cannot be a pair. So a final symbol is a
 * token or one character, and that is all resegmenting needs to know.
 *
 * Decoding is llama.cpp's token_to_piece: "▁" back to spaces for normal
 * tokens, the byte of a byte token, the text of control, unknown and
 * user-defined tokens as is, nothing for unused ones. Pieces are
 * concatenated as they are (the leading space of " Paris" stays), which is
 * what llama.cpp's completions and llama-cpp-python return; only
 * llama_detokenize additionally drops one leading space at the start. */
#include "tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SPACE_MARK[] = "\xe2\x96\x81"; /* U+2581 */

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* ---- loading -------------------------------------------------------------- */

/* The byte of a byte token "<0xNN>", -1 if it is not spelled that way. */
static int byte_of(const char *s) {
    unsigned v;
    int k = 0;
    if (strlen(s) != 6 || sscanf(s, "<0x%2x>%n", &v, &k) != 1 || k != 6) return -1;
    return (int)v;
}

/* Decoded bytes of one token (see the top of the file). */
static int spm_piece(egm_tokenizer *t, int id, int ty) {
    const char *s = t->tok[id];
    size_t n = strlen(s), k = 0;
    u8 *b = malloc(n + 1);
    if (!b) return -1;
    if (ty == TT_BYTE) {
        b[k++] = (u8)byte_of(s);
    } else if (ty == TT_NORMAL) {
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && !memcmp(s + i, SPACE_MARK, 3)) {
                b[k++] = ' ';
                i += 3;
            } else {
                b[k++] = (u8)s[i++];
            }
        }
    } else if (ty != TT_UNUSED) {
        memcpy(b, s, k = n);
    }
    t->bytes[id] = b;
    t->nbytes[id] = (int)k;
    if (k > t->max_bytes) t->max_bytes = k;
    return 0;
}

int egm_spm_setup(egm_tokenizer *t, const egm_gguf *g, const egm_gguf_kv *types, egm_err *e) {
    const egm_gguf_kv *scores;
    if (egm_gguf_get_arr(g, "tokenizer.ggml.scores", 0, EGM_GGUF_F32, &scores, e) ||
        egm_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", 0, 1, &t->add_space_prefix, e))
        return -1;
    if (scores && scores->n != (uint64_t)t->n_ids)
        return egm_fail(e, "%s: key \"tokenizer.ggml.scores\": expected %d entries (one per "
                        "token), found %llu", t->origin, t->n_ids,
                        (unsigned long long)scores->n);
    t->spm = 1;
    if (!(t->score = calloc((size_t)t->n_ids, sizeof *t->score)))
        return egm_fail(e, "%s: out of memory", t->origin);
    if (scores) memcpy(t->score, scores->data, (size_t)t->n_ids * sizeof *t->score);
    for (int id = 0; id < t->n_ids; id++) {
        int ty = types ? (int)egm_gguf_arr_int(types, (uint64_t)id) : TT_NORMAL;
        if (egm_gguf_is_eog_text(t->tok[id], strlen(t->tok[id]))) ty = TT_CONTROL; /* as the loader */
        if (ty == TT_BYTE && byte_of(t->tok[id]) < 0)
            return egm_fail(e, "%s: key \"tokenizer.ggml.tokens\": token %d is a byte token "
                            "(type 6) but is spelled \"%.40s\", not <0xNN>", t->origin, id,
                            t->tok[id]);
        if (spm_piece(t, id, ty)) return egm_fail(e, "%s: out of memory", t->origin);
    }
    /* llama.cpp's byte_to_token: "<0xNN>", else the byte itself as a token */
    for (int b = 0; b < 256; b++) {
        char hex[8], raw[2] = {(char)b, 0};
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->byte_id[b] = strmap_get(&t->vocab, hex, 6);
        if (t->byte_id[b] < 0 && b > 0) t->byte_id[b] = strmap_get(&t->vocab, raw, 1);
    }
    return 0;
}

/* ---- encoding ------------------------------------------------------------- */

typedef struct { const u8 *s; int n, prev, next; } spm_sym;
typedef struct { float score; int left, right, size; } spm_bigram;

typedef struct {
    const egm_tokenizer *t;
    spm_sym *sy;
    spm_bigram *hp;
    size_t nhp;
} spm;

/* Max-heap order: higher score first, then the leftmost pair. */
static int before(const spm_bigram *a, const spm_bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void hp_push(spm *x, spm_bigram m) {
    size_t i = x->nhp++;
    while (i > 0 && before(&m, &x->hp[(i - 1) / 2])) {
        x->hp[i] = x->hp[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    x->hp[i] = m;
}

static spm_bigram hp_pop(spm *x) {
    spm_bigram top = x->hp[0], last = x->hp[--x->nhp];
    size_t i = 0, n = x->nhp;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(&x->hp[c + 1], &x->hp[c])) c++;
        if (!before(&x->hp[c], &last)) break;
        x->hp[i] = x->hp[c];
        i = c;
    }
    x->hp[i] = last;
    return top;
}

/* Queues the pair (left, right) if their concatenation is a token. */
static void try_pair(spm *x, int left, int right) {
    if (left < 0 || right < 0) return;
    const spm_sym *a = &x->sy[left];
    int id = strmap_get(&x->t->vocab, (const char *)a->s, (size_t)(a->n + x->sy[right].n));
    if (id >= 0) hp_push(x, (spm_bigram){x->t->score[id], left, right, a->n + x->sy[right].n});
}

static int push(int **ids, size_t *n, size_t *cap, int id) {
    if (!RESERVE(*ids, *cap, *n + 1)) return -1;
    (*ids)[(*n)++] = id;
    return 0;
}

/* Merges s[0, n) (already escaped) and appends its ids. */
static int spm_merge(spm *x, const u8 *s, size_t n, int **ids, size_t *nids, size_t *cap,
                     egm_err *e) {
    int ns = 0;
    for (size_t i = 0; i < n;) {
        int len;
        utf8_seq(s + i, n - i, &len);
        x->sy[ns] = (spm_sym){s + i, len, ns - 1, ns + 1};
        ns++;
        i += (size_t)len;
    }
    if (!ns) return 0;
    x->sy[ns - 1].next = -1;
    for (int i = 1; i < ns; i++) try_pair(x, i - 1, i);
    /* a merge queues at most two pairs, so the heap stays below 3 ns */
    while (x->nhp) {
        spm_bigram b = hp_pop(x);
        spm_sym *l = &x->sy[b.left], *r = &x->sy[b.right];
        if (!l->n || !r->n || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) x->sy[r->next].prev = b.left;
        try_pair(x, l->prev, b.left);
        try_pair(x, b.left, l->next);
    }
    for (int i = 0; i >= 0; i = x->sy[i].next) {
        const spm_sym *y = &x->sy[i];
        int id = strmap_get(&x->t->vocab, (const char *)y->s, (size_t)y->n);
        if (id >= 0) {
            if (push(ids, nids, cap, id)) goto oom;
            continue;
        }
        for (int k = 0; k < y->n; k++) {
            int bid = x->t->byte_id[y->s[k]];
            if (bid < 0)
                return egm_fail(e, "%s: no token for byte 0x%02X (the vocabulary has neither "
                                "<0x%02X> nor the byte itself), needed for text not in the "
                                "vocabulary", x->t->origin, y->s[k], y->s[k]);
            if (push(ids, nids, cap, bid)) goto oom;
        }
    }
    return 0;
oom:
    return egm_fail(e, "%s: out of memory while encoding", x->t->origin);
}

int egm_spm_encode(const egm_tokenizer *t, const u8 *s, size_t n, int prefix, int **ids,
                   size_t *nids, size_t *cap, egm_err *e) {
    /* escaped text: at most 3 bytes per input byte, plus the prefix */
    size_t spaces = 0, k = 0;
    for (size_t i = 0; i < n; i++) spaces += s[i] == ' ';
    size_t m = n + 2 * spaces + 3;
    u8 *w = malloc(m);
    spm x = {t, malloc(m * sizeof *x.sy), malloc(3 * m * sizeof *x.hp), 0};
    int rc = 0;
    if (!w || !x.sy || !x.hp) {
        rc = egm_fail(e, "%s: out of memory while encoding", t->origin);
        goto out;
    }
    if (prefix) memcpy(w, SPACE_MARK, 3), k = 3;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') memcpy(w + k, SPACE_MARK, 3), k += 3;
        else w[k++] = s[i];
    }
    rc = spm_merge(&x, w, k, ids, nids, cap, e);
out:
    free(w);
    free(x.sy);
    free(x.hp);
    return rc;
}
