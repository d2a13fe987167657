/* workers.h - rank 0 starting and abandoning the pipeline workers, shared
 * by the scheduler's run (coordinator/run.c) and `egmla bench` under mpirun
 * (coordinator/bench_mpi.c).
 *
 * Start: each worker gets an Assign (its layers, cache, wire dtype and
 * where its weights come from) and answers Hello; the Hellos are checked
 * (this build, the same model everywhere) and give the pipe's capacities
 * and every rank's host, for messages. Once the run is over, the pipe's
 * egm_pipe_mpi_shutdown ends it politely; on failure egm_workers_abandon
 * makes every worker exit non-zero without a word. */
#ifndef EGM_WORKERS_H
#define EGM_WORKERS_H

#include <stddef.h>
#include <stdint.h>

#include "base/rank.h"

#include "coordinator/pipe.h"
#include "deploy/topology.h"

/* What every worker is assigned. */
typedef struct {
    const char *model;         /* directory or .gguf the workers map; with
                                  config_json only a label for messages */
    const char *config_json;   /* non-NULL: synthetic weights of this config
                                  text and seed, no files (bench --config) */
    uint64_t seed;
    const char *cfg_fp;        /* rank 0's fingerprint of the config
                                  (egm_model_fingerprint without weights, or
                                  egm_synthetic_fingerprint) */
    const egm_topology *t;     /* resolved: the stages' layer ranges */
    size_t kv_budget;          /* per stage, unless its topology entry says */
    int block_tokens, kv_bf16, n_slots, gate_table;
    int attn_bf16;             /* --attn-dtype bf16 */
    int batch_invariant;       /* --batch-invariant */
    int threads;               /* BLAS threads per stage; 0: see topo_threads */
    int topo_threads;          /* 1: the topology's threads; 0: OpenBLAS default */
    egm_wire_dtype wd;
    double hello_timeout_s;    /* > 0: a worker silent this long after its
                                  Assign is taken for hung (0: wait forever) */
} egm_assign_opts;

typedef struct {
    int world;
    char (*hosts)[256];        /* [world] each rank's host */
    const char **host_ptrs;    /* [world] into hosts, for egm_pipe_mpi_opts */
    egm_pipe_caps caps;        /* smallest KV pool of any stage, slots, block */
    int assigned;              /* Assigns went out: stopping needs EGM_TAG_STOP */
    int hung;                  /* a worker never said hello: only MPI_Abort stops it */
    int exit_status;           /* abandoned before the Assigns: every worker exits
                                  with this (rank 0's) status; 0 means 1 */
} egm_workers;

/* Allocates w for `world` ranks (before anything can fail, so that
 * egm_workers_abandon always works); 0 or -1 (out of memory). */
int egm_workers_init(egm_workers *w, int world, egm_err *e);

/* Sends the Assigns and checks the Hellos. */
int egm_workers_start(egm_workers *w, const egm_assign_opts *o, egm_err *e);

/* The run failed before or after the Assigns (the caller has printed why):
 * every worker exits non-zero, quietly; after a startup timeout, through
 * MPI_Abort (a hung worker reads no message), which does not return. */
void egm_workers_abandon(const egm_workers *w);

void egm_workers_free(egm_workers *w);


#endif
