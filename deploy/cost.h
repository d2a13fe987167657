/* cost.h - the analytic cost of a pipeline step: one layer's and the head's
 * flops and bytes, and the single-thread speeds that turn them into
 * seconds. Shared by the split (split.c) and the calibration's analytic
 * fallback (calib.c), which both build on it. */
#ifndef EGM_COST_H
#define EGM_COST_H

#include "model/config.h"

/* The analytic defaults: GFLOP/s and GB/s of one thread. */
#define EGM_SPLIT_GFLOPS 25.0
#define EGM_SPLIT_GBS 10.0
/* lm_head + sampling against their flops and bytes. Measured here (bench
 * --calibrate, paper EG-MLA config, 8 and 16 rows, layers at 128 cached
 * positions) the head costs 2.9 and 2.8 layers, the analytic model 2.7:
 * 1.0. (It was 1.5 while 2-8 rows ran through a slow small-GEMM kernel.) */
#define EGM_SPLIT_HEAD_FACTOR 1.0

/* The analytic parts, for the plan: one layer's and the head's seconds. */
double egm_split_layer_flops(const egm_config *c, int rows, long positions);
double egm_split_layer_bytes(const egm_config *c, int rows, long positions);
double egm_split_head_flops(const egm_config *c, int rows);
double egm_split_head_bytes(const egm_config *c);

#endif
