/* job.c - one job of requests through the scheduler: its options, its
 * input and output, the summary line and exit status, and the single-process
 * pipeline. run.c chooses between this and the MPI coordinator; the commands
 * (cmd_run.c, cmd_eval.c) fill the options. */
#include "job.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/exit.h"
#include "base/size.h"
#include "coordinator/engine.h"
#include "coordinator/pipe.h"
#include "model/source.h"
#include "model/weights.h"

/* Fills defaults for every run option: the engine's (engine.c) and the
 * requests' (request.c, sampling.c). */
void egm_run_opts_default(egm_run_opts *r) {
    memset(r, 0, sizeof *r);
    egm_engine_opts eo;
    egm_engine_defaults(&eo);
    egm_engine_to_run(&eo, r);
    r->model = NULL;          /* resolved when the command has its options */
    r->input = "-";
    r->out = "-";
    egm_request_defaults(&r->defaults);
}

/* Checks options that need no model, then opens input and output before
 * any model work, so that a bad path fails at once. */
int egm_run_prepare(const egm_run_opts *r, egm_run_io *io, egm_err *e) {
    memset(io, 0, sizeof *io);
    io->dump_fd = -1;
    if (egm_parse_size(r->kv_budget, &io->kv_budget) || io->kv_budget == 0)
        return egm_fail(e, "--kv-budget: expected a size such as 512MiB, found \"%s\"", r->kv_budget);
    if (strcmp(r->kv_dtype, "fp32") && strcmp(r->kv_dtype, "bf16"))
        return egm_fail(e, "--kv-dtype: expected fp32 or bf16, found \"%s\"", r->kv_dtype);
    io->total = -1;
    if (r->feed) return 0; /* egmla serve: no files */
    if (r->in_file) {
        /* an internal score job: no JSONL output */
        io->in = egm_jsonl_from_file(r->in_file, r->in_name);
        if (!io->in) return egm_fail(e, "out of memory");
        return 0;
    }
    if (egm_jsonl_check_distinct(r->input, r->out, e)) return -1;
    io->in = egm_jsonl_open(r->input, e);
    if (!io->in) return -1;
    io->total = egm_count_lines(r->input);
    if (r->resume) {
        if (!strcmp(r->out, "-"))
            return egm_fail(e, "--resume needs --out FILE: it reads the ids already there");
        io->done = egm_idset_new();
        if (!io->done) return egm_fail(e, "out of memory");
        if (egm_resume_load(r->out, io->done, e)) return -1;
        io->out = egm_out_open_append(r->out, e);
    } else {
        io->out = egm_out_open(r->out, e);
    }
    if (!io->out) return -1;
    if (r->dump_logits && !strcmp(r->dump_logits, "-"))
        return egm_fail(e, "--dump-logits needs a file, not -: each sequence's logits are "
                        "written at their offset, out of order");
    if (r->dump_logits) {
        io->dump_fd = open(r->dump_logits, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (io->dump_fd < 0)
            return egm_fail(e, "--dump-logits %s: cannot create: %s", r->dump_logits, strerror(errno));
    }
    return 0;
}

void egm_run_io_close(egm_run_io *io) {
    egm_err e;
    if (io->in) egm_jsonl_close(io->in);
    if (io->out && egm_out_close(io->out, &e)) fprintf(stderr, "egmla: %s\n", e.msg);
    if (io->dump_fd >= 0) close(io->dump_fd);
    egm_idset_free(io->done);
    memset(io, 0, sizeof *io);
    io->dump_fd = -1;
}

void egm_sched_opts_from_run(const egm_run_opts *r, const egm_run_io *io, egm_sched_opts *so) {
    memset(so, 0, sizeof *so);
    so->mode = r->mode;
    so->micro_batches = r->micro_batches;
    so->max_seqs = r->max_batch;
    so->max_rows = r->chunk;
    so->add_bos = r->add_bos;
    so->stats = r->stats;
    so->defaults = r->defaults;
    so->dump_fd = io->dump_fd;
    so->progress = isatty(2);
    so->total = io->total;
    so->skip = io->done;
    so->on_score = r->on_score;
    so->score_from = r->score_from;
    so->score_ctx = r->score_ctx;
    so->feed = r->feed;
    if (r->feed) {
        so->progress = 0;
        so->on_token = r->feed->token;
        so->token_ctx = r->feed;
    }
}

/* Prints the summary and turns the outcome into an exit status. */
int egm_run_finish(const egm_run_opts *r, const egm_sched_stats *st, int failed_run, const egm_err *e) {
    if (failed_run) fprintf(stderr, "egmla: %s\n", e->msg);
    const char *job = r->job ? r->job : r->mode == EGM_MODE_SCORE ? "score" : "generate";
    double el = st->seconds > 0 ? st->seconds : 1e-9;
    fprintf(stderr, "egmla %s: %ld requests, %ld ok, %ld failed", job, st->requests, st->ok, st->failed);
    if (r->resume) fprintf(stderr, ", %ld skipped (already in %s)", st->skipped, r->out);
    fprintf(stderr, "; %ld prompt + %ld generated tokens in %.2f s (%.1f prompt tok/s, %.1f generated tok/s)\n",
            st->prompt_tokens, st->generated_tokens, st->seconds, st->prompt_tokens / el,
            st->generated_tokens / el);
    if (st->shared_tokens)
        fprintf(stderr, "egmla %s: %ld of the %ld prompt positions were shared contexts, copied "
                "from another sequence's cache instead of computed\n", job, st->shared_tokens,
                st->prompt_tokens);
    if (st->cancelled)
        fprintf(stderr, "egmla %s: %ld requests cancelled by their clients\n", job, st->cancelled);
    if (failed_run) return EGM_EXIT_FAIL;
    /* a server that drained has done its job, whatever its clients sent */
    if (r->feed) return 0;
    return st->failed ? EGM_EXIT_SOME_FAILED : 0;
}

/* Single process: the coordinator drives an in-process stage. */
int egm_run_local(const egm_run_opts *r) {
    egm_err e;
    egm_run_io io;
    egm_model m;
    egm_tokenizer *tok = NULL;
    egm_chat_template *chat = NULL;
    egm_pipe *pipe = NULL;
    egm_sched_stats st = {0};
    int rc = EGM_EXIT_FAIL;
    memset(&m, 0, sizeof m);
    if (r->threads > 0) openblas_set_num_threads(r->threads);
    if (egm_run_prepare(r, &io, &e)) {
        fprintf(stderr, "egmla: %s\n", e.msg);
        egm_run_io_close(&io);
        return EGM_EXIT_FAIL;
    }
    int flags = EGM_LOAD_EMBED | EGM_LOAD_HEAD | (r->gate_table ? EGM_LOAD_GATE_TABLE : 0);
    if (egm_model_load(r->model, 0, -1, flags, &m, &e)) goto fail;
    if (egm_run_load_tokenizer(r->model, &tok, &e)) goto fail;
    if (egm_run_load_chat(r, &m.cfg, tok, &chat, &e)) goto fail;
    egm_pipe_opts po = {r->max_batch, io.kv_budget, r->block_tokens, !strcmp(r->kv_dtype, "bf16"),
                        r->attn_bf16};
    if (egm_pipe_local_open(&m, &po, &pipe, &e)) goto fail;
    egm_sched_opts so;
    egm_sched_opts_from_run(r, &io, &so);
    so.chat = chat;
    int bad = egm_sched_run(&so, &m.cfg, tok, pipe, io.in, io.out, &st, &e);
    egm_run_io_close(&io);
    rc = egm_run_finish(r, &st, bad, &e);
    goto out;
fail:
    fprintf(stderr, "egmla: %s\n", e.msg);
    egm_run_io_close(&io);
out:
    if (pipe) pipe->close(pipe);
    egm_chat_template_free(chat);
    egm_tok_free(tok);
    egm_model_free(&m);
    return rc;
}

/* A directory's tokenizer.json is optional (MODEL.md): without it, text
 * prompts fail per line with a clear message. A .gguf carries its own. */
int egm_run_load_tokenizer(const char *model, egm_tokenizer **tok, egm_err *e) {
    return egm_model_tokenizer(model, tok, e);
}

int egm_run_load_chat(const egm_run_opts *r, const egm_config *c, const egm_tokenizer *tok,
                      egm_chat_template **chat, egm_err *e) {
    *chat = NULL;
    /* score reads a chat only when told how: an odd template must not stop
     * a scoring job that never needed it */
    if (r->on_score || (r->mode != EGM_MODE_GENERATE && !r->chat_template)) return 0;
    return egm_chat_template_load(r->model, r->chat_template, c, tok, chat, e);
}

