/* bench.h - `egmla bench`: prefill/decode throughput of one rank, or of a
 * pipeline under mpirun, against the roofline the same run measures
 * (coordinator/roofline.h). */
#ifndef EGM_BENCH_H
#define EGM_BENCH_H

int egm_cmd_bench(int argc, char **argv);

#endif
