/* run.c - pick the role: in-process pipeline, or MPI coordinator/worker.
 *
 * Not started by mpirun (no OMPI_COMM_WORLD_SIZE / PMIX_RANK in the
 * environment): MPI is never initialised and the coordinator drives an
 * in-process stage. Under mpirun with one rank, the same. With N ranks, rank
 * 0 coordinates (config and tokenizer only: it never maps weights) and ranks
 * 1..N-1 run the pipeline stages; the scheduler is the very same code, over
 * coordinator/pipe_mpi.c instead of pipe_local.c.
 *
 * A rank that dies or hangs mid-job cannot be stopped politely: rank 0
 * syncs the results written so far (each is one whole line), prints one
 * message naming the rank and host, and calls MPI_Abort, which makes
 * mpirun (or srun) kill every rank and exit non-zero. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "coordinator/run.h"

#include "base/exit.h"
#include "coordinator/pipe_mpi.h"
#include "coordinator/workers.h"
#include "deploy/split.h"
#include "deploy/topology.h"
#include "model/source.h"
#include "model/config.h"
#include "worker/wire.h"
#include "worker/worker_mpi.h"

/* Seconds without news from the pipeline before rank 0 looks for a dead or
 * hung rank (--rank-timeout). */
static double rank_timeout(const egm_run_opts *r) { return r->rank_timeout; }

/* mpirun answers a rank that died (SIGKILL, OOM killer, segfault) by
 * terminating every other rank before rank 0 hears of it. Say what that
 * means for the output, then die of the signal as mpirun expects. */
static void on_sigterm(int sig) {
    static const char msg[] =
        "egmla: rank 0 stopped by SIGTERM (mpirun stops every rank when one dies: see its "
        "message); every result written so far is a complete line: re-run with --resume "
        "to finish\n";
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A rank died or hung: keep what is written, say so once, end every rank. */
static void abort_job(const egm_run_opts *r, egm_run_io *io, const egm_sched_stats *st,
                      const egm_err *e) {
    egm_err se;
    if (io->out && egm_out_sync(io->out, &se)) fprintf(stderr, "egmla: %s\n", se.msg);
    egm_run_io_close(io);
    egm_run_finish(r, st, 1, e);
    fprintf(stderr, "egmla: stopping every rank; every result written so far is a complete line "
            "(re-run with --resume to finish)\n");
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, EGM_EXIT_FAIL);
}

static int coordinate(const egm_run_opts *r, int world) {
    egm_err e;
    egm_run_io io;
    egm_topology t;
    egm_config cfg;
    egm_tokenizer *tok = NULL;
    egm_chat_template *chat = NULL;
    egm_pipe *pipe = NULL;
    egm_sched_stats st = {0};
    egm_workers wk = {.world = world}; /* enough to abandon them */
    int rc = EGM_EXIT_FAIL;
    memset(&t, 0, sizeof t);
    char cfg_fp[40];
    if (egm_run_prepare(r, &io, &e)) goto fail;
    if (egm_workers_init(&wk, world, &e)) goto fail;
    if (r->topology ? egm_topology_load(r->topology, &t, &e) : egm_topology_auto(world - 1, &t)) {
        if (!r->topology) egm_fail(&e, "out of memory for a %d-stage topology", world - 1);
        else rc = EGM_EXIT_USAGE; /* a bad topology file: 2, as under launch */
        goto fail;
    }
    if (egm_topology_check_world(&t, world, &e)) {
        egm_wrap(&e, "MPI world size %d", world);
        goto fail;
    }
    if (egm_model_config(r->model, &cfg, &e)) goto fail; /* a directory or a .gguf */
    if (egm_split_topology(&t, &cfg, NULL, &e)) {
        rc = EGM_EXIT_USAGE;
        goto fail;
    }
    egm_wire_dtype wd = t.wire_dtype;
    if (r->wire_dtype && egm_wire_dtype_parse(r->wire_dtype, &wd)) {
        egm_fail(&e, "--wire-dtype: expected bf16, fp32 or int8, found \"%s\"", r->wire_dtype);
        goto fail;
    }
    if (egm_run_load_tokenizer(r->model, &tok, &e)) goto fail;
    if (egm_run_load_chat(r, &cfg, tok, &chat, &e)) goto fail;
    if (egm_model_fingerprint(r->model, 0, cfg_fp, &e)) goto fail;
    egm_assign_opts ao = {.model = r->model, .cfg_fp = cfg_fp, .t = &t, .kv_budget = io.kv_budget,
                          .block_tokens = r->block_tokens, .kv_bf16 = !strcmp(r->kv_dtype, "bf16"),
                          .n_slots = r->max_batch, .gate_table = r->gate_table,
                          .attn_bf16 = r->attn_bf16, .batch_invariant = r->batch_invariant,
                          .threads = r->threads, .topo_threads = r->topology != NULL, .wd = wd,
                          .hello_timeout_s = 10 * rank_timeout(r)};
    if (egm_workers_start(&wk, &ao, &e)) goto fail;
    egm_pipe_mpi_opts po = {world, wk.caps, wd, cfg.vocab_size, rank_timeout(r),
                            (const char *const *)wk.host_ptrs};
    /* from here a dead rank is news worth a line; before, rank 0 reports */
    signal(SIGTERM, on_sigterm);
    if (egm_pipe_mpi_open(&po, &pipe, &e)) goto fail;
    egm_sched_opts so;
    egm_sched_opts_from_run(r, &io, &so);
    so.chat = chat;
    /* keep every stage busy: at least as many micro-batches as stages (the
     * default of 4 keeps results identical to one process up to 4 stages) */
    if (!r->micro_batches_set && so.micro_batches < world - 1) so.micro_batches = world - 1;
    int bad = egm_sched_run(&so, &cfg, tok, pipe, io.in, io.out, &st, &e);
    if (bad && egm_pipe_mpi_faulted(pipe)) abort_job(r, &io, &st, &e);
    egm_run_io_close(&io);
    if (bad) {
        rc = egm_run_finish(r, &st, bad, &e);
        egm_mpi_stop_workers(world);
        goto out;
    }
    if (egm_pipe_mpi_shutdown(pipe, &e)) {
        fprintf(stderr, "egmla: %s\n", e.msg);
        if (egm_pipe_mpi_faulted(pipe)) {
            /* every result is written: only the statistics are lost */
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, EGM_EXIT_FAIL);
        }
        egm_mpi_stop_workers(world);
        goto out;
    }
    rc = egm_run_finish(r, &st, 0, &e);
    goto out;
fail:
    /* this is the one message; mpirun may now stop rank 0 as the workers
     * exit non-zero, which needs no second word */
    signal(SIGTERM, SIG_DFL);
    fprintf(stderr, "egmla: %s\n", e.msg);
    egm_run_io_close(&io);
    wk.exit_status = rc;
    egm_workers_abandon(&wk);
out:
    if (pipe) pipe->close(pipe);
    egm_workers_free(&wk);
    egm_chat_template_free(chat);
    egm_tok_free(tok);
    egm_topology_free(&t);
    return rc;
}

/* One process was given a topology: it can only be right if the topology
 * has one rank; otherwise say how to start it (plain srun without PMIx
 * also lands here: N singletons of world size 1). */
static int single_with_topology(const egm_run_opts *r) {
    egm_topology t;
    egm_err e;
    memset(&t, 0, sizeof t);
    int rc = 0;
    if (egm_topology_load(r->topology, &t, &e)) {
        fprintf(stderr, "egmla: %s\n", e.msg);
        rc = EGM_EXIT_USAGE;
    } else if (egm_topology_check_world(&t, 1, &e)) {
        fprintf(stderr, "egmla: %s (start it with `egmla launch %s -- ...` or mpirun)\n",
                e.msg, r->topology);
        rc = EGM_EXIT_FAIL;
    }
    egm_topology_free(&t);
    return rc ? rc : egm_run_local(r);
}

int egm_run(const egm_run_opts *r) {
    if (!egm_under_mpi()) return r->topology ? single_with_topology(r) : egm_run_local(r);
    int provided, rank = 0, world = 1;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "egmla: MPI_Init failed\n");
        return EGM_EXIT_FAIL;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int rc;
    if (world == 1 && r->topology) {
        rc = single_with_topology(r);
    } else if (world == 1) {
        rc = egm_run_local(r);
    } else if (rank == 0) {
        rc = coordinate(r, world);
    } else {
        rc = egm_worker_main(rank, world);
    }
    MPI_Finalize();
    return rc;
}
