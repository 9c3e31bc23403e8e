/* metrics.h - the expert worker's admin HTTP (--metrics ADDR): /metrics in
 * Prometheus text (batches, rows, refusals, errors, experts held, epochs,
 * loads and drops, Redis, and per-expert rows as a histogram plus the 10
 * busiest experts: a bounded number of series whatever the model; the admin
 * port's own connections), /healthz. */
#ifndef EW_METRICS_H
#define EW_METRICS_H

#include "svc/httpd.h"
#include "registry.h"
#include "server.h"
#include "mesh/slice.h"

typedef struct ew_metrics {
    const moe_model *model;
    const moe_slice *slice;
    ew_counters *counters;
    ew_registry *reg; /* NULL without --redis (set once registered) */
    moe_httpd *admin; /* the server of this page (set once started) */
} ew_metrics;

/* The moe_http_handler; ud is an ew_metrics. */
void ew_metrics_http(void *ud, const moe_http_req *req, moe_http_resp *resp);

#endif
