/*
 * router.h - router-svc's control loop (docs/redis-schema.md): leadership,
 * worker leases, the gateways' load, the placement and its two-phase switch,
 * failover and the autoscaling signal. One thread runs router_run; the HTTP
 * thread reads a snapshot through router_render.
 *
 * Every tick (tick_ms): take or renew the leader lock; read the leases
 * (P:workers, P:worker:<w>); as leader, read the load buckets once a second
 * into a moving average per expert (half-life halflife_ms) and drive the
 * placement:
 *   - no placement yet: wait until the workers have been stable for
 *     settle_ms, then place every expert (rt_placement_compute);
 *   - a round in progress (a pending epoch): when every worker it names has
 *     acknowledged, make it active; if one of them died, or ack_timeout_ms
 *     passed, abandon it and compute again;
 *   - otherwise compute from the active placement: a worker gone or draining
 *     starts a round at once (failover); a change the load asks for starts
 *     one at most every rebalance_ms.
 */
#ifndef RT_ROUTER_H
#define RT_ROUTER_H

#include <signal.h>

#include "moe/error.h"
#include "placement.h"

typedef struct router_cfg {
    const char *url;    /* redis://host:port */
    const char *prefix; /* key prefix (default "moemesh") */
    const char *id;     /* this replica's id (leader lock value) */
    rt_place_params place;
    int tick_ms;        /* default 250 */
    int settle_ms;      /* default 1500 */
    int rebalance_ms;   /* default 5000 */
    int halflife_ms;    /* load average half-life, default 5000 */
    int ack_timeout_ms; /* default 60000 */
    int leader_ttl_ms;  /* default 5000 */
    volatile sig_atomic_t *stop;
} router_cfg;

typedef struct router router;

int router_create(router **out, const router_cfg *cfg, moe_err *err);
/* Runs until *cfg->stop. Returns 0 or MOE_E*. */
int router_run(router *r, moe_err *err);
void router_free(router *r);

/* Renders an HTTP GET: "/metrics" (Prometheus text), "/v1/scale" (JSON with
 * workers_wanted), "/v1/placement" (the active placement), "/v1/tenant-load"
 * (JSON: the experts with the most tenant rows and their top tenants;
 * router_internal.h), "/healthz".
 * Returns the HTTP status; *body is malloc'd. Thread-safe. */
int router_render(router *r, const char *path, char **body, const char **content_type);

#endif
