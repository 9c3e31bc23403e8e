/*
 * cpu/q8_vnni.h - internal: the Q8_0 activation terms the AVX-512 VNNI tiles
 * share (q8_tile_avx512.c, q8p_fast_avx512.c). Include from *_avx512.c only.
 */
#ifndef MOE_CPU_Q8_VNNI_H
#define MOE_CPU_Q8_VNNI_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

AI int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* -128 x the sum of each 4-byte group of a block's 32 quants: lane j cancels
 * the w ^ 0x80 offset of group j (the exact numerics' 8 lanes). */
AI __m256i q8_group_corr(const int8_t *qs) {
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, _mm256_set1_epi8((char)0x80),
                                                      _mm256_loadu_si256((const __m256i *)qs)));
}

/* The 8 lanes of q8_group_corr summed: the whole block's correction (the
 * fast numerics sum its 8 groups in one int32). */
AI int32_t q8_corr_sum(__m256i corr) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(corr), _mm256_extracti128_si256(corr, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    return _mm_cvtsi128_si32(h);
}

#endif
