/*
 * tests/unit/test_kernels_fast.c - the fast Q8_0 numerics (moe_cpu_kernels_fast,
 * cpu/q8_fast.h): every level's gemm_fast (and the AMX and VNNI tiles, each
 * where the CPU has it) equals an independent plain-C formula bit for bit;
 * the fast tables switch to it from MOE_FAST_MIN_ROWS rows and keep the
 * exact kernels below; and the fast results stay within float rounding of
 * the exact ones and of a double-precision product.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/dtype.h"
#include "moe/ops.h"
#include "test.h"

#include "cpu/kernels.h" /* moe__cpu_use_amx */

/* Random Q8_0 rows: quants over the whole int8 range (-128 included) and
 * scales of different magnitudes per block, some zero. */
static void rand_q8_rows(uint64_t *s, moe_block_q8_0 *b, int64_t nblocks) {
    for (int64_t i = 0; i < nblocks; i++) {
        const uint64_t u = test_rand_u64(s);
        const float d =
            (u % 17 == 0) ? 0.0f
                          : ldexpf(1.0f + (float)(u % 1000) / 1000.0f, (int)((u >> 10) % 24) - 16);
        b[i].d = moe_f32_to_f16(d);
        for (int j = 0; j < MOE_QK8_0; j++) b[i].qs[j] = (int8_t)(test_rand_u64(s) & 0xff);
    }
}

/* The formula of q8_fast.h written out again, in double where it is exact:
 * block sums in int64, scale products and accumulation as the contract says. */
static float ref_fast(int64_t nblk, const moe_block_q8_0 *w, const moe_block_q8_0 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        int64_t sum = 0;
        for (int j = 0; j < MOE_QK8_0; j++) sum += (int64_t)w[b].qs[j] * x[b].qs[j];
        const double d = (double)moe_f16_to_f32(w[b].d) * (double)moe_f16_to_f32(x[b].d);
        s = (float)fma(d, (double)sum, (double)s); /* d * sum exact: one rounding */
    }
    return s;
}

typedef struct fcase {
    int64_t k, m, r0, r1, nb, ldy;
} fcase;

static const fcase fcases[] = {
    {32, 16, 0, 16, 3, 16},
    {64, 20, 0, 20, 4, 24},
    {96, 33, 3, 30, 5, 40},
    {1024, 64, 0, 64, 8, 64},
    {1024, 48, 4, 44, 16, 48},
    {1024 + 32, 37, 0, 37, 17, 41},
    {3072, 32, 0, 32, 33, 32},
    {4096 + 32, 35, 1, 34, 20, 35},
    {2816, 32, 16, 32, 64, 40},
    {256, 160, 0, 160, 3, 160},
    {160, 27, 2, 25, 67, 27},
    {64, 6, 1, 4, 9, 6},
    /* every column count of the tile's last pass (1..8) */
    {1024, 32, 0, 32, 2, 32},
    {64, 20, 0, 20, 6, 24},
    {96, 33, 3, 30, 7, 40},
    {256, 48, 0, 48, 14, 48},
};

static float *run(void (*gemm)(moe_dtype, int64_t, const void *, int64_t, int64_t, const void *,
                               int64_t, float *, int64_t),
                  const void *W, const void *X, const fcase *c) {
    const size_t ny = (size_t)(c->nb * c->ldy);
    float *y = test_xmalloc(ny * sizeof *y);
    for (size_t i = 0; i < ny; i++) y[i] = -7.0f;
    gemm(MOE_DTYPE_Q8_0, c->k, W, c->r0, c->r1, X, c->nb, y, c->ldy);
    for (int64_t b = 0; b < c->nb; b++)
        for (int64_t r = 0; r < c->ldy; r++)
            if ((r < c->r0 || r >= c->r1) && y[b * c->ldy + r] != -7.0f)
                TEST_FAIL("wrote outside the output at b=%lld r=%lld", (long long)b, (long long)r);
    return y;
}

static void check_bits(const char *what, const float *y, const float *ref, const fcase *c) {
    for (int64_t b = 0; b < c->nb; b++)
        for (int64_t r = c->r0; r < c->r1; r++) {
            const float v = y[b * c->ldy + r], e = ref[b * c->ldy + r];
            if (memcmp(&v, &e, sizeof v))
                TEST_FAIL("%s k=%lld nb=%lld rows [%lld,%lld): y[%lld][%lld] = %.9g, want %.9g",
                          what, (long long)c->k, (long long)c->nb, (long long)c->r0,
                          (long long)c->r1, (long long)b, (long long)r, v, e);
        }
}

TEST(kernels_fast_bitexact_every_level) {
    uint64_t seed = 4242;
    const int amx = moe__cpu_use_amx;
    for (size_t ci = 0; ci < sizeof fcases / sizeof fcases[0]; ci++) {
        const fcase *c = &fcases[ci];
        const int64_t nblk = c->k / MOE_QK8_0;
        moe_block_q8_0 *W = test_xmalloc((size_t)(c->m * nblk) * sizeof *W);
        moe_block_q8_0 *X = test_xmalloc((size_t)(c->nb * nblk) * sizeof *X);
        rand_q8_rows(&seed, W, c->m * nblk);
        rand_q8_rows(&seed, X, c->nb * nblk);
        /* the extreme sums: -128 * -128 over a whole block (2^19), then -128 * 127 */
        for (int64_t i = 0; i < c->m * nblk; i += nblk) memset(W[i].qs, 0x80, MOE_QK8_0);
        for (int64_t i = 0; i < c->nb * nblk; i += nblk) memset(X[i].qs, 0x80, MOE_QK8_0);
        for (int64_t i = nblk - 1; nblk > 1 && i < c->m * nblk; i += nblk)
            memset(W[i].qs, 0x80, MOE_QK8_0);
        for (int64_t i = nblk - 1; nblk > 1 && i < c->nb * nblk; i += nblk)
            memset(X[i].qs, 0x7f, MOE_QK8_0);
        float *ref = test_xmalloc((size_t)(c->nb * c->ldy) * sizeof *ref);
        for (int64_t b = 0; b < c->nb; b++)
            for (int64_t r = c->r0; r < c->r1; r++)
                ref[b * c->ldy + r] = ref_fast(nblk, W + r * nblk, X + b * nblk);
        for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
            const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
            if (!k) continue;
            /* the AVX-512 level twice where AMX is there: with it and without */
            for (int use_amx = (l == MOE_CPU_AVX512 ? amx : 0); use_amx >= 0; use_amx--) {
                moe__cpu_use_amx = use_amx;
                float *y = run(k->gemm_fast, W, X, c);
                char what[64];
                snprintf(what, sizeof what, "%s%s gemm_fast", k->name, use_amx ? "+amx" : "");
                check_bits(what, y, ref, c);
                free(y);
            }
            moe__cpu_use_amx = amx;
        }
        free(ref);
        free(W);
        free(X);
    }
}

/* A fast table's gemm: the exact kernel below MOE_FAST_MIN_ROWS rows, the
 * fast one from there; F32 weights are the same in both. */
TEST(kernels_fast_table_switches_at_min_rows) {
    const moe_cpu_kernels *best = moe_cpu_kernels_best();
    const moe_cpu_kernels *fast = moe_cpu_kernels_fast(best);
    ASSERT(!best->fast && fast->fast && fast->level == best->level);
    ASSERT(moe_cpu_kernels_fast(fast) == fast);
    ASSERT(moe_cpu_kernels_pick(1) == best);
    ASSERT(moe_cpu_kernels_pick(0) == fast);
    uint64_t seed = 99;
    for (int64_t nb = 1; nb <= 5; nb++) {
        const fcase c = {1024, 32, 0, 32, nb, 32};
        moe_block_q8_0 *W = test_xmalloc(32 * 32 * sizeof *W),
                       *X = test_xmalloc((size_t)nb * 32 * sizeof *X);
        rand_q8_rows(&seed, W, 32 * 32);
        rand_q8_rows(&seed, X, nb * 32);
        float *y = run(fast->gemm, W, X, &c);
        float *e = run(nb >= MOE_FAST_MIN_ROWS ? best->gemm_fast : best->gemm, W, X, &c);
        check_bits("fast table", y, e, &c);
        free(y);
        free(e);
        free(W);
        free(X);
    }
}

/* The two numerics differ by float rounding only: each stays within a few
 * ulps of sum |w x| of the double product, on quantised real-valued data. */
TEST(kernels_fast_close_to_exact) {
    const moe_cpu_kernels *best = moe_cpu_kernels_best();
    uint64_t seed = 7;
    const int64_t k = 2816, m = 48, nb = 9, nblk = k / MOE_QK8_0;
    float *wf = test_xmalloc((size_t)(k * m) * 4), *xf = test_xmalloc((size_t)(k * nb) * 4);
    for (int64_t i = 0; i < k * m; i++) wf[i] = test_rand_f32(&seed) * (1.0f + (float)(i % 7));
    for (int64_t i = 0; i < k * nb; i++) xf[i] = test_rand_f32(&seed) * 3.0f;
    moe_block_q8_0 *W = test_xmalloc((size_t)(m * nblk) * sizeof *W);
    moe_block_q8_0 *X = test_xmalloc((size_t)(nb * nblk) * sizeof *X);
    moe_op_quantize(best, MOE_DTYPE_Q8_0, wf, W, m, k);
    moe_op_quantize(best, MOE_DTYPE_Q8_0, xf, X, nb, k);
    const fcase c = {k, m, 0, m, nb, m};
    float *ye = run(best->gemm, W, X, &c), *yf = run(best->gemm_fast, W, X, &c);
    double worst = 0.0;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = 0; r < m; r++) {
            double ref = 0.0, mag = 0.0;
            for (int64_t i = 0; i < nblk; i++) {
                const moe_block_q8_0 *wb = W + r * nblk + i, *xb = X + b * nblk + i;
                int64_t s = 0, a = 0;
                for (int j = 0; j < MOE_QK8_0; j++) {
                    s += (int64_t)wb->qs[j] * xb->qs[j];
                    a += llabs((int64_t)wb->qs[j] * xb->qs[j]);
                }
                const double d = (double)moe_f16_to_f32(wb->d) * moe_f16_to_f32(xb->d);
                ref += d * (double)s;
                mag += fabs(d) * (double)a;
            }
            const double ef = fabs(yf[b * m + r] - ref) / mag, ee = fabs(ye[b * m + r] - ref) / mag;
            if (!(ef <= 1e-6) || !(ee <= 1e-6))
                TEST_FAIL("y[%lld][%lld]: fast %.9g, exact %.9g, double %.9g (sum|wx| %.3g)",
                          (long long)b, (long long)r, yf[b * m + r], ye[b * m + r], ref, mag);
            if (ef > worst) worst = ef;
        }
    fprintf(stderr, "fast vs double: worst error %.3g of sum|w x| (%s%s)\n", worst, best->name,
            moe_cpu_has_amx() ? ", amx" : "");
    free(ye);
    free(yf);
    free(W);
    free(X);
    free(wf);
    free(xf);
}

/* The packed layout (moe/ops.h, moe_q8p_pack): its bytes as described there,
 * and gemm_q8p on whole tiles (all of them, or a share from one tile to the
 * next) equals gemm (exact) and gemm_fast on the rows as stored, bit for
 * bit, for 1 to 33 activation rows; the rows after the last tile stay as
 * stored. */
TEST(kernels_q8p_packed_equals_plain) {
    const moe_cpu_kernels *best = moe_cpu_kernels_best();
    if (!best->gemm_q8p) SKIP("no packed Q8_0 kernel at this level (AVX-512 only)");
    static const struct {
        int64_t k, m;
    } shapes[] = {{32, 16}, {96, 37}, {1024, 64}, {2816, 48}, {64, 165}};
    /* 8-15: the one-tile kernel of q8p_fast_avx512.c (8 columns, then
     * 1-7 in its own groups); 16+: pairs of tiles (2 tiles x 1-4 columns a
     * pass; 19, 21: groups of unequal size; 40: a second chunk of columns) */
    static const int64_t nbs[] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                  12, 13, 14, 15, 16, 17, 19, 21, 33, 40};
    uint64_t seed = 515;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t k = shapes[si].k, m = shapes[si].m, nblk = k / MOE_QK8_0;
        const int64_t m16 = m / MOE_Q8P_ROWS * MOE_Q8P_ROWS;
        moe_block_q8_0 *W = test_xmalloc((size_t)(m * nblk) * sizeof *W);
        moe_block_q8_0 *P = test_xmalloc((size_t)(m * nblk) * sizeof *P);
        rand_q8_rows(&seed, W, m * nblk);
        moe_q8p_pack(W, P, m, k);
        /* the bytes: tile t, blocks in pairs (an odd last one alone), each
         * pair's quants and then its scales; row r's scale at 2r of its
         * block's scales, its quant 4j+i at 64j + 4r + i of the quants */
        for (int64_t t = 0; t < m16 / MOE_Q8P_ROWS; t++)
            for (int64_t b = 0; b < nblk; b++) {
                const uint8_t *pt = (const uint8_t *)(P + t * MOE_Q8P_ROWS * nblk);
                const int paired = (b | 1) < nblk;
                const uint8_t *pq = pt + (b / 2) * 1088 + (b & 1) * 512;
                const uint8_t *pd =
                    paired ? pt + (b / 2) * 1088 + 1024 + (b & 1) * 32 : pt + b * 544 + 512;
                for (int r = 0; r < MOE_Q8P_ROWS; r++) {
                    const moe_block_q8_0 *w = W + (t * MOE_Q8P_ROWS + r) * nblk + b;
                    ASSERT(!memcmp(pd + 2 * r, &w->d, 2));
                    for (int q = 0; q < MOE_QK8_0; q++)
                        if (pq[64 * (q / 4) + 4 * r + q % 4] != ((uint8_t)w->qs[q] ^ 0x80))
                            TEST_FAIL("packed k=%lld tile %lld block %lld row %d quant %d",
                                      (long long)k, (long long)t, (long long)b, r, q);
                }
            }
        ASSERT(!memcmp(P + m16 * nblk, W + m16 * nblk, (size_t)((m - m16) * nblk) * sizeof *W));
        for (size_t ni = 0; ni < sizeof nbs / sizeof nbs[0]; ni++) {
            const int64_t nb = nbs[ni];
            moe_block_q8_0 *X = test_xmalloc((size_t)(nb * nblk) * sizeof *X);
            rand_q8_rows(&seed, X, nb * nblk);
            /* activations as quantised (never -128: ggml's exact row kernel
             * takes x * sign(w) in int8, where -128 has no negation) */
            for (int64_t i = 0; i < nb * nblk; i++)
                for (int q = 0; q < MOE_QK8_0; q++)
                    if (X[i].qs[q] == -128) X[i].qs[q] = -127;
            for (int fast = 0; fast <= 1; fast++) {
                const fcase all = {k, m, 0, m, nb, m};
                float *ref = run(fast ? best->gemm_fast : best->gemm, W, X, &all);
                /* all the tiles, then the rest as stored; then tile 1 alone */
                float *y = test_xmalloc((size_t)(nb * m) * sizeof *y);
                best->gemm_q8p(fast, k, P, 0, m16, X, nb, y, m);
                if (m16 < m)
                    (fast ? best->gemm_fast : best->gemm)(MOE_DTYPE_Q8_0, k, P, m16, m, X, nb, y,
                                                          m);
                check_bits(fast ? "gemm_q8p fast" : "gemm_q8p exact", y, ref, &all);
                if (m16 >= 2 * MOE_Q8P_ROWS) {
                    const fcase one = {k, m, MOE_Q8P_ROWS, 2 * MOE_Q8P_ROWS, nb, m};
                    for (int64_t i = 0; i < nb * m; i++) y[i] = -7.0f;
                    best->gemm_q8p(fast, k, P, one.r0, one.r1, X, nb, y, m);
                    for (int64_t b = 0; b < nb; b++)
                        for (int64_t r = 0; r < m; r++)
                            if ((r < one.r0 || r >= one.r1) && y[b * m + r] != -7.0f)
                                TEST_FAIL("gemm_q8p wrote outside tile 1 at b=%lld r=%lld",
                                          (long long)b, (long long)r);
                    check_bits("gemm_q8p tile 1", y, ref, &one);
                }
                if (m16 >= 3 * MOE_Q8P_ROWS) { /* from tile 1 on: pairs from an odd tile */
                    const fcase odd = {k, m, MOE_Q8P_ROWS, m16, nb, m};
                    for (int64_t i = 0; i < nb * m; i++) y[i] = -7.0f;
                    best->gemm_q8p(fast, k, P, odd.r0, odd.r1, X, nb, y, m);
                    check_bits("gemm_q8p tiles 1..", y, ref, &odd);
                }
                free(y);
                free(ref);
            }
            free(X);
        }
        free(W);
        free(P);
    }
}

/* The packed Q4_K layout (moe/ops.h, moe_q4kp_pack): its header decodes to
 * each row's scales, minimums, d and dmin and its quants sit as described;
 * gemm_q4kp on whole tiles (all, or one tile alone) equals gemm on the rows
 * as stored bit for bit (Q4_K has one arithmetic: gemm's, exact), for 1 to
 * 33 activation rows; the rows after the last tile stay as stored. Weights
 * random bytes (every 6-bit scale and minimum, every nibble), d and dmin of
 * different magnitudes. */
TEST(kernels_q4kp_packed_equals_plain) {
    const moe_cpu_kernels *best = moe_cpu_kernels_best();
    if (!best->gemm_q4kp) SKIP("no packed Q4_K kernel at this level (AVX-512 only)");
    static const struct {
        int64_t k, m;
    } shapes[] = {{256, 16}, {512, 37}, {1024, 64}, {2816, 48}, {256, 165}};
    static const int64_t nbs[] = {1, 2, 3, 4, 5, 7, 8, 9, 17, 33};
    uint64_t seed = 919;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t k = shapes[si].k, m = shapes[si].m, nblk = k / MOE_QK_K;
        const int64_t m16 = m / MOE_Q8P_ROWS * MOE_Q8P_ROWS;
        moe_block_q4_K *W = test_xmalloc((size_t)(m * nblk) * sizeof *W);
        moe_block_q4_K *P = test_xmalloc((size_t)(m * nblk) * sizeof *P);
        for (int64_t i = 0; i < m * nblk; i++) {
            uint8_t *b = (uint8_t *)&W[i];
            for (size_t j = 0; j < sizeof *W; j++) b[j] = (uint8_t)test_rand_u64(&seed);
            const uint64_t u = test_rand_u64(&seed);
            W[i].d = moe_f32_to_f16(ldexpf(1.0f + (float)(u % 1000) / 1000.0f, (int)(u % 12) - 14));
            W[i].dmin = moe_f32_to_f16(u % 13 == 0 ? 0.0f : ldexpf(1.5f, (int)(u >> 20) % 12 - 16));
        }
        moe_q4kp_pack(W, P, m, k);
        for (int64_t t = 0; t < m16 / MOE_Q8P_ROWS; t++)
            for (int64_t b = 0; b < nblk; b++) {
                const uint8_t *h =
                    (const uint8_t *)(P + t * MOE_Q8P_ROWS * nblk) + b * MOE_Q4KP_BLOCK;
                for (int r = 0; r < MOE_Q8P_ROWS; r++) {
                    const moe_block_q4_K *w = W + (t * MOE_Q8P_ROWS + r) * nblk + b;
                    ASSERT(!memcmp(h + 192 + 2 * r, &w->d, 2) &&
                           !memcmp(h + 224 + 2 * r, &w->dmin, 2));
                    for (int g = 0; g < 8; g++) {
                        /* get_scale_min_k4 (ggml), written out again */
                        const uint8_t *s = w->scales;
                        const int sc = g < 4 ? s[g] & 63 : (s[g + 4] & 15) | (s[g - 4] >> 6) << 4;
                        const int mn = g < 4 ? s[g + 4] & 63 : (s[g + 4] >> 4) | (s[g] >> 6) << 4;
                        const int j = 16 * (g % 4) + r, sh = g < 4 ? 0 : 4, hs = g < 4 ? 0 : 2;
                        const int hj = j < 32 ? 0 : 4;
                        const int psc = (h[j] >> sh & 15) | (h[64 + j % 32] >> hj >> hs & 3) << 4;
                        const int pmn = (h[96 + j] >> sh & 15) | (h[160 + j % 32] >> hj >> hs & 3)
                                                                     << 4;
                        if (psc != sc || pmn != mn)
                            TEST_FAIL("packed k=%lld tile %lld block %lld row %d group %d: scale "
                                      "%d/%d min %d/%d",
                                      (long long)k, (long long)t, (long long)b, r, g, psc, sc, pmn,
                                      mn);
                    }
                    for (int p = 0; p < 4; p++)
                        for (int q = 0; q < 8; q++)
                            ASSERT(!memcmp(h + 256 + (8 * p + q) * 64 + 4 * r,
                                           w->qs + 32 * p + 4 * q, 4));
                }
            }
        ASSERT(!memcmp(P + m16 * nblk, W + m16 * nblk, (size_t)((m - m16) * nblk) * sizeof *W));
        for (size_t ni = 0; ni < sizeof nbs / sizeof nbs[0]; ni++) {
            const int64_t nb = nbs[ni];
            float *xf = test_xmalloc((size_t)(nb * k) * sizeof *xf);
            for (int64_t i = 0; i < nb * k; i++)
                xf[i] = test_rand_f32(&seed) * (1.0f + (float)(i % 5));
            void *X = test_xmalloc((size_t)nb * moe_dtype_row_bytes(MOE_DTYPE_Q8_K, k));
            moe_op_quantize(best, MOE_DTYPE_Q4_K, xf, X, nb, k);
            float *ref = test_xmalloc((size_t)(nb * m) * sizeof *ref);
            float *y = test_xmalloc((size_t)(nb * m) * sizeof *y);
            best->gemm(MOE_DTYPE_Q4_K, k, W, 0, m, X, nb, ref, m);
            const fcase all = {k, m, 0, m, nb, m};
            best->gemm_q4kp(k, P, 0, m16, X, nb, y, m);
            if (m16 < m) best->gemm(MOE_DTYPE_Q4_K, k, P, m16, m, X, nb, y, m);
            check_bits("gemm_q4kp", y, ref, &all);
            if (m16 >= 2 * MOE_Q8P_ROWS) {
                const fcase one = {k, m, MOE_Q8P_ROWS, 2 * MOE_Q8P_ROWS, nb, m};
                for (int64_t i = 0; i < nb * m; i++) y[i] = -7.0f;
                best->gemm_q4kp(k, P, one.r0, one.r1, X, nb, y, m);
                for (int64_t b = 0; b < nb; b++)
                    for (int64_t r = 0; r < m; r++)
                        if ((r < one.r0 || r >= one.r1) && y[b * m + r] != -7.0f)
                            TEST_FAIL("gemm_q4kp wrote outside tile 1 at b=%lld r=%lld",
                                      (long long)b, (long long)r);
                check_bits("gemm_q4kp tile 1", y, ref, &one);
            }
            free(y), free(ref), free(X), free(xf);
        }
        free(W), free(P);
    }
}

/* The packed Q4_0 / IQ4_NL layout (moe_q4p_pack): each row's d and quants
 * where moe/ops.h says, and gemm_q4p on whole tiles (all, or one alone)
 * equal to gemm on the rows as stored bit for bit, for 1 to 33 activation
 * rows; the rows after the last tile stay as stored. Quants random bytes,
 * d of different magnitudes. */
TEST(kernels_q4p_packed_equals_plain) {
    const moe_cpu_kernels *best = moe_cpu_kernels_best();
    if (!best->gemm_q4p) SKIP("no packed Q4_0 kernel at this level (AVX-512 only)");
    static const struct {
        int64_t k, m;
    } shapes[] = {{32, 16}, {96, 37}, {1024, 64}, {2816, 48}, {64, 165}};
    static const int64_t nbs[] = {1, 2, 3, 4, 5, 7, 8, 9, 17, 33};
    static const moe_dtype types[] = {MOE_DTYPE_Q4_0, MOE_DTYPE_IQ4_NL};
    uint64_t seed = 4404;
    for (size_t ti = 0; ti < 2; ti++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const moe_dtype wt = types[ti];
            const int64_t k = shapes[si].k, m = shapes[si].m, nblk = k / MOE_QK4;
            const int64_t m16 = m / MOE_Q8P_ROWS * MOE_Q8P_ROWS;
            moe_block_q4_0 *W = test_xmalloc((size_t)(m * nblk) * sizeof *W);
            moe_block_q4_0 *P = test_xmalloc((size_t)(m * nblk) * sizeof *P);
            for (int64_t i = 0; i < m * nblk; i++) {
                for (int j = 0; j < 16; j++) W[i].qs[j] = (uint8_t)test_rand_u64(&seed);
                const uint64_t u = test_rand_u64(&seed);
                W[i].d = moe_f32_to_f16(u % 11 == 0 ? 0.0f
                                                    : ldexpf(1.0f + (float)(u % 1000) / 1000.0f,
                                                             (int)(u >> 12) % 16 - 12));
            }
            moe_q4p_pack(W, P, m, k);
            for (int64_t t = 0; t < m16 / MOE_Q8P_ROWS; t++)
                for (int64_t b = 0; b < nblk; b++) {
                    const uint8_t *h =
                        (const uint8_t *)(P + t * MOE_Q8P_ROWS * nblk) + b * MOE_Q4P_BLOCK;
                    for (int r = 0; r < MOE_Q8P_ROWS; r++) {
                        const moe_block_q4_0 *w = W + (t * MOE_Q8P_ROWS + r) * nblk + b;
                        ASSERT(!memcmp(h + 2 * r, &w->d, 2));
                        for (int q = 0; q < 4; q++)
                            ASSERT(!memcmp(h + 32 + 64 * q + 4 * r, w->qs + 4 * q, 4));
                    }
                }
            ASSERT(!memcmp(P + m16 * nblk, W + m16 * nblk, (size_t)((m - m16) * nblk) * sizeof *W));
            for (size_t ni = 0; ni < sizeof nbs / sizeof nbs[0]; ni++) {
                const int64_t nb = nbs[ni];
                moe_block_q8_0 *X = test_xmalloc((size_t)(nb * nblk) * sizeof *X);
                rand_q8_rows(&seed, X, nb * nblk);
                float *ref = test_xmalloc((size_t)(nb * m) * sizeof *ref);
                float *y = test_xmalloc((size_t)(nb * m) * sizeof *y);
                best->gemm(wt, k, W, 0, m, X, nb, ref, m);
                const fcase all = {k, m, 0, m, nb, m};
                best->gemm_q4p(wt, k, P, 0, m16, X, nb, y, m);
                if (m16 < m) best->gemm(wt, k, P, m16, m, X, nb, y, m);
                check_bits(wt == MOE_DTYPE_Q4_0 ? "gemm_q4p q4_0" : "gemm_q4p iq4_nl", y, ref,
                           &all);
                if (m16 >= 2 * MOE_Q8P_ROWS) {
                    const fcase one = {k, m, MOE_Q8P_ROWS, 2 * MOE_Q8P_ROWS, nb, m};
                    for (int64_t i = 0; i < nb * m; i++) y[i] = -7.0f;
                    best->gemm_q4p(wt, k, P, one.r0, one.r1, X, nb, y, m);
                    for (int64_t b = 0; b < nb; b++)
                        for (int64_t r = 0; r < m; r++)
                            if ((r < one.r0 || r >= one.r1) && y[b * m + r] != -7.0f)
                                TEST_FAIL("gemm_q4p wrote outside tile 1 at b=%lld r=%lld",
                                          (long long)b, (long long)r);
                    check_bits("gemm_q4p tile 1", y, ref, &one);
                }
                free(y), free(ref), free(X);
            }
            free(W), free(P);
        }
}

/* IQ4_XS's fast numerics (moe/ops.h, moe_iq4xsp_pack) written out again:
 * per super-block the exact sum of (scale - 32) x level x activation, one
 * fmaf with d_w * d_x. *mag gets the sum of the products' magnitudes. */
static float ref_iq4xs_fast(int64_t nblk, const void *wv, const moe_block_q8_K *x, double *mag) {
    const moe_block_iq4_xs *w = wv;
    float s = 0.0f;
    *mag = 0.0;
    for (int64_t b = 0; b < nblk; b++) {
        int64_t isum = 0, a = 0;
        for (int g = 0; g < 8; g++) {
            const int ls =
                ((w[b].scales_l[g / 2] >> 4 * (g % 2)) & 15) | ((w[b].scales_h >> 2 * g) & 3) << 4;
            for (int j = 0; j < 32; j++) {
                const uint8_t byte = w[b].qs[16 * g + j % 16];
                const int lv = moe_iq4nl_values[j < 16 ? byte & 15 : byte >> 4];
                const int64_t p = (int64_t)(ls - 32) * lv * x[b].qs[32 * g + j];
                isum += p;
                a += llabs(p);
            }
        }
        ASSERT(isum >= INT32_MIN && isum <= INT32_MAX);
        const float d = moe_f16_to_f32(w[b].d) * x[b].d;
        s = fmaf(d, (float)isum, s);
        *mag += fabs((double)d) * (double)a;
    }
    return s;
}

/* Q6_K's fast numerics written out again: per super-block the exact sum of
 * scale x (level - 32) x activation, one fmaf with d_w * d_x. */
static float ref_q6k_fast(int64_t nblk, const void *wv, const moe_block_q8_K *x, double *mag) {
    const moe_block_q6_K *w = wv;
    float s = 0.0f;
    *mag = 0.0;
    for (int64_t b = 0; b < nblk; b++) {
        int64_t isum = 0, a = 0;
        for (int e = 0; e < MOE_QK_K; e++) {
            const int h = e / 128, t = e % 128 / 32, l = e % 32;
            const uint8_t lb = w[b].ql[64 * h + 32 * (t & 1) + l];
            const int q = ((t < 2 ? lb & 15 : lb >> 4) | ((w[b].qh[32 * h + l] >> 2 * t) & 3) << 4);
            const int64_t p = (int64_t)w[b].scales[e / 16] * (q - 32) * x[b].qs[e];
            isum += p;
            a += llabs(p);
        }
        ASSERT(isum >= INT32_MIN && isum <= INT32_MAX);
        const float d = moe_f16_to_f32(w[b].d) * x[b].d;
        s = fmaf(d, (float)isum, s);
        *mag += fabs((double)d) * (double)a;
    }
    return s;
}

/* Q5_K's fast numerics (Q4_K's packed arithmetic) written out again: per
 * super-block the exact sums of scale x level x activation and of minimum
 * x the activations' group sums, each times its scale product by one fmaf
 * into its own float, the minimums' subtracted at the end. */
static float ref_q5k_fast(int64_t nblk, const void *wv, const moe_block_q8_K *x, double *mag) {
    const moe_block_q5_K *w = wv;
    float s = 0.0f, sm = 0.0f;
    *mag = 0.0;
    for (int64_t b = 0; b < nblk; b++) {
        int64_t isum = 0, imin = 0, a = 0, am = 0;
        for (int g = 0; g < 8; g++) {
            const uint8_t *k = w[b].scales; /* get_scale_min_k4 (ggml), written out again */
            const int sc = g < 4 ? k[g] & 63 : (k[g + 4] & 15) | (k[g - 4] >> 6) << 4;
            const int mn = g < 4 ? k[g + 4] & 63 : (k[g + 4] >> 4) | (k[g] >> 6) << 4;
            for (int l = 0; l < 32; l++) {
                const uint8_t qb = w[b].qs[32 * (g / 2) + l];
                const int q = (g % 2 ? qb >> 4 : qb & 15) | ((w[b].qh[l] >> g) & 1) << 4;
                const int64_t p = (int64_t)sc * q * x[b].qs[32 * g + l];
                isum += p;
                a += llabs(p);
            }
            imin += (int64_t)mn * (x[b].bsums[2 * g] + x[b].bsums[2 * g + 1]);
            am += llabs((int64_t)mn * (x[b].bsums[2 * g] + x[b].bsums[2 * g + 1]));
        }
        ASSERT(isum >= INT32_MIN && isum <= INT32_MAX);
        const float d = moe_f16_to_f32(w[b].d) * x[b].d, dm = moe_f16_to_f32(w[b].dmin) * x[b].d;
        s = fmaf((float)isum, d, s);
        sm = fmaf((float)imin, dm, sm);
        *mag += fabs((double)d) * (double)a + fabs((double)dm) * (double)am;
    }
    return s - sm;
}

/* A 6-bit value of row r, group g (0..7) in moe_q4kp_pack's scales layout
 * at h. */
static int packed_k6(const uint8_t *h, int r, int g) {
    const int j = 16 * (g % 4) + r, sh = g < 4 ? 0 : 4, hs = g < 4 ? 0 : 2, hj = j < 32 ? 0 : 4;
    return (h[j] >> sh & 15) | (h[64 + j % 32] >> hj >> hs & 3) << 4;
}

/* Row r of block b's bytes where moe/ops.h puts them in the packed
 * super-block h (IQ4_XS or Q6_K). */
static void check_layout(moe_dtype dt, const uint8_t *h, const void *wv, int r) {
    if (dt == MOE_DTYPE_IQ4_XS) {
        const moe_block_iq4_xs *w = wv;
        ASSERT(!memcmp(h + 96 + 2 * r, &w->d, 2));
        for (int g = 0; g < 8; g++) {
            const int ls = ((w->scales_l[g / 2] >> 4 * (g % 2)) & 15) | ((w->scales_h >> 2 * g) & 3)
                                                                            << 4;
            ASSERT_EQ_INT(packed_k6(h, r, g), ls);
            for (int q = 0; q < 4; q++)
                ASSERT(!memcmp(h + 128 + (4 * g + q) * 64 + 4 * r, w->qs + 16 * g + 4 * q, 4));
        }
        return;
    }
    if (dt == MOE_DTYPE_Q5_K) {
        const moe_block_q5_K *w = wv;
        ASSERT(!memcmp(h + 192 + 2 * r, &w->d, 2) && !memcmp(h + 224 + 2 * r, &w->dmin, 2));
        for (int g = 0; g < 8; g++) {
            const uint8_t *k = w->scales;
            ASSERT_EQ_INT(packed_k6(h, r, g),
                          g < 4 ? k[g] & 63 : (k[g + 4] & 15) | (k[g - 4] >> 6) << 4);
            ASSERT_EQ_INT(packed_k6(h + 96, r, g),
                          g < 4 ? k[g + 4] & 63 : (k[g + 4] >> 4) | (k[g] >> 6) << 4);
        }
        for (int q = 0; q < 8; q++) {
            ASSERT(!memcmp(h + 256 + 64 * q + 4 * r, w->qh + 4 * q, 4));
            for (int p = 0; p < 4; p++)
                ASSERT(!memcmp(h + 768 + (8 * p + q) * 64 + 4 * r, w->qs + 32 * p + 4 * q, 4));
        }
        return;
    }
    const moe_block_q6_K *w = wv;
    ASSERT(!memcmp(h + 256 + 2 * r, &w->d, 2));
    for (int g = 0; g < 16; g++) ASSERT_EQ_INT((int8_t)h[16 * g + r], w->scales[g]);
    for (int hh = 0; hh < 2; hh++)
        for (int q = 0; q < 8; q++) {
            const uint8_t *o = h + 288 + (8 * hh + q) * 192 + 4 * r;
            ASSERT(!memcmp(o, w->ql + 64 * hh + 4 * q, 4));
            ASSERT(!memcmp(o + 64, w->ql + 64 * hh + 32 + 4 * q, 4));
            ASSERT(!memcmp(o + 128, w->qh + 32 * hh + 4 * q, 4));
        }
}

/* The packed layouts with two numerics (IQ4_XS: moe_iq4xsp_pack, Q6_K:
 * moe_q6kp_pack, Q5_K: moe_q5kp_pack): each row's bytes where moe/ops.h says; the packed gemm's
 * exact numerics equal gemm on the rows as stored bit for bit, its fast
 * numerics (and gemm_fast on the rows as stored) an independent formula
 * bit for bit, for 1 to 33 activation rows, all tiles or one; the fast
 * results within float rounding of the exact ones; the rows after the
 * last tile stay as stored. */
static void check_two_numerics(moe_dtype dt, uint64_t seed) {
    const moe_cpu_kernels *best = moe_cpu_kernels_best();
    void (*gemmp)(int, int64_t, const void *, int64_t, int64_t, const void *, int64_t, float *,
                  int64_t) = dt == MOE_DTYPE_IQ4_XS ? best->gemm_iq4xsp
                             : dt == MOE_DTYPE_Q6_K ? best->gemm_q6kp
                                                    : best->gemm_q5kp;
    if (!gemmp) SKIP("no packed kernel for this type at this level (AVX-512 only)");
    const size_t bs = moe_dtype_row_bytes(dt, MOE_QK_K);
    const size_t pb = dt == MOE_DTYPE_IQ4_XS ? MOE_IQ4XSP_BLOCK
                      : dt == MOE_DTYPE_Q6_K ? MOE_Q6KP_BLOCK
                                             : MOE_Q5KP_BLOCK;
    float (*fast_ref)(int64_t, const void *, const moe_block_q8_K *, double *) =
        dt == MOE_DTYPE_IQ4_XS ? ref_iq4xs_fast
        : dt == MOE_DTYPE_Q6_K ? ref_q6k_fast
                               : ref_q5k_fast;
    static const struct {
        int64_t k, m;
    } shapes[] = {{256, 16}, {512, 37}, {1024, 64}, {2816, 48}, {768, 165}};
    static const int64_t nbs[] = {1, 2, 3, 4, 5, 7, 9, 17, 33};
    double worst = 0.0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t k = shapes[si].k, m = shapes[si].m, nblk = k / MOE_QK_K;
        const int64_t m16 = m / MOE_Q8P_ROWS * MOE_Q8P_ROWS;
        const size_t wrb = bs * (size_t)nblk;
        uint8_t *W = test_xmalloc((size_t)m * wrb), *P = test_xmalloc((size_t)m * wrb);
        for (size_t i = 0; i < (size_t)m * wrb; i++) W[i] = (uint8_t)test_rand_u64(&seed);
        for (int64_t i = 0; i < m * nblk; i++) { /* d: finite, different magnitudes */
            const uint64_t u = test_rand_u64(&seed);
            const uint16_t d = moe_f32_to_f16(
                u % 11 == 0 ? 0.0f
                            : ldexpf(1.0f + (float)(u % 1000) / 1000.0f, (int)(u >> 12) % 12 - 14));
            memcpy(W + (size_t)i * bs + (dt == MOE_DTYPE_Q6_K ? bs - 2 : 0), &d, 2);
            if (dt == MOE_DTYPE_Q5_K) { /* dmin too */
                const uint16_t dm =
                    moe_f32_to_f16(u % 13 == 0 ? 0.0f : ldexpf(1.5f, (int)(u >> 20) % 12 - 16));
                memcpy(W + (size_t)i * bs + 2, &dm, 2);
            }
        }
        (dt == MOE_DTYPE_IQ4_XS ? moe_iq4xsp_pack
         : dt == MOE_DTYPE_Q6_K ? moe_q6kp_pack
                                : moe_q5kp_pack)(W, P, m, k);
        for (int64_t t = 0; t < m16 / MOE_Q8P_ROWS; t++)
            for (int64_t b = 0; b < nblk; b++)
                for (int r = 0; r < MOE_Q8P_ROWS; r++)
                    check_layout(dt, P + (size_t)t * MOE_Q8P_ROWS * wrb + (size_t)b * pb,
                                 W + (size_t)(t * MOE_Q8P_ROWS + r) * wrb + (size_t)b * bs, r);
        ASSERT(!memcmp(P + (size_t)m16 * wrb, W + (size_t)m16 * wrb, (size_t)(m - m16) * wrb));
        for (size_t ni = 0; ni < sizeof nbs / sizeof nbs[0]; ni++) {
            const int64_t nb = nbs[ni];
            const size_t xrb = moe_dtype_row_bytes(MOE_DTYPE_Q8_K, k);
            float *xf = test_xmalloc((size_t)(nb * k) * sizeof *xf);
            for (int64_t i = 0; i < nb * k; i++)
                xf[i] = test_rand_f32(&seed) * (1.0f + (float)(i % 5));
            void *X = test_xmalloc((size_t)nb * xrb);
            moe_op_quantize(best, dt, xf, X, nb, k);
            float *ref = test_xmalloc((size_t)(nb * m) * sizeof *ref);
            float *fref = test_xmalloc((size_t)(nb * m) * sizeof *fref);
            float *y = test_xmalloc((size_t)(nb * m) * sizeof *y);
            best->gemm(dt, k, W, 0, m, X, nb, ref, m);
            for (int64_t b = 0; b < nb; b++)
                for (int64_t r = 0; r < m; r++) {
                    double mag;
                    fref[b * m + r] =
                        fast_ref(nblk, W + (size_t)r * wrb,
                                 (const moe_block_q8_K *)((const char *)X + b * xrb), &mag);
                    const double e = fabs((double)fref[b * m + r] - ref[b * m + r]);
                    if (!(e <= 1e-6 * mag + 1e-30))
                        TEST_FAIL("%s k=%lld y[%lld][%lld]: fast %.9g, exact %.9g (sum|w x| %.3g)",
                                  moe_dtype_name(dt), (long long)k, (long long)b, (long long)r,
                                  fref[b * m + r], ref[b * m + r], mag);
                    if (mag > 0 && e / mag > worst) worst = e / mag;
                }
            const fcase all = {k, m, 0, m, nb, m};
            for (int fast = 0; fast < 2; fast++) {
                const char *what = fast ? "packed gemm, fast" : "packed gemm, exact";
                const float *want = fast ? fref : ref;
                gemmp(fast, k, P, 0, m16, X, nb, y, m);
                if (m16 < m) (fast ? best->gemm_fast : best->gemm)(dt, k, P, m16, m, X, nb, y, m);
                check_bits(what, y, want, &all);
                if (m16 >= 2 * MOE_Q8P_ROWS) {
                    const fcase one = {k, m, MOE_Q8P_ROWS, 2 * MOE_Q8P_ROWS, nb, m};
                    for (int64_t i = 0; i < nb * m; i++) y[i] = -7.0f;
                    gemmp(fast, k, P, one.r0, one.r1, X, nb, y, m);
                    for (int64_t b = 0; b < nb; b++)
                        for (int64_t r = 0; r < m; r++)
                            if ((r < one.r0 || r >= one.r1) && y[b * m + r] != -7.0f)
                                TEST_FAIL("%s wrote outside tile 1 at b=%lld r=%lld", what,
                                          (long long)b, (long long)r);
                    check_bits(what, y, want, &one);
                }
            }
            best->gemm_fast(dt, k, W, 0, m, X, nb, y, m);
            check_bits("gemm_fast (rows as stored)", y, fref, &all);
            free(y), free(fref), free(ref), free(X), free(xf);
        }
        free(W), free(P);
    }
    fprintf(stderr, "%s fast vs exact: worst difference %.3g of sum|w x|\n", moe_dtype_name(dt),
            worst);
}
TEST(kernels_iq4xsp_packed_equals_plain) {
    check_two_numerics(MOE_DTYPE_IQ4_XS, 4405);
}
TEST(kernels_q6kp_packed_equals_plain) {
    check_two_numerics(MOE_DTYPE_Q6_K, 4406);
}
TEST(kernels_q5kp_packed_equals_plain) {
    check_two_numerics(MOE_DTYPE_Q5_K, 4407);
}
