/*
 * quant_kref.c - the 256-element super-blocks (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
 * IQ4_XS, and the Q8_K activations): reference quantisers and dequantisers
 * after ggml's formulas (ggml-quants.c). See quant.h.
 */
#include <math.h>
#include <string.h>

#include "moe/dtype.h"
#include "quant.h"

int moe__quant_k_from_f32(moe_dtype t, const float *x, void *y, int64_t n) {
    (void)t, (void)x, (void)y, (void)n;
    return -1;
}

int moe__quant_k_to_f32(moe_dtype t, const void *x, float *y, int64_t n) {
    (void)t, (void)x, (void)y, (void)n;
    return -1;
}
