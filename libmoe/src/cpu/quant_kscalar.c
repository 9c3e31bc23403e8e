/*
 * cpu/quant_kscalar.c - the K super-blocks (Q4_K, Q5_K, Q6_K, IQ4_XS, Q2_K,
 * Q3_K) at the scalar level, after ggml's generic vec_dot_*_q8_K: each
 * super-block's levels unpacked to int8, products times the group's integer
 * scale summed exactly into 8 int32 lanes (element i into lane i % 8), the
 * lanes scaled by d_w * d_x into 8 float sums; the minimums' term (from the
 * activations' sums of 16) subtracted in a separate float sum; the 8 sums
 * added last.
 */
#include <string.h>

#include "../quant.h"
#include "kernels.h"

/* lanes[i % 8] += scale[i / gs] * w[i] * x[i] over one super-block. */
static void k_lanes(const int8_t *w, const int8_t *x, const int *scale, int gs, int32_t lanes[8]) {
    for (int i = 0; i < MOE_QK_K; i++) lanes[i % 8] += scale[i / gs] * (w[i] * x[i]);
}

/* Q4_K / Q5_K: levels 0..15 (0..31), 8 groups of 32. */
static float dot_q45_K(int five, int64_t nblk, const void *W, const moe_block_q8_K *x) {
    float sums[8] = {0}, sumf = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const uint8_t *s, *qs, *qh = NULL;
        uint16_t dh, mh;
        if (five) {
            const moe_block_q5_K *w = (const moe_block_q5_K *)W + b;
            s = w->scales, qs = w->qs, qh = w->qh, dh = w->d, mh = w->dmin;
        } else {
            const moe_block_q4_K *w = (const moe_block_q4_K *)W + b;
            s = w->scales, qs = w->qs, dh = w->d, mh = w->dmin;
        }
        int8_t a[MOE_QK_K];
        int sc[8], mn[8];
        for (int g = 0; g < 8; g++) {
            moe__k4_scale_min(g, s, &sc[g], &mn[g]);
            for (int l = 0; l < 32; l++) {
                const uint8_t byte = qs[32 * (g / 2) + l];
                int q = g % 2 ? byte >> 4 : byte & 15;
                if (qh) q += (qh[l] >> g & 1) << 4;
                a[32 * g + l] = (int8_t)q;
            }
        }
        int sumi = 0;
        for (int j = 0; j < 16; j++) sumi += x[b].bsums[j] * mn[j / 2];
        int32_t lanes[8] = {0};
        k_lanes(a, x[b].qs, sc, 32, lanes);
        const float d = moe_f16_to_f32(dh) * x[b].d;
        for (int l = 0; l < 8; l++) sums[l] += d * (float)lanes[l];
        const float dmin = moe_f16_to_f32(mh) * x[b].d;
        sumf -= dmin * (float)sumi;
    }
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

/* Q6_K: levels -32..31, 16 groups of 16 with int8 scales. */
static float dot_q6_K(int64_t nblk, const moe_block_q6_K *w, const moe_block_q8_K *x) {
    float sums[8] = {0}, sumf = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        int8_t a[MOE_QK_K];
        for (int i = 0; i < MOE_QK_K; i++) {
            const int h = i / 128, r = i % 128, l = r % 32, quarter = r / 32;
            const uint8_t lo = w[b].ql[64 * h + l + 32 * (quarter & 1)];
            a[i] = (int8_t)(((quarter < 2 ? lo & 15 : lo >> 4) |
                             ((w[b].qh[32 * h + l] >> (2 * quarter)) & 3) << 4) -
                            32);
        }
        int sc[16];
        for (int g = 0; g < 16; g++) sc[g] = w[b].scales[g];
        int32_t lanes[8] = {0};
        k_lanes(a, x[b].qs, sc, 16, lanes);
        const float d = moe_f16_to_f32(w[b].d) * x[b].d;
        for (int l = 0; l < 8; l++) sums[l] += d * (float)lanes[l];
    }
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

/* IQ4_XS as ggml's generic loop: per group of 32 one int sum, scaled by
 * d_w * d_x * (scale - 32) and added in float, group by group. */
static float dot_iq4_xs(int64_t nblk, const moe_block_iq4_xs *w, const moe_block_q8_K *x) {
    float sumf = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const float d4d8 = moe_f16_to_f32(w[b].d) * x[b].d;
        for (int g = 0; g < 8; g++) {
            const int ls =
                ((w[b].scales_l[g / 2] >> 4 * (g % 2)) & 15) | ((w[b].scales_h >> 2 * g) & 3) << 4;
            const float dl = d4d8 * (float)(ls - 32);
            const uint8_t *qs = w[b].qs + 16 * g;
            const int8_t *q8 = x[b].qs + 32 * g;
            int s1 = 0, s2 = 0;
            for (int j = 0; j < 16; j++) {
                s1 += q8[j] * moe_iq4nl_values[qs[j] & 15];
                s2 += q8[j + 16] * moe_iq4nl_values[qs[j] >> 4];
            }
            sumf += dl * (float)(s1 + s2);
        }
    }
    return sumf;
}

float moe__quant_k23_dot_scalar(moe_dtype wt, int64_t nblk, const void *w, const void *x);

float moe__quant_k_dot_scalar(moe_dtype wt, int64_t k, const void *w, const void *x) {
    const int64_t nblk = k / MOE_QK_K;
    switch (wt) {
    case MOE_DTYPE_Q4_K:
        return dot_q45_K(0, nblk, w, x);
    case MOE_DTYPE_Q5_K:
        return dot_q45_K(1, nblk, w, x);
    case MOE_DTYPE_Q6_K:
        return dot_q6_K(nblk, w, x);
    case MOE_DTYPE_IQ4_XS:
        return dot_iq4_xs(nblk, w, x);
    default:
        return moe__quant_k23_dot_scalar(wt, nblk, w, x);
    }
}
