/* split.h - what each part of a pipeline step costs, and the layer split
 * that balances it.
 *
 * A stage's time per step is the sum of its layers' costs, plus the token
 * embedding on the first stage and the final norm + lm_head + sampling on
 * the last, divided by its speed (its threads, or a calibration's measured
 * rate). The `auto` stages of a topology are split so that the busiest
 * stage's time is as small as possible (then as even as possible).
 *
 * Costs come from a calibration (coordinator/calibrate.c measures them), or
 * from egm_split_cost_analytic: flops / F + bytes / BW of one decode step,
 * a rough model whose ratios (lm_head against a layer, attention against
 * the projections) are what the split needs. */
#ifndef EGM_SPLIT_H
#define EGM_SPLIT_H

#include <stdio.h>

#include "deploy/cost.h"
#include "deploy/topology.h"
#include "model/config.h"
#include "base/err.h"

#define EGM_SPLIT_MAX_LAYERS 4096

typedef struct {
    int n_layers;
    double layer[EGM_SPLIT_MAX_LAYERS]; /* seconds per step, one thread */
    double embed;                       /* first stage */
    double head;                        /* last stage */
} egm_split_cost;

/* The workload `auto` is balanced for when nothing else says: a decode
 * micro-batch of 16 rows at 128 cached positions. */
#define EGM_SPLIT_ROWS 16
#define EGM_SPLIT_CONTEXT 128
/* One decode micro-batch of `rows` sequences at `ctx` cached positions. */
int egm_split_cost_analytic(const egm_config *c, int rows, int ctx, egm_split_cost *out,
                            egm_err *e);

/* Resolves t's auto stages against the cost (rate: each stage's speed,
 * NULL = its threads). */
int egm_split_resolve(egm_topology *t, const egm_split_cost *c, const double *rate,
                      egm_err *e);

/* Stage i's time per step (t resolved), out[n_stages]. */
void egm_split_stage_times(const egm_topology *t, const egm_split_cost *c, const double *rate,
                           double *out);

/* Resolves with the analytic cost of the default workload and prints, per
 * stage, its layers and predicted share of the step (print: to that file;
 * NULL: silent). */
int egm_split_topology(egm_topology *t, const egm_config *c, FILE *print, egm_err *e);

/* One line per stage: layers, threads, predicted time share, x the mean. */
void egm_split_print(FILE *f, const egm_topology *t, const egm_split_cost *c,
                     const double *rate);

#endif
