/*
 * cpu/quant_simd.h - the quantised weight types other than Q8_0 with AVX2
 * integer dots; included once by quant_avx2.c and once by quant_avx512.c
 * (built with their ISA flags), each defining QUANT_GEMM to its table's
 * name. 256-bit code at both levels: it is ggml's x86 arithmetic for these
 * types, which llama.cpp's AVX-512 builds run as well.
 *
 * Per 32 elements, as ggml's x86 vec_dot_*: the weight levels are unpacked
 * to 32 bytes, multiplied with the int8 activations by vpmaddubsw (|w| with
 * x carrying w's sign for signed levels) and summed in pairs by vpmaddwd
 * into 8 int32 lanes (lane l: elements 4l..4l+3), all exact; the lanes are
 * converted and scaled into 8 float lanes, summed at the end as
 * hsum_float_8. Q4_0, IQ4_NL and Q4_K follow llama.cpp's repacked kernels
 * instead (see dot_rows_q4), which is what its x86 builds run for them. The
 * scalar level (quant_scalar.c) follows ggml's generic code; the integer
 * sums and scales are the same everywhere, so the levels differ by float
 * reassociation only.
 */
#ifndef QUANT_GEMM
#error "define QUANT_GEMM before including quant_simd.h"
#endif

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#define QAI static inline __attribute__((always_inline))

/* ---- Software prefetch for the fast kernels (both levels) ---- */

/* Prefetch `lines` cache lines from p. */
QAI void q_prefetch_at(const char *p, int lines) {
    for (int i = 0; i < lines; i++) __builtin_prefetch(p + 64 * i, 0, 3);
}

/* The same into L2 only (prefetcht1): the AVX-512 Q4_K kernel reads from
 * DRAM ~4% faster this way; the others (AVX2 Q4_K, Q4_0, the one-row
 * kernels) as fast or slower (bench-kernels --matvec). */
QAI void q_prefetch_l2_at(const char *p, int lines) {
    for (int i = 0; i < lines; i++) __builtin_prefetch(p + 64 * i, 0, 2);
}

/* Prefetch `lines` cache lines from p + MOE_PF_DIST (one row after another:
 * the one-row kernels). */
QAI void q_prefetch(const void *p, int lines) {
    q_prefetch_at((const char *)p + MOE_PF_DIST, lines);
}

/* The 8-row kernels read 8 rows side by side, block b of each in turn, so
 * the weights they need 2 * MOE_PF_DIST bytes later (on this class of
 * machine about twice as fast as MOE_PF_DIST bytes along one row, which
 * only reaches the group's next rows) lie `ahead` = 2 * MOE_PF_DIST / (8 *
 * block bytes) blocks further in the same row, or past the row's end in the
 * row 8 further on (the next group's). That address for `row` at block b. */
QAI const char *q_pf8(const char *row, size_t wrb, size_t bs, int64_t b, int64_t nblk) {
    const int64_t t = b + (int64_t)(2 * MOE_PF_DIST / (8 * bs));
    return t < nblk ? row + (size_t)t * bs : row + 8 * wrb + (size_t)(t - nblk) * bs;
}

QAI float q_hsum8(__m256 v) { /* ggml's hsum_float_8 */
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

QAI float q_f16(uint16_t h) {
    return _cvtsh_ss(h);
}

/* 16 bytes of nibbles -> 32 bytes: the low nibbles (elements 0..15), then
 * the high ones (16..31). */
QAI __m256i q_nibbles(const uint8_t *p) {
    const __m128i v = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(15);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(v, m)),
                                   _mm_and_si128(_mm_srli_epi16(v, 4), m), 1);
}

/* 32 bits -> 32 bytes, 0xff where the bit is set. */
QAI __m256i q_bits(const uint8_t *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                         2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    const __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)u), sel);
    return _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
}

/* Unsigned levels (0..127) times int8: 8 int32 lanes of 4 products. */
QAI __m256i q_dot_u8(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

/* Signed levels times int8 (|w| <= 127): |w| with x carrying w's sign. */
QAI __m256i q_dot_i8(__m256i w, __m256i x) {
    return q_dot_u8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

/* The sum of 8 int32 lanes (exact). */
QAI int q_hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)));
}

/* ==== 32-element blocks ==================================================== */

/* Q5_0: the nibble, minus 16 where the fifth bit is clear (or-ing 0xf0
 * into the byte). */
static float dot_q5_0(int64_t nblk, const moe_block_q5_0 *w, const moe_block_q8_0 *x) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const __m256 d = _mm256_set1_ps(q_f16(w[b].d) * q_f16(x[b].d));
        const __m256i hi = _mm256_andnot_si256(q_bits(w[b].qh), _mm256_set1_epi8((char)0xf0));
        const __m256i q = _mm256_or_si256(q_nibbles(w[b].qs), hi);
        const __m256i p = q_dot_i8(q, _mm256_loadu_si256((const __m256i *)x[b].qs));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    return q_hsum8(acc);
}

/* Q4_1 / Q5_1: unsigned levels; the minimum's term m * s summed apart in
 * float and added last, as ggml. */
static float dot_q4_1(int64_t nblk, const moe_block_q4_1 *w, const moe_block_q8_1 *x) {
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        summs += q_f16(w[b].m) * q_f16(x[b].s);
        const __m256 d =
            _mm256_mul_ps(_mm256_set1_ps(q_f16(w[b].d)), _mm256_set1_ps(q_f16(x[b].d)));
        const __m256i p =
            q_dot_u8(q_nibbles(w[b].qs), _mm256_loadu_si256((const __m256i *)x[b].qs));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    return q_hsum8(acc) + summs;
}

static float dot_q5_1(int64_t nblk, const moe_block_q5_1 *w, const moe_block_q8_1 *x) {
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        summs += q_f16(w[b].m) * q_f16(x[b].s);
        const __m256i hi = _mm256_and_si256(q_bits(w[b].qh), _mm256_set1_epi8(16));
        const __m256i q = _mm256_or_si256(q_nibbles(w[b].qs), hi);
        const __m256i p = q_dot_u8(q, _mm256_loadu_si256((const __m256i *)x[b].qs));
        const __m256 d =
            _mm256_mul_ps(_mm256_set1_ps(q_f16(w[b].d)), _mm256_set1_ps(q_f16(x[b].d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, acc);
    }
    return q_hsum8(acc) + summs;
}

/* The IQ4 levels of 16 bytes of nibbles, by table lookup (vpshufb). */
QAI __m256i q_iq4(const uint8_t *p) {
    const __m128i t = _mm_loadu_si128((const __m128i *)moe_iq4nl_values);
    const __m128i v = _mm_loadu_si128((const __m128i *)p), m = _mm_set1_epi8(15);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_shuffle_epi8(t, _mm_and_si128(v, m))),
                                   _mm_shuffle_epi8(t, _mm_and_si128(_mm_srli_epi16(v, 4), m)), 1);
}

/* Q4_0 and IQ4_NL as llama.cpp runs them on x86: it repacks Q4_0, IQ4_NL
 * (and Q4_K) matrices whose row count is a multiple of 8 (every one of a
 * model in practice) into 8-row blocks (CPU_REPACK) and computes them with
 * ggml_gemv/gemm_{q4_0,iq4_nl}_8x8_q8_0, whose float order differs from
 * vec_dot's: each block's exact int32 sum, then acc = fma((float)sum,
 * d_w * d_x, acc) block after block, one accumulator per output, no lanes.
 * The two types share the block layout (fp16 d, 16 bytes of nibbles); the
 * levels are nibble - 8 or the IQ4 table's. R weight rows against one
 * activation row: R independent fma chains in flight (one chain alone is
 * bound by the fma latency, ~4x below the memory bandwidth). */
QAI void dot_rows_q4(const int iq4, const int R, int64_t nblk, const char *w0, size_t wrb,
                     const moe_block_q8_0 *x, float *y) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int64_t b = 0; b < nblk; b++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const float dx = q_f16(x[b].d);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const moe_block_q4_0 *wb = (const moe_block_q4_0 *)(w0 + (size_t)r * wrb) + b;
            const __m256i q =
                iq4 ? q_iq4(wb->qs) : _mm256_sub_epi8(q_nibbles(wb->qs), _mm256_set1_epi8(8));
            acc[r] = fmaf((float)q_hsum_i32(q_dot_i8(q, xq)), q_f16(wb->d) * dx, acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) y[r] = acc[r];
}

/* 8 weight rows against one activation row with the rows in the 8 float
 * lanes (the layout of llama.cpp's repacked kernels): per block the 8 rows'
 * int32 lanes are summed and transposed by vphaddd into one vector of 8
 * block sums, then one vector fma, lane r = fmaf((float)sum_r, d_r * d_x,
 * acc_r): the same bits as dot_rows_q4, without a horizontal sum per row. */
QAI void dot8_q4(const int iq4, int64_t nblk, const char *w0, size_t wrb, const moe_block_q8_0 *x,
                 float *y) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256i p[8];
        _Alignas(16) uint16_t dh[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const moe_block_q4_0 *wb = (const moe_block_q4_0 *)(w0 + (size_t)r * wrb) + b;
            const __m256i q =
                iq4 ? q_iq4(wb->qs) : _mm256_sub_epi8(q_nibbles(wb->qs), _mm256_set1_epi8(8));
            p[r] = q_dot_i8(q, xq);
            dh[r] = wb->d;
        }
        /* [r0 r1 r2 r3] of the low 4 lanes and of the high 4, then added */
        const __m256i t0 =
            _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        const __m256i t1 =
            _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20),
                                              _mm256_permute2x128_si256(t0, t1, 0x31));
        const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)dh)),
                                       _mm256_set1_ps(q_f16(x[b].d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
    }
    _mm256_storeu_ps(y, acc);
}

static void gemm_q4_rows(const int iq4, int64_t nblk, const char *W, size_t wrb, int64_t r0,
                         int64_t r1, const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    int64_t r = r0;
    for (; r + 8 <= r1; r += 8)
        for (int64_t b = 0; b < nb; b++)
            dot8_q4(iq4, nblk, W + (size_t)r * wrb, wrb,
                    (const moe_block_q8_0 *)(X + (size_t)b * xrb), Y + b * ldy + r);
    for (; r + 4 <= r1; r += 4)
        for (int64_t b = 0; b < nb; b++) {
            float y[4];
            dot_rows_q4(iq4, 4, nblk, W + (size_t)r * wrb, wrb,
                        (const moe_block_q8_0 *)(X + (size_t)b * xrb), y);
            for (int i = 0; i < 4; i++) Y[b * ldy + r + i] = y[i];
        }
    for (; r < r1; r++)
        for (int64_t b = 0; b < nb; b++)
            dot_rows_q4(iq4, 1, nblk, W + (size_t)r * wrb, wrb,
                        (const moe_block_q8_0 *)(X + (size_t)b * xrb), Y + b * ldy + r);
}

#include "quant_ksimd.h"

/* ==== Table entry ========================================================== */

void QUANT_GEMM(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                int64_t nb, float *Y, int64_t ldy) {
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    const int64_t nblk = k / (int64_t)moe_dtype_block_elems(wt);
    if (wt == MOE_DTYPE_Q4_0 || wt == MOE_DTYPE_IQ4_NL) {
        gemm_q4_rows(wt == MOE_DTYPE_IQ4_NL, nblk, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    }
    if (wt == MOE_DTYPE_Q4_K) /* 8 rows at a time, the rest below */
        for (; r0 + 8 <= r1; r0 += 8)
            for (int64_t b = 0; b < nb; b++)
                dot8_q4_K(nblk, (const char *)W + (size_t)r0 * wrb, wrb,
                          (const moe_block_q8_K *)((const char *)X + (size_t)b * xrb),
                          Y + b * ldy + r0);
    /* weight row outer: each row is read from memory once and stays in L1
     * for the batch's activation rows */
    for (int64_t r = r0; r < r1; r++) {
        const void *w = (const char *)W + (size_t)r * wrb;
        for (int64_t b = 0; b < nb; b++) {
            const void *x = (const char *)X + (size_t)b * xrb;
            float v;
            switch (wt) {
            case MOE_DTYPE_Q4_1:
                v = dot_q4_1(nblk, w, x);
                break;
            case MOE_DTYPE_Q5_0:
                v = dot_q5_0(nblk, w, x);
                break;
            case MOE_DTYPE_Q5_1:
                v = dot_q5_1(nblk, w, x);
                break;
            default:
                v = qk_dot(wt, nblk, w, x);
                break;
            }
            Y[b * ldy + r] = v;
        }
    }
}
