/* cmd_run.c - `egmla generate` and `egmla score`: requests in, results out.
 *
 * Both share the options and the scheduler; they differ in what the last
 * stage does with logits (sample or score) and in what each line reports. */
#include <stdio.h>
#include <string.h>

#include "base/args.h"
#include "coordinator/commands.h"

/* Options of generate alone: how to sample. Their defaults are the
 * requests' (egm_request_defaults); a line's own fields win. */
#define SAMPLING_OPTS(d)                                                                                    \
    {"max-new-tokens", EGM_OPT_INT, &(d)->max_new_tokens, "tokens to generate at most", 0, 1e9, "N"},         \
    {"temperature", EGM_OPT_FLOAT, &(d)->sampling.temperature, "sampling temperature (0 = greedy)", 0, 1e6, "T"}, \
    {"top-k", EGM_OPT_INT, &(d)->sampling.top_k, "keep the k most likely tokens (0 = off)", 0, 1e9, "K"},      \
    {"top-p", EGM_OPT_FLOAT, &(d)->sampling.top_p, "nucleus sampling mass (1 = off)", 0, 1, "P"},              \
    {"min-p", EGM_OPT_FLOAT, &(d)->sampling.min_p, "drop tokens below min-p times the top probability", 0, 1, "P"}, \
    {"repetition-penalty", EGM_OPT_FLOAT, &(d)->sampling.repetition_penalty, "penalty for tokens already seen (1 = off)", 0, 1e6, "R"}, \
    {"seed", EGM_OPT_U64, &(d)->sampling.seed, "seed of every request's generator (a line's \"seed\" wins)", 0, 0, "S"}, \
    {"ignore-eos", EGM_OPT_FLAG, &(d)->ignore_eos, "do not stop at end-of-sequence tokens", 0, 0, NULL}

/* Options that only mean something for a batch of files. */
static int batch_only(const char *opt) {
    static const char *const names[] = {"input", "out", "stats", "resume", "dump-logits"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(opt, names[i])) return 1;
    return 0;
}

/* x: a command built on generate's engine (serve): its own options replace
 * the batch-file ones, and x->go runs instead of egm_run. */
static int run(int mode, int argc, char **argv, const egm_run_ext *x) {
    const int score = mode == EGM_MODE_SCORE;
    const char *name = x ? x->name : score ? "egmla score" : "egmla generate";
    egm_run_opts r;
    egm_run_opts_default(&r);
    egm_engine_opts eo;
    egm_engine_defaults(&eo);
    const char *dump = NULL, *stop = NULL;
    const egm_opt io_opts[] = {
        {"input", EGM_OPT_STRING, &r.input, "requests, one JSON object per line (- = stdin)", 0, 0, "IN.jsonl"},
        {"out", EGM_OPT_STRING, &r.out, "results, one JSON object per line (- = stdout)", 0, 0, "OUT.jsonl"},
        {"stats", EGM_OPT_FLAG, &r.stats, "add per-request statistics to each result", 0, 0, NULL},
        {"resume", EGM_OPT_FLAG, &r.resume, "skip ids already in --out and append to it (docs/JOBS.md)", 0, 0, NULL},
        {"add-bos", EGM_OPT_FLAG, &r.add_bos, "prepend the model's bos_token_id to text prompts", 0, 0, NULL},
        {"chat-template", EGM_OPT_STRING, &r.chat_template, "render \"messages\" lines with this family (chatml, llama3, llama3.1, llama2, mistral, gemma, phi3, zephyr) or Jinja file instead of the model's template", 0, 0, "NAME|FILE"}};
    const egm_opt sampling_opts[] = {
        SAMPLING_OPTS(&r.defaults),
        {"stop", EGM_OPT_STRING, &stop, "stop when the text contains S (excluded from it; a line's \"stop\" wins)", 0, 0, "S"},
        {"logprobs", EGM_OPT_INT, &r.defaults.logprobs, "report each generated token's log-prob and its N (0-20) most likely alternatives; -1: none", -1, EGM_MAX_LOGPROBS, "N"}};
    const egm_opt dump_opt = {"dump-logits", EGM_OPT_STRING, &dump, "write every position's logits (float32 LE)", 0, 0, "FILE"};
    enum { EXT_MAX = 16 };
    /* generate: how to sample; score: --dump-logits; serve: its own */
    egm_opt own[sizeof io_opts / sizeof *io_opts + sizeof sampling_opts / sizeof *sampling_opts + EXT_MAX + 1];
    int n = 0;
    for (size_t i = 0; i < sizeof io_opts / sizeof *io_opts; i++)
        if (!x || !batch_only(io_opts[i].name)) own[n++] = io_opts[i];
    if (score) own[n++] = dump_opt;
    else
        for (size_t i = 0; i < sizeof sampling_opts / sizeof *sampling_opts; i++) own[n++] = sampling_opts[i];
    for (const egm_opt *o = x ? x->opts : NULL; o && o->name && n < (int)(sizeof own / sizeof *own) - 1; o++)
        own[n++] = *o;
    own[n] = (egm_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    egm_opt tab[sizeof own / sizeof *own + EGM_ENGINE_N_OPTS];
    unsigned char given[sizeof tab / sizeof *tab] = {0};
    int first = egm_engine_table(own, &eo, tab, (int)(sizeof tab / sizeof *tab));
    egm_cmd cmd = {name, NULL,
                   x ? x->about
                   : score
                       ? "Scores token sequences: for each input line {\"id\", \"tokens\"|\"prompt\"} writes "
                         "{\"id\", \"logprobs\"} with log p(token i | tokens before i), i = 1..n-1."
                       : "Generates a continuation for each input line {\"id\", \"prompt\"|\"tokens\"} and "
                         "writes {\"id\", \"tokens\", \"text\", \"finish_reason\"}.",
                   tab};
    int rc = egm_args_main_given(&cmd, argc, argv, given);
    if (rc >= 0) return rc;
    egm_err e;
    if (stop && !*stop) {
        fprintf(stderr, "%s: --stop: expected a non-empty string\n", name);
        return EGM_EXIT_USAGE;
    }
    if (stop) {
        r.defaults.stop[0] = (char *)stop;  /* copied into each request */
        r.defaults.n_stop = 1;
    }
    const char *bad = egm_sampling_check(&r.defaults.sampling);
    if (bad) {
        fprintf(stderr, "%s: %s\n", name, bad);
        return EGM_EXIT_USAGE;
    }
    if (egm_engine_resolve(&eo, given + first, &e)) {
        fprintf(stderr, "%s: %s\n", name, e.msg);
        return EGM_EXIT_USAGE;
    }
    egm_engine_to_run(&eo, &r);
    r.mode = mode;
    r.dump_logits = dump;
    return x ? x->go(&r) : egm_run(&r);
}

int egm_cmd_generate(int argc, char **argv) { return run(EGM_MODE_GENERATE, argc, argv, NULL); }
int egm_cmd_score(int argc, char **argv) { return run(EGM_MODE_SCORE, argc, argv, NULL); }
int egm_run_ext_main(const egm_run_ext *x, int argc, char **argv) {
    return run(EGM_MODE_GENERATE, argc, argv, x);
}
