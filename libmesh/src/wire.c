/* wire.c - moe.v1 message checks and activation packing (see wire.h). */
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

#include "moe/dtype.h"
#include "mesh/wire.h"

size_t moe_wire_elt_bytes(int dtype) {
    switch (dtype) {
    case MOE__V1__DTYPE__DTYPE_F32:
        return 4;
    case MOE__V1__DTYPE__DTYPE_BF16:
        return 2;
    default:
        return 0;
    }
}

int moe_wire_check_request(const Moe__V1__ForwardRequest *r, const moe_wire_shape *s, int *n_rows,
                           moe_err *err) {
    const size_t eb = moe_wire_elt_bytes((int)r->dtype);
    if (!eb)
        return moe_err_set(err, MOE_EFORMAT, "dtype %d is not f32 (0) or bf16 (1)", (int)r->dtype);
    if (r->layer >= (uint32_t)s->n_layer)
        return moe_err_set(err, MOE_EFORMAT, "layer %u out of range [0, %d)", r->layer, s->n_layer);
    if (r->hidden != (uint32_t)s->hidden)
        return moe_err_set(err, MOE_EFORMAT, "hidden %u, the model's is %d", r->hidden, s->hidden);
    if (r->n_groups == 0) return moe_err_set(err, MOE_EFORMAT, "no row groups");
    if (r->n_groups > (size_t)s->n_expert)
        return moe_err_set(err, MOE_EFORMAT, "%zu row groups for %d experts (one group per expert)",
                           r->n_groups, s->n_expert);
    uint64_t next = 0;
    for (size_t g = 0; g < r->n_groups; g++) {
        const Moe__V1__RowGroup *rg = r->groups[g];
        if (rg->expert >= (uint32_t)s->n_expert)
            return moe_err_set(err, MOE_EFORMAT, "group %zu: expert %u out of range [0, %d)", g,
                               rg->expert, s->n_expert);
        if (rg->first_row != next)
            return moe_err_set(err, MOE_EFORMAT,
                               "group %zu: first_row %u, expected %llu (groups must be contiguous "
                               "in row order)",
                               g, rg->first_row, (unsigned long long)next);
        if (rg->row_count == 0)
            return moe_err_set(err, MOE_EFORMAT, "group %zu: row_count is 0", g);
        next += rg->row_count;
        if (next > (uint64_t)s->max_rows)
            return moe_err_set(err, MOE_EFORMAT, "more than %d rows in one request", s->max_rows);
    }
    const uint64_t want = next * (uint64_t)s->hidden * eb;
    if (r->activations.len != want)
        return moe_err_set(
            err, MOE_EFORMAT, "activations are %zu bytes, %llu rows x %d x %zu bytes need %llu",
            r->activations.len, (unsigned long long)next, s->hidden, eb, (unsigned long long)want);
    *n_rows = (int)next;
    return 0;
}

void moe_wire_to_f32(int dtype, const uint8_t *src, size_t n, float *dst) {
    if (dtype == MOE__V1__DTYPE__DTYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = moe_bf16_to_f32(h);
        }
    } else {
        memcpy(dst, src, n * 4);
    }
}

void moe_wire_from_f32(int dtype, const float *src, size_t n, uint8_t *dst) {
    if (dtype == MOE__V1__DTYPE__DTYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            const uint16_t h = moe_f32_to_bf16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
    } else {
        memcpy(dst, src, n * 4);
    }
}

/* ==== Raw scan ================================================================ */

/* A protobuf field as it lies in the bytes: number, wire type, and the
 * varint value or the length-delimited bytes. */
typedef struct wire_field {
    uint32_t num;
    int type; /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
    uint64_t v;
    const uint8_t *data;
    size_t len;
} wire_field;

/* A varint of at most 10 bytes at *p, before end; 0 if it runs past either. */
static int scan_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t x = 0;
    for (int shift = 0; shift < 70 && *p < end; shift += 7) {
        const uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 1;
        }
    }
    return 0;
}

/* The next field at *p: 1, 0 at the end, -1 for bytes that are no field
 * (cut short, field number 0, group wire types 3 and 4, types 6 and 7). */
static int scan_field(const uint8_t **p, const uint8_t *end, wire_field *f) {
    if (*p >= end) return 0;
    uint64_t tag, n;
    if (!scan_varint(p, end, &tag) || tag >> 3 == 0 || tag >> 3 > 0x1fffffff) return -1;
    f->num = (uint32_t)(tag >> 3);
    f->type = (int)(tag & 7);
    f->v = 0, f->data = NULL, f->len = 0;
    switch (f->type) {
    case 0:
        return scan_varint(p, end, &f->v) ? 1 : -1;
    case 1:
    case 5: {
        const size_t w = f->type == 1 ? 8 : 4;
        if ((size_t)(end - *p) < w) return -1;
        *p += w;
        return 1;
    }
    case 2:
        if (!scan_varint(p, end, &n) || n > (uint64_t)(end - *p)) return -1;
        f->data = *p, f->len = (size_t)n;
        *p += n;
        return 1;
    default:
        return -1;
    }
}

int moe_wire_scan_request(const uint8_t *buf, size_t n, const moe_wire_shape *s, uint64_t *id,
                          moe_err *err) {
    const uint8_t *p = buf, *end = buf + n;
    const uint64_t max_act = (uint64_t)s->max_rows * (uint64_t)s->hidden * 4;
    size_t groups = 0, others = 0;
    wire_field f;
    int rc;
    while ((rc = scan_field(&p, end, &f)) > 0) {
        if (f.num == 1 && f.type == 0 && id) *id = f.v;
        if (f.num == 6 && f.type == 2) {
            if (++groups > (size_t)s->n_expert)
                return moe_err_set(err, MOE_EFORMAT,
                                   "more than %d row groups (one group per expert): refused "
                                   "before decoding",
                                   s->n_expert);
            const uint8_t *q = f.data, *qend = f.data + f.len;
            wire_field g;
            int k = 0, grc;
            while ((grc = scan_field(&q, qend, &g)) > 0)
                if (++k > MOE_WIRE_MAX_FIELDS)
                    return moe_err_set(err, MOE_EFORMAT, "row group %zu has more than %d fields",
                                       groups - 1, MOE_WIRE_MAX_FIELDS);
            if (grc < 0)
                return moe_err_set(err, MOE_EFORMAT,
                                   "not a moe.v1.ForwardRequest (row group %zu is malformed)",
                                   groups - 1);
            continue;
        }
        if (++others > MOE_WIRE_MAX_FIELDS)
            return moe_err_set(err, MOE_EFORMAT,
                               "more than %d fields besides the row groups: refused before "
                               "decoding",
                               MOE_WIRE_MAX_FIELDS);
        if (f.num == 7 && f.len > max_act)
            return moe_err_set(err, MOE_EFORMAT,
                               "activations are %zu bytes, more than %d rows x %d x 4 bytes", f.len,
                               s->max_rows, s->hidden);
    }
    if (rc < 0)
        return moe_err_set(err, MOE_EFORMAT, "not a moe.v1.ForwardRequest (malformed at byte %zu)",
                           (size_t)(p - buf));
    return 0;
}

int moe_wire_decode_request(const uint8_t *buf, size_t n, const moe_wire_shape *s,
                            Moe__V1__ForwardRequest **out, int *n_rows, uint64_t *id,
                            moe_err *err) {
    *out = NULL;
    int rc = moe_wire_scan_request(buf, n, s, id, err);
    if (rc < 0) return rc;
    Moe__V1__ForwardRequest *r = moe__v1__forward_request__unpack(NULL, n, buf);
    if (!r) return moe_err_set(err, MOE_EFORMAT, "not a moe.v1.ForwardRequest");
    if (id) *id = r->id;
    rc = moe_wire_check_request(r, s, n_rows, err);
    if (rc < 0) {
        moe__v1__forward_request__free_unpacked(r, NULL);
        return rc;
    }
    *out = r;
    return 0;
}

/* ==== Byte buffers ============================================================ */

uint8_t *moe_wire_read_all(grpc_byte_buffer *bb, size_t *len) {
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    const size_t n = grpc_byte_buffer_length(bb);
    uint8_t *p = malloc(n ? n : 1);
    size_t off = 0;
    grpc_slice s;
    /* one copy, slice by slice (readall would make a second) */
    while (grpc_byte_buffer_reader_next(&r, &s)) {
        const size_t k = GRPC_SLICE_LENGTH(s);
        if (p && off + k <= n) memcpy(p + off, GRPC_SLICE_START_PTR(s), k);
        off += k;
        grpc_slice_unref(s);
    }
    grpc_byte_buffer_reader_destroy(&r);
    if (p && off != n) {
        free(p);
        p = NULL;
    }
    *len = n;
    return p;
}
