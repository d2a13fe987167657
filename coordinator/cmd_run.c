/* cmd_run.c - `egmla generate` and `egmla score`: requests in, results out.
 *
 * Both share the options and the scheduler; they differ in what the last
 * stage does with logits (sample or score) and in what each line reports. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coordinator/args.h"
#include "coordinator/commands.h"
#include "coordinator/sched.h"
#include "deploy/topology.h"
#include "model/source.h"
#include "model/tokenizer.h"
#include "model/weights.h"

/* Fills defaults for every run option. */
void egm_run_opts_default(egm_run_opts *r) {
    memset(r, 0, sizeof *r);
    r->model = NULL;
    r->input = "-";
    r->out = "-";
    r->kv_budget = "1GiB";
    r->kv_dtype = "fp32";
    r->wire_dtype = NULL;
    r->max_batch = 64;
    r->micro_batches = 4;
    r->chunk = 512;
    r->block_tokens = 16;
    r->threads = 0;
    egm_request_defaults(&r->defaults);
    r->temperature = 1.0f;
    r->top_k = 0;
    r->top_p = 1.0f;
    r->min_p = 0.0f;
    r->repetition_penalty = 1.0f;
    r->seed = 0;
    r->rank_timeout = 60;
}

/* The model used when --model is not given: $EGMLA_MODEL, else the default
 * model shipped with the binary: bin/../models/egmla-tiny in the source
 * tree, PREFIX/share/egmla/models/egmla-tiny once installed (make install),
 * else ./models/. */
const char *egm_default_model(void) {
    static char path[4096];
    static const char *const beside[] = {"../models/egmla-tiny",
                                         "../share/egmla/models/egmla-tiny"};
    const char *env = getenv("EGMLA_MODEL");
    if (env && *env) return env;
    char exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = n > 0 ? (exe[n] = 0, strrchr(exe, '/')) : NULL;
    if (slash) {
        *slash = 0;
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof path, "%s/%s", exe, beside[i]);
            struct stat st;
            if (stat(path, &st) == 0) return path;
        }
    }
    return "models/egmla-tiny";
}

/* Removes the named options from a table (ended by a NULL name). */
static void drop_opts(egm_opt *t, const char *const *names) {
    egm_opt *w = t;
    for (egm_opt *o = t; o->name; o++) {
        int drop = 0;
        for (const char *const *n = names; *n && !drop; n++) drop = !strcmp(o->name, *n);
        if (!drop) *w++ = *o;
    }
    w->name = NULL;
}

static int run(int mode, int argc, char **argv) {
    const char *name = mode == EGM_MODE_SCORE ? "egmla score" : "egmla generate";
    egm_run_opts r;
    egm_run_opts_default(&r);
    int ignore_eos = 0, stats = 0, no_gate_table = 0, add_bos = 0, resume = 0;
    float rank_timeout = (float)r.rank_timeout;
    const char *dump = NULL, *topology = NULL;
    egm_opt gen_opts[] = {
        {"model", EGM_OPT_STRING, &r.model, "model directory (default: the embedded EG-MLA model)", 0, 0, "DIR"},
        {"input", EGM_OPT_STRING, &r.input, "requests, one JSON object per line (- = stdin)", 0, 0, "IN.jsonl"},
        {"out", EGM_OPT_STRING, &r.out, "results, one JSON object per line (- = stdout)", 0, 0, "OUT.jsonl"},
        {"max-new-tokens", EGM_OPT_INT, &r.defaults.max_new_tokens, "tokens to generate at most", 0, 1e9, "N"},
        {"temperature", EGM_OPT_FLOAT, &r.temperature, "sampling temperature (0 = greedy)", 0, 1e6, "T"},
        {"top-k", EGM_OPT_INT, &r.top_k, "keep the k most likely tokens (0 = off)", 0, 1e9, "K"},
        {"top-p", EGM_OPT_FLOAT, &r.top_p, "nucleus sampling mass (1 = off)", 0, 1, "P"},
        {"min-p", EGM_OPT_FLOAT, &r.min_p, "drop tokens below min-p times the top probability", 0, 1, "P"},
        {"repetition-penalty", EGM_OPT_FLOAT, &r.repetition_penalty, "penalty for tokens already seen (1 = off)", 0, 1e6, "R"},
        {"seed", EGM_OPT_U64, &r.seed, "seed of every request's generator (a line's \"seed\" wins)", 0, 0, "S"},
        {"ignore-eos", EGM_OPT_FLAG, &ignore_eos, "do not stop at end-of-sequence tokens", 0, 0, NULL},
        {"stats", EGM_OPT_FLAG, &stats, "add per-request statistics to each result", 0, 0, NULL},
        {"resume", EGM_OPT_FLAG, &resume, "skip ids already in --out and append to it (docs/JOBS.md)", 0, 0, NULL},
        {"add-bos", EGM_OPT_FLAG, &add_bos, "prepend the model's bos_token_id to text prompts", 0, 0, NULL},
        {"kv-budget", EGM_OPT_STRING, &r.kv_budget, "KV cache bytes per stage (e.g. 512MiB)", 0, 0, "SIZE"},
        {"kv-dtype", EGM_OPT_STRING, &r.kv_dtype, "KV cache storage: fp32 or bf16", 0, 0, "T"},
        {"max-batch", EGM_OPT_INT, &r.max_batch, "sequences in flight at most", 1, 65536, "N"},
        {"micro-batches", EGM_OPT_INT, &r.micro_batches, "micro-batches in flight (results depend on it, not on the split)", 1, 1024, "N"},
        {"chunk", EGM_OPT_INT, &r.chunk, "rows per micro-batch at most (prefill chunk)", 1, 1 << 20, "N"},
        {"block-tokens", EGM_OPT_INT, &r.block_tokens, "positions per KV block", 1, 65536, "N"},
        {"threads", EGM_OPT_INT, &r.threads, "BLAS threads per rank (0 = OpenBLAS default)", 0, 1024, "N"},
        {"no-gate-table", EGM_OPT_FLAG, &no_gate_table, "EG-MLA: gather the gate from eg_embed each step instead of a precomputed [V, d_u] table", 0, 0, NULL},
        {"rank-timeout", EGM_OPT_FLOAT, &rank_timeout, "under MPI: seconds without a result before rank 0 looks for a dead or hung rank", 0.1, 1e6, "S"},
        {"topology", EGM_OPT_STRING, &topology, "cluster topology (under mpirun)", 0, 0, "TOPO.yaml"},
        {"wire-dtype", EGM_OPT_STRING, &r.wire_dtype, "activations between stages: bf16, fp32 or int8", 0, 0, "T"},
        {"dump-logits", EGM_OPT_STRING, &dump, "score: write every position's logits (float32 LE)", 0, 0, "FILE"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    /* --dump-logits is score's alone; sampling is generate's alone */
    static const char *const score_only[] = {"dump-logits", NULL};
    static const char *const generate_only[] = {"max-new-tokens", "temperature", "top-k", "top-p",
                                                "min-p", "repetition-penalty", "seed",
                                                "ignore-eos", NULL};
    drop_opts(gen_opts, mode == EGM_MODE_SCORE ? generate_only : score_only);
    egm_cmd cmd = {name, NULL,
                   mode == EGM_MODE_SCORE
                       ? "Scores token sequences: for each input line {\"id\", \"tokens\"|\"prompt\"} writes "
                         "{\"id\", \"logprobs\"} with log p(token i | tokens before i), i = 1..n-1."
                       : "Generates a continuation for each input line {\"id\", \"prompt\"|\"tokens\"} and "
                         "writes {\"id\", \"tokens\", \"text\", \"finish_reason\"}.",
                   gen_opts};
    int rc = egm_args_main(&cmd, argc, argv);
    if (rc >= 0) return rc;
    r.defaults.ignore_eos = ignore_eos;
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "--micro-batches", 15)) r.micro_batches_set = 1;
    r.rank_timeout = rank_timeout;
    r.defaults.sampling.temperature = r.temperature;
    r.defaults.sampling.top_k = r.top_k;
    r.defaults.sampling.top_p = r.top_p;
    r.defaults.sampling.min_p = r.min_p;
    r.defaults.sampling.repetition_penalty = r.repetition_penalty;
    r.defaults.sampling.seed = r.seed;
    const char *bad = egm_sampling_check(&r.defaults.sampling);
    if (bad) {
        fprintf(stderr, "%s: %s\n", name, bad);
        return EGM_EXIT_USAGE;
    }
    size_t budget;
    if (egm_parse_size(r.kv_budget, &budget) || budget == 0) {
        fprintf(stderr, "%s: --kv-budget: expected a size such as 512MiB, found \"%s\"\n", name,
                r.kv_budget);
        return EGM_EXIT_USAGE;
    }
    r.mode = mode;
    r.stats = stats;
    r.resume = resume;
    r.add_bos = add_bos;
    r.gate_table = !no_gate_table;
    r.dump_logits = dump;
    r.topology = topology;
    if (!r.model) r.model = egm_default_model();
    return egm_run(&r);
}

int egm_cmd_generate(int argc, char **argv) { return run(EGM_MODE_GENERATE, argc, argv); }
int egm_cmd_score(int argc, char **argv) { return run(EGM_MODE_SCORE, argc, argv); }

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
    if (failed_run) return EGM_EXIT_FAIL;
    return st->failed ? EGM_EXIT_SOME_FAILED : 0;
}

/* Single process: the coordinator drives an in-process stage. */
int egm_run_local(const egm_run_opts *r) {
    egm_err e;
    egm_run_io io;
    egm_model m;
    egm_tokenizer *tok = NULL;
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
    egm_pipe_opts po = {r->max_batch, io.kv_budget, r->block_tokens, !strcmp(r->kv_dtype, "bf16")};
    if (egm_pipe_local_open(&m, &po, &pipe, &e)) goto fail;
    egm_sched_opts so;
    egm_sched_opts_from_run(r, &io, &so);
    int bad = egm_sched_run(&so, &m.cfg, tok, pipe, io.in, io.out, &st, &e);
    egm_run_io_close(&io);
    rc = egm_run_finish(r, &st, bad, &e);
    goto out;
fail:
    fprintf(stderr, "egmla: %s\n", e.msg);
    egm_run_io_close(&io);
out:
    if (pipe) pipe->close(pipe);
    egm_tok_free(tok);
    egm_model_free(&m);
    return rc;
}

/* A directory's tokenizer.json is optional (MODEL.md): without it, text
 * prompts fail per line with a clear message. A .gguf carries its own. */
int egm_run_load_tokenizer(const char *model, egm_tokenizer **tok, egm_err *e) {
    return egm_model_tokenizer(model, tok, e);
}

int egm_run_is_worker(void) {
    const char *v = getenv("OMPI_COMM_WORLD_RANK");
    if (!v) v = getenv("PMIX_RANK");
    if (!v) v = getenv("PMI_RANK");
    return v && atoi(v) != 0;
}
