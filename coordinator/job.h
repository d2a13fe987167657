/* job.h - one job of requests through the scheduler: options and I/O.
 *
 * generate and score fill egm_run_opts from the command line; eval,
 * perplexity and loglikelihood run internal score jobs with it. run.h runs
 * a job, in process or over MPI. */
#ifndef EGM_JOB_H
#define EGM_JOB_H

#include <stdint.h>
#include <stdio.h>

#include "base/args.h"
#include "base/err.h"
#include "base/rank.h"
#include "coordinator/jsonl.h"
#include "coordinator/request.h"
#include "coordinator/resume.h"
#include "coordinator/sched.h"
#include "model/chat_template.h"
#include "model/tokenizer.h"

/* Options of generate/score, resolved. */
typedef struct {
    int mode;
    const char *model, *input, *out, *kv_budget, *kv_dtype, *wire_dtype;
    const char *dump_logits, *topology;
    int max_batch, micro_batches, chunk, block_tokens, threads;
    int micro_batches_set;    /* given on the command line (else raised to the stage count) */
    int stats, add_bos, gate_table;
    int attn_bf16;            /* --attn-dtype bf16 */
    int batch_invariant;      /* --batch-invariant */
    double rank_timeout;      /* seconds without news before looking for a dead rank */
    egm_request defaults;     /* max_new_tokens, ignore_eos, sampling */
    int resume;               /* generate: skip ids already in --out, append */
    /* internal score jobs (eval, perplexity, loglikelihood): requests come
     * from in_file (origin in_name) and results go to on_score, not to --out */
    FILE *in_file;
    const char *in_name;
    egm_score_fn on_score;
    egm_score_from_fn score_from; /* NULL: no prefix sharing */
    void *score_ctx;
    const char *job;          /* name in the summary line; NULL: by mode */
    const char *chat_template; /* --chat-template NAME|FILE, or NULL: the model's */
    egm_sched_feed *feed;     /* egmla serve: requests and results, not files */
} egm_run_opts;

typedef struct {
    egm_jsonl *in;
    egm_out *out;
    int dump_fd;
    size_t kv_budget;
    egm_idset *done;          /* --resume: ids already in the output */
    long total;               /* input lines (-1: not a regular file) */
} egm_run_io;

void egm_run_opts_default(egm_run_opts *r);

/* A command on generate's engine options (serve): its own name, help and
 * options after the engine's (the batch-file ones dropped), and its own
 * entry instead of egm_run, given the resolved options. */
typedef struct {
    const char *name, *about;
    const egm_opt *opts;      /* {0}-terminated */
    int (*go)(egm_run_opts *r);
} egm_run_ext;
int egm_run_ext_main(const egm_run_ext *x, int argc, char **argv);
/* Single process: the coordinator drives an in-process stage. */
int egm_run_local(const egm_run_opts *r);
int egm_run_prepare(const egm_run_opts *r, egm_run_io *io, egm_err *e);
void egm_run_io_close(egm_run_io *io);
void egm_sched_opts_from_run(const egm_run_opts *r, const egm_run_io *io, egm_sched_opts *so);
int egm_run_finish(const egm_run_opts *r, const egm_sched_stats *st, int failed_run, const egm_err *e);
int egm_run_load_tokenizer(const char *dir, egm_tokenizer **tok, egm_err *e);
/* generate: the chat template for "messages" lines (*chat NULL when the
 * model has none and no --chat-template); an unrecognised one fails. score:
 * only --chat-template's. Internal score jobs: none. */
int egm_run_load_chat(const egm_run_opts *r, const egm_config *c, const egm_tokenizer *tok,
                      egm_chat_template **chat, egm_err *e);

#endif
