/*
 * server.h - the expert worker's gRPC server: moe.v1.ExpertService (Forward,
 * Info) and grpc.health.v1.Health (Check), on one completion-queue thread.
 * This is the only module that touches the gRPC completion queue.
 *
 * Forward streams are served request by request: receive, check, compute
 * (the local expert backend, this process's threads), send, receive the
 * next. A batch naming an expert this worker does not hold gets a result
 * with status FAILED_PRECONDITION naming it; a malformed one
 * INVALID_ARGUMENT; the stream goes on either way.
 */
#ifndef EW_SERVER_H
#define EW_SERVER_H

#include <signal.h>
#include <stdint.h>

#include "moe/error.h"
#include "moe/model.h"
#include "mesh/slice.h"

/* Counters the server keeps for /metrics (read with __atomic loads from
 * another thread). */
typedef struct ew_counters {
    uint64_t batches, rows, refused, errors;
    uint64_t *expert_rows; /* (n_layer * n_expert) rows served per expert */
} ew_counters;

typedef struct ew_config {
    const moe_model *model;
    const char *model_name;
    const moe_slice *slice;
    const char *listen; /* "127.0.0.1:0", "0.0.0.0:50051", ... */
    int n_threads;
    int max_rows;                /* rows one request may carry */
    ew_counters *counters;       /* NULL: none */
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
