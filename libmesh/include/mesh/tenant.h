/*
 * tenant.h - API keys and tenants: who may call a gateway, and the limits
 * each caller gets (docs/security.md, "API keys and tenants";
 * docs/redis-schema.md, "Tenants").
 *
 * A key is "moe-" and 43 characters of base64url (32 random bytes). It is
 * shown once, when it is made (moectl tenant add), and stored nowhere: only
 * its SHA-256 is kept, in Redis or in a tenants file. A tenant has a name,
 * limits, and up to MOE_TENANT_KEYS_MAX keys (several, so that a key can be
 * rotated: add the new one, move the clients, revoke the old one).
 *
 * Three layers:
 *   - keys: moe_tenant_key_new, moe_tenant_key_digest (SHA-256), hex, redaction;
 *   - a tenant set (moe_tenant_set): tenants and a hash table from key digest
 *     to tenant, filled by moe_tenant_set_add, from a tenants file
 *     (moe_tenant_set_parse) or from Redis (moe_tenants_redis_load); never
 *     changed once a store holds it;
 *   - the store (moe_tenants): the current set, replaced whole when its
 *     source changes (a thread re-reads the file, or polls the version in
 *     Redis every 250 ms), looked up by any thread without waiting on the
 *     source: a key costs one SHA-256 and one hash-table probe, known or not,
 *     and never a Redis command.
 *
 * A gateway:
 *
 *     moe_tenants *ts;
 *     moe_tenants_params p = {.redis = "redis://gw@10.0.0.2:6379", .prefix = "moemesh"};
 *     if (moe_tenants_open(&ts, &p, &err) < 0) ... err.msg (a bad file: names the field) ...
 *     moe_tenant t;
 *     switch (moe_tenants_auth(ts, key, strlen(key), &t)) {
 *     case 0: ... t.name, t.lim.rpm ...; break;
 *     case MOE_ENOTFOUND: ... 401 ...; break;
 *     case MOE_EUNAVAIL: ... 503: not loaded yet ...; break;
 *     }
 *     moe_tenants_close(ts);
 *
 * A tenants file (for a deployment without Redis; --tenants FILE):
 *
 *     {"tenants": [
 *       {"name": "acme", "key_sha256": ["5e88...64 hex digits"], "rpm": 600, "tpm": 100000,
 *        "concurrency": 8, "max_context": 8192, "daily_tokens": 0, "weight": 2,
 *        "priority": "high"},
 *       {"name": "dev", "keys": ["moe-..."]}]}
 *
 * "keys" holds keys in clear, hashed on load: a convenience for development;
 * a deployment's file should hold only "key_sha256" (moectl tenant hash).
 * Every field but "name" is optional; an unknown field is an error (a typo
 * in a limit must not pass silently).
 */
#ifndef MOE_TENANT_H
#define MOE_TENANT_H

#include <stddef.h>
#include <stdint.h>

#include "moe/error.h"

/* ==== Constants ================================================================= */

#define MOE_TENANT_NAME_MAX 64 /* bytes of a name: [A-Za-z0-9][A-Za-z0-9._-]* */
#define MOE_TENANT_KEYS_MAX 16 /* keys of one tenant */
#define MOE_TENANTS_MAX 100000 /* tenants of one set */
#define MOE_TENANT_DIGEST 32   /* a key's SHA-256 */
#define MOE_TENANT_KEY_PREFIX "moe-"
#define MOE_TENANT_KEY_LEN 47  /* "moe-" + 43 base64url characters */
#define MOE_TENANT_KEY_MAX 256 /* a presented key longer than this is refused unhashed */
#define MOE_TENANT_LIMIT_MAX 9007199254740992LL /* 2^53: any limit is below */
#define MOE_TENANT_WEIGHT_MAX 1e6
#define MOE_TENANTS_FILE_MAX (64u << 20) /* bytes of a tenants file */
#define MOE_TENANTS_POLL_MS 250          /* the store checks its source this often */

typedef enum moe_tenant_priority {
    MOE_TENANT_PRIORITY_HIGH,
    MOE_TENANT_PRIORITY_NORMAL, /* the default */
    MOE_TENANT_PRIORITY_LOW,
} moe_tenant_priority;

/* "high", "normal", "low" (NULL for another value). */
const char *moe_tenant_priority_name(moe_tenant_priority p);
/* Reads a priority's name: 0 or MOE_EINVAL. */
int moe_tenant_priority_parse(const char *s, moe_tenant_priority *out);

/* What a tenant may use; 0 means unlimited (part of issue 15 enforces them). */
typedef struct moe_tenant_limits {
    int64_t rpm;          /* requests per minute */
    int64_t tpm;          /* tokens (prompt + completion) per minute */
    int64_t concurrency;  /* requests in flight */
    int64_t max_context;  /* prompt + max_tokens of one request */
    int64_t daily_tokens; /* tokens per UTC day */
    double weight;        /* fair-share weight, > 0 */
    moe_tenant_priority priority;
} moe_tenant_limits;

/* Every limit 0 (unlimited), weight 1, priority normal. */
moe_tenant_limits moe_tenant_limits_default(void);

/* Checks limits: each count within 0..MOE_TENANT_LIMIT_MAX, the weight
 * finite within (0, MOE_TENANT_WEIGHT_MAX], a known priority. 0 or
 * MOE_EINVAL naming the field. */
int moe_tenant_limits_check(const moe_tenant_limits *lim, moe_err *err);

/* A tenant as lookups return it (a copy; its key digests stay in the set). */
typedef struct moe_tenant {
    char name[MOE_TENANT_NAME_MAX + 1];
    moe_tenant_limits lim;
    int n_keys;
} moe_tenant;

/* Checks a name: 1 to MOE_TENANT_NAME_MAX bytes, [A-Za-z0-9] then
 * [A-Za-z0-9._-] (it goes into Redis keys, log lines and metric labels).
 * 0 or MOE_EINVAL. */
int moe_tenant_name_check(const char *name, moe_err *err);

/* ==== Keys ====================================================================== */

/* A new key, "moe-" + base64url of 32 bytes from getrandom(2), into out
 * (NUL-terminated). 0 or MOE_EIO (no randomness: nothing is written). */
int moe_tenant_key_new(char out[MOE_TENANT_KEY_LEN + 1], moe_err *err);
/* The SHA-256 of a key's len bytes. */
void moe_tenant_key_digest(const char *key, size_t len, uint8_t out[MOE_TENANT_DIGEST]);
/* A digest as 64 lowercase hex digits and a NUL. */
void moe_tenant_digest_hex(const uint8_t d[MOE_TENANT_DIGEST], char out[65]);
/* Reads 64 hex digits (either case, nothing else): 0 or MOE_EFORMAT. */
int moe_tenant_digest_parse(const char *hex, uint8_t out[MOE_TENANT_DIGEST]);
/* What may be shown of a presented key (an error message, never a log):
 * its first 6 and last 4 characters around "***" ("moe-ab***wxyz"), only
 * "***" for a key shorter than 16 bytes; bytes outside printable ASCII
 * become '?'. buf: at least 16 bytes. */
void moe_tenant_key_redact(const char *key, size_t len, char *buf, size_t cap);

/* ==== Tenant sets =============================================================== */

typedef struct moe_tenant_set moe_tenant_set;

/* An empty set (version 0). 0 or MOE_ENOMEM. */
int moe_tenant_set_create(moe_tenant_set **out);
void moe_tenant_set_free(moe_tenant_set *s);

/* Adds a tenant (copied) with its n_keys key digests (copied; t->n_keys is
 * ignored). Returns 0, MOE_EINVAL naming the problem (a bad name or limits,
 * a name already in the set, a digest already in the set, more than
 * MOE_TENANT_KEYS_MAX keys), MOE_ENOSPC (MOE_TENANTS_MAX tenants) or
 * MOE_ENOMEM; the set is unchanged on failure. */
int moe_tenant_set_add(moe_tenant_set *s, const moe_tenant *t, const uint8_t (*digests)[32],
                       int n_keys, moe_err *err);

/* The tenants, in the order they were added: i in 0..count-1. */
int moe_tenant_set_count(const moe_tenant_set *s);
const moe_tenant *moe_tenant_set_at(const moe_tenant_set *s, int i);
/* Digest k (0..n_keys-1) of tenant i. */
const uint8_t *moe_tenant_set_key(const moe_tenant_set *s, int i, int k);
/* Key digests in the set. */
int moe_tenant_set_n_keys(const moe_tenant_set *s);

/* The tenant holding a key digest, or NULL: one probe of the table, each
 * candidate compared in constant time (CRYPTO_memcmp). Borrowed from s. */
const moe_tenant *moe_tenant_set_find_key(const moe_tenant_set *s,
                                          const uint8_t digest[MOE_TENANT_DIGEST]);
/* The tenant of that name, or NULL. Borrowed from s. */
const moe_tenant *moe_tenant_set_find_name(const moe_tenant_set *s, const char *name);

/* The version of the source it was read from (P:tenants:version; 0 for a file). */
uint64_t moe_tenant_set_version(const moe_tenant_set *s);
void moe_tenant_set_set_version(moe_tenant_set *s, uint64_t v);

/* Parses a tenants file's len bytes (see the top of this header). Returns 0
 * (*out: free with moe_tenant_set_free), MOE_EFORMAT with err naming the
 * entry and the field ("tenants[2] (acme): \"rpm\" must be an integer from
 * 0 to 2^53"), MOE_EINVAL (a duplicate name or key) or MOE_ENOMEM. */
int moe_tenant_set_parse(moe_tenant_set **out, const char *json, size_t len, moe_err *err);
/* Reads and parses the file at path (at most MOE_TENANTS_FILE_MAX bytes);
 * errors start with the path. MOE_EIO when it cannot be read. */
int moe_tenant_set_load_file(moe_tenant_set **out, const char *path, moe_err *err);

/* ==== The store ================================================================= */

typedef struct moe_tenants moe_tenants;

typedef struct moe_tenants_params {
    const char *file;   /* a tenants file, re-read when it changes; or NULL */
    const char *redis;  /* a Redis URL (mesh/rlink.h: the password from
                           moe_rlink_password_file); or NULL. Exactly one of the two */
    const char *prefix; /* the deployment's key prefix (NULL: the default) */
    int poll_ms;        /* how often the source is checked (0: MOE_TENANTS_POLL_MS) */
    const char *who;    /* the log component (NULL: "tenants") */
} moe_tenants_params;

/* Opens a store and starts its thread. A file is read now: a missing or
 * malformed file is an error (MOE_EIO, MOE_EFORMAT, MOE_EINVAL; err names
 * the path and the field) and nothing is started. Redis is read once now;
 * when it does not answer the store starts anyway, and lookups answer
 * MOE_EUNAVAIL until the thread's first load. Later, a file that no longer
 * parses, or Redis away, keeps the last set (logged once, counted). */
int moe_tenants_open(moe_tenants **out, const moe_tenants_params *p, moe_err *err);
/* A store that holds set (taken; NULL: none loaded yet) and has no source
 * or thread (tests). 0 or MOE_ENOMEM (set freed). */
int moe_tenants_open_set(moe_tenants **out, moe_tenant_set *set);
/* Stops the thread and frees the store. NULL is allowed. */
void moe_tenants_close(moe_tenants *ts);

/* Looks up a presented key (len bytes, not NUL-terminated): its SHA-256
 * (skipped for an empty key or one longer than MOE_TENANT_KEY_MAX), one
 * probe of the current set under a read lock. Returns 0 (*out: a copy of
 * the tenant), MOE_ENOTFOUND (no tenant has that key) or MOE_EUNAVAIL (no
 * set loaded yet). Any thread; never waits on the source. */
int moe_tenants_auth(moe_tenants *ts, const char *key, size_t len, moe_tenant *out);

/* Runs fn on the current set under the read lock (fn must not keep s or
 * call back into ts); returns fn's value, or MOE_EUNAVAIL (none loaded). */
int moe_tenants_with_set(moe_tenants *ts, int (*fn)(void *ud, const moe_tenant_set *s), void *ud);

typedef struct moe_tenants_stats {
    int loaded;               /* a set has been loaded */
    int n_tenants, n_keys;    /* in the current set */
    uint64_t version;         /* its version (P:tenants:version) */
    uint64_t reloads;         /* sets loaded (the first included) */
    uint64_t source_failures; /* checks that found Redis away or the file unreadable */
    uint64_t invalid;         /* files that did not parse; tenants in Redis skipped as malformed */
    int source_up;            /* the last check reached the source */
    int64_t synced_ms;        /* monotonic ms of the last check that reached it (0: never) */
} moe_tenants_stats;
void moe_tenants_get_stats(moe_tenants *ts, moe_tenants_stats *st);

/* ==== Redis (docs/redis-schema.md, "Tenants") ==================================== */

typedef struct moe_rlink moe_rlink;

/* GET P:tenants:version: 0 (*v; 0 when absent) or MOE_EUNAVAIL (Redis away
 * or an error reply). */
int moe_tenants_redis_version(moe_rlink *l, const char *prefix, uint64_t *v);
/* Reads every tenant: the version, SMEMBERS P:tenants, one pipelined HGETALL
 * per name, the version again (read again, up to 3 times, while it moved, so
 * the set is one version's). A tenant whose hash is missing or malformed is
 * skipped, logged and counted in *skipped (may be NULL). Returns 0 (*out,
 * with its version), MOE_EUNAVAIL, MOE_ERANGE (more than MOE_TENANTS_MAX) or
 * MOE_ENOMEM. */
int moe_tenants_redis_load(moe_tenant_set **out, moe_rlink *l, const char *prefix, int *skipped,
                           moe_err *err);

/* The writers (moectl tenant, the admin role). Each change is one
 * MULTI/EXEC that also INCRs P:tenants:version and publishes "tenants <v>"
 * on P:events; changes to an existing tenant WATCH its hash first, so none
 * lands on a tenant deleted meanwhile. They return 0, MOE_ENOTFOUND (no such
 * tenant, or key), MOE_EINVAL (the name exists, a key prefix that fits
 * several keys, bad limits), MOE_ENOSPC (the tenant has MOE_TENANT_KEYS_MAX
 * keys), MOE_EUNAVAIL (Redis away; an error reply such as NOPERM, in err)
 * or MOE_EIO (the tenant changed under us three times). */

/* A new tenant named t->name with t->lim and one key. */
int moe_tenant_redis_create(moe_rlink *l, const char *prefix, const moe_tenant *t,
                            const uint8_t digest[MOE_TENANT_DIGEST], moe_err *err);
/* One more key for an existing tenant. */
int moe_tenant_redis_add_key(moe_rlink *l, const char *prefix, const char *name,
                             const uint8_t digest[MOE_TENANT_DIGEST], moe_err *err);
/* Deletes a tenant and its keys. */
int moe_tenant_redis_delete(moe_rlink *l, const char *prefix, const char *name, moe_err *err);
/* Deletes the one key whose hex digest starts with hex_prefix (at least 8
 * digits); its full hex goes to removed (may be NULL). */
int moe_tenant_redis_delete_key(moe_rlink *l, const char *prefix, const char *name,
                                const char *hex_prefix, char removed[65], moe_err *err);

/* Which limits moe_tenant_redis_set_limits writes. */
enum {
    MOE_TENANT_LIM_RPM = 1 << 0,
    MOE_TENANT_LIM_TPM = 1 << 1,
    MOE_TENANT_LIM_CONCURRENCY = 1 << 2,
    MOE_TENANT_LIM_MAX_CONTEXT = 1 << 3,
    MOE_TENANT_LIM_DAILY_TOKENS = 1 << 4,
    MOE_TENANT_LIM_WEIGHT = 1 << 5,
    MOE_TENANT_LIM_PRIORITY = 1 << 6,
    MOE_TENANT_LIM_ALL = (1 << 7) - 1,
};
/* Writes the limits of lim named in mask (MOE_TENANT_LIM_*) to a tenant. */
int moe_tenant_redis_set_limits(moe_rlink *l, const char *prefix, const char *name,
                                const moe_tenant_limits *lim, unsigned mask, moe_err *err);

#endif
