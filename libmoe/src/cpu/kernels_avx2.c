/*
 * cpu/kernels_avx2.c - AVX2 + FMA + F16C.
 *
 * Reproduces llama.cpp's AVX2 CPU build (its haswell variant) bit for bit,
 * as kernels_avx512.c does the AVX-512 one.
 * Q8_0: ggml's x86 arithmetic (|w| times x carrying w's sign with
 * vpmaddubsw, pairs summed by vpmaddwd into 8 int32 lanes, converted and
 * FMA'd with dw*dx into 8 float lanes, summed as hsum_float_8); the same
 * numbers as the AVX-512 kernels. For nb <= 2 the weight rows stream in
 * sequence (see kernels_avx512.c); beyond, a 4-row x 2-activation register
 * tile reuses each loaded block. The fast numerics (q8_fast.h): 8 weight
 * rows transposed into the lanes of int16 vpmaddwd.
 * F32 / F16 / BF16: ggml's AVX2 vec_dot at nb = 1; tinyBLAS arithmetic
 * (one accumulator per output) for nb >= 2, as 4 x 3 tiles from nb = 4.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"

#define AI static inline __attribute__((always_inline))

AI float hsum8(__m256 v) { /* as ggml's hsum_float_8 */
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

AI float f16_to_f32(uint16_t h) {
    return _cvtsh_ss(h);
}

/* ==== Conversions ========================================================== */

static void quantize_q8_0_avx2(const float *x, moe_block_q8_0 *y, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < n / MOE_QK8_0; b++, x += MOE_QK8_0) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v2));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v3));
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = moe_f32_to_f16(d);
        const __m256 mul = _mm256_set1_ps(id);
#define RND (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* a constant for clang */
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, mul), RND));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, mul), RND));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, mul), RND));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, mul), RND));
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_packs_epi16(i0, i2);
        _mm256_storeu_si256((__m256i *)y[b].qs, _mm256_permutevar8x32_epi32(i0, perm));
    }
}

/* f32 -> bf16, round to nearest even, NaN kept quiet (as moe_f32_to_bf16). */
AI __m128i bf16_from_f32x8(__m256 v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    /* NaN: |u| > 0x7f800000 (signed compare is fine on the masked value) */
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    const __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
    r = _mm256_blendv_epi8(r, qn, nan);
    /* 8 x u32 (each < 65536) -> 8 x u16 */
    r = _mm256_packus_epi32(r, r);
    r = _mm256_permute4x64_epi64(r, 0x08);
    return _mm256_castsi256_si128(r);
}

static void from_f32_avx2(moe_dtype dt, const float *x, void *y, int64_t n) {
    int64_t i = 0;
    switch (dt) {
    case MOE_DTYPE_F32:
        memcpy(y, x, (size_t)n * sizeof(float));
        return;
    case MOE_DTYPE_F16: {
        uint16_t *o = y;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(o + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
        for (; i < n; i++) o[i] = moe_f32_to_f16(x[i]);
        return;
    }
    case MOE_DTYPE_BF16: {
        uint16_t *o = y;
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(o + i), bf16_from_f32x8(_mm256_loadu_ps(x + i)));
        for (; i < n; i++) o[i] = moe_f32_to_bf16(x[i]);
        return;
    }
    case MOE_DTYPE_Q8_0:
        quantize_q8_0_avx2(x, y, n);
        return;
    case MOE_DTYPE_Q8_K:
        moe__quant_q8_K_avx2(x, y, n);
        return;
    default: /* Q8_1: the same code at every level */
        moe__quant_act_from_f32(dt, x, y, n);
        return;
    }
}

/* ==== Q8_0 ================================================================= */

/* Per block: vpmaddubsw of |w| with x carrying w's sign, pairs summed by
 * vpmaddwd into 8 int32 lanes, acc = fma(dw * dx, (float)lanes, acc) in 8
 * float lanes, summed as hsum_float_8: ggml's x86 vec_dot_q8_0_q8_0. */
AI __m256 q8_lanes(__m256i aw, __m256i wq, __m256i xq) {
    const __m256i p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xq, wq));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), p16));
}

/* Few activations (decode): R weight rows (R * C <= 2), each read as one
 * sequential stream; at nb = 1 two rows from the two halves of the range run
 * together so two FMA chains are in flight (see kernels_avx512.c). */
AI void q8_rows_tile(const int R, const int C, int64_t nblk, const moe_block_q8_0 *const *w,
                     const char *X, size_t xrb, float *const *y, int64_t ldy) {
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
        float dx[2];
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb) + b;
            xq[c] = _mm256_loadu_si256((const __m256i *)xb->qs);
            dx[c] = f16_to_f32(xb->d);
        }
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            const __m256i wq = _mm256_loadu_si256((const __m256i *)w[r][b].qs);
            const __m256i aw = _mm256_sign_epi8(wq, wq);
            const float dw = f16_to_f32(w[r][b].d);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++)
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[c]), q8_lanes(aw, wq, xq[c]), acc[r][c]);
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) y[r][(int64_t)c * ldy] = hsum8(acc[r][c]);
}

/* Many activations (prefill): 4 weight rows x 2 activations per tile. */
AI void q8_tile(const int R, const int C, int64_t nblk, const char *w0, size_t wrb, const char *x0,
                size_t xrb, float *y, int64_t ldy) {
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        __m256i xq[2];
        float dx[2];
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(x0 + (size_t)c * xrb) + b;
            xq[c] = _mm256_loadu_si256((const __m256i *)xb->qs);
            dx[c] = f16_to_f32(xb->d);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const moe_block_q8_0 *wb = (const moe_block_q8_0 *)(w0 + (size_t)r * wrb) + b;
            const __m256i wq = _mm256_loadu_si256((const __m256i *)wb->qs);
            const __m256i aw = _mm256_sign_epi8(wq, wq);
            const float dw = f16_to_f32(wb->d);
#pragma GCC unroll 2
            for (int c = 0; c < C; c++)
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_set1_ps(dw * dx[c]), q8_lanes(aw, wq, xq[c]), acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int c = 0; c < C; c++) y[(int64_t)c * ldy + r] = hsum8(acc[r][c]);
}

static void q8_gemm(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                    size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
#define Q8_ROW(r) ((const moe_block_q8_0 *)(W + (size_t)(r)*wrb))
    if (nb == 1) {
        const int64_t h = (r1 - r0) / 2;
        for (int64_t i = 0; i < h; i++) {
            const moe_block_q8_0 *w[2] = {Q8_ROW(r0 + i), Q8_ROW(r0 + h + i)};
            float *y[2] = {Y + r0 + i, Y + r0 + h + i};
            q8_rows_tile(2, 1, nblk, w, X, xrb, y, ldy);
        }
        if (2 * h < r1 - r0) {
            const moe_block_q8_0 *w[1] = {Q8_ROW(r1 - 1)};
            float *y[1] = {Y + r1 - 1};
            q8_rows_tile(1, 1, nblk, w, X, xrb, y, ldy);
        }
        return;
    }
    if (nb == 2) {
        for (int64_t r = r0; r < r1; r++) {
            const moe_block_q8_0 *w[1] = {Q8_ROW(r)};
            float *y[1] = {Y + r};
            q8_rows_tile(1, 2, nblk, w, X, xrb, y, ldy);
        }
        return;
    }
#undef Q8_ROW
    int64_t c = 0;
    for (; c + 2 <= nb; c += 2) {
        const char *x = X + (size_t)c * xrb;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4)
            q8_tile(4, 2, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
        for (; r < r1; r++)
            q8_tile(1, 2, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
    }
    for (; c < nb; c++) {
        const char *x = X + (size_t)c * xrb;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4)
            q8_tile(4, 1, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
        for (; r < r1; r++)
            q8_tile(1, 1, nblk, W + (size_t)r * wrb, wrb, x, xrb, Y + c * ldy + r, ldy);
    }
}

/* ==== Q8_0: the fast numerics ============================================== */

/* The fast numerics (q8_fast.h) with vpmaddwd on int16: 16 products per
 * instruction, exact for every int8 input (vpmaddubsw's |w| * sign(x, w)
 * above gets w = x = -128 wrong; of w or x offset to unsigned, it saturates).
 * 8 weight rows are transposed into the 8 int32 lanes of a vector, so each
 * lane sums one row and no lanes are summed across: for dword u of a block
 * (bytes 4u..4u+3) the lane of row i holds the int16 pairs 256 * (w[4u],
 * w[4u+2]) ("lo": the bytes shifted up) and 256 * (w[4u+1], w[4u+3]) ("hi":
 * the odd bytes masked), and the activation's matching pairs, sign-extended,
 * are broadcast. 16 vpmaddwd and adds give s = 256 * each row's block sum,
 * exactly (|s| <= 2^27), then acc = fma(dw * (dx / 256), (float)s, acc) in
 * block order: dx / 256, the product of the scales and the conversion are
 * exact, so the fma multiplies the same two reals as q8_fast.h's and rounds
 * once: the same bits. Up to 4 activations share each loaded weight
 * vector. Per K chunk, the activations are repacked once for all the rows,
 * and each 8 rows once for all the activations, the next 8 while the first
 * activations use these; the running sums wait in Y between K chunks. */

#define Q8F_KB 8  /* blocks per K chunk */
#define Q8F_NC 64 /* activation rows per chunk */
#define Q8F_PF 2  /* prefetch the weight rows this many groups of 8 ahead */

typedef struct q8f_w {
    _Alignas(32) int32_t q[Q8F_KB][2][8][8]; /* [block][lo, hi][dword u][row]: int16 pairs */
    _Alignas(32) float d[Q8F_KB][8];         /* [block][row]: weight scales */
} q8f_w;

typedef struct q8f_buf {
    q8f_w w[2];                      /* 8 weight rows, and the next 8 */
    int32_t x[Q8F_NC][Q8F_KB][2][8]; /* [col][block][lo, hi][dword u]: int16 pairs */
    float xd[Q8F_NC][Q8F_KB];        /* [col][block]: activation scales / 256 */
} q8f_buf;

/* Activations [0, nc) of X, blocks [kb0, kb0 + kcb). */
AI void q8f_pack_x(q8f_buf *t, const char *X, size_t xrb, int nc, int64_t kb0, int kcb) {
    for (int c = 0; c < nc; c++) {
        const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb) + kb0;
        for (int b = 0; b < kcb; b++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)xb[b].qs);
            _mm256_storeu_si256((__m256i *)t->x[c][b][0],
                                _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8));
            _mm256_storeu_si256((__m256i *)t->x[c][b][1], _mm256_srai_epi16(v, 8));
            t->xd[c][b] = f16_to_f32(xb[b].d) * 0x1p-8f;
        }
    }
}

/* Block b of the weight rows at p[0..7]: an 8 x 8 transpose of dwords, the
 * 16-byte halves of rows i and i + 4 sharing a vector. */
AI void q8f_pack_w(q8f_w *w, const moe_block_q8_0 *const *p, int b) {
    __m256i v[8], s[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        const __m128i *a = (const __m128i *)p[i][b].qs, *c = (const __m128i *)p[i + 4][b].qs;
        v[i] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(a)),
                                       _mm_loadu_si128(c), 1); /* dwords 0-3 */
        v[i + 4] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(a + 1)),
                                           _mm_loadu_si128(c + 1), 1); /* dwords 4-7 */
    }
    _Alignas(16) uint16_t dh[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) dh[i] = p[i][b].d;
    _mm256_store_ps(w->d[b], _mm256_cvtph_ps(_mm_load_si128((const __m128i *)dh)));
#pragma GCC unroll 4
    for (int i = 0; i < 8; i += 2) {
        s[i] = _mm256_unpacklo_epi32(v[i], v[i + 1]);
        s[i + 1] = _mm256_unpackhi_epi32(v[i], v[i + 1]);
    }
    const __m256i odd = _mm256_set1_epi16((short)0xff00);
#pragma GCC unroll 2
    for (int h = 0; h < 8; h += 4) {
        const __m256i d[4] = {
            _mm256_unpacklo_epi64(s[h], s[h + 2]), _mm256_unpackhi_epi64(s[h], s[h + 2]),
            _mm256_unpacklo_epi64(s[h + 1], s[h + 3]), _mm256_unpackhi_epi64(s[h + 1], s[h + 3])};
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) {
            _mm256_store_si256((__m256i *)w->q[b][0][h + u], _mm256_slli_epi16(d[u], 8));
            _mm256_store_si256((__m256i *)w->q[b][1][h + u], _mm256_and_si256(d[u], odd));
        }
    }
}

/* Keeps v in a register here: GCC otherwise reassociates the chains of
 * integer adds into one tree over all the products of a block and spills
 * them (a third slower). */
#define Q8F_KEEP(v) __asm__("" : "+x"(v))

/* C (1 to 4) activations from column c of the buffer through the kcb blocks
 * of w, whose first nr rows are valid; the running sums come from y (unless
 * first) and go back there. With next, block b of the rows at next is
 * repacked into wn after block b here. */
AI void q8f_compute(const int C, const q8f_buf *t, const q8f_w *w, int c, int kcb, float *y,
                    int64_t ldy, int nr, int first, const moe_block_q8_0 *const *next, q8f_w *wn) {
    const __m256i mask =
        _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 acc[4];
#pragma GCC unroll 4
    for (int j = 0; j < C; j++)
        acc[j] = first     ? _mm256_setzero_ps()
                 : nr == 8 ? _mm256_loadu_ps(y + j * ldy)
                           : _mm256_maskload_ps(y + j * ldy, mask);
    for (int b = 0; b < kcb; b++) {
        __m256i s[4];
#pragma GCC unroll 4
        for (int j = 0; j < C; j++) s[j] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            const __m256i lo = _mm256_load_si256((const __m256i *)w->q[b][0][u]);
            const __m256i hi = _mm256_load_si256((const __m256i *)w->q[b][1][u]);
#pragma GCC unroll 4
            for (int j = 0; j < C; j++) {
                s[j] = _mm256_add_epi32(
                    s[j], _mm256_madd_epi16(lo, _mm256_set1_epi32(t->x[c + j][b][0][u])));
                Q8F_KEEP(s[j]);
                s[j] = _mm256_add_epi32(
                    s[j], _mm256_madd_epi16(hi, _mm256_set1_epi32(t->x[c + j][b][1][u])));
                Q8F_KEEP(s[j]);
            }
        }
        const __m256 wd = _mm256_load_ps(w->d[b]);
#pragma GCC unroll 4
        for (int j = 0; j < C; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(wd, _mm256_set1_ps(t->xd[c + j][b])),
                                     _mm256_cvtepi32_ps(s[j]), acc[j]);
        if (next) q8f_pack_w(wn, next, b);
    }
#pragma GCC unroll 4
    for (int j = 0; j < C; j++) {
        if (nr == 8)
            _mm256_storeu_ps(y + j * ldy, acc[j]);
        else
            _mm256_maskstore_ps(y + j * ldy, mask, acc[j]);
    }
}

/* Blocks kb0.. of the 8 weight rows from r (rows from r1 on repeat the last
 * one), the same blocks Q8F_PF groups on prefetched into L2. */
AI void q8f_rows(const moe_block_q8_0 **p, const char *W, size_t wrb, int64_t r, int64_t r1,
                 int64_t kb0, int kcb) {
    for (int i = 0; i < 8; i++)
        p[i] = (const moe_block_q8_0 *)(W + (size_t)(r + i < r1 ? r + i : r1 - 1) * wrb) + kb0;
    if (r + 8 * (Q8F_PF + 1) <= r1) {
        const char *pf = (const char *)p[0] + (size_t)(8 * Q8F_PF) * wrb;
        const size_t seg = (size_t)kcb * sizeof(moe_block_q8_0) + 63;
        for (int i = 0; i < 8; i++)
            for (size_t o = 0; o < seg; o += 64) __builtin_prefetch(pf + i * wrb + o, 0, 2);
    }
}

static void q8_fast_gemm(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                         const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    if (nblk == 0) {
        for (int64_t c = 0; c < nb; c++)
            for (int64_t r = r0; r < r1; r++) Y[c * ldy + r] = 0.0f;
        return;
    }
    q8f_buf t;
    for (int64_t cs = 0; cs < nb; cs += Q8F_NC) {
        const int nc = (int)(nb - cs < Q8F_NC ? nb - cs : Q8F_NC);
        for (int64_t kb0 = 0; kb0 < nblk; kb0 += Q8F_KB) {
            const int kcb = (int)(nblk - kb0 < Q8F_KB ? nblk - kb0 : Q8F_KB);
            const int first = kb0 == 0;
            q8f_pack_x(&t, X + (size_t)cs * xrb, xrb, nc, kb0, kcb);
            const moe_block_q8_0 *p[8], *pn[8];
            q8f_rows(p, W, wrb, r0, r1, kb0, kcb);
            for (int b = 0; b < kcb; b++) q8f_pack_w(&t.w[0], p, b);
            int cur = 0;
            for (int64_t r = r0; r < r1; r += 8, cur ^= 1) {
                const int nr = (int)(r1 - r < 8 ? r1 - r : 8);
                const moe_block_q8_0 *const *next = NULL; /* repacked with the first columns */
                if (r + 8 < r1) {
                    q8f_rows(pn, W, wrb, r + 8, r1, kb0, kcb);
                    next = pn;
                }
                const q8f_w *w = &t.w[cur];
                q8f_w *wn = &t.w[cur ^ 1];
                float *y = Y + cs * ldy + r;
                int c = 0;
                for (; c + 4 <= nc; c += 4, next = NULL)
                    q8f_compute(4, &t, w, c, kcb, y + c * ldy, ldy, nr, first, next, wn);
                switch (nc - c) {
                case 3:
                    q8f_compute(3, &t, w, c, kcb, y + c * ldy, ldy, nr, first, next, wn);
                    break;
                case 2:
                    q8f_compute(2, &t, w, c, kcb, y + c * ldy, ldy, nr, first, next, wn);
                    break;
                case 1:
                    q8f_compute(1, &t, w, c, kcb, y + c * ldy, ldy, nr, first, next, wn);
                    break;
                }
            }
        }
    }
}

/* ==== F32 / F16 / BF16 ===================================================== */

enum { FK_F32, FK_F16, FK_BF16 };

AI __m256 flt_load8(const int kind, const char *p, int64_t i) {
    if (kind == FK_F32) return _mm256_loadu_ps((const float *)p + i);
    const __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (kind == FK_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float flt_scalar(const int kind, const char *p, int64_t i) {
    if (kind == FK_F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    if (kind == FK_F16) return _cvtsh_ss(h);
    return moe_bf16_to_f32(h);
}

/* ggml's GGML_F32x8_REDUCE tail: lo + hi, then two horizontal adds. */
AI float hadd8(__m256 v) {
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

/* One activation row (decode), llama.cpp's path for it: ggml's AVX2
 * vec_dot_{f32,f16,bf16}, step for step (checked bit for bit against the
 * prebuilt haswell build):
 *   f32/f16: 4 accumulators of 8 over steps of 32, (a0 + a2) + (a1 + a3),
 *            hadd8; the tail added one product at a time (double for f16);
 *   bf16:    4 accumulators of 8 over steps of 32, (c1 + c3) + (c2 + c4),
 *            hsum_float_8, in double, then the tail.
 * Rows are read one after another: one sequential memory stream. */
AI float vdot_row(const int kind, int64_t k, const char *w, const char *x) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t np = k & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32) {
        a0 = _mm256_fmadd_ps(flt_load8(kind, w, i), flt_load8(kind, x, i), a0);
        a1 = _mm256_fmadd_ps(flt_load8(kind, w, i + 8), flt_load8(kind, x, i + 8), a1);
        a2 = _mm256_fmadd_ps(flt_load8(kind, w, i + 16), flt_load8(kind, x, i + 16), a2);
        a3 = _mm256_fmadd_ps(flt_load8(kind, w, i + 24), flt_load8(kind, x, i + 24), a3);
    }
    const __m256 v = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    if (kind == FK_F32) {
        float s = hadd8(v);
        /* ggml's tail loop as its compiler built it: products rounded over
         * whole vectors of 4 (an in-order vectorised reduction), fused into
         * the sum (FMA) for the rest */
        const int64_t nv = np + ((k - np) & ~(int64_t)3);
        for (int64_t i = np; i < nv; i++) s += flt_scalar(kind, w, i) * flt_scalar(kind, x, i);
        for (int64_t i = nv; i < k; i++)
            s = fmaf(flt_scalar(kind, w, i), flt_scalar(kind, x, i), s);
        return s;
    }
    double s = kind == FK_F16 ? (double)hadd8(v) : (double)hsum8(v);
    for (int64_t i = np; i < k; i++) s += (double)(flt_scalar(kind, w, i) * flt_scalar(kind, x, i));
    return (float)s;
}

/* Two or more activation rows (prefill), llama.cpp's path for them:
 * llamafile's tinyBLAS, one accumulator per output over steps of 8,
 * acc = fma(w, x, acc), summed as hsum_float_8. R = 4 weight rows x C
 * activations share each loaded vector. */
AI void flt_tile(const int kind, const int R, const int C, int64_t k, const char *w0, size_t wrb,
                 const char *x0, size_t xrb, float *y, int64_t ldy) {
    __m256 acc[4][3];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < k; i += 8) {
        __m256 xv[3];
#pragma GCC unroll 3
        for (int c = 0; c < C; c++) xv[c] = flt_load8(kind, x0 + (size_t)c * xrb, i);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256 wv = flt_load8(kind, w0 + (size_t)r * wrb, i);
#pragma GCC unroll 3
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
        for (int c = 0; c < C; c++) y[(int64_t)c * ldy + r] = hsum8(acc[r][c]);
}

/* nb == 1: vec_dot, rows in sequence; 2 <= nb <= 3: tinyBLAS arithmetic one
 * weight row at a time (one memory stream); nb >= 4: 4 x 3 tiles. */
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
    for (int64_t c = 0; c < nb; c += 3) {
        const int C = (int)(nb - c < 3 ? nb - c : 3);
        const char *x = X + (size_t)c * xrb;
        float *y = Y + c * ldy;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            const char *w = W + (size_t)r * wrb;
            switch (C) {
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

static void gemm_f32(int batch, int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                     const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    batch ? flt_gemm(FK_F32, 1, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy)
          : flt_gemm(FK_F32, 0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
}
static void gemm_f16(int batch, int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                     const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    batch ? flt_gemm(FK_F16, 1, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy)
          : flt_gemm(FK_F16, 0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
}
static void gemm_bf16(int batch, int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                      const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    batch ? flt_gemm(FK_BF16, 1, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy)
          : flt_gemm(FK_BF16, 0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
}

/* ==== Table ================================================================ */

static void gemm_avx2(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                      int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    switch (wt) {
    case MOE_DTYPE_Q8_0:
        q8_gemm(k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_F32:
        gemm_f32(0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_F16:
        gemm_f16(0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    case MOE_DTYPE_BF16:
        gemm_bf16(0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    default: /* the other quantised types: quant_avx2.c */
        moe__quant_gemm_avx2(wt, k, W, r0, r1, X, nb, Y, ldy);
        return;
    }
}

/* gemm with tinyBLAS's arithmetic for one float row too (moe/ops.h). */
static void gemm_batch_avx2(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                            const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    if (wt == MOE_DTYPE_F32)
        gemm_f32(1, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
    else if (wt == MOE_DTYPE_F16)
        gemm_f16(1, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
    else if (wt == MOE_DTYPE_BF16)
        gemm_bf16(1, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
    else
        gemm_avx2(wt, k, W, r0, r1, X, nb, Y, ldy);
}

/* The fast numerics (q8_fast.h) for Q8_0 weights: q8_fast_gemm above,
 * identical bit for bit to the other levels'. */
static void gemm_fast_avx2(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                           const void *X, int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    if (wt == MOE_DTYPE_Q8_0) {
        const size_t rb = moe_dtype_row_bytes(wt, k); /* weights and activations alike */
        q8_fast_gemm(k, W, rb, r0, r1, X, rb, nb, Y, ldy);
    } else
        gemm_avx2(wt, k, W, r0, r1, X, nb, Y, ldy);
}

/* ==== Row-op helpers ======================================================= */

/* ggml's AVX2 exp (ggml_v_expf; not the same operations as the AVX-512 one:
 * the polynomial leaves out the 1 and the scale is applied as fma(j, k, k)),
 * operation for operation. */
AI __m256 v_expf8(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k =
        _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
    const __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 c = _mm256_cmp_ps(an, _mm256_set1_ps(126), _CMP_GT_OQ);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
            _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(c)) return _mm256_fmadd_ps(j, k, k);
    const __m256i g =
        _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                         _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 d = _mm256_cmp_ps(an, _mm256_set1_ps(192), _CMP_GT_OQ);
    return _mm256_or_ps(
        _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(
            d, _mm256_or_ps(_mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                            _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)))));
}

/* ggml_vec_swiglu_f32 (AVX2): v_expf8 on whole groups of 8, expf on the tail. */
void moe__swiglu_avx2(const float *g, const float *u, float *y, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, v_expf8(_mm256_sub_ps(zero, x))));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ggml_vec_soft_max_f32 (AVX2): groups of 8 through v_expf8, each summed as
 * hsum_float_8 in float, then in double; the tail with expf. */
double moe__softmax_exp_avx2(float *x, int64_t n, float max) {
    const __m256 vmax = _mm256_set1_ps(max);
    double sum = 0.0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = v_expf8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(x + i, v);
        sum += (double)hsum8(v);
    }
    for (; i < n; i++) {
        const float e = expf(x[i] - max);
        x[i] = e;
        sum += (double)e;
    }
    return sum;
}

/* ggml_vec_dot_f32 (AVX2), as vdot_row. */
static float dot_f32_avx2(int64_t n, const float *a, const float *b) {
    return vdot_row(FK_F32, n, (const char *)a, (const char *)b);
}

/* ggml_vec_mad_f32 (AVX2): y = fma(x, a, y) over the first n & ~31
 * elements, then y += x * a one at a time. */
static void axpy_f32_avx2(int64_t n, float a, const float *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    const int64_t np = n & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(_mm256_loadu_ps(x + i), va, _mm256_loadu_ps(y + i)));
    for (int64_t i = np; i < n; i++) y[i] += x[i] * a;
}

MOE_ATTN_LOOPS(avx2)

/* ggml_vec_dot_f16 (AVX2), as vdot_row. */
static float dot_f16_avx2(int64_t n, const uint16_t *a, const uint16_t *b) {
    return vdot_row(FK_F16, n, (const char *)a, (const char *)b);
}

static void axpy_f16_avx2(int64_t n, float a, const uint16_t *x, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                         va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * f16_to_f32(x[i]);
}

MOE_ATTN_F16_LOOPS(avx2)

/* moe_int8_peak's loop at this level (no VNNI): n steps of 8 independent
 * VPMADDUBSW + VPMADDWD + VPADDD (32 int8 products each), as the AVX2 int8
 * tiles multiply; returns the products done. */
uint64_t moe__int8_loop_avx2(int64_t n) {
    __m256i acc[8];
    const __m256i a = _mm256_set1_epi8(1), b = _mm256_set1_epi8(2), one = _mm256_set1_epi16(1);
    for (int u = 0; u < 8; u++) acc[u] = _mm256_setzero_si256();
    for (int64_t i = 0; i < n; i++)
#pragma GCC unroll 8
        for (int u = 0; u < 8; u++) {
            __m256i x = a;
            __asm__ volatile("" : "+x"(x)); /* not hoisted out of the loop */
            acc[u] = _mm256_add_epi32(acc[u], _mm256_madd_epi16(_mm256_maddubs_epi16(x, b), one));
        }
    __m256i t = acc[0];
    for (int u = 1; u < 8; u++) t = _mm256_add_epi32(t, acc[u]);
    volatile int sink = _mm256_extract_epi32(t, 0);
    (void)sink;
    return (uint64_t)n * 8 * 32;
}

const moe_cpu_kernels moe__kernels_avx2 = {
    .level = MOE_CPU_AVX2,
    .name = "avx2",
    .from_f32 = from_f32_avx2,
    .gemm = gemm_avx2,
    .gemm_fast = gemm_fast_avx2,
    .gemm_batch = gemm_batch_avx2,
    .dot_f32 = dot_f32_avx2,
    .axpy_f32 = axpy_f32_avx2,
    .dots_f32 = dots_f32_avx2,
    .wsum_f32 = wsum_f32_avx2,
    .dots_f16 = dots_f16_avx2,
    .wsum_f16 = wsum_f16_avx2,
};
