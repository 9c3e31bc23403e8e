/*
 * cpu/kernels_avx512.c - AVX-512 (F, BW, VL, DQ, VNNI; BF16 if present).
 *
 * Q8_0 weights, two kernels:
 *   - rows (nb <= 2, decode; memory-bound): weight rows are read one after
 *     another, so the matrix is one sequential stream (several interleaved
 *     short row streams defeat the hardware prefetchers: ~0.6-0.75 of the
 *     read bandwidth, against ~0.95 this way), with a software prefetch
 *     ahead. Per block: vpdpbusd of |w| against x carrying w's sign into 8
 *     int32 lanes, acc = fma(dw * dx, (float)lanes, acc), summed at the end
 *     as hsum_float_8: ggml's x86 ggml_vec_dot_q8_0_q8_0 step for step, so a
 *     decode matvec matches llama.cpp bit for bit.
 *   - transposed tile (nb >= 3, prefill; compute-bound): 16 weight rows x
 *     32 blocks are repacked on the stack so one zmm holds 4 bytes of each
 *     of 16 rows, offset to unsigned (w ^ 0x80); activation bytes are
 *     broadcast ({1to16} operands) and 8 vpdpbusd, started at -128 * sum(x),
 *     give the exact int32 block dot of 16 rows at once, so the float work
 *     per block is one convert, one scale and one add for 16 outputs. Its
 *     float arithmetic is the scalar table's (sum += (float)sumi * (dw*dx)),
 *     so it equals the scalar result exactly.
 * F32 / F16 / BF16 weights: rows in sequence with several accumulators for
 * nb <= 3, a 4 x 4 register tile of FMAs beyond (vdpbf16ps for BF16 when the
 * CPU has AVX512_BF16).
 *
 * Stack use: up to ~36 KB (the Q8_0 tile's buffers).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#define AI static inline __attribute__((always_inline))

/* Up to this many activation rows the Q8_0 gemm streams weight rows in
 * sequence (memory-bound decode); from it on it uses the transposed tile. */
#define Q8_ROWS_MAX_NB 2
/* Activation scales converted up front for rows of up to this many blocks. */
#define Q8_ROWS_DX_BLK 1024

/* ==== Helpers ============================================================== */

AI float hsum8(__m256 v) { /* as ggml's hsum_float_8 */
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

AI __m256 f16_bcast8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_set1_epi16((short)*p));
}

AI int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* ==== Conversions ========================================================== */

static void quantize_q8_0_avx512(const float *x, moe_block_q8_0 *y, int64_t n) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / MOE_QK8_0; b++, x += MOE_QK8_0) {
        __m512 v0 = _mm512_loadu_ps(x);
        __m512 v1 = _mm512_loadu_ps(x + 16);
        const __m512 m = _mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1));
        const float amax = _mm512_reduce_max_ps(m);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        const __m512 mul = _mm512_set1_ps(id);
        const __m512i i0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, mul),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512i i1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, mul),
                                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtsepi32_epi8(i1));
    }
}

/* f32 -> bf16, round to nearest even, NaN kept quiet (as moe_f32_to_bf16). */
AI __m256i bf16_from_f32x16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(64));
    return _mm512_cvtepi32_epi16(r);
}

static void from_f32_avx512(moe_dtype dt, const float *x, void *y, int64_t n) {
    int64_t i = 0;
    switch (dt) {
    case MOE_DTYPE_F32:
        memcpy(y, x, (size_t)n * sizeof(float));
        return;
    case MOE_DTYPE_F16: {
        uint16_t *o = y;
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(o + i),
                                _mm512_cvtps_ph(_mm512_loadu_ps(x + i),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; i < n; i++) o[i] = moe_f32_to_f16(x[i]);
        return;
    }
    case MOE_DTYPE_BF16: {
        uint16_t *o = y;
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(o + i), bf16_from_f32x16(_mm512_loadu_ps(x + i)));
        for (; i < n; i++) o[i] = moe_f32_to_bf16(x[i]);
        return;
    }
    case MOE_DTYPE_Q8_0:
        quantize_q8_0_avx512(x, y, n);
        return;
    }
}

/* ==== Q8_0: rows in sequence (decode) ===================================== */

/* R weight rows (R * C <= 2) against C activation rows. Per block:
 * vpdpbusd of |w| against x with w's sign, into 8 int32 lanes (lane j: bytes
 * 4j..4j+3), then acc += (dw * dx) * (float)lane, one accumulator per
 * output; each output is summed as ggml's hsum_float_8. This is ggml's x86
 * vec_dot_q8_0_q8_0 step for step, so decode results equal llama.cpp's bit
 * for bit. One chain of FMAs per output bounds a single row to ~1 block per
 * 4 cycles, so at nb = 1 two rows (from the two halves of the range: two
 * sequential streams, which the prefetchers follow) run together.
 * dx[c] holds the activation scales as floats, or is NULL (converted here). */
AI void q8_rows_tile(const int R, const int C, int64_t nblk, const moe_block_q8_0 *const *w,
                     const char *X, size_t xrb, const float *const *dx, float *const *y,
                     int64_t ldy) {
    __m256 acc[2][2];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
#pragma GCC unroll 2
        for (int r = 0; r < R; r++)
            __builtin_prefetch((const char *)(w[r] + b) + MOE_PF_DIST, 0, 3);
        __m256i xq[2];
        __m256 dxv[2];
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb) + b;
            xq[c] = _mm256_loadu_si256((const __m256i *)xb->qs);
            dxv[c] = dx ? _mm256_set1_ps(dx[c][b]) : f16_bcast8(&xb->d);
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            const __m256i wq = _mm256_loadu_si256((const __m256i *)w[r][b].qs);
            const __m256i aw = _mm256_abs_epi8(wq);
            const __m256 dw = f16_bcast8(&w[r][b].d);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++) {
                const __m256i sx = _mm256_sign_epi8(xq[c], wq);
                const __m256 q =
                    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx));
                acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dxv[c]), q, acc[r][c]);
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) y[r][(int64_t)c * ldy] = hsum8(acc[r][c]);
}

static void q8_rows(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                    size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    float dxs[Q8_ROWS_MAX_NB][Q8_ROWS_DX_BLK];
    const float *dxp[Q8_ROWS_MAX_NB];
    const float *const *dx = NULL;
    if (nblk <= Q8_ROWS_DX_BLK) {
        for (int64_t c = 0; c < nb; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb);
            for (int64_t b = 0; b < nblk; b++) dxs[c][b] = moe_f16_to_f32(xb[b].d);
            dxp[c] = dxs[c];
        }
        dx = dxp;
    }
#define Q8_ROW(r) ((const moe_block_q8_0 *)(W + (size_t)(r)*wrb))
    if (nb == 1) {
        const int64_t h = (r1 - r0) / 2;
        for (int64_t i = 0; i < h; i++) {
            const moe_block_q8_0 *w[2] = {Q8_ROW(r0 + i), Q8_ROW(r0 + h + i)};
            float *y[2] = {Y + r0 + i, Y + r0 + h + i};
            q8_rows_tile(2, 1, nblk, w, X, xrb, dx, y, ldy);
        }
        if (2 * h < r1 - r0) {
            const moe_block_q8_0 *w[1] = {Q8_ROW(r1 - 1)};
            float *y[1] = {Y + r1 - 1};
            q8_rows_tile(1, 1, nblk, w, X, xrb, dx, y, ldy);
        }
    } else {
        for (int64_t r = r0; r < r1; r++) {
            const moe_block_q8_0 *w[1] = {Q8_ROW(r)};
            float *y[1] = {Y + r};
            q8_rows_tile(1, 2, nblk, w, X, xrb, dx, y, ldy);
        }
    }
#undef Q8_ROW
}

/* ==== Q8_0: transposed tile (prefill) ====================================== */

#define Q8T_KB 32      /* blocks per K chunk */
#define Q8T_NC 64      /* activation rows per chunk */
#define Q8T_PF_TILES 2 /* prefetch the rows of the tile this many ahead */

typedef struct q8t_buf {
    _Alignas(64) uint8_t w[Q8T_KB][8][64]; /* [block][dword j][row]: (w ^ 0x80) bytes */
    _Alignas(64) float wd[Q8T_KB][16];     /* [block][row]: weight scales */
    int32_t xs[Q8T_NC][Q8T_KB];            /* [col][block]: -128 * sum of x */
    float xd[Q8T_NC][Q8T_KB];              /* [col][block]: activation scales */
} q8t_buf;

/* Repacks rows w (nr <= 16 of them, wrb apart), blocks [kb0, kb0 + kcb),
 * prefetching the same blocks of the 16 rows at pf (NULL: none). Missing
 * rows (nr < 16) repeat the last row; their lanes are never stored. */
static void q8t_pack_w(q8t_buf *t, const char *w, size_t wrb, int nr, int64_t kb0, int kcb,
                       const char *pf) {
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    const char *rp[16];
    for (int r = 0; r < 16; r++)
        rp[r] = w + (size_t)(r < nr ? r : nr - 1) * wrb + (size_t)kb0 * sizeof(moe_block_q8_0);

    /* scales: gathered row by row, converted 16 at a time */
    _Alignas(32) uint16_t dh[Q8T_KB][16];
    for (int r = 0; r < 16; r++) {
        const moe_block_q8_0 *rb = (const moe_block_q8_0 *)rp[r];
        for (int b = 0; b < kcb; b++) dh[b][r] = rb[b].d;
    }
    for (int b = 0; b < kcb; b++)
        _mm512_store_ps(t->wd[b], _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)dh[b])));

    /* Prefetch (into L2) the same blocks of the 16 rows at pf: each row's
     * piece is contiguous, so walk it line by line, spread over the blocks. */
    const size_t seg = (size_t)kcb * sizeof(moe_block_q8_0);
    const int seg_lines = (int)((seg + 63) / 64) + 1; /* +1: the piece may straddle */
    const int pf_per_blk = (16 * seg_lines + kcb - 1) / kcb;
    const char *pf_seg = pf ? pf + (size_t)kb0 * sizeof(moe_block_q8_0) : NULL;
    int pf_row = 0, pf_line = 0;

    /* The order of the rows in the two halves of z[i] makes the transpose
     * below land row r in lane r. */
    static const int lo_row[8] = {0, 1, 2, 3, 8, 9, 10, 11};
    for (int b = 0; b < kcb; b++) {
        const size_t boff = (size_t)b * sizeof(moe_block_q8_0);
        if (pf_seg) {
            for (int i = 0; i < pf_per_blk && pf_row < 16; i++) {
                __builtin_prefetch(pf_seg + (size_t)pf_row * wrb + (size_t)pf_line * 64, 0, 2);
                if (++pf_line == seg_lines) pf_line = 0, pf_row++;
            }
        }
        __m512i z[8], p[8], u[8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            const __m256i lo = _mm256_loadu_si256((const __m256i *)(rp[lo_row[i]] + boff + 2));
            const __m256i hi = _mm256_loadu_si256((const __m256i *)(rp[lo_row[i] + 4] + boff + 2));
            z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 8; i += 2) {
            p[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
            p[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
        }
#pragma GCC unroll 2
        for (int i = 0; i < 8; i += 4) {
            u[i + 0] = _mm512_unpacklo_epi64(p[i + 0], p[i + 2]); /* dword 0 (and 4) */
            u[i + 1] = _mm512_unpackhi_epi64(p[i + 0], p[i + 2]); /* dword 1 (and 5) */
            u[i + 2] = _mm512_unpacklo_epi64(p[i + 1], p[i + 3]); /* dword 2 (and 6) */
            u[i + 3] = _mm512_unpackhi_epi64(p[i + 1], p[i + 3]); /* dword 3 (and 7) */
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m512i lo = _mm512_shuffle_i32x4(u[j], u[j + 4], 0x88); /* lanes 0, 2 */
            const __m512i hi = _mm512_shuffle_i32x4(u[j], u[j + 4], 0xdd); /* lanes 1, 3 */
            _mm512_store_si512((__m512i *)t->w[b][j], _mm512_xor_si512(lo, k80));
            _mm512_store_si512((__m512i *)t->w[b][j + 4], _mm512_xor_si512(hi, k80));
        }
    }
}

/* Activation sums and scales for columns [0, nc) of X, blocks [kb0, kb0+kcb). */
static void q8t_pack_x(q8t_buf *t, const char *X, size_t xrb, int nc, int64_t kb0, int kcb) {
    const __m256i ones = _mm256_set1_epi8(1);
    for (int c = 0; c < nc; c++) {
        const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb) + kb0;
        for (int b = 0; b < kcb; b++) {
            const __m256i s8 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones,
                                                   _mm256_loadu_si256((const __m256i *)xb[b].qs));
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
            s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
            t->xs[c][b] = -128 * _mm_cvtsi128_si32(s);
            t->xd[c][b] = moe_f16_to_f32(xb[b].d);
        }
    }
}

/* NC activations (columns c0.., X rows) against the packed 16-row tile. */
AI void q8t_compute(const int NC, const q8t_buf *t, int c0, const char *X, size_t xrb, int64_t kb0,
                    int kcb, int first, __mmask16 m, float *y, int64_t ldy) {
    __m512 acc[8];
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++)
        acc[c] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, y + (int64_t)c * ldy);
    const char *xq[8];
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++)
        xq[c] = X + (size_t)(c0 + c) * xrb + (size_t)kb0 * sizeof(moe_block_q8_0) + 2;

    for (int b = 0; b < kcb; b++) {
        __m512i s[8];
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) s[c] = _mm512_set1_epi32(t->xs[c0 + c][b]);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m512i wj = _mm512_load_si512((const __m512i *)t->w[b][j]);
#pragma GCC unroll 8
            for (int c = 0; c < NC; c++)
                s[c] = _mm512_dpbusd_epi32(s[c], wj, _mm512_set1_epi32(load_i32(xq[c] + 4 * j)));
        }
        const __m512 wd = _mm512_load_ps(t->wd[b]);
#pragma GCC unroll 8
        for (int c = 0; c < NC; c++) {
            const __m512 d = _mm512_mul_ps(wd, _mm512_set1_ps(t->xd[c0 + c][b]));
            acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(_mm512_cvtepi32_ps(s[c]), d));
            xq[c] += sizeof(moe_block_q8_0);
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++) _mm512_mask_storeu_ps(y + (int64_t)c * ldy, m, acc[c]);
}

static void q8_tiled(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                     size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    q8t_buf t;
    const int64_t nblk = k / MOE_QK8_0;
    for (int64_t cs = 0; cs < nb; cs += Q8T_NC) {
        const int nc = (int)(nb - cs < Q8T_NC ? nb - cs : Q8T_NC);
        const char *Xc = X + (size_t)cs * xrb;
        for (int64_t kb0 = 0; kb0 < nblk; kb0 += Q8T_KB) {
            const int kcb = (int)(nblk - kb0 < Q8T_KB ? nblk - kb0 : Q8T_KB);
            q8t_pack_x(&t, Xc, xrb, nc, kb0, kcb);
            for (int64_t rt = r0; rt < r1; rt += 16) {
                const int nr = (int)(r1 - rt < 16 ? r1 - rt : 16);
                const __mmask16 m = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
                const char *pf = rt + 16 * (Q8T_PF_TILES + 1) <= r1
                                     ? W + (size_t)(rt + 16 * Q8T_PF_TILES) * wrb
                                     : NULL;
                q8t_pack_w(&t, W + (size_t)rt * wrb, wrb, nr, kb0, kcb, pf);
                int c = 0;
                float *y = Y + cs * ldy + rt;
                for (; c + 8 <= nc; c += 8)
                    q8t_compute(8, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                switch (nc - c) {
                case 7:
                    q8t_compute(7, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                    break;
                case 6:
                    q8t_compute(6, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                    break;
                case 5:
                    q8t_compute(5, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                    break;
                case 4:
                    q8t_compute(4, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                    break;
                case 3:
                    q8t_compute(3, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                    break;
                case 2:
                    q8t_compute(2, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                    break;
                case 1:
                    q8t_compute(1, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                    break;
                default:
                    break;
                }
            }
        }
    }
}

/* ==== F32 / F16 / BF16 ===================================================== */

/* Kinds of weight (and activation) element; BF16DP is BF16 through
 * vdpbf16ps (AVX512_BF16), the others widen to fp32 and use FMA. */
enum { FK_F32, FK_F16, FK_BF16, FK_BF16DP };

AI __m512 flt_load16(const int kind, const char *p, int64_t i) {
    if (kind == FK_F32) return _mm512_loadu_ps((const float *)p + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i));
    if (kind == FK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* acc += w[i..] * x[i..] over one step: 16 elements, or 32 for BF16DP. */
AI __m512 flt_step(const int kind, __m512 acc, const char *w, const char *x, int64_t i) {
    if (kind == FK_BF16DP)
        return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512((const uint16_t *)w + i),
                                (__m512bh)_mm512_loadu_si512((const uint16_t *)x + i));
    return _mm512_fmadd_ps(flt_load16(kind, w, i), flt_load16(kind, x, i), acc);
}

#define FLT_STEP(kind) ((kind) == FK_BF16DP ? 32 : 16)

/* Few activations (decode): weight rows one after another, so the matrix
 * is read as one sequential stream (several interleaved short row streams
 * defeat the prefetchers: measured 0.6-0.75 of the read bandwidth, against
 * ~0.95 this way). NA accumulators per activation hide the FMA latency. */
AI void flt_row(const int kind, const int C, const int NA, int64_t k, const char *w, const char *X,
                size_t xrb, float *y, int64_t ldy) {
    __m512 acc[3][4];
#pragma GCC unroll 3
    for (int c = 0; c < C; c++)
#pragma GCC unroll 4
        for (int a = 0; a < NA; a++) acc[c][a] = _mm512_setzero_ps();
    const int64_t st = FLT_STEP(kind);
    int64_t i = 0;
    for (; i + NA * st <= k; i += NA * st)
#pragma GCC unroll 4
        for (int a = 0; a < NA; a++)
#pragma GCC unroll 3
            for (int c = 0; c < C; c++)
                acc[c][a] = flt_step(kind, acc[c][a], w, X + (size_t)c * xrb, i + a * st);
    for (; i < k; i += st)
#pragma GCC unroll 3
        for (int c = 0; c < C; c++)
            acc[c][0] = flt_step(kind, acc[c][0], w, X + (size_t)c * xrb, i);
#pragma GCC unroll 3
    for (int c = 0; c < C; c++) {
        __m512 s = acc[c][0];
#pragma GCC unroll 4
        for (int a = 1; a < NA; a++) s = _mm512_add_ps(s, acc[c][a]);
        y[(int64_t)c * ldy] = _mm512_reduce_add_ps(s);
    }
}

#define FLT_ROWS_MAX_NB 3

AI void flt_rows(const int kind, int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                 const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    for (int64_t r = r0; r < r1; r++) {
        const char *w = W + (size_t)r * wrb;
        if (nb == 1)
            flt_row(kind, 1, 4, k, w, X, xrb, Y + r, ldy);
        else if (nb == 2)
            flt_row(kind, 2, 2, k, w, X, xrb, Y + r, ldy);
        else
            flt_row(kind, 3, 2, k, w, X, xrb, Y + r, ldy);
    }
}

/* Many activations (prefill): R = 4 weight rows x C activations, one
 * accumulator per output, so each loaded vector feeds several FMAs. */
AI void flt_tile(const int kind, const int R, const int C, int64_t k, const char *w0, size_t wrb,
                 const char *x0, size_t xrb, float *y, int64_t ldy) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    const int64_t st = FLT_STEP(kind);
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

/* Columns in groups of 4, rows in groups of 4 (then single rows). */
AI void flt_tiles(const int kind, int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                  const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
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

#define FLT_GEMM_FN(name, kind)                                                                    \
    static void name(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,  \
                     size_t xrb, int64_t nb, float *Y, int64_t ldy) {                              \
        if (nb <= FLT_ROWS_MAX_NB)                                                                 \
            flt_rows(kind, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);                                 \
        else                                                                                       \
            flt_tiles(kind, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);                                \
    }

FLT_GEMM_FN(gemm_f32, FK_F32)
FLT_GEMM_FN(gemm_f16, FK_F16)
FLT_GEMM_FN(gemm_bf16w, FK_BF16)
FLT_GEMM_FN(gemm_bf16dp, FK_BF16DP)

/* ==== Table ================================================================ */

static void gemm_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                        const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    switch (wt) {
    case MOE_DTYPE_Q8_0:
        if (nb <= Q8_ROWS_MAX_NB)
            q8_rows(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        else
            q8_tiled(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_F32:
        gemm_f32(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_F16:
        gemm_f16(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_BF16:
        if (moe__cpu_has_avx512bf16)
            gemm_bf16dp(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        else
            gemm_bf16w(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    }
}

static float dot_f32_avx512(int64_t n, const float *a, const float *b) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static void axpy_f32_avx512(int64_t n, float a, const float *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(
            y + i, m,
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

const moe_cpu_kernels moe__kernels_avx512 = {
    .level = MOE_CPU_AVX512,
    .name = "avx512",
    .from_f32 = from_f32_avx512,
    .gemm = gemm_avx512,
    .dot_f32 = dot_f32_avx512,
    .axpy_f32 = axpy_f32_avx512,
};
