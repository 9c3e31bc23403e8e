/*
 * remote_ctl.h - the remote backend's control thread (the gateway side of
 * router-svc, docs/redis-schema.md): follows the active placement (P:events
 * pub/sub plus a check every second), and flushes the per-(layer, expert)
 * row counts to P:load:<bucket> once a second in one pipeline. While Redis
 * is away it keeps the last placement, keeps counting (one counter per
 * expert: bounded), and reconnects with backoff.
 *
 * The compute thread talks to it through a mutex: moe__rctl_take() for a newer
 * placement, moe__rctl_count() after each submit, moe__rctl_kick() when a worker
 * failed or refused a batch (check the placement now).
 */
#ifndef MOE_REMOTE_CTL_H
#define MOE_REMOTE_CTL_H

#include <stdint.h>

#include "moe/error.h"
#include "mesh/schema.h"

typedef struct moe__rctl moe__rctl;

typedef struct moe__rctl_stats {
    uint64_t placements;    /* placement documents taken */
    uint64_t load_flushes;  /* pipelines of load counts written */
    uint64_t rows_reported; /* rows written to P:load */
    uint64_t redis_connects, redis_failures;
    uint64_t epoch; /* newest active epoch seen */
} moe__rctl_stats;

/* Starts following the deployment for model m (borrowed; documents must
 * name its identity). */
int moe__rctl_start(moe__rctl **out, const char *url, const char *prefix, const moe_model *m,
                    moe_err *err);
/* Why the newest active epoch is unusable, or "" (for error messages). */
void moe__rctl_problem(moe__rctl *c, char *buf, size_t cap);
void moe__rctl_stop(moe__rctl *c);
/* The newest placement, if one came since the last take (the caller owns
 * it), else NULL. */
moe_pldoc *moe__rctl_take(moe__rctl *c);
/* Calls fn(ud, d) with the newest placement not taken yet, under the
 * control thread's mutex (fn must not call back in); 1 if there was one,
 * else 0 (fn not called). Any thread. */
int moe__rctl_peek(moe__rctl *c, void (*fn)(void *ud, const moe_pldoc *d), void *ud);
/* Waits up to ms for a placement not taken yet; 1 if there is one. */
int moe__rctl_wait(moe__rctl *c, int ms);
/* Adds one submit's rows per expert (groups as in moe_expert_work). */
void moe__rctl_count(moe__rctl *c, int layer, int n_groups, const int32_t *expert,
                     const int32_t *row_start);
void moe__rctl_kick(moe__rctl *c);
moe__rctl_stats moe__rctl_get_stats(moe__rctl *c);

#endif
