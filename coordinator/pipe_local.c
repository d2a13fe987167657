/* pipe_local.c - the in-process pipeline: one stage with every layer.
 *
 * submit() computes at once and queues the result; collect() hands results
 * back in submission order, exactly as the MPI pipeline would. */
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "coordinator/pipe.h"

#define MAX_INFLIGHT 64

typedef struct {
    egm_head_out *outs;
    int n, cap;
    float *logits;
    long logits_cap;
} result_buf;

typedef struct {
    egm_pipe base;
    egm_stage stage;
    egm_head head;
    egm_buf x;
    result_buf q[MAX_INFLIGHT];
    int q_head, q_len;
    double t_open, busy;       /* for busy_poll: clock at open, seconds in forward + head */
} local_pipe;

static int local_submit(egm_pipe *p, const egm_submit *s, egm_err *e) {
    local_pipe *lp = (local_pipe *)p;
    if (lp->q_len == MAX_INFLIGHT) return egm_fail(e, "more than %d micro-batches in flight", MAX_INFLIGHT);
    if (egm_stage_apply(&lp->stage, &lp->head, s->releases, s->n_releases, s->admits,
                        s->n_admits, e))
        return -1;
    result_buf *rb = &lp->q[(lp->q_head + lp->q_len) % MAX_INFLIGHT];
    lp->q_len++;
    rb->n = 0;
    if (s->b.n == 0) return 0;
    int D = lp->stage.c->hidden_size, V = lp->stage.c->vocab_size;
    float *x = egm_buf_need(&lp->x, (long)s->b.n * D);
    double t0 = egm_now();
    egm_stage_forward(&lp->stage, &s->b, x);
    if (rb->cap < s->b.n) {
        free(rb->outs);
        rb->cap = s->b.n;
        rb->outs = malloc(sizeof *rb->outs * (size_t)rb->cap);
        if (!rb->outs) return egm_fail(e, "out of memory");
    }
    rb->n = egm_head_run(&lp->head, &lp->stage, &s->b, s->want, x, rb->outs);
    lp->busy += egm_now() - t0;
    if (s->keep_logits && rb->n) {
        long need = (long)rb->n * V;
        if (rb->logits_cap < need) {
            free(rb->logits);
            rb->logits = malloc(sizeof(float) * (size_t)need);
            if (!rb->logits) return egm_fail(e, "out of memory for logits");
            rb->logits_cap = need;
        }
        memcpy(rb->logits, egm_head_last_logits(&lp->head), sizeof(float) * (size_t)need);
    }
    return 0;
}

static int local_collect(egm_pipe *p, egm_result *r, egm_err *e) {
    local_pipe *lp = (local_pipe *)p;
    if (!lp->q_len) return egm_fail(e, "collect with nothing in flight");
    result_buf *rb = &lp->q[lp->q_head];
    lp->q_head = (lp->q_head + 1) % MAX_INFLIGHT;
    lp->q_len--;
    r->outs = rb->outs;
    r->n_outs = rb->n;
    r->logits = rb->logits;
    return 0;
}

/* The one stage computes inside submit: its counters are always current. */
static int local_busy_ask(egm_pipe *p, egm_err *e) {
    (void)p;
    (void)e;
    return 0;
}

static int local_busy_poll(egm_pipe *p, int wait, egm_stage_busy *out, egm_err *e) {
    local_pipe *lp = (local_pipe *)p;
    (void)wait;
    (void)e;
    double t = egm_now();
    *out = (egm_stage_busy){lp->stage.m->lo, lp->stage.m->hi, lp->busy, t - lp->t_open, t};
    return 1;
}

static void local_close(egm_pipe *p) {
    local_pipe *lp = (local_pipe *)p;
    egm_stage_free(&lp->stage);
    egm_head_free(&lp->head);
    free(lp->x.p);
    for (int i = 0; i < MAX_INFLIGHT; i++) {
        free(lp->q[i].outs);
        free(lp->q[i].logits);
    }
    free(lp);
}

int egm_pipe_local_open(const egm_model *m, const egm_pipe_opts *o,
                        egm_pipe **out, egm_err *e) {
    local_pipe *lp = calloc(1, sizeof *lp);
    if (!lp) return egm_fail(e, "out of memory");
    if (egm_stage_init(&lp->stage, m, o->n_slots, o->kv_budget, o->block_tokens,
                       o->kv_bf16, e) ||
        egm_stage_set_attn_bf16(&lp->stage, o->attn_bf16, e) ||
        egm_head_init(&lp->head, o->n_slots, m->cfg.vocab_size, e)) {
        local_close(&lp->base);
        return -1;
    }
    lp->base.caps.kv_blocks = lp->stage.kv.n_blocks;
    lp->base.caps.block_tokens = o->block_tokens;
    lp->base.caps.n_slots = o->n_slots;
    lp->base.submit = local_submit;
    lp->base.collect = local_collect;
    lp->base.close = local_close;
    lp->base.n_stages = 1;
    lp->base.busy_ask = local_busy_ask;
    lp->base.busy_poll = local_busy_poll;
    lp->t_open = egm_now();
    *out = &lp->base;
    return 0;
}
