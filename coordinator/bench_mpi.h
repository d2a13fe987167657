/* bench_mpi.h - `egmla bench` under mpirun: rank 0 drives the pipeline of
 * ranks 1..N-1 with synthetic sequences (method in bench_mpi.c). */
#ifndef EGM_BENCH_MPI_H
#define EGM_BENCH_MPI_H

#include "coordinator/bench_report.h"

/* Rank 0 of a world of >= 2 ranks (the others run egm_worker_main).
 * Returns the exit status. */
int egm_bench_mpi(const egm_bench_opts *o, int world);

#endif
