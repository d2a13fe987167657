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
 * unless --model is given. */
#include <cblas.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/args.h"
#include "coordinator/bench.h"
#include "coordinator/commands.h"
#include "coordinator/roofline.h"
#include "deploy/topology.h"
#include "kernels/ops.h"
#include "model/weights.h"
#include "worker/head.h"
#include "worker/stage.h"

#define MAX_LIST 16

/* Where the table goes: stdout, or stderr when the JSON goes to stdout. */
static FILE *tab;

/* Pool allocations this large are verified by a real egm_kv_init: the pool
 * is calloc'd, so untouched pages cost address space, not memory. */
#define VERIFY_MAX ((size_t)8 << 30)

typedef struct {
    const char *phase;
    int batch, context, steps;
    double secs;          /* prefill: whole prompt; decode: median step */
    double mean_secs;     /* decode: mean step */
    double proj_secs;     /* decode: the step's projections replayed alone */
    double tokens_per_s;
    egm_step_cost cost;   /* per step (decode) or whole prefill */
    double sgemm;         /* ceilings used for this row: GFLOP/s at its M, */
    double bw;            /* and triad GB/s */
    int sgemm_m;
} result;

typedef struct {
    int M;
    double gflops;
} ceiling;

typedef struct {
    const egm_config *c;
    egm_proj_shape shapes[EGM_MAX_PROJ];
    int n_shapes, reps, threads, remeasure;
    size_t bw_bytes;
    double bw, read_bw;   /* best seen in the run */
    ceiling ceil[2 * MAX_LIST + 2];
    int n_ceil;
} roof;

/* "1,8,32" -> {1, 8, 32}; each in [1, max]. */
static int parse_list(const char *s, int *out, int max, const char *opt, egm_err *e) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > max || (*end && *end != ',') || n == MAX_LIST)
            return egm_fail(e, "egmla bench: --%s: expected up to %d comma-separated integers "
                            "in [1, %d], found \"%s\"", opt, MAX_LIST, max, s);
        out[n++] = (int)v;
        if (!*end) return n;
        p = end + 1;
    }
}

/* sgemm ceiling at M rows: measured once per M, or again on every call
 * when remeasuring; the run's roofline keeps the best. */
static double sgemm_at(roof *r, int M, int again) {
    int i = 0;
    while (i < r->n_ceil && r->ceil[i].M != M) i++;
    if (i < r->n_ceil && !again) return r->ceil[i].gflops;
    double g = egm_roofline_sgemm(r->shapes, r->n_shapes, M, r->reps, NULL);
    if (i < r->n_ceil) {
        if (g > r->ceil[i].gflops) r->ceil[i].gflops = g;
    } else if (r->n_ceil < (int)(sizeof r->ceil / sizeof *r->ceil)) {
        r->ceil[r->n_ceil++] = (ceiling){M, g};
    }
    return g;
}

/* Triad bandwidth, measured now; the run's roofline keeps the best. */
static double bw_now(roof *r) {
    double rd = 0, bw = egm_roofline_membw(r->bw_bytes, r->threads, r->reps, &rd);
    if (bw > r->bw) r->bw = bw;
    if (rd > r->read_bw) r->read_bw = rd;
    return bw;
}

/* The ceilings a result row is divided by. On a machine shared with other
 * work (the default) they are measured again right after the row's run, so
 * the row and its ceilings see about the same load. */
static void row_ceilings(roof *r, result *x, int M) {
    x->sgemm = sgemm_at(r, M, r->remeasure);
    x->bw = r->remeasure ? bw_now(r) : r->bw;
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
                    int block_tokens, int kv_bf16, egm_err *e) {
    const egm_config *c = &m->cfg;
    memset(g, 0, sizeof *g);
    size_t per_tok = egm_kv_bytes_per_token(c->num_layers, egm_config_kv_elems(c),
                                            c->arch == EGM_EGMLA, kv_bf16);
    size_t blocks = ((size_t)seq_tokens + block_tokens - 1) / block_tokens;
    size_t budget = (size_t)slots * blocks * block_tokens * per_tok;
    if (egm_stage_init(&g->st, m, slots, budget, block_tokens, kv_bf16, e)) return -1;
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
    for (int i = 0; i < slots; i++) egm_head_open(&g->hd, i, EGM_MODE_GENERATE, &sp, NULL, 0);
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
    int D = c->hidden_size, F = c->intermediate_size, H = c->num_heads;
    double t0 = egm_now();
    for (int l = m->lo; l < m->hi; l++) {
        const egm_layer *w = &m->layers[l - m->lo];
        if (c->arch == EGM_LLAMA) {
            int dh = c->head_dim, Hkv = c->num_kv_heads;
            egm_linear(y, x, w->wq, M, H * dh, D);
            egm_linear(y, x, w->wk, M, Hkv * dh, D);
            egm_linear(y, x, w->wv, M, Hkv * dh, D);
            egm_linear(y, x, w->wo, M, D, H * dh);
        } else {
            int dq = c->qk_nope_head_dim + c->qk_rope_head_dim, rq = c->q_lora_rank;
            if (w->q_proj) {
                egm_linear(y, x, w->q_proj, M, H * dq, D);
            } else {
                egm_linear(y, x, w->q_a, M, rq, D);
                egm_linear(y, x, w->q_b, M, H * dq, rq);
            }
            egm_linear(y, x, w->kv_a, M, c->kv_lora_rank + c->qk_rope_head_dim, D);
            egm_linear(y, x, w->o_proj, M, D, H * c->v_head_dim);
        }
        egm_linear(y, x, w->w_gate, M, F, D);
        egm_linear(y, x, w->w_up, M, F, D);
        egm_linear(y, x, w->w_down, M, D, F);
    }
    egm_linear(y, x, m->lm_head, M, c->vocab_size, D);
    return egm_now() - t0;
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double ratio_sgemm(const result *r) {
    return r->cost.proj_flops / r->secs * 1e-9 / r->sgemm;
}
static double stream_gbs(const result *r) {
    return (r->cost.weight_bytes + r->cost.gate_bytes) / r->secs * 1e-9;
}

static json_t *result_json(const result *r) {
    double bw = r->bw;
    json_t *o = json_object();
    double kv_gbs = r->cost.kv_bytes / r->secs * 1e-9;
    /* Ideal time: the slower of computing the projections at the sgemm
     * ceiling and streaming weights, gate rows and cache at the bandwidth. */
    double t_flop = r->cost.proj_flops / (r->sgemm * 1e9);
    double t_mem = (r->cost.weight_bytes + r->cost.gate_bytes + r->cost.kv_bytes) / (bw * 1e9);
    json_object_set_new(o, "phase", json_string(r->phase));
    json_object_set_new(o, "batch", json_integer(r->batch));
    json_object_set_new(o, "context", json_integer(r->context));
    json_object_set_new(o, "ranks", json_integer(1));
    json_object_set_new(o, "tokens_per_s", json_real(r->tokens_per_s));
    json_object_set_new(o, "ratio_to_sgemm", json_real(ratio_sgemm(r)));
    json_object_set_new(o, "ratio_to_bw", json_real(stream_gbs(r) / bw));
    json_object_set_new(o, "ratio_to_bw_with_kv", json_real(stream_gbs(r) / bw + kv_gbs / bw));
    json_object_set_new(o, "ratio_to_roofline",
                        json_real((t_flop > t_mem ? t_flop : t_mem) / r->secs));
    if (!strcmp(r->phase, "decode")) {
        json_object_set_new(o, "steps", json_integer(r->steps));
        json_object_set_new(o, "ms_per_step", json_real(r->secs * 1e3));
        json_object_set_new(o, "ms_per_step_mean", json_real(r->mean_secs * 1e3));
        json_object_set_new(o, "proj_ms", json_real(r->proj_secs * 1e3));
        json_object_set_new(o, "proj_gemm_ratio_to_sgemm",
                            json_real(r->cost.proj_flops / r->proj_secs * 1e-9 / r->sgemm));
    } else {
        json_object_set_new(o, "ttft_ms", json_real(r->secs * 1e3));
        json_object_set_new(o, "chunk_rows", json_integer(r->sgemm_m));
    }
    json_object_set_new(o, "proj_gflops", json_real(r->cost.proj_flops / r->secs * 1e-9));
    json_object_set_new(o, "sgemm_gflops", json_real(r->sgemm));
    json_object_set_new(o, "mem_bw_gbs", json_real(r->bw));
    json_object_set_new(o, "sgemm_m", json_integer(r->sgemm_m));
    json_object_set_new(o, "proj_flops", json_real(r->cost.proj_flops));
    json_object_set_new(o, "weight_bytes", json_real(r->cost.weight_bytes));
    json_object_set_new(o, "gate_bytes", json_real(r->cost.gate_bytes));
    json_object_set_new(o, "kv_bytes", json_real(r->cost.kv_bytes));
    json_object_set_new(o, "stream_gbs", json_real(stream_gbs(r)));
    return o;
}

static void print_row(const result *r) {
    double bw = r->bw;
    fprintf(tab, "%-8s %5d %7d %10.1f %9.2f %9.1f %7.1f %8.1f %6.1f %7.1f", r->phase, r->batch,
            r->context, r->tokens_per_s, r->secs * 1e3, r->cost.proj_flops / r->secs * 1e-9,
            100 * ratio_sgemm(r), stream_gbs(r), 100 * stream_gbs(r) / bw,
            100 * (stream_gbs(r) + r->cost.kv_bytes / r->secs * 1e-9) / bw);
    if (r->proj_secs > 0)
        fprintf(tab, " %8.2f %7.1f", r->proj_secs * 1e3,
                100 * r->cost.proj_flops / r->proj_secs * 1e-9 / r->sgemm);
    else
        fprintf(tab, " %8s %7s", "-", "-");
    fprintf(tab, " %7.1f %6.1f\n", r->sgemm, r->bw);
}

/* KV capacity at a budget: computed as the engine allocates, and (when the
 * budget is not absurd) verified by initialising such a pool and reserving
 * sequences until it refuses. Returns the json object. */
static json_t *kv_fit(const egm_config *c, size_t budget, int context, int block_tokens,
                      int bf16, int *fits_out) {
    int L = c->num_layers, E = egm_config_kv_elems(c), ids = c->arch == EGM_EGMLA;
    int blocks = egm_kv_blocks_for_budget(budget, L, E, ids, bf16, block_tokens);
    int per_seq = (context + block_tokens - 1) / block_tokens;
    int fits = blocks / per_seq, verified = -1;
    if (budget <= VERIFY_MAX) {
        egm_kv_pool p;
        if (!egm_kv_init(&p, L, E, ids, block_tokens, bf16, budget)) {
            egm_kv_seq *s = calloc((size_t)fits + 1, sizeof *s);
            if (s) {
                verified = 0;
                while (verified <= fits && !egm_kv_reserve(&p, &s[verified], context)) verified++;
                for (int i = 0; i < verified; i++) egm_kv_release(&p, &s[i]);
                free(s);
            }
            egm_kv_free(&p);
        }
    }
    json_t *o = json_object();
    json_object_set_new(o, "context", json_integer(context));
    json_object_set_new(o, "sequences", json_integer(fits));
    json_object_set_new(o, "blocks", json_integer(blocks));
    json_object_set_new(o, "verified_sequences",
                        verified < 0 ? json_null() : json_integer(verified));
    *fits_out = verified < 0 ? fits : verified;
    return o;
}

int egm_cmd_bench(int argc, char **argv) {
    const char *config = NULL, *model = NULL, *batch_s = "1,8,32", *ctx_s = "128,2048";
    const char *kv_dtype = "fp32", *budget_s = "4GiB", *json_path = NULL;
    int steps = 16, threads = (int)sysconf(_SC_NPROCESSORS_ONLN), chunk = 512;
    int block_tokens = 16, reps = 5, bw_mib = 256, no_gate_table = 0, once = 0;
    uint64_t seed = 1;
    if (threads < 1) threads = 1;
    egm_opt opts[] = {
        {"config", EGM_OPT_STRING, &config, "config.json: synthetic weights of that shape", 0, 0, "FILE"},
        {"model", EGM_OPT_STRING, &model, "a model directory (real weights)", 0, 0, "DIR"},
        {"batch", EGM_OPT_STRING, &batch_s, "decode batch sizes (sequences per step)", 0, 0, "LIST"},
        {"context", EGM_OPT_STRING, &ctx_s, "cached tokens per sequence before decoding", 0, 0, "LIST"},
        {"steps", EGM_OPT_INT, &steps, "timed decode steps per (batch, context)", 1, 1 << 20, "N"},
        {"threads", EGM_OPT_INT, &threads, "BLAS threads, also the bandwidth test's", 1, 256, "N"},
        {"kv-dtype", EGM_OPT_STRING, &kv_dtype, "KV cache storage: fp32 or bf16", 0, 0, "T"},
        {"kv-budget", EGM_OPT_STRING, &budget_s, "KV budget for the capacity report", 0, 0, "SIZE"},
        {"block-tokens", EGM_OPT_INT, &block_tokens, "positions per KV block", 1, 65536, "N"},
        {"chunk", EGM_OPT_INT, &chunk, "prefill rows per micro-batch", 1, 1 << 20, "N"},
        {"reps", EGM_OPT_INT, &reps, "repetitions of each roofline measurement (best kept)", 1, 1000, "N"},
        {"bw-mib", EGM_OPT_INT, &bw_mib, "MiB per array of the bandwidth test (3 arrays)", 1, 1 << 16, "N"},
        {"roofline-once", EGM_OPT_FLAG, &once, "measure the ceilings once, not again before each row", 0, 0, NULL},
        {"no-gate-table", EGM_OPT_FLAG, &no_gate_table, "EG-MLA: gather eg_embed rows, no precomputed G", 0, 0, NULL},
        {"seed", EGM_OPT_U64, &seed, "seed of the synthetic weights", 0, 0, "S"},
        {"json", EGM_OPT_STRING, &json_path, "also write the results as JSON (- = stdout)", 0, 0, "FILE"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    egm_cmd cmd = {"egmla bench", NULL,
                   "Measures prefill and decode throughput of one rank, on synthetic weights of a "
                   "config (--config) or a real model (--model), as ratios to the sgemm GFLOP/s "
                   "and memory bandwidth the same run measures; and the KV cache's bytes per "
                   "token and capacity at a budget. See docs/BENCHMARKS.md.",
                   opts};
    egm_err e;
    int rc = egm_args_parse(&cmd, argc, argv, NULL, &e);
    if (rc == 1) return EGM_EXIT_OK;
    if (rc < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return EGM_EXIT_USAGE;
    }
    int batches[MAX_LIST], contexts[MAX_LIST], nb, nc;
    size_t budget;
    int bf16 = !strcmp(kv_dtype, "bf16");
    if ((nb = parse_list(batch_s, batches, 1 << 16, "batch", &e)) < 0 ||
        (nc = parse_list(ctx_s, contexts, 1 << 24, "context", &e)) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return EGM_EXIT_USAGE;
    }
    if (!bf16 && strcmp(kv_dtype, "fp32")) {
        fprintf(stderr, "egmla bench: --kv-dtype: expected fp32 or bf16, found \"%s\"\n", kv_dtype);
        return EGM_EXIT_USAGE;
    }
    if (egm_parse_size(budget_s, &budget)) {
        fprintf(stderr, "egmla bench: --kv-budget: expected a size such as 4GiB, found \"%s\"\n",
                budget_s);
        return EGM_EXIT_USAGE;
    }
    if (!config == !model) {
        fprintf(stderr, "egmla bench: give exactly one of --config FILE and --model DIR\n");
        return EGM_EXIT_USAGE;
    }

    /* The model. */
    egm_model m;
    int flags = EGM_LOAD_EMBED | EGM_LOAD_HEAD | (no_gate_table ? 0 : EGM_LOAD_GATE_TABLE);
    if (config) {
        egm_config cfg;
        if (egm_config_load(config, &cfg, &e) ||
            egm_model_random(&cfg, seed, 0, -1, flags, &m, &e)) {
            fprintf(stderr, "egmla bench: %s\n", e.msg);
            return EGM_EXIT_FAIL;
        }
    } else if (egm_model_load(model, 0, -1, flags, &m, &e)) {
        fprintf(stderr, "egmla bench: %s\n", e.msg);
        return EGM_EXIT_FAIL;
    }
    const egm_config *c = &m.cfg;
    tab = json_path && !strcmp(json_path, "-") ? stderr : stdout;
    int gate_table = c->arch == EGM_EGMLA && !no_gate_table;
    for (int i = 0; i < nc; i++)
        if (contexts[i] + steps + 1 > c->max_position_embeddings) {
            fprintf(stderr, "egmla bench: --context %d with --steps %d needs %d positions; the "
                    "model has max_position_embeddings %d\n", contexts[i], steps,
                    contexts[i] + steps + 1, c->max_position_embeddings);
            egm_model_free(&m);
            return EGM_EXIT_USAGE;
        }
    int max_b = 1;
    for (int i = 0; i < nb; i++)
        if (batches[i] > max_b) max_b = batches[i];

    /* The roofline, with the same threads as the engine. */
    openblas_set_num_threads(threads);
    roof rf = {.c = c, .reps = reps, .threads = threads, .remeasure = !once,
               .bw_bytes = (size_t)bw_mib << 20};
    rf.n_shapes = egm_proj_shapes(c, rf.shapes);
    if (bw_now(&rf) <= 0) {
        fprintf(stderr, "egmla bench: bandwidth test failed (out of memory for 3 x %d MiB?)\n",
                bw_mib);
        egm_model_free(&m);
        return EGM_EXIT_FAIL;
    }
    const char *src = config ? config : model;
    fprintf(tab, "model: %s (%s, synthetic=%s), %d layers, D %d, vocab %d; threads %d, kv %s%s\n",
           src, c->model_type, config ? "yes" : "no", c->num_layers, c->hidden_size,
           c->vocab_size, threads, kv_dtype, gate_table ? ", gate table G precomputed" : "");
    fprintf(tab, "roofline: triad %.1f GB/s (read-only %.1f GB/s, 3 x %d MiB); sgemm on the model's "
           "shapes:", rf.bw, rf.read_bw, bw_mib);
    for (int i = 0; i < nb; i++) fprintf(tab, " M=%d %.1f", batches[i], sgemm_at(&rf, batches[i], 0));
    fprintf(tab, " GFLOP/s\n");
    fflush(tab);

    /* Runs. */
    result *res = calloc((size_t)nc * (nb + 1), sizeof *res);
    int nres = 0, failed = 0;
    int *next = malloc(sizeof(int) * (size_t)max_b);
    int max_c = 0;
    for (int i = 0; i < nc; i++)
        if (contexts[i] > max_c) max_c = contexts[i];
    int *prompt = malloc(sizeof(int) * (size_t)max_c);
    double *times = malloc(sizeof(double) * (size_t)steps);
    float *px = malloc(sizeof(float) * (size_t)max_b * (size_t)max_width(c));
    float *py = malloc(sizeof(float) * (size_t)max_b * (size_t)max_width(c));
    if (px)
        for (long i = 0; i < (long)max_b * max_width(c); i++) px[i] = 0.01f;
    if (!res || !next || !prompt || !times || !px || !py) {
        fprintf(stderr, "egmla bench: out of memory\n");
        failed = 1;
    }
    /* A fixed pseudo-random prompt, avoiding ids 0-2 (often special). */
    for (int i = 0; !failed && i < max_c; i++)
        prompt[i] = 3 + (int)(((unsigned)i * 2654435761u >> 7) % (unsigned)(c->vocab_size - 3));
    fprintf(tab, "\n%-8s %5s %7s %10s %9s %9s %7s %8s %6s %7s %8s %7s %7s %6s\n", "phase",
            "batch", "context", "tokens/s", "ms", "proj GF/s", "%sgemm", "GB/s", "%bw", "%bw+kv",
            "proj ms", "%sgemm", "sgemm", "bw");
    for (int ci = 0; !failed && ci < nc; ci++) {
        int ctx = contexts[ci], rows = chunk > max_b ? chunk : max_b;
        rig g;
        if (rig_init(&g, &m, max_b, ctx + steps + 1, rows, block_tokens, bf16, &e)) {
            fprintf(stderr, "egmla bench: %s\n", e.msg);
            rig_free(&g);
            failed = 1;
            break;
        }
        for (int s = 0; s < max_b; s++)
            if (egm_stage_reserve(&g.st, s, ctx + steps + 1)) {
                fprintf(stderr, "egmla bench: KV pool refused slot %d (internal error)\n", s);
                failed = 1;
            }
        if (failed) {
            rig_free(&g);
            break;
        }
        /* Prefill, batch 1: tokens/s and time to first token. */
        long positions;
        double t0 = egm_now();
        int first = prefill(&g, prompt, ctx, chunk, &positions);
        double t = egm_now() - t0;
        result *r = &res[nres++];
        int cm = ctx < chunk ? ctx : chunk;
        *r = (result){.phase = "prefill", .batch = 1, .context = ctx, .secs = t,
                      .tokens_per_s = ctx / t, .sgemm_m = cm};
        row_ceilings(&rf, r, cm);
        egm_step_cost_of(c, ctx, 1, positions, gate_table, bf16, &r->cost);
        /* Every chunk re-reads the weights. */
        int n_chunks = (ctx + chunk - 1) / chunk;
        r->cost.weight_bytes = r->cost.weight_bytes * n_chunks -
                               (n_chunks - 1) * 4.0 * c->vocab_size * c->hidden_size;
        print_row(r);
        fflush(tab);

        for (int bi = 0; bi < nb; bi++) {
            int b = batches[bi];
            for (int s = 1; s < b; s++) (void)egm_stage_fork(&g.st, s, 0, ctx);
            for (int s = 0; s < b; s++) next[s] = first;
            decode_step(&g, b, ctx, next); /* warm-up */
            double total = 0;
            for (int k = 0; k < steps; k++) {
                t0 = egm_now();
                decode_step(&g, b, ctx + 1 + k, next);
                times[k] = egm_now() - t0;
                total += times[k];
            }
            /* The median step: robust to the other loads of a shared machine. */
            t = median(times, steps);
            double pt[3];
            for (int k = 0; k < 3; k++) pt[k] = replay_proj(&m, b, px, py);
            r = &res[nres++];
            *r = (result){.phase = "decode", .batch = b, .context = ctx, .steps = steps,
                          .secs = t, .mean_secs = total / steps, .proj_secs = median(pt, 3),
                          .tokens_per_s = b / t, .sgemm_m = b};
            row_ceilings(&rf, r, b);
            /* Timed step k attends ctx + 2 + k positions; take the mean. */
            long pos_mean2 = 2L * ctx + 4 + (steps - 1); /* 2 x mean, to stay integral */
            egm_step_cost_of(c, b, b, (long)b * pos_mean2, gate_table, bf16, &r->cost);
            r->cost.gate_bytes /= 2, r->cost.kv_bytes /= 2;
            print_row(r);
            fflush(tab);
        }
        rig_free(&g);
    }

    /* KV capacity. */
    size_t per_tok = egm_kv_bytes_per_token(c->num_layers, egm_config_kv_elems(c),
                                            c->arch == EGM_EGMLA, bf16);
    json_t *kv = json_object();
    json_t *fits_a = json_array();
    json_object_set_new(kv, "dtype", json_string(kv_dtype));
    json_object_set_new(kv, "elems_per_token", json_integer((json_int_t)egm_config_kv_elems(c) *
                                                            c->num_layers));
    json_object_set_new(kv, "bytes_per_token", json_integer((json_int_t)per_tok));
    json_object_set_new(kv, "budget_bytes", json_integer((json_int_t)budget));
    json_object_set_new(kv, "block_tokens", json_integer(block_tokens));
    fprintf(tab, "\nkv cache (%s): %zu bytes per token (%d elements x %d layers%s)\n", kv_dtype,
           per_tok, egm_config_kv_elems(c), c->num_layers,
           c->arch == EGM_EGMLA ? " + a token id" : "");
    for (int ci = 0; ci < nc; ci++) {
        int fits;
        json_t *o = kv_fit(c, budget, contexts[ci], block_tokens, bf16, &fits);
        json_t *v = json_object_get(o, "verified_sequences");
        fprintf(tab, "  %s: %d sequences of %d tokens (%s)\n", budget_s,
               (int)json_integer_value(json_object_get(o, "sequences")), contexts[ci],
               json_is_null(v) ? "computed"
               : json_integer_value(v) == json_integer_value(json_object_get(o, "sequences"))
                   ? "computed, and reserved in a real pool"
                   : "MISMATCH with a real pool");
        if (!json_is_null(v) &&
            json_integer_value(v) != json_integer_value(json_object_get(o, "sequences")))
            failed = 1;
        json_array_append_new(fits_a, o);
    }
    json_object_set_new(kv, "fits", fits_a);

    if (json_path && !failed) {
        json_t *root = json_object(), *rl = json_object(), *ra = json_array(), *sg = json_object();
        double top = sgemm_at(&rf, max_b, 0);
        json_object_set_new(rl, "sgemm_gflops", json_real(top));
        json_object_set_new(rl, "sgemm_m", json_integer(max_b));
        for (int i = 0; i < rf.n_ceil; i++) {
            char k[16];
            snprintf(k, sizeof k, "%d", rf.ceil[i].M);
            json_object_set_new(sg, k, json_real(rf.ceil[i].gflops));
        }
        json_object_set_new(rl, "sgemm_gflops_by_m", sg);
        json_object_set_new(rl, "mem_bw_gbs", json_real(rf.bw));
        json_object_set_new(rl, "mem_read_gbs", json_real(rf.read_bw));
        json_object_set_new(rl, "remeasured_per_row", json_boolean(rf.remeasure));
        json_object_set_new(rl, "threads", json_integer(threads));
        json_t *sh = json_array();
        for (int i = 0; i < rf.n_shapes; i++)
            json_array_append_new(sh, json_pack("{s:s, s:i, s:i, s:i}", "name", rf.shapes[i].name,
                                                "N", rf.shapes[i].N, "K", rf.shapes[i].K,
                                                "count", rf.shapes[i].count));
        json_object_set_new(rl, "shapes", sh);
        for (int i = 0; i < nres; i++) json_array_append_new(ra, result_json(&res[i]));
        json_object_set_new(root, "model", json_string(src));
        json_object_set_new(root, "model_type", json_string(c->model_type));
        json_object_set_new(root, "synthetic", json_boolean(config != NULL));
        json_object_set_new(root, "roofline", rl);
        json_object_set_new(root, "results", ra);
        json_object_set_new(root, "kv", json_incref(kv));
        int bad = !strcmp(json_path, "-") ? json_dumpf(root, stdout, JSON_INDENT(2)) ||
                                                    fputc('\n', stdout) == EOF
                                          : json_dump_file(root, json_path, JSON_INDENT(2));
        if (bad) {
            fprintf(stderr, "egmla bench: --json %s: cannot write the report\n", json_path);
            failed = 1;
        }
        json_decref(root);
    }
    json_decref(kv);
    free(res), free(next), free(prompt), free(times), free(px), free(py);
    egm_model_free(&m);
    return failed ? EGM_EXIT_FAIL : EGM_EXIT_OK;
}
