/*
 * cpu/q8p_fast_avx512.c - the packed Q8_0 layout's fast tile, one tile of 16
 * weight rows a pass, for 8-15 activation rows (decode's experts at 32-64
 * sequences), at the AVX-512 VNNI level. Same bits as q8_fast.h (and
 * q8_tile_avx512.c's tiles).
 *
 * The activations are first laid out for the tile: per block, the columns'
 * 32 quants side by side (32 bytes each), their -128 x sum corrections and
 * scales likewise. Every broadcast of the inner loop then reads one pointer
 * at a constant offset, and the loop keeps no pointer per column: with 8
 * columns q8_tile_avx512.c's tile had 8 of them, spilled and reloaded each
 * block. One thread from L2, 8 columns: 4.3-4.7 G vpdpbusd/s against
 * 3.0-3.8 (a register-only loop of the same mix of instructions, with the
 * fma per block and column, runs 4.6; bare vpdpbusd 6.9-7.1). From DRAM
 * (the bench model's shapes, 576 MB of copies, two threads) 8 columns read
 * ~41 GB/s of weights, the same as that tile: the memory and the
 * arithmetic overlap poorly, and the kernel only gains where the products
 * are compute-bound (see Q8P_F1_MIN_ROWS in q8_tile_avx512.c).
 *
 * Tried and dropped: embedded broadcasts ({1to16} operands by inline asm;
 * GCC 12 issues a vpbroadcastd apiece for the intrinsics), faster alone
 * from L2 but 3-13% slower in whole decodes at 16-32 sequences; a
 * prefetcht2 hint instead of prefetcht0 (no gain), none (17% slower).
 * The loops are aligned to 64 bytes (Makefile): where they fell moved some
 * column counts by 0.9-1.4x.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "q8_vnni.h"

#define F1_NC 32 /* activation columns a pass over the weights */
#define F1_KB 16 /* blocks a chunk when more than 8 columns (the chunk of the tile stays in L1) */

typedef struct f1_x {
    const int8_t *q;  /* [b][c][32]: the quants */
    const int32_t *s; /* [b][c]: -128 x the block's sum (cancels the weights' offset) */
    const float *d;   /* [b][c]: scales */
    int nc;           /* columns (the stride of b) */
} f1_x;

/* The layout of nc columns at buf: nblk x nc x 40 bytes (quants, then
 * corrections, then scales). */
static f1_x f1_view(const char *buf, int nc, int64_t nblk) {
    const int32_t *s = (const int32_t *)(buf + (size_t)nblk * (size_t)nc * 32);
    return (f1_x){(const int8_t *)buf, s, (const float *)(s + (size_t)nblk * (size_t)nc), nc};
}

/* Lays nc rows of X (Q8_0, xrb apart) out at buf (32-aligned) as f1_view
 * reads them. */
static void f1_layout(const char *X, size_t xrb, int nc, int64_t nblk, char *buf) {
    int8_t *q = (int8_t *)buf;
    int32_t *s = (int32_t *)(buf + (size_t)nblk * (size_t)nc * 32);
    float *d = (float *)(s + (size_t)nblk * (size_t)nc);
    for (int c = 0; c < nc; c++) {
        const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb);
        for (int64_t b = 0; b < nblk; b++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)xb[b].qs);
            _mm256_store_si256((__m256i *)(q + ((size_t)b * (size_t)nc + (size_t)c) * 32), v);
            s[b * nc + c] = q8_corr_sum(q8_group_corr(xb[b].qs));
            d[b * nc + c] = _cvtsh_ss(xb[b].d);
        }
    }
}

/* Columns c.. (n of them, 1..4) of block b: each column's int32 block sum
 * in S chains of vpdpbusd (integer sums are exact in any order), then
 * acc[c] = fma(dw * dx, sum, acc[c]). */
AI void f1_group(const int n, const int S, const __m512i wj[8], __m512 wd, const int8_t *xq,
                 const int32_t *xs, const float *xd, __m512 *acc) {
    __m512i sc[4][4];
#pragma GCC unroll 4
    for (int c = 0; c < n; c++)
#pragma GCC unroll 4
        for (int s2 = 0; s2 < S; s2++)
            sc[c][s2] = s2 ? _mm512_setzero_si512() : _mm512_set1_epi32(xs[c]);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
#pragma GCC unroll 4
        for (int c = 0; c < n; c++)
            sc[c][j % S] = _mm512_dpbusd_epi32(sc[c][j % S], wj[j],
                                               _mm512_set1_epi32(load_i32(xq + 32 * c + 4 * j)));
#pragma GCC unroll 4
    for (int c = 0; c < n; c++) {
        __m512i sum = sc[c][0];
#pragma GCC unroll 4
        for (int s2 = 1; s2 < S; s2++) sum = _mm512_add_epi32(sum, sc[c][s2]);
        acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(wd, _mm512_set1_ps(xd[c])), _mm512_cvtepi32_ps(sum),
                                 acc[c]);
    }
}

/* NC (1..8) columns c0.. of x against the packed tile at pw, blocks kb0..kb0
 * + kcb, in one group of columns or two (A, then NC - A), in block order.
 * accm: the running sums (loaded unless first). The chains a column (S1,
 * S2): 8-12 in all (one chain waits on vpdpbusd's latency; too many
 * spill). pf: prefetch the tile's stream MOE_PF_DIST ahead. */
AI void f1_compute(const int NC, const int pf, const char *pw, int64_t nblk, int64_t kb0, int kcb,
                   const f1_x *x, int c0, int first, float (*accm)[16]) {
    const int A = NC <= 4 ? NC : 4;
    const int S1 = NC <= 4 ? (NC <= 2 ? 4 : 2) : NC == 5 ? 2 : 1;
    const int S2 = NC - A == 1 ? 4 : NC - A == 4 ? 1 : 2;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++) acc[c] = first ? _mm512_setzero_ps() : _mm512_load_ps(accm[c]);
    const int ncs = x->nc;
    const int8_t *xq = x->q + ((size_t)kb0 * (size_t)ncs + (size_t)c0) * 32;
    const int32_t *xs = x->s + kb0 * ncs + c0;
    const float *xd = x->d + kb0 * ncs + c0;
    for (int b = 0; b < kcb; b++) {
        const char *pq = pw + moe_q8p_qoff(kb0 + b);
        if (pf) {
            /* one register and 9 displacements (GCC otherwise keeps the
             * 9 sums MOE_PF_DIST + 64 i in registers, spilled) */
            const char *pp = pq + MOE_PF_DIST;
            __asm__("" : "+r"(pp));
#pragma GCC unroll 9
            for (int i = 0; i < 9; i++) __builtin_prefetch(pp + 64 * i, 0, 3);
        }
        __m512i wj[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) wj[j] = _mm512_loadu_si512(pq + 64 * j);
        const __m512 wd = _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)(pw + moe_q8p_doff(kb0 + b, nblk))));
        f1_group(A, S1, wj, wd, xq, xs, xd, acc);
        if (NC > A) f1_group(NC - A, S2, wj, wd, xq + 32 * A, xs + A, xd + A, acc + A);
        xq += (size_t)ncs * 32;
        xs += ncs;
        xd += ncs;
    }
#pragma GCC unroll 8
    for (int c = 0; c < NC; c++) _mm512_store_ps(accm[c], acc[c]);
}

int moe__q8p_fast1_avx512(int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                          int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    const size_t rb = moe_dtype_row_bytes(MOE_DTYPE_Q8_0, k);
    const int ncm = (int)(nb < F1_NC ? nb : F1_NC);
    /* the layout of a chunk of columns: on the stack up to 8 columns of
     * 3200 (the bench model's 2816; Mixtral's 4096: 6), else on the heap */
    _Alignas(64) char stk[32768];
    _Alignas(64) float accm[F1_NC][16];
    const size_t need = (size_t)nblk * (size_t)ncm * 40;
    char *heap = NULL, *buf = stk;
    if (need > sizeof stk && !(buf = heap = aligned_alloc(64, (need + 63) & ~(size_t)63))) return 0;
    for (int64_t cs = 0; cs < nb; cs += F1_NC) {
        const int nc = (int)(nb - cs < F1_NC ? nb - cs : F1_NC);
        f1_layout((const char *)X + (size_t)cs * rb, rb, nc, nblk, buf);
        const f1_x x = f1_view(buf, nc, nblk);
        /* up to 8 columns all of K at once (the sums in registers), more
         * in chunks of F1_KB blocks, each chunk's columns 8 at a time */
        const int64_t kc = nc <= 8 ? nblk : F1_KB;
        for (int64_t rt = r0; rt < r1; rt += MOE_Q8P_ROWS) {
            const int nr = (int)(r1 - rt < 16 ? r1 - rt : 16);
            const __mmask16 m = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
            const char *pw = (const char *)W + (size_t)rt * rb;
            for (int64_t kb0 = 0; kb0 < nblk; kb0 += kc) {
                const int kcb = (int)(nblk - kb0 < kc ? nblk - kb0 : kc);
                for (int c = 0; c < nc; c += 8) {
/* the first group of 8 prefetches (its loop the only one up to 8 columns) */
#define F1(C)                                                                                      \
    (c == 0 ? f1_compute(C, 1, pw, nblk, kb0, kcb, &x, c, kb0 == 0, accm + c)                      \
            : f1_compute(C, 0, pw, nblk, kb0, kcb, &x, c, kb0 == 0, accm + c))
                    switch (nc - c < 8 ? nc - c : 8) {
                    case 8:
                        F1(8);
                        break;
                    case 7:
                        F1(7);
                        break;
                    case 6:
                        F1(6);
                        break;
                    case 5:
                        F1(5);
                        break;
                    case 4:
                        F1(4);
                        break;
                    case 3:
                        F1(3);
                        break;
                    case 2:
                        F1(2);
                        break;
                    default:
                        F1(1);
                        break;
                    }
#undef F1
                }
            }
            for (int c = 0; c < nc; c++)
                _mm512_mask_storeu_ps(Y + (cs + c) * ldy + rt, m, _mm512_load_ps(accm[c]));
        }
    }
    free(heap);
    return 1;
}
