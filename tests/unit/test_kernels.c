/*
 * tests/unit/test_kernels.c - every SIMD level the CPU has against the scalar
 * table and double-precision references (moe/ops.h); the row ops are in
 * test_rowops.c.
 *
 * Tolerances: a gemm output may differ from the scalar table's (and from the
 * double reference over the dequantised inputs) by float reassociation only:
 * |y - ref| <= GEMM_RTOL * sum_i |w_i * x_i| + 1e-30. With random data the
 * dot itself is ~ sum|w x| / sqrt(k), so an error of one element or one block
 * is far above this bound.
 */
#include <dlfcn.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "moe/dtype.h"
#include "moe/error.h"
#include "moe/ops.h"
#include "moe/threadpool.h"
#include "test.h"

#include "cpu/kernels.h" /* moe__cpu_has_avx512bf16 */
#include "internal.h"    /* moe__matmul_jobs */

#define GEMM_RTOL 3e-5

static const moe_dtype all_types[] = {MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_BF16, MOE_DTYPE_Q8_0};
#define N_TYPES 4

/* ==== Levels =============================================================== */

TEST(kernels_levels) {
    const moe_cpu_level have = moe_cpu_detect();
    ASSERT(moe_cpu_kernels_get(MOE_CPU_SCALAR) != NULL);
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
        if (l <= (int)have) {
            ASSERT(k != NULL);
            ASSERT_EQ_INT(k->level, l);
            ASSERT(k->name && k->from_f32 && k->gemm && k->dot_f32 && k->axpy_f32 && k->dots_f32 &&
                   k->wsum_f32);
        } else {
            ASSERT(k == NULL);
        }
    }
    ASSERT(moe_cpu_kernels_get(MOE_CPU_LEVEL_COUNT) == NULL);
    ASSERT(moe_cpu_kernels_get((moe_cpu_level)-1) == NULL);
    fprintf(stderr, "detected level: %s\n", moe_cpu_kernels_get(have)->name);
}

TEST(kernels_env_override) {
    const moe_cpu_level have = moe_cpu_detect();
    unsetenv("MOE_CPU");
    ASSERT_EQ_INT(moe_cpu_kernels_best()->level, have);
    setenv("MOE_CPU", "scalar", 1);
    ASSERT_EQ_INT(moe_cpu_kernels_best()->level, MOE_CPU_SCALAR);
    setenv("MOE_CPU", "AVX2", 1);
    ASSERT_EQ_INT(moe_cpu_kernels_best()->level, have < MOE_CPU_AVX2 ? have : MOE_CPU_AVX2);
    /* a level the CPU may lack, or nonsense: the detected level, no crash */
    setenv("MOE_CPU", "avx512", 1);
    ASSERT_EQ_INT(moe_cpu_kernels_best()->level, have);
    setenv("MOE_CPU", "avx9000", 1);
    ASSERT_EQ_INT(moe_cpu_kernels_best()->level, have);
    unsetenv("MOE_CPU");
}

/* ==== from_f32 ============================================================= */

/* Inputs with rounding ties, zeros, tiny and large values. */
static float *special_input(uint64_t *s, int64_t n) {
    float *x = test_rand_vec(s, n, 3.0f);
    /* block 0: amax 127 -> id 1, so x * id hits .5 ties exactly */
    const float ties[] = {127.0f, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f, 1.5f, -126.5f};
    for (int i = 0; i < 8 && i < n; i++) x[i] = ties[i];
    if (n >= 64) /* block 1: all zero */
        for (int i = 32; i < 64; i++) x[i] = 0.0f;
    if (n >= 96) /* block 2: tiny values (f16 subnormals), one negative zero */
        for (int i = 64; i < 96; i++) x[i] = (float)(i - 80) * 1e-7f;
    if (n >= 96) x[70] = -0.0f;
    if (n >= 128) /* block 3: large values, beyond f16 range */
        for (int i = 96; i < 128; i++) x[i] = (float)(i - 112) * 1e4f;
    return x;
}

TEST(kernels_from_f32_exact_across_levels) {
    const moe_cpu_kernels *ks = moe_cpu_kernels_get(MOE_CPU_SCALAR);
    const int64_t sizes[] = {32, 64, 128, 4096 + 32, 1056};
    uint64_t seed = 12345;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int64_t n = sizes[si];
        float *x = special_input(&seed, n);
        for (int ti = 0; ti < N_TYPES; ti++) {
            const moe_dtype dt = all_types[ti];
            const size_t rb = moe_dtype_row_bytes(dt, n);
            unsigned char *ref = test_xmalloc(rb), *got = test_xmalloc(rb);
            ks->from_f32(dt, x, ref, n);
            for (int l = 1; l < MOE_CPU_LEVEL_COUNT; l++) {
                const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
                if (!k) continue;
                memset(got, 0xa5, rb);
                k->from_f32(dt, x, got, n);
                for (size_t i = 0; i < rb; i++)
                    if (got[i] != ref[i])
                        TEST_FAIL("%s %s n=%lld: byte %zu differs (%02x vs scalar %02x)", k->name,
                                  moe_dtype_name(dt), (long long)n, i, got[i], ref[i]);
            }
            free(ref);
            free(got);
        }
        free(x);
    }
}

TEST(kernels_from_f32_matches_scalar_conversions) {
    uint64_t seed = 777;
    const int64_t n = 1000;
    float *x = special_input(&seed, n);
    x[10] = 65504.0f;
    x[11] = 65520.0f; /* rounds to inf in f16 */
    x[12] = 1e-8f;
    x[13] = -3.0e38f;
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!k) continue;
        uint16_t *h = test_xmalloc((size_t)n * 2);
        k->from_f32(MOE_DTYPE_F16, x, h, n);
        for (int64_t i = 0; i < n; i++) ASSERT_EQ_INT(h[i], moe_f32_to_f16(x[i]));
        k->from_f32(MOE_DTYPE_BF16, x, h, n);
        for (int64_t i = 0; i < n; i++) ASSERT_EQ_INT(h[i], moe_f32_to_bf16(x[i]));
        float *f = test_xmalloc((size_t)n * 4);
        k->from_f32(MOE_DTYPE_F32, x, f, n);
        ASSERT(memcmp(f, x, (size_t)n * 4) == 0);
        free(f);
        free(h);
    }
    free(x);
}

/* The Q8_0 activation formula of ggml's x86 build: id = 127/amax and
 * round-half-even (the reference file writer uses 1/d and roundf). */
TEST(kernels_q8_0_activation_formula) {
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 3.5f;
    x[4] = 0.5f;
    x[5] = -126.5f;
    x[6] = 1.0f;
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!k) continue;
        moe_block_q8_0 b;
        k->from_f32(MOE_DTYPE_Q8_0, x, &b, 32);
        ASSERT_EQ_INT(b.d, moe_f32_to_f16(1.0f));
        ASSERT_EQ_INT(b.qs[0], 127);
        ASSERT_EQ_INT(b.qs[1], 2); /* ties to even */
        ASSERT_EQ_INT(b.qs[2], -2);
        ASSERT_EQ_INT(b.qs[3], 4);
        ASSERT_EQ_INT(b.qs[4], 0);
        ASSERT_EQ_INT(b.qs[5], -126);
        ASSERT_EQ_INT(b.qs[6], 1);
        for (int i = 7; i < 32; i++) ASSERT_EQ_INT(b.qs[i], 0);
        /* an all-zero block */
        float z[32] = {0};
        k->from_f32(MOE_DTYPE_Q8_0, z, &b, 32);
        ASSERT_EQ_INT(b.d, 0);
        for (int i = 0; i < 32; i++) ASSERT_EQ_INT(b.qs[i], 0);
    }
}

TEST(kernels_quantize_rows) {
    uint64_t seed = 99;
    const int64_t n = 96, rows = 3;
    float *x = test_rand_vec(&seed, n * rows, 2.0f);
    const moe_cpu_kernels *k = moe_cpu_kernels_best();
    for (int ti = 0; ti < N_TYPES; ti++) {
        const moe_dtype wt = all_types[ti];
        const size_t rb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), n);
        unsigned char *a = test_xmalloc(rb * rows), *b = test_xmalloc(rb * rows);
        moe_op_quantize(k, wt, x, a, rows, n);
        for (int64_t r = 0; r < rows; r++)
            k->from_f32(moe_dtype_dot_type(wt), x + r * n, b + r * rb, n);
        ASSERT(memcmp(a, b, rb * rows) == 0);
        free(a);
        free(b);
    }
    free(x);
}

/* ==== gemm ================================================================= */

typedef struct gemm_case {
    int64_t k, m, r0, r1, nb, ldy;
} gemm_case;

static const gemm_case gemm_cases[] = {
    {32, 1, 0, 1, 1, 1},           {32, 5, 0, 5, 1, 5},           {64, 7, 0, 7, 3, 9},
    {64, 16, 0, 16, 4, 16},        {96, 33, 3, 30, 2, 40},        {256, 19, 0, 19, 17, 19},
    {4096 + 32, 37, 0, 37, 1, 37}, {4096 + 32, 37, 5, 36, 3, 41}, {4096 + 32, 21, 1, 20, 17, 23},
    {512, 50, 0, 50, 70, 53},      {1024, 40, 7, 33, 8, 40},
};

typedef struct gemm_data {
    moe_dtype wt;
    int64_t k, m, nb;
    void *W;   /* m rows of wt */
    float *Wf; /* dequantised W */
    float *xf; /* nb x k activations (float) */
} gemm_data;

static void gemm_data_init(gemm_data *g, moe_dtype wt, int64_t k, int64_t m, int64_t nb,
                           uint64_t seed) {
    g->wt = wt;
    g->k = k;
    g->m = m;
    g->nb = nb;
    float *w = test_rand_vec(&seed, m * k, 1.0f);
    /* rows with different magnitudes, so block scales differ */
    for (int64_t r = 0; r < m; r++)
        for (int64_t i = 0; i < k; i++) w[r * k + i] *= 0.25f + (float)(r % 5);
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    g->W = test_xmalloc(wrb * (size_t)m);
    g->Wf = test_xmalloc((size_t)(m * k) * sizeof(float));
    for (int64_t r = 0; r < m; r++) {
        moe_dtype_from_f32(wt, w + r * k, (char *)g->W + r * wrb, k);
        moe_dtype_to_f32(wt, (char *)g->W + r * wrb, g->Wf + r * k, k);
    }
    free(w);
    g->xf = test_rand_vec(&seed, nb * k, 2.0f);
}

static void gemm_data_free(gemm_data *g) {
    free(g->W);
    free(g->Wf);
    free(g->xf);
}

/* y = level k's gemm; also checks that nothing outside the output was written. */
static float *run_gemm(const moe_cpu_kernels *k, const gemm_data *g, void *xq, const gemm_case *c) {
    const size_t ny = (size_t)(c->nb * c->ldy);
    float *y = test_xmalloc(ny * sizeof(float));
    const float sentinel = -12345.0f;
    for (size_t i = 0; i < ny; i++) y[i] = sentinel;
    k->gemm(g->wt, g->k, g->W, c->r0, c->r1, xq, c->nb, y, c->ldy);
    for (int64_t b = 0; b < c->nb; b++)
        for (int64_t r = 0; r < c->ldy; r++) {
            const int inside = r >= c->r0 && r < c->r1;
            if (!inside && y[b * c->ldy + r] != sentinel)
                TEST_FAIL("%s %s: wrote outside the output at b=%lld r=%lld", k->name,
                          moe_dtype_name(g->wt), (long long)b, (long long)r);
            if (inside && y[b * c->ldy + r] == sentinel)
                TEST_FAIL("%s %s: output b=%lld r=%lld not written", k->name, moe_dtype_name(g->wt),
                          (long long)b, (long long)r);
        }
    return y;
}

static void check_gemm_type(moe_dtype wt) {
    const moe_cpu_kernels *ks = moe_cpu_kernels_get(MOE_CPU_SCALAR);
    const moe_dtype dt = moe_dtype_dot_type(wt);
    for (size_t ci = 0; ci < sizeof gemm_cases / sizeof gemm_cases[0]; ci++) {
        const gemm_case *c = &gemm_cases[ci];
        gemm_data g;
        gemm_data_init(&g, wt, c->k, c->m, c->nb, 1000 + ci);
        const size_t xrb = moe_dtype_row_bytes(dt, c->k);
        void *xq = test_xmalloc(xrb * (size_t)c->nb);
        /* the scalar quantiser: the blocks are identical at every level */
        moe_op_quantize(ks, wt, g.xf, xq, c->nb, c->k);
        float *xd = test_xmalloc((size_t)(c->nb * c->k) * sizeof(float));
        for (int64_t b = 0; b < c->nb; b++)
            moe_dtype_to_f32(dt, (char *)xq + b * xrb, xd + b * c->k, c->k);

        float *ys = run_gemm(ks, &g, xq, c);
        for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
            const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
            if (!k) continue;
            float *y = l == 0 ? ys : run_gemm(k, &g, xq, c);
            for (int64_t b = 0; b < c->nb; b++)
                for (int64_t r = c->r0; r < c->r1; r++) {
                    double ref = 0.0, mag = 0.0;
                    for (int64_t i = 0; i < c->k; i++) {
                        const double p = (double)g.Wf[r * c->k + i] * (double)xd[b * c->k + i];
                        ref += p;
                        mag += fabs(p);
                    }
                    const double tol = GEMM_RTOL * mag + 1e-30;
                    const double v = y[b * c->ldy + r], vs = ys[b * c->ldy + r];
                    if (!(fabs(v - ref) <= tol) || !(fabs(v - vs) <= tol))
                        TEST_FAIL("%s %s k=%lld m=%lld nb=%lld: y[%lld][%lld] = %.9g, scalar "
                                  "%.9g, double %.9g (tol %.3g)",
                                  k->name, moe_dtype_name(wt), (long long)c->k, (long long)c->m,
                                  (long long)c->nb, (long long)b, (long long)r, v, vs, ref, tol);
                }
            if (l) free(y);
        }
        free(ys);
        free(xd);
        free(xq);
        gemm_data_free(&g);
    }
}

TEST(kernels_gemm_f32) {
    check_gemm_type(MOE_DTYPE_F32);
}
TEST(kernels_gemm_f16) {
    check_gemm_type(MOE_DTYPE_F16);
}
TEST(kernels_gemm_bf16) {
    check_gemm_type(MOE_DTYPE_BF16);
}
TEST(kernels_gemm_q8_0) {
    check_gemm_type(MOE_DTYPE_Q8_0);
}

/* The AVX-512 BF16 path of CPUs without AVX512_BF16 (widen + FMA). */
TEST(kernels_gemm_bf16_without_avx512bf16) {
    if (!moe_cpu_kernels_get(MOE_CPU_AVX512)) SKIP("no AVX-512 on this CPU");
    moe__cpu_has_avx512bf16 = 0;
    check_gemm_type(MOE_DTYPE_BF16);
}

/* A row's result does not depend on which rows or columns share its call. */
TEST(kernels_gemm_subranges_consistent) {
    const int64_t k = 256, m = 45, nb = 9;
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *kt = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!kt) continue;
        for (int ti = 0; ti < N_TYPES; ti++) {
            const moe_dtype wt = all_types[ti];
            gemm_data g;
            gemm_data_init(&g, wt, k, m, nb, 4242 + ti);
            const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
            void *xq = test_xmalloc(xrb * nb);
            moe_op_quantize(kt, wt, g.xf, xq, nb, k);
            float *full = test_xmalloc(sizeof(float) * m * nb),
                  *part = test_xmalloc(sizeof(float) * m * nb);
            kt->gemm(wt, k, g.W, 0, m, xq, nb, full, m);
            /* uneven row pieces, and the batch in pieces of 1..4 */
            const int64_t cuts[] = {0, 3, 4, 17, 18, 35, 45};
            for (int64_t b0 = 0, step = 1; b0 < nb; b0 += step, step = step % 4 + 1) {
                const int64_t nbp = b0 + step <= nb ? step : nb - b0;
                for (int ci = 0; ci + 1 < 7; ci++)
                    kt->gemm(wt, k, g.W, cuts[ci], cuts[ci + 1], (char *)xq + b0 * xrb, nbp,
                             part + b0 * m, m);
            }
            /* Same arithmetic per output regardless of grouping, except that
             * the level may switch kernels with the batch size: allow
             * reassociation-level differences, and demand exactness for
             * the row split at a fixed batch. */
            for (int64_t i = 0; i < m * nb; i++)
                ASSERT_NEAR(part[i], full[i], 1e-4 * (1 + fabs(full[i])));
            for (int ci = 0; ci + 1 < 7; ci++)
                kt->gemm(wt, k, g.W, cuts[ci], cuts[ci + 1], xq, nb, part, m);
            if (memcmp(part, full, sizeof(float) * m * nb) != 0)
                TEST_FAIL("%s %s: row split changed the results", kt->name, moe_dtype_name(wt));
            free(full);
            free(part);
            free(xq);
            gemm_data_free(&g);
        }
    }
}

/* ggml's x86 vec_dot_q8_0_q8_0 (AVX2 / AVX512-VNNI builds), written out: 8
 * int32 lanes of 4 products each, acc_lane = fma(dw * dx, lane, acc_lane)
 * per block, then hsum_float_8's order of additions. */
static float ggml_x86_dot_q8_0(int64_t k, const moe_block_q8_0 *w, const moe_block_q8_0 *x) {
    float acc[8] = {0};
    for (int64_t b = 0; b < k / 32; b++) {
        const float d = moe_f16_to_f32(w[b].d) * moe_f16_to_f32(x[b].d);
        for (int l = 0; l < 8; l++) {
            int32_t s = 0;
            for (int j = 0; j < 4; j++) s += (int32_t)w[b].qs[4 * l + j] * x[b].qs[4 * l + j];
            acc[l] = fmaf(d, (float)s, acc[l]);
        }
    }
    const float r0 = acc[4] + acc[0], r1 = acc[5] + acc[1], r2 = acc[6] + acc[2],
                r3 = acc[7] + acc[3];
    return (r0 + r2) + (r1 + r3);
}

/* The SIMD levels' Q8_0 gemm equals llama.cpp's x86 arithmetic bit for bit,
 * for every batch size (vec_dot at decode, llamafile's Q8_0 sgemm in
 * prefill: the same per-lane arithmetic). */
TEST(kernels_q8_0_gemm_bitexact_ggml_x86) {
    /* {k, m, r0, r1, nb}; the 32768+64 shape is past the kernels' tables */
    const int64_t shapes[][5] = {{1024, 37, 0, 37, 1},      {4096 + 32, 9, 2, 9, 2},
                                 {32, 5, 1, 4, 3},          {2816, 20, 0, 20, 9},
                                 {1024, 35, 3, 35, 17},     {96, 40, 0, 40, 70},
                                 {4096 + 32, 16, 0, 16, 4}, {32768 + 64, 3, 0, 3, 1}};
    for (int si = 0; si < 8; si++) {
        const int64_t k = shapes[si][0], m = shapes[si][1], r0 = shapes[si][2], r1 = shapes[si][3];
        const int64_t nb = shapes[si][4];
        gemm_data g;
        gemm_data_init(&g, MOE_DTYPE_Q8_0, k, m, nb, 900 + si);
        const size_t rb = moe_dtype_row_bytes(MOE_DTYPE_Q8_0, k);
        void *xq = test_xmalloc(rb * nb);
        moe_op_quantize(moe_cpu_kernels_get(MOE_CPU_SCALAR), MOE_DTYPE_Q8_0, g.xf, xq, nb, k);
        for (int l = MOE_CPU_AVX2; l < MOE_CPU_LEVEL_COUNT; l++) {
            const moe_cpu_kernels *kt = moe_cpu_kernels_get((moe_cpu_level)l);
            if (!kt) continue;
            float *y = test_xmalloc(sizeof(float) * m * nb);
            kt->gemm(MOE_DTYPE_Q8_0, k, g.W, r0, r1, xq, nb, y, m);
            for (int64_t b = 0; b < nb; b++)
                for (int64_t r = r0; r < r1; r++) {
                    const float want =
                        ggml_x86_dot_q8_0(k, (const moe_block_q8_0 *)((char *)g.W + r * rb),
                                          (const moe_block_q8_0 *)((char *)xq + b * rb));
                    if (memcmp(&want, &y[b * m + r], sizeof want) != 0)
                        TEST_FAIL("%s nb=%lld k=%lld row %lld col %lld: %.9g, ggml x86 %.9g",
                                  kt->name, (long long)nb, (long long)k, (long long)r, (long long)b,
                                  y[b * m + r], want);
                }
            free(y);
        }
        free(xq);
        gemm_data_free(&g);
    }
}

/* ==== matmul with a pool =================================================== */

TEST(kernels_matmul_pool_matches_single_thread) {
    moe_pool *pool;
    ASSERT_EQ_INT(moe_pool_create(&pool, 2), 0);
    const int64_t shapes[][3] = {{200, 1024, 1}, {131, 512, 5}, {96, 256, 70}, {300, 1024, 2}};
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *kt = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!kt) continue;
        for (int ti = 0; ti < N_TYPES; ti++) {
            const moe_dtype wt = all_types[ti];
            for (int si = 0; si < 4; si++) {
                const int64_t m = shapes[si][0], k = shapes[si][1], nb = shapes[si][2];
                const int64_t ldy = m + 3;
                gemm_data g;
                gemm_data_init(&g, wt, k, m, nb, 77 + si);
                const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
                void *xq = test_xmalloc(xrb * nb);
                moe_op_quantize(kt, wt, g.xf, xq, nb, k);
                float *y1 = test_xmalloc(sizeof(float) * ldy * nb),
                      *y2 = test_xmalloc(sizeof(float) * ldy * nb);
                float *yg = test_xmalloc(sizeof(float) * ldy * nb);
                memset(y1, 0, sizeof(float) * ldy * nb);
                memset(y2, 0, sizeof(float) * ldy * nb);
                memset(yg, 0, sizeof(float) * ldy * nb);
                moe_op_matmul(kt, NULL, wt, g.W, m, k, xq, nb, y1, ldy);
                moe_op_matmul(kt, pool, wt, g.W, m, k, xq, nb, y2, ldy);
                if (memcmp(y1, y2, sizeof(float) * ldy * nb) != 0)
                    TEST_FAIL("%s %s m=%lld k=%lld nb=%lld: 2 threads differ from 1", kt->name,
                              moe_dtype_name(wt), (long long)m, (long long)k, (long long)nb);
                /* and agrees with one gemm call over everything */
                kt->gemm(wt, k, g.W, 0, m, xq, nb, yg, ldy);
                for (int64_t i = 0; i < ldy * nb; i++)
                    ASSERT_NEAR(y2[i], yg[i], 1e-4 * (1 + fabs(yg[i])));
                free(y1);
                free(y2);
                free(yg);
                free(xq);
                gemm_data_free(&g);
            }
        }
    }
    moe_pool_destroy(pool);
}

/* moe__matmul_jobs at 1-4 activation rows, where threads done with their
 * own shares take chunks from the back of the others' (which thread
 * computes a row changes from run to run): the same bits as one thread,
 * over many runs at 2 and 3 threads, for packed tiles (with the rows after
 * the last tile as stored), rows as stored, and several jobs in one run. */
TEST(kernels_matmul_jobs_chunks_same_bits) {
    static const moe_dtype types[] = {MOE_DTYPE_Q8_0, MOE_DTYPE_Q4_K, MOE_DTYPE_Q6_K};
    const int64_t k = 256, ms[3] = {1048, 600, 2000};
    moe_pool *pools[2];
    ASSERT_EQ_INT(moe_pool_create(&pools[0], 2), 0);
    ASSERT_EQ_INT(moe_pool_create(&pools[1], 3), 0);
    const moe_cpu_kernels *best = moe_cpu_kernels_best();
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        const moe_dtype wt = types[ti];
        const int packed = moe_packed_usable(wt);
        gemm_data g[3];
        void *W[3];
        for (int j = 0; j < 3; j++) {
            gemm_data_init(&g[j], wt, k, ms[j], 4, 300 + 10 * ti + j);
            W[j] = g[j].W;
            if (packed) {
                W[j] = test_xmalloc(moe_dtype_row_bytes(wt, k) * (size_t)ms[j]);
                moe_packed_pack(wt, g[j].W, W[j], ms[j], k);
            }
        }
        for (int nb = 1; nb <= 4; nb++) {
            const moe_cpu_kernels *kt = nb >= MOE_FAST_MIN_ROWS ? moe_cpu_kernels_fast(best) : best;
            const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
            void *xq = test_xmalloc(xrb * 4 * 3);
            float *y1 = test_xmalloc(sizeof(float) * 4 * 2000 * 3),
                  *y2 = test_xmalloc(sizeof(float) * 4 * 2000 * 3);
            moe__mm_job jobs[3];
            for (int j = 0; j < 3; j++) {
                moe_op_quantize(kt, wt, g[j].xf, (char *)xq + xrb * 4 * j, nb, k);
                jobs[j] = (moe__mm_job){wt,
                                        W[j],
                                        ms[j],
                                        k,
                                        (char *)xq + xrb * 4 * j,
                                        nb,
                                        y1 + 4 * 2000 * j,
                                        ms[j],
                                        NULL,
                                        packed ? ms[j] / MOE_Q8P_ROWS * MOE_Q8P_ROWS : 0,
                                        0};
            }
            memset(y1, 0, sizeof(float) * 4 * 2000 * 3);
            moe__matmul_jobs(kt, NULL, jobs, 3);
            for (int run = 0; run < 40; run++) {
                for (int j = 0; j < 3; j++) jobs[j].Y = y2 + 4 * 2000 * j;
                memset(y2, 0xff, sizeof(float) * 4 * 2000 * 3);
                moe__matmul_jobs(kt, pools[run & 1], jobs, 3);
                for (int j = 0; j < 3; j++)
                    if (memcmp(y1 + 4 * 2000 * j, y2 + 4 * 2000 * j,
                               sizeof(float) * (size_t)(ms[j] * nb)) != 0)
                        TEST_FAIL("%s%s nb=%d job %d, %d threads: differs from 1 thread",
                                  moe_dtype_name(wt), packed ? " packed" : "", nb, j,
                                  2 + (run & 1));
            }
            free(xq), free(y1), free(y2);
        }
        for (int j = 0; j < 3; j++) {
            if (packed) free(W[j]);
            gemm_data_free(&g[j]);
        }
    }
    moe_pool_destroy(pools[0]);
    moe_pool_destroy(pools[1]);
}

/* ==== dot / axpy =========================================================== */

TEST(kernels_dot_axpy_f32) {
    const int64_t sizes[] = {0, 1, 7, 16, 33, 100, 1000, 4099};
    uint64_t seed = 5;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int64_t n = sizes[si];
        float *a = test_rand_vec(&seed, n, 1.0f), *b = test_rand_vec(&seed, n, 1.0f);
        double ref = 0.0, mag = 0.0;
        for (int64_t i = 0; i < n; i++) {
            ref += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
            const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
            if (!k) continue;
            ASSERT_NEAR(k->dot_f32(n, a, b), ref, GEMM_RTOL * mag + 1e-30);
            float *y = test_rand_vec(&seed, n + 1, 1.0f),
                  *y0 = test_xmalloc(sizeof(float) * (n + 1));
            memcpy(y0, y, sizeof(float) * (n + 1));
            k->axpy_f32(n, 0.75f, a, y);
            for (int64_t i = 0; i < n; i++)
                ASSERT_NEAR(y[i], (double)y0[i] + 0.75 * a[i], 2e-7 * (fabs(y0[i]) + 1));
            ASSERT(y[n] == y0[n]); /* nothing past n */
            free(y);
            free(y0);
        }
        free(a);
        free(b);
    }
}

/* Attention's loops over the cache (dots_f32, wsum_f32) give the bits of
 * the per-row dot_f32 / axpy_f32 calls they replace, at every level: head
 * sizes with the AVX-512 register paths (64..256) and without (48, 96,
 * 576), row counts around its steps of 4, rows strided as in the cache. */
TEST(kernels_attention_loops_match_per_row) {
    const int64_t ns[] = {48, 64, 96, 128, 192, 256, 576};
    const int64_t ms[] = {1, 3, 4, 5, 9, 130};
    uint64_t seed = 11;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            const int64_t n = ns[ni], m = ms[mi], ld = n * 2 + 16;
            float *a = test_rand_vec(&seed, n, 1.0f), *B = test_rand_vec(&seed, ld * m, 1.0f);
            float *s = test_rand_vec(&seed, m, 1.0f);
            float *o1 = test_xmalloc(sizeof(float) * (size_t)m),
                  *o2 = test_xmalloc(sizeof(float) * (size_t)m);
            float *y1 = test_xmalloc(sizeof(float) * (size_t)(n + 1));
            float *y2 = test_xmalloc(sizeof(float) * (size_t)(n + 1));
            for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
                const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
                if (!k) continue;
                for (int64_t j = 0; j < m; j++) o1[j] = k->dot_f32(n, a, B + j * ld) * 0.125f;
                k->dots_f32(n, a, B, ld, m, 0.125f, o2);
                if (memcmp(o1, o2, sizeof(float) * (size_t)m))
                    TEST_FAIL("%s dots_f32 n=%lld m=%lld differs from dot_f32", k->name,
                              (long long)n, (long long)m);
                memset(y1, 0, sizeof(float) * (size_t)n);
                for (int64_t j = 0; j < m; j++) k->axpy_f32(n, s[j], B + j * ld, y1);
                y1[n] = y2[n] = 42.0f;
                k->wsum_f32(n, s, B, ld, m, y2);
                if (memcmp(y1, y2, sizeof(float) * (size_t)(n + 1)))
                    TEST_FAIL("%s wsum_f32 n=%lld m=%lld differs from axpy_f32", k->name,
                              (long long)n, (long long)m);
            }
            free(a);
            free(B);
            free(s);
            free(o1);
            free(o2);
            free(y1);
            free(y2);
        }
}

/* ==== Bit for bit with llama.cpp's prebuilt CPU backend ==================== */

/* The reference engine's ggml CPU variants (installed by `make ref`) export
 * their kernels; each SIMD level must reproduce the variant llama.cpp picks
 * for it exactly: decode dots, activation conversions, softmax and SwiGLU.
 * MOE_LLAMA_BIN_DIR overrides where the libraries are. Skips when absent. */
#define LLAMA_BIN_DIR "tests/ref/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"

typedef void (*ggml_vdot_fn)(int n, float *s, size_t bs, const void *x, size_t bx, const void *y,
                             size_t by, int nrc);
typedef void (*ggml_conv_fn)(const float *x, void *y, int64_t n);
typedef double (*ggml_softmax_fn)(int n, float *y, const float *x, float max);
typedef void (*ggml_swiglu_fn)(int n, float *y, const float *x, const float *g);

static void *ggml_variant_open(const char *dir, const char *variant) {
    char path[1024];
    snprintf(path, sizeof path, "%s/libggml-cpu-%s.so", dir, variant);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) return NULL;
    int (*score)(void) = (int (*)(void))dlsym(h, "ggml_backend_score");
    void (*init)(void) = (void (*)(void))dlsym(h, "ggml_cpu_init");
    if (!score || !init || score() <= 0) return NULL; /* not for this CPU */
    init();
    return h;
}

static int ggml_compare_level(void *h, const moe_cpu_kernels *k, int row_ops) {
    static const struct {
        const char *sym;
        moe_dtype t;
    } dots[] = {{"ggml_vec_dot_f32", MOE_DTYPE_F32},
                {"ggml_vec_dot_f16", MOE_DTYPE_F16},
                {"ggml_vec_dot_bf16", MOE_DTYPE_BF16},
                {"ggml_vec_dot_q8_0_q8_0", MOE_DTYPE_Q8_0}};
    static const char *const convs[] = {"ggml_cpu_fp32_to_fp16", "ggml_cpu_fp32_to_bf16",
                                        "quantize_row_q8_0"};
    static const moe_dtype conv_t[] = {MOE_DTYPE_F16, MOE_DTYPE_BF16, MOE_DTYPE_Q8_0};
    const int64_t ks[] = {32, 96, 1024, 1056};
    uint64_t seed = 2024;
    int checked = 0;
    float *w = test_xmalloc(1056 * 4), *x = test_xmalloc(1056 * 4), *z = test_xmalloc(1056 * 4);
    char *wq = test_xmalloc(1056 * 4), *xq = test_xmalloc(1056 * 4), *rq = test_xmalloc(1056 * 4);
    for (int d = 0; d < 4; d++) {
        ggml_vdot_fn f = (ggml_vdot_fn)dlsym(h, dots[d].sym);
        if (!f) continue;
        for (int ki = 0; ki < 4; ki++)
            for (int rep = 0; rep < 40; rep++) {
                const int64_t n = ks[ki];
                for (int64_t i = 0; i < n; i++)
                    w[i] = test_rand_f32(&seed), x[i] = 3 * test_rand_f32(&seed);
                moe_dtype_from_f32(dots[d].t, w, wq, n);
                moe_op_quantize(k, dots[d].t, x, xq, 1, n);
                float want, got;
                f((int)n, &want, 0, wq, 0, xq, 0, 1);
                k->gemm(dots[d].t, n, wq, 0, 1, xq, 1, &got, 1);
                if (memcmp(&want, &got, 4))
                    TEST_FAIL("%s: gemm nb=1 %s k=%lld: %.9g, llama.cpp %.9g", k->name,
                              moe_dtype_name(dots[d].t), (long long)n, got, want);
                if (dots[d].t == MOE_DTYPE_F32) {
                    const int64_t m = n - rep % 7; /* any length */
                    f((int)m, &want, 0, w, 0, x, 0, 1);
                    got = k->dot_f32(m, w, x);
                    if (memcmp(&want, &got, 4))
                        TEST_FAIL("%s: dot_f32 n=%lld: %.9g, llama.cpp %.9g", k->name, (long long)m,
                                  got, want);
                }
                checked++;
            }
    }
    for (int c = 0; c < 3; c++) {
        ggml_conv_fn f = (ggml_conv_fn)dlsym(h, convs[c]);
        if (!f) continue;
        float *v = special_input(&seed, 1024);
        const size_t rb = moe_dtype_row_bytes(conv_t[c], 1024);
        f(v, rq, 1024);
        k->from_f32(conv_t[c], v, xq, 1024);
        if (memcmp(rq, xq, rb))
            TEST_FAIL("%s: from_f32 %s differs from %s", k->name, moe_dtype_name(conv_t[c]),
                      convs[c]);
        free(v);
        checked++;
    }
    ggml_softmax_fn sm = (ggml_softmax_fn)dlsym(h, "ggml_vec_soft_max_f32");
    ggml_swiglu_fn sw = (ggml_swiglu_fn)dlsym(h, "ggml_vec_swiglu_f32");
    if (row_ops && sm && sw) {
        const int ns[] = {1, 8, 13, 16, 40, 96, 1000};
        for (int t = 0; t < 7; t++)
            for (int rep = 0; rep < 20; rep++) {
                const int n = ns[t];
                for (int i = 0; i < n; i++)
                    x[i] = 20 * test_rand_f32(&seed), w[i] = test_rand_f32(&seed);
                if (rep == 3) x[n / 2] = -INFINITY;
                float max = -INFINITY;
                for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
                const double sum = sm(n, z, x, max);
                for (int i = 0; i < n; i++) z[i] *= (float)(1.0 / sum); /* as ggml's soft_max */
                memcpy(rq, x, (size_t)n * 4);
                moe_op_softmax((float *)rq, n);
                if (memcmp(rq, z, (size_t)n * 4)) TEST_FAIL("%s: softmax n=%d differs", k->name, n);
                if (rep == 3) continue;
                sw(n, z, x, w);
                moe_op_swiglu(x, w, (float *)rq, n);
                if (memcmp(rq, z, (size_t)n * 4)) TEST_FAIL("%s: swiglu n=%d differs", k->name, n);
                checked++;
            }
    }
    free(w);
    free(x);
    free(z);
    free(wq);
    free(xq);
    free(rq);
    return checked;
}

TEST(kernels_bitexact_llama_cpp_prebuilt) {
    const char *dir = getenv("MOE_LLAMA_BIN_DIR") ? getenv("MOE_LLAMA_BIN_DIR") : LLAMA_BIN_DIR;
    char path[1024];
    snprintf(path, sizeof path, "%s/libggml-base.so", dir);
    if (!dlopen(path, RTLD_NOW | RTLD_GLOBAL))
        SKIP("llama.cpp prebuilt CPU libraries not installed (make ref)");
    int compared = 0;
    const moe_cpu_level best = moe_cpu_kernels_best()->level;
    if (moe_cpu_kernels_get(MOE_CPU_AVX512)) {
        void *h = ggml_variant_open(dir, moe__cpu_has_avx512bf16 ? "zen4" : "icelake");
        if (h) {
            compared +=
                ggml_compare_level(h, moe_cpu_kernels_get(MOE_CPU_AVX512), best == MOE_CPU_AVX512);
            fprintf(stderr, "avx512: bit-exact with llama.cpp's %s build\n",
                    moe__cpu_has_avx512bf16 ? "zen4" : "icelake");
        }
    }
    if (moe_cpu_kernels_get(MOE_CPU_AVX2)) {
        void *h = ggml_variant_open(dir, "haswell");
        if (h) {
            compared +=
                ggml_compare_level(h, moe_cpu_kernels_get(MOE_CPU_AVX2), best == MOE_CPU_AVX2);
            fprintf(stderr, "avx2: bit-exact with llama.cpp's haswell build\n");
        }
    }
    if (!compared) SKIP("no llama.cpp CPU variant for this CPU");
}
