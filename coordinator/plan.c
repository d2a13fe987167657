/* plan.c - the pipeline throughput model (plan.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/plan.h"
#include "deploy/split.h"
#include "worker/kvcache.h"
#include "worker/wire.h"

double egm_plan_header_bytes(int rows) { return 14.0 + 6.0 * rows; }

/* Stage j's scale: its node's calibration is at k->threads threads. */
static double scale(const egm_plan_in *in, int j) {
    return (double)in->k[j]->threads / in->t->stages[j].threads;
}

/* Prefill: stages on one node slow each other when they work at once (at
 * most `busy` of them: chunks in flight). With the node's
 * co-location measured at these threads, stage j's compute at r rows is
 * stretched by the measured slowdown of that many copies (memory, caches
 * and cores); otherwise only cores are shared (its calibration's `cores`;
 * 0: unknown, no sharing): when the stages' threads exceed the cores,
 * each runs slower by that ratio. Rank 0 mostly waits and is not counted. */
static double share(const egm_plan_in *in, int j, int busy, int r) {
    const egm_topology *t = in->t;
    const egm_calib *k = in->k[j];
    int C = k->cores, th[EGM_PLAN_MAX_STAGES], n = 0, same = 1;
    for (int i = 0; i < t->n_stages; i++)
        if (t->stages[i].node == t->stages[j].node) th[n++] = t->stages[i].threads;
    for (int a = 1; a < n; a++) /* largest first */
        for (int b = a; b > 0 && th[b] > th[b - 1]; b--) {
            int x = th[b]; th[b] = th[b - 1]; th[b - 1] = x;
        }
    double sum = 0;
    int at_once = n < busy ? n : busy;
    for (int i = 0; i < at_once; i++) sum += th[i], same &= th[i] == k->threads;
    double colo = same ? egm_calib_colocated(k, at_once, r) : 0;
    if (colo > 0) return colo > 1 ? colo : 1;
    return C >= 1 && sum > C ? sum / C : 1;
}

/* Decode: stage j's slowdown at r rows while on average x stages of its
 * node (itself included) work, from the measured co-location (linear
 * between copy counts, 1 for one; proportional beyond the last measured)
 * or else from the threads over the node's cores; busy[i]: the other
 * stages' busy fractions, the expected sharers. */
static double node_slowdown(const egm_plan_in *in, int j, const double *busy, int r) {
    const egm_topology *t = in->t;
    const egm_calib *k = in->k[j];
    double x = 1, th = t->stages[j].threads;
    int same = t->stages[j].threads == k->threads;
    for (int i = 0; i < t->n_stages; i++)
        if (i != j && t->stages[i].node == t->stages[j].node) {
            x += busy[i], th += busy[i] * t->stages[i].threads;
            same &= t->stages[i].threads == k->threads;
        }
    if (x > in->micro_batches) { /* no more at once than micro-batches in flight */
        th *= in->micro_batches / x;
        x = in->micro_batches;
    }
    if (x <= 1) return 1;
    if (same && k->n_colo_copies > 0) {
        int lo = (int)x, top = k->n_colo_copies + 1;
        if (lo >= top) return egm_calib_colocated(k, top, r) * x / top;
        double a = lo == 1 ? 1 : egm_calib_colocated(k, lo, r), b = egm_calib_colocated(k, lo + 1, r);
        double v = a + (x - lo) * (b - a);
        return v > 1 ? v : 1;
    }
    return k->cores >= 1 && th > k->cores ? th / k->cores : 1;
}

static double calib_decode_time(const egm_plan_in *in, int j, int r, long ctx);

/* Stage j's compute for a decode micro-batch of r rows at ctx positions. */
static double decode_time(const egm_plan_in *in, int j, int r, long ctx) {
    if (!in->stage_mb_s)
        return calib_decode_time(in, j, r, ctx) * (in->stretch ? in->stretch[j] : 1);
    int R = (in->batch + in->micro_batches - 1) / in->micro_batches;
    double full = calib_decode_time(in, j, R, in->context);
    return in->stage_mb_s[j] * (full > 0 ? calib_decode_time(in, j, r, ctx) / full : 1);
}

static double calib_decode_time(const egm_plan_in *in, int j, int r, long ctx) {
    const egm_topo_stage *s = &in->t->stages[j];
    const egm_calib *k = in->k[j];
    double t = (s->layer_hi - s->layer_lo) * egm_calib_layer(k, r, ctx);
    if (j == 0) t += egm_calib_embed(k, r);
    if (j == in->t->n_stages - 1) t += egm_calib_head(k, r);
    return t * scale(in, j);
}

/* Stage j's compute for a prefill chunk of T rows at position p; `last`:
 * the chunk with the prompt's last row (one row through the head). */
static double prefill_time(const egm_plan_in *in, int j, int T, long p, int last) {
    const egm_topo_stage *s = &in->t->stages[j];
    const egm_calib *k = in->k[j];
    double t = (s->layer_hi - s->layer_lo) * egm_calib_prefill(k, T, p);
    if (j == 0) t += egm_calib_embed(k, T);
    if (j == in->t->n_stages - 1 && last) t += egm_calib_head(k, 1);
    return t * scale(in, j) * share(in, j, (in->context + in->chunk - 1) / in->chunk, T);
}

static double xfer(const egm_plan_in *in, double bytes) {
    return bytes / in->link_bytes_per_s;
}

/* Activations + header of r rows over a stage-to-stage hop. */
static double hop_bytes(const egm_plan_in *in, int r) {
    return (double)egm_wire_bytes(in->wd, r, in->c->hidden_size) + egm_plan_header_bytes(r);
}

/* Balances the auto stages for a decode micro-batch of r rows. */
static int resolve(const egm_plan_in *in, int r, egm_err *e) {
    egm_topology *t = in->t;
    egm_split_cost *c = malloc(sizeof *c);
    double *rate = malloc(sizeof(double) * (size_t)t->n_stages);
    if (!c || !rate) { free(c); free(rate); return egm_fail(e, "out of memory"); }
    const egm_calib *k0 = in->k[0];
    double l0 = egm_calib_layer(k0, r, in->context);
    c->n_layers = in->c->num_layers;
    for (int l = 0; l < c->n_layers; l++) c->layer[l] = l0;
    c->embed = egm_calib_embed(k0, r);
    c->head = egm_calib_head(in->k[t->n_stages - 1], r);
    for (int j = 0; j < t->n_stages; j++) {
        double lj = egm_calib_layer(in->k[j], r, in->context);
        rate[j] = (l0 > 0 && lj > 0 ? l0 / lj : 1.0) / scale(in, j);
    }
    int rc = egm_split_resolve(t, c, rate, e);
    free(c), free(rate);
    return rc;
}

/* The decode replay. Fills per-stage busy / wait and returns the timed
 * window (seconds). */
static double decode_replay(const egm_plan_in *in, int m, egm_plan_out *out) {
    int S = in->t->n_stages, B = in->batch, R = (B + m - 1) / m;
    double *stage_free = calloc((size_t)S, sizeof(double));
    double *link_free = calloc((size_t)S + 1, sizeof(double));
    double *back = calloc((size_t)m, sizeof(double));
    double *busy = calloc((size_t)S, sizeof(double)), *wait = calloc((size_t)S, sizeof(double));
    double lat = in->link_latency_s, rank0 = in->k[0]->rank0_s;
    double t_start = 0, t_end = 0;
    for (int s = 0; s <= in->steps; s++) {
        for (int i = 0; i < m; i++) {
            int r = i < m - 1 ? R : B - R * (m - 1);
            if (r <= 0) continue;
            long ctx = in->context + s;
            /* rank 0 -> stage 1: the header alone (stage 1 embeds) */
            double ls = fmax(back[i] + rank0, link_free[0]);
            link_free[0] = ls + xfer(in, egm_plan_header_bytes(r));
            double a = link_free[0] + lat;
            for (int j = 0; j < S; j++) {
                double start = fmax(a, stage_free[j]), T = decode_time(in, j, r, ctx);
                stage_free[j] = start + T;
                if (s > 0) busy[j] += T;
                double l2 = fmax(stage_free[j], link_free[j + 1]);
                if (j < S - 1) {
                    /* the next stage holds the header from l2 + lat until the
                     * activations are in */
                    double hdr_in = l2 + lat, act_in = l2 + xfer(in, hop_bytes(in, r)) + lat;
                    link_free[j + 1] = act_in - lat;
                    double idle_from = fmax(stage_free[j + 1], hdr_in);
                    if (s > 0 && act_in > idle_from) wait[j + 1] += act_in - idle_from;
                    a = act_in;
                } else {
                    link_free[j + 1] = l2 + xfer(in, 16.0 * r);
                    back[i] = link_free[j + 1] + lat;
                }
            }
            if (s == 0) t_start = fmax(t_start, back[i]);
            t_end = fmax(t_end, back[i]);
        }
    }
    double win = t_end - t_start;
    for (int j = 0; j < S && out; j++) {
        out->st[j].busy = win > 0 ? busy[j] / win : 0;
        out->st[j].wait = win > 0 ? wait[j] / win : 0;
        if (out->st[j].busy + out->st[j].wait > 1) out->st[j].wait = 1 - out->st[j].busy;
        if (out->st[j].wait < 0) out->st[j].wait = 0;
        out->st[j].bubble = 1 - out->st[j].busy - out->st[j].wait;
        if (out->st[j].bubble < 0) out->st[j].bubble = 0;
    }
    free(stage_free), free(link_free), free(back), free(busy), free(wait);
    return win;
}

/* Prefill: chunks through the stages (a flow shop). Returns the time to
 * first token; busy[j] gets each stage's compute. */
static double prefill_replay(const egm_plan_in *in, egm_plan_out *out) {
    int S = in->t->n_stages, C = in->context, K = in->chunk;
    double *stage_free = calloc((size_t)S, sizeof(double));
    double *link_free = calloc((size_t)S + 1, sizeof(double));
    double *busy = calloc((size_t)S, sizeof(double));
    double lat = in->link_latency_s, done = 0;
    for (int p = 0; p < C; p += K) {
        int T = C - p < K ? C - p : K, last = p + T >= C;
        link_free[0] += xfer(in, egm_plan_header_bytes(T));
        double a = link_free[0] + lat;
        for (int j = 0; j < S; j++) {
            double start = fmax(a, stage_free[j]), dt = prefill_time(in, j, T, p, last);
            stage_free[j] = start + dt;
            busy[j] += dt;
            double l2 = fmax(stage_free[j], link_free[j + 1]);
            link_free[j + 1] = l2 + xfer(in, j < S - 1 ? hop_bytes(in, T) : 16.0);
            a = link_free[j + 1] + lat;
        }
        done = a;
    }
    for (int j = 0; j < S; j++) out->st[j].prefill_busy = done > 0 ? busy[j] / done : 0;
    free(stage_free), free(link_free), free(busy);
    return done;
}

/* Stage j's compute for a micro-batch with its node to itself (measured
 * times already include whatever sharing there was). */
static double alone_time(const egm_plan_in *in, int j, int r, long ctx) {
    return in->stage_mb_s ? decode_time(in, j, r, ctx) : calib_decode_time(in, j, r, ctx);
}

/* Work per round of each resource; the largest names the bound. */
static void find_bound(const egm_plan_in *in, int m, egm_plan_out *out) {
    const egm_topology *t = in->t;
    int S = t->n_stages, B = in->batch, R = (B + m - 1) / m;
    double best = -1, w_st[EGM_PLAN_MAX_STAGES];
    for (int j = 0; j < S; j++) {
        double w = 0;
        for (int i = 0; i < m; i++) {
            int r = i < m - 1 ? R : B - R * (m - 1);
            if (r > 0) w += alone_time(in, j, r, in->context);
        }
        w_st[j] = w;
        if (w > best) {
            best = w, out->bound_kind = 0, out->bound_index = j;
            snprintf(out->bound, sizeof out->bound, "stage %d compute", j + 1);
        }
    }
    /* a node's cores: its stages' thread-seconds over its cores */
    for (int j = 0; j < S && !in->stage_mb_s; j++) {
        int C = in->k[j]->cores, first = 1;
        double w = 0;
        for (int i = 0; i < S; i++)
            if (t->stages[i].node == t->stages[j].node) {
                if (i < j) first = 0;
                w += w_st[i] * t->stages[i].threads;
            }
        if (C < 1 || !first || (w /= C) <= best * 1.0001) continue;
        best = w, out->bound_kind = 3, out->bound_index = j;
        snprintf(out->bound, sizeof out->bound, "node %.40s's %d cores (shared by its stages)",
                 t->nodes[t->stages[j].node].name, C);
    }
    for (int j = 0; j + 1 < S; j++) {
        double w = 0;
        for (int i = 0; i < m; i++) {
            int r = i < m - 1 ? R : B - R * (m - 1);
            if (r > 0) w += xfer(in, hop_bytes(in, r));
        }
        if (w > best) {
            best = w, out->bound_kind = 1, out->bound_index = j;
            snprintf(out->bound, sizeof out->bound, "link stage %d -> %d", j + 1, j + 2);
        }
    }
    /* one micro-batch around the ring: it cannot go faster than that */
    double cyc = in->k[0]->rank0_s + (S + 1) * in->link_latency_s +
                 xfer(in, egm_plan_header_bytes(R) + 16.0 * R);
    for (int j = 0; j < S; j++) {
        cyc += alone_time(in, j, R, in->context);
        if (j + 1 < S) cyc += xfer(in, hop_bytes(in, R));
    }
    out->cycle_s = cyc;
    if (cyc > best * 1.0001) {
        out->bound_kind = 2, out->bound_index = 0;
        snprintf(out->bound, sizeof out->bound, "rank 0's round trip (%s)",
                 m < B ? "more micro-batches would fill the pipeline" : "one sequence per micro-batch");
    }
}

static long kv_seqs(const egm_plan_in *in, int j) {
    const egm_config *c = in->c;
    const egm_topo_stage *s = &in->t->stages[j];
    size_t budget = s->kv_budget ? s->kv_budget : in->kv_budget;
    int bt = in->block_tokens > 0 ? in->block_tokens : 16;
    int blocks = egm_kv_blocks_for_budget(budget, s->layer_hi - s->layer_lo,
                                          egm_config_kv_elems(c), c->arch == EGM_EGMLA,
                                          in->kv_bf16, bt);
    long per = (in->context + in->steps + 1 + bt - 1) / bt;
    return blocks > 0 ? blocks / per : 0;
}

int egm_plan_run(const egm_plan_in *in, egm_plan_out *out, egm_err *e) {
    egm_topology *t = in->t;
    int S = t->n_stages;
    memset(out, 0, sizeof *out);
    if (S < 1 || S > EGM_PLAN_MAX_STAGES)
        return egm_fail(e, "%d stages: the plan handles 1 to %d", S, EGM_PLAN_MAX_STAGES);
    if (in->batch < 1 || in->context < 1 || in->chunk < 1 || in->steps < 1)
        return egm_fail(e, "batch, context, chunk and steps must be >= 1");
    if (!(in->link_bytes_per_s > 0) || !(in->link_latency_s >= 0))
        return egm_fail(e, "the link needs a bandwidth > 0 and a latency >= 0");
    int m = in->micro_batches > 0 ? in->micro_batches : S;
    if (m > in->batch) m = in->batch;
    egm_plan_in in_m = *in; /* with the micro-batch count settled */
    in_m.micro_batches = m;
    in = &in_m;
    int R = (in->batch + m - 1) / m;
    if (resolve(in, R, e)) return -1;
    out->n_stages = S, out->micro_batches = m, out->rows = R;
    /* Stages sharing a node: each one's stretch from the others' busy
     * fractions, which depend on the stretches; a damped fixed point. */
    double *stretch = malloc(sizeof(double) * (size_t)S), *busy = malloc(sizeof(double) * (size_t)S);
    if (!stretch || !busy) { free(stretch), free(busy); return egm_fail(e, "out of memory"); }
    for (int j = 0; j < S; j++) stretch[j] = 1;
    in_m.stretch = stretch;
    for (int it = 0; it < 24 && !in->stage_mb_s; it++) {
        decode_replay(in, m, out);
        for (int j = 0; j < S; j++) busy[j] = out->st[j].busy;
        for (int j = 0; j < S; j++) stretch[j] = (stretch[j] + node_slowdown(in, j, busy, R)) / 2;
    }
    for (int j = 0; j < S; j++) {
        out->st[j].layer_lo = t->stages[j].layer_lo;
        out->st[j].layer_hi = t->stages[j].layer_hi;
        out->st[j].threads = t->stages[j].threads;
        out->st[j].mb_s = decode_time(in, j, R, in->context);
        out->st[j].core_share = stretch[j];
        out->st[j].kv_seqs = kv_seqs(in, j);
    }
    double win = decode_replay(in, m, out);
    out->round_s = win / in->steps;
    out->decode_tok_s = win > 0 ? (double)in->batch * in->steps / win : 0;
    out->ttft_s = prefill_replay(in, out);
    out->prefill_tok_s = out->ttft_s > 0 ? in->context / out->ttft_s : 0;
    out->wire_bytes_per_token = S > 1 ? hop_bytes(in, R) / R : 0;
    out->hop_s = in->link_latency_s + xfer(in, hop_bytes(in, R));
    find_bound(in, m, out);
    /* the least m (up to the batch) whose round is no longer the round trip */
    out->micro_batches_needed = in->batch;
    for (int mm = 1; mm <= in->batch; mm++) {
        egm_plan_out tmp;
        tmp.n_stages = S;
        find_bound(in, mm, &tmp);
        if (tmp.bound_kind != 2) { out->micro_batches_needed = mm; break; }
    }
    free(stretch), free(busy);
    return 0;
}
