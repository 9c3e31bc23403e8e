/* fuzz_wire.c - libFuzzer target: any bytes as a moe.v1.ForwardRequest, as
 * an expert worker receives them (moe_wire_decode_request: the raw scan,
 * protobuf-c's unpack, the checks): refused (INVALID_ARGUMENT) or checked,
 * and a checked one's activations converted, never a crash. Invariants: a
 * request the decoder accepts passed the scan and fits the shape; whatever
 * the scan passes, protobuf-c unpacks within the scan's budget (no more row
 * groups than experts, no more unknown fields than MOE_WIRE_MAX_FIELDS).
 * Seeds: tests/fuzz/corpus/fuzz_wire (tests/fuzz/make_wire_corpus.mjs). */
#include <stdlib.h>

#include "mesh/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    const moe_wire_shape shape = {4, 8, 16, 64};
    moe_err err;
    const int scanned = moe_wire_scan_request(data, n, &shape, NULL, &err);
    Moe__V1__ForwardRequest *r = NULL;
    int rows = 0;
    uint64_t id = 0;
    if (moe_wire_decode_request(data, n, &shape, &r, &rows, &id, &err) == 0) {
        if (scanned != 0 || !r || r->n_groups > 8 || rows < 1 || rows > 64 || id != r->id) abort();
        float *x = malloc((size_t)rows * 16 * sizeof *x);
        if (x) moe_wire_to_f32((int)r->dtype, r->activations.data, (size_t)rows * 16, x);
        free(x);
        moe__v1__forward_request__free_unpacked(r, NULL);
    } else if (r) {
        abort(); /* a refusal leaves nothing to free */
    }
    if (scanned == 0) {
        Moe__V1__ForwardRequest *u = moe__v1__forward_request__unpack(NULL, n, data);
        if (u && (u->n_groups > 8 || u->base.n_unknown_fields > MOE_WIRE_MAX_FIELDS)) abort();
        if (u) moe__v1__forward_request__free_unpacked(u, NULL);
    }
    return 0;
}
