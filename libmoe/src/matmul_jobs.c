/* matmul_jobs.c - several matrix products in one thread-pool run. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* Activation rows up to which threads take each other's chunks: the
 * memory-bound products (decode), whose threads' shares end apart; with
 * more rows per expert (8 columns of the fast tile at 32 sequences) it
 * measured 4-6% slower. */
#define STEAL_MAX_ROWS 4
/* Threads a run keeps its shares' counters for (more: no stealing). */
#define STEAL_MAX_THREADS 64

typedef struct jobs_ctx {
    const moe_cpu_kernels *k;
    const moe__mm_job *jobs;
    int n_jobs;
    int steal; /* chunks of a share may be taken by other threads */
    _Alignas(64) uint64_t next[STEAL_MAX_THREADS][8]; /* per thread (a line each): front << 32 |
                                                       * back of its chunks */
} jobs_ctx;

/* Rows below this per thread are not worth splitting. */
#define MIN_ROWS_PER_THREAD 32
/* A share is taken in chunks of at least this many rows (a multiple of 16:
 * whole packed tiles), about SHARE_CHUNKS a share. */
#define CHUNK_MIN_ROWS 64
#define SHARE_CHUNKS 8

static void run_rows(const jobs_ctx *c, const moe__mm_job *J, int64_t r0, int64_t r1);

/* Thread ith's share of job J, [*r0, *r1) (empty where it has none). */
static void share_of(const moe__mm_job *J, int ith, int nth, int64_t *r0, int64_t *r1) {
    /* contiguous shares, boundaries on multiples of 4 rows (of a packed
     * tile's 16) */
    const int64_t a = J->q8p_rows ? MOE_Q8P_ROWS - 1 : 3;
    *r0 = (J->m * ith / nth) & ~a;
    *r1 = ith == nth - 1 ? J->m : (J->m * (ith + 1) / nth) & ~a;
}

static int64_t chunk_rows(int64_t share) {
    int64_t ch = (share + SHARE_CHUNKS - 1) / SHARE_CHUNKS;
    ch = (ch + 15) & ~(int64_t)15;
    return ch < CHUNK_MIN_ROWS ? CHUNK_MIN_ROWS : ch;
}

/* Chunk u of owner's shares (the split jobs in order, each share front to
 * back): its job and rows; 0 past the last. *j and *base: a cursor (the
 * job and the chunks before it) that only moves forward. */
static int chunk_at(const jobs_ctx *c, int owner, int nth, int64_t u, int *j, int64_t *base,
                    int64_t *r0, int64_t *r1) {
    for (; *j < c->n_jobs; (*j)++) {
        const moe__mm_job *J = &c->jobs[*j];
        if (J->m <= 0 || J->nb <= 0 || J->m < (int64_t)MIN_ROWS_PER_THREAD * nth) continue;
        int64_t s0, s1;
        share_of(J, owner, nth, &s0, &s1);
        const int64_t ch = chunk_rows(s1 - s0), n = s1 > s0 ? (s1 - s0 + ch - 1) / ch : 0;
        if (u < *base + n) {
            *r0 = s0 + (u - *base) * ch;
            *r1 = *r0 + ch < s1 ? *r0 + ch : s1;
            return 1;
        }
        *base += n;
    }
    return 0;
}

/* Chunks owned by thread `owner`: the owner takes them front to back (its
 * sequential stream, prefetched ahead), a thread done with its own from the
 * back (one 64-bit word: front << 32 | back, so none is taken twice). */
static void take_chunks(jobs_ctx *c, int owner, int self, int nth) {
    uint64_t *w = (uint64_t *)&c->next[owner][0];
    int j = 0;
    int64_t base = 0;
    for (;;) {
        uint64_t v = __atomic_load_n(w, __ATOMIC_RELAXED), nv;
        int64_t u;
        do {
            const uint32_t f = (uint32_t)(v >> 32), bk = (uint32_t)v;
            if (f >= bk) return;
            if (self == owner) {
                u = f;
                nv = ((uint64_t)(f + 1) << 32) | bk;
            } else {
                u = bk - 1;
                nv = ((uint64_t)f << 32) | (bk - 1);
            }
        } while (!__atomic_compare_exchange_n(w, &v, nv, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
        if (self != owner) j = 0, base = 0; /* from the back: the cursor starts over */
        int64_t r0, r1;
        if (!chunk_at(c, owner, nth, u, &j, &base, &r0, &r1)) return;
        run_rows(c, &c->jobs[j], r0, r1);
    }
}

static void run_jobs(void *arg, int ith, int nth) {
    jobs_ctx *c = arg;
    int small = 0; /* round-robin index over jobs too small to split */
    for (int j = 0; j < c->n_jobs; j++) {
        const moe__mm_job *J = &c->jobs[j];
        if (J->m <= 0 || J->nb <= 0) continue;
        int64_t r0, r1;
        if (J->m < (int64_t)MIN_ROWS_PER_THREAD * nth) {
            if (small++ % nth != ith) continue;
            r0 = 0;
            r1 = J->m;
        } else {
            if (c->steal) continue; /* below */
            share_of(J, ith, nth, &r0, &r1);
        }
        if (r1 > r0) run_rows(c, J, r0, r1);
    }
    if (c->steal) {
        /* this thread's chunks, counted by it (the caller counting every
         * thread's would be nth x jobs steps in series), published before
         * it takes any: a thread that looks earlier finds none and moves on
         * (no one else writes a word while it holds no chunks) */
        int j = 0;
        int64_t base = 0, r0, r1;
        chunk_at(c, ith, nth, INT64_MAX, &j, &base, &r0, &r1);
        __atomic_store_n(&c->next[ith][0], (uint64_t)base, __ATOMIC_RELAXED);
        for (int o = 0; o < nth; o++) take_chunks(c, (ith + o) % nth, ith, nth);
    }
}

/* Rows r0..r1 of job J on this thread. */
static void run_rows(const jobs_ctx *c, const moe__mm_job *J, int64_t r0, int64_t r1) {
    struct timespec t0, t1;
    if (J->ns) clock_gettime(CLOCK_MONOTONIC, &t0);
    /* a fast table's gemm is gemm_fast from MOE_FAST_MIN_ROWS rows;
     * batched asks for a batch's arithmetic below that too: the
     * quantised types' fast numerics (with a fast table; gemm_fast is
     * gemm for the types without), the float types' tinyBLAS */
    const int fast = c->k->fast && (J->batched || J->nb >= MOE_FAST_MIN_ROWS);
    const int flt = J->wt == MOE_DTYPE_F32 || J->wt == MOE_DTYPE_F16 || J->wt == MOE_DTYPE_BF16;
    void (*gemm)(moe_dtype, int64_t, const void *, int64_t, int64_t, const void *, int64_t, float *,
                 int64_t) = c->k->gemm;
    if (fast && !flt)
        gemm = c->k->gemm_fast;
    else if (J->batched)
        gemm = c->k->gemm_batch;
    if (J->q8p_rows) {
        /* the tiles packed, the rows after them (m % 16) as they were */
        const int64_t p1 = r1 < J->q8p_rows ? r1 : J->q8p_rows;
        if (p1 > r0 && J->wt == MOE_DTYPE_Q4_K)
            c->k->gemm_q4kp(J->k, J->W, r0, p1, J->X, J->nb, J->Y, J->ldy);
        else if (p1 > r0 && (J->wt == MOE_DTYPE_Q4_0 || J->wt == MOE_DTYPE_IQ4_NL))
            c->k->gemm_q4p(J->wt, J->k, J->W, r0, p1, J->X, J->nb, J->Y, J->ldy);
        else if (p1 > r0 && J->wt == MOE_DTYPE_IQ4_XS)
            c->k->gemm_iq4xsp(fast, J->k, J->W, r0, p1, J->X, J->nb, J->Y, J->ldy);
        else if (p1 > r0 && J->wt == MOE_DTYPE_Q6_K)
            c->k->gemm_q6kp(fast, J->k, J->W, r0, p1, J->X, J->nb, J->Y, J->ldy);
        else if (p1 > r0 && J->wt == MOE_DTYPE_Q5_K)
            c->k->gemm_q5kp(fast, J->k, J->W, r0, p1, J->X, J->nb, J->Y, J->ldy);
        else if (p1 > r0)
            c->k->gemm_q8p(fast, J->k, J->W, r0, p1, J->X, J->nb, J->Y, J->ldy);
        if (r1 > p1) gemm(J->wt, J->k, J->W, p1, r1, J->X, J->nb, J->Y, J->ldy);
    } else {
        gemm(J->wt, J->k, J->W, r0, r1, J->X, J->nb, J->Y, J->ldy);
    }
    if (J->ns) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        const int64_t dt =
            (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
        __atomic_fetch_add(J->ns, (uint64_t)(dt > 0 ? dt : 0), __ATOMIC_RELAXED);
    }
}

void moe__matmul_jobs(const moe_cpu_kernels *k, moe_pool *pool, const moe__mm_job *jobs,
                      int n_jobs) {
    jobs_ctx c;
    const int nth = moe_pool_n_threads(pool);
    c.k = k;
    c.jobs = jobs;
    c.n_jobs = n_jobs;
    int64_t nbmax = 0;
    for (int j = 0; j < n_jobs; j++)
        if (jobs[j].nb > nbmax) nbmax = jobs[j].nb;
    c.steal = nth > 1 && nth <= STEAL_MAX_THREADS && nbmax <= STEAL_MAX_ROWS;
    if (c.steal)
        for (int t = 0; t < nth; t++) c.next[t][0] = 0; /* none yet: run_jobs counts them */
    moe_pool_run(pool, run_jobs, &c);
}

typedef struct quant_rows {
    const moe_cpu_kernels *k;
    moe_dtype wt;
    const float *x;
    void *dst;
    int64_t dim;
} quant_rows;

static void quantize_range(void *arg, int i0, int i1) {
    const quant_rows *q = arg;
    const size_t rb = moe__act_row_bytes(q->wt, q->dim);
    moe_op_quantize(q->k, q->wt, q->x + (size_t)i0 * (size_t)q->dim,
                    (char *)q->dst + rb * (size_t)i0, i1 - i0, q->dim);
}

void moe__pool_quantize(moe_pool *pool, const moe_cpu_kernels *k, moe_dtype wt, const float *x,
                        void *dst, int n, int64_t dim) {
    quant_rows q = {k, wt, x, dst, dim};
    moe_pool_for(pool, n, moe__rows_min_par(dim), quantize_range, &q);
}

void *moe__alloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, (n + 63) & ~(size_t)63)) return NULL;
    memset(p, 0, n);
    return p;
}
