/*
 * gguf_write.c - the GGUF v3 writer (see moe/gguf.h; the reader is gguf.c).
 *
 * The writer keeps copies of every key/value (already encoded as the bytes
 * that follow the key in the file) and every tensor, then writes the file in
 * one pass with the layout llama.cpp writes: header, key/values in the order
 * first set, tensor infos in the order added, zero padding to the alignment,
 * then each tensor's data followed by zero padding to the alignment. Offsets
 * are assigned in order, so the output is a pure function of the calls made.
 *
 * Setting a key that is already set replaces its value and keeps its place.
 * The file is written to a temporary file beside path and renamed over it, so
 * a failed write never leaves a partial file at path.
 *
 * Little-endian hosts only (values are written in host byte order).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkostemp, strerror_r, O_CLOEXEC (the Makefile sets it too) */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/gguf.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf_write.c writes little-endian GGUF files on little-endian hosts only"
#endif

#define GW_DEFAULT_ALIGNMENT 32
/* llama.cpp (GGML_MAX_NAME) refuses tensor names of 64 bytes or more. */
#define GW_MAX_TENSOR_NAME 63

typedef struct gw_kv {
    char *key;     /* owned, NUL-terminated */
    uint32_t type; /* moe_gguf_type */
    uint8_t *val;  /* owned: the encoded value (for arrays: type, n, elements) */
    size_t val_len;
} gw_kv;

typedef struct gw_tensor {
    char *name; /* owned */
    uint32_t n_dims;
    int64_t ne[MOE_GGUF_MAX_DIMS];
    moe_dtype type;
    uint64_t nbytes;
    uint64_t offset; /* assigned by moe_gguf_writer_write */
    void *data;      /* owned, nbytes */
} gw_tensor;

struct moe_gguf_writer {
    gw_kv *kv; /* owned, n_kv of cap_kv */
    size_t n_kv, cap_kv;
    gw_tensor *tensors; /* owned, n_tensors of cap_tensors */
    size_t n_tensors, cap_tensors;
};

moe_gguf_writer *moe_gguf_writer_create(void) {
    return calloc(1, sizeof(moe_gguf_writer));
}

void moe_gguf_writer_destroy(moe_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].data);
        free(w->tensors[i].name);
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].val);
        free(w->kv[i].key);
    }
    free(w->tensors);
    free(w->kv);
    free(w);
}

/* ==== Key/values ======================================================== */

static int gw_is_pow2(uint64_t v) {
    return v != 0 && (v & (v - 1)) == 0;
}

/* Sets key to an encoded value; takes ownership of val (freed on failure). */
static int gw_set(moe_gguf_writer *w, const char *key, uint32_t type, uint8_t *val,
                  size_t val_len) {
    int rc = 0;

    if (!w || !key) {
        rc = MOE_EINVAL;
        goto fail;
    }
    /* The reader requires general.alignment to be a u32 power of two. */
    if (!strcmp(key, "general.alignment")) {
        uint32_t a = 0;
        if (type == MOE_GGUF_TYPE_UINT32) memcpy(&a, val, 4);
        if (!gw_is_pow2(a)) {
            rc = MOE_EINVAL;
            goto fail;
        }
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].val_len = val_len;
            return 0;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        gw_kv *p = realloc(w->kv, cap * sizeof *p);
        if (!p) {
            rc = MOE_ENOMEM;
            goto fail;
        }
        w->kv = p;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        rc = MOE_ENOMEM;
        goto fail;
    }
    w->kv[w->n_kv++] = (gw_kv){k, type, val, val_len};
    return 0;
fail:
    free(val);
    return rc;
}

/* Sets key to a copy of the n bytes at v. */
static int gw_set_copy(moe_gguf_writer *w, const char *key, uint32_t type, const void *v,
                       size_t n) {
    uint8_t *val = malloc(n ? n : 1);
    if (!val) return MOE_ENOMEM;
    memcpy(val, v, n);
    return gw_set(w, key, type, val, n);
}

int moe_gguf_writer_set_u32(moe_gguf_writer *w, const char *key, uint32_t v) {
    return gw_set_copy(w, key, MOE_GGUF_TYPE_UINT32, &v, 4);
}

int moe_gguf_writer_set_i32(moe_gguf_writer *w, const char *key, int32_t v) {
    return gw_set_copy(w, key, MOE_GGUF_TYPE_INT32, &v, 4);
}

int moe_gguf_writer_set_f32(moe_gguf_writer *w, const char *key, float v) {
    return gw_set_copy(w, key, MOE_GGUF_TYPE_FLOAT32, &v, 4);
}

int moe_gguf_writer_set_bool(moe_gguf_writer *w, const char *key, int v) {
    uint8_t b = v != 0;
    return gw_set_copy(w, key, MOE_GGUF_TYPE_BOOL, &b, 1);
}

int moe_gguf_writer_set_str(moe_gguf_writer *w, const char *key, const char *v) {
    if (!v) return MOE_EINVAL;
    uint64_t len = strlen(v);
    uint8_t *val = malloc(8 + len);
    if (!val) return MOE_ENOMEM;
    memcpy(val, &len, 8);
    memcpy(val + 8, v, len);
    return gw_set(w, key, MOE_GGUF_TYPE_STRING, val, 8 + len);
}

int moe_gguf_writer_set_arr_str(moe_gguf_writer *w, const char *key, const char *const *v,
                                uint64_t n) {
    uint32_t t = MOE_GGUF_TYPE_STRING;
    size_t len = 12, pos = 12;

    if (n > 0 && !v) return MOE_EINVAL;
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) return MOE_EINVAL;
        if (__builtin_add_overflow(len, 8 + strlen(v[i]), &len)) return MOE_ENOMEM;
    }
    uint8_t *val = malloc(len);
    if (!val) return MOE_ENOMEM;
    memcpy(val, &t, 4);
    memcpy(val + 4, &n, 8);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t sl = strlen(v[i]);
        memcpy(val + pos, &sl, 8);
        memcpy(val + pos + 8, v[i], sl);
        pos += 8 + sl;
    }
    return gw_set(w, key, MOE_GGUF_TYPE_ARRAY, val, len);
}

/* Any fixed-size element type: integers, FLOAT32, FLOAT64, BOOL (0 or 1). */
int moe_gguf_writer_set_arr(moe_gguf_writer *w, const char *key, moe_gguf_type t, const void *v,
                            uint64_t n) {
    size_t esz, len;

    switch (t) {
    case MOE_GGUF_TYPE_UINT8:
    case MOE_GGUF_TYPE_INT8:
    case MOE_GGUF_TYPE_BOOL:
        esz = 1;
        break;
    case MOE_GGUF_TYPE_UINT16:
    case MOE_GGUF_TYPE_INT16:
        esz = 2;
        break;
    case MOE_GGUF_TYPE_UINT32:
    case MOE_GGUF_TYPE_INT32:
    case MOE_GGUF_TYPE_FLOAT32:
        esz = 4;
        break;
    case MOE_GGUF_TYPE_UINT64:
    case MOE_GGUF_TYPE_INT64:
    case MOE_GGUF_TYPE_FLOAT64:
        esz = 8;
        break;
    default:
        return MOE_EINVAL;
    }
    if (n > 0 && !v) return MOE_EINVAL;
    if (n > (SIZE_MAX - 12) / esz) return MOE_ENOMEM;
    len = 12 + (size_t)n * esz;
    if (t == MOE_GGUF_TYPE_BOOL) {
        for (uint64_t i = 0; i < n; i++) {
            if (((const uint8_t *)v)[i] > 1) return MOE_EINVAL;
        }
    }
    uint8_t *val = malloc(len);
    if (!val) return MOE_ENOMEM;
    uint32_t t32 = (uint32_t)t;
    memcpy(val, &t32, 4);
    memcpy(val + 4, &n, 8);
    if (n) memcpy(val + 12, v, (size_t)n * esz);
    return gw_set(w, key, MOE_GGUF_TYPE_ARRAY, val, len);
}

/* ==== Tensors =========================================================== */

int moe_gguf_writer_add_tensor(moe_gguf_writer *w, const char *name, moe_dtype t, uint32_t n_dims,
                               const int64_t *ne, const void *data) {
    gw_tensor x = {0};
    int rc = 0;

    if (!w || !name || !ne || !data || !moe_dtype_supported((uint32_t)t)) return MOE_EINVAL;
    if (n_dims < 1 || n_dims > MOE_GGUF_MAX_DIMS) return MOE_EINVAL;
    if (strlen(name) > GW_MAX_TENSOR_NAME) return MOE_EINVAL;
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (!strcmp(w->tensors[i].name, name)) return MOE_EINVAL;
    }
    x.n_dims = n_dims;
    x.type = t;
    uint64_t blk = moe_dtype_block_elems(t);
    for (uint32_t d = 0; d < MOE_GGUF_MAX_DIMS; d++) {
        x.ne[d] = d < n_dims ? ne[d] : 1;
        if (x.ne[d] < 1) return MOE_EINVAL;
    }
    if ((uint64_t)x.ne[0] % blk != 0) return MOE_EINVAL;
    x.nbytes = (uint64_t)x.ne[0] / blk * moe_dtype_block_bytes(t);
    for (uint32_t d = 1; d < MOE_GGUF_MAX_DIMS; d++) {
        if (__builtin_mul_overflow(x.nbytes, (uint64_t)x.ne[d], &x.nbytes)) return MOE_EINVAL;
    }
    if (x.nbytes > SIZE_MAX) return MOE_ENOMEM;

    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        gw_tensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) return MOE_ENOMEM;
        w->tensors = p;
        w->cap_tensors = cap;
    }
    x.name = strdup(name);
    x.data = malloc((size_t)x.nbytes);
    if (!x.name || !x.data) {
        rc = MOE_ENOMEM;
        goto fail;
    }
    memcpy(x.data, data, (size_t)x.nbytes);
    w->tensors[w->n_tensors++] = x;
    return 0;
fail:
    free(x.data);
    free(x.name);
    return rc;
}

int64_t moe_gguf_writer_n_tensors(const moe_gguf_writer *w) {
    return (int64_t)w->n_tensors;
}

/* ==== Writing =========================================================== */

/* A buffered output that remembers the first error. */
typedef struct gw_out {
    FILE *f;
    uint64_t written;
    int err; /* errno of the first failure, 0 if none */
} gw_out;

static void gw_put(gw_out *o, const void *p, size_t n) {
    if (o->err || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) o->err = errno ? errno : EIO;
    o->written += n;
}

static void gw_put_u32(gw_out *o, uint32_t v) {
    gw_put(o, &v, 4);
}

static void gw_put_u64(gw_out *o, uint64_t v) {
    gw_put(o, &v, 8);
}

static void gw_put_str(gw_out *o, const char *s) {
    uint64_t n = strlen(s);
    gw_put_u64(o, n);
    gw_put(o, s, n);
}

static void gw_pad(gw_out *o, uint64_t alignment) {
    static const uint8_t zeros[256];
    uint64_t n = (alignment - o->written % alignment) % alignment;
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        gw_put(o, zeros, k);
        n -= k;
    }
}

static uint64_t gw_alignment(const moe_gguf_writer *w) {
    for (size_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key, "general.alignment") && w->kv[i].type == MOE_GGUF_TYPE_UINT32) {
            uint32_t a;
            memcpy(&a, w->kv[i].val, 4);
            return a; /* a power of two: checked when set */
        }
    }
    return GW_DEFAULT_ALIGNMENT;
}

static void gw_write_all(moe_gguf_writer *w, gw_out *o, uint64_t alignment) {
    gw_put(o, "GGUF", 4);
    gw_put_u32(o, 3);
    gw_put_u64(o, w->n_tensors);
    gw_put_u64(o, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        gw_put_str(o, w->kv[i].key);
        gw_put_u32(o, w->kv[i].type);
        gw_put(o, w->kv[i].val, w->kv[i].val_len);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        const gw_tensor *t = &w->tensors[i];
        gw_put_str(o, t->name);
        gw_put_u32(o, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) gw_put_u64(o, (uint64_t)t->ne[d]);
        gw_put_u32(o, (uint32_t)t->type);
        gw_put_u64(o, t->offset);
    }
    gw_pad(o, alignment);
    for (size_t i = 0; i < w->n_tensors; i++) {
        gw_put(o, w->tensors[i].data, (size_t)w->tensors[i].nbytes);
        gw_pad(o, alignment);
    }
}

int moe_gguf_writer_write(moe_gguf_writer *w, const char *path, moe_err *err) {
    char ebuf[128], *tmp = NULL;
    gw_out o = {NULL, 0, 0};
    int fd = -1, rc = 0;

    if (!w || !path) return moe_err_set(err, MOE_EINVAL, "gguf writer: no path");
    uint64_t alignment = gw_alignment(w), offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        gw_tensor *t = &w->tensors[i];
        t->offset = offset;
        if (__builtin_add_overflow(offset, t->nbytes + alignment - 1, &offset)) {
            rc = moe_err_set(err, MOE_ERANGE, "%s: tensor data too large", path);
            goto fail;
        }
        offset &= ~(alignment - 1);
    }

    size_t plen = strlen(path);
    tmp = malloc(plen + sizeof ".tmp.XXXXXX");
    if (!tmp) {
        rc = moe_err_set(err, MOE_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", sizeof ".tmp.XXXXXX");
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = moe_err_set(err, MOE_EIO, "%s: creating temporary file: %s", path,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        free(tmp);
        tmp = NULL; /* nothing to remove */
        goto fail;
    }
    if (fchmod(fd, 0644) < 0) {
        rc = moe_err_set(err, MOE_EIO, "%s: chmod %s: %s", path, tmp,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        goto fail;
    }
    o.f = fdopen(fd, "wb");
    if (!o.f) {
        rc = moe_err_set(err, MOE_EIO, "%s: fdopen: %s", path,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        goto fail;
    }
    fd = -1; /* owned by o.f now */
    errno = 0;
    gw_write_all(w, &o, alignment);
    if (!o.err && fflush(o.f) != 0) o.err = errno ? errno : EIO;
    if (!o.err && fsync(fileno(o.f)) != 0) o.err = errno;
    if (o.err) {
        rc = moe_err_set(err, MOE_EIO, "%s: write: %s", path,
                         moe_errno_str(o.err, ebuf, sizeof ebuf));
        goto fail;
    }
    FILE *f = o.f;
    o.f = NULL;
    if (fclose(f) != 0) {
        rc = moe_err_set(err, MOE_EIO, "%s: close: %s", path,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = moe_err_set(err, MOE_EIO, "%s: rename from %s: %s", path, tmp,
                         moe_errno_str(errno, ebuf, sizeof ebuf));
        goto fail;
    }
    free(tmp);
    return 0;
fail:
    if (o.f) fclose(o.f);
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    return rc;
}

/* ==== Split models ======================================================= */

/* As llama.cpp's gguf-split writes them: part i has split.no = i (u16),
 * split.count (u16) and split.tensors.count (i32, all parts' tensors), set
 * first; the first part has every other key after them. A part is written
 * through a writer that borrows w's key/values and a run of its tensors, so
 * nothing is copied. */
int moe_gguf_writer_write_split(moe_gguf_writer *w, const char *path, int max_tensors,
                                moe_err *err) {
    char *prefix = NULL, *name = NULL;
    gw_kv *kv = NULL;
    int rc = 0;

    if (!w || !path || max_tensors < 1)
        return moe_err_set(err, MOE_EINVAL, "gguf writer: no path or max_tensors < 1");
    const size_t n_parts =
        w->n_tensors ? (w->n_tensors + (size_t)max_tensors - 1) / (size_t)max_tensors : 1;
    if (n_parts > 65535 || w->n_tensors > INT32_MAX)
        return moe_err_set(err, MOE_ERANGE, "%s: %zu parts: llama.cpp allows 65535", path, n_parts);
    size_t pl = strlen(path);
    if (pl > 5 && !strcmp(path + pl - 5, ".gguf")) pl -= 5;
    prefix = strndup(path, pl);
    name = malloc(pl + 32);
    kv = calloc(w->n_kv + 3, sizeof *kv);
    if (!prefix || !name || !kv) {
        rc = moe_err_set(err, MOE_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    /* the three split keys' values live in these; their keys are literals */
    uint16_t no = 0, count = (uint16_t)n_parts;
    int32_t n_tensors = (int32_t)w->n_tensors;
    kv[0] = (gw_kv){(char *)"split.no", MOE_GGUF_TYPE_UINT16, (uint8_t *)&no, 2};
    kv[1] = (gw_kv){(char *)"split.count", MOE_GGUF_TYPE_UINT16, (uint8_t *)&count, 2};
    kv[2] = (gw_kv){(char *)"split.tensors.count", MOE_GGUF_TYPE_INT32, (uint8_t *)&n_tensors, 4};
    size_t n_kv = 3;
    for (size_t i = 0; i < w->n_kv; i++)
        if (strncmp(w->kv[i].key, "split.", 6) != 0) kv[n_kv++] = w->kv[i];
    for (size_t p = 0; p < n_parts; p++) {
        const size_t t0 = p * (size_t)max_tensors;
        const size_t nt =
            w->n_tensors - t0 < (size_t)max_tensors ? w->n_tensors - t0 : (size_t)max_tensors;
        moe_gguf_writer part = {kv, p ? 3 : n_kv, 0, w->tensors + t0, w->n_tensors ? nt : 0, 0};
        no = (uint16_t)p;
        moe_gguf_split_path(name, pl + 32, prefix, (int)p, (int)n_parts);
        if ((rc = moe_gguf_writer_write(&part, name, err)) < 0) goto done;
    }
    rc = (int)n_parts;
done:
    free(kv);
    free(name);
    free(prefix);
    return rc;
}
