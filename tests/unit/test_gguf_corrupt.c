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
        moe_gguf_close(g);
        free(copy);
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
typedef struct base {
    hb b;
    size_t arch_len;                      /* key #0 string value length */
    size_t arch_key_len;                  /* key #0 name length */
    size_t align_type, align_val;         /* key #1 general.alignment */
    size_t flag_type, flag_val;           /* key #2 test.flag (bool) */
    size_t vocab_n, vocab_elem1;          /* key #3 test.vocab (string array) */
    size_t n_dims, ne0, ne1, ttype, toff; /* tensor #0 tok_embd.weight */
    size_t t1_ne0, t1_type, t1_off;       /* tensor #1 output.weight (q8_0) */
    size_t data_start;
    size_t dup_key, dup_tensor; /* where the duplicate key / tensor info starts */
} base;

static void build_base(base *o, int flags) {
    hb *b = &o->b;
    memset(o, 0, sizeof *o);
    hb_put(b, "GGUF", 4);
    hb_u32(b, 3);
    hb_u64(b, (flags & BASE_DUP_TENSOR) ? 3 : 2);
    hb_u64(b, (flags & BASE_DUP_KEY) ? 5 : 4);

    o->arch_key_len = b->n;
    hb_key(b, "general.architecture", MOE_GGUF_TYPE_STRING);
    o->arch_len = b->n;
    hb_str(b, "llama");
    o->align_type = hb_key(b, "general.alignment", MOE_GGUF_TYPE_UINT32);
    o->align_val = b->n;
    hb_u32(b, 32);
    o->flag_type = hb_key(b, "test.flag", MOE_GGUF_TYPE_BOOL);
    o->flag_val = b->n;
    hb_u8(b, 1);
    hb_key(b, "test.vocab", MOE_GGUF_TYPE_ARRAY);
    hb_u32(b, MOE_GGUF_TYPE_STRING);
    o->vocab_n = b->n;
    hb_u64(b, 3);
    hb_str(b, "a");
    o->vocab_elem1 = b->n;
    hb_str(b, "bc");
    hb_str(b, "");
    if (flags & BASE_DUP_KEY) {
        o->dup_key = b->n;
        hb_key(b, "test.flag", MOE_GGUF_TYPE_UINT32);
        hb_u32(b, 5);
    }

    hb_str(b, "tok_embd.weight");
    o->n_dims = b->n;
    hb_u32(b, 2);
    o->ne0 = b->n;
    hb_u64(b, 32);
    o->ne1 = b->n;
    hb_u64(b, 3);
    o->ttype = b->n;
    hb_u32(b, MOE_DTYPE_F32);
    o->toff = b->n;
    hb_u64(b, 0); /* 384 bytes */

    hb_str(b, "output.weight");
    hb_u32(b, 1);
    o->t1_ne0 = b->n;
    hb_u64(b, 32);
    o->t1_type = b->n;
    hb_u32(b, MOE_DTYPE_Q8_0);
    o->t1_off = b->n;
    hb_u64(b, 384); /* 34 bytes */

    if (flags & BASE_DUP_TENSOR) {
        o->dup_tensor = b->n;
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
    moe_gguf_close(g);
    free(copy);
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
    moe_gguf_close(g);
    free(copy);
    for (size_t k = 0; k < end; k++) expect_bad(bytes, k, MOE_EFORMAT, SIZE_MAX);
    for (size_t k = end; k <= n; k++) {
        g = open_ok(bytes, k, &copy);
        moe_gguf_close(g);
        free(copy);
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
            moe_gguf_close(g);
            free(copy);
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
    base o;
    build_base(&o, 0);
    patch_u32(o.b.p, 4, 1);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, 4);
    ASSERT_STR_CONTAINS(e.msg, "version");
    ASSERT_STR_CONTAINS(e.msg, "v1");
    patch_u32(o.b.p, 4, 4);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, 4);
    ASSERT_STR_CONTAINS(e.msg, "version: 4");
    patch_u32(o.b.p, 4, 0x03000000u);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, 4);
    ASSERT_STR_CONTAINS(e.msg, "big-endian");
    /* v2 has the same little-endian layout and is read */
    patch_u32(o.b.p, 4, 2);
    uint8_t *copy;
    moe_gguf *g = open_ok(o.b.p, o.b.n, &copy);
    ASSERT_EQ_INT(moe_gguf_version(g), 2);
    moe_gguf_close(g);
    free(copy);
    free(o.b.p);
}

TEST(gguf_huge_counts) {
    base o;
    build_base(&o, 0);
    uint8_t *p = o.b.p;
    moe_err e;
    patch_u64(p, 8, 1ull << 40);
    e = expect_bad(p, o.b.n, MOE_EFORMAT, 8);
    ASSERT_STR_CONTAINS(e.msg, "n_tensors");
    patch_u64(p, 8, UINT64_MAX);
    e = expect_bad(p, o.b.n, MOE_EFORMAT, 8);
    ASSERT_STR_CONTAINS(e.msg, "n_tensors");
    ASSERT_STR_CONTAINS(e.msg, "negative");
    patch_u64(p, 8, 2);
    patch_u64(p, 16, 1ull << 59);
    e = expect_bad(p, o.b.n, MOE_EFORMAT, 16);
    ASSERT_STR_CONTAINS(e.msg, "n_kv");
    patch_u64(p, 16, 1ull << 63);
    e = expect_bad(p, o.b.n, MOE_EFORMAT, 16);
    ASSERT_STR_CONTAINS(e.msg, "n_kv");
    /* individually plausible, together too many */
    patch_u64(p, 8, (o.b.n - 24) / 32);
    patch_u64(p, 16, (o.b.n - 24) / 13);
    e = expect_bad(p, o.b.n, MOE_EFORMAT, 8);
    ASSERT_STR_CONTAINS(e.msg, "n_kv");
    /* a few too many: the parse runs off the end or into garbage */
    patch_u64(p, 8, 2);
    patch_u64(p, 16, 5);
    expect_bad(p, o.b.n, MOE_EFORMAT, SIZE_MAX);
    patch_u64(p, 16, 4);
    patch_u64(p, 8, 3);
    expect_bad(p, o.b.n, MOE_EFORMAT, SIZE_MAX);
    free(p);
}

TEST(gguf_string_past_end) {
    base o;
    build_base(&o, 0);
    moe_err e;
    patch_u64(o.b.p, o.arch_len, 1ull << 40);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.arch_len);
    ASSERT_STR_CONTAINS(e.msg, "key #0 'general.architecture' string value length");
    patch_u64(o.b.p, o.arch_len, UINT64_MAX);
    expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.arch_len);
    patch_u64(o.b.p, o.arch_len, 5);
    patch_u64(o.b.p, o.arch_key_len, o.b.n);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.arch_key_len);
    ASSERT_STR_CONTAINS(e.msg, "key #0 name length");
    patch_u64(o.b.p, o.arch_key_len, 20);
    /* a string array element */
    patch_u64(o.b.p, o.vocab_elem1, 1ull << 33);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.vocab_elem1);
    ASSERT_STR_CONTAINS(e.msg, "key #3 'test.vocab' element 1 length");
    patch_u64(o.b.p, o.vocab_elem1, 2);
    /* a string array count */
    patch_u64(o.b.p, o.vocab_n, 1ull << 60);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.vocab_n);
    ASSERT_STR_CONTAINS(e.msg, "key #3 'test.vocab' array length");
    free(o.b.p);
}

TEST(gguf_unknown_kv_type) {
    base o;
    build_base(&o, 0);
    patch_u32(o.b.p, o.flag_type, 13);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.flag_type);
    ASSERT_STR_CONTAINS(e.msg, "key #2 'test.flag' value type: 13");
    patch_u32(o.b.p, o.flag_type, 0xffffffffu);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.flag_type);
    ASSERT_STR_CONTAINS(e.msg, "4294967295");
    free(o.b.p);
}

TEST(gguf_bad_bool) {
    base o;
    build_base(&o, 0);
    o.b.p[o.flag_val] = 2;
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.flag_val);
    ASSERT_STR_CONTAINS(e.msg, "key #2 'test.flag' bool value");
    free(o.b.p);
}

TEST(gguf_nested_array) {
    hb b = {0};
    hb_put(&b, "GGUF", 4);
    hb_u32(&b, 3);
    hb_u64(&b, 0);
    hb_u64(&b, 1);
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
    base o;
    build_base(&o, 0);
    patch_u32(o.b.p, o.ttype, 12); /* Q4_K */
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_ENOTSUP, o.ttype);
    ASSERT_STR_CONTAINS(e.msg, "tensor 'tok_embd.weight' (#0) type");
    ASSERT_STR_CONTAINS(e.msg, "12");
    patch_u32(o.b.p, o.ttype, 1000);
    e = expect_bad(o.b.p, o.b.n, MOE_ENOTSUP, o.ttype);
    ASSERT_STR_CONTAINS(e.msg, "1000");
    free(o.b.p);
}

TEST(gguf_bad_n_dims) {
    base o;
    build_base(&o, 0);
    patch_u32(o.b.p, o.n_dims, 0);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.n_dims);
    ASSERT_STR_CONTAINS(e.msg, "tensor 'tok_embd.weight' (#0) n_dims");
    patch_u32(o.b.p, o.n_dims, 5);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.n_dims);
    ASSERT_STR_CONTAINS(e.msg, "n_dims: 5");
    free(o.b.p);
}

TEST(gguf_ne_zero) {
    base o;
    build_base(&o, 0);
    patch_u64(o.b.p, o.ne1, 0);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.ne1);
    ASSERT_STR_CONTAINS(e.msg, "tensor 'tok_embd.weight' (#0) dimension 1");
    patch_u64(o.b.p, o.ne1, (uint64_t)-5);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.ne1);
    ASSERT_STR_CONTAINS(e.msg, "-5");
    patch_u64(o.b.p, o.ne1, 3);
    patch_u64(o.b.p, o.ne0, 0);
    expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.ne0);
    free(o.b.p);
}

TEST(gguf_ne_overflow) {
    base o;
    build_base(&o, 0);
    moe_err e;
    /* element count past int64 */
    patch_u64(o.b.p, o.ne0, 1ull << 40);
    patch_u64(o.b.p, o.ne1, 1ull << 40);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.ne1);
    ASSERT_STR_CONTAINS(e.msg, "dimension 1");
    ASSERT_STR_CONTAINS(e.msg, "overflow");
    /* element count fits, byte count (x4 for f32) does not */
    patch_u64(o.b.p, o.ne0, 1ull << 31);
    patch_u64(o.b.p, o.ne1, 1ull << 31);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.ne1);
    ASSERT_STR_CONTAINS(e.msg, "overflow");
    /* both fit, but the data is far past the end */
    patch_u64(o.b.p, o.ne0, 1ull << 20);
    patch_u64(o.b.p, o.ne1, 1ull << 20);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.toff);
    ASSERT_STR_CONTAINS(e.msg, "exceeds");
    free(o.b.p);
}

TEST(gguf_bad_block) {
    base o;
    build_base(&o, 0);
    patch_u64(o.b.p, o.t1_ne0, 48);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.t1_ne0);
    ASSERT_STR_CONTAINS(e.msg, "tensor 'output.weight' (#1) dimension 0");
    ASSERT_STR_CONTAINS(e.msg, "block size 32");
    free(o.b.p);
}

TEST(gguf_misaligned_offset) {
    base o;
    build_base(&o, 0);
    patch_u64(o.b.p, o.t1_off, 385);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.t1_off);
    ASSERT_STR_CONTAINS(e.msg, "tensor 'output.weight' (#1) data offset");
    ASSERT_STR_CONTAINS(e.msg, "alignment 32");
    patch_u64(o.b.p, o.t1_off, 384);
    patch_u64(o.b.p, o.toff, 16);
    expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.toff);
    free(o.b.p);
}

TEST(gguf_data_past_end) {
    base o;
    build_base(&o, 0);
    patch_u64(o.b.p, o.t1_off, 416); /* aligned, but 416 + 34 > 418 */
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.t1_off);
    ASSERT_STR_CONTAINS(e.msg, "tensor 'output.weight' (#1): data offset 416 + size 34");
    ASSERT_STR_CONTAINS(e.msg, "exceeds");
    patch_u64(o.b.p, o.t1_off, UINT64_MAX - 31); /* would wrap around */
    expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.t1_off);
    /* the file one byte short of the last tensor */
    patch_u64(o.b.p, o.t1_off, 384);
    expect_bad(o.b.p, o.b.n - 1, MOE_EFORMAT, o.t1_off);
    free(o.b.p);
}

TEST(gguf_duplicate_tensor) {
    base o;
    build_base(&o, BASE_DUP_TENSOR);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.dup_tensor);
    ASSERT_STR_CONTAINS(e.msg, "tensor 'output.weight' (#2) name: duplicate");
    ASSERT_STR_CONTAINS(e.msg, "#1");
    free(o.b.p);
}

TEST(gguf_duplicate_key) {
    base o;
    build_base(&o, BASE_DUP_KEY);
    moe_err e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.dup_key);
    ASSERT_STR_CONTAINS(e.msg, "key #4 'test.flag': duplicate key");
    ASSERT_STR_CONTAINS(e.msg, "#2");
    free(o.b.p);
}

TEST(gguf_bad_alignment) {
    base o;
    build_base(&o, 0);
    moe_err e;
    patch_u32(o.b.p, o.align_val, 48);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.align_val);
    ASSERT_STR_CONTAINS(e.msg, "'general.alignment'");
    ASSERT_STR_CONTAINS(e.msg, "power of two");
    patch_u32(o.b.p, o.align_val, 0);
    expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.align_val);
    patch_u32(o.b.p, o.align_val, 32);
    patch_u32(o.b.p, o.align_type, MOE_GGUF_TYPE_INT32);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.align_type);
    ASSERT_STR_CONTAINS(e.msg, "must be u32");
    /* a valid alignment the tensor offsets do not meet */
    patch_u32(o.b.p, o.align_type, MOE_GGUF_TYPE_UINT32);
    patch_u32(o.b.p, o.align_val, 256);
    e = expect_bad(o.b.p, o.b.n, MOE_EFORMAT, o.t1_off);
    ASSERT_STR_CONTAINS(e.msg, "alignment 256");
    free(o.b.p);
}

TEST(gguf_bad_args) {
    moe_gguf *g;
    moe_err err;
    ASSERT_EQ_INT(moe_gguf_open_buffer(&g, NULL, 10, "x", &err), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_open_buffer(&g, NULL, 0, "x", &err), MOE_EFORMAT);
    ASSERT_STR_CONTAINS(err.msg, "x: magic");
    ASSERT_EQ_INT(moe_gguf_open_buffer(&g, "GG", 2, NULL, NULL), MOE_EFORMAT);
}
