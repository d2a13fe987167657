/* pool.h - a small fixed pool of worker threads that run the tasks of one
 * parallel loop at a time.
 *
 * Threading, not math, so it sits in base/ under every layer; it does no
 * I/O. The engine owns one pool per stage (worker/stage.c) and splits
 * sequences, heads and blocks of weight rows over it, with BLAS
 * single-threaded inside; nothing depends on an OpenMP runtime or on
 * OMP_WAIT_POLICY.
 *
 * Idle workers sleep on a condition variable after a short bounded spin
 * (tens of microseconds, so back-to-back loops do not pay a futex wake
 * each; short enough not to steal a busy machine's other core). The caller of
 * egm_pool_run is thread 0 and runs tasks too. Tasks are handed out one at
 * a time in index order (dynamic schedule); which thread runs a task must
 * not change its result, so results never depend on the thread count. */
#ifndef EGM_POOL_H
#define EGM_POOL_H

typedef struct egm_pool egm_pool;

/* fn(ctx, task, thread): task in [0, n_tasks), thread in [0, size). */
typedef void (*egm_pool_fn)(void *ctx, int task, int thread);

/* A pool of `threads` threads in all (the caller plus threads - 1 workers);
 * threads < 1 is 1. If workers cannot be started the pool has fewer.
 * NULL only when out of memory. */
egm_pool *egm_pool_new(int threads);
void egm_pool_free(egm_pool *p);

/* Threads of the pool, the caller included (1 for NULL). */
int egm_pool_size(const egm_pool *p);

/* Runs fn for every task and returns when all are done. Serial (thread 0)
 * for a NULL or 1-thread pool, one task, or a call from inside a task. */
void egm_pool_run(egm_pool *p, int n_tasks, egm_pool_fn fn, void *ctx);

#endif
