/* run.h - run a job: in process, or as MPI rank 0 or a pipeline worker. */
#ifndef EGM_RUN_H
#define EGM_RUN_H

#include "coordinator/job.h"

/* Local or MPI, by world size; returns the exit status (base/exit.h). */
int egm_run(const egm_run_opts *r);

#endif
