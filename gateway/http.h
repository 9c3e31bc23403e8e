/*
 * http.h - the gateway's HTTP side, on libmicrohttpd (HTTP/1.1, keep-alive,
 * chunked server-sent events): routes, request bodies, the OpenAI error
 * objects, and the bridge to the scheduler. Its threads never wait on the
 * engine: a request is parsed and queued, its connection suspended, and the
 * engine thread resumes it when there is output (job.h's wake).
 *
 * Routes: POST /v1/chat/completions, /v1/completions, /tokenize,
 * /detokenize; GET /v1/models, /v1/models/{id}, /v1/usage (the caller's
 * tenant's requests, tokens and expert rows, never another's), /healthz,
 * /readyz, /metrics; GET|DELETE /v1/requests/{id}, POST
 * /v1/requests/{id}/cancel (the caller's own requests: requests.h).
 * Every response carries an x-request-id (requests.h).
 * With API keys (auth.h), every route but /healthz, /readyz and /metrics
 * needs one, checked when a request's headers are in (before its body).
 */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "auth.h"
#include "limiter.h"
#include "scheduler.h"
#include "svc/metrics.h"

typedef struct gw_http_params {
    const char *listen;    /* "HOST:PORT" (port 0: any free port) */
    int max_connections;   /* open connections; a newcomer beyond closes the one unserved
                              longest (up to 64 more while all are busy) */
    int idle_timeout_s;    /* a connection silent this long is closed */
    int header_timeout_s;  /* ... before its first request's headers are in (0: idle's) */
    uint64_t max_body;     /* bytes of a request body (413 beyond) */
    int threads;           /* HTTP threads (1: one event loop) */
    gw_sched *sched;       /* borrowed */
    const gw_api_ctx *api; /* borrowed */
    moe_metrics *reg;      /* borrowed: /metrics renders it */
    moe_metric *requests;  /* counter {route,status} */
    /* readiness: 0 when ready, else a reason written to why */
    int (*ready)(void *ud, char *why, size_t cap);
    void *ready_ud;                   /* also before_metrics' */
    void (*before_metrics)(void *ud); /* (optional) sets gauges before /metrics renders */
    uint64_t seed;                    /* request ids and unseeded choices */
    gw_usage *usage;                  /* (optional) GET /v1/usage: the caller's usage */
    gw_auth *auth;     /* (optional, borrowed) API keys on every route but the probes */
    gw_limits *limits; /* (optional, borrowed) the tenants' limits (with auth) */
    int max_live;      /* generation requests that can be in flight (--max-queue +
                          --max-seqs): the requests' registry holds them and 1024 more */
} gw_http_params;

typedef struct gw_http gw_http;

/* Binds and starts serving. 0, or MOE_E* with err (the address in use, a
 * bad address). */
int gw_http_start(gw_http **out, const gw_http_params *p, moe_err *err);

/* The bound address ("127.0.0.1:8000"), e.g. after port 0. */
const char *gw_http_address(const gw_http *h);

/* Generation requests whose connection is still open (their response not
 * yet wholly sent): the drain waits for 0. */
int gw_http_live(gw_http *h);

/* Draining: new generation requests get 503 and /readyz says so;
 * running ones go on. */
void gw_http_drain(gw_http *h);

/* Stops serving (closes every connection) and frees h. Stop the scheduler
 * first, so that no connection waits for output. */
void gw_http_stop(gw_http *h);

#endif
