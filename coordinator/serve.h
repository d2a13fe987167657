/* serve.h - egmla serve: an OpenAI-compatible HTTP front on the scheduler.
 *
 * HTTP threads (libmicrohttpd, one thread per connection) turn each API
 * request into a JSONL request line, exactly what generate reads, and queue
 * it; the scheduler, on the main thread (the only one that talks MPI),
 * takes lines from the queue through its feed (egm_sched_feed) and hands
 * back sampled tokens and the result line generate would write. The
 * connection's thread waits on its request's eventfd and the client's
 * socket at once: a result, a token to stream or a client that went away
 * wakes it without polling, and a vanished client cancels its request,
 * which the scheduler drops (slot and KV) before its next micro-batch.
 *
 *   serve_feed.c     the queue, live requests, the feed callbacks, counters
 *   serve_http.c     the daemon, routing, bodies, waiting, SSE streaming
 *   serve_api.c      OpenAI JSON in, request lines; result lines, OpenAI JSON out
 *   serve_metrics.c  GET /metrics (Prometheus text)
 *   cmd_serve.c      the command line, signals */
#ifndef EGM_SERVE_H
#define EGM_SERVE_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>

#include "coordinator/sched.h"

/* Outcomes counted in egmla_requests_total. */
enum { SRV_OK, SRV_BAD_REQUEST, SRV_REFUSED, SRV_CANCELLED, SRV_QUEUE_FULL,
       SRV_TOO_LARGE, SRV_NOT_FOUND, SRV_UNAUTHORIZED, SRV_FAILED, SRV_N_OUTCOMES };
extern const char *const srv_outcome_names[SRV_N_OUTCOMES];

#define SRV_HIST_N 14
typedef struct {
    double le[SRV_HIST_N];            /* bucket upper bounds, seconds */
    long count[SRV_HIST_N];           /* non-cumulative */
    long n;
    double sum;
} srv_hist;

typedef struct srv_req srv_req;
struct srv_req {
    long id;
    srv_req *next_q;          /* in the queue */
    char *line;               /* the request line, until the scheduler takes it */
    int efd;                  /* eventfd: a token or the result came */
    int refs;                 /* the connection and the scheduler side */
    int queued, taken, done, cancelled;
    int n_gen;                /* tokens sampled so far */
    char *text;               /* their settled text (stop strings held back) */
    size_t text_len, text_cap;
    json_t *lps;              /* log-probs asked: one entry per token, as in result lines */
    char *result;             /* the result line; NULL and done: cancelled */
    int ok;
    double t_enq, t_first, t_last;
};

typedef struct srv srv;
struct srv {
    egm_sched_feed feed;      /* first: the scheduler's view of us */
    /* options */
    const char *host, *api_key, *model_name;
    int port, max_queue;
    long max_body;
    double stall_s;           /* pipeline silent this long with work: /health fails */
    /* the HTTP side (serve_http.c, set by cmd_serve.c): started once the
     * pipeline is up, stopped after the drain; the feed does not call it
     * itself, so the files stay a stack (http uses feed, not back) */
    int (*on_ready)(srv *s, egm_err *e);
    void (*on_stop)(srv *s);
    struct MHD_Daemon *daemon;
    int bound_port;
    /* the model, once the pipeline is up (from feed.start) */
    const egm_tokenizer *tok;
    int vocab, ctx_len;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* the scheduler waits here when idle */
    srv_req *q_head, *q_tail;
    int q_len;
    srv_req **live;           /* requests the scheduler has or will have */
    int n_live, cap_live;
    long next_id;
    int started, draining, stopped;
    int in_progress;          /* HTTP requests not yet fully answered */
    pthread_cond_t answered;  /* in_progress went down */
    char *taken_line;         /* the line last handed to the scheduler */
    /* metrics */
    long outcomes[SRV_N_OUTCOMES];
    long prompt_tokens, generated_tokens;
    srv_hist ttft, itl;
    egm_sched_load load;
    double t_load, t_start;
};

/* serve_feed.c */
int srv_init(srv *s);
void srv_destroy(srv *s);
double srv_now(void);
long srv_new_id(srv *s);
/* Queues request `id` (from srv_new_id) for `line` (taken over); NULL with
 * *full = 1 when the queue is full or the server is draining. The caller
 * holds one reference (srv_release). */
srv_req *srv_submit(srv *s, long id, char *line, int *full);
void srv_cancel(srv *s, srv_req *r);
void srv_release(srv *s, srv_req *r);
void srv_count(srv *s, int outcome);
void srv_drain(srv *s);
/* An HTTP request began (+1) or its answer went out (-1). */
void srv_in_progress(srv *s, int d);
void srv_hist_init(srv_hist *h, const double *le);
void srv_hist_add(srv_hist *h, double v);

/* serve_http.c */
int srv_http_start(srv *s, egm_err *e);
void srv_http_stop(srv *s);

/* serve_api.c: what an API request asks for */
typedef struct {
    int chat, stream, echo;
    char *line;               /* the request line (malloc'd) */
    char *prompt_text;        /* echo: the prompt as text (malloc'd) or NULL */
    json_t *stop;             /* borrowed from the body: strings held back while streaming */
} srv_call;
/* 0, or an HTTP status (400, 404) with an OpenAI error object in *err. */
int srv_api_parse(srv *s, int chat, json_t *body, long id, srv_call *c, json_t **err);
void srv_call_free(srv_call *c);
json_t *srv_api_error(const char *msg, const char *type, const char *param, const char *code);
/* The response for a finished request (its result line), or an error
 * object and *status. */
json_t *srv_api_response(srv *s, const srv_call *c, long id, const char *result, int *status);
/* A streaming chunk: text delta and/or finish_reason (NULL: none yet);
 * lps: log-prob entries of its tokens (result-line shape) or NULL. */
json_t *srv_api_chunk(srv *s, const srv_call *c, long id, const char *delta, size_t n,
                      const char *finish, int first, const json_t *lps, size_t offset);
json_t *srv_api_usage(const json_t *result);

/* serve_metrics.c */
char *srv_metrics_text(srv *s);

#endif
