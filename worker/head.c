/* head.c - sampling and scoring on the last stage. */
#include "head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"

int egm_head_init(egm_head *h, int n_slots, int vocab, egm_err *e) {
    memset(h, 0, sizeof *h);
    h->seqs = calloc((size_t)n_slots, sizeof *h->seqs);
    if (!h->seqs) return egm_fail(e, "out of memory for %d sequence slots", n_slots);
    h->n_slots = n_slots;
    h->V = vocab;
    return 0;
}

void egm_head_free(egm_head *h) {
    for (int i = 0; i < h->n_slots; i++) free(h->seqs[i].hist);
    free(h->seqs);
    free(h->logits.p);
    free(h->scratch.p);
    free(h->rows.p);
    memset(h, 0, sizeof *h);
}

static void hist_push(egm_head_seq *q, int tok) {
    if (q->n_hist == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 256;
        q->hist = realloc(q->hist, sizeof(int) * (size_t)q->cap);
        if (!q->hist) abort();
    }
    q->hist[q->n_hist++] = tok;
}

int egm_head_open(egm_head *h, int slot, int mode, const egm_sampling *sp,
                  const int *tokens, int n_tokens) {
    egm_head_seq *q = &h->seqs[slot];
    q->mode = mode;
    q->n_hist = 0;
    q->n_total = 0;
    q->top_n = 0;
    if (sp) q->sp = *sp; else egm_sampling_default(&q->sp);
    egm_rng_seed(&q->rng, q->sp.seed);
    if (mode == EGM_MODE_SCORE) {
        for (int i = 0; i < n_tokens; i++) hist_push(q, tokens[i]);
        q->n_total = n_tokens;
    }
    return 0;
}

void egm_head_close(egm_head *h, int slot) { h->seqs[slot].n_hist = 0; }

void egm_head_set_top(egm_head *h, int slot, int n) {
    h->seqs[slot].top_n = n < 0 ? -1 : n > EGM_HEAD_MAX_TOP ? EGM_HEAD_MAX_TOP : n;
}

/* The k most likely entries of x (NaNs never), log-probs as egm_logprob
 * computes them (same max, same double sum), so the sampled token's entry
 * equals its `logprob` bit for bit. */
static void top_logprobs(const float *x, int V, int k, egm_head_out *o) {
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (x[i] != x[i] || (n == k && !(x[i] > x[o->top_id[n - 1]]))) continue;
        int j = n < k ? n++ : n - 1;
        while (j > 0 && x[i] > x[o->top_id[j - 1]]) {
            o->top_id[j] = o->top_id[j - 1];
            j--;
        }
        o->top_id[j] = i;
    }
    o->n_top = n;
    /* egm_logprob's arithmetic, with the max and the sum computed once */
    float max = -INFINITY;
    for (int i = 0; i < V; i++)
        if (x[i] > max) max = x[i];
    double sum = 0.0;
    if (isfinite(max))
        for (int i = 0; i < V; i++) sum += exp((double)x[i] - (double)max);
    for (int j = 0; j < n; j++) {
        float v = x[o->top_id[j]];
        o->top_lp[j] = max == -INFINITY ? -INFINITY
                     : max == INFINITY ? (v == INFINITY ? 0.0f : -INFINITY)
                     : (float)((double)v - (double)max - log(sum));
    }
}

/* One wanted row's output: argmax, then the target's log-prob (score) or a
 * sampled token with its log-prob (generate). */
typedef struct {
    egm_head *h;
    const egm_mbatch *b;
    const int *rows;     /* [k]: the batch row of output k */
    const float *logits; /* [k][V] */
    float *scratch;      /* [thread][2V] */
    egm_head_out *out;
} head_job;

static void head_row(void *ctx, int k, int thread) {
    head_job *j = ctx;
    int V = j->h->V, r = j->rows[k];
    egm_head_seq *q = &j->h->seqs[j->b->slot[r]];
    const float *lg = j->logits + (long)k * V;
    egm_head_out *o = &j->out[k];
    memset(o, 0, sizeof *o);
    o->slot = j->b->slot[r];
    o->pos = j->b->pos[r];
    if (q->mode == EGM_MODE_SCORE) {
        o->has_target = j->b->pos[r] + 1 < q->n_total;
        if (o->has_target) {
            o->token = q->hist[j->b->pos[r] + 1];
            o->logprob = egm_logprob(lg, V, o->token);
            o->greedy = egm_argmax(lg, V) == o->token;
        }
    } else {
        float *tmp = j->scratch + (long)thread * 2 * V;
        memcpy(tmp, lg, sizeof(float) * V);
        o->token = egm_sample(tmp, V, &q->sp, q->hist, q->n_hist, &q->rng, (int *)(tmp + V));
        if (q->top_n >= 0) { /* -1: nobody asked for log-probs (two passes over V) */
            o->logprob = egm_logprob(lg, V, o->token);
            o->greedy = egm_argmax(lg, V) == o->token;
        }
        if (q->top_n > 0) top_logprobs(lg, V, q->top_n, o);
    }
}

int egm_head_run(egm_head *h, egm_stage *s, const egm_mbatch *b,
                 const unsigned char *want, const float *x, egm_head_out *out) {
    int n_want = 0, V = h->V;
    int *rows = (int *)egm_buf_need(&h->rows, b->n + 1);
    for (int r = 0; r < b->n; r++)
        if (want[r]) rows[n_want++] = r;
    float *logits = egm_buf_need(&h->logits, (long)(n_want ? n_want : 1) * V);
    if (n_want) egm_stage_logits(s, x, rows, n_want, logits);

    /* Generation history grows by every row that passes, wanted or not.
     * The scheduler gives a generating sequence one wanted row per batch
     * (its last), so pushing every row first and then sampling gives each
     * row its history up to itself; then the rows are independent (each
     * sequence has its own generator) and split over the stage's threads
     * with the same results. Two wanted rows of one generating sequence
     * run serially, each seeing only the tokens before it. */
    int twice = 0;
    unsigned run = ++h->runs;
    for (int k = 0; k < n_want; k++) {
        egm_head_seq *q = &h->seqs[b->slot[rows[k]]];
        if (q->mode != EGM_MODE_GENERATE) continue;
        twice |= q->mark == run;
        q->mark = run;
    }
    egm_pool *pool = twice ? NULL : s->pool;
    head_job j = {h, b, rows, logits, egm_buf_need(&h->scratch, (long)egm_pool_size(pool) * 2 * V),
                  out};
    for (int r = 0, k = 0; r < b->n; r++) {
        egm_head_seq *q = &h->seqs[b->slot[r]];
        if (q->mode == EGM_MODE_GENERATE) hist_push(q, b->token[r]);
        if (twice && want[r]) head_row(&j, k++, 0);
    }
    if (!twice) egm_pool_run(pool, n_want, head_row, &j);
    return n_want;
}

const float *egm_head_last_logits(const egm_head *h) { return h->logits.p; }
