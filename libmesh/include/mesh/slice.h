/* slice.h - which (layer, expert) pairs an expert worker hosts. */
#ifndef MOE_SLICE_H
#define MOE_SLICE_H

#include <stdint.h>

#include "moe/error.h"
#include "moe/model.h"

typedef struct moe_slice {
    int n_layer, n_expert;
    uint8_t *held; /* (n_layer, n_expert): 1 if hosted; read and written
                    * atomically (the registry changes it while serving) */
} moe_slice;

/* An empty slice (a worker that takes what router-svc gives it). 0 or MOE_ENOMEM. */
int moe_slice_init_empty(moe_slice *s, int n_layer, int n_expert);
void moe_slice_set(moe_slice *s, int layer, int expert, int held);
/* Writes the slice as a spec ("L1:0-7;L2:0-3", "" when empty) into buf (cap
 * bytes, truncated); returns the full length. */
size_t moe_slice_format(const moe_slice *s, char *buf, size_t cap);

/* Parses a spec against a model's shape:
 *   "all"                every expert of every MoE layer
 *   "0-3,6"              those experts in every layer
 *   "L1:0-7,L2:0-3;L5:1" per layer (layer groups separated by ';' or by a new
 *                        "L<n>:" prefix; a range list after each)
 * moe_layer_ok(l) says which layers have experts. Returns 0 or MOE_EINVAL
 * with a message pointing at the bad part. Free with moe_slice_free. */
int moe_slice_parse(moe_slice *s, const char *spec, int n_layer, int n_expert,
                    const uint8_t *moe_layer_ok, moe_err *err);
void moe_slice_free(moe_slice *s);
int moe_slice_has(const moe_slice *s, int layer, int expert);
/* Number of (layer, expert) pairs held. */
int moe_slice_count(const moe_slice *s);

#endif
