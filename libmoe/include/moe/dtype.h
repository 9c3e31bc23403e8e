/*
 * moe/dtype.h - tensor element types, laid out exactly as ggml/GGUF lays them.
 *
 * The enum values are GGUF's type ids so a file's type field maps directly.
 * Quantised types are stored in blocks: Q8_0 is 32 int8 values plus one fp16
 * scale (34 bytes); a row of n elements (n a multiple of the block size)
 * takes moe_dtype_row_bytes(t, n) bytes.
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
    MOE_DTYPE_Q8_0 = 8,
    MOE_DTYPE_BF16 = 30,
} moe_dtype;

#define MOE_QK8_0 32

/* One Q8_0 block: y[i] = d * qs[i]. */
typedef struct moe_block_q8_0 {
    uint16_t d;           /* fp16 scale */
    int8_t qs[MOE_QK8_0]; /* quants */
} moe_block_q8_0;

/* 1 if t is one of the types above (the ones libmoe computes on). */
int moe_dtype_supported(uint32_t t);
/* Name as ggml spells it ("f32", "f16", "q8_0", "bf16"); "?" if unknown. */
const char *moe_dtype_name(moe_dtype t);
/* Parses a name (case-insensitive); returns 0 and sets *t, or MOE_EINVAL. */
int moe_dtype_parse(const char *name, moe_dtype *t);
/* Elements per block (1 for plain types, 32 for Q8_0). */
size_t moe_dtype_block_elems(moe_dtype t);
/* Bytes per block. */
size_t moe_dtype_block_bytes(moe_dtype t);
/* Bytes of a row of n elements; n must be a multiple of the block size. */
size_t moe_dtype_row_bytes(moe_dtype t, int64_t n);
/* The type activations are converted to before a dot product with weights of
 * type t (as llama.cpp's vec_dot_type): F32->F32, F16->F16, BF16->BF16,
 * Q8_0->Q8_0. */
moe_dtype moe_dtype_dot_type(moe_dtype t);

/* Scalar conversions (IEEE half, round to nearest even; bfloat16 round to
 * nearest even, NaN kept quiet). */
float moe_f16_to_f32(uint16_t h);
uint16_t moe_f32_to_f16(float f);
float moe_bf16_to_f32(uint16_t h);
uint16_t moe_f32_to_bf16(float f);

/* Converts a row of n floats to type t (quantising for Q8_0 exactly as
 * ggml's reference quantize_row_q8_0). n must be a multiple of the block. */
void moe_dtype_from_f32(moe_dtype t, const float *src, void *dst, int64_t n);
/* Converts a row of n elements of type t to floats. */
void moe_dtype_to_f32(moe_dtype t, const void *src, float *dst, int64_t n);

#endif
