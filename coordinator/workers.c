/* workers.c - rank 0 starting and abandoning the pipeline workers (see
 * workers.h). */
#include "coordinator/workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/exit.h"
#include "coordinator/pipe_mpi.h"
#include "worker/worker_mpi.h"

int egm_workers_init(egm_workers *w, int world, egm_err *e) {
    memset(w, 0, sizeof *w);
    w->world = world;
    w->hosts = calloc((size_t)world, sizeof *w->hosts);
    w->host_ptrs = calloc((size_t)world, sizeof *w->host_ptrs);
    if (!w->hosts || !w->host_ptrs) return egm_fail(e, "out of memory");
    for (int i = 0; i < world; i++) w->host_ptrs[i] = w->hosts[i];
    egm_mpi_hostname(w->hosts[0], sizeof w->hosts[0]);
    return 0;
}

void egm_workers_free(egm_workers *w) {
    free(w->hosts);
    free(w->host_ptrs);
    w->hosts = NULL;
    w->host_ptrs = NULL;
}

/* Sends every worker the layers it runs; collects their Hellos and checks
 * that they all run this build on the same model. */
int egm_workers_start(egm_workers *w, const egm_assign_opts *o, egm_err *e) {
    int world = w->world, S = world > 1 ? world - 1 : 1;
    const char *host0 = w->hosts[0];
    w->assigned = 1;
    for (int i = 0; i < S; i++) {
        const egm_topo_stage *ts = &o->t->stages[i];
        Egmla__Assign a = EGMLA__ASSIGN__INIT;
        a.stage = i;
        a.n_stages = S;
        a.layer_lo = ts->layer_lo;
        a.layer_hi = ts->layer_hi;
        a.model = (char *)o->model;
        a.kv_budget = ts->kv_budget ? ts->kv_budget : o->kv_budget;
        a.block_tokens = o->block_tokens;
        a.kv_bf16 = o->kv_bf16;
        a.n_slots = o->n_slots;
        a.wire_dtype = o->wd;
        a.gate_table = o->gate_table != 0;
        a.attn_bf16 = o->attn_bf16 != 0;
        a.batch_invariant = o->batch_invariant != 0;
        a.threads = o->threads ? o->threads : o->topo_threads ? ts->threads : 0;
        a.build = (char *)egm_build_fingerprint();
        if (o->config_json) {
            a.config_json = (char *)o->config_json;
            a.seed = o->seed;
        }
        Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
        env.msg_case = EGMLA__ENVELOPE__MSG_ASSIGN;
        env.assign = &a;
        if (egm_mpi_send_env(&env, i + 1, e)) return -1;
    }
    /* every Hello is read before judging, so no worker is left talking */
    Egmla__Envelope **h = calloc((size_t)S, sizeof *h);
    if (!h) return egm_fail(e, "out of memory");
    int rc = 0;
    double t0 = MPI_Wtime();
    for (int i = 0; i < S && !rc; i++) {
        int from, src = i + 1, tag = EGM_TAG_CTRL;
        MPI_Status st;
        double left = o->hello_timeout_s - (MPI_Wtime() - t0);
        int got = o->hello_timeout_s > 0 ? egm_mpi_wait_for(1, &src, &tag, left > 0.001 ? left : 0.001, &st, e)
                                         : 0;
        if (got == EGM_MPI_TIMEOUT) {
            w->hung = 1;
            rc = egm_fail(e, "rank %d has not answered its assignment (layers %d-%d of %s) within "
                          "%.0f s: still loading, or hung (the wait is 10 x --rank-timeout: raise "
                          "it for a model that takes longer to load)", src,
                          o->t->stages[i].layer_lo, o->t->stages[i].layer_hi - 1, o->model,
                          o->hello_timeout_s);
        } else if (got < 0 || egm_mpi_recv_env(src, &h[i], &from, e)) rc = -1;
        else if (h[i]->msg_case != EGMLA__ENVELOPE__MSG_HELLO)
            rc = egm_fail(e, "rank %d: expected its hello, got message case %d", i + 1, h[i]->msg_case);
    }
    egm_pipe_caps *caps = &w->caps;
    caps->kv_blocks = 0;
    for (int i = 0; i < S && !rc; i++) {
        const Egmla__Hello *hw = h[i]->hello;
        const char *w_model_fp = hw->model;
        snprintf(w->hosts[i + 1], sizeof w->hosts[i + 1], "%s", hw->host);
        if (*hw->error)
            rc = egm_fail(e, "rank %d (%s): %s", hw->rank, hw->host, hw->error);
        else if (strcmp(hw->build, egm_build_fingerprint()))
            rc = egm_fail(e, "rank %d (%s) runs build %s, rank 0 (%s) runs %s", hw->rank,
                          hw->host, hw->build, host0, egm_build_fingerprint());
        else if (strncmp(w_model_fp, o->cfg_fp, 16))
            rc = o->config_json
                     ? egm_fail(e, "rank %d (%s) read the config text of %s differently from "
                                "rank 0 (%s)", hw->rank, hw->host, o->model, host0)
                     : egm_fail(e, "rank %d (%s) sees a different %s/config.json than rank 0 (%s)",
                                hw->rank, hw->host, o->model, host0);
        else if (i > 0 && strcmp(w_model_fp, h[0]->hello->model))
            rc = egm_fail(e, "rank %d (%s) sees different weights in %s than rank 1 (%s)",
                          hw->rank, hw->host, o->model, h[0]->hello->host);
        else if (i == 0 || hw->kv_blocks < caps->kv_blocks)
            caps->kv_blocks = hw->kv_blocks;
    }
    for (int i = 0; i < S; i++)
        if (h[i]) egmla__envelope__free_unpacked(h[i], NULL);
    free(h);
    caps->block_tokens = o->block_tokens;
    caps->n_slots = o->n_slots;
    return rc;
}

void egm_workers_abandon(const egm_workers *w) {
    if (w->hung) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, EGM_EXIT_FAIL);
    }
    if (w->assigned) {
        egm_mpi_stop_workers(w->world);
        return;
    }
    /* no worker has been assigned yet: they wait for an Assign */
    Egmla__Shutdown sd = EGMLA__SHUTDOWN__INIT;
    sd.failed = 1;
    sd.exit_status = w->exit_status;
    Egmla__Envelope env = EGMLA__ENVELOPE__INIT;
    env.msg_case = EGMLA__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sd;
    egm_err ignore;
    for (int i = 1; i < w->world; i++) egm_mpi_send_env(&env, i, &ignore);
}
