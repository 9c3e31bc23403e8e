/*
 * cpu/peak.c - the machine's int8 multiply-add peak, measured: each of a
 * pool's threads runs a register-only loop of the instruction the batched
 * int8 tiles multiply with (AMX's TDPBSSD where the fast tile runs on AMX,
 * AVX-512 VNNI's VPDPBUSD, or AVX2's VPMADDUBSW + VPMADDWD), all threads at
 * once, best of a few runs. moectl bench reports a batch's weight
 * multiply-adds per second against it, as it reports decode at batch 1
 * against moe_read_bandwidth.
 *
 * Compiled without ISA flags: the loops live in the level's files.
 */
#include <time.h>

#include "kernels.h"
#include "moe/ops.h"

typedef struct peak_ctx {
    moe_int8_unit unit;
    int64_t n;
} peak_ctx;

static void peak_task(void *arg, int ith, int nth) {
    (void)ith, (void)nth;
    const peak_ctx *c = arg;
    switch (c->unit) {
    case MOE_INT8_AMX:
        moe__int8_loop_amx(c->n);
        break;
    case MOE_INT8_VNNI:
        moe__int8_loop_avx512(c->n);
        break;
    default:
        moe__int8_loop_avx2(c->n);
        break;
    }
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

moe_int8_unit moe_int8_unit_best(void) {
    /* the table in use (MOE_CPU may pick a lower one); AMX only behind AVX-512's */
    if (moe_cpu_kernels_best()->level < MOE_CPU_AVX512) return MOE_INT8_AVX2;
    return moe_cpu_has_amx() ? MOE_INT8_AMX : MOE_INT8_VNNI;
}

const char *moe_int8_unit_name(moe_int8_unit u) {
    return u == MOE_INT8_AMX ? "amx" : u == MOE_INT8_VNNI ? "vnni" : "avx2";
}

double moe_int8_peak_gops(moe_pool *pool, moe_int8_unit unit, int reps) {
    const moe_cpu_level lv = moe_cpu_detect();
    if (lv < MOE_CPU_AVX2 || (unit == MOE_INT8_VNNI && lv < MOE_CPU_AVX512) ||
        (unit == MOE_INT8_AMX && !moe_cpu_has_amx()) || reps < 1)
        return 0;
    /* products per step: 4 x 16384 (AMX), 2048 (VNNI), 256 (AVX2); steps for
     * ~10-30 ms a run on a 2-3 GHz core */
    const int64_t per_step = unit == MOE_INT8_AMX ? 4 * 16384 : unit == MOE_INT8_VNNI ? 2048 : 256;
    peak_ctx c = {unit, unit == MOE_INT8_AMX ? 1 << 19 : unit == MOE_INT8_VNNI ? 1 << 21 : 1 << 22};
    moe_pool_run(pool, peak_task, &(peak_ctx){unit, c.n / 64}); /* warm up (clocks, AMX state) */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = mono_s();
        moe_pool_run(pool, peak_task, &c);
        const double t = mono_s() - t0;
        if (t < best) best = t;
    }
    const int nth = pool ? moe_pool_n_threads(pool) : 1;
    return 2.0 * (double)per_step * (double)c.n * (double)nth / best / 1e9;
}
