/* test_gguf_corrupt.c - the GGUF reader (moe/gguf.h) on corrupt, truncated
 * and malformed files: each must be refused with a message naming the file,
 * the field and its offset, without reading outside the buffer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_testlib.h"
#include "moe/dtype.h"
#include "moe/gguf.h"
#include "test.h"

/* ==== Helpers =========================================================== */

static void patch_u32(uint8_t *p, size_t off, uint32_t v) {
    memcpy(p + off, &v, 4);
}
static void patch_u64(uint8_t *p, size_t off, uint64_t v) {
    memcpy(p + off, &v, 8);
}

/* Expects p[0..n) to be refused with want; checks the message names the file
 * and the field's offset (off, or any if off is SIZE_MAX). */
static moe_err expect_bad(const uint8_t *p, size_t n, int want, size_t off) {
    moe_err err;
    memset(&err, 0, sizeof err);
    moe_gguf *g = (moe_gguf *)&err; /* must be reset to NULL */
    uint8_t *copy;
    int rc = open_copy(p, n, &g, &err, &copy);
    if (rc == 0) {
        close_copy(g, copy);
        TEST_FAIL("a corrupt file (%zu bytes) was accepted", n);
    }
    ASSERT_EQ_INT(rc, want);
    ASSERT_EQ_INT(err.code, want);
    ASSERT(g == NULL);
    ASSERT_STR_CONTAINS(err.msg, "bad.gguf: ");
    ASSERT_STR_CONTAINS(err.msg, "offset");
    if (off != SIZE_MAX) {
        char want_off[64];
        snprintf(want_off, sizeof want_off, "(field at offset %zu)", off);
        ASSERT_STR_CONTAINS(err.msg, want_off);
    }
    return err;
}

/* A small handcrafted valid file, with the offsets of its fields. The last
 * tensor's data ends the file (no trailing padding), so every truncation of
 * it is invalid. */
enum { BASE_DUP_KEY = 1, BASE_DUP_TENSOR = 2 };
typedef enum base_field {
    F_NONE,        /* no field (a step that patches nothing) */
    F_VERSION,     /* u32 header version */
    F_N_TENSORS,   /* u64 header tensor count */
    F_N_KV,        /* u64 header key count */
    F_ARCH_KEY,    /* u64 key #0 name length */
    F_ARCH_LEN,    /* u64 key #0 string value length */
    F_ALIGN_TYPE,  /* u32 key #1 general.alignment type */
    F_ALIGN_VAL,   /* u32 key #1 general.alignment value */
    F_FLAG_TYPE,   /* u32 key #2 test.flag (bool) type */
    F_FLAG_VAL,    /* u8  key #2 test.flag value */
    F_VOCAB_N,     /* u64 key #3 test.vocab (string array) count */
    F_VOCAB_ELEM1, /* u64 key #3 element 1 length */
    F_DUP_KEY,     /* where the duplicate key starts (BASE_DUP_KEY) */
    F_N_DIMS,      /* u32 tensor #0 tok_embd.weight n_dims */
    F_NE0,         /* u64 tensor #0 dimension 0 */
    F_NE1,         /* u64 tensor #0 dimension 1 */
    F_TTYPE,       /* u32 tensor #0 type */
    F_TOFF,        /* u64 tensor #0 data offset */
    F_T1_NE0,      /* u64 tensor #1 output.weight (q8_0) dimension 0 */
    F_T1_TYPE,     /* u32 tensor #1 type */
    F_T1_OFF,      /* u64 tensor #1 data offset */
    F_DUP_TENSOR,  /* where the duplicate tensor info starts (BASE_DUP_TENSOR) */
    F_COUNT,
    F_ANY = F_COUNT /* as an expected offset: any */
} base_field;

/* The width in bytes of each field (0: not written by base_put or patched). */
static const uint8_t field_width[F_COUNT] = {
    [F_VERSION] = 4,     [F_N_TENSORS] = 8, [F_N_KV] = 8,      [F_ARCH_KEY] = 8, [F_ARCH_LEN] = 8,
    [F_ALIGN_TYPE] = 4,  [F_ALIGN_VAL] = 4, [F_FLAG_TYPE] = 4, [F_FLAG_VAL] = 1, [F_VOCAB_N] = 8,
    [F_VOCAB_ELEM1] = 8, [F_N_DIMS] = 4,    [F_NE0] = 8,       [F_NE1] = 8,      [F_TTYPE] = 4,
    [F_TOFF] = 8,        [F_T1_NE0] = 8,    [F_T1_TYPE] = 4,   [F_T1_OFF] = 8,
};

typedef struct base {
    hb b;
    size_t at[F_COUNT]; /* the offset of each field */
    size_t data_start;
} base;

/* Writes v at field f of the base file, in the field's width. */
static void base_patch(base *o, base_field f, uint64_t v) {
    switch (field_width[f]) {
    case 1:
        o->b.p[o->at[f]] = (uint8_t)v;
        break;
    case 4:
        patch_u32(o->b.p, o->at[f], (uint32_t)v);
        break;
    case 8:
        patch_u64(o->b.p, o->at[f], v);
        break;
    default:
        TEST_FAIL("field %d cannot be patched", (int)f);
    }
}

/* Appends field f with value v, recording its offset. */
static void base_put(base *o, base_field f, uint64_t v) {
    static const uint8_t zero[8];
    ASSERT(field_width[f] > 0);
    o->at[f] = o->b.n;
    hb_put(&o->b, zero, field_width[f]);
    base_patch(o, f, v);
}

static void build_base(base *o, int flags) {
    hb *b = &o->b;
    memset(o, 0, sizeof *o);
    hb_header(b, (flags & BASE_DUP_TENSOR) ? 3 : 2, (flags & BASE_DUP_KEY) ? 5 : 4);
    o->at[F_VERSION] = 4;
    o->at[F_N_TENSORS] = 8;
    o->at[F_N_KV] = 16;

    o->at[F_ARCH_KEY] = b->n;
    hb_key(b, "general.architecture", MOE_GGUF_TYPE_STRING);
    o->at[F_ARCH_LEN] = b->n;
    hb_str(b, "llama");
    o->at[F_ALIGN_TYPE] = hb_key(b, "general.alignment", MOE_GGUF_TYPE_UINT32);
    base_put(o, F_ALIGN_VAL, 32);
    o->at[F_FLAG_TYPE] = hb_key(b, "test.flag", MOE_GGUF_TYPE_BOOL);
    base_put(o, F_FLAG_VAL, 1);
    hb_key(b, "test.vocab", MOE_GGUF_TYPE_ARRAY);
    hb_u32(b, MOE_GGUF_TYPE_STRING);
    base_put(o, F_VOCAB_N, 3);
    hb_str(b, "a");
    o->at[F_VOCAB_ELEM1] = b->n;
    hb_str(b, "bc");
    hb_str(b, "");
    if (flags & BASE_DUP_KEY) {
        o->at[F_DUP_KEY] = b->n;
        hb_key(b, "test.flag", MOE_GGUF_TYPE_UINT32);
        hb_u32(b, 5);
    }

    hb_str(b, "tok_embd.weight");
    base_put(o, F_N_DIMS, 2);
    base_put(o, F_NE0, 32);
    base_put(o, F_NE1, 3);
    base_put(o, F_TTYPE, MOE_DTYPE_F32);
    base_put(o, F_TOFF, 0); /* 384 bytes */

    hb_str(b, "output.weight");
    hb_u32(b, 1);
    base_put(o, F_T1_NE0, 32);
    base_put(o, F_T1_TYPE, MOE_DTYPE_Q8_0);
    base_put(o, F_T1_OFF, 384); /* 34 bytes */

    if (flags & BASE_DUP_TENSOR) {
        o->at[F_DUP_TENSOR] = b->n;
        hb_str(b, "output.weight");
        hb_u32(b, 1);
        hb_u64(b, 8);
        hb_u32(b, MOE_DTYPE_F32);
        hb_u64(b, 448); /* 32 bytes */
    }

    hb_pad(b, 32);
    o->data_start = b->n;
    for (int i = 0; i < 384; i++) hb_u8(b, (uint8_t)i);
    for (int i = 0; i < 34; i++) hb_u8(b, (uint8_t)(i * 7));
    if (flags & BASE_DUP_TENSOR) {
        hb_pad(b, 32);
        for (int i = 0; i < 32; i++) hb_u8(b, 0);
    }
}

/* One step of a corruption: patch a field (unless F_NONE); then, unless want
 * is 0, expect the file refused with want, its message naming the offset of
 * field at (any if F_ANY) and containing msg and msg2 (where not NULL).
 * Patches add up over the steps of one table. */
typedef struct base_step {
    base_field field;
    uint64_t v;
    int want;
    base_field at;
    const char *msg, *msg2;
} base_step;
/* A step that only patches. */
#define PATCH(field, v)                                                                            \
    { field, v, 0, F_NONE, NULL, NULL }

static void base_run_steps(base *o, const base_step *s, size_t n) {
    for (size_t i = 0; i < n; i++, s++) {
        if (s->field != F_NONE) base_patch(o, s->field, s->v);
        if (!s->want) continue;
        size_t off = s->at == F_ANY ? SIZE_MAX : o->at[s->at];
        moe_err e = expect_bad(o->b.p, o->b.n, s->want, off);
        if (s->msg) ASSERT_STR_CONTAINS(e.msg, s->msg);
        if (s->msg2) ASSERT_STR_CONTAINS(e.msg, s->msg2);
    }
}

/* Builds the base file with flags and runs the steps on it. */
static void check_base_steps(int flags, const base_step *s, size_t n) {
    base o;
    build_base(&o, flags);
    base_run_steps(&o, s, n);
    free(o.b.p);
}

/* Reads every byte the reader hands out (for AddressSanitizer). */
static unsigned touch_all(const moe_gguf *g) {
    unsigned sum = 0;
    for (int64_t i = 0; i < moe_gguf_n_kv(g); i++) {
        const moe_gguf_kv *kv = moe_gguf_kv_at(g, i);
        for (uint64_t j = 0; j < kv->key.len; j++) sum += (unsigned char)kv->key.ptr[j];
        if (kv->type == MOE_GGUF_TYPE_STRING) {
            for (uint64_t j = 0; j < kv->v.str.len; j++) sum += (unsigned char)kv->v.str.ptr[j];
        }
        if (kv->type == MOE_GGUF_TYPE_ARRAY && kv->arr_type == MOE_GGUF_TYPE_STRING) {
            for (uint64_t e = 0; e < kv->arr_n; e++) {
                moe_gguf_str s = moe_gguf_arr_str(g, kv, e);
                for (uint64_t j = 0; j < s.len; j++) sum += (unsigned char)s.ptr[j];
            }
        }
    }
    for (int64_t i = 0; i < moe_gguf_n_tensors(g); i++) {
        const moe_gguf_tensor *t = moe_gguf_tensor_at(g, i);
        const uint8_t *d = t->data;
        for (uint64_t j = 0; j < t->nbytes; j++) sum += d[j];
    }
    return sum;
}

/* ==== Corrupt files ===================================================== */

TEST(gguf_base_valid) {
    base o;
    build_base(&o, 0);
    uint8_t *copy;
    moe_gguf *g = open_ok(o.b.p, o.b.n, &copy);
    ASSERT_EQ_INT(moe_gguf_n_kv(g), 4);
    ASSERT_EQ_INT(moe_gguf_n_tensors(g), 2);
    const moe_gguf_kv *kv = moe_gguf_find_kv(g, "test.vocab");
    assert_str(moe_gguf_arr_str(g, kv, 1), "bc");
    const moe_gguf_tensor *t = moe_gguf_find_tensor(g, "output.weight");
    ASSERT_EQ_INT(t->type, MOE_DTYPE_Q8_0);
    ASSERT_EQ_INT(t->nbytes, 34);
    ASSERT((const uint8_t *)t->data == copy + o.data_start + 384);
    ASSERT((const uint8_t *)t->data + t->nbytes == copy + o.b.n);
    touch_all(g);
    close_copy(g, copy);
    free(o.b.p);
}

TEST(gguf_truncated_every_offset) {
    base o;
    build_base(&o, 0);
    for (size_t n = 0; n < o.b.n; n++) expect_bad(o.b.p, n, MOE_EFORMAT, SIZE_MAX);

    /* and a writer's file, up to the end of its last tensor's data */
    moe_gguf_writer *w = build_writer();
    float x[40] = {0};
    int64_t ne[2] = {5, 7};
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "a", MOE_DTYPE_F32, 2, ne, x), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "b", MOE_DTYPE_BF16, 1, ne, x), 0);
    size_t n;
    uint8_t *bytes = write_bytes(w, &n), *copy;
    moe_gguf_writer_destroy(w);
    moe_gguf *g = open_ok(bytes, n, &copy);
    const moe_gguf_tensor *t = moe_gguf_find_tensor(g, "b");
    size_t end = (size_t)((const uint8_t *)t->data - copy) + t->nbytes;
    close_copy(g, copy);
    for (size_t k = 0; k < end; k++) expect_bad(bytes, k, MOE_EFORMAT, SIZE_MAX);
    for (size_t k = end; k <= n; k++) {
        g = open_ok(bytes, k, &copy);
        close_copy(g, copy);
    }
    free(bytes);
    free(o.b.p);
}

TEST(gguf_random_corruption) {
    base o;
    build_base(&o, 0);
    uint64_t seed = 1234;
    uint8_t *p = malloc(o.b.n);
    int opened = 0;
    for (int it = 0; it < 5000; it++) {
        memcpy(p, o.b.p, o.b.n);
        int flips = 1 + (int)(test_rand_u64(&seed) % 3);
        for (int k = 0; k < flips; k++) {
            size_t at = test_rand_u64(&seed) % o.data_start; /* the metadata */
            p[at] = (uint8_t)test_rand_u64(&seed);
        }
        moe_gguf *g;
        moe_err err;
        uint8_t *copy;
        if (open_copy(p, o.b.n, &g, &err, &copy) == 0) {
            touch_all(g);
            close_copy(g, copy);
            opened++;
        } else {
            ASSERT_STR_CONTAINS(err.msg, "offset");
        }
    }
    ASSERT(opened < 5000);
    free(p);
    free(o.b.p);
}

TEST(gguf_bad_magic) {
    base o;
    build_base(&o, 0);
    o.b.p[3] = 'X';
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, 0);
    ASSERT_STR_CONTAINS(e.msg, "magic");
    free(o.b.p);
}

TEST(gguf_bad_version) {
    static const base_step steps[] = {
        {F_VERSION, 1, MOE_EFORMAT, F_VERSION, "version", "v1"},
        {F_VERSION, 4, MOE_EFORMAT, F_VERSION, "version: 4", NULL},
        {F_VERSION, 0x03000000u, MOE_EFORMAT, F_VERSION, "big-endian", NULL},
        /* v2 has the same little-endian layout and is read */
        PATCH(F_VERSION, 2),
    };
    base o;
    build_base(&o, 0);
    base_run_steps(&o, steps, N_OF(steps));
    uint8_t *copy;
    moe_gguf *g = open_ok(o.b.p, o.b.n, &copy);
    ASSERT_EQ_INT(moe_gguf_version(g), 2);
    close_copy(g, copy);
    free(o.b.p);
}

TEST(gguf_huge_counts) {
    base o;
    build_base(&o, 0);
    const base_step steps[] = {
        {F_N_TENSORS, 1ull << 40, MOE_EFORMAT, F_N_TENSORS, "n_tensors", NULL},
        {F_N_TENSORS, UINT64_MAX, MOE_EFORMAT, F_N_TENSORS, "n_tensors", "negative"},
        PATCH(F_N_TENSORS, 2),
        {F_N_KV, 1ull << 59, MOE_EFORMAT, F_N_KV, "n_kv", NULL},
        {F_N_KV, 1ull << 63, MOE_EFORMAT, F_N_KV, "n_kv", NULL},
        /* individually plausible, together too many */
        PATCH(F_N_TENSORS, (o.b.n - 24) / 32),
        {F_N_KV, (o.b.n - 24) / 13, MOE_EFORMAT, F_N_TENSORS, "n_kv", NULL},
        /* a few too many: the parse runs off the end or into garbage */
        PATCH(F_N_TENSORS, 2),
        {F_N_KV, 5, MOE_EFORMAT, F_ANY, NULL, NULL},
        PATCH(F_N_KV, 4),
        {F_N_TENSORS, 3, MOE_EFORMAT, F_ANY, NULL, NULL},
    };
    base_run_steps(&o, steps, N_OF(steps));
    free(o.b.p);
}

TEST(gguf_string_past_end) {
    base o;
    build_base(&o, 0);
    const base_step steps[] = {
        {F_ARCH_LEN, 1ull << 40, MOE_EFORMAT, F_ARCH_LEN,
         "key #0 'general.architecture' string value length", NULL},
        {F_ARCH_LEN, UINT64_MAX, MOE_EFORMAT, F_ARCH_LEN, NULL, NULL},
        PATCH(F_ARCH_LEN, 5),
        /* a key name as long as the file */
        {F_ARCH_KEY, o.b.n, MOE_EFORMAT, F_ARCH_KEY, "key #0 name length", NULL},
        PATCH(F_ARCH_KEY, 20),
        /* a string array element */
        {F_VOCAB_ELEM1, 1ull << 33, MOE_EFORMAT, F_VOCAB_ELEM1,
         "key #3 'test.vocab' element 1 length", NULL},
        PATCH(F_VOCAB_ELEM1, 2),
        /* a string array count */
        {F_VOCAB_N, 1ull << 60, MOE_EFORMAT, F_VOCAB_N, "key #3 'test.vocab' array length", NULL},
    };
    base_run_steps(&o, steps, N_OF(steps));
    free(o.b.p);
}

TEST(gguf_unknown_kv_type) {
    static const base_step steps[] = {
        {F_FLAG_TYPE, 13, MOE_EFORMAT, F_FLAG_TYPE, "key #2 'test.flag' value type: 13", NULL},
        {F_FLAG_TYPE, 0xffffffffu, MOE_EFORMAT, F_FLAG_TYPE, "4294967295", NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_bad_bool) {
    static const base_step steps[] = {
        {F_FLAG_VAL, 2, MOE_EFORMAT, F_FLAG_VAL, "key #2 'test.flag' bool value", NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_nested_array) {
    hb b = {0};
    hb_header(&b, 0, 1);
    hb_key(&b, "nested", MOE_GGUF_TYPE_ARRAY);
    size_t off = b.n;
    hb_u32(&b, MOE_GGUF_TYPE_ARRAY);
    hb_u64(&b, 1);
    hb_u32(&b, MOE_GGUF_TYPE_UINT8);
    hb_u64(&b, 1);
    hb_u8(&b, 1);
    moe_err e = expect_bad(b.p, b.n, MOE_EFORMAT, off);
    ASSERT_STR_CONTAINS(e.msg, "key #0 'nested' array element type");
    ASSERT_STR_CONTAINS(e.msg, "arrays of arrays");
    patch_u32(b.p, off, 77);
    e = expect_bad(b.p, b.n, MOE_EFORMAT, off);
    ASSERT_STR_CONTAINS(e.msg, "77");
    /* a bool array element that is not 0 or 1 */
    patch_u32(b.p, off, MOE_GGUF_TYPE_BOOL);
    patch_u64(b.p, off + 4, 13);
    b.p[off + 12 + 3] = 9;
    e = expect_bad(b.p, b.n, MOE_EFORMAT, off + 15);
    ASSERT_STR_CONTAINS(e.msg, "element 3");
    free(b.p);
}

TEST(gguf_unknown_tensor_type) {
    static const base_step steps[] = {
        {F_TTYPE, 16 /* IQ2_XXS */, MOE_ENOTSUP, F_TTYPE, "tensor 'tok_embd.weight' (#0) type",
         "16"},
        {F_TTYPE, 15 /* Q8_K: activations only */, MOE_ENOTSUP, F_TTYPE, "type", "15"},
        {F_TTYPE, 1000, MOE_ENOTSUP, F_TTYPE, "1000", NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

/* A K type on rows that are no multiple of its 256-element super-block (the
 * base tensor's rows have 32 elements): a clear error naming the tensor,
 * the type and the block, at dimension 0. */
TEST(gguf_k_type_row_not_256) {
    static const base_step steps[] = {
        {F_TTYPE, 12 /* Q4_K */, MOE_EFORMAT, F_NE0, "tensor 'tok_embd.weight' (#0) dimension 0",
         "not a multiple of the q4_K block size 256"},
        {F_TTYPE, 23 /* IQ4_XS */, MOE_EFORMAT, F_NE0, "dimension 0: 32", "iq4_xs block size 256"},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_bad_n_dims) {
    static const base_step steps[] = {
        {F_N_DIMS, 0, MOE_EFORMAT, F_N_DIMS, "tensor 'tok_embd.weight' (#0) n_dims", NULL},
        {F_N_DIMS, 5, MOE_EFORMAT, F_N_DIMS, "n_dims: 5", NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_ne_zero) {
    static const base_step steps[] = {
        {F_NE1, 0, MOE_EFORMAT, F_NE1, "tensor 'tok_embd.weight' (#0) dimension 1", NULL},
        {F_NE1, (uint64_t)-5, MOE_EFORMAT, F_NE1, "-5", NULL},
        PATCH(F_NE1, 3),
        {F_NE0, 0, MOE_EFORMAT, F_NE0, NULL, NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_ne_overflow) {
    static const base_step steps[] = {
        /* element count past int64 */
        PATCH(F_NE0, 1ull << 40),
        {F_NE1, 1ull << 40, MOE_EFORMAT, F_NE1, "dimension 1", "overflow"},
        /* element count fits, byte count (x4 for f32) does not */
        PATCH(F_NE0, 1ull << 31),
        {F_NE1, 1ull << 31, MOE_EFORMAT, F_NE1, "overflow", NULL},
        /* both fit, but the data is far past the end */
        PATCH(F_NE0, 1ull << 20),
        {F_NE1, 1ull << 20, MOE_EFORMAT, F_TOFF, "exceeds", NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_bad_block) {
    static const base_step steps[] = {
        {F_T1_NE0, 48, MOE_EFORMAT, F_T1_NE0, "tensor 'output.weight' (#1) dimension 0",
         "block size 32"},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_misaligned_offset) {
    static const base_step steps[] = {
        {F_T1_OFF, 385, MOE_EFORMAT, F_T1_OFF, "tensor 'output.weight' (#1) data offset",
         "alignment 32"},
        PATCH(F_T1_OFF, 384),
        {F_TOFF, 16, MOE_EFORMAT, F_TOFF, NULL, NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_data_past_end) {
    static const base_step steps[] = {
        /* aligned, but 416 + 34 > 418 */
        {F_T1_OFF, 416, MOE_EFORMAT, F_T1_OFF,
         "tensor 'output.weight' (#1): data offset 416 + size 34", "exceeds"},
        /* would wrap around */
        {F_T1_OFF, UINT64_MAX - 31, MOE_EFORMAT, F_T1_OFF, NULL, NULL},
        PATCH(F_T1_OFF, 384),
    };
    base o;
    build_base(&o, 0);
    base_run_steps(&o, steps, N_OF(steps));
    /* the file one byte short of the last tensor */
    expect_bad(o.b.p, o.b.n - 1, MOE_EFORMAT, o.at[F_T1_OFF]);
    free(o.b.p);
}

TEST(gguf_duplicate_tensor) {
    static const base_step steps[] = {
        {F_NONE, 0, MOE_EFORMAT, F_DUP_TENSOR, "tensor 'output.weight' (#2) name: duplicate", "#1"},
    };
    check_base_steps(BASE_DUP_TENSOR, steps, N_OF(steps));
}

TEST(gguf_duplicate_key) {
    static const base_step steps[] = {
        {F_NONE, 0, MOE_EFORMAT, F_DUP_KEY, "key #4 'test.flag': duplicate key", "#2"},
    };
    check_base_steps(BASE_DUP_KEY, steps, N_OF(steps));
}

TEST(gguf_bad_alignment) {
    static const base_step steps[] = {
        {F_ALIGN_VAL, 48, MOE_EFORMAT, F_ALIGN_VAL, "'general.alignment'", "power of two"},
        {F_ALIGN_VAL, 0, MOE_EFORMAT, F_ALIGN_VAL, NULL, NULL},
        PATCH(F_ALIGN_VAL, 32),
        {F_ALIGN_TYPE, MOE_GGUF_TYPE_INT32, MOE_EFORMAT, F_ALIGN_TYPE, "must be u32", NULL},
        /* a valid alignment the tensor offsets do not meet */
        PATCH(F_ALIGN_TYPE, MOE_GGUF_TYPE_UINT32),
        {F_ALIGN_VAL, 256, MOE_EFORMAT, F_T1_OFF, "alignment 256", NULL},
    };
    check_base_steps(0, steps, N_OF(steps));
}

TEST(gguf_bad_args) {
    moe_gguf *g;
    moe_err err;
    ASSERT_EQ_INT(moe_gguf_open_buffer(&g, NULL, 10, "x", &err), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_open_buffer(&g, NULL, 0, "x", &err), MOE_EFORMAT);
    ASSERT_STR_CONTAINS(err.msg, "x: magic");
    ASSERT_EQ_INT(moe_gguf_open_buffer(&g, "GG", 2, NULL, NULL), MOE_EFORMAT);
}
