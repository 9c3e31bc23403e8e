/*
 * usage.h - what each tenant used: requests, tokens, and the rows it sent to
 * each (layer, expert) with the expert time they took. The gateway sees
 * every routing decision (moe_ctx_params.on_route), so it can say which
 * tenant heats which expert.
 *
 *     gw_usage *u;
 *     gw_usage_create(&u, n_layer, n_expert, 1024);
 *     ctx params: .on_route = gw_usage_on_route, .on_route_ud = u
 *     scheduler: gw_usage_tenant() per job, gw_usage_set_rows() before each
 *                decode, gw_usage_add_request() at a job's end
 *     readers (any thread): gw_usage_get, gw_usage_top_experts
 *
 * The engine thread writes; readers take the same lock, per call. Memory:
 * n_layer x n_expert counters per tenant seen (allocated on first use);
 * beyond max_tenants, further tenants are counted together as "(other)".
 */
#ifndef GW_USAGE_H
#define GW_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "mesh/tenant.h"

typedef struct gw_usage gw_usage;

/* 0, or MOE_EINVAL (a size < 1) / MOE_ENOMEM. */
int gw_usage_create(gw_usage **out, int n_layer, int n_expert, int max_tenants);
void gw_usage_free(gw_usage *u);

/* ---- the engine thread ---- */

/* The index of tenant name ("" without tenants), made on first use. */
int gw_usage_tenant(gw_usage *u, const char *name);
/* The tenant index of each row of the next decode (borrowed until then;
 * -1: a row no tenant pays for). */
void gw_usage_set_rows(gw_usage *u, const int32_t *row_tenant, int n_rows);
/* moe_ctx_params.on_route: counts each chosen expert's row for its row's
 * tenant, and shares the layer's expert time between the tenants by rows. */
void gw_usage_on_route(void *ud, int layer, int row0, int n, int k, const int32_t *sel,
                       double expert_us);
/* A request of tenant t ended, with its tokens. */
void gw_usage_add_request(gw_usage *u, int t, int prompt_tokens, int completion_tokens);

/* ---- any thread ---- */

typedef struct gw_usage_totals {
    char tenant[MOE_TENANT_NAME_MAX + 1];
    uint64_t requests, prompt_tokens, completion_tokens;
    uint64_t expert_rows;  /* (token, expert) rows sent to routed experts */
    double expert_seconds; /* their share of the routed experts' wall time */
} gw_usage_totals;

/* Copies the totals of up to cap tenants into out (in the order first
 * seen); returns how many tenants there are. */
int gw_usage_list(gw_usage *u, gw_usage_totals *out, int cap);
/* One tenant's totals: 0, or -1 when it has none. */
int gw_usage_get(gw_usage *u, const char *tenant, gw_usage_totals *out);

typedef struct gw_usage_expert {
    int layer, expert;
    uint64_t rows;
} gw_usage_expert;

/* The tenant's n busiest (layer, expert) pairs, busiest first (ties: lower
 * layer, then expert), into out; returns how many (<= n; -1: no tenant). */
int gw_usage_top_experts(gw_usage *u, const char *tenant, gw_usage_expert *out, int n);
/* Its rows for one pair (0 when none). */
uint64_t gw_usage_rows(gw_usage *u, const char *tenant, int layer, int expert);

/* Calls fn for every (tenant, layer, expert) whose rows grew since the last
 * call, with the growth, and remembers the counts (the per-tenant load
 * report). Any thread (one at a time); fn must not call u. */
void gw_usage_take_deltas(gw_usage *u,
                          void (*fn)(void *ud, const char *tenant, int layer, int expert,
                                     uint64_t rows),
                          void *ud);

/* GET /v1/usage: tenant's totals and every (layer, expert) it used, as
 * {"object": "usage", "tenant": ..., "requests": N, "prompt_tokens": N,
 *  "completion_tokens": N, "total_tokens": N, "expert_rows": N,
 *  "expert_seconds": S, "experts": [[layer, expert, rows], ...]} (zeros and
 * an empty list for a tenant not seen yet: the same answer as for a tenant
 * that exists nowhere). Appends to b (b->oom on failure). */
struct moe_buf;
void gw_usage_json(gw_usage *u, const char *tenant, struct moe_buf *b);

/* /metrics: adds the per-tenant families to reg (once) ... */
struct moe_metrics;
int gw_usage_metrics_add(gw_usage *u, struct moe_metrics *reg);
/* ... and sets them (before each render): requests, prompt and completion
 * tokens, expert rows and seconds per tenant, and each tenant's top_n
 * busiest (layer, expert) pairs' rows (series bounded: 1024, then "other"). */
void gw_usage_metrics_update(gw_usage *u, int top_n);

#endif
