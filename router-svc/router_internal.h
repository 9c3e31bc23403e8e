/* router_internal.h - router-svc's state, shared by router.c (the loop),
 * router_leases.c (leadership, the leases), router_check.c (which leases it
 * believes) and router_views.c (what HTTP shows). */
#ifndef RT_ROUTER_INTERNAL_H
#define RT_ROUTER_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "mesh/rlink.h"
#include "mesh/tenant.h"
#include "moe/log.h"
#include "placement.h"
#include "router.h"

/* Why a lease is not believed (router_check.c): it is no worker then, gets
 * no experts, and its acknowledgements do not count. */
typedef enum rt_reject {
    RT_REJECT_NONE = 0,
    RT_REJECT_FIELDS,   /* a field missing, not a number, or out of range */
    RT_REJECT_ADDR,     /* addr is not host:port */
    RT_REJECT_TTL,      /* the key has no TTL, or one above its lease_ms */
    RT_REJECT_LEASE_MS, /* lease_ms outside MOE_SCHEMA_LEASE_MS_MIN..MAX */
    RT_REJECT_STARTED,  /* started_ms in the future */
    RT_REJECT_EPOCH,    /* an epoch no router-svc issued */
    RT_REJECT_SHAPE,    /* the deployment's model, other layers, experts or sizes */
    RT_REJECT_HELD,     /* held unreadable, or experts held at epoch 0 */
    RT_REJECT_NO_ACK,   /* did not acknowledge a round in time (until its lease shows it) */
    RT_REJECT_COUNT
} rt_reject;

/* A worker as its lease describes it. */
typedef struct rs_worker {
    char *id, *addr, *domain, *model, *held, *expert_bytes;
    uint64_t capacity, epoch;
    int n_layer, n_expert;
    int draining; /* state "draining" or in P:drain */
    int usable;   /* serves the deployment's model */
    int suspect;  /* missed an acknowledgement: no experts while others can hold them */
    /* what only the checks read */
    int64_t started_ms, pttl_ms; /* pttl_ms: PTTL of the key (-1: none) */
    int lease_ms;
    unsigned fields;       /* RS_F_* seen */
    const char *bad_field; /* a field that is not a number or not a state (static) */
} rs_worker;

/* The lease fields a worker writes, all required (rs_worker.fields). */
#define RS_F_ADDR 0x001u
#define RS_F_MODEL 0x002u
#define RS_F_EXPERT_BYTES 0x004u
#define RS_F_N_LAYER 0x008u
#define RS_F_N_EXPERT 0x010u
#define RS_F_CAPACITY 0x020u
#define RS_F_EPOCH 0x040u
#define RS_F_STARTED 0x080u
#define RS_F_LEASE_MS 0x100u
#define RS_F_STATE 0x200u
#define RS_F_ALL 0x3ffu

/* Clock skew allowed between a worker and router-svc (started_ms). */
#define RT_SKEW_MS 60000
/* No lease may claim an epoch above this: P:placement:seq stays far from the
 * 2^53 - 1 a placement document can carry. */
#define RT_EPOCH_MAX ((uint64_t)1 << 52)

/* A lease being refused, or refused before (router.rejected). */
typedef struct rt_rejected {
    char *id;
    rt_reject reason;
    int64_t logged_ms;
} rt_rejected;

/* A worker that did not acknowledge a round in time: no experts (while the
 * others can hold them) until it acknowledges a later round (every worker
 * acknowledges every pending epoch, even one that gives it nothing), with
 * its lease backing it. */
typedef struct rt_suspect {
    char *id;
    uint64_t epoch; /* the epoch it missed */
} rt_suspect;

/* ==== The tenant load (router_tload.c) ==== */
/* Which tenants heat which experts: the gateways' P:load:<b>:tenants (field
 * "<tenant>|L:E" = rows), read with the per-expert load (the same two
 * buckets, once a second, leader only), nothing of it trusted. */

#define RT_TLOAD_FIELDS_MAX 65536 /* fields read per bucket; beyond: skipped ("cap"), logged */
#define RT_TLOAD_TENANTS_MAX 1024 /* distinct tenants per read; beyond: skipped ("tenants") */
#define RT_TLOAD_ROWS_MAX 1000000000000000ull /* 10^15: a larger value is no row count */
#define RT_TLOAD_TOP_EXPERTS 10               /* experts shown (most tenant rows first) */
#define RT_TLOAD_TOP_TENANTS 5                /* tenants shown per expert (most rows first) */

/* Why an entry of the tenant load is skipped. */
typedef enum rt_tload_skip {
    RT_TLOAD_OK = 0,
    RT_TLOAD_SKIP_FIELD,   /* no '|', or not a tenant name before it */
    RT_TLOAD_SKIP_EXPERT,  /* not "L:E" after it, or outside the model */
    RT_TLOAD_SKIP_VALUE,   /* not a decimal count, or above RT_TLOAD_ROWS_MAX */
    RT_TLOAD_SKIP_TYPE,    /* a bucket key that is not a hash (counts once per key) */
    RT_TLOAD_SKIP_CAP,     /* fields beyond RT_TLOAD_FIELDS_MAX in a bucket */
    RT_TLOAD_SKIP_TENANTS, /* fields of tenants beyond RT_TLOAD_TENANTS_MAX */
    RT_TLOAD_SKIP_COUNT
} rt_tload_skip;

typedef struct rt_tload_tenant {
    char name[MOE_TENANT_NAME_MAX + 1];
    uint64_t rows;
} rt_tload_tenant;

/* One expert's tenants. */
typedef struct rt_tload_expert {
    int layer, expert;
    uint64_t rows; /* every tenant's */
    int n_tenants; /* tenants with rows there */
    int n_top;
    rt_tload_tenant top[RT_TLOAD_TOP_TENANTS]; /* most rows first, then by name */
} rt_tload_expert;

/* What HTTP shows of the last read. */
typedef struct rt_tload_view {
    int read;          /* 1 once a read completed */
    int64_t bucket[2]; /* the buckets read */
    int n_tenants;     /* distinct tenants */
    size_t n_fields;   /* fields read (valid or not) */
    uint64_t skipped[RT_TLOAD_SKIP_COUNT];
    int n;
    rt_tload_expert e[RT_TLOAD_TOP_EXPERTS]; /* the experts with the most tenant rows */
} rt_tload_view;

typedef struct rt_tload_row {
    uint32_t pair, tenant; /* layer * n_expert + expert; index into names */
    uint64_t rows;
} rt_tload_row;

/* One read's accumulator, then (after rt_tload_finish) its result. */
typedef struct rt_tload {
    int n_layer, n_expert;
    char (*names)[MOE_TENANT_NAME_MAX + 1]; /* (RT_TLOAD_TENANTS_MAX) */
    int n_names;
    int *slots; /* (2 * RT_TLOAD_TENANTS_MAX) name hash: index + 1, 0 = free */
    rt_tload_row *rows;
    size_t n_rows, cap_rows;
    size_t n_fields;
    uint64_t skipped[RT_TLOAD_SKIP_COUNT];
    int finished; /* rows merged: pair ascending, then rows descending, then name */
} rt_tload;

/* "field", "expert", "value", "type", "cap", "tenants" (the metric's label). */
const char *rt_tload_skip_name(rt_tload_skip why);
/* An empty accumulator for a model of n_layer x n_expert; 0 or MOE_ENOMEM. */
int rt_tload_init(rt_tload *t, int n_layer, int n_expert);
void rt_tload_free(rt_tload *t);
/* Parses one field and value as Redis returned them (flen, vlen bytes; not
 * trusted) without storing: RT_TLOAD_OK with the tenant name (cap >
 * MOE_TENANT_NAME_MAX), the pair and the rows, or why it is skipped. A tenant
 * is a tenant name ([A-Za-z0-9][A-Za-z0-9._-]*, at most MOE_TENANT_NAME_MAX
 * bytes) or the gateway's "(none)" and "(other)". */
rt_tload_skip rt_tload_parse(const char *field, size_t flen, const char *value, size_t vlen,
                             int n_layer, int n_expert, char *tenant, size_t *pair, uint64_t *rows);
/* Adds one field (rt_tload_parse); a skipped one is counted in t->skipped.
 * Returns the reason (RT_TLOAD_OK when added), or -1 when out of memory. */
int rt_tload_add(rt_tload *t, const char *field, size_t flen, const char *value, size_t vlen);
/* Merges what was added (the same tenant and expert in two buckets sum).
 * 0 or MOE_ENOMEM. */
int rt_tload_finish(rt_tload *t);
/* One expert's tenants (pair = layer * n_expert + expert) from a finished
 * read into *out; returns its tenant count (0: none reported). */
int rt_tload_expert_get(const rt_tload *t, size_t pair, rt_tload_expert *out);
/* The view of a finished read (the RT_TLOAD_TOP_EXPERTS experts with the
 * most tenant rows, ties to the lower pair). */
void rt_tload_view_fill(const rt_tload *t, rt_tload_view *v);
/* Reads the tenant load of the buckets read_load just read (router.c, the
 * leader, once a second): HLEN, then HGETALL (HSCAN beyond
 * RT_TLOAD_FIELDS_MAX), into r->tload and r->st.tload. Keeps the last read
 * when Redis fails. */
void rt_tload_read(router *r, const int64_t bucket[2]);
/* Logs each expert pl gives more replicas than the active placement:
 * "expert 2:5 hot: 1234 rows/s, 1 -> 3 replicas; tenants: acme 81%, beta 19%". */
void rt_tload_log_hot(router *r, const rt_placement *pl);

/* What the HTTP thread reads. */
typedef struct rs_snap {
    int leader, redis_up;
    int n_workers, n_usable, n_draining, n_other, n_rejected;
    uint64_t rejected[RT_REJECT_COUNT]; /* leases refused, by reason (each id once a spell) */
    uint64_t epoch, pending;
    size_t workers_wanted, replicas_short, n_assignments;
    uint64_t rounds, failovers, rounds_abandoned, moves_added, moves_removed;
    uint64_t redis_failures;
    double last_switch_ms;
    int n_layer, n_expert;
    double *load;        /* (n_layer * n_expert) rows/s */
    int *replicas;       /* (n_layer * n_expert) in the active placement; -1 = not an expert */
    char *placement;     /* the active epoch's document */
    rt_tload_view tload; /* which tenants heat which experts */
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
    int max_lease_ms;      /* the longest lease a worker has announced */
    rt_rejected *rejected; /* the leases refused on the last read */
    int n_rejected;
    rt_suspect *suspects; /* workers that missed an acknowledgement */
    int n_suspects;
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
    rt_tload *tload; /* the last tenant load read (NULL: none yet) */
    int64_t logged_tload_ms;
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
    int64_t logged_place_ms, logged_workers_ms, logged_drain_ms;
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
/* The next placement (router.c) from r->active over the workers ws[0..n_ok)
 * into *pl (NULL on failure, err says why); ws[n_ok..n_all) are suspects
 * (they missed an acknowledgement). A drain or a suspicion never leaves
 * experts without a live worker: when the others cannot hold them, the
 * draining workers keep theirs, then the suspects take them (as when the
 * last real workers are drained and a fake worker that held everything
 * stops). ws's draining flags may be cleared. Returns 0 or MOE_E*. */
int rt_compute_next(router *r, rt_worker *ws, int n_ok, int n_all, const rt_expert *es, size_t ne,
                    rt_placement **pl, moe_err *err);

/* ==== router_check.c: which leases router-svc believes ==== */

/* "fields", "addr", "ttl", ... (the metric's reason label). */
const char *rt_reject_name(rt_reject why);
/* The checks of one lease on its own: every field a worker writes, with sane
 * values (addr host:port, lease_ms in range, a TTL set and not above
 * lease_ms, started_ms not after now_ms + RT_SKEW_MS, an epoch at most
 * max_epoch (RT_EPOCH_MAX when no epoch is known yet), no experts held at
 * epoch 0). Returns the first reason that fails (why: a few words on it, cap
 * bytes) or RT_REJECT_NONE. */
rt_reject rt_lease_check(const rs_worker *w, int64_t now_ms, uint64_t max_epoch, char *why,
                         size_t cap);
/* The checks against the deployment, for a lease of its model: the same
 * layers and experts, the same bytes per expert (layer_bytes, n_layer
 * entries), a held list that reads within them. */
rt_reject rt_lease_check_shape(const rs_worker *w, int n_layer, int n_expert,
                               const uint64_t *layer_bytes, char *why, size_t cap);
/* Records this read's refused leases (ids and reasons borrowed): a lease
 * newly refused, or for another reason, is counted in st.rejected and
 * logged; one still refused is logged again at most every 5 minutes. */
void rt_note_rejected(router *r, char *const *ids, const rt_reject *why, char *const *detail,
                      int n);
/* Suspects (at most 4096; the oldest is forgotten first): add a worker that
 * missed epoch e (or move its epoch up); 1 if id is one; a valid
 * acknowledgement of epoch e by id clears it when e is above the epoch it
 * missed (returns 1 then). Neither a new lease nor a restart clears it. */
void rt_suspect_add(router *r, const char *id, uint64_t e);
int rt_suspect_is(const router *r, const char *id);
int rt_suspect_acked(router *r, const char *id, uint64_t e);
void rt_check_free(router *r);

#endif
