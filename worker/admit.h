/* admit.h - sequences entering and leaving a stage.
 *
 * The coordinator sends, with each micro-batch, the slots to free and the
 * sequences to admit before its rows run. Every stage applies them the same
 * way, whether it runs in process (coordinator/pipe_local.c) or on an MPI
 * rank (worker_mpi.c, which only decodes the message into these). */
#ifndef EGM_ADMIT_H
#define EGM_ADMIT_H

#include "base/err.h"
#include "kernels/sampling.h"
#include "worker/head.h"
#include "worker/stage.h"

typedef struct {
    int slot;
    int mode;               /* EGM_MODE_GENERATE / EGM_MODE_SCORE */
    egm_sampling sp;
    int n_reserve;          /* KV positions to reserve on every stage */
    int fork_slot, fork_n;  /* fork_n > 0: positions [0, fork_n) are copied
                               from slot fork_slot's cache (prefix sharing);
                               the sequence's rows start at fork_n */
    const int *tokens;      /* score: the whole sequence (last stage's targets) */
    int n_tokens;
    int top_logprobs;       /* generate: alternatives per token, -1: no log-prob
                             * (egm_head_set_top) */
} egm_admit;

/* Frees the released slots, then admits: reserves KV, copies a shared
 * prefix, and on the last stage (h != NULL) opens the head's slot. Checks
 * what comes from outside the process (slots, modes, counts, token ids,
 * sampling parameters). Fails naming the slot and the stage's layers; a
 * failure leaves the stage usable (the job is stopped by the caller). */
int egm_stage_apply(egm_stage *s, egm_head *h, const int *releases, int n_releases,
                    const egm_admit *admits, int n_admits, egm_err *e);

#endif
