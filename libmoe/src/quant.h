/*
 * quant.h - internal: the quantised block types' conversions (quant_ref.c,
 * quant_kref.c), behind moe_dtype_from_f32 / moe_dtype_to_f32.
 *
 * The quantisers are the reference ones a GGUF writer uses (ggml's
 * quantize_row_*_ref formulas, round to nearest); the activation
 * quantisers the kernels use live in cpu/quant_scalar.c.
 */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H

#include <math.h>
#include <stdint.h>

#include "moe/dtype.h"

/* Quantises n floats (n a multiple of t's block) into blocks of t. Returns 0,
 * or -1 if t is not a type these files handle. */
int moe__quant_from_f32(moe_dtype t, const float *x, void *y, int64_t n);
/* Dequantises n elements of t (ggml's dequantize_row_* formulas). Returns 0,
 * or -1 if t is not a type these files handle. */
int moe__quant_to_f32(moe_dtype t, const void *x, float *y, int64_t n);

/* The K types (quant_kref.c: Q4_K, Q5_K, Q6_K, IQ4_XS, Q8_K; quant_k23ref.c:
 * Q2_K, Q3_K); same contract. */
int moe__quant_k_from_f32(moe_dtype t, const float *x, void *y, int64_t n);
int moe__quant_k_to_f32(moe_dtype t, const void *x, float *y, int64_t n);
int moe__quant_k23_from_f32(moe_dtype t, const float *x, void *y, int64_t n);
int moe__quant_k23_to_f32(moe_dtype t, const void *x, float *y, int64_t n);

/* The weighted affine fit of the K quantisers (quant_kref.c). */
float moe__fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                         float *the_min, float rmin, float rdelta, int nstep, int mad);

/* ggml's nearest_int: round half to even through the 1.5 * 2^23 trick
 * (|v| <= 2^22). */
static inline int moe__nearest_int(float v) {
    union {
        float f;
        int32_t i;
    } u = {v + 12582912.0f};
    return (u.i & 0x007fffff) - 0x00400000;
}

static inline int moe__clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* The element of x[0..n) of the largest magnitude (the first of equals);
 * *amax gets that magnitude. The scale searches start from it. */
static inline float moe__signed_absmax(const float *x, int n, float *amax) {
    float m = 0.0f, a = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > a) {
            a = fabsf(x[i]);
            m = x[i];
        }
    *amax = a;
    return m;
}

/* Q4_K / Q5_K's 6-bit scale and minimum of group j (0..7) from the 12
 * packed bytes: groups 0-3 in the low 6 bits of bytes 0-3 (scales) and 4-7
 * (minimums); groups 4-7 in the nibbles of bytes 8-11, their top 2 bits in
 * the top bits of bytes 0-7. */
static inline void moe__k4_scale_min(int j, const uint8_t *s, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
        *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Q3_K's 6-bit scale of group j (0..15), minus 32: the low nibble in byte j
 * (j < 8) or the high nibble of byte j - 8; the top 2 bits at bit 2 (j / 4)
 * of byte 8 + j % 4. */
static inline int moe__q3_scale(const uint8_t *s, int j) {
    const int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
    return (lo | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32;
}

#endif
