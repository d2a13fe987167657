/* serve_http.c - the HTTP side of egmla serve (libmicrohttpd, a thread per
 * connection; see serve.h). A connection's thread blocks only in poll(2)
 * on its request's eventfd and the client's socket, so a client that hangs
 * up is noticed at once, even while its request waits or streams. */
#include "coordinator/serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    char *body;
    size_t len, cap;
    int too_large;
} conn_t;

/* A streaming response's state, owned by the response. */
typedef struct {
    srv *s;
    srv_req *r;
    srv_call call;
    int fd;                   /* the client's socket */
    size_t sent;              /* text bytes sent */
    size_t lp_sent;           /* log-prob entries sent */
    char *out;                /* SSE bytes not yet handed to the daemon */
    size_t out_len, out_off;
    int finished, first;
} stream_t;

static enum MHD_Result reply(struct MHD_Connection *c, int status, const char *type,
                             char *text, int retry_after) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", type);
    if (retry_after) MHD_add_response_header(resp, "Retry-After", "1");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, int status, json_t *j,
                                  int retry_after) {
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!text) return MHD_NO;
    return reply(c, status, "application/json", text, retry_after);
}

static enum MHD_Result reply_error(srv *s, struct MHD_Connection *c, int status, int outcome,
                                   const char *msg, const char *type, const char *param,
                                   const char *code) {
    srv_count(s, outcome);
    return reply_json(c, status, srv_api_error(msg, type, param, code), status == 503);
}

static int client_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Sleeps until the request has news (1) or the client hung up (0). */
static int wait_news(srv_req *r, int fd) {
    struct pollfd p[2] = {{r->efd, POLLIN, 0}, {fd, POLLRDHUP, 0}};
    for (;;) {
        int n = poll(p, fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return 1;
        if (p[0].revents & POLLIN) {
            uint64_t v;
            ssize_t k = read(r->efd, &v, sizeof v);
            (void)k;
            return 1;
        }
        if (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) return 0;
    }
}

/* Waits until the request is done, or has a token when `first_token`.
 * 0 when the client went away (the request is cancelled). */
static int wait_for(srv *s, srv_req *r, int fd, int first_token) {
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int ready = r->done || (first_token && r->n_gen > 0);
        pthread_mutex_unlock(&s->mu);
        if (ready) return 1;
        if (!wait_news(r, fd)) {
            srv_cancel(s, r);
            return 0;
        }
    }
}

/* ---- streaming (SSE) ---- */

static int emit(stream_t *t, const char *data, size_t n) {
    size_t need = t->out_len + n + 8;
    char *o = realloc(t->out, need);
    if (!o) return -1;
    t->out = o;
    memcpy(t->out + t->out_len, data, n);
    t->out_len += n;
    return 0;
}

static int emit_json(stream_t *t, json_t *j) {
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!text) return 0; /* a delta that is not text yet waits for the next */
    int rc = emit(t, "data: ", 6) || emit(t, text, strlen(text)) || emit(t, "\n\n", 2);
    free(text);
    return rc;
}

/* Turns the request's news into SSE bytes: the text the scheduler has
 * settled since the last chunk (a possible stop string and half UTF-8
 * characters are held back there) with its tokens' log-probs; at the end
 * the finish reason and usage. 0 when there was nothing new. */
static int stream_produce(stream_t *t) {
    srv *s = t->s;
    srv_req *r = t->r;
    pthread_mutex_lock(&s->mu);
    int done = r->done;
    size_t upto = r->text_len;
    char *text = upto > t->sent ? strndup(r->text, upto) : NULL;
    json_t *lps = NULL;
    size_t n_lps = json_array_size(r->lps);
    if (n_lps > t->lp_sent) {
        lps = json_array();
        for (size_t i = t->lp_sent; i < n_lps; i++)
            json_array_append(lps, json_array_get(r->lps, i));
    }
    pthread_mutex_unlock(&s->mu);
    size_t before = t->out_len;
    int rc = 0;
    if (text || lps) {
        size_t sent = t->sent;
        json_t *j = srv_api_chunk(s, &t->call, r->id, text ? text + sent : "",
                                  text ? upto - sent : 0, NULL, t->first, lps, sent);
        if (j) {
            t->first = 0;
            t->sent = text ? upto : sent;
            t->lp_sent = n_lps;
            rc = emit_json(t, j);
        }
    }
    free(text);
    json_decref(lps);
    if (rc) return -1;
    if (!done) return t->out_len > before;
    /* the result line has the final text (cut at a stop string) */
    json_t *res = r->result ? json_loads(r->result, 0, NULL) : NULL;
    if (res && !json_object_get(res, "error")) {
        const char *reason = json_string_value(json_object_get(res, "finish_reason"));
        const char *all = json_string_value(json_object_get(res, "text"));
        size_t n = all ? strlen(all) : 0;
        json_t *fin = srv_api_chunk(s, &t->call, r->id, all && n > t->sent ? all + t->sent : "",
                                    n > t->sent ? n - t->sent : 0, reason ? reason : "stop",
                                    t->first, NULL, t->sent);
        json_t *u = srv_api_usage(res);
        if (fin && u) json_object_set_new(fin, "usage", u);
        else json_decref(u);
        rc = emit_json(t, fin);
    } else {
        const char *m = json_string_value(json_object_get(res, "error"));
        rc = emit_json(t, srv_api_error(m ? m : "the server stopped before the request finished",
                                        "server_error", NULL, NULL));
    }
    json_decref(res);
    t->finished = 1;
    return rc || emit(t, "data: [DONE]\n\n", 14) ? -1 : 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_t *t = cls;
    (void)pos;
    for (;;) {
        if (t->out_off < t->out_len) {
            size_t n = t->out_len - t->out_off;
            if (n > max) n = max;
            memcpy(buf, t->out + t->out_off, n);
            t->out_off += n;
            if (t->out_off == t->out_len) t->out_off = t->out_len = 0;
            return (ssize_t)n;
        }
        if (t->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        int rc = stream_produce(t);
        if (rc < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (rc > 0) continue;
        if (!wait_news(t->r, t->fd)) {
            srv_cancel(t->s, t->r);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

/* The response is gone (sent, or the client vanished mid-stream). */
static void stream_free(void *cls) {
    stream_t *t = cls;
    srv_cancel(t->s, t->r); /* a no-op when it finished */
    srv_release(t->s, t->r);
    srv_call_free(&t->call);
    free(t->out);
    free(t);
}

static enum MHD_Result start_stream(srv *s, struct MHD_Connection *c, srv_req *r,
                                    srv_call *call, int fd) {
    stream_t *t = calloc(1, sizeof *t);
    if (!t) return MHD_NO;
    *t = (stream_t){.s = s, .r = r, .call = *call, .fd = fd, .first = 1};
    memset(call, 0, sizeof *call);
    if (t->call.echo && t->call.prompt_text) {
        /* the prompt goes first, as a chunk of its own */
        json_t *j = srv_api_chunk(s, &t->call, r->id, t->call.prompt_text,
                                  strlen(t->call.prompt_text), NULL, 1, NULL, 0);
        t->first = 0;
        emit_json(t, j);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, t, stream_free);
    if (!resp) {
        stream_free(t);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return rc;
}

/* ---- POST /v1/completions, /v1/chat/completions ---- */

static enum MHD_Result post_generate(srv *s, struct MHD_Connection *c, conn_t *k, int chat) {
    json_error_t je;
    json_t *body = json_loadb(k->body ? k->body : "", k->len, 0, &je);
    if (!body || !json_is_object(body)) {
        char msg[300];
        if (body) snprintf(msg, sizeof msg, "the request body must be a JSON object");
        else snprintf(msg, sizeof msg, "the request body is not valid JSON: %s (line %d, column %d)",
                      je.text, je.line, je.column);
        json_decref(body);
        return reply_error(s, c, 400, SRV_BAD_REQUEST, msg, "invalid_request_error", NULL, NULL);
    }
    srv_call call;
    json_t *err = NULL;
    long id = srv_new_id(s);
    int status = srv_api_parse(s, chat, body, id, &call, &err);
    if (status) {
        json_decref(body);
        srv_count(s, status == 404 ? SRV_NOT_FOUND : SRV_BAD_REQUEST);
        return reply_json(c, status, err, 0);
    }
    int full;
    srv_req *r = srv_submit(s, id, call.line, &full);
    call.line = NULL;
    if (!r) {
        srv_call_free(&call);
        json_decref(body);
        if (full)
            return reply_error(s, c, 503, SRV_QUEUE_FULL,
                               "the server is busy (its queue is full) or shutting down: retry later",
                               "server_error", NULL, "queue_full");
        return reply_error(s, c, 500, SRV_FAILED, "out of memory", "server_error", NULL, NULL);
    }
    int fd = client_fd(c);
    enum MHD_Result rc;
    if (!wait_for(s, r, fd, call.stream)) {
        rc = MHD_NO; /* the client is gone: nothing to answer */
    } else if (call.stream && (!r->done || r->ok)) {
        /* a first token came (or already the whole answer): 200 and SSE */
        rc = start_stream(s, c, r, &call, fd);
        r = NULL; /* the stream owns it */
    } else {
        /* done: the result, or why the scheduler refused the request */
        json_t *resp = srv_api_response(s, &call, id, r->result, &status);
        rc = reply_json(c, status, resp, 0);
    }
    if (r) srv_release(s, r);
    srv_call_free(&call);
    json_decref(body);
    return rc;
}

/* ---- routing ---- */

static enum MHD_Result get_models(srv *s, struct MHD_Connection *c) {
    json_t *m = json_pack("{s:s, s:s, s:i, s:s}", "id", s->model_name, "object", "model",
                          "created", 0, "owned_by", "egmla");
    return reply_json(c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", m), 0);
}

static enum MHD_Result get_health(srv *s, struct MHD_Connection *c) {
    pthread_mutex_lock(&s->mu);
    const char *status = "ok";
    if (s->stopped) status = "stopped";
    else if (s->draining) status = "draining";
    else if (s->load.running > 0 && srv_now() - s->t_load > s->stall_s) status = "stalled";
    int running = s->load.running, queued = s->q_len;
    pthread_mutex_unlock(&s->mu);
    int ok = !strcmp(status, "ok");
    return reply_json(c, ok ? 200 : 503,
                      json_pack("{s:s, s:i, s:i}", "status", status, "running", running,
                                "queued", queued), 0);
}

static int authorized(srv *s, struct MHD_Connection *c) {
    if (!s->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    return h && !strncmp(h, "Bearer ", 7) && !strcmp(h + 7, s->api_key);
}

static enum MHD_Result route(srv *s, struct MHD_Connection *c, const char *url,
                             const char *method, conn_t *k) {
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (get) return get_health(s, c);
    } else if (!authorized(s, c)) {
        return reply_error(s, c, 401, SRV_UNAUTHORIZED, "a valid API key is required "
                           "(Authorization: Bearer KEY)", "invalid_request_error", NULL,
                           "invalid_api_key");
    } else if (!strcmp(url, "/metrics")) {
        if (get) {
            char *t = srv_metrics_text(s);
            return t ? reply(c, 200, "text/plain; version=0.0.4", t, 0) : MHD_NO;
        }
    } else if (!strcmp(url, "/v1/models")) {
        if (get) return get_models(s, c);
    } else if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
        if (k->too_large) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request body is larger than --max-body %ld bytes",
                     s->max_body);
            return reply_error(s, c, 413, SRV_TOO_LARGE, msg, "invalid_request_error", NULL, NULL);
        }
        if (post) return post_generate(s, c, k, url[4] == 'c' && url[5] == 'h');
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "no such endpoint: %.100s", url);
        return reply_error(s, c, 404, SRV_NOT_FOUND, msg, "invalid_request_error", NULL,
                           "not_found");
    }
    char msg[160];
    snprintf(msg, sizeof msg, "%.100s does not accept %.10s", url, method);
    return reply_error(s, c, 405, SRV_BAD_REQUEST, msg, "invalid_request_error", NULL, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls) {
    srv *s = cls;
    conn_t *k = *con_cls;
    (void)version;
    if (!k) {
        k = calloc(1, sizeof *k);
        if (!k) return MHD_NO;
        *con_cls = k;
        srv_in_progress(s, 1);
        /* a declared length over the limit is refused before it is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoll(cl, NULL, 10) > s->max_body) k->too_large = 1;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!k->too_large && k->len + *upload_size > (size_t)s->max_body) k->too_large = 1;
        if (!k->too_large) {
            if (k->len + *upload_size + 1 > k->cap) {
                size_t cap = (k->len + *upload_size + 1) * 2;
                char *b = realloc(k->body, cap);
                if (!b) return MHD_NO;
                k->body = b;
                k->cap = cap;
            }
            memcpy(k->body + k->len, upload, *upload_size);
            k->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return route(s, c, url, method, k);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    (void)c;
    (void)why;
    conn_t *k = *con_cls;
    if (!k) return;
    srv_in_progress(cls, -1);
    free(k->body);
    free(k);
    *con_cls = NULL;
}

/* Our own listening socket: a taken port or a bad host gets the system's
 * reason in the message, and port 0 gets a free port we can print. */
static int listen_on(srv *s, egm_err *e) {
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *ai = NULL;
    int g = getaddrinfo(s->host, port, &hints, &ai);
    if (g) return egm_fail(e, "--host %s: %s", s->host, gai_strerror(g));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 128)) {
        egm_fail(e, "cannot listen on %s port %d: %s", s->host, s->port, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    s->bound_port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                   : ((struct sockaddr_in *)&sa)->sin_port);
    return fd;
}

int srv_http_start(srv *s, egm_err *e) {
    int fd = listen_on(s, e);
    if (fd < 0) return -1;
    unsigned limit = (unsigned)s->max_queue + 512;
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL,
        0, NULL, NULL, on_request, s, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_CONNECTION_TIMEOUT, 600u, MHD_OPTION_END);
    if (!s->daemon) {
        close(fd);
        return egm_fail(e, "cannot start the HTTP server on %s port %d", s->host, s->bound_port);
    }
    fprintf(stderr, "egmla serve: listening on http://%s:%d (model %s)\n", s->host,
            s->bound_port, s->model_name);
    fflush(stderr);
    return 0;
}

void srv_http_stop(srv *s) {
    if (s->daemon) MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
