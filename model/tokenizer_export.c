/* tokenizer_export.c - a loaded tokenizer.json as GGUF tokenizer.ggml.*
 * metadata (egm_tok_to_gguf, see tokenizer.h). */
#include "tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int rank, a, b; } merge_rec;

static int by_rank(const void *x, const void *y) {
    return ((const merge_rec *)x)->rank - ((const merge_rec *)y)->rank;
}

/* Merges in rank order as "left right" strings (owned by *out). */
static int merge_strings(const egm_tokenizer *t, char ***out, uint64_t *n, egm_err *e) {
    size_t cnt = 0;
    for (size_t i = 0; i < t->merges.cap; i++) cnt += t->merges.e[i].key != PAIR_EMPTY;
    merge_rec *r = malloc((cnt ? cnt : 1) * sizeof *r);
    char **s = calloc(cnt ? cnt : 1, sizeof *s);
    if (!r || !s) {
        free(r);
        free(s);
        return egm_fail(e, "%s: out of memory", t->origin);
    }
    size_t k = 0;
    for (size_t i = 0; i < t->merges.cap; i++) {
        const pair_ent *p = &t->merges.e[i];
        if (p->key != PAIR_EMPTY) r[k++] = (merge_rec){p->rank, (int)(p->key >> 32), (int)(uint32_t)p->key};
    }
    qsort(r, cnt, sizeof *r, by_rank);
    int rc = 0;
    for (size_t i = 0; i < cnt && !rc; i++) {
        const char *a = t->tok[r[i].a], *b = t->tok[r[i].b];
        size_t len = strlen(a) + strlen(b) + 2;
        if (!(s[i] = malloc(len))) rc = egm_fail(e, "%s: out of memory", t->origin);
        else snprintf(s[i], len, "%s %s", a, b);
    }
    free(r);
    *out = s;
    *n = cnt;
    return rc;
}

int egm_tok_to_gguf(const egm_tokenizer *t, int bos, int eos, egm_gguf_writer *w, egm_err *e) {
    if (t->spm || t->n_steps != 1 || !t->steps[0].gpt2 || t->ignore_merges || t->unk_id >= 0)
        return egm_fail(e, "%s: only a plain byte-level BPE tokenizer (ByteLevel pre-tokenizer "
                        "with its GPT-2 regex, no unk token) can be written as GGUF metadata",
                        t->origin);
    int V = t->n_ids;
    const char **tok = calloc((size_t)V, sizeof *tok);
    char **pads = calloc((size_t)V, sizeof *pads);
    int32_t *types = calloc((size_t)V, sizeof *types);
    char **merges = NULL;
    uint64_t nm = 0;
    int rc = !tok || !pads || !types ? egm_fail(e, "%s: out of memory", t->origin) : 0;
    for (int id = 0; id < V && !rc; id++) {
        if (!t->tok[id]) { /* a hole in the ids: what the converter writes */
            char buf[32];
            snprintf(buf, sizeof buf, "[PAD%d]", id);
            if (!(pads[id] = strdup(buf))) rc = egm_fail(e, "%s: out of memory", t->origin);
            tok[id] = pads[id];
            types[id] = 5; /* unused */
            continue;
        }
        tok[id] = t->tok[id];
        int added = strmap_get(&t->added_map, tok[id], strlen(tok[id])) == id;
        types[id] = !added ? 1 : t->special[id] ? 3 : 4; /* normal, control, user-defined */
    }
    if (!rc) rc = merge_strings(t, &merges, &nm, e);
    int add_bos = t->has_tpl && t->n_tpl > 0 && t->tpl[0] >= 0;
    int add_eos = t->has_tpl && t->n_tpl > 0 && t->tpl[t->n_tpl - 1] >= 0;
    if (!rc)
        rc = egm_gguf_w_str(w, "tokenizer.ggml.model", "gpt2", e) ||
             egm_gguf_w_str(w, "tokenizer.ggml.pre", "gpt-2", e) ||
             egm_gguf_w_arr_str(w, "tokenizer.ggml.tokens", tok, NULL, (uint64_t)V, e) ||
             egm_gguf_w_arr(w, "tokenizer.ggml.token_type", EGM_GGUF_I32, types, (uint64_t)V, e) ||
             egm_gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, nm, e) ||
             (bos >= 0 && egm_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos, e)) ||
             (eos >= 0 && egm_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)eos, e)) ||
             egm_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", add_bos, e) ||
             egm_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", add_eos, e) ? -1 : 0;
    for (int id = 0; pads && id < V; id++) free(pads[id]);
    for (uint64_t i = 0; merges && i < nm; i++) free(merges[i]);
    free(merges);
    free(pads);
    free((void *)tok);
    free(types);
    return rc;
}
