/* gguf_testlib.h - helpers shared by the GGUF unit tests (test_gguf.c and
 * test_gguf_corrupt.c): a growable byte buffer for handcrafted files, opening
 * an exact-size heap copy of a file's bytes (so AddressSanitizer sees any read
 * past the end), writing a writer's file and reading its bytes back, string
 * comparison, and build_writer, a writer holding one key of every kind with
 * the values it was given (arr_*). */
#ifndef MOE_TEST_GGUF_TESTLIB_H
#define MOE_TEST_GGUF_TESTLIB_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/gguf.h"
#include "test.h"

/* ==== Handcrafted files ================================================= */

/* A growable byte buffer for handcrafted files. */
typedef struct hb {
    uint8_t *p;
    size_t n, cap;
} hb;

static inline void hb_put(hb *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        ASSERT(b->p);
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}
static inline void hb_u8(hb *b, uint8_t v) {
    hb_put(b, &v, 1);
}
static inline void hb_u32(hb *b, uint32_t v) {
    hb_put(b, &v, 4);
}
static inline void hb_u64(hb *b, uint64_t v) {
    hb_put(b, &v, 8);
}
static inline void hb_str(hb *b, const char *s) {
    hb_u64(b, strlen(s));
    hb_put(b, s, strlen(s));
}
/* A key and its value type; returns the offset of the type field. */
static inline size_t hb_key(hb *b, const char *key, uint32_t type) {
    hb_str(b, key);
    size_t off = b->n;
    hb_u32(b, type);
    return off;
}
static inline void hb_pad(hb *b, size_t a) {
    while (b->n % a) hb_u8(b, 0);
}
/* The GGUF v3 header: magic, version (at offset 4), the tensor count (at 8)
 * and the key count (at 16). */
static inline void hb_header(hb *b, uint64_t n_tensors, uint64_t n_kv) {
    hb_put(b, "GGUF", 4);
    hb_u32(b, 3);
    hb_u64(b, n_tensors);
    hb_u64(b, n_kv);
}

/* ==== Opening, writing, comparing ======================================= */

/* Opens an exact-size heap copy of p (so AddressSanitizer sees any read past
 * the end). On success *copy must be freed after moe_gguf_close. */
static inline int open_copy(const uint8_t *p, size_t n, moe_gguf **g, moe_err *err,
                            uint8_t **copy) {
    *copy = malloc(n ? n : 1);
    ASSERT(*copy);
    if (n) memcpy(*copy, p, n);
    int rc = moe_gguf_open_buffer(g, *copy, n, "bad.gguf", err);
    if (rc < 0) {
        free(*copy);
        *copy = NULL;
    }
    return rc;
}

/* Writes w to a fresh temporary file and returns the file's bytes (malloc'd). */
static inline uint8_t *write_bytes(moe_gguf_writer *w, size_t *size) {
    char path[] = "/tmp/moe_gguf_test_XXXXXX";
    moe_err err;
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    close(fd);
    int rc = moe_gguf_writer_write(w, path, &err);
    if (rc < 0) TEST_FAIL("write: %s", err.msg);
    FILE *f = fopen(path, "rb");
    ASSERT(f);
    ASSERT(fseek(f, 0, SEEK_END) == 0);
    long n = ftell(f);
    ASSERT(n >= 0);
    rewind(f);
    uint8_t *p = malloc((size_t)n + 1);
    ASSERT(p);
    ASSERT_EQ_INT(fread(p, 1, (size_t)n, f), n);
    fclose(f);
    unlink(path);
    *size = (size_t)n;
    return p;
}

/* Opens bytes that must be valid; *copy is the buffer to free after close. */
static inline moe_gguf *open_ok(const uint8_t *p, size_t n, uint8_t **copy) {
    moe_gguf *g;
    moe_err err;
    if (open_copy(p, n, &g, &err, copy) < 0) TEST_FAIL("open: %s", err.msg);
    return g;
}

/* Closes a file opened by open_ok (or open_copy) and frees its copy. */
static inline void close_copy(moe_gguf *g, uint8_t *copy) {
    moe_gguf_close(g);
    free(copy);
}

static inline void assert_str(moe_gguf_str s, const char *want) {
    if (!moe_gguf_str_eq(s, want)) {
        TEST_FAIL("string '%.*s' (len %llu) != '%s'", (int)(s.len < 200 ? s.len : 200),
                  s.ptr ? s.ptr : "", (unsigned long long)s.len, want);
    }
}

/* ==== A writer with every kind of key ==================================== */

static const uint8_t arr_u8[] = {0, 1, 255};
static const int8_t arr_i8[] = {-128, 0, 127};
static const uint16_t arr_u16[] = {0, 65535};
static const int16_t arr_i16[] = {-32768, 5, 32767};
static const uint32_t arr_u32[] = {1, 2, 3, 4000000000u};
static const int32_t arr_i32[] = {-2147483647 - 1, 7};
static const float arr_f32[] = {1.5f, -0.25f, 3e38f};
static const uint64_t arr_u64[] = {UINT64_MAX, 0};
static const int64_t arr_i64[] = {INT64_MIN, INT64_MAX, -1};
static const double arr_f64[] = {1e300, -2.5};
static const uint8_t arr_bool[] = {1, 0, 1, 1};
static const char *const arr_strs[] = {"<s>", "", "hello world", "\xe2\x96\x81the"};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* The numeric arrays build_writer sets, in its key order. */
typedef struct arr_key {
    const char *key;
    moe_gguf_type t;
    const void *data;
    size_t n, bytes;
} arr_key;
#define ARR_KEY(key, t, a)                                                                         \
    { key, t, a, N_OF(a), sizeof a }
static const arr_key arr_keys[] = {
    ARR_KEY("a.u8", MOE_GGUF_TYPE_UINT8, arr_u8),
    ARR_KEY("a.i8", MOE_GGUF_TYPE_INT8, arr_i8),
    ARR_KEY("a.u16", MOE_GGUF_TYPE_UINT16, arr_u16),
    ARR_KEY("a.i16", MOE_GGUF_TYPE_INT16, arr_i16),
    ARR_KEY("a.u32", MOE_GGUF_TYPE_UINT32, arr_u32),
    ARR_KEY("a.i32", MOE_GGUF_TYPE_INT32, arr_i32),
    ARR_KEY("a.f32", MOE_GGUF_TYPE_FLOAT32, arr_f32),
    ARR_KEY("a.u64", MOE_GGUF_TYPE_UINT64, arr_u64),
    ARR_KEY("a.i64", MOE_GGUF_TYPE_INT64, arr_i64),
    ARR_KEY("a.f64", MOE_GGUF_TYPE_FLOAT64, arr_f64),
    ARR_KEY("a.bool", MOE_GGUF_TYPE_BOOL, arr_bool),
    {"a.empty", MOE_GGUF_TYPE_UINT32, NULL, 0, 0},
};

static inline moe_gguf_writer *build_writer(void) {
    moe_gguf_writer *w = moe_gguf_writer_create();
    ASSERT(w);
    ASSERT_EQ_INT(moe_gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, "llama.block_count", 1), 0);
    ASSERT_EQ_INT(moe_gguf_writer_set_i32(w, "test.i32", -123456), 0);
    ASSERT_EQ_INT(moe_gguf_writer_set_f32(w, "test.f32", 0.125f), 0);
    ASSERT_EQ_INT(moe_gguf_writer_set_bool(w, "test.bool", 5), 0);
    ASSERT_EQ_INT(moe_gguf_writer_set_str(w, "test.empty", ""), 0);
    ASSERT_EQ_INT(moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", arr_strs, N_OF(arr_strs)),
                  0);
    ASSERT_EQ_INT(moe_gguf_writer_set_arr_str(w, "test.arr_str_empty", NULL, 0), 0);
    for (size_t i = 0; i < N_OF(arr_keys); i++) {
        const arr_key *a = &arr_keys[i];
        int rc = moe_gguf_writer_set_arr(w, a->key, a->t, a->data, a->n);
        if (rc != 0) TEST_FAIL("moe_gguf_writer_set_arr '%s': %d != 0", a->key, rc);
    }
    /* Replacing keeps the first position. */
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, "llama.block_count", 24), 0);
    return w;
}

#endif
