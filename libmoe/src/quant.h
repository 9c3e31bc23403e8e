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

#include <stdint.h>

#include "moe/dtype.h"

/* Quantises n floats (n a multiple of t's block) into blocks of t. Returns 0,
 * or -1 if t is not a type these files handle. */
int moe__quant_from_f32(moe_dtype t, const float *x, void *y, int64_t n);
/* Dequantises n elements of t (ggml's dequantize_row_* formulas). Returns 0,
 * or -1 if t is not a type these files handle. */
int moe__quant_to_f32(moe_dtype t, const void *x, float *y, int64_t n);

/* The K types (quant_kref.c); same contract. */
int moe__quant_k_from_f32(moe_dtype t, const float *x, void *y, int64_t n);
int moe__quant_k_to_f32(moe_dtype t, const void *x, float *y, int64_t n);

/* ggml's nearest_int: round half to even through the 1.5 * 2^23 trick
 * (|v| <= 2^22). */
static inline int moe__nearest_int(float v) {
    union {
        float f;
        int32_t i;
    } u = {v + 12582912.0f};
    return (u.i & 0x007fffff) - 0x00400000;
}

#endif
