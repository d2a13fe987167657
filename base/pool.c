/* pool.c - worker threads that sleep when idle (see pool.h).
 *
 * One job at a time: egm_pool_run publishes fn/ctx/n_tasks and bumps a
 * generation counter under the mutex; workers notice it by spinning
 * briefly, or wake from the condition variable. Tasks are claimed with an
 * atomic counter. The caller waits for the workers that joined the job
 * (`busy`) the same way: a short spin, then the `done` condition. */
#include "base/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Polling before sleeping: 2000 pauses, some 10-50 us depending on the
 * CPU's pause latency. Long enough to bridge the gap between two loops of
 * one forward step, short enough not to matter on a machine whose other
 * cores are busy. */
#define SPIN 2000

struct egm_pool {
    int n;                      /* threads in all, caller included */
    pthread_t *tid;             /* [n - 1] workers */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_uint gen;            /* bumped for every job */
    atomic_int next;            /* next task to claim */
    atomic_int busy;            /* workers not yet done with the job */
    atomic_int stop;
    int n_tasks;
    egm_pool_fn fn;
    void *ctx;
};

typedef struct {
    egm_pool *p;
    int thread;
} worker_arg;

/* Set while a thread runs tasks: a nested egm_pool_run is serial. */
static _Thread_local int in_task;

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_tasks(egm_pool *p, int thread) {
    in_task = 1;
    for (int t; (t = atomic_fetch_add(&p->next, 1)) < p->n_tasks;) p->fn(p->ctx, t, thread);
    in_task = 0;
}

static void *worker(void *va) {
    worker_arg a = *(worker_arg *)va;
    free(va);
    egm_pool *p = a.p;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load(&p->gen);
        for (int i = 0; i < SPIN && g == seen && !atomic_load(&p->stop); i++) {
            relax();
            g = atomic_load(&p->gen);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_tasks(p, a.thread);
        if (atomic_fetch_sub(&p->busy, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

egm_pool *egm_pool_new(int threads) {
    egm_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (threads < 1) threads = 1;
    p->tid = calloc((size_t)threads, sizeof *p->tid);
    if (!p->tid) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->n = 1;
    for (int i = 1; i < threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) break;
        *a = (worker_arg){p, i};
        if (pthread_create(&p->tid[i - 1], NULL, worker, a)) {
            free(a);
            break; /* fewer threads: still correct */
        }
        p->n++;
    }
    return p;
}

void egm_pool_free(egm_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n - 1; i++) pthread_join(p->tid[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->tid);
    free(p);
}

int egm_pool_size(const egm_pool *p) { return p ? p->n : 1; }

void egm_pool_run(egm_pool *p, int n_tasks, egm_pool_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1 || in_task) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    for (int i = 0; i < SPIN && atomic_load(&p->busy); i++) relax();
    if (atomic_load(&p->busy)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->busy)) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
