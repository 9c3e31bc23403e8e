/*
 * tload.h - the per-tenant load report: every 2 s, the rows each tenant
 * routed to each (layer, expert) since the last report go to Redis beside
 * the per-expert load (P:load:<b>:tenants, field "<tenant>|L:E", the same
 * 10 s buckets and TTL; docs/redis-schema.md), so an operator - or
 * router-svc, later - can see which tenants heat which experts. Best effort,
 * like the load itself: while Redis is away the counts wait for it; those of
 * a write the connection breaks in are lost; serving never waits on it.
 */
#ifndef GW_TLOAD_H
#define GW_TLOAD_H

#include "moe/error.h"
#include "usage.h"

typedef struct gw_tload gw_tload;

/* Starts the reporting thread (url: a Redis URL; prefix NULL: the default;
 * u borrowed). 0, or MOE_E* with err. */
int gw_tload_start(gw_tload **out, const char *url, const char *prefix, gw_usage *u, moe_err *err);
/* Reports what is left and stops (NULL: no-op). */
void gw_tload_stop(gw_tload *t);

#endif
