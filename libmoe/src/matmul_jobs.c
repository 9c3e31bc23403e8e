/* matmul_jobs.c - several matrix products in one thread-pool run. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

typedef struct jobs_ctx {
    const moe_cpu_kernels *k;
    const moe__mm_job *jobs;
    int n_jobs;
} jobs_ctx;

/* Rows below this per thread are not worth splitting. */
#define MIN_ROWS_PER_THREAD 32

static void run_jobs(void *arg, int ith, int nth) {
    const jobs_ctx *c = arg;
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
            /* contiguous shares, boundaries on multiples of 4 rows (of a
             * packed tile's 16) */
            const int64_t a = J->q8p_rows ? MOE_Q8P_ROWS - 1 : 3;
            r0 = (J->m * ith / nth) & ~a;
            r1 = ith == nth - 1 ? J->m : (J->m * (ith + 1) / nth) & ~a;
        }
        if (r1 <= r0) continue;
        struct timespec t0, t1;
        if (J->ns) clock_gettime(CLOCK_MONOTONIC, &t0);
        /* a fast table's gemm is gemm_fast from MOE_FAST_MIN_ROWS rows;
         * batched asks for a batch's arithmetic below that too: the
         * quantised types' fast numerics (with a fast table; gemm_fast is
         * gemm for the types without), the float types' tinyBLAS */
        const int fast = c->k->fast && (J->batched || J->nb >= MOE_FAST_MIN_ROWS);
        const int flt = J->wt == MOE_DTYPE_F32 || J->wt == MOE_DTYPE_F16 || J->wt == MOE_DTYPE_BF16;
        void (*gemm)(moe_dtype, int64_t, const void *, int64_t, int64_t, const void *, int64_t,
                     float *, int64_t) = c->k->gemm;
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
}

void moe__matmul_jobs(const moe_cpu_kernels *k, moe_pool *pool, const moe__mm_job *jobs,
                      int n_jobs) {
    jobs_ctx c = {k, jobs, n_jobs};
    moe_pool_run(pool, run_jobs, &c);
}

void *moe__alloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, (n + 63) & ~(size_t)63)) return NULL;
    memset(p, 0, n);
    return p;
}
