/*
 * server.h - the expert worker's gRPC server: moe.v1.ExpertService (Forward,
 * Info) and grpc.health.v1.Health (Check). This is the only module that
 * touches the gRPC completion queue. Three threads: the caller of
 * ew_server_run drives the queue; a second one takes ready events every
 * 10 ms (gRPC 1.51 parses a connection's whole burst inside the first one's
 * wait, see poller_main); the compute thread decodes and computes Forward
 * messages in arrival order, so a costly message never holds the queue:
 * other calls, health checks and cancellations go on.
 *
 * Forward streams are served request by request: receive, check, compute
 * (the local expert backend, this process's threads), send, receive the
 * next. A batch naming an expert this worker does not hold gets a result
 * with status FAILED_PRECONDITION naming it; a malformed one
 * INVALID_ARGUMENT; the stream goes on either way.
 *
 * What a peer can make the worker spend, and the limit on each:
 *   - message size: max_rows x hidden x 4 bytes plus a little (the biggest
 *     valid ForwardRequest); a Health/Check request at most 1 KB;
 *   - compression: identity only; a compressed message is refused
 *     (INVALID_ARGUMENT), never inflated; grpc-encoding gzip or deflate is
 *     answered UNIMPLEMENTED by gRPC itself;
 *   - decoding: the raw bytes are scanned first (mesh/wire.h): at most
 *     n_expert row groups and 32 other fields, refused before unpacking;
 *   - unknown methods: UNIMPLEMENTED at once, the call freed;
 *   - streams: max_streams at once per connection; a connection without
 *     calls for conn_idle_ms is closed; after conn_age_ms it takes no new
 *     calls (GOAWAY; open streams run on); keepalive pings more often than
 *     every 10 s without data are struck (GOAWAY at 2); a handshake must
 *     finish in 10 s;
 *   - memory after a burst goes back to the OS once the worker has been
 *     idle 0.5 s (malloc_trim).
 *   - connections: at most max_conns to the port; the newest beyond are
 *     shut down within 100 ms (conncap.h: gRPC 1.51 has no such limit).
 * gRPC 1.51 has no cap on calls waiting in its queue
 * (a rapid reset's calls are freed as fast as they come instead: see
 * poller_main); 16 calls per method are requested ahead so new streams are
 * matched at once.
 */
#ifndef EW_SERVER_H
#define EW_SERVER_H

#include <signal.h>
#include <stdint.h>

#include "moe/error.h"
#include "moe/model.h"
#include "mesh/slice.h"
#include "mesh/tls.h"

/* Counters the server keeps for /metrics (read with __atomic loads from
 * another thread). */
typedef struct ew_counters {
    uint64_t batches, rows, refused, errors;
    uint64_t unknown_calls; /* calls to methods not served (answered UNIMPLEMENTED) */
    uint64_t conns_open;    /* established connections to the gRPC port (last count) */
    uint64_t conns_cut;     /* connections shut down beyond max_conns */
    uint64_t *expert_rows;  /* (n_layer * n_expert) rows served per expert */
} ew_counters;

typedef struct ew_config {
    const moe_model *model;
    const char *model_name;
    const moe_slice *slice;
    const char *listen; /* "127.0.0.1:0", "0.0.0.0:50051", ... */
    int n_threads;
    int max_rows;                /* rows one request may carry */
    int max_streams;             /* concurrent streams per connection (<= 0: 32) */
    int conn_idle_ms;            /* close a connection without calls after this (<= 0: never) */
    int conn_age_ms;             /* then a connection takes no new calls (<= 0: never) */
    int max_conns;               /* connections to the port (<= 0: no cap) */
    ew_counters *counters;       /* NULL: none */
    const moe_tls_opts *tls;     /* mutual TLS (mesh/tls.h); NULL: plaintext */
    volatile sig_atomic_t *stop; /* set by a signal handler: finish in-flight work, exit */
    /* called once bound, with the real port (registration starts here) */
    void (*on_listen)(void *ud, int port);
    /* once stop is set, polled every 100 ms while serving goes on: returns 1
     * when the worker may stop (a drain finished); NULL: stop at once */
    int (*may_stop)(void *ud);
    void *on_listen_ud; /* ud of both */
} ew_config;

/* Runs the server until *stop. Prints one line "listening on HOST:PORT" to
 * stdout once bound (with the real port for ":0"), flushed. Returns 0 on a
 * clean stop, or a MOE_E* code (bind failure, out of memory). */
int ew_server_run(const ew_config *cfg, moe_err *err);

#endif
