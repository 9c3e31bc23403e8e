/*
 * moe/dtype.h - tensor element types, laid out exactly as ggml/GGUF lays them.
 *
 * The enum values are GGUF's type ids so a file's type field maps directly.
 * Quantised types are stored in blocks: Q8_0 is 32 int8 values plus one fp16
 * scale (34 bytes); a row of n elements (n a multiple of the block size)
 * takes moe_dtype_row_bytes(t, n) bytes. The 32-element types (Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0, Q8_1, IQ4_NL) and the 256-element "K" super-blocks
 * (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, Q8_K) are byte for byte ggml's
 * block structs; Q8_1 and Q8_K are activation types only (dot types).
 *
 *     size_t rb = moe_dtype_row_bytes(MOE_DTYPE_Q8_0, 4096);   // 4352
 */
#ifndef MOE_DTYPE_H
#define MOE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum moe_dtype {
    MOE_DTYPE_F32 = 0,
    MOE_DTYPE_F16 = 1,
    MOE_DTYPE_Q4_0 = 2,
    MOE_DTYPE_Q4_1 = 3,
    MOE_DTYPE_Q5_0 = 6,
    MOE_DTYPE_Q5_1 = 7,
    MOE_DTYPE_Q8_0 = 8,
    MOE_DTYPE_Q8_1 = 9,
    MOE_DTYPE_Q2_K = 10,
    MOE_DTYPE_Q3_K = 11,
    MOE_DTYPE_Q4_K = 12,
    MOE_DTYPE_Q5_K = 13,
    MOE_DTYPE_Q6_K = 14,
    MOE_DTYPE_Q8_K = 15,
    MOE_DTYPE_IQ4_NL = 20,
    MOE_DTYPE_IQ4_XS = 23,
    MOE_DTYPE_BF16 = 30,
} moe_dtype;

#define MOE_QK8_0 32
#define MOE_QK4 32   /* Q4_0, Q4_1, Q5_0, Q5_1, Q8_1, IQ4_NL */
#define MOE_QK_K 256 /* the K super-blocks */

/* One Q8_0 block: y[i] = d * qs[i]. */
typedef struct moe_block_q8_0 {
    uint16_t d;           /* fp16 scale */
    int8_t qs[MOE_QK8_0]; /* quants */
} moe_block_q8_0;

/* The 32-element blocks. In the 4-bit types byte j holds element j in its
 * low nibble and element j + 16 in its high one; Q5_* keep the fifth bits
 * in qh (bit j for element j). */
typedef struct moe_block_q4_0 { /* y = d * (q - 8) */
    uint16_t d;
    uint8_t qs[16];
} moe_block_q4_0;
typedef struct moe_block_q4_1 { /* y = d * q + m */
    uint16_t d, m;
    uint8_t qs[16];
} moe_block_q4_1;
typedef struct moe_block_q5_0 { /* y = d * (q - 16) */
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[16];
} moe_block_q5_0;
typedef struct moe_block_q5_1 { /* y = d * q + m */
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} moe_block_q5_1;
typedef struct moe_block_q8_1 { /* y = d * q; s = d * sum(q) (fp16) */
    uint16_t d, s;
    int8_t qs[32];
} moe_block_q8_1;
typedef struct moe_block_iq4_nl { /* y = d * moe_iq4nl_values[q] */
    uint16_t d;
    uint8_t qs[16];
} moe_block_iq4_nl;

/* The 256-element super-blocks. */
typedef struct moe_block_q2_K { /* 16 x 16: y = d * (sc & 15) * q - dmin * (sc >> 4) */
    uint8_t scales[16];
    uint8_t qs[64];
    uint16_t d, dmin;
} moe_block_q2_K;
typedef struct moe_block_q3_K { /* 16 x 16: y = d * (sc - 32) * (q - 4 * !hbit), sc 6 bits */
    uint8_t hmask[32];
    uint8_t qs[64];
    uint8_t scales[12];
    uint16_t d;
} moe_block_q3_K;
typedef struct moe_block_q4_K { /* 8 x 32: y = d * sc * q - dmin * m, sc and m 6 bits */
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} moe_block_q4_K;
typedef struct moe_block_q5_K { /* as Q4_K with a fifth bit per element */
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} moe_block_q5_K;
typedef struct moe_block_q6_K { /* 16 x 16: y = d * sc * (q - 32), sc int8 */
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} moe_block_q6_K;
typedef struct moe_block_q8_K { /* activations: y = d * q; bsums: sums of 16 */
    float d;
    int8_t qs[256];
    int16_t bsums[16];
} moe_block_q8_K;
typedef struct moe_block_iq4_xs { /* 8 x 32: y = d * (sc - 32) * moe_iq4nl_values[q] */
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[4];
    uint8_t qs[128];
} moe_block_iq4_xs;

/* IQ4_NL / IQ4_XS's 16 non-linear levels (ggml's kvalues_iq4nl). */
extern const int8_t moe_iq4nl_values[16];

/* 1 if t is a type libmoe computes on as weights: every type above except
 * the activation-only Q8_1 and Q8_K (moe_dtype_is_weight). */
int moe_dtype_supported(uint32_t t);
/* Name as ggml spells it ("f32", "q4_K", "iq4_nl", ...); "?" if unknown. */
const char *moe_dtype_name(moe_dtype t);
/* Parses a name (case-insensitive); returns 0 and sets *t, or MOE_EINVAL. */
int moe_dtype_parse(const char *name, moe_dtype *t);
/* Elements per block (1 for plain types, 32 for Q8_0 and the other
 * 32-element blocks, 256 for the K types and IQ4_XS). */
size_t moe_dtype_block_elems(moe_dtype t);
/* Bytes per block. */
size_t moe_dtype_block_bytes(moe_dtype t);
/* Bytes of a row of n elements; n must be a multiple of the block size. */
size_t moe_dtype_row_bytes(moe_dtype t, int64_t n);
/* The type activations are converted to before a dot product with weights of
 * type t (as llama.cpp's vec_dot_type): F32->F32, F16->F16, BF16->BF16;
 * Q8_0, Q4_0, Q5_0, IQ4_NL->Q8_0; Q4_1, Q5_1->Q8_1; the K types and
 * IQ4_XS->Q8_K. */
moe_dtype moe_dtype_dot_type(moe_dtype t);

/* Scalar conversions (IEEE half, round to nearest even; bfloat16 round to
 * nearest even, NaN kept quiet). */
float moe_f16_to_f32(uint16_t h);
uint16_t moe_f32_to_f16(float f);
float moe_bf16_to_f32(uint16_t h);
uint16_t moe_f32_to_bf16(float f);

/* 1 if t is a weight type libmoe computes on (every supported type except
 * the activation-only Q8_1 and Q8_K). */
int moe_dtype_is_weight(moe_dtype t);

/* Converts a row of n floats to type t, quantising as ggml's reference
 * quantisers (quantize_row_*_ref; for IQ4_NL and IQ4_XS ggml's quantize_iq4_*
 * without an importance matrix), so the file a writer makes from it is the
 * one llama-quantize would make from the same floats. n must be a multiple
 * of the block. */
void moe_dtype_from_f32(moe_dtype t, const float *src, void *dst, int64_t n);
/* Converts a row of n elements of type t to floats. */
void moe_dtype_to_f32(moe_dtype t, const void *src, float *dst, int64_t n);

#endif
