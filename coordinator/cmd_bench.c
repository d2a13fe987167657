/* cmd_bench.c - `egmla bench`: how fast one rank prefills and decodes a
 * model, as a fraction of what this machine can do.
 *
 * Every speed is divided by a ceiling the same run measures
 * (coordinator/roofline.c), by default again right after each row, so the
 * ratios mean the same on a laptop and a server, and on a machine other
 * people are loading at the same time:
 *   ratio_to_sgemm = projection flops of the step / step time
 *                    / sgemm GFLOP/s on the model's shapes at M = rows
 *   ratio_to_bw    = weight bytes the step reads / step time / triad GB/s
 *
 * Method, per context c: one sequence is prefilled with c tokens in chunks
 * (timed: prefill tokens/s and time to first token); its cache is then
 * copied block by block into the other b - 1 slots (decode cost depends on
 * how many positions are cached, not on their values), and `steps` greedy
 * decode steps of b rows, one per sequence, are timed after one warm-up
 * step; the reported step time is the median. The step's projections are
 * also replayed alone (same weights, same calls) to split the step into
 * projection GEMMs and the rest. Weights are synthetic (egm_model_random)
 * unless --model is given.
 *
 * Under mpirun with N >= 2 ranks the same options benchmark a pipeline:
 * rank 0 drives ranks 1..N-1 (coordinator/bench_mpi.c); what both share
 * (ceilings, rows, KV report, JSON) is in coordinator/bench_report.c. */
#include <cblas.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "base/args.h"
#include "base/clock.h"
#include "base/size.h"
#include "coordinator/bench.h"
#include "coordinator/bench_mpi.h"
#include "coordinator/bench_report.h"
#include "coordinator/calibrate.h"
#include "coordinator/commands.h"
#include "coordinator/engine.h"
#include "coordinator/pipe_mpi.h"
#include "coordinator/roofline.h"
#include "coordinator/workers.h"
#include "deploy/topology.h"
#include "kernels/ops.h"
#include "model/weights.h"
#include "worker/head.h"
#include "worker/stage.h"
#include "worker/wire.h"
#include "worker/worker_mpi.h"

/* "1,8,32" -> {1, 8, 32}; each in [1, max]. */
static int parse_list(const char *s, int *out, int max, const char *opt, egm_err *e) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > max || (*end && *end != ',') || n == EGM_BENCH_MAX_LIST)
            return egm_fail(e, "egmla bench: --%s: expected up to %d comma-separated integers "
                            "in [1, %d], found \"%s\"", opt, EGM_BENCH_MAX_LIST, max, s);
        out[n++] = (int)v;
        if (!*end) return n;
        p = end + 1;
    }
}

typedef struct {
    egm_stage st;
    egm_head hd;
    float *x;
    int *slot, *pos, *tok;
    unsigned char *want;
    egm_head_out *out;
} rig;

static void rig_free(rig *g) {
    egm_head_free(&g->hd);
    egm_stage_free(&g->st);
    free(g->x), free(g->slot), free(g->pos), free(g->tok), free(g->want), free(g->out);
    memset(g, 0, sizeof *g);
}

static int rig_init(rig *g, const egm_model *m, int slots, int seq_tokens, int rows,
                    int block_tokens, int kv_bf16, int attn_bf16, egm_err *e) {
    const egm_config *c = &m->cfg;
    memset(g, 0, sizeof *g);
    size_t per_tok = egm_kv_bytes_per_token(c->num_layers, egm_config_kv_elems(c),
                                            c->arch == EGM_EGMLA, kv_bf16);
    size_t blocks = ((size_t)seq_tokens + block_tokens - 1) / block_tokens;
    size_t budget = (size_t)slots * blocks * block_tokens * per_tok;
    if (egm_stage_init(&g->st, m, slots, budget, block_tokens, kv_bf16, e) ||
        egm_stage_set_attn_bf16(&g->st, attn_bf16, e))
        return -1;
    if (egm_head_init(&g->hd, slots, c->vocab_size, e)) return -1;
    g->x = malloc(sizeof(float) * (size_t)rows * c->hidden_size);
    g->slot = malloc(sizeof(int) * (size_t)rows);
    g->pos = malloc(sizeof(int) * (size_t)rows);
    g->tok = malloc(sizeof(int) * (size_t)rows);
    g->want = malloc((size_t)rows);
    g->out = malloc(sizeof *g->out * (size_t)rows);
    if (!g->x || !g->slot || !g->pos || !g->tok || !g->want || !g->out)
        return egm_fail(e, "egmla bench: out of memory for %d rows", rows);
    egm_sampling sp;
    egm_sampling_default(&sp);
    sp.temperature = 0; /* greedy */
    /* greedy tokens without log-probs, as `generate` runs by default */
    for (int i = 0; i < slots; i++) {
        egm_head_open(&g->hd, i, EGM_MODE_GENERATE, &sp, NULL, 0);
        egm_head_set_top(&g->hd, i, -1);
    }
    return 0;
}

/* Prefills slot 0 with prompt[0..n) in chunks; returns the first generated
 * token (the time to first token is the time this takes). */
static int prefill(rig *g, const int *prompt, int n, int chunk, long *positions) {
    int first = 0;
    *positions = 0;
    for (int p0 = 0; p0 < n; p0 += chunk) {
        int T = n - p0 < chunk ? n - p0 : chunk;
        for (int t = 0; t < T; t++) {
            g->slot[t] = 0;
            g->pos[t] = p0 + t;
            g->tok[t] = prompt[p0 + t];
            g->want[t] = p0 + t == n - 1;
        }
        egm_mbatch b = {T, g->slot, g->pos, g->tok};
        egm_stage_forward(&g->st, &b, g->x);
        if (egm_head_run(&g->hd, &g->st, &b, g->want, g->x, g->out)) first = g->out[0].token;
        *positions += p0 + T;
    }
    return first;
}

/* One decode step: row i is slot i's next token at position pos. */
static void decode_step(rig *g, int batch, int pos, int *next) {
    for (int i = 0; i < batch; i++) {
        g->slot[i] = i;
        g->pos[i] = pos;
        g->tok[i] = next[i];
        g->want[i] = 1;
    }
    egm_mbatch b = {batch, g->slot, g->pos, g->tok};
    egm_stage_forward(&g->st, &b, g->x);
    int k = egm_head_run(&g->hd, &g->st, &b, g->want, g->x, g->out);
    for (int i = 0; i < k; i++) next[g->out[i].slot] = g->out[i].token;
}

/* The stage's projection GEMMs of one step of M rows, replayed alone with
 * the model's own weights in the stage's order (so the weights stream from
 * memory as in a real step): the step's time if attention, norms and
 * sampling were free. x and y hold M * egm_max_width floats. */
static double replay_proj(const egm_model *m, int M, const float *x, float *y) {
    const egm_config *c = &m->cfg;
    double t0 = egm_now();
    for (int l = m->lo; l < m->hi; l++) {
        const egm_layer *w = &m->layers[l - m->lo];
        if (c->arch == EGM_LLAMA) {
            egm_matmul(y, x, &w->wq, M);
            egm_matmul(y, x, &w->wk, M);
            egm_matmul(y, x, &w->wv, M);
            egm_matmul(y, x, &w->wo, M);
        } else {
            if (w->q_proj.data) {
                egm_matmul(y, x, &w->q_proj, M);
            } else {
                egm_matmul(y, x, &w->q_a, M);
                egm_matmul(y, x, &w->q_b, M);
            }
            egm_matmul(y, x, &w->kv_a, M);
            egm_matmul(y, x, &w->o_proj, M);
        }
        egm_matmul(y, x, &w->w_gate, M);
        egm_matmul(y, x, &w->w_up, M);
        egm_matmul(y, x, &w->w_down, M);
    }
    egm_matmul(y, x, &m->lm_head, M);
    return egm_now() - t0;
}

/* Elements of the projections (egm_proj_shapes, lm_head included). */
static double proj_elems(const egm_config *c) {
    egm_proj_shape s[EGM_MAX_PROJ];
    int n = egm_proj_shapes(c, s);
    double e = 0;
    for (int i = 0; i < n; i++) e += (double)s[i].N * s[i].K * s[i].count;
    return e;
}

/* Bytes of the projections as loaded (the embedding is not one, unless
 * tied to lm_head), and the bytes per element the roofline then uses. */
static double stored_proj_bytes(const egm_model *m) {
    double b = 0;
    for (int t = 0; t <= EGM_GGML_BF16; t++) b += (double)m->mat_bytes[t];
    if (m->embed.data && m->embed.data != m->lm_head.data) b -= (double)egm_mat_bytes(&m->embed);
    egm_set_weight_bytes_per_elem(b / proj_elems(&m->cfg));
    return b;
}

/* --weights as a ggml type, -1 if unknown. */
static int weights_type(const char *s) {
    if (!s || !strcmp(s, "f32")) return EGM_GGML_F32;
    if (!strcmp(s, "bf16")) return EGM_GGML_BF16;
    if (!strcmp(s, "f16")) return EGM_GGML_F16;
    if (!strcmp(s, "q8_0")) return EGM_GGML_Q8_0;
    return -1;
}

/* Widest input or output of any projection. */
static long max_width(const egm_config *c) {
    long w = c->vocab_size;
    long v[] = {c->hidden_size, c->intermediate_size, (long)c->num_heads * c->head_dim,
                (long)c->num_heads * (c->qk_nope_head_dim + c->qk_rope_head_dim),
                (long)c->num_heads * c->v_head_dim, c->q_lora_rank};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        if (v[i] > w) w = v[i];
    return w;
}

/* The model of --config (synthetic, converted to --weights) or of --model;
 * 0 or the exit code. */
static int bench_load(const egm_bench_opts *o, egm_model *m) {
    egm_err e;
    int flags = EGM_LOAD_EMBED | EGM_LOAD_HEAD | (o->no_gate_table ? 0 : EGM_LOAD_GATE_TABLE);
    if (o->config) {
        egm_config cfg;
        int wt = weights_type(o->weights);
        if (wt < 0) {
            fprintf(stderr, "egmla bench: --weights: expected f32, bf16, f16 or q8_0, found \"%s\"\n",
                    o->weights);
            return EGM_EXIT_USAGE;
        }
        if (egm_config_load(o->config, &cfg, &e) ||
            egm_model_random(&cfg, o->seed, 0, -1, flags, m, &e) ||
            (wt != EGM_GGML_F32 && egm_model_convert(m, wt, &e))) {
            fprintf(stderr, "egmla bench: %s\n", e.msg);
            return EGM_EXIT_FAIL;
        }
    } else if (egm_model_load(o->model, 0, -1, flags, m, &e)) {
        fprintf(stderr, "egmla bench: %s\n", e.msg);
        return EGM_EXIT_FAIL;
    }
    return 0;
}

/* What the table's rows are measured on and divided by. */
static void print_setup(FILE *tab, const egm_bench_opts *o, const egm_config *c,
                        egm_bench_roof *rf, double stored, int gate_table) {
    const char *src = o->config ? o->config : o->model;
    fprintf(tab, "model: %s (%s, synthetic=%s), %d layers, D %d, vocab %d; threads %d, kv %s%s%s\n",
           src, c->model_type, o->config ? "yes" : "no", c->num_layers, c->hidden_size,
           c->vocab_size, rf->threads, o->kv_dtype, gate_table ? ", gate table G precomputed" : "",
           o->attn_bf16 ? ", attention bf16" : "");
    fprintf(tab, "weights: %.0f bytes of projections as stored (%.2f bytes per weight)\n",
            stored, stored / proj_elems(c));
    fprintf(tab, "roofline: triad %.1f GB/s (read-only %.1f GB/s, 3 x %d MiB); sgemm on the model's "
           "shapes:", rf->bw, rf->read_bw, o->bw_mib);
    for (int i = 0; i < o->nb; i++)
        fprintf(tab, " M=%d %.1f", o->batches[i], egm_bench_sgemm_at(rf, o->batches[i], 0));
    fprintf(tab, " GFLOP/s\n");
    fflush(tab);
}

/* One benchmark in progress: what it measures against, the rows so far and
 * the scratch every context reuses. */
typedef struct {
    const egm_bench_opts *o;
    const egm_model *m;
    egm_bench_roof *rf;
    FILE *tab;
    int gate_table;
    egm_bench_row *res;
    int nres;
    int *next, *prompt;
    double *times;
    float *px, *py; /* replay_proj's input and output */
} bench_run;

/* -1 (said) if out of memory; the caller frees what was allocated. */
static int run_alloc(bench_run *u) {
    const egm_bench_opts *o = u->o;
    long width = max_width(&u->m->cfg);
    u->res = calloc((size_t)o->nc * (o->nb + 1), sizeof *u->res);
    u->next = malloc(sizeof(int) * (size_t)o->max_b);
    u->prompt = malloc(sizeof(int) * (size_t)o->max_c);
    u->times = malloc(sizeof(double) * (size_t)o->steps);
    u->px = malloc(sizeof(float) * (size_t)o->max_b * (size_t)width);
    u->py = malloc(sizeof(float) * (size_t)o->max_b * (size_t)width);
    if (u->px)
        for (long i = 0; i < (long)o->max_b * width; i++) u->px[i] = 0.01f;
    if (!u->res || !u->next || !u->prompt || !u->times || !u->px || !u->py) {
        fprintf(stderr, "egmla bench: out of memory\n");
        return -1;
    }
    egm_bench_prompt(u->prompt, o->max_c, u->m->cfg.vocab_size);
    return 0;
}

static void run_free(bench_run *u) {
    free(u->res), free(u->next), free(u->prompt), free(u->times), free(u->px), free(u->py);
}

/* Prefill at batch 1: tokens/s and time to first token; returns the
 * first token, which every decode row then starts from. A short prompt is
 * prefilled again (the same positions: the cache ends as it was) until a
 * second has passed, at most PREFILL_REPS times, and the median counts: a
 * single prefill of 128 tokens takes a few hundred milliseconds, as long
 * as one burst of another process or a page-faulting first touch. */
#define PREFILL_REPS 5
static int prefill_row(bench_run *u, rig *g, int ctx) {
    const egm_bench_opts *o = u->o;
    long positions;
    double t[PREFILL_REPS], total = 0;
    int first = 0, reps = 0;
    while (reps < PREFILL_REPS && (reps == 0 || total < 1.0)) {
        double t0 = egm_now();
        first = prefill(g, u->prompt, ctx, o->chunk, &positions);
        t[reps] = egm_now() - t0;
        total += t[reps++];
    }
    double mean = total / reps, med = egm_bench_median(t, reps);
    egm_bench_row *r = &u->res[u->nres++];
    int cm = ctx < o->chunk ? ctx : o->chunk;
    *r = (egm_bench_row){.phase = "prefill", .batch = 1, .context = ctx, .secs = med,
                         .mean_secs = mean, .steps = reps, .tokens_per_s = ctx / med,
                         .sgemm_m = cm, .first_token = first};
    egm_bench_row_ceilings(u->rf, r, cm);
    egm_bench_prefill_cost(&u->m->cfg, ctx, o->chunk, positions, u->gate_table, o->bf16,
                           &r->cost);
    egm_bench_print_row(u->tab, r);
    fputc('\n', u->tab);
    fflush(u->tab);
    return first;
}

/* Decode at batch b: slot 0's cache copied into slots 1..b-1, one warm-up
 * step, then `steps` timed ones; projections and attention are replayed
 * alone to split the step. */
static void decode_row(bench_run *u, rig *g, int b, int ctx, int first) {
    const egm_bench_opts *o = u->o;
    int steps = o->steps;
    for (int s = 1; s < b; s++) (void)egm_stage_fork(&g->st, s, 0, ctx);
    for (int s = 0; s < b; s++) u->next[s] = first;
    decode_step(g, b, ctx, u->next); /* warm-up */
    double total = 0;
    for (int k = 0; k < steps; k++) {
        double t0 = egm_now();
        decode_step(g, b, ctx + 1 + k, u->next);
        u->times[k] = egm_now() - t0;
        total += u->times[k];
    }
    /* The median step: robust to the other loads of a shared machine. */
    double t = egm_bench_median(u->times, steps);
    double pt[3], at[3];
    for (int k = 0; k < 3; k++) pt[k] = replay_proj(u->m, b, u->px, u->py);
    /* attention alone: the last step's rows, against the cache as is */
    egm_mbatch lb = {b, g->slot, g->pos, g->tok};
    for (int k = 0; k < 3; k++) {
        double a0 = egm_now();
        egm_stage_attention_replay(&g->st, &lb);
        at[k] = egm_now() - a0;
    }
    egm_bench_row *r = &u->res[u->nres++];
    *r = (egm_bench_row){.phase = "decode", .batch = b, .context = ctx, .steps = steps,
                         .secs = t, .mean_secs = total / steps,
                         .proj_secs = egm_bench_median(pt, 3),
                         .attn_secs = egm_bench_median(at, 3), .tokens_per_s = b / t,
                         .sgemm_m = b};
    egm_bench_row_ceilings(u->rf, r, b);
    egm_bench_decode_cost(&u->m->cfg, b, ctx, steps, u->gate_table, o->bf16, &r->cost);
    egm_bench_print_row(u->tab, r);
    fputc('\n', u->tab);
    fflush(u->tab);
}

/* Every row of one context, on a fresh pool sized for it; -1 (said) if the
 * pool could not be built. */
static int bench_context(bench_run *u, int ctx) {
    const egm_bench_opts *o = u->o;
    int rows = o->chunk > o->max_b ? o->chunk : o->max_b, failed = 0;
    egm_err e;
    rig g;
    if (rig_init(&g, u->m, o->max_b, ctx + o->steps + 1, rows, o->block_tokens, o->bf16,
                 o->attn_bf16, &e)) {
        fprintf(stderr, "egmla bench: %s\n", e.msg);
        rig_free(&g);
        return -1;
    }
    for (int s = 0; s < o->max_b; s++)
        if (egm_stage_reserve(&g.st, s, ctx + o->steps + 1)) {
            fprintf(stderr, "egmla bench: KV pool refused slot %d (internal error)\n", s);
            failed = 1;
        }
    if (!failed) {
        int first = prefill_row(u, &g, ctx);
        for (int bi = 0; bi < o->nb; bi++) decode_row(u, &g, o->batches[bi], ctx, first);
    }
    rig_free(&g);
    return failed ? -1 : 0;
}

/* One rank: the model in this process, one stage holding every layer. */
static int bench_one(const egm_bench_opts *o) {
    int threads = o->threads ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    egm_model m;
    int rc = bench_load(o, &m);
    if (rc) return rc;
    const egm_config *c = &m.cfg;
    FILE *tab = egm_bench_table(o);
    double stored = stored_proj_bytes(&m);
    int gate_table = c->arch == EGM_EGMLA && !o->no_gate_table;
    if (egm_bench_check_context(o, c)) {
        egm_model_free(&m);
        return EGM_EXIT_USAGE;
    }

    /* The roofline, with the same threads as the engine. */
    openblas_set_num_threads(threads);
    egm_bench_roof rf = {.c = c, .reps = o->reps, .threads = threads, .remeasure = !o->once,
                         .bw_bytes = (size_t)o->bw_mib << 20};
    rf.n_shapes = egm_proj_shapes(c, rf.shapes);
    if (egm_bench_bw_now(&rf) <= 0) {
        fprintf(stderr, "egmla bench: bandwidth test failed (out of memory for 3 x %d MiB?)\n",
                o->bw_mib);
        egm_model_free(&m);
        return EGM_EXIT_FAIL;
    }
    print_setup(tab, o, c, &rf, stored, gate_table);

    bench_run u = {.o = o, .m = &m, .rf = &rf, .tab = tab, .gate_table = gate_table};
    int failed = run_alloc(&u) ? 1 : 0;
    egm_bench_print_head(tab);
    fputc('\n', tab);
    for (int ci = 0; !failed && ci < o->nc; ci++)
        if (bench_context(&u, o->contexts[ci])) failed = 1;

    /* KV capacity. */
    json_t *kv = egm_bench_kv(c, o, tab, &failed);
    if (o->json_path && !failed) {
        json_t *ra = json_array();
        for (int i = 0; i < u.nres; i++) {
            json_t *row = egm_bench_row_json(&u.res[i], 1);
            json_object_set_new(row, "attn_dtype", json_string(o->attn_dtype));
            json_array_append_new(ra, row);
        }
        if (egm_bench_write_json(o, c, egm_bench_roof_json(&rf, o->max_b), ra, kv, NULL))
            failed = 1;
    } else {
        json_decref(kv);
    }
    run_free(&u);
    egm_model_free(&m);
    return failed ? EGM_EXIT_FAIL : EGM_EXIT_OK;
}

/* Under mpirun: rank 0 benchmarks the pipeline of ranks 1..N-1 (with one
 * rank, the same as without mpirun). */
static int bench_under_mpi(const egm_bench_opts *o) {
    int provided, rank = 0, world = 1;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "egmla bench: MPI_Init failed\n");
        return EGM_EXIT_FAIL;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int rc = world == 1  ? bench_one(o)
             : rank == 0 ? egm_bench_mpi(o, world)
                         : egm_worker_main(rank, world);
    MPI_Finalize();
    return rc;
}

/* Bad command lines exit 2 on every rank, but only rank 0 says why. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    if (!egm_run_is_worker()) {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    return EGM_EXIT_USAGE;
}

/* The engine options (engine.h), in the bench's own terms. */
static void bench_engine_opts(egm_bench_opts *o, const egm_engine_opts *eo) {
    o->model = eo->model;
    o->threads = eo->threads;
    o->kv_dtype = eo->kv_dtype;
    o->bf16 = eo->kv_bf16;
    o->attn_dtype = eo->attn_dtype;
    o->attn_bf16 = eo->attn_bf16;
    o->budget_s = eo->kv_budget;
    o->budget = eo->kv_budget_bytes;
    o->block_tokens = eo->block_tokens;
    o->chunk = eo->chunk;
    o->no_gate_table = eo->no_gate_table;
    o->topology = eo->topology;
    o->wire_dtype = eo->wire_dtype;
    o->micro_batches = eo->micro_batches_set ? eo->micro_batches : 0; /* 0: one per stage */
    o->rank_timeout = eo->rank_timeout;
}

int egm_cmd_bench(int argc, char **argv) {
    egm_bench_opts o = {.steps = 16, .reps = 5, .bw_mib = 256, .seed = 1, .colo_copies = -1};
    const char *batch_s = "1,8,32", *ctx_s = "128,2048";
    int calibrate = 0;
    egm_opt opts[] = {
        {"calibrate", EGM_OPT_FLAG, &calibrate, "measure this node's layer, head, embedding and "
         "link costs for egmla plan (JSON to --json, default stdout)", 0, 0, NULL},
        {"colocate", EGM_OPT_INT, &o.colo_copies, "with --calibrate: time the layers again with up "
         "to N more copies running at once (stages sharing the node; default: cores / threads + 1, 0: "
         "skip)", 0, EGM_CALIB_MAX_COPIES, "N"},
        {"config", EGM_OPT_STRING, &o.config, "config.json: synthetic weights of that shape", 0, 0, "FILE"},
        {"batch", EGM_OPT_STRING, &batch_s, "decode batch sizes (sequences per step)", 0, 0, "LIST"},
        {"context", EGM_OPT_STRING, &ctx_s, "cached tokens per sequence before decoding", 0, 0, "LIST"},
        {"steps", EGM_OPT_INT, &o.steps, "timed decode steps per (batch, context)", 1, 1 << 20, "N"},
        {"reps", EGM_OPT_INT, &o.reps, "repetitions of each roofline measurement (best kept)", 1, 1000, "N"},
        {"bw-mib", EGM_OPT_INT, &o.bw_mib, "MiB per array of the bandwidth test (3 arrays)", 1, 1 << 16, "N"},
        {"roofline-once", EGM_OPT_FLAG, &o.once, "measure the ceilings once, not again before each row", 0, 0, NULL},
        {"seed", EGM_OPT_U64, &o.seed, "seed of the synthetic weights", 0, 0, "S"},
        {"weights", EGM_OPT_STRING, &o.weights, "one rank, --config: synthetic projection weights "
         "stored as f32, bf16, f16 or q8_0 (default: f32)", 0, 0, "T"},
        {"json", EGM_OPT_STRING, &o.json_path, "also write the results as JSON (- = stdout)", 0, 0, "FILE"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    egm_engine_opts eo;
    egm_engine_defaults(&eo);
    eo.kv_budget = "4GiB"; /* bench: the budget of the capacity report */
    egm_opt tab[sizeof opts / sizeof *opts + EGM_ENGINE_N_OPTS];
    unsigned char given[sizeof tab / sizeof *tab] = {0};
    int first = egm_engine_table(opts, &eo, tab, (int)(sizeof tab / sizeof *tab));
    egm_cmd cmd = {"egmla bench", NULL,
                   "Measures prefill and decode throughput on synthetic weights of a config "
                   "(--config) or a real model (--model), as ratios to the sgemm GFLOP/s and "
                   "memory bandwidth the same run measures; and the KV cache's bytes per token "
                   "and capacity at a budget. One rank, or under mpirun rank 0 drives a pipeline "
                   "of ranks 1..N-1. See docs/BENCHMARKS.md.",
                   tab};
    egm_err e;
    int rc = egm_args_parse_given(&cmd, argc, argv, NULL, given, &e);
    if (rc == 1) return EGM_EXIT_OK;
    if (rc < 0) return usage_error("%s", e.msg);
    if (egm_engine_resolve(&eo, given + first, &e)) return usage_error("egmla bench: %s", e.msg);
    bench_engine_opts(&o, &eo);
    if ((o.nb = parse_list(batch_s, o.batches, 1 << 16, "batch", &e)) < 0 ||
        (o.nc = parse_list(ctx_s, o.contexts, 1 << 24, "context", &e)) < 0)
        return usage_error("%s", e.msg);
    if (o.micro_batches > 32)
        return usage_error("egmla bench: --micro-batches: at most 32 here, found %d", o.micro_batches);
    if (!o.config == !o.model)
        return usage_error("%s", "egmla bench: give exactly one of --config FILE and --model DIR");
    if (egm_out_check(o.json_path, "--json", &e)) { /* before the run, not after */
        usage_error("egmla bench: %s", e.msg);
        return EGM_EXIT_FAIL;
    }
    o.max_b = o.max_c = 1;
    for (int i = 0; i < o.nb; i++)
        if (o.batches[i] > o.max_b) o.max_b = o.batches[i];
    if (eo.max_batch_set && o.max_b > eo.max_batch)
        return usage_error("egmla bench: --batch %d is more than --max-batch %d", o.max_b, eo.max_batch);
    for (int i = 0; i < o.nc; i++)
        if (o.contexts[i] > o.max_c) o.max_c = o.contexts[i];
    if (calibrate) return egm_calibrate_main(&o);
    return egm_under_mpi() ? bench_under_mpi(&o) : bench_one(&o);
}
