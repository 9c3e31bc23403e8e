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

extern int moe__pf_dist; /* TEMP tuning */

/* Software prefetch for matrix x vector: a kernel reading R rows at once
 * reads R short streams (a Q8_0 row of 1024 is 17 cache lines), which the
 * hardware prefetchers pick up too late; the R rows are one contiguous
 * stretch of memory, so the kernels prefetch that stretch linearly,
 * MOE_PF_DIST bytes ahead of where they read, at the rate they consume it. */
#define MOE_PF_DIST moe__pf_dist

/* Prefetches `bytes` (a constant) bytes from p. */
#define MOE_PREFETCH_SPAN(p, bytes)                                                        \
    do {                                                                                   \
        for (int pf_i_ = 0; pf_i_ < (int)(bytes); pf_i_ += 64)                             \
            __builtin_prefetch((const char *)(p) + pf_i_, 0, 3);                           \
    } while (0)

#endif
