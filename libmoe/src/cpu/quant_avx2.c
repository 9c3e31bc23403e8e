/* cpu/quant_avx2.c - the quantised types of quant_simd.h, built for AVX2. */
#define QUANT_GEMM moe__quant_gemm_avx2
#include "quant_simd.h"
