/*
 * cpu/cpu.c - SIMD level detection and dispatch, the threaded matmul, and the
 * row ops (rmsnorm, softmax, swiglu, rope) written plainly after ggml's CPU
 * code so the numbers agree with llama.cpp.
 *
 * Compiled without ISA flags: only CPUID/XGETBV here; the SIMD code lives in
 * kernels_<level>.c and is reached through the tables once the CPU has been
 * checked.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define MOE_X86 1
#endif
#if defined(MOE_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define MOE_AMX_LINUX 1
#endif

#include "../internal.h"
#include "../quant.h"
#include "kernels.h"
#include "moe/error.h"
#include "moe/ops.h"

int moe__cpu_has_avx512bf16;
int moe__cpu_has_avx512vbmi;
int moe__cpu_use_amx;
int moe__pf_dist = 2048;

/* ==== Detection ============================================================ */

static moe_cpu_level cpu_level = MOE_CPU_SCALAR;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

#ifdef MOE_X86
static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

#ifdef MOE_X86
/* AMX-TILE and AMX-INT8 in CPUID, the tile state enabled in XCR0, and this
 * process granted it by the kernel (Linux asks for it once per process:
 * arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); MOE_AMX=0 says no. */
static int amx_usable(unsigned d7, uint64_t xcr0) {
    const char *env = getenv("MOE_AMX");
    if (env && !strcmp(env, "0")) return 0;
    if (!((d7 >> 24) & 1) || !((d7 >> 25) & 1)) return 0;
    if ((xcr0 & 0x60000) != 0x60000) return 0; /* XTILECFG, XTILEDATA */
#ifdef MOE_AMX_LINUX
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
#else
    return 0;
#endif
}
#endif

/* kernels.h's MOE_PF_DIST: 4 KB on AMD, 2 KB elsewhere, or the environment's */
static void pf_dist_detect(int amd) {
    moe__pf_dist = amd ? 4096 : 2048;
    const char *env = getenv("MOE_PF_DIST");
    if (env && *env) {
        char *end;
        const long v = strtol(env, &end, 10);
        if (!*end && v >= 256 && v <= 65536) moe__pf_dist = (int)v;
    }
}

static void cpu_detect_once(void) {
#ifdef MOE_X86
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d))
        pf_dist_detect(b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u); /* AuthenticAMD */
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const int f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    const uint64_t xcr0 = xgetbv0();
    const int os_avx = (xcr0 & 0x6) == 0x6;      /* XMM and YMM state */
    const int os_avx512 = (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (!os_avx || __get_cpuid_max(0, NULL) < 7) return;
    unsigned a7, b7, c7, d7;
    __cpuid_count(7, 0, a7, b7, c7, d7);
    const int avx2 = (b7 >> 5) & 1;
    if (!(avx2 && fma && f16c)) return;
    cpu_level = MOE_CPU_AVX2;

    const int f = (b7 >> 16) & 1, dq = (b7 >> 17) & 1, bw = (b7 >> 30) & 1, vl = (b7 >> 31) & 1;
    const int vnni = (c7 >> 11) & 1;
    if (!(os_avx512 && f && dq && bw && vl && vnni)) return;
    cpu_level = MOE_CPU_AVX512;
    moe__cpu_has_avx512vbmi = (c7 >> 1) & 1;
    if (a7 >= 1) {
        unsigned a71, b71, c71, d71;
        __cpuid_count(7, 1, a71, b71, c71, d71);
        moe__cpu_has_avx512bf16 = (a71 >> 5) & 1;
    }
    moe__cpu_use_amx = amx_usable(d7, xcr0);
#endif
}

moe_cpu_level moe_cpu_detect(void) {
    pthread_once(&cpu_once, cpu_detect_once);
    return cpu_level;
}

const moe_cpu_kernels *moe_cpu_kernels_get(moe_cpu_level level) {
    const moe_cpu_level have = moe_cpu_detect();
    if ((int)level < 0 || level >= MOE_CPU_LEVEL_COUNT || level > have) return NULL;
    switch (level) {
    case MOE_CPU_SCALAR:
        return &moe__kernels_scalar;
    case MOE_CPU_AVX2:
        return &moe__kernels_avx2;
    case MOE_CPU_AVX512:
        return &moe__kernels_avx512;
    default:
        return NULL;
    }
}

const moe_cpu_kernels *moe_cpu_kernels_best(void) {
    moe_cpu_level level = moe_cpu_detect();
    const char *want = getenv("MOE_CPU");
    if (want && *want) {
        static const char *const names[MOE_CPU_LEVEL_COUNT] = {"scalar", "avx2", "avx512"};
        for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++)
            if (!strcasecmp(want, names[l]) && (moe_cpu_level)l < level) level = (moe_cpu_level)l;
    }
    return moe_cpu_kernels_get(level);
}

int moe_cpu_has_amx(void) {
    moe_cpu_detect();
    return moe__cpu_use_amx;
}

const char *moe_cpu_describe(void) {
    const char *name = moe_cpu_kernels_best()->name;
    if (!moe_cpu_has_amx() || strcmp(name, "avx512")) return name;
    return "avx512+amx";
}

/* The fast tables: each level's table with gemm switching to gemm_fast from
 * MOE_FAST_MIN_ROWS activation rows. */
#define FAST_GEMM(lv)                                                                              \
    static void gemm_batch_##lv(moe_dtype wt, int64_t k, const void *W, int64_t r0, int64_t r1,    \
                                const void *X, int64_t nb, float *Y, int64_t ldy) {                \
        if (nb >= MOE_FAST_MIN_ROWS)                                                               \
            moe__kernels_##lv.gemm_fast(wt, k, W, r0, r1, X, nb, Y, ldy);                          \
        else                                                                                       \
            moe__kernels_##lv.gemm(wt, k, W, r0, r1, X, nb, Y, ldy);                               \
    }
FAST_GEMM(scalar)
FAST_GEMM(avx2)
FAST_GEMM(avx512)

static moe_cpu_kernels fast_tables[MOE_CPU_LEVEL_COUNT];
static pthread_once_t fast_once = PTHREAD_ONCE_INIT;

static void fast_init(void) {
    const moe_cpu_kernels *base[MOE_CPU_LEVEL_COUNT] = {&moe__kernels_scalar, &moe__kernels_avx2,
                                                        &moe__kernels_avx512};
    void (*gemm[MOE_CPU_LEVEL_COUNT])(moe_dtype, int64_t, const void *, int64_t, int64_t,
                                      const void *, int64_t, float *, int64_t) = {
        gemm_batch_scalar, gemm_batch_avx2, gemm_batch_avx512};
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        fast_tables[l] = *base[l];
        fast_tables[l].gemm = gemm[l];
        fast_tables[l].fast = 1;
    }
}

const moe_cpu_kernels *moe_cpu_kernels_fast(const moe_cpu_kernels *k) {
    if (!k || k->fast) return k;
    pthread_once(&fast_once, fast_init);
    return &fast_tables[k->level];
}

const moe_cpu_kernels *moe_cpu_kernels_pick(int exact) {
    const moe_cpu_kernels *k = moe_cpu_kernels_best();
    return exact ? k : moe_cpu_kernels_fast(k);
}

/* ==== Matrix ops =========================================================== */

void moe_op_quantize(const moe_cpu_kernels *k, moe_dtype wt, const float *x, void *dst,
                     int64_t nrows, int64_t n) {
    const moe_dtype dt = moe_dtype_dot_type(wt);
    const size_t rb = moe_dtype_row_bytes(dt, n);
    for (int64_t i = 0; i < nrows; i++) k->from_f32(dt, x + i * n, (char *)dst + (size_t)i * rb, n);
}

/* Rows of W are handed out in chunks of a multiple of this many (the
 * AVX-512 Q8_0 tile). */
#define MATMUL_ROW_UNIT 16
/* Activation rows per gemm call when the batch is large; the weight rows of
 * one chunk (about MATMUL_W_BYTES) then stay in L2 while the batch tiles
 * sweep over them. */
#define MATMUL_NB_TILE 64
#define MATMUL_W_BYTES (256 * 1024)
/* With a small batch, chunks of about 1/MATMUL_CHUNKS_PER_THREAD of a
 * thread's share. */
#define MATMUL_CHUNKS_PER_THREAD 4
/* Below this many multiply-adds a matmul runs on the calling thread alone. */
#define MATMUL_MIN_PARALLEL (1 << 17)

/* Threads take chunks of contiguous rows (each read as sequential streams)
 * from a shared counter until none is left, so a thread that starts late (a
 * worker woken from its futex) or runs slowly (a core shared with another
 * process) leaves its rows to the others instead of holding them up. Each
 * output's arithmetic does not depend on which thread computes it or which
 * rows share its gemm call, so results are identical for any number of
 * threads. */
typedef struct matmul_ctx {
    const moe_cpu_kernels *k;
    moe__mm_job J;                  /* the product (J.ns unused) */
    int64_t chunk;                  /* rows per chunk */
    _Alignas(64) atomic_llong next; /* first row of the next chunk */
} matmul_ctx;

static void matmul_rows(const matmul_ctx *c, int64_t r0, int64_t r1) {
    const moe__mm_job *J = &c->J;
    if (J->nb <= MATMUL_NB_TILE) {
        c->k->gemm(J->wt, J->k, J->W, r0, r1, J->X, J->nb, J->Y, J->ldy);
        return;
    }
    const size_t xrb = moe__act_row_bytes(J->wt, J->k);
    for (int64_t b0 = 0; b0 < J->nb; b0 += MATMUL_NB_TILE) {
        const int64_t nbt = J->nb - b0 < MATMUL_NB_TILE ? J->nb - b0 : MATMUL_NB_TILE;
        c->k->gemm(J->wt, J->k, J->W, r0, r1, (const char *)J->X + (size_t)b0 * xrb, nbt,
                   J->Y + b0 * J->ldy, J->ldy);
    }
}

static void matmul_task(void *arg, int ith, int nth) {
    matmul_ctx *c = arg;
    (void)ith;
    (void)nth;
    for (;;) {
        const int64_t r0 = atomic_fetch_add_explicit(&c->next, c->chunk, memory_order_relaxed);
        if (r0 >= c->J.m) break;
        matmul_rows(c, r0, r0 + c->chunk < c->J.m ? r0 + c->chunk : c->J.m);
    }
}

void moe_op_matmul(const moe_cpu_kernels *k, moe_pool *pool, moe_dtype wt, const void *W, int64_t m,
                   int64_t kdim, const void *Xq, int64_t nb, float *Y, int64_t ldy) {
    if (m <= 0 || nb <= 0) return;
    MOE_ASSERT(kdim % MOE_QK8_0 == 0 && ldy >= m);
    matmul_ctx c = {.k = k, .J = {wt, W, m, kdim, Xq, nb, Y, ldy, NULL}};
    const int nth = moe_pool_n_threads(pool);
    const int64_t units = (m + MATMUL_ROW_UNIT - 1) / MATMUL_ROW_UNIT;
    int64_t cu; /* units per chunk */
    if (nb > MATMUL_NB_TILE) {
        cu = (int64_t)(MATMUL_W_BYTES / moe_dtype_row_bytes(wt, kdim)) / MATMUL_ROW_UNIT;
    } else {
        cu = units / ((int64_t)nth * MATMUL_CHUNKS_PER_THREAD);
    }
    if (cu < 1) cu = 1;
    c.chunk = cu * MATMUL_ROW_UNIT;
    atomic_init(&c.next, 0);
    if (nth == 1 || units < 2 || (double)m * (double)kdim * (double)nb < MATMUL_MIN_PARALLEL)
        matmul_task(&c, 0, 1);
    else
        moe_pool_run(pool, matmul_task, &c);
}

/* ==== Row ops ============================================================== */

static void rms_scale(const float *x, const float *w, int64_t n, float scale, float *y) {
    if (w) {
        for (int64_t i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
    } else {
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale;
    }
}

void moe_op_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    rms_scale(x, w, n, 1.0f / sqrtf(mean + eps), y);
}

void moe_op_rmsnorm_rows(const float *x, const float *w, int64_t nrows, int64_t n, float eps,
                         float *y) {
    int64_t r = 0;
    for (; r + 4 <= nrows; r += 4) {
        const float *x0 = x + r * n, *x1 = x0 + n, *x2 = x1 + n, *x3 = x2 + n;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        for (int64_t i = 0; i < n; i++) {
            s0 += (double)(x0[i] * x0[i]);
            s1 += (double)(x1[i] * x1[i]);
            s2 += (double)(x2[i] * x2[i]);
            s3 += (double)(x3[i] * x3[i]);
        }
        const double s[4] = {s0, s1, s2, s3};
        for (int j = 0; j < 4; j++) {
            const float mean = (float)(s[j] / (double)n);
            rms_scale(x + (r + j) * n, w, n, 1.0f / sqrtf(mean + eps), y + (r + j) * n);
        }
    }
    for (; r < nrows; r++) moe_op_rmsnorm(x + r * n, w, n, eps, y + r * n);
}

/* The row ops follow moe_cpu_kernels_best()'s level, chosen once: llama.cpp
 * computes softmax and SiLU with ggml's vectorised exp on whole vectors
 * (16 floats on its AVX-512 builds, 8 on AVX2) and expf on the rest, and so
 * do these, so they round alike. */
typedef struct rowops {
    void (*swiglu)(const float *g, const float *u, float *y, int64_t n);
    double (*softmax_exp)(float *x, int64_t n, float max);
} rowops;

static void swiglu_scalar(const float *g, const float *u, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i];
        y[i] = gi / (1.0f + expf(-gi)) * u[i];
    }
}

static double softmax_exp_scalar(float *x, int64_t n, float max) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float e = expf(x[i] - max);
        x[i] = e;
        sum += (double)e;
    }
    return sum;
}

static rowops row_ops = {swiglu_scalar, softmax_exp_scalar};
static pthread_once_t row_ops_once = PTHREAD_ONCE_INIT;

static void row_ops_init(void) {
    switch (moe_cpu_kernels_best()->level) {
    case MOE_CPU_AVX512:
        row_ops = (rowops){moe__swiglu_avx512, moe__softmax_exp_avx512};
        break;
    case MOE_CPU_AVX2:
        row_ops = (rowops){moe__swiglu_avx2, moe__softmax_exp_avx2};
        break;
    default:
        break;
    }
}

void moe_op_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    pthread_once(&row_ops_once, row_ops_init);
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = max > x[i] ? max : x[i]; /* ggml's MAX */
    const double sum = row_ops.softmax_exp(x, n, max);
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void moe_op_swiglu(const float *g, const float *u, float *y, int64_t n) {
    pthread_once(&row_ops_once, row_ops_init);
    row_ops.swiglu(g, u, y, n);
}

void moe_rope_init(moe_rope *r, int n_rot, int neox, float freq_base) {
    /* no scaling; YaRN off (ext_factor 0), its betas at llama.cpp's defaults */
    *r = (moe_rope){.n_rot = n_rot,
                    .neox = neox,
                    .freq_base = freq_base,
                    .freq_scale = 1.0f,
                    .attn_factor = 1.0f,
                    .beta_fast = 32.0f,
                    .beta_slow = 1.0f};
}

/* ggml_rope_yarn_corr_dim(s) */
static float rope_yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    return n_dims * logf(n_ctx_orig / (n_rot * 2 * (float)M_PI)) / (2 * logf(base));
}

/* ggml's MAX/MIN (their NaN behaviour included) */
#define ROPE_MAX(a, b) ((a) > (b) ? (a) : (b))
#define ROPE_MIN(a, b) ((a) < (b) ? (a) : (b))

static float rope_yarn_ramp(float low, float high, int i0) {
    const float y = (i0 / 2 - low) / ROPE_MAX(0.001f, high - low);
    return 1 - ROPE_MIN(1, ROPE_MAX(0, y));
}

void moe_op_rope(const moe_rope *r, float *x, int64_t n_heads, int64_t head_dim, int64_t pos) {
    const int n_dims = r->n_rot;
    MOE_ASSERT(n_dims % 2 == 0 && n_dims <= head_dim);
    const float theta_scale = powf(r->freq_base, -2.0f / n_dims);
    float corr[2] = {0.0f, 0.0f};
    if (r->ext_factor != 0.0f) {
        const float start =
            floorf(rope_yarn_corr_dim(n_dims, r->n_ctx_orig, r->beta_fast, r->freq_base));
        const float end =
            ceilf(rope_yarn_corr_dim(n_dims, r->n_ctx_orig, r->beta_slow, r->freq_base));
        corr[0] = ROPE_MAX(0, start);
        corr[1] = ROPE_MIN(n_dims - 1, end);
    }
    const int64_t off = r->neox ? n_dims / 2 : 1; /* distance between the two of a pair */
    float theta = (float)pos;                     /* theta_base = p, as ggml */
    for (int i0 = 0; i0 < n_dims; i0 += 2) {
        /* rope_yarn */
        const float theta_extrap = theta;
        const float theta_interp = r->freq_scale * theta_extrap;
        float th = theta_interp, mscale = r->attn_factor;
        if (r->ext_factor != 0.0f) {
            const float ramp_mix = rope_yarn_ramp(corr[0], corr[1], i0) * r->ext_factor;
            th = theta_interp * (1 - ramp_mix) + theta_extrap * ramp_mix;
            mscale *= 1.0f + 0.1f * logf(1.0f / r->freq_scale);
        }
        const float cos_t = cosf(th) * mscale, sin_t = sinf(th) * mscale;
        const int64_t ic = r->neox ? i0 / 2 : i0;
        for (int64_t h = 0; h < n_heads; h++) {
            float *p = x + h * head_dim + ic;
            const float x0 = p[0], x1 = p[off];
            p[0] = x0 * cos_t - x1 * sin_t;
            p[off] = x0 * sin_t + x1 * cos_t;
        }
        theta *= theta_scale;
    }
}

/* ==== Packed Q8_0 ========================================================== */

void moe_q8p_pack(const void *src, void *dst, int64_t m, int64_t k) {
    const int64_t nblk = k / MOE_QK8_0;
    const size_t rb = (size_t)nblk * sizeof(moe_block_q8_0);
    const int64_t nt = m / MOE_Q8P_ROWS;
    for (int64_t t = 0; t < nt; t++) {
        const char *s = (const char *)src + (size_t)t * MOE_Q8P_ROWS * rb;
        uint8_t *d = (uint8_t *)dst + (size_t)t * MOE_Q8P_ROWS * rb;
        for (int64_t b = 0; b < nblk; b++) {
            uint8_t *q = d + moe_q8p_qoff(b), *sc = d + moe_q8p_doff(b, nblk);
            for (int r = 0; r < MOE_Q8P_ROWS; r++) {
                const moe_block_q8_0 *x = (const moe_block_q8_0 *)(s + (size_t)r * rb) + b;
                memcpy(sc + 2 * r, &x->d, 2);
                for (int j = 0; j < 8; j++) { /* 4 quants at a time, each ^ 0x80 */
                    uint32_t v;
                    memcpy(&v, x->qs + 4 * j, 4);
                    v ^= 0x80808080u;
                    memcpy(q + 64 * j + 4 * r, &v, 4);
                }
            }
        }
    }
    const size_t done = (size_t)nt * MOE_Q8P_ROWS * rb;
    memcpy((char *)dst + done, (const char *)src + done, (size_t)(m - nt * MOE_Q8P_ROWS) * rb);
}

/* Group g's 6-bit values of 16 rows (v[r][g]) into the 96 bytes at d, as
 * moe_q4kp_pack lays out Q4_K's scales. */
static void k6_pack16(const int v[MOE_Q8P_ROWS][8], uint8_t *d) {
    memset(d, 0, 96);
    for (int r = 0; r < MOE_Q8P_ROWS; r++)
        for (int g = 0; g < 4; g++) {
            const int j = 16 * g + r, sh = j < 32 ? 0 : 4;
            d[j] = (uint8_t)((v[r][g] & 15) | (v[r][g + 4] & 15) << 4);
            d[64 + j % 32] |= (uint8_t)(((v[r][g] >> 4) | (v[r][g + 4] >> 4) << 2) << sh);
        }
}

/* The packers of the 16-row tiles with one packed block per block of the
 * type (all but Q8_0's pairs): for each tile of src (m x k of type t) and
 * block b, blk(x, rb, b, d) packs block b of the 16 rows at x (rb bytes
 * apart) into the pb bytes at d; the m % 16 rows after the last tile are
 * copied as they are. */
static void pack_tiles(moe_dtype t, size_t pb, const void *src, void *dst, int64_t m, int64_t k,
                       void (*blk)(const char *x, size_t rb, int64_t b, uint8_t *d)) {
    const int64_t nblk = k / (int64_t)moe_dtype_block_elems(t);
    const size_t rb = moe_dtype_row_bytes(t, k);
    const int64_t nt = m / MOE_Q8P_ROWS;
    for (int64_t tl = 0; tl < nt; tl++) {
        const char *s = (const char *)src + (size_t)tl * MOE_Q8P_ROWS * rb;
        uint8_t *d0 = (uint8_t *)dst + (size_t)tl * MOE_Q8P_ROWS * rb;
        for (int64_t b = 0; b < nblk; b++) blk(s, rb, b, d0 + (size_t)b * pb);
    }
    const size_t done = (size_t)nt * MOE_Q8P_ROWS * rb;
    memcpy((char *)dst + done, (const char *)src + done, (size_t)(m - nt * MOE_Q8P_ROWS) * rb);
}

/* Q4_K (q5 = 0) and Q5_K blocks share d, dmin and the scales; Q5_K's qh
 * goes after the scales, its quants after that. */
static void k45p_block(int q5, const char *s, size_t rb, int64_t b, uint8_t *d) {
    int sc[MOE_Q8P_ROWS][8], mn[MOE_Q8P_ROWS][8];
    const size_t qs_at = q5 ? 768 : 256;
    for (int r = 0; r < MOE_Q8P_ROWS; r++) {
        const moe_block_q4_K *x4 = (const moe_block_q4_K *)(s + (size_t)r * rb) + b;
        const moe_block_q5_K *x5 = (const moe_block_q5_K *)(s + (size_t)r * rb) + b;
        const uint8_t *scales = q5 ? x5->scales : x4->scales, *qs = q5 ? x5->qs : x4->qs;
        for (int g = 0; g < 8; g++) moe__k4_scale_min(g, scales, &sc[r][g], &mn[r][g]);
        memcpy(d + 192 + 2 * r, q5 ? &x5->d : &x4->d, 2);
        memcpy(d + 224 + 2 * r, q5 ? &x5->dmin : &x4->dmin, 2);
        if (q5)
            for (int q = 0; q < 8; q++) memcpy(d + 256 + 64 * q + 4 * r, x5->qh + 4 * q, 4);
        for (int p = 0; p < 4; p++)
            for (int q = 0; q < 8; q++)
                memcpy(d + qs_at + (size_t)(8 * p + q) * 64 + 4 * r, qs + 32 * p + 4 * q, 4);
    }
    k6_pack16(sc, d);
    k6_pack16(mn, d + 96);
}
static void q4kp_block(const char *s, size_t rb, int64_t b, uint8_t *d) {
    k45p_block(0, s, rb, b, d);
}
void moe_q4kp_pack(const void *src, void *dst, int64_t m, int64_t k) {
    pack_tiles(MOE_DTYPE_Q4_K, MOE_Q4KP_BLOCK, src, dst, m, k, q4kp_block);
}

static void q4p_block(const char *s, size_t rb, int64_t b, uint8_t *d) {
    for (int r = 0; r < MOE_Q8P_ROWS; r++) {
        const moe_block_q4_0 *x = (const moe_block_q4_0 *)(s + (size_t)r * rb) + b;
        memcpy(d + 2 * r, &x->d, 2);
        for (int q = 0; q < 4; q++) memcpy(d + 32 + 64 * q + 4 * r, x->qs + 4 * q, 4);
    }
}
void moe_q4p_pack(const void *src, void *dst, int64_t m, int64_t k) {
    /* IQ4_NL's blocks have Q4_0's bytes */
    pack_tiles(MOE_DTYPE_Q4_0, MOE_Q4P_BLOCK, src, dst, m, k, q4p_block);
}

static void iq4xsp_block(const char *s, size_t rb, int64_t b, uint8_t *d) {
    int ls[MOE_Q8P_ROWS][8];
    for (int r = 0; r < MOE_Q8P_ROWS; r++) {
        const moe_block_iq4_xs *x = (const moe_block_iq4_xs *)(s + (size_t)r * rb) + b;
        for (int g = 0; g < 8; g++)
            ls[r][g] = ((x->scales_l[g / 2] >> 4 * (g % 2)) & 15) | ((x->scales_h >> 2 * g) & 3)
                                                                        << 4;
        memcpy(d + 96 + 2 * r, &x->d, 2);
        for (int g = 0; g < 8; g++)
            for (int q = 0; q < 4; q++)
                memcpy(d + 128 + (size_t)(4 * g + q) * 64 + 4 * r, x->qs + 16 * g + 4 * q, 4);
    }
    k6_pack16(ls, d);
}
void moe_iq4xsp_pack(const void *src, void *dst, int64_t m, int64_t k) {
    pack_tiles(MOE_DTYPE_IQ4_XS, MOE_IQ4XSP_BLOCK, src, dst, m, k, iq4xsp_block);
}

static void q5kp_block(const char *s, size_t rb, int64_t b, uint8_t *d) {
    k45p_block(1, s, rb, b, d);
}
void moe_q5kp_pack(const void *src, void *dst, int64_t m, int64_t k) {
    pack_tiles(MOE_DTYPE_Q5_K, MOE_Q5KP_BLOCK, src, dst, m, k, q5kp_block);
}

static void q6kp_block(const char *s, size_t rb, int64_t b, uint8_t *d) {
    for (int r = 0; r < MOE_Q8P_ROWS; r++) {
        const moe_block_q6_K *x = (const moe_block_q6_K *)(s + (size_t)r * rb) + b;
        for (int g = 0; g < 16; g++) d[16 * g + r] = (uint8_t)x->scales[g];
        memcpy(d + 256 + 2 * r, &x->d, 2);
        for (int h = 0; h < 2; h++)
            for (int q = 0; q < 8; q++) {
                uint8_t *o = d + 288 + (size_t)(8 * h + q) * 192 + 4 * r;
                memcpy(o, x->ql + 64 * h + 4 * q, 4);
                memcpy(o + 64, x->ql + 64 * h + 32 + 4 * q, 4);
                memcpy(o + 128, x->qh + 32 * h + 4 * q, 4);
            }
    }
}
void moe_q6kp_pack(const void *src, void *dst, int64_t m, int64_t k) {
    pack_tiles(MOE_DTYPE_Q6_K, MOE_Q6KP_BLOCK, src, dst, m, k, q6kp_block);
}

void moe_packed_pack(moe_dtype t, const void *src, void *dst, int64_t m, int64_t k) {
    if (t == MOE_DTYPE_Q4_K)
        moe_q4kp_pack(src, dst, m, k);
    else if (t == MOE_DTYPE_Q4_0 || t == MOE_DTYPE_IQ4_NL)
        moe_q4p_pack(src, dst, m, k);
    else if (t == MOE_DTYPE_IQ4_XS)
        moe_iq4xsp_pack(src, dst, m, k);
    else if (t == MOE_DTYPE_Q6_K)
        moe_q6kp_pack(src, dst, m, k);
    else if (t == MOE_DTYPE_Q5_K)
        moe_q5kp_pack(src, dst, m, k);
    else
        moe_q8p_pack(src, dst, m, k);
}

int moe_packed_usable(moe_dtype t) {
    if (t == MOE_DTYPE_Q8_0) return moe_q8p_usable();
    if (t != MOE_DTYPE_Q4_K && t != MOE_DTYPE_Q4_0 && t != MOE_DTYPE_IQ4_NL &&
        t != MOE_DTYPE_IQ4_XS && t != MOE_DTYPE_Q6_K && t != MOE_DTYPE_Q5_K)
        return 0;
    const char *env = getenv("MOE_REPACK");
    if (env && !strcmp(env, "0")) return 0;
    const moe_cpu_kernels *k = moe_cpu_kernels_best();
    return t == MOE_DTYPE_Q4_K     ? k->gemm_q4kp != NULL
           : t == MOE_DTYPE_IQ4_XS ? k->gemm_iq4xsp != NULL
           : t == MOE_DTYPE_Q6_K   ? k->gemm_q6kp != NULL
           : t == MOE_DTYPE_Q5_K   ? k->gemm_q5kp != NULL
                                   : k->gemm_q4p != NULL;
}

int moe_q8p_usable(void) {
    const char *env = getenv("MOE_REPACK");
    if (env && !strcmp(env, "0")) return 0;
    return moe_cpu_kernels_best()->gemm_q8p != NULL && !moe_cpu_has_amx();
}
