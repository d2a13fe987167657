/* test_pool.c - the worker pool: every task runs exactly once whatever the
 * thread count, every thread index is in range, nested loops run serially,
 * and thousands of back-to-back loops (the engine's pattern) neither lose
 * nor repeat a task. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/pool.h"

typedef struct {
    atomic_int *count;   /* [n_tasks] times each task ran */
    int size;            /* pool size */
    atomic_int bad_thread;
    egm_pool *pool;      /* for the nested test */
    atomic_int inner;
} job;

static void count_task(void *v, int t, int thread) {
    job *j = v;
    atomic_fetch_add(&j->count[t], 1);
    if (thread < 0 || thread >= j->size) atomic_store(&j->bad_thread, 1);
}

static void check_once(egm_pool *p, int n_tasks) {
    job j = {.size = egm_pool_size(p)};
    j.count = calloc((size_t)n_tasks + 1, sizeof *j.count);
    assert_non_null(j.count);
    egm_pool_run(p, n_tasks, count_task, &j);
    for (int t = 0; t < n_tasks; t++) assert_int_equal(atomic_load(&j.count[t]), 1);
    assert_int_equal(atomic_load(&j.bad_thread), 0);
    free(j.count);
}

static void test_every_task_once(void **st) {
    (void)st;
    int sizes[] = {1, 2, 3, 8};
    int tasks[] = {0, 1, 2, 3, 7, 64, 1001};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        egm_pool *p = egm_pool_new(sizes[i]);
        assert_non_null(p);
        assert_int_equal(egm_pool_size(p), sizes[i]);
        for (size_t k = 0; k < sizeof tasks / sizeof *tasks; k++) check_once(p, tasks[k]);
        egm_pool_free(p);
    }
    /* no pool: serial on the caller */
    check_once(NULL, 5);
    assert_int_equal(egm_pool_size(NULL), 1);
    egm_pool *p = egm_pool_new(0);
    assert_int_equal(egm_pool_size(p), 1);
    egm_pool_free(p);
    egm_pool_free(NULL);
}

/* Thousands of short loops back to back, each task adding into its own
 * slot, as a forward step does: the sums must be exact. */
typedef struct {
    long *acc;
    int round;
} sum_job;

static void add_task(void *v, int t, int thread) {
    (void)thread;
    sum_job *j = v;
    j->acc[t] += j->round;
}

static void test_many_loops(void **st) {
    (void)st;
    egm_pool *p = egm_pool_new(3);
    assert_non_null(p);
    enum { TASKS = 17, ROUNDS = 2000 };
    long acc[TASKS] = {0};
    sum_job j = {acc, 0};
    for (int r = 1; r <= ROUNDS; r++) {
        j.round = r;
        egm_pool_run(p, TASKS, add_task, &j);
    }
    for (int t = 0; t < TASKS; t++) assert_int_equal(acc[t], (long)ROUNDS * (ROUNDS + 1) / 2);
    egm_pool_free(p);
}

/* A task that starts a loop on the same pool: it runs inline, on the
 * task's own thread, and completes. */
static void inner_task(void *v, int t, int thread) {
    (void)t;
    (void)thread;
    atomic_fetch_add(&((job *)v)->inner, 1);
}

static void outer_task(void *v, int t, int thread) {
    (void)t;
    (void)thread;
    job *j = v;
    egm_pool_run(j->pool, 4, inner_task, j);
}

static void test_nested_serial(void **st) {
    (void)st;
    job j = {0};
    j.pool = egm_pool_new(2);
    assert_non_null(j.pool);
    egm_pool_run(j.pool, 6, outer_task, &j);
    assert_int_equal(atomic_load(&j.inner), 24);
    egm_pool_free(j.pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_task_once),
        cmocka_unit_test(test_many_loops),
        cmocka_unit_test(test_nested_serial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
