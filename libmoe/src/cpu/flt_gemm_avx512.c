/*
 * cpu/flt_gemm_avx512.c - the F32 / F16 / BF16 weight products at the
 * AVX-512 level (kernels_avx512.c's table calls them): ggml's vec_dot for
 * one activation row, llamafile's tinyBLAS for more, as llama.cpp runs them.
 */
#include <immintrin.h>

#include "flt_avx512.h"
#include "kernels.h"
#include "moe/dtype.h"

/* Two or more activation rows (prefill), llama.cpp's path for them:
 * llamafile's tinyBLAS, one accumulator per output over steps of 16 (32
 * for vdpbf16ps), acc = fma(w, x, acc), then _mm512_reduce_add_ps. R = 4
 * weight rows x C activations share each loaded vector. */
AI void flt_tile(const int kind, const int R, const int C, int64_t k, const char *w0, size_t wrb,
                 const char *x0, size_t xrb, float *y, int64_t ldy) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    const int64_t st = kind == FK_BF16DP ? 32 : 16;
    for (int64_t i = 0; i < k; i += st) {
        __m512 xv[4];
        if (kind != FK_BF16DP)
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) xv[c] = flt_load16(kind, x0 + (size_t)c * xrb, i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const char *w = w0 + (size_t)r * wrb;
            if (kind == FK_BF16DP) {
                const __m512bh wv = (__m512bh)_mm512_loadu_si512((const uint16_t *)w + i);
#pragma GCC unroll 4
                for (int c = 0; c < C; c++)
                    acc[r][c] = _mm512_dpbf16_ps(
                        acc[r][c], wv,
                        (__m512bh)_mm512_loadu_si512((const uint16_t *)(x0 + (size_t)c * xrb) + i));
            } else {
                const __m512 wv = flt_load16(kind, w, i);
#pragma GCC unroll 4
                for (int c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) y[(int64_t)c * ldy + r] = _mm512_reduce_add_ps(acc[r][c]);
}

/* nb == 1: vec_dot, rows in sequence (with batch, the tile below). 2 <= nb <= 3 (memory-bound): the
 * tinyBLAS arithmetic, one weight row at a time (one memory stream).
 * nb >= 4: 4 x 4 tiles. Every output's arithmetic is the same whichever
 * rows or columns share its tile. */
AI void flt_gemm(const int kind, const int batch, int64_t k, const char *W, size_t wrb, int64_t r0,
                 int64_t r1, const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    if (nb == 1 && !batch) {
        for (int64_t r = r0; r < r1; r++) Y[r] = vdot_row(kind, k, W + (size_t)r * wrb, X);
        return;
    }
    if (nb <= 3) {
        for (int64_t r = r0; r < r1; r++) {
            const char *w = W + (size_t)r * wrb;
            if (nb == 1) /* batch: tinyBLAS's arithmetic for one row too */
                flt_tile(kind, 1, 1, k, w, wrb, X, xrb, Y + r, ldy);
            else if (nb == 2)
                flt_tile(kind, 1, 2, k, w, wrb, X, xrb, Y + r, ldy);
            else
                flt_tile(kind, 1, 3, k, w, wrb, X, xrb, Y + r, ldy);
        }
        return;
    }
    for (int64_t c = 0; c < nb; c += 4) {
        const int C = (int)(nb - c < 4 ? nb - c : 4);
        const char *x = X + (size_t)c * xrb;
        float *y = Y + c * ldy;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            const char *w = W + (size_t)r * wrb;
            switch (C) {
            case 4:
                flt_tile(kind, 4, 4, k, w, wrb, x, xrb, y + r, ldy);
                break;
            case 3:
                flt_tile(kind, 4, 3, k, w, wrb, x, xrb, y + r, ldy);
                break;
            case 2:
                flt_tile(kind, 4, 2, k, w, wrb, x, xrb, y + r, ldy);
                break;
            default:
                flt_tile(kind, 4, 1, k, w, wrb, x, xrb, y + r, ldy);
                break;
            }
        }
        for (; r < r1; r++) {
            const char *w = W + (size_t)r * wrb;
            switch (C) {
            case 4:
                flt_tile(kind, 1, 4, k, w, wrb, x, xrb, y + r, ldy);
                break;
            case 3:
                flt_tile(kind, 1, 3, k, w, wrb, x, xrb, y + r, ldy);
                break;
            case 2:
                flt_tile(kind, 1, 2, k, w, wrb, x, xrb, y + r, ldy);
                break;
            default:
                flt_tile(kind, 1, 1, k, w, wrb, x, xrb, y + r, ldy);
                break;
            }
        }
    }
}

void moe__flt_gemm_avx512(moe_dtype wt, int batch, int64_t k, const void *W, int64_t r0, int64_t r1,
                          const void *X, int64_t nb, float *Y, int64_t ldy) {
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    const char *w = W, *x = X;
    if (wt == MOE_DTYPE_F32)
        batch ? flt_gemm(FK_F32, 1, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy)
              : flt_gemm(FK_F32, 0, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy);
    else if (wt == MOE_DTYPE_F16)
        batch ? flt_gemm(FK_F16, 1, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy)
              : flt_gemm(FK_F16, 0, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy);
    else if (moe__cpu_has_avx512bf16)
        batch ? flt_gemm(FK_BF16DP, 1, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy)
              : flt_gemm(FK_BF16DP, 0, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy);
    else
        batch ? flt_gemm(FK_BF16, 1, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy)
              : flt_gemm(FK_BF16, 0, k, w, wrb, r0, r1, x, xrb, nb, Y, ldy);
}
