/*
 * threadpool.c - a persistent pool (see moe/threadpool.h).
 *
 * One run is a generation: the caller writes (fn, ctx), resets the done
 * count and bumps `gen`; workers waiting for a new generation run
 * fn(ctx, ith, nth) and count themselves done; the caller runs ith 0, then
 * waits for the count. Both waits spin first (pause, re-reading one cache
 * line) and then sleep on a futex, so a worker idle between decode steps
 * costs no CPU, while back-to-back ops hand off in well under a microsecond.
 *
 * Sleeping is race-free with a Dekker pair of seq_cst operations: the waiter
 * announces itself (n_sleeping / caller_waiting) and then re-reads the word;
 * the waker writes the word and then reads the announcement. One of the two
 * always sees the other, and FUTEX_WAIT re-checks the value in the kernel.
 *
 * MOE_POOL_SPIN_US (environment, read at create) sets how long a worker
 * spins before sleeping; 0 sleeps at once. With more threads than CPUs the
 * spin yields instead of pausing, so the threads it waits for can run.
 *
 * Measured on the 2-vCPU AMD EPYC VM (bench/kernels.c): an empty run with 2
 * threads costs ~0.7 us while the worker spins, but ~45-120 us when it has
 * gone to sleep (the futex wake of an idle vCPU), hence the default spin.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() sched_yield()
#endif

#include "moe/error.h"
#include "moe/threadpool.h"

/* Default spin before sleeping. A decode step runs ~100 ops in ~10 ms with a
 * few microseconds of single-threaded work between them; spinning across
 * those gaps avoids a futex wake (45-120 us measured on the VM) per op, and
 * a spin shorter than that wake buys little. */
#define POOL_SPIN_US_DEFAULT 50
/* The caller waits for stragglers longer before sleeping: it has nothing
 * else to do and a sleep adds a wake-up to the op's latency. */
#define POOL_CALLER_SPIN_US 1000

typedef struct pool_worker {
    struct moe_pool *pool;
    int ith;
    pthread_t tid;
} pool_worker;

struct moe_pool {
    int n_threads;
    int n_started; /* workers actually created */
    int64_t spin_ns;
    int oversubscribed; /* more threads than CPUs: spin with sched_yield */
    pool_worker *workers;

    /* Written by the caller before it publishes a generation. */
    moe_pool_fn fn;
    void *ctx;
    int stop;

    _Alignas(64) atomic_uint gen; /* futex word the workers wait on */
    atomic_int n_sleeping;        /* workers inside FUTEX_WAIT on gen */

    _Alignas(64) atomic_uint n_done; /* futex word the caller waits on */
    atomic_int caller_waiting;
};

/* ==== Futex and time ======================================================= */

static void futex_wait(atomic_uint *addr, unsigned expected) {
    syscall(SYS_futex, (void *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *addr, int n) {
    syscall(SYS_futex, (void *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until *word != old or spin_ns have passed; returns the last value. */
static unsigned spin_while_equal(atomic_uint *word, unsigned old, int64_t spin_ns, int yield) {
    unsigned v = atomic_load_explicit(word, memory_order_acquire);
    if (v != old || spin_ns <= 0) return v;
    const int64_t deadline = now_ns() + spin_ns;
    for (unsigned i = 1;; i++) {
        if (yield)
            sched_yield();
        else
            POOL_PAUSE();
        v = atomic_load_explicit(word, memory_order_acquire);
        if (v != old) return v;
        if ((i & 31) == 0 && now_ns() >= deadline) return v;
    }
}

/* ==== Workers ============================================================== */

static void *worker_main(void *arg) {
    pool_worker *w = arg;
    moe_pool *p = w->pool;
    unsigned seen = 0; /* gen at create; a run published before this thread got going is new */

    for (;;) {
        unsigned g = spin_while_equal(&p->gen, seen, p->spin_ns, p->oversubscribed);
        if (g == seen) {
            atomic_fetch_add(&p->n_sleeping, 1);
            while ((g = atomic_load(&p->gen)) == seen) futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->n_sleeping, 1);
        }
        seen = g;
        if (p->stop) break;

        p->fn(p->ctx, w->ith, p->n_threads);

        unsigned done = atomic_fetch_add(&p->n_done, 1) + 1;
        if (done == (unsigned)(p->n_threads - 1) && atomic_load(&p->caller_waiting))
            futex_wake(&p->n_done, 1);
    }
    return NULL;
}

/* Publishes a generation (fn, ctx, stop already written). */
static void pool_publish(moe_pool *p) {
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: release of fn/ctx/stop/n_done */
    if (atomic_load(&p->n_sleeping) > 0) futex_wake(&p->gen, INT_MAX);
}

/* ==== API ================================================================== */

static int64_t spin_ns_from_env(void) {
    const char *s = getenv("MOE_POOL_SPIN_US");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == '\0' && v >= 0 && v <= 10000000) return (int64_t)v * 1000;
    }
    return (int64_t)POOL_SPIN_US_DEFAULT * 1000;
}

int moe_pool_create(moe_pool **out, int n_threads) {
    if (!out || n_threads < 1) return MOE_EINVAL;
    *out = NULL;
    moe_pool *p = aligned_alloc(64, (sizeof(moe_pool) + 63) / 64 * 64);
    if (!p) return MOE_ENOMEM;
    p->n_threads = n_threads;
    p->n_started = 0;
    p->spin_ns = spin_ns_from_env();
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    p->oversubscribed = ncpu > 0 && n_threads > ncpu;
    p->fn = NULL;
    p->ctx = NULL;
    p->stop = 0;
    atomic_init(&p->gen, 0);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->n_done, 0);
    atomic_init(&p->caller_waiting, 0);
    p->workers = NULL;
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads, sizeof(pool_worker));
        if (!p->workers) {
            free(p);
            return MOE_ENOMEM;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        pool_worker *w = &p->workers[i];
        w->pool = p;
        w->ith = i;
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            moe_pool_destroy(p);
            return MOE_ENOMEM;
        }
        p->n_started++;
    }
    *out = p;
    return 0;
}

void moe_pool_destroy(moe_pool *p) {
    if (!p) return;
    if (p->n_started > 0) {
        p->stop = 1;
        pool_publish(p);
        for (int i = 1; i <= p->n_started; i++) pthread_join(p->workers[i].tid, NULL);
    }
    free(p->workers);
    free(p);
}

int moe_pool_n_threads(const moe_pool *p) {
    return p ? p->n_threads : 1;
}

void moe_pool_run(moe_pool *p, moe_pool_fn fn, void *ctx) {
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    pool_publish(p);

    fn(ctx, 0, p->n_threads);

    const unsigned want = (unsigned)(p->n_threads - 1);
    unsigned done = atomic_load_explicit(&p->n_done, memory_order_acquire);
    for (;;) {
        if (done == want) break;
        done = spin_while_equal(&p->n_done, done, (int64_t)POOL_CALLER_SPIN_US * 1000,
                                p->oversubscribed);
        if (done == want) break;
        /* Still equal after spinning (or changed but not complete): sleep until
         * the last worker wakes us; the kernel re-checks the value. */
        atomic_store(&p->caller_waiting, 1);
        done = atomic_load(&p->n_done);
        if (done != want) futex_wait(&p->n_done, done);
        atomic_store(&p->caller_waiting, 0);
        done = atomic_load(&p->n_done);
    }
}

typedef struct pool_for_ctx {
    moe_pool_range_fn fn;
    void *ctx;
    int n;
} pool_for_ctx;

static void pool_for_task(void *arg, int ith, int nth) {
    const pool_for_ctx *f = arg;
    const int i0 = (int)((int64_t)f->n * ith / nth), i1 = (int)((int64_t)f->n * (ith + 1) / nth);
    if (i1 > i0) f->fn(f->ctx, i0, i1);
}

void moe_pool_for(moe_pool *p, int n, int min_par, moe_pool_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->n_threads == 1 || n < min_par || n < 2) {
        fn(ctx, 0, n);
        return;
    }
    pool_for_ctx f = {fn, ctx, n};
    moe_pool_run(p, pool_for_task, &f);
}
