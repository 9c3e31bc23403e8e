/*
 * moe/threadpool.h - a persistent pool of worker threads for data-parallel ops.
 *
 * A decode step is ~10 ms and runs ~100 ops, so threads are created once and
 * woken per op (spin briefly, then sleep), never spawned per op.
 *
 *     moe_pool *pool;
 *     moe_pool_create(&pool, 4);               // 4 threads including the caller
 *     moe_pool_run(pool, my_fn, &my_ctx);      // my_fn(ctx, ith, 4) on each
 *     moe_pool_destroy(pool);
 *
 * moe_pool_run must not be called from inside a task, and one pool serves one
 * caller thread at a time.
 */
#ifndef MOE_THREADPOOL_H
#define MOE_THREADPOOL_H

typedef struct moe_pool moe_pool;

/* A task: called once per thread with ith in [0, nth). */
typedef void (*moe_pool_fn)(void *ctx, int ith, int nth);

/* Creates a pool of n_threads (>= 1; the caller counts as thread 0, so
 * n_threads - 1 workers are started). Returns 0, MOE_EINVAL or MOE_ENOMEM. */
int moe_pool_create(moe_pool **out, int n_threads);
/* Stops and joins the workers. NULL is allowed. */
void moe_pool_destroy(moe_pool *p);
/* Total threads, caller included (1 for a NULL pool). */
int moe_pool_n_threads(const moe_pool *p);
/* Runs fn(ctx, ith, nth) on every thread, the caller as ith 0, and returns
 * when all have finished. A NULL pool runs fn(ctx, 0, 1) inline. */
void moe_pool_run(moe_pool *p, moe_pool_fn fn, void *ctx);

/* A range task: items [i0, i1). */
typedef void (*moe_pool_range_fn)(void *ctx, int i0, int i1);
/* Runs fn over items [0, n) in one contiguous share per thread (the caller
 * takes the first), or as fn(ctx, 0, n) on the caller alone when n <
 * min_par or the pool has one thread: for row ops too small to pay a
 * hand-off below min_par items. */
void moe_pool_for(moe_pool *p, int n, int min_par, moe_pool_range_fn fn, void *ctx);

#endif
