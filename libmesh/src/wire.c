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

uint8_t *moe_wire_read_all(grpc_byte_buffer *bb, size_t *len) {
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(s);
    uint8_t *p = malloc(*len ? *len : 1);
    if (p) memcpy(p, GRPC_SLICE_START_PTR(s), *len);
    grpc_slice_unref(s);
    return p;
}
