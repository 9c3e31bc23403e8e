/*
 * cpu/flt_avx512.h - the F32 / F16 / BF16 element loads and ggml's one-row
 * dot (vdot_row) at the AVX-512 level, shared by kernels_avx512.c (the
 * float gemms) and attn_avx512.c (attention's loops over the KV cache).
 * Include only from files built with the AVX-512 flags.
 */
#ifndef MOE_FLT_AVX512_H
#define MOE_FLT_AVX512_H

#include <immintrin.h>
#include <math.h>

#include "kernels.h"

#ifndef AI
#define AI static inline __attribute__((always_inline))
#endif

/* Kinds of weight (and activation) element; BF16DP is BF16 through
 * vdpbf16ps (AVX512_BF16), the others widen to fp32 and use FMA. */
enum { FK_F32, FK_F16, FK_BF16, FK_BF16DP };

AI __m512 flt_load16(const int kind, const char *p, int64_t i) {
    if (kind == FK_F32) return _mm512_loadu_ps((const float *)p + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i));
    if (kind == FK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

AI float flt_scalar(const int kind, const char *p, int64_t i) {
    if (kind == FK_F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    if (kind == FK_F16) return _cvtsh_ss(h);
    return moe_bf16_to_f32(h);
}

/* One activation row (decode), llama.cpp's path for it: ggml's AVX-512
 * vec_dot_{f32,f16,bf16}, step for step (checked bit for bit against the
 * prebuilt zen4 and icelake builds):
 *   f32/f16: 4 accumulators of 16 over steps of 64, reduced as
 *            (a0 + a2) + (a1 + a3), then _mm512_reduce_add_ps; the tail
 *            (k % 64) added one product at a time (in double for f16);
 *   bf16:    2 accumulators over steps of 64 (vdpbf16ps, 32 elements each)
 *            or of 32 (widened, 16 each), each reduced and added in double.
 * Rows are read one after another: one sequential memory stream. */
AI float vdot_row(const int kind, int64_t k, const char *w, const char *x) {
    if (kind == FK_F32 || kind == FK_F16) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const int64_t np = k & ~(int64_t)63;
        for (int64_t i = 0; i < np; i += 64) {
            a0 = _mm512_fmadd_ps(flt_load16(kind, w, i), flt_load16(kind, x, i), a0);
            a1 = _mm512_fmadd_ps(flt_load16(kind, w, i + 16), flt_load16(kind, x, i + 16), a1);
            a2 = _mm512_fmadd_ps(flt_load16(kind, w, i + 32), flt_load16(kind, x, i + 32), a2);
            a3 = _mm512_fmadd_ps(flt_load16(kind, w, i + 48), flt_load16(kind, x, i + 48), a3);
        }
        const float r =
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3)));
        if (kind == FK_F32) {
            float s = r;
            /* ggml's tail loop as its compiler built it: products rounded over
             * whole vectors of 8 (an in-order vectorised reduction), fused into
             * the sum (FMA) for the rest */
            const int64_t nv = np + ((k - np) & ~(int64_t)7);
            for (int64_t i = np; i < nv; i++) s += flt_scalar(kind, w, i) * flt_scalar(kind, x, i);
            for (int64_t i = nv; i < k; i++)
                s = fmaf(flt_scalar(kind, w, i), flt_scalar(kind, x, i), s);
            return s;
        }
        double s = r;
        for (int64_t i = np; i < k; i++)
            s += (double)(flt_scalar(kind, w, i) * flt_scalar(kind, x, i));
        return (float)s;
    }
    __m512 c1 = _mm512_setzero_ps(), c2 = c1;
    int64_t i = 0;
    if (kind == FK_BF16DP) {
        for (; i + 64 <= k; i += 64) {
            c1 = _mm512_dpbf16_ps(c1, (__m512bh)_mm512_loadu_si512((const uint16_t *)w + i),
                                  (__m512bh)_mm512_loadu_si512((const uint16_t *)x + i));
            c2 = _mm512_dpbf16_ps(c2, (__m512bh)_mm512_loadu_si512((const uint16_t *)w + i + 32),
                                  (__m512bh)_mm512_loadu_si512((const uint16_t *)x + i + 32));
        }
    } else {
        for (; i + 32 <= k; i += 32) {
            c1 = _mm512_fmadd_ps(flt_load16(kind, w, i), flt_load16(kind, x, i), c1);
            c2 = _mm512_fmadd_ps(flt_load16(kind, w, i + 16), flt_load16(kind, x, i + 16), c2);
        }
    }
    double s = (double)_mm512_reduce_add_ps(c1);
    s += (double)_mm512_reduce_add_ps(c2);
    for (; i < k; i++) s += (double)(flt_scalar(FK_BF16, w, i) * flt_scalar(FK_BF16, x, i));
    return (float)s;
}

#endif
