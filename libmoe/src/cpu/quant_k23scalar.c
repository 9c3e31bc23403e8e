/*
 * cpu/quant_k23scalar.c - Q2_K and Q3_K at the scalar level, after ggml's
 * generic vec_dot_q2_K_q8_K (one int32 sum per super-block, minimums from
 * the activations' sums of 16, one float update) and vec_dot_q3_K_q8_K (the
 * 8-lane scheme of quant_kscalar.c with groups of 16).
 */
#include "../quant.h"
#include "kernels.h"

float moe__quant_k23_dot_scalar(moe_dtype wt, int64_t nblk, const void *w, const void *x);

static inline int level2(const uint8_t *qs, int i) {
    const int h = i / 128, t = (i % 128) / 32, l = i % 32;
    return (qs[32 * h + l] >> (2 * t)) & 3;
}

static float dot_q2_K(int64_t nblk, const moe_block_q2_K *w, const moe_block_q8_K *x) {
    float sumf = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        int summs = 0, isum = 0;
        for (int g = 0; g < 16; g++) summs += x[b].bsums[g] * (w[b].scales[g] >> 4);
        const float dall = x[b].d * moe_f16_to_f32(w[b].d);
        const float dmin = x[b].d * moe_f16_to_f32(w[b].dmin);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += x[b].qs[16 * g + l] * level2(w[b].qs, 16 * g + l);
            isum += (w[b].scales[g] & 15) * s;
        }
        sumf += dall * (float)isum - dmin * (float)summs;
    }
    return sumf;
}

static float dot_q3_K(int64_t nblk, const moe_block_q3_K *w, const moe_block_q8_K *x) {
    float sums[8] = {0}, sumf = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        int32_t lanes[8] = {0};
        for (int i = 0; i < MOE_QK_K; i++) {
            const int hi = (w[b].hmask[i % 32] >> (i / 32)) & 1;
            const int a = level2(w[b].qs, i) - (hi ? 0 : 4);
            lanes[i % 8] += moe__q3_scale(w[b].scales, i / 16) * (x[b].qs[i] * a);
        }
        const float d = moe_f16_to_f32(w[b].d) * x[b].d;
        for (int l = 0; l < 8; l++) sums[l] += d * (float)lanes[l];
    }
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

float moe__quant_k23_dot_scalar(moe_dtype wt, int64_t nblk, const void *w, const void *x) {
    switch (wt) {
    case MOE_DTYPE_Q2_K:
        return dot_q2_K(nblk, w, x);
    case MOE_DTYPE_Q3_K:
        return dot_q3_K(nblk, w, x);
    default:
        return 0.0f;
    }
}
