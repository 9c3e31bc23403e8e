/* cpu/quant_avx512.c - the quantised types of quant_simd.h, built with the
 * AVX-512 flags (the compiler may use VNNI / EVEX forms of the same integer
 * operations; the numbers are those of the AVX2 build). */
#define QUANT_GEMM moe__quant_gemm_avx512
#include "quant_simd.h"
