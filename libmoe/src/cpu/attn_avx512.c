/*
 * cpu/attn_avx512.c - attention's loops over the KV cache at the AVX-512
 * level (the kernel table's dot_f32, axpy_f32, dots_f32 / wsum_f32 over an
 * f32 cache and dots_f16 / wsum_f16 over an f16 one), with ggml's
 * vec_dot order (flt_avx512.h's vdot_row); the table is in kernels_avx512.c.
 */
#include <string.h>

#include "flt_avx512.h"

/* ggml_vec_dot_f32 (AVX-512), as vdot_row. */
float moe__dot_f32_avx512(int64_t n, const float *a, const float *b) {
    return vdot_row(FK_F32, n, (const char *)a, (const char *)b);
}

/* ggml_vec_mad_f32 (AVX-512): y = fma(x, a, y) over the first n & ~63
 * elements, then y += x * a one at a time. */
void moe__axpy_f32_avx512(int64_t n, float a, const float *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    const int64_t np = n & ~(int64_t)63;
    for (int64_t i = 0; i < np; i += 16)
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(_mm512_loadu_ps(x + i), va, _mm512_loadu_ps(y + i)));
    for (int64_t i = np; i < n; i++) y[i] += x[i] * a;
}

/* Element i of an f32 (FK_F32) or f16 (FK_F16) array. */
AI float flt_at(const int kind, const void *p, int64_t i) {
    return flt_scalar(kind, (const char *)p, i);
}
/* The address of row j of an array of rows ld elements apart. */
AI const char *flt_row(const int kind, const void *p, int64_t j, int64_t ld) {
    return (const char *)p + (size_t)(j * ld) * (kind == FK_F32 ? 4 : 2);
}

/* dots_f32 / dots_f16 on 4 rows of B at a time, n = N (a multiple of 64,
 * at most 256): a's vectors loaded once, each row's sum vdot_row's (4
 * accumulators over steps of 64, (a0 + a2) + (a1 + a3),
 * _mm512_reduce_add_ps). */
AI void dots4(const int kind, const int N, const void *a, const void *B, int64_t ldb, int64_t m,
              float scale, float *out, int64_t *done) {
    __m512 av[16];
#pragma GCC unroll 16
    for (int i = 0; i < N / 16; i++) av[i] = flt_load16(kind, a, 16 * i);
    int64_t j = 0;
    for (; j + 4 <= m; j += 4) {
        __m512 acc[4][4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) acc[r][u] = _mm512_setzero_ps();
#pragma GCC unroll 4
        for (int i = 0; i < N; i += 64)
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++)
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    acc[r][u] = _mm512_fmadd_ps(
                        av[i / 16 + u], flt_load16(kind, flt_row(kind, B, j + r, ldb), i + 16 * u),
                        acc[r][u]);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            out[j + r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][2]),
                                                            _mm512_add_ps(acc[r][1], acc[r][3]))) *
                         scale;
    }
    *done = j;
}

/* The head sizes with a register path: F(N) for n = N. */
#define HEAD_CASES(F)                                                                              \
    case 64:                                                                                       \
        F(64);                                                                                     \
        break;                                                                                     \
    case 128:                                                                                      \
        F(128);                                                                                    \
        break;                                                                                     \
    case 192:                                                                                      \
        F(192);                                                                                    \
        break;                                                                                     \
    case 256:                                                                                      \
        F(256);                                                                                    \
        break;

/* dots_f32 (kind FK_F32) / dots_f16 (FK_F16): 4 rows at a time for the head
 * sizes of HEAD_CASES, the rest row by row (vdot_row). */
AI void dots_any(const int kind, int64_t n, const void *a, const void *B, int64_t ldb, int64_t m,
                 float scale, float *out) {
    int64_t j = 0;
#define DOTS4(N) dots4(kind, N, a, B, ldb, m, scale, out, &j)
    switch (n) {
        HEAD_CASES(DOTS4)
    default:
        break;
    }
#undef DOTS4
    for (; j < m; j++)
        out[j] = vdot_row(kind, n, (const char *)a, flt_row(kind, B, j, ldb)) * scale;
}

void moe__dots_f32_avx512(int64_t n, const float *a, const float *B, int64_t ldb, int64_t m,
                          float scale, float *out) {
    dots_any(FK_F32, n, a, B, ldb, m, scale, out);
}

void moe__dots_f16_avx512(int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb, int64_t m,
                          float scale, float *out) {
    dots_any(FK_F16, n, a, B, ldb, m, scale, out);
}

/* wsum_f32 / wsum_f16 with y in registers, n = N (a multiple of 64, at
 * most 256): axpy's fma per element and row, in row order. */
AI void wsum_reg(const int kind, const int N, const void *s, const void *X, int64_t ldx, int64_t m,
                 float *y) {
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < N / 16; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t j = 0; j < m; j++) {
        const __m512 va = _mm512_set1_ps(flt_at(kind, s, j));
        const char *x = flt_row(kind, X, j, ldx);
#pragma GCC unroll 16
        for (int i = 0; i < N / 16; i++)
            acc[i] = _mm512_fmadd_ps(flt_load16(kind, x, 16 * i), va, acc[i]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < N / 16; i++) _mm512_storeu_ps(y + 16 * i, acc[i]);
}

/* y[i] += a * x[i], x in f16: 16 at a time, then one at a time. */
static void axpy_f16_avx512(int64_t n, float a, const uint16_t *x, float *y) {
    const __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(flt_load16(FK_F16, (const char *)x, i), va,
                                                _mm512_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * _cvtsh_ss(x[i]);
}

/* wsum_f32 (kind FK_F32) / wsum_f16 (FK_F16): y in registers for the head
 * sizes of HEAD_CASES, else the level's axpy row by row. */
AI void wsum_any(const int kind, int64_t n, const void *s, const void *X, int64_t ldx, int64_t m,
                 float *y) {
#define WSUM(N)                                                                                    \
    wsum_reg(kind, N, s, X, ldx, m, y);                                                            \
    return
    switch (n) {
        HEAD_CASES(WSUM)
    default:
        break;
    }
#undef WSUM
    memset(y, 0, (size_t)n * sizeof(float));
    for (int64_t j = 0; j < m; j++) {
        if (kind == FK_F32)
            moe__axpy_f32_avx512(n, flt_at(kind, s, j), (const float *)X + j * ldx, y);
        else
            axpy_f16_avx512(n, flt_at(kind, s, j), (const uint16_t *)X + j * ldx, y);
    }
}

void moe__wsum_f32_avx512(int64_t n, const float *s, const float *X, int64_t ldx, int64_t m,
                          float *y) {
    wsum_any(FK_F32, n, s, X, ldx, m, y);
}

void moe__wsum_f16_avx512(int64_t n, const uint16_t *s, const uint16_t *X, int64_t ldx, int64_t m,
                          float *y) {
    wsum_any(FK_F16, n, s, X, ldx, m, y);
}

/* ==== Grouped-query attention: G heads over the same rows ================= */

/* dots_f16 for G heads, n a multiple of 64: per row, each 64 elements of it
 * converted once and multiplied into every head's 4 accumulators, in
 * vdot_row's order per head (the products commute: the same bits). */
AI void dots_g(const int G, int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb, int64_t m,
               float scale, float *out, int64_t ldo) {
    /* the heads' f16 queries widened once (exact), read as f32 per row;
     * heads too long for the buffer each on its own (the same bits) */
    float af[MOE_ATTN_GROUP * 640];
    if ((size_t)G * (size_t)n > sizeof af / sizeof af[0]) {
        for (int h = 0; h < G; h++)
            dots_any(FK_F16, n, a + (size_t)h * (size_t)n, B, ldb, m, scale,
                     out + (size_t)h * (size_t)ldo);
        return;
    }
    for (int64_t i = 0; i < (int64_t)G * n; i += 16)
        _mm512_storeu_ps(af + i, flt_load16(FK_F16, (const char *)a, i));
    for (int64_t j = 0; j < m; j++) {
        const char *row = flt_row(FK_F16, B, j, ldb);
        __m512 acc[MOE_ATTN_GROUP][4];
#pragma GCC unroll 4
        for (int h = 0; h < G; h++)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) acc[h][u] = _mm512_setzero_ps();
        for (int64_t i = 0; i < n; i += 64) {
            __m512 b[4];
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) b[u] = flt_load16(FK_F16, row, i + 16 * u);
#pragma GCC unroll 4
            for (int h = 0; h < G; h++)
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    acc[h][u] = _mm512_fmadd_ps(
                        _mm512_loadu_ps(af + (size_t)h * (size_t)n + (size_t)(i + 16 * u)), b[u],
                        acc[h][u]);
        }
#pragma GCC unroll 4
        for (int h = 0; h < G; h++)
            out[(size_t)h * (size_t)ldo + (size_t)j] =
                _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[h][0], acc[h][2]),
                                                   _mm512_add_ps(acc[h][1], acc[h][3]))) *
                scale;
    }
}

/* wsum_f16 for G heads, n a multiple of 64: per 64 columns, each row's
 * slice converted once and added into every head's sums, rows in order
 * (wsum_reg's fma per element and row: the same bits). */
AI void wsum_g(const int G, int64_t n, const uint16_t *s, int64_t lds, const uint16_t *X,
               int64_t ldx, int64_t m, float *y, int64_t ldy) {
    for (int64_t i = 0; i < n; i += 64) {
        __m512 acc[MOE_ATTN_GROUP][4];
#pragma GCC unroll 4
        for (int h = 0; h < G; h++)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) acc[h][u] = _mm512_setzero_ps();
        for (int64_t j = 0; j < m; j++) {
            const char *x = flt_row(FK_F16, X, j, ldx);
            __m512 v[4];
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) v[u] = flt_load16(FK_F16, x, i + 16 * u);
#pragma GCC unroll 4
            for (int h = 0; h < G; h++) {
                const __m512 p = _mm512_set1_ps(_cvtsh_ss(s[(size_t)h * (size_t)lds + (size_t)j]));
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++) acc[h][u] = _mm512_fmadd_ps(v[u], p, acc[h][u]);
            }
        }
#pragma GCC unroll 4
        for (int h = 0; h < G; h++)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
                _mm512_storeu_ps(y + (size_t)h * (size_t)ldy + (size_t)(i + 16 * u), acc[h][u]);
    }
}

/* F(G) for the group sizes 1..MOE_ATTN_GROUP */
_Static_assert(MOE_ATTN_GROUP == 4, "GROUP_CASES lists the sizes 1..4");
#define GROUP_CASES(F)                                                                             \
    switch (g) {                                                                                   \
    case 4:                                                                                        \
        F(4);                                                                                      \
        break;                                                                                     \
    case 3:                                                                                        \
        F(3);                                                                                      \
        break;                                                                                     \
    case 2:                                                                                        \
        F(2);                                                                                      \
        break;                                                                                     \
    default:                                                                                       \
        F(1);                                                                                      \
        break;                                                                                     \
    }

void moe__dots_f16_g_avx512(int g, int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb,
                            int64_t m, float scale, float *out, int64_t ldo) {
#define DOTS_G(G) dots_g(G, n, a, B, ldb, m, scale, out, ldo)
    GROUP_CASES(DOTS_G)
#undef DOTS_G
}

void moe__wsum_f16_g_avx512(int g, int64_t n, const uint16_t *s, int64_t lds, const uint16_t *X,
                            int64_t ldx, int64_t m, float *y, int64_t ldy) {
#define WSUM_G(G) wsum_g(G, n, s, lds, X, ldx, m, y, ldy)
    GROUP_CASES(WSUM_G)
#undef WSUM_G
}
