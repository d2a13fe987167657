/* pipe_mpi.h - the pipeline over MPI ranks, seen from rank 0.
 *
 * submit() packs the micro-batch header and sends it to rank 1 without
 * blocking (a ring of buffers stays alive until each send completes);
 * collect() receives the oldest Result from the last rank, or fails with
 * the first Error any rank reports. The workers are started (Assign/Hello)
 * by coordinator/run.c before the pipe is opened.
 *
 * Faults: MPI errors come back as return codes (MPI_ERRORS_RETURN), and no
 * wait lasts longer than the rank timeout without news from the pipeline.
 * Either way rank 0 pings every rank, names the ones that do not answer
 * (rank and host), and marks the pipe faulted: the caller then cannot stop
 * the workers politely and must MPI_Abort once its output is safe. */
#ifndef EGM_PIPE_MPI_H
#define EGM_PIPE_MPI_H

#include "coordinator/pipe.h"
#include "deploy/topology.h"

typedef struct {
    int world;                 /* ranks (stages = world - 1) */
    egm_pipe_caps caps;
    egm_wire_dtype wd;
    int vocab;                 /* V, for logits */
    double rank_timeout;       /* seconds without a message; <= 0: wait forever */
    const char *const *hosts;  /* [world] host of each rank, for messages (copied) */
} egm_pipe_mpi_opts;

#define EGM_RANK_TIMEOUT_DEFAULT 60.0

int egm_pipe_mpi_open(const egm_pipe_mpi_opts *o, egm_pipe **out, egm_err *e);

/* 1 when a rank died or hung: only MPI_Abort can end the run now. */
int egm_pipe_mpi_faulted(const egm_pipe *p);

/* Ends the run: Shutdown travels down the pipeline, every worker reports
 * its Stats, printed one line per stage on stderr. */
int egm_pipe_mpi_shutdown(egm_pipe *p, egm_err *e);

/* Abandons the run: every worker stops and exits non-zero, quietly. */
void egm_mpi_stop_workers(int world);

#endif
