/*
 * cpu/kernels_amx.c - the Q8_0 fast tile on AMX-INT8 (Sapphire Rapids and
 * later), reached only through the AVX-512 table's gemm_fast once
 * moe_cpu_detect() has found AMX and the OS has granted the tile state.
 *
 * The numerics are q8_fast.h's: per block an exact int32 sum, then
 * acc = fma(d_w * d_x, (float)sum, acc) in block order, so results equal the
 * VNNI, AVX2 and scalar fast tables bit for bit.
 *
 * Layout: the A tile is 16 weight rows x one block's 32 quants, loaded
 * straight from the weights (rows wrb bytes apart, no repacking); the B tile
 * is one block of N = 16 activation rows (8 when the call has no more) in
 * the VNNI layout (4-byte groups of the rows side by side), all packed once
 * per call; TDPBSSD (signed x signed) gives the 16 x N block sums. Each
 * block's sums are stored, scaled and accumulated in zmm registers, and the
 * result is transposed once per row tile into Y. Each row tile's weights are
 * read once, for every chunk of N activation rows in turn (from L1/L2 after
 * the first), while the next tile's rows are prefetched.
 *
 * Measured (Sapphire Rapids guest, 2 cores): the TMUL work of a block takes
 * less time than the AVX-512 scaling of its sums, and the two do not
 * overlap much; a block's stored sums are read back two blocks later, which
 * was ~20% faster than one block later (a fresh tile store stalls the
 * loads). The scaling bounds the tile at ~500 GFLOP/s a core, 3x the exact
 * VNNI tile. With 8 activation rows a tile is bound by reading the weights:
 * prefetching the next tile's rows into L2 (T1) read 12 GB/s a core against
 * 10 with T0 (whose prefetches stalled) and 11 two tiles ahead; the plain
 * read loop reaches ~14.
 *
 * Tile configuration is per thread: loaded at the start of each call and
 * released at its end, so nothing outside this file sees AMX state.
 * Stack use: ~60 KB (AMX_STACK_BYTES of packed activations and scales, the
 * rest from the heap).
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define AI static inline __attribute__((always_inline))

/* tile registers: C (block sums), A (weights), B (activations), two sets */
#define TC0 0
#define TC1 1
#define TA0 2
#define TA1 3
#define TB0 4
#define TB1 5

#define AMX_COLS 16                 /* activation rows per B tile */
#define AMX_STACK_BYTES (56 * 1024) /* scratch on the stack; more comes from the heap */
#ifndef AMX_PF_TILES
#define AMX_PF_TILES 1 /* prefetch the rows of the tile this many ahead */
#endif

typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* N activation rows per B tile: 16, or 8 when a chunk has no more (the
 * scaling work per block halves). */
static void amx_configure(int N) {
    amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = TC0; t <= TC1; t++) c.rows[t] = 16, c.colsb[t] = (uint16_t)(4 * N); /* int32 */
    for (int t = TA0; t <= TA1; t++) c.rows[t] = 16, c.colsb[t] = MOE_QK8_0; /* 16 rows x 32 */
    for (int t = TB0; t <= TB1; t++) c.rows[t] = MOE_QK8_0 / 4, c.colsb[t] = (uint16_t)(4 * N);
    _tile_loadconfig(&c);
}

/* Packs activation rows [0, nc) of X for B tiles of N rows: block b's tile
 * is xb + b * 8 * N int32, its row j holding bytes 4j..4j+3 of each
 * activation row's quants (0 for n >= nc); xd + b * N the scales (0 likewise). */
static void amx_pack_x(int32_t *xb, float *xd, int N, const char *X, size_t xrb, int nc,
                       int64_t nblk) {
    for (int64_t b = 0; b < nblk; b++) {
        int32_t *t = xb + b * 8 * N;
        for (int n = 0; n < N; n++) {
            if (n < nc) {
                const moe_block_q8_0 *xq = (const moe_block_q8_0 *)(X + (size_t)n * xrb) + b;
                for (int j = 0; j < 8; j++) memcpy(&t[j * N + n], xq->qs + 4 * j, 4);
                xd[b * N + n] = _cvtsh_ss(xq->d);
            } else {
                for (int j = 0; j < 8; j++) t[j * N + n] = 0;
                xd[b * N + n] = 0.0f;
            }
        }
    }
}

/* In place: r[i] holds row i (16 columns) -> r[n] holds column n. */
AI void transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4) {
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* r[4q + c]: rows 4q..4q+3, column c + 4 * (128-bit lane) */
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[c + 4], 0x88);     /* lanes 0, 2 */
        t[c + 4] = _mm512_shuffle_f32x4(r[c], r[c + 4], 0xdd); /* lanes 1, 3 */
        t[c + 8] = _mm512_shuffle_f32x4(r[c + 8], r[c + 12], 0x88);
        t[c + 12] = _mm512_shuffle_f32x4(r[c + 8], r[c + 12], 0xdd);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[c + 8], 0x88);
        r[c + 4] = _mm512_shuffle_f32x4(t[c + 4], t[c + 12], 0x88);
        r[c + 8] = _mm512_shuffle_f32x4(t[c], t[c + 8], 0xdd);
        r[c + 12] = _mm512_shuffle_f32x4(t[c + 4], t[c + 12], 0xdd);
    }
}

/* dws[b * 16 + r]: the weight scale of block b of row r of the 16 rows from
 * w (the fp16 d that opens each row's block), for every block. */
static void amx_wscales(float *dws, const char *w, size_t wrb, int64_t nblk) {
    const __m512i vidx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)wrb));
    for (int64_t b = 0; b < nblk; b++)
        _mm512_store_ps(dws + b * 16, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_i32gather_epi32(
                                          vidx, w + (size_t)b * sizeof(moe_block_q8_0), 1))));
}

/* In place: a[i] holds rows 2i and 2i+1 (8 columns each) -> a[n] holds
 * column n (16 rows). Three rounds of vpermt2ps, each swapping one bit of
 * the register index with one bit of the lane index; the last also moves the
 * row's low bit from lane bit 3 to lane bit 0. */
AI void transpose16x8(__m512 a[8]) {
    /* round st: lanes of a[r] (ix[2st]) and a[r + 2^st] (ix[2st + 1]) from the pair */
    static const _Alignas(64) int32_t ix[6][16] = {
        {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
        {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},
        {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
        {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
        {0, 8, 1, 9, 2, 10, 3, 11, 16, 24, 17, 25, 18, 26, 19, 27},
        {4, 12, 5, 13, 6, 14, 7, 15, 20, 28, 21, 29, 22, 30, 23, 31},
    };
    for (int st = 0; st < 3; st++) {
        const __m512i lo = _mm512_load_si512(ix[2 * st]), hi = _mm512_load_si512(ix[2 * st + 1]);
        const int d = 1 << st;
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++) {
            if (r & d) continue;
            const __m512 x = a[r], y = a[r + d];
            a[r] = _mm512_permutex2var_ps(x, lo, y);
            a[r + d] = _mm512_permutex2var_ps(x, hi, y);
        }
    }
}

/* One row tile: 16 weight rows from w against the packed activations (B
 * tiles of N rows, nc of them real), into Y (row r of column n at
 * Y[n * ldy + r]); prefetches pf_bytes from pf (the rows of a later tile:
 * contiguous) spread evenly over the blocks. With few activation rows the
 * tile is memory-bound (16 rows of a block every ~20 cycles is more than a
 * core's share of the bandwidth), and 16 row streams at once defeat the
 * hardware prefetchers. */
AI void amx_row_tile(const int N, const char *w, size_t wrb, int64_t nblk, const int32_t *xb,
                     const float *xd, float *dws, int nc, float *Y, int64_t ldy, const char *pf,
                     size_t pf_bytes) {
    _Alignas(64) int32_t cb[4][16 * 16];
    const size_t bs = sizeof(moe_block_q8_0);
    const size_t pf_step = pf ? (pf_bytes / 64 + (size_t)nblk) / (size_t)nblk * 64 : 0;
    size_t pf_off = 0;
    /* N = 16: acc[r] is row r; N = 8: acc[i] is rows 2i, 2i+1 */
    const int NA = N == 16 ? 16 : 8;
    __m512i pair[8]; /* N = 8: lane l of acc[i] has row 2i + l / 8 */
    if (N == 8)
        for (int i = 0; i < 8; i++)
            pair[i] = _mm512_setr_epi32(2 * i, 2 * i, 2 * i, 2 * i, 2 * i, 2 * i, 2 * i, 2 * i,
                                        2 * i + 1, 2 * i + 1, 2 * i + 1, 2 * i + 1, 2 * i + 1,
                                        2 * i + 1, 2 * i + 1, 2 * i + 1);
    __m512 acc[16];
#pragma GCC unroll 16
    for (int r = 0; r < NA; r++) acc[r] = _mm512_setzero_ps();

/* block bb's sums into tile TCx, stored to cb[S] */
#define AMX_BLOCK(TCx, TAx, TBx, S, bb)                                                            \
    do {                                                                                           \
        _tile_loadd(TAx, w + (size_t)(bb)*bs + 2, (long)wrb);                                      \
        _tile_loadd(TBx, xb + (bb)*8 * N, 4 * N);                                                  \
        _tile_zero(TCx);                                                                           \
        _tile_dpbssd(TCx, TAx, TBx);                                                               \
        _tile_stored(TCx, cb[S], 4 * N);                                                           \
    } while (0)
/* block bb's sums, from cb[S], scaled into acc */
#define AMX_SCALE(S, bb)                                                                           \
    do {                                                                                           \
        const float *dw = dws + (bb)*16;                                                           \
        if (N == 16) {                                                                             \
            const __m512 dx = _mm512_loadu_ps(xd + (bb)*16);                                       \
            _Pragma("GCC unroll 16") for (int r = 0; r < 16; r++) acc[r] =                         \
                _mm512_fmadd_ps(_mm512_mul_ps(dx, _mm512_set1_ps(dw[r])),                          \
                                _mm512_cvtepi32_ps(_mm512_load_si512(cb[S] + 16 * r)), acc[r]);    \
        } else {                                                                                   \
            const __m512 dx = _mm512_broadcast_f32x8(_mm256_loadu_ps(xd + (bb)*8));                \
            const __m512 dwv = _mm512_load_ps(dw);                                                 \
            _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) acc[i] =                           \
                _mm512_fmadd_ps(_mm512_mul_ps(dx, _mm512_permutexvar_ps(pair[i], dwv)),            \
                                _mm512_cvtepi32_ps(_mm512_load_si512(cb[S] + 16 * i)), acc[i]);    \
        }                                                                                          \
    } while (0)

    /* software-pipelined: a block's sums are scaled two blocks later, while
     * later tile work runs, so the vector loads do not wait on a fresh tile
     * store (one block later measured ~20% slower) */
    int64_t b = 0;
    for (; b + 2 <= nblk; b += 2) {
        for (size_t e = pf_off + 2 * pf_step; pf && pf_off < e && pf_off < pf_bytes; pf_off += 64)
            _mm_prefetch(pf + pf_off, _MM_HINT_T1);
        AMX_BLOCK(TC0, TA0, TB0, b & 3, b);
        if (b >= 2) AMX_SCALE((b - 2) & 3, b - 2);
        AMX_BLOCK(TC1, TA1, TB1, (b + 1) & 3, b + 1);
        if (b >= 2) AMX_SCALE((b - 1) & 3, b - 1);
    }
    if (b < nblk) AMX_BLOCK(TC0, TA0, TB0, b & 3, b);
    for (int64_t sb = b >= 2 ? b - 2 : 0; sb < nblk; sb++) AMX_SCALE(sb & 3, sb);
#undef AMX_BLOCK
#undef AMX_SCALE
    if (N == 16)
        transpose16(acc);
    else
        transpose16x8(acc);
    for (int n = 0; n < nc; n++) _mm512_storeu_ps(Y + (int64_t)n * ldy, acc[n]);
}

int64_t moe__q8_fast_amx(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                         const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy) {
    const int64_t nblk = k / MOE_QK8_0;
    const int64_t r_end = r0 + (r1 - r0) / 16 * 16;
    if (r_end == r0) return r0;
    /* B tiles of 8 activation rows when there are no more, else of 16 */
    const int N = nb <= 8 ? 8 : AMX_COLS;
    const int64_t nch = (nb + N - 1) / N; /* column chunks */
    /* every chunk packed up front (per block: a B tile of 8 x N int32 and N
     * scales), so each row tile's weights are read once, from L1/L2, for all
     * of them; then per row tile the weight scales of every block */
    const size_t xb_n = (size_t)(nch * nblk) * 8 * (size_t)N,
                 xd_n = (size_t)(nch * nblk) * (size_t)N;
    const size_t dws_n = (size_t)nblk * 16;
    _Alignas(64) char stack[AMX_STACK_BYTES];
    const size_t need = (xb_n + xd_n + dws_n) * 4 + 128;
    char *heap = NULL, *buf = stack;
    if (need > sizeof stack) {
        heap = aligned_alloc(64, (need + 63) / 64 * 64);
        if (!heap) return r0;
        buf = heap;
    }
    int32_t *xb = (int32_t *)buf;
    float *xd = (float *)(xb + xb_n);
    float *dws = (float *)(((uintptr_t)(xd + xd_n) + 63) & ~(uintptr_t)63);
    for (int64_t c = 0; c < nch; c++) {
        const int nc = (int)(nb - c * N < N ? nb - c * N : N);
        amx_pack_x(xb + (size_t)(c * nblk) * 8 * (size_t)N, xd + (size_t)(c * nblk) * (size_t)N, N,
                   X + (size_t)(c * N) * xrb, xrb, nc, nblk);
    }
    amx_configure(N);
    for (int64_t rt = r0; rt < r_end; rt += 16) {
        const int64_t pt = rt + 16 * AMX_PF_TILES; /* the tile to prefetch */
        const char *pf = pt + 16 <= r_end ? W + (size_t)pt * wrb : NULL;
        const char *w = W + (size_t)rt * wrb;
        amx_wscales(dws, w, wrb, nblk);
        for (int64_t c = 0; c < nch; c++) {
            const int nc = (int)(nb - c * N < N ? nb - c * N : N);
            const int32_t *xbc = xb + (size_t)(c * nblk) * 8 * (size_t)N;
            const float *xdc = xd + (size_t)(c * nblk) * (size_t)N;
            float *y = Y + c * N * ldy + rt;
            /* the first chunk prefetches the next tile's rows */
            if (N == 16)
                amx_row_tile(16, w, wrb, nblk, xbc, xdc, dws, nc, y, ldy, c ? NULL : pf, 16 * wrb);
            else
                amx_row_tile(8, w, wrb, nblk, xbc, xdc, dws, nc, y, ldy, c ? NULL : pf, 16 * wrb);
        }
    }
    _tile_release();
    free(heap);
    return r_end;
}

/* moe_int8_peak's AMX loop: n steps of 4 independent TDPBSSD (16 x 16 x 64
 * int8 products each: 4 C tiles from 2 A and 2 B tiles, so no tile waits
 * on the one before) on tiles loaded once; returns the products done. */
uint64_t moe__int8_loop_amx(int64_t n) {
    amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) c.rows[t] = 16, c.colsb[t] = 64;
    _tile_loadconfig(&c);
    _Alignas(64) static const int8_t zero[16 * 64];
    _tile_loadd(4, zero, 64);
    _tile_loadd(5, zero, 64);
    _tile_loadd(6, zero, 64);
    _tile_loadd(7, zero, 64);
    for (int t = 0; t < 4; t++) {
        switch (t) { /* tile numbers must be constants */
        case 0:
            _tile_zero(0);
            break;
        case 1:
            _tile_zero(1);
            break;
        case 2:
            _tile_zero(2);
            break;
        default:
            _tile_zero(3);
            break;
        }
    }
    for (int64_t i = 0; i < n; i++) {
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
    }
    _Alignas(64) int32_t out[16 * 16];
    _tile_stored(0, out, 64);
    volatile int32_t sink = out[0];
    (void)sink;
    _tile_release();
    return (uint64_t)n * 4 * 16 * 16 * 64;
}
