/* pipe_mpi.h - the pipeline over MPI ranks, seen from rank 0.
 *
 * submit() packs the micro-batch header and sends it to rank 1 without
 * blocking (a ring of buffers stays alive until each send completes);
 * collect() receives the oldest Result from the last rank, or fails with
 * the first Error any rank reports. The workers are started (Assign/Hello)
 * by coordinator/run.c before the pipe is opened. */
#ifndef EGM_PIPE_MPI_H
#define EGM_PIPE_MPI_H

#include "coordinator/pipe.h"
#include "deploy/topology.h"

/* world: ranks (stages = world - 1); vocab: V, for logits. */
int egm_pipe_mpi_open(int world, const egm_pipe_caps *caps, egm_wire_dtype wd,
                      int vocab, egm_pipe **out, egm_err *e);

/* Ends the run: Shutdown travels down the pipeline, every worker reports
 * its Stats, printed one line per stage on stderr. */
int egm_pipe_mpi_shutdown(egm_pipe *p, egm_err *e);

/* Abandons the run: every worker stops and exits non-zero, quietly. */
void egm_mpi_stop_workers(int world);

#endif
