/* eval.c - loglikelihood requests as scoring windows, and lm-eval's metrics. */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int egm_prefix_token(const egm_config *c) {
    if (c->bos_token_id >= 0) return c->bos_token_id;
    return c->n_eos > 0 ? c->eos_token_ids[0] : -1;
}

int egm_ll_init(egm_ll_job *j, int max_len, int prefix) {
    memset(j, 0, sizeof *j);
    j->max_len = max_len;
    j->prefix = prefix;
    return 0;
}

void egm_ll_free(egm_ll_job *j) {
    for (int i = 0; i < j->n_w; i++) free(j->w[i].toks);
    for (int i = 0; i < j->n_r; i++) free(j->r[i].error);
    free(j->w);
    free(j->r);
    memset(j, 0, sizeof *j);
}

/* ---- UTF-8 and Python's notion of whitespace ---- */

int egm_py_isspace(unsigned cp) {
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f)) return 1;
    if (cp < 0x80) return 0;
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* Decodes the code point at s[i] (i < len); *n = its byte length. Invalid
 * bytes count as one code point each, as a lone byte. */
static unsigned utf8_at(const char *s, size_t len, size_t i, int *n) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned c = u[i];
    int k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + (size_t)k > len) k = 1;
    for (int m = 1; m < k; m++)
        if ((u[i + m] & 0xc0) != 0x80) k = 1;
    *n = k;
    if (k == 1) return c;
    unsigned cp = c & (0x7f >> k);
    for (int m = 1; m < k; m++) cp = (cp << 6) | (u[i + m] & 0x3f);
    return cp;
}

size_t egm_utf8_chars(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; n++) {
        int k;
        utf8_at(s, len, i, &k);
        i += (size_t)k;
    }
    return n;
}

long egm_count_words(const char *s, size_t len) {
    long runs = 0;
    int in_space = 0;
    for (size_t i = 0; i < len;) {
        int k;
        int sp = egm_py_isspace(utf8_at(s, len, i, &k));
        if (sp && !in_space) runs++;
        in_space = sp;
        i += (size_t)k;
    }
    return runs + 1;
}

/* Bytes of s[0..len) left once trailing whitespace is stripped (rstrip). */
static size_t rstrip_len(const char *s, size_t len) {
    size_t keep = 0;
    for (size_t i = 0; i < len;) {
        int k;
        unsigned cp = utf8_at(s, len, i, &k);
        i += (size_t)k;
        if (!egm_py_isspace(cp)) keep = i;
    }
    return keep;
}

int egm_argmax_d(const double *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[best]) && !isnan(x[i]))) best = i;
    return best;
}

double egm_mean_stderr(const double *x, int n) {
    if (n < 2) return NAN;
    double mu = 0, ss = 0;
    for (int i = 0; i < n; i++) mu += x[i];
    mu /= n;
    for (int i = 0; i < n; i++) ss += (x[i] - mu) * (x[i] - mu);
    return sqrt(ss / (n - 1) / n);
}

/* ---- requests and windows ---- */

static int new_request(egm_ll_job *j) {
    if (j->n_r == j->cap_r) {
        int cap = j->cap_r ? j->cap_r * 2 : 64;
        egm_ll_result *r = realloc(j->r, sizeof *r * (size_t)cap);
        if (!r) return -1;
        j->r = r;
        j->cap_r = cap;
    }
    egm_ll_result *r = &j->r[j->n_r];
    memset(r, 0, sizeof *r);
    r->is_greedy = 1;
    return j->n_r++;
}

int egm_ll_add_error(egm_ll_job *j, const char *msg) {
    int k = new_request(j);
    if (k < 0) return -1;
    j->r[k].error = strdup(msg);
    return j->r[k].error ? k : -1;
}

/* One window: seq = a[0..na) + b[0..nb), scoring b's tokens. */
static int add_window(egm_ll_job *j, int req, const int *a, int na, const int *b, int nb) {
    if (j->n_w == j->cap_w) {
        int cap = j->cap_w ? j->cap_w * 2 : 64;
        egm_ll_window *w = realloc(j->w, sizeof *w * (size_t)cap);
        if (!w) return -1;
        j->w = w;
        j->cap_w = cap;
    }
    /* keep the last max_len + 1 tokens: the model sees max_len of them */
    int n = na + nb, cut = n > j->max_len + 1 ? n - (j->max_len + 1) : 0;
    egm_ll_window *w = &j->w[j->n_w];
    w->toks = malloc(sizeof(int) * (size_t)(n - cut));
    if (!w->toks) return -1;
    for (int i = cut; i < n; i++) w->toks[i - cut] = i < na ? a[i] : b[i - na];
    w->n = n - cut;
    w->first = w->n - nb - 1;
    w->req = req;
    j->n_w++;
    j->r[req].n_windows++;
    j->r[req].n_tokens += nb;
    return 0;
}

int egm_ll_add_tokens(egm_ll_job *j, const int *ctx, int n_ctx, const int *cont, int n_cont) {
    char msg[160];
    if (n_cont == 0) snprintf(msg, sizeof msg, "the continuation is empty (0 tokens)");
    else if (n_cont > j->max_len)
        snprintf(msg, sizeof msg, "the continuation has %d tokens, more than the model's context of %d",
                 n_cont, j->max_len);
    else if (n_ctx == 0 && j->prefix < 0)
        snprintf(msg, sizeof msg, "the context is empty and the model has no bos or eos token to stand for it");
    else msg[0] = 0;
    if (msg[0]) return egm_ll_add_error(j, msg);
    int k = new_request(j);
    if (k < 0) return -1;
    if (n_ctx == 0) return add_window(j, k, &j->prefix, 1, cont, n_cont) ? -1 : k;
    return add_window(j, k, ctx, n_ctx, cont, n_cont) ? -1 : k;
}

int egm_ll_encode(const egm_tokenizer *t, int prefix, const char *ctx, size_t ctx_len,
                  const char *cont, size_t cont_len, int **ctx_ids, int *n_ctx,
                  int **cont_ids, int *n_cont, egm_err *e) {
    *ctx_ids = *cont_ids = NULL;
    *n_ctx = *n_cont = 0;
    if (ctx_len == 0) {
        /* conditioned on the prefix token alone */
        if (egm_tok_encode(t, cont, cont_len, 0, cont_ids, n_cont, e)) return -1;
        *ctx_ids = malloc(sizeof(int));
        if (!*ctx_ids) return egm_fail(e, "out of memory");
        **ctx_ids = prefix;
        *n_ctx = prefix >= 0;
        return 0;
    }
    size_t keep = rstrip_len(ctx, ctx_len);
    char *whole = malloc(ctx_len + cont_len + 1);
    if (!whole) return egm_fail(e, "out of memory");
    memcpy(whole, ctx, ctx_len);
    memcpy(whole + ctx_len, cont, cont_len);
    int *w = NULL, nw = 0;
    /* context + continuation is the same text whatever the split: only the
     * context's own encoding moves with the trailing whitespace */
    int rc = egm_tok_encode(t, whole, ctx_len + cont_len, 0, &w, &nw, e);
    free(whole);
    if (rc) return -1;
    if (egm_tok_encode(t, ctx, keep, 0, ctx_ids, n_ctx, e)) {
        free(w);
        return -1;
    }
    int nc = *n_ctx < nw ? *n_ctx : nw;
    *cont_ids = malloc(sizeof(int) * (size_t)(nw - nc + 1));
    if (!*cont_ids) {
        free(w);
        return egm_fail(e, "out of memory");
    }
    memcpy(*cont_ids, w + nc, sizeof(int) * (size_t)(nw - nc));
    *n_cont = nw - nc;
    free(w);
    return 0;
}

int egm_ll_add_text(egm_ll_job *j, const egm_tokenizer *t, const char *ctx, size_t ctx_len,
                    const char *cont, size_t cont_len) {
    int *a, *b, na, nb;
    egm_err e;
    if (egm_ll_encode(t, j->prefix, ctx, ctx_len, cont, cont_len, &a, &na, &b, &nb, &e))
        return egm_ll_add_error(j, e.msg);
    /* a context of nothing but whitespace encodes to no tokens: the
     * prefix token stands for it, as for an empty one */
    int k = egm_ll_add_tokens(j, a, na, b, nb);
    free(a);
    free(b);
    return k;
}

/* lm-eval's get_rolling_token_windows + make_disjoint_window: the first
 * window predicts tokens 0..L-1 after the prefix token; each later one
 * predicts the next `stride` tokens with the L + 1 - (predicted) tokens
 * before them as context. With stride = L (lm-eval's context_len = 1) the
 * windows are disjoint. */
int egm_ll_add_rolling(egm_ll_job *j, const int *toks, int n) {
    if (n == 0) return egm_ll_add_error(j, "the text is empty (0 tokens)");
    if (j->prefix < 0) return egm_ll_add_error(j, "the model has no bos or eos token to start the first window");
    int k = new_request(j);
    if (k < 0) return -1;
    int L = j->max_len, stride = j->stride > 0 && j->stride < L ? j->stride : L;
    int first = n < L ? n : L;
    if (add_window(j, k, &j->prefix, 1, toks, first)) return -1;
    for (int done = first; done < n;) {
        int wp = n - done < stride ? n - done : stride;
        int end = done + wp;
        /* context: the tokens before the predicted ones, L + 1 in all */
        if (add_window(j, k, toks + end - L - 1, L + 1 - wp, toks + end - wp, wp)) return -1;
        done = end;
    }
    return k;
}

int egm_ll_write(egm_ll_job *j, FILE *f, egm_err *e) {
    for (int i = 0; i < j->n_w; i++) {
        egm_ll_window *w = &j->w[i];
        fprintf(f, "{\"id\":%d,\"tokens\":[", i);
        for (int t = 0; t < w->n; t++) fprintf(f, t ? ",%d" : "%d", w->toks[t]);
        fputs("]}\n", f);
        free(w->toks);
        w->toks = NULL;
    }
    if (fflush(f) || ferror(f)) return egm_fail(e, "cannot write the scoring requests to a temporary file");
    return 0;
}

int egm_ll_score_from(void *ctx, const char *id_json) {
    const egm_ll_job *j = ctx;
    int w = id_json ? atoi(id_json) : -1;
    return w >= 0 && w < j->n_w ? j->w[w].first : 0;
}

void egm_ll_on_score(void *ctx, const char *id_json, const float *lp,
                     const unsigned char *greedy, int n, const char *error) {
    egm_ll_job *j = ctx;
    int w = id_json ? atoi(id_json) : -1;
    if (w < 0 || w >= j->n_w) return;
    egm_ll_result *r = &j->r[j->w[w].req];
    r->n_done++;
    if (error || !lp) {
        if (!r->error) r->error = strdup(error ? error : "no result");
        return;
    }
    for (int i = j->w[w].first; i < n; i++) {
        r->logprob += lp[i];
        if (!greedy[i]) r->is_greedy = 0;
    }
}
