/*
 * testmodel_internal.h - what testmodel.c (tensors, keys) and
 * testmodel_vocab.c (vocabularies) share: the seeded random streams.
 */
#ifndef MOE_TESTMODEL_INTERNAL_H
#define MOE_TESTMODEL_INTERNAL_H

#include <stdint.h>

#include "moe/gguf.h"
#include "testmodel.h"
#include "hf_tokenizer.h"

/* ---- Random numbers: one stream per tensor, from (seed, name) ---------------------- */

static inline uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t stream_for(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

/* uniform in [-1, 1) */
static inline float urand(uint64_t *s) {
    return (float)((double)(splitmix(s) >> 40) * (1.0 / 16777216.0) * 2.0 - 1.0);
}

/* Adds the vocabulary: hv's (a real tokenizer's) if given, else a generated
 * SentencePiece one (o->tokenizer_spm) or a generated BPE one. */
int moe__testmodel_add_vocab(moe_gguf_writer *w, const moe_testmodel_params *o,
                             const moe__hf_vocab *hv, moe_err *err);

#endif
