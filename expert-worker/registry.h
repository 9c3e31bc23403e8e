/*
 * registry.h - an expert worker's membership in a router-svc deployment
 * (docs/redis-schema.md), on its own thread:
 *
 *   - the lease: P:worker:<id> (address, capacity, device, failure domain,
 *     state, experts held, epoch, model shape and expert sizes) renewed every
 *     lease/3 with a TTL of lease, and P:workers, in one MULTI/EXEC; its state
 *     is "draining" once it is leaving (SIGTERM); an operator's drain is
 *     P:drain, which it reads (and logs) but never writes;
 *   - the placement: on P:events or every second it reads the pending and
 *     active epochs. For a pending epoch it loads the experts that epoch gives
 *     it (in addition to what it holds), then acknowledges (SADD P:ack:<e>);
 *     when an epoch becomes active it drops, after a grace period, the
 *     experts neither the active nor a pending epoch gives it.
 *
 * Redis going away changes nothing for serving: the worker keeps its experts
 * and retries with backoff; its lease comes back on the next heartbeat.
 */
#ifndef EW_REGISTRY_H
#define EW_REGISTRY_H

#include <stdint.h>

#include "moe/error.h"
#include "moe/model.h"
#include "mesh/slice.h"

typedef struct ew_registry_cfg {
    const char *url;         /* redis://host:port */
    const char *prefix;      /* key prefix (default "moemesh") */
    const char *id;          /* worker id (unique in the deployment) */
    const char *addr;        /* host:port the gateways reach it at */
    const char *domain;      /* failure domain ("" = its own) */
    const char *device;      /* "cpu:avx512", ... */
    uint64_t capacity_bytes; /* memory for expert weights */
    int lease_ms;            /* lease TTL (heartbeat every lease/3) */
    int grace_ms;            /* how long dropped experts stay after a switch */
    const moe_model *model;
    moe_slice *slice; /* written as experts load and drop */
} ew_registry_cfg;

typedef struct ew_registry ew_registry;

typedef struct ew_registry_stats {
    uint64_t epoch_acked, epoch_active;
    uint64_t loads, unloads; /* experts loaded and dropped */
    uint64_t heartbeats;
    int redis_up;
} ew_registry_stats;

/* Starts the thread (the config is copied). Returns 0, MOE_EINVAL (bad URL),
 * or MOE_ENOMEM. */
int ew_registry_start(ew_registry **out, const ew_registry_cfg *cfg, moe_err *err);
/* Leaving: asks router-svc to move this worker's experts away (its lease
 * says state=draining; a worker never writes P:drain, which is the
 * operators').
 * Returns 1 once the active epoch gives it nothing and the gateways have had
 * time to switch; call again until then (the caller bounds the wait). */
int ew_registry_drain(ew_registry *r);
/* Removes the lease (a clean leave) and stops the thread. */
void ew_registry_stop(ew_registry *r);
ew_registry_stats ew_registry_get_stats(ew_registry *r);

#endif
