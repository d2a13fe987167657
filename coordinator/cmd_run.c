/* cmd_run.c - `egmla generate` and `egmla score`: requests in, results out.
 *
 * Both share the options and the scheduler; they differ in what the last
 * stage does with logits (sample or score) and in what each line reports. */
#include <stdio.h>
#include <string.h>

#include "base/args.h"
#include "base/size.h"
#include "coordinator/commands.h"

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
    if (mode != EGM_MODE_SCORE) /* --dump-logits is score's alone: it ends generate's table */
        for (egm_opt *o = gen_opts; o->name; o++)
            if (!strcmp(o->name, "dump-logits")) o->name = NULL;
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
