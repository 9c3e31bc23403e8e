/*
 * quant_k23ref.c - Q2_K and Q3_K: reference quantisers and dequantisers
 * after ggml's formulas (quantize_row_q2_K_ref, quantize_row_q3_K_ref). See
 * quant.h.
 *
 * Both hold 16 groups of 16 with 2-bit levels laid out per 128 elements:
 * element 128h + 32t + l is bits 2t..2t+1 of qs[32h + l]; Q3_K's third bit
 * of element i is bit i / 32 of hmask[i % 32] (set: level as is; clear:
 * level - 4).
 */
#include <math.h>
#include <string.h>

#include "moe/dtype.h"
#include "quant.h"

/* Packs 256 2-bit levels as above. */
static void pack2(const uint8_t *L, uint8_t *qs) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *Lh = L + 128 * h;
            qs[32 * h + l] = (uint8_t)(Lh[l] | Lh[l + 32] << 2 | Lh[l + 64] << 4 | Lh[l + 96] << 6);
        }
}

static inline int level2(const uint8_t *qs, int i) {
    const int h = i / 128, t = (i % 128) / 32, l = i % 32;
    return (qs[32 * h + l] >> (2 * t)) & 3;
}

/* ==== Q2_K ================================================================= */

/* Per group an affine fit (levels 0..3, weights |x|, absolute error), the
 * scales and minimums to 4 bits against their maxima (d, dmin), then the
 * levels picked again with the stored ones. */
static void quantize_q2_K(const float *x, moe_block_q2_K *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        uint8_t L[MOE_QK_K];
        float sc[16], mn[16], w[16], max_scale = 0, max_min = 0;
        for (int g = 0; g < 16; g++) {
            for (int l = 0; l < 16; l++) w[l] = fabsf(x[16 * g + l]);
            sc[g] =
                moe__fit_scale_min(16, 3, x + 16 * g, w, L + 16 * g, &mn[g], -0.5f, 0.1f, 15, 1);
            if (sc[g] > max_scale) max_scale = sc[g];
            if (mn[g] > max_min) max_min = mn[g];
        }
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int g = 0; g < 16; g++) y[b].scales[g] = (uint8_t)moe__nearest_int(iscale * sc[g]);
            y[b].d = moe_f32_to_f16(max_scale / 15.f);
        } else {
            memset(y[b].scales, 0, sizeof y[b].scales);
            y[b].d = moe_f32_to_f16(0.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int g = 0; g < 16; g++)
                y[b].scales[g] |= (uint8_t)(moe__nearest_int(iscale * mn[g]) << 4);
            y[b].dmin = moe_f32_to_f16(max_min / 15.f);
        } else {
            y[b].dmin = moe_f32_to_f16(0.f);
        }
        for (int g = 0; g < 16; g++) {
            const float d = moe_f16_to_f32(y[b].d) * (y[b].scales[g] & 15);
            if (!d) continue;
            const float dm = moe_f16_to_f32(y[b].dmin) * (y[b].scales[g] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * g + l] =
                    (uint8_t)moe__clampi(moe__nearest_int((x[16 * g + l] + dm) / d), 0, 3);
        }
        pack2(L, y[b].qs);
    }
}

/* ==== Q3_K ================================================================= */

/* A symmetric fit x ~ scale * L, L in [-nmax, nmax - 1], weights x^2
 * (ggml's make_q3_quants with do_rmse): the grid with the largest magnitude
 * on -nmax, then up to 5 passes moving single levels while that improves
 * the weighted least-squares fit. L gets the levels + nmax. */
static float fit_scale_q3(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    const float max = moe__signed_absmax(x, n, &amax);
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = moe__clampi(moe__nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx <= 0) continue;
            float sl2 = suml2 - w * L[i] * L[i];
            const int nl = moe__clampi(moe__nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (nl == L[i]) continue;
            slx += w * x[i] * nl;
            sl2 += w * nl * nl;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static void quantize_q3_K(const float *x, moe_block_q3_K *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        int8_t L[MOE_QK_K];
        float sc[16], max_scale = 0, amax = 0;
        for (int g = 0; g < 16; g++) {
            sc[g] = fit_scale_q3(16, 4, x + 16 * g, L + 16 * g);
            if (fabsf(sc[g]) > amax) {
                amax = fabsf(sc[g]);
                max_scale = sc[g];
            }
        }
        memset(y[b].scales, 0, sizeof y[b].scales);
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int g = 0; g < 16; g++) {
                /* ggml keeps nearest_int in an int8_t before clamping */
                const int l = moe__clampi((int8_t)moe__nearest_int(iscale * sc[g]), -32, 31) + 32;
                if (g < 8)
                    y[b].scales[g] = (uint8_t)(l & 15);
                else
                    y[b].scales[g - 8] |= (uint8_t)((l & 15) << 4);
                y[b].scales[g % 4 + 8] |= (uint8_t)((l >> 4) << (2 * (g / 4)));
            }
            y[b].d = moe_f32_to_f16(1 / iscale);
        } else {
            y[b].d = moe_f32_to_f16(0.f);
        }
        for (int g = 0; g < 16; g++) {
            const float d = moe_f16_to_f32(y[b].d) * moe__q3_scale(y[b].scales, g);
            if (!d) continue;
            for (int l = 0; l < 16; l++)
                L[16 * g + l] =
                    (int8_t)(moe__clampi(moe__nearest_int(x[16 * g + l] / d), -4, 3) + 4);
        }
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        uint8_t U[MOE_QK_K];
        for (int i = 0; i < MOE_QK_K; i++) {
            int l = L[i];
            if (l > 3) {
                y[b].hmask[i % 32] |= (uint8_t)(1 << (i / 32));
                l -= 4;
            }
            U[i] = (uint8_t)l;
        }
        pack2(U, y[b].qs);
    }
}

/* ==== Entry points ========================================================= */

int moe__quant_k23_from_f32(moe_dtype t, const float *x, void *y, int64_t n) {
    switch (t) {
    case MOE_DTYPE_Q2_K:
        quantize_q2_K(x, y, n);
        return 0;
    case MOE_DTYPE_Q3_K:
        quantize_q3_K(x, y, n);
        return 0;
    default:
        return -1;
    }
}

int moe__quant_k23_to_f32(moe_dtype t, const void *src, float *y, int64_t n) {
    const int64_t nb = n / MOE_QK_K;
    switch (t) {
    case MOE_DTYPE_Q2_K:
        for (int64_t b = 0; b < nb; b++, y += MOE_QK_K) {
            const moe_block_q2_K *x = (const moe_block_q2_K *)src + b;
            const float d = moe_f16_to_f32(x->d), min = moe_f16_to_f32(x->dmin);
            for (int i = 0; i < MOE_QK_K; i++) {
                const uint8_t sc = x->scales[i / 16];
                y[i] = d * (sc & 15) * level2(x->qs, i) - min * (sc >> 4);
            }
        }
        return 0;
    case MOE_DTYPE_Q3_K:
        for (int64_t b = 0; b < nb; b++, y += MOE_QK_K) {
            const moe_block_q3_K *x = (const moe_block_q3_K *)src + b;
            const float d = moe_f16_to_f32(x->d);
            for (int i = 0; i < MOE_QK_K; i++) {
                const int hi = (x->hmask[i % 32] >> (i / 32)) & 1;
                y[i] = d * moe__q3_scale(x->scales, i / 16) * (level2(x->qs, i) - (hi ? 0 : 4));
            }
        }
        return 0;
    default:
        return -1;
    }
}
