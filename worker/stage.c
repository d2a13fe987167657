/* stage.c - run a range of transformer blocks over a micro-batch.
 *
 * Every projection is one GEMM over all rows of the micro-batch; attention
 * runs per sequence segment against the cache (kernels/attention.c). For
 * MLA the cache holds z = RMSNorm(c) and the rope key; for EG-MLA it holds
 * c and the rope key (plus token ids), and z = Norm(up(c) * gate(id)) is
 * rebuilt for all cached positions of a segment once per layer, with GEMMs,
 * then shared by every head and query row of that segment. */
#include "stage.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_bf16.h"
#include "kernels/attn_rows.h"
#include "kernels/matmul.h"
#include "base/pool.h"
#include "kernels/ops.h"

/* Positions per block of latent attention: 128 rows of [z | kpe] (160 KiB
 * for EG-MLA's d_u = 256) stay in L2 from their build to their last use. */
#define EGM_ZBLOCK 128

/* ------------------------------------------------------------ threads
 *
 * The stage's pool (base/pool.h) runs every parallel loop; BLAS is
 * single-threaded for the whole forward (blas_single), so there is one
 * kind of thread and none spins while idle. Weight matrices are split
 * into fixed blocks of output columns, the same for any thread count, so
 * the bits never depend on --threads or on the pipeline split. */

/* Output columns per task of a projection: a multiple of every kernel's
 * column tile; with 2 threads, 768 columns make 6 even tasks. */
#define EGM_COL_BLOCK 128

static int blas_single(void) {
    int nt = openblas_get_num_threads();
    if (nt != 1) openblas_set_num_threads(1);
    return nt;
}

static void blas_restore(int nt) {
    if (nt != 1) openblas_set_num_threads(nt);
}

typedef struct {
    float *y;
    const float *x;
    const void *qx;
    const egm_mat *W;
    int M, ldx, ldy, acc;
} lin_job;

/* One block of W's rows (output columns): a view of the stored matrix, in
 * whatever precision it is kept (kernels/matmul.h). */
static void lin_task(void *v, int t, int thread) {
    (void)thread;
    const lin_job *j = v;
    int n0 = t * EGM_COL_BLOCK, N = j->W->rows;
    egm_mat blk = *j->W;
    blk.rows = N - n0 < EGM_COL_BLOCK ? N - n0 : EGM_COL_BLOCK;
    blk.data = (const char *)j->W->data + (size_t)n0 * j->W->row_bytes;
    if (j->qx)
        egm_mat_mul_prepared(&blk, j->M, j->qx, j->y + n0, j->ldy, j->acc);
    else
        egm_mat_mul(&blk, j->M, j->x, j->ldx, j->y + n0, j->ldy, j->acc);
}

/* x as W's products take it, rounded once for all of W's blocks (and for
 * the next matrices on the same x: pass the previous result as `have`; it
 * is reused when the format matches). q NULL: W takes x as it is. */
typedef struct {
    const void *q;
    int fmt, cols;
} stage_qx;

static stage_qx stage_prep(egm_stage *s, const egm_mat *W, int M, const float *x, int ldx,
                           const stage_qx *have) {
    stage_qx r = {NULL, egm_mat_act_format(W, M), W->cols};
    if (!r.fmt) return r;
    if (have && have->q && have->fmt == r.fmt && have->cols == r.cols) return *have;
    void *q = egm_buf_need(&s->qx, (long)(egm_mat_act_bytes(W, M) / sizeof(float)) + 1);
    egm_mat_act_prepare(W, M, x, ldx, q);
    r.q = q;
    return r;
}

/* y[M, W.rows] (row stride ldy) = x[M, W.cols] W^T (acc: +=), over the
 * pool; qx: x prepared for W (stage_prep). */
static void stage_mul_qx(egm_stage *s, const egm_mat *W, int M, const float *x, int ldx,
                         stage_qx qx, float *y, int ldy, int acc) {
    lin_job j = {y, x, qx.q, W, M, ldx, ldy, acc};
    egm_pool_run(s->pool, (W->rows + EGM_COL_BLOCK - 1) / EGM_COL_BLOCK, lin_task, &j);
}

/* Several products of the same x (q, k, v; gate, up) as one parallel loop
 * over all their blocks: one fork-join instead of k, and the blocks of a
 * narrow matrix (k and v of a GQA model: 1-2 blocks) no longer leave a
 * thread idle. Each block computes what it computed alone. Falls back to
 * one loop per matrix when they take x in different formats (the
 * prepared x has one buffer). */
#define STAGE_MANY 3
typedef struct {
    lin_job j[STAGE_MANY];
    int first[STAGE_MANY + 1]; /* block index where matrix i starts */
    int k;
} many_job;

static void many_task(void *v, int t, int thread) {
    const many_job *m = v;
    int i = 0;
    while (t >= m->first[i + 1]) i++;
    lin_task((void *)&m->j[i], t - m->first[i], thread);
}

static void stage_mul_many(egm_stage *s, int k, const egm_mat *const *W, float *const *y,
                           const int *ldy, int M, const float *x, int ldx) {
    int same = 1;
    for (int i = 1; i < k; i++)
        same &= egm_mat_act_format(W[i], M) == egm_mat_act_format(W[0], M) &&
                W[i]->cols == W[0]->cols;
    stage_qx qx = stage_prep(s, W[0], M, x, ldx, NULL);
    if (!same) {
        for (int i = 0; i < k; i++) {
            if (i) qx = stage_prep(s, W[i], M, x, ldx, &qx);
            stage_mul_qx(s, W[i], M, x, ldx, qx, y[i], ldy[i], 0);
        }
        return;
    }
    many_job m = {.k = k};
    for (int i = 0; i < k; i++) {
        m.j[i] = (lin_job){y[i], x, qx.q, W[i], M, ldx, ldy[i], 0};
        m.first[i + 1] = m.first[i] + (W[i]->rows + EGM_COL_BLOCK - 1) / EGM_COL_BLOCK;
    }
    egm_pool_run(s->pool, m.first[k], many_task, &m);
}

/* Row-wise work (RMSNorm, SwiGLU) over the pool in chunks of rows: every
 * row computes what it computed alone, so the bits do not change. Few
 * rows stay on the calling thread (a fork-join costs more than they do). */
#define ROW_CHUNK_ELEMS 4096
typedef struct {
    float *out, *g;
    const float *x, *w, *u;
    int n, D, rows_per_task;
    float eps;
} rows_job;

/* Task t's rows [*r0, return value) */
static int task_rows(const rows_job *j, int t, int *r0) {
    *r0 = t * j->rows_per_task;
    return *r0 + j->rows_per_task < j->n ? *r0 + j->rows_per_task : j->n;
}

static void norm_task(void *v, int t, int thread) {
    (void)thread;
    const rows_job *j = v;
    int r0, r1 = task_rows(j, t, &r0);
    for (int r = r0; r < r1; r++)
        egm_rmsnorm(j->out + (long)r * j->D, j->x + (long)r * j->D, j->w, j->D, j->eps);
}

static void swiglu_task(void *v, int t, int thread) {
    (void)thread;
    const rows_job *j = v;
    int r0, r1 = task_rows(j, t, &r0);
    egm_swiglu(j->g + (long)r0 * j->D, j->u + (long)r0 * j->D, (r1 - r0) * j->D);
}

static void stage_rows(egm_stage *s, egm_pool_fn fn, rows_job *j) {
    j->rows_per_task = (ROW_CHUNK_ELEMS + j->D - 1) / j->D;
    int tasks = (j->n + j->rows_per_task - 1) / j->rows_per_task;
    egm_pool_run(tasks > 1 ? s->pool : NULL, tasks, fn, j);
}

/* out[r] = RMSNorm(x[r]) * w for n rows of D */
static void stage_rmsnorm(egm_stage *s, float *out, const float *x, const float *w, int n, int D,
                          float eps) {
    rows_job j = {.out = out, .x = x, .w = w, .n = n, .D = D, .eps = eps};
    stage_rows(s, norm_task, &j);
}

/* g[r] = silu(g[r]) * u[r] for n rows of F */
static void stage_swiglu(egm_stage *s, float *g, const float *u, int n, int F) {
    rows_job j = {.g = g, .u = u, .n = n, .D = F};
    stage_rows(s, swiglu_task, &j);
}

static void stage_mat_mul(egm_stage *s, const egm_mat *W, int M, const float *x, int ldx,
                          float *y, int ldy, int acc) {
    stage_mul_qx(s, W, M, x, ldx, stage_prep(s, W, M, x, ldx, NULL), y, ldy, acc);
}

static void stage_linear(egm_stage *s, float *y, const float *x, const egm_mat *W, int M) {
    stage_mat_mul(s, W, M, x, W->cols, y, W->rows, 0);
}

static void stage_linear_acc(egm_stage *s, float *y, const float *x, const egm_mat *W, int M) {
    stage_mat_mul(s, W, M, x, W->cols, y, W->rows, 1);
}

int egm_stage_init(egm_stage *s, const egm_model *m, int n_slots,
                   size_t kv_budget, int block_tokens, int kv_bf16,
                   egm_err *e) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->c = &m->cfg;
    s->n_slots = n_slots;
    int nl = m->hi - m->lo;
    if (egm_kv_init(&s->kv, nl, egm_config_kv_elems(s->c),
                    s->c->arch == EGM_EGMLA, block_tokens, kv_bf16, kv_budget))
        return egm_fail(e, "KV budget of %zu bytes does not hold one block of %d "
                        "tokens (%zu bytes per token on layers %d-%d)", kv_budget,
                        block_tokens,
                        egm_kv_bytes_per_token(nl, egm_config_kv_elems(s->c),
                                               s->c->arch == EGM_EGMLA, kv_bf16),
                        m->lo, m->hi - 1);
    s->seqs = calloc((size_t)n_slots, sizeof *s->seqs);
    if (!s->seqs) return egm_fail(e, "out of memory for %d sequence slots", n_slots);
    /* --threads reaches every command as the BLAS thread count */
    int nt = openblas_get_num_threads();
    s->pool = egm_pool_new(nt > EGM_STAGE_MAX_THREADS ? EGM_STAGE_MAX_THREADS : nt);
    if (!s->pool) return egm_fail(e, "out of memory for a pool of %d threads", nt);
    return 0;
}

void egm_stage_free(egm_stage *s) {
    if (!s->seqs && !s->kv.pool) return;
    for (int i = 0; i < s->n_slots; i++) egm_kv_release(&s->kv, &s->seqs[i]);
    free(s->seqs);
    egm_kv_free(&s->kv);
    egm_buf *bufs[] = {&s->xn, &s->q, &s->qa, &s->qlat, &s->olat, &s->kvrow, &s->attn, &s->ffn_g,
                       &s->ffn_u, &s->qx};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]->p);
    for (int t = 0; t < EGM_STAGE_MAX_THREADS; t++) {
        egm_seg_scratch *sc = &s->scr[t];
        free(sc->seg.p), free(sc->z.p), free(sc->gate.p), free(sc->emb.p), free(sc->att.p);
        free(sc->ids.p), free(sc->cb.p);
    }
    if (s->eg_up_bf16)
        for (int l = 0; l < s->m->hi - s->m->lo; l++) free(s->eg_up_bf16[l]);
    free(s->eg_up_bf16);
    free(s->seg_start);
    free(s->tasks), free(s->groups), free(s->part.p), free(s->ml.p);
    egm_pool_free(s->pool);
    memset(s, 0, sizeof *s);
}

int egm_stage_set_attn_bf16(egm_stage *s, int on, egm_err *e) {
    s->attn_bf16 = on;
    int nl = s->m->hi - s->m->lo, du = s->c->eg_latent_dim, dc = s->c->kv_lora_rank;
    if (!on || s->c->arch != EGM_EGMLA || s->eg_up_bf16) return 0;
    s->eg_up_bf16 = calloc((size_t)nl, sizeof *s->eg_up_bf16);
    if (!s->eg_up_bf16) return egm_fail(e, "out of memory for bf16 copies of eg_up_proj");
    for (int l = 0; l < nl; l++) {
        const float *up = s->m->layers[l].eg_up;
        if (!up) continue;
        s->eg_up_bf16[l] = malloc(sizeof(uint16_t) * (size_t)du * dc);
        if (!s->eg_up_bf16[l]) return egm_fail(e, "out of memory for bf16 copies of eg_up_proj");
        egm_bf16_round_rows(s->eg_up_bf16[l], dc, up, dc, du, dc);
    }
    return 0;
}

int egm_stage_reserve(egm_stage *s, int slot, int n_tokens) {
    return egm_kv_reserve(&s->kv, &s->seqs[slot], n_tokens);
}

void egm_stage_release(egm_stage *s, int slot) {
    egm_kv_release(&s->kv, &s->seqs[slot]);
}

int egm_stage_fork(egm_stage *s, int slot, int from, int n) {
    if (from < 0 || from >= s->n_slots) return -1;
    return egm_kv_copy_prefix(&s->kv, &s->seqs[from], &s->seqs[slot], n);
}

/* Cuts the batch into segments: runs of rows of one sequence. Segment k is
 * rows [seg_start[k], seg_start[k+1]). */
static void find_segments(egm_stage *s, const egm_mbatch *b) {
    if (s->cap_segs < b->n + 1) {
        free(s->seg_start);
        s->cap_segs = b->n + 1;
        s->seg_start = malloc(sizeof(int) * (size_t)s->cap_segs);
        if (!s->seg_start) abort();
    }
    s->n_segs = 0;
    for (int r = 0; r < b->n; r++)
        if (r == 0 || b->slot[r] != b->slot[r - 1]) s->seg_start[s->n_segs++] = r;
    s->seg_start[s->n_segs] = b->n;
}

/* Attention is split into tasks that depend only on the batch, never on
 * the thread count (so neither do the bits): each segment's rows in groups
 * of ROWS_PER_TASK, each group against ranges of POS_PER_TASK positions up
 * to its last row's (the causal triangle). A group's first range writes
 * the final rows; the others write partial states that merge_task folds
 * in, in order. Decode (one row per segment) splits a long context over
 * threads; prefill splits rows and positions. */
#define ROWS_PER_TASK 32
#define POS_PER_TASK (2 * EGM_ZBLOCK)
#define MHA_ROWS_PER_TASK 128

struct egm_attn_task {
    int seg, t0, t1;    /* rows of the segment */
    int j0, j1;         /* positions */
    int part;           /* -1: the group's first range; else its partial slot */
    int g0, g1;         /* MHA: its KV head groups (all, or a split) */
};

/* MHA: a batch of fewer sequences than this splits each row group's KV
 * head groups into up to MHA_HEAD_SPLITS tasks, so that one sequence's
 * attention uses every thread, at decode and in a prompt (a 128-token
 * prompt is one row group); heads are independent: no partial states,
 * and each task gathers only its heads' keys and values. */
#define MHA_SPLIT_BELOW 8
#define MHA_HEAD_SPLITS 4

struct egm_attn_group {
    int first, n;       /* its tasks */
};

static void add_task(egm_stage *s, struct egm_attn_task t) {
    if (s->n_tasks == s->cap_tasks) {
        s->cap_tasks = s->cap_tasks ? 2 * s->cap_tasks : 64;
        s->tasks = realloc(s->tasks, sizeof *s->tasks * (size_t)s->cap_tasks);
        if (!s->tasks) abort();
    }
    s->tasks[s->n_tasks++] = t;
}

static void add_group(egm_stage *s, int first, int n) {
    if (s->n_groups == s->cap_groups) {
        s->cap_groups = s->cap_groups ? 2 * s->cap_groups : 64;
        s->groups = realloc(s->groups, sizeof *s->groups * (size_t)s->cap_groups);
        if (!s->groups) abort();
    }
    s->groups[s->n_groups++] = (struct egm_attn_group){first, n};
}

static void plan_attention(egm_stage *s, const egm_mbatch *b) {
    s->n_tasks = s->n_groups = s->n_parts = 0;
    int rows = s->c->arch == EGM_LLAMA ? MHA_ROWS_PER_TASK : ROWS_PER_TASK;
    for (int k = 0; k < s->n_segs; k++) {
        int r = s->seg_start[k], T = s->seg_start[k + 1] - r, pos0 = b->pos[r];
        for (int t0 = 0; t0 < T; t0 += rows) {
            int t1 = T - t0 < rows ? T : t0 + rows, last = pos0 + t1, first = s->n_tasks;
            /* MHA: one task per group, over all its positions */
            int step = s->c->arch == EGM_LLAMA ? last : POS_PER_TASK, Hkv = s->c->num_kv_heads;
            int splits = 1;
            if (s->c->arch == EGM_LLAMA && !s->attn_bf16 && s->n_segs < MHA_SPLIT_BELOW)
                splits = Hkv < MHA_HEAD_SPLITS ? Hkv : MHA_HEAD_SPLITS;
            for (int i = 0; i < splits; i++)
                for (int j0 = 0; j0 < last; j0 += step)
                    add_task(s, (struct egm_attn_task){k, t0, t1, j0,
                                                       j0 + step < last ? j0 + step : last,
                                                       j0 ? s->n_parts++ : -1, Hkv * i / splits,
                                                       Hkv * (i + 1) / splits});
            add_group(s, first, s->n_tasks - first);
        }
    }
}

static void attend_llama(egm_stage *s, int li, const egm_mbatch *b, float *out);
static void attend_latent(egm_stage *s, const egm_layer *w, int li, const egm_mbatch *b,
                          float *out);

static void attention_llama(egm_stage *s, const egm_layer *w, int li,
                            const egm_mbatch *b, const float *xn, float *out) {
    const egm_config *c = s->c;
    int n = b->n, H = c->num_heads, Hkv = c->num_kv_heads, dh = c->head_dim;
    int E = 2 * Hkv * dh;
    float *q = egm_buf_need(&s->q, (long)n * H * dh);
    float *kv = egm_buf_need(&s->kvrow, (long)n * E);
    int D = c->hidden_size;
    /* q, k and v take the same xn: rounded once, one parallel loop */
    const egm_mat *W[3] = {&w->wq, &w->wk, &w->wv};
    float *y[3] = {q, kv, kv + Hkv * dh};
    int ldy[3] = {H * dh, E, E};
    stage_mul_many(s, 3, W, y, ldy, n, xn, D);
    for (int r = 0; r < n; r++) {
        for (int h = 0; h < H; h++)
            egm_rope(q + ((long)r * H + h) * dh, dh, b->pos[r], c->rope_theta, c->rope_interleave);
        for (int h = 0; h < Hkv; h++)
            egm_rope(kv + (long)r * E + h * dh, dh, b->pos[r], c->rope_theta, c->rope_interleave);
        egm_kv_write(&s->kv, &s->seqs[b->slot[r]], li, b->pos[r], kv + (long)r * E);
    }
    attend_llama(s, li, b, out);
}

typedef struct {
    egm_stage *s;
    int li;
    const egm_mbatch *b;
    float *out;
    const float *q;
    float scale;
} mha_job;

/* Where egm_attn_mha_rows reads a sequence's cache: a KV block's rows
 * where they lie (fp32), or the asked-for columns converted into the
 * thread's scratch, at their offsets in the row (bf16). */
typedef struct {
    const egm_kv_pool *kv;
    const egm_kv_seq *sq;
    int li;
    egm_seg_scratch *sc;
} kv_run_ctx;

static const float *kv_run(void *v, int j0, int j1, int c0, int c1, int *n) {
    kv_run_ctx *x = v;
    int B = x->kv->block_tokens, E = x->kv->elems;
    *n = B - j0 % B < j1 - j0 ? B - j0 % B : j1 - j0;
    if (!x->kv->bf16) return egm_kv_row(x->kv, x->sq, x->li, j0);
    float *rows = egm_buf_need(&x->sc->seg, (long)*n * E);
    if (2 * (c1 - c0) >= E) { /* a whole key or value half: the run in one sweep, */
        egm_kv_gather(x->kv, x->sq, x->li, j0, j0 + *n, rows); /* measured faster than halves */
        return rows;
    }
    egm_kv_gather_cols(x->kv, x->sq, x->li, j0, j0 + *n, c0, c1, rows);
    return rows;
}

/* A group of a segment's MHA rows, on thread `thread`'s scratch: its
 * rows attend positions up to the last one's. */
static void mha_task(void *v, int i, int thread) {
    const mha_job *j = v;
    egm_stage *s = j->s;
    const egm_config *c = s->c;
    const struct egm_attn_task *a = &s->tasks[i];
    int H = c->num_heads, Hkv = c->num_kv_heads, dh = c->head_dim, E = 2 * Hkv * dh;
    egm_seg_scratch *sc = &s->scr[thread];
    int r = s->seg_start[a->seg] + a->t0, T = a->t1 - a->t0, pos0 = j->b->pos[r], P = pos0 + T;
    int h0 = a->g0 * (H / Hkv), h1 = a->g1 * (H / Hkv); /* the task's query heads */
    const egm_kv_seq *sq = &s->seqs[j->b->slot[r]];
    if (T <= EGM_ATTN_ROWS_MAX_T && !s->attn_bf16) { /* decode: the cache read in place */
        kv_run_ctx rc = {&s->kv, sq, j->li, sc};
        float *S = egm_buf_need(&sc->att, egm_attn_rows_scratch(T, H, P));
        egm_attn_mha_rows(j->out + (long)r * H * dh, H * dh, j->q + (long)r * H * dh, H * dh, T,
                          pos0, kv_run, &rc, E, H, Hkv, dh, h0, h1, j->scale, S);
        return;
    }
    float *seg = egm_buf_need(&sc->seg, (long)P * E);
    if (a->g0 == 0 && a->g1 == Hkv)
        egm_kv_gather(&s->kv, sq, j->li, 0, P, seg);
    else /* a split: only its heads' keys and values */
        for (int half = 0; half < 2; half++)
            egm_kv_gather_cols(&s->kv, sq, j->li, 0, P, (half * Hkv + a->g0) * dh,
                               (half * Hkv + a->g1) * dh, seg);
    if (s->attn_bf16) {
        float *S = egm_buf_need(&sc->att, egm_attn_mha_scratch_bf16(T, P, H, Hkv, dh));
        egm_attn_mha_bf16(j->out + (long)r * H * dh, H * dh, j->q + (long)r * H * dh, H * dh, T,
                          pos0, seg, E, H, Hkv, dh, j->scale, S);
        return;
    }
    float *S = egm_buf_need(&sc->att, egm_attn_mha_scratch(T, P));
    egm_attn_mha_heads(j->out + (long)r * H * dh, H * dh, j->q + (long)r * H * dh, H * dh, T,
                       pos0, seg, E, H, Hkv, dh, h0, h1, j->scale, S);
}

/* The per-sequence part of MHA: groups of each segment's rows of s->q
 * against their cached keys and values, one group per task. */
static void attend_llama(egm_stage *s, int li, const egm_mbatch *b, float *out) {
    const float *q = s->q.p;
    int dh = s->c->head_dim;
    float scale = 1.0f / sqrtf((float)dh);
    mha_job j = {s, li, b, out, q, scale};
    egm_pool_run(s->pool, s->n_tasks, mha_task, &j);
}

/* Where the blocked attention kernel gets a sequence's latents from. */
typedef struct {
    egm_stage *s;
    egm_seg_scratch *sc;
    const egm_layer *w;
    const egm_kv_seq *sq;
    int li;
} zrows_ctx;

/* z for positions [j0, j1) of one EG-MLA sequence: Norm(up(c) * gate(id)),
 * with the rope keys beside it in the gathered cache rows. A block is small
 * enough (EGM_ZBLOCK rows of d_u floats) to stay in cache from the up
 * GEMM through the gate, the norm and both attention GEMMs. */
static void egmla_rows(void *vctx, int j0, int j1, const float **zo, int *ldz,
                       const float **kpe, int *ldk) {
    zrows_ctx *x = vctx;
    egm_stage *s = x->s;
    egm_seg_scratch *sc = x->sc;
    const egm_layer *w = x->w;
    const egm_config *c = s->c;
    int n = j1 - j0, dc = c->kv_lora_rank, dr = c->qk_rope_head_dim, E = dc + dr;
    int du = c->eg_latent_dim, de = c->eg_embed_dim;
    float *cache = egm_buf_need(&sc->seg, (long)n * E);
    egm_kv_gather(&s->kv, x->sq, x->li, j0, j1, cache);
    int *ids = (int *)egm_buf_need(&sc->ids, n);
    egm_kv_gather_ids(&s->kv, x->sq, j0, j1, ids);
    /* rows of [z | kpe], so that scores are one product per row */
    int K = du + dr;
    float *Z = egm_buf_need(&sc->z, (long)n * K);
    const uint16_t *upb = s->attn_bf16 ? s->eg_up_bf16[x->li] : NULL;
    if (upb) { /* --attn-dtype bf16: c and W_up rounded, fp32 accumulation */
        uint16_t *cb = (uint16_t *)egm_buf_need(&sc->cb, ((long)n * dc + 1) / 2);
        egm_bf16_round_rows(cb, dc, cache, E, n, dc);
        egm_gemm_bf16_nt(n, du, dc, 1.0f, cb, dc, upb, dc, 0.0f, Z, K);
    } else if (w->eg_up)
        egm_gemm(0, 1, n, du, dc, 1.0f, cache, E, w->eg_up, dc, 0.0f, Z, K);
    else
        for (int j = 0; j < n; j++) memcpy(Z + (long)j * K, cache + (long)j * E, sizeof(float) * du);
    for (int j = 0; j < n; j++)
        memcpy(Z + (long)j * K + du, cache + (long)j * E + dc, sizeof(float) * dr);
    /* gate rows: straight from the precomputed table G, or eg_embed rows
     * through eg_gate_proj as one GEMM over the block */
    const float *G = w->eg_G;
    float *Gs = NULL;
    if (!G) {
        const egm_tensor *t = w->eg_embed;
        size_t row = (size_t)de * egm_dtype_size(t->dtype);
        float *Em = egm_buf_need(&sc->emb, (long)n * de);
        Gs = egm_buf_need(&sc->gate, (long)n * du);
        for (int j = 0; j < n; j++) egm_to_f32(Em + (long)j * de, t->data + row * ids[j], t->dtype, de);
        egm_linear(Gs, Em, w->eg_gate, n, du, de);
    }
    for (int j = 0; j < n; j++) {
        /* table rows are scattered (one per token id): ask for a few ahead */
        if (G && j + 4 < n)
            for (int k = 0; k < du; k += 16) __builtin_prefetch(G + (long)ids[j + 4] * du + k);
        egm_gate_norm(Z + (long)j * K, G ? G + (long)ids[j] * du : Gs + (long)j * du,
                      w->eg_norm_w, c->eg_norm_rms ? NULL : w->eg_norm_b, du, c->eg_norm_eps,
                      c->eg_norm_rms);
    }
    *zo = Z;
    *kpe = Z + du;
    *ldz = *ldk = K;
}

/* MLA's latents are the cache rows themselves: [z | kpe] already. */
static void mla_rows(void *vctx, int j0, int j1, const float **zo, int *ldz,
                     const float **kpe, int *ldk) {
    zrows_ctx *x = vctx;
    const egm_config *c = x->s->c;
    int dc = c->kv_lora_rank, E = dc + c->qk_rope_head_dim;
    float *cache = egm_buf_need(&x->sc->seg, (long)(j1 - j0) * E);
    egm_kv_gather(&x->s->kv, x->sq, x->li, j0, j1, cache);
    *zo = cache;
    *kpe = cache + dc;
    *ldz = *ldk = E;
}

static void attention_latent(egm_stage *s, const egm_layer *w, int li,
                             const egm_mbatch *b, const float *xn, float *out) {
    const egm_config *c = s->c;
    int n = b->n, H = c->num_heads;
    int dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim;
    int dq = dn + dr, dc = c->kv_lora_rank, E = dc + dr;
    int eg = c->arch == EGM_EGMLA;

    float *q = egm_buf_need(&s->q, (long)n * H * dq);
    float *kv = egm_buf_need(&s->kvrow, (long)n * E);
    /* q (or its low-rank q_a) and kv_a take the same xn: one parallel loop */
    int rq = c->q_lora_rank;
    float *qa = w->q_proj.data ? NULL : egm_buf_need(&s->qa, (long)n * rq);
    const egm_mat *W[2] = {w->q_proj.data ? &w->q_proj : &w->q_a, &w->kv_a};
    float *y[2] = {qa ? qa : q, kv};
    int ldy[2] = {W[0]->rows, E};
    stage_mul_many(s, 2, W, y, ldy, n, xn, c->hidden_size);
    if (qa) {
        for (int r = 0; r < n; r++)
            egm_rmsnorm(qa + (long)r * rq, qa + (long)r * rq, w->q_a_norm, rq, EGM_LATENT_NORM_EPS);
        stage_linear(s, q, qa, &w->q_b, n);
    }
    for (int r = 0; r < n; r++) {
        for (int h = 0; h < H; h++)
            egm_rope(q + ((long)r * H + h) * dq + dn, dr, b->pos[r], c->rope_theta, c->rope_interleave);
        float *row = kv + (long)r * E;
        egm_rope(row + dc, dr, b->pos[r], c->rope_theta, c->rope_interleave);
        if (!eg) egm_rmsnorm(row, row, w->kv_a_norm, dc, EGM_LATENT_NORM_EPS);
        const egm_kv_seq *sq = &s->seqs[b->slot[r]];
        egm_kv_write(&s->kv, sq, li, b->pos[r], row);
        if (eg && li == 0) egm_kv_set_id(&s->kv, sq, b->pos[r], b->token[r]);
    }
    attend_latent(s, w, li, b, out);
}

/* Absorbed latent attention of every row of s->q: kv_b_proj's W_UK over
 * all rows, each segment against its cached latents, W_UV over all rows. */
typedef struct {
    egm_stage *s;
    const egm_layer *w;
    int li;
    const egm_mbatch *b;
    float *out, *qlat, *olat;
    const float *q;
} latent_job;

/* kv_b_proj's W_UK for one head, over every row. */
static void query_task(void *v, int h, int thread) {
    (void)thread;
    const latent_job *j = v;
    const egm_config *c = j->s->c;
    egm_latent_query_head(j->qlat, j->q, c->num_heads * (c->qk_nope_head_dim + c->qk_rope_head_dim),
                          j->b->n, j->w->kv_b, c->num_heads, c->qk_nope_head_dim,
                          c->qk_rope_head_dim, c->v_head_dim, egm_config_latent_dim(c), h);
}

/* kv_b_proj's W_UV for one head, over every row. */
static void output_task(void *v, int h, int thread) {
    (void)thread;
    const latent_job *j = v;
    const egm_config *c = j->s->c;
    egm_latent_output_head(j->out, c->num_heads * c->v_head_dim, j->olat, j->b->n, j->w->kv_b,
                           c->num_heads, c->qk_nope_head_dim, c->v_head_dim,
                           egm_config_latent_dim(c), h);
}

/* Floats of one partial state: olat, m (floats) and l (doubles) of
 * ROWS_PER_TASK rows x H heads. */
static long part_floats(const egm_config *c) {
    long R = (long)ROWS_PER_TASK * c->num_heads;
    return R * (egm_config_latent_dim(c) + 1 + 2) + 2;
}

/* Where a task's state goes: the final olat rows and m, l of the batch for
 * a group's first range, its partial slot otherwise. */
static void task_state(const latent_job *j, const struct egm_attn_task *a, float **o, float **m,
                       double **l) {
    egm_stage *s = j->s;
    const egm_config *c = s->c;
    long H = c->num_heads, du = egm_config_latent_dim(c), n = j->b->n;
    long r = s->seg_start[a->seg] + a->t0;
    if (a->part < 0) {
        *o = j->olat + r * H * du;
        *m = (float *)s->ml.p + r * H;
        *l = (double *)((float *)s->ml.p + 2 * n * H) + r * H; /* after m, 8-byte aligned */
    } else {
        float *p = (float *)s->part.p + a->part * part_floats(c);
        long R0 = (long)ROWS_PER_TASK * H;
        *o = p;
        *m = p + R0 * du;
        *l = (double *)(p + R0 * (du + 1) + ((R0 * (du + 1)) & 1));
    }
}

/* A group of a segment's rows against a range of its cached latents. */
static void range_task(void *v, int i, int thread) {
    const latent_job *j = v;
    egm_stage *s = j->s;
    const egm_config *c = s->c;
    const struct egm_attn_task *a = &s->tasks[i];
    int H = c->num_heads, dn = c->qk_nope_head_dim, dr = c->qk_rope_head_dim, dq = dn + dr;
    int du = egm_config_latent_dim(c), T = a->t1 - a->t0;
    int r = s->seg_start[a->seg] + a->t0;
    egm_seg_scratch *sc = &s->scr[thread];
    zrows_ctx zc = {s, sc, j->w, &s->seqs[j->b->slot[r]], j->li};
    int bf = s->attn_bf16;
    float *S = egm_buf_need(&sc->att, (bf ? egm_attn_latent_range_scratch_bf16
                                          : egm_attn_latent_range_scratch)(T, H, EGM_ZBLOCK, du, dr));
    float *o, *m;
    double *l;
    task_state(j, a, &o, &m, &l);
    (bf ? egm_latent_attend_range_bf16 : egm_latent_attend_range)(
        o, m, l, j->qlat + (long)r * H * du, j->q + (long)r * H * dq, H * dq, T, j->b->pos[r],
        a->j0, a->j1, c->arch == EGM_EGMLA ? egmla_rows : mla_rows, &zc, H, dn, dr, du,
        1.0f / sqrtf((float)dq), EGM_ZBLOCK, S);
}

/* A group's later ranges folded into its first, in order, then divided. */
static void merge_task(void *v, int g, int thread) {
    (void)thread;
    const latent_job *j = v;
    const egm_stage *s = j->s;
    const struct egm_attn_group *gr = &s->groups[g];
    const struct egm_attn_task *a = &s->tasks[gr->first];
    int R = (a->t1 - a->t0) * s->c->num_heads, du = egm_config_latent_dim(s->c);
    float *o, *m, *o2, *m2;
    double *l, *l2;
    task_state(j, a, &o, &m, &l);
    for (int k = 1; k < gr->n; k++) {
        task_state(j, &s->tasks[gr->first + k], &o2, &m2, &l2);
        egm_latent_merge(o, m, l, o2, m2, l2, R, du);
    }
    egm_latent_finish(o, l, R, du);
}

/* Absorbed latent attention of every row of s->q: kv_b_proj's W_UK over
 * all rows (a head per task), groups of rows against ranges of their
 * segment's cached latents (plan_attention), the ranges merged, W_UV over
 * all rows (a head per task). */
static void attend_latent(egm_stage *s, const egm_layer *w, int li, const egm_mbatch *b,
                          float *out) {
    const egm_config *c = s->c;
    long n = b->n, H = c->num_heads, du = egm_config_latent_dim(c);
    latent_job j = {s, w, li, b, out, egm_buf_need(&s->qlat, n * H * du),
                    egm_buf_need(&s->olat, n * H * du), s->q.p};
    egm_buf_need(&s->ml, 4 * n * H + 2);
    egm_buf_need(&s->part, (long)s->n_parts * part_floats(c) + 1);
    egm_pool_run(s->pool, (int)H, query_task, &j);
    egm_pool_run(s->pool, s->n_tasks, range_task, &j);
    egm_pool_run(s->pool, s->n_groups, merge_task, &j);
    egm_pool_run(s->pool, (int)H, output_task, &j);
}

void egm_stage_forward(egm_stage *s, const egm_mbatch *b, float *x) {
    const egm_config *c = s->c;
    const egm_model *m = s->m;
    int n = b->n, D = c->hidden_size, F = c->intermediate_size;
    if (m->embed.data)
        for (int r = 0; r < n; r++) egm_mat_row(&m->embed, b->token[r], x + (long)r * D);

    find_segments(s, b);
    plan_attention(s, b);
    int blas = blas_single();
    float *xn = egm_buf_need(&s->xn, (long)n * D);
    int attn_w = c->arch == EGM_LLAMA ? c->num_heads * c->head_dim
                                      : c->num_heads * c->v_head_dim;
    float *att = egm_buf_need(&s->attn, (long)n * attn_w);
    for (int l = m->lo; l < m->hi; l++) {
        const egm_layer *w = &m->layers[l - m->lo];
        stage_rmsnorm(s, xn, x, w->attn_norm, n, D, c->rms_norm_eps);
        if (c->arch == EGM_LLAMA) {
            attention_llama(s, w, l - m->lo, b, xn, att);
            stage_linear_acc(s, x, att, &w->wo, n);
        } else {
            attention_latent(s, w, l - m->lo, b, xn, att);
            stage_linear_acc(s, x, att, &w->o_proj, n);
        }
        /* SwiGLU FFN, F wide */
        stage_rmsnorm(s, xn, x, w->ffn_norm, n, D, c->rms_norm_eps);
        float *g = egm_buf_need(&s->ffn_g, (long)n * F);
        float *u = egm_buf_need(&s->ffn_u, (long)n * F);
        const egm_mat *W[2] = {&w->w_gate, &w->w_up};
        float *y[2] = {g, u};
        int ldy[2] = {F, F};
        stage_mul_many(s, 2, W, y, ldy, n, xn, D);
        stage_swiglu(s, g, u, n, F);
        stage_linear_acc(s, x, g, &w->w_down, n);
    }
    blas_restore(blas);
}

void egm_stage_attention_replay(egm_stage *s, const egm_mbatch *b) {
    const egm_config *c = s->c;
    const egm_model *m = s->m;
    find_segments(s, b);
    plan_attention(s, b);
    int blas = blas_single();
    float *att = s->attn.p;
    for (int l = m->lo; l < m->hi; l++) {
        if (c->arch == EGM_LLAMA)
            attend_llama(s, l - m->lo, b, att);
        else
            attend_latent(s, &m->layers[l - m->lo], l - m->lo, b, att);
    }
    blas_restore(blas);
}

void egm_stage_logits(egm_stage *s, const float *x, const int *rows,
                      int n_rows, float *logits) {
    const egm_config *c = s->c;
    int D = c->hidden_size;
    float *xn = egm_buf_need(&s->xn, (long)n_rows * D);
    for (int k = 0; k < n_rows; k++)
        egm_rmsnorm(xn + (long)k * D, x + (long)rows[k] * D, s->m->norm, D, c->rms_norm_eps);
    int blas = blas_single();
    stage_linear(s, logits, xn, &s->m->lm_head, n_rows);
    blas_restore(blas);
}
