/*
 * cpu/quant_avx2.c - the quantised types of quant_simd.h, built for AVX2,
 * with faster decode kernels for Q4_0, IQ4_NL, Q4_K, Q5_K, Q6_K and IQ4_XS
 * (and quant_fast256.h's for Q4_1, Q5_0, Q5_1, Q2_K and Q3_K).
 *
 * As in quant_avx512.c: quant_simd.h's code (built here as
 * moe__quant_gemm_avx2_ref) is the reference, and the kernels below give
 * its bits for every output: the same exact integers, grouped differently,
 * then the same float operations in the same order. Q4_0 and IQ4_NL take
 * two rows a register (8 rows side by side, their sums transposed by three
 * vphaddd); the K scales are unpacked on whole words and spread to int16
 * lanes by vpshufb instead of one broadcast per group; IQ4_XS takes two
 * groups a register; Q5_K unpacks each weight row once for up to 4
 * activation rows; software prefetch in the order the weights are read
 * (q_pf8, q_prefetch).
 */
#define QUANT_GEMM moe__quant_gemm_avx2_ref
#include "quant_simd.h"
#include "quant_fast256.h"

/* ==== Helpers ============================================================== */

/* q_prefetch_at, q_prefetch and q_pf8: quant_simd.h. */

/* vpshufb control: int16 lanes of the low 128 bits = byte a of the lane
 * zero-extended, of the high 128 bits byte b. */
QAI __m256i q_ctl8(int a, int b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)(0x8000 | a))),
                                   _mm_set1_epi16((short)(0x8000 | b)), 1);
}

/* vpshufb control: int16 lanes of the low 128 bits = int16 element a of the
 * lane, of the high 128 bits element b. */
QAI __m256i q_ctl16w(int a, int b) {
    return _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_set1_epi16((short)((2 * a + 1) << 8 | 2 * a))),
        _mm_set1_epi16((short)((2 * b + 1) << 8 | 2 * b)), 1);
}

/* 8 vectors of 8 int32 -> their 8 sums (exact), in order (vphaddd). */
QAI __m256i q_sum8x8(const __m256i *p) {
    const __m256i t0 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    const __m256i t1 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20),
                            _mm256_permute2x128_si256(t0, t1, 0x31));
}

/* Signed levels w times int8 x (|w| <= 127): 16 int16 pair sums. */
QAI __m256i q_dot16(__m256i w, __m256i x) {
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

/* The 8 6-bit scales (*sc) and minimums (*mn) of a Q4_K super-block, byte g
 * for group g: moe__k4_scale_min's unpacking on whole words. */
QAI void k4_scales8(const uint8_t *s, uint64_t *sc, uint64_t *mn) {
    uint32_t u0, u1, u2;
    memcpy(&u0, s, 4);
    memcpy(&u1, s + 4, 4);
    memcpy(&u2, s + 8, 4);
    const uint32_t sc_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);
    const uint32_t mn_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u);
    *sc = (u0 & 0x3f3f3f3fu) | (uint64_t)sc_hi << 32;
    *mn = (u1 & 0x3f3f3f3fu) | (uint64_t)mn_hi << 32;
}

/* A 128-bit vector's 4 int32 (exact). */
QAI int q_hsum4(__m128i v) {
    v = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
    return _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32(v, 1)));
}

/* The bits p of each byte of v moved to bit 4 (the other bits not
 * cleared); p <= 7. */
QAI __m256i q_bit_to4(__m256i v, int p) {
    return p < 4 ? _mm256_slli_epi16(v, 4 - p) : p > 4 ? _mm256_srli_epi16(v, p - 4) : v;
}

/* ==== Q4_0 and IQ4_NL: 8 rows ============================================== */

/* dot8_q4's arithmetic (the 8 rows' exact block sums, one vector fma with
 * the rows in the float lanes), two rows a register: rows r and r + 4 in
 * the 128-bit lanes, so that three vphaddd give the 8 sums in order. Q4_0:
 * the nibbles unsigned, both halves' int16 pair sums added and 8 * the
 * activations' pair sums taken off before one vpmaddwd (all within int16);
 * IQ4_NL: the table's levels with their signs on the activations, as the
 * reference. Prefetch as quant_avx512.c's dot8_q4_512, into L2. */
QAI void dot8_q4_256(const int iq4, int64_t nblk, const char *w0, size_t wrb,
                     const moe_block_q8_0 *x, float *y) {
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi16(1);
    const __m256i tbl =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)moe_iq4nl_values));
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const char *p = w0 + (size_t)b * sizeof(moe_block_q4_0);
        if ((b & 3) == 0)
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++)
                q_prefetch_l2_at(q_pf8(w0 + (size_t)r * wrb, wrb, sizeof(moe_block_q4_0), b, nblk),
                                 2);
        const __m256i xl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[b].qs));
        const __m256i xh =
            _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[b].qs + 1));
        const __m256i e8 = _mm256_set1_epi8(8);
        const __m256i off =
            _mm256_add_epi16(_mm256_maddubs_epi16(e8, xl), _mm256_maddubs_epi16(e8, xh));
        __m256i q[4];
        uint16_t dh[8];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const char *pr = p + (size_t)r * wrb;
            const __m256i v = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(pr + 2))),
                _mm_loadu_si128((const __m128i *)(pr + 4 * wrb + 2)), 1);
            memcpy(&dh[r], pr, 2);
            memcpy(&dh[r + 4], pr + 4 * wrb, 2);
            __m256i lo = _mm256_and_si256(v, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if (iq4) {
                lo = _mm256_shuffle_epi8(tbl, lo);
                hi = _mm256_shuffle_epi8(tbl, hi);
                q[r] = _mm256_add_epi32(
                    _mm256_madd_epi16(
                        _mm256_maddubs_epi16(_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(xl, lo)),
                        one),
                    _mm256_madd_epi16(
                        _mm256_maddubs_epi16(_mm256_sign_epi8(hi, hi), _mm256_sign_epi8(xh, hi)),
                        one));
            } else {
                const __m256i s16 =
                    _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
                q[r] = _mm256_madd_epi16(_mm256_sub_epi16(s16, off), one);
            }
        }
        const __m256i sums =
            _mm256_hadd_epi32(_mm256_hadd_epi32(q[0], q[1]), _mm256_hadd_epi32(q[2], q[3]));
        /* inserted, not stored and reloaded (a store-forwarding stall) */
        const __m128i dv = _mm_setr_epi16((short)dh[0], (short)dh[1], (short)dh[2], (short)dh[3],
                                          (short)dh[4], (short)dh[5], (short)dh[6], (short)dh[7]);
        const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(dv), _mm256_set1_ps(q_f16(x[b].d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
    }
    _mm256_storeu_ps(y, acc);
}

/* ==== Q4_K: 8 rows ========================================================= */

/* dot8_q4_K's arithmetic: per row the 8 groups' products times their scale
 * (spread from one broadcast qword by vpshufb), summed in 8 int32 lanes;
 * the minimums times the group sums 2 rows a register; the rows' sums
 * transposed by vphaddd; the same float steps. */
static void dot8_q4_K_256(int64_t nblk, const char *w0, size_t wrb, const moe_block_q8_K *x,
                          float *y) {
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i ctl[8] = {q_ctl8(0, 0), q_ctl8(1, 1), q_ctl8(2, 2), q_ctl8(3, 3),
                            q_ctl8(4, 4), q_ctl8(5, 5), q_ctl8(6, 6), q_ctl8(7, 7)};
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        __m256i xq[8], p[8], pm[4];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) xq[j] = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * j));
        const __m128i bs2 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)x[b].bsums),
                                           _mm_loadu_si128((const __m128i *)x[b].bsums + 1));
        const __m256i bsv = _mm256_broadcastsi128_si256(bs2);
        _Alignas(16) uint16_t dh[8], mh[8];
        uint64_t mn_even = 0;
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const moe_block_q4_K *wb = (const moe_block_q4_K *)(w0 + (size_t)r * wrb) + b;
            q_prefetch_at(q_pf8(w0 + (size_t)r * wrb, wrb, sizeof *wb, b, nblk), 3);
            uint64_t sc, mn;
            k4_scales8(wb->scales, &sc, &mn);
            dh[r] = wb->d;
            mh[r] = wb->dmin;
            const __m256i s = _mm256_set1_epi64x((long long)sc);
            __m256i a = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(wb->qs + 32 * j));
                const __m256i lo = _mm256_and_si256(q, m4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, xq[2 * j]),
                                                          _mm256_shuffle_epi8(s, ctl[2 * j])));
                a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, xq[2 * j + 1]),
                                                          _mm256_shuffle_epi8(s, ctl[2 * j + 1])));
            }
            p[r] = a;
            /* rows r-1, r: lane 0 row r-1's 4 sums of products, lane 1 row r's */
            if (r & 1)
                pm[r / 2] = _mm256_madd_epi16(
                    _mm256_cvtepu8_epi16(_mm_set_epi64x((long long)mn, (long long)mn_even)), bsv);
            else
                mn_even = mn;
        }
        const __m256i sums = q_sum8x8(p);
        /* pm[i]: rows 2i, 2i+1 in the two lanes, 4 int32 each */
        const __m256i h0 = _mm256_hadd_epi32(pm[0], pm[1]); /* [r0 r0 r2 r2 | r1 r1 r3 r3] */
        const __m256i h1 = _mm256_hadd_epi32(pm[2], pm[3]);
        const __m256i h = _mm256_hadd_epi32(h0, h1); /* [r0 r2 r4 r6 | r1 r3 r5 r7] */
        const __m256i im =
            _mm256_permutevar8x32_epi32(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        const __m256 dx = _mm256_set1_ps(x[b].d);
        const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)dh)), dx);
        const __m256 dm = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)mh)), dx);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
        accm = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), dm, accm);
    }
    _mm256_storeu_ps(y, _mm256_sub_ps(acc, accm));
}

/* ==== Q6_K, IQ4_XS: one row, ggml's lanes ================================== */

/* The Q5_K kernel computes one weight row against C activation
 * rows (C <= 4, the columns X + c * xrb, outputs y[c * ldy]): the weights
 * unpacked once per super-block for all C, each output the one-row
 * arithmetic exactly. */
#define QCOLS_MAX 4

/* dot_q5_K's arithmetic: the scales unpacked on whole words and spread by
 * vpshufb, the fifth bits moved to bit 4 by one shift each, the minimums
 * times the group sums by one vpmaddwd; prefetch along the row. */
QAI void dot_q5_K_256(const int C, int64_t nblk, const moe_block_q5_K *w, const char *X, size_t xrb,
                      float *y, int64_t ldy) {
    const __m256i m4 = _mm256_set1_epi8(15), b4 = _mm256_set1_epi8(16);
    __m256 acc[QCOLS_MAX];
    float summs[QCOLS_MAX];
    for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps(), summs[c] = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 3);
        uint64_t sc, mn;
        k4_scales8(w[b].scales, &sc, &mn);
        const __m256i s = _mm256_set1_epi64x((long long)sc);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)w[b].qh);
        const moe_block_q8_K *xb[QCOLS_MAX];
        __m256i sumi[QCOLS_MAX];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            xb[c] = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            sumi[c] = _mm256_setzero_si256();
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * j));
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4),
                                               _mm256_and_si256(q_bit_to4(qh, 2 * j), b4));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                               _mm256_and_si256(q_bit_to4(qh, 2 * j + 1), b4));
            const __m256i sl = _mm256_shuffle_epi8(s, q_ctl8(2 * j, 2 * j));
            const __m256i sh = _mm256_shuffle_epi8(s, q_ctl8(2 * j + 1, 2 * j + 1));
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                const int8_t *xq = xb[c]->qs + 64 * j;
                const __m256i pl = _mm256_madd_epi16(
                    sl, _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)xq)));
                const __m256i ph = _mm256_madd_epi16(
                    sh, _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(xq + 32))));
                sumi[c] = _mm256_add_epi32(sumi[c], _mm256_add_epi32(pl, ph));
            }
        }
        const __m128i m16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn));
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const float d = xb[c]->d * q_f16(w[b].d), dmin = -xb[c]->d * q_f16(w[b].dmin);
            const __m128i bs2 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb[c]->bsums),
                                               _mm_loadu_si128((const __m128i *)xb[c]->bsums + 1));
            summs[c] += dmin * (float)q_hsum4(_mm_madd_epi16(m16, bs2));
            acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[c]), acc[c]);
        }
    }
    for (int c = 0; c < C; c++) y[c * ldy] = q_hsum8(acc[c]) + summs[c];
}

static void dot_q5_K_256_cols(int C, int64_t nblk, const void *w, const char *x, size_t xrb,
                              float *y, int64_t ldy) {
    switch (C) {
    case 1:
        dot_q5_K_256(1, nblk, w, x, xrb, y, ldy);
        break;
    case 2:
        dot_q5_K_256(2, nblk, w, x, xrb, y, ldy);
        break;
    case 3:
        dot_q5_K_256(3, nblk, w, x, xrb, y, ldy);
        break;
    default:
        dot_q5_K_256(4, nblk, w, x, xrb, y, ldy);
        break;
    }
}

/* dot_q6_K's arithmetic with the group scales spread by vpshufb from the
 * sign-extended scales (one half of them broadcast to both lanes). */
static float dot_q6_K_256(int64_t nblk, const moe_block_q6_K *w, const moe_block_q8_K *x) {
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    const __m256i ctl[4] = {q_ctl16w(0, 1), q_ctl16w(2, 3), q_ctl16w(4, 5), q_ctl16w(6, 7)};
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 4);
        const float d = x[b].d * q_f16(w[b].d);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[b].scales));
        const __m256i bs = _mm256_loadu_si256((const __m256i *)x[b].bsums);
        const __m256i sub = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
        __m256i sumi = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m256i sh = _mm256_permute2x128_si256(sc16, sc16, h ? 0x11 : 0x00);
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(w[b].ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(w[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w[b].qh + 32 * h));
            const __m256i lo[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                                   _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                const __m256i top = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * t), m3);
                const __m256i q = _mm256_or_si256(lo[t], _mm256_slli_epi16(top, 4));
                const __m256i xv =
                    _mm256_loadu_si256((const __m256i *)(x[b].qs + 128 * h + 32 * t));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_shuffle_epi8(sh, ctl[t]),
                                                                _mm256_maddubs_epi16(q, xv)));
            }
        }
        sumi = _mm256_sub_epi32(sumi, sub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return q_hsum8(acc);
}

/* dot_iq4_xs's arithmetic, two groups a register: lane 0 group g, lane 1
 * group g + 1 (low nibbles: elements 0..15, ggml's lanes 0..3; high: 16..31,
 * lanes 4..7); the 8 scales unpacked together (the 2 high bits by an int16
 * multiply that moves bits 2g, 2g+1 to the top). */
static float dot_iq4_xs_256(int64_t nblk, const moe_block_iq4_xs *w, const moe_block_q8_K *x) {
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i tbl =
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)moe_iq4nl_values));
    const __m256i ctl[4] = {q_ctl16w(0, 1), q_ctl16w(2, 3), q_ctl16w(4, 5), q_ctl16w(6, 7)};
    const __m128i mul =
        _mm_setr_epi16(1 << 14, 1 << 12, 1 << 10, 1 << 8, 1 << 6, 1 << 4, 1 << 2, 1);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 3);
        uint32_t sl;
        memcpy(&sl, w[b].scales_l, 4);
        const __m128i v = _mm_cvtsi32_si128((int)sl), n15 = _mm_set1_epi8(15);
        const __m128i nib =
            _mm_unpacklo_epi8(_mm_and_si128(v, n15), _mm_and_si128(_mm_srli_epi16(v, 4), n15));
        const __m128i hi2 =
            _mm_srli_epi16(_mm_mullo_epi16(_mm_set1_epi16((short)w[b].scales_h), mul), 14);
        const __m256i s = _mm256_broadcastsi128_si256(_mm_sub_epi16(
            _mm_or_si128(_mm_cvtepu8_epi16(nib), _mm_slli_epi16(hi2, 4)), _mm_set1_epi16(32)));
        __m256i alo = _mm256_setzero_si256(), ahi = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m256i x0 = _mm256_loadu_si256((const __m256i *)(x[b].qs + 64 * j));
            const __m256i x1 = _mm256_loadu_si256((const __m256i *)(x[b].qs + 64 * j + 32));
            const __m256i xl = _mm256_permute2x128_si256(x0, x1, 0x20);
            const __m256i xh = _mm256_permute2x128_si256(x0, x1, 0x31);
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * j));
            const __m256i lo = _mm256_shuffle_epi8(tbl, _mm256_and_si256(q, m4));
            const __m256i hi =
                _mm256_shuffle_epi8(tbl, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
            const __m256i sg = _mm256_shuffle_epi8(s, ctl[j]);
            alo = _mm256_add_epi32(alo, _mm256_madd_epi16(q_dot16(lo, xl), sg));
            ahi = _mm256_add_epi32(ahi, _mm256_madd_epi16(q_dot16(hi, xh), sg));
        }
        const __m256i sumi = _mm256_add_epi32(_mm256_permute2x128_si256(alo, ahi, 0x20),
                                              _mm256_permute2x128_si256(alo, ahi, 0x31));
        acc =
            _mm256_fmadd_ps(_mm256_set1_ps(q_f16(w[b].d) * x[b].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return q_hsum8(acc);
}

/* ==== Q8_K activations ===================================================== */

void moe__quant_q8_K_avx2(const float *x, moe_block_q8_K *y, int64_t n) {
    f256_quant_q8_K(x, y, n);
}

/* ==== Table entry ========================================================== */

/* Units (rows, groups of 8 rows) from this many contiguous parts of the
 * range in turn: as many sequential streams (see quant_avx512.c). */
#define QSTREAMS 2

void moe__quant_gemm_avx2(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                          const void *X, int64_t nb, float *Y, int64_t ldy) {
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    const int64_t nblk = k / (int64_t)moe_dtype_block_elems(wt);
    const char *Wc = W, *Xc = X;
    switch (wt) {
    case MOE_DTYPE_Q4_0:
    case MOE_DTYPE_IQ4_NL: { /* 8 rows at a time, the rest as the reference */
        const int64_t ng = (r1 - r0) / 8, per = (ng + QSTREAMS - 1) / QSTREAMS;
        for (int64_t i = 0; i < per * QSTREAMS; i++) {
            const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
            if (u >= ng) continue;
            for (int64_t b = 0; b < nb; b++) { /* iq4 a constant in each copy */
                const char *w = Wc + (size_t)(r0 + 8 * u) * wrb;
                const moe_block_q8_0 *x = (const moe_block_q8_0 *)(Xc + (size_t)b * xrb);
                if (wt == MOE_DTYPE_IQ4_NL)
                    dot8_q4_256(1, nblk, w, wrb, x, Y + b * ldy + r0 + 8 * u);
                else
                    dot8_q4_256(0, nblk, w, wrb, x, Y + b * ldy + r0 + 8 * u);
            }
        }
        r0 += 8 * ng;
        if (r0 < r1) moe__quant_gemm_avx2_ref(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
    case MOE_DTYPE_Q4_K: { /* 8 rows at a time, the rest as the reference */
        /* groups from QSTREAMS parts of the range in turn (quant_avx512.c) */
        const int64_t ng = (r1 - r0) / 8, per = (ng + QSTREAMS - 1) / QSTREAMS;
        for (int64_t i = 0; i < per * QSTREAMS; i++) {
            const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
            if (u >= ng) continue;
            for (int64_t b = 0; b < nb; b++)
                dot8_q4_K_256(nblk, Wc + (size_t)(r0 + 8 * u) * wrb, wrb,
                              (const moe_block_q8_K *)(Xc + (size_t)b * xrb),
                              Y + b * ldy + r0 + 8 * u);
        }
        r0 += 8 * ng;
        if (r0 < r1) moe__quant_gemm_avx2_ref(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
    case MOE_DTYPE_Q5_K: {
        /* weight row outer, up to QCOLS_MAX activation rows a pass over it
         * (from L1 for all but the first) */
        const int64_t n = r1 - r0, per = (n + QSTREAMS - 1) / QSTREAMS;
        for (int64_t i = 0; i < per * QSTREAMS; i++) {
            const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
            if (u >= n) continue;
            const int64_t r = r0 + u;
            for (int64_t b = 0; b < nb; b += QCOLS_MAX) {
                const int C = (int)(nb - b < QCOLS_MAX ? nb - b : QCOLS_MAX);
                dot_q5_K_256_cols(C, nblk, Wc + (size_t)r * wrb, Xc + (size_t)b * xrb, xrb,
                                  Y + b * ldy + r, ldy);
            }
        }
        return;
    }
    case MOE_DTYPE_Q6_K:
    case MOE_DTYPE_IQ4_XS: {
        const int64_t n = r1 - r0, per = (n + QSTREAMS - 1) / QSTREAMS;
        for (int64_t i = 0; i < per * QSTREAMS; i++) {
            const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
            if (u >= n) continue;
            const void *w = Wc + (size_t)(r0 + u) * wrb;
            for (int64_t b = 0; b < nb; b++) {
                const void *x = Xc + (size_t)b * xrb;
                Y[b * ldy + r0 + u] =
                    wt == MOE_DTYPE_Q6_K ? dot_q6_K_256(nblk, w, x) : dot_iq4_xs_256(nblk, w, x);
            }
        }
        return;
    }
    case MOE_DTYPE_Q4_1:
    case MOE_DTYPE_Q5_0:
    case MOE_DTYPE_Q5_1:
    case MOE_DTYPE_Q2_K:
    case MOE_DTYPE_Q3_K: /* quant_fast256.h */
        f256_gemm(wt, QSTREAMS, 0, k, W, r0, r1, X, nb, Y, ldy);
        return;
    default:
        moe__quant_gemm_avx2_ref(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
}
