/*
 * bench/kernels.c - CPU kernel throughput against the machine's memory read
 * bandwidth, and the thread pool's hand-off cost.
 *
 *   build/bench-kernels            full run (~2 minutes, ~1 GB of memory)
 *   build/bench-kernels --quick    tiny sizes, a smoke test
 *   build/bench-kernels --matvec q4_K,q6_K
 *                                  the read loop and those types' matvec only
 *
 * Prints one JSON object per line:
 *   {"kernel":"read","threads":1,"gb_s":30.2}
 *   {"kernel":"q8_0_matvec","level":"avx512","threads":1,"gb_s":24.1,"read_gb_s":30.2,"ratio":0.80}
 *   {"kernel":"q8_0_gemm","level":"avx512","threads":1,"nb":64,"gflop_s":180.0}
 *   {"kernel":"pool_run_empty","threads":2,"mode":"hot","us":0.4}
 * Matvec (nb = 1) cycles over expert-sized matrices (2816 x 1024) totalling
 * more than any cache, so every byte comes from DRAM; ratio is its weight
 * bytes per second over the plain summing loop's (with the kernels'
 * software prefetch), same thread count. Every
 * stored type is measured, the quantised ones (Q4_0 ... IQ4_XS) included; the
 * K types with k = 1024 (4 super-blocks a row). Every number is the best of
 * several runs. Inputs are seeded.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "moe/dtype.h"
#include "moe/error.h"
#include "moe/ops.h"
#include "moe/threadpool.h"
#include "svc/clock.h"

static int quick;
static const char *only; /* --matvec: the types to measure, comma separated */

/* 1 if --matvec was not given or names t. */
static int wanted(moe_dtype t) {
    if (!only) return 1;
    const char *name = moe_dtype_name(t);
    const size_t n = strlen(name);
    for (const char *p = only; *p;) {
        const char *e = strchr(p, ',');
        const size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncasecmp(p, name, n)) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static void *xmalloc(size_t n) {
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench-kernels: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float frand(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (float)((rng * 0x2545F4914F6CDD1DULL) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* ==== Memory read bandwidth ================================================ */

/* libmoe's moe_read_bandwidth (cpu/membw.c): the read loop moectl bench
 * measures too. */
static double bench_read(moe_pool *pool, size_t bytes, int reps) {
    const double g = moe_read_bandwidth(pool, bytes, reps);
    if (g <= 0) {
        fprintf(stderr, "bench-kernels: out of memory\n");
        exit(1);
    }
    return g;
}

/* ==== Matvec and GEMM ====================================================== */

typedef struct mats {
    moe_dtype wt;
    int64_t m, k;
    int n;        /* matrices */
    size_t bytes; /* of one */
    char *w;      /* n matrices, back to back */
} mats;

static void mats_init(mats *s, moe_dtype wt, int64_t m, int64_t k, size_t min_total) {
    s->wt = wt;
    s->m = m;
    s->k = k;
    s->bytes = moe_dtype_row_bytes(wt, k) * (size_t)m;
    s->n = (int)((min_total + s->bytes - 1) / s->bytes);
    if (s->n < 1) s->n = 1;
    s->w = xmalloc(s->bytes * (size_t)s->n);
    const size_t rb = moe_dtype_row_bytes(wt, k);
    float *row = xmalloc((size_t)k * sizeof(float));
    for (int64_t r = 0; r < m; r++) {
        for (int64_t i = 0; i < k; i++) row[i] = frand();
        moe_dtype_from_f32(wt, row, s->w + (size_t)r * rb, k);
    }
    for (int i = 1; i < s->n; i++) memcpy(s->w + s->bytes * (size_t)i, s->w, s->bytes);
    free(row);
}

/* Best seconds for one pass over all matrices at batch nb. */
static double time_matmul(const moe_cpu_kernels *k, moe_pool *pool, const mats *s, int64_t nb,
                          int reps, int passes) {
    const moe_dtype dt = moe_dtype_dot_type(s->wt);
    float *x = xmalloc((size_t)(nb * s->k) * sizeof(float));
    for (int64_t i = 0; i < nb * s->k; i++) x[i] = frand();
    void *xq = xmalloc(moe_dtype_row_bytes(dt, s->k) * (size_t)nb);
    float *y = xmalloc((size_t)(nb * s->m) * sizeof(float));
    moe_op_quantize(k, s->wt, x, xq, nb, s->k);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = moe_mono_s();
        for (int p = 0; p < passes; p++)
            for (int i = 0; i < s->n; i++)
                moe_op_matmul(k, pool, s->wt, s->w + s->bytes * (size_t)i, s->m, s->k, xq, nb, y,
                              s->m);
        const double t = (moe_mono_s() - t0) / passes;
        if (t < best) best = t;
    }
    free(x);
    free(xq);
    free(y);
    return best;
}

/* The packed layout (moe_packed_pack) at batch 1, as decode runs it: rows
 * in contiguous shares of whole tiles, the table's packed kernel for the
 * type (exact numerics, decode's). */
typedef struct packed_ctx {
    const moe_cpu_kernels *k;
    const mats *s;
    const char *w; /* the packed matrix */
    const void *xq;
    float *y;
} packed_ctx;

static void packed_task(void *arg, int ith, int nth) {
    const packed_ctx *c = arg;
    const moe_cpu_kernels *k = c->k;
    const int64_t m = c->s->m, kd = c->s->k, tiles = m / MOE_Q8P_ROWS;
    const int64_t r0 = tiles * ith / nth * MOE_Q8P_ROWS,
                  r1 = tiles * (ith + 1) / nth * MOE_Q8P_ROWS;
    switch (c->s->wt) {
    case MOE_DTYPE_Q8_0:
        k->gemm_q8p(0, kd, c->w, r0, r1, c->xq, 1, c->y, m);
        break;
    case MOE_DTYPE_Q4_K:
        k->gemm_q4kp(kd, c->w, r0, r1, c->xq, 1, c->y, m);
        break;
    case MOE_DTYPE_Q5_K:
        k->gemm_q5kp(0, kd, c->w, r0, r1, c->xq, 1, c->y, m);
        break;
    case MOE_DTYPE_Q6_K:
        k->gemm_q6kp(0, kd, c->w, r0, r1, c->xq, 1, c->y, m);
        break;
    case MOE_DTYPE_IQ4_XS:
        k->gemm_iq4xsp(0, kd, c->w, r0, r1, c->xq, 1, c->y, m);
        break;
    default: /* Q4_0, IQ4_NL */
        k->gemm_q4p(c->s->wt, kd, c->w, r0, r1, c->xq, 1, c->y, m);
        break;
    }
}

/* Best seconds for one pass over s's matrices packed (pk: packed copies,
 * back to back), batch 1. */
static double time_packed(const moe_cpu_kernels *k, moe_pool *pool, const mats *s, const char *pk,
                          int reps) {
    float *x = xmalloc((size_t)s->k * sizeof(float));
    for (int64_t i = 0; i < s->k; i++) x[i] = frand();
    void *xq = xmalloc(moe_dtype_row_bytes(moe_dtype_dot_type(s->wt), s->k));
    float *y = xmalloc((size_t)s->m * sizeof(float));
    moe_op_quantize(k, s->wt, x, xq, 1, s->k);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = moe_mono_s();
        for (int i = 0; i < s->n; i++) {
            packed_ctx c = {k, s, pk + s->bytes * (size_t)i, xq, y};
            moe_pool_run(pool, packed_task, &c);
        }
        const double t = moe_mono_s() - t0;
        if (t < best) best = t;
    }
    free(x);
    free(xq);
    free(y);
    return best;
}

/* ==== Pool ================================================================= */

static void empty_task(void *arg, int ith, int nth) {
    (void)arg;
    (void)ith;
    (void)nth;
}

static void bench_pool(int n_threads) {
    moe_pool *pool;
    if (moe_pool_create(&pool, n_threads) != 0) return;
    const int hot = quick ? 2000 : 200000;
    for (int i = 0; i < 1000; i++) moe_pool_run(pool, empty_task, NULL);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        const double t0 = moe_mono_s();
        for (int i = 0; i < hot; i++) moe_pool_run(pool, empty_task, NULL);
        const double t = (moe_mono_s() - t0) / hot;
        if (t < best) best = t;
    }
    printf("{\"kernel\":\"pool_run_empty\",\"threads\":%d,\"mode\":\"hot\",\"us\":%.3f}\n",
           n_threads, best * 1e6);
    /* after an idle gap longer than the spin: the workers sleep on the futex */
    const int cold = quick ? 20 : 300;
    double sum = 0, mn = 1e30;
    for (int i = 0; i < cold; i++) {
        usleep(2000);
        const double t0 = moe_mono_s();
        moe_pool_run(pool, empty_task, NULL);
        const double t = moe_mono_s() - t0;
        sum += t;
        if (t < mn) mn = t;
    }
    printf("{\"kernel\":\"pool_run_empty\",\"threads\":%d,\"mode\":\"asleep\",\"us\":%.3f,"
           "\"min_us\":%.3f}\n",
           n_threads, sum / cold * 1e6, mn * 1e6);
    fflush(stdout);
    moe_pool_destroy(pool);
}

/* ==== Main ================================================================= */

static void usage(FILE *f) {
    fprintf(f, "usage: bench-kernels [--quick] [--matvec TYPES]\n"
               "Measures memory read bandwidth, matrix x vector throughput of every kernel\n"
               "level against it, GEMM throughput at nb=16/64/256, and the pool's hand-off cost.\n"
               "Prints one JSON object per line.\n"
               "  --quick          tiny sizes (a smoke test; the numbers mean little)\n"
               "  --matvec TYPES   the read loop and the matvec of TYPES only (comma\n"
               "                   separated type names, e.g. q4_K,q6_K,iq4_xs)\n"
               "  --help           this text\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--matvec") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    moe_pool *pool2;
    if (moe_pool_create(&pool2, 2) != 0) return 1;
    const int reps = quick ? 2 : 5;
    const size_t big = quick ? ((size_t)16 << 20) : ((size_t)512 << 20);

    double read_bw[3] = {0};
    for (int t = 1; t <= 2; t++) {
        read_bw[t] = bench_read(t == 1 ? NULL : pool2, big, reps + 2);
        printf("{\"kernel\":\"read\",\"threads\":%d,\"gb_s\":%.2f}\n", t, read_bw[t]);
        fflush(stdout);
    }

    static const moe_dtype types[] = {
        MOE_DTYPE_Q8_0,   MOE_DTYPE_Q4_0,   MOE_DTYPE_Q4_1, MOE_DTYPE_Q5_0, MOE_DTYPE_Q5_1,
        MOE_DTYPE_IQ4_NL, MOE_DTYPE_Q2_K,   MOE_DTYPE_Q3_K, MOE_DTYPE_Q4_K, MOE_DTYPE_Q5_K,
        MOE_DTYPE_Q6_K,   MOE_DTYPE_IQ4_XS, MOE_DTYPE_F16,  MOE_DTYPE_BF16, MOE_DTYPE_F32};
    const int64_t em = quick ? 256 : 2816, ek = quick ? 256 : 1024;
    const size_t total = quick ? ((size_t)8 << 20) : ((size_t)384 << 20);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        if (!wanted(types[ti])) continue;
        mats s;
        mats_init(&s, types[ti], em, ek, total);
        for (int l = MOE_CPU_LEVEL_COUNT - 1; l >= 0; l--) {
            const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
            if (!k) continue;
            if (l == MOE_CPU_SCALAR && !quick) continue; /* minutes for no information */
            for (int t = 1; t <= 2; t++) {
                const double sec = time_matmul(k, t == 1 ? NULL : pool2, &s, 1, reps, 1);
                const double gbs = (double)s.bytes * s.n / sec / 1e9;
                printf("{\"kernel\":\"%s_matvec\",\"level\":\"%s\",\"threads\":%d,\"gb_s\":%.2f,"
                       "\"read_gb_s\":%.2f,\"ratio\":%.3f,\"m\":%lld,\"k\":%lld,\"mb\":%.0f}\n",
                       moe_dtype_name(s.wt), k->name, t, gbs, read_bw[t], gbs / read_bw[t],
                       (long long)s.m, (long long)s.k, (double)s.bytes * s.n / 1048576.0);
                fflush(stdout);
            }
            /* the same kernel on one matrix in L2 (passes over it): the
             * compute ceiling; below the read loop means compute-bound */
            mats h;
            mats_init(&h, types[ti], quick ? 64 : 256, ek, 0);
            const double hs = time_matmul(k, NULL, &h, 1, reps, quick ? 4 : 400);
            printf("{\"kernel\":\"%s_matvec_l2\",\"level\":\"%s\",\"threads\":1,"
                   "\"gb_s\":%.2f,\"m\":%lld,\"k\":%lld}\n",
                   moe_dtype_name(h.wt), k->name, (double)h.bytes / hs / 1e9, (long long)h.m,
                   (long long)h.k);
            free(h.w);
        }
        /* the packed layout where the model packs this type (decode's
         * kernel for it): whole tiles only (m is a multiple of 16) */
        if (moe_packed_usable(s.wt) && s.m % MOE_Q8P_ROWS == 0) {
            const moe_cpu_kernels *k = moe_cpu_kernels_best();
            char *pk = xmalloc(s.bytes * (size_t)s.n);
            for (int i = 0; i < s.n; i++)
                moe_packed_pack(s.wt, s.w + s.bytes * (size_t)i, pk + s.bytes * (size_t)i, s.m,
                                s.k);
            for (int t = 1; t <= 2; t++) {
                const double sec = time_packed(k, t == 1 ? NULL : pool2, &s, pk, reps);
                const double gbs = (double)s.bytes * s.n / sec / 1e9;
                printf("{\"kernel\":\"%s_packed_matvec\",\"level\":\"%s\",\"threads\":%d,"
                       "\"gb_s\":%.2f,\"read_gb_s\":%.2f,\"ratio\":%.3f,\"m\":%lld,\"k\":%lld}\n",
                       moe_dtype_name(s.wt), k->name, t, gbs, read_bw[t], gbs / read_bw[t],
                       (long long)s.m, (long long)s.k);
                fflush(stdout);
            }
            free(pk);
        }
        free(s.w);
    }

    if (only) {
        moe_pool_destroy(pool2);
        return 0;
    }

    /* GEMM: one expert-sized matrix (cache resident), batches of activations. */
    static const moe_dtype gtypes[] = {MOE_DTYPE_Q8_0, MOE_DTYPE_Q4_0, MOE_DTYPE_Q4_K,
                                       MOE_DTYPE_F16};
    /* Q8_0 in both numerics: exact (llama.cpp's per-block formula) and fast
     * (the int8 tile, AMX where "amx" is 1; MOE_AMX=0 shows the VNNI tile). */
    static const int64_t nbs[] = {8, 16, 64, 256};
    for (size_t ti = 0; ti < sizeof gtypes / sizeof gtypes[0]; ti++) {
        mats s;
        mats_init(&s, gtypes[ti], em, ek, 0);
        for (int l = MOE_CPU_LEVEL_COUNT - 1; l >= 1; l--) {
            const moe_cpu_kernels *kx = moe_cpu_kernels_get((moe_cpu_level)l);
            if (!kx) continue;
            for (int fast = 0; fast <= (s.wt == MOE_DTYPE_Q8_0); fast++) {
                const moe_cpu_kernels *k = fast ? moe_cpu_kernels_fast(kx) : kx;
                for (size_t ni = 0; ni < sizeof nbs / sizeof nbs[0]; ni++) {
                    const int64_t nb = nbs[ni];
                    if (quick && nb > 64) continue;
                    for (int t = 1; t <= 2; t++) {
                        const double sec = time_matmul(k, t == 1 ? NULL : pool2, &s, nb, reps, 2);
                        const double gf = 2.0 * (double)s.m * (double)s.k * (double)nb / sec / 1e9;
                        printf("{\"kernel\":\"%s_gemm\",\"level\":\"%s\",\"numerics\":\"%s\","
                               "\"amx\":%d,\"threads\":%d,\"nb\":%lld,\"gflop_s\":%.1f,\"m\":%lld,"
                               "\"k\":%lld}\n",
                               moe_dtype_name(s.wt), k->name, fast ? "fast" : "exact",
                               fast && l == MOE_CPU_AVX512 && moe_cpu_has_amx(), t, (long long)nb,
                               gf, (long long)s.m, (long long)s.k);
                        fflush(stdout);
                    }
                }
            }
        }
        free(s.w);
    }

    moe_pool_destroy(pool2);
    bench_pool(2);
    return 0;
}
