/*
 * cpu/membw.c - the machine's memory read bandwidth, measured: a plain loop
 * that sums a buffer much larger than the caches, split over a pool's
 * threads. Decode at batch 1 reads every active weight once per token, so
 * its weight bandwidth over this one says how close to the memory limit it
 * runs (moectl bench, bench-kernels).
 *
 * Compiled without ISA flags (SSE2 is x86-64's baseline).
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "moe/ops.h"

/* The loop prefetches this many bytes ahead, as the matrix x vector kernels
 * do: on a core whose hardware prefetchers alone leave bandwidth unused, a
 * loop without it would understate what the memory delivers (and the
 * kernels would read "faster than memory"). On the 2-vCPU build VM it reads
 * the same at 2, 4, 8 and 16 KB (15.5-16.9 GB/s on 1 thread, 30.2-31.7 on
 * 2, 2026-12-07). */
#define READ_PF_DIST 8192
/* Sequential streams read at once (the kernels read 1 to 8 rows side by
 * side, in 2 parts of their range), one cache line of each a step. */
#define READ_STREAMS 4

typedef struct read_ctx {
    const char *p;
    size_t n; /* bytes, a multiple of 64 */
    uint64_t sum[MOE_READ_MAX_THREADS];
} read_ctx;

static void read_task(void *arg, int ith, int nth) {
    read_ctx *c = arg;
    const size_t lines = c->n / 64;
    const size_t a = lines * (size_t)ith / (size_t)nth, b = lines * (size_t)(ith + 1) / (size_t)nth;
    const size_t len = (b - a) / READ_STREAMS;
#if defined(__SSE2__)
    /* 16-byte loads: 8-byte loads left ~7% of the bandwidth unread */
    __m128i s[READ_STREAMS];
    for (int j = 0; j < READ_STREAMS; j++) s[j] = _mm_setzero_si128();
    for (size_t i = 0; i < len; i++)
        for (int j = 0; j < READ_STREAMS; j++) {
            const char *p = c->p + 64 * (a + (size_t)j * len + i);
            __builtin_prefetch(p + READ_PF_DIST, 0, 3);
            const __m128i *v = (const __m128i *)p;
            s[j] = _mm_add_epi64(s[j], _mm_add_epi64(_mm_add_epi64(_mm_load_si128(v), v[1]),
                                                     _mm_add_epi64(v[2], v[3])));
        }
    __m128i t = _mm_setzero_si128();
    for (size_t i = a + READ_STREAMS * len; i < b; i++)
        t = _mm_add_epi64(t, _mm_load_si128((const __m128i *)(c->p + 64 * i)));
    for (int j = 0; j < READ_STREAMS; j++) t = _mm_add_epi64(t, s[j]);
    if (ith < MOE_READ_MAX_THREADS) c->sum[ith] = (uint64_t)_mm_cvtsi128_si64(t);
#else
    uint64_t s[READ_STREAMS] = {0};
    for (size_t i = 0; i < len; i++)
        for (int j = 0; j < READ_STREAMS; j++) {
            const uint64_t *v = (const uint64_t *)(c->p + 64 * (a + (size_t)j * len + i));
            __builtin_prefetch((const char *)v + READ_PF_DIST, 0, 3);
            s[j] += (v[0] + v[1]) + (v[2] + v[3]) + (v[4] + v[5]) + (v[6] + v[7]);
        }
    uint64_t t = 0;
    for (size_t i = a + READ_STREAMS * len; i < b; i++) t += *(const uint64_t *)(c->p + 64 * i);
    for (int j = 0; j < READ_STREAMS; j++) t += s[j];
    if (ith < MOE_READ_MAX_THREADS) c->sum[ith] = t;
#endif
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double moe_read_bandwidth(moe_pool *pool, size_t bytes, int reps) {
    bytes = bytes / 64 * 64;
    if (bytes == 0 || reps < 1) return 0;
    uint64_t *buf = aligned_alloc(64, bytes);
    if (!buf) return 0;
    for (size_t i = 0; i < bytes / 8; i++) buf[i] = i; /* every page mapped, no zero page */
    read_ctx c = {.p = (const char *)buf, .n = bytes};
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = mono_s();
        moe_pool_run(pool, read_task, &c);
        const double t = mono_s() - t0;
        if (t < best) best = t;
    }
    volatile uint64_t sink = c.sum[0];
    (void)sink;
    free(buf);
    return best > 0 ? (double)bytes / best / 1e9 : 0;
}
