/* roofline.c - the machine's two ceilings (sgemm on the model's shapes,
 * STREAM-triad bandwidth) and the analytic cost of a model's step. */
#include "base/clock.h"
#include "coordinator/roofline.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/ops.h"
#include "worker/kvcache.h"

/* ------------------------------------------------------------ model cost */

static void add_shape(egm_proj_shape *out, int *n, const char *name, int N, int K, int count) {
    for (int i = 0; i < *n; i++)
        if (out[i].N == N && out[i].K == K) {
            /* Same shape, another weight (q and o of MHA, gate and up...):
             * one entry, so the roofline times it once. */
            size_t len = strlen(out[i].name);
            out[i].count += count;
            snprintf(out[i].name + len, sizeof out[i].name - len, "+%s", name);
            return;
        }
    if (*n < EGM_MAX_PROJ) {
        egm_proj_shape *p = &out[(*n)++];
        snprintf(p->name, sizeof p->name, "%s", name);
        p->N = N, p->K = K, p->count = count;
    }
}

int egm_proj_shapes(const egm_config *c, egm_proj_shape out[EGM_MAX_PROJ]) {
    int n = 0, L = c->num_layers, D = c->hidden_size, H = c->num_heads;
    if (c->arch == EGM_LLAMA) {
        int dh = c->head_dim, Hkv = c->num_kv_heads;
        add_shape(out, &n, "q", H * dh, D, L);
        add_shape(out, &n, "k", Hkv * dh, D, L);
        add_shape(out, &n, "v", Hkv * dh, D, L);
        add_shape(out, &n, "o", D, H * dh, L);
    } else {
        int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dv = c->v_head_dim;
        int dq = dn + dr, dc = c->kv_lora_rank;
        if (c->q_lora_rank) {
            add_shape(out, &n, "q_a", c->q_lora_rank, D, L);
            add_shape(out, &n, "q_b", H * dq, c->q_lora_rank, L);
        } else {
            add_shape(out, &n, "q", H * dq, D, L);
        }
        add_shape(out, &n, "kv_a", dc + dr, D, L);
        add_shape(out, &n, "o", D, H * dv, L);
    }
    add_shape(out, &n, "gate", c->intermediate_size, D, L);
    add_shape(out, &n, "up", c->intermediate_size, D, L);
    add_shape(out, &n, "down", D, c->intermediate_size, L);
    add_shape(out, &n, "lm_head", c->vocab_size, D, 1);
    return n;
}

static double g_proj_bpe = 4.0;

void egm_set_weight_bytes_per_elem(double b) { g_proj_bpe = b > 0 ? b : 4.0; }

double egm_attn_flops_of(const egm_config *c, long rows, long row_positions,
                         long seg_positions, int gate_table) {
    double H = c->num_heads, L = c->num_layers, f;
    if (c->arch == EGM_LLAMA)
        return L * 4.0 * H * c->head_dim * (double)row_positions;
    double du = egm_config_latent_dim(c), dr = c->qk_rope_head_dim;
    f = 2.0 * H * (2.0 * du + dr) * (double)row_positions +
        2.0 * H * (c->qk_nope_head_dim + c->v_head_dim) * du * (double)rows;
    if (c->arch == EGM_EGMLA) {
        double per_pos = 8.0 * du;
        if (c->eg_latent_dim != c->kv_lora_rank) per_pos += 2.0 * c->kv_lora_rank * du;
        if (!gate_table) per_pos += 2.0 * c->eg_embed_dim * du;
        f += per_pos * (double)seg_positions;
    }
    return L * f;
}

void egm_step_cost_of(const egm_config *c, long rows, long head_rows, long positions,
                      int gate_table, int kv_bf16, egm_step_cost *o) {
    egm_proj_shape s[EGM_MAX_PROJ];
    int n = egm_proj_shapes(c, s);
    double V = c->vocab_size, D = c->hidden_size, L = c->num_layers;
    memset(o, 0, sizeof *o);
    for (int i = 0; i < n; i++) {
        double nk = (double)s[i].N * s[i].K * s[i].count;
        o->proj_flops += 2.0 * rows * nk;
        o->weight_bytes += g_proj_bpe * nk;
    }
    /* lm_head is one of the shapes (count 1); it runs on head_rows only and
     * is read only when some row needs it. Its [V, D] shape may have merged
     * with nothing else, so take it out by value. */
    o->proj_flops -= 2.0 * (double)(rows - head_rows) * V * D;
    if (!head_rows) o->weight_bytes -= g_proj_bpe * V * D;
    if (c->arch != EGM_LLAMA) {
        /* kv_b_proj is read every step, but applied absorbed inside
         * attention, per sequence and head: not one of the projections. */
        double H = c->num_heads, dz = egm_config_latent_dim(c);
        o->weight_bytes += 4.0 * L * H * (c->qk_nope_head_dim + c->v_head_dim) * dz;
    }
    if (c->arch == EGM_EGMLA) {
        double dc = c->kv_lora_rank, du = c->eg_latent_dim, de = c->eg_embed_dim;
        if (c->eg_latent_dim != c->kv_lora_rank) o->weight_bytes += 4.0 * L * du * dc;
        if (gate_table) {
            o->gate_bytes = 4.0 * L * du * (double)positions;
        } else {
            o->weight_bytes += 4.0 * L * du * de;
            o->gate_bytes = 4.0 * L * de * (double)positions;
        }
    }
    o->attn_flops = egm_attn_flops_of(c, rows, positions, positions, gate_table);
    o->kv_bytes = (double)positions *
                  (double)egm_kv_bytes_per_token(c->num_layers, egm_config_kv_elems(c),
                                                 c->arch == EGM_EGMLA, kv_bf16);
}

/* ------------------------------------------------------------ sgemm ceiling */

static void fill(float *x, size_t n, unsigned seed) {
    /* Small values so nothing overflows; the content does not matter to
     * BLAS speed, only that it is not denormal. */
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 9) & 0xffff) / 65536.0f - 0.5f;
    }
}

double egm_roofline_sgemm(const egm_proj_shape *s, int n, int M, int reps,
                          double *per_shape) {
    long maxw = 0, maxk = 0, maxn = 0;
    for (int i = 0; i < n; i++) {
        if ((long)s[i].N * s[i].K > maxw) maxw = (long)s[i].N * s[i].K;
        if (s[i].K > maxk) maxk = s[i].K;
        if (s[i].N > maxn) maxn = s[i].N;
    }
    float *W = malloc(sizeof(float) * (size_t)(maxw ? maxw : 1));
    float *x = malloc(sizeof(float) * (size_t)M * (size_t)(maxk ? maxk : 1));
    float *y = malloc(sizeof(float) * (size_t)M * (size_t)(maxn ? maxn : 1));
    if (!W || !x || !y) {
        free(W), free(x), free(y);
        return -1;
    }
    fill(W, (size_t)maxw, 1);
    fill(x, (size_t)M * (size_t)maxk, 2);
    if (reps < 1) reps = 1;
    double flops = 0, secs = 0;
    for (int i = 0; i < n; i++) {
        int N = s[i].N, K = s[i].K;
        double f = 2.0 * M * N * K;
        /* One untimed call warms the weights and BLAS's buffers; it also
         * sizes the inner loop so a repetition lasts ~10 ms, well above
         * the clock's resolution. */
        double t0 = egm_now();
        egm_linear(y, x, W, M, N, K);
        double t1 = egm_now() - t0;
        int inner = t1 > 0 ? (int)(0.01 / t1) : 1000;
        if (inner < 1) inner = 1;
        if (inner > 10000) inner = 10000;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            t0 = egm_now();
            for (int k = 0; k < inner; k++) egm_linear(y, x, W, M, N, K);
            double t = (egm_now() - t0) / inner;
            if (t < best) best = t;
        }
        if (per_shape) per_shape[i] = f / best * 1e-9;
        flops += f * s[i].count;
        secs += best * s[i].count;
    }
    free(W), free(x), free(y);
    return secs > 0 ? flops / secs * 1e-9 : 0;
}

/* ------------------------------------------------------------ bandwidth */

/* GCC vector extension: 8 floats. Stores go through memcpy so the arrays
 * need no particular alignment and no aliasing rule is bent. */
typedef float v8f __attribute__((vector_size(32)));

typedef struct {
    float *a;
    const float *b, *c;
    float s;
    size_t lo, hi;
    double sum;
} slice;

static void *triad_slice(void *arg) {
    slice *w = arg;
    size_t i = w->lo;
    v8f s = {w->s, w->s, w->s, w->s, w->s, w->s, w->s, w->s};
    for (; i + 8 <= w->hi; i += 8) {
        v8f b, c;
        memcpy(&b, w->b + i, sizeof b);
        memcpy(&c, w->c + i, sizeof c);
        b += s * c;
        memcpy(w->a + i, &b, sizeof b);
    }
    for (; i < w->hi; i++) w->a[i] = w->b[i] + w->s * w->c[i];
    return NULL;
}

static void *sum_slice(void *arg) {
    slice *w = arg;
    size_t i = w->lo;
    v8f acc[4] = {{0}, {0}, {0}, {0}};
    for (; i + 32 <= w->hi; i += 32)
        for (int k = 0; k < 4; k++) {
            v8f v;
            memcpy(&v, w->b + i + 8 * k, sizeof v);
            acc[k] += v;
        }
    double s = 0;
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 8; j++) s += acc[k][j];
    for (; i < w->hi; i++) s += w->b[i];
    w->sum = s;
    return NULL;
}

/* Runs fn over `threads` contiguous slices of [0, n); the caller takes the
 * first slice itself. */
static int run_slices(void *(*fn)(void *), slice *proto, size_t n, int threads,
                      double *sum) {
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    slice w[256];
    pthread_t th[256];
    int started[256] = {0}, rc = 0;
    for (int t = 0; t < threads; t++) {
        w[t] = *proto;
        w[t].lo = n * (size_t)t / (size_t)threads;
        w[t].hi = n * (size_t)(t + 1) / (size_t)threads;
    }
    for (int t = 1; t < threads; t++) started[t] = !pthread_create(&th[t], NULL, fn, &w[t]);
    fn(&w[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else fn(&w[t]), rc = -1;
    }
    if (sum) {
        *sum = 0;
        for (int t = 0; t < threads; t++) *sum += w[t].sum;
    }
    return rc;
}

int egm_triad(float *a, const float *b, const float *c, float s, size_t n, int threads) {
    slice p = {.a = a, .b = b, .c = c, .s = s};
    return run_slices(triad_slice, &p, n, threads, NULL);
}

double egm_stream_sum(const float *x, size_t n, int threads) {
    slice p = {.b = x};
    double sum = 0;
    run_slices(sum_slice, &p, n, threads, &sum);
    return sum;
}

double egm_roofline_membw(size_t bytes, int threads, int reps, double *read_gbs) {
    size_t n = bytes / sizeof(float);
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)),
          *c = malloc(n * sizeof(float));
    if (!a || !b || !c || !n) {
        free(a), free(b), free(c);
        return -1;
    }
    /* Touch every page before timing. */
    for (size_t i = 0; i < n; i++) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
    if (reps < 1) reps = 1;
    double best = 1e30, best_read = 1e30, sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = egm_now();
        egm_triad(a, b, c, 0.5f, n, threads);
        double t = egm_now() - t0;
        if (t < best) best = t;
        t0 = egm_now();
        sink += egm_stream_sum(a, n, threads);
        t = egm_now() - t0;
        if (t < best_read) best_read = t;
    }
    /* a = 1 + 0.5 * 2 = 2 everywhere: a wrong sum means a broken kernel
     * (float lanes round once past 2^24, hence the tolerance). */
    double want = 2.0 * (double)n * reps;
    int ok = fabs(sink - want) <= 1e-4 * want;
    free(a), free(b), free(c);
    if (!ok) return -1;
    if (read_gbs) *read_gbs = (double)n * sizeof(float) / best_read * 1e-9;
    return 3.0 * (double)n * sizeof(float) / best * 1e-9;
}
