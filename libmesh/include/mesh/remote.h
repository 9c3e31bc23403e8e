/*
 * mesh/remote.h - the remote expert backend: a model's routed experts on
 * expert-worker processes, over gRPC (moe.v1.ExpertService). Same interface
 * as the local backend (moe/expert.h); link libmesh.a (and libsvc.a, libmoe.a).
 *
 *     moe_remote_params rp = moe_remote_default_params();
 *     const char *workers[] = {"127.0.0.1:50051", "127.0.0.1:50052"};
 *     moe_expert_backend *be;
 *     if (moe_expert_backend_remote_create(&be, m, workers, 2, &rp, &err) < 0) ...
 *     moe_ctx_params p = moe_ctx_default_params();
 *     p.experts = be;                       // borrowed by the context
 *
 * With a fixed list, each worker's Info says which (layer, expert) pairs it
 * holds at create; every expert of every MoE layer must be held by some
 * worker. With Redis (moe_expert_backend_remote_redis_create) the backend
 * follows router-svc's active placement instead (docs/redis-schema.md) and
 * reports per-expert row counts to it.
 *
 * Each worker gets one persistent Forward stream; a layer's submit sends one
 * message per involved worker (all of that worker's rows). An expert held by
 * several workers (replicas) goes to the one with the fewest rows in flight.
 * When a worker fails mid-batch (its stream breaks, it misses the deadline,
 * or it no longer holds an expert), its rows are sent again at once to
 * another replica; with no replica left the backend waits up to failover_ms
 * for a placement that has one. Only then does wait fail (MOE_EUNAVAIL, with
 * the worker's address and the reason).
 */
#ifndef MOE_REMOTE_H
#define MOE_REMOTE_H

#include "moe/expert.h"
#include "moe/model.h"

typedef struct moe_remote_params {
    int wire_bf16;         /* 1: activations and outputs as bf16 (half the bytes) */
    int deadline_ms;       /* per batch (default 10000) */
    int max_rows;          /* rows one submit may carry (default 4096) */
    int allow_partial;     /* 1: do not require every expert to be held at create
                            * (a submit naming an unheld one still fails) */
    int failover_ms;       /* how long a batch waits for a placement that gives an
                            * expert a live replica (default 30000) */
    int down_ms;           /* a failed worker is not chosen again for this long,
                            * while replicas remain (default 1000) */
    int placement_wait_ms; /* Redis: how long create waits for the first
                            * active placement (default 30000) */
    int quiet;             /* 1: no log lines on stderr about failovers */
} moe_remote_params;

typedef struct moe_remote_stats {
    uint64_t batches;         /* submits */
    uint64_t messages;        /* Forward messages sent */
    uint64_t bytes_sent;      /* serialized ForwardRequest bytes put in gRPC byte buffers */
    uint64_t bytes_received;  /* serialized ForwardResult bytes read from gRPC byte buffers */
    uint64_t retries;         /* row groups sent again after a worker failed */
    uint64_t worker_failures; /* worker failures seen (broken stream, deadline, refusal) */
    uint64_t epoch;           /* placement epoch in use (0: a fixed list) */
    uint64_t placements;      /* placements taken from Redis */
    uint64_t rows_reported;   /* rows written to Redis load buckets */
    uint64_t redis_failures;  /* Redis connections lost or refused */
    int workers;              /* workers known */
    double stall_ms_max;      /* longest time from a worker's failure in a batch to that
                               * batch served by replicas (failover latency) */
    double stall_ms_last;
} moe_remote_stats;

moe_remote_params moe_remote_default_params(void);

/* Connects to n workers ("host:port"), reads their Info, checks that every
 * routed expert is held and the model shapes agree. The model is borrowed. */
int moe_expert_backend_remote_create(moe_expert_backend **out, const moe_model *m,
                                     const char *const *workers, int n, const moe_remote_params *p,
                                     moe_err *err);

/* Follows router-svc's active placement in Redis (url: redis://host:port,
 * prefix: the deployment's key prefix, NULL = "moemesh"): waits up to
 * placement_wait_ms for an active placement, then connects to its workers as
 * batches need them. A control thread keeps the placement current and
 * reports load; Redis going away does not disturb serving. */
int moe_expert_backend_remote_redis_create(moe_expert_backend **out, const moe_model *m,
                                           const char *url, const char *prefix,
                                           const moe_remote_params *p, moe_err *err);

/* Counters of a remote backend (zeros for another backend). */
moe_remote_stats moe_remote_get_stats(const moe_expert_backend *be);

#endif
