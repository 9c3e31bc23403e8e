/*
 * cpu/quant_packed_avx512.c - the 4-bit types in the packed layouts of
 * moe/ops.h (moe_q4kp_pack: Q4_K; moe_q4p_pack: Q4_0, IQ4_NL;
 * moe_iq4xsp_pack: IQ4_XS; moe_q6kp_pack: Q6_K; moe_q5kp_pack: Q5_K) at
 * the AVX-512 level: 16 weight rows in the
 * lanes of one int8 tile (VNNI), one sequential stream of weights, for any
 * number of activation rows. Each gives the bits of quant_avx512.c's
 * kernels on the rows as stored: Q4_K's, Q4_0's and IQ4_NL's llama.cpp
 * arithmetic is an exact integer sum per block or super-block, then one or
 * two fma per block, which the lanes keep; IQ4_XS's, Q6_K's and Q5_K's keep ggml's
 * 8 lanes per row (their exact kernels here, for decode and --exact), and
 * their fast numerics (batches) one exact sum per row and super-block.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "moe/dtype.h"
#include "moe/ops.h"

#define QAI static inline __attribute__((always_inline))

/* Prefetch `lines` cache lines from p (into every level). */
QAI void q_prefetch_at(const char *p, int lines) {
    for (int i = 0; i < lines; i++) __builtin_prefetch(p + 64 * i, 0, 3);
}

/* The tiles [r0, r1) of a packed matrix against nb activation rows, in
 * chunks of 4 columns and then 3, 2 or 1: TILE(C, c) runs columns c..c+C-1
 * of the tile at rt. */
#define PACKED_TILES(r0, r1, nb, TILE)                                                             \
    for (int64_t rt = (r0); rt < (r1); rt += MOE_Q8P_ROWS) {                                       \
        int64_t c = 0;                                                                             \
        for (; c + 4 <= (nb); c += 4) TILE(4, c);                                                  \
        switch ((nb)-c) {                                                                          \
        case 3:                                                                                    \
            TILE(3, c);                                                                            \
            break;                                                                                 \
        case 2:                                                                                    \
            TILE(2, c);                                                                            \
            break;                                                                                 \
        case 1:                                                                                    \
            TILE(1, c);                                                                            \
            break;                                                                                 \
        default:                                                                                   \
            break;                                                                                 \
        }                                                                                          \
    }

/* The exact numerics' drivers: fn(nblk, tile, activation row, outputs) for
 * each tile [r0, r1) and each of the nb activation rows. */
#define EXACT_TILES(r0, r1, nb, fn)                                                                \
    for (int64_t rt = (r0); rt < (r1); rt += MOE_Q8P_ROWS)                                         \
        for (int64_t c = 0; c < (nb); c++)                                                         \
    fn(nblk, (const char *)W + (size_t)rt * wrb, (const char *)X + (size_t)c * xrb,                \
       Y + c * ldy + rt)

/* ==== Q4_K packed (moe_q4kp_pack): 16 rows in the lanes ==================== */

/* 96 bytes of 16 rows' 6-bit values of 8 groups (moe_q4kp_pack's scales
 * layout) -> bytes [g][r]: v[0] groups 0..3, v[1] groups 4..7. */
QAI void k6_unpack16(const uint8_t *p, __m512i v[2]) {
    const __m512i m4 = _mm512_set1_epi8(15), m2 = _mm512_set1_epi8(3);
    const __m512i lo = _mm512_loadu_si512(p);
    const __m256i hh = _mm256_loadu_si256((const __m256i *)(p + 64));
    const __m512i t = _mm512_and_si512(
        _mm512_inserti64x4(_mm512_castsi256_si512(hh), _mm256_srli_epi16(hh, 4), 1), m4);
    v[0] = _mm512_or_si512(_mm512_and_si512(lo, m4), _mm512_slli_epi16(_mm512_and_si512(t, m2), 4));
    v[1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(lo, 4), m4),
                           _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(t, 2), m2), 4));
}

/* One packed super-block's header: the 16 rows' scales and minimums, bytes
 * [g][r] (s[0]: groups 0..3, s[1]: 4..7, the same for m), d and dmin. */
QAI void q4kp_head(const uint8_t *h, __m512i *s, __m512i *m, __m512 *d, __m512 *dmin) {
    k6_unpack16(h, s);
    k6_unpack16(h + 96, m);
    *d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 192)));
    *dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 224)));
}

/* Bytes [g][r] (two zmm of 4 groups x 16 rows) -> group g's 16 int32. */
QAI __m512i q4kp_lane(const __m512i *v, int g) {
    const __m512i z = v[g >> 2];
    __m128i l;
    switch (g & 3) {
    case 0:
        l = _mm512_extracti32x4_epi32(z, 0);
        break;
    case 1:
        l = _mm512_extracti32x4_epi32(z, 1);
        break;
    case 2:
        l = _mm512_extracti32x4_epi32(z, 2);
        break;
    default:
        l = _mm512_extracti32x4_epi32(z, 3);
        break;
    }
    return _mm512_cvtepu8_epi32(l);
}

/* Bit b (0..7) of each byte of v moved to bit 4, the rest 0. */
QAI __m512i bit_to4(__m512i v, int b) {
    const __m512i s =
        b <= 4 ? _mm512_slli_epi16(v, (unsigned)(4 - b)) : _mm512_srli_epi16(v, (unsigned)(b - 4));
    return _mm512_and_si512(s, _mm512_set1_epi8(16));
}

/* Q5_K's fifth bits (the packed qh of load q: bit g of a byte is group g's)
 * into the nibbles of groups 2p (lo) and 2p + 1 (hi). */
QAI void q5kp_bits(const uint8_t *h, int p, int q, __m512i *lo, __m512i *hi) {
    const __m512i hb = _mm512_loadu_si512(h + 256 + 64 * q);
    *lo = _mm512_or_si512(*lo, bit_to4(hb, 2 * p));
    *hi = _mm512_or_si512(*hi, bit_to4(hb, 2 * p + 1));
}

/* C (1..4) activation rows against one tile of 16 packed rows, all of K:
 * per super-block, group g's exact sums (vpdpbusd: the nibbles unsigned,
 * the activations' 4 bytes broadcast; NQ chains a group, so that Zen 5 runs
 * them at full rate) times its scale (vpmulld) into the super-block's
 * int32, the minimums times the activations' group sums (vpdpwssd), then
 * dot_q4_K's two fma with the rows in the float lanes. Q5: Q5_K
 * (moe_q5kp_pack) with its fifth bits, whose fast numerics this is. */
QAI void q4kp_tile(const int Q5, const int C, const int NQ, int64_t nblk, const char *tw,
                   const char *X, size_t xrb, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const size_t bb = Q5 ? MOE_Q5KP_BLOCK : MOE_Q4KP_BLOCK;
    __m512 acc[4], accm[4];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) acc[c] = accm[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *h = (const uint8_t *)tw + (size_t)b * bb;
        const moe_block_q8_K *xb[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) xb[c] = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
        /* the tile is one sequential stream: two super-blocks ahead */
        q_prefetch_at((const char *)h + 2 * bb, (int)(bb / 64));
        __m512i sv[2], mv[2];
        __m512 d, dmin;
        q4kp_head(h, sv, mv, &d, &dmin);
        __m512i isum[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) isum[c] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            __m512i dot[4][2][4];
#pragma GCC unroll 4
            for (int c = 0; c < C; c++)
#pragma GCC unroll 4
                for (int j = 0; j < NQ; j++) dot[c][0][j] = dot[c][1][j] = _mm512_setzero_si512();
            const uint8_t *qp = h + (Q5 ? 768 : 256) + (size_t)p * 512;
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++) {
                const __m512i w = _mm512_loadu_si512(qp + 64 * q);
                __m512i lo = _mm512_and_si512(w, m4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
                if (Q5) q5kp_bits(h, p, q, &lo, &hi);
#pragma GCC unroll 4
                for (int c = 0; c < C; c++) {
                    const int8_t *xq = xb[c]->qs + 64 * p + 4 * q;
                    int32_t a0, a1;
                    memcpy(&a0, xq, 4);
                    memcpy(&a1, xq + 32, 4);
                    dot[c][0][q % NQ] =
                        _mm512_dpbusd_epi32(dot[c][0][q % NQ], lo, _mm512_set1_epi32(a0));
                    dot[c][1][q % NQ] =
                        _mm512_dpbusd_epi32(dot[c][1][q % NQ], hi, _mm512_set1_epi32(a1));
                }
            }
            const __m512i s0 = q4kp_lane(sv, 2 * p), s1 = q4kp_lane(sv, 2 * p + 1);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                __m512i e0 = dot[c][0][0], e1 = dot[c][1][0];
#pragma GCC unroll 4
                for (int j = 1; j < NQ; j++) {
                    e0 = _mm512_add_epi32(e0, dot[c][0][j]);
                    e1 = _mm512_add_epi32(e1, dot[c][1][j]);
                }
                isum[c] = _mm512_add_epi32(isum[c], _mm512_add_epi32(_mm512_mullo_epi32(e0, s0),
                                                                     _mm512_mullo_epi32(e1, s1)));
            }
        }
        __m512i mp[4]; /* lane r: group 2p's minimum (low int16), 2p + 1's (high) */
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
            mp[p] = _mm512_or_si512(q4kp_lane(mv, 2 * p),
                                    _mm512_slli_epi32(q4kp_lane(mv, 2 * p + 1), 16));
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            /* the activations' sums of 32: bsums of 16 in pairs */
            const __m128i bs2 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb[c]->bsums),
                                               _mm_loadu_si128((const __m128i *)xb[c]->bsums + 1));
            _Alignas(16) int32_t bp[4];
            _mm_store_si128((__m128i *)bp, bs2);
            __m512i im = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++)
                im = _mm512_dpwssd_epi32(im, mp[p], _mm512_set1_epi32(bp[p]));
            const __m512 dx = _mm512_set1_ps(xb[c]->d);
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[c]), _mm512_mul_ps(d, dx), acc[c]);
            accm[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(im), _mm512_mul_ps(dmin, dx), accm[c]);
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; c++)
        _mm512_storeu_ps(y + (int64_t)c * ldy, _mm512_sub_ps(acc[c], accm[c]));
}

void moe__q4kp_gemm_avx512(int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                           int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const int64_t nblk = k / MOE_QK_K;
    const size_t wrb = (size_t)nblk * sizeof(moe_block_q4_K);
    const size_t xrb = (size_t)nblk * sizeof(moe_block_q8_K);
    /* 2 columns: 4 chains a group, so each accumulator waits 16 instructions */
#define Q4KP_TILE(C, c)                                                                            \
    q4kp_tile(0, C, (C) == 2 ? 4 : 2, nblk, (const char *)W + (size_t)rt * wrb,                    \
              (const char *)X + (size_t)(c)*xrb, xrb, Y + (c)*ldy + rt, ldy)
    PACKED_TILES(r0, r1, nb, Q4KP_TILE)
#undef Q4KP_TILE
}

/* ==== Q4_0 and IQ4_NL packed (moe_q4p_pack): 16 rows in the lanes ========= */

/* C (1..4) activation rows against one tile of 16 packed rows, all of K:
 * dot8_q4_512's arithmetic with the rows in the lanes. Per block the levels
 * unsigned (the nibble, or the IQ4 value + 128 by vpshufb) by vpdpbusd
 * against the activations' 4 bytes broadcast, minus the offset times the
 * activations' block sum, then one fma with d_w * d_x. */
QAI void q4p_tile(const int iq4, const int C, int64_t nblk, const char *tw, const char *X,
                  size_t xrb, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i off = _mm512_set1_epi8((char)(iq4 ? 128 : 8));
    __m512i tbl = _mm512_setzero_si512();
    if (iq4)
        tbl = _mm512_add_epi8(
            _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)moe_iq4nl_values)), off);
    __m512 acc[4];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *h = (const uint8_t *)tw + (size_t)b * MOE_Q4P_BLOCK;
        q_prefetch_at((const char *)h + 8 * MOE_Q4P_BLOCK, 5);
        const moe_block_q8_0 *xb[4];
        __m512i dlo[4], dhi[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            xb[c] = (const moe_block_q8_0 *)(X + (size_t)c * xrb) + b;
            /* the offset times the activations' sum, taken back out at the start */
            const __m512i x32 =
                _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)xb[c]->qs));
            const __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, x32);
            dlo[c] = _mm512_set1_epi32(-_mm512_reduce_add_epi32(s));
            dhi[c] = _mm512_setzero_si512();
        }
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) {
            const __m512i w = _mm512_loadu_si512(h + 32 + 64 * q);
            __m512i lo = _mm512_and_si512(w, m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
            if (iq4) {
                lo = _mm512_shuffle_epi8(tbl, lo);
                hi = _mm512_shuffle_epi8(tbl, hi);
            }
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                int32_t a0, a1;
                memcpy(&a0, xb[c]->qs + 4 * q, 4);
                memcpy(&a1, xb[c]->qs + 16 + 4 * q, 4);
                dlo[c] = _mm512_dpbusd_epi32(dlo[c], lo, _mm512_set1_epi32(a0));
                dhi[c] = _mm512_dpbusd_epi32(dhi[c], hi, _mm512_set1_epi32(a1));
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(_cvtsh_ss(xb[c]->d)));
            acc[c] =
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(dlo[c], dhi[c])), d, acc[c]);
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) _mm512_storeu_ps(y + (int64_t)c * ldy, acc[c]);
}

void moe__q4p_gemm_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                          const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const int64_t nblk = k / MOE_QK4;
    const size_t wrb = (size_t)nblk * sizeof(moe_block_q4_0);
    const size_t xrb = (size_t)nblk * sizeof(moe_block_q8_0);
#define Q4P_TILE(C, c)                                                                             \
    q4p_tile(IQ4, C, nblk, (const char *)W + (size_t)rt * wrb, (const char *)X + (size_t)(c)*xrb,  \
             xrb, Y + (c)*ldy + rt, ldy)
    if (wt == MOE_DTYPE_IQ4_NL) {
#define IQ4 1
        PACKED_TILES(r0, r1, nb, Q4P_TILE)
#undef IQ4
    } else {
#define IQ4 0
        PACKED_TILES(r0, r1, nb, Q4P_TILE)
#undef IQ4
    }
#undef Q4P_TILE
}

/* ==== IQ4_XS packed (moe_iq4xsp_pack): 16 rows in the lanes ================ */

/* 16 rows' 8 float lanes summed as hsum_float_8, ((l0 + l4) + (l2 + l6)) +
 * ((l1 + l5) + (l3 + l7)). */
/* One super-block's 8 int32 lanes into the 8 float lanes: f += d x lane. */
QAI void lanes8_fma(__m512 f[8], const __m512i lacc[8], __m512 d) {
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) f[l] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(lacc[l]), f[l]);
}

QAI __m512 lanes8_sum(const __m512 f[8]) {
    const __m512 r0 = _mm512_add_ps(f[4], f[0]), r1 = _mm512_add_ps(f[5], f[1]);
    const __m512 r2 = _mm512_add_ps(f[6], f[2]), r3 = _mm512_add_ps(f[7], f[3]);
    return _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
}

/* The IQ4 levels + 128 (unsigned, for vpdpbusd) in each 128-bit lane. */
QAI __m512i iq4_utab(void) {
    return _mm512_add_epi8(
        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)moe_iq4nl_values)),
        _mm512_set1_epi8((char)128));
}

/* Group g's scale - 32 of the 16 rows as int32, from k6_unpack16's bytes. */
QAI __m512i iq4xsp_scale(const __m512i *v, int g) {
    return _mm512_sub_epi32(q4kp_lane(v, g), _mm512_set1_epi32(32));
}

/* The fast numerics on C (1..4) activation rows against one tile: per
 * group, the levels + 128 (vpshufb) by vpdpbusd against the activations' 4
 * bytes broadcast, 2 NQ chains started at -128 x the group's activation sum
 * (Q8_K's bsums), times the group's scale (vpmulld) into the super-block's
 * int32; then one fma per super-block with d_w * d_x. */
QAI void iq4xsp_tile(const int C, const int NQ, int64_t nblk, const char *tw, const char *X,
                     size_t xrb, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(15), tab = iq4_utab();
    __m512 acc[4];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *h = (const uint8_t *)tw + (size_t)b * MOE_IQ4XSP_BLOCK;
        q_prefetch_at((const char *)h + 2 * MOE_IQ4XSP_BLOCK, MOE_IQ4XSP_BLOCK / 64);
        const moe_block_q8_K *xb[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) xb[c] = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
        __m512i v[2];
        k6_unpack16(h, v);
        __m512i isum[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) isum[c] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m512i e[4][2][4];
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
#pragma GCC unroll 4
                for (int j = 0; j < NQ; j++) e[c][0][j] = e[c][1][j] = _mm512_setzero_si512();
                e[c][0][0] =
                    _mm512_set1_epi32(-128 * (xb[c]->bsums[2 * g] + xb[c]->bsums[2 * g + 1]));
            }
            const uint8_t *qp = h + 128 + (size_t)g * 256;
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                const __m512i w = _mm512_loadu_si512(qp + 64 * q);
                const __m512i lo = _mm512_shuffle_epi8(tab, _mm512_and_si512(w, m4));
                const __m512i hi =
                    _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srli_epi16(w, 4), m4));
#pragma GCC unroll 4
                for (int c = 0; c < C; c++) {
                    const int8_t *xq = xb[c]->qs + 32 * g + 4 * q;
                    int32_t a0, a1;
                    memcpy(&a0, xq, 4);
                    memcpy(&a1, xq + 16, 4);
                    e[c][0][q % NQ] =
                        _mm512_dpbusd_epi32(e[c][0][q % NQ], lo, _mm512_set1_epi32(a0));
                    e[c][1][q % NQ] =
                        _mm512_dpbusd_epi32(e[c][1][q % NQ], hi, _mm512_set1_epi32(a1));
                }
            }
            const __m512i sg = iq4xsp_scale(v, g);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                __m512i t = _mm512_add_epi32(e[c][0][0], e[c][1][0]);
#pragma GCC unroll 4
                for (int j = 1; j < NQ; j++)
                    t = _mm512_add_epi32(t, _mm512_add_epi32(e[c][0][j], e[c][1][j]));
                isum[c] = _mm512_add_epi32(isum[c], _mm512_mullo_epi32(t, sg));
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 96)));
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[c]),
                                     _mm512_mul_ps(dw, _mm512_set1_ps(xb[c]->d)), acc[c]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) _mm512_storeu_ps(y + (int64_t)c * ldy, acc[c]);
}

/* gemm's (dot_iq4_xs's) arithmetic on one activation row against one tile:
 * per row ggml's 8 int32 lanes (lane L: elements 4L..4L+3 of each group of
 * 32; the low nibbles of quant load q are lane q, the high ones lane q + 4),
 * each group's vpdpbusd started at -128 x its 4 activations' sum and times
 * its scale alone, then per lane one fma per super-block into 8 float lanes
 * and hsum_float_8's sum of them. */
QAI void iq4xsp_tile_exact(int64_t nblk, const char *tw, const char *X, float *y) {
    const __m512i m4 = _mm512_set1_epi8(15), tab = iq4_utab(), k80 = _mm512_set1_epi8((char)0x80);
    __m512 facc[8];
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) facc[l] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *h = (const uint8_t *)tw + (size_t)b * MOE_IQ4XSP_BLOCK;
        q_prefetch_at((const char *)h + 2 * MOE_IQ4XSP_BLOCK, MOE_IQ4XSP_BLOCK / 64);
        const moe_block_q8_K *xb = (const moe_block_q8_K *)X + b;
        /* corr[8g + L]: -128 x the sum of group g's elements 4L..4L+3 */
        _Alignas(64) int32_t corr[64];
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++)
            _mm512_store_si512(
                (__m512i *)(corr + 16 * i),
                _mm512_sub_epi32(_mm512_setzero_si512(),
                                 _mm512_dpbusd_epi32(_mm512_setzero_si512(), k80,
                                                     _mm512_loadu_si512(xb->qs + 64 * i))));
        __m512i v[2];
        k6_unpack16(h, v);
        __m512i lacc[8];
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) lacc[l] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            const __m512i sg = iq4xsp_scale(v, g);
            const uint8_t *qp = h + 128 + (size_t)g * 256;
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                const __m512i w = _mm512_loadu_si512(qp + 64 * q);
                const __m512i lo = _mm512_shuffle_epi8(tab, _mm512_and_si512(w, m4));
                const __m512i hi =
                    _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srli_epi16(w, 4), m4));
                int32_t a0, a1;
                memcpy(&a0, xb->qs + 32 * g + 4 * q, 4);
                memcpy(&a1, xb->qs + 32 * g + 16 + 4 * q, 4);
                const __m512i el = _mm512_dpbusd_epi32(_mm512_set1_epi32(corr[8 * g + q]), lo,
                                                       _mm512_set1_epi32(a0));
                const __m512i eh = _mm512_dpbusd_epi32(_mm512_set1_epi32(corr[8 * g + 4 + q]), hi,
                                                       _mm512_set1_epi32(a1));
                lacc[q] = _mm512_add_epi32(lacc[q], _mm512_mullo_epi32(el, sg));
                lacc[q + 4] = _mm512_add_epi32(lacc[q + 4], _mm512_mullo_epi32(eh, sg));
            }
        }
        const __m512 d = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 96))), _mm512_set1_ps(xb->d));
        lanes8_fma(facc, lacc, d);
    }
    _mm512_storeu_ps(y, lanes8_sum(facc));
}

void moe__iq4xsp_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1,
                             const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const int64_t nblk = k / MOE_QK_K;
    const size_t wrb = (size_t)nblk * sizeof(moe_block_iq4_xs);
    const size_t xrb = (size_t)nblk * sizeof(moe_block_q8_K);
    if (!fast) {
        EXACT_TILES(r0, r1, nb, iq4xsp_tile_exact);
        return;
    }
    /* 1 column: 4 chains each of lo and hi; 2 columns: 2 */
#define IQ4XSP_TILE(C, c)                                                                          \
    iq4xsp_tile(C,                                                                                 \
                (C) == 1   ? 4                                                                     \
                : (C) == 2 ? 2                                                                     \
                           : 1,                                                                    \
                nblk, (const char *)W + (size_t)rt * wrb, (const char *)X + (size_t)(c)*xrb, xrb,  \
                Y + (c)*ldy + rt, ldy)
    PACKED_TILES(r0, r1, nb, IQ4XSP_TILE)
#undef IQ4XSP_TILE
}

/* ==== Q6_K packed (moe_q6kp_pack): 16 rows in the lanes ==================== */

/* One 192-byte load group of a packed super-block -> the levels (0..63) of
 * elements 128h + 32t + 4q.. of the 16 rows, t = 0..3. */
QAI void q6kp_levels(const uint8_t *p, __m512i u[4]) {
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    const __m512i a = _mm512_loadu_si512(p), b = _mm512_loadu_si512(p + 64);
    const __m512i hb = _mm512_loadu_si512(p + 128);
    u[0] = _mm512_or_si512(_mm512_and_si512(a, m4), _mm512_slli_epi16(_mm512_and_si512(hb, m3), 4));
    u[1] = _mm512_or_si512(_mm512_and_si512(b, m4),
                           _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 2), m3), 4));
    u[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a, 4), m4),
                           _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 4), m3), 4));
    u[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(b, 4), m4),
                           _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(hb, 6), m3), 4));
}

/* Group g's int8 scales of the 16 rows as int32. */
QAI __m512i q6kp_scale(const uint8_t *h, int g) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(h + 16 * g)));
}

/* The fast numerics on C (1..4) activation rows against one tile: per
 * group of 16, 4 vpdpbusd (the levels unsigned) started at -32 x the
 * group's activation sum (Q8_K's bsums), times the group's scale into the
 * super-block's int32; one fma per super-block with d_w * d_x. The 4
 * groups of a load group's 4 levels run as 4 chains a column. */
QAI void q6kp_tile(const int C, int64_t nblk, const char *tw, const char *X, size_t xrb, float *y,
                   int64_t ldy) {
    __m512 acc[4];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *h = (const uint8_t *)tw + (size_t)b * MOE_Q6KP_BLOCK;
        q_prefetch_at((const char *)h + 2 * MOE_Q6KP_BLOCK, MOE_Q6KP_BLOCK / 64);
        const moe_block_q8_K *xb[4];
        __m512i isum[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            xb[c] = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            isum[c] = _mm512_setzero_si512();
        }
#pragma GCC unroll 2
        for (int hh = 0; hh < 2; hh++)
#pragma GCC unroll 2
            for (int qq = 0; qq < 2; qq++) {
                /* groups 8hh + 2t + qq, t = 0..3 */
                __m512i e[4][4];
#pragma GCC unroll 4
                for (int c = 0; c < C; c++)
#pragma GCC unroll 4
                    for (int t = 0; t < 4; t++)
                        e[c][t] = _mm512_set1_epi32(-32 * xb[c]->bsums[8 * hh + 2 * t + qq]);
#pragma GCC unroll 4
                for (int q4 = 0; q4 < 4; q4++) {
                    const int q = 4 * qq + q4;
                    __m512i u[4];
                    q6kp_levels(h + 288 + (size_t)(8 * hh + q) * 192, u);
#pragma GCC unroll 4
                    for (int c = 0; c < C; c++)
#pragma GCC unroll 4
                        for (int t = 0; t < 4; t++) {
                            int32_t a;
                            memcpy(&a, xb[c]->qs + 128 * hh + 32 * t + 4 * q, 4);
                            e[c][t] = _mm512_dpbusd_epi32(e[c][t], u[t], _mm512_set1_epi32(a));
                        }
                }
#pragma GCC unroll 4
                for (int t = 0; t < 4; t++) {
                    const __m512i sg = q6kp_scale(h, 8 * hh + 2 * t + qq);
#pragma GCC unroll 4
                    for (int c = 0; c < C; c++)
                        isum[c] = _mm512_add_epi32(isum[c], _mm512_mullo_epi32(e[c][t], sg));
                }
            }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 256)));
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[c]),
                                     _mm512_mul_ps(dw, _mm512_set1_ps(xb[c]->d)), acc[c]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) _mm512_storeu_ps(y + (int64_t)c * ldy, acc[c]);
}

/* gemm's (dot_q6_K's) arithmetic on one activation row against one tile:
 * per row ggml's 8 int32 lanes (lane L: elements 4L..4L+3 of each 32, so
 * load q is lane q), each 4 elements' vpdpbusd times its group's scale,
 * less 32 x (bsums[2L] sc[2L] + bsums[2L+1] sc[2L+1]) per lane; one fma
 * per lane and super-block into 8 float lanes; hsum_float_8's sum. */
QAI void q6kp_tile_exact(int64_t nblk, const char *tw, const char *X, float *y) {
    __m512 facc[8];
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) facc[l] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *h = (const uint8_t *)tw + (size_t)b * MOE_Q6KP_BLOCK;
        q_prefetch_at((const char *)h + 2 * MOE_Q6KP_BLOCK, MOE_Q6KP_BLOCK / 64);
        const moe_block_q8_K *xb = (const moe_block_q8_K *)X + b;
        __m512i lacc[8];
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) {
            /* 16 rows x (sc[2l], sc[2l + 1]) as int16 pairs, times the bsums pair */
            const __m128i s0 = _mm_loadu_si128((const __m128i *)(h + 32 * l));
            const __m128i s1 = _mm_loadu_si128((const __m128i *)(h + 32 * l + 16));
            const __m512i sp = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_unpacklo_epi8(s0, s1)), _mm_unpackhi_epi8(s0, s1), 1));
            int32_t bp;
            memcpy(&bp, xb->bsums + 2 * l, 4);
            lacc[l] = _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_slli_epi32(
                    _mm512_dpwssd_epi32(_mm512_setzero_si512(), sp, _mm512_set1_epi32(bp)), 5));
        }
#pragma GCC unroll 2
        for (int hh = 0; hh < 2; hh++)
#pragma GCC unroll 2
            for (int qq = 0; qq < 2; qq++) {
                __m512i sg[4];
#pragma GCC unroll 4
                for (int t = 0; t < 4; t++) sg[t] = q6kp_scale(h, 8 * hh + 2 * t + qq);
#pragma GCC unroll 4
                for (int q4 = 0; q4 < 4; q4++) {
                    const int q = 4 * qq + q4;
                    __m512i u[4];
                    q6kp_levels(h + 288 + (size_t)(8 * hh + q) * 192, u);
#pragma GCC unroll 4
                    for (int t = 0; t < 4; t++) {
                        int32_t a;
                        memcpy(&a, xb->qs + 128 * hh + 32 * t + 4 * q, 4);
                        const __m512i e =
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[t], _mm512_set1_epi32(a));
                        lacc[q] = _mm512_add_epi32(lacc[q], _mm512_mullo_epi32(e, sg[t]));
                    }
                }
            }
        const __m512 d = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 256))), _mm512_set1_ps(xb->d));
        lanes8_fma(facc, lacc, d);
    }
    _mm512_storeu_ps(y, lanes8_sum(facc));
}

void moe__q6kp_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1,
                           const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const int64_t nblk = k / MOE_QK_K;
    const size_t wrb = (size_t)nblk * sizeof(moe_block_q6_K);
    const size_t xrb = (size_t)nblk * sizeof(moe_block_q8_K);
    if (!fast) {
        EXACT_TILES(r0, r1, nb, q6kp_tile_exact);
        return;
    }
#define Q6KP_TILE(C, c)                                                                            \
    q6kp_tile(C, nblk, (const char *)W + (size_t)rt * wrb, (const char *)X + (size_t)(c)*xrb, xrb, \
              Y + (c)*ldy + rt, ldy)
    PACKED_TILES(r0, r1, nb, Q6KP_TILE)
#undef Q6KP_TILE
}

/* ==== Q5_K packed (moe_q5kp_pack): 16 rows in the lanes ==================== */

/* gemm's (dot_q5_K's) arithmetic on one activation row against one tile:
 * per row ggml's 8 int32 lanes (load q's nibbles are lane q of groups 2p
 * and 2p + 1), each 4 elements' vpdpbusd times its group's scale; per
 * super-block one fma per lane into 8 float lanes, and the minimums times
 * the activations' group sums (exact) times -d_x * dmin added to a float
 * sum; hsum_float_8's sum of the lanes plus that sum. */
QAI void q5kp_tile_exact(int64_t nblk, const char *tw, const char *X, float *y) {
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512 facc[8], summs = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++) facc[l] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *h = (const uint8_t *)tw + (size_t)b * MOE_Q5KP_BLOCK;
        q_prefetch_at((const char *)h + 2 * MOE_Q5KP_BLOCK, MOE_Q5KP_BLOCK / 64);
        const moe_block_q8_K *xb = (const moe_block_q8_K *)X + b;
        __m512i sv[2], mv[2];
        __m512 dw, dmw;
        q4kp_head(h, sv, mv, &dw, &dmw);
        __m512i lacc[8];
#pragma GCC unroll 8
        for (int l = 0; l < 8; l++) lacc[l] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            const __m512i s0 = q4kp_lane(sv, 2 * p), s1 = q4kp_lane(sv, 2 * p + 1);
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++) {
                const __m512i w = _mm512_loadu_si512(h + 768 + 512 * p + 64 * q);
                __m512i lo = _mm512_and_si512(w, m4);
                __m512i hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
                q5kp_bits(h, p, q, &lo, &hi);
                int32_t a0, a1;
                memcpy(&a0, xb->qs + 64 * p + 4 * q, 4);
                memcpy(&a1, xb->qs + 64 * p + 32 + 4 * q, 4);
                const __m512i z = _mm512_setzero_si512();
                const __m512i el = _mm512_dpbusd_epi32(z, lo, _mm512_set1_epi32(a0));
                const __m512i eh = _mm512_dpbusd_epi32(z, hi, _mm512_set1_epi32(a1));
                lacc[q] = _mm512_add_epi32(lacc[q], _mm512_add_epi32(_mm512_mullo_epi32(el, s0),
                                                                     _mm512_mullo_epi32(eh, s1)));
            }
        }
        /* the minimums: lane r of mp[p] group 2p's (low int16) and 2p + 1's */
        const __m128i bs2 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb->bsums),
                                           _mm_loadu_si128((const __m128i *)xb->bsums + 1));
        _Alignas(16) int32_t bp[4];
        _mm_store_si128((__m128i *)bp, bs2);
        __m512i im = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
            im = _mm512_dpwssd_epi32(
                im,
                _mm512_or_si512(q4kp_lane(mv, 2 * p),
                                _mm512_slli_epi32(q4kp_lane(mv, 2 * p + 1), 16)),
                _mm512_set1_epi32(bp[p]));
        const __m512 d = _mm512_mul_ps(dw, _mm512_set1_ps(xb->d));
        lanes8_fma(facc, lacc, d);
        summs = _mm512_add_ps(summs, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(-xb->d), dmw),
                                                   _mm512_cvtepi32_ps(im)));
    }
    _mm512_storeu_ps(y, _mm512_add_ps(lanes8_sum(facc), summs));
}

void moe__q5kp_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1,
                           const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const int64_t nblk = k / MOE_QK_K;
    const size_t wrb = (size_t)nblk * sizeof(moe_block_q5_K);
    const size_t xrb = (size_t)nblk * sizeof(moe_block_q8_K);
    if (!fast) {
        EXACT_TILES(r0, r1, nb, q5kp_tile_exact);
        return;
    }
#define Q5KP_TILE(C, c)                                                                            \
    q4kp_tile(1, C, (C) == 2 ? 4 : 2, nblk, (const char *)W + (size_t)rt * wrb,                    \
              (const char *)X + (size_t)(c)*xrb, xrb, Y + (c)*ldy + rt, ldy)
    PACKED_TILES(r0, r1, nb, Q5KP_TILE)
#undef Q5KP_TILE
}
