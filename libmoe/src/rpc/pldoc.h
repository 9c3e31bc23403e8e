/*
 * pldoc.h - a placement epoch as router-svc publishes it in Redis
 * (P:placement:<e>, docs/redis-schema.md):
 *
 *     {"epoch": 7, "model": "...",
 *      "workers": {"w0": "10.0.0.5:50051", "w1": "10.0.0.6:50051"},
 *      "experts": [[1, 0, ["w0", "w1"]], [1, 1, ["w1"]], ...]}
 *
 * Parsed by the expert-workers (their share) and the gateways (the replicas
 * of every expert). Everything is checked: a malformed document is an error,
 * never a crash.
 */
#ifndef MOE_PLDOC_H
#define MOE_PLDOC_H

#include <stddef.h>
#include <stdint.h>

#include "moe/error.h"

typedef struct moe_pldoc_expert {
    int32_t layer, expert;
    int n_replicas;
    int *replicas; /* indices into ids/addrs */
} moe_pldoc_expert;

typedef struct moe_pldoc {
    uint64_t epoch;
    char *model;   /* "" when absent */
    int n_workers;
    char **ids;    /* (n_workers) */
    char **addrs;  /* (n_workers) host:port */
    size_t n_experts;
    moe_pldoc_expert *experts;
} moe_pldoc;

/* Parses a document: the len bytes at json hold one JSON object and nothing
 * else but whitespace; "model", when present, is a string. Layers must be
 * < n_layer and experts < n_expert (pass 0 to skip the check). A worker named
 * twice in one expert's replicas counts once. Returns 0 (*out: free with
 * moe_pldoc_free), MOE_EFORMAT naming the problem, or MOE_ENOMEM (*out NULL). */
int moe_pldoc_parse(moe_pldoc **out, const char *json, size_t len, int n_layer, int n_expert,
                    moe_err *err);
void moe_pldoc_free(moe_pldoc *d);
/* A model's identity as workers publish it and documents carry it:
 * "arch/<layers>x<experts>/<hidden>/<tensor bytes>". */
typedef struct moe_model moe_model;
void moe_model_identity(const moe_model *m, char *buf, size_t cap);

/* Index of a worker id, or -1. */
int moe_pldoc_worker(const moe_pldoc *d, const char *id);

#endif
