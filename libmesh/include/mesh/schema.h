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
/* Reading them from Redis (the keys of docs/redis-schema.md). */
typedef struct moe_rlink moe_rlink;
typedef struct redisReply redisReply;

/* A decimal epoch in a reply (GET of P:placement:active, pending or seq);
 * 1 if the reply is one, 0 if it is absent or anything else. */
int moe_reply_epoch(const redisReply *r, uint64_t *e);
/* GET <prefix>:placement:<name> as an epoch: 1 found, 0 absent or not an
 * epoch, -1 Redis away. */
int moe_pldoc_get_epoch(moe_rlink *l, const char *prefix, const char *name, uint64_t *e);
/* Reads and parses <prefix>:placement:<e>. Returns 0, MOE_EUNAVAIL (Redis
 * away), MOE_ENOTFOUND (no such document), or what moe_pldoc_parse returns. */
int moe_pldoc_fetch(moe_pldoc **out, moe_rlink *l, const char *prefix, uint64_t e, int n_layer,
                    int n_expert, moe_err *err);


/* Index of a worker id, or -1. */
int moe_pldoc_worker(const moe_pldoc *d, const char *id);

#endif
