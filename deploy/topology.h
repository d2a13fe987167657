/* topology.h - the cluster layout of one run: nodes, pipeline stages, wire.
 *
 * A topology is read from YAML (deploy/examples/ has samples):
 *
 *   model: models/egmla-tiny      # optional; the command's --model wins
 *   transport: auto               # shm | tcp | ucx | auto
 *   wire_dtype: bf16              # bf16 | fp32 | int8 (activations on the wire)
 *   bind: none                    # none | core (pin each rank to `threads` cores)
 *   micro_batches: 4              # in flight; default max(2, stages)
 *   kv_budget: 2GiB               # default per stage; bytes or K/M/G/T[i][B]
 *   coordinator: {node: a}        # rank 0's node (default: the first node)
 *   nodes:
 *     - {name: a, host: 10.0.0.1, slots: 2, threads: 1}
 *     - {name: b, host: node-b}   # host defaults to name, threads to 1,
 *                                 # slots to the ranks placed on it
 *     - {name: c, calibration: c.json}  # egmla bench --calibrate on c (for
 *                                 # egmla plan and the auto split; a path
 *                                 # relative to the topology's folder)
 *   stages:                       # in pipeline order
 *     - {node: a, layers: 0-5, kv_budget: 1GiB, threads: 1}
 *     - {node: b, layers: auto}   # layers: "a-b" (inclusive), "n" or auto
 *
 * Ranks: rank 0 is the coordinator on its node; rank i (1..S) runs stage i-1.
 * A stage's threads default to its node's threads, its kv_budget to the
 * top-level one (0 = not given: the engine's default).
 *
 * Everything that can be checked without the model is checked at parse time
 * (keys, types, names, slots, explicit ranges in order without overlap);
 * egm_topology_resolve() then checks the ranges against the model's layer
 * count and spreads the `auto` stages over the layers left. Every message
 * names the file and the YAML line, e.g.
 *   topo.yaml line 7: unknown key 'thread' in a stage (expected one of: ...) */
#ifndef EGM_TOPOLOGY_H
#define EGM_TOPOLOGY_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/size.h"
#include "base/wire_dtype.h"

typedef enum {
    EGM_TRANSPORT_AUTO = 0,   /* let Open MPI choose */
    EGM_TRANSPORT_SHM,        /* one host: ob1 + vader */
    EGM_TRANSPORT_TCP,        /* ob1 + tcp */
    EGM_TRANSPORT_UCX,        /* pml ucx, any transport/device (no IB needed) */
} egm_transport;

typedef enum { EGM_BIND_NONE = 0, EGM_BIND_CORE } egm_bind;

#define EGM_TOPO_NAME_MAX 64
#define EGM_TOPO_HOST_MAX 256

typedef struct {
    char name[EGM_TOPO_NAME_MAX];
    char host[EGM_TOPO_HOST_MAX];
    int slots;          /* ranks it may hold (given, or = ranks placed) */
    int threads;        /* default threads of the ranks placed on it */
    int line;           /* YAML line of the entry (0: not from a file) */
    char calibration[EGM_TOPO_HOST_MAX]; /* `egmla bench --calibrate` JSON ("": none) */
} egm_topo_node;

typedef struct {
    int node;           /* index into nodes */
    int is_auto;        /* layers: auto (layer_lo/hi set by resolve) */
    int layer_lo;       /* first layer */
    int layer_hi;       /* one past the last layer; -1 until resolved if auto */
    int threads;
    size_t kv_budget;   /* bytes; 0 = engine default */
    int line;
} egm_topo_stage;

typedef struct {
    char origin[512];        /* file name (or caller's label) for messages */
    char *model;             /* NULL when not given */
    egm_transport transport;
    egm_wire_dtype wire_dtype;
    egm_bind bind;
    int micro_batches;       /* >= 1 */
    size_t kv_budget;        /* default per stage; 0 = engine default */
    int coordinator;         /* node index of rank 0 */
    int coordinator_threads; /* threads of rank 0 (default: its node's) */
    int n_nodes;
    egm_topo_node *nodes;
    int n_stages;
    egm_topo_stage *stages;
    int n_layers;            /* set by resolve; 0 before */
} egm_topology;

/* Reads and validates a YAML file. On failure t is left empty (safe to free). */
int egm_topology_load(const char *path, egm_topology *t, egm_err *e);

/* Same, from text in memory; `origin` names it in messages. */
int egm_topology_parse(const char *buf, size_t len, const char *origin,
                       egm_topology *t, egm_err *e);

void egm_topology_free(egm_topology *t);

/* The topology used when none is given: n_stages auto stages and the
 * coordinator, all on one node "localhost", one thread each. */
int egm_topology_auto(int n_stages, egm_topology *t);

/* Checks the stages against a model of n_layers layers and assigns the auto
 * stages. layer_cost[n_layers] weights the layers (NULL: all equal). Explicit
 * ranges stay; the auto stages between two explicit ones (or the ends) share
 * the gap, contiguously and in order, so that the largest cost / threads of
 * any of them is as small as possible. Can be called again (auto stages are
 * re-assigned). */
int egm_topology_resolve(egm_topology *t, int n_layers,
                         const double *layer_cost, egm_err *e);
/* Same, with each stage's speed rate[n_stages] (> 0) instead of its
 * threads: a stage's time is its layers' cost / rate (NULL: threads). */
int egm_topology_resolve_rates(egm_topology *t, int n_layers, const double *layer_cost,
                               const double *rate, egm_err *e);

/* Rank placement: ranks = stages + 1. */
int egm_topology_n_ranks(const egm_topology *t);
int egm_topology_rank_node(const egm_topology *t, int rank);
int egm_topology_rank_threads(const egm_topology *t, int rank);

/* Fails, naming the topology, when MPI's world size is not the topology's
 * rank count (e.g. plain srun without PMIx starts N singletons of size 1). */
int egm_topology_check_world(const egm_topology *t, int world_size,
                             egm_err *e);

#endif
