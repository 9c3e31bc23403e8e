/*
 * quant_kref.c - the 256-element super-blocks (Q4_K, Q5_K, Q6_K, IQ4_XS,
 * Q2_K, Q3_K, and the Q8_K activations): reference quantisers and
 * dequantisers after ggml's formulas (ggml-quants.c: quantize_row_*_ref, the
 * path llama-quantize takes without an importance matrix). See quant.h.
 *
 * Each super-block holds 8 groups of 32 (Q4_K, Q5_K, IQ4_XS) or 16 groups of
 * 16 (Q6_K, Q2_K, Q3_K) with their own scale (and minimum), the scales
 * themselves quantised against one or two fp16 super-block scales.
 */
#include <math.h>
#include <string.h>

#include "moe/dtype.h"
#include "quant.h"

float moe__iq4_best_scale(const float *x, int n, int ntry);
void moe__iq4_pack(const float *x, float id, uint8_t *qs);

/* ==== Scale searches (ggml's make_q*_quants) =============================== */

/* An affine fit x ~ scale * L - min, L in [0, nmax], min >= 0, weighted
 * (ggml's make_qkx2_quants; n <= 32): start from the range's grid, then for
 * nstep + 1 scales around it (iscale = (rmin + rdelta * is + nmax) / (max -
 * min)) solve the weighted least squares for scale and min with those levels
 * and keep the fit of least weighted error (squared, or absolute with mad).
 * Returns the scale, sets *the_min. */
float moe__fit_scale_min(int n, int nmax, const float *x, const float *w, uint8_t *L,
                         float *the_min, float rmin, float rdelta, int nstep, int mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.0f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)moe__clampi(moe__nearest_int(iscale * (x[i] - min)), 0, nmax);
        const float diff = scale * L[i] + min - x[i];
        best += w[i] * (mad ? fabsf(diff) : diff * diff);
    }
    uint8_t Laux[32];
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = moe__clampi(moe__nearest_int(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D <= 0) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            const float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (mad ? fabsf(diff) : diff * diff);
        }
        if (err < best) {
            memcpy(L, Laux, (size_t)n);
            best = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

/* A symmetric fit x ~ scale * (L - nmax), weights x^2 (ggml's make_qx_quants
 * with rmse_type 1): the grid that puts the largest magnitude on -nmax,
 * refined by least squares, then 18 nearby grids (nmax + 0.1 is, is in
 * [-9, 9]) tried for a better weighted fit. Returns the scale. */
static float fit_scale_sym(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    const float max = moe__signed_absmax(x, n, &amax);
    if (amax < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = -nmax / max, sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = moe__clampi(moe__nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = moe__clampi(moe__nearest_int(iscale * x[i]), -nmax, nmax - 1);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] =
                    (int8_t)(nmax + moe__clampi(moe__nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ==== Q4_K / Q5_K: 8 groups of 32, 6-bit scales and minimums ============== */

/* The 12 bytes of 8 six-bit scales and 8 six-bit minimums, as
 * moe__k4_scale_min reads them. */
static void k4_scales_pack(uint8_t *s, const uint8_t *ls, const uint8_t *lm) {
    for (int j = 0; j < 4; j++) {
        s[j] = ls[j];
        s[j + 4] = lm[j];
    }
    for (int j = 4; j < 8; j++) {
        s[j + 4] = (uint8_t)((ls[j] & 15) | (lm[j] & 15) << 4);
        s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
        s[j] |= (uint8_t)((lm[j] >> 4) << 6);
    }
}

/* Fills d, dmin, scales and the levels L (0..nmax) of one super-block:
 * per group a weighted affine fit (weights sqrt(mean x^2) + |x|), the
 * groups' scales and minimums quantised to 6 bits against their maxima,
 * then each element's level picked again with the stored scales. */
static void k4_block(const float *x, int nmax, float rmin, int nstep, uint16_t *d, uint16_t *dmin,
                     uint8_t *scales, uint8_t *L) {
    float sc[8], mn[8], w[32], max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xg = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xg[l] * xg[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xg[l]);
        sc[j] = moe__fit_scale_min(32, nmax, xg, w, L + 32 * j, &mn[j], rmin, 0.1f, nstep, 0);
        if (sc[j] > max_scale) max_scale = sc[j];
        if (mn[j] > max_min) max_min = mn[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        /* ggml stores nearest_int in a uint8_t, then caps at 63 */
        ls[j] = (uint8_t)moe__nearest_int(inv_scale * sc[j]);
        lm[j] = (uint8_t)moe__nearest_int(inv_min * mn[j]);
        ls[j] = ls[j] < 63 ? ls[j] : 63;
        lm[j] = lm[j] < 63 ? lm[j] : 63;
    }
    k4_scales_pack(scales, ls, lm);
    *d = moe_f32_to_f16(max_scale / 63.f);
    *dmin = moe_f32_to_f16(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        int s, m;
        moe__k4_scale_min(j, scales, &s, &m);
        const float dd = moe_f16_to_f32(*d) * s;
        if (!dd) continue;
        const float dm = moe_f16_to_f32(*dmin) * m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] =
                (uint8_t)moe__clampi(moe__nearest_int((x[32 * j + l] + dm) / dd), 0, nmax);
    }
}

static void quantize_q4_K(const float *x, moe_block_q4_K *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        uint8_t L[MOE_QK_K];
        k4_block(x, 15, -1.0f, 20, &y[b].d, &y[b].dmin, y[b].scales, L);
        /* 64 elements per 32 bytes: the first 32 in the low nibbles */
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * j + l] = (uint8_t)(L[64 * j + l] | L[64 * j + 32 + l] << 4);
    }
}

static void quantize_q5_K(const float *x, moe_block_q5_K *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        uint8_t L[MOE_QK_K];
        k4_block(x, 31, -0.5f, 15, &y[b].d, &y[b].dmin, y[b].scales, L);
        /* as Q4_K, the fifth bit of element 64j + l in bit 2j of qh[l], of
         * 64j + 32 + l in bit 2j + 1 */
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                const int l1 = L[64 * j + l], l2 = L[64 * j + 32 + l];
                y[b].qs[32 * j + l] = (uint8_t)((l1 & 15) | (l2 & 15) << 4);
                y[b].qh[l] |= (uint8_t)((l1 >> 4) << (2 * j) | (l2 >> 4) << (2 * j + 1));
            }
    }
}

/* ==== Q6_K: 16 groups of 16, int8 scales =================================== */

static void quantize_q6_K(const float *x, moe_block_q6_K *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        int8_t L[MOE_QK_K];
        float sc[16], max_scale = 0, max_abs = 0;
        for (int g = 0; g < 16; g++) {
            sc[g] = fit_scale_sym(16, 32, x + 16 * g, L + 16 * g);
            if (fabsf(sc[g]) > max_abs) {
                max_abs = fabsf(sc[g]);
                max_scale = sc[g];
            }
        }
        if (max_abs < 1e-15f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[b].d = moe_f32_to_f16(1 / iscale);
        for (int g = 0; g < 16; g++) {
            const int v = moe__nearest_int(iscale * sc[g]);
            y[b].scales[g] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < 16; g++) {
            const float d = moe_f16_to_f32(y[b].d) * y[b].scales[g];
            if (!d) continue;
            for (int i = 0; i < 16; i++)
                L[16 * g + i] =
                    (int8_t)(moe__clampi(moe__nearest_int(x[16 * g + i] / d), -32, 31) + 32);
        }
        /* per 128: low nibbles of elements l and l + 64 in ql[l], of l + 32
         * and l + 96 in ql[l + 32]; the top 2 bits of the four in qh[l] */
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 15) | (Lh[l + 64] & 15) << 4);
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 15) | (Lh[l + 96] & 15) << 4);
                qh[l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 |
                                  (Lh[l + 96] >> 4) << 6);
            }
        }
    }
}

/* ==== IQ4_XS: 8 groups of 32 IQ4_NL levels, 6-bit scales ================== */

/* Each group's best IQ4 scale (as IQ4_NL's), then the scales quantised to
 * 6 bits (-32..31) against d = -max_scale / 32 and the levels picked again
 * for the stored scale. */
static void quantize_iq4_xs(const float *x, moe_block_iq4_xs *y, int64_t n) {
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        float sc[8], max_scale = 0, amax_scale = 0;
        for (int g = 0; g < 8; g++) {
            sc[g] = moe__iq4_best_scale(x + 32 * g, 32, 7);
            if (fabsf(sc[g]) > amax_scale) {
                amax_scale = fabsf(sc[g]);
                max_scale = sc[g];
            }
        }
        const float d = -max_scale / 32;
        const float id = d ? 1 / d : 0.f;
        y[b].d = moe_f32_to_f16(d);
        y[b].scales_h = 0;
        memset(y[b].scales_l, 0, sizeof y[b].scales_l);
        for (int g = 0; g < 8; g++) {
            const int l = moe__clampi(moe__nearest_int(id * sc[g]), -32, 31);
            const float dl = d * l;
            moe__iq4_pack(x + 32 * g, dl ? 1 / dl : 0.f, y[b].qs + 16 * g);
            const int u = l + 32;
            y[b].scales_l[g / 2] |= (uint8_t)((u & 15) << 4 * (g % 2));
            y[b].scales_h |= (uint16_t)((u >> 4) << 2 * g);
        }
    }
}

/* ==== Entry points ========================================================= */

int moe__quant_k_from_f32(moe_dtype t, const float *x, void *y, int64_t n) {
    switch (t) {
    case MOE_DTYPE_Q4_K:
        quantize_q4_K(x, y, n);
        return 0;
    case MOE_DTYPE_Q5_K:
        quantize_q5_K(x, y, n);
        return 0;
    case MOE_DTYPE_Q6_K:
        quantize_q6_K(x, y, n);
        return 0;
    case MOE_DTYPE_IQ4_XS:
        quantize_iq4_xs(x, y, n);
        return 0;
    default:
        return moe__quant_k23_from_f32(t, x, y, n);
    }
}

int moe__quant_k_to_f32(moe_dtype t, const void *src, float *y, int64_t n) {
    const int64_t nb = n / MOE_QK_K;
    switch (t) {
    case MOE_DTYPE_Q4_K:
    case MOE_DTYPE_Q5_K:
        for (int64_t b = 0; b < nb; b++, y += MOE_QK_K) {
            const uint8_t *s, *qs, *qh = NULL;
            uint16_t dh, mh;
            if (t == MOE_DTYPE_Q4_K) {
                const moe_block_q4_K *x = (const moe_block_q4_K *)src + b;
                s = x->scales, qs = x->qs, dh = x->d, mh = x->dmin;
            } else {
                const moe_block_q5_K *x = (const moe_block_q5_K *)src + b;
                s = x->scales, qs = x->qs, qh = x->qh, dh = x->d, mh = x->dmin;
            }
            const float d = moe_f16_to_f32(dh), min = moe_f16_to_f32(mh);
            for (int g = 0; g < 8; g++) {
                int sc, m;
                moe__k4_scale_min(g, s, &sc, &m);
                const float dl = d * sc, ml = min * m;
                for (int l = 0; l < 32; l++) {
                    const uint8_t byte = qs[32 * (g / 2) + l];
                    int q = g % 2 ? byte >> 4 : byte & 15;
                    if (qh) q += (qh[l] >> g & 1) << 4;
                    y[32 * g + l] = dl * q - ml;
                }
            }
        }
        return 0;
    case MOE_DTYPE_Q6_K:
        for (int64_t b = 0; b < nb; b++, y += MOE_QK_K) {
            const moe_block_q6_K *x = (const moe_block_q6_K *)src + b;
            const float d = moe_f16_to_f32(x->d);
            for (int i = 0; i < MOE_QK_K; i++) {
                const int h = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
                const uint8_t lo = x->ql[64 * h + l + 32 * (quarter & 1)];
                const int q = ((quarter < 2 ? lo & 15 : lo >> 4) |
                               ((x->qh[32 * h + l] >> (2 * quarter)) & 3) << 4) -
                              32;
                y[i] = d * x->scales[i / 16] * q;
            }
        }
        return 0;
    case MOE_DTYPE_IQ4_XS:
        for (int64_t b = 0; b < nb; b++, y += MOE_QK_K) {
            const moe_block_iq4_xs *x = (const moe_block_iq4_xs *)src + b;
            const float d = moe_f16_to_f32(x->d);
            for (int g = 0; g < 8; g++) {
                const int ls =
                    ((x->scales_l[g / 2] >> 4 * (g % 2)) & 15) | ((x->scales_h >> 2 * g) & 3) << 4;
                const float dl = d * (ls - 32);
                const uint8_t *qs = x->qs + 16 * g;
                for (int j = 0; j < 16; j++) {
                    y[32 * g + j] = dl * moe_iq4nl_values[qs[j] & 15];
                    y[32 * g + j + 16] = dl * moe_iq4nl_values[qs[j] >> 4];
                }
            }
        }
        return 0;
    case MOE_DTYPE_Q8_K:
        for (int64_t b = 0; b < nb; b++, y += MOE_QK_K) {
            const moe_block_q8_K *x = (const moe_block_q8_K *)src + b;
            for (int i = 0; i < MOE_QK_K; i++) y[i] = x->d * x->qs[i];
        }
        return 0;
    default:
        return moe__quant_k23_to_f32(t, src, y, n);
    }
}
