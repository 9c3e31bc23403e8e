/*
 * schema.h - the Redis schema of a deployment: the one place that knows key
 * names, TTLs, message formats, lease fields and the placement document
 * (docs/redis-schema.md explains the protocol; this header is its code).
 * router-svc, the expert-workers and the gateways' remote backend build every
 * key and message here, and write and read the placement document with the
 * writer and the reader below, side by side.
 *
 * Every key starts with the deployment's prefix P (default "moemesh"); <w> is
 * a worker id, <e> an epoch (decimal), <b> a load bucket (unix s / 10):
 *
 *     P:worker:<w>             hash, TTL = lease     a worker's lease (MOE_LEASE_* fields)
 *     P:workers                sorted set            worker ids, score = last heartbeat (ms)
 *     P:placement:active       string                the active epoch
 *     P:placement:pending      string                the epoch being prepared, if any
 *     P:placement:seq          string                the last epoch number used
 *     P:placement:<e>          string (JSON)         epoch e's document; TTL 1 h once superseded
 *     P:ack:<e>                set, TTL 1 h          workers that loaded their share of e
 *     P:events                 pub/sub channel       "pending <e>", "active <e>", "down <w>",
 *                                                    "tenants <v>"
 *     P:load:<b>               hash, TTL 10 min      field "L:E" = rows routed to that expert
 *     P:load:<b>:tenants       hash, TTL 10 min      field "<tenant>|L:E" = that tenant's rows
 *     P:scale:workers_wanted   string                the workers the load calls for
 *     P:drain                  set                   workers to empty (operators' requests)
 *     P:leader                 string, TTL 5 s       the leading router-svc replica's id
 *     P:tenant:<name>          hash                  a tenant's limits and key digests
 * (MOE_TENANT_F_*) P:tenants                set                   the tenant names
 *     P:tenants:version        string                a counter INCR'd by every tenant change
 *
 * A worked example, deployment "moemesh", worker "w0" at 10.0.0.5:50051:
 *
 *     char key[MOE_SCHEMA_KEY_MAX], msg[MOE_SCHEMA_KEY_MAX];
 *     moe_key_worker(key, sizeof key, "moemesh", "w0");      // "moemesh:worker:w0"
 *     moe_key_placement(key, sizeof key, "moemesh", 7);      // "moemesh:placement:7"
 *     moe_key_load(key, sizeof key, "moemesh",
 *                  moe_schema_load_bucket(moe_wall_ms()));   // "moemesh:load:172000000"
 *     moe_event ev = {.kind = MOE_EVENT_ACTIVE, .epoch = 7};
 *     moe_event_format(msg, sizeof msg, &ev);                // "active 7"
 *
 *     // router-svc writes epoch 7 (workers and replicas as indices) ...
 *     char *ids[] = {"w0"}, *addrs[] = {"10.0.0.5:50051"};
 *     int reps[] = {0};
 *     moe_pldoc_expert ex[] = {{.layer = 1, .expert = 3, .n_replicas = 1, .replicas = reps}};
 *     moe_pldoc d = {.epoch = 7, .model = "llama/4x8/64/1234", .n_workers = 1, .ids = ids,
 *                    .addrs = addrs, .n_experts = 1, .experts = ex};
 *     char *json;
 *     moe_pldoc_write(&d, &json, &err);
 *     // {"epoch":7,"model":"llama/4x8/64/1234","workers":{"w0":"10.0.0.5:50051"},
 *     //  "experts":[[1,3,["w0"]]]}
 *     // ... SET moemesh:placement:7 <json>; a worker or gateway reads it back:
 *     moe_pldoc *got;
 *     if (moe_pldoc_parse(&got, json, strlen(json), n_layer, n_expert, &err) == 0) ...
 *
 * Key builders take a prefix of at most MOE_SCHEMA_PREFIX_MAX bytes and ids
 * of at most MOE_SCHEMA_ID_MAX bytes (moe_schema_check_names at start-up), so
 * every key fits in MOE_SCHEMA_KEY_MAX bytes.
 */
#ifndef MOE_SCHEMA_H
#define MOE_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "moe/error.h"

/* ==== Constants ================================================================= */

#define MOE_SCHEMA_PREFIX_DEFAULT "moemesh" /* --prefix when none is given */
#define MOE_SCHEMA_PREFIX_MAX 200           /* bytes of a prefix */
#define MOE_SCHEMA_ID_MAX 200               /* bytes of a worker id */
#define MOE_SCHEMA_KEY_MAX 512              /* any key or event message fits (limits above) */

#define MOE_SCHEMA_LOAD_BUCKET_S 10         /* width of a P:load:<b> bucket, seconds */
#define MOE_SCHEMA_LOAD_TTL_S 600           /* P:load:<b> expires after (EXPIRE per flush) */
#define MOE_SCHEMA_PLACEMENT_OLD_TTL_S 3600 /* P:placement:<e> once superseded or abandoned */
#define MOE_SCHEMA_ACK_TTL_S 3600           /* P:ack:<e> */
#define MOE_SCHEMA_LEASE_MS_DEFAULT 3000    /* a worker's lease TTL (heartbeat: a third) */
#define MOE_SCHEMA_LEASE_MS_MIN 300         /* a lease TTL router-svc accepts: at least ... */
#define MOE_SCHEMA_LEASE_MS_MAX 60000 /* ... and at most (a dead worker's lease ends by then) */
#define MOE_SCHEMA_LEADER_TTL_MS_DEFAULT 5000 /* P:leader */

/* The prefix to use: p, or MOE_SCHEMA_PREFIX_DEFAULT when p is NULL or "". */
const char *moe_schema_prefix(const char *p);

/* Checks a prefix (non-empty, <= MOE_SCHEMA_PREFIX_MAX bytes) and, unless
 * id is NULL, a worker id (non-empty, <= MOE_SCHEMA_ID_MAX bytes): then no
 * key built from them is cut short. Returns 0 or MOE_EINVAL naming which. */
int moe_schema_check_names(const char *prefix, const char *id, moe_err *err);

/* The load bucket of a wall-clock time (ms since the epoch): unix seconds /
 * MOE_SCHEMA_LOAD_BUCKET_S. */
int64_t moe_schema_load_bucket(int64_t wall_ms);

/* ==== Keys ====================================================================== */
/* Each writes the key, NUL-terminated, into buf (cap bytes) and returns its
 * length, or MOE_ERANGE (buf then holds "") when it does not fit. */

int moe_key_worker(char *buf, size_t cap, const char *prefix, const char *id); /* P:worker:<w> */
int moe_key_workers(char *buf, size_t cap, const char *prefix);                /* P:workers */
int moe_key_placement(char *buf, size_t cap, const char *prefix, uint64_t e);  /* P:placement:<e> */
int moe_key_placement_active(char *buf, size_t cap, const char *prefix);  /* P:placement:active */
int moe_key_placement_pending(char *buf, size_t cap, const char *prefix); /* P:placement:pending */
int moe_key_placement_seq(char *buf, size_t cap, const char *prefix);     /* P:placement:seq */
int moe_key_ack(char *buf, size_t cap, const char *prefix, uint64_t e);   /* P:ack:<e> */
int moe_key_events(char *buf, size_t cap, const char *prefix);            /* P:events */
int moe_key_load(char *buf, size_t cap, const char *prefix, int64_t bucket); /* P:load:<b> */
/* P:load:<b>:tenants: field "<tenant>|L:E" = rows that tenant routed there */
int moe_key_load_tenants(char *buf, size_t cap, const char *prefix, int64_t bucket);
int moe_key_workers_wanted(char *buf, size_t cap, const char *prefix); /* P:scale:workers_wanted */
int moe_key_drain(char *buf, size_t cap, const char *prefix);          /* P:drain */
int moe_key_leader(char *buf, size_t cap, const char *prefix);         /* P:leader */
int moe_key_tenant(char *buf, size_t cap, const char *prefix, const char *name); /* P:tenant:<n> */
int moe_key_tenants(char *buf, size_t cap, const char *prefix);                  /* P:tenants */
int moe_key_tenants_version(char *buf, size_t cap, const char *prefix); /* P:tenants:version */
/* P:limit:{<n>}: the base of a tenant's counters (P:limit:{<n>}:r:<w>, :t:<w>, :d:<day>,
 * :c; built inside the limits script, docs/redis-schema.md "Limits"). The tenant is a
 * Redis Cluster hash tag: every key of one script run hashes to one slot (tenant names
 * hold no braces, moe_tenant_name_check) */
int moe_key_limit(char *buf, size_t cap, const char *prefix, const char *name);
int moe_key_gateways(char *buf, size_t cap, const char *prefix); /* P:gateways */

/* ==== Events (P:events) ========================================================= */

typedef enum moe_event_kind {
    MOE_EVENT_PENDING = 1, /* "pending <e>": epoch e is being prepared (load, then ack) */
    MOE_EVENT_ACTIVE,      /* "active <e>": epoch e is active */
    MOE_EVENT_DOWN,        /* "down <w>": worker w's lease expired */
    MOE_EVENT_TENANTS,     /* "tenants <v>": the tenants changed; P:tenants:version is v */
} moe_event_kind;

typedef struct moe_event {
    moe_event_kind kind;
    uint64_t epoch;     /* pending, active; tenants: the version */
    const char *worker; /* down: borrowed (from the caller, or the parsed message) */
} moe_event;

/* Writes ev's message into buf; its length, MOE_EINVAL (unknown kind, a down
 * event without a worker) or MOE_ERANGE (buf then holds ""). */
int moe_event_format(char *buf, size_t cap, const moe_event *ev);
/* Reads a message: 0 (ev->worker points into msg), or MOE_EFORMAT (another
 * kind, an epoch that is not decimal digits within uint64, no worker). */
int moe_event_parse(moe_event *ev, const char *msg);

/* ==== Fields ==================================================================== */

/* P:worker:<w>'s hash fields (docs/redis-schema.md, "Worker leases"). */
#define MOE_LEASE_ADDR "addr"                     /* host:port of its gRPC server */
#define MOE_LEASE_CAPACITY_BYTES "capacity_bytes" /* memory for expert weights */
#define MOE_LEASE_DEVICE "device"                 /* "cpu", "cuda:0" */
#define MOE_LEASE_DOMAIN "domain"                 /* failure domain */
#define MOE_LEASE_STATE "state"                   /* MOE_LEASE_STATE_* */
#define MOE_LEASE_HELD "held"                     /* experts loaded ("L:E-E,...;L:...") */
#define MOE_LEASE_EPOCH "epoch"                   /* newest epoch whose share it loaded */
#define MOE_LEASE_MODEL "model"                   /* the model's identity */
#define MOE_LEASE_N_LAYER "n_layer"
#define MOE_LEASE_N_EXPERT "n_expert"
#define MOE_LEASE_EXPERT_BYTES "expert_bytes" /* "L:bytes,...": moe_lease_layer_bytes_* */
#define MOE_LEASE_PID "pid"
#define MOE_LEASE_STARTED_MS "started_ms" /* wall clock, ms */
#define MOE_LEASE_LEASE_MS "lease_ms"     /* its lease TTL */
#define MOE_LEASE_STATE_STARTING "starting"
#define MOE_LEASE_STATE_READY "ready"
#define MOE_LEASE_STATE_DRAINING "draining"

/* P:tenant:<name>'s hash fields (docs/redis-schema.md, "Tenants"); numbers in
 * decimal, 0 (or absent) meaning unlimited. Written by moectl tenant (the admin
 * role), read by the gateways (mesh/tenant.h). */
#define MOE_TENANT_F_RPM "rpm"                   /* requests per minute */
#define MOE_TENANT_F_TPM "tpm"                   /* tokens per minute */
#define MOE_TENANT_F_CONCURRENCY "concurrency"   /* requests in flight */
#define MOE_TENANT_F_MAX_CONTEXT "max_context"   /* prompt + max_tokens of a request */
#define MOE_TENANT_F_DAILY_TOKENS "daily_tokens" /* tokens per UTC day */
#define MOE_TENANT_F_WEIGHT "weight"             /* fair-share weight, > 0 (default 1) */
#define MOE_TENANT_F_PRIORITY "priority"         /* "high", "normal" or "low" */
#define MOE_TENANT_F_CREATED_MS "created_ms"     /* wall clock, ms */
#define MOE_TENANT_F_KEY "key:" /* + a key's SHA-256 in hex: one key; value: added (ms) */

/* A lease's expert_bytes: "L:bytes,..." for each layer l with bytes[l] != 0
 * (n_layer entries; 0: not an MoE layer), ascending. Returns the length, or
 * MOE_ERANGE (buf then holds ""). */
int moe_lease_layer_bytes_format(char *buf, size_t cap, const uint64_t *bytes, int n_layer);
/* Reads expert_bytes into bytes (n_layer entries, 0 for layers not named):
 * each L < n_layer and named once, each byte count > 0, decimal digits, an
 * entry after each comma. 0 or MOE_EFORMAT (bytes then partly written). */
int moe_lease_layer_bytes_parse(uint64_t *bytes, int n_layer, const char *s);

/* Checks a lease's addr: "host:port", the host a name or IPv4 address
 * (letters, digits, '.', '-', '_') or an IPv6 address in brackets, the port
 * 1 to 65535 in decimal, at most 255 bytes in all. 0 or MOE_EFORMAT. */
int moe_lease_addr_check(const char *addr);

/* A P:load:<b> field: "L:E" (layer, expert). Returns the length, or MOE_ERANGE. */
int moe_expert_field_format(char *buf, size_t cap, int layer, int expert);
/* Reads "L:E" (decimal digits, each <= 2^20): 0 or MOE_EFORMAT. */
int moe_expert_field_parse(const char *s, int *layer, int *expert);

/* ==== The placement document (P:placement:<e>) ================================== */
/*
 *     {"epoch": 7, "model": "...",
 *      "workers": {"w0": "10.0.0.5:50051", "w1": "10.0.0.6:50051"},
 *      "experts": [[1, 0, ["w0", "w1"]], [1, 1, ["w1"]], ...]}
 *
 * Written by router-svc (moe_pldoc_write); read by the expert-workers (their
 * share), the gateways (the replicas of every expert) and a new leader
 * (moe_pldoc_parse). The reader checks everything: a malformed document is
 * an error, never a crash. A document names only workers with an assignment.
 */

typedef struct moe_pldoc_expert {
    int32_t layer, expert;
    int n_replicas;
    int *replicas; /* (n_replicas) indices into ids/addrs */
} moe_pldoc_expert;

typedef struct moe_pldoc {
    uint64_t epoch;
    char *model; /* "" when absent */
    int n_workers;
    char **ids;   /* (n_workers) */
    char **addrs; /* (n_workers) host:port */
    size_t n_experts;
    moe_pldoc_expert *experts; /* (n_experts) */
} moe_pldoc;

/* Writes d as one line of JSON into *out (malloc'd, NUL-terminated; the
 * caller frees it). d is borrowed for the call (a caller may fill it with
 * pointers it owns: the writer frees nothing); model NULL is written as "".
 * Workers and experts are written in d's order. It refuses what
 * moe_pldoc_parse would refuse: returns 0, MOE_EINVAL naming the problem (a
 * NULL or empty id, a NULL or empty address, an id listed twice, a replica
 * index out of range, a layer or expert outside 0..2^20, an epoch above
 * 2^53 - 1, too many workers or experts) or MOE_ENOMEM; *out is NULL on
 * failure. err may be NULL. */
int moe_pldoc_write(const moe_pldoc *d, char **out, moe_err *err);

/* Parses a document: the len bytes at json hold one JSON object and nothing
 * else but whitespace; "model", when present, is a string. Layers must be
 * < n_layer and experts < n_expert (pass 0 to skip the check). A worker named
 * twice in one expert's replicas counts once. Returns 0 (*out: free with
 * moe_pldoc_free), MOE_EFORMAT naming the problem, or MOE_ENOMEM (*out NULL). */
int moe_pldoc_parse(moe_pldoc **out, const char *json, size_t len, int n_layer, int n_expert,
                    moe_err *err);
/* Frees a parsed document (NULL is allowed). */
void moe_pldoc_free(moe_pldoc *d);
/* Index of a worker id, or -1. */
int moe_pldoc_worker(const moe_pldoc *d, const char *id);

/* ==== ACL roles (moectl redis-acl) ============================================== */
/*
 * Who may do what (docs/redis-schema.md, "Access control"): each role is a
 * Redis ACL user that may send only the commands its code sends, on only its
 * deployment's keys (read-only where it only reads) and channel. Every rule
 * set starts "resetkeys resetchannels -@all"; each (commands, keys) pair is a
 * selector (Redis >= 7.0), so a command is allowed on the keys of its own
 * pair only. For deployment "moemesh", the worker role:
 *
 *     resetkeys resetchannels -@all +multi +exec (+hset +pexpire +del ~moemesh:worker:*)
 *     (+zadd +zrem ~moemesh:workers) (+get %R~moemesh:placement:*)
 *     (+sismember %R~moemesh:drain) (+sadd +expire ~moemesh:ack:*)
 *     (+subscribe &moemesh:events)
 *
 * A worker may read P:drain (an operator's request) but never write it, nor
 * the placement, the leader lock, the scale signal or the load.
 */

typedef enum moe_acl_role {
    MOE_ACL_ROLE_ROUTER,  /* router-svc */
    MOE_ACL_ROLE_WORKER,  /* the expert-workers (one user for all of them) */
    MOE_ACL_ROLE_GATEWAY, /* gateways, and moectl runs that follow the placement */
    MOE_ACL_ROLE_ADMIN,   /* operators: drain workers, inspect the placement */
    MOE_ACL_ROLE_COUNT
} moe_acl_role;

/* "router", "worker", "gateway", "admin" (NULL for another value). */
const char *moe_acl_role_name(moe_acl_role role);

/* Writes role's rules for deployment prefix into buf (cap bytes,
 * NUL-terminated), without a user name or a password; with allow_select, SELECT
 * is allowed too (for URLs that name a database other than 0). Returns the
 * length, MOE_EINVAL (an unknown role, or a prefix that a rule would read as
 * more than itself: a byte that is a space or a control character, or one of
 * * ? [ ] \ ( ) " ') or MOE_ERANGE (buf then holds ""). */
int moe_acl_rules(char *buf, size_t cap, const char *prefix, moe_acl_role role, int allow_select);

/* ==== Reading from Redis ======================================================== */

typedef struct moe_rlink moe_rlink;
typedef struct redisReply redisReply;

/* A decimal epoch in a reply (GET of P:placement:active, pending or seq);
 * 1 if the reply is one, 0 if it is absent or anything else. */
int moe_reply_epoch(const redisReply *r, uint64_t *e);
/* GET key (P:placement:active, pending or seq) as an epoch: 0 (*e set),
 * MOE_ENOTFOUND (absent or not an epoch) or MOE_EUNAVAIL (Redis away, or an
 * error reply such as LOADING or NOAUTH: the key's state is unknown). */
int moe_pldoc_get_epoch(moe_rlink *l, const char *key, uint64_t *e);
/* Reads and parses <prefix>:placement:<e>. Returns 0, MOE_EUNAVAIL (Redis
 * away, or an error reply such as LOADING or WRONGTYPE), MOE_ENOTFOUND (no
 * such document), MOE_ERANGE (prefix too long), or what moe_pldoc_parse
 * returns. */
int moe_pldoc_fetch(moe_pldoc **out, moe_rlink *l, const char *prefix, uint64_t e, int n_layer,
                    int n_expert, moe_err *err);

#endif
