/* bench_report.c - the parts of `egmla bench` both the one-rank and the
 * pipeline runs use (see bench_report.h). */
#include "coordinator/bench_report.h"

#include <stdlib.h>
#include <string.h>

#include "worker/kvcache.h"

/* Pool allocations this large are verified by a real egm_kv_init: the pool
 * is calloc'd, so untouched pages cost address space, not memory. */
#define VERIFY_MAX ((size_t)8 << 30)

double egm_bench_sgemm_at(egm_bench_roof *r, int M, int again) {
    int i = 0;
    while (i < r->n_ceil && r->ceil[i].M != M) i++;
    if (i < r->n_ceil && !again) return r->ceil[i].gflops;
    double g = egm_roofline_sgemm(r->shapes, r->n_shapes, M, r->reps, NULL);
    if (i < r->n_ceil) {
        if (g > r->ceil[i].gflops) r->ceil[i].gflops = g;
    } else if (r->n_ceil < (int)(sizeof r->ceil / sizeof *r->ceil)) {
        r->ceil[r->n_ceil++] = (egm_bench_ceiling){M, g};
    }
    return g;
}

double egm_bench_bw_now(egm_bench_roof *r) {
    double rd = 0, bw = egm_roofline_membw(r->bw_bytes, r->threads, r->reps, &rd);
    if (bw > r->bw) r->bw = bw;
    if (rd > r->read_bw) r->read_bw = rd;
    return bw;
}

void egm_bench_row_ceilings(egm_bench_roof *r, egm_bench_row *x, int M) {
    x->sgemm = egm_bench_sgemm_at(r, M, r->remeasure);
    x->bw = r->remeasure ? egm_bench_bw_now(r) : r->bw;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double egm_bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void egm_bench_prompt(int *prompt, int n, int vocab) {
    for (int i = 0; i < n; i++)
        prompt[i] = 3 + (int)(((unsigned)i * 2654435761u >> 7) % (unsigned)(vocab - 3));
}

FILE *egm_bench_table(const egm_bench_opts *o) {
    return o->json_path && !strcmp(o->json_path, "-") ? stderr : stdout;
}

int egm_bench_check_context(const egm_bench_opts *o, const egm_config *c) {
    for (int i = 0; i < o->nc; i++)
        if (o->contexts[i] + o->steps + 1 > c->max_position_embeddings) {
            fprintf(stderr, "egmla bench: --context %d with --steps %d needs %d positions; the "
                    "model has max_position_embeddings %d\n", o->contexts[i], o->steps,
                    o->contexts[i] + o->steps + 1, c->max_position_embeddings);
            return -1;
        }
    return 0;
}

void egm_bench_prefill_cost(const egm_config *c, int ctx, int chunk, long positions,
                            int gate_table, int kv_bf16, egm_step_cost *out) {
    egm_step_cost_of(c, ctx, 1, positions, gate_table, kv_bf16, out);
    /* Every chunk re-reads the weights. */
    int n_chunks = (ctx + chunk - 1) / chunk;
    out->weight_bytes = out->weight_bytes * n_chunks -
                        (n_chunks - 1) * 4.0 * c->vocab_size * c->hidden_size;
    /* Row t attends t + 1 positions (the causal triangle); EG-MLA rebuilds
     * z for every position each chunk attends. */
    out->attn_flops = egm_attn_flops_of(c, ctx, (long)ctx * (ctx + 1) / 2, positions, gate_table);
}

void egm_bench_decode_cost(const egm_config *c, int b, int ctx, int steps, int gate_table,
                           int kv_bf16, egm_step_cost *out) {
    /* Timed step k attends ctx + 2 + k positions; take the mean. */
    long pos_mean2 = 2L * ctx + 4 + (steps - 1); /* 2 x mean, to stay integral */
    egm_step_cost_of(c, b, b, (long)b * pos_mean2, gate_table, kv_bf16, out);
    out->gate_bytes /= 2, out->kv_bytes /= 2;
    /* attention's per-row work at 2 x the rows, so halving keeps it exact */
    out->attn_flops = egm_attn_flops_of(c, 2L * b, (long)b * pos_mean2, (long)b * pos_mean2,
                                        gate_table) / 2;
}

static double ratio_sgemm(const egm_bench_row *r) {
    return r->cost.proj_flops / r->secs * 1e-9 / r->sgemm;
}
/* (projection + attention flops) / step time / the GEMM ceiling at its M */
static double ratio_compute(const egm_bench_row *r) {
    return (r->cost.proj_flops + r->cost.attn_flops) / r->secs * 1e-9 / r->sgemm;
}
static double stream_gbs(const egm_bench_row *r) {
    return (r->cost.weight_bytes + r->cost.gate_bytes) / r->secs * 1e-9;
}

json_t *egm_bench_row_json(const egm_bench_row *r, int ranks) {
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
    json_object_set_new(o, "ranks", json_integer(ranks));
    json_object_set_new(o, "tokens_per_s", json_real(r->tokens_per_s));
    json_object_set_new(o, "ratio_to_sgemm", json_real(ratio_sgemm(r)));
    json_object_set_new(o, "ratio_to_bw", json_real(stream_gbs(r) / bw));
    json_object_set_new(o, "ratio_to_bw_with_kv", json_real(stream_gbs(r) / bw + kv_gbs / bw));
    json_object_set_new(o, "ratio_to_compute_roofline", json_real(ratio_compute(r)));
    json_object_set_new(o, "ratio_to_roofline",
                        json_real((t_flop > t_mem ? t_flop : t_mem) / r->secs));
    if (!strcmp(r->phase, "decode")) {
        json_object_set_new(o, "steps", json_integer(r->steps));
        json_object_set_new(o, "ms_per_step", json_real(r->secs * 1e3));
        json_object_set_new(o, "ms_per_step_mean", json_real(r->mean_secs * 1e3));
        if (r->proj_secs > 0) {
            json_object_set_new(o, "proj_ms", json_real(r->proj_secs * 1e3));
            json_object_set_new(o, "proj_gemm_ratio_to_sgemm",
                                json_real(r->cost.proj_flops / r->proj_secs * 1e-9 / r->sgemm));
        }
        if (r->attn_secs > 0) json_object_set_new(o, "attn_ms", json_real(r->attn_secs * 1e3));
    } else {
        json_object_set_new(o, "ttft_ms", json_real(r->secs * 1e3));
        if (r->steps > 0) { /* one-rank bench: the median of `prefills` runs */
            json_object_set_new(o, "prefills", json_integer(r->steps));
            json_object_set_new(o, "ttft_ms_mean", json_real(r->mean_secs * 1e3));
        }
        json_object_set_new(o, "chunk_rows", json_integer(r->sgemm_m));
        json_object_set_new(o, "first_token", json_integer(r->first_token));
    }
    json_object_set_new(o, "proj_gflops", json_real(r->cost.proj_flops / r->secs * 1e-9));
    json_object_set_new(o, "sgemm_gflops", json_real(r->sgemm));
    json_object_set_new(o, "mem_bw_gbs", json_real(r->bw));
    json_object_set_new(o, "sgemm_m", json_integer(r->sgemm_m));
    json_object_set_new(o, "proj_flops", json_real(r->cost.proj_flops));
    json_object_set_new(o, "attn_flops", json_real(r->cost.attn_flops));
    json_object_set_new(o, "weight_bytes", json_real(r->cost.weight_bytes));
    json_object_set_new(o, "gate_bytes", json_real(r->cost.gate_bytes));
    json_object_set_new(o, "kv_bytes", json_real(r->cost.kv_bytes));
    json_object_set_new(o, "stream_gbs", json_real(stream_gbs(r)));
    return o;
}

void egm_bench_print_head(FILE *f) {
    fprintf(f, "\n%-8s %5s %7s %10s %9s %9s %7s %7s %8s %6s %7s %8s %7s %8s %7s %6s", "phase",
            "batch", "context", "tokens/s", "ms", "proj GF/s", "%sgemm", "%comp", "GB/s", "%bw",
            "%bw+kv", "proj ms", "%sgemm", "attn ms", "sgemm", "bw");
}

void egm_bench_print_row(FILE *f, const egm_bench_row *r) {
    double bw = r->bw;
    fprintf(f, "%-8s %5d %7d %10.1f %9.2f %9.1f %7.1f %7.1f %8.1f %6.1f %7.1f", r->phase,
            r->batch, r->context, r->tokens_per_s, r->secs * 1e3,
            r->cost.proj_flops / r->secs * 1e-9, 100 * ratio_sgemm(r), 100 * ratio_compute(r),
            stream_gbs(r), 100 * stream_gbs(r) / bw,
            100 * (stream_gbs(r) + r->cost.kv_bytes / r->secs * 1e-9) / bw);
    if (r->proj_secs > 0)
        fprintf(f, " %8.2f %7.1f", r->proj_secs * 1e3,
                100 * r->cost.proj_flops / r->proj_secs * 1e-9 / r->sgemm);
    else
        fprintf(f, " %8s %7s", "-", "-");
    if (r->attn_secs > 0)
        fprintf(f, " %8.2f", r->attn_secs * 1e3);
    else
        fprintf(f, " %8s", "-");
    fprintf(f, " %7.1f %6.1f", r->sgemm, r->bw);
}

/* KV capacity at a budget: computed as the engine allocates, and (when the
 * budget is not absurd) verified by initialising such a pool and reserving
 * sequences until it refuses. Returns the json object. */
static json_t *kv_fit(const egm_config *c, size_t budget, int context, int block_tokens,
                      int bf16) {
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
    return o;
}

json_t *egm_bench_kv(const egm_config *c, const egm_bench_opts *o, FILE *f, int *mismatch) {
    size_t per_tok = egm_kv_bytes_per_token(c->num_layers, egm_config_kv_elems(c),
                                            c->arch == EGM_EGMLA, o->bf16);
    json_t *kv = json_object();
    json_t *fits_a = json_array();
    json_object_set_new(kv, "dtype", json_string(o->kv_dtype));
    json_object_set_new(kv, "elems_per_token", json_integer((json_int_t)egm_config_kv_elems(c) *
                                                            c->num_layers));
    json_object_set_new(kv, "bytes_per_token", json_integer((json_int_t)per_tok));
    json_object_set_new(kv, "budget_bytes", json_integer((json_int_t)o->budget));
    json_object_set_new(kv, "block_tokens", json_integer(o->block_tokens));
    fprintf(f, "\nkv cache (%s): %zu bytes per token (%d elements x %d layers%s)\n", o->kv_dtype,
            per_tok, egm_config_kv_elems(c), c->num_layers,
            c->arch == EGM_EGMLA ? " + a token id" : "");
    for (int ci = 0; ci < o->nc; ci++) {
        json_t *x = kv_fit(c, o->budget, o->contexts[ci], o->block_tokens, o->bf16);
        json_t *v = json_object_get(x, "verified_sequences");
        json_int_t n = json_integer_value(json_object_get(x, "sequences"));
        int same = json_is_null(v) || json_integer_value(v) == n;
        fprintf(f, "  %s: %d sequences of %d tokens (%s)\n", o->budget_s, (int)n, o->contexts[ci],
                json_is_null(v) ? "computed"
                : same          ? "computed, and reserved in a real pool"
                                : "MISMATCH with a real pool");
        if (!same) *mismatch = 1;
        json_array_append_new(fits_a, x);
    }
    json_object_set_new(kv, "fits", fits_a);
    return kv;
}

json_t *egm_bench_roof_json(egm_bench_roof *rf, int top_m) {
    json_t *rl = json_object(), *sg = json_object();
    json_object_set_new(rl, "sgemm_gflops", json_real(egm_bench_sgemm_at(rf, top_m, 0)));
    json_object_set_new(rl, "sgemm_m", json_integer(top_m));
    for (int i = 0; i < rf->n_ceil; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", rf->ceil[i].M);
        json_object_set_new(sg, k, json_real(rf->ceil[i].gflops));
    }
    json_object_set_new(rl, "sgemm_gflops_by_m", sg);
    json_object_set_new(rl, "mem_bw_gbs", json_real(rf->bw));
    json_object_set_new(rl, "mem_read_gbs", json_real(rf->read_bw));
    json_object_set_new(rl, "remeasured_per_row", json_boolean(rf->remeasure));
    json_object_set_new(rl, "threads", json_integer(rf->threads));
    json_t *sh = json_array();
    for (int i = 0; i < rf->n_shapes; i++)
        json_array_append_new(sh, json_pack("{s:s, s:i, s:i, s:i}", "name", rf->shapes[i].name,
                                            "N", rf->shapes[i].N, "K", rf->shapes[i].K,
                                            "count", rf->shapes[i].count));
    json_object_set_new(rl, "shapes", sh);
    return rl;
}

int egm_bench_write_json(const egm_bench_opts *o, const egm_config *c, json_t *roofline,
                         json_t *results, json_t *kv, json_t *extra) {
    json_t *root = json_object();
    json_object_set_new(root, "model", json_string(o->config ? o->config : o->model));
    json_object_set_new(root, "model_type", json_string(c->model_type));
    json_object_set_new(root, "synthetic", json_boolean(o->config != NULL));
    json_object_set_new(root, "roofline", roofline);
    json_object_set_new(root, "results", results);
    json_object_set_new(root, "kv", kv);
    if (extra) {
        json_object_update(root, extra);
        json_decref(extra);
    }
    int bad = !strcmp(o->json_path, "-") ? json_dumpf(root, stdout, JSON_INDENT(2)) ||
                                                 fputc('\n', stdout) == EOF
                                       : json_dump_file(root, o->json_path, JSON_INDENT(2));
    json_decref(root);
    if (bad) fprintf(stderr, "egmla bench: --json %s: cannot write the report\n", o->json_path);
    return bad ? -1 : 0;
}
