/*
 * quant_ref.c - the 32-element quantised blocks (Q4_0, Q4_1, Q5_0, Q5_1,
 * IQ4_NL, and the Q8_1 activations): reference quantisers and dequantisers
 * after ggml's formulas (ggml-quants.c), so a file written from them is the
 * one llama-quantize writes from the same floats and both engines read the
 * same numbers back. See quant.h.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "moe/dtype.h"
#include "quant.h"

const int8_t moe_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

/* ==== Quantisers =========================================================== */

/* The element of largest magnitude (the first such), as ggml picks it. */
static float block_absmax(const float *x, int n, float *amax) {
    float a = 0.0f, m = 0.0f;
    for (int j = 0; j < n; j++)
        if (a < fabsf(x[j])) {
            a = fabsf(x[j]);
            m = x[j];
        }
    *amax = a;
    return m;
}

/* Symmetric 4 or 5 bits: d = max / -2^(bits-1), so the largest magnitude
 * lands on the most negative level; q = trunc(x / d + half + 0.5) clamped
 * (ggml's "(int8_t)(x0 + 8.5f)", x0 >= -8 so truncation is floor). */
static void quantize_q4_0(const float *x, moe_block_q4_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK4; b++, x += MOE_QK4) {
        float amax;
        const float d = block_absmax(x, MOE_QK4, &amax) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(x[j] * id + 8.5f), q1 = (int)(x[j + 16] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[b].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void quantize_q5_0(const float *x, moe_block_q5_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK4; b++, x += MOE_QK4) {
        float amax;
        const float d = block_absmax(x, MOE_QK4, &amax) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            int q0 = (int)(x[j] * id + 16.5f), q1 = (int)(x[j + 16] * id + 16.5f);
            q0 = q0 < 31 ? q0 : 31;
            q1 = q1 < 31 ? q1 : 31;
            y[b].qs[j] = (uint8_t)((q0 & 15) | (q1 & 15) << 4);
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

/* With a minimum: d = (max - min) / (2^bits - 1), q = trunc((x - min) / d +
 * 0.5) (x - min >= 0, so truncation rounds half up). */
static void block_minmax(const float *x, float *mn, float *mx) {
    float a = FLT_MAX, b = -FLT_MAX;
    for (int j = 0; j < MOE_QK4; j++) {
        if (x[j] < a) a = x[j];
        if (x[j] > b) b = x[j];
    }
    *mn = a;
    *mx = b;
}

static void quantize_q4_1(const float *x, moe_block_q4_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK4; b++, x += MOE_QK4) {
        float mn, mx;
        block_minmax(x, &mn, &mx);
        const float d = (mx - mn) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        y[b].m = moe_f32_to_f16(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)((x[j] - mn) * id + 0.5f), q1 = (int)((x[j + 16] - mn) * id + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[b].qs[j] = (uint8_t)(q0 | q1 << 4);
        }
    }
}

static void quantize_q5_1(const float *x, moe_block_q5_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK4; b++, x += MOE_QK4) {
        float mn, mx;
        block_minmax(x, &mn, &mx);
        const float d = (mx - mn) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        y[b].m = moe_f32_to_f16(mn);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            /* (max - min) * id rounds to at most 31.000002: + 0.5 truncates to 31 */
            const int q0 = (int)((x[j] - mn) * id + 0.5f) & 31;
            const int q1 = (int)((x[j + 16] - mn) * id + 0.5f) & 31;
            y[b].qs[j] = (uint8_t)((q0 & 15) | (q1 & 15) << 4);
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
        }
        memcpy(y[b].qh, &qh, 4);
    }
}

/* The nearest of the 16 IQ4 levels to v (ties to the lower), by bisection
 * as ggml's best_index_int8. */
static int iq4_nearest(float v) {
    const int8_t *t = moe_iq4nl_values;
    if (v <= t[0]) return 0;
    if (v >= t[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < t[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - t[hi - 1] < t[hi] - v ? hi - 1 : hi;
}

/* The best IQ4 scale of one 32-element group without an importance matrix
 * (ggml's quantize_row_iq4_nl_impl, weights x^2, 7 tries either side):
 * start from d = max / -127 refined by least squares, then try the scales
 * that put the largest element on -127 + t, t in [-7, 7], keeping the one
 * with the best weighted fit; the levels are then picked again for it. */
float moe__iq4_best_scale(const float *x, int n, int ntry) {
    const int8_t *t = moe_iq4nl_values;
    float amax;
    const float max = moe__signed_absmax(x, n, &amax);
    if (amax < 1e-15f) return 0.0f;
    float d = ntry > 0 ? -max / t[0] : max / t[0];
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < n; j++) {
        const float q = t[iq4_nearest(id * x[j])], w = x[j] * x[j];
        sumqx += w * q * x[j];
        sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.0f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; itry++) {
        id = (itry + t[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < n; j++) {
            const float q = t[iq4_nearest(id * x[j])], w = x[j] * x[j];
            sumqx += w * q * x[j];
            sumq2 += w * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    return d;
}

/* Packs 32 levels as the 4-bit blocks lay them (j low, j + 16 high). */
void moe__iq4_pack(const float *x, float id, uint8_t *qs) {
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(iq4_nearest(id * x[j]) | iq4_nearest(id * x[j + 16]) << 4);
}

static void quantize_iq4_nl(const float *x, moe_block_iq4_nl *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK4; b++, x += MOE_QK4) {
        const float d = moe__iq4_best_scale(x, MOE_QK4, 7);
        y[b].d = moe_f32_to_f16(d);
        moe__iq4_pack(x, d ? 1 / d : 0.0f, y[b].qs);
    }
}

/* Q8_1 as ggml's quantize_row_q8_1_ref: d = amax / 127, q = roundf(x / d),
 * s = d * sum(q). (The kernels' activation quantiser is the x86 one:
 * cpu/quant_scalar.c.) */
static void quantize_q8_1(const float *x, moe_block_q8_1 *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK4; b++, x += MOE_QK4) {
        float amax;
        block_absmax(x, MOE_QK4, &amax);
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < MOE_QK4; j++) {
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[b].qs[j];
        }
        y[b].s = moe_f32_to_f16((float)sum * d);
    }
}

int moe__quant_from_f32(moe_dtype t, const float *x, void *y, int64_t n) {
    switch (t) {
    case MOE_DTYPE_Q4_0:
        quantize_q4_0(x, y, n);
        return 0;
    case MOE_DTYPE_Q4_1:
        quantize_q4_1(x, y, n);
        return 0;
    case MOE_DTYPE_Q5_0:
        quantize_q5_0(x, y, n);
        return 0;
    case MOE_DTYPE_Q5_1:
        quantize_q5_1(x, y, n);
        return 0;
    case MOE_DTYPE_IQ4_NL:
        quantize_iq4_nl(x, y, n);
        return 0;
    case MOE_DTYPE_Q8_1:
        quantize_q8_1(x, y, n);
        return 0;
    default:
        return moe__quant_k_from_f32(t, x, y, n);
    }
}

/* ==== Dequantisers ========================================================= */

/* The 5-bit element j of a Q5 block: its nibble and bit j of qh. */
static inline int q5_level(const uint8_t *qs, uint32_t qh, int j) {
    const int nib = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
    return nib | (int)((qh >> j) & 1) << 4;
}

static inline int q4_level(const uint8_t *qs, int j) {
    return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
}

int moe__quant_to_f32(moe_dtype t, const void *src, float *y, int64_t n) {
    const int64_t nb = n / MOE_QK4;
    switch (t) {
    case MOE_DTYPE_Q4_0:
        for (int64_t b = 0; b < nb; b++) {
            const moe_block_q4_0 *x = (const moe_block_q4_0 *)src + b;
            const float d = moe_f16_to_f32(x->d);
            for (int j = 0; j < 32; j++) y[b * 32 + j] = (float)(q4_level(x->qs, j) - 8) * d;
        }
        return 0;
    case MOE_DTYPE_Q4_1:
        for (int64_t b = 0; b < nb; b++) {
            const moe_block_q4_1 *x = (const moe_block_q4_1 *)src + b;
            const float d = moe_f16_to_f32(x->d), m = moe_f16_to_f32(x->m);
            for (int j = 0; j < 32; j++) y[b * 32 + j] = (float)q4_level(x->qs, j) * d + m;
        }
        return 0;
    case MOE_DTYPE_Q5_0:
        for (int64_t b = 0; b < nb; b++) {
            const moe_block_q5_0 *x = (const moe_block_q5_0 *)src + b;
            const float d = moe_f16_to_f32(x->d);
            uint32_t qh;
            memcpy(&qh, x->qh, 4);
            for (int j = 0; j < 32; j++) y[b * 32 + j] = (float)(q5_level(x->qs, qh, j) - 16) * d;
        }
        return 0;
    case MOE_DTYPE_Q5_1:
        for (int64_t b = 0; b < nb; b++) {
            const moe_block_q5_1 *x = (const moe_block_q5_1 *)src + b;
            const float d = moe_f16_to_f32(x->d), m = moe_f16_to_f32(x->m);
            uint32_t qh;
            memcpy(&qh, x->qh, 4);
            for (int j = 0; j < 32; j++) y[b * 32 + j] = (float)q5_level(x->qs, qh, j) * d + m;
        }
        return 0;
    case MOE_DTYPE_IQ4_NL:
        for (int64_t b = 0; b < nb; b++) {
            const moe_block_iq4_nl *x = (const moe_block_iq4_nl *)src + b;
            const float d = moe_f16_to_f32(x->d);
            for (int j = 0; j < 32; j++) y[b * 32 + j] = d * moe_iq4nl_values[q4_level(x->qs, j)];
        }
        return 0;
    case MOE_DTYPE_Q8_1:
        for (int64_t b = 0; b < nb; b++) {
            const moe_block_q8_1 *x = (const moe_block_q8_1 *)src + b;
            const float d = moe_f16_to_f32(x->d);
            for (int j = 0; j < 32; j++) y[b * 32 + j] = (float)x->qs[j] * d;
        }
        return 0;
    default:
        return moe__quant_k_to_f32(t, src, y, n);
    }
}
