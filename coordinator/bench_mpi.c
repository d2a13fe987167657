/* bench_mpi.c - `egmla bench` under mpirun: the speed of a pipeline of
 * ranks 1..N-1, driven by rank 0, against the roofline rank 0 measures.
 *
 * Rank 0 starts the workers as a scheduled run does (coordinator/workers.c;
 * the layer split, threads and wire dtype of --topology, or `auto`:
 * cost-balanced layers, one thread per stage, bf16), then drives the pipe
 * (coordinator/pipe.h) itself with synthetic sequences. With --config the
 * workers read no files: their Assign carries the config text and the seed,
 * and each generates its own layers with the generator one process uses
 * (egm_model_random), so a split runs exactly the one-rank weights. With
 * --model they map the real files.
 *
 * Per context c:
 *   - prefill: one sequence of c tokens in chunks of --chunk rows, every
 *     chunk submitted at once (chunk k+1 enters stage 1 while chunk k is on
 *     stage 2); timed from the first submission to the first token's
 *     arrival: prefill tokens/s and time to first token through the whole
 *     pipeline;
 *   - decode, per batch b: b sequences (slots 1..b-1 start as copies of the
 *     prefilled cache, Admit.fork_n) split into m micro-batches of b/m rows
 *     (m = --micro-batches, default one per stage, at most b), so that with
 *     m >= stages every stage has work. Each micro-batch is resubmitted with
 *     its next tokens as soon as its result is back (decode cannot run
 *     ahead of its own tokens). One warm-up round, then `steps` rounds,
 *     timed from the warm-up round's last result to the last round's:
 *     in steady state exactly `steps` rounds; tokens/s = b * steps / that.
 *
 * Per-stage utilisation: a statistics request travels in band behind the
 * micro-batches (egm_pipe_mpi_mark) before the timed ones and again once the
 * last result is back; each stage answers with its cumulative busy, wait
 * and bubble seconds and bytes sent, so the difference covers exactly the
 * row's micro-batches on every stage, on that stage's own clock. */
#include "base/clock.h"
#include "coordinator/bench_mpi.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "coordinator/commands.h"
#include "coordinator/pipe_mpi.h"
#include "coordinator/workers.h"
#include "deploy/split.h"
#include "model/source.h"
#include "worker/head.h"
#include "worker/kvcache.h"
#include "worker/wire.h"
#include "worker/worker_mpi.h"

/* Micro-batches in flight during a prefill (the pipe's ring holds 64). */
#define PREFILL_IN_FLIGHT 32

typedef struct {
    const egm_bench_opts *o;
    const egm_config *c;
    egm_pipe *pipe;
    int world, S, gate_table;
    int *threads;             /* [S] BLAS threads of each stage */
    egm_wire_dtype wd;
    FILE *tab;
    egm_bench_roof rf;
    egm_sampling greedy;
    int held;                 /* slots 0..held-1 hold sequences */
    int *slot, *pos, *tok;    /* rows of the micro-batch being submitted */
    unsigned char *want;
    int *next, *rel, *fifo;   /* next token per slot; releases; group per batch in flight */
    egm_admit *admits;
    egm_stage_stats *m0, *m1; /* [S] the two marks of a row */
    json_t *results;
    int top_m;                /* largest sgemm M of a decode row */
} bench;

/* The config text of --config (sent to every worker as is). */
static char *read_text(const char *path, size_t *len, egm_err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        egm_fail(e, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0, got;
    char *s = malloc(cap + 1);
    while (s && (got = fread(s + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *g = n < ((size_t)1 << 24) ? realloc(s, 2 * cap + 1) : NULL;
            if (!g) {
                free(s);
                s = NULL;
                break;
            }
            s = g;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!s || bad) {
        free(s);
        egm_fail(e, "%s: %s", path, bad ? "read error" : "out of memory (or over 16 MiB)");
        return NULL;
    }
    s[n] = 0;
    *len = n;
    return s;
}

static int submit(bench *B, int n, const egm_admit *ad, int n_ad, int n_rel, egm_err *e) {
    egm_submit s = {.b = {n, B->slot, B->pos, B->tok}, .want = B->want, .admits = ad,
                    .n_admits = n_ad, .releases = B->rel, .n_releases = n_rel};
    return B->pipe->submit(B->pipe, &s, e);
}

/* Per-stage utilisation and wire volume between the two marks of a row
 * (in B->m0, B->m1): adds "stages" and the wire fields to row, prints the
 * table's columns. */
static void stage_use(bench *B, json_t *row) {
    json_t *st = json_array();
    double payload = 0, header = 0, tokens = 0;
    for (int i = 0; i < B->S; i++) {
        const egm_stage_stats *a = &B->m0[i], *b = &B->m1[i];
        double win = b->clock_s - a->clock_s;
        double busy = b->busy_s - a->busy_s, wait = b->wait_s - a->wait_s;
        double bubble = b->bubble_s - a->bubble_s;
        double rows = (double)(b->rows - a->rows);
        if (win <= 0) win = 1e-9;
        json_array_append_new(
            st, json_pack("{s:i, s:s, s:[i,i], s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I}",
                          "rank", b->rank, "host", b->host, "layers", b->layer_lo, b->layer_hi - 1,
                          "busy", busy / win, "wait", wait / win, "bubble", bubble / win,
                          "window_s", win, "busy_s", busy, "wait_s", wait, "bubble_s", bubble,
                          "tokens", (json_int_t)(b->rows - a->rows),
                          "micro_batches", (json_int_t)(b->batches - a->batches)));
        fprintf(B->tab, " r%d %2.0f/%.0f/%.0f", b->rank, 100 * busy / win, 100 * wait / win,
                100 * bubble / win);
        if (i < B->S - 1) { /* the hop from this stage to the next */
            payload += (double)(b->bytes_out - a->bytes_out);
            header += (double)(b->header_bytes_out - a->header_bytes_out);
            tokens += rows;
        }
    }
    json_object_set_new(row, "stages", st);
    json_object_set_new(row, "wire_dtype", json_string(egm_wire_dtype_name(B->wd)));
    json_object_set_new(row, "hops", json_integer(B->S - 1));
    if (tokens > 0) {
        json_object_set_new(row, "wire_payload_bytes_per_token_per_hop",
                            json_real(payload / tokens));
        json_object_set_new(row, "wire_header_bytes_per_token_per_hop", json_real(header / tokens));
        json_object_set_new(row, "wire_bytes_per_token_per_hop",
                            json_real((payload + header) / tokens));
    } else {  /* one stage: nothing crosses between stages */
        json_object_set_new(row, "wire_bytes_per_token_per_hop", json_null());
    }
}

/* A row is timed: the stages' answers to its two marks are read first
 * (until every stage has answered, the row is not over on every stage:
 * measuring the ceilings now would delay them and count as their bubble),
 * then its ceilings, then it is printed and kept. */
static int finish_row(bench *B, egm_bench_row *r, int mb, json_t *extra, egm_err *e) {
    if (egm_pipe_mpi_read_mark(B->pipe, B->m0, e) || egm_pipe_mpi_read_mark(B->pipe, B->m1, e)) {
        json_decref(extra);
        return -1;
    }
    egm_bench_row_ceilings(&B->rf, r, r->sgemm_m);
    json_t *row = egm_bench_row_json(r, B->world);
    json_object_update(row, extra);
    json_decref(extra);
    json_object_set_new(row, "micro_batches", json_integer(mb));
    json_object_set_new(row, "attn_dtype", json_string(B->o->attn_dtype));
    egm_bench_print_row(B->tab, r);
    fprintf(B->tab, " %3d", mb);
    stage_use(B, row);
    json_t *w = json_object_get(row, "wire_bytes_per_token_per_hop");
    if (json_is_real(w)) fprintf(B->tab, "   %.1f B/tok/hop", json_real_value(w));
    fputc('\n', B->tab);
    fflush(B->tab);
    json_array_append_new(B->results, row);
    return 0;
}

/* Prefill of slot 0 with prompt[0..ctx): returns the first token, or -1. */
static int prefill(bench *B, int ctx, const int *prompt, egm_err *e) {
    const egm_bench_opts *o = B->o;
    int chunk = o->chunk, in_flight = 0, first = -1, n_rel = B->held;
    long positions = 0;
    /* the previous context's sequences go, slot 0 starts this one */
    egm_admit a0 = {.slot = 0, .mode = EGM_MODE_GENERATE, .sp = B->greedy,
                    .n_reserve = ctx + o->steps + 1, .top_logprobs = -1};
    for (int i = 0; i < n_rel; i++) B->rel[i] = i;
    if (egm_pipe_mpi_mark(B->pipe, e)) return -1;
    double t0 = egm_now();
    for (int p0 = 0; p0 < ctx || in_flight; p0 += chunk) {
        if (p0 < ctx) {
            int T = ctx - p0 < chunk ? ctx - p0 : chunk;
            for (int t = 0; t < T; t++) {
                B->slot[t] = 0;
                B->pos[t] = p0 + t;
                B->tok[t] = prompt[p0 + t];
                B->want[t] = p0 + t == ctx - 1;
            }
            if (submit(B, T, p0 ? NULL : &a0, !p0, p0 ? 0 : n_rel, e)) return -1;
            B->held = 1;
            positions += p0 + T;
            in_flight++;
            if (in_flight < PREFILL_IN_FLIGHT && p0 + chunk < ctx) continue;
        }
        egm_result res;
        if (B->pipe->collect(B->pipe, &res, e)) return -1;
        in_flight--;
        if (res.n_outs) first = res.outs[0].token;
    }
    double t = egm_now() - t0;
    if (first < 0) return egm_fail(e, "the prefill of %d tokens returned no token", ctx);
    if (egm_pipe_mpi_mark(B->pipe, e)) return -1;
    int cm = ctx < chunk ? ctx : chunk;
    egm_bench_row r = {.phase = "prefill", .batch = 1, .context = ctx, .secs = t,
                       .tokens_per_s = ctx / t, .sgemm_m = cm, .first_token = first};
    egm_bench_prefill_cost(B->c, ctx, chunk, positions, B->gate_table, o->bf16, &r.cost);
    json_t *x = json_pack("{s:f}", "window_s", t);
    if (finish_row(B, &r, (ctx + chunk - 1) / chunk, x, e)) return -1;
    return first;
}

/* Submits one decode row for each of slots [lo, hi), at position pos. */
static int submit_group(bench *B, int lo, int hi, int pos, const egm_admit *ad, int n_ad,
                        int n_rel, egm_err *e) {
    for (int s = lo; s < hi; s++) {
        B->slot[s - lo] = s;
        B->pos[s - lo] = pos;
        B->tok[s - lo] = B->next[s];
        B->want[s - lo] = 1;
    }
    return submit(B, hi - lo, ad, n_ad, n_rel, e);
}

static int decode(bench *B, int ctx, int b, int first, egm_err *e) {
    const egm_bench_opts *o = B->o;
    int steps = o->steps, m = o->micro_batches ? o->micro_batches : B->S;
    if (m > b) m = b;
    /* slots 1..b-1 restart as copies of slot 0's prompt; slot 0 itself
     * rewrites its positions from ctx on */
    int n_rel = 0, n_ad = 0;
    for (int s = 1; s < B->held; s++) B->rel[n_rel++] = s;
    for (int s = 1; s < b; s++)
        B->admits[n_ad++] = (egm_admit){.slot = s, .mode = EGM_MODE_GENERATE, .sp = B->greedy,
                                        .n_reserve = ctx + steps + 1, .fork_slot = 0,
                                        .fork_n = ctx, .top_logprobs = -1};
    for (int s = 0; s < b; s++) B->next[s] = first;
    int *round = calloc((size_t)m, sizeof *round);
    if (!round) return egm_fail(e, "out of memory");
    int rc = -1, head = 0, tail = 0;
#define LO(g) ((int)((long)(g) * b / m))
    /* the warm-up round; the admissions ride with the first micro-batch */
    for (int g = 0; g < m; g++) {
        if (submit_group(B, LO(g), LO(g + 1), ctx, g ? NULL : B->admits, g ? 0 : n_ad,
                         g ? 0 : n_rel, e))
            goto out;
        B->held = b;
        B->fifo[tail++] = g;
    }
    if (egm_pipe_mpi_mark(B->pipe, e)) goto out;
    double t0 = 0;
    for (int got = 0; got < m * (steps + 1); got++) {
        egm_result res;
        if (B->pipe->collect(B->pipe, &res, e)) goto out;
        int g = B->fifo[head++];
        if (res.n_outs != LO(g + 1) - LO(g)) {
            egm_fail(e, "micro-batch of %d rows returned %d tokens", LO(g + 1) - LO(g), res.n_outs);
            goto out;
        }
        for (int i = 0; i < res.n_outs; i++) B->next[res.outs[i].slot] = res.outs[i].token;
        if (got + 1 == m) t0 = egm_now(); /* the warm-up round is back */
        if (round[g] < steps) {
            round[g]++;
            if (submit_group(B, LO(g), LO(g + 1), ctx + round[g], NULL, 0, 0, e)) goto out;
            B->fifo[tail++] = g;
        }
    }
    double t = egm_now() - t0;
    if (egm_pipe_mpi_mark(B->pipe, e)) goto out;
    int M = (b + m - 1) / m;
    egm_bench_row r = {.phase = "decode", .batch = b, .context = ctx, .steps = steps,
                       .secs = t / steps, .mean_secs = t / steps,
                       .tokens_per_s = (double)b * steps / t, .sgemm_m = M};
    egm_bench_decode_cost(B->c, b, ctx, steps, B->gate_table, o->bf16, &r.cost);
    r.cost.weight_bytes *= m; /* every micro-batch streams every weight */
    if (M > B->top_m) B->top_m = M;
    json_t *x = json_pack("{s:f, s:i}", "window_s", t, "rows_per_micro_batch", M);
    rc = finish_row(B, &r, m, x, e);
#undef LO
out:
    free(round);
    return rc;
}

static int run(bench *B, egm_err *e) {
    const egm_bench_opts *o = B->o;
    int *prompt = malloc(sizeof(int) * (size_t)o->max_c);
    if (!prompt) return egm_fail(e, "out of memory");
    egm_bench_prompt(prompt, o->max_c, B->c->vocab_size);
    egm_bench_print_head(B->tab);
    fprintf(B->tab, " %3s   %s\n", "mb", "stage busy/wait/bubble %, wire bytes per token per hop");
    int rc = 0;
    for (int ci = 0; !rc && ci < o->nc; ci++) {
        int first = prefill(B, o->contexts[ci], prompt, e);
        if (first < 0) rc = -1;
        for (int bi = 0; !rc && bi < o->nb; bi++)
            rc = decode(B, o->contexts[ci], o->batches[bi], first, e);
    }
    free(prompt);
    return rc;
}

static void print_pipeline(bench *B, const egm_workers *wk, const egm_topology *t) {
    const egm_config *c = B->c;
    const egm_bench_opts *o = B->o;
    fprintf(B->tab, "model: %s (%s, synthetic=%s), %d layers, D %d, vocab %d; kv %s%s%s\n",
            o->config ? o->config : o->model, c->model_type, o->config ? "yes" : "no",
            c->num_layers, c->hidden_size, c->vocab_size, o->kv_dtype,
            B->gate_table ? ", gate table G precomputed" : "", o->attn_bf16 ? ", attention bf16" : "");
    fprintf(B->tab, "pipeline: %d ranks; rank 0 (%s) coordinates", B->world, wk->hosts[0]);
    for (int i = 0; i < B->S; i++)
        fprintf(B->tab, "; stage %d = rank %d (%s) layers %d-%d", i + 1, i + 1, wk->hosts[i + 1],
                t->stages[i].layer_lo, t->stages[i].layer_hi - 1);
    fprintf(B->tab, "; BLAS threads");
    for (int i = 0; i < B->S; i++) fprintf(B->tab, "%s%d", i ? "+" : " ", B->threads[i]);
    fprintf(B->tab, "; %s activations\n", egm_wire_dtype_name(B->wd));
    fprintf(B->tab, "roofline (measured on rank 0, %d threads): triad %.1f GB/s (read-only %.1f "
            "GB/s, 3 x %d MiB); sgemm on the model's shapes:", B->rf.threads, B->rf.bw,
            B->rf.read_bw, o->bw_mib);
    for (int i = 0; i < o->nb; i++) {
        int m = o->micro_batches ? o->micro_batches : B->S, b = o->batches[i];
        int M = (b + (m < b ? m : b) - 1) / (m < b ? m : b);
        fprintf(B->tab, " M=%d %.1f", M, egm_bench_sgemm_at(&B->rf, M, 0));
    }
    fprintf(B->tab, " GFLOP/s\n");
    fflush(B->tab);
}

/* With the pipeline, --kv-budget is each stage's: a stage caches only its
 * layers, so the pipeline holds as many sequences as its fullest stage
 * does (arithmetic of egm_kv_blocks_for_budget, as the stages allocate). */
static void stage_fits(const bench *B, const egm_topology *t, json_t *kv) {
    const egm_config *c = B->c;
    const egm_bench_opts *o = B->o;
    json_t *a = json_array();
    for (int ci = 0; ci < o->nc; ci++) {
        int per_seq = (o->contexts[ci] + o->block_tokens - 1) / o->block_tokens, fits = -1;
        for (int i = 0; i < B->S; i++) {
            int layers = t->stages[i].layer_hi - t->stages[i].layer_lo;
            int n = egm_kv_blocks_for_budget(o->budget, layers, egm_config_kv_elems(c),
                                             c->arch == EGM_EGMLA, o->bf16, o->block_tokens) /
                    per_seq;
            if (fits < 0 || n < fits) fits = n;
        }
        fprintf(B->tab, "  %s per stage (%d stages): %d sequences of %d tokens (computed)\n",
                o->budget_s, B->S, fits, o->contexts[ci]);
        json_array_append_new(a, json_pack("{s:i, s:i}", "context", o->contexts[ci],
                                           "sequences", fits));
    }
    json_object_set_new(kv, "fits_budget_per_stage", a);
}

/* The pipeline's facts for the JSON report. */
static json_t *pipeline_json(const bench *B, const egm_workers *wk, const egm_topology *t) {
    json_t *st = json_array();
    for (int i = 0; i < B->S; i++)
        json_array_append_new(st, json_pack("{s:i, s:s, s:[i,i], s:i}", "rank", i + 1, "host",
                                            wk->hosts[i + 1], "layers", t->stages[i].layer_lo,
                                            t->stages[i].layer_hi - 1, "threads", B->threads[i]));
    return json_pack("{s:{s:i, s:s, s:o, s:s, s:s, s:i}}", "pipeline", "ranks", B->world,
                     "coordinator_host", wk->hosts[0], "stages", st, "topology",
                     B->o->topology ? B->o->topology : "auto", "wire_dtype",
                     egm_wire_dtype_name(B->wd), "micro_batches_default",
                     B->o->micro_batches ? B->o->micro_batches : B->S);
}

/* The model's shape: rank 0 never holds weights. With --config, *text is
 * the config as sent to the workers. */
static int model_shape(const egm_bench_opts *o, egm_config *cfg, char **text, char *cfg_fp,
                       egm_err *e) {
    size_t len = 0;
    if (o->config) {
        if (!(*text = read_text(o->config, &len, e)) ||
            egm_config_parse(*text, len, o->config, cfg, e))
            return -1;
        egm_synthetic_fingerprint(*text, len, o->seed, cfg_fp);
        return 0;
    }
    if (egm_model_config(o->model, cfg, e) || egm_model_fingerprint(o->model, 0, cfg_fp, e))
        return -1;
    return 0;
}

/* The stages: a topology's, or `auto` (cost-balanced layers, 1 thread);
 * 0, or the exit code. */
static int plan_stages(bench *B, egm_topology *t, egm_err *e) {
    const egm_bench_opts *o = B->o;
    const egm_config *c = B->c;
    if (o->topology ? egm_topology_load(o->topology, t, e) : egm_topology_auto(B->S, t)) {
        if (o->topology) return EGM_EXIT_USAGE; /* a bad topology file: 2, as under launch */
        egm_fail(e, "out of memory for a %d-stage topology", B->S);
        return EGM_EXIT_FAIL;
    }
    if (egm_topology_check_world(t, B->world, e) || egm_split_topology(t, c, NULL, e)) {
        egm_wrap(e, "MPI world size %d", B->world);
        return EGM_EXIT_FAIL;
    }
    B->wd = t->wire_dtype;
    if (o->wire_dtype) egm_wire_dtype_parse(o->wire_dtype, &B->wd); /* checked with the options */
    B->gate_table = c->arch == EGM_EGMLA && !o->no_gate_table;
    if (!(B->threads = malloc(sizeof(int) * (size_t)B->S))) {
        egm_fail(e, "out of memory");
        return EGM_EXIT_FAIL;
    }
    for (int i = 0; i < B->S; i++) B->threads[i] = o->threads ? o->threads : t->stages[i].threads;
    return 0;
}

/* Starts the workers on the planned stages and opens the pipe to them. */
static int start_pipeline(bench *B, egm_workers *wk, const egm_topology *t, const char *text,
                          const char *cfg_fp, egm_pipe **pipe, egm_err *e) {
    const egm_bench_opts *o = B->o;
    const egm_config *c = B->c;
    /* every stage holds max_b sequences of the longest context (sized for
     * all layers: a stage with fewer gets more blocks, calloc'd, unused) */
    int need = o->max_c + o->steps + 1;
    size_t per_tok = egm_kv_bytes_per_token(c->num_layers, egm_config_kv_elems(c),
                                            c->arch == EGM_EGMLA, o->bf16);
    size_t blocks = ((size_t)need + o->block_tokens - 1) / o->block_tokens;
    egm_assign_opts ao = {.model = o->config ? o->config : o->model,
                          .config_json = text, .seed = o->seed, .cfg_fp = cfg_fp, .t = t,
                          .kv_budget = (size_t)o->max_b * blocks * o->block_tokens * per_tok,
                          .block_tokens = o->block_tokens, .kv_bf16 = o->bf16,
                          .n_slots = o->max_b, .gate_table = !o->no_gate_table,
                          .attn_bf16 = o->attn_bf16,
                          .threads = o->threads, .topo_threads = 1, .wd = B->wd,
                          .hello_timeout_s = 10 * o->rank_timeout};
    if (egm_workers_start(wk, &ao, e)) return -1;
    if (wk->caps.kv_blocks < (long)o->max_b * (long)blocks)
        return egm_fail(e, "a stage's KV pool holds %d blocks, %ld needed", wk->caps.kv_blocks,
                        (long)o->max_b * (long)blocks);
    egm_pipe_mpi_opts po = {B->world, wk->caps, B->wd, c->vocab_size, o->rank_timeout,
                            (const char *const *)wk->host_ptrs};
    if (egm_pipe_mpi_open(&po, pipe, e)) return -1;
    B->pipe = *pipe;
    return 0;
}

/* The roofline, on rank 0, with as many threads as the stages have in all
 * (on one host: the cores the pipeline runs on; the ceiling a one-rank run
 * with that many threads is divided by). */
static int measure_roof(bench *B, egm_err *e) {
    const egm_bench_opts *o = B->o;
    int all_threads = 0;
    for (int i = 0; i < B->S; i++) all_threads += B->threads[i];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    B->rf = (egm_bench_roof){.c = B->c, .reps = o->reps, .remeasure = !o->once,
                             .bw_bytes = (size_t)o->bw_mib << 20};
    B->rf.threads = all_threads;
    if (cpus > 0 && B->rf.threads > cpus) B->rf.threads = (int)cpus;
    B->rf.n_shapes = egm_proj_shapes(B->c, B->rf.shapes);
    openblas_set_num_threads(B->rf.threads);
    if (egm_bench_bw_now(&B->rf) <= 0)
        return egm_fail(e, "bandwidth test failed (out of memory for 3 x %d MiB?)", o->bw_mib);
    return 0;
}

/* The rows rank 0 submits and what it tracks per slot and per stage;
 * egm_bench_mpi frees them. */
static int alloc_rows(bench *B, egm_err *e) {
    const egm_bench_opts *o = B->o;
    int rows = o->chunk > o->max_b ? o->chunk : o->max_b;
    B->slot = malloc(sizeof(int) * (size_t)rows);
    B->pos = malloc(sizeof(int) * (size_t)rows);
    B->tok = malloc(sizeof(int) * (size_t)rows);
    B->want = malloc((size_t)rows);
    B->next = malloc(sizeof(int) * (size_t)o->max_b);
    B->rel = malloc(sizeof(int) * (size_t)o->max_b);
    B->fifo = malloc(sizeof(int) * (size_t)o->max_b * (size_t)(o->steps + 1));
    B->admits = malloc(sizeof *B->admits * (size_t)o->max_b);
    B->m0 = malloc(sizeof *B->m0 * (size_t)B->S);
    B->m1 = malloc(sizeof *B->m1 * (size_t)B->S);
    B->results = json_array();
    if (!B->slot || !B->pos || !B->tok || !B->want || !B->next || !B->rel || !B->fifo ||
        !B->admits || !B->m0 || !B->m1 || !B->results)
        return egm_fail(e, "out of memory");
    return 0;
}

/* KV capacity, then the JSON report; the exit code. */
static int report(bench *B, const egm_workers *wk, const egm_topology *t) {
    const egm_bench_opts *o = B->o;
    int mismatch = 0, rc;
    json_t *kv = egm_bench_kv(B->c, o, B->tab, &mismatch);
    stage_fits(B, t, kv);
    rc = mismatch ? EGM_EXIT_FAIL : EGM_EXIT_OK;
    if (o->json_path && !mismatch) {
        json_t *rl = egm_bench_roof_json(&B->rf, B->top_m ? B->top_m : 1);
        json_object_set_new(rl, "measured_on", json_sprintf("rank 0 (%s)", wk->hosts[0]));
        json_t *res = B->results;
        B->results = NULL;
        if (egm_bench_write_json(o, B->c, rl, res, kv, pipeline_json(B, wk, t)))
            rc = EGM_EXIT_FAIL;
    } else {
        json_decref(kv);
    }
    return rc;
}

int egm_bench_mpi(const egm_bench_opts *o, int world) {
    egm_err e;
    egm_config cfg;
    egm_topology t;
    egm_workers wk = {.world = world}; /* enough to abandon them */
    egm_pipe *pipe = NULL;
    bench B = {.o = o, .c = &cfg, .world = world, .S = world - 1, .tab = egm_bench_table(o)};
    char *text = NULL, cfg_fp[40];
    int rc = EGM_EXIT_FAIL, bad;
    memset(&t, 0, sizeof t);
    egm_sampling_default(&B.greedy);
    B.greedy.temperature = 0;

    if (model_shape(o, &cfg, &text, cfg_fp, &e)) goto fail;
    if (egm_bench_check_context(o, &cfg)) {
        wk.exit_status = rc = EGM_EXIT_USAGE;
        egm_workers_abandon(&wk);
        goto out;
    }
    if (egm_workers_init(&wk, world, &e)) goto fail;
    if ((bad = plan_stages(&B, &t, &e))) {
        rc = bad;
        goto fail;
    }
    if (start_pipeline(&B, &wk, &t, text, cfg_fp, &pipe, &e) || measure_roof(&B, &e)) goto fail;
    print_pipeline(&B, &wk, &t);
    if (alloc_rows(&B, &e) || run(&B, &e)) goto fail;
    /* every worker prints its totals; the pipeline ends politely */
    if (egm_pipe_mpi_shutdown(pipe, &e)) goto fail;
    rc = report(&B, &wk, &t);
    goto out;
fail:
    fprintf(stderr, "egmla bench: %s\n", e.msg);
    if (pipe && egm_pipe_mpi_faulted(pipe)) {
        /* a rank died or hung: only MPI_Abort ends the others */
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, EGM_EXIT_FAIL);
    }
    wk.exit_status = rc;
    egm_workers_abandon(&wk);
out:
    if (pipe) pipe->close(pipe);
    egm_workers_free(&wk);
    egm_topology_free(&t);
    json_decref(B.results);
    free(text);
    free(B.slot), free(B.pos), free(B.tok), free(B.want), free(B.next), free(B.rel);
    free(B.fifo), free(B.admits), free(B.m0), free(B.m1), free(B.threads);
    return rc;
}
