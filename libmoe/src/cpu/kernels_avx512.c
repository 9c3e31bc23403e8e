/*
 * cpu/kernels_avx512.c - AVX-512 (F, BW, VL, DQ, VNNI; BF16 if present).
 *
 * Every kernel here reproduces the arithmetic of llama.cpp's AVX-512 CPU
 * build (the ggml variant it loads on such a CPU: zen4, or icelake without
 * AVX512_BF16) operation for operation, so results are identical bit for bit;
 * tests/unit/test_kernels.c checks this against the prebuilt reference.
 *
 * Q8_0 weights (per block: 8 int32 lanes of 4 products, acc_lane =
 * fma(dw * dx, (float)lane, acc_lane), lanes summed as hsum_float_8 - ggml's
 * vec_dot_q8_0_q8_0, and llamafile's Q8_0 sgemm in prefill):
 *   - rows (nb <= 2, decode; memory-bound): weight rows are read one after
 *     another, so the matrix is one sequential stream (several interleaved
 *     short row streams defeat the hardware prefetchers: ~0.6-0.75 of the
 *     read bandwidth, against ~0.95 this way), with a software prefetch
 *     ahead; at nb = 1 two rows from the two halves of the range share a
 *     pass so that two FMA chains are in flight. vpdpbusd of |w| against x
 *     carrying w's sign gives the lanes.
 *   - transposed tile (nb >= 3, prefill; compute-bound): 16 weight rows x 16
 *     blocks repacked on the stack so one zmm holds lane j of 16 rows
 *     (q8_tile_avx512.c, with the fast tile and the packed layout's
 *     kernels; Q5_0, Q4_1 and Q5_1 batches run it on their levels).
 * F32 / F16 / BF16 weights: ggml's vec_dot at nb = 1 (rows in sequence);
 * llamafile's tinyBLAS arithmetic (one accumulator per output) for nb >= 2,
 * as 4 x 4 register tiles from nb = 4 (vdpbf16ps for BF16 when the CPU has
 * AVX512_BF16).
 * Row-op helpers: softmax and SwiGLU with ggml's vectorised exp.
 *
 * Stack use: small here (the Q8_0 tile's ~45 KB: q8_tile_avx512.c).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#define AI static inline __attribute__((always_inline))

/* Up to this many activation rows the Q8_0 gemm streams weight rows in
 * sequence (memory-bound decode); from it on it uses the transposed tile. */
#define Q8_ROWS_MAX_NB 2
/* Activation scales converted up front for rows of up to this many blocks. */
#define Q8_ROWS_DX_BLK 1024
/* Q5_0 activation rows from which the tile runs (one thread, 1408 x 2048,
 * against the rows kernel: 3 rows 1.2x, 4 1.35x, 6-16 ~2x, 32 2.5x; 2
 * rows the same) */
#define Q50_TILE_MIN_NB 3
/* The same for Q4_1 and Q5_1 (Q4_1 / Q5_1: 3 rows 0.93x / 1.0x, 4 1.07x /
 * 1.14x, 8 1.45x / 1.58x, 32 2.0x / 2.2x) */
#define Q41_TILE_MIN_NB 4

/* ==== Helpers ============================================================== */

AI float hsum8(__m256 v) { /* as ggml's hsum_float_8 */
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

AI __m256 f16_bcast8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_set1_epi16((short)*p));
}

/* ==== Conversions ========================================================== */

static void quantize_q8_0_avx512(const float *x, moe_block_q8_0 *y, int64_t n) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / MOE_QK8_0; b++, x += MOE_QK8_0) {
        __m512 v0 = _mm512_loadu_ps(x);
        __m512 v1 = _mm512_loadu_ps(x + 16);
        const __m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
        const float amax = _mm512_reduce_max_ps(m);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        const __m512 mul = _mm512_set1_ps(id);
        const __m512i i0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, mul),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i i1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, mul),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtsepi32_epi8(i1));
    }
}

/* f32 -> bf16, round to nearest even, NaN kept quiet (as moe_f32_to_bf16). */
AI __m256i bf16_from_f32x16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(64));
    return _mm512_cvtepi32_epi16(r);
}

static void from_f32_avx512(moe_dtype dt, const float *x, void *y, int64_t n) {
    int64_t i = 0;
    switch (dt) {
    case MOE_DTYPE_F32:
        memcpy(y, x, (size_t)n * sizeof(float));
        return;
    case MOE_DTYPE_F16: {
        uint16_t *o = y;
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(o + i),
                                _mm512_cvtps_ph(_mm512_loadu_ps(x + i),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; i < n; i++) o[i] = moe_f32_to_f16(x[i]);
        return;
    }
    case MOE_DTYPE_BF16: {
        uint16_t *o = y;
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(o + i), bf16_from_f32x16(_mm512_loadu_ps(x + i)));
        for (; i < n; i++) o[i] = moe_f32_to_bf16(x[i]);
        return;
    }
    case MOE_DTYPE_Q8_0:
        quantize_q8_0_avx512(x, y, n);
        return;
    case MOE_DTYPE_Q8_K:
        moe__quant_q8_K_avx512(x, y, n);
        return;
    default: /* Q8_1: the same code at every level */
        moe__quant_act_from_f32(dt, x, y, n);
        return;
    }
}

/* ==== Q8_0: rows in sequence (decode) ===================================== */

/* R weight rows (R * C <= 2) against C activation rows. Per block:
 * vpdpbusd of |w| against x with w's sign, into 8 int32 lanes (lane j: bytes
 * 4j..4j+3), then acc += (dw * dx) * (float)lane, one accumulator per
 * output; each output is summed as ggml's hsum_float_8. This is ggml's x86
 * vec_dot_q8_0_q8_0 step for step, so decode results equal llama.cpp's bit
 * for bit. One chain of FMAs per output bounds a single row to ~1 block per
 * 4 cycles, so at nb = 1 two rows (from the two halves of the range: two
 * sequential streams, which the prefetchers follow) run together.
 * dx[c] holds the activation scales as floats, or is NULL (converted here). */
AI void q8_rows_tile(const int R, const int C, int64_t nblk, const moe_block_q8_0 *const *w,
                     const char *X, size_t xrb, const float *const *dx, float *const *y,
                     int64_t ldy) {
    __m256 acc[2][2];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
#pragma GCC unroll 2
        for (int r = 0; r < R; r++)
            __builtin_prefetch((const char *)(w[r] + b) + MOE_PF_DIST, 0, 3);
        __m256i xq[2];
        __m256 dxv[2];
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb) + b;
            xq[c] = _mm256_loadu_si256((const __m256i *)xb->qs);
            dxv[c] = dx ? _mm256_set1_ps(dx[c][b]) : f16_bcast8(&xb->d);
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            const __m256i wq = _mm256_loadu_si256((const __m256i *)w[r][b].qs);
            const __m256i aw = _mm256_abs_epi8(wq);
            const __m256 dw = f16_bcast8(&w[r][b].d);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++) {
                const __m256i sx = _mm256_sign_epi8(xq[c], wq);
                const __m256 q =
                    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx));
                acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dxv[c]), q, acc[r][c]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) y[r][(int64_t)c * ldy] = hsum8(acc[r][c]);
}

static void q8_rows(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                    size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    float dxs[Q8_ROWS_MAX_NB][Q8_ROWS_DX_BLK];
    const float *dxp[Q8_ROWS_MAX_NB];
    const float *const *dx = NULL;
    if (nblk <= Q8_ROWS_DX_BLK) {
        for (int64_t c = 0; c < nb; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb);
            for (int64_t b = 0; b < nblk; b++) dxs[c][b] = _cvtsh_ss(xb[b].d);
            dxp[c] = dxs[c];
        }
        dx = dxp;
    }
#define Q8_ROW(r) ((const moe_block_q8_0 *)(W + (size_t)(r)*wrb))
    if (nb == 1) {
        const int64_t h = (r1 - r0) / 2;
        for (int64_t i = 0; i < h; i++) {
            const moe_block_q8_0 *w[2] = {Q8_ROW(r0 + i), Q8_ROW(r0 + h + i)};
            float *y[2] = {Y + r0 + i, Y + r0 + h + i};
            q8_rows_tile(2, 1, nblk, w, X, xrb, dx, y, ldy);
        }
        if (2 * h < r1 - r0) {
            const moe_block_q8_0 *w[1] = {Q8_ROW(r1 - 1)};
            float *y[1] = {Y + r1 - 1};
            q8_rows_tile(1, 1, nblk, w, X, xrb, dx, y, ldy);
        }
    } else {
        for (int64_t r = r0; r < r1; r++) {
            const moe_block_q8_0 *w[1] = {Q8_ROW(r)};
            float *y[1] = {Y + r};
            q8_rows_tile(1, 2, nblk, w, X, xrb, dx, y, ldy);
        }
    }
#undef Q8_ROW
}

/* ==== Table ================================================================ */

static void gemm_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                        const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    switch (wt) {
    case MOE_DTYPE_Q8_0:
        if (nb <= Q8_ROWS_MAX_NB)
            q8_rows(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        else
            moe__q8_tile_avx512(wt, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_Q5_0:
    case MOE_DTYPE_Q4_1:
    case MOE_DTYPE_Q5_1:
        /* batches: the Q8_0 tile on the rows' levels (q8_tile_avx512.c),
         * the same bits as the rows kernel */
        if (nb >= (wt == MOE_DTYPE_Q5_0 ? Q50_TILE_MIN_NB : Q41_TILE_MIN_NB))
            moe__q8_tile_avx512(wt, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        else
            moe__quant_gemm_avx512(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    case MOE_DTYPE_F32:
    case MOE_DTYPE_F16:
    case MOE_DTYPE_BF16:
        moe__flt_gemm_avx512(wt, 0, k, W, r0, r1, X, nb, Y, ldy);
        return;
    default: /* the other quantised types: quant_avx512.c */
        moe__quant_gemm_avx512(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
}

/* gemm with tinyBLAS's arithmetic for one float row too (moe/ops.h). */
static void gemm_batch_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                              const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    if (wt == MOE_DTYPE_F32 || wt == MOE_DTYPE_F16 || wt == MOE_DTYPE_BF16)
        moe__flt_gemm_avx512(wt, 1, k, W, r0, r1, X, nb, Y, ldy);
    else
        gemm_avx512(wt, k, W, r0, r1, X, nb, Y, ldy);
}

/* Fast numerics: the int8 tile for Q8_0 batches (AMX-INT8 on whole tiles of
 * 16 rows where the CPU has it, this file's VNNI tile for the rest); IQ4_XS,
 * Q5_K and Q6_K per super-block (quant_klanes512.h). */
static void gemm_fast_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                             const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    if (wt == MOE_DTYPE_IQ4_XS || wt == MOE_DTYPE_Q6_K || wt == MOE_DTYPE_Q5_K) {
        moe__quant_fast_avx512(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
    if (wt != MOE_DTYPE_Q8_0) {
        gemm_avx512(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    int64_t r = r0;
    if (moe__cpu_use_amx && r1 - r0 >= 16)
        r = moe__q8_fast_amx(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
    if (r < r1) moe__q8_fast_vnni(k, W, wrb, r, r1, X, xrb, nb, Y, ldy);
}

/* ==== Row-op helpers ======================================================= */

/* ggml's AVX-512 exp (ggml_v_expf, after ARM's optimized-routines expf: max
 * error ~1.5 ulp; overflow to inf above ~88.38, flush to 0 below ~-103.97),
 * operation for operation, so softmax and SiLU round as llama.cpp's. */
AI __m512 v_expf16(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 big = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 p = _mm512_fmadd_ps(
        _mm512_fmadd_ps(
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
            _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 res = _mm512_scalef_ps(p, n);
    if (_mm512_kortestz(big, big)) return res;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ),
                                            _mm512_set1_ps(INFINITY), zero);
    return _mm512_mask_blend_ps(big, res, alt);
}

/* ggml_vec_swiglu_f32 (AVX-512): y = silu(g) * u, silu(x) = x / (1 + exp(0 - x))
 * with v_expf16 on whole groups of 16, expf on the tail. */
void moe__swiglu_avx512(const float *g, const float *u, float *y, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 silu = _mm512_div_ps(x, _mm512_add_ps(one, v_expf16(_mm512_sub_ps(zero, x))));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(silu, _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ggml_vec_soft_max_f32 (AVX-512): x = exp(x - max) in place; returns the
 * sum as ggml forms it (each group of 16 summed in float by
 * _mm512_reduce_add_ps, then in double; the tail one by one in double). */
double moe__softmax_exp_avx512(float *x, int64_t n, float max) {
    const __m512 vmax = _mm512_set1_ps(max);
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = v_expf16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmax));
        _mm512_storeu_ps(x + i, v);
        sum += (double)_mm512_reduce_add_ps(v);
    }
    for (; i < n; i++) {
        const float e = expf(x[i] - max);
        x[i] = e;
        sum += (double)e;
    }
    return sum;
}

/* moe_int8_peak's loop at this level: per step 8 chains of 4 VPDPBUSD (64
 * int8 products each), each chain from zero and then added to its total,
 * the shape of the tiles' per-block sums; returns the products done.
 * Measured on Zen 5 (2-vCPU VM, one thread): this shape ~6.9 G VPDPBUSD/s;
 * 8 chains carried across steps ~5.3; 16 carried ~3.7 (the earlier loop,
 * with its accumulators in memory through the compiler, ~3.3: half the
 * peak). */
uint64_t moe__int8_loop_avx512(int64_t n) {
    __m512i tot[8], w[4], b[8];
    for (int u = 0; u < 8; u++)
        tot[u] = _mm512_setzero_si512(), b[u] = _mm512_set1_epi8((char)(2 + u));
    for (int j = 0; j < 4; j++) w[j] = _mm512_set1_epi8((char)(1 + j));
    for (int64_t i = 0; i < n; i++) {
        /* the weights "change" every step: no chain is hoisted out */
        __asm__ volatile("" : "+v"(w[0]), "+v"(w[1]), "+v"(w[2]), "+v"(w[3]));
        __m512i s[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) s[u] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
#pragma GCC unroll 8
            for (int u = 0; u < 8; u++) s[u] = _mm512_dpbusd_epi32(s[u], w[j], b[u]);
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) tot[u] = _mm512_add_epi32(tot[u], s[u]);
    }
    __m512i t = tot[0];
#pragma GCC unroll 8
    for (int u = 1; u < 8; u++) t = _mm512_add_epi32(t, tot[u]);
    /* one lane: the vector sums wrap; a scalar reduction of them would overflow int */
    volatile int sink = _mm_cvtsi128_si32(_mm512_castsi512_si128(t));
    (void)sink;
    return (uint64_t)n * 32 * 64;
}

const moe_cpu_kernels moe__kernels_avx512 = {
    .level = MOE_CPU_AVX512,
    .name = "avx512",
    .from_f32 = from_f32_avx512,
    .gemm = gemm_avx512,
    .gemm_fast = gemm_fast_avx512,
    .gemm_batch = gemm_batch_avx512,
    .gemm_q8p = moe__q8p_gemm_avx512,
    .gemm_q4kp = moe__q4kp_gemm_avx512,
    .gemm_q4p = moe__q4p_gemm_avx512,
    .gemm_iq4xsp = moe__iq4xsp_gemm_avx512,
    .gemm_q6kp = moe__q6kp_gemm_avx512,
    .gemm_q5kp = moe__q5kp_gemm_avx512,
    .dot_f32 = moe__dot_f32_avx512,
    .axpy_f32 = moe__axpy_f32_avx512,
    .dots_f32 = moe__dots_f32_avx512,
    .wsum_f32 = moe__wsum_f32_avx512,
    .dots_f16 = moe__dots_f16_avx512,
    .wsum_f16 = moe__wsum_f16_avx512,
    .dots_f16_g = moe__dots_f16_g_avx512,
    .wsum_f16_g = moe__wsum_f16_g_avx512,
};
