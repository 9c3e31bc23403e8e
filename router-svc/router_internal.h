/* router_internal.h - router-svc's state, shared by router.c (the loop) and
 * router_views.c (what HTTP shows). */
#ifndef RT_ROUTER_INTERNAL_H
#define RT_ROUTER_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "mesh/rlink.h"
#include "moe/log.h"
#include "placement.h"
#include "router.h"

/* A worker as its lease describes it. */
typedef struct rs_worker {
    char *id, *addr, *domain, *model, *held, *expert_bytes;
    uint64_t capacity, epoch;
    int n_layer, n_expert;
    int draining; /* state "draining" or in P:drain */
    int usable;   /* serves the deployment's model */
} rs_worker;

/* What the HTTP thread reads. */
typedef struct rs_snap {
    int leader, redis_up;
    int n_workers, n_usable, n_draining;
    uint64_t epoch, pending;
    size_t workers_wanted, replicas_short, n_assignments;
    uint64_t rounds, failovers, rounds_abandoned, moves_added, moves_removed;
    uint64_t redis_failures;
    double last_switch_ms;
    int n_layer, n_expert;
    double *load;    /* (n_layer * n_expert) rows/s */
    int *replicas;   /* (n_layer * n_expert) in the active placement; -1 = not an expert */
    char *placement; /* the active epoch's document */
} rs_snap;

struct router {
    router_cfg cfg;
    char *prefix, *id;
    moe_rlink *cmd;
    /* leases */
    rs_worker *ws;
    int nw;
    char *worker_sig; /* the eligible set, to see changes */
    int64_t stable_since_ms;
    int64_t hold_until_ms; /* after Redis came back: leases are still returning */
    uint64_t redis_connects;
    int max_lease_ms; /* the longest lease a worker has announced */
    /* the deployment's model, from the leases */
    char *model;
    int n_layer, n_expert;
    uint64_t *layer_bytes; /* (n_layer) bytes of one expert; 0: not a MoE layer */
    /* load */
    double *load; /* (np) moving average, rows/s */
    int64_t slot_id[2];
    uint64_t *slot[2]; /* (np) counts seen in bucket slot_id[i] */
    int64_t last_load_ms;
    int load_primed;
    /* placement */
    int leader;
    int64_t leader_renewed_ms;
    int have_prev_loaded;
    rt_placement *active;
    int active_published; /* 0: rebuilt from the workers' held experts, not in Redis */
    rt_placement *round;
    int64_t round_started_ms, last_round_ms, round_urgent_since_ms;
    uint64_t next_epoch;
    size_t workers_wanted_written;
    int64_t wanted_written_ms;
    char *active_doc;
    rs_snap st;
    /* log once: the last model, bad lease and times of repeated complaints */
    char logged_model[160], logged_lease[64];
    int64_t logged_place_ms, logged_workers_ms;
    pthread_mutex_t mu; /* guards st */
};

/* a log line of router-svc (through moe_log; svc/log.h renders it): rt_log for
 * what happened, rt_warn for a failure it works around or an input it refuses,
 * rt_err for a failure that stops it doing its job (e.g. no placement) */
#define rt_log(...) moe_log(MOE_LOG_INFO, "router-svc", __VA_ARGS__)
#define rt_warn(...) moe_log(MOE_LOG_WARN, "router-svc", __VA_ARGS__)
#define rt_err(...) moe_log(MOE_LOG_ERROR, "router-svc", __VA_ARGS__)
void rt_lead(router *r);        /* take or renew the leader lock */
int rt_read_workers(router *r); /* 0, or -1 when Redis is away */
void rt_workers_clear(router *r);
const rs_worker *rt_find_worker(const router *r, const char *id);

#endif
