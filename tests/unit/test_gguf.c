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

    for (size_t i = 0; i < N_OF(arr_keys); i++) {
        const arr_key *a = &arr_keys[i];
        kv = moe_gguf_find_kv(g, a->key);
        ASSERT(kv);
        ASSERT_EQ_INT(kv->type, MOE_GGUF_TYPE_ARRAY);
        ASSERT_EQ_INT(kv->arr_type, a->t);
        ASSERT_EQ_INT(kv->arr_n, a->n);
        ASSERT(kv->arr_data != NULL);
        if (a->bytes) ASSERT(memcmp(kv->arr_data, a->data, a->bytes) == 0);
        /* not a string array */
        ASSERT(moe_gguf_arr_str(g, kv, 0).ptr == NULL);
        /* arrays are not scalars */
        ASSERT_EQ_INT(moe_gguf_get_i64(g, a->key, &i64), MOE_EFORMAT);
    }
    close_copy(g, copy);
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
    close_copy(g, copy);
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
    close_copy(g, copy);
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
 * scalar types), and the typed getters' conversions: the keys in file order,
 * each with its value's bytes. */
typedef struct scalar_kv {
    const char *key;
    moe_gguf_type t;
    const void *v;
    size_t n; /* bytes of v */
} scalar_kv;
#define SCALAR_KV(key, t, ctype, v)                                                                \
    { key, t, &(ctype){v}, sizeof(ctype) }
static const scalar_kv scalar_kvs[] = {
    SCALAR_KV("u8", MOE_GGUF_TYPE_UINT8, uint8_t, 200),
    SCALAR_KV("i8", MOE_GGUF_TYPE_INT8, int8_t, -100),
    SCALAR_KV("u16", MOE_GGUF_TYPE_UINT16, uint16_t, 60000),
    SCALAR_KV("i16", MOE_GGUF_TYPE_INT16, int16_t, -30000),
    SCALAR_KV("u32", MOE_GGUF_TYPE_UINT32, uint32_t, 4000000000u),
    SCALAR_KV("i32", MOE_GGUF_TYPE_INT32, int32_t, -2000000000),
    SCALAR_KV("f32", MOE_GGUF_TYPE_FLOAT32, float, 1.5f),
    SCALAR_KV("bool", MOE_GGUF_TYPE_BOOL, uint8_t, 0),
    /* length 3, then "a\0b" */
    {"str", MOE_GGUF_TYPE_STRING, "\3\0\0\0\0\0\0\0a\0b", 11},
    SCALAR_KV("u64", MOE_GGUF_TYPE_UINT64, uint64_t, (1ull << 63) + 5),
    SCALAR_KV("i64", MOE_GGUF_TYPE_INT64, int64_t, -(1ll << 62)),
    SCALAR_KV("f64", MOE_GGUF_TYPE_FLOAT64, double, 2.5e300),
    SCALAR_KV("f64.small", MOE_GGUF_TYPE_FLOAT64, double, 0.25),
    SCALAR_KV("i64.small", MOE_GGUF_TYPE_INT64, int64_t, 7),
    SCALAR_KV("u64.small", MOE_GGUF_TYPE_UINT64, uint64_t, 4294967295ull),
    SCALAR_KV("u64.big", MOE_GGUF_TYPE_UINT64, uint64_t, 4294967296ull),
    SCALAR_KV("", MOE_GGUF_TYPE_BOOL, uint8_t, 1), /* an empty key */
};

static hb build_scalars(void) {
    hb b = {0};
    hb_header(&b, 0, N_OF(scalar_kvs));
    for (size_t i = 0; i < N_OF(scalar_kvs); i++) {
        hb_key(&b, scalar_kvs[i].key, scalar_kvs[i].t);
        hb_put(&b, scalar_kvs[i].v, scalar_kvs[i].n);
    }
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
    close_copy(g, copy);
    free(b.p);
}

/* The typed getters, each called with a fresh output holding a sentinel. */
typedef enum getter { GET_U32, GET_I64, GET_F32, GET_BOOL, GET_STR } getter;
static const char *const getter_names[] = {"moe_gguf_get_u32", "moe_gguf_get_i64",
                                           "moe_gguf_get_f32", "moe_gguf_get_bool",
                                           "moe_gguf_get_str"};
enum { GETTER_UNTOUCHED = 99, GETTER_UNTOUCHED_STR_LEN = 9 };

/* Calls getter get on key; *out is the value it left (a string's length). */
static int call_getter(const moe_gguf *g, getter get, const char *key, double *out) {
    uint32_t u32 = GETTER_UNTOUCHED;
    int64_t i64 = GETTER_UNTOUCHED;
    float f32 = GETTER_UNTOUCHED;
    int bo = GETTER_UNTOUCHED;
    moe_gguf_str s = {"untouched", GETTER_UNTOUCHED_STR_LEN};
    int rc = get == GET_U32    ? moe_gguf_get_u32(g, key, &u32)
             : get == GET_I64  ? moe_gguf_get_i64(g, key, &i64)
             : get == GET_F32  ? moe_gguf_get_f32(g, key, &f32)
             : get == GET_BOOL ? moe_gguf_get_bool(g, key, &bo)
                               : moe_gguf_get_str(g, key, &s);
    const double left[] = {u32, (double)i64, f32, bo, (double)s.len};
    *out = left[get];
    return rc;
}

TEST(gguf_getters) {
    /* want: the value read where rc is 0; on an error the output is untouched */
    static const struct {
        getter get;
        const char *key;
        int rc;
        double want;
    } cases[] = {
        /* absent: MOE_ENOTFOUND */
        {GET_U32, "nope", MOE_ENOTFOUND, 0},
        {GET_I64, "nope", MOE_ENOTFOUND, 0},
        {GET_F32, "nope", MOE_ENOTFOUND, 0},
        {GET_BOOL, "nope", MOE_ENOTFOUND, 0},
        {GET_STR, "nope", MOE_ENOTFOUND, 0},
        /* u32 from any integer type that fits */
        {GET_U32, "u8", 0, 200},
        {GET_U32, "u16", 0, 60000},
        {GET_U32, "u32", 0, 4000000000u},
        {GET_U32, "i64.small", 0, 7},
        {GET_U32, "u64.small", 0, 4294967295u},
        {GET_U32, "u64.big", MOE_EFORMAT, 0},
        {GET_U32, "u64", MOE_EFORMAT, 0},
        {GET_U32, "i8", MOE_EFORMAT, 0},
        {GET_U32, "i32", MOE_EFORMAT, 0},
        {GET_U32, "i64", MOE_EFORMAT, 0},
        {GET_U32, "f32", MOE_EFORMAT, 0},
        {GET_U32, "bool", MOE_EFORMAT, 0},
        {GET_U32, "str", MOE_EFORMAT, 0},
        /* i64 */
        {GET_I64, "i8", 0, -100},
        {GET_I64, "i16", 0, -30000},
        {GET_I64, "i32", 0, -2000000000},
        {GET_I64, "i64", 0, -(double)(1ll << 62)},
        {GET_I64, "u32", 0, 4000000000ll},
        {GET_I64, "u64", MOE_EFORMAT, 0}, /* > INT64_MAX */
        {GET_I64, "f64", MOE_EFORMAT, 0},
        {GET_I64, "bool", MOE_EFORMAT, 0},
        {GET_I64, "str", MOE_EFORMAT, 0},
        /* f32 */
        {GET_F32, "f32", 0, 1.5},
        {GET_F32, "f64.small", 0, 0.25},
        {GET_F32, "f64", MOE_EFORMAT, 0}, /* beyond float */
        {GET_F32, "u32", MOE_EFORMAT, 0},
        {GET_F32, "str", MOE_EFORMAT, 0},
        /* bool and string: exact types only */
        {GET_BOOL, "bool", 0, 0},
        {GET_BOOL, "", 0, 1},
        {GET_BOOL, "u8", MOE_EFORMAT, 0},
        {GET_STR, "u8", MOE_EFORMAT, 0},
        {GET_STR, "bool", MOE_EFORMAT, 0},
    };
    hb b = build_scalars();
    uint8_t *copy;
    moe_gguf *g = open_ok(b.p, b.n, &copy);
    for (size_t i = 0; i < N_OF(cases); i++) {
        const char *name = getter_names[cases[i].get], *key = cases[i].key;
        double got, want = cases[i].want;
        int rc = call_getter(g, cases[i].get, key, &got);
        if (rc != cases[i].rc) TEST_FAIL("%s('%s'): %d != %d", name, key, rc, cases[i].rc);
        if (rc != 0) want = cases[i].get == GET_STR ? GETTER_UNTOUCHED_STR_LEN : GETTER_UNTOUCHED;
        if (got != want) TEST_FAIL("%s('%s'): %.17g != %.17g", name, key, got, want);
    }
    close_copy(g, copy);
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
    close_copy(g, copy);
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
    close_copy(g, copy);
    free(bytes);
}

TEST(gguf_writer_errors) {
    float x[64] = {0};
    int64_t ne[5] = {32, 1, 1, 1, 1}, ne0[1] = {0}, ne48[1] = {48}, neg[2] = {32, -1};
    char longname[65];
    memset(longname, 'x', 64);
    longname[64] = '\0';
    moe_gguf_writer *w = moe_gguf_writer_create();
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", (moe_dtype)16, 1, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 0, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 5, ne, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 1, ne0, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_F32, 2, neg, x), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_Q8_0, 1, ne48, x), MOE_EINVAL);
    /* 32 elements: no Q4_K super-block */
    ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, "t", MOE_DTYPE_Q4_K, 1, ne, x), MOE_EINVAL);
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
