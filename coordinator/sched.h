/* sched.h - continuous batching over a pipeline of stages.
 *
 * Sequences are spread over `micro_batches` groups; each group is one
 * micro-batch in flight. When a group's result comes back, its sequences
 * advance (sampled tokens appended, finished ones written out and their
 * slots and KV released), new requests join it while slots and KV allow,
 * and its next micro-batch goes out: decode rows first, then prefill chunks
 * up to `max_rows`. Results come back in submission order, so the batches
 * formed, and hence every number computed, depend on the options and the
 * input only: not on how the layers are split across ranks.
 *
 * Admission reserves KV for the sequence's whole length (prompt plus
 * max_new_tokens) on every stage, so a running sequence never runs out;
 * requests that do not fit wait for room.
 *
 * Prefix sharing (internal scoring with score_from): a request whose
 * context starts like a sequence in flight, or like the last one finished
 * (kept as a "held" source until the next one finishes or its room is
 * needed), starts from a copy of that sequence's cached positions; when the
 * source has not yet submitted them, the request waits for it. Every stage
 * applies micro-batches in submission order, so a copy always sees the
 * rows it copies. */
#ifndef EGM_SCHED_H
#define EGM_SCHED_H

#include <stdio.h>

#include "coordinator/jsonl.h"
#include "coordinator/pipe.h"
#include "coordinator/request.h"
#include "coordinator/resume.h"
#include "model/chat_template.h"
#include "model/config.h"
#include "model/tokenizer.h"

/* Score mode, internal callers (eval, perplexity, loglikelihood): instead
 * of a JSONL line, each finished sequence of n + 1 tokens hands over
 * lp[i] = log p(token i+1 | tokens 0..i) and greedy[i] = (token i+1 is the
 * argmax there), i < n; or, for a refused request, error (lp NULL). The
 * last token is a target only, never fed, so a sequence may be one token
 * longer than the model's context (lm-eval's windows are). */
typedef void (*egm_score_fn)(void *ctx, const char *id_json, const float *lp,
                             const unsigned char *greedy, int n, const char *error);
/* Score mode with on_score: the first lp index the consumer reads for this
 * request (a loglikelihood's first continuation token). Positions before it
 * are context only, so the scheduler may copy their KV from a sequence that
 * starts with the same tokens instead of computing it again (prefix
 * sharing: lm-eval's multiple-choice context is prefilled once for all its
 * choices), and lp/greedy below that index are then left 0. */
typedef int (*egm_score_from_fn)(void *ctx, const char *id_json);

/* A live source of requests and sink of results (egmla serve), in place of
 * the JSONL reader and writer. Requests are JSONL lines exactly as generate
 * reads them, results the lines generate writes, so a served request goes
 * through the very same parsing, scheduling and sampling as a batch one.
 * The scheduler calls these from its own thread only. */
#define EGM_LOAD_STAGES 64

typedef struct {
    int running;              /* sequences in flight */
    int waiting;              /* a request read and waiting for room (0/1) */
    int kv_blocks_used, kv_blocks_total;
    int slots;                /* max_seqs */
    long submits;             /* micro-batches submitted so far */
    double busy_s;            /* seconds in the pipe's submit and collect (computing,
                                 or waiting for the stages to) */
    /* Each stage's own counters, asked for about once a second while
     * serving (n_stages 0 until the first answer; at most EGM_LOAD_STAGES) */
    int n_stages;
    egm_stage_busy stages[EGM_LOAD_STAGES];
} egm_sched_load;

typedef struct egm_sched_feed egm_sched_feed;
struct egm_token_event;
struct egm_sched_feed {
    const char *origin;       /* names requests in messages */
    /* Once, before the first request: the pipeline is up. */
    int (*start)(egm_sched_feed *f, const egm_config *c, const egm_tokenizer *tok,
                 const egm_pipe_caps *caps, egm_err *e);
    /* The next request line, as egm_jsonl_next. wait=1 blocks until one
     * comes (the scheduler has nothing in flight); wait=0 returns 2 when
     * none is queued. 0: no more requests (draining), -1: fatal. */
    int (*next)(egm_sched_feed *f, int wait, const char **line, size_t *len, long *lineno,
                egm_err *e);
    /* Per-token events, as on_token below (ctx: the feed): settled text
     * deltas for streaming, log-probs when asked. */
    void (*token)(void *feed, const char *id_json, const struct egm_token_event *ev);
    /* The request's result line (ok=0: an error record; line NULL: it was
     * cancelled, its slot and KV released). */
    void (*result)(egm_sched_feed *f, const char *id_json, const char *line, int ok);
    /* 1 when the client went away: the sequence is dropped at once. */
    int (*cancelled)(egm_sched_feed *f, const char *id_json);
    /* After every micro-batch (and when idle): the scheduler's state. */
    void (*load)(egm_sched_feed *f, const egm_sched_load *l);
    /* Once, when the run ends (drained or failed), before the caller frees
     * the tokenizer: requests still open are answered. */
    void (*stop)(egm_sched_feed *f);
};

/* Generate mode, for streaming: one event per generated token, in order,
 * then one final event (token -1, finish_reason set) just before the
 * request's result line is written. text is the newly settled text: the
 * deltas of all events concatenate to the result's "text". A delta may be
 * empty while the text's end could still be the start of a stop string, or
 * is an incomplete UTF-8 character; nothing past a stop string is ever
 * delivered. logprob and the top arrays are set when the request asked for
 * log-probs (n_top = its "logprobs"), else n_top is -1. */
typedef struct egm_token_event {
    int token;                /* -1 on the final event */
    int index;                /* position in the result's "tokens" */
    const char *text;         /* not NUL-terminated */
    size_t text_len;
    float logprob;
    int n_top;
    const int *top_id;
    const float *top_lp;
    const char *finish_reason; /* final event: "stop" or "length"; else NULL */
} egm_token_event;
typedef void (*egm_token_fn)(void *ctx, const char *id_json, const egm_token_event *ev);

typedef struct {
    int mode;                 /* EGM_MODE_GENERATE / EGM_MODE_SCORE */
    int micro_batches;        /* groups in flight */
    int max_seqs;             /* concurrent sequences (<= pipe slots) */
    int max_rows;             /* rows per micro-batch (prefill chunking) */
    int add_bos;              /* prepend bos_token_id to text prompts */
    int stats;                /* add per-request statistics to outputs */
    egm_request defaults;     /* sampling / max_new_tokens / ignore_eos / stop / logprobs */
    const egm_chat_template *chat; /* renders "messages" lines; NULL: refused */
    int dump_fd;              /* score: --dump-logits file, or -1 */
    int progress;             /* progress line on stderr */
    long total;               /* input lines, for the progress line (-1: unknown) */
    const egm_idset *skip;    /* --resume: ids already answered, or NULL */
    egm_score_fn on_score;    /* score: results to a callback, not to `out` */
    egm_score_from_fn score_from; /* with on_score: enables prefix sharing */
    void *score_ctx;
    egm_sched_feed *feed;     /* non-NULL: requests and results go through it */
    egm_token_fn on_token;    /* generate: per-token events, or NULL */
    void *token_ctx;
} egm_sched_opts;

typedef struct {
    long requests, ok, failed;
    long skipped;             /* --resume: input lines already answered */
    long cancelled;           /* feed: dropped when their client went away */
    long prompt_tokens, generated_tokens;
    long shared_tokens;       /* prompt positions copied from another sequence */
    double seconds;
} egm_sched_stats;

/* Runs every request of `in` (or o->feed) through the pipe, writing one line
 * per request to `out` as soon as it finishes (out may be NULL with on_score
 * or a feed). The
 * output is synced every 2 s while the run lasts, and at the end. Returns 0 when the run completed (some lines may have failed:
 * see stats->failed), -1 on a fatal error (message in e). */
int egm_sched_run(const egm_sched_opts *o, const egm_config *c,
                  const egm_tokenizer *tok, egm_pipe *pipe, egm_jsonl *in,
                  egm_out *out, egm_sched_stats *stats, egm_err *e);

#endif
