/* tenant_redis.c - tenants in Redis (docs/redis-schema.md, "Tenants"): the
 * gateways' reader and moectl's writers, side by side (see mesh/tenant.h).
 *
 *     P:tenant:<name>     hash: rpm, tpm, concurrency, max_context, daily_tokens,
 *                         weight, priority, created_ms, key:<sha256 hex> = added (ms)
 *     P:tenants           set of names
 *     P:tenants:version   counter, INCR'd in the MULTI of every change;
 *                         then "tenants <v>" is published on P:events
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "mesh/tenant.h"
#include "moe/log.h"
#include "svc/clock.h"

#define WHO "tenants"
#define PIPE_CHUNK 512 /* HGETALLs per pipeline */
#define KEY_F_LEN 4    /* strlen(MOE_TENANT_F_KEY) */

/* ==== Values ====================================================================== */

/* A decimal count 0..2^53 (digits only). */
static int parse_count(const char *s, int64_t *out) {
    if (!*s || strlen(s) > 16) return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    if (v > MOE_TENANT_LIMIT_MAX) return -1;
    *out = v;
    return 0;
}

/* Reads one field of a tenant's hash into t / digests; 0, -1 (malformed) or
 * -2 (a key beyond MOE_TENANT_KEYS_MAX). */
static int read_field(const char *f, const char *v, moe_tenant *t, uint8_t (*kd)[32], int *nk) {
    moe_tenant_limits *lim = &t->lim;
    if (!strncmp(f, MOE_TENANT_F_KEY, KEY_F_LEN)) {
        if (*nk >= MOE_TENANT_KEYS_MAX) return -2;
        return moe_tenant_digest_parse(f + KEY_F_LEN, kd[(*nk)++]) < 0 ? -1 : 0;
    }
    if (!strcmp(f, MOE_TENANT_F_RPM)) return parse_count(v, &lim->rpm);
    if (!strcmp(f, MOE_TENANT_F_TPM)) return parse_count(v, &lim->tpm);
    if (!strcmp(f, MOE_TENANT_F_CONCURRENCY)) return parse_count(v, &lim->concurrency);
    if (!strcmp(f, MOE_TENANT_F_MAX_CONTEXT)) return parse_count(v, &lim->max_context);
    if (!strcmp(f, MOE_TENANT_F_DAILY_TOKENS)) return parse_count(v, &lim->daily_tokens);
    if (!strcmp(f, MOE_TENANT_F_PRIORITY)) return moe_tenant_priority_parse(v, &lim->priority);
    if (!strcmp(f, MOE_TENANT_F_WEIGHT)) {
        char *end;
        errno = 0;
        lim->weight = strtod(v, &end);
        return *v && !*end && !errno && lim->weight > 0 && lim->weight <= MOE_TENANT_WEIGHT_MAX
                   ? 0
                   : -1;
    }
    return 0; /* created_ms, and fields a later version may add */
}

/* ==== Reading ====================================================================== */

int moe_tenants_redis_version(moe_rlink *l, const char *prefix, uint64_t *v) {
    char key[MOE_SCHEMA_KEY_MAX];
    *v = 0;
    if (moe_key_tenants_version(key, sizeof key, prefix) < 0) return MOE_ERANGE;
    redisReply *r = moe_rlink_cmd(l, "GET %s", key);
    if (!r) return MOE_EUNAVAIL;
    int rc = 0;
    if (r->type != REDIS_REPLY_NIL && !moe_reply_epoch(r, v)) {
        static int logged;
        if (!__atomic_exchange_n(&logged, 1, __ATOMIC_RELAXED))
            moe_log(MOE_LOG_WARN, WHO, "%s: %s", key,
                    r->type == REDIS_REPLY_ERROR ? r->str : "not a decimal counter");
        rc = MOE_EUNAVAIL;
    }
    freeReplyObject(r);
    return rc;
}

typedef struct load_ctx {
    moe_tenant_set *s;
    char **names; /* (n) */
    size_t base;  /* names[base + i] is the i-th reply of this pipeline */
    int skipped, oom;
    uint8_t (*kd)[32];
} load_ctx;

static void skip(load_ctx *c, const char *name, const char *why) {
    moe_log(MOE_LOG_WARN, WHO, "tenant %s in Redis skipped (its keys do not work): %s", name, why);
    c->skipped++;
}

static void on_hash(void *ud, size_t i, redisReply *r) {
    load_ctx *c = ud;
    const char *name = c->names[c->base + i];
    if (r->type == REDIS_REPLY_ERROR) return skip(c, name, r->str);
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) return skip(c, name, "not a hash");
    if (r->elements == 0) return skip(c, name, "listed in P:tenants without a hash");
    moe_tenant t = {.lim = moe_tenant_limits_default()};
    snprintf(t.name, sizeof t.name, "%s", name);
    int nk = 0;
    for (size_t k = 0; k < r->elements; k += 2) {
        const redisReply *f = r->element[k], *v = r->element[k + 1];
        char why[160];
        const int rf = f->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING
                           ? read_field(f->str, v->str, &t, c->kd, &nk)
                           : -1;
        if (rf < 0) {
            if (rf == -2)
                snprintf(why, sizeof why, "more than %d keys", MOE_TENANT_KEYS_MAX);
            else
                snprintf(why, sizeof why, "field \"%.80s\" is malformed",
                         f->type == REDIS_REPLY_STRING ? f->str : "?");
            return skip(c, name, why);
        }
    }
    moe_err err;
    const int rc = moe_tenant_set_add(c->s, &t, (const uint8_t(*)[32])c->kd, nk, &err);
    if (rc == MOE_ENOMEM) c->oom = 1;
    if (rc < 0) skip(c, name, err.msg);
}

/* Reads the tenants of one SMEMBERS into s. 0, MOE_EUNAVAIL, MOE_ERANGE, MOE_ENOMEM. */
static int load_once(moe_tenant_set *s, moe_rlink *l, const char *prefix, load_ctx *c,
                     moe_err *err) {
    char key[MOE_SCHEMA_KEY_MAX];
    moe_key_tenants(key, sizeof key, prefix);
    redisReply *m = moe_rlink_cmd(l, "SMEMBERS %s", key);
    if (!m) return moe_err_set(err, MOE_EUNAVAIL, "Redis unavailable");
    int rc = 0;
    if (m->type != REDIS_REPLY_ARRAY) {
        rc = moe_err_set(err, MOE_EUNAVAIL, "SMEMBERS %s: %s", key,
                         m->type == REDIS_REPLY_ERROR ? m->str : "not a set");
        goto out;
    }
    if (m->elements > MOE_TENANTS_MAX) {
        rc = moe_err_set(err, MOE_ERANGE, "%s has %zu members (at most %d)", key, m->elements,
                         MOE_TENANTS_MAX);
        goto out;
    }
    c->s = s;
    c->names = calloc(m->elements + 1, sizeof *c->names);
    if (!c->names) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->elements; i++) {
        const redisReply *e = m->element[i];
        if (e->type != REDIS_REPLY_STRING || moe_tenant_name_check(e->str, NULL) < 0) {
            skip(c, "(a member that is not a name)", "a tenant name is [A-Za-z0-9._-]");
            continue;
        }
        c->names[n++] = e->str; /* borrowed from m */
    }
    for (size_t at = 0; at < n && rc == 0; at += PIPE_CHUNK) {
        const size_t k = n - at < PIPE_CHUNK ? n - at : PIPE_CHUNK;
        if (moe_rlink_begin(l) < 0) {
            rc = moe_err_set(err, MOE_EUNAVAIL, "Redis unavailable");
            break;
        }
        for (size_t i = 0; i < k; i++) {
            moe_key_tenant(key, sizeof key, prefix, c->names[at + i]);
            moe_rlink_append(l, "HGETALL %s", key);
        }
        c->base = at;
        if (moe_rlink_flush(l, on_hash, c) < 0)
            rc = moe_err_set(err, MOE_EUNAVAIL, "Redis unavailable");
        else if (c->oom)
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    free(c->names);
    c->names = NULL;
out:
    freeReplyObject(m);
    return rc;
}

int moe_tenants_redis_load(moe_tenant_set **out, moe_rlink *l, const char *prefix, int *skipped,
                           moe_err *err) {
    *out = NULL;
    if (skipped) *skipped = 0;
    uint8_t(*kd)[32] = malloc(MOE_TENANT_KEYS_MAX * sizeof *kd);
    if (!kd) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        uint64_t v1, v2;
        moe_tenant_set *s;
        load_ctx c = {.kd = kd};
        if ((rc = moe_tenants_redis_version(l, prefix, &v1)) < 0) {
            moe_err_set(err, rc, "Redis unavailable");
            break;
        }
        if ((rc = moe_tenant_set_create(&s)) < 0) {
            moe_err_set(err, rc, "out of memory");
            break;
        }
        if ((rc = load_once(s, l, prefix, &c, err)) < 0 ||
            (rc = moe_tenants_redis_version(l, prefix, &v2)) < 0) {
            if (rc == MOE_EUNAVAIL) moe_err_set(err, rc, "Redis unavailable");
            moe_tenant_set_free(s);
            break;
        }
        /* a change during the read: read again; after 3, keep v1's number (the
         * data is at least that new), so the next check sees v2 and reloads */
        if (v1 != v2 && attempt < 2) {
            moe_tenant_set_free(s);
            continue;
        }
        moe_tenant_set_set_version(s, v1);
        if (skipped) *skipped = c.skipped;
        *out = s;
        break;
    }
    OPENSSL_cleanse(kd, MOE_TENANT_KEYS_MAX * sizeof *kd);
    free(kd);
    return rc;
}

/* ==== Writing (moectl tenant) ======================================================= */

typedef struct txn {
    moe_rlink *l;
    moe_err *err;
    const char *prefix, *name;
    char tkey[MOE_SCHEMA_KEY_MAX], skey[MOE_SCHEMA_KEY_MAX], vkey[MOE_SCHEMA_KEY_MAX];
} txn;

/* One command; its reply, or NULL with err set (Redis away, or an error
 * reply such as NOPERM, which is freed). */
static redisReply *cmdv(txn *x, int argc, const char **argv) {
    redisReply *r = moe_rlink_cmdargv(x->l, argc, argv, NULL);
    if (!r) {
        moe_err_set(x->err, MOE_EUNAVAIL, "Redis is unavailable");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        moe_err_set(x->err, MOE_EUNAVAIL, "Redis refused %s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}
#define CMD(x, ...)                                                                                \
    cmdv((x), (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),                 \
         (const char *[]){__VA_ARGS__})

/* A command whose reply does not matter beyond success: 0 or MOE_EUNAVAIL. */
static int run(txn *x, int argc, const char **argv) {
    redisReply *r = cmdv(x, argc, argv);
    if (!r) return MOE_EUNAVAIL;
    freeReplyObject(r);
    return 0;
}
#define RUN(x, ...)                                                                                \
    run((x), (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),                  \
        (const char *[]){__VA_ARGS__})

/* Checks the name, builds the keys, WATCHes the tenant's hash. */
static int txn_watch(txn *x, moe_rlink *l, const char *prefix, const char *name, moe_err *err) {
    *x = (txn){.l = l, .err = err, .prefix = prefix, .name = name};
    int rc = moe_tenant_name_check(name, err);
    if (rc < 0) return rc;
    if (moe_key_tenant(x->tkey, sizeof x->tkey, prefix, name) < 0 ||
        moe_key_tenants(x->skey, sizeof x->skey, prefix) < 0 ||
        moe_key_tenants_version(x->vkey, sizeof x->vkey, prefix) < 0)
        return moe_err_set(err, MOE_ERANGE, "the prefix is too long");
    return RUN(x, "WATCH", x->tkey);
}

/* Whether the tenant's hash exists: 1, 0, or MOE_EUNAVAIL. */
static int txn_exists(txn *x) {
    redisReply *r = CMD(x, "EXISTS", x->tkey);
    if (!r) return MOE_EUNAVAIL;
    const int e = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    return e;
}

/* Ends a WATCH without a change; returns rc. */
static int txn_abandon(txn *x, int rc) {
    redisReply *r = moe_rlink_cmd(x->l, "UNWATCH");
    if (r) freeReplyObject(r);
    return rc;
}

/* A failure after MULTI: DISCARD; returns rc. */
static int txn_discard(txn *x, int rc) {
    redisReply *r = moe_rlink_cmd(x->l, "DISCARD");
    if (r) freeReplyObject(r);
    return rc;
}

/* After MULTI and the change's commands: INCR the version, EXEC, publish
 * "tenants <v>". 0, 1 when the WATCHed hash changed (nothing was done: try
 * again), or MOE_EUNAVAIL (DISCARD sent). */
static int txn_commit(txn *x) {
    if (RUN(x, "INCR", x->vkey) < 0) return txn_discard(x, MOE_EUNAVAIL);
    redisReply *r = CMD(x, "EXEC");
    if (!r) return MOE_EUNAVAIL;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return 1;
    }
    int rc = 0;
    uint64_t v = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        rc = moe_err_set(x->err, MOE_EUNAVAIL, "EXEC: an unexpected reply");
    } else {
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_ERROR)
                rc = moe_err_set(x->err, MOE_EUNAVAIL, "Redis refused a command of the change: %s",
                                 r->element[i]->str);
        const redisReply *last = r->element[r->elements - 1];
        if (last->type == REDIS_REPLY_INTEGER) v = (uint64_t)last->integer;
    }
    freeReplyObject(r);
    if (rc < 0) return rc;
    char ev[MOE_SCHEMA_KEY_MAX], chan[MOE_SCHEMA_KEY_MAX];
    const moe_event e = {.kind = MOE_EVENT_TENANTS, .epoch = v};
    if (moe_event_format(ev, sizeof ev, &e) > 0 &&
        moe_key_events(chan, sizeof chan, x->prefix) > 0) {
        redisReply *p = moe_rlink_cmd(x->l, "PUBLISH %s %s", chan, ev); /* advisory */
        if (p) freeReplyObject(p);
    }
    return 0;
}

/* The HSET fields of the limits in mask: appended to argv (values in vals). */
static void limit_args(const moe_tenant_limits *lim, unsigned mask, char vals[7][32],
                       const char **argv, int *argc) {
    const struct {
        unsigned bit;
        const char *field;
        int64_t v;
    } n[] = {{MOE_TENANT_LIM_RPM, MOE_TENANT_F_RPM, lim->rpm},
             {MOE_TENANT_LIM_TPM, MOE_TENANT_F_TPM, lim->tpm},
             {MOE_TENANT_LIM_CONCURRENCY, MOE_TENANT_F_CONCURRENCY, lim->concurrency},
             {MOE_TENANT_LIM_MAX_CONTEXT, MOE_TENANT_F_MAX_CONTEXT, lim->max_context},
             {MOE_TENANT_LIM_DAILY_TOKENS, MOE_TENANT_F_DAILY_TOKENS, lim->daily_tokens}};
    int k = 0;
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++) {
        if (!(mask & n[i].bit)) continue;
        snprintf(vals[k], 32, "%" PRId64, n[i].v);
        argv[(*argc)++] = n[i].field;
        argv[(*argc)++] = vals[k++];
    }
    if (mask & MOE_TENANT_LIM_WEIGHT) {
        snprintf(vals[k], 32, "%.9g", lim->weight);
        argv[(*argc)++] = MOE_TENANT_F_WEIGHT;
        argv[(*argc)++] = vals[k++];
    }
    if (mask & MOE_TENANT_LIM_PRIORITY) {
        argv[(*argc)++] = MOE_TENANT_F_PRIORITY;
        argv[(*argc)++] = moe_tenant_priority_name(lim->priority);
    }
}

#define TRIES 3 /* a WATCHed hash that changed: tried again */

int moe_tenant_redis_create(moe_rlink *l, const char *prefix, const moe_tenant *t,
                            const uint8_t digest[MOE_TENANT_DIGEST], moe_err *err) {
    int rc = moe_tenant_limits_check(&t->lim, err);
    if (rc < 0) return rc;
    char now[32], kf[80], hex[65];
    snprintf(now, sizeof now, "%" PRId64, moe_wall_ms());
    moe_tenant_digest_hex(digest, hex);
    snprintf(kf, sizeof kf, "%s%s", MOE_TENANT_F_KEY, hex);
    for (int i = 0; i < TRIES; i++) {
        txn x;
        if ((rc = txn_watch(&x, l, prefix, t->name, err)) < 0) return rc;
        if ((rc = txn_exists(&x)) != 0)
            return rc < 0 ? rc
                          : txn_abandon(&x, moe_err_set(err, MOE_EINVAL,
                                                        "tenant %s exists (--new-key adds a key "
                                                        "to it; set-limits changes its limits)",
                                                        t->name));
        const char *argv[24] = {"HSET", x.tkey};
        char vals[7][32];
        int argc = 2;
        limit_args(&t->lim, MOE_TENANT_LIM_ALL, vals, argv, &argc);
        argv[argc++] = MOE_TENANT_F_CREATED_MS;
        argv[argc++] = now;
        argv[argc++] = kf;
        argv[argc++] = now;
        if ((rc = RUN(&x, "MULTI")) < 0) return rc;
        if ((rc = run(&x, argc, argv)) < 0 || (rc = RUN(&x, "SADD", x.skey, t->name)) < 0)
            return txn_discard(&x, rc);
        if ((rc = txn_commit(&x)) != 1) return rc;
    }
    return moe_err_set(err, MOE_EIO, "tenant %s kept changing; try again", t->name);
}

/* The tenant's hash (HGETALL) as a reply; NULL with rc set (MOE_ENOTFOUND: none). */
static redisReply *get_hash(txn *x, int *rc) {
    redisReply *r = CMD(x, "HGETALL", x->tkey);
    if (!r) {
        *rc = MOE_EUNAVAIL;
        return NULL;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        freeReplyObject(r);
        *rc = txn_abandon(x, moe_err_set(x->err, MOE_ENOTFOUND, "no tenant %s", x->name));
        return NULL;
    }
    return r;
}

int moe_tenant_redis_add_key(moe_rlink *l, const char *prefix, const char *name,
                             const uint8_t digest[MOE_TENANT_DIGEST], moe_err *err) {
    char now[32], kf[80], hex[65];
    snprintf(now, sizeof now, "%" PRId64, moe_wall_ms());
    moe_tenant_digest_hex(digest, hex);
    snprintf(kf, sizeof kf, "%s%s", MOE_TENANT_F_KEY, hex);
    int rc;
    for (int i = 0; i < TRIES; i++) {
        txn x;
        if ((rc = txn_watch(&x, l, prefix, name, err)) < 0) return rc;
        redisReply *h = get_hash(&x, &rc);
        if (!h) return rc;
        int keys = 0;
        for (size_t k = 0; k < h->elements; k += 2)
            keys += h->element[k]->type == REDIS_REPLY_STRING &&
                    !strncmp(h->element[k]->str, MOE_TENANT_F_KEY, KEY_F_LEN);
        freeReplyObject(h);
        if (keys >= MOE_TENANT_KEYS_MAX)
            return txn_abandon(&x, moe_err_set(err, MOE_ENOSPC,
                                               "tenant %s has %d keys, the most it may have: "
                                               "revoke one first",
                                               name, keys));
        if ((rc = RUN(&x, "MULTI")) < 0) return rc;
        if ((rc = RUN(&x, "HSET", x.tkey, kf, now)) < 0) return txn_discard(&x, rc);
        if ((rc = txn_commit(&x)) != 1) return rc;
    }
    return moe_err_set(err, MOE_EIO, "tenant %s kept changing; try again", name);
}

int moe_tenant_redis_delete(moe_rlink *l, const char *prefix, const char *name, moe_err *err) {
    int rc;
    for (int i = 0; i < TRIES; i++) {
        txn x;
        if ((rc = txn_watch(&x, l, prefix, name, err)) < 0) return rc;
        if ((rc = txn_exists(&x)) <= 0)
            return rc < 0 ? rc
                          : txn_abandon(&x, moe_err_set(err, MOE_ENOTFOUND, "no tenant %s", name));
        if ((rc = RUN(&x, "MULTI")) < 0) return rc;
        if ((rc = RUN(&x, "DEL", x.tkey)) < 0 || (rc = RUN(&x, "SREM", x.skey, name)) < 0)
            return txn_discard(&x, rc);
        if ((rc = txn_commit(&x)) != 1) return rc;
    }
    return moe_err_set(err, MOE_EIO, "tenant %s kept changing; try again", name);
}

int moe_tenant_redis_delete_key(moe_rlink *l, const char *prefix, const char *name,
                                const char *hex_prefix, char removed[65], moe_err *err) {
    char want[65];
    const size_t n = strlen(hex_prefix);
    if (n < 8 || n > 64) return moe_err_set(err, MOE_EINVAL, "a key prefix has 8 to 64 hex digits");
    for (size_t i = 0; i <= n; i++) {
        const char c = hex_prefix[i];
        want[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
        if (i < n && !((want[i] >= '0' && want[i] <= '9') || (want[i] >= 'a' && want[i] <= 'f')))
            return moe_err_set(err, MOE_EINVAL, "a key prefix has hex digits only");
    }
    int rc;
    for (int i = 0; i < TRIES; i++) {
        txn x;
        if ((rc = txn_watch(&x, l, prefix, name, err)) < 0) return rc;
        redisReply *h = get_hash(&x, &rc);
        if (!h) return rc;
        char field[80] = "";
        int found = 0;
        for (size_t k = 0; k < h->elements; k += 2) {
            const redisReply *f = h->element[k];
            if (f->type == REDIS_REPLY_STRING && !strncmp(f->str, MOE_TENANT_F_KEY, KEY_F_LEN) &&
                !strncmp(f->str + KEY_F_LEN, want, n) && found++ == 0)
                snprintf(field, sizeof field, "%s", f->str);
        }
        freeReplyObject(h);
        if (found != 1)
            return txn_abandon(&x, found ? moe_err_set(err, MOE_EINVAL,
                                                       "%d keys of %s start with %s: give more "
                                                       "digits",
                                                       found, name, want)
                                         : moe_err_set(err, MOE_ENOTFOUND,
                                                       "tenant %s has no key %s...", name, want));
        if ((rc = RUN(&x, "MULTI")) < 0) return rc;
        if ((rc = RUN(&x, "HDEL", x.tkey, field)) < 0) return txn_discard(&x, rc);
        if ((rc = txn_commit(&x)) != 1) {
            if (rc == 0 && removed) snprintf(removed, 65, "%.64s", field + KEY_F_LEN);
            return rc;
        }
    }
    return moe_err_set(err, MOE_EIO, "tenant %s kept changing; try again", name);
}

int moe_tenant_redis_set_limits(moe_rlink *l, const char *prefix, const char *name,
                                const moe_tenant_limits *lim, unsigned mask, moe_err *err) {
    int rc = moe_tenant_limits_check(lim, err);
    if (rc < 0) return rc;
    if (!(mask & MOE_TENANT_LIM_ALL)) return moe_err_set(err, MOE_EINVAL, "no limit to set");
    for (int i = 0; i < TRIES; i++) {
        txn x;
        if ((rc = txn_watch(&x, l, prefix, name, err)) < 0) return rc;
        if ((rc = txn_exists(&x)) <= 0)
            return rc < 0 ? rc
                          : txn_abandon(&x, moe_err_set(err, MOE_ENOTFOUND, "no tenant %s", name));
        const char *argv[24] = {"HSET", x.tkey};
        char vals[7][32];
        int argc = 2;
        limit_args(lim, mask, vals, argv, &argc);
        if ((rc = RUN(&x, "MULTI")) < 0) return rc;
        if ((rc = run(&x, argc, argv)) < 0) return txn_discard(&x, rc);
        if ((rc = txn_commit(&x)) != 1) return rc;
    }
    return moe_err_set(err, MOE_EIO, "tenant %s kept changing; try again", name);
}
