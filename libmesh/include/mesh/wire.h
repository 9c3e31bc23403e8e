/*
 * wire.h - the moe.v1 messages between a gateway and expert workers: checks
 * of a received ForwardRequest against the model, and activation packing in
 * f32 (exact) or bf16 (half the bytes). Internal to moemesh (protobuf-c
 * types appear here, never in the public moe/ headers).
 *
 *     Moe__V1__ForwardRequest *r;
 *     if (moe_wire_decode_request(buf, len, &shape, &r, &rows, &id, &err) < 0)
 *         -> INVALID_ARGUMENT err.msg (the reply carries id when the bytes had one)
 *     ... compute r ...; moe__v1__forward_request__free_unpacked(r, NULL);
 *
 * Bytes from a peer are scanned before protobuf-c unpacks them: unpacking
 * allocates per field occurrence and per row group (a 16 MB message of
 * empty groups cost 800 MB), so the counts are checked on the raw bytes
 * first, in one pass that allocates nothing.
 */
#ifndef MOE_RPC_WIRE_H
#define MOE_RPC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>

#include "grpc/health/v1/health.pb-c.h"
#include "moe/error.h"
#include "moe/v1/expert.pb-c.h"

/* What a request must agree with. */
typedef struct moe_wire_shape {
    int n_layer;
    int n_expert;
    int hidden;
    int max_rows; /* rows one request may carry */
} moe_wire_shape;

/* Bytes per element of a wire dtype; 0 if unknown. */
size_t moe_wire_elt_bytes(int dtype);

/* Checks a decoded request: known dtype, layer and experts in range, hidden
 * equal to the model's, groups contiguous from row 0 with no empty group,
 * rows within max_rows, activations exactly rows x hidden elements. Sets
 * *n_rows. Returns 0 or MOE_EFORMAT with a message naming the field. */
int moe_wire_check_request(const Moe__V1__ForwardRequest *r, const moe_wire_shape *s, int *n_rows,
                           moe_err *err);

/* Field occurrences a ForwardRequest may carry besides its row groups, and a
 * row group in all (a valid one has at most 8 and 3; the rest is room for
 * fields a newer sender adds). */
#define MOE_WIRE_MAX_FIELDS 32

/* Checks a ForwardRequest's raw bytes before anything is decoded: well-formed
 * protobuf, at most s->n_expert row groups, at most MOE_WIRE_MAX_FIELDS
 * other fields and as many per group, activations at most
 * max_rows x hidden x 4 bytes. One pass, no allocation. Sets *id (if id) to
 * the id field when one was seen. Returns 0 or MOE_EFORMAT with the reason. */
int moe_wire_scan_request(const uint8_t *buf, size_t n, const moe_wire_shape *s, uint64_t *id,
                          moe_err *err);

/* A received request, whole: moe_wire_scan_request, protobuf-c's unpack,
 * moe_wire_check_request. On success *out is the request (the caller frees
 * it with moe__v1__forward_request__free_unpacked) and *n_rows its rows;
 * else *out is NULL and MOE_EFORMAT comes back with the reason. *id (if id)
 * gets the request's id whenever the bytes carried one, refused or not. */
int moe_wire_decode_request(const uint8_t *buf, size_t n, const moe_wire_shape *s,
                            Moe__V1__ForwardRequest **out, int *n_rows, uint64_t *id, moe_err *err);

/* Converts n wire elements of dtype to floats, and back (bf16: round to
 * nearest even). */
void moe_wire_to_f32(int dtype, const uint8_t *src, size_t n, float *dst);
void moe_wire_from_f32(int dtype, const float *src, size_t n, uint8_t *dst);

/* A received message's bytes: a malloc'd copy of the whole byte buffer
 * (*len set), or NULL if it cannot be read or allocated. */
uint8_t *moe_wire_read_all(grpc_byte_buffer *bb, size_t *len);

#endif
