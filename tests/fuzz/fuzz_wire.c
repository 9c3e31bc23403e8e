/* fuzz_wire.c - libFuzzer target: any bytes as a moe.v1.ForwardRequest, as
 * an expert worker receives them: refused (INVALID_ARGUMENT) or checked, and
 * a checked one's activations converted, never a crash. */
#include <stdlib.h>

#include "mesh/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    Moe__V1__ForwardRequest *r = moe__v1__forward_request__unpack(NULL, n, data);
    if (!r) return 0;
    const moe_wire_shape shape = {4, 8, 16, 64};
    int rows = 0;
    moe_err err;
    if (moe_wire_check_request(r, &shape, &rows, &err) == 0) {
        float *x = malloc((size_t)rows * 16 * sizeof *x);
        if (x) moe_wire_to_f32((int)r->dtype, r->activations.data, (size_t)rows * 16, x);
        free(x);
    }
    moe__v1__forward_request__free_unpacked(r, NULL);
    return 0;
}
