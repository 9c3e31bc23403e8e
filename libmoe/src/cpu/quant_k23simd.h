/*
 * cpu/quant_k23simd.h - Q2_K and Q3_K with AVX2 integer dots; part of
 * quant_ksimd.h (included from it only). As ggml's x86 vec_dot_q2_K_q8_K /
 * vec_dot_q3_K_q8_K: per 32 elements two groups of 16 with their scales.
 */

/* The 2-bit levels of 32 elements 128h + 32t + l (bits 2t of qs[32h + l]). */
QAI __m256i qk_levels2(const uint8_t *qs, int h, int t) {
    const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
    return _mm256_and_si256(_mm256_srli_epi16(q, 2 * t), _mm256_set1_epi8(3));
}

/* Q2_K: the minimums' term first, into the same 8 float lanes: lane l gets
 * fma(-d_x * dmin, m[2l] * bsums[2l] + m[2l+1] * bsums[2l+1], acc), then
 * fma(d_x * d, lanes, acc). */
static float dot_q2_K(int64_t nblk, const moe_block_q2_K *w, const moe_block_q8_K *x) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 2);
        const float d = x[b].d * q_f16(w[b].d), dmin = -x[b].d * q_f16(w[b].dmin);
        const __m128i ms = _mm_loadu_si128((const __m128i *)w[b].scales);
        const __m256i mins =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), _mm_set1_epi8(15)));
        const __m256i prod =
            _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)x[b].bsums));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++)
            for (int t = 0; t < 4; t++) {
                const int g = 8 * h + 2 * t;
                const __m256i s16 = qk_scale2(w[b].scales[g] & 15, w[b].scales[g + 1] & 15);
                sumi = _mm256_add_epi32(sumi, qk_dot_scaled(qk_levels2(w[b].qs, h, t),
                                                            x[b].qs + 128 * h + 32 * t, s16));
            }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return q_hsum8(acc);
}

/* Q3_K: levels 0..3 times x, minus 4 x where the high bit is clear (two
 * vpmaddubsw, subtracted in int16), times the group's scale - 32. */
static float dot_q3_K(int64_t nblk, const moe_block_q3_K *w, const moe_block_q8_K *x) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 2);
        const float d = x[b].d * q_f16(w[b].d);
        const __m256i hb = _mm256_loadu_si256((const __m256i *)w[b].hmask);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++)
            for (int t = 0; t < 4; t++) {
                const int g = 8 * h + 2 * t, bit = 4 * h + t;
                const __m256i xq =
                    _mm256_loadu_si256((const __m256i *)(x[b].qs + 128 * h + 32 * t));
                const __m256i clear =
                    _mm256_andnot_si256(_mm256_srli_epi16(hb, bit), _mm256_set1_epi8(1));
                const __m256i four = _mm256_slli_epi16(clear, 2);
                const __m256i p16 =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(qk_levels2(w[b].qs, h, t), xq),
                                     _mm256_maddubs_epi16(four, xq));
                const __m256i s16 =
                    qk_scale2(moe__q3_scale(w[b].scales, g), moe__q3_scale(w[b].scales, g + 1));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(s16, p16));
            }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return q_hsum8(acc);
}

static float qk23_dot(moe_dtype wt, int64_t nblk, const void *w, const void *x) {
    if (wt == MOE_DTYPE_Q2_K) return dot_q2_K(nblk, w, x);
    if (wt == MOE_DTYPE_Q3_K) return dot_q3_K(nblk, w, x);
    return 0.0f;
}
