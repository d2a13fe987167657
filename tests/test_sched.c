/* test_sched.c - the scheduler (coordinator/sched.c) against a fake pipe.
 *
 * The fake stage keeps the books a real one keeps (KV blocks per slot,
 * positions computed per slot) and fails the test when the scheduler breaks
 * a rule of pipe.h: more KV reserved than the budget, a slot admitted twice
 * or released when free, a position computed out of order or twice, a fork
 * from positions its source has not computed. Its "model" answers from slot
 * and position only (token 10 + (slot + pos) % 50, log-prob -(pos + 1) / 2),
 * so results do not depend on how rows were batched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coordinator/sched.h"

#define MAXS 16
#define MAXQ 64
#define MAXROWS 1024

typedef struct {
    egm_pipe base;
    int reserved[MAXS];       /* blocks held by each slot */
    int fed[MAXS];            /* positions computed: the next one expected */
    int n_tokens[MAXS];       /* the admitted sequence's tokens */
    int used, max_used;       /* blocks reserved now, and at most */
    int submits, fail_at;     /* the submit that fails (-1: none) */
    int mixed;                /* batches with decode and prefill rows */
    int max_prefill_rows;     /* prefill rows in one batch, at most */
    int forks, fork_tokens;
    char events[4096];        /* "A<slot> " admitted, "R<slot> " released */
    egm_head_out q[MAXQ][MAXROWS / 4];
    int qn[MAXQ], qh, ql;
} fake_pipe;

static void event(fake_pipe *f, char kind, int slot) {
    size_t n = strlen(f->events);
    snprintf(f->events + n, sizeof f->events - n, "%c%d ", kind, slot);
}

static int fake_submit(egm_pipe *p, const egm_submit *s, egm_err *e) {
    fake_pipe *f = (fake_pipe *)p;
    int bt = p->caps.block_tokens;
    if (f->submits++ == f->fail_at) return egm_fail(e, "layers 2-3: injected stage failure");
    for (int i = 0; i < s->n_releases; i++) {
        int slot = s->releases[i];
        assert_true(slot >= 0 && slot < p->caps.n_slots);
        assert_true(f->reserved[slot] > 0);   /* released once, after its admission */
        f->used -= f->reserved[slot];
        f->reserved[slot] = f->fed[slot] = 0;
        event(f, 'R', slot);
    }
    for (int i = 0; i < s->n_admits; i++) {
        const egm_admit *a = &s->admits[i];
        assert_true(a->slot >= 0 && a->slot < p->caps.n_slots);
        assert_int_equal(f->reserved[a->slot], 0); /* a free slot */
        assert_int_equal(a->n_reserve % bt, 0);
        f->reserved[a->slot] = a->n_reserve / bt;
        f->used += a->n_reserve / bt;
        assert_true(f->used <= p->caps.kv_blocks); /* never past the budget */
        if (f->used > f->max_used) f->max_used = f->used;
        f->n_tokens[a->slot] = a->n_tokens;
        if (a->fork_n > 0) {
            /* the source's positions are computed, and it is still there */
            assert_true(f->reserved[a->fork_slot] > 0);
            assert_true(f->fed[a->fork_slot] >= a->fork_n);
            f->fed[a->slot] = a->fork_n;
            f->forks++;
            f->fork_tokens += a->fork_n;
        }
        event(f, 'A', a->slot);
    }
    assert_true(f->ql < MAXQ);
    int qi = (f->qh + f->ql++) % MAXQ, k = 0, decode = 0, prefill = 0;
    for (int r = 0; r < s->b.n; r++) {
        int slot = s->b.slot[r], pos = s->b.pos[r];
        assert_true(f->reserved[slot] > 0);
        assert_int_equal(pos, f->fed[slot]);     /* in order, each once */
        assert_true(pos < f->reserved[slot] * bt);
        f->fed[slot]++;
        if (pos < f->n_tokens[slot]) prefill++;
        else decode++;
        if (!s->want[r]) continue;
        egm_head_out *o = &f->q[qi][k++];
        o->slot = slot;
        o->pos = pos;
        o->token = 10 + (slot + pos) % 50;
        o->logprob = -(float)(pos + 1) / 2;
        o->greedy = 1;
        o->has_target = pos + 1 < f->n_tokens[slot];
    }
    f->qn[qi] = k;
    if (decode && prefill) f->mixed++;
    if (prefill > f->max_prefill_rows) f->max_prefill_rows = prefill;
    return 0;
}

static int fake_collect(egm_pipe *p, egm_result *r, egm_err *e) {
    fake_pipe *f = (fake_pipe *)p;
    if (!f->ql) return egm_fail(e, "collect with nothing in flight");
    r->outs = f->q[f->qh];
    r->n_outs = f->qn[f->qh];
    r->logits = NULL;
    f->qh = (f->qh + 1) % MAXQ;
    f->ql--;
    return 0;
}

static void fake_close(egm_pipe *p) { (void)p; }

static fake_pipe *fake_new(int kv_blocks, int block_tokens, int n_slots) {
    fake_pipe *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base.caps = (egm_pipe_caps){kv_blocks, block_tokens, n_slots};
    f->base.submit = fake_submit;
    f->base.collect = fake_collect;
    f->base.close = fake_close;
    f->fail_at = -1;
    return f;
}

static egm_config config(void) {
    egm_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 64;
    c.max_position_embeddings = 256;
    c.bos_token_id = -1;
    c.eos_token_ids[0] = 2;
    c.n_eos = 1;
    return c;
}

static egm_sched_opts opts(int mode, int micro_batches, int max_seqs, int max_rows) {
    egm_sched_opts o;
    memset(&o, 0, sizeof o);
    o.mode = mode;
    o.micro_batches = micro_batches;
    o.max_seqs = max_seqs;
    o.max_rows = max_rows;
    egm_request_defaults(&o.defaults);
    o.defaults.sampling.temperature = 0;
    o.dump_fd = -1;
    o.total = -1;
    return o;
}

/* Runs the scheduler over `input` (JSONL text); the output lines go to
 * *out (malloc'd, may be NULL with on_score). Returns egm_sched_run's. */
static int run(const egm_sched_opts *o, fake_pipe *f, const char *input, char **out,
               egm_sched_stats *st, egm_err *e) {
    egm_config c = config();
    FILE *in = tmpfile();
    assert_non_null(in);
    fputs(input, in);
    rewind(in);
    egm_jsonl *j = egm_jsonl_from_file(in, "in.jsonl");
    char path[] = "/tmp/test_sched_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    egm_err oe;
    egm_out *w = o->on_score ? NULL : egm_out_open(path, &oe);
    int rc = egm_sched_run(o, &c, NULL, &f->base, j, w, st, e);
    if (w) assert_int_equal(egm_out_close(w, &oe), 0);
    egm_jsonl_close(j);
    fclose(in);
    if (out) {
        FILE *r = fopen(path, "r");
        assert_non_null(r);
        *out = calloc(1, 1 << 16);
        size_t n = fread(*out, 1, (1 << 16) - 1, r);
        (*out)[n] = 0;
        fclose(r);
    }
    unlink(path);
    return rc;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* Six requests of 3 blocks each (5 prompt + 6 new tokens, 4 per block) and
 * a budget of 7 blocks: at most two run at once although 8 slots are
 * free; every one finishes with its 6 tokens. A request larger than the
 * whole budget gets an error record, and the others still run. */
static void test_admission_under_kv_pressure(void **state) {
    (void)state;
    fake_pipe *f = fake_new(7, 4, 8);
    egm_sched_opts o = opts(EGM_MODE_GENERATE, 2, 8, 64);
    o.defaults.max_new_tokens = 6;
    char in[4096] = "";
    for (int i = 0; i < 6; i++)
        snprintf(in + strlen(in), sizeof in - strlen(in),
                 "{\"id\": %d, \"tokens\": [1, 3, 4, 5, 6]}\n", i);
    strcat(in, "{\"id\": \"big\", \"tokens\": [1, 3, 4, 5, 6], \"max_new_tokens\": 40}\n");
    egm_sched_stats st;
    egm_err e;
    char *out = NULL;
    assert_int_equal(run(&o, f, in, &out, &st, &e), 0);
    assert_int_equal(st.requests, 7);
    assert_int_equal(st.ok, 6);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.generated_tokens, 36);
    assert_int_equal(f->max_used, 6);          /* two sequences of 3 blocks */
    assert_int_equal(count_lines(out), 7);
    assert_non_null(strstr(out, "\"big\""));
    assert_non_null(strstr(out, "raise --kv-budget"));
    free(out);
    free(f);
}

/* One slot: each finished sequence's slot is released in the same submit
 * that admits the next request into it, release first. */
static void test_release_order(void **state) {
    (void)state;
    fake_pipe *f = fake_new(64, 4, 1);
    egm_sched_opts o = opts(EGM_MODE_GENERATE, 1, 1, 64);
    o.defaults.max_new_tokens = 3;
    egm_sched_stats st;
    egm_err e;
    char *out = NULL;
    assert_int_equal(run(&o, f, "{\"id\": 1, \"tokens\": [1, 3]}\n"
                                "{\"id\": 2, \"tokens\": [1, 4]}\n"
                                "{\"id\": 3, \"tokens\": [1, 5]}\n",
                         &out, &st, &e), 0);
    assert_string_equal(f->events, "A0 R0 A0 R0 A0 ");
    assert_int_equal(st.ok, 3);
    /* results in input order: one sequence at a time */
    const char *a = strstr(out, "{\"id\":1,"), *b = strstr(out, "{\"id\":2,"), *c = strstr(out, "{\"id\":3,");
    assert_true(a && b && c && a < b && b < c);
    free(out);
    free(f);
}

/* Chunked prefill: a long prompt is fed 4 rows at a time while a short
 * one decodes in the same micro-batches; the tokens generated are the
 * same as with one big chunk. */
static void test_chunked_prefill_mixed_with_decode(void **state) {
    (void)state;
    const char *in = "{\"id\": \"short\", \"tokens\": [1, 3]}\n"
                     "{\"id\": \"long\", \"tokens\": [1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15]}\n";
    egm_sched_stats st;
    egm_err e;
    char *chunked = NULL, *whole = NULL;
    fake_pipe *f = fake_new(64, 4, 4);
    egm_sched_opts o = opts(EGM_MODE_GENERATE, 1, 4, 4);
    o.defaults.max_new_tokens = 8;
    assert_int_equal(run(&o, f, in, &chunked, &st, &e), 0);
    assert_int_equal(st.ok, 2);
    assert_true(f->mixed > 0);
    assert_true(f->max_prefill_rows <= 4);
    free(f);
    f = fake_new(64, 4, 4);
    o.max_rows = 512;
    assert_int_equal(run(&o, f, in, &whole, &st, &e), 0);
    assert_int_equal(f->mixed, 0);
    assert_int_equal(f->max_prefill_rows, 15);
    /* the lines may finish in another order; each is the same */
    char *l1 = strstr(chunked, "{\"id\":\"long\""), *l2 = strstr(whole, "{\"id\":\"long\"");
    assert_true(l1 && l2);
    assert_memory_equal(l1, l2, strcspn(l2, "\n"));
    free(chunked);
    free(whole);
    free(f);
}

/* ---- prefix sharing in internal score jobs */

typedef struct {
    int calls;
    float lp[8][32];
    int n[8];
} scores;

static void on_score(void *ctx, const char *id_json, const float *lp, const unsigned char *greedy,
                     int n, const char *error) {
    scores *sc = ctx;
    (void)greedy;
    assert_null(error);
    int id = atoi(id_json);
    assert_true(id >= 0 && id < 8 && n <= 32);
    memcpy(sc->lp[id], lp, sizeof(float) * (size_t)n);
    sc->n[id] = n;
    sc->calls++;
}

/* every request's first 8 tokens are context */
static int score_from(void *ctx, const char *id_json) {
    (void)ctx;
    (void)id_json;
    return 8;
}

/* Three choices after one 8-token context: the later ones start from a
 * copy of the first one's cached context (the fake checks it was computed
 * first), and every continuation log-prob is the stage's. */
static void test_fork_of_cached_prefix(void **state) {
    (void)state;
    fake_pipe *f = fake_new(64, 4, 4);
    egm_sched_opts o = opts(EGM_MODE_SCORE, 1, 4, 64);
    scores sc;
    memset(&sc, 0, sizeof sc);
    o.on_score = on_score;
    o.score_from = score_from;
    o.score_ctx = &sc;
    const char *in = "{\"id\": 0, \"tokens\": [1, 3, 4, 5, 6, 7, 8, 9, 20, 21]}\n"
                     "{\"id\": 1, \"tokens\": [1, 3, 4, 5, 6, 7, 8, 9, 30]}\n"
                     "{\"id\": 2, \"tokens\": [1, 3, 4, 5, 6, 7, 8, 9, 40, 41, 42]}\n";
    egm_sched_stats st;
    egm_err e;
    assert_int_equal(run(&o, f, in, NULL, &st, &e), 0);
    assert_int_equal(sc.calls, 3);
    assert_true(f->forks >= 2);
    assert_int_equal(st.shared_tokens, f->fork_tokens);
    assert_true(st.shared_tokens >= 2 * 7);
    int len[3] = {10, 9, 11};
    for (int id = 0; id < 3; id++) {
        assert_int_equal(sc.n[id], len[id] - 1);
        for (int i = 8; i < len[id] - 1; i++) /* from score_from */ assert_true(sc.lp[id][i] == -(float)(i + 1) / 2);
    }
    free(f);
}

/* A stage that fails mid-job: the run stops with its message, and the
 * results finished before it stay in the output. */
static void test_failing_stage(void **state) {
    (void)state;
    fake_pipe *f = fake_new(64, 4, 1);
    f->fail_at = 3;
    egm_sched_opts o = opts(EGM_MODE_GENERATE, 1, 1, 64);
    o.defaults.max_new_tokens = 1;
    egm_sched_stats st;
    egm_err e;
    char *out = NULL;
    assert_int_equal(run(&o, f, "{\"id\": 1, \"tokens\": [1, 3]}\n{\"id\": 2, \"tokens\": [1, 4]}\n"
                                "{\"id\": 3, \"tokens\": [1, 5]}\n{\"id\": 4, \"tokens\": [1, 6]}\n",
                         &out, &st, &e), -1);
    assert_non_null(strstr(e.msg, "injected stage failure"));
    assert_int_equal(st.ok, 3);
    assert_int_equal(count_lines(out), 3);
    free(out);
    free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admission_under_kv_pressure),
        cmocka_unit_test(test_release_order),
        cmocka_unit_test(test_chunked_prefill_mixed_with_decode),
        cmocka_unit_test(test_fork_of_cached_prefix),
        cmocka_unit_test(test_failing_stage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
