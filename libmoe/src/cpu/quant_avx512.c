/*
 * cpu/quant_avx512.c - the quantised types of quant_simd.h, built with the
 * AVX-512 flags, with faster decode kernels for Q4_0, IQ4_NL, Q4_K, Q5_K,
 * Q6_K and IQ4_XS (and quant_fast256.h's for Q4_1, Q5_0, Q5_1, Q2_K and Q3_K).
 *
 * quant_simd.h's code, built here as moe__quant_gemm_avx512_ref, is the
 * reference: every kernel below gives the same bits for every output. They
 * compute the same exact integers (integer sums are order-free: 512-bit
 * registers, vpdpbusd / vpdpwssd, other groupings) and then run the same
 * float operations in the same order on them (the rows in float lanes for
 * the 8-row kernels, ggml's 8 int32 lanes then one fma per super-block for
 * the others). What makes them faster: 64 bytes of weights per integer
 * instruction, the K scales unpacked on whole words, the 8 rows' sums
 * transposed by one shuffle network instead of vphaddd chains, software
 * prefetch in the order the weights are read (q_pf8), and for small
 * batches (prefill chunks) weights unpacked once for 2 (Q4_K) or 4 (Q5_K,
 * Q6_K, IQ4_XS) activation rows.
 *
 * Decode (1 to 4 activation rows) reads each weight row from start to end,
 * one row after another (k_rows, dot_q4_K_row): from DRAM that reaches
 * 0.85-0.95 of the plain read loop where the 8-row kernels' side-by-side
 * rows reached ~0.78. The activations, the same for every row, are put
 * once per call in the order the kernel reads them (k4_order, iqx_order),
 * which takes the lane shuffles out of the per-row work.
 */
#define QUANT_GEMM moe__quant_gemm_avx512_ref
#include "quant_simd.h"
#include "quant_fast256.h"

/* ==== Helpers ============================================================== */

/* q_prefetch_at, q_prefetch_l2_at, q_prefetch and q_pf8: quant_simd.h. */

/* Two 32-byte pieces as one zmm (a low, b high). */
QAI __m512i q_cat256(const void *a, const void *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

/* vpermb (AVX512_VBMI): byte i of the result = tab's byte idx[i] & 63.
 * Inline assembly so that this file is built without -mavx512vbmi (the
 * avx512 level does not require it, and the compiler must not use it
 * elsewhere); called only where moe__cpu_has_avx512vbmi. */
QAI __m512i q_permb(__m512i idx, __m512i tab) {
    __m512i r;
    __asm__("vpermb %2, %1, %0" : "=v"(r) : "v"(idx), "v"(tab));
    return r;
}

/* vpshufb control: int16 lanes of the low 256 bits = byte a of each 128-bit
 * lane zero-extended, of the high 256 bits byte b. */
QAI __m512i q_ctl16(int a, int b) {
    return _mm512_inserti64x4(_mm512_set1_epi16((short)(0x8000 | a)),
                              _mm256_set1_epi16((short)(0x8000 | b)), 1);
}

/* vpermw index: 128-bit lane j of int16 element a + j (j = 0..3). */
QAI __m512i q_idx4(int a) {
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_set1_epi16((short)a)), _mm_set1_epi16((short)(a + 1)), 1)),
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)(a + 2))),
                                _mm_set1_epi16((short)(a + 3)), 1),
        1);
}

/* 8 vectors of 16 int32 -> their 8 sums (exact), in order. */
QAI __m256i q_sum8x16(const __m512i *p) {
    __m512i c[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) /* lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
        c[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2 * i], p[2 * i + 1]),
                                _mm512_unpackhi_epi32(p[2 * i], p[2 * i + 1]));
    /* lane k: rows 0..3 (e0), 4..7 (e1), partial over lane k */
    const __m512i e0 =
        _mm512_add_epi32(_mm512_unpacklo_epi64(c[0], c[1]), _mm512_unpackhi_epi64(c[0], c[1]));
    const __m512i e1 =
        _mm512_add_epi32(_mm512_unpacklo_epi64(c[2], c[3]), _mm512_unpackhi_epi64(c[2], c[3]));
    const __m512i f =
        _mm512_add_epi32(_mm512_shuffle_i32x4(e0, e1, 0x88), _mm512_shuffle_i32x4(e0, e1, 0xdd));
    const __m512i g = _mm512_add_epi32(f, _mm512_shuffle_i32x4(f, f, 0xb1));
    return _mm512_castsi512_si256(_mm512_shuffle_i32x4(g, g, 0x08));
}

/* Two vectors whose 128-bit lane i holds 4 int32 of row i (a: rows 0..3,
 * b: rows 4..7) -> the 8 rows' sums (exact), in order. */
QAI __m256i q_sum4x2(__m512i a, __m512i b) {
    const __m512i e = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i f = _mm512_add_epi32(e, _mm512_shuffle_epi32(e, _MM_PERM_BADC));
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castsi512_si256(_mm512_permutexvar_epi32(idx, f));
}

/* A 128-bit vector's 4 int32 (exact). */
QAI int q_hsum4(__m128i v) {
    v = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
    return _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32(v, 1)));
}

/* The 8 6-bit scales (*sc) and minimums (*mn) of a Q4_K / Q5_K super-block,
 * byte g for group g: moe__k4_scale_min's unpacking on whole words. */
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

/* The minimums (8 bytes) times the activations' sums of 32 (bs2, 8 int16),
 * summed (exact). */
QAI int k4_mins(uint64_t mn, __m128i bs2) {
    return q_hsum4(_mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)), bs2));
}

/* The activations of a Q4_K / Q5_K super-block in the order of the weights'
 * zmm: the low nibbles of qs[0..63] are groups 0 and 2, the high ones 1 and
 * 3; of qs[64..127] groups 4, 6 and 5, 7. */
QAI void k4_acts(const int8_t *xq, __m512i *xa) {
    xa[0] = q_cat256(xq, xq + 64);
    xa[1] = q_cat256(xq + 32, xq + 96);
    xa[2] = q_cat256(xq + 128, xq + 192);
    xa[3] = q_cat256(xq + 160, xq + 224);
}

/* ==== Q4_K: one row at a time (decode) ==================================== */

/* 4 vectors of 16 int32 -> their 4 sums (exact), in order. */
QAI __m128i q_sum4x16(const __m512i *p) {
    /* lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
    const __m512i c0 =
        _mm512_add_epi32(_mm512_unpacklo_epi32(p[0], p[1]), _mm512_unpackhi_epi32(p[0], p[1]));
    const __m512i c1 =
        _mm512_add_epi32(_mm512_unpacklo_epi32(p[2], p[3]), _mm512_unpackhi_epi32(p[2], p[3]));
    /* lane k: the 4 vectors' sums over lane k */
    const __m512i e =
        _mm512_add_epi32(_mm512_unpacklo_epi64(c0, c1), _mm512_unpackhi_epi64(c0, c1));
    const __m512i f = _mm512_add_epi32(e, _mm512_shuffle_i32x4(e, e, 0x4e));
    return _mm512_castsi512_si128(_mm512_add_epi32(f, _mm512_shuffle_i32x4(f, f, 0xb1)));
}

/* 4 vectors of 4 int32 -> their 4 sums (exact), in order. */
QAI __m128i q_sum4x4(const __m128i *p) {
    const __m128i c0 =
        _mm_add_epi32(_mm_unpacklo_epi32(p[0], p[1]), _mm_unpackhi_epi32(p[0], p[1]));
    const __m128i c1 =
        _mm_add_epi32(_mm_unpacklo_epi32(p[2], p[3]), _mm_unpackhi_epi32(p[2], p[3]));
    return _mm_add_epi32(_mm_unpacklo_epi64(c0, c1), _mm_unpackhi_epi64(c0, c1));
}

/* Q8_K activation rows as dot_q4_K_row reads them: qs as k4_acts' four
 * zmm, bsums[0..7] the sums of 32 (bsums[8..15] are not read), d as is. */
static void k4_order(const char *X, size_t xrb, int64_t nb, int64_t nblk, char *out) {
    for (int64_t c = 0; c < nb; c++)
        for (int64_t b = 0; b < nblk; b++) {
            const moe_block_q8_K *s = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            moe_block_q8_K *o = (moe_block_q8_K *)(out + (size_t)c * xrb) + b;
            o->d = s->d;
            __m512i xa[4];
            k4_acts(s->qs, xa);
            for (int j = 0; j < 4; j++) _mm512_storeu_si512(o->qs + 64 * j, xa[j]);
            _mm_storeu_si128((__m128i *)o->bsums,
                             _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)s->bsums),
                                            _mm_loadu_si128((const __m128i *)s->bsums + 1)));
        }
}

/* E (1..4) super-blocks of dot_q4_K_row from b0 on: their exact sums
 * reduced together, then dot_q4_K's two fma per super-block in block
 * order. */
QAI void q4k_row_step(const int E, const moe_block_q4_K *w, const moe_block_q8_K *x, int64_t b0,
                      float *acc, float *accm) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i ctl[4] = {q_ctl16(0, 2), q_ctl16(1, 3), q_ctl16(4, 6), q_ctl16(5, 7)};
    __m512i a[4];
    __m128i pm[4];
#pragma GCC unroll 4
    for (int e = 0; e < 4; e++) {
        a[e] = _mm512_setzero_si512();
        pm[e] = _mm_setzero_si128();
    }
#pragma GCC unroll 4
    for (int e = 0; e < E; e++) {
        const moe_block_q4_K *wb = &w[b0 + e];
        const moe_block_q8_K *xb = &x[b0 + e];
        q_prefetch(wb, 3);
        uint64_t sc, mn;
        k4_scales8(wb->scales, &sc, &mn);
        const __m512i s = _mm512_set1_epi64((long long)sc);
        const __m512i q0 = _mm512_loadu_si512(wb->qs), q1 = _mm512_loadu_si512(wb->qs + 64);
        const __m512i l[4] = {
            _mm512_and_si512(q0, m4), _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4),
            _mm512_and_si512(q1, m4), _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4)};
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            a[e] = _mm512_dpwssd_epi32(
                a[e], _mm512_maddubs_epi16(l[j], _mm512_loadu_si512(xb->qs + 64 * j)),
                _mm512_shuffle_epi8(s, ctl[j]));
        pm[e] = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)),
                               _mm_loadu_si128((const __m128i *)xb->bsums));
    }
    const __m128 sf = _mm_cvtepi32_ps(q_sum4x16(a)), mf = _mm_cvtepi32_ps(q_sum4x4(pm));
    _Alignas(16) float sv[4], mv[4];
    _mm_store_ps(sv, sf);
    _mm_store_ps(mv, mf);
#pragma GCC unroll 4
    for (int e = 0; e < E; e++) {
        const float dx = x[b0 + e].d;
        *acc = fmaf(sv[e], q_f16(w[b0 + e].d) * dx, *acc);
        *accm = fmaf(mv[e], q_f16(w[b0 + e].dmin) * dx, *accm);
    }
}

/* dot_q4_K's arithmetic on one row, its weights read in order (x:
 * k4_order's). */
QAI float dot_q4_K_row(int64_t nblk, const moe_block_q4_K *w, const moe_block_q8_K *x) {
    float acc = 0.0f, accm = 0.0f;
    int64_t b = 0;
    for (; b + 4 <= nblk; b += 4) q4k_row_step(4, w, x, b, &acc, &accm);
    switch (nblk - b) {
    case 3:
        q4k_row_step(3, w, x, b, &acc, &accm);
        break;
    case 2:
        q4k_row_step(2, w, x, b, &acc, &accm);
        break;
    case 1:
        q4k_row_step(1, w, x, b, &acc, &accm);
        break;
    default:
        break;
    }
    return acc - accm;
}

/* ==== Q4_0 and IQ4_NL: 8 rows ============================================== */

/* dot8_q4's arithmetic: per block the 8 rows' exact sums, then one vector
 * fma with the rows in the float lanes. Rows 0..3 and 4..7 in the 128-bit
 * lanes of two zmm; levels unsigned (nibble, or the IQ4 value + 128) by
 * vpdpbusd against the activations broadcast to every lane, started at
 * -off * (the activations' sums of 4) to take the offset back out. */
QAI void dot8_q4_512(const int iq4, int64_t nblk, const char *w0, size_t wrb,
                     const moe_block_q8_0 *x, float *y) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i off = _mm512_set1_epi8((char)(iq4 ? 128 : 8));
    __m512i tbl = _mm512_setzero_si512();
    if (iq4)
        tbl = _mm512_add_epi8(
            _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)moe_iq4nl_values)), off);
    const int s = (int)wrb;
    const __m256i offs = _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const char *p = w0 + (size_t)b * sizeof(moe_block_q4_0);
        if ((b & 3) == 0)
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++)
                q_prefetch_at(q_pf8(w0 + (size_t)r * wrb, wrb, sizeof(moe_block_q4_0), b, nblk), 2);
        const __m512i xl = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)x[b].qs));
        const __m512i xh = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)x[b].qs + 1));
        const __m512i neg = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xl), off, xh));
        __m512i q[2];
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const char *ph = p + 2 + (size_t)(4 * h) * wrb;
            __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)ph));
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(ph + wrb)), 1);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(ph + 2 * wrb)), 2);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(ph + 3 * wrb)), 3);
            __m512i lo = _mm512_and_si512(v, m4);
            __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
            if (iq4) {
                lo = _mm512_shuffle_epi8(tbl, lo);
                hi = _mm512_shuffle_epi8(tbl, hi);
            }
            q[h] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(neg, lo, xl), hi, xh);
        }
        const __m256i sums = q_sum4x2(q[0], q[1]);
        const __m256i dw = _mm256_i32gather_epi32((const int *)p, offs, 1);
        const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_cvtepi32_epi16(dw)),
                                       _mm256_set1_ps(q_f16(x[b].d)));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
    }
    _mm256_storeu_ps(y, acc);
}

/* ==== Q4_K: 8 rows ========================================================= */

/* dot8_q4_K's arithmetic. Per row and super-block: qs as two zmm, each
 * nibble half times its activations (vpmaddubsw) and times its group's
 * scale (vpdpwssd, the scale spread from one broadcast qword by vpshufb),
 * into one zmm of 16 int32; the 8 rows' zmm summed and transposed by
 * q_sum8x16; the minimums times the group sums for 8 rows at once. C (1 or
 * 2) activation rows (X + c * xrb, outputs y + c * ldy) share each row's
 * unpacked weights; each output's arithmetic is the same for any C. */
QAI void dot8_q4_K_512(const int C, int64_t nblk, const char *w0, size_t wrb, const char *X,
                       size_t xrb, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(15);
    const __m512i ctl[4] = {q_ctl16(0, 2), q_ctl16(1, 3), q_ctl16(4, 6), q_ctl16(5, 7)};
    __m256 acc[2], accm[2];
    for (int c = 0; c < C; c++) acc[c] = accm[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const moe_block_q8_K *xb[2];
        __m512i xa[2][4], p[2][8];
        for (int c = 0; c < C; c++) {
            xb[c] = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            k4_acts(xb[c]->qs, xa[c]);
        }
        _Alignas(64) uint64_t mins[8];
        _Alignas(32) uint32_t dd[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            const moe_block_q4_K *wb = (const moe_block_q4_K *)(w0 + (size_t)r * wrb) + b;
            q_prefetch_l2_at(q_pf8(w0 + (size_t)r * wrb, wrb, sizeof *wb, b, nblk), 3);
            uint64_t sc;
            k4_scales8(wb->scales, &sc, &mins[r]);
            memcpy(&dd[r], wb, 4);
            const __m512i s = _mm512_set1_epi64((long long)sc);
            const __m512i q0 = _mm512_loadu_si512(wb->qs), q1 = _mm512_loadu_si512(wb->qs + 64);
            const __m512i l[4] = {
                _mm512_and_si512(q0, m4), _mm512_and_si512(_mm512_srli_epi16(q0, 4), m4),
                _mm512_and_si512(q1, m4), _mm512_and_si512(_mm512_srli_epi16(q1, 4), m4)};
            __m512i sv[4];
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) sv[j] = _mm512_shuffle_epi8(s, ctl[j]);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++) {
                __m512i a = _mm512_setzero_si512();
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++)
                    a = _mm512_dpwssd_epi32(a, _mm512_maddubs_epi16(l[j], xa[c][j]), sv[j]);
                p[c][r] = a;
            }
        }
        const __m512i mv = _mm512_load_si512(mins);
        const __m512i mlo = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(mv));
        const __m512i mhi = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(mv, 1));
        const __m256i dv = _mm256_load_si256((const __m256i *)dd);
        const __m256 dw = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dv));
        const __m256 mw = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(dv, 16)));
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            const __m256i sums = q_sum8x16(p[c]);
            const __m512i bsv = _mm512_broadcast_i32x4(
                _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb[c]->bsums),
                               _mm_loadu_si128((const __m128i *)xb[c]->bsums + 1)));
            const __m256i im = q_sum4x2(_mm512_madd_epi16(mlo, bsv), _mm512_madd_epi16(mhi, bsv));
            const __m256 dx = _mm256_set1_ps(xb[c]->d);
            const __m256 d = _mm256_mul_ps(dw, dx), dm = _mm256_mul_ps(mw, dx);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc[c]);
            accm[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(im), dm, accm[c]);
        }
    }
    for (int c = 0; c < C; c++) _mm256_storeu_ps(y + c * ldy, _mm256_sub_ps(acc[c], accm[c]));
}

#include "quant_klanes512.h"

/* ==== Q8_K activations ===================================================== */

void moe__quant_q8_K_avx512(const float *x, moe_block_q8_K *y, int64_t n) {
    f256_quant_q8_K(x, y, n); /* quant_fast256.h: one copy for both levels */
}

/* ==== Table entry ========================================================== */

/* The gemm takes its units (rows, groups of 8 rows) from QSTREAMS
 * contiguous parts of the range in turn, so that the weights are read as
 * QSTREAMS sequential streams: one stream alone reads ~10 GB/s a core on
 * this class of machine, several ~14 (as the plain read loop and the Q8_0
 * kernels). Unit u = p * per + j for j < per, part p < QSTREAMS, u < n. */
#define QSTREAMS 2
/* Bytes of activations reordered on the stack (k4_order, iqx_order). */
#define ACT_STACK (32 << 10)
/* The same for IQ4_XS batches of more than QCOLS_MAX rows, in chunks. */
#define IQX_BATCH_STACK (96 << 10)

/* dot_iq4_xs_512f on C activation rows in iqx_order's order, with VBMI (P 2)
 * or without (P 1). */
#define IQX_COLS_CASE(P, C)                                                                        \
    case C:                                                                                        \
        dot_iq4_xs_512f(C, P, 0, nblk, (const moe_block_iq4_xs *)w, x, xrb, y, ldy);               \
        break;
#define IQX_COLS(P)                                                                                \
    switch (C) {                                                                                   \
        IQX_COLS_CASE(P, 1)                                                                        \
        IQX_COLS_CASE(P, 2)                                                                        \
        IQX_COLS_CASE(P, 3)                                                                        \
    default:                                                                                       \
        dot_iq4_xs_512f(4, P, 0, nblk, (const moe_block_iq4_xs *)w, x, xrb, y, ldy);               \
        break;                                                                                     \
    }
static void iqx_cols(int vbmi, int C, int64_t nblk, const char *w, const char *x, size_t xrb,
                     float *y, int64_t ldy) {
    if (vbmi) {
        IQX_COLS(2)
    } else {
        IQX_COLS(1)
    }
}
#undef IQX_COLS
#undef IQX_COLS_CASE

/* Rows r0 + u, u < n, from QSTREAMS parts of the range in turn, of Q5_K
 * (T 0), Q6_K (T 1) or IQ4_XS (T 2, T 3 with VBMI: activations in
 * iqx_order's order)
 * times C activation rows: the loop over the rows inlined with the kernel,
 * its constants set up once. */
/* The start of each of the QSTREAMS parts of rows [r0, r0 + n) (per
 * units of `unit` rows each), up to the distance the kernels prefetch
 * ahead: the prefetches those bytes would have had. */
QAI void q_prefetch_heads(const int S, const char *W, size_t wrb, int64_t r0, int64_t n,
                          int64_t per, int64_t unit) {
    for (int p = 0; p < S; p++) {
        const int64_t u0 = p * per * unit;
        if (u0 >= n) break;
        const int64_t rows = n - u0 < per * unit ? n - u0 : per * unit;
        size_t bytes = (size_t)rows * wrb;
        if (bytes > MOE_PF_DIST) bytes = MOE_PF_DIST;
        const char *a = W + (size_t)(r0 + u0) * wrb;
        for (size_t o = 0; o < bytes; o += 64) __builtin_prefetch(a + o, 0, 3);
    }
}

QAI void k_rows(const int T, const int C, int64_t nblk, const char *W, size_t wrb, int64_t r0,
                int64_t n, const char *X, size_t xrb, float *Y, int64_t ldy) {
    const int64_t per = (n + QSTREAMS - 1) / QSTREAMS;
    q_prefetch_heads(QSTREAMS, W, wrb, r0, n, per, 1);
    for (int64_t i = 0; i < per * QSTREAMS; i++) {
        const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
        if (u >= n) continue;
        const char *w = W + (size_t)(r0 + u) * wrb;
        float *y = Y + r0 + u;
        if (T == 0)
            dot_q5_K_512(C, nblk, (const moe_block_q5_K *)w, X, xrb, y, ldy);
        else if (T == 1)
            dot_q6_K_512(C, nblk, (const moe_block_q6_K *)w, X, xrb, y, ldy);
        else
            dot_iq4_xs_512f(C, T - 1, 0, nblk, (const moe_block_iq4_xs *)w, X, xrb, y, ldy);
    }
}

#define K_ROWS_FN(name, T)                                                                         \
    static void name(int C, int64_t nblk, const char *W, size_t wrb, int64_t r0, int64_t n,        \
                     const char *X, size_t xrb, float *Y, int64_t ldy) {                           \
        switch (C) {                                                                               \
        case 1:                                                                                    \
            k_rows(T, 1, nblk, W, wrb, r0, n, X, xrb, Y, ldy);                                     \
            break;                                                                                 \
        case 2:                                                                                    \
            k_rows(T, 2, nblk, W, wrb, r0, n, X, xrb, Y, ldy);                                     \
            break;                                                                                 \
        case 3:                                                                                    \
            k_rows(T, 3, nblk, W, wrb, r0, n, X, xrb, Y, ldy);                                     \
            break;                                                                                 \
        default:                                                                                   \
            k_rows(T, 4, nblk, W, wrb, r0, n, X, xrb, Y, ldy);                                     \
            break;                                                                                 \
        }                                                                                          \
    }
K_ROWS_FN(k_rows_q5_K, 0)
K_ROWS_FN(k_rows_q6_K, 1)
K_ROWS_FN(k_rows_iq4_xs, 2)
K_ROWS_FN(k_rows_iq4_xs_vbmi, 3)

/* The fast numerics of Q5_K, Q6_K and IQ4_XS on rows as stored
 * (quant_klanes512.h's kernels with F = 1), rows from QSTREAMS parts of the
 * range in turn as the exact path takes them. */
void moe__quant_fast_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                            const void *X, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK_K;
    const size_t wrb = moe_dtype_row_bytes(wt, k), xrb = (size_t)nblk * sizeof(moe_block_q8_K);
    void (*fn)(int, int64_t, const void *, const char *, size_t, float *, int64_t) =
        wt == MOE_DTYPE_Q5_K   ? dot_q5_K_512_fast_cols
        : wt == MOE_DTYPE_Q6_K ? dot_q6_K_512_fast_cols
                               : dot_iq4_xs_512_fast_cols;
    const int64_t n = r1 - r0, per = (n + QSTREAMS - 1) / QSTREAMS;
    q_prefetch_heads(QSTREAMS, W, wrb, r0, n, per, 1);
    for (int64_t i = 0; i < per * QSTREAMS; i++) {
        const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
        if (u >= n) continue;
        for (int64_t b = 0; b < nb; b += QCOLS_MAX)
            fn((int)(nb - b < QCOLS_MAX ? nb - b : QCOLS_MAX), nblk,
               (const char *)W + (size_t)(r0 + u) * wrb, (const char *)X + (size_t)b * xrb, xrb,
               Y + b * ldy + r0 + u, ldy);
    }
}

void moe__quant_gemm_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                            const void *X, int64_t nb, float *Y, int64_t ldy) {
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    const int64_t nblk = k / (int64_t)moe_dtype_block_elems(wt);
    const char *Wc = W, *Xc = X;
    switch (wt) {
    case MOE_DTYPE_Q4_K:
        /* one activation row (decode): the rows one after another, each
         * read in order, the activations reordered once (k4_order) */
        if (nb == 1 && xrb <= ACT_STACK) {
            _Alignas(64) char xo[ACT_STACK];
            k4_order(Xc, xrb, 1, nblk, xo);
            const int64_t n = r1 - r0, per = (n + QSTREAMS - 1) / QSTREAMS;
            q_prefetch_heads(QSTREAMS, Wc, wrb, r0, n, per, 1);
            for (int64_t i = 0; i < per * QSTREAMS; i++) {
                const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
                if (u >= n) continue;
                Y[r0 + u] =
                    dot_q4_K_row(nblk, (const moe_block_q4_K *)(Wc + (size_t)(r0 + u) * wrb),
                                 (const moe_block_q8_K *)xo);
            }
            return;
        }
        /* fall through */
    case MOE_DTYPE_Q4_0:
    case MOE_DTYPE_IQ4_NL: { /* 8 rows at a time, the rest as the reference */
        /* groups of 8 rows from QSTREAMS parts of the range in turn */
        const int64_t ng = (r1 - r0) / 8, per = (ng + QSTREAMS - 1) / QSTREAMS;
        for (int64_t i = 0; i < per * QSTREAMS; i++) {
            const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
            if (u >= ng) continue;
            const int64_t r = r0 + 8 * u;
            const char *w = Wc + (size_t)r * wrb;
            if (wt != MOE_DTYPE_Q4_K) {
                for (int64_t b = 0; b < nb; b++)
                    dot8_q4_512(wt == MOE_DTYPE_IQ4_NL, nblk, w, wrb,
                                (const moe_block_q8_0 *)(Xc + (size_t)b * xrb), Y + b * ldy + r);
                continue;
            }
            int64_t b = 0;
            for (; b + 2 <= nb; b += 2)
                dot8_q4_K_512(2, nblk, w, wrb, Xc + (size_t)b * xrb, xrb, Y + b * ldy + r, ldy);
            if (b < nb)
                dot8_q4_K_512(1, nblk, w, wrb, Xc + (size_t)b * xrb, xrb, Y + b * ldy + r, ldy);
        }
        r0 += 8 * ng;
        if (r0 < r1) moe__quant_gemm_avx512_ref(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
    case MOE_DTYPE_Q5_K:
    case MOE_DTYPE_Q6_K:
    case MOE_DTYPE_IQ4_XS: {
        /* the batches of decode: the loop over the rows inlined with the
         * kernel (k_rows); IQ4_XS's activations reordered once (iqx_order),
         * on the stack */
        if (nb <= QCOLS_MAX && (wt != MOE_DTYPE_IQ4_XS || (size_t)nb * xrb <= ACT_STACK)) {
            if (wt == MOE_DTYPE_Q5_K) {
                k_rows_q5_K((int)nb, nblk, Wc, wrb, r0, r1 - r0, Xc, xrb, Y, ldy);
            } else if (wt == MOE_DTYPE_Q6_K) {
                k_rows_q6_K((int)nb, nblk, Wc, wrb, r0, r1 - r0, Xc, xrb, Y, ldy);
            } else {
                _Alignas(64) char xo[ACT_STACK];
                iqx_order(Xc, xrb, nb, nblk, xo);
                (moe__cpu_has_avx512vbmi ? k_rows_iq4_xs_vbmi : k_rows_iq4_xs)(
                    (int)nb, nblk, Wc, wrb, r0, r1 - r0, xo, xrb, Y, ldy);
            }
            return;
        }
        /* IQ4_XS batches (prefill): the activations reordered once per
         * chunk of rows that fits IQX_BATCH_STACK (iqx_order: no lane
         * shuffles or sign tests per column), then as below per chunk */
        if (wt == MOE_DTYPE_IQ4_XS && (size_t)QCOLS_MAX * xrb <= IQX_BATCH_STACK) {
            _Alignas(64) char xo[IQX_BATCH_STACK];
            const int64_t chunk = (int64_t)(IQX_BATCH_STACK / xrb) / QCOLS_MAX * QCOLS_MAX;
            const int vbmi = moe__cpu_has_avx512vbmi;
            const int64_t n = r1 - r0, per = (n + QSTREAMS - 1) / QSTREAMS;
            for (int64_t c0 = 0; c0 < nb; c0 += chunk) {
                const int64_t cn = nb - c0 < chunk ? nb - c0 : chunk;
                iqx_order(Xc + (size_t)c0 * xrb, xrb, cn, nblk, xo);
                for (int64_t i = 0; i < per * QSTREAMS; i++) {
                    const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
                    if (u >= n) continue;
                    const int64_t r = r0 + u;
                    for (int64_t b = 0; b < cn; b += QCOLS_MAX) {
                        const int C = (int)(cn - b < QCOLS_MAX ? cn - b : QCOLS_MAX);
                        iqx_cols(vbmi, C, nblk, Wc + (size_t)r * wrb, xo + (size_t)b * xrb, xrb,
                                 Y + (c0 + b) * ldy + r, ldy);
                    }
                }
            }
            return;
        }
        /* weight row outer (read once, from L1 for the other columns), up to
         * QCOLS_MAX activation rows per pass over it; rows from QSTREAMS
         * parts of the range in turn */
        void (*fn)(int, int64_t, const void *, const char *, size_t, float *, int64_t) =
            wt == MOE_DTYPE_Q5_K   ? dot_q5_K_512_cols
            : wt == MOE_DTYPE_Q6_K ? dot_q6_K_512_cols
                                   : dot_iq4_xs_512_q_cols;
        const int64_t n = r1 - r0, per = (n + QSTREAMS - 1) / QSTREAMS;
        for (int64_t i = 0; i < per * QSTREAMS; i++) {
            const int64_t u = i % QSTREAMS * per + i / QSTREAMS;
            if (u >= n) continue;
            const int64_t r = r0 + u;
            for (int64_t b = 0; b < nb; b += QCOLS_MAX) {
                const int C = (int)(nb - b < QCOLS_MAX ? nb - b : QCOLS_MAX);
                fn(C, nblk, Wc + (size_t)r * wrb, Xc + (size_t)b * xrb, xrb, Y + b * ldy + r, ldy);
            }
        }
        return;
    }
    case MOE_DTYPE_Q4_1:
    case MOE_DTYPE_Q5_0:
    case MOE_DTYPE_Q5_1:
    case MOE_DTYPE_Q2_K:
    case MOE_DTYPE_Q3_K: /* quant_fast256.h */
        f256_gemm(wt, QSTREAMS, 1, k, W, r0, r1, X, nb, Y, ldy);
        return;
    default:
        moe__quant_gemm_avx512_ref(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
}
