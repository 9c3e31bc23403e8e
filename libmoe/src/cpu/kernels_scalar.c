/*
 * cpu/kernels_scalar.c - the portable kernel table: the reference the SIMD
 * levels are tested against, and the fallback on CPUs without AVX2.
 *
 * Numerics follow ggml's generic (non-SIMD) CPU code: float products summed
 * in double for F32/F16/BF16 dots; for Q8_0 an exact int32 sum per block
 * times (d_w * d_x) accumulated in float. The SIMD levels instead reproduce
 * llama.cpp's SIMD builds exactly; they agree with these to float rounding.
 */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "q8_fast.h"

/* ==== Conversions ========================================================== */

/* Q8_0 quantisation as ggml's x86 SIMD quantize_row_q8_0 (the build llama.cpp
 * runs on x86-64), which the SIMD levels reproduce bit for bit:
 *   amax = max |x|, d = amax / 127 (fp16, round to nearest even),
 *   id = amax != 0 ? 127 / amax : 0,
 *   q = round-half-to-even(x * id), converted as cvtps2dq + packsswb do
 *   (NaN or out of range -> INT32_MIN -> saturates to -128). */
static int8_t q8_from_rounded(float v) {
    if (!(v >= -2147483648.0f && v < 2147483648.0f)) return -128;
    if (v > 127.0f) return 127;
    if (v < -128.0f) return -128;
    return (int8_t)(int)v;
}

static void quantize_q8_0_scalar(const float *x, moe_block_q8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK8_0; b++, x += MOE_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < MOE_QK8_0; j++) {
            const float a = fabsf(x[j]);
            amax = amax > a ? amax : a; /* maxps: the second operand on NaN */
        }
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        for (int j = 0; j < MOE_QK8_0; j++) y[b].qs[j] = q8_from_rounded(nearbyintf(x[j] * id));
    }
}

static void from_f32_scalar(moe_dtype dt, const float *x, void *y, int64_t n) {
    switch (dt) {
    case MOE_DTYPE_F32:
        memcpy(y, x, (size_t)n * sizeof(float));
        return;
    case MOE_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)y)[i] = moe_f32_to_f16(x[i]);
        return;
    case MOE_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)y)[i] = moe_f32_to_bf16(x[i]);
        return;
    case MOE_DTYPE_Q8_0:
        quantize_q8_0_scalar(x, y, n);
        return;
    default: /* Q8_1, Q8_K */
        moe__quant_act_from_f32(dt, x, y, n);
        return;
    }
}

/* ==== Dots ================================================================= */

static float dot_row_f32(int64_t k, const float *w, const float *x) {
    double s = 0.0;
    for (int64_t i = 0; i < k; i++) s += (double)(w[i] * x[i]);
    return (float)s;
}

static float dot_row_f16(int64_t k, const uint16_t *w, const uint16_t *x) {
    double s = 0.0;
    for (int64_t i = 0; i < k; i++) s += (double)(moe_f16_to_f32(w[i]) * moe_f16_to_f32(x[i]));
    return (float)s;
}

static float dot_row_bf16(int64_t k, const uint16_t *w, const uint16_t *x) {
    double s = 0.0;
    for (int64_t i = 0; i < k; i++) s += (double)(moe_bf16_to_f32(w[i]) * moe_bf16_to_f32(x[i]));
    return (float)s;
}

static float dot_row_q8_0(int64_t k, const moe_block_q8_0 *w, const moe_block_q8_0 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < k / MOE_QK8_0; b++) {
        int32_t sumi = 0;
        for (int j = 0; j < MOE_QK8_0; j++) sumi += (int32_t)w[b].qs[j] * (int32_t)x[b].qs[j];
        s += (float)sumi * (moe_f16_to_f32(w[b].d) * moe_f16_to_f32(x[b].d));
    }
    return s;
}

static void gemm_scalar(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                        const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (wt != MOE_DTYPE_F32 && wt != MOE_DTYPE_F16 && wt != MOE_DTYPE_BF16 &&
        wt != MOE_DTYPE_Q8_0) { /* the other quantised types: quant_scalar.c */
        moe__quant_gemm_scalar(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    for (int64_t b = 0; b < nb; b++) {
        const void *x = (const char *)X + (size_t)b * xrb;
        for (int64_t r = r0; r < r1; r++) {
            const void *w = (const char *)W + (size_t)r * wrb;
            float v = 0.0f;
            switch (wt) {
            case MOE_DTYPE_F32:
                v = dot_row_f32(k, w, x);
                break;
            case MOE_DTYPE_F16:
                v = dot_row_f16(k, w, x);
                break;
            case MOE_DTYPE_BF16:
                v = dot_row_bf16(k, w, x);
                break;
            case MOE_DTYPE_Q8_0:
                v = dot_row_q8_0(k, w, x);
                break;
            default: /* handled above */
                break;
            }
            Y[b * ldy + r] = v;
        }
    }
}

static void gemm_fast_scalar(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                             const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (wt == MOE_DTYPE_Q8_0)
        moe__q8_fast_gemm(k, W, r0, r1, X, nb, Y, ldy);
    else
        gemm_scalar(wt, k, W, r0, r1, X, nb, Y, ldy);
}

static float dot_f32_scalar(int64_t n, const float *a, const float *b) {
    return dot_row_f32(n, a, b);
}

static void axpy_f32_scalar(int64_t n, float a, const float *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

MOE_ATTN_LOOPS(scalar)

static float dot_f16_scalar(int64_t n, const uint16_t *a, const uint16_t *b) {
    return dot_row_f16(n, a, b);
}

static void axpy_f16_scalar(int64_t n, float a, const uint16_t *x, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] += a * moe_f16_to_f32(x[i]);
}

MOE_ATTN_F16_LOOPS(scalar)

const moe_cpu_kernels moe__kernels_scalar = {
    .level = MOE_CPU_SCALAR,
    .name = "scalar",
    .from_f32 = from_f32_scalar,
    .gemm = gemm_scalar,
    .gemm_fast = gemm_fast_scalar,
    .gemm_batch = gemm_scalar, /* one double sum per output, whatever nb */
    .dot_f32 = dot_f32_scalar,
    .axpy_f32 = axpy_f32_scalar,
    .dots_f32 = dots_f32_scalar,
    .wsum_f32 = wsum_f32_scalar,
    .dots_f16 = dots_f16_scalar,
    .wsum_f16 = wsum_f16_scalar,
};
