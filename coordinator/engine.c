/* engine.c - the engine options: defaults, table, resolve. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/size.h"
#include "coordinator/pipe_mpi.h"
#include "kernels/ops.h"

/* The model used when --model is not given: $EGMLA_MODEL, else the default
 * model shipped with the binary: bin/../models/egmla-tiny in the source
 * tree, PREFIX/share/egmla/models/egmla-tiny once installed (make install),
 * else ./models/. */
const char *egm_default_model(void) {
    static char path[4096];
    static const char *const beside[] = {"../models/egmla-tiny",
                                         "../share/egmla/models/egmla-tiny"};
    const char *env = getenv("EGMLA_MODEL");
    if (env && *env) return env;
    char exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = n > 0 ? (exe[n] = 0, strrchr(exe, '/')) : NULL;
    if (slash) {
        *slash = 0;
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof path, "%s/%s", exe, beside[i]);
            struct stat st;
            if (stat(path, &st) == 0) return path;
        }
    }
    return "models/egmla-tiny";
}

void egm_engine_defaults(egm_engine_opts *o) {
    memset(o, 0, sizeof *o);
    o->kv_budget = "1GiB";
    o->kv_dtype = "fp32";
    o->attn_dtype = "fp32";
    o->max_batch = 64;
    o->micro_batches = 4;
    o->chunk = 512;
    o->block_tokens = 16;
    o->threads = 0;
    o->rank_timeout = (float)EGM_RANK_TIMEOUT_DEFAULT;
}

int egm_engine_table(const egm_opt *own, egm_engine_opts *o, egm_opt *out, int cap) {
    const egm_opt eng[EGM_ENGINE_N_OPTS + 1] = {
        {"model", EGM_OPT_STRING, &o->model, "model directory or .gguf (default: the embedded EG-MLA model)", 0, 0, "DIR"},
        {"kv-budget", EGM_OPT_STRING, &o->kv_budget, "KV cache bytes per stage (e.g. 512MiB)", 0, 0, "SIZE"},
        {"kv-dtype", EGM_OPT_STRING, &o->kv_dtype, "KV cache storage: fp32 or bf16", 0, 0, "T"},
        {"attn-dtype", EGM_OPT_STRING, &o->attn_dtype, "attention products (EG-MLA rebuild, scores): fp32, or bf16 operands with fp32 accumulation", 0, 0, "T"},
        {"max-batch", EGM_OPT_INT, &o->max_batch, "sequences in flight at most", 1, 65536, "N"},
        {"micro-batches", EGM_OPT_INT, &o->micro_batches, "micro-batches in flight (results depend on it, not on the split; under mpirun default: at least one per stage)", 1, 1024, "N"},
        {"chunk", EGM_OPT_INT, &o->chunk, "rows per micro-batch at most (prefill chunk)", 1, 1 << 20, "N"},
        {"block-tokens", EGM_OPT_INT, &o->block_tokens, "positions per KV block", 1, 65536, "N"},
        {"threads", EGM_OPT_INT, &o->threads, "threads per rank: the stage's pool, BLAS single-threaded in it (0 = OPENBLAS_NUM_THREADS or one per CPU)", 0, 1024, "N"},
        {"no-gate-table", EGM_OPT_FLAG, &o->no_gate_table, "EG-MLA: gather the gate from eg_embed each step instead of a precomputed [V, d_u] table", 0, 0, NULL},
        {"rank-timeout", EGM_OPT_FLOAT, &o->rank_timeout, "under MPI: seconds without a result before rank 0 looks for a dead or hung rank", 0.1, 1e6, "S"},
        {"topology", EGM_OPT_STRING, &o->topology, "cluster topology (under mpirun)", 0, 0, "TOPO.yaml"},
        {"wire-dtype", EGM_OPT_STRING, &o->wire_dtype, "activations between stages: bf16, fp32 or int8 (default: the topology's)", 0, 0, "T"},
        {"batch-invariant", EGM_OPT_FLAG, &o->batch_invariant, "a request's tokens do not depend on what shares its batch (every row through the few-rows kernels: slower for big batches and prompts)", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    int n = 0;
    while (own && own[n].name && n < cap) out[n] = own[n], n++;
    int first = n;
    for (int i = 0; eng[i].name && n < cap - 1; i++) out[n++] = eng[i];
    out[n] = eng[EGM_ENGINE_N_OPTS];
    return first;
}

/* index of an engine entry, in egm_engine_table's order */
enum { E_MODEL, E_KV_BUDGET, E_KV_DTYPE, E_ATTN_DTYPE, E_MAX_BATCH, E_MICRO_BATCHES };

int egm_engine_resolve(egm_engine_opts *o, const unsigned char *given, egm_err *e) {
    o->max_batch_set = given && given[E_MAX_BATCH];
    o->micro_batches_set = given && given[E_MICRO_BATCHES];
    if (egm_parse_size(o->kv_budget, &o->kv_budget_bytes) || o->kv_budget_bytes == 0)
        return egm_fail(e, "--kv-budget: expected a size such as 512MiB, found \"%s\"", o->kv_budget);
    if (strcmp(o->kv_dtype, "fp32") && strcmp(o->kv_dtype, "bf16"))
        return egm_fail(e, "--kv-dtype: expected fp32 or bf16, found \"%s\"", o->kv_dtype);
    o->kv_bf16 = !strcmp(o->kv_dtype, "bf16");
    if (strcmp(o->attn_dtype, "fp32") && strcmp(o->attn_dtype, "bf16"))
        return egm_fail(e, "--attn-dtype: expected fp32 or bf16, found \"%s\"", o->attn_dtype);
    o->attn_bf16 = !strcmp(o->attn_dtype, "bf16");
    if (o->wire_dtype && egm_wire_dtype_parse(o->wire_dtype, &o->wd))
        return egm_fail(e, "--wire-dtype: expected bf16, fp32 or int8, found \"%s\"", o->wire_dtype);
    egm_set_batch_invariant(o->batch_invariant); /* this process's stage; workers get it in Assign */
    return 0;
}

void egm_engine_to_run(const egm_engine_opts *o, egm_run_opts *r) {
    r->model = o->model ? o->model : egm_default_model();
    r->kv_budget = o->kv_budget;
    r->kv_dtype = o->kv_dtype;
    r->wire_dtype = o->wire_dtype;
    r->topology = o->topology;
    r->max_batch = o->max_batch;
    r->micro_batches = o->micro_batches;
    r->micro_batches_set = o->micro_batches_set;
    r->chunk = o->chunk;
    r->block_tokens = o->block_tokens;
    r->threads = o->threads;
    r->gate_table = !o->no_gate_table;
    r->attn_bf16 = o->attn_bf16;
    r->batch_invariant = o->batch_invariant;
    r->rank_timeout = o->rank_timeout;
}
