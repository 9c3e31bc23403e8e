/*
 * cpu/kernels.h - internal: the per-level kernel tables and what they share.
 *
 * Each kernels_<level>.c defines one table; cpu.c picks among them at run
 * time (moe_cpu_kernels_get). The SIMD files are compiled with their ISA flags
 * (see the Makefile), so nothing in them may run before cpu.c has checked the
 * CPU: only call through the tables.
 */
#ifndef MOE_CPU_KERNELS_H
#define MOE_CPU_KERNELS_H

#include "moe/ops.h"

extern const moe_cpu_kernels moe__kernels_scalar;
extern const moe_cpu_kernels moe__kernels_avx2;
extern const moe_cpu_kernels moe__kernels_avx512;

/* 1 if the CPU (and OS) has AVX512_BF16 (vdpbf16ps); set by moe_cpu_detect()
 * before any table is handed out. The avx512 table uses it for BF16 weights
 * and falls back to widening + FMA without it. */
extern int moe__cpu_has_avx512bf16;

/* 1 if the CPU has AVX512_VBMI (vpermb); set by moe_cpu_detect(). The
 * avx512 level does not require it (Skylake-SP / Cascade Lake lack it);
 * IQ4_XS decode uses it where it is there. Tests may clear it. */
extern int moe__cpu_has_avx512vbmi;

/* 1 if the Q8_0 fast tile may use AMX-INT8: the CPU has it, the OS granted
 * this process the tile state (arch_prctl) and MOE_AMX is not 0. Set by
 * moe_cpu_detect(); tests may clear it to reach the VNNI tile. */
extern int moe__cpu_use_amx;

/* The Q8_0 fast tiles (q8_fast.h's numerics), the gemm contract with row
 * and activation strides given. The AMX one computes whole tiles of 16 rows
 * from r0 and returns the first row it left (r1 when 16 divides r1 - r0);
 * it falls back to returning r0 if it cannot get scratch memory. */
int64_t moe__q8_fast_amx(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1,
                         const char *X, size_t xrb, int64_t nb, float *Y, int64_t ldy);
void moe__q8_fast_vnni(int64_t k, const char *W, size_t wrb, int64_t r0, int64_t r1, const char *X,
                       size_t xrb, int64_t nb, float *Y, int64_t ldy);
/* q8_tile_avx512.c: the exact transposed tile for Q8_0, and for Q5_0, Q4_1
 * and Q5_1 on their levels (X in wt's dot type, xrb a row); the packed
 * layout's gemm_q8p. */
void moe__q8_tile_avx512(moe_dtype wt, int64_t k, const void *W, size_t wrb, int64_t r0, int64_t r1,
                         const void *X, size_t xrb, int64_t nb, float *Y, int64_t ldy);
/* q8p_fast_avx512.c: the packed Q8_0 layout's one-tile fast kernel (any
 * number of activation rows; gemm_q8p gives it 8-15); 0 (nothing done) when
 * memory for the activations' layout is not there */
int moe__q8p_fast1_avx512(int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                          int64_t nb, float *Y, int64_t ldy);
void moe__q8p_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                          int64_t nb, float *Y, int64_t ldy);

/* Row-op helpers of the SIMD levels; the public row ops (moe_op_swiglu,
 * moe_op_softmax) call the level of moe_cpu_kernels_best() so they round
 * as llama.cpp's build for that level does (ggml's vectorised exp).
 *   swiglu:      y = silu(g) * u.
 *   softmax_exp: x = exp(x - max) in place; returns the sum, as ggml's
 *                ggml_vec_soft_max_f32 forms it. */
void moe__swiglu_avx512(const float *g, const float *u, float *y, int64_t n);
double moe__softmax_exp_avx512(float *x, int64_t n, float max);
void moe__swiglu_avx2(const float *g, const float *u, float *y, int64_t n);
double moe__softmax_exp_avx2(float *x, int64_t n, float max);

/* The quantised weight types other than Q8_0 (quant_*.c): Q4_0, Q4_1, Q5_0,
 * Q5_1, IQ4_NL, Q2_K..Q6_K, IQ4_XS. gemm as the table's contract, one per
 * level; k a multiple of wt's block. */
void moe__quant_gemm_scalar(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                            const void *X, int64_t nb, float *Y, int64_t ldy);
void moe__quant_gemm_avx2(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                          const void *X, int64_t nb, float *Y, int64_t ldy);
void moe__quant_gemm_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                            const void *X, int64_t nb, float *Y, int64_t ldy);
/* F32 / F16 / BF16 weights at the AVX-512 level (flt_gemm_avx512.c): gemm's
 * arithmetic, or with batch tinyBLAS's for one activation row too. */
void moe__flt_gemm_avx512(moe_dtype wt, int batch, int64_t k, const void *W, int64_t r0, int64_t r1,
                          const void *X, int64_t nb, float *Y, int64_t ldy);
/* Q4_K in the packed layout (moe_q4kp_pack), whole tiles [r0, r1): the
 * same bits as moe__quant_gemm_avx512 on the plain rows (quant_avx512.c). */
void moe__q4kp_gemm_avx512(int64_t k, const void *W, int64_t r0, int64_t r1, const void *X,
                           int64_t nb, float *Y, int64_t ldy);
/* Q4_0 / IQ4_NL (wt) in the packed layout (moe_q4p_pack), likewise. */
void moe__q4p_gemm_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                          const void *X, int64_t nb, float *Y, int64_t ldy);
/* IQ4_XS, Q6_K and Q5_K in their packed layouts (moe_iq4xsp_pack,
 * moe_q6kp_pack, moe_q5kp_pack): fast 1 their fast numerics, else gemm's
 * (quant_packed_avx512.c); and their fast numerics on rows as stored, the
 * same bits (wt one of the three; quant_klanes512.h). */
void moe__iq4xsp_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1,
                             const void *X, int64_t nb, float *Y, int64_t ldy);
void moe__q6kp_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1,
                           const void *X, int64_t nb, float *Y, int64_t ldy);
void moe__q5kp_gemm_avx512(int fast, int64_t k, const void *W, int64_t r0, int64_t r1,
                           const void *X, int64_t nb, float *Y, int64_t ldy);
void moe__quant_fast_avx512(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                            const void *X, int64_t nb, float *Y, int64_t ldy);
/* quant_simd.h's arithmetic built for AVX2: the reference that
 * moe__quant_gemm_avx2's faster kernels (every quantised type: its own for
 * Q4_0, IQ4_NL, Q4_K, Q5_K, Q6_K, IQ4_XS, quant_fast256.h's for Q4_1, Q5_0,
 * Q5_1, Q2_K, Q3_K) equal bit for bit, and what they run on rows they leave. */
void moe__quant_gemm_avx2_ref(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                              const void *X, int64_t nb, float *Y, int64_t ldy);
/* quant_simd.h's arithmetic built with the AVX-512 flags: the reference
 * that moe__quant_gemm_avx512's faster kernels (the same types) equal bit
 * for bit, and what they run on rows they leave. */
void moe__quant_gemm_avx512_ref(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,
                                const void *X, int64_t nb, float *Y, int64_t ldy);
/* The scalar dot of one row of the K types (quant_kscalar.c). */
float moe__quant_k_dot_scalar(moe_dtype wt, int64_t k, const void *w, const void *x);
/* Attention's loops at the AVX-512 level (attn_avx512.c), for its table. */
float moe__dot_f32_avx512(int64_t n, const float *a, const float *b);
void moe__axpy_f32_avx512(int64_t n, float a, const float *x, float *y);
void moe__dots_f32_avx512(int64_t n, const float *a, const float *B, int64_t ldb, int64_t m,
                          float scale, float *out);
void moe__wsum_f32_avx512(int64_t n, const float *s, const float *X, int64_t ldx, int64_t m,
                          float *y);
void moe__dots_f16_avx512(int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb, int64_t m,
                          float scale, float *out);
void moe__wsum_f16_avx512(int64_t n, const uint16_t *s, const uint16_t *X, int64_t ldx, int64_t m,
                          float *y);
void moe__dots_f16_g_avx512(int g, int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb,
                            int64_t m, float scale, float *out, int64_t ldo);
void moe__wsum_f16_g_avx512(int g, int64_t n, const uint16_t *s, int64_t lds, const uint16_t *X,
                            int64_t ldx, int64_t m, float *y, int64_t ldy);

/* moe_int8_peak's register loops (cpu/peak.c): n steps each, returning the
 * int8 products done (AMX: TDPBSSD; AVX-512: VPDPBUSD; AVX2: VPMADDUBSW +
 * VPMADDWD). */
uint64_t moe__int8_loop_amx(int64_t n);
uint64_t moe__int8_loop_avx512(int64_t n);
uint64_t moe__int8_loop_avx2(int64_t n);

/* The activation types Q8_1 and Q8_K, the same code at every level (they
 * are a small share of the work): as ggml's x86 from_float. */
void moe__quant_act_from_f32(moe_dtype dt, const float *x, void *y, int64_t n);
/* Q8_K at the AVX2 and AVX-512 levels (quant_avx2.c, quant_avx512.c): the
 * same bytes, faster. */
void moe__quant_q8_K_avx2(const float *x, moe_block_q8_K *y, int64_t n);
void moe__quant_q8_K_avx512(const float *x, moe_block_q8_K *y, int64_t n);

/* dots_f32 / wsum_f32 (moe/ops.h) for level lv as loops over its dot_f32_lv
 * and axpy_f32_lv: the levels without faster ones (scalar, AVX2). */
#define MOE_ATTN_LOOPS(lv)                                                                         \
    static void dots_f32_##lv(int64_t n, const float *a, const float *B, int64_t ldb, int64_t m,   \
                              float scale, float *out) {                                           \
        for (int64_t j = 0; j < m; j++) out[j] = dot_f32_##lv(n, a, B + j * ldb) * scale;          \
    }                                                                                              \
    static void wsum_f32_##lv(int64_t n, const float *s, const float *X, int64_t ldx, int64_t m,   \
                              float *y) {                                                          \
        memset(y, 0, (size_t)n * sizeof(float));                                                   \
        for (int64_t j = 0; j < m; j++) axpy_f32_##lv(n, s[j], X + j * ldx, y);                    \
    }

/* dots_f16 / wsum_f16 for level lv over its dot_f16_lv (ggml_vec_dot_f16)
 * and axpy_f16_lv (y[i] += a * x[i], x in f16). */
#define MOE_ATTN_F16_LOOPS(lv)                                                                     \
    static void dots_f16_##lv(int64_t n, const uint16_t *a, const uint16_t *B, int64_t ldb,        \
                              int64_t m, float scale, float *out) {                                \
        for (int64_t j = 0; j < m; j++) out[j] = dot_f16_##lv(n, a, B + j * ldb) * scale;          \
    }                                                                                              \
    static void wsum_f16_##lv(int64_t n, const uint16_t *s, const uint16_t *X, int64_t ldx,        \
                              int64_t m, float *y) {                                               \
        memset(y, 0, (size_t)n * sizeof(float));                                                   \
        for (int64_t j = 0; j < m; j++) axpy_f16_##lv(n, moe_f16_to_f32(s[j]), X + j * ldx, y);    \
    }

/* Software prefetch distance (bytes) for the kernels that read weight rows
 * in sequence (Q8_0's, the quantised ones of quant_avx2.c and
 * quant_avx512.c; twice this far in their read order where they read 8
 * rows side by side). Measured on the 2-vCPU Xeon build VM (bench-kernels
 * --matvec, 2026-12-07): 2 KB reads the most at 2 threads, where decode
 * runs (Q4_K 0.82 -> 0.90 of the read loop, IQ4_XS 0.80 -> 0.86, Q6_K
 * 0.84 -> 0.90, Q8_0 0.88 -> 0.93 against 8 KB; 1 thread as fast or
 * faster; 16 KB 10-15% slower): a nearer prefetch keeps fewer lines in
 * flight past what the core's fill buffers take while both cores read.
 * The float kernels are as fast without. On the 2-vCPU AMD EPYC (Zen 5)
 * VM 4 KB reads more (bench-kernels --matvec q8_0, three alternating runs
 * each, weight GB/s at 1 / 2 threads: 2 KB 27-29 / 44-50, 4 KB 32-33 /
 * 51-57, 8 KB 30-32 / 52; 16 KB no better; none 22 / 38): its cores take
 * more lines in flight. So the distance is chosen at detection: 4096 on
 * AMD, 2048 elsewhere; MOE_PF_DIST=N in the environment (bytes, 256 to
 * 65536) overrides it. */
extern int moe__pf_dist;
#define MOE_PF_DIST ((size_t)moe__pf_dist)

#endif
