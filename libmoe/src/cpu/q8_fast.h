/*
 * cpu/q8_fast.h - internal: the fast Q8_0 numerics in plain C, the scalar
 * table's kernel.
 *
 * Per output: each block's 32 products summed exactly in int32 (|sum| <=
 * 32 * 128 * 128 = 2^19, so (float)sum is exact), the blocks accumulated in
 * order as y = fmaf(d_w * d_x, (float)sum, y). d_w * d_x is exact in float
 * (two fp16 values: at most 11 significant bits each), so the result has one
 * rounding per block and is the same bit for bit whatever computes it: the
 * AMX and AVX-512 VNNI tiles (kernels_amx.c, q8_tile_avx512.c) and the AVX2
 * int16 tile (kernels_avx2.c) implement exactly this.
 */
#ifndef MOE_CPU_Q8_FAST_H
#define MOE_CPU_Q8_FAST_H

#include <math.h>

#include "moe/dtype.h"

static inline float moe__q8_fast_dot(int64_t nblk, const moe_block_q8_0 *w,
                                     const moe_block_q8_0 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        int32_t sum = 0;
        for (int j = 0; j < MOE_QK8_0; j++) sum += (int32_t)w[b].qs[j] * (int32_t)x[b].qs[j];
        s = fmaf(moe_f16_to_f32(w[b].d) * moe_f16_to_f32(x[b].d), (float)sum, s);
    }
    return s;
}

/* The gemm contract of moe_cpu_kernels for Q8_0 weights, fast numerics. */
static inline void moe__q8_fast_gemm(int64_t k, const void *W, int64_t r0, int64_t r1,
                                     const void *X, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    const size_t rb = moe_dtype_row_bytes(MOE_DTYPE_Q8_0, k);
    for (int64_t b = 0; b < nb; b++) {
        const moe_block_q8_0 *x = (const moe_block_q8_0 *)((const char *)X + (size_t)b * rb);
        for (int64_t r = r0; r < r1; r++)
            Y[b * ldy + r] = moe__q8_fast_dot(
                nblk, (const moe_block_q8_0 *)((const char *)W + (size_t)r * rb), x);
    }
}

#endif
