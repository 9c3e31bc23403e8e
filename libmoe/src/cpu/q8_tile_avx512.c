/*
 * cpu/q8_tile_avx512.c - the Q8_0 int8 tiles at the AVX-512 level (VNNI):
 * the transposed tile of 16 weight rows on the stack (prefill, exact
 * numerics, also for Q5_0, Q4_1 and Q5_1 batches on their levels), the fast
 * tile (one exact int32 per row and block), and the packed layout's kernels
 * (moe_q8p_pack: the same tiles read in place, and an exact one-tile kernel
 * for decode rows). Each gives the bits of kernels_avx512.c's rows kernels
 * (exact) or of q8_fast.h's arithmetic (fast).
 *
 * Stack use: up to ~45 KB (q8t_buf and a chunk of converted blocks).
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "q8_vnni.h"

/* ==== Q8_0: transposed tile (prefill) ====================================== */

/* 16 weight rows x Q8T_KB blocks are repacked on the stack so that one zmm
 * holds the same 4-byte group j of a block for 16 rows, offset to unsigned
 * (w ^ 0x80). For an activation block, vpdpbusd of that vector with the
 * activation's group j broadcast ({1to16}), started at -128 * (sum of the
 * group's 4 activation bytes) to cancel the offset, gives exactly lane j of
 * ggml's per-block int32 lanes for 16 rows at once. Each of the 8 lanes is
 * then accumulated as ggml does, acc_j = fma(dw * dx, (float)lane_j, acc_j),
 * and the 8 accumulators are summed in hsum_float_8's order at the end, so
 * the result is ggml's vec_dot_q8_0_q8_0 (and llamafile's Q8_0 sgemm) bit
 * for bit, like the rows kernel. */

#define Q8T_KB 16      /* blocks per K chunk */
#define Q8T_NC 32      /* activation rows per chunk */
#define Q8T_PF_TILES 2 /* prefetch the rows of the tile this many ahead */

typedef struct q8t_buf {
    _Alignas(64) uint8_t w[Q8T_KB][8][64];      /* [block][group j][row]: (w ^ 0x80) bytes */
    _Alignas(64) float wd[Q8T_KB][16];          /* [block][row]: weight scales */
    _Alignas(64) int32_t xc[Q8T_NC][Q8T_KB][8]; /* [col][block][j]: -128 * sum of group j */
    float xd[Q8T_NC][Q8T_KB];                   /* [col][block]: activation scales */
    int32_t xs[Q8T_NC][Q8T_KB];                 /* [col][block]: -128 * sum of the block */
    _Alignas(64) float acc[Q8T_NC][8][16];      /* [col][lane j][row]: running sums */
    /* Q4_1 and Q5_1 (Q8_1 activations): the minimums' term, m_w x s_x summed
     * apart in block order and added after the lanes, as dot_q4_1 */
    _Alignas(64) float wm[Q8T_KB][16]; /* [block][row]: weight minimums */
    float xm[Q8T_NC][Q8T_KB];          /* [col][block]: activation block sums s */
    _Alignas(64) float sm[Q8T_NC][16]; /* [col][row]: running sums of m_w x s_x */
} q8t_buf;

/* The weight types the tile runs: Q8_0 itself, and the levels of Q5_0,
 * Q4_1 and Q5_1 (stack tile only, exact arithmetic). */
enum { WK_Q8 = 0, WK_Q50, WK_Q41, WK_Q51 };

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
            u[i + 0] = _mm512_unpacklo_epi64(p[i + 0], p[i + 2]); /* group 0 (and 4) */
            u[i + 1] = _mm512_unpackhi_epi64(p[i + 0], p[i + 2]); /* group 1 (and 5) */
            u[i + 2] = _mm512_unpacklo_epi64(p[i + 1], p[i + 3]); /* group 2 (and 6) */
            u[i + 3] = _mm512_unpackhi_epi64(p[i + 1], p[i + 3]); /* group 3 (and 7) */
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

/* Q5_0 rows into the same stack tile: each row's blocks [kb0, kb0 + kcb)
 * as Q8_0 blocks of its levels (the nibble and fifth bit, minus 16; the
 * same scale), then q8t_pack_w's transpose. The Q8_0 tile's exact
 * arithmetic on them is dot_q5_0's (ggml's 8 lanes a block): the same
 * bits as the rows kernel. Prefetches the same blocks of the 16 rows at pf
 * (NULL: none) into L2. */
static void q5t_pack_w(q8t_buf *t, const char *w, size_t wrb, int nr, int64_t kb0, int kcb,
                       const char *pf) {
    _Alignas(64) moe_block_q8_0 q8[16][Q8T_KB];
    const __m128i m4 = _mm_set1_epi8(15);
    for (int r = 0; r < 16; r++) {
        const moe_block_q5_0 *src =
            (const moe_block_q5_0 *)(w + (size_t)(r < nr ? r : nr - 1) * wrb) + kb0;
        if (pf && r < nr)
            for (size_t o = 0; o < (size_t)kcb * sizeof(moe_block_q5_0); o += 64)
                __builtin_prefetch(pf + (size_t)r * wrb + (size_t)kb0 * sizeof(moe_block_q5_0) + o,
                                   0, 2);
        for (int b = 0; b < kcb; b++) {
            const __m128i qs = _mm_loadu_si128((const __m128i *)src[b].qs);
            const __m256i nib =
                _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(qs, m4)),
                                        _mm_and_si128(_mm_srli_epi16(qs, 4), m4), 1);
            uint32_t qh;
            memcpy(&qh, src[b].qh, 4);
            /* a clear fifth bit: the nibble - 16 (0xf0 or-ed into the byte) */
            const __m256i q =
                _mm256_or_si256(nib, _mm256_andnot_si256(_mm256_movm_epi8((__mmask32)qh),
                                                         _mm256_set1_epi8((char)0xf0)));
            q8[r][b].d = src[b].d;
            _mm256_storeu_si256((__m256i *)q8[r][b].qs, q);
        }
    }
    q8t_pack_w(t, (const char *)q8, sizeof q8[0], 16, 0, kcb, NULL);
}

/* Q4_1 (q5 = 0) or Q5_1 rows into the stack tile as q5t_pack_w does: their
 * unsigned levels (the nibble, Q5_1's fifth bit) as Q8_0 blocks with the
 * same d, and each block's minimum in t->wm. The tile's exact lanes plus
 * the minimums' term summed apart are dot_q4_1's arithmetic. */
static void q41t_pack_w(const int q5, q8t_buf *t, const char *w, size_t wrb, int nr, int64_t kb0,
                        int kcb, const char *pf) {
    _Alignas(64) moe_block_q8_0 q8[16][Q8T_KB];
    const size_t bb = q5 ? sizeof(moe_block_q5_1) : sizeof(moe_block_q4_1);
    const __m128i m4 = _mm_set1_epi8(15);
    for (int r = 0; r < 16; r++) {
        const char *src = w + (size_t)(r < nr ? r : nr - 1) * wrb + (size_t)kb0 * bb;
        if (pf && r < nr)
            for (size_t o = 0; o < (size_t)kcb * bb; o += 64)
                __builtin_prefetch(pf + (size_t)r * wrb + (size_t)kb0 * bb + o, 0, 2);
        for (int b = 0; b < kcb; b++) {
            const char *blk = src + (size_t)b * bb;
            uint16_t dm[2];
            memcpy(dm, blk, 4);
            const __m128i qs = _mm_loadu_si128((const __m128i *)(blk + (q5 ? 8 : 4)));
            __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(qs, m4)),
                                                _mm_and_si128(_mm_srli_epi16(qs, 4), m4), 1);
            if (q5) {
                uint32_t qh;
                memcpy(&qh, blk + 4, 4);
                q = _mm256_or_si256(
                    q, _mm256_and_si256(_mm256_movm_epi8((__mmask32)qh), _mm256_set1_epi8(16)));
            }
            q8[r][b].d = dm[0];
            _mm256_storeu_si256((__m256i *)q8[r][b].qs, q);
            t->wm[b][r] = _cvtsh_ss(dm[1]);
        }
    }
    q8t_pack_w(t, (const char *)q8, sizeof q8[0], 16, 0, kcb, NULL);
}

/* Offset corrections and scales of columns [0, nc) of X, blocks [kb0, kb0+kcb).
 * Always inlined: as an out-of-line function shared by the exact and fast
 * tiles, GCC 12.2 (-O1 and up) deleted its calls (its IPA mod/ref and
 * pure-const analyses together; -fno-ipa-modref -fno-ipa-pure-const kept
 * them), leaving the tiles to read stale corrections. */
AI void q8t_pack_x(const int x1, q8t_buf *t, const char *X, size_t xrb, int nc, int64_t kb0,
                   int kcb) {
    /* Q8_0 blocks (d, qs) or, x1, Q8_1 blocks (d, s, qs) */
    const size_t xb = x1 ? sizeof(moe_block_q8_1) : sizeof(moe_block_q8_0), xo = x1 ? 4 : 2;
    for (int c = 0; c < nc; c++) {
        const char *xr = X + (size_t)c * xrb + (size_t)kb0 * xb;
        for (int b = 0; b < kcb; b++) {
            const char *blk = xr + (size_t)b * xb;
            uint16_t h[2];
            memcpy(h, blk, 4);
            const __m256i corr = q8_group_corr((const int8_t *)blk + xo);
            _mm256_store_si256((__m256i *)t->xc[c][b], corr);
            t->xs[c][b] = q8_corr_sum(corr);
            t->xd[c][b] = _cvtsh_ss(h[0]);
            if (x1) t->xm[c][b] = _cvtsh_ss(h[1]);
        }
    }
}

/* Block b of the chunk at kb0: its 8 groups (16 rows each, w ^ 0x80) and the
 * 16 rows' scales, from the stack tile, or (packed) from the packed tile at
 * pw (nblk blocks a row), prefetching MOE_PF_DIST ahead in that one stream
 * when pf. */
AI void q8t_load_w(const int packed, const q8t_buf *t, const char *pw, int64_t nblk, int64_t kb0,
                   int b, int pf, __m512i wj[8], __m512 *wd) {
    if (packed) {
        const char *pq = pw + moe_q8p_qoff(kb0 + b);
        if (pf)
#pragma GCC unroll 9
            for (int i = 0; i < 9; i++) __builtin_prefetch(pq + MOE_PF_DIST + 64 * i, 0, 3);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) wj[j] = _mm512_loadu_si512(pq + 64 * j);
        *wd = _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)(pw + moe_q8p_doff(kb0 + b, nblk))));
    } else {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) wj[j] = _mm512_load_si512((const __m512i *)t->w[b][j]);
        *wd = _mm512_load_ps(t->wd[b]);
    }
}

/* NC (1 or 2) activations, columns c0.., through kcb blocks of the tile. */
AI void q8t_compute(const int NC, const int packed, const int x1, q8t_buf *t, const char *pw,
                    int64_t nblk, int c0, const char *X, size_t xrb, int64_t kb0, int kcb,
                    int first) {
    const size_t xb = x1 ? sizeof(moe_block_q8_1) : sizeof(moe_block_q8_0);
    __m512 acc[2][8], sm[2];
#pragma GCC unroll 2
    for (int c = 0; c < NC; c++) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            acc[c][j] = first ? _mm512_setzero_ps() : _mm512_load_ps(t->acc[c0 + c][j]);
        if (x1) sm[c] = first ? _mm512_setzero_ps() : _mm512_load_ps(t->sm[c0 + c]);
    }
    const char *xq[2];
#pragma GCC unroll 2
    for (int c = 0; c < NC; c++)
        xq[c] = X + (size_t)(c0 + c) * xrb + (size_t)kb0 * xb + (x1 ? 4 : 2);

    for (int b = 0; b < kcb; b++) {
        __m512i wj[8];
        __m512 wd;
        q8t_load_w(packed, t, pw, nblk, kb0, b, c0 == 0, wj, &wd);
#pragma GCC unroll 2
        for (int c = 0; c < NC; c++) {
            const __m512 d = _mm512_mul_ps(wd, _mm512_set1_ps(t->xd[c0 + c][b]));
            const int32_t *corr = t->xc[c0 + c][b];
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const __m512i s = _mm512_dpbusd_epi32(_mm512_set1_epi32(corr[j]), wj[j],
                                                      _mm512_set1_epi32(load_i32(xq[c] + 4 * j)));
                acc[c][j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc[c][j]);
            }
            if (x1) /* the product rounded, then added: no fma, as dot_q4_1 */
                sm[c] = _mm512_add_ps(sm[c], _mm512_mul_ps(_mm512_load_ps(t->wm[b]),
                                                           _mm512_set1_ps(t->xm[c0 + c][b])));
            xq[c] += xb;
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < NC; c++) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) _mm512_store_ps(t->acc[c0 + c][j], acc[c][j]);
        if (x1) _mm512_store_ps(t->sm[c0 + c], sm[c]);
    }
}

/* hsum_float_8's order over the 8 lane accumulators, for 16 rows at once. */
AI __m512 q8t_lane_sum(const float (*a)[16]) {
    const __m512 r0 = _mm512_add_ps(_mm512_load_ps(a[4]), _mm512_load_ps(a[0]));
    const __m512 r1 = _mm512_add_ps(_mm512_load_ps(a[5]), _mm512_load_ps(a[1]));
    const __m512 r2 = _mm512_add_ps(_mm512_load_ps(a[6]), _mm512_load_ps(a[2]));
    const __m512 r3 = _mm512_add_ps(_mm512_load_ps(a[7]), _mm512_load_ps(a[3]));
    return _mm512_add_ps(_mm512_add_ps(r0, r2), _mm512_add_ps(r1, r3));
}

/* The tile loop both Q8_0 tiles share: per 32 activation rows and 16 weight
 * rows, K in chunks of Q8T_KB blocks packed on the stack; fast picks the
 * fast numerics' compute (q8f_compute, below) over the exact one. */
AI void q8t_drive(const int fast, const int packed, const int kind, int64_t k, const char *W,
                  size_t wrb, int64_t r0, int64_t r1, const char *X, size_t xrb, int64_t nb,
                  float *Y, int64_t ldy);

void moe__q8_tile_avx512(moe_dtype wt, int64_t k, const void *W, size_t wrb, int64_t r0, int64_t r1,
                         const void *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    /* one instance of the (inlined) driver a kind */
    if (wt == MOE_DTYPE_Q5_0)
        q8t_drive(0, 0, WK_Q50, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
    else if (wt == MOE_DTYPE_Q4_1)
        q8t_drive(0, 0, WK_Q41, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
    else if (wt == MOE_DTYPE_Q5_1)
        q8t_drive(0, 0, WK_Q51, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
    else
        q8t_drive(0, 0, WK_Q8, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
}

/* ==== Q8_0: the fast tile (VNNI) =========================================== */

/* The fast numerics (q8_fast.h) on the same repacked tile: a block's 8
 * groups go through vpdpbusd into one int32 sum per row (in several
 * chains, added: integer sums are exact in any order), then acc = fma(dw * dx, sum, acc) in
 * block order; the 16 rows of a column are one vector, so no lane sum at the
 * end. The AMX tile (kernels_amx.c) gives the same bits; this one serves
 * CPUs without it and the rows of a range that do not fill an AMX tile. */
AI void q8f_compute(const int NC, const int packed, q8t_buf *t, const char *pw, int64_t nblk,
                    int c0, const char *X, size_t xrb, int64_t kb0, int kcb, int first,
                    const int32_t *xs, const float *xd, int64_t xst) {
    __m512 acc[8];
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++)
        acc[c] = first ? _mm512_setzero_ps() : _mm512_load_ps(t->acc[c0 + c][0]);
    const char *xq[8];
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++)
        xq[c] = X + (size_t)(c0 + c) * xrb + (size_t)kb0 * sizeof(moe_block_q8_0) + 2;
    for (int b = 0; b < kcb; b++) {
        __m512i wj[8];
        __m512 wd;
        /* one load of the block for all NC columns, so the prefetches go
         * out at one even pace (a second pass over the chunk for columns
         * 4..7 issued none: at 8 columns from DRAM ~0.6 of the tile's
         * speed from L2) */
        q8t_load_w(packed, t, pw, nblk, kb0, b, c0 == 0, wj, &wd);
        /* the columns in groups of up to 4, 4 int32 chains a group (S per
         * column, over groups j = s mod S), interleaved: each vpdpbusd's
         * result is used 4 instructions later. One chain alone waits on
         * vpdpbusd's latency (~4 cycles on Zen 5, which issues up to ~2 a
         * cycle). Integer sums are exact in any order: the same bits */
#pragma GCC unroll 2
        for (int g = 0; g < NC; g += 4) {
            const int n = NC - g < 4 ? NC - g : 4, S = n == 1 ? 4 : n == 2 ? 2 : 1;
            __m512i sc[4][4];
#pragma GCC unroll 4
            for (int c = 0; c < n; c++)
#pragma GCC unroll 4
                for (int s2 = 0; s2 < S; s2++)
                    sc[c][s2] =
                        s2 ? _mm512_setzero_si512() : _mm512_set1_epi32(xs[(c0 + g + c) * xst + b]);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
#pragma GCC unroll 4
                for (int c = 0; c < n; c++)
                    sc[c][j % S] = _mm512_dpbusd_epi32(
                        sc[c][j % S], wj[j], _mm512_set1_epi32(load_i32(xq[g + c] + 4 * j)));
#pragma GCC unroll 4
            for (int c = 0; c < n; c++) {
                __m512i sum = sc[c][0];
#pragma GCC unroll 4
                for (int s2 = 1; s2 < S; s2++) sum = _mm512_add_epi32(sum, sc[c][s2]);
                const __m512 d = _mm512_mul_ps(wd, _mm512_set1_ps(xd[(c0 + g + c) * xst + b]));
                acc[g + c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sum), acc[g + c]);
                xq[g + c] += sizeof(moe_block_q8_0);
            }
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++) _mm512_store_ps(t->acc[c0 + c][0], acc[c]);
}

/* The packed fast tiles' activation terms for all of K, once per chunk of
 * columns: nc rows of X, per block the -128 x sum correction and the scale,
 * at [c * nblk + b]. */
static void q8_sums_x(const char *X, size_t xrb, int nc, int64_t nblk, int32_t *xs, float *xd) {
    for (int c = 0; c < nc; c++) {
        const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb);
        for (int64_t b = 0; b < nblk; b++) {
            xs[c * nblk + b] = q8_corr_sum(q8_group_corr(xb[b].qs));
            xd[c * nblk + b] = _cvtsh_ss(xb[b].d);
        }
    }
}

AI void q8t_drive(const int fast, const int packed, const int kind, int64_t k, const char *W,
                  size_t wrb, int64_t r0, int64_t r1, const char *X, size_t xrb, int64_t nb,
                  float *Y, int64_t ldy) {
    q8t_buf t;
    const int64_t nblk = k / MOE_QK8_0;
    /* packed, fast: the activations' block sums and scales once per chunk of
     * columns, for all of K (the stack tile's q8t_pack_x redoes them per
     * tile of 16 rows: ~20% of the packed tile's time at 8 columns) */
    int hoist = packed && fast;
    int32_t *xs_all = NULL;
    float *xd_all = NULL;
    char *heap = NULL;
    _Alignas(64) char xstk[16384];
    if (hoist) {
        const size_t need = (size_t)Q8T_NC * (size_t)nblk * 8;
        xs_all = (int32_t *)(need <= sizeof xstk ? xstk : (heap = malloc(need)));
        hoist = xs_all != NULL; /* else per tile, as the stack tile does */
        if (hoist) xd_all = (float *)(xs_all + (size_t)Q8T_NC * (size_t)nblk);
    }
    for (int64_t cs = 0; cs < nb; cs += Q8T_NC) {
        const int nc = (int)(nb - cs < Q8T_NC ? nb - cs : Q8T_NC);
        const char *Xc = X + (size_t)cs * xrb;
        if (hoist) q8_sums_x(Xc, xrb, nc, nblk, xs_all, xd_all);
        for (int64_t rt = r0; rt < r1; rt += 16) {
            const int nr = (int)(r1 - rt < 16 ? r1 - rt : 16);
            const __mmask16 m = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
            const char *pf = rt + 16 * (Q8T_PF_TILES + 1) <= r1
                                 ? W + (size_t)(rt + 16 * Q8T_PF_TILES) * wrb
                                 : NULL;
            for (int64_t kb0 = 0; kb0 < nblk; kb0 += Q8T_KB) {
                const int kcb = (int)(nblk - kb0 < Q8T_KB ? nblk - kb0 : Q8T_KB);
                if (!hoist) q8t_pack_x(kind >= WK_Q41, &t, Xc, xrb, nc, kb0, kcb);
                const int32_t *xs = hoist ? xs_all + kb0 : t.xs[0];
                const float *xd = hoist ? xd_all + kb0 : t.xd[0];
                const int64_t xst = hoist ? nblk : Q8T_KB;
                const char *pw = W + (size_t)rt * wrb; /* packed: the tile's blocks */
                if (kind == WK_Q50)
                    q5t_pack_w(&t, pw, wrb, nr, kb0, kcb, pf);
                else if (kind != WK_Q8)
                    q41t_pack_w(kind == WK_Q51, &t, pw, wrb, nr, kb0, kcb, pf);
                else if (!packed)
                    q8t_pack_w(&t, pw, wrb, nr, kb0, kcb, pf);
                int c = 0;
                if (fast) {
#define Q8F(C) q8f_compute(C, packed, &t, pw, nblk, c, Xc, xrb, kb0, kcb, kb0 == 0, xs, xd, xst)
                    for (; c + 8 <= nc; c += 8) Q8F(8);
                    switch (nc - c) {
                    case 7:
                        Q8F(7);
                        break;
                    case 6:
                        Q8F(6);
                        break;
                    case 5:
                        Q8F(5);
                        break;
                    case 4:
                        Q8F(4);
                        break;
                    case 3:
                        Q8F(3);
                        break;
                    case 2:
                        Q8F(2);
                        break;
                    case 1:
                        Q8F(1);
                        break;
                    default:
                        break;
                    }
#undef Q8F
                } else {
                    for (; c + 2 <= nc; c += 2)
                        q8t_compute(2, packed, kind >= WK_Q41, &t, pw, nblk, c, Xc, xrb, kb0, kcb,
                                    kb0 == 0);
                    if (c < nc)
                        q8t_compute(1, packed, kind >= WK_Q41, &t, pw, nblk, c, Xc, xrb, kb0, kcb,
                                    kb0 == 0);
                }
            }
            for (int c = 0; c < nc; c++)
                _mm512_mask_storeu_ps(Y + (cs + c) * ldy + rt, m,
                                      fast             ? _mm512_load_ps(t.acc[c][0])
                                      : kind >= WK_Q41 ? _mm512_add_ps(q8t_lane_sum(t.acc[c]),
                                                                       _mm512_load_ps(t.sm[c]))
                                                       : q8t_lane_sum(t.acc[c]));
        }
    }
    free(heap);
}

void moe__q8_fast_vnni(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                       size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    q8t_drive(1, 0, 0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
}

/* The exact numerics on the packed layout for NC (1 or 2) activation rows
 * (decode): per tile of 16 rows all of K, the 8 lane accumulators of each
 * column in registers, the weights one sequential stream (two tiles from
 * the two halves of the range at once, as the rows kernel reads two rows,
 * read no faster); xc and xd: the columns' corrections and scales, [c *
 * nblk + b]. */
AI void q8p_rows_tile(const int NC, int64_t nblk, const char *pw, const int32_t (*xc)[8],
                      const float *xd, const char *X, size_t xrb, float *y, int64_t ldy) {
    __m512 acc[2][8];
#pragma GCC unroll 2
    for (int c = 0; c < NC; c++)
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) acc[c][j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        __m512i wj[8];
        __m512 wd;
        q8t_load_w(1, NULL, pw, nblk, 0, (int)b, 1, wj, &wd);
#pragma GCC unroll 2
        for (int c = 0; c < NC; c++) {
            const char *xq = X + (size_t)c * xrb + (size_t)b * sizeof(moe_block_q8_0) + 2;
            const __m512 d = _mm512_mul_ps(wd, _mm512_set1_ps(xd[c * nblk + b]));
            const int32_t *corr = xc[c * nblk + b];
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const __m512i sj = _mm512_dpbusd_epi32(_mm512_set1_epi32(corr[j]), wj[j],
                                                       _mm512_set1_epi32(load_i32(xq + 4 * j)));
                acc[c][j] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sj), acc[c][j]);
            }
        }
    }
#pragma GCC unroll 2
    for (int c = 0; c < NC; c++) {
        _Alignas(64) float a[8][16];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) _mm512_store_ps(a[j], acc[c][j]);
        _mm512_storeu_ps(y + (int64_t)c * ldy, q8t_lane_sum(a));
    }
}

static void q8p_rows(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                     size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    _Alignas(64) int32_t stk[2 * 256 * 9];
    int32_t *buf =
        2 * nblk * 9 <= (int64_t)(sizeof stk / 4) ? stk : malloc((size_t)(2 * nblk * 9) * 4);
    if (!buf) { /* no memory: the general tile */
        q8t_drive(0, 1, 0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        return;
    }
    int32_t(*xc)[8] = (int32_t(*)[8])buf;
    float *xd = (float *)(buf + 2 * nblk * 8);
    for (int64_t c = 0; c < nb; c++) {
        const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb);
        for (int64_t b = 0; b < nblk; b++) {
            _mm256_storeu_si256((__m256i *)xc[c * nblk + b], q8_group_corr(xb[b].qs));
            xd[c * nblk + b] = _cvtsh_ss(xb[b].d);
        }
    }
    for (int64_t rt = r0; rt < r1; rt += MOE_Q8P_ROWS) {
        if (nb == 1)
            q8p_rows_tile(1, nblk, W + (size_t)rt * wrb, xc, xd, X, xrb, Y + rt, ldy);
        else
            q8p_rows_tile(2, nblk, W + (size_t)rt * wrb, xc, xd, X, xrb, Y + rt, ldy);
    }
    if (buf != stk) free(buf);
}

/* The packed layout (moe/ops.h): the same tiles, the weights read in place. */

/* ==== Q8_0: the fast numerics on two packed tiles at once ================== */

/* Activation rows from which the packed fast tile runs pairs of tiles:
 * batches that are compute-bound. One thread from L2 (1024 x 512): 4-16
 * columns ~650-690 GOPS against ~450-530 for one tile a pass; but from DRAM
 * at 4-12 columns (decode's experts at 32 sequences) as fast or slower (two
 * streams a thread, the passes after the first idle for the memory). In a
 * decode, steps alternating: prefill of 4 x 128 tokens +15-20%, 32
 * sequences ~2% (their 32-row dense products), by this threshold. */
#define Q8P_PAIR_MIN_ROWS 16
/* Activation rows from which the fast numerics below the pair tile's run
 * q8p_fast_avx512.c's one-tile kernel, where the products are compute-bound.
 * Decode at 32 sequences (3-15 rows an expert), each step run twice with
 * the same batch, once with each kernel: rows of 8-15 columns took 0.84-0.95
 * of this file's tile's cycles; 3-7 columns, bound by the memory, 0.9-1.4
 * (which of them lost moved with the code's placement); whole steps
 * 0.96-0.99. */
#define Q8P_F1_MIN_ROWS 8
/* Blocks a chunk (2 tiles x 8 blocks x 544 bytes: the passes over it stay
 * in L1; 16 measured ~4% slower) */
#define Q8T2_KB 8

/* NC (1..4) columns c0.. against the two packed tiles at pw and pw + tb
 * (rows rt..rt+31), blocks kb0..kb0+kcb: each activation broadcast feeds
 * both tiles' vpdpbusd (per product 0.75 loads, against 1.1 for one tile at
 * 8 columns). Pass g of np over the chunk (the columns in groups) prefetches
 * the blocks b = g mod np, so the lines go out over all the passes (the
 * passes after the first read the chunk from L1). The same bits as
 * q8f_compute: each row's exact int32 block sum, then the same fma in block
 * order; t->acc[c][h] holds tile h's running sums. */
AI void q8f2_compute(const int NC, q8t_buf *t, const char *pw, size_t tb, int64_t nblk, int c0,
                     const char *X, size_t xrb, int64_t kb0, int kcb, int first, const int32_t *xs,
                     const float *xd, int64_t xst, int g, int np) {
    const int S = NC == 1 ? 2 : 1; /* chains a (tile, column): 4 or more in flight */
    __m512 acc[2][4];
#pragma GCC unroll 4
    for (int c = 0; c < NC; c++)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            acc[h][c] = first ? _mm512_setzero_ps() : _mm512_load_ps(t->acc[c0 + c][h]);
    const char *xq[4];
#pragma GCC unroll 4
    for (int c = 0; c < NC; c++)
        xq[c] = X + (size_t)(c0 + c) * xrb + (size_t)kb0 * sizeof(moe_block_q8_0) + 2;
    for (int b = 0; b < kcb; b++) {
        const size_t qo = moe_q8p_qoff(kb0 + b);
        const char *q0 = pw + qo, *q1 = q0 + tb;
        if (b % np == g) {
            /* each tile's stream MOE_PF_DIST ahead; past its end, the same
             * tile of the next pair */
            const size_t pa = qo + MOE_PF_DIST, pb = pa >= tb ? tb + pa : pa;
#pragma GCC unroll 9
            for (int i = 0; i < 9; i++) {
                __builtin_prefetch(pw + pb + 64 * i, 0, 3);
                __builtin_prefetch(pw + tb + pb + 64 * i, 0, 3);
            }
        }
        __m512i sc[2][4][2];
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++)
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++)
#pragma GCC unroll 2
                for (int s2 = 0; s2 < S; s2++)
                    sc[h][c][s2] =
                        s2 ? _mm512_setzero_si512() : _mm512_set1_epi32(xs[(c0 + c) * xst + b]);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m512i w0 = _mm512_loadu_si512(q0 + 64 * j),
                          w1 = _mm512_loadu_si512(q1 + 64 * j);
#pragma GCC unroll 4
            for (int c = 0; c < NC; c++) {
                const __m512i x = _mm512_set1_epi32(load_i32(xq[c] + 4 * j));
                sc[0][c][j % S] = _mm512_dpbusd_epi32(sc[0][c][j % S], w0, x);
                sc[1][c][j % S] = _mm512_dpbusd_epi32(sc[1][c][j % S], w1, x);
            }
        }
        const size_t doff = moe_q8p_doff(kb0 + b, nblk);
        const __m512 wd[2] = {
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(pw + doff))),
            _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(pw + tb + doff)))};
#pragma GCC unroll 4
        for (int c = 0; c < NC; c++) {
            const __m512 xdc = _mm512_set1_ps(xd[(c0 + c) * xst + b]);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                const __m512i sum =
                    S == 2 ? _mm512_add_epi32(sc[h][c][0], sc[h][c][1]) : sc[h][c][0];
                acc[h][c] =
                    _mm512_fmadd_ps(_mm512_mul_ps(wd[h], xdc), _mm512_cvtepi32_ps(sum), acc[h][c]);
            }
            xq[c] += sizeof(moe_block_q8_0);
        }
    }
#pragma GCC unroll 4
    for (int c = 0; c < NC; c++)
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) _mm512_store_ps(t->acc[c0 + c][h], acc[h][c]);
}

/* The packed fast numerics for rows r0..r1 (whole tiles): pairs of tiles
 * through q8f2_compute, a last single tile through q8t_drive. */
static void q8p_fast2(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                      size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0, r2 = r0 + (r1 - r0) / 32 * 32;
    _Alignas(64) char xstk[16384];
    const size_t need = (size_t)Q8T_NC * (size_t)nblk * 8;
    char *heap = NULL;
    int32_t *xs_all = (int32_t *)(need <= sizeof xstk ? xstk : (heap = malloc(need)));
    if (!xs_all || r2 == r0) {
        q8t_drive(1, 1, 0, k, W, wrb, r0, r1, X, xrb, nb, Y, ldy);
        free(heap);
        return;
    }
    float *xd_all = (float *)(xs_all + (size_t)Q8T_NC * (size_t)nblk);
    q8t_buf t;
    const size_t tb = (size_t)MOE_Q8P_ROWS * wrb;
    for (int64_t cs = 0; cs < nb; cs += Q8T_NC) {
        const int nc = (int)(nb - cs < Q8T_NC ? nb - cs : Q8T_NC);
        const char *Xc = X + (size_t)cs * xrb;
        q8_sums_x(Xc, xrb, nc, nblk, xs_all, xd_all);
        const int np = (nc + 3) / 4; /* passes: nc columns in np groups of 1-4, as even as can be */
        for (int64_t rt = r0; rt < r2; rt += 32) {
            const char *pw = W + (size_t)rt * wrb;
            for (int64_t kb0 = 0; kb0 < nblk; kb0 += Q8T2_KB) {
                const int kcb = (int)(nblk - kb0 < Q8T2_KB ? nblk - kb0 : Q8T2_KB);
                for (int g = 0, c = 0; g < np; g++) {
                    const int n = (nc - c) / (np - g) + ((nc - c) % (np - g) ? 1 : 0);
#define Q8F2(C)                                                                                    \
    q8f2_compute(C, &t, pw, tb, nblk, c, Xc, xrb, kb0, kcb, kb0 == 0, xs_all + kb0, xd_all + kb0,  \
                 nblk, g, np)
                    switch (n) {
                    case 4:
                        Q8F2(4);
                        break;
                    case 3:
                        Q8F2(3);
                        break;
                    case 2:
                        Q8F2(2);
                        break;
                    default:
                        Q8F2(1);
                        break;
                    }
#undef Q8F2
                    c += n;
                }
            }
            for (int c = 0; c < nc; c++)
                for (int h = 0; h < 2; h++)
                    _mm512_storeu_ps(Y + (cs + c) * ldy + rt + 16 * h, _mm512_load_ps(t.acc[c][h]));
        }
    }
    free(heap);
    if (r2 < r1) q8t_drive(1, 1, 0, k, W, wrb, r2, r1, X, xrb, nb, Y, ldy);
}

void moe__q8p_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                          int64_t nb, float *Y, int64_t ldy) {
    if (r1 <= r0 || nb <= 0) return;
    const size_t rb = moe_dtype_row_bytes(MOE_DTYPE_Q8_0, k);
    if (!fast && nb <= 2)
        q8p_rows(k, W, rb, r0, r1, X, rb, nb, Y, ldy);
    else if (fast && nb >= Q8P_PAIR_MIN_ROWS)
        q8p_fast2(k, W, rb, r0, r1, X, rb, nb, Y, ldy);
    else if (fast) {
        if (nb < Q8P_F1_MIN_ROWS || !moe__q8p_fast1_avx512(k, W, r0, r1, X, nb, Y, ldy))
            q8t_drive(1, 1, 0, k, W, rb, r0, r1, X, rb, nb, Y, ldy);
    } else
        q8t_drive(0, 1, 0, k, W, rb, r0, r1, X, rb, nb, Y, ldy);
}
