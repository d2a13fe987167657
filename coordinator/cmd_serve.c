/* cmd_serve.c - `egmla serve`: generate's engine behind an OpenAI-compatible
 * HTTP API (see serve.h, docs/SERVING.md).
 *
 * The engine options are generate's; the server's own follow them. Under
 * mpirun rank 0 serves and ranks 1..N-1 run the stages, exactly as for
 * generate: the HTTP daemon only starts once the scheduler has its
 * pipeline (the feed's start), so it runs on the coordinator alone.
 *
 * SIGTERM or SIGINT drains: new requests get 503, those in flight finish,
 * then the process exits 0. Under mpirun, rank 0 keeps the batch jobs'
 * SIGTERM handling instead (mpirun sends it when a rank died, and ends
 * every rank itself): one line, exit non-zero. */
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "coordinator/commands.h"
#include "coordinator/serve.h"
#include "coordinator/workers.h"

static const char *host = "127.0.0.1", *api_key = NULL, *model_name = NULL;
static int port = 8080, max_queue = 256;
static long long max_body = 1 << 20;

/* The handler only writes the signal's number down a pipe (BLAS and
 * OpenMP threads exist before main, so any thread may take the signal);
 * sig_thread reads it and drains. A 0 ends the thread. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    unsigned char b = (unsigned char)sig;
    ssize_t n = write(sig_pipe[1], &b, 1);
    (void)n;
}

static void *sig_thread(void *arg) {
    srv *s = arg;
    unsigned char b;
    while (read(sig_pipe[0], &b, 1) == 1 && b) {
        fprintf(stderr, "egmla serve: %s: finishing the requests in flight, then exiting\n",
                b == SIGTERM ? "SIGTERM" : "SIGINT");
        srv_drain(s);
    }
    return NULL;
}

/* The name clients give as "model": the model's directory or file name. */
static const char *name_of(const char *model, char *buf, size_t n) {
    snprintf(buf, n, "%s", model);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/') buf[--len] = 0;
    char *base = basename(buf);
    char *dot = strrchr(base, '.');
    if (dot && !strcmp(dot, ".gguf")) *dot = 0;
    return base;
}

static int serve(egm_run_opts *r) {
    static srv s;
    char name_buf[4096];
    memset(&s, 0, sizeof s);
    if (srv_init(&s)) {
        fprintf(stderr, "egmla serve: cannot initialise\n");
        return EGM_EXIT_FAIL;
    }
    s.host = host;
    s.port = port;
    s.api_key = api_key;
    s.max_queue = max_queue;
    s.max_body = (long)max_body;
    s.model_name = model_name ? model_name : name_of(r->model, name_buf, sizeof name_buf);
    s.stall_s = r->rank_timeout;
    s.on_ready = srv_http_start;
    s.on_stop = srv_http_stop;
    r->feed = &s.feed;
    r->stats = 1; /* result lines carry the prompt's length, for usage */
    r->job = "serve";
    pthread_t th;
    int sig_thread_on = 0;
    if (!egm_under_mpi() && pipe2(sig_pipe, O_CLOEXEC) == 0) {
        sig_thread_on = !pthread_create(&th, NULL, sig_thread, &s);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        if (sig_thread_on) {
            sigaction(SIGTERM, &sa, NULL);
            sigaction(SIGINT, &sa, NULL);
        }
    }
    int rc = egm_run(r);
    if (sig_thread_on) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        on_signal(0);
        pthread_join(th, NULL);
    }
    srv_destroy(&s);
    return rc;
}

int egm_cmd_serve(int argc, char **argv) {
    egm_opt opts[] = {
        {"host", EGM_OPT_STRING, &host, "address to listen on (0.0.0.0: every interface)", 0, 0, "ADDR"},
        {"port", EGM_OPT_INT, &port, "TCP port (0: any free one, printed)", 0, 65535, "N"},
        {"api-key", EGM_OPT_STRING, &api_key, "require \"Authorization: Bearer KEY\" on /v1 and /metrics", 0, 0, "KEY"},
        {"model-name", EGM_OPT_STRING, &model_name, "the model's name in the API (default: its file or directory name)", 0, 0, "NAME"},
        {"max-queue", EGM_OPT_INT, &max_queue, "requests waiting at most; more get 503", 1, 1 << 20, "N"},
        {"max-body", EGM_OPT_U64, &max_body, "request bodies larger than this get 413", 1, 1e12, "BYTES"},
        {NULL, 0, NULL, NULL, 0, 0, NULL}};
    egm_run_ext x = {"egmla serve",
                     "Serves the model over an OpenAI-compatible HTTP API: /v1/completions, "
                     "/v1/chat/completions, /v1/models, /health, /metrics (docs/SERVING.md).",
                     opts, serve};
    return egm_run_ext_main(&x, argc, argv);
}
