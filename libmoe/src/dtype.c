/* dtype.c - element types and scalar conversions (see moe/dtype.h). */
#include <math.h>
#include <string.h>
#include <strings.h>

#include "moe/dtype.h"
#include "moe/error.h"
#include "quant.h"

/* The supported types, indexed by moe_dtype (holes: name NULL). */
static const struct dtype_info {
    const char *name;
    size_t block_bytes;
    size_t block_elems;
    moe_dtype dot; /* ggml's vec_dot_type */
} dtype_infos[] = {
    [MOE_DTYPE_F32] = {"f32", 4, 1, MOE_DTYPE_F32},
    [MOE_DTYPE_F16] = {"f16", 2, 1, MOE_DTYPE_F16},
    [MOE_DTYPE_Q4_0] = {"q4_0", sizeof(moe_block_q4_0), MOE_QK4, MOE_DTYPE_Q8_0},
    [MOE_DTYPE_Q4_1] = {"q4_1", sizeof(moe_block_q4_1), MOE_QK4, MOE_DTYPE_Q8_1},
    [MOE_DTYPE_Q5_0] = {"q5_0", sizeof(moe_block_q5_0), MOE_QK4, MOE_DTYPE_Q8_0},
    [MOE_DTYPE_Q5_1] = {"q5_1", sizeof(moe_block_q5_1), MOE_QK4, MOE_DTYPE_Q8_1},
    [MOE_DTYPE_Q8_0] = {"q8_0", sizeof(moe_block_q8_0), MOE_QK8_0, MOE_DTYPE_Q8_0},
    [MOE_DTYPE_Q8_1] = {"q8_1", sizeof(moe_block_q8_1), MOE_QK4, MOE_DTYPE_Q8_1},
    [MOE_DTYPE_Q2_K] = {"q2_K", sizeof(moe_block_q2_K), MOE_QK_K, MOE_DTYPE_Q8_K},
    [MOE_DTYPE_Q3_K] = {"q3_K", sizeof(moe_block_q3_K), MOE_QK_K, MOE_DTYPE_Q8_K},
    [MOE_DTYPE_Q4_K] = {"q4_K", sizeof(moe_block_q4_K), MOE_QK_K, MOE_DTYPE_Q8_K},
    [MOE_DTYPE_Q5_K] = {"q5_K", sizeof(moe_block_q5_K), MOE_QK_K, MOE_DTYPE_Q8_K},
    [MOE_DTYPE_Q6_K] = {"q6_K", sizeof(moe_block_q6_K), MOE_QK_K, MOE_DTYPE_Q8_K},
    [MOE_DTYPE_Q8_K] = {"q8_K", sizeof(moe_block_q8_K), MOE_QK_K, MOE_DTYPE_Q8_K},
    [MOE_DTYPE_IQ4_NL] = {"iq4_nl", sizeof(moe_block_iq4_nl), MOE_QK4, MOE_DTYPE_Q8_0},
    [MOE_DTYPE_IQ4_XS] = {"iq4_xs", sizeof(moe_block_iq4_xs), MOE_QK_K, MOE_DTYPE_Q8_K},
    [MOE_DTYPE_BF16] = {"bf16", 2, 1, MOE_DTYPE_BF16},
};

/* ggml's block sizes, checked at compile time */
_Static_assert(sizeof(moe_block_q4_0) == 18 && sizeof(moe_block_q4_1) == 20, "q4 blocks");
_Static_assert(sizeof(moe_block_q5_0) == 22 && sizeof(moe_block_q5_1) == 24, "q5 blocks");
_Static_assert(sizeof(moe_block_q8_1) == 36 && sizeof(moe_block_iq4_nl) == 18, "q8_1/iq4_nl");
_Static_assert(sizeof(moe_block_q2_K) == 84 && sizeof(moe_block_q3_K) == 110, "q2_K/q3_K");
_Static_assert(sizeof(moe_block_q4_K) == 144 && sizeof(moe_block_q5_K) == 176, "q4_K/q5_K");
_Static_assert(sizeof(moe_block_q6_K) == 210 && sizeof(moe_block_q8_K) == 292, "q6_K/q8_K");
_Static_assert(sizeof(moe_block_iq4_xs) == 136, "iq4_xs");

/* t's entry, or NULL for a type this library does not know. */
static const struct dtype_info *dtype_info(uint32_t t) {
    if (t >= sizeof dtype_infos / sizeof dtype_infos[0] || !dtype_infos[t].name) return NULL;
    return &dtype_infos[t];
}

int moe_dtype_supported(uint32_t t) {
    return moe_dtype_is_weight((moe_dtype)t);
}

const char *moe_dtype_name(moe_dtype t) {
    const struct dtype_info *d = dtype_info(t);
    return d ? d->name : "?";
}

int moe_dtype_parse(const char *name, moe_dtype *t) {
    for (uint32_t i = 0; i < sizeof dtype_infos / sizeof dtype_infos[0]; i++) {
        const struct dtype_info *d = dtype_info(i);
        if (d && !strcasecmp(name, d->name)) {
            *t = (moe_dtype)i;
            return 0;
        }
    }
    return MOE_EINVAL;
}

size_t moe_dtype_block_elems(moe_dtype t) {
    const struct dtype_info *d = dtype_info(t);
    return d ? d->block_elems : 1;
}

size_t moe_dtype_block_bytes(moe_dtype t) {
    const struct dtype_info *d = dtype_info(t);
    return d ? d->block_bytes : 0;
}

size_t moe_dtype_row_bytes(moe_dtype t, int64_t n) {
    return (size_t)(n / (int64_t)moe_dtype_block_elems(t)) * moe_dtype_block_bytes(t);
}

moe_dtype moe_dtype_dot_type(moe_dtype t) {
    const struct dtype_info *d = dtype_info(t);
    return d ? d->dot : t;
}

int moe_dtype_is_weight(moe_dtype t) {
    return dtype_info(t) && t != MOE_DTYPE_Q8_1 && t != MOE_DTYPE_Q8_K;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float moe_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf/nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: man * 2^-24 */
        float f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t moe_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (ax < 0x38800000u) {                                  /* subnormal or zero in f16 */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa */
        float v = bits_f32(ax) * 16777216.0f;
        uint32_t m = (uint32_t)lrintf(v);
        return (uint16_t)(sign | m);
    }
    /* normal: round mantissa from 23 to 10 bits, nearest even */
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1);
    r -= 0x38000000u; /* rebias exponent 127 -> 15 */
    return (uint16_t)(sign | (r >> 13));
}

float moe_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t moe_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet nan */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

void moe_dtype_from_f32(moe_dtype t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case MOE_DTYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case MOE_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moe_f32_to_f16(src[i]);
        break;
    case MOE_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = moe_f32_to_bf16(src[i]);
        break;
    case MOE_DTYPE_Q8_0: {
        moe_block_q8_0 *y = dst;
        for (int64_t b = 0; b < n / MOE_QK8_0; b++) {
            const float *x = src + b * MOE_QK8_0;
            float amax = 0.0f;
            for (int j = 0; j < MOE_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
            const float d = amax / 127.0f;
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[b].d = moe_f32_to_f16(d);
            for (int j = 0; j < MOE_QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
        }
        break;
    }
    default:
        moe__quant_from_f32(t, src, dst, n);
        break;
    }
}

void moe_dtype_to_f32(moe_dtype t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case MOE_DTYPE_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case MOE_DTYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = moe_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case MOE_DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = moe_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    case MOE_DTYPE_Q8_0: {
        const moe_block_q8_0 *x = src;
        for (int64_t b = 0; b < n / MOE_QK8_0; b++) {
            const float d = moe_f16_to_f32(x[b].d);
            for (int j = 0; j < MOE_QK8_0; j++) dst[b * MOE_QK8_0 + j] = d * x[b].qs[j];
        }
        break;
    }
    default:
        moe__quant_to_f32(t, src, dst, n);
        break;
    }
}
