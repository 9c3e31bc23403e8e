/*
 * cpu/kernels_avx512.c - AVX-512 (F, BW, VL, DQ, VNNI; BF16 if present).
 *
 * Q8_0 weights, two kernels:
 *   - direct (few activation rows, decode): each weight row is read once per
 *     4 rows x up to 2 activations; per block vpdpbusd on |w| offset by 128
 *     (w ^ 0x80 as unsigned) against signed x, the offset removed by starting
 *     the int32 lanes at -128 * (sum of x over the lane's 4 bytes). Per-lane
 *     int32 sums, the fp32 scale dw*dx and the FMA into 8 float lanes are
 *     those of ggml's x86 ggml_vec_dot_q8_0_q8_0, so a decode matvec matches
 *     llama.cpp bit for bit.
 *   - transposed tile (prefill): 16 weight rows x 16 blocks are repacked on
 *     the stack so one zmm holds 4 bytes of each of 16 rows; activation
 *     bytes are broadcast (embedded {1to16}) and 8 vpdpbusd give the exact
 *     int32 block dot of 16 rows at once, so the float work per block is one
 *     convert, one scale and one add for 16 outputs. The float arithmetic is
 *     the scalar table's (sum += (float)sumi * (dw * dx)), so results equal
 *     it exactly.
 * F32 / F16 / BF16 weights: a 4 x C register tile of fp32 FMAs (vdpbf16ps
 * for BF16 when the CPU has AVX512_BF16), one accumulator per output.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#define AI static inline __attribute__((always_inline))

int moe__pf_dist = 8192; /* TEMP tuning */
/* Activation rows from which the Q8_0 gemm uses the transposed tile. */
#define Q8_TILE_MIN_NB 3

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
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                 _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(64));
    return _mm512_cvtepi32_epi16(r);
}

static void from_f32_avx512(moe_dtype dt, const float *x, void *y, int64_t n) {
    int64_t i = 0;
    switch (dt) {
    case MOE_DTYPE_F32: memcpy(y, x, (size_t)n * sizeof(float)); return;
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
    case MOE_DTYPE_Q8_0: quantize_q8_0_avx512(x, y, n); return;
    }
}

/* ==== Q8_0: direct kernel (decode) ========================================= */

/* Rows w0 + r*wrb (r < R) against activations x0 + c*xrb (c < C). */
AI void q8_direct_tile(const int R, const int C, int64_t nblk, const char *w0, size_t wrb,
                       const char *x0, size_t xrb, float *y, int64_t ldy) {
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();

    const __m256i k80 = _mm256_set1_epi8((char)0x80);
    const __m256i zero = _mm256_setzero_si256();
    /* prefetch the R rows' stretch of memory linearly (see kernels.h) */
    const char *pf = w0 + MOE_PF_DIST;
    for (int64_t b = 0; b < nblk; b++) {
        MOE_PREFETCH_SPAN(pf + b * R * (int64_t)sizeof(moe_block_q8_0), R * sizeof(moe_block_q8_0));
        __m256i xq[2], nc[2];
        __m256 dx[2];
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(x0 + (size_t)c * xrb) + b;
            xq[c] = _mm256_loadu_si256((const __m256i *)xb->qs);
            /* lanes start at -128 * (x[4j] + ... + x[4j+3]) to cancel w's offset */
            nc[c] = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, k80, xq[c]));
            dx[c] = f16_bcast8(&xb->d);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const moe_block_q8_0 *wb = (const moe_block_q8_0 *)(w0 + (size_t)r * wrb) + b;
            const __m256i wq = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)wb->qs), k80);
            const __m256 dw = f16_bcast8(&wb->d);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++) {
                const __m256 q = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(nc[c], wq, xq[c]));
                acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx[c]), q, acc[r][c]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) y[(int64_t)c * ldy + r] = hsum8(acc[r][c]);
}

static void q8_direct(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                      const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    int64_t c = 0;
    for (; c + 2 <= nb; c += 2) {
        const char *x = X + (size_t)c * xrb;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4)
            q8_direct_tile(4, 2, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
        for (; r < r1; r++)
            q8_direct_tile(1, 2, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
    }
    for (; c < nb; c++) {
        const char *x = X + (size_t)c * xrb;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4)
            q8_direct_tile(4, 1, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
        for (; r < r1; r++)
            q8_direct_tile(1, 1, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
    }
}

/* ==== Q8_0: transposed tile (prefill) ====================================== */

#define Q8T_KB 16 /* blocks per K chunk */
#define Q8T_NC 64 /* activation rows per chunk */

typedef struct q8t_buf {
    _Alignas(64) uint8_t w[Q8T_KB][8][64]; /* [block][dword j][row]: (w ^ 0x80) bytes */
    _Alignas(64) float wd[Q8T_KB][16];     /* [block][row]: weight scales */
    int32_t xs[Q8T_NC][Q8T_KB];            /* [col][block]: -128 * sum of x */
    float xd[Q8T_NC][Q8T_KB];              /* [col][block]: activation scales */
} q8t_buf;

/* Repacks rows w (nr <= 16 of them, wrb apart), blocks [kb0, kb0 + kcb). */
static void q8t_pack_w(q8t_buf *t, const char *w, size_t wrb, int nr, int64_t kb0, int kcb) {
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    /* The order of the rows in the two halves of z[i] makes the transpose
     * below land row r in lane r. */
    static const int lo_row[8] = {0, 1, 2, 3, 8, 9, 10, 11};
    const __mmask16 valid = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
    const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                              12, 13, 14, 15),
                                            _mm512_set1_epi32((int)wrb));
    for (int b = 0; b < kcb; b++) {
        const size_t boff = (size_t)(kb0 + b) * sizeof(moe_block_q8_0);
        __m512i z[8];
        for (int i = 0; i < 8; i++) {
            const int ra = lo_row[i], rb = lo_row[i] + 4;
            __m256i a = _mm256_setzero_si256(), hb = _mm256_setzero_si256();
            if (ra < nr) a = _mm256_loadu_si256((const __m256i *)(w + (size_t)ra * wrb + boff + 2));
            if (rb < nr) hb = _mm256_loadu_si256((const __m256i *)(w + (size_t)rb * wrb + boff + 2));
            z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(a), hb, 1);
        }
        __m512i p[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            p[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
            p[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i + 0] = _mm512_unpacklo_epi64(p[i + 0], p[i + 2]); /* dword 0 (and 4) */
            u[i + 1] = _mm512_unpackhi_epi64(p[i + 0], p[i + 2]); /* dword 1 (and 5) */
            u[i + 2] = _mm512_unpacklo_epi64(p[i + 1], p[i + 3]); /* dword 2 (and 6) */
            u[i + 3] = _mm512_unpackhi_epi64(p[i + 1], p[i + 3]); /* dword 3 (and 7) */
        }
        for (int j = 0; j < 4; j++) {
            const __m512i lo = _mm512_shuffle_i32x4(u[j], u[j + 4], 0x88);  /* lanes 0, 2 */
            const __m512i hi = _mm512_shuffle_i32x4(u[j], u[j + 4], 0xdd);  /* lanes 1, 3 */
            _mm512_store_si512((__m512i *)t->w[b][j], _mm512_xor_si512(lo, k80));
            _mm512_store_si512((__m512i *)t->w[b][j + 4], _mm512_xor_si512(hi, k80));
        }
        const __m512i dd = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, gidx,
                                                       (const int *)(w + boff), 1);
        _mm512_store_ps(t->wd[b], _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd)));
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
                q8t_pack_w(&t, W + (size_t)rt * wrb, wrb, nr, kb0, kcb);
                int c = 0;
                float *y = Y + cs * ldy + rt;
                for (; c + 8 <= nc; c += 8)
                    q8t_compute(8, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy);
                switch (nc - c) {
#define Q8T_CASE(n)                                                                        \
    case n: q8t_compute(n, &t, c, Xc, xrb, kb0, kcb, kb0 == 0, m, y + c * ldy, ldy); break;
                    Q8T_CASE(1) Q8T_CASE(2) Q8T_CASE(3) Q8T_CASE(4)
                    Q8T_CASE(5) Q8T_CASE(6) Q8T_CASE(7)
#undef Q8T_CASE
                default: break;
                }
            }
        }
    }
}

/* ==== F32 / F16 / BF16: register tile ====================================== */

enum { FK_F32, FK_F16, FK_BF16 };

AI __m512 flt_load16(const int kind, const char *p, int64_t i) {
    if (kind == FK_F32) return _mm512_loadu_ps((const float *)p + i);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i));
    if (kind == FK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* R rows x C activations, one fp32 accumulator (16 lanes) per output. */
AI void flt_tile(const int kind, const int R, const int C, int64_t k, const char *w0, size_t wrb,
                 const char *x0, size_t xrb, float *y, int64_t ldy) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    const int esz = kind == FK_F32 ? 4 : 2;
    const char *pf = w0 + MOE_PF_DIST;
    for (int64_t i = 0; i < k; i += 16) {
        MOE_PREFETCH_SPAN(pf + i * R * esz, 16 * R * esz);
        __m512 xv[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) xv[c] = flt_load16(kind, x0 + (size_t)c * xrb, i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512 wv = flt_load16(kind, w0 + (size_t)r * wrb, i);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) y[(int64_t)c * ldy + r] = _mm512_reduce_add_ps(acc[r][c]);
}

/* BF16 with vdpbf16ps: 32 elements per step, pairs summed within a lane. */
AI void bf16dp_tile(const int R, const int C, int64_t k, const char *w0, size_t wrb, const char *x0,
                    size_t xrb, float *y, int64_t ldy) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) acc[r][c] = _mm512_setzero_ps();
    const char *pf = w0 + MOE_PF_DIST;
    for (int64_t i = 0; i < k; i += 32) {
        MOE_PREFETCH_SPAN(pf + i * R * 2, 32 * R * 2);
        __m512bh xv[4];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++)
            xv[c] = (__m512bh)_mm512_loadu_si512((const uint16_t *)(x0 + (size_t)c * xrb) + i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512bh wv = (__m512bh)_mm512_loadu_si512((const uint16_t *)(w0 + (size_t)r * wrb) + i);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, xv[c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) y[(int64_t)c * ldy + r] = _mm512_reduce_add_ps(acc[r][c]);
}

#define FLT_TILE_FN(name, kind)                                                                \
    static void name(int R, int C, int64_t k, const char *w, size_t wrb, const char *x,        \
                     size_t xrb, float *y, int64_t ldy) {                                      \
        switch (R * 8 + C) {                                                                   \
        case 4 * 8 + 4: flt_tile(kind, 4, 4, k, w, wrb, x, xrb, y, ldy); break;                \
        case 4 * 8 + 3: flt_tile(kind, 4, 3, k, w, wrb, x, xrb, y, ldy); break;                \
        case 4 * 8 + 2: flt_tile(kind, 4, 2, k, w, wrb, x, xrb, y, ldy); break;                \
        case 4 * 8 + 1: flt_tile(kind, 4, 1, k, w, wrb, x, xrb, y, ldy); break;                \
        case 1 * 8 + 4: flt_tile(kind, 1, 4, k, w, wrb, x, xrb, y, ldy); break;                \
        case 1 * 8 + 3: flt_tile(kind, 1, 3, k, w, wrb, x, xrb, y, ldy); break;                \
        case 1 * 8 + 2: flt_tile(kind, 1, 2, k, w, wrb, x, xrb, y, ldy); break;                \
        default: flt_tile(kind, 1, 1, k, w, wrb, x, xrb, y, ldy); break;                       \
        }                                                                                      \
    }

FLT_TILE_FN(tile_f32, FK_F32)
FLT_TILE_FN(tile_f16, FK_F16)
FLT_TILE_FN(tile_bf16w, FK_BF16)

static void tile_bf16dp(int R, int C, int64_t k, const char *w, size_t wrb, const char *x,
                        size_t xrb, float *y, int64_t ldy) {
    switch (R * 8 + C) {
    case 4 * 8 + 4: bf16dp_tile(4, 4, k, w, wrb, x, xrb, y, ldy); break;
    case 4 * 8 + 3: bf16dp_tile(4, 3, k, w, wrb, x, xrb, y, ldy); break;
    case 4 * 8 + 2: bf16dp_tile(4, 2, k, w, wrb, x, xrb, y, ldy); break;
    case 4 * 8 + 1: bf16dp_tile(4, 1, k, w, wrb, x, xrb, y, ldy); break;
    case 1 * 8 + 4: bf16dp_tile(1, 4, k, w, wrb, x, xrb, y, ldy); break;
    case 1 * 8 + 3: bf16dp_tile(1, 3, k, w, wrb, x, xrb, y, ldy); break;
    case 1 * 8 + 2: bf16dp_tile(1, 2, k, w, wrb, x, xrb, y, ldy); break;
    default: bf16dp_tile(1, 1, k, w, wrb, x, xrb, y, ldy); break;
    }
}

typedef void (*tile_fn)(int R, int C, int64_t k, const char *w, size_t wrb, const char *x,
                        size_t xrb, float *y, int64_t ldy);

/* Columns in groups of 4, rows in groups of 4 (then single rows). */
static void flt_gemm(tile_fn tile, int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                     const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    for (int64_t c = 0; c < nb; c += 4) {
        const int C = (int)(nb - c < 4 ? nb - c : 4);
        const char *x = X + (size_t)c * xrb;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) tile(4, C, k, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
        for (; r < r1; r++) tile(1, C, k, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
    }
}

/* ==== Table ================================================================ */

static void gemm_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                        const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    switch (wt) {
    case MOE_DTYPE_Q8_0:
        if (nb >= Q8_TILE_MIN_NB)
            q8_tiled(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        else
            q8_direct(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_F32: flt_gemm(tile_f32, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy); return;
    case MOE_DTYPE_F16: flt_gemm(tile_f16, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy); return;
    case MOE_DTYPE_BF16:
        flt_gemm(moe__cpu_has_avx512bf16 ? tile_bf16dp : tile_bf16w, k, W, wrb, r0, r1, X, xrb, nb,
                 Y, ldy);
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
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                              _mm512_maskz_loadu_ps(m, y + i)));
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
