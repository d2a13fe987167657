/* eval.h - lm-evaluation-harness request semantics over the score pipe.
 *
 * A "job" is a list of loglikelihood requests; each becomes one or more
 * scoring windows (token sequences). The windows run through the scheduler
 * in score mode like any `egmla score` input, and the per-position
 * log-probs and greedy flags come back through a callback and add up per
 * request:
 *
 *   loglikelihood(context, continuation) -> (sum of log p over the
 *       continuation's tokens, is_greedy = every one was the argmax)
 *   loglikelihood_rolling(text) -> sum of log p of every token of the text,
 *       over lm-eval's rolling windows (first conditioned on the prefix token)
 *
 * Token boundary (lm-eval's _encode_pair): trailing whitespace of the
 * context moves to the front of the continuation; context+continuation is
 * encoded as a whole and the continuation's tokens are those after the
 * context's own encoding. An empty context means the continuation is
 * conditioned on the prefix token alone (bos_token_id, else the first eos).
 * A sequence longer than max_len + 1 loses tokens on the left, as lm-eval's
 * (context + continuation)[-(max_length + 1):] does.
 *
 * Each (context, choice) pair is its own sequence, but its context is
 * computed once: a window tells the scheduler (egm_ll_score_from) that
 * only its continuation's log-probs are read, so the choices after the
 * first start from a copy of the context's cached positions. */
#ifndef EGM_EVAL_H
#define EGM_EVAL_H

#include <stddef.h>
#include <stdio.h>

#include "model/config.h"
#include "base/err.h"
#include "model/tokenizer.h"

typedef struct {
    int *toks, n;      /* the sequence scored (freed once written) */
    int first;         /* lp index of the first continuation token */
    int req;           /* the request it belongs to */
} egm_ll_window;

typedef struct {
    double logprob;    /* sum over every window */
    int is_greedy;
    int n_tokens;      /* continuation tokens scored */
    int n_windows, n_done;
    char *error;       /* malloc'd; NULL when fine */
} egm_ll_result;

typedef struct {
    egm_ll_window *w;
    int n_w, cap_w;
    egm_ll_result *r;
    int n_r, cap_r;
    int max_len;       /* model input length at most (the model's context) */
    int prefix;        /* the token an empty context stands for */
    int stride;        /* rolling: tokens predicted per window (0 = max_len) */
} egm_ll_job;

/* bos_token_id, else the first eos id, else -1. */
int egm_prefix_token(const egm_config *c);

int egm_ll_init(egm_ll_job *j, int max_len, int prefix);
void egm_ll_free(egm_ll_job *j);

/* lm-eval's token boundary; *ctx_ids / *cont_ids malloc'd. */
int egm_ll_encode(const egm_tokenizer *t, int prefix, const char *ctx, size_t ctx_len,
                  const char *cont, size_t cont_len, int **ctx_ids, int *n_ctx,
                  int **cont_ids, int *n_cont, egm_err *e);

/* Each returns the new request's index, or -1 on a fatal error (out of
 * memory). A request that cannot be scored (empty continuation, one longer
 * than max_len, bad UTF-8) is kept, with its error set. */
int egm_ll_add_tokens(egm_ll_job *j, const int *ctx, int n_ctx, const int *cont, int n_cont);
int egm_ll_add_text(egm_ll_job *j, const egm_tokenizer *t, const char *ctx, size_t ctx_len,
                    const char *cont, size_t cont_len);
int egm_ll_add_rolling(egm_ll_job *j, const int *toks, int n);
int egm_ll_add_error(egm_ll_job *j, const char *msg);

/* Writes every window as a score request {"id": window, "tokens": [...]}
 * and frees its tokens. */
int egm_ll_write(egm_ll_job *j, FILE *f, egm_err *e);
/* The scheduler's egm_score_from_fn: a window's `first`, so windows with the
 * same context (a question's choices) share its prefill. */
int egm_ll_score_from(void *ctx, const char *id_json);
/* The scheduler's egm_score_fn; ctx is the job. */
void egm_ll_on_score(void *ctx, const char *id_json, const float *lp,
                     const unsigned char *greedy, int n, const char *error);

/* ---- metrics, as lm-eval computes them ---- */

/* Python's len(str): Unicode code points of UTF-8 text. */
size_t egm_utf8_chars(const char *s, size_t len);
/* Python's str.isspace() for one code point. */
int egm_py_isspace(unsigned cp);
/* len(re.split(r"\s+", text)): whitespace runs + 1 (wikitext's word count). */
long egm_count_words(const char *s, size_t len);
/* numpy.argmax: the first maximum. */
int egm_argmax_d(const double *x, int n);
/* lm-eval mean_stderr: sqrt(sample variance (n - 1) / n); NaN when n < 2. */
double egm_mean_stderr(const double *x, int n);

#endif
