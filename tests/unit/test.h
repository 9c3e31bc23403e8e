/*
 * tests/unit/test.h - the unit-test harness.
 *
 * Each test registers itself at start-up (TEST(name) { ... }); the runner
 * binary lists them (--list) and runs one per process (tests/run.sh), so a
 * crash or a hang fails only that test. Assertions print both values.
 *
 *     TEST(dtype_f16_roundtrip) {
 *         ASSERT_EQ_INT(moe_f32_to_f16(1.0f), 0x3c00);
 *         ASSERT_NEAR(moe_f16_to_f32(0x3c00), 1.0, 0);
 *     }
 *
 * SKIP("reason") ends the test as skipped (exit 77).
 */
#ifndef MOE_TEST_H
#define MOE_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*moe_test_fn)(void);
void moe__test_register(const char *name, moe_test_fn fn);

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void test_register_##name(void) {                          \
        moe__test_register(#name, test_##name);                                                    \
    }                                                                                              \
    static void test_##name(void)

#define TEST_FAIL(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        exit(1);                                                                                   \
    } while (0)

#define SKIP(msg)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "skipped: %s\n", msg);                                                     \
        exit(77);                                                                                  \
    } while (0)

#define ASSERT(x)                                                                                  \
    do {                                                                                           \
        if (!(x)) TEST_FAIL("assertion failed: %s", #x);                                           \
    } while (0)

#define ASSERT_EQ_INT(a, b)                                                                        \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) TEST_FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);                         \
    } while (0)

/* |a - b| <= tol (NaN never passes). */
#define ASSERT_NEAR(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (double)(a), b_ = (double)(b), t_ = (double)(tol);                             \
        if (!(fabs(a_ - b_) <= t_))                                                                \
            TEST_FAIL("%s ~ %s: %.9g vs %.9g (diff %.3g > tol %.3g)", #a, #b, a_, b_,              \
                      fabs(a_ - b_), t_);                                                          \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_)) TEST_FAIL("%s == %s:\n'%s'\n!=\n'%s'", #a, #b, a_, b_);  \
    } while (0)

/* Runs fn in a child process with its fd 1 and fd 2 captured into out (cap
 * bytes, NUL-terminated); returns the child's wait status (tests/unit/main.c). */
int test_run_child(void (*fn)(void), char *out, size_t cap);

#define ASSERT_STR_CONTAINS(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            TEST_FAIL("'%s' does not contain '%s'", h_ ? h_ : "(null)", n_);                       \
    } while (0)

/* A small seeded PRNG for tests (xorshift64*). */
static inline uint64_t test_rand_u64(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}
/* Uniform in [-1, 1). */
static inline float test_rand_f32(uint64_t *s) {
    return (float)((test_rand_u64(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* malloc that fails the test when out of memory (0 bytes gives 1). */
static inline void *test_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) TEST_FAIL("out of memory");
    return p;
}

/* n floats uniform in [-scale, scale), from test_rand_f32. */
static inline float *test_rand_vec(uint64_t *s, int64_t n, float scale) {
    float *v = test_xmalloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = test_rand_f32(s) * scale;
    return v;
}

#endif
