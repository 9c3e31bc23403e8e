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
 *
 * Threads: one thread at a time uses the backend (create, submit/wait
 * through a context, destroy): "the compute thread". Another thread (an
 * HTTP server's /readyz and /metrics) may call moe_remote_get_stats,
 * moe_remote_get_coverage and moe_remote_get_worker_stats at any time
 * between create and destroy: they read a snapshot the compute thread
 * publishes under a mutex at the end of each wait (and when the placement
 * or the worker list changes), so they cost the compute thread one lock per
 * batch and never see a batch half-counted.
 */
#ifndef MOE_REMOTE_H
#define MOE_REMOTE_H

#include <signal.h>

#include "moe/expert.h"
#include "moe/model.h"
#include "mesh/tls.h"
#include "svc/flags.h"

typedef struct moe_remote_params {
    int wire_bf16;                     /* 1: activations and outputs as bf16 (half the bytes) */
    int deadline_ms;                   /* per batch (default 10000) */
    int max_rows;                      /* rows one submit may carry (default 4096) */
    int allow_partial;                 /* 1: do not require every expert to be held at create
                                        * (a submit naming an unheld one still fails) */
    int failover_ms;                   /* how long a batch waits for a placement that gives an
                                        * expert a live replica (default 30000) */
    int down_ms;                       /* a failed worker is not chosen again for this long,
                                        * while replicas remain (default 1000) */
    int suspect_ms;                    /* a worker silent this long and 8x its usual answer
                                        * time (moving averages, per message and per row),
                                        * whose row groups all have another live replica,
                                        * counts as failed before the deadline: a cut link
                                        * stalls a batch this long, not deadline_ms
                                        * (default 250; 0: the deadline only) */
    int placement_wait_ms;             /* Redis: how long create waits for the first
                                        * active placement (default 30000) */
    const volatile sig_atomic_t *stop; /* create's wait ends early (MOE_EUNAVAIL) once
                                        * *stop is set (a service's stop flag; NULL: none) */
    int quiet;                         /* 1: no log lines on stderr about failovers */
    const moe_tls_opts *tls;           /* mutual TLS with the workers (mesh/tls.h; borrowed for
                                        * create). NULL or no files: plaintext, to loopback
                                        * addresses only unless tls->insecure */
    int second;                        /* 1: also open a second set of streams to the same
                                        * workers (moe_expert_backend.second), so that a
                                        * context can have two halves of a batch out at once
                                        * (moe_ctx_params.split); its counters are added to
                                        * the first's in the readers below (default 0) */
} moe_remote_params;

typedef struct moe_remote_stats {
    uint64_t batches;         /* submits */
    uint64_t second_batches;  /* of those, on the second set of streams (the second halves
                               * of split ubatches, moe_remote_params.second) */
    uint64_t messages;        /* Forward messages sent */
    uint64_t bytes_sent;      /* serialized ForwardRequest bytes put in gRPC byte buffers */
    uint64_t bytes_received;  /* serialized ForwardResult bytes read from gRPC byte buffers */
    uint64_t retries;         /* row groups sent again after a worker failed */
    uint64_t worker_failures; /* worker failures seen (broken stream, deadline, refusal) */
    uint64_t suspects;        /* of those, silent workers given up on early (suspect_ms) */
    uint64_t epoch;           /* placement epoch in use (0: a fixed list) */
    uint64_t placements;      /* placements taken from Redis */
    uint64_t rows_reported;   /* rows written to Redis load buckets */
    uint64_t redis_failures;  /* Redis connections lost or refused */
    int workers;              /* workers known */
    double stall_ms_max;      /* longest time from sending rows to a worker that failed
                               * (or from a refusal) to that batch served by replicas
                               * (failover latency, the silence waited for included) */
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

/* Counters of a remote backend (zeros for another backend), as of the end
 * of the last wait. Any thread. */
moe_remote_stats moe_remote_get_stats(const moe_expert_backend *be);

/* Whether every routed expert can be served now: readiness. A worker is
 * live unless it failed (broken stream, deadline, "unavailable") and is in
 * its down window (down_ms, doubling while it keeps failing, up to 16x); one
 * never tried is live, one that served again is live at once. A worker that
 * refuses an expert (no longer holds it) stays live. */
typedef struct moe_remote_coverage {
    uint64_t epoch;    /* of the placement counted (0: a fixed list) */
    int pairs;         /* (layer, expert) pairs of the routed experts: MoE layers x n_expert */
    int uncovered;     /* of those, pairs no live worker holds (0: ready) */
    int unplaced;      /* of uncovered, pairs no worker holds at all (allow_partial,
                        * or a placement that leaves them out) */
    int workers;       /* workers the placement gives at least one pair */
    int workers_live;  /* of those, live */
    int workers_known; /* workers the backend has met (any placement so far) */
    int layer, expert; /* the first uncovered pair (for a message), or -1, -1 */
} moe_remote_coverage;

/* Fills *out for the placement in use or, with Redis, the newest placement
 * the control thread has read and the compute thread not taken yet (an idle
 * backend takes a placement at its next submit), with liveness as of now.
 * Returns 0, MOE_EINVAL (not a remote backend; *out zeroed, layer and
 * expert -1) or MOE_ENOMEM. Any thread; it walks every pair under the
 * backend's mutex (the compute thread may wait that long at the end of a
 * batch), so call it per probe, not per token. */
int moe_remote_get_coverage(const moe_expert_backend *be, moe_remote_coverage *out);

/* Per-worker round trips: a Forward message's RTT runs from handing it to
 * gRPC to reading its result (any status). Bucket i counts RTTs <=
 * moe_remote_rtt_le_ms[i] (cumulative, as Prometheus "le" buckets; the
 * +Inf bucket is rtt_count). */
#define MOE_REMOTE_RTT_BUCKETS 11
/* {0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000} milliseconds */
extern const double moe_remote_rtt_le_ms[MOE_REMOTE_RTT_BUCKETS];

typedef struct moe_remote_worker_stats {
    char addr[256];     /* host:port (cut to fit) */
    int in_placement;   /* the placement in use gives it at least one pair */
    int live;           /* as in moe_remote_coverage */
    uint64_t messages;  /* Forward messages sent to it */
    uint64_t rows;      /* token rows in them */
    uint64_t failures;  /* failures: broken stream, deadline, refusal, a bad result */
    uint64_t rtt_count; /* results read: RTTs measured */
    double rtt_ms_sum;
    uint64_t rtt_le[MOE_REMOTE_RTT_BUCKETS];
} moe_remote_worker_stats;

/* Copies the counters of the first min(n, cap) workers the backend has met
 * (in the order met: stable, so a series keeps its worker) into out
 * (cap may be 0, out NULL). Returns n, the number of workers met (0 for
 * another backend). Counters as of the end of the last wait. Any thread. */
int moe_remote_get_worker_stats(const moe_expert_backend *be, moe_remote_worker_stats *out,
                                int cap);

/* Called for each result read, on the compute thread, inside wait: the
 * worker's address (valid until destroy), the RTT in ms and the message's
 * rows. It must not call the backend. (For a histogram by worker: e.g.
 * moe_metric_observe, which is thread-safe.) */
typedef void (*moe_remote_rtt_fn)(void *ud, const char *addr, double ms, int rows);

/* Sets (fn NULL: clears) the RTT hook; ud is borrowed. Call it before the
 * backend serves, or on the compute thread. Returns 0 or MOE_EINVAL (not a
 * remote backend). */
int moe_remote_set_rtt_hook(moe_expert_backend *be, moe_remote_rtt_fn fn, void *ud);

/* ---- Options: where a program's experts run ------------------------------
 *
 * The flags every program that runs a model takes to put its routed experts
 * on expert-workers (moectl, the gateway), as one table fragment (svc/flags.h)
 * and the backend they describe:
 *
 *     moe_remote_opts ro = moe_remote_opts_default();
 *     moe_flag remote[MOE_REMOTE_N_FLAGS + 1];
 *     moe_remote_opts_flags(&ro, remote);
 *     const moe_flag flags[] = {{"--model", ...}, {.include = remote}, {0}};
 *     ... parse ...
 *     moe_expert_backend *be;    // NULL: neither --workers nor --redis (local)
 *     if (moe_remote_opts_open(&be, m, &ro, NULL, &err) < 0) -> err.msg
 */

typedef struct moe_remote_opts {
    const char *workers; /* --workers "host:port,host:port" (NULL: none) */
    const char *redis;   /* --redis URL: follow router-svc's placement (NULL: none) */
    const char *prefix;  /* --prefix: the deployment's Redis key prefix (NULL: default) */
    const char *wire;    /* --wire "f32" (exact) or "bf16" */
    int deadline_ms;     /* --deadline-ms: per batch */
    int suspect_ms;      /* --suspect-ms: a silent worker's rows go to a replica (params) */
    const char *redis_password_file; /* --redis-password-file (mesh/rlink.h) */
    moe_tls_opts tls; /* --tls-cert, --tls-key, --tls-ca, --tls-refresh-s, --insecure */
    moe_flag tls_flags[MOE_TLS_N_FLAGS + 1];
    const char *overlap; /* --overlap auto|on|off: a batch as two overlapped halves
                          * (moe_ctx_params.split; off: no second set of streams) */
} moe_remote_opts;

/* The rows moe_remote_opts_flags writes, without the end row. */
#define MOE_REMOTE_N_FLAGS 9

/* No workers, no Redis, wire f32, moe_remote_default_params' deadline. */
moe_remote_opts moe_remote_opts_default(void);

/* Writes the flag rows of o (--workers, --redis, --redis-password-file,
 * --prefix, --wire, --deadline-ms, --overlap and the TLS flags of mesh/tls.h, each
 * with its MOE_* twin) and an end row into t, for a
 * {.include = t} row. o and t are borrowed by the parser. */
void moe_remote_opts_flags(moe_remote_opts *o, moe_flag t[MOE_REMOTE_N_FLAGS + 1]);

/* A flag check: the value is "f32" or "bf16". */
int moe_remote_check_wire(const void *dst, char *why, size_t cap);
/* A flag check: the value is "auto", "on" or "off". */
int moe_remote_check_overlap(const void *dst, char *why, size_t cap);
/* --overlap as moe_ctx_params.split (MOE_SPLIT_AUTO, _ON or _OFF). */
int moe_remote_opts_split(const moe_remote_opts *o);

/* The backend o describes, for model m (borrowed): *out is NULL (and 0 is
 * returned) when o names neither workers nor Redis; otherwise the remote
 * backend over the worker list or Redis placement, owned by the caller
 * (moe_expert_backend_destroy). base (NULL: defaults) gives the other
 * parameters (max_rows, allow_partial, second, ...); o's wire and deadline
 * replace its, --overlap off clears second, and o's TLS options are used. A worker in the list may
 * be given as id@host:port: with TLS its certificate must then name id (else the host). MOE_EINVAL
 * (with err naming the flags) for workers and Redis both, an empty worker list or an unknown wire;
 * else moe_expert_backend_remote_ create's or _redis_create's errors. */
int moe_remote_opts_open(moe_expert_backend **out, const moe_model *m, const moe_remote_opts *o,
                         const moe_remote_params *base, moe_err *err);

#endif
