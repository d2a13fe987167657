/* calibrate.h - `egmla bench --calibrate`: measures this node's costs for
 * the pipeline model (deploy/calib.h) and writes them as JSON. */
#ifndef EGM_CALIBRATE_H
#define EGM_CALIBRATE_H

#include "coordinator/bench_report.h"
#include "deploy/calib.h"

/* Measures one layer, the head and the embedding of o's model (--config or
 * --model) at o->threads (0: 1) into k. Under mpirun with >= 2 ranks, rank 0
 * measures and ranks 0 and 1 time the link between them (ping-pong); other
 * ranks only take part in MPI (*helper = 1 on all but rank 0). Single process: the link is not measured
 * (k gets egm_calib_link_default and link_measured = 0). */
int egm_calibrate_node(const egm_bench_opts *o, egm_calib *k, int *helper, egm_err *e);

/* The subcommand: egm_calibrate_node, then the JSON (o->json_path, or
 * stdout) and a summary on stderr. Returns an exit status. */
int egm_calibrate_main(const egm_bench_opts *o);

#endif
