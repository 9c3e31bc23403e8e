/*
 * moe/ops.h - CPU kernels, on the stored weight types.
 *
 * Weights stay in their stored type (F32, F16, BF16, Q8_0 and the other GGUF
 * quant types of moe/dtype.h); activations are converted to the weight's dot
 * type first (moe_dtype_dot_type: Q8_0 activations for Q8_0 or Q4_0 weights,
 * Q8_K for the K types, F16 for F16, ...), exactly as llama.cpp does, so
 * results agree with it and the inner loop reads the fewest bytes.
 *
 * The SIMD level is picked at run time from CPUID: AVX-512 (F, BW, VL, VNNI),
 * AVX2 (+FMA, F16C) or scalar. Each level is a table of function pointers;
 * tests compare every level the CPU has against the scalar table.
 *
 *     const moe_cpu_kernels *k = moe_cpu_kernels_best();
 *     // y (nb x m) = x (nb x kdim) . W^T,   W: m rows of kdim in Q8_0
 *     size_t xq_bytes = nb * moe_dtype_row_bytes(moe_dtype_dot_type(wt), kdim);
 *     moe_op_quantize(k, wt, x, xq, nb, kdim);
 *     moe_op_matmul(k, pool, wt, W, m, kdim, xq, nb, y, m);
 */
#ifndef MOE_OPS_H
#define MOE_OPS_H

#include <stdint.h>

#include "moe/dtype.h"
#include "moe/threadpool.h"

typedef enum moe_cpu_level {
    MOE_CPU_SCALAR = 0,
    MOE_CPU_AVX2 = 1,   /* AVX2 + FMA + F16C */
    MOE_CPU_AVX512 = 2, /* AVX-512 F, BW, VL, DQ, VNNI (and BF16 if present) */
    MOE_CPU_LEVEL_COUNT
} moe_cpu_level;

/* A table of kernels for one SIMD level. Members are never NULL. */
typedef struct moe_cpu_kernels {
    moe_cpu_level level;
    const char *name; /* "scalar", "avx2", "avx512" */

    /* Converts n floats (n a multiple of the block size) to type dt, which
     * is a dot type (F32, F16, BF16, Q8_0, Q8_1 or Q8_K), as ggml's x86
     * from_float does. */
    void (*from_f32)(moe_dtype dt, const float *x, void *y, int64_t n);

    /* The GEMM tile: for rows r in [r0, r1) of W and rows b in [0, nb) of X,
     *   Y[b * ldy + r] = dot(W row r, X row b)
     * W: rows of moe_dtype_row_bytes(wt, k) bytes, weight type wt.
     * X: nb rows of moe_dtype_row_bytes(moe_dtype_dot_type(wt), k) bytes.
     * k is a multiple of 32 and of wt's block (256 for the K types).
     * Single-threaded. */
    void (*gemm)(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                 int64_t nb, float *Y, int64_t ldy);

    /* The same product in the fast numerics (moe_cpu_kernels_fast): for Q8_0
     * weights each block's 32 products are summed exactly in int32 and the
     * blocks are accumulated in order, y = fmaf(d_w * d_x, (float)isum, y),
     * identical bit for bit at every level (AMX, AVX-512 VNNI, AVX2, scalar);
     * IQ4_XS, Q5_K and Q6_K at the AVX-512 level likewise per super-block of 256 (its
     * exact sum, y = fmaf(d_w * d_x, (float)isum, y): moe_iq4xsp_pack's
     * fast numerics), as gemm at the others; other types as gemm. */
    void (*gemm_fast)(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                      int64_t nb, float *Y, int64_t ldy);
    int fast; /* 1 in a table from moe_cpu_kernels_fast (gemm is gemm_fast for batches) */
    /* gemm with a batch's arithmetic whatever nb: for 1 row the float types
     * (F32, F16, BF16) take tinyBLAS's one accumulator per output, as from 2
     * rows, where gemm takes ggml's vec_dot (llama.cpp's choice for a single
     * row); the other types as gemm (their arithmetic does not depend on nb).
     * For work whose group sizes depend on how a batch was split
     * (moe_expert_work.batched). */
    void (*gemm_batch)(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                       const void *X, int64_t nb, float *Y, int64_t ldy);
    /* Q8_0 weights in the packed layout (moe_q8p_pack): rows [r0, r1) of
     * the packed tiles (multiples of MOE_Q8P_ROWS), the fast numerics when
     * fast is 1, else the exact ones; the same bits as gemm_fast / gemm on
     * the plain rows. NULL at the levels without it (see moe_q8p_usable). */
    void (*gemm_q8p)(int fast, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                     int64_t nb, float *Y, int64_t ldy);
    /* Q4_K weights in the packed layout (moe_q4kp_pack): rows [r0, r1) of
     * the packed tiles, the same bits as gemm on the plain rows. NULL at the
     * levels without it. */
    void (*gemm_q4kp)(int64_t k, const void *W, int64_t r0, int64_t r1, const void *X, int64_t nb,
                      float *Y, int64_t ldy);
    /* Q4_0 or IQ4_NL (wt) in the packed layout (moe_q4p_pack), likewise. */
    void (*gemm_q4p)(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                     int64_t nb, float *Y, int64_t ldy);
    /* IQ4_XS in the packed layout (moe_iq4xsp_pack): the fast numerics when
     * fast is 1 (gemm_fast's bits on the plain rows), else gemm's. */
    void (*gemm_iq4xsp)(int fast, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                        int64_t nb, float *Y, int64_t ldy);
    /* Q6_K in the packed layout (moe_q6kp_pack), likewise. */
    void (*gemm_q6kp)(int fast, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                      int64_t nb, float *Y, int64_t ldy);
    /* Q5_K in the packed layout (moe_q5kp_pack), likewise. */
    void (*gemm_q5kp)(int fast, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                      int64_t nb, float *Y, int64_t ldy);

    /* sum a[i] * b[i] over n floats. */
    float (*dot_f32)(int64_t n, const float *a, const float *b);
    /* y[i] += a * x[i] over n floats. */
    void (*axpy_f32)(int64_t n, float a, const float *x, float *y);
    /* Attention's two loops over the cache, with the bits of the calls they
     * replace: out[j] = dot_f32(n, a, B + j * ldb) * scale for j < m, and
     * y = 0 then axpy_f32(n, s[j], X + j * ldx, y) for j = 0 .. m - 1. */
    void (*dots_f32)(int64_t n, const float *a, const float *B, int64_t ldb, int64_t m, float scale,
                     float *out);
    void (*wsum_f32)(int64_t n, const float *s, const float *X, int64_t ldx, int64_t m, float *y);
    /* The same two over an f16 KV cache, as ggml's mul_mat runs attention on
     * an F16 cache (flash attention off), where the f32 operand is converted
     * to f16 first: a and s are f16 too (the caller converts them with
     * from_f32). out[j] = ggml_vec_dot_f16(n, a, B + j * ldb) * scale;
     * y = the sum over j of s[j] * X row j, in f32, rows in order. */
    void (*dots_f16)(int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb, int64_t m,
                     float scale, float *out);
    void (*wsum_f16)(int64_t n, const uint16_t *s, const uint16_t *X, int64_t ldx, int64_t m,
                     float *y);
    /* dots_f16 and wsum_f16 for g (1..MOE_ATTN_GROUP) heads that share the
     * rows of B / X (grouped-query attention), each row loaded once: head
     * i's a at a + i * n, its out at out + i * ldo; its s at s + i * lds,
     * its y at y + i * ldy; each head's bits those of its own call. n a
     * multiple of 64; NULL at the levels without them. */
    void (*dots_f16_g)(int g, int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb,
                       int64_t m, float scale, float *out, int64_t ldo);
    void (*wsum_f16_g)(int g, int64_t n, const uint16_t *s, int64_t lds, const uint16_t *X,
                       int64_t ldx, int64_t m, float *y, int64_t ldy);
} moe_cpu_kernels;
/* Heads a dots_f16_g / wsum_f16_g call takes at most. */
#define MOE_ATTN_GROUP 4

/* The best level this CPU supports (detected once; thread-safe). */
moe_cpu_level moe_cpu_detect(void);
/* The kernel table of a level, or NULL if this CPU lacks it. */
const moe_cpu_kernels *moe_cpu_kernels_get(moe_cpu_level level);
/* moe_cpu_kernels_get(moe_cpu_detect()); honours MOE_CPU=scalar|avx2|avx512
 * in the environment to force a lower level. */
const moe_cpu_kernels *moe_cpu_kernels_best(void);

/* Activation rows from which a fast table computes Q8_0 with gemm_fast. */
#define MOE_FAST_MIN_ROWS 3
/* k's level with the fast numerics for batches: its gemm is k->gemm (exact,
 * llama.cpp's arithmetic) for nb < MOE_FAST_MIN_ROWS and k->gemm_fast from
 * there on (an int8 tile: AMX where the CPU and OS allow it, else VNNI).
 * Decode rows are memory-bound and keep the exact path. Returns k itself if
 * k is already fast; never NULL for a table of this CPU. */
const moe_cpu_kernels *moe_cpu_kernels_fast(const moe_cpu_kernels *k);
/* moe_cpu_kernels_best(), or its fast table unless exact. */
const moe_cpu_kernels *moe_cpu_kernels_pick(int exact);

/* ---- Packed Q8_0 ------------------------------------------------------------
 * A Q8_0 matrix (m rows of k) repacked for the batched int8 tiles: each tile
 * of MOE_Q8P_ROWS rows holds, per block, the 16 rows' quants as 8 groups of
 * 4 bytes x 16 rows, each byte offset to unsigned (q ^ 0x80), 512 bytes,
 * and the 16 rows' fp16 scales, 32 bytes: 544 bytes a block, the 16 rows'
 * own bytes (the tile of rows 16t.. stays at byte 16t x row bytes). Blocks
 * go in pairs, quants of both and then scales of both (1088 bytes: with an
 * even number of blocks every 64-byte group load is aligned); an odd last
 * block is its quants, then its scales (moe_q8p_qoff, moe_q8p_doff). The
 * m % 16 rows after the last tile stay as they are. The tiles then read the
 * weights as one sequential stream, with no repacking per call (which took
 * as long as the products at 8 rows per expert). Results are the same bits. */
#define MOE_Q8P_ROWS 16
/* Offsets in a packed tile of block b's quants and scales (nblk blocks a row). */
static inline size_t moe_q8p_qoff(int64_t b) {
    return (size_t)(b / 2) * 1088 + (size_t)(b & 1) * 512;
}
static inline size_t moe_q8p_doff(int64_t b, int64_t nblk) {
    return (b | 1) < nblk ? (size_t)(b / 2) * 1088 + 1024 + (size_t)(b & 1) * 32
                          : (size_t)b * 544 + 512;
}
/* Packs src (m x k Q8_0, row-major) into dst (the same size; not src). */
void moe_q8p_pack(const void *src, void *dst, int64_t m, int64_t k);
/* 1 if the best table computes the packed layout (gemm_q8p), and the Q8_0
 * batches would gain from it: AVX-512 without AMX (whose tile reads rows as
 * they are). MOE_REPACK=0 in the environment says no. */
int moe_q8p_usable(void);

/* ---- Packed Q4_K ------------------------------------------------------------
 * A Q4_K matrix (m rows of k) repacked for a batched int8 tile (VNNI) with
 * gemm's own arithmetic: the same bits (exact integer sums per super-block,
 * then the same two fma per super-block). Tiles of MOE_Q8P_ROWS rows, each
 * the 16 rows' own bytes (the tile of rows 16t.. at byte 16t x row bytes);
 * per super-block of a tile, MOE_Q4KP_BLOCK bytes:
 *   [0, 64)     the scales' low 4 bits, byte 16 (g % 4) + r: row r's group
 *               g (g < 4) in the low nibble, group g + 4 in the high one
 *   [64, 96)    their top 2 bits: of the 64 bytes above, byte j's in the low
 *               (j < 32) or high (j >= 32) nibble of byte j % 32, group g's
 *               in bits 0-1 and g + 4's in bits 2-3
 *   [96, 192)   the minimums, the same way
 *   [192, 224)  the 16 rows' d (fp16), [224, 256) their dmin
 *   [256, 2304) the quants: for group pair p (0..3) and q (0..7), 64 bytes
 *               of 16 rows x qs[32p + 4q .. 32p + 4q + 3]: low nibbles are
 *               group 2p's elements 4q..4q+3, high ones group 2p + 1's
 * The m % 16 rows after the last tile stay as they are. */
#define MOE_Q4KP_BLOCK 2304
/* Packs src (m x k Q4_K, row-major) into dst (the same size; not src). */
void moe_q4kp_pack(const void *src, void *dst, int64_t m, int64_t k);

/* ---- Packed Q4_0 and IQ4_NL ---------------------------------------------
 * The same tiles of 16 rows for the two 32-element 4-bit types (18 bytes a
 * block): per block of a tile, MOE_Q4P_BLOCK bytes, the 16 rows' d (fp16)
 * then, for q (0..3), 64 bytes of 16 rows x qs[4q .. 4q + 3] (low nibbles
 * elements 4q..4q+3, high ones 16 + 4q..). gemm's arithmetic (llama.cpp's
 * 8-row kernels': each block's exact sum, one fma per block), so the same
 * bits. */
#define MOE_Q4P_BLOCK 288
void moe_q4p_pack(const void *src, void *dst, int64_t m, int64_t k);

/* ---- Packed IQ4_XS -------------------------------------------------------
 * The same tiles of 16 rows for IQ4_XS (136 bytes a super-block of 256); per
 * super-block of a tile, MOE_IQ4XSP_BLOCK bytes:
 *   [0, 96)     the 8 groups' 6-bit scales (ls, 0..63; the weight's scale
 *               is ls - 32) of the 16 rows, as moe_q4kp_pack's scales
 *   [96, 128)   the 16 rows' d (fp16)
 *   [128, 2176) the quants: for group g (0..7) and q (0..3), 64 bytes of 16
 *               rows x qs[16g + 4q .. 16g + 4q + 3]: low nibbles are group
 *               g's elements 4q..4q+3, high ones 16 + 4q..
 * Two numerics read it (gemm_iq4xsp): the exact one is gemm's (ggml's 8
 * int32 lanes per row and super-block, 8 float lanes, hsum_float_8), the
 * fast one sums each row's super-block exactly in one int32 and
 * accumulates y = fmaf(d_w * d_x, (float)isum, y) over the super-blocks in
 * order (as gemm_fast on the rows as stored: the same bits). */
#define MOE_IQ4XSP_BLOCK 2176
void moe_iq4xsp_pack(const void *src, void *dst, int64_t m, int64_t k);

/* ---- Packed Q6_K ------------------------------------------------------------
 * The same tiles of 16 rows for Q6_K (210 bytes a super-block of 256); per
 * super-block of a tile, MOE_Q6KP_BLOCK bytes:
 *   [0, 256)     the 16 groups' int8 scales, byte 16g + r: row r's group g
 *   [256, 288)   the 16 rows' d (fp16)
 *   [288, 3360)  the quants: for half h (0..1) and q (0..7), 192 bytes:
 *                16 rows x ql[64h + 4q ..+3], 16 rows x ql[64h + 32 + 4q ..+3]
 *                and 16 rows x qh[32h + 4q ..+3] (elements 128h + 32t + 4q..
 *                for t = 0..3, as Q6_K splits them)
 * Two numerics as IQ4_XS's (gemm_q6kp): the exact one gemm's (ggml's 8
 * lanes), the fast one each row's super-block in one exact int32, one fma
 * with d_w * d_x. */
#define MOE_Q6KP_BLOCK 3360
void moe_q6kp_pack(const void *src, void *dst, int64_t m, int64_t k);

/* ---- Packed Q5_K ------------------------------------------------------------
 * Q4_K's packed layout with Q5_K's fifth bits (176 bytes a super-block of
 * 256); per super-block of a tile, MOE_Q5KP_BLOCK bytes: [0, 256) as Q4_K's
 * (scales, minimums, d, dmin), [256, 768) for q (0..7) 16 rows x qh[4q ..
 * 4q + 3] (bit g: group g's elements 4q..4q+3), [768, 2816) the nibbles as
 * Q4_K's [256, 2304). Two numerics as IQ4_XS's (gemm_q5kp): the exact one
 * gemm's (ggml's 8 lanes, the minimums' float sum), the fast one Q4_K's
 * packed arithmetic (one exact int32 per row and super-block for the
 * scales and one for the minimums, two fma). */
#define MOE_Q5KP_BLOCK 2816
void moe_q5kp_pack(const void *src, void *dst, int64_t m, int64_t k);

/* Packs src of weight type t (Q8_0, Q4_K, Q5_K, Q6_K, Q4_0, IQ4_NL or IQ4_XS)
 * into dst. */
void moe_packed_pack(moe_dtype t, const void *src, void *dst, int64_t m, int64_t k);
/* 1 if weights of type t are packed at load here (moe_repack): Q8_0 where
 * moe_q8p_usable, Q4_K, Q5_K, Q6_K, Q4_0, IQ4_NL and IQ4_XS where the best table has their
 * packed kernels (AVX-512); MOE_REPACK=0 in the environment says no. */
int moe_packed_usable(moe_dtype t);
/* 1 if the Q8_0 fast tile runs on AMX-INT8 here (MOE_AMX=0 turns it off). */
int moe_cpu_has_amx(void);
/* The best level's name, with "+amx" when the fast tile uses AMX: "avx512+amx". */
const char *moe_cpu_describe(void);

/* ---- Matrix ops ----------------------------------------------------------- */

/* Converts nrows rows of n floats (contiguous) to the dot type of weight type
 * wt; dst holds nrows * moe_dtype_row_bytes(moe_dtype_dot_type(wt), n) bytes. */
void moe_op_quantize(const moe_cpu_kernels *k, moe_dtype wt, const float *x, void *dst,
                     int64_t nrows, int64_t n);

/* Y (nb rows, row stride ldy) = Xq . W^T, where W is m rows of kdim elements
 * of type wt and Xq came from moe_op_quantize. Splits the rows of W over the
 * pool's threads (pool may be NULL). */
void moe_op_matmul(const moe_cpu_kernels *k, moe_pool *pool, moe_dtype wt, const void *W, int64_t m,
                   int64_t kdim, const void *Xq, int64_t nb, float *Y, int64_t ldy);

/* The machine's memory read bandwidth in GB/s with the pool's threads (pool
 * may be NULL: one thread): a plain loop summing `bytes` (make it much
 * larger than the caches, e.g. 256 MB) of freshly written memory, best of
 * `reps` passes. The yardstick for decode at batch 1, which reads every
 * active weight once per token. 0 if the buffer cannot be allocated. */
double moe_read_bandwidth(moe_pool *pool, size_t bytes, int reps);
/* Threads whose partial sums moe_read_bandwidth keeps (more still read). */
#define MOE_READ_MAX_THREADS 64

/* The int8 multiply-add units the batched tiles use. */
typedef enum moe_int8_unit {
    MOE_INT8_AVX2, /* VPMADDUBSW + VPMADDWD */
    MOE_INT8_VNNI, /* AVX-512 VPDPBUSD */
    MOE_INT8_AMX   /* AMX-INT8 TDPBSSD */
} moe_int8_unit;
/* The unit the Q8_0 fast tile runs on here (AMX where moe_cpu_has_amx()). */
moe_int8_unit moe_int8_unit_best(void);
/* "avx2", "vnni", "amx". */
const char *moe_int8_unit_name(moe_int8_unit u);
/* The machine's int8 peak on unit u in GOPS (a multiply-add is 2 ops) with
 * the pool's threads (pool may be NULL: one thread): a register-only loop
 * of the unit's instruction on every thread at once, best of reps runs. The
 * yardstick for batches, which are compute-bound. 0 if the CPU lacks it. */
double moe_int8_peak_gops(moe_pool *pool, moe_int8_unit u, int reps);

/* ---- Elementwise / row ops (single-threaded, one row) ---------------------- */

/* y = x / sqrt(mean(x^2) + eps) * w; w may be NULL (no weight). The sum of
 * squares is accumulated in double, as ggml. y may equal x. */
void moe_op_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y);
/* moe_op_rmsnorm on nrows rows of n (x and y with a row stride of n), the
 * same bits: each row's sum in its own order, 4 rows' sums interleaved (one
 * row's chain of double adds waits on each add's latency). */
void moe_op_rmsnorm_rows(const float *x, const float *w, int64_t nrows, int64_t n, float eps,
                         float *y);

/* In-place softmax over n floats (max subtracted, sum in double). */
void moe_op_softmax(float *x, int64_t n);

/* y[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u. y may alias g or u. */
void moe_op_swiglu(const float *g, const float *u, float *y, int64_t n);

/* Rotary position embedding parameters. */
typedef struct moe_rope {
    int n_rot;        /* rotated dims per head (<= head_dim, even) */
    int neox;         /* 0: rotate pairs (2i, 2i+1) (llama "normal");
                       * 1: rotate pairs (i, i + n_rot/2) (NeoX) */
    float freq_base;  /* theta base, e.g. 10000 */
    float freq_scale; /* 1 / linear scaling factor; 1 for none */
    /* YaRN (0 ext_factor = off) */
    float ext_factor;
    float attn_factor; /* magnitude scale, 1 for none */
    float beta_fast;
    float beta_slow;
    int n_ctx_orig;
} moe_rope;

/* Fills params with no scaling: freq_scale 1, ext_factor 0, attn_factor 1. */
void moe_rope_init(moe_rope *r, int n_rot, int neox, float freq_base);

/* Rotates n_heads heads of head_dim floats (contiguous) in place for
 * position pos, as ggml_rope_ext does. */
void moe_op_rope(const moe_rope *r, float *x, int64_t n_heads, int64_t head_dim, int64_t pos);

#endif
