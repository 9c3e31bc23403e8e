/*
 * tests/unit/test_rowops.c - the row ops of moe/ops.h (rmsnorm, softmax,
 * swiglu, rope with and without YaRN) and attention's loops over an f16
 * cache against hand and double-precision references.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/dtype.h"
#include "moe/ops.h"
#include "test.h"

TEST(kernels_rmsnorm) {
    uint64_t seed = 11;
    const int64_t n = 1024;
    float *x = test_rand_vec(&seed, n, 3.0f), *w = test_rand_vec(&seed, n, 1.0f);
    float *y = test_xmalloc(sizeof(float) * n);
    const float eps = 1e-5f;
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    const double scale = 1.0 / sqrt(ss / n + eps);
    moe_op_rmsnorm(x, w, n, eps, y);
    for (int64_t i = 0; i < n; i++) ASSERT_NEAR(y[i], x[i] * scale * w[i], 1e-6 * (1 + fabs(y[i])));
    moe_op_rmsnorm(x, NULL, n, eps, y);
    for (int64_t i = 0; i < n; i++) ASSERT_NEAR(y[i], x[i] * scale, 1e-6 * (1 + fabs(y[i])));
    /* in place gives the same bits */
    float *z = test_xmalloc(sizeof(float) * n);
    memcpy(z, x, sizeof(float) * n);
    moe_op_rmsnorm(x, w, n, eps, y);
    moe_op_rmsnorm(z, w, n, eps, z);
    ASSERT(memcmp(y, z, sizeof(float) * n) == 0);
    /* hand case: x = (3, 4), eps 0: rms = sqrt(12.5) */
    const float h[2] = {3.0f, 4.0f};
    float hy[2];
    moe_op_rmsnorm(h, NULL, 2, 0.0f, hy);
    ASSERT_NEAR(hy[0], 3.0 / sqrt(12.5), 1e-6);
    ASSERT_NEAR(hy[1], 4.0 / sqrt(12.5), 1e-6);
    free(x);
    free(w);
    free(y);
    free(z);
}

/* moe_op_rmsnorm_rows (4 rows' sums interleaved): each row the bits of
 * moe_op_rmsnorm, for row counts around the groups of 4, with and without
 * a weight, in place too. */
TEST(kernels_rmsnorm_rows_same_bits) {
    uint64_t seed = 12;
    const int64_t n = 1000, R = 9;
    float *x = test_rand_vec(&seed, n * R, 5.0f), *w = test_rand_vec(&seed, n, 1.0f);
    float *want = test_xmalloc(sizeof(float) * n * R), *got = test_xmalloc(sizeof(float) * n * R);
    for (int64_t r = 0; r < R; r++) x[r * n + r] = 1e4f * (float)(r + 1); /* rows apart */
    for (int wi = 0; wi < 2; wi++)
        for (int64_t nr = 1; nr <= R; nr++) {
            const float *wv = wi ? w : NULL;
            for (int64_t r = 0; r < nr; r++) moe_op_rmsnorm(x + r * n, wv, n, 1e-6f, want + r * n);
            memset(got, 0xff, sizeof(float) * n * R);
            moe_op_rmsnorm_rows(x, wv, nr, n, 1e-6f, got);
            ASSERT(memcmp(want, got, sizeof(float) * n * (size_t)nr) == 0);
            if (nr < R) ASSERT(((const uint32_t *)got)[n * nr] == 0xffffffffu); /* rows only */
            memcpy(got, x, sizeof(float) * n * (size_t)nr);
            moe_op_rmsnorm_rows(got, wv, nr, n, 1e-6f, got);
            ASSERT(memcmp(want, got, sizeof(float) * n * (size_t)nr) == 0);
        }
    free(x);
    free(w);
    free(want);
    free(got);
}

TEST(kernels_softmax) {
    float x[5] = {1.0f, 2.0f, 3.0f, 4.0f, 1000.0f};
    moe_op_softmax(x, 4);
    const double e[4] = {exp(1.0), exp(2.0), exp(3.0), exp(4.0)};
    const double s = e[0] + e[1] + e[2] + e[3];
    for (int i = 0; i < 4; i++) ASSERT_NEAR(x[i], e[i] / s, 1e-7);
    ASSERT(x[4] == 1000.0f); /* n respected */
    /* huge logits: no overflow, the max subtracted */
    float big[3] = {1000.0f, 1001.0f, 999.0f};
    moe_op_softmax(big, 3);
    const double eb[3] = {exp(-1.0), 1.0, exp(-2.0)};
    const double sb = eb[0] + eb[1] + eb[2];
    for (int i = 0; i < 3; i++) ASSERT_NEAR(big[i], eb[i] / sb, 1e-7);
    /* -inf entries get 0 */
    float m[3] = {0.0f, -INFINITY, 0.0f};
    moe_op_softmax(m, 3);
    ASSERT_NEAR(m[0], 0.5, 1e-7);
    ASSERT(m[1] == 0.0f);
    uint64_t seed = 3;
    float *r = test_rand_vec(&seed, 257, 10.0f);
    moe_op_softmax(r, 257);
    double sum = 0.0;
    for (int i = 0; i < 257; i++) sum += r[i];
    ASSERT_NEAR(sum, 1.0, 1e-5);
    free(r);
}

TEST(kernels_swiglu) {
    uint64_t seed = 21;
    const int64_t n = 300;
    float *g = test_rand_vec(&seed, n, 8.0f), *u = test_rand_vec(&seed, n, 2.0f);
    float *y = test_xmalloc(sizeof(float) * n);
    moe_op_swiglu(g, u, y, n);
    for (int64_t i = 0; i < n; i++) {
        const double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        ASSERT_NEAR(y[i], ref, 1e-6 * (1 + fabs(ref)));
    }
    /* y aliasing g, then u */
    float *g2 = test_xmalloc(sizeof(float) * n), *u2 = test_xmalloc(sizeof(float) * n);
    memcpy(g2, g, sizeof(float) * n);
    memcpy(u2, u, sizeof(float) * n);
    moe_op_swiglu(g2, u, g2, n);
    ASSERT(memcmp(g2, y, sizeof(float) * n) == 0);
    moe_op_swiglu(g, u2, u2, n);
    ASSERT(memcmp(u2, y, sizeof(float) * n) == 0);
    float z = 0.0f, one = 1.0f, out;
    moe_op_swiglu(&z, &one, &out, 1);
    ASSERT(out == 0.0f);
    free(g);
    free(u);
    free(y);
    free(g2);
    free(u2);
}

/* Double reference of a rope without YaRN, for one head. */
static void rope_ref(const float *x, double *y, int head_dim, int n_rot, int neox, double base,
                     double freq_scale, int64_t pos) {
    for (int i = 0; i < head_dim; i++) y[i] = x[i];
    for (int i = 0; i < n_rot / 2; i++) {
        const double th = freq_scale * (double)pos * pow(base, -2.0 * i / n_rot);
        const int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
        y[a] = x[a] * cos(th) - x[b] * sin(th);
        y[b] = x[a] * sin(th) + x[b] * cos(th);
    }
}

TEST(kernels_rope_normal_vs_neox) {
    /* head_dim 8, n_rot 4 (partial): dims 4..7 pass through */
    const float x[16] = {1, 2, 3, 4, 5, 6, 7, 8, -1, 0.5f, 2, -3, 4, 0, 1, 9};
    for (int neox = 0; neox < 2; neox++) {
        moe_rope r;
        moe_rope_init(&r, 4, neox, 10000.0f);
        float y[16];
        memcpy(y, x, sizeof y);
        moe_op_rope(&r, y, 2, 8, 3);
        for (int h = 0; h < 2; h++) {
            double ref[8];
            rope_ref(x + 8 * h, ref, 8, 4, neox, 10000.0, 1.0, 3);
            for (int i = 0; i < 8; i++)
                ASSERT_NEAR(y[8 * h + i], ref[i], 2e-6 * (1 + fabs(ref[i])));
            for (int i = 4; i < 8; i++) ASSERT(y[8 * h + i] == x[8 * h + i]);
        }
    }
    /* hand values, pos 1, n_rot 2, head_dim 2: rotation by 1 radian */
    moe_rope r;
    moe_rope_init(&r, 2, 0, 10000.0f);
    float v[2] = {1.0f, 0.0f};
    moe_op_rope(&r, v, 1, 2, 1);
    ASSERT_NEAR(v[0], cos(1.0), 1e-7);
    ASSERT_NEAR(v[1], sin(1.0), 1e-7);
    /* normal pairs (0,1); neox pairs (0,2) differ on a 4-dim head */
    float a[4] = {1, 0, 0, 0}, b[4] = {1, 0, 0, 0};
    moe_rope_init(&r, 4, 0, 10000.0f);
    moe_op_rope(&r, a, 1, 4, 1);
    moe_rope_init(&r, 4, 1, 10000.0f);
    moe_op_rope(&r, b, 1, 4, 1);
    ASSERT_NEAR(a[1], sin(1.0), 1e-7); /* partner of dim 0 is dim 1 */
    ASSERT(a[2] == 0.0f);
    ASSERT(b[1] == 0.0f); /* partner of dim 0 is dim 2 */
    ASSERT_NEAR(b[2], sin(1.0), 1e-7);
}

TEST(kernels_rope_position_zero_is_identity) {
    uint64_t seed = 8;
    float *x = test_rand_vec(&seed, 4 * 64, 3.0f), *y = test_xmalloc(sizeof(float) * 4 * 64);
    for (int neox = 0; neox < 2; neox++) {
        memcpy(y, x, sizeof(float) * 4 * 64);
        moe_rope r;
        moe_rope_init(&r, 64, neox, 500000.0f);
        moe_op_rope(&r, y, 4, 64, 0);
        ASSERT(memcmp(x, y, sizeof(float) * 4 * 64) == 0);
    }
    free(x);
    free(y);
}

TEST(kernels_rope_long_head) {
    uint64_t seed = 9;
    const int hd = 128;
    float *x = test_rand_vec(&seed, 3 * hd, 1.0f), *y = test_xmalloc(sizeof(float) * 3 * hd);
    for (int neox = 0; neox < 2; neox++) {
        memcpy(y, x, sizeof(float) * 3 * hd);
        moe_rope r;
        moe_rope_init(&r, 96, neox, 10000.0f);
        r.freq_scale = 0.5f; /* linear scaling */
        moe_op_rope(&r, y, 3, hd, 37);
        for (int h = 0; h < 3; h++) {
            double ref[128];
            rope_ref(x + h * hd, ref, hd, 96, neox, 10000.0, 0.5, 37);
            /* theta is built by repeated float multiplication, as ggml */
            for (int i = 0; i < hd; i++) ASSERT_NEAR(y[h * hd + i], ref[i], 2e-5);
        }
    }
    free(x);
    free(y);
}

TEST(kernels_rope_yarn) {
    /* n_rot 64, base 1e4, n_ctx_orig 4096, beta 32/1: corr dims [10, 23]. */
    const int nd = 64;
    const double base = 10000.0, fs = 0.25, ext = 1.0, attn = 1.0;
    moe_rope r;
    moe_rope_init(&r, nd, 1, (float)base);
    r.freq_scale = (float)fs;
    r.ext_factor = (float)ext;
    r.attn_factor = (float)attn;
    r.beta_fast = 32.0f;
    r.beta_slow = 1.0f;
    r.n_ctx_orig = 4096;
    const double low = floor(nd * log(4096 / (32 * 2 * M_PI)) / (2 * log(base)));
    const double high = ceil(nd * log(4096 / (1 * 2 * M_PI)) / (2 * log(base)));
    ASSERT_NEAR(low, 10, 0);
    ASSERT_NEAR(high, 23, 0);
    const double mscale = attn * (1.0 + 0.1 * log(1.0 / fs));

    /* position 0: no rotation, only the magnitude scale */
    float x0[64];
    for (int i = 0; i < nd; i++) x0[i] = (float)(i + 1);
    moe_op_rope(&r, x0, 1, nd, 0);
    for (int i = 0; i < nd; i++) ASSERT_NEAR(x0[i], (i + 1) * mscale, 1e-5 * (i + 1));

    /* position 7: per pair, theta mixes extrapolated and interpolated */
    const int64_t pos = 7;
    float x[64];
    uint64_t seed = 31;
    for (int i = 0; i < nd; i++) x[i] = test_rand_f32(&seed);
    float y[64];
    memcpy(y, x, sizeof y);
    moe_op_rope(&r, y, 1, nd, pos);
    for (int i = 0; i < nd / 2; i++) {
        const double extrap = (double)pos * pow(base, -2.0 * i / nd);
        const double interp = fs * extrap;
        double ramp = (i - low) / fmax(0.001, high - low);
        ramp = 1.0 - fmin(1.0, fmax(0.0, ramp));
        const double mix = ramp * ext;
        const double th = interp * (1 - mix) + extrap * mix;
        if (i <= 10) ASSERT_NEAR(th, extrap, 1e-12); /* below the ramp: unscaled */
        if (i >= 23) ASSERT_NEAR(th, interp, 1e-12); /* above: interpolated */
        const double c = cos(th) * mscale, s = sin(th) * mscale;
        const double ya = x[i] * c - x[i + nd / 2] * s, yb = x[i] * s + x[i + nd / 2] * c;
        ASSERT_NEAR(y[i], ya, 2e-5);
        ASSERT_NEAR(y[i + nd / 2], yb, 2e-5);
    }
}

/* Attention over an f16 cache (dots_f16, wsum_f16), every level: dots_f16
 * gives the bits of the level's F16 matrix x vector at one activation row
 * (ggml_vec_dot_f16, what llama.cpp's decode runs) times the scale, and
 * both agree with a double-precision sum of the same f16 values; head sizes
 * with the AVX-512 register paths (64..256) and without (96, 576; 36 and 70
 * have tails, where the gemm, which takes multiples of 32, is not run), row
 * counts around its steps of 4, rows strided as in the cache. */
TEST(kernels_attention_f16_loops) {
    const int64_t ns[] = {36, 64, 70, 96, 128, 192, 256, 576};
    const int64_t ms[] = {1, 3, 4, 5, 9, 130};
    uint64_t seed = 13;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            const int64_t n = ns[ni], m = ms[mi], ld = n + 32;
            uint16_t *a = test_xmalloc(2 * (size_t)n), *B = test_xmalloc(2 * (size_t)(ld * m));
            uint16_t *Bc = test_xmalloc(2 * (size_t)(n * m)), *s = test_xmalloc(2 * (size_t)m);
            for (int64_t i = 0; i < n; i++) a[i] = moe_f32_to_f16(test_rand_f32(&seed));
            for (int64_t i = 0; i < ld * m; i++) B[i] = moe_f32_to_f16(3 * test_rand_f32(&seed));
            for (int64_t j = 0; j < m; j++) {
                s[j] = moe_f32_to_f16(0.5f + 0.5f * test_rand_f32(&seed));
                memcpy(Bc + j * n, B + j * ld, 2 * (size_t)n);
            }
            float *o = test_xmalloc(sizeof(float) * (size_t)m);
            float *g = test_xmalloc(sizeof(float) * (size_t)m);
            float *y = test_xmalloc(sizeof(float) * (size_t)(n + 1));
            for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
                const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
                if (!k) continue;
                k->dots_f16(n, a, B, ld, m, 0.125f, o);
                if (n % 32 == 0) k->gemm(MOE_DTYPE_F16, n, Bc, 0, m, a, 1, g, m);
                for (int64_t j = 0; j < m; j++) {
                    if (n % 32 == 0 && o[j] != g[j] * 0.125f)
                        TEST_FAIL("%s dots_f16 n=%lld m=%lld row %lld: %.9g, the F16 gemm %.9g",
                                  k->name, (long long)n, (long long)m, (long long)j, o[j],
                                  g[j] * 0.125f);
                    double ref = 0, mag = 0;
                    for (int64_t i = 0; i < n; i++) {
                        const double t =
                            (double)moe_f16_to_f32(a[i]) * moe_f16_to_f32(B[j * ld + i]) * 0.125;
                        ref += t, mag += fabs(t);
                    }
                    ASSERT_NEAR(o[j], ref, 1e-6 * mag + 1e-30);
                }
                y[n] = 42.0f;
                k->wsum_f16(n, s, B, ld, m, y);
                ASSERT(y[n] == 42.0f); /* nothing past n written */
                for (int64_t i = 0; i < n; i++) {
                    double ref = 0, mag = 0;
                    for (int64_t j = 0; j < m; j++) {
                        const double t =
                            (double)moe_f16_to_f32(s[j]) * moe_f16_to_f32(B[j * ld + i]);
                        ref += t, mag += fabs(t);
                    }
                    ASSERT_NEAR(y[i], ref, 1e-6 * mag + 1e-30);
                }
            }
            free(a), free(B), free(Bc), free(s), free(o), free(g), free(y);
        }
}

/* The grouped-query loops (dots_f16_g, wsum_f16_g, where a level has them):
 * g = 1..MOE_ATTN_GROUP heads over the same strided rows give each head the
 * bits of its own dots_f16 / wsum_f16 call, head sizes 64..576, row counts
 * around dots_f16's steps of 4, nothing written past a head's outputs. */
TEST(kernels_attention_f16_grouped_same_bits) {
    const int64_t ns[] = {64,  128, 192,
                          256, 576, 704}; /* 704: 4 heads past the buffer, each alone */
    const int64_t ms[] = {1, 3, 4, 5, 9, 130};
    uint64_t seed = 14;
    int ran = 0;
    for (int l = 0; l < MOE_CPU_LEVEL_COUNT; l++) {
        const moe_cpu_kernels *k = moe_cpu_kernels_get((moe_cpu_level)l);
        if (!k || !k->dots_f16_g || !k->wsum_f16_g) continue;
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                const int64_t n = ns[ni], m = ms[mi], ld = n + 32, G = MOE_ATTN_GROUP;
                const int64_t ldo = m + 3, lds = m + 5, ldy = n + 16;
                uint16_t *a = test_xmalloc(2 * (size_t)(G * n)),
                         *B = test_xmalloc(2 * (size_t)(ld * m));
                uint16_t *s = test_xmalloc(2 * (size_t)(G * lds));
                for (int64_t i = 0; i < G * n; i++) a[i] = moe_f32_to_f16(test_rand_f32(&seed));
                for (int64_t i = 0; i < ld * m; i++)
                    B[i] = moe_f32_to_f16(3 * test_rand_f32(&seed));
                for (int64_t i = 0; i < G * lds; i++)
                    s[i] = moe_f32_to_f16(0.5f + 0.5f * test_rand_f32(&seed));
                float *o = test_xmalloc(sizeof(float) * (size_t)(G * ldo));
                float *y = test_xmalloc(sizeof(float) * (size_t)(G * ldy));
                float *want = test_xmalloc(sizeof(float) * (size_t)(n > m ? n : m));
                for (int g = 1; g <= G; g++) {
                    for (int64_t i = 0; i < G * ldo; i++) o[i] = 42.0f;
                    for (int64_t i = 0; i < G * ldy; i++) y[i] = 42.0f;
                    k->dots_f16_g(g, n, a, B, ld, m, 0.125f, o, ldo);
                    k->wsum_f16_g(g, n, s, lds, B, ld, m, y, ldy);
                    for (int h = 0; h < G; h++) {
                        if (h < g) {
                            k->dots_f16(n, a + h * n, B, ld, m, 0.125f, want);
                            if (memcmp(want, o + h * ldo, sizeof(float) * (size_t)m))
                                TEST_FAIL("%s dots_f16_g g=%d n=%lld m=%lld head %d", k->name, g,
                                          (long long)n, (long long)m, h);
                            k->wsum_f16(n, s + h * lds, B, ld, m, want);
                            if (memcmp(want, y + h * ldy, sizeof(float) * (size_t)n))
                                TEST_FAIL("%s wsum_f16_g g=%d n=%lld m=%lld head %d", k->name, g,
                                          (long long)n, (long long)m, h);
                        }
                        for (int64_t j = h < g ? m : 0; j < ldo; j++)
                            ASSERT(o[h * ldo + j] == 42.0f);
                        for (int64_t i = h < g ? n : 0; i < ldy; i++)
                            ASSERT(y[h * ldy + i] == 42.0f);
                    }
                }
                ran++;
                free(a), free(B), free(s), free(o), free(y), free(want);
            }
    }
    if (!ran) SKIP("no grouped attention loops at this machine's levels");
}
