/*
 * cpu/quant_ksimd.h - the K super-blocks (Q4_K, Q5_K, Q6_K, IQ4_XS, Q2_K,
 * Q3_K) with AVX2 integer dots; part of quant_simd.h (included from it
 * only).
 *
 * As ggml's x86 vec_dot_*_q8_K: per super-block the levels of each group of
 * 32 are multiplied with the int8 activations (vpmaddubsw; signed levels
 * with the sign moved onto x), the int16 pairs multiplied by the group's
 * integer scale and summed into 8 int32 lanes (vpmaddwd; lane l holds
 * elements 4l..4l+3 of every group), all exact; then one
 * acc = fma(d_w * d_x, (float)lanes, acc) per super-block, summed at the
 * end as hsum_float_8. The minimums' term comes from the activations' sums
 * of 16 (bsums) in its own float sum, in the lanes ggml uses. Q4_K takes
 * the float order of llama.cpp's repacked kernel instead (dot_q4_K).
 */
#include "../quant.h"

/* 16 x int16 from two scales: the first 8 lanes s0, the last 8 s1 (the two
 * groups of 16 in 32 bytes). */
QAI __m256i qk_scale2(int s0, int s1) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)s0)),
                                   _mm_set1_epi16((short)s1), 1);
}

/* Unsigned levels w (32 bytes) times x, each int16 pair times its scale. */
QAI __m256i qk_dot_scaled(__m256i w, const int8_t *x, __m256i scale16) {
    return _mm256_madd_epi16(scale16,
                             _mm256_maddubs_epi16(w, _mm256_loadu_si256((const __m256i *)x)));
}

/* The 8 minimums times the activations' sums of 32 (bsums in pairs), in 4
 * int32 lanes: lane t = m[2t] * s[2t] + m[2t+1] * s[2t+1] (vphaddw,
 * vpmaddwd). */
QAI __m128i qk_mins(const int *mn, const int16_t *bsums) {
    const __m128i m = _mm_setr_epi16((short)mn[0], (short)mn[1], (short)mn[2], (short)mn[3],
                                     (short)mn[4], (short)mn[5], (short)mn[6], (short)mn[7]);
    const __m128i s = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)bsums),
                                     _mm_loadu_si128((const __m128i *)bsums + 1));
    return _mm_madd_epi16(m, s);
}

/* Q4_K as llama.cpp's repacked kernels (ggml_gemv/gemm_q4_K_8x8_q8_K; see
 * dot_rows_q4 in quant_simd.h): per super-block the exact int32 sum of the
 * scaled products and of the minimums times the activations' group sums;
 * acc = fma((float)sum, d_w * d_x, acc), accm = fma((float)mins, dmin_w *
 * d_x, accm) block after block; the result acc - accm. */
static float dot_q4_K(int64_t nblk, const moe_block_q4_K *w, const moe_block_q8_K *x) {
    const __m256i m4 = _mm256_set1_epi8(15);
    float acc = 0.0f, accm = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        int sc[8], mn[8];
        for (int g = 0; g < 8; g++) moe__k4_scale_min(g, w[b].scales, &sc[g], &mn[g]);
        const __m128i pm = qk_mins(mn, x[b].bsums);
        const int imin = _mm_cvtsi128_si32(pm) + _mm_extract_epi32(pm, 1) +
                         _mm_extract_epi32(pm, 2) + _mm_extract_epi32(pm, 3);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * j));
            const __m256i lo = _mm256_and_si256(q, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            const __m256i pl =
                qk_dot_scaled(lo, x[b].qs + 64 * j, _mm256_set1_epi16((short)sc[2 * j]));
            const __m256i ph =
                qk_dot_scaled(hi, x[b].qs + 64 * j + 32, _mm256_set1_epi16((short)sc[2 * j + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = fmaf((float)q_hsum_i32(sumi), q_f16(w[b].d) * x[b].d, acc);
        accm = fmaf((float)imin, q_f16(w[b].dmin) * x[b].d, accm);
    }
    return acc - accm;
}

/* The Q4_K integer work of one super-block of one row: the scaled products'
 * 8 int32 lanes, and (returned) the minimums times the group sums. */
QAI int q4k_block(const moe_block_q4_K *wb, const __m256i *xq, const int16_t *bsums,
                  __m256i *sumi) {
    const __m256i m4 = _mm256_set1_epi8(15);
    int sc[8], mn[8];
    for (int g = 0; g < 8; g++) moe__k4_scale_min(g, wb->scales, &sc[g], &mn[g]);
    const __m128i pm = qk_mins(mn, bsums);
    __m256i s = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(wb->qs + 32 * j));
        const __m256i lo = _mm256_and_si256(q, m4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        const __m256i pl = _mm256_madd_epi16(_mm256_set1_epi16((short)sc[2 * j]),
                                             _mm256_maddubs_epi16(lo, xq[2 * j]));
        const __m256i ph = _mm256_madd_epi16(_mm256_set1_epi16((short)sc[2 * j + 1]),
                                             _mm256_maddubs_epi16(hi, xq[2 * j + 1]));
        s = _mm256_add_epi32(s, _mm256_add_epi32(pl, ph));
    }
    *sumi = s;
    return _mm_cvtsi128_si32(pm) + _mm_extract_epi32(pm, 1) + _mm_extract_epi32(pm, 2) +
           _mm_extract_epi32(pm, 3);
}

/* 8 Q4_K rows with the rows in the float lanes (llama.cpp's repacked
 * layout): the same per-output arithmetic as dot_q4_K, the 8 rows' lanes
 * summed and transposed by vphaddd, one vector fma each for the scaled sums
 * and the minimums per super-block. */
static void dot8_q4_K(int64_t nblk, const char *w0, size_t wrb, const moe_block_q8_K *x, float *y) {
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        __m256i xq[8], p[8];
        for (int j = 0; j < 8; j++) xq[j] = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * j));
        _Alignas(16) uint16_t dh[8], mh[8];
        _Alignas(32) int32_t im[8];
        for (int r = 0; r < 8; r++) {
            const moe_block_q4_K *wb = (const moe_block_q4_K *)(w0 + (size_t)r * wrb) + b;
            im[r] = q4k_block(wb, xq, x[b].bsums, &p[r]);
            dh[r] = wb->d;
            mh[r] = wb->dmin;
        }
        const __m256i t0 =
            _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        const __m256i t1 =
            _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20),
                                              _mm256_permute2x128_si256(t0, t1, 0x31));
        const __m256 dx = _mm256_set1_ps(x[b].d);
        const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)dh)), dx);
        const __m256 dm = _mm256_mul_ps(_mm256_cvtph_ps(_mm_load_si128((const __m128i *)mh)), dx);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), d, acc);
        accm =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_load_si256((const __m256i *)im)), dm, accm);
    }
    _mm256_storeu_ps(y, _mm256_sub_ps(acc, accm));
}

/* Q5_K: as Q4_K with the fifth bit (bit g of qh[l] for group g); the
 * minimums' term summed in integers per super-block and added in one float
 * sum, as ggml's AVX2 loop does for this type. */
static float dot_q5_K(int64_t nblk, const moe_block_q5_K *w, const moe_block_q8_K *x) {
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const float d = x[b].d * q_f16(w[b].d), dmin = -x[b].d * q_f16(w[b].dmin);
        int sc[8], mn[8];
        for (int g = 0; g < 8; g++) moe__k4_scale_min(g, w[b].scales, &sc[g], &mn[g]);
        const __m128i pm = qk_mins(mn, x[b].bsums);
        summs += dmin * (float)(_mm_cvtsi128_si32(pm) + _mm_extract_epi32(pm, 1) +
                                _mm_extract_epi32(pm, 2) + _mm_extract_epi32(pm, 3));
        const __m256i hb = _mm256_loadu_si256((const __m256i *)w[b].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * j));
            const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one);
            const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one);
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(h0, 4));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                               _mm256_slli_epi16(h1, 4));
            const __m256i pl =
                qk_dot_scaled(lo, x[b].qs + 64 * j, _mm256_set1_epi16((short)sc[2 * j]));
            const __m256i ph =
                qk_dot_scaled(hi, x[b].qs + 64 * j + 32, _mm256_set1_epi16((short)sc[2 * j + 1]));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return q_hsum8(acc) + summs;
}

/* Q6_K: the levels taken unsigned (0..63) and the 32 subtracted through the
 * activations' sums: lane l loses 32 * (bsums[2l] * sc[2l] + bsums[2l+1] *
 * sc[2l+1]), as ggml's lanes do. */
static float dot_q6_K(int64_t nblk, const moe_block_q6_K *w, const moe_block_q8_K *x) {
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const float d = x[b].d * q_f16(w[b].d);
        const int8_t *sc = w[b].scales;
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        const __m256i bs = _mm256_loadu_si256((const __m256i *)x[b].bsums);
        const __m256i sub = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(w[b].ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(w[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w[b].qh + 32 * h));
            const __m256i lo[4] = {_mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                                   _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4)};
            for (int t = 0; t < 4; t++) {
                const __m256i top = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * t), m3);
                const __m256i q = _mm256_or_si256(lo[t], _mm256_slli_epi16(top, 4));
                const int g = 8 * h + 2 * t;
                sumi = _mm256_add_epi32(sumi, qk_dot_scaled(q, x[b].qs + 128 * h + 32 * t,
                                                            qk_scale2(sc[g], sc[g + 1])));
            }
        }
        sumi = _mm256_sub_epi32(sumi, sub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return q_hsum8(acc);
}

/* IQ4_XS: the IQ4 levels by table lookup, each group's int16 pairs times
 * its 6-bit scale minus 32; even and odd groups in two int32 sums added
 * before the one fma per super-block. */
static float dot_iq4_xs(int64_t nblk, const moe_block_iq4_xs *w, const moe_block_q8_K *x) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        __m256i s2[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int g = 0; g < 8; g++) {
            const int ls =
                ((w[b].scales_l[g / 2] >> 4 * (g % 2)) & 15) | ((w[b].scales_h >> 2 * g) & 3) << 4;
            const __m256i q = q_iq4(w[b].qs + 16 * g);
            const __m256i xq = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * g));
            const __m256i p16 =
                _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xq, q));
            s2[g % 2] = _mm256_add_epi32(
                _mm256_madd_epi16(p16, _mm256_set1_epi16((short)(ls - 32))), s2[g % 2]);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(q_f16(w[b].d) * x[b].d),
                              _mm256_cvtepi32_ps(_mm256_add_epi32(s2[0], s2[1])), acc);
    }
    return q_hsum8(acc);
}

#include "quant_k23simd.h"

static float qk_dot(moe_dtype wt, int64_t nblk, const void *w, const void *x) {
    switch (wt) {
    case MOE_DTYPE_Q4_K:
        return dot_q4_K(nblk, w, x);
    case MOE_DTYPE_Q5_K:
        return dot_q5_K(nblk, w, x);
    case MOE_DTYPE_Q6_K:
        return dot_q6_K(nblk, w, x);
    case MOE_DTYPE_IQ4_XS:
        return dot_iq4_xs(nblk, w, x);
    default:
        return qk23_dot(wt, nblk, w, x);
    }
}
