/*
 * router-svc/placement.h - where each (layer, expert) runs: the pure placement
 * algorithm of router-svc (no Redis, no network, no global state).
 *
 * Given the workers (capacity, failure domain, alive/draining), the experts
 * (weight bytes, smoothed load) and the last epoch's placement, it computes
 * the next placement: how many replicas each expert gets and on which workers.
 *
 *   1. Replica counts. want(e) = clamp(ceil(load / target_load), min_replicas,
 *      max_replicas), at most the number of eligible (alive, not draining)
 *      workers. If the usable memory (capacity x (1 - headroom)) of the
 *      eligible workers cannot hold every wanted replica, replicas beyond
 *      min_replicas are granted one at a time to the expert with the highest
 *      load per replica (EPLB's rule) while the bytes last, so the least loaded
 *      experts lose their extra replicas first. If even min_replicas of every
 *      expert does not fit: MOE_ENOSPC, naming bytes needed and available.
 *   2. Stability. Every previous assignment on an eligible worker is kept
 *      while its expert still wants it; surplus replicas are dropped from the
 *      busiest workers first; a worker whose capacity shrank sheds replicas
 *      of its most replicated experts. Dead and draining workers keep nothing.
 *   3. New replicas are placed greedily, heaviest experts (load per replica,
 *      then bytes) first, min_replicas of every expert before any extra
 *      replica: each goes to the worker with room that does not hold the
 *      expert yet, preferring a failure domain the expert's replicas do not
 *      use, then the lowest utilisation after adding it. Utilisation is the
 *      worker's share of the placed bytes and load, weighted by load_weight,
 *      over its share of the capacity (1.0 = its fair share). Ties go to the
 *      lower index. If the kept assignments leave no room for some expert's
 *      min_replicas, a fresh placement (ignoring the previous one) is tried
 *      before giving up with MOE_ENOSPC.
 *
 * Guarantees: deterministic (same inputs, same output); every expert has
 * between min_replicas and want(e) replicas on distinct eligible workers; no
 * worker holds more than its usable capacity; computing again from a result
 * with the same inputs returns that result (zero moves, same epoch); when
 * only loads change, the moves are exactly the replica-count changes
 * (moves_added + moves_removed = sum |count(e) - previous count(e)|); a dead
 * or draining worker's replicas are replaced and no survivor loses an
 * assignment unless its expert now gets fewer replicas (the capacity left
 * allows fewer) or the result is a fresh layout (fresh_layout = 1).
 *
 *     const uint64_t GiB = 1ULL << 30;
 *     rt_worker ws[] = {{.id = "w0", .domain = "zone-a", .capacity_bytes = 8 * GiB, .alive = 1},
 *                       {.id = "w1", .domain = "zone-b", .capacity_bytes = 8 * GiB, .alive = 1}};
 *     rt_expert es[] = {{.layer = 0, .expert = 0, .bytes = GiB, .load = 900}, ...};
 *     rt_place_params p = {.min_replicas = 1, .max_replicas = 4, .headroom = 0.1,
 *                          .target_load = 500, .load_weight = 0.5};
 *     rt_placement *pl;
 *     moe_err err;
 *     if (rt_placement_compute(&pl, ws, 2, es, n, &p, prev, &err) < 0)
 *         fprintf(stderr, "placement: %s\n", err.msg);
 *     ... pl->experts[i].replicas are indices into ws ...
 *     rt_placement_free(prev); prev = pl;   // the next epoch's previous placement
 */
#ifndef RT_PLACEMENT_H
#define RT_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "moe/error.h"

/* A worker as the leases describe it. */
typedef struct rt_worker {
    const char *id;          /* unique, non-empty; borrowed for the call */
    const char *domain;      /* failure domain (zone, node, rack); NULL or "" = its own */
    uint64_t capacity_bytes; /* memory for expert weights */
    int alive;               /* 0: lease expired; its experts are reassigned */
    int draining;            /* non-zero: gets nothing new, its experts move away */
} rt_worker;

/* One (layer, expert) FFN. */
typedef struct rt_expert {
    int32_t layer;
    int32_t expert;
    uint64_t bytes; /* weight bytes of one replica */
    double load;    /* smoothed load (rows/s or tokens/s), finite, >= 0 */
} rt_expert;

typedef struct rt_place_params {
    int min_replicas;       /* >= 1: replicas of every expert, whatever its load */
    int max_replicas;       /* >= min_replicas, or 0: no limit but the worker count */
    double headroom;        /* [0, 1): fraction of each worker's capacity kept free */
    double target_load;     /* > 0: load one replica should carry (same unit as load) */
    double load_weight;     /* [0, 1]: weight of load vs bytes in utilisation; 0 = bytes */
    double worker_max_load; /* >= 0: load one worker can carry, for workers_wanted; 0 = none */
} rt_place_params;

typedef struct rt_placement_expert {
    int32_t layer;
    int32_t expert;
    int n_replicas;
    int *replicas; /* (n_replicas) worker indices, ascending */
} rt_placement_expert;

/* A placement: owns everything it points to; free with rt_placement_free. */
typedef struct rt_placement {
    uint64_t epoch; /* previous epoch if nothing moved, else previous + 1
                       (1 without a previous placement) */
    size_t n_workers;
    char **worker_ids;      /* (n_workers) copies of the input ids, input order */
    uint64_t *worker_bytes; /* (n_workers) weight bytes assigned */
    double *worker_load;    /* (n_workers) load assigned: sum of load / n_replicas */
    size_t n_experts;
    rt_placement_expert *experts; /* (n_experts) in input order */
    size_t n_assignments;         /* sum of n_replicas */
    size_t moves_added;           /* assignments not in the previous placement */
    size_t moves_removed;         /* previous assignments not in this one */
    size_t replicas_short;        /* replicas the load wants that capacity did not allow */
    size_t workers_wanted;        /* the autoscaling signal (see rt_placement_compute) */
    int fresh_layout;             /* 1: the kept assignments left no room for some expert's
                                     min_replicas, so this ignores the previous placement */
} rt_placement;

/*
 * Computes the next placement into *out (free with rt_placement_free).
 * workers (n_workers) and experts (n_experts) are borrowed for the call;
 * prev (NULL for none) is the last epoch's placement, matched to the inputs by
 * worker id and (layer, expert): its indices need not match the new arrays.
 *
 * workers_wanted, the number of workers of the current size that the load
 * calls for (alive workers' mean usable capacity, C):
 *     W = max( ceil(sum_e r(e) * bytes(e) / C),   memory for the wanted replicas
 *              max_e r(e),                        distinct workers per expert
 *              ceil(sum_e load(e) / worker_max_load) if worker_max_load > 0 )
 * with r(e) = clamp(ceil(load(e) / target_load), min_replicas, max_replicas),
 * not limited by the workers there are now (0 when there are no experts).
 *
 * Returns 0; MOE_EINVAL (bad parameter, duplicate worker id or expert, NULL
 * id), MOE_ENUMERIC (a load that is NaN, infinite or negative), MOE_ENOSPC
 * (min_replicas of every expert cannot be placed; err names the bytes), or
 * MOE_ENOMEM. On failure *out is NULL.
 */
int rt_placement_compute(rt_placement **out, const rt_worker *workers, size_t n_workers,
                         const rt_expert *experts, size_t n_experts, const rt_place_params *params,
                         const rt_placement *prev, moe_err *err);

/* A placement from its assignments (a published epoch read back, or the
 * experts the workers report holding), to be the previous placement of the
 * next computation. Replicas are indices into ids. Bytes and loads are left
 * zero. Returns 0, MOE_EINVAL (an index out of range) or MOE_ENOMEM. */
int rt_placement_from_lists(rt_placement **out, uint64_t epoch, char *const *ids, size_t n_workers,
                            const rt_placement_expert *experts, size_t n_experts);

/* Frees a placement (NULL is allowed). */
void rt_placement_free(rt_placement *pl);

/*
 * The placement document of pl (P:placement:<e>, written with libmesh's
 * moe_pldoc_write, mesh/schema.h) into *out (malloc'd; the caller frees it):
 *     {"epoch":3,"model":"...","workers":{"w0":"h:1","w1":"h:2"},
 *      "experts":[[0,0,["w0","w1"]],[0,1,["w1"]]]}
 * model and addrs ((n_workers) the workers' host:port) are borrowed for the
 * call. Only workers with an assignment are named, in pl's order; experts in
 * pl's order. Returns 0, MOE_EINVAL naming the problem (a replica index out
 * of range, a worker with an assignment whose address is NULL or "": the
 * readers would refuse the document) or MOE_ENOMEM.
 */
int rt_placement_doc(const rt_placement *pl, const char *model, const char *const *addrs,
                     char **out, moe_err *err);

#endif
