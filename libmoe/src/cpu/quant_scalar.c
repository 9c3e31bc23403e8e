/*
 * cpu/quant_scalar.c - the quantised weight types other than Q8_0 at the
 * scalar level, and the activation quantisers every level shares.
 *
 * Dots follow ggml's generic CPU code (ggml-cpu/quants.c) block for block:
 * each block's integer products summed exactly in int32, then scaled and
 * accumulated in float in block order. The SIMD levels (quant_simd.h) keep
 * the integer sums and scales and differ only in how the float partial sums
 * are grouped (ggml's x86 lanes), so they agree with these to float
 * rounding.
 */
#include <math.h>
#include <string.h>

#include "../quant.h"
#include "kernels.h"

/* ==== Activations ========================================================== */

/* Q8_1 as ggml's x86 quantize_row_q8_1 (the build llama.cpp runs on x86-64):
 * amax = max |x|, d = amax / 127 (stored fp16), id = 127 / amax,
 * q = round-half-even(x * id), s = fp16(d * sum(q)) with the float d. The
 * values are within int8 (|x * id| <= 127 up to one rounding). */
static void quantize_act_q8_1(const float *x, moe_block_q8_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK4; b++, x += MOE_QK4) {
        float amax = 0.0f;
        for (int j = 0; j < MOE_QK4; j++) {
            const float a = fabsf(x[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < MOE_QK4; j++) {
            const float v = nearbyintf(x[j] * id);
            y[b].qs[j] = (int8_t)(v > 127.0f ? 127 : v < -128.0f ? -128 : (int)v);
            sum += y[b].qs[j];
        }
        y[b].s = moe_f32_to_f16(d * (float)sum);
    }
}

/* Q8_K as ggml's quantize_row_q8_K_ref (x86 uses it too): the element of
 * largest magnitude, max, maps to -127 (iscale = -127 / max), q =
 * nearest_int(iscale * x) capped at 127, d = 1 / iscale, and the sums of
 * each 16 quants in bsums. */
static void quantize_act_q8_K(const float *x, moe_block_q8_K *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < MOE_QK_K; j++) {
            const float a = fabsf(x[j]);
            if (a > amax) {
                amax = a;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < MOE_QK_K; j++) {
            const int v = moe__nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) s += y[b].qs[16 * g + j];
            y[b].bsums[g] = (int16_t)s;
        }
        y[b].d = 1 / iscale;
    }
}

void moe__quant_act_from_f32(moe_dtype dt, const float *x, void *y, int64_t n) {
    if (dt == MOE_DTYPE_Q8_1)
        quantize_act_q8_1(x, y, n);
    else if (dt == MOE_DTYPE_Q8_K)
        quantize_act_q8_K(x, y, n);
}

/* ==== 32-element blocks ==================================================== */

static inline int nib(const uint8_t *qs, int j) {
    return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
}

static float dot_q4_0(int64_t k, const moe_block_q4_0 *w, const moe_block_q8_0 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < k / 32; b++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += (nib(w[b].qs, j) - 8) * x[b].qs[j];
        s += (float)sumi * moe_f16_to_f32(w[b].d) * moe_f16_to_f32(x[b].d);
    }
    return s;
}

static float dot_q4_1(int64_t k, const moe_block_q4_1 *w, const moe_block_q8_1 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < k / 32; b++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += nib(w[b].qs, j) * x[b].qs[j];
        s += moe_f16_to_f32(w[b].d) * moe_f16_to_f32(x[b].d) * (float)sumi +
             moe_f16_to_f32(w[b].m) * moe_f16_to_f32(x[b].s);
    }
    return s;
}

static inline int q5(const uint8_t *qs, const uint8_t *qhb, int j) {
    uint32_t qh;
    memcpy(&qh, qhb, 4);
    return nib(qs, j) | (int)((qh >> j) & 1) << 4;
}

static float dot_q5_0(int64_t k, const moe_block_q5_0 *w, const moe_block_q8_0 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < k / 32; b++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += (q5(w[b].qs, w[b].qh, j) - 16) * x[b].qs[j];
        s += moe_f16_to_f32(w[b].d) * moe_f16_to_f32(x[b].d) * (float)sumi;
    }
    return s;
}

static float dot_q5_1(int64_t k, const moe_block_q5_1 *w, const moe_block_q8_1 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < k / 32; b++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += q5(w[b].qs, w[b].qh, j) * x[b].qs[j];
        s += moe_f16_to_f32(w[b].d) * moe_f16_to_f32(x[b].d) * (float)sumi +
             moe_f16_to_f32(w[b].m) * moe_f16_to_f32(x[b].s);
    }
    return s;
}

static float dot_iq4_nl(int64_t k, const moe_block_iq4_nl *w, const moe_block_q8_0 *x) {
    float s = 0.0f;
    for (int64_t b = 0; b < k / 32; b++) {
        const float d = moe_f16_to_f32(x[b].d) * moe_f16_to_f32(w[b].d);
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += moe_iq4nl_values[nib(w[b].qs, j)] * x[b].qs[j];
        s += d * (float)sumi;
    }
    return s;
}

/* ==== Table entry ========================================================== */

float moe__quant_k_dot_scalar(moe_dtype wt, int64_t k, const void *w, const void *x);

void moe__quant_gemm_scalar(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                            const void *X, int64_t nb, float *Y, int64_t ldy) {
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    /* weight row outer: each row is read from memory once and stays in L1
     * for the batch's activation rows */
    for (int64_t r = r0; r < r1; r++) {
        const void *w = (const char *)W + (size_t)r * wrb;
        for (int64_t b = 0; b < nb; b++) {
            const void *x = (const char *)X + (size_t)b * xrb;
            float v;
            switch (wt) {
            case MOE_DTYPE_Q4_0:
                v = dot_q4_0(k, w, x);
                break;
            case MOE_DTYPE_Q4_1:
                v = dot_q4_1(k, w, x);
                break;
            case MOE_DTYPE_Q5_0:
                v = dot_q5_0(k, w, x);
                break;
            case MOE_DTYPE_Q5_1:
                v = dot_q5_1(k, w, x);
                break;
            case MOE_DTYPE_IQ4_NL:
                v = dot_iq4_nl(k, w, x);
                break;
            default:
                v = moe__quant_k_dot_scalar(wt, k, w, x);
                break;
            }
            Y[b * ldy + r] = v;
        }
    }
}
