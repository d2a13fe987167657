/* plan.h - the throughput model of a pipeline (`egmla plan`).
 *
 * From each stage's node calibration (deploy/calib.h), the model's shape,
 * the layer split and the links, it replays what `egmla bench` does under
 * mpirun, event by event, with every time taken from the calibration:
 *
 * - decode: b sequences in m micro-batches of ceil(b/m) rows; a micro-batch
 *   goes rank 0 -> stage 1 -> ... -> stage S -> rank 0 and is resubmitted
 *   when its tokens are back (after rank0_s of rank 0's work); each stage
 *   and each link serves micro-batches first come first served; a link
 *   carries a micro-batch in latency + bytes / bandwidth, one at a time.
 *   One warm-up round, then `steps` rounds timed, as bench times them.
 * - prefill: one sequence of `context` tokens in chunks of `chunk` rows, all
 *   submitted at once; the time to first token is the last chunk's result
 *   at rank 0.
 *
 * A stage's time is its calibration's at the calibration's threads, scaled
 * by calib threads / stage threads (linear: optimistic for more threads),
 * and stretched while stages of one node work at once (the calibration's
 * measured co-location, or else the ratio of their threads to its cores).
 * The bound is the resource whose work per round is largest: a stage's
 * compute, a link's transfers, or one micro-batch's whole round trip (then
 * more micro-batches would help, if there are sequences to fill them). */
#ifndef EGM_PLAN_H
#define EGM_PLAN_H

#include <stddef.h>

#include "deploy/calib.h"
#include "deploy/topology.h"
#include "model/config.h"

typedef struct {
    const egm_config *c;
    egm_topology *t;            /* auto stages are resolved by egm_plan_run */
    const egm_calib *const *k;  /* [n_stages]: each stage's node calibration */
    int batch, context, micro_batches, chunk, steps;
    egm_wire_dtype wd;
    double link_latency_s, link_bytes_per_s;  /* every hop (and rank 0's) */
    size_t kv_budget;           /* per stage unless the topology gives one */
    int kv_bf16, block_tokens;
    /* optional, [n_stages]: each stage's measured compute per full decode
     * micro-batch, replacing the calibration's (other row counts scale by
     * the calibration's ratio): checks the pipeline model apart from the
     * calibration, e.g. with the stage times of an `egmla bench` run */
    const double *stage_mb_s;
    const double *stretch;      /* set by egm_plan_run: decode compute x this,
                                 * stages sharing a node (NULL: x1) */
} egm_plan_in;

typedef struct {
    int layer_lo, layer_hi, threads;
    double mb_s;                /* compute per (full) micro-batch */
    double core_share;          /* decode compute x this: its node's cores are shared */
    double busy, wait, bubble;  /* decode: fractions of the timed window */
    long kv_seqs;               /* sequences of context + steps tokens that fit */
    double prefill_busy;        /* fraction of the time to first token */
} egm_plan_stage;

#define EGM_PLAN_MAX_STAGES 256

typedef struct {
    int n_stages, micro_batches, rows;  /* rows per micro-batch */
    double decode_tok_s, round_s;       /* round: every sequence one token */
    double prefill_tok_s, ttft_s;
    double wire_bytes_per_token;        /* per stage-to-stage hop, header included */
    double hop_s;                       /* one full micro-batch over one hop */
    double cycle_s;                     /* one micro-batch's round trip */
    int micro_batches_needed;           /* least m whose round is not round-trip bound */
    char bound[96];
    int bound_kind;                     /* 0 stage, 1 link, 2 round trip, 3 a node's cores */
    int bound_index;                    /* stage or hop (0-based) */
    egm_plan_stage st[EGM_PLAN_MAX_STAGES];
} egm_plan_out;

/* Header bytes of a micro-batch of r rows on the wire (protobuf MicroBatch:
 * measured 20.5 B at 1 row, 40 at 4, ~100 at 16). */
double egm_plan_header_bytes(int rows);

/* Resolves the auto stages for this workload, then models it. */
int egm_plan_run(const egm_plan_in *in, egm_plan_out *out, egm_err *e);

#endif
