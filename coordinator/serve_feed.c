/* serve_feed.c - the queue between HTTP threads and the scheduler, and the
 * scheduler's feed callbacks (see serve.h). One mutex guards it all: the
 * scheduler holds it for a few pointer moves per token, never while it
 * computes. */
#include "coordinator/serve.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

const char *const srv_outcome_names[SRV_N_OUTCOMES] = {
    "ok", "bad_request", "refused", "cancelled", "queue_full",
    "too_large", "not_found", "unauthorized", "failed"};

double srv_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void wake(srv_req *r) {
    uint64_t one = 1;
    ssize_t n = write(r->efd, &one, sizeof one);
    (void)n; /* a full counter still wakes the reader */
}

static void req_free(srv_req *r) {
    if (r->efd >= 0) close(r->efd);
    free(r->line);
    free(r->text);
    json_decref(r->lps);
    free(r->result);
    free(r);
}

/* With s->mu held: one reference fewer; the last frees. */
static void unref(srv_req *r) {
    if (--r->refs == 0) req_free(r);
}

static void live_remove(srv *s, srv_req *r) {
    for (int i = 0; i < s->n_live; i++)
        if (s->live[i] == r) {
            s->live[i] = s->live[--s->n_live];
            unref(r);
            return;
        }
}

/* The live request the scheduler names by its id line ("7"). */
static srv_req *find(srv *s, const char *id_json) {
    if (!id_json) return NULL;
    long id = strtol(id_json, NULL, 10);
    for (int i = 0; i < s->n_live; i++)
        if (s->live[i]->id == id) return s->live[i];
    return NULL;
}

/* With s->mu held: the request is over; its connection hears of it. */
static void complete(srv *s, srv_req *r, char *result, int ok) {
    if (r->done) {
        free(result);
        return;
    }
    r->done = 1;
    r->result = result;
    r->ok = ok;
    wake(r);
    live_remove(s, r);
}

long srv_new_id(srv *s) {
    pthread_mutex_lock(&s->mu);
    long id = s->next_id++;
    pthread_mutex_unlock(&s->mu);
    return id;
}

srv_req *srv_submit(srv *s, long id, char *line, int *full) {
    *full = 0;
    srv_req *r = calloc(1, sizeof *r);
    if (!r) {
        free(line);
        return NULL;
    }
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->line = line;
    pthread_mutex_lock(&s->mu);
    if (r->efd < 0 || s->draining || s->stopped || !s->started || s->q_len >= s->max_queue) {
        *full = r->efd >= 0;
        pthread_mutex_unlock(&s->mu);
        req_free(r);
        return NULL;
    }
    if (s->n_live == s->cap_live) {
        int cap = s->cap_live ? 2 * s->cap_live : 64;
        srv_req **l = realloc(s->live, sizeof *l * (size_t)cap);
        if (!l) {
            pthread_mutex_unlock(&s->mu);
            req_free(r);
            return NULL;
        }
        s->live = l;
        s->cap_live = cap;
    }
    r->id = id;
    r->refs = 2; /* the caller's and the live list's */
    r->queued = 1;
    r->t_enq = srv_now();
    s->live[s->n_live++] = r;
    if (s->q_tail) s->q_tail->next_q = r;
    else s->q_head = r;
    s->q_tail = r;
    s->q_len++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return r;
}

void srv_cancel(srv *s, srv_req *r) {
    pthread_mutex_lock(&s->mu);
    if (!r->done) r->cancelled = 1;
    /* a request still queued is answered at once; one the scheduler has
     * is dropped before its next micro-batch (feed_cancelled) */
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void srv_release(srv *s, srv_req *r) {
    pthread_mutex_lock(&s->mu);
    unref(r);
    pthread_mutex_unlock(&s->mu);
}

void srv_count(srv *s, int outcome) {
    pthread_mutex_lock(&s->mu);
    s->outcomes[outcome]++;
    pthread_mutex_unlock(&s->mu);
}

void srv_drain(srv *s) {
    pthread_mutex_lock(&s->mu);
    s->draining = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void srv_in_progress(srv *s, int d) {
    pthread_mutex_lock(&s->mu);
    s->in_progress += d;
    if (d < 0) pthread_cond_broadcast(&s->answered);
    pthread_mutex_unlock(&s->mu);
}

/* ---- latency histograms (GET /metrics prints them) ---- */

void srv_hist_init(srv_hist *h, const double *le) {
    memset(h, 0, sizeof *h);
    memcpy(h->le, le, sizeof h->le);
}

void srv_hist_add(srv_hist *h, double v) {
    int i = 0;
    while (i < SRV_HIST_N - 1 && v > h->le[i]) i++;
    h->count[i]++;
    h->n++;
    h->sum += v;
}

/* ---- the scheduler's side ---- */

static int feed_start(egm_sched_feed *f, const egm_config *c, const egm_tokenizer *tok,
                      const egm_pipe_caps *caps, egm_err *e) {
    srv *s = (srv *)f;
    (void)caps;
    s->tok = tok;
    s->vocab = c->vocab_size;
    s->ctx_len = c->max_position_embeddings;
    if (s->on_ready && s->on_ready(s, e)) return -1;
    pthread_mutex_lock(&s->mu);
    s->started = 1;
    s->t_load = srv_now();
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int feed_next(egm_sched_feed *f, int wait, const char **line, size_t *len, long *lineno,
                     egm_err *e) {
    srv *s = (srv *)f;
    (void)e;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        /* a request cancelled while queued never reaches the pipeline */
        while (s->q_head && s->q_head->cancelled) {
            srv_req *r = s->q_head;
            s->q_head = r->next_q;
            if (!s->q_head) s->q_tail = NULL;
            s->q_len--;
            r->queued = 0;
            s->outcomes[SRV_CANCELLED]++;
            complete(s, r, NULL, 0);
        }
        if (s->q_head || s->draining || !wait) break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    srv_req *r = s->q_head;
    if (!r) {
        int draining = s->draining;
        pthread_mutex_unlock(&s->mu);
        return draining ? 0 : 2;
    }
    s->q_head = r->next_q;
    if (!s->q_head) s->q_tail = NULL;
    s->q_len--;
    r->queued = 0;
    r->taken = 1;
    free(s->taken_line);
    s->taken_line = r->line;
    r->line = NULL;
    *line = s->taken_line;
    *len = strlen(s->taken_line);
    *lineno = r->id;
    pthread_mutex_unlock(&s->mu);
    return 1;
}

/* A token's text alone, for log-prob entries (specials as their text). */
static json_t *token_text(srv *s, int id) {
    char *t = s->tok ? egm_tok_decode(s->tok, &id, 1, 0) : NULL;
    json_t *j = t ? json_string(t) : NULL;
    free(t);
    return j ? j : json_string("");
}

static json_t *lp_entry(srv *s, const egm_token_event *ev) {
    json_t *top = json_array();
    for (int i = 0; i < ev->n_top; i++)
        json_array_append_new(top, json_pack("{s:i, s:o, s:f}", "token", ev->top_id[i], "text",
                                             token_text(s, ev->top_id[i]), "logprob",
                                             (double)ev->top_lp[i]));
    return json_pack("{s:i, s:o, s:f, s:o}", "token", ev->token, "text", token_text(s, ev->token),
                     "logprob", (double)ev->logprob, "top", top);
}

static void append_text(srv_req *r, const char *t, size_t n) {
    if (!n) return;
    if (r->text_len + n + 1 > r->text_cap) {
        size_t cap = (r->text_len + n + 1) * 2;
        char *b = realloc(r->text, cap);
        if (!b) return; /* the final result line still has all of it */
        r->text = b;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, t, n);
    r->text_len += n;
    r->text[r->text_len] = 0;
}

/* Called by the scheduler for each sampled token and once at the end. */
static void feed_token(void *f, const char *id_json, const egm_token_event *ev) {
    srv *s = f;
    double t = srv_now();
    json_t *lp = ev->token >= 0 && ev->n_top >= 0 ? lp_entry(s, ev) : NULL;
    pthread_mutex_lock(&s->mu);
    srv_req *r = find(s, id_json);
    if (r && !r->done) {
        append_text(r, ev->text, ev->text_len);
        if (lp) {
            if (!r->lps) r->lps = json_array();
            json_array_append(r->lps, lp);
        }
    }
    if (r && !r->done && ev->token >= 0) {
        int n = ++r->n_gen;
        if (n == 1) {
            r->t_first = t;
            srv_hist_add(&s->ttft, t - r->t_enq);
        } else {
            srv_hist_add(&s->itl, t - r->t_last);
        }
        r->t_last = t;
    }
    if (r && !r->done) wake(r);
    pthread_mutex_unlock(&s->mu);
    json_decref(lp);
}

/* Prompt and generated tokens of a result line, for the counters. */
static void count_tokens(srv *s, const char *line) {
    json_t *o = json_loads(line, 0, NULL);
    json_t *u = o ? srv_api_usage(o) : NULL;
    if (u) {
        s->prompt_tokens += json_integer_value(json_object_get(u, "prompt_tokens"));
        s->generated_tokens += json_integer_value(json_object_get(u, "completion_tokens"));
    }
    json_decref(u);
    json_decref(o);
}

static void feed_result(egm_sched_feed *f, const char *id_json, const char *line, int ok) {
    srv *s = (srv *)f;
    pthread_mutex_lock(&s->mu);
    srv_req *r = find(s, id_json);
    if (!line) s->outcomes[SRV_CANCELLED]++;
    else if (!ok) s->outcomes[SRV_REFUSED]++;
    else {
        s->outcomes[SRV_OK]++;
        count_tokens(s, line);
    }
    if (r) complete(s, r, line ? strdup(line) : NULL, ok);
    pthread_mutex_unlock(&s->mu);
}

static int feed_cancelled(egm_sched_feed *f, const char *id_json) {
    srv *s = (srv *)f;
    pthread_mutex_lock(&s->mu);
    srv_req *r = find(s, id_json);
    int c = r && r->cancelled;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static void feed_load(egm_sched_feed *f, const egm_sched_load *l) {
    srv *s = (srv *)f;
    pthread_mutex_lock(&s->mu);
    s->load = *l;
    s->t_load = srv_now();
    pthread_mutex_unlock(&s->mu);
}

/* The scheduler is done (drained, or failed): every request still open is
 * answered, then the daemon stops; the tokenizer goes after this. */
static void feed_stop(egm_sched_feed *f) {
    srv *s = (srv *)f;
    pthread_mutex_lock(&s->mu);
    s->stopped = 1;
    while (s->n_live > 0) {
        srv_req *r = s->live[0];
        s->outcomes[SRV_FAILED]++;
        complete(s, r, NULL, 0);
    }
    s->q_head = s->q_tail = NULL;
    s->q_len = 0;
    /* every answer goes out before the daemon closes the connections
     * (new requests meanwhile get 503 at once) */
    while (s->in_progress > 0) pthread_cond_wait(&s->answered, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (s->on_stop) s->on_stop(s);
    s->tok = NULL;
}

int srv_init(srv *s) {
    static const double ttft_le[SRV_HIST_N] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                               1, 2.5, 5, 10, 25, 60, 1e300};
    static const double itl_le[SRV_HIST_N] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                              0.25, 0.5, 1, 2.5, 5, 10, 1e300};
    s->feed = (egm_sched_feed){.origin = "request", .start = feed_start, .next = feed_next,
                               .token = feed_token, .result = feed_result,
                               .cancelled = feed_cancelled, .load = feed_load,
                               .stop = feed_stop};
    srv_hist_init(&s->ttft, ttft_le);
    srv_hist_init(&s->itl, itl_le);
    s->next_id = 1;
    s->t_start = srv_now();
    if (pthread_mutex_init(&s->mu, NULL)) return -1;
    if (pthread_cond_init(&s->cv, NULL) || pthread_cond_init(&s->answered, NULL)) return -1;
    return 0;
}

void srv_destroy(srv *s) {
    for (int i = 0; i < s->n_live; i++) unref(s->live[i]);
    free(s->live);
    free(s->taken_line);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->answered);
}
