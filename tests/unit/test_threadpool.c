/* tests/unit/test_threadpool.c - the persistent pool (moe/threadpool.h). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/error.h"
#include "moe/threadpool.h"
#include "test.h"

#define MAX_T 8

typedef struct count_ctx {
    atomic_int calls[MAX_T];
    atomic_int bad_nth;
    int want_nth;
    int out[MAX_T]; /* plain writes, read by the caller after the run */
} count_ctx;

static void count_fn(void *arg, int ith, int nth) {
    count_ctx *c = arg;
    if (nth != c->want_nth || ith < 0 || ith >= nth)
        atomic_fetch_add(&c->bad_nth, 1);
    else {
        atomic_fetch_add(&c->calls[ith], 1);
        c->out[ith]++;
    }
}

static void check_runs(moe_pool *p, int nth, int runs, int sleep_us) {
    count_ctx c;
    memset(&c, 0, sizeof c);
    c.want_nth = nth;
    ASSERT_EQ_INT(moe_pool_n_threads(p), nth);
    for (int r = 1; r <= runs; r++) {
        moe_pool_run(p, count_fn, &c);
        /* every ith ran exactly once in this run, and its writes are visible */
        for (int i = 0; i < nth; i++) {
            ASSERT_EQ_INT(atomic_load(&c.calls[i]), r);
            ASSERT_EQ_INT(c.out[i], r);
        }
        if (sleep_us) usleep((useconds_t)sleep_us);
    }
    ASSERT_EQ_INT(atomic_load(&c.bad_nth), 0);
    for (int i = nth; i < MAX_T; i++) ASSERT_EQ_INT(atomic_load(&c.calls[i]), 0);
}

/* check_runs on a pool of its own, made and destroyed here. */
static void check_new_pool(int nth, int runs, int sleep_us) {
    moe_pool *p;
    ASSERT_EQ_INT(moe_pool_create(&p, nth), 0);
    check_runs(p, nth, runs, sleep_us);
    moe_pool_destroy(p);
}

TEST(pool_create_invalid) {
    moe_pool *p = (moe_pool *)1;
    ASSERT_EQ_INT(moe_pool_create(&p, 0), MOE_EINVAL);
    ASSERT_EQ_INT(moe_pool_create(&p, -3), MOE_EINVAL);
    ASSERT_EQ_INT(moe_pool_create(NULL, 2), MOE_EINVAL);
}

TEST(pool_null_runs_inline) {
    count_ctx c;
    memset(&c, 0, sizeof c);
    c.want_nth = 1;
    ASSERT_EQ_INT(moe_pool_n_threads(NULL), 1);
    moe_pool_run(NULL, count_fn, &c);
    moe_pool_run(NULL, count_fn, &c);
    ASSERT_EQ_INT(atomic_load(&c.calls[0]), 2);
    ASSERT_EQ_INT(atomic_load(&c.bad_nth), 0);
    moe_pool_destroy(NULL);
}

TEST(pool_one_thread) {
    check_new_pool(1, 1000, 0);
}

TEST(pool_two_threads_many_runs) {
    check_new_pool(2, 200000, 0);
}

TEST(pool_more_threads_than_cores) {
    check_new_pool(5, 5000, 0);
}

/* Workers that go to sleep between runs are woken for each one. */
TEST(pool_sleeping_workers) {
    setenv("MOE_POOL_SPIN_US", "0", 1);
    moe_pool *p;
    ASSERT_EQ_INT(moe_pool_create(&p, 3), 0);
    check_runs(p, 3, 2000, 0);  /* sleep right away: every run is a futex wake */
    check_runs(p, 3, 20, 2000); /* and after a real idle gap */
    moe_pool_destroy(p);
    unsetenv("MOE_POOL_SPIN_US");
}

/* The default spin, with gaps longer than it, so workers sleep in between. */
TEST(pool_idle_gaps_default_spin) {
    check_new_pool(2, 30, 3000);
}

TEST(pool_destroy_with_workers_sleeping) {
    setenv("MOE_POOL_SPIN_US", "0", 1);
    for (int i = 0; i < 20; i++) {
        moe_pool *p;
        ASSERT_EQ_INT(moe_pool_create(&p, 3), 0);
        if (i % 2) check_runs(p, 3, 3, 0);
        usleep(2000); /* workers are asleep on the futex by now */
        moe_pool_destroy(p);
    }
    unsetenv("MOE_POOL_SPIN_US");
}

TEST(pool_create_destroy_repeatedly) {
    for (int i = 0; i < 200; i++) {
        moe_pool *p;
        ASSERT_EQ_INT(moe_pool_create(&p, 2 + i % 3), 0);
        if (i % 3 == 0) check_runs(p, 2 + i % 3, 2, 0);
        moe_pool_destroy(p); /* often before the workers have even started */
    }
}

/* A parallel sum: each thread sums its slice; the caller adds the partials. */
typedef struct sum_ctx {
    const int64_t *v;
    int64_t n;
    int64_t part[MAX_T];
} sum_ctx;

static void sum_fn(void *arg, int ith, int nth) {
    sum_ctx *s = arg;
    const int64_t a = s->n * ith / nth, b = s->n * (ith + 1) / nth;
    int64_t acc = 0;
    for (int64_t i = a; i < b; i++) acc += s->v[i];
    s->part[ith] = acc;
}

TEST(pool_parallel_sum) {
    const int64_t n = 100003;
    int64_t *v = malloc((size_t)n * sizeof *v);
    ASSERT(v);
    int64_t want = 0;
    for (int64_t i = 0; i < n; i++) want += v[i] = i * 7 - 3;
    moe_pool *p;
    ASSERT_EQ_INT(moe_pool_create(&p, 2), 0);
    for (int r = 0; r < 100; r++) {
        sum_ctx s = {.v = v, .n = n};
        moe_pool_run(p, sum_fn, &s);
        ASSERT_EQ_INT(s.part[0] + s.part[1], want);
    }
    moe_pool_destroy(p);
    free(v);
}

typedef struct for_ctx {
    _Atomic int *hits;
    _Atomic int calls;
} for_ctx;

static void for_fn(void *arg, int i0, int i1) {
    for_ctx *f = arg;
    atomic_fetch_add(&f->calls, 1);
    for (int i = i0; i < i1; i++) atomic_fetch_add(&f->hits[i], 1);
}

/* moe_pool_for: every item once, in one call per thread with items (or one
 * call on the caller below min_par, or with one thread / no pool). */
TEST(pool_for_covers_each_item_once) {
    enum { N = 37 };
    _Atomic int hits[N];
    moe_pool *p3, *p1;
    ASSERT_EQ_INT(moe_pool_create(&p3, 3), 0);
    ASSERT_EQ_INT(moe_pool_create(&p1, 1), 0);
    moe_pool *pools[3] = {p3, p1, NULL};
    for (int pi = 0; pi < 3; pi++)
        for (int n = 0; n <= N; n++)
            for (int min_par = 1; min_par <= 8; min_par += 7) {
                for (int i = 0; i < N; i++) atomic_store(&hits[i], 0);
                for_ctx f = {hits, 0};
                moe_pool_for(pools[pi], n, min_par, for_fn, &f);
                for (int i = 0; i < N; i++) ASSERT_EQ_INT(atomic_load(&hits[i]), i < n ? 1 : 0);
                const int split = pi == 0 && n >= 2 && n >= min_par;
                ASSERT_EQ_INT(atomic_load(&f.calls), n == 0 ? 0 : split ? (n < 3 ? n : 3) : 1);
            }
    moe_pool_destroy(p3);
    moe_pool_destroy(p1);
}
