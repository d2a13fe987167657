/* main.c - bin/egmla: one binary, subcommands; the role follows the rank.
 *
 * Under mpirun rank 0 coordinates and ranks 1..N-1 are pipeline stages;
 * run plainly, the coordinator drives an in-process stage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "kernels/matmul.h"
#include "coordinator/bench.h"
#include "coordinator/commands.h"
#include "deploy/launch.h"
#include "coordinator/workers.h"

#ifndef EGM_VERSION
#define EGM_VERSION "0.0.0"
#endif
#ifndef EGM_GITREV
#define EGM_GITREV "unknown"
#endif

/* OpenBLAS 0.3.21 does not know recent CPUs and falls back to its generic
 * (Prescott, SSE3) kernels: 3-4x slower sgemm. It reads OPENBLAS_CORETYPE
 * when the library loads, before main, so pick the kernel set the CPU
 * supports and re-execute once. The same goes for OpenMP's waiting policy:
 * by default idle OpenMP threads spin, which on a busy machine steals the
 * cores the working threads need (4-8x slower), so ask for passive waits.
 * OpenBLAS's own threads (pthread build) spin in sched_yield for 2^28
 * cycles, about 0.1 s, after each threaded call (the ceilings of `bench`,
 * say) and take that time from the stage's pool, which runs BLAS
 * single-threaded: OPENBLAS_THREAD_TIMEOUT=20 puts them to sleep after
 * 2^20 cycles, well under a millisecond. The user's own settings always
 * win. */
static void pick_blas_kernels(char **argv) {
    if (getenv("EGMLA_NO_REEXEC")) return;
    const char *core = NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        core = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        core = "Haswell";
    int set_core = core && !getenv("OPENBLAS_CORETYPE"), set_wait = !getenv("OMP_WAIT_POLICY");
    int set_timeout = !getenv("OPENBLAS_THREAD_TIMEOUT");
    if (!set_core && !set_wait && !set_timeout) return;
    if (set_core) setenv("OPENBLAS_CORETYPE", core, 1);
    if (set_wait) setenv("OMP_WAIT_POLICY", "passive", 1);
    if (set_timeout) setenv("OPENBLAS_THREAD_TIMEOUT", "20", 1);
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
            "  quantize   write a model as a GGUF file (f32 ... q4_k), for egmla or llama.cpp\n"
            "  bench      throughput against this machine's roofline (sgemm, memory bandwidth)\n"
            "  plan       predicted pipeline throughput and its bound, from calibrations\n"
            "  launch     run a command on a cluster topology through mpirun\n"
            "  slurm      print an sbatch script for a cluster topology\n"
            "\n"
            "  --version  print the version\n");
}

/* Tests only: EGMLA_TEST_RANK0_DELAY_MS makes rank 0 start late under
 * mpirun, as it does on a loaded machine, so that tests/e2e_bench_mpi.sh can
 * show that no worker ends the job before rank 0 has said why. */
static void test_rank0_delay(void) {
    const char *d = getenv("EGMLA_TEST_RANK0_DELAY_MS");
    if (d && egm_under_mpi() && !egm_run_is_worker()) usleep((useconds_t)atoi(d) * 1000);
}

/* Under mpirun every rank parses the same command line, and mpirun ends
 * the whole job as soon as one rank exits non-zero. A worker that fails
 * before MPI (a bad option) must therefore not exit first: rank 0, maybe
 * still starting on a loaded machine, would be killed before it says why.
 * The worker joins MPI and waits for rank 0 instead. Rank 0 fails too (the
 * same command line): it prints its one message and exits, and mpirun ends
 * the waiting worker. Rank 0 got further (the worker failed on something
 * of its own, a file only its host lacks): its first message arrives, and
 * the worker, having printed why, ends the job. */
static int worker_wait_for_rank0(int rc) {
    int init = 0, fin = 0;
    if (!rc || !egm_under_mpi() || !egm_run_is_worker()) return rc;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init || fin) return rc;
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return rc;
    MPI_Status st;
    MPI_Probe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &st);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, rc);
    return rc;
}

int main(int argc, char **argv) {
    pick_blas_kernels(argv);
    test_rank0_delay();
    /* a closed output pipe is a write error to report, not a silent death */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        if (!egm_run_is_worker()) usage(stderr);
        return worker_wait_for_rank0(EGM_EXIT_USAGE);
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("egmla %s (%s), kernels %s\n", EGM_VERSION, EGM_GITREV, egm_kernels_name());
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
        {"loglikelihood", egm_cmd_loglikelihood},
        {"quantize", egm_cmd_quantize},
        {"plan", egm_cmd_plan},
        {"serve", egm_cmd_serve},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (!strcmp(cmd, cmds[i].name)) return worker_wait_for_rank0(cmds[i].fn(argc - 2, argv + 2));
    if (!egm_run_is_worker()) {
        fprintf(stderr, "egmla: unknown command \"%s\"\n", cmd);
        usage(stderr);
    }
    return worker_wait_for_rank0(EGM_EXIT_USAGE);
}
