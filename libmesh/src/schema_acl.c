/* schema_acl.c - the Redis ACL rules of each role of a deployment (see
 * schema.h, "ACL roles"; docs/redis-schema.md, "Access control"). The
 * commands below are every command the role's code sends (grep
 * moe_rlink_cmd, moe_rlink_append and moe_pldoc_* in its files); the keys
 * are those of the schema's key builders, whose names schema.c spells. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mesh/schema.h"

/* One selector: commands, and the one key pattern or channel they may use. */
typedef struct acl_sel {
    const char *cmds;   /* "+hset +pexpire" */
    const char *perm;   /* "~" read and write, "%R~" read only, "&" a channel */
    const char *suffix; /* after "P:": a key, a key pattern, or the channel */
} acl_sel;

#define ACL_SELS_MAX 10

typedef struct acl_role {
    const char *name;
    const char *root; /* commands that name no key ("" for none) */
    acl_sel sel[ACL_SELS_MAX];
} acl_role;

/* clang-format off */
static const acl_role roles[MOE_ACL_ROLE_COUNT] = {
    /* router-svc: router.c, router_leases.c */
    [MOE_ACL_ROLE_ROUTER] = {"router", "", {
        {"+set +get +pexpire +del +eval", "~", "leader"}, /* SET NX PX, the renew/release scripts */
        {"+zrange +zrem", "~", "workers"},                /* discovery, pruning */
        {"+hgetall +pttl", "%R~", "worker:*"},            /* the leases and their TTLs */
        {"+smembers +srem", "~", "drain"},                /* drain requests; prunes the dead */
        {"+hgetall +hlen +hscan", "%R~", "load:*"},      /* the load, per tenant too */
        {"+get +set +del +expire", "~", "placement:*"},   /* active, pending, seq, <e> */
        {"+del +smembers", "~", "ack:*"},
        {"+set", "~", "scale:workers_wanted"},
        {"+publish", "&", "events"}}},
    /* expert-workers: expert-worker/registry.c */
    [MOE_ACL_ROLE_WORKER] = {"worker", "+multi +exec", { /* the heartbeat is one MULTI */
        {"+hset +pexpire +del", "~", "worker:*"},         /* its lease; DEL when it leaves */
        {"+zadd +zrem", "~", "workers"},
        {"+get", "%R~", "placement:*"},                   /* the epochs and its share */
        {"+sismember", "%R~", "drain"},                   /* an operator's drain request */
        {"+sadd +expire", "~", "ack:*"},                  /* acknowledges an epoch */
        {"+subscribe", "&", "events"}}},
    /* gateways and moectl --redis: libmesh/src/remote_ctl.c, tenant_redis.c (reader) */
    [MOE_ACL_ROLE_GATEWAY] = {"gateway", "+time", {
        {"+get", "%R~", "placement:*"},                   /* the active epoch, its document */
        {"+hincrby +expire", "~", "load:*"},              /* the load reports */
        {"+get", "%R~", "tenants:version"},               /* polled every 250 ms */
        {"+smembers", "%R~", "tenants"},                  /* then, when it moved, the names */
        {"+hgetall", "%R~", "tenant:*"},                  /* and each tenant's limits and keys */
        /* the limits script (gateway/limiter.c) and the commands it runs (TIME: root) */
        {"+evalsha +eval +get +incr +incrby +pexpire +zadd +zrem +zremrangebyscore +zcard",
         "~", "limit:{*}*"}, /* P:limit:{<tenant>}...: a cluster hash tag, schema.h */
        {"+evalsha +eval +zadd +zremrangebyscore +zcard", "~", "gateways"}, /* the replicas */
        {"+subscribe", "&", "events"}}},
    /* operators (redis-cli; moectl tenant: tenant_redis.c's writers): drain a
     * worker, manage tenants, read everything of the deployment */
    [MOE_ACL_ROLE_ADMIN] = {"admin", "+ping +multi +exec +discard +unwatch", {
        {"+sadd +srem", "~", "drain"},
        {"+watch +hset +hdel +del", "~", "tenant:*"},    /* a change WATCHes the tenant */
        {"+sadd +srem", "~", "tenants"},
        {"+incr", "~", "tenants:version"},
        {"+get +mget +hget +hgetall +zrange +zcard +zscore +smembers +sismember +scard +exists "
         "+type +ttl +pttl", "%R~", "*"},
        {"+subscribe +publish", "&", "events"}}},        /* publishes "tenants <v>" */
};
/* clang-format on */

const char *moe_acl_role_name(moe_acl_role role) {
    return (unsigned)role < MOE_ACL_ROLE_COUNT ? roles[role].name : NULL;
}

/* A prefix that every rule reads as itself: no space, control character,
 * glob character (* ? [ ] \), parenthesis or quote. */
static int prefix_ok(const char *p) {
    if (!*p) return 0;
    for (; *p; p++) {
        const unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || strchr("*?[]\\()\"'", c)) return 0;
    }
    return 1;
}

typedef struct out {
    char *buf;
    size_t cap, n;
    int full;
} out;

static void put(out *o, const char *f, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *f, ...) {
    if (o->full) return;
    va_list ap;
    va_start(ap, f);
    const int k = vsnprintf(o->buf + o->n, o->cap - o->n, f, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= o->cap - o->n)
        o->full = 1;
    else
        o->n += (size_t)k;
}

int moe_acl_rules(char *buf, size_t cap, const char *prefix, moe_acl_role role, int allow_select) {
    if (!cap) return MOE_ERANGE;
    buf[0] = 0;
    if ((unsigned)role >= MOE_ACL_ROLE_COUNT || !prefix || !prefix_ok(prefix) ||
        strlen(prefix) > MOE_SCHEMA_PREFIX_MAX)
        return MOE_EINVAL;
    const acl_role *r = &roles[role];
    out o = {buf, cap, 0, 0};
    put(&o, "resetkeys resetchannels -@all");
    if (*r->root) put(&o, " %s", r->root);
    if (allow_select) put(&o, " +select");
    for (int i = 0; i < ACL_SELS_MAX && r->sel[i].cmds; i++)
        put(&o, " (%s %s%s:%s)", r->sel[i].cmds, r->sel[i].perm, prefix, r->sel[i].suffix);
    if (o.full) {
        buf[0] = 0;
        return MOE_ERANGE;
    }
    return (int)o.n;
}
