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

/* One stage's counters (proto/egmla.proto, Stats), cumulative since it
 * started: the difference of two marks covers what happened between them. */
typedef struct {
    int rank, layer_lo, layer_hi;
    char host[64];
    double clock_s;           /* the worker's clock when it answered */
    double busy_s;            /* computing */
    double wait_s;            /* holding a micro-batch, waiting on the wire */
    double bubble_s;          /* idle: no micro-batch to work on */
    unsigned long long bytes_in, bytes_out, header_bytes_out, rows, batches;
} egm_stage_stats;

/* Sends a statistics request down the pipeline behind every micro-batch
 * submitted so far; each stage answers when it gets there, so two marks
 * bracket exactly the micro-batches submitted between them, on every stage. */
int egm_pipe_mpi_mark(egm_pipe *p, egm_err *e);

/* The answers to the oldest mark not read yet: out[world - 1], in stage
 * order. Only once every submitted micro-batch has been collected. */
int egm_pipe_mpi_read_mark(egm_pipe *p, egm_stage_stats *out, egm_err *e);

/* Without blocking, as read_mark: 1 with out filled once every stage has
 * answered the oldest mark not read yet, 0 while some answer is still on
 * its way (or no mark is unread), -1 on a fault. Micro-batches may be in
 * flight (a serving pipeline is never empty). */
int egm_pipe_mpi_poll_mark(egm_pipe *p, egm_stage_stats *out, egm_err *e);

/* Ends the run: Shutdown travels down the pipeline, every worker reports
 * its Stats, printed one line per stage on stderr. */
int egm_pipe_mpi_shutdown(egm_pipe *p, egm_err *e);

/* Abandons the run: every worker stops and exits non-zero, quietly. */
void egm_mpi_stop_workers(int world);

#endif
