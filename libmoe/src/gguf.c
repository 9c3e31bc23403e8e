/*
 * gguf.c - the GGUF reader's parser (see moe/gguf.h; the look-ups are in
 * gguf_lookup.c, the writer in gguf_write.c): moe_gguf_open (a mapped file)
 * and moe_gguf_open_buffer (a borrowed buffer) check and decode the header,
 * key/values and tensor infos into a moe_gguf, with the indexes the look-ups
 * search (key and tensor names sorted, which also finds duplicates; the
 * offsets of string array elements); moe_gguf_close frees it.
 */

/*
 * File layout (GGUF v2/v3, little-endian):
 *
 *   header      "GGUF", u32 version, i64 n_tensors, i64 n_kv
 *   n_kv x      key (u64 len + bytes), u32 value type, value
 *                 scalar: 1, 2, 4 or 8 bytes (bool: one byte, 0 or 1)
 *                 string: u64 len + bytes (no NUL)
 *                 array:  u32 element type, u64 n, n elements (no nested arrays)
 *   n_tensors x name (u64 len + bytes), u32 n_dims, i64 ne[n_dims], u32 type,
 *               u64 offset (relative to the data section)
 *   padding     zeros up to general.alignment (u32, default 32)
 *   data        tensor data; every offset a multiple of the alignment
 *
 * Only little-endian files are read, and only on little-endian hosts (the
 * values are copied out with memcpy, never byte-swapped); a byte-swapped
 * (big-endian) file is recognised by its version and rejected.
 *
 * Every count, length and offset is checked against the bytes left before it
 * is used or allocated for, so a hostile file can neither crash the reader nor
 * make it read outside the buffer; what it allocates is bounded by a small
 * multiple of the file's size (each key/value or tensor info takes at least
 * 13 or 32 bytes of it).
 * Errors name the file, the field and the field's byte offset.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkostemp, strerror_r, O_CLOEXEC (the Makefile sets it too) */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_internal.h"
#include "internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian GGUF files on little-endian hosts only"
#endif

#define GG_DEFAULT_ALIGNMENT 32
/* Fewest bytes one key/value can take: key length, type, a one-byte value. */
#define GG_MIN_KV_BYTES 13
/* Fewest bytes one tensor info can take: name length, n_dims, one ne, type,
 * offset. */
#define GG_MIN_TENSOR_BYTES 32
/* Longest name quoted in an error message. */
#define GG_SHOW_MAX 64

/* ==== Reading with bounds and messages ================================== */

typedef struct gg_rd {
    const uint8_t *p; /* file bytes (never dereferenced past size) */
    uint64_t size;
    uint64_t pos;
    const char *name; /* file name for messages */
    moe_err *err;
} gg_rd;

static uint64_t gg_left(const gg_rd *r) {
    return r->size - r->pos;
}

static int gg_rd_bytes(gg_rd *r, void *out, uint64_t n) {
    if (gg_left(r) < n) return 0;
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return 1;
}

static int gg_rd_u32(gg_rd *r, uint32_t *v) {
    return gg_rd_bytes(r, v, 4);
}

static int gg_rd_u64(gg_rd *r, uint64_t *v) {
    return gg_rd_bytes(r, v, 8);
}

/* Fails with "<file>: <field>: <problem> (field at offset N)"; fmt gives the
 * field and the problem. Returns code. */
__attribute__((format(printf, 4, 5))) static int gg_fail(gg_rd *r, int code, uint64_t off,
                                                         const char *fmt, ...) {
    char what[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return moe_err_set(r->err, code, "%s: %s (field at offset %llu)", r->name, what,
                       (unsigned long long)off);
}

/* The field at off (of need bytes; fmt names it) runs past the end. */
__attribute__((format(printf, 4, 5))) static int
gg_fail_trunc(gg_rd *r, uint64_t off, uint64_t need, const char *fmt, ...) {
    char field[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(field, sizeof field, fmt, ap);
    va_end(ap);
    uint64_t left = off <= r->size ? r->size - off : 0;
    return gg_fail(r, MOE_EFORMAT, off, "%s: truncated: needs %llu bytes, %llu left in the file",
                   field, (unsigned long long)need, (unsigned long long)left);
}

/* A printable copy of a name from the file for messages: at most GG_SHOW_MAX
 * bytes, other than printable ASCII shown as '?'. */
static const char *gg_show(char *buf, size_t n, const char *s, uint64_t len) {
    size_t k = 0;
    for (uint64_t i = 0; i < len && i < GG_SHOW_MAX && k + 4 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[k++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (len > GG_SHOW_MAX && k + 4 < n) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

static const char *const gg_type_names[MOE_GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

static const char *gg_type_name(uint32_t t) {
    return t < MOE_GGUF_TYPE_COUNT ? gg_type_names[t] : "?";
}

/* Bytes of one value of a fixed-size type; 0 for STRING and ARRAY. */
static uint64_t gg_type_size(uint32_t t) {
    switch (t) {
    case MOE_GGUF_TYPE_UINT8:
    case MOE_GGUF_TYPE_INT8:
    case MOE_GGUF_TYPE_BOOL:
        return 1;
    case MOE_GGUF_TYPE_UINT16:
    case MOE_GGUF_TYPE_INT16:
        return 2;
    case MOE_GGUF_TYPE_UINT32:
    case MOE_GGUF_TYPE_INT32:
    case MOE_GGUF_TYPE_FLOAT32:
        return 4;
    case MOE_GGUF_TYPE_UINT64:
    case MOE_GGUF_TYPE_INT64:
    case MOE_GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* ==== Header ============================================================ */

static int gg_parse_header(moe_gguf *g, gg_rd *r) {
    uint8_t magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv;

    if (!gg_rd_bytes(r, magic, 4)) return gg_fail_trunc(r, 0, 4, "magic");
    if (memcmp(magic, "GGUF", 4) != 0) {
        return gg_fail(r, MOE_EFORMAT, 0,
                       "magic: expected \"GGUF\" (47 47 55 46), found %02x %02x %02x %02x; "
                       "not a GGUF file",
                       magic[0], magic[1], magic[2], magic[3]);
    }
    if (!gg_rd_u32(r, &version)) return gg_fail_trunc(r, 4, 4, "version");
    if (version == 1) {
        return gg_fail(r, MOE_EFORMAT, 4,
                       "version: GGUF v1 (32-bit counts and lengths) is not supported; "
                       "re-convert the model to GGUF v3");
    }
    if (version == 0x01000000u || version == 0x02000000u || version == 0x03000000u) {
        return gg_fail(r, MOE_EFORMAT, 4,
                       "version: the file is big-endian (version %u byte-swapped); only "
                       "little-endian GGUF is supported",
                       __builtin_bswap32(version));
    }
    /* v2 and v3 are the same layout for little-endian files (v3 only added
     * big-endian files), so both are read. */
    if (version != 2 && version != 3) {
        return gg_fail(r, MOE_EFORMAT, 4, "version: %u is not supported (expected 3)", version);
    }
    g->version = version;

    if (!gg_rd_u64(r, &n_tensors)) return gg_fail_trunc(r, 8, 8, "n_tensors");
    if (!gg_rd_u64(r, &n_kv)) return gg_fail_trunc(r, 16, 8, "n_kv");
    uint64_t left = gg_left(r);
    if (n_tensors > (uint64_t)INT64_MAX) {
        return gg_fail(r, MOE_EFORMAT, 8, "n_tensors: %lld is negative",
                       (long long)(int64_t)n_tensors);
    }
    if (n_kv > (uint64_t)INT64_MAX) {
        return gg_fail(r, MOE_EFORMAT, 16, "n_kv: %lld is negative", (long long)(int64_t)n_kv);
    }
    if (n_tensors > left / GG_MIN_TENSOR_BYTES) {
        return gg_fail(r, MOE_EFORMAT, 8,
                       "n_tensors: %llu tensor infos (at least %d bytes each) cannot fit in "
                       "the %llu bytes after the header",
                       (unsigned long long)n_tensors, GG_MIN_TENSOR_BYTES,
                       (unsigned long long)left);
    }
    if (n_kv > left / GG_MIN_KV_BYTES) {
        return gg_fail(r, MOE_EFORMAT, 16,
                       "n_kv: %llu key/values (at least %d bytes each) cannot fit in the "
                       "%llu bytes after the header",
                       (unsigned long long)n_kv, GG_MIN_KV_BYTES, (unsigned long long)left);
    }
    /* Both products are <= left, so the sum cannot overflow. */
    if (n_tensors * GG_MIN_TENSOR_BYTES + n_kv * GG_MIN_KV_BYTES > left) {
        return gg_fail(r, MOE_EFORMAT, 8,
                       "n_tensors, n_kv: %llu tensor infos and %llu key/values cannot fit in "
                       "the %llu bytes after the header",
                       (unsigned long long)n_tensors, (unsigned long long)n_kv,
                       (unsigned long long)left);
    }
    g->n_tensors = (int64_t)n_tensors;
    g->n_kv = (int64_t)n_kv;
    return 0;
}

/* ==== Key/values ======================================================== */

/* Reads a string (u64 length + bytes): the field "<desc><field>". */
static int gg_parse_str(gg_rd *r, moe_gguf_str *out, const char *desc, const char *field) {
    uint64_t off = r->pos, len;
    if (!gg_rd_u64(r, &len)) return gg_fail_trunc(r, off, 8, "%s%s length", desc, field);
    if (len > gg_left(r)) {
        return gg_fail(r, MOE_EFORMAT, off,
                       "%s%s length: %llu runs past the end of the file (%llu bytes left)", desc,
                       field, (unsigned long long)len, (unsigned long long)gg_left(r));
    }
    out->ptr = (const char *)r->p + r->pos;
    out->len = len;
    r->pos += len;
    return 0;
}

/* Reads the scalar or string value of type t of kv (desc names it). */
static int gg_parse_value(gg_rd *r, uint32_t t, moe_gguf_kv *kv, const char *desc) {
    uint64_t off = r->pos, sz = gg_type_size(t);
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        float f32;
        uint64_t u64;
        int64_t i64;
        double f64;
    } x = {.u64 = 0}; /* so x.u64 is any unsigned value read into it (little-endian host) */

    if (t == MOE_GGUF_TYPE_STRING) return gg_parse_str(r, &kv->v.str, desc, " string value");
    MOE_ASSERT(sz > 0 && "gg_parse_value: not a scalar type");
    if (!gg_rd_bytes(r, &x, sz)) {
        return gg_fail_trunc(r, off, sz, "%s %s value", desc, gg_type_name(t));
    }
    switch (t) {
    case MOE_GGUF_TYPE_INT8:
    case MOE_GGUF_TYPE_INT16:
    case MOE_GGUF_TYPE_INT32:
    case MOE_GGUF_TYPE_INT64: /* sign-extended */
        kv->v.i64 = sz == 1 ? x.i8 : sz == 2 ? x.i16 : sz == 4 ? x.i32 : x.i64;
        break;
    case MOE_GGUF_TYPE_FLOAT32:
    case MOE_GGUF_TYPE_FLOAT64:
        kv->v.f64 = sz == 4 ? x.f32 : x.f64;
        break;
    case MOE_GGUF_TYPE_BOOL:
        if (x.u8 > 1) {
            return gg_fail(r, MOE_EFORMAT, off, "%s bool value: byte is %u, must be 0 or 1", desc,
                           x.u8);
        }
        kv->v.u64 = x.u8;
        break;
    default: /* the unsigned integers, zero-extended */
        kv->v.u64 = x.u64;
        break;
    }
    return 0;
}

static int gg_str_off_reserve(moe_gguf *g, uint64_t n) {
    if (g->cap_str_off - g->n_str_off >= n) return 0;
    uint64_t cap = g->cap_str_off ? g->cap_str_off : 64;
    while (cap - g->n_str_off < n) cap *= 2;
    uint64_t *p = realloc(g->str_off, cap * sizeof *p);
    if (!p) return MOE_ENOMEM;
    g->str_off = p;
    g->cap_str_off = cap;
    return 0;
}

/* Reads the array value (element type, count, elements) of kv #i. */
static int gg_parse_array(moe_gguf *g, gg_rd *r, int64_t i, moe_gguf_kv *kv, const char *desc) {
    uint64_t off = r->pos, n;
    uint32_t t;

    if (!gg_rd_u32(r, &t)) return gg_fail_trunc(r, off, 4, "%s array element type", desc);
    if (t >= MOE_GGUF_TYPE_COUNT) {
        return gg_fail(r, MOE_EFORMAT, off, "%s array element type: %u is not a GGUF type (0..%d)",
                       desc, t, MOE_GGUF_TYPE_COUNT - 1);
    }
    if (t == MOE_GGUF_TYPE_ARRAY) {
        return gg_fail(r, MOE_EFORMAT, off,
                       "%s array element type: arrays of arrays are not supported", desc);
    }
    off = r->pos;
    if (!gg_rd_u64(r, &n)) return gg_fail_trunc(r, off, 8, "%s array length", desc);
    /* A string element takes at least its 8-byte length. */
    uint64_t esz = t == MOE_GGUF_TYPE_STRING ? 8 : gg_type_size(t);
    if (n > gg_left(r) / esz) {
        return gg_fail(r, MOE_EFORMAT, off,
                       "%s array length: %llu %s elements (at least %llu bytes each) run past "
                       "the end of the file (%llu bytes left)",
                       desc, (unsigned long long)n, gg_type_name(t), (unsigned long long)esz,
                       (unsigned long long)gg_left(r));
    }
    kv->arr_type = (moe_gguf_type)t;
    kv->arr_n = n;
    kv->arr_data = r->p + r->pos;

    if (t == MOE_GGUF_TYPE_STRING) {
        if (gg_str_off_reserve(g, n) < 0) {
            return moe_err_set(r->err, MOE_ENOMEM, "%s: out of memory", r->name);
        }
        g->kv_str_first[i] = g->n_str_off;
        for (uint64_t e = 0; e < n; e++) {
            uint64_t eoff = r->pos, len;
            if (!gg_rd_u64(r, &len)) {
                return gg_fail_trunc(r, eoff, 8, "%s element %llu length", desc,
                                     (unsigned long long)e);
            }
            if (len > gg_left(r)) {
                return gg_fail(r, MOE_EFORMAT, eoff,
                               "%s element %llu length: %llu runs past the end of the file "
                               "(%llu bytes left)",
                               desc, (unsigned long long)e, (unsigned long long)len,
                               (unsigned long long)gg_left(r));
            }
            g->str_off[g->n_str_off++] = eoff;
            r->pos += len;
        }
        return 0;
    }
    if (t == MOE_GGUF_TYPE_BOOL) {
        for (uint64_t e = 0; e < n; e++) {
            uint8_t b = r->p[r->pos + e];
            if (b > 1) {
                return gg_fail(r, MOE_EFORMAT, r->pos + e,
                               "%s element %llu: bool byte is %u, must be 0 or 1", desc,
                               (unsigned long long)e, b);
            }
        }
    }
    r->pos += n * esz;
    return 0;
}

static int gg_parse_kvs(moe_gguf *g, gg_rd *r) {
    char desc[128], shown[GG_SHOW_MAX + 8];
    int rc;

    for (int64_t i = 0; i < g->n_kv; i++) {
        moe_gguf_kv *kv = &g->kv[i];
        uint64_t off = r->pos;
        uint32_t t;

        kv->offset = off;
        snprintf(desc, sizeof desc, "key #%lld", (long long)i);
        if ((rc = gg_parse_str(r, &kv->key, desc, " name")) < 0) return rc;
        snprintf(desc, sizeof desc, "key #%lld '%s'", (long long)i,
                 gg_show(shown, sizeof shown, kv->key.ptr, kv->key.len));

        off = r->pos;
        if (!gg_rd_u32(r, &t)) return gg_fail_trunc(r, off, 4, "%s value type", desc);
        if (t >= MOE_GGUF_TYPE_COUNT) {
            return gg_fail(r, MOE_EFORMAT, off, "%s value type: %u is not a GGUF type (0..%d)",
                           desc, t, MOE_GGUF_TYPE_COUNT - 1);
        }
        kv->type = (moe_gguf_type)t;
        if (t == MOE_GGUF_TYPE_ARRAY) {
            rc = gg_parse_array(g, r, i, kv, desc);
        } else {
            rc = gg_parse_value(r, t, kv, desc);
        }
        if (rc < 0) return rc;
    }

    int64_t first = -1, dup;
    for (int64_t i = 0; i < g->n_kv; i++) g->kv_names[i] = (moe__gguf_name){g->kv[i].key, i};
    if ((dup = moe__gguf_names_sort(g->kv_names, g->n_kv, &first)) >= 0) {
        return gg_fail(r, MOE_EFORMAT, g->kv[dup].offset,
                       "key #%lld '%s': duplicate key (first is key #%lld)", (long long)dup,
                       gg_show(shown, sizeof shown, g->kv[dup].key.ptr, g->kv[dup].key.len),
                       (long long)first);
    }
    return 0;
}

/* general.alignment: if present, a u32 power of two. */
static int gg_parse_alignment(moe_gguf *g, gg_rd *r) {
    g->alignment = GG_DEFAULT_ALIGNMENT;
    int64_t i = moe__gguf_names_find(g->kv_names, g->n_kv, "general.alignment", 17);
    if (i < 0) return 0;
    const moe_gguf_kv *kv = &g->kv[i];
    uint64_t type_off = kv->offset + 8 + kv->key.len;
    if (kv->type != MOE_GGUF_TYPE_UINT32) {
        return gg_fail(r, MOE_EFORMAT, type_off,
                       "key #%lld 'general.alignment' value type: is %s, must be u32", (long long)i,
                       gg_type_name(kv->type));
    }
    if (kv->v.u64 == 0 || (kv->v.u64 & (kv->v.u64 - 1)) != 0) {
        return gg_fail(r, MOE_EFORMAT, type_off + 4,
                       "key #%lld 'general.alignment' u32 value: %llu is not a power of two",
                       (long long)i, (unsigned long long)kv->v.u64);
    }
    g->alignment = kv->v.u64;
    return 0;
}

/* ==== Tensor infos ====================================================== */

/* Reads tensor info #i; off_field[0] and [1] get the file offsets of its name
 * and of its data offset. */
static int gg_parse_tensor(moe_gguf *g, gg_rd *r, int64_t i, uint64_t *off_field) {
    moe_gguf_tensor *t = &g->tensors[i];
    char desc[128], shown[GG_SHOW_MAX + 8];
    uint64_t off = r->pos, ne_off[MOE_GGUF_MAX_DIMS] = {0};
    uint32_t n_dims, type;
    int rc;

    snprintf(desc, sizeof desc, "tensor #%lld", (long long)i);
    if ((rc = gg_parse_str(r, &t->name, desc, " name")) < 0) return rc;
    snprintf(desc, sizeof desc, "tensor '%s' (#%lld)",
             gg_show(shown, sizeof shown, t->name.ptr, t->name.len), (long long)i);
    off_field[0] = off;

    off = r->pos;
    if (!gg_rd_u32(r, &n_dims)) return gg_fail_trunc(r, off, 4, "%s n_dims", desc);
    if (n_dims < 1 || n_dims > MOE_GGUF_MAX_DIMS) {
        return gg_fail(r, MOE_EFORMAT, off, "%s n_dims: %u is not in 1..%d", desc, n_dims,
                       MOE_GGUF_MAX_DIMS);
    }
    t->n_dims = n_dims;

    int64_t n_elems = 1;
    for (uint32_t d = 0; d < MOE_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < n_dims) {
            ne_off[d] = r->pos;
            if (!gg_rd_u64(r, &ne)) {
                return gg_fail_trunc(r, ne_off[d], 8, "%s dimension %u", desc, d);
            }
            if ((int64_t)ne < 1) {
                return gg_fail(r, MOE_EFORMAT, ne_off[d], "%s dimension %u: %lld, must be >= 1",
                               desc, d, (long long)(int64_t)ne);
            }
            if ((int64_t)ne > INT64_MAX / n_elems) {
                return gg_fail(r, MOE_EFORMAT, ne_off[d],
                               "%s dimension %u: %llu makes the element count overflow 64 bits",
                               desc, d, (unsigned long long)ne);
            }
        }
        t->ne[d] = (int64_t)ne;
        n_elems *= (int64_t)ne;
    }

    off = r->pos;
    if (!gg_rd_u32(r, &type)) return gg_fail_trunc(r, off, 4, "%s type", desc);
    if (!moe_dtype_supported(type)) {
        return gg_fail(r, MOE_ENOTSUP, off,
                       "%s type: ggml type %u is not supported (f32, f16, bf16, q8_0, q4_0, "
                       "q4_1, q5_0, q5_1, iq4_nl, q2_K..q6_K and iq4_xs are)",
                       desc, type);
    }
    t->type = (moe_dtype)type;
    uint64_t blk = moe_dtype_block_elems(t->type), bb = moe_dtype_block_bytes(t->type);
    if ((uint64_t)t->ne[0] % blk != 0) {
        return gg_fail(r, MOE_EFORMAT, ne_off[0],
                       "%s dimension 0: %lld is not a multiple of the %s block size %llu", desc,
                       (long long)t->ne[0], moe_dtype_name(t->type), (unsigned long long)blk);
    }
    uint64_t nbytes = (uint64_t)t->ne[0] / blk * bb; /* <= 2^63 * 34 / 32: fits */
    for (uint32_t d = 1; d < MOE_GGUF_MAX_DIMS; d++) {
        if (__builtin_mul_overflow(nbytes, (uint64_t)t->ne[d], &nbytes)) {
            return gg_fail(r, MOE_EFORMAT, ne_off[d],
                           "%s dimension %u: byte size overflows 64 bits", desc, d);
        }
    }
    t->nbytes = nbytes;

    off = r->pos;
    if (!gg_rd_u64(r, &t->offset)) return gg_fail_trunc(r, off, 8, "%s data offset", desc);
    if (t->offset % g->alignment != 0) {
        return gg_fail(r, MOE_EFORMAT, off,
                       "%s data offset: %llu is not a multiple of the alignment %llu", desc,
                       (unsigned long long)t->offset, (unsigned long long)g->alignment);
    }
    off_field[1] = off;
    return 0;
}

static int gg_parse_tensors(moe_gguf *g, gg_rd *r) {
    uint64_t *off_field = calloc(2 * (size_t)g->n_tensors + 1, sizeof *off_field);
    char shown[GG_SHOW_MAX + 8];
    int rc = 0;

    if (!off_field) {
        rc = moe_err_set(r->err, MOE_ENOMEM, "%s: out of memory", r->name);
        goto done;
    }
    for (int64_t i = 0; i < g->n_tensors; i++) {
        if ((rc = gg_parse_tensor(g, r, i, &off_field[2 * i])) < 0) goto done;
    }
    int64_t first = -1, dup;
    for (int64_t i = 0; i < g->n_tensors; i++)
        g->tensor_names[i] = (moe__gguf_name){g->tensors[i].name, i};
    if ((dup = moe__gguf_names_sort(g->tensor_names, g->n_tensors, &first)) >= 0) {
        const moe_gguf_tensor *t = &g->tensors[dup];
        rc = gg_fail(r, MOE_EFORMAT, off_field[2 * dup],
                     "tensor '%s' (#%lld) name: duplicate tensor (first is tensor #%lld)",
                     gg_show(shown, sizeof shown, t->name.ptr, t->name.len), (long long)dup,
                     (long long)first);
        goto done;
    }
    /* r->pos <= size, alignment <= 2^31: no overflow. */
    g->data_start = (r->pos + g->alignment - 1) / g->alignment * g->alignment;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        moe_gguf_tensor *t = &g->tensors[i];
        uint64_t room = g->data_start <= r->size ? r->size - g->data_start : 0;
        if (t->offset > room || t->nbytes > room - t->offset) {
            gg_show(shown, sizeof shown, t->name.ptr, t->name.len);
            rc = gg_fail(r, MOE_EFORMAT, off_field[2 * i + 1],
                         "tensor '%s' (#%lld): data offset %llu + size %llu exceeds the %llu "
                         "bytes of the data section (starts at %llu; file size %llu)",
                         shown, (long long)i, (unsigned long long)t->offset,
                         (unsigned long long)t->nbytes, (unsigned long long)room,
                         (unsigned long long)g->data_start, (unsigned long long)r->size);
            goto done;
        }
        t->data = r->p + g->data_start + t->offset;
    }
done:
    free(off_field);
    return rc;
}

/* ==== Open and close ==================================================== */

static int gg_parse(moe_gguf *g, const char *name, moe_err *err) {
    gg_rd r = {g->base, g->size, 0, name, err};
    int rc;

    if ((rc = gg_parse_header(g, &r)) < 0) return rc;
    /* Counts are bounded by the file size above, so these are too. */
    g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv);
    g->kv_str_first = calloc((size_t)g->n_kv + 1, sizeof *g->kv_str_first);
    g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    g->kv_names = calloc((size_t)g->n_kv + 1, sizeof *g->kv_names);
    g->tensor_names = calloc((size_t)g->n_tensors + 1, sizeof *g->tensor_names);
    if (!g->kv || !g->kv_str_first || !g->tensors || !g->kv_names || !g->tensor_names) {
        return moe_err_set(err, MOE_ENOMEM, "%s: out of memory", name);
    }
    if ((rc = gg_parse_kvs(g, &r)) < 0) return rc;
    if ((rc = gg_parse_alignment(g, &r)) < 0) return rc;
    return gg_parse_tensors(g, &r);
}

void moe_gguf_close(moe_gguf *g) {
    if (!g) return;
    if (g->map) munmap(g->map, g->size);
    for (int i = 1; i < g->n_parts; i++) moe_gguf_close(g->parts[i]);
    free(g->parts);
    MOE_FREE_ALL(g->tensor_names, g->kv_names, g->tensors, g->str_off, g->kv_str_first, g->kv, g);
}

int moe_gguf_open_buffer(moe_gguf **out, const void *buf, size_t size, const char *name,
                         moe_err *err) {
    static const uint8_t empty[1];
    moe_gguf *g = NULL;
    int rc;

    if (!out || (!buf && size > 0)) return moe_err_set(err, MOE_EINVAL, "gguf: no buffer");
    *out = NULL;
    if (!name) name = "(buffer)";
    g = calloc(1, sizeof *g);
    if (!g) {
        rc = moe_err_set(err, MOE_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    g->base = buf ? buf : empty;
    g->size = size;
    if ((rc = gg_parse(g, name, err)) < 0) goto fail;
    *out = g;
    return 0;
fail:
    moe_gguf_close(g);
    return rc;
}

int moe_gguf_open(moe_gguf **out, const char *path, moe_err *err) {
    char ebuf[128];
    moe_gguf *g = NULL;
    struct stat st;
    int fd = -1, rc;

    if (!out || !path) return moe_err_set(err, MOE_EINVAL, "gguf: no path");
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = moe_err_set(err, MOE_EIO, "%s: open: %s", path,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        rc = moe_err_set(err, MOE_EIO, "%s: stat: %s", path,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = moe_err_set(err, MOE_EIO, "%s: not a regular file", path);
        goto fail;
    }
    if ((unsigned long long)st.st_size > SIZE_MAX) {
        rc = moe_err_set(err, MOE_ENOTSUP, "%s: file too large to map", path);
        goto fail;
    }
    if (st.st_size == 0) { /* mmap refuses length 0; the parser reports it */
        rc = moe_gguf_open_buffer(out, NULL, 0, path, err);
        goto fail;
    }
    g = calloc(1, sizeof *g);
    if (!g) {
        rc = moe_err_set(err, MOE_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    g->size = (size_t)st.st_size;
    void *map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rc = moe_err_set(err, MOE_EIO, "%s: mmap: %s", path,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        goto fail;
    }
    g->map = map;
    g->base = map;
    close(fd);
    fd = -1;
    if ((rc = gg_parse(g, path, err)) < 0) goto fail;
    *out = g;
    return 0;
fail:
    moe_gguf_close(g);
    if (fd >= 0) close(fd);
    return rc;
}
