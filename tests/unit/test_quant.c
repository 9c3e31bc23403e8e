/*
 * tests/unit/test_quant.c - the quantised types other than Q8_0 (moe/dtype.h,
 * moe/ops.h): round trips through the reference quantisers, the activation
 * quantisers, and every SIMD level's gemm against the scalar table and a
 * double-precision reference.
 *
 * Levels: the AVX2 and AVX-512 tables run the same arithmetic (quant_simd.h
 * built twice) and must agree bit for bit. Against the scalar table they
 * differ by float rounding only: the integer sums and the scales are the
 * same numbers, but SIMD keeps 8 float lanes of 4 products each (ggml's x86
 * vec_dot order), or for Q4_0 / IQ4_NL / Q4_K one fused multiply-add per
 * block (llama.cpp's repacked kernels), where scalar multiplies and adds
 * one float per block (ggml's generic code); so |simd - scalar| <=
 * QUANT_RTOL * sum |w_i x_i| (a few float roundings per block, relative to
 * the magnitudes summed; one wrong element or block is far above this).
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "moe/dtype.h"
#include "moe/gguf.h"
#include "moe/model.h"
#include "moe/ops.h"
#include "test.h"
#include "testmodel.h"

#define QUANT_RTOL 3e-5

static const moe_dtype qtypes[] = {
    MOE_DTYPE_Q4_0,   MOE_DTYPE_Q4_1, MOE_DTYPE_Q5_0, MOE_DTYPE_Q5_1,
    MOE_DTYPE_IQ4_NL, MOE_DTYPE_Q4_K, MOE_DTYPE_Q5_K, MOE_DTYPE_Q6_K,
    MOE_DTYPE_IQ4_XS, MOE_DTYPE_Q2_K, MOE_DTYPE_Q3_K,
};
#define N_QTYPES (sizeof qtypes / sizeof qtypes[0])

/* Values of varied magnitude: each group of 32 scaled differently, a few
 * outliers, an all-zero group. */
static float *quant_input(uint64_t *s, int64_t n) {
    float *x = test_xmalloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) {
        const float g = 0.1f + (float)((i / 32) % 7);
        x[i] = test_rand_f32(s) * g;
    }
    if (n >= 64)
        for (int i = 32; i < 64; i++) x[i] = 0.0f;
    if (n > 100) x[100] *= 8.0f;
    return x;
}

/* ==== Names, sizes, dot types ============================================== */

TEST(quant_dtype_table) {
    static const struct {
        moe_dtype t;
        const char *name;
        size_t elems, bytes;
        moe_dtype dot;
    } want[] = {
        {MOE_DTYPE_Q4_0, "q4_0", 32, 18, MOE_DTYPE_Q8_0},
        {MOE_DTYPE_Q4_1, "q4_1", 32, 20, MOE_DTYPE_Q8_1},
        {MOE_DTYPE_Q5_0, "q5_0", 32, 22, MOE_DTYPE_Q8_0},
        {MOE_DTYPE_Q5_1, "q5_1", 32, 24, MOE_DTYPE_Q8_1},
        {MOE_DTYPE_IQ4_NL, "iq4_nl", 32, 18, MOE_DTYPE_Q8_0},
        {MOE_DTYPE_Q2_K, "q2_K", 256, 84, MOE_DTYPE_Q8_K},
        {MOE_DTYPE_Q3_K, "q3_K", 256, 110, MOE_DTYPE_Q8_K},
        {MOE_DTYPE_Q4_K, "q4_K", 256, 144, MOE_DTYPE_Q8_K},
        {MOE_DTYPE_Q5_K, "q5_K", 256, 176, MOE_DTYPE_Q8_K},
        {MOE_DTYPE_Q6_K, "q6_K", 256, 210, MOE_DTYPE_Q8_K},
        {MOE_DTYPE_IQ4_XS, "iq4_xs", 256, 136, MOE_DTYPE_Q8_K},
        {MOE_DTYPE_Q8_1, "q8_1", 32, 36, MOE_DTYPE_Q8_1},
        {MOE_DTYPE_Q8_K, "q8_K", 256, 292, MOE_DTYPE_Q8_K},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ASSERT(!strcmp(moe_dtype_name(want[i].t), want[i].name));
        ASSERT_EQ_INT(moe_dtype_block_elems(want[i].t), want[i].elems);
        ASSERT_EQ_INT(moe_dtype_block_bytes(want[i].t), want[i].bytes);
        ASSERT_EQ_INT(moe_dtype_dot_type(want[i].t), want[i].dot);
        moe_dtype p;
        ASSERT_EQ_INT(moe_dtype_parse(want[i].name, &p), 0);
        ASSERT_EQ_INT(p, want[i].t);
        /* activation-only types are no weight types (a file may not hold them) */
        const int act = want[i].t == MOE_DTYPE_Q8_1 || want[i].t == MOE_DTYPE_Q8_K;
        ASSERT_EQ_INT(moe_dtype_supported(want[i].t), !act);
    }
    moe_dtype p;
    ASSERT_EQ_INT(moe_dtype_parse("Q4_K", &p), 0); /* case-insensitive */
    ASSERT_EQ_INT(p, MOE_DTYPE_Q4_K);
    ASSERT(!moe_dtype_supported(4) && !moe_dtype_supported(5)); /* ggml's removed Q4_2, Q4_3 */
    ASSERT_EQ_INT(moe_dtype_row_bytes(MOE_DTYPE_Q4_K, 4096), 16 * 144);
}

/* ==== Round trips ========================================================== */

/* Worst |x - dequant(quant(x))| relative to the max |x| of the type's block
 * (32, or the 256 of a K super-block, whose quantised group scales leave a
 * group of small values at the super-block's precision), and the RMS error
 * relative to the RMS of x. Bounds: the
 * grid's half step at its scale (4 bits with a minimum: 1/30 of the range,
 * i.e. 1/15 of max |x|; the symmetric Q4_0 / Q5_0 put max |x| on -8 / -16
 * and clamp its opposite at +7 / +15: a whole step, 1/8 / 1/16), with a
 * little room for the fp16 scales; the RMS bounds ~1.3x what was observed
 * (q4_0 .071, q4_1 .068, q5_0 .036, q5_1 .032, iq4_nl .063; q4_K .063,
 * q5_K .028, q6_K .014, iq4_xs .068, q2_K .254, q3_K .132), the worst ~1.3x
 * observed for those. */
static void roundtrip(moe_dtype t, double max_rel, double rms_rel) {
    uint64_t seed = 4242 + (uint64_t)t;
    const int64_t n = 256 * 6;
    float *x = quant_input(&seed, n);
    float *y = test_xmalloc((size_t)n * sizeof *y);
    void *q = test_xmalloc(moe_dtype_row_bytes(t, n));
    moe_dtype_from_f32(t, x, q, n);
    moe_dtype_to_f32(t, q, y, n);
    double worst = 0.0, e2 = 0.0, x2 = 0.0;
    const int64_t bs = (int64_t)moe_dtype_block_elems(t);
    for (int64_t g = 0; g < n / 32; g++) {
        float amax = 0.0f, bmax = 0.0f; /* of the group of 32, of the block */
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[g * 32 + j]));
        for (int64_t j = g * 32 / bs * bs; j < (g * 32 / bs + 1) * bs; j++)
            bmax = fmaxf(bmax, fabsf(x[j]));
        for (int j = 0; j < 32; j++) {
            const double e = fabs((double)x[g * 32 + j] - y[g * 32 + j]);
            if (amax == 0.0f) {
                if (e != 0.0)
                    TEST_FAIL("%s: zero group %lld decodes to %g", moe_dtype_name(t), (long long)g,
                              y[g * 32 + j]);
                continue;
            }
            if (e / bmax > worst) worst = e / bmax;
            e2 += e * e;
            x2 += (double)x[g * 32 + j] * x[g * 32 + j];
        }
    }
    const double rms = sqrt(e2 / x2);
    fprintf(stderr, "%s: worst %.4f of the block max, rms %.4f\n", moe_dtype_name(t), worst, rms);
    if (!(worst <= max_rel))
        TEST_FAIL("%s: worst error %.4f > %.4f", moe_dtype_name(t), worst, max_rel);
    if (!(rms <= rms_rel)) TEST_FAIL("%s: rms error %.4f > %.4f", moe_dtype_name(t), rms, rms_rel);
    free(x);
    free(y);
    free(q);
}

TEST(quant_roundtrip_q4_0) {
    roundtrip(MOE_DTYPE_Q4_0, 0.13, 0.09);
}
TEST(quant_roundtrip_q4_1) {
    roundtrip(MOE_DTYPE_Q4_1, 0.07, 0.09);
}
TEST(quant_roundtrip_q5_0) {
    roundtrip(MOE_DTYPE_Q5_0, 0.065, 0.05);
}
TEST(quant_roundtrip_q5_1) {
    roundtrip(MOE_DTYPE_Q5_1, 0.035, 0.045);
}
TEST(quant_roundtrip_iq4_nl) {
    roundtrip(MOE_DTYPE_IQ4_NL, 0.12, 0.08);
}
TEST(quant_roundtrip_q4_K) {
    roundtrip(MOE_DTYPE_Q4_K, 0.085, 0.08);
}
TEST(quant_roundtrip_q5_K) {
    roundtrip(MOE_DTYPE_Q5_K, 0.04, 0.037);
}
TEST(quant_roundtrip_q6_K) {
    roundtrip(MOE_DTYPE_Q6_K, 0.02, 0.019);
}
TEST(quant_roundtrip_q2_K) {
    roundtrip(MOE_DTYPE_Q2_K, 0.4, 0.33);
}
TEST(quant_roundtrip_q3_K) {
    roundtrip(MOE_DTYPE_Q3_K, 0.27, 0.17);
}
TEST(quant_roundtrip_iq4_xs) {
    roundtrip(MOE_DTYPE_IQ4_XS, 0.13, 0.09);
}

/* Known blocks: the reference quantisers' formulas on hand-picked values. */
TEST(quant_q4_0_formula) {
    float x[32] = {0};
    x[0] = -8.0f;  /* the largest magnitude: d = -8 / -8 = 1, level 0 */
    x[1] = 3.0f;   /* 3 + 8.5 -> 11 */
    x[2] = 7.9f;   /* 16.4 -> clamped to 15 */
    x[17] = -2.6f; /* -2.6 + 8.5 = 5.9 -> 5 */
    moe_block_q4_0 b;
    moe_dtype_from_f32(MOE_DTYPE_Q4_0, x, &b, 32);
    ASSERT_EQ_INT(b.d, moe_f32_to_f16(1.0f));
    ASSERT_EQ_INT(b.qs[0] & 15, 0);
    ASSERT_EQ_INT(b.qs[1] & 15, 11);
    ASSERT_EQ_INT(b.qs[2] & 15, 15);
    ASSERT_EQ_INT(b.qs[1] >> 4, 5);
    ASSERT_EQ_INT(b.qs[3] & 15, 8); /* zero */
}

TEST(quant_q5_0_high_bits) {
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i - 16); /* levels 0..31 with d = -16/-16 */
    x[0] = -16.0f;
    moe_block_q5_0 b;
    moe_dtype_from_f32(MOE_DTYPE_Q5_0, x, &b, 32);
    float y[32];
    moe_dtype_to_f32(MOE_DTYPE_Q5_0, &b, y, 32);
    for (int i = 0; i < 32; i++) ASSERT_NEAR(y[i], x[i], 1e-6);
}

/* ==== Activations ========================================================== */

TEST(quant_q8_1_activations) {
    uint64_t seed = 5;
    const int64_t n = 128;
    float *x = quant_input(&seed, n);
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!k) continue;
        moe_block_q8_1 b[4];
        k->from_f32(MOE_DTYPE_Q8_1, x, b, n);
        for (int i = 0; i < 4; i++) {
            int sum = 0, amaxq = 0;
            for (int j = 0; j < 32; j++) {
                sum += b[i].qs[j];
                amaxq = abs(b[i].qs[j]) > amaxq ? abs(b[i].qs[j]) : amaxq;
            }
            const float d = moe_f16_to_f32(b[i].d);
            /* s = d * sum(q) with the unrounded d: within an fp16 rounding */
            ASSERT_NEAR(moe_f16_to_f32(b[i].s), d * sum, 2e-3 * fabs(d * sum) + 1e-6);
            ASSERT(i == 1 ? amaxq == 0 : amaxq == 127);
            for (int j = 0; j < 32; j++)
                ASSERT_NEAR(d * b[i].qs[j], x[i * 32 + j], 0.51 * d + 1e-3 * fabs(x[i * 32 + j]));
        }
    }
    free(x);
}

TEST(quant_q8_K_activations) {
    uint64_t seed = 6;
    const int64_t n = 512;
    float *x = quant_input(&seed, n);
    x[300] = -50.0f; /* the largest magnitude maps to -127 whatever its sign */
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!k) continue;
        moe_block_q8_K b[2];
        k->from_f32(MOE_DTYPE_Q8_K, x, b, n);
        ASSERT_EQ_INT(b[1].qs[300 - 256], -127);
        for (int i = 0; i < 2; i++) {
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += b[i].qs[16 * g + j];
                ASSERT_EQ_INT(b[i].bsums[g], s);
            }
            for (int j = 0; j < 256; j++)
                ASSERT_NEAR(b[i].d * b[i].qs[j], x[i * 256 + j], 0.51 * fabs(b[i].d) + 1e-6);
        }
    }
    float z[256] = {0};
    moe_block_q8_K bz;
    moe_cpu_kernels_get(MOE_CPU_SCALAR)->from_f32(MOE_DTYPE_Q8_K, z, &bz, 256);
    ASSERT(bz.d == 0.0f);
    free(x);
}

/* Every level's Q8_K activations are the scalar code's bytes (AVX-512 has
 * its own): random rows, a block of zeros, ties of magnitude with either
 * sign first (the first of the largest magnitude maps to -127), values that
 * land on .5 after the scale, large and tiny magnitudes. */
TEST(quant_q8_K_activations_levels) {
    uint64_t seed = 21;
    const int64_t n = 256 * 8;
    float *x = quant_input(&seed, n);
    for (int j = 256; j < 512; j++) x[j] = 0.0f; /* block 1: zeros */
    x[512 + 3] = 100.0f, x[512 + 200] = -100.0f; /* block 2: tie, + first */
    x[768 + 7] = -100.0f, x[768 + 8] = 100.0f;   /* block 3: tie, - first */
    for (int j = 1024; j < 1280; j++) x[j] = (float)(j % 255 - 127) * 0.5f; /* .5 steps */
    for (int j = 1280; j < 1536; j++) x[j] *= 1e30f;
    for (int j = 1536; j < 1792; j++) x[j] *= 1e-30f;
    moe_block_q8_K ref[8], got[8];
    const moe_cpu_kernels *ks = moe_cpu_kernels_get(MOE_CPU_SCALAR);
    memset(ref, 0, sizeof ref);
    ks->from_f32(MOE_DTYPE_Q8_K, x, ref, n);
    for (int l = 1; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!k) continue;
        memset(got, 0, sizeof got);
        k->from_f32(MOE_DTYPE_Q8_K, x, got, n);
        for (int b = 0; b < 8; b++) ASSERT(memcmp(&ref[b], &got[b], sizeof ref[b]) == 0);
    }
    ASSERT_EQ_INT(ref[2].qs[3], -127); /* the first of the tie */
    ASSERT_EQ_INT(ref[2].qs[200], 127);
    ASSERT_EQ_INT(ref[3].qs[7], -127);
    ASSERT_EQ_INT(ref[3].qs[8], 127);
    free(x);
}

/* ==== gemm ================================================================= */

/* Every level against scalar (see the header) and the double product of the
 * dequantised operands; AVX2 and AVX-512 identical. */
static void check_gemm(moe_dtype wt) {
    const int64_t blk = (int64_t)moe_dtype_block_elems(wt);
    const int64_t shapes[][3] = {
        {blk, 5, 1}, {blk * 3, 9, 2}, {blk * 4, 7, 5}, {4096, 6, 3}, {blk * 2, 21, 2}};
    const moe_cpu_kernels *ks = moe_cpu_kernels_get(MOE_CPU_SCALAR);
    const moe_dtype dt = moe_dtype_dot_type(wt);
    for (int si = 0; si < 5; si++) {
        const int64_t k = shapes[si][0], m = shapes[si][1], nb = shapes[si][2];
        uint64_t seed = 77 + (uint64_t)si * 13 + (uint64_t)wt;
        float *wf = quant_input(&seed, m * k), *xf = quant_input(&seed, nb * k);
        const size_t wrb = moe_dtype_row_bytes(wt, k), xrb = moe_dtype_row_bytes(dt, k);
        char *W = test_xmalloc(wrb * (size_t)m), *X = test_xmalloc(xrb * (size_t)nb);
        float *wd = test_xmalloc(sizeof(float) * (size_t)(m * k)),
              *xd = test_xmalloc(sizeof(float) * (size_t)(nb * k));
        for (int64_t r = 0; r < m; r++) {
            moe_dtype_from_f32(wt, wf + r * k, W + r * wrb, k);
            moe_dtype_to_f32(wt, W + r * wrb, wd + r * k, k);
        }
        moe_op_quantize(ks, wt, xf, X, nb, k);
        for (int64_t b = 0; b < nb; b++) moe_dtype_to_f32(dt, X + b * xrb, xd + b * k, k);
        float *ys = test_xmalloc(sizeof(float) * (size_t)(m * nb)),
              *y = test_xmalloc(sizeof(float) * (size_t)(m * nb));
        float *y2 = NULL;
        ks->gemm(wt, k, W, 0, m, X, nb, ys, m);
        for (int l = 1; l < MOE_CPU_LEVEL_COUNT; l++) {
            const moe_cpu_kernels *kt = moe_cpu_kernels_get((moe_cpu_level)l);
            if (!kt) continue;
            /* in two row ranges, and whole: a row's result does not depend on
             * which rows share its call (the kernels group rows by 8, 4, 1) */
            kt->gemm(wt, k, W, 0, m, X, nb, y, m);
            float *yw = test_xmalloc(sizeof(float) * (size_t)(m * nb));
            memcpy(yw, y, sizeof(float) * (size_t)(m * nb));
            kt->gemm(wt, k, W, 0, m / 2, X, nb, y, m);
            kt->gemm(wt, k, W, m / 2, m, X, nb, y, m);
            if (memcmp(y, yw, sizeof(float) * (size_t)(m * nb)))
                TEST_FAIL("%s %s k=%lld: the row split changed the results", kt->name,
                          moe_dtype_name(wt), (long long)k);
            free(yw);
            for (int64_t b = 0; b < nb; b++)
                for (int64_t r = 0; r < m; r++) {
                    double mag = 0.0;
                    for (int64_t i = 0; i < k; i++)
                        mag += fabs((double)wd[r * k + i] * xd[b * k + i]);
                    const double v = y[b * m + r], vs = ys[b * m + r];
                    if (!(fabs(v - vs) <= QUANT_RTOL * mag + 1e-30))
                        TEST_FAIL("%s %s k=%lld: y[%lld][%lld] = %.9g, scalar %.9g (tol %.3g)",
                                  kt->name, moe_dtype_name(wt), (long long)k, (long long)b,
                                  (long long)r, v, vs, QUANT_RTOL * mag);
                }
            if (y2 && memcmp(y, y2, sizeof(float) * (size_t)(m * nb)))
                TEST_FAIL("%s %s k=%lld: avx512 differs from avx2", kt->name, moe_dtype_name(wt),
                          (long long)k);
            if (!y2) {
                y2 = test_xmalloc(sizeof(float) * (size_t)(m * nb));
                memcpy(y2, y, sizeof(float) * (size_t)(m * nb));
            }
        }
        /* scalar against the double product of the dequantised operands: the
         * minimum's term of Q4_1/Q5_1 uses s, d * sum(q) rounded to fp16 (one
         * 2^-11 relative rounding of that term), the rest is float rounding */
        for (int64_t b = 0; b < nb; b++)
            for (int64_t r = 0; r < m; r++) {
                double ref = 0.0, mag = 0.0;
                for (int64_t i = 0; i < k; i++) {
                    const double p = (double)wd[r * k + i] * xd[b * k + i];
                    ref += p;
                    mag += fabs(p);
                }
                const double tol = (dt == MOE_DTYPE_Q8_1 ? 1e-3 : QUANT_RTOL) * mag + 1e-6;
                if (!(fabs(ys[b * m + r] - ref) <= tol))
                    TEST_FAIL("scalar %s k=%lld: y[%lld][%lld] = %.9g, double %.9g (tol %.3g)",
                              moe_dtype_name(wt), (long long)k, (long long)b, (long long)r,
                              ys[b * m + r], ref, tol);
            }
        free(wf), free(xf), free(W), free(X), free(wd), free(xd), free(ys), free(y), free(y2);
    }
}

TEST(quant_gemm_q4_0) {
    check_gemm(MOE_DTYPE_Q4_0);
}
TEST(quant_gemm_q4_1) {
    check_gemm(MOE_DTYPE_Q4_1);
}
TEST(quant_gemm_q5_0) {
    check_gemm(MOE_DTYPE_Q5_0);
}
TEST(quant_gemm_q5_1) {
    check_gemm(MOE_DTYPE_Q5_1);
}
TEST(quant_gemm_iq4_nl) {
    check_gemm(MOE_DTYPE_IQ4_NL);
}
TEST(quant_gemm_q4_K) {
    check_gemm(MOE_DTYPE_Q4_K);
}
TEST(quant_gemm_q5_K) {
    check_gemm(MOE_DTYPE_Q5_K);
}
TEST(quant_gemm_q6_K) {
    check_gemm(MOE_DTYPE_Q6_K);
}
TEST(quant_gemm_q2_K) {
    check_gemm(MOE_DTYPE_Q2_K);
}
TEST(quant_gemm_q3_K) {
    check_gemm(MOE_DTYPE_Q3_K);
}
TEST(quant_gemm_iq4_xs) {
    check_gemm(MOE_DTYPE_IQ4_XS);
}

/* The threaded matmul and the quantise helper on a quantised type: the same
 * numbers as one gemm call, for any number of threads. */
TEST(quant_matmul_threads) {
    const int64_t k = 512, m = 70, nb = 3;
    uint64_t seed = 31;
    float *wf = quant_input(&seed, m * k), *xf = quant_input(&seed, nb * k);
    const moe_cpu_kernels *kt = moe_cpu_kernels_best();
    for (size_t ti = 0; ti < N_QTYPES; ti++) {
        const moe_dtype wt = qtypes[ti];
        if (k % (int64_t)moe_dtype_block_elems(wt) || !moe_dtype_supported(wt)) continue;
        const size_t wrb = moe_dtype_row_bytes(wt, k),
                     xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
        char *W = test_xmalloc(wrb * (size_t)m), *X = test_xmalloc(xrb * (size_t)nb);
        for (int64_t r = 0; r < m; r++) moe_dtype_from_f32(wt, wf + r * k, W + r * wrb, k);
        moe_op_quantize(kt, wt, xf, X, nb, k);
        float *a = test_xmalloc(sizeof(float) * (size_t)(m * nb)),
              *c = test_xmalloc(sizeof(float) * (size_t)(m * nb));
        kt->gemm(wt, k, W, 0, m, X, nb, a, m);
        moe_pool *pool = NULL;
        ASSERT_EQ_INT(moe_pool_create(&pool, 2), 0);
        moe_op_matmul(kt, pool, wt, W, m, k, X, nb, c, m);
        moe_pool_destroy(pool);
        if (memcmp(a, c, sizeof(float) * (size_t)(m * nb)))
            TEST_FAIL("%s: threaded matmul differs from one gemm", moe_dtype_name(wt));
        free(W), free(X), free(a), free(c);
    }
    free(wf), free(xf);
}

/* ==== mkmodel's types ====================================================== */

/* The per-tensor types of a written model: llama-quantize's fallback for
 * rows a K type does not fit, and its Q4_K_M mix. */
static moe_dtype tensor_type_of(const moe_gguf *g, const char *name) {
    const moe_gguf_tensor *t = moe_gguf_find_tensor(g, name);
    if (!t) TEST_FAIL("no tensor %s", name);
    return t->type;
}

TEST(quant_testmodel_fallback_and_mix) {
    moe_testmodel_params p;
    ASSERT_EQ_INT(moe_testmodel_defaults(&p, MOE_ARCH_QWEN2MOE, "tiny"), 0);
    p.n_embd = 256; /* n_ff 96, n_ff_shexp 160: their down rows fall back */
    p.head_dim = 64;
    p.dtype = MOE_DTYPE_Q4_K;
    p.mix = MOE_MIX_Q4_K_M;
    char path[128];
    snprintf(path, sizeof path, "/tmp/moe-test-quant-%d.gguf", (int)getpid());
    moe_err err;
    if (moe_testmodel_write(&p, path, &err) < 0) TEST_FAIL("testmodel: %s", err.msg);
    moe_gguf *g = NULL;
    ASSERT_EQ_INT(moe_gguf_open(&g, path, &err), 0);
    ASSERT_EQ_INT(tensor_type_of(g, "token_embd.weight"), MOE_DTYPE_Q4_K);
    ASSERT_EQ_INT(tensor_type_of(g, "output.weight"), MOE_DTYPE_Q6_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_q.weight"), MOE_DTYPE_Q4_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_k.weight"), MOE_DTYPE_Q8_0); /* 8 experts */
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_v.weight"), MOE_DTYPE_Q8_0);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_output.weight"), MOE_DTYPE_Q5_K);
    /* ffn_down: rows of 96 / 160 do not fit Q4_K -> Q5_0; in the more-bits
     * layer 1 of 2, Q6_K -> Q8_0 */
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.ffn_down_exps.weight"), MOE_DTYPE_Q5_0);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.ffn_down_exps.weight"), MOE_DTYPE_Q8_0);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.ffn_down_shexp.weight"), MOE_DTYPE_Q8_0);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.ffn_gate_exps.weight"), MOE_DTYPE_Q4_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.ffn_gate_inp.weight"), MOE_DTYPE_F32);
    moe_gguf_close(g);
    /* and the model loads and computes */
    moe_model *m = NULL;
    if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("load: %s", err.msg);
    moe_model_free(m);
    unlink(path);
    /* a mix needs its base type */
    p.dtype = MOE_DTYPE_Q4_0;
    ASSERT_EQ_INT(moe_testmodel_write(&p, path, &err), MOE_EINVAL);
    p.dtype = MOE_DTYPE_Q5_K;
    ASSERT_EQ_INT(moe_testmodel_write(&p, path, &err), MOE_EINVAL);
}

/* The Q2_K and Q3_K_M mixes (checked tensor by tensor against the pinned
 * llama.cpp's llama_model_quantize; these are spot checks). */
static moe_gguf *write_and_open(const moe_testmodel_params *p, const char *path) {
    moe_err err;
    moe_gguf *g = NULL;
    if (moe_testmodel_write(p, path, &err) < 0) TEST_FAIL("testmodel: %s", err.msg);
    if (moe_gguf_open(&g, path, &err) < 0) TEST_FAIL("open: %s", err.msg);
    return g;
}

TEST(quant_testmodel_q2_k_q3_k_m) {
    char path[128];
    snprintf(path, sizeof path, "/tmp/moe-test-quant-mix-%d.gguf", (int)getpid());
    moe_testmodel_params p;
    ASSERT_EQ_INT(moe_testmodel_defaults(&p, MOE_ARCH_DEEPSEEK2, "tiny"), 0);
    p.n_embd = p.n_ff = 256; /* 16 experts: no 8-expert rule */
    p.dtype = MOE_DTYPE_Q2_K;
    p.mix = MOE_MIX_Q2_K;
    moe_gguf *g = write_and_open(&p, path);
    ASSERT_EQ_INT(tensor_type_of(g, "token_embd.weight"), MOE_DTYPE_Q2_K);
    ASSERT_EQ_INT(tensor_type_of(g, "output.weight"), MOE_DTYPE_Q6_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_q_a.weight"), MOE_DTYPE_Q2_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_k_b.weight"), MOE_DTYPE_Q4_0);    /* rows of 32 */
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_output.weight"), MOE_DTYPE_Q4_0); /* 128 */
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.ffn_down.weight"), MOE_DTYPE_Q3_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.ffn_down_exps.weight"), MOE_DTYPE_Q3_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.ffn_down_shexp.weight"), MOE_DTYPE_Q3_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.ffn_up_exps.weight"), MOE_DTYPE_Q2_K);
    moe_gguf_close(g);
    /* legacy attn_kv_b is attn_v-like: Q2_K -> Q3_K (no GQA), rows of 64 -> Q4_0 */
    p.mla_kv_b = 1;
    g = write_and_open(&p, path);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_kv_b.weight"), MOE_DTYPE_Q4_0);
    moe_gguf_close(g);
    ASSERT_EQ_INT(moe_testmodel_defaults(&p, MOE_ARCH_LLAMA, "tiny"), 0);
    p.n_embd = p.n_ff = 256;
    p.head_dim = 64;
    p.n_expert = 4;
    p.dtype = MOE_DTYPE_Q3_K;
    p.mix = MOE_MIX_Q3_K_M;
    g = write_and_open(&p, path);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_v.weight"), MOE_DTYPE_Q5_K); /* the first 2 */
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.attn_v.weight"), MOE_DTYPE_Q5_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_k.weight"), MOE_DTYPE_Q3_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_output.weight"), MOE_DTYPE_Q4_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.ffn_down_exps.weight"), MOE_DTYPE_Q4_K);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.1.ffn_gate_exps.weight"), MOE_DTYPE_Q3_K);
    moe_gguf_close(g);
    /* 8 experts: attn_v / attn_k Q8_0, attn_output Q5_K */
    p.n_expert = 8;
    g = write_and_open(&p, path);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_v.weight"), MOE_DTYPE_Q8_0);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_k.weight"), MOE_DTYPE_Q8_0);
    ASSERT_EQ_INT(tensor_type_of(g, "blk.0.attn_output.weight"), MOE_DTYPE_Q5_K);
    moe_gguf_close(g);
    unlink(path);
}
