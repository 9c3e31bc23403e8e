/*
 * tests/unit/test_quant_fast.c - the faster decode kernels for the
 * quantised types (cpu/quant_avx512.c and cpu/quant_avx2.c: Q4_0, IQ4_NL,
 * Q4_K, Q5_K, Q6_K, IQ4_XS; cpu/quant_fast256.h at both: Q4_1, Q5_0, Q5_1, Q2_K,
 * Q3_K; at AVX-512 Q5_0 from 3 rows, Q4_1 and Q5_1 from 4, through the Q8_0
 * tile: q5t_pack_w, q41t_pack_w)
 * against quant_simd.h's kernels, bit for bit: its build at the same level
 * (moe__quant_gemm_{avx2,avx512}_ref). On weights quantised from floats
 * and on random bytes (every nibble, scale and minimum pattern; only the
 * fp16 scales kept finite), row counts that are and are not multiples of
 * 8, batches of 1 to 9 activation rows, and each matrix computed whole and
 * in row ranges split at odd places. AVX-512 is checked where the CPU has
 * it; skips without AVX2.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu/kernels.h"
#include "moe/dtype.h"
#include "moe/ops.h"
#include "test.h"

/* Random bytes with the fp16 scale fields of each block set to finite
 * values of either sign. */
static void random_blocks(moe_dtype wt, char *w, size_t bytes, uint64_t *s) {
    for (size_t i = 0; i < bytes; i++) w[i] = (char)(test_rand_u64(s) >> 56);
    const size_t bb = moe_dtype_block_bytes(wt);
    int off[2] = {0, -1};
    if (wt == MOE_DTYPE_Q4_K || wt == MOE_DTYPE_Q5_K || wt == MOE_DTYPE_Q4_1 ||
        wt == MOE_DTYPE_Q5_1)
        off[1] = 2;
    if (wt == MOE_DTYPE_Q6_K) off[0] = 208;
    if (wt == MOE_DTYPE_Q2_K) off[0] = 80, off[1] = 82;
    if (wt == MOE_DTYPE_Q3_K) off[0] = 108;
    for (size_t b = 0; b + bb <= bytes; b += bb)
        for (int j = 0; j < 2; j++) {
            if (off[j] < 0) continue;
            const uint16_t h = moe_f32_to_f16(test_rand_f32(s) * 0.01f);
            memcpy(w + b + off[j], &h, 2);
        }
}

static void check_fast(moe_dtype wt, int raw) {
    const moe_cpu_kernels *k512 = moe_cpu_kernels_get(MOE_CPU_AVX512);
    const moe_cpu_kernels *k2 = moe_cpu_kernels_get(MOE_CPU_AVX2);
    if (!k2) SKIP("no AVX2");
    const int64_t blk = (int64_t)moe_dtype_block_elems(wt);
    const int64_t shapes[][3] = {
        {blk, 8, 1},      {blk * 3, 13, 2}, {blk * 4, 24, 1}, {blk * 2, 37, 3},  {4096, 16, 1},
        {blk * 5, 45, 2}, {blk * 2, 11, 6}, {blk, 16, 9},     {blk * 120, 8, 2}, {blk * 120, 8, 1},
        {blk * 7, 9, 1},  {blk * 6, 10, 1}, {blk * 84, 9, 9}, {blk * 3, 37, 4}};
    const moe_dtype dt = moe_dtype_dot_type(wt);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t k = shapes[si][0], m = shapes[si][1], nb = shapes[si][2];
        uint64_t seed = 1234 + (uint64_t)si * 77 + (uint64_t)wt * 5 + (uint64_t)raw;
        const size_t wrb = moe_dtype_row_bytes(wt, k), xrb = moe_dtype_row_bytes(dt, k);
        char *W = test_xmalloc(wrb * (size_t)m), *X = test_xmalloc(xrb * (size_t)nb);
        float *f = test_xmalloc(sizeof(float) * (size_t)(k * (m > nb ? m : nb)));
        if (raw) {
            random_blocks(wt, W, wrb * (size_t)m, &seed);
        } else {
            for (int64_t i = 0; i < m * k; i++) f[i] = test_rand_f32(&seed) * (1 + i % 5);
            for (int64_t r = 0; r < m; r++) moe_dtype_from_f32(wt, f + r * k, W + r * wrb, k);
        }
        for (int64_t i = 0; i < nb * k; i++) f[i] = test_rand_f32(&seed) * (1 + i % 3);
        moe_op_quantize(k512, wt, f, X, nb, k);
        const size_t ny = sizeof(float) * (size_t)(m * nb);
        float *yr = test_xmalloc(ny), *y = test_xmalloc(ny), *ys = test_xmalloc(ny);
        /* each level's kernels against its own build of quant_simd.h (the
         * two builds agree: quant_gemm_* in test_quant.c) */
        /* AVX-512 twice where the CPU has VBMI: with it, then without */
        const int vbmi = moe__cpu_has_avx512vbmi;
        for (int l = MOE_CPU_AVX2; l <= MOE_CPU_AVX512 + vbmi; l++) {
            const moe_cpu_kernels *kt = l == MOE_CPU_AVX2 ? k2 : k512;
            if (!kt) continue;
            moe__cpu_has_avx512vbmi = l == MOE_CPU_AVX512 && vbmi;
            (l == MOE_CPU_AVX2 ? moe__quant_gemm_avx2_ref
                               : moe__quant_gemm_avx512_ref)(wt, k, W, 0, m, X, nb, yr, m);
            kt->gemm(wt, k, W, 0, m, X, nb, y, m);
            for (int64_t i = 0; i < m * nb; i++)
                if (memcmp(&y[i], &yr[i], sizeof(float)))
                    TEST_FAIL("%s%s %s%s k=%lld m=%lld nb=%lld: y[%lld] = %.9g, reference %.9g",
                              kt->name, l > MOE_CPU_AVX512 ? " (no VBMI)" : "", moe_dtype_name(wt),
                              raw ? " (random bytes)" : "", (long long)k, (long long)m,
                              (long long)nb, (long long)i, y[i], yr[i]);
            /* row ranges split at odd places: 0..3, 3..m-5, m-5..m */
            const int64_t cut[4] = {0, 3, m - 5, m};
            for (int c = 0; c < 3; c++) kt->gemm(wt, k, W, cut[c], cut[c + 1], X, nb, ys, m);
            if (memcmp(ys, yr, ny))
                TEST_FAIL("%s%s %s%s k=%lld m=%lld: the row split changed the results", kt->name,
                          l > MOE_CPU_AVX512 ? " (no VBMI)" : "", moe_dtype_name(wt),
                          raw ? " (random bytes)" : "", (long long)k, (long long)m);
        }
        moe__cpu_has_avx512vbmi = vbmi;
        free(W), free(X), free(f), free(yr), free(y), free(ys);
    }
}

static void check_fast_both(moe_dtype wt) {
    check_fast(wt, 0);
    check_fast(wt, 1);
}

TEST(quant_fast_q4_0) {
    check_fast_both(MOE_DTYPE_Q4_0);
}
TEST(quant_fast_iq4_nl) {
    check_fast_both(MOE_DTYPE_IQ4_NL);
}
TEST(quant_fast_q4_K) {
    check_fast_both(MOE_DTYPE_Q4_K);
}
TEST(quant_fast_q5_K) {
    check_fast_both(MOE_DTYPE_Q5_K);
}
TEST(quant_fast_q6_K) {
    check_fast_both(MOE_DTYPE_Q6_K);
}
TEST(quant_fast_iq4_xs) {
    check_fast_both(MOE_DTYPE_IQ4_XS);
}
TEST(quant_fast_q2_K) {
    check_fast_both(MOE_DTYPE_Q2_K);
}
TEST(quant_fast_q3_K) {
    check_fast_both(MOE_DTYPE_Q3_K);
}
TEST(quant_fast_q4_1) {
    check_fast_both(MOE_DTYPE_Q4_1);
}
TEST(quant_fast_q5_0) {
    check_fast_both(MOE_DTYPE_Q5_0);
}
TEST(quant_fast_q5_1) {
    check_fast_both(MOE_DTYPE_Q5_1);
}
