/* test_gguf.c - the GGUF reader and writer (moe/gguf.h): round trips,
 * getters, determinism, files and writer errors; corrupt files are
 * test_gguf_corrupt.c. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_testlib.h"
#include "moe/dtype.h"
#include "moe/gguf.h"
#include "test.h"

/* ==== Round trips ======================================================= */

TEST(gguf_roundtrip_metadata) {
    moe_gguf_writer *w = build_writer();
    size_t n;
    uint8_t *bytes = write_bytes(w, &n), *copy;
    moe_gguf_writer_destroy(w);
    moe_gguf *g = open_ok(bytes, n, &copy);

    ASSERT_EQ_INT(moe_gguf_version(g), 3);
    ASSERT_EQ_INT(moe_gguf_alignment(g), 32);
    ASSERT_EQ_INT(moe_gguf_file_size(g), n);
    ASSERT_EQ_INT(moe_gguf_n_tensors(g), 0);
    ASSERT_EQ_INT(moe_gguf_n_kv(g), 20);
    static const char *order[] = {"general.architecture",
                                  "llama.block_count",
                                  "test.i32",
                                  "test.f32",
                                  "test.bool",
                                  "test.empty",
                                  "tokenizer.ggml.tokens",
                                  "test.arr_str_empty",
                                  "a.u8",
                                  "a.i8",
                                  "a.u16",
                                  "a.i16",
                                  "a.u32",
                                  "a.i32",
                                  "a.f32",
                                  "a.u64",
                                  "a.i64",
                                  "a.f64",
                                  "a.bool",
                                  "a.empty"};
    for (size_t i = 0; i < N_OF(order); i++) {
        const moe_gguf_kv *kv = moe_gguf_kv_at(g, (int64_t)i);
        ASSERT(kv);
        assert_str(kv->key, order[i]);
        ASSERT(moe_gguf_find_kv(g, order[i]) == kv);
        ASSERT(kv->offset < n);
        ASSERT(memcmp(bytes + kv->offset + 8, order[i], strlen(order[i])) == 0);
    }
    ASSERT(moe_gguf_kv_at(g, -1) == NULL);
    ASSERT(moe_gguf_kv_at(g, 20) == NULL);
    ASSERT(moe_gguf_find_kv(g, "missing") == NULL);
    ASSERT(moe_gguf_find_kv(g, "a.u") == NULL);

    moe_gguf_str s;
    uint32_t u32;
    int64_t i64;
    float f32;
    int b;
    ASSERT_EQ_INT(moe_gguf_get_str(g, "general.architecture", &s), 0);
    assert_str(s, "llama");
    ASSERT_EQ_INT(moe_gguf_get_str(g, "test.empty", &s), 0);
    ASSERT_EQ_INT(s.len, 0);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "llama.block_count", &u32), 0);
    ASSERT_EQ_INT(u32, 24);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "llama.block_count")->type, MOE_GGUF_TYPE_UINT32);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "test.i32", &i64), 0);
    ASSERT_EQ_INT(i64, -123456);
    ASSERT_EQ_INT(moe_gguf_get_f32(g, "test.f32", &f32), 0);
    ASSERT_NEAR(f32, 0.125, 0);
    ASSERT_EQ_INT(moe_gguf_get_bool(g, "test.bool", &b), 0);
    ASSERT_EQ_INT(b, 1);

    const moe_gguf_kv *kv = moe_gguf_find_kv(g, "tokenizer.ggml.tokens");
    ASSERT_EQ_INT(kv->type, MOE_GGUF_TYPE_ARRAY);
    ASSERT_EQ_INT(kv->arr_type, MOE_GGUF_TYPE_STRING);
    ASSERT_EQ_INT(kv->arr_n, N_OF(arr_strs));
    for (size_t i = 0; i < N_OF(arr_strs); i++) assert_str(moe_gguf_arr_str(g, kv, i), arr_strs[i]);
    s = moe_gguf_arr_str(g, kv, N_OF(arr_strs));
    ASSERT(s.ptr == NULL && s.len == 0);
    kv = moe_gguf_find_kv(g, "test.arr_str_empty");
    ASSERT_EQ_INT(kv->arr_type, MOE_GGUF_TYPE_STRING);
    ASSERT_EQ_INT(kv->arr_n, 0);
    ASSERT(moe_gguf_arr_str(g, kv, 0).ptr == NULL);

    static const struct {
        const char *key;
        moe_gguf_type t;
        const void *data;
        size_t n, bytes;
    } arrs[] = {
        {"a.u8", MOE_GGUF_TYPE_UINT8, arr_u8, N_OF(arr_u8), sizeof arr_u8},
        {"a.i8", MOE_GGUF_TYPE_INT8, arr_i8, N_OF(arr_i8), sizeof arr_i8},
        {"a.u16", MOE_GGUF_TYPE_UINT16, arr_u16, N_OF(arr_u16), sizeof arr_u16},
        {"a.i16", MOE_GGUF_TYPE_INT16, arr_i16, N_OF(arr_i16), sizeof arr_i16},
        {"a.u32", MOE_GGUF_TYPE_UINT32, arr_u32, N_OF(arr_u32), sizeof arr_u32},
        {"a.i32", MOE_GGUF_TYPE_INT32, arr_i32, N_OF(arr_i32), sizeof arr_i32},
        {"a.f32", MOE_GGUF_TYPE_FLOAT32, arr_f32, N_OF(arr_f32), sizeof arr_f32},
        {"a.u64", MOE_GGUF_TYPE_UINT64, arr_u64, N_OF(arr_u64), sizeof arr_u64},
        {"a.i64", MOE_GGUF_TYPE_INT64, arr_i64, N_OF(arr_i64), sizeof arr_i64},
        {"a.f64", MOE_GGUF_TYPE_FLOAT64, arr_f64, N_OF(arr_f64), sizeof arr_f64},
        {"a.bool", MOE_GGUF_TYPE_BOOL, arr_bool, N_OF(arr_bool), sizeof arr_bool},
        {"a.empty", MOE_GGUF_TYPE_UINT32, NULL, 0, 0},
    };
    for (size_t i = 0; i < N_OF(arrs); i++) {
        kv = moe_gguf_find_kv(g, arrs[i].key);
        ASSERT(kv);
        ASSERT_EQ_INT(kv->type, MOE_GGUF_TYPE_ARRAY);
        ASSERT_EQ_INT(kv->arr_type, arrs[i].t);
        ASSERT_EQ_INT(kv->arr_n, arrs[i].n);
        ASSERT(kv->arr_data != NULL);
        if (arrs[i].bytes) ASSERT(memcmp(kv->arr_data, arrs[i].data, arrs[i].bytes) == 0);
        /* not a string array */
        ASSERT(moe_gguf_arr_str(g, kv, 0).ptr == NULL);
        /* arrays are not scalars */
        ASSERT_EQ_INT(moe_gguf_get_i64(g, arrs[i].key, &i64), MOE_EFORMAT);
    }
    moe_gguf_close(g);
    free(copy);
    free(bytes);
}

/* Fills a tensor of type t with n_elems pseudo-random values. */
static void *make_tensor_data(moe_dtype t, int64_t n_elems, uint64_t *seed, size_t *nbytes) {
    float *f = malloc((size_t)n_elems * sizeof *f);
    ASSERT(f);
    for (int64_t i = 0; i < n_elems; i++) f[i] = test_rand_f32(seed);
    *nbytes = moe_dtype_row_bytes(t, n_elems);
    void *d = malloc(*nbytes);
    ASSERT(d);
    moe_dtype_from_f32(t, f, d, n_elems);
    free(f);
    return d;
}

TEST(gguf_roundtrip_tensors) {
    static const struct {
        const char *name;
        moe_dtype t;
        uint32_t n_dims;
        int64_t ne[4];
    } specs[] = {
        {"a.f32", MOE_DTYPE_F32, 1, {7, 1, 1, 1}},   {"b.f16", MOE_DTYPE_F16, 2, {5, 3, 1, 1}},
        {"c.bf16", MOE_DTYPE_BF16, 3, {4, 3, 2, 1}}, {"d.q8_0", MOE_DTYPE_Q8_0, 4, {64, 2, 2, 2}},
        {"e.f32", MOE_DTYPE_F32, 2, {1, 1, 1, 1}},
    };
    enum { NT = N_OF(specs) };
    void *data[NT], *orig[NT];
    size_t nbytes[NT];
    uint64_t seed = 42;
    moe_gguf_writer *w = moe_gguf_writer_create();
    ASSERT_EQ_INT(moe_gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    for (int i = 0; i < NT; i++) {
        int64_t n = specs[i].ne[0] * specs[i].ne[1] * specs[i].ne[2] * specs[i].ne[3];
        data[i] = make_tensor_data(specs[i].t, n, &seed, &nbytes[i]);
        ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, specs[i].name, specs[i].t, specs[i].n_dims,
                                                 specs[i].ne, data[i]),
                      0);
        /* the writer copied the data */
        orig[i] = malloc(nbytes[i]);
        memcpy(orig[i], data[i], nbytes[i]);
        memset(data[i], 0xAB, nbytes[i]);
    }
    size_t n;
    uint8_t *bytes = write_bytes(w, &n), *copy;
    moe_gguf_writer_destroy(w);
    moe_gguf *g = open_ok(bytes, n, &copy);

    ASSERT_EQ_INT(moe_gguf_n_tensors(g), NT);
    ASSERT_EQ_INT(n % 32, 0); /* padded after the last tensor, as llama.cpp writes */
    uint64_t data_start = 0;
    for (int i = 0; i < NT; i++) {
        const moe_gguf_tensor *t = moe_gguf_tensor_at(g, i);
        ASSERT(t);
        ASSERT(moe_gguf_find_tensor(g, specs[i].name) == t);
        assert_str(t->name, specs[i].name);
        ASSERT_EQ_INT(t->n_dims, specs[i].n_dims);
        for (int d = 0; d < 4; d++) ASSERT_EQ_INT(t->ne[d], specs[i].ne[d]);
        ASSERT_EQ_INT(t->type, specs[i].t);
        ASSERT_EQ_INT(t->nbytes, nbytes[i]);
        ASSERT_EQ_INT(t->offset % 32, 0);
        size_t pos = (size_t)((const uint8_t *)t->data - copy);
        ASSERT_EQ_INT(pos % 32, 0);
        if (i == 0) {
            data_start = pos - t->offset;
            ASSERT_EQ_INT(t->offset, 0);
        }
        ASSERT_EQ_INT(pos, data_start + t->offset);
        ASSERT(pos + t->nbytes <= n);
        ASSERT(memcmp(t->data, orig[i], nbytes[i]) == 0);
        if (i > 0) {
            const moe_gguf_tensor *p = moe_gguf_tensor_at(g, i - 1);
            ASSERT_EQ_INT(t->offset, (p->offset + p->nbytes + 31) / 32 * 32);
        }
    }
    ASSERT(moe_gguf_tensor_at(g, NT) == NULL);
    ASSERT(moe_gguf_tensor_at(g, -1) == NULL);
    ASSERT(moe_gguf_find_tensor(g, "a.f3") == NULL);
    ASSERT(moe_gguf_find_tensor(g, "missing") == NULL);
    moe_gguf_close(g);
    free(copy);
    free(bytes);
    for (int i = 0; i < NT; i++) {
        free(orig[i]);
        free(data[i]);
    }
}

TEST(gguf_roundtrip_alignment) {
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t ne1[1] = {3}, ne8[1] = {8};
    moe_gguf_writer *w = moe_gguf_writer_create();
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, "general.alignment", 64), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "a", MOE_DTYPE_F32, 1, ne1, x), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "b", MOE_DTYPE_F32, 1, ne8, x), 0);
    /* alignment must be a u32 power of two */
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, "general.alignment", 48), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, "general.alignment", 0), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_set_i32(w, "general.alignment", 64), MOE_EINVAL);
    size_t n;
    uint8_t *bytes = write_bytes(w, &n), *copy;
    moe_gguf_writer_destroy(w);
    moe_gguf *g = open_ok(bytes, n, &copy);
    ASSERT_EQ_INT(moe_gguf_alignment(g), 64);
    ASSERT_EQ_INT(n % 64, 0);
    const moe_gguf_tensor *a = moe_gguf_find_tensor(g, "a"), *b = moe_gguf_find_tensor(g, "b");
    ASSERT(a && b);
    ASSERT_EQ_INT(a->offset, 0);
    ASSERT_EQ_INT(b->offset, 64);
    ASSERT_EQ_INT(((const uint8_t *)a->data - copy) % 64, 0);
    ASSERT(memcmp(b->data, x, sizeof x) == 0);
    moe_gguf_close(g);
    free(copy);
    free(bytes);
}

TEST(gguf_deterministic) {
    moe_gguf_writer *w1 = build_writer(), *w2 = build_writer();
    uint64_t seed = 7;
    size_t nb;
    int64_t ne[2] = {96, 3};
    void *d = make_tensor_data(MOE_DTYPE_Q8_0, 96 * 3, &seed, &nb);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w1, "t", MOE_DTYPE_Q8_0, 2, ne, d), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w2, "t", MOE_DTYPE_Q8_0, 2, ne, d), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w1, "u", MOE_DTYPE_F16, 1, ne, d), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w2, "u", MOE_DTYPE_F16, 1, ne, d), 0);
    size_t n1, n2, n3;
    uint8_t *b1 = write_bytes(w1, &n1), *b2 = write_bytes(w2, &n2), *b3 = write_bytes(w1, &n3);
    ASSERT_EQ_INT(n1, n2);
    ASSERT_EQ_INT(n1, n3);
    ASSERT(memcmp(b1, b2, n1) == 0);
    ASSERT(memcmp(b1, b3, n1) == 0);
    moe_gguf_writer_destroy(w1);
    moe_gguf_writer_destroy(w2);
    free(b1);
    free(b2);
    free(b3);
    free(d);
}

/* Every scalar type, read from a handcrafted file (the writer only sets some
 * scalar types), and the typed getters' conversions. */
static hb build_scalars(void) {
    hb b = {0};
    hb_put(&b, "GGUF", 4);
    hb_u32(&b, 3);
    hb_u64(&b, 0);
    hb_u64(&b, 17);
    hb_key(&b, "u8", MOE_GGUF_TYPE_UINT8);
    hb_u8(&b, 200);
    hb_key(&b, "i8", MOE_GGUF_TYPE_INT8);
    hb_u8(&b, (uint8_t)-100);
    hb_key(&b, "u16", MOE_GGUF_TYPE_UINT16);
    uint16_t u16 = 60000;
    hb_put(&b, &u16, 2);
    hb_key(&b, "i16", MOE_GGUF_TYPE_INT16);
    int16_t i16 = -30000;
    hb_put(&b, &i16, 2);
    hb_key(&b, "u32", MOE_GGUF_TYPE_UINT32);
    hb_u32(&b, 4000000000u);
    hb_key(&b, "i32", MOE_GGUF_TYPE_INT32);
    hb_u32(&b, (uint32_t)-2000000000);
    hb_key(&b, "f32", MOE_GGUF_TYPE_FLOAT32);
    float f = 1.5f;
    hb_put(&b, &f, 4);
    hb_key(&b, "bool", MOE_GGUF_TYPE_BOOL);
    hb_u8(&b, 0);
    hb_key(&b, "str", MOE_GGUF_TYPE_STRING);
    hb_u64(&b, 3);
    hb_put(&b, "a\0b", 3);
    hb_key(&b, "u64", MOE_GGUF_TYPE_UINT64);
    hb_u64(&b, (1ull << 63) + 5);
    hb_key(&b, "i64", MOE_GGUF_TYPE_INT64);
    hb_u64(&b, (uint64_t) - (1ll << 62));
    hb_key(&b, "f64", MOE_GGUF_TYPE_FLOAT64);
    double d = 2.5e300;
    hb_put(&b, &d, 8);
    hb_key(&b, "f64.small", MOE_GGUF_TYPE_FLOAT64);
    d = 0.25;
    hb_put(&b, &d, 8);
    hb_key(&b, "i64.small", MOE_GGUF_TYPE_INT64);
    hb_u64(&b, 7);
    hb_key(&b, "u64.small", MOE_GGUF_TYPE_UINT64);
    hb_u64(&b, 4294967295ull);
    hb_key(&b, "u64.big", MOE_GGUF_TYPE_UINT64);
    hb_u64(&b, 4294967296ull);
    hb_key(&b, "", MOE_GGUF_TYPE_BOOL); /* an empty key */
    hb_u8(&b, 1);
    return b; /* no tensors, no padding: allowed */
}

TEST(gguf_read_scalar_types) {
    hb b = build_scalars();
    uint8_t *copy;
    moe_gguf *g = open_ok(b.p, b.n, &copy);
    ASSERT_EQ_INT(moe_gguf_n_kv(g), 17);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "u8")->v.u64, 200);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "i8")->v.i64, -100);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "u16")->v.u64, 60000);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "i16")->v.i64, -30000);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "u32")->v.u64, 4000000000u);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "i32")->v.i64, -2000000000);
    ASSERT_NEAR(moe_gguf_find_kv(g, "f32")->v.f64, 1.5, 0);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "bool")->v.u64, 0);
    ASSERT(moe_gguf_find_kv(g, "u64")->v.u64 == (1ull << 63) + 5);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "i64")->v.i64, -(1ll << 62));
    ASSERT_NEAR(moe_gguf_find_kv(g, "f64")->v.f64, 2.5e300, 0);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "")->v.u64, 1);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "u8")->type, MOE_GGUF_TYPE_UINT8);
    ASSERT_EQ_INT(moe_gguf_find_kv(g, "f64")->type, MOE_GGUF_TYPE_FLOAT64);

    /* byte strings: an embedded NUL is kept */
    moe_gguf_str s;
    ASSERT_EQ_INT(moe_gguf_get_str(g, "str", &s), 0);
    ASSERT_EQ_INT(s.len, 3);
    ASSERT(memcmp(s.ptr, "a\0b", 3) == 0);
    ASSERT(!moe_gguf_str_eq(s, "a"));
    ASSERT(moe_gguf_str_eq(moe_gguf_find_kv(g, "")->key, ""));
    moe_gguf_close(g);
    free(copy);
    free(b.p);
}

TEST(gguf_getters) {
    hb b = build_scalars();
    uint8_t *copy;
    moe_gguf *g = open_ok(b.p, b.n, &copy);
    uint32_t u32 = 99;
    int64_t i64 = 99;
    float f32 = 99;
    int bo = 99;
    moe_gguf_str s = {"untouched", 9};

    /* absent: MOE_ENOTFOUND, out untouched */
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "nope", &u32), MOE_ENOTFOUND);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "nope", &i64), MOE_ENOTFOUND);
    ASSERT_EQ_INT(moe_gguf_get_f32(g, "nope", &f32), MOE_ENOTFOUND);
    ASSERT_EQ_INT(moe_gguf_get_bool(g, "nope", &bo), MOE_ENOTFOUND);
    ASSERT_EQ_INT(moe_gguf_get_str(g, "nope", &s), MOE_ENOTFOUND);
    ASSERT_EQ_INT(u32, 99);
    ASSERT_EQ_INT(i64, 99);
    ASSERT_NEAR(f32, 99, 0);
    ASSERT_EQ_INT(bo, 99);
    ASSERT_EQ_INT(s.len, 9);

    /* u32 from any integer type that fits */
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "u8", &u32), 0);
    ASSERT_EQ_INT(u32, 200);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "u16", &u32), 0);
    ASSERT_EQ_INT(u32, 60000);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "u32", &u32), 0);
    ASSERT_EQ_INT(u32, 4000000000u);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "i64.small", &u32), 0);
    ASSERT_EQ_INT(u32, 7);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "u64.small", &u32), 0);
    ASSERT_EQ_INT(u32, 4294967295u);
    u32 = 99;
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "u64.big", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "u64", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "i8", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "i32", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "i64", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "f32", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "bool", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "str", &u32), MOE_EFORMAT);
    ASSERT_EQ_INT(u32, 99);

    /* i64 */
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "i8", &i64), 0);
    ASSERT_EQ_INT(i64, -100);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "i16", &i64), 0);
    ASSERT_EQ_INT(i64, -30000);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "i32", &i64), 0);
    ASSERT_EQ_INT(i64, -2000000000);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "i64", &i64), 0);
    ASSERT_EQ_INT(i64, -(1ll << 62));
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "u32", &i64), 0);
    ASSERT_EQ_INT(i64, 4000000000ll);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "u64", &i64), MOE_EFORMAT); /* > INT64_MAX */
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "f64", &i64), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "bool", &i64), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_i64(g, "str", &i64), MOE_EFORMAT);

    /* f32 */
    ASSERT_EQ_INT(moe_gguf_get_f32(g, "f32", &f32), 0);
    ASSERT_NEAR(f32, 1.5, 0);
    ASSERT_EQ_INT(moe_gguf_get_f32(g, "f64.small", &f32), 0);
    ASSERT_NEAR(f32, 0.25, 0);
    ASSERT_EQ_INT(moe_gguf_get_f32(g, "f64", &f32), MOE_EFORMAT); /* beyond float */
    ASSERT_EQ_INT(moe_gguf_get_f32(g, "u32", &f32), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_f32(g, "str", &f32), MOE_EFORMAT);

    /* bool and string: exact types only */
    ASSERT_EQ_INT(moe_gguf_get_bool(g, "bool", &bo), 0);
    ASSERT_EQ_INT(bo, 0);
    ASSERT_EQ_INT(moe_gguf_get_bool(g, "", &bo), 0);
    ASSERT_EQ_INT(bo, 1);
    ASSERT_EQ_INT(moe_gguf_get_bool(g, "u8", &bo), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_str(g, "u8", &s), MOE_EFORMAT);
    ASSERT_EQ_INT(moe_gguf_get_str(g, "bool", &s), MOE_EFORMAT);
    moe_gguf_close(g);
    free(copy);
    free(b.p);
}

TEST(gguf_vocab_index) {
    enum { NV = 150000 };
    char **v = malloc(NV * sizeof *v);
    ASSERT(v);
    for (int i = 0; i < NV; i++) {
        v[i] = malloc(24);
        snprintf(v[i], 24, "tok%d%s", i, (i % 7) ? "" : "_long_suffix");
    }
    moe_gguf_writer *w = moe_gguf_writer_create();
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, "before", 1), 0);
    ASSERT_EQ_INT(
        moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v, NV), 0);
    ASSERT_EQ_INT(
        moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v, 3), 0);
    size_t n;
    uint8_t *bytes = write_bytes(w, &n), *copy;
    moe_gguf_writer_destroy(w);
    moe_gguf *g = open_ok(bytes, n, &copy);
    const moe_gguf_kv *kv = moe_gguf_find_kv(g, "tokenizer.ggml.tokens");
    const moe_gguf_kv *mg = moe_gguf_find_kv(g, "tokenizer.ggml.merges");
    ASSERT(kv && mg);
    ASSERT_EQ_INT(kv->arr_n, NV);
    for (int i = NV - 1; i >= 0; i--) assert_str(moe_gguf_arr_str(g, kv, (uint64_t)i), v[i]);
    for (int i = 0; i < 3; i++) assert_str(moe_gguf_arr_str(g, mg, (uint64_t)i), v[i]);
    ASSERT(moe_gguf_arr_str(g, kv, NV).ptr == NULL);
    ASSERT(moe_gguf_arr_str(g, mg, 3).ptr == NULL);
    ASSERT(moe_gguf_arr_str(g, moe_gguf_find_kv(g, "before"), 0).ptr == NULL);
    /* a kv that is not g's */
    moe_gguf_kv fake = *kv;
    ASSERT(moe_gguf_arr_str(g, &fake, 0).ptr == NULL);
    moe_gguf_close(g);
    free(copy);
    free(bytes);
    for (int i = 0; i < NV; i++) free(v[i]);
    free(v);
}

TEST(gguf_many_tensors) {
    enum { NT = 1000 };
    float x[32] = {0};
    int64_t ne[1] = {32};
    char name[64];
    moe_gguf_writer *w = moe_gguf_writer_create();
    for (int i = 0; i < NT; i++) {
        x[0] = (float)i;
        snprintf(name, sizeof name, "blk.%d.ffn_gate_exps.weight", i);
        ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, name, MOE_DTYPE_F32, 1, ne, x), 0);
    }
    size_t n;
    uint8_t *bytes = write_bytes(w, &n), *copy;
    moe_gguf_writer_destroy(w);
    moe_gguf *g = open_ok(bytes, n, &copy);
    ASSERT_EQ_INT(moe_gguf_n_tensors(g), NT);
    for (int i = 0; i < NT; i++) {
        snprintf(name, sizeof name, "blk.%d.ffn_gate_exps.weight", i);
        const moe_gguf_tensor *t = moe_gguf_find_tensor(g, name);
        ASSERT(t);
        ASSERT(t == moe_gguf_tensor_at(g, i));
        ASSERT_NEAR(((const float *)t->data)[0], i, 0);
    }
    ASSERT(moe_gguf_find_tensor(g, "blk.1000.ffn_gate_exps.weight") == NULL);
    moe_gguf_close(g);
    free(copy);
    free(bytes);
}

TEST(gguf_writer_errors) {
    float x[64] = {0};
    int64_t ne[5] = {32, 1, 1, 1, 1}, ne0[1] = {0}, ne48[1] = {48}, neg[2] = {32, -1};
    char longname[65];
    memset(longname, 'x', 64);
    longname[64] = '\0';
    moe_gguf_writer *w = moe_gguf_writer_create();
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", (moe_dtype)2, 1, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 0, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 5, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 1, ne0, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 2, neg, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_Q8_0, 1, ne48, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, longname, MOE_DTYPE_F32, 1, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, NULL, MOE_DTYPE_F32, 1, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 1, ne, x), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 1, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_set_str(w, "k", NULL), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, NULL, 1), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_set_arr(w, "k", MOE_GGUF_TYPE_STRING, x, 1), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_set_arr(w, "k", MOE_GGUF_TYPE_ARRAY, x, 1), MOE_EINVAL);
    uint8_t bad_bool[2] = {1, 2};
    ASSERT_EQ_INT(moe_gguf_writer_set_arr(w, "k", MOE_GGUF_TYPE_BOOL, bad_bool, 2), MOE_EINVAL);
    const char *strs[2] = {"a", NULL};
    ASSERT_EQ_INT(moe_gguf_writer_set_arr_str(w, "k", strs, 2), MOE_EINVAL);

    /* A path in a missing directory: MOE_EIO naming the path and the errno. */
    moe_err err;
    memset(&err, 0, sizeof err);
    const char *missing = "/nonexistent-moe-dir/x.gguf";
    ASSERT_EQ_INT(moe_gguf_writer_write(w, missing, &err), MOE_EIO);
    ASSERT_EQ_INT(err.code, MOE_EIO);
    ASSERT_STR_CONTAINS(err.msg, missing);
    ASSERT_STR_CONTAINS(err.msg, strerror(ENOENT));

    /* A failed rename (the path is a directory) leaves no temporary file. */
    char dir[] = "/tmp/moe_gguf_dir_XXXXXX", sub[64];
    ASSERT(mkdtemp(dir));
    snprintf(sub, sizeof sub, "%s/d", dir);
    ASSERT(mkdir(sub, 0700) == 0);
    ASSERT_EQ_INT(moe_gguf_writer_write(w, sub, &err), MOE_EIO);
    ASSERT_STR_CONTAINS(err.msg, sub);
    DIR *dp = opendir(dir);
    ASSERT(dp);
    int entries = 0;
    for (struct dirent *e; (e = readdir(dp));) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            entries++;
            ASSERT_STR_CONTAINS(e->d_name, "d");
            ASSERT(strlen(e->d_name) == 1);
        }
    }
    closedir(dp);
    ASSERT_EQ_INT(entries, 1);
    ASSERT(rmdir(sub) == 0);
    ASSERT(rmdir(dir) == 0);
    moe_gguf_writer_destroy(w);
    moe_gguf_writer_destroy(NULL);
}

/* ==== Files ============================================================= */

TEST(gguf_open_file) {
    char path[] = "/tmp/moe_gguf_open_XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    close(fd);
    moe_err err;
    moe_gguf *g;

    /* empty file */
    ASSERT_EQ_INT(moe_gguf_open(&g, path, &err), MOE_EFORMAT);
    ASSERT_STR_CONTAINS(err.msg, path);
    ASSERT_STR_CONTAINS(err.msg, "magic");
    ASSERT_STR_CONTAINS(err.msg, "offset 0");

    moe_gguf_writer *w = moe_gguf_writer_create();
    float x[4] = {1, 2, 3, 4};
    int64_t ne[2] = {2, 2};
    ASSERT_EQ_INT(moe_gguf_writer_set_str(w, "general.architecture", "qwen3moe"), 0);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "token_embd.weight", MOE_DTYPE_F32, 2, ne, x), 0);
    if (moe_gguf_writer_write(w, path, &err) < 0) TEST_FAIL("write: %s", err.msg);
    moe_gguf_writer_destroy(w);
    struct stat st;
    ASSERT(stat(path, &st) == 0);

    ASSERT_EQ_INT(moe_gguf_open(&g, path, &err), 0);
    ASSERT_EQ_INT(moe_gguf_file_size(g), st.st_size);
    moe_gguf_str s;
    ASSERT_EQ_INT(moe_gguf_get_str(g, "general.architecture", &s), 0);
    assert_str(s, "qwen3moe");
    const moe_gguf_tensor *t = moe_gguf_find_tensor(g, "token_embd.weight");
    ASSERT(t);
    ASSERT(memcmp(t->data, x, sizeof x) == 0);
    ASSERT_EQ_INT((uintptr_t)t->data % 32, 0); /* the mapping is page aligned */
    moe_gguf_close(g);
    ASSERT(unlink(path) == 0);

    /* a directory */
    ASSERT_EQ_INT(moe_gguf_open(&g, "/tmp", &err), MOE_EIO);
    ASSERT_STR_CONTAINS(err.msg, "/tmp");
    moe_gguf_close(NULL);
}

TEST(gguf_open_missing) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/moe_gguf_missing_%d.gguf", (int)getpid());
    moe_err err;
    moe_gguf *g = (moe_gguf *)&err;
    ASSERT_EQ_INT(moe_gguf_open(&g, path, &err), MOE_EIO);
    ASSERT(g == NULL);
    ASSERT_EQ_INT(err.code, MOE_EIO);
    ASSERT_STR_CONTAINS(err.msg, path);
    ASSERT_STR_CONTAINS(err.msg, strerror(ENOENT));
}
