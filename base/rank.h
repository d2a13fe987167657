/* rank.h - which MPI rank this process is, from the launcher's environment.
 *
 * Read before MPI_Init (mpirun, srun --mpi=pmix and PMI launchers all set
 * these), so option parsing can tell a worker from rank 0 without MPI. */
#ifndef EGM_RANK_H
#define EGM_RANK_H

/* 1 when started by an MPI launcher. */
int egm_under_mpi(void);
/* 1 when this process is an MPI rank other than 0 (a pipeline stage). */
int egm_run_is_worker(void);

#endif
