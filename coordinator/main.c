/* main.c - bin/egmla: one binary, subcommands; the role follows the rank.
 *
 * Under mpirun rank 0 coordinates and ranks 1..N-1 are pipeline stages;
 * run plainly, the coordinator drives an in-process stage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/bench.h"
#include "coordinator/commands.h"

#ifndef EGM_VERSION
#define EGM_VERSION "0.0.0"
#endif
#ifndef EGM_GITREV
#define EGM_GITREV "unknown"
#endif

/* OpenBLAS 0.3.21 does not know recent CPUs and falls back to its generic
 * (Prescott, SSE3) kernels: 3-4x slower sgemm. It reads OPENBLAS_CORETYPE
 * when the library loads, before main, so pick the kernel set the CPU
 * supports and re-execute once. The user's own setting always wins. */
static void pick_blas_kernels(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || getenv("EGMLA_NO_REEXEC")) return;
    const char *core = NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        core = "Haswell";
    if (!core) return;
    setenv("OPENBLAS_CORETYPE", core, 1);
    setenv("EGMLA_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the generic kernels */
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: egmla <command> [options]     (egmla <command> --help for each)\n"
            "\n"
            "  generate   generate text for each request of a JSONL file\n"
            "  score      log-probabilities of token sequences (and --dump-logits)\n"
            "  eval       multiple-choice accuracy (lm-evaluation-harness semantics)\n"
            "  perplexity perplexity of a text (lm-eval rolling windows)\n"
            "  loglikelihood  lm-eval loglikelihood requests in batch\n"
            "  serve      an OpenAI-compatible HTTP server (completions, chat, streaming)\n"
            "  info       parameters and KV cache sizes of a model\n"
            "  bench      throughput against this machine's roofline (sgemm, memory bandwidth)\n"
            "  launch     run a command on a cluster topology through mpirun\n"
            "  slurm      print an sbatch script for a cluster topology\n"
            "\n"
            "  --version  print the version\n");
}

int main(int argc, char **argv) {
    pick_blas_kernels(argv);
    /* a closed output pipe is a write error to report, not a silent death */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return EGM_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("egmla %s (%s)\n", EGM_VERSION, EGM_GITREV);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"generate", egm_cmd_generate}, {"score", egm_cmd_score},
        {"info", egm_cmd_info},         {"launch", egm_cmd_launch},
        {"slurm", egm_cmd_slurm},       {"bench", egm_cmd_bench},
        {"eval", egm_cmd_eval},         {"perplexity", egm_cmd_perplexity},
        {"loglikelihood", egm_cmd_loglikelihood}, {"serve", egm_cmd_serve},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (!strcmp(cmd, cmds[i].name)) return cmds[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "egmla: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return EGM_EXIT_USAGE;
}
