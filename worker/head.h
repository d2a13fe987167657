/* head.h - what the last stage does with logits: sample or score.
 *
 * The last stage owns, per sequence slot, the sampling parameters and the
 * per-request generator (so a seeded request draws the same tokens whatever
 * shares its batch), and the token history the repetition penalty needs.
 * Only token ids and log-probs leave it; logits only when asked for. */
#ifndef EGM_HEAD_H
#define EGM_HEAD_H

#include "base/buf.h"
#include "kernels/sampling.h"
#include "worker/stage.h"

enum { EGM_MODE_GENERATE = 0, EGM_MODE_SCORE = 1 };
enum { EGM_HEAD_MAX_TOP = 20 };   /* top log-probs per generated token, at most */

typedef struct {
    int mode;
    egm_sampling sp;
    egm_rng rng;
    int *hist;          /* generate: every token seen so far; score: all tokens */
    int n_hist, cap;
    int n_total;        /* score: number of tokens */
    int top_n;          /* generate: alternatives reported per token (0: none;
                         * -1: not even the token's own log-prob) */
    unsigned mark;      /* the egm_head_run that last gave it a wanted row */
} egm_head_seq;

/* One result per wanted row. */
typedef struct {
    int slot;
    int pos;
    int token;          /* generate: the sampled next token */
    float logprob;      /* score: log p(token at pos+1 | ...); generate: of `token` */
    int greedy;         /* the target (or sampled token) is the argmax */
    int has_target;     /* score: pos+1 < n_total */
    /* generate with top_n > 0: the top_n most likely tokens of the raw
     * distribution (logits before penalties and temperature, as vLLM
     * reports), most likely first (ties: lower id), with log-probs computed
     * exactly as `logprob` is */
    int n_top;
    int top_id[EGM_HEAD_MAX_TOP];
    float top_lp[EGM_HEAD_MAX_TOP];
} egm_head_out;

typedef struct {
    egm_head_seq *seqs;
    int n_slots, V;
    unsigned runs;      /* egm_head_run calls so far (egm_head_seq.mark) */
    egm_buf logits, scratch, rows;
} egm_head;

int egm_head_init(egm_head *h, int n_slots, int vocab, egm_err *e);
void egm_head_free(egm_head *h);
/* tokens: score only (the whole sequence, for the targets). */
int egm_head_open(egm_head *h, int slot, int mode, const egm_sampling *sp,
                  const int *tokens, int n_tokens);
void egm_head_close(egm_head *h, int slot);
/* After egm_head_open: report n (0..EGM_HEAD_MAX_TOP) alternatives with
 * each token generated in slot (clamped); n < 0: no log-prob at all (the
 * outputs' logprob and greedy stay 0), as when a request asks for none. */
void egm_head_set_top(egm_head *h, int slot, int n);

/* Runs the final norm + lm_head on the wanted rows of x, then samples or
 * scores them. want[r] != 0 marks rows that produce an output. Writes
 * outputs in row order; returns how many. If keep_logits, the logits of the
 * wanted rows stay available via egm_head_last_logits. */
int egm_head_run(egm_head *h, egm_stage *s, const egm_mbatch *b,
                 const unsigned char *want, const float *x, egm_head_out *out);
const float *egm_head_last_logits(const egm_head *h);

#endif
