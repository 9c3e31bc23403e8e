/*
 * moe/gguf.h - GGUF v3 files: a read-only mmap reader and a small writer.
 *
 * Reader: moe_gguf_open() maps the file read-only and validates everything
 * before use: magic, version, every count, string length, array length,
 * metadata type, tensor dimension, type, offset and size against the file's
 * size. A bad file gets MOE_EFORMAT (or MOE_ENOTSUP for a valid but unknown
 * tensor type) and a message that names the field and its byte offset:
 *
 *     moe_gguf *g; moe_err err;
 *     if (moe_gguf_open(&g, path, &err) < 0) {
 *         fprintf(stderr, "%s\n", err.msg);
 *         // "model.gguf: tensor 'blk.0.attn_q.weight' (#3): data offset
 *         //  4096 + size 8192 exceeds file size 10000 (field at offset 812)"
 *     }
 *     uint32_t n_layer;
 *     moe_gguf_get_u32(g, "llama.block_count", &n_layer);   // 0 or MOE_ENOTFOUND
 *     const moe_gguf_tensor *t = moe_gguf_find_tensor(g, "token_embd.weight");
 *     // t->data points into the mapping; t->ne[0] is the contiguous dim
 *     moe_gguf_close(g);
 *
 * Split models (llama.cpp's gguf-split: name-00001-of-0000N.gguf, keys
 * split.no, split.count, split.tensors.count): moe_gguf_open_split() opens
 * the first part and every other one beside it; the handle's key/values are
 * the first part's (where gguf-split puts all metadata) and its tensors are
 * those of every part, each with its part number.
 *
 * Strings inside the file are not NUL-terminated; the reader hands out
 * moe_gguf_str {ptr, len} views into the mapping, valid until close.
 *
 * Writer: collect key/values and tensors in memory, then write the file in
 * one pass (header, metadata, tensor infos, aligned data). Same calls, same
 * bytes: the output is a pure function of the calls made.
 */
#ifndef MOE_GGUF_H
#define MOE_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"
#include "moe/error.h"

#define MOE_GGUF_MAX_DIMS 4

typedef enum moe_gguf_type {
    MOE_GGUF_TYPE_UINT8 = 0,
    MOE_GGUF_TYPE_INT8 = 1,
    MOE_GGUF_TYPE_UINT16 = 2,
    MOE_GGUF_TYPE_INT16 = 3,
    MOE_GGUF_TYPE_UINT32 = 4,
    MOE_GGUF_TYPE_INT32 = 5,
    MOE_GGUF_TYPE_FLOAT32 = 6,
    MOE_GGUF_TYPE_BOOL = 7,
    MOE_GGUF_TYPE_STRING = 8,
    MOE_GGUF_TYPE_ARRAY = 9,
    MOE_GGUF_TYPE_UINT64 = 10,
    MOE_GGUF_TYPE_INT64 = 11,
    MOE_GGUF_TYPE_FLOAT64 = 12,
    MOE_GGUF_TYPE_COUNT
} moe_gguf_type;

/* A string view into the mapping (not NUL-terminated). */
typedef struct moe_gguf_str {
    const char *ptr;
    uint64_t len;
} moe_gguf_str;

/* One metadata key/value. For arrays, arr_type and arr_n describe the
 * elements and arr_data points at the first one in the mapping (for string
 * arrays use moe_gguf_arr_str()). */
typedef struct moe_gguf_kv {
    moe_gguf_str key;
    moe_gguf_type type;
    union {
        uint64_t u64; /* all unsigned integer types and bool, widened */
        int64_t i64;  /* all signed integer types, widened */
        double f64;   /* FLOAT32 and FLOAT64, widened */
        moe_gguf_str str;
    } v;
    moe_gguf_type arr_type; /* for ARRAY */
    uint64_t arr_n;         /* for ARRAY */
    const void *arr_data;   /* for ARRAY: first element in the mapping */
    uint64_t offset;        /* byte offset of the key in the file */
} moe_gguf_kv;

typedef struct moe_gguf_tensor {
    moe_gguf_str name;
    uint32_t n_dims;
    int64_t ne[MOE_GGUF_MAX_DIMS]; /* ne[0] contiguous; unused dims are 1 */
    moe_dtype type;
    uint64_t offset;  /* relative to the data section */
    uint64_t nbytes;  /* checked against the file */
    const void *data; /* in the mapping */
    uint16_t part;    /* split part holding it (0: the first file) */
} moe_gguf_tensor;

typedef struct moe_gguf moe_gguf;

/* Maps and validates path. On success *out owns the mapping (free with
 * moe_gguf_close). On failure returns a negative MOE_E* code and fills err. */
int moe_gguf_open(moe_gguf **out, const char *path, moe_err *err);
/* Same, over a caller's buffer (borrowed until close); name is for messages. */
int moe_gguf_open_buffer(moe_gguf **out, const void *buf, size_t size, const char *name,
                         moe_err *err);
void moe_gguf_close(moe_gguf *g);

/* Opens a model file: path, and if it is the first part of a split model
 * (split.count > 1) every other part, named as llama.cpp names them
 * (llama_split_path: "<prefix>-%05d-of-%05d.gguf", prefix taken from path)
 * in the same directory. Checks that path is part 1, that each part exists
 * and says it is part i of the same count, that no tensor is in two parts and
 * that the parts hold split.tensors.count tensors in all. A file without
 * split.count (or with 1) opens as moe_gguf_open does. Free with
 * moe_gguf_close (closes every part). */
int moe_gguf_open_split(moe_gguf **out, const char *path, moe_err *err);
/* Parts of a handle from moe_gguf_open_split (1 for a single file) and the
 * file size of part i. */
int moe_gguf_n_parts(const moe_gguf *g);
size_t moe_gguf_part_size(const moe_gguf *g, int i);

uint32_t moe_gguf_version(const moe_gguf *g);
uint64_t moe_gguf_alignment(const moe_gguf *g);
size_t moe_gguf_file_size(const moe_gguf *g);

int64_t moe_gguf_n_kv(const moe_gguf *g);
const moe_gguf_kv *moe_gguf_kv_at(const moe_gguf *g, int64_t i);
/* Finds a key by name; NULL if absent. */
const moe_gguf_kv *moe_gguf_find_kv(const moe_gguf *g, const char *key);

/* Typed getters: 0 on success; MOE_ENOTFOUND if absent (out untouched);
 * MOE_EFORMAT if present with an incompatible type or a value that does not
 * fit (any integer type converts to another if the value fits). */
int moe_gguf_get_u32(const moe_gguf *g, const char *key, uint32_t *out);
int moe_gguf_get_i64(const moe_gguf *g, const char *key, int64_t *out);
int moe_gguf_get_f32(const moe_gguf *g, const char *key, float *out);
int moe_gguf_get_bool(const moe_gguf *g, const char *key, int *out);
int moe_gguf_get_str(const moe_gguf *g, const char *key, moe_gguf_str *out);

/* Element i of a STRING array (kv->arr_type == STRING). Strings in an array
 * are variable length, so this walks an index built at open; O(1). */
moe_gguf_str moe_gguf_arr_str(const moe_gguf *g, const moe_gguf_kv *kv, uint64_t i);

int64_t moe_gguf_n_tensors(const moe_gguf *g);
const moe_gguf_tensor *moe_gguf_tensor_at(const moe_gguf *g, int64_t i);
/* Finds a tensor by name; NULL if absent. */
const moe_gguf_tensor *moe_gguf_find_tensor(const moe_gguf *g, const char *name);

/* 1 if the string view equals the C string s. */
int moe_gguf_str_eq(moe_gguf_str a, const char *s);

/* ---- Writer ------------------------------------------------------------ */

typedef struct moe_gguf_writer moe_gguf_writer;

moe_gguf_writer *moe_gguf_writer_create(void);
void moe_gguf_writer_destroy(moe_gguf_writer *w);

/* Each setter copies its arguments. Keys are written in the order added. */
int moe_gguf_writer_set_u32(moe_gguf_writer *w, const char *key, uint32_t v);
int moe_gguf_writer_set_i32(moe_gguf_writer *w, const char *key, int32_t v);
int moe_gguf_writer_set_f32(moe_gguf_writer *w, const char *key, float v);
int moe_gguf_writer_set_bool(moe_gguf_writer *w, const char *key, int v);
int moe_gguf_writer_set_str(moe_gguf_writer *w, const char *key, const char *v);
/* Array of n strings. */
int moe_gguf_writer_set_arr_str(moe_gguf_writer *w, const char *key, const char *const *v,
                                uint64_t n);
/* Array of n plain elements of type t (integers or FLOAT32), copied. */
int moe_gguf_writer_set_arr(moe_gguf_writer *w, const char *key, moe_gguf_type t, const void *v,
                            uint64_t n);

/* Adds a tensor: n_dims dims ne[0..n_dims) (ne[0] contiguous) of type t;
 * data holds moe_dtype_row_bytes(t, ne[0]) * ne[1] * ... bytes and is copied. */
int moe_gguf_writer_add_tensor(moe_gguf_writer *w, const char *name, moe_dtype t, uint32_t n_dims,
                               const int64_t *ne, const void *data);

/* Tensors added so far. */
int64_t moe_gguf_writer_n_tensors(const moe_gguf_writer *w);

/* Writes the file (alignment 32, or general.alignment if set as u32). */
int moe_gguf_writer_write(moe_gguf_writer *w, const char *path, moe_err *err);

/* Writes a split model as llama.cpp's gguf-split does: ceil(n_tensors /
 * max_tensors) files "<prefix>-%05d-of-%05d.gguf" (prefix: path without
 * ".gguf"), tensors in the order added, max_tensors per part; every part has
 * split.no (u16), split.count (u16) and split.tensors.count (i32), the first
 * also every key set. A model of one part is written to that one name too.
 * Returns the number of parts written, or a negative MOE_E* code. */
int moe_gguf_writer_write_split(moe_gguf_writer *w, const char *path, int max_tensors,
                                moe_err *err);

/* The name of part i (0-based) of n of a split model with this prefix, as
 * llama.cpp's llama_split_path makes it: "<prefix>-%05d-of-%05d.gguf".
 * Returns the length, or 0 if it does not fit in cap. */
int moe_gguf_split_path(char *buf, size_t cap, const char *prefix, int i, int n);

#endif
