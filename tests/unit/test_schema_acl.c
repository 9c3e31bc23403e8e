/* test_schema_acl.c - the Redis ACL rules of each role (mesh/schema.h,
 * moe_acl_rules): the exact rules for deployment "moemesh" (what `moectl
 * redis-acl` prints and docs/redis-schema.md shows), prefixes a rule would
 * misread, and which role may write which key (every key a role's code
 * writes is in one of its read-write patterns; a worker's patterns match no
 * key of the drain set, the placement, the leader lock, the scale signal or
 * the load; only the admin role writes tenants, the gateway reads them).
 * tests/integration/rogue_worker.sh and tenants.sh check them in redis-server.
 * Also the lease address check (moe_lease_addr_check). */
#include <fnmatch.h>
#include <string.h>

#include "mesh/schema.h"
#include "moe/error.h"
#include "test.h"

TEST(schema_acl_rules_exact) {
    char b[2048];
    static const char *const want[MOE_ACL_ROLE_COUNT] = {
        "resetkeys resetchannels -@all (+set +get +pexpire +del +eval ~moemesh:leader) "
        "(+zrange +zrem ~moemesh:workers) (+hgetall +pttl %R~moemesh:worker:*) "
        "(+smembers +srem ~moemesh:drain) (+hgetall +hlen +hscan %R~moemesh:load:*) "
        "(+get +set +del +expire ~moemesh:placement:*) (+del +smembers ~moemesh:ack:*) "
        "(+set ~moemesh:scale:workers_wanted) (+publish &moemesh:events)",
        "resetkeys resetchannels -@all +multi +exec (+hset +pexpire +del ~moemesh:worker:*) "
        "(+zadd +zrem ~moemesh:workers) (+get %R~moemesh:placement:*) "
        "(+sismember %R~moemesh:drain) (+sadd +expire ~moemesh:ack:*) "
        "(+subscribe &moemesh:events)",
        "resetkeys resetchannels -@all +time (+get %R~moemesh:placement:*) "
        "(+hincrby +expire ~moemesh:load:*) (+get %R~moemesh:tenants:version) "
        "(+smembers %R~moemesh:tenants) (+hgetall %R~moemesh:tenant:*) "
        "(+evalsha +eval +get +incr +incrby +pexpire +zadd +zrem +zremrangebyscore +zcard "
        "~moemesh:limit:{*}*) (+evalsha +eval +zadd +zremrangebyscore +zcard ~moemesh:gateways) "
        "(+subscribe &moemesh:events)",
        "resetkeys resetchannels -@all +ping +multi +exec +discard +unwatch "
        "(+sadd +srem ~moemesh:drain) (+watch +hset +hdel +del ~moemesh:tenant:*) "
        "(+sadd +srem ~moemesh:tenants) (+incr ~moemesh:tenants:version) "
        "(+get +mget +hget +hgetall +zrange +zcard +zscore +smembers +sismember +scard +exists "
        "+type +ttl +pttl %R~moemesh:*) (+subscribe +publish &moemesh:events)",
    };
    for (int r = 0; r < MOE_ACL_ROLE_COUNT; r++) {
        ASSERT_EQ_INT(moe_acl_rules(b, sizeof b, "moemesh", r, 0), (int)strlen(want[r]));
        ASSERT_STR_EQ(b, want[r]);
    }
    ASSERT_STR_EQ(moe_acl_role_name(MOE_ACL_ROLE_WORKER), "worker");
    ASSERT(moe_acl_role_name(MOE_ACL_ROLE_COUNT) == NULL);
    /* --select: SELECT, and nothing else, added */
    ASSERT(moe_acl_rules(b, sizeof b, "moemesh", MOE_ACL_ROLE_GATEWAY, 1) > 0);
    ASSERT_STR_CONTAINS(b, "-@all +time +select (+get");
}

TEST(schema_acl_rules_refused) {
    char b[2048], small[32];
    const char *bad[] = {"",    "a b", "a*",   "a?",  "a[b]", "a\\b",
                         "a(b", "a)b", "a\"b", "a'b", "a\nb", "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(b, 'x', sizeof b);
        if (moe_acl_rules(b, sizeof b, bad[i], MOE_ACL_ROLE_WORKER, 0) != MOE_EINVAL)
            TEST_FAIL("prefix '%s' accepted", bad[i]);
        ASSERT_STR_EQ(b, "");
    }
    ASSERT_EQ_INT(moe_acl_rules(b, sizeof b, "moemesh", MOE_ACL_ROLE_COUNT, 0), MOE_EINVAL);
    ASSERT_EQ_INT(moe_acl_rules(small, sizeof small, "moemesh", MOE_ACL_ROLE_ROUTER, 0),
                  MOE_ERANGE);
    ASSERT_STR_EQ(small, "");
    /* the characters of pod names and other prefixes are fine */
    ASSERT(moe_acl_rules(b, sizeof b, "prod-eu.1:moe_x", MOE_ACL_ROLE_WORKER, 0) > 0);
    ASSERT_STR_CONTAINS(b, "~prod-eu.1:moe_x:worker:*)");
}

/* 1 if role may write key: one of its read-write patterns (~P) matches it. */
static int may_write(moe_acl_role role, const char *key) {
    char b[2048];
    MOE_ASSERT(moe_acl_rules(b, sizeof b, "p", role, 0) > 0);
    for (char *t = strtok(b, " ()"); t; t = strtok(NULL, " ()"))
        if (t[0] == '~' && fnmatch(t + 1, key, 0) == 0) return 1;
    return 0;
}

/* 1 if role may run cmd ("+hgetall") on key: a selector names both. */
static int may_run(moe_acl_role role, const char *cmd, const char *key) {
    char b[2048];
    MOE_ASSERT(moe_acl_rules(b, sizeof b, "p", role, 0) > 0);
    for (char *sel = strchr(b, '('); sel; sel = strchr(sel + 1, '(')) {
        char one[512];
        const size_t n = strcspn(sel + 1, ")");
        snprintf(one, sizeof one, " %.*s ", (int)n, sel + 1);
        char want[64];
        snprintf(want, sizeof want, " %s ", cmd);
        if (!strstr(one, want)) continue;
        const char *pat = strrchr(one, '~');
        char p[256];
        snprintf(p, sizeof p, "%s", pat ? pat + 1 : "");
        p[strcspn(p, " ")] = 0;
        if (pat && fnmatch(p, key, 0) == 0) return 1;
    }
    return 0;
}

TEST(schema_acl_who_writes_what) {
    char k[MOE_SCHEMA_KEY_MAX];
    /* the worker: its lease, the index, acknowledgements */
    moe_key_worker(k, sizeof k, "p", "w0");
    ASSERT(may_write(MOE_ACL_ROLE_WORKER, k));
    moe_key_workers(k, sizeof k, "p");
    ASSERT(may_write(MOE_ACL_ROLE_WORKER, k));
    moe_key_ack(k, sizeof k, "p", 7);
    ASSERT(may_write(MOE_ACL_ROLE_WORKER, k));
    /* ... never the drain set, the placement, the lock, the scale signal, the load */
    moe_key_drain(k, sizeof k, "p");
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    ASSERT(may_write(MOE_ACL_ROLE_ADMIN, k) && may_write(MOE_ACL_ROLE_ROUTER, k));
    ASSERT(!may_write(MOE_ACL_ROLE_GATEWAY, k));
    moe_key_placement(k, sizeof k, "p", 7);
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    ASSERT(may_write(MOE_ACL_ROLE_ROUTER, k) && !may_write(MOE_ACL_ROLE_ADMIN, k));
    moe_key_placement_active(k, sizeof k, "p");
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    ASSERT(!may_write(MOE_ACL_ROLE_GATEWAY, k) && may_write(MOE_ACL_ROLE_ROUTER, k));
    moe_key_placement_pending(k, sizeof k, "p");
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    moe_key_placement_seq(k, sizeof k, "p");
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    moe_key_leader(k, sizeof k, "p");
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    ASSERT(may_write(MOE_ACL_ROLE_ROUTER, k));
    moe_key_workers_wanted(k, sizeof k, "p");
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    ASSERT(may_write(MOE_ACL_ROLE_ROUTER, k));
    moe_key_load(k, sizeof k, "p", 17);
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    ASSERT(may_write(MOE_ACL_ROLE_GATEWAY, k) && !may_write(MOE_ACL_ROLE_ROUTER, k));
    /* no role writes the leases but the worker's; none reaches another deployment */
    moe_key_worker(k, sizeof k, "p", "w0");
    ASSERT(!may_write(MOE_ACL_ROLE_ROUTER, k) && !may_write(MOE_ACL_ROLE_ADMIN, k));
    moe_key_worker(k, sizeof k, "q", "w0");
    ASSERT(!may_write(MOE_ACL_ROLE_WORKER, k));
    moe_key_drain(k, sizeof k, "q");
    ASSERT(!may_write(MOE_ACL_ROLE_ADMIN, k));
}

TEST(schema_acl_tenants) {
    char k[MOE_SCHEMA_KEY_MAX];
    /* only the admin role writes tenants; the gateway reads them; no worker sees them */
    moe_key_tenant(k, sizeof k, "p", "acme");
    ASSERT_STR_EQ(k, "p:tenant:acme");
    ASSERT(may_write(MOE_ACL_ROLE_ADMIN, k));
    ASSERT(!may_write(MOE_ACL_ROLE_GATEWAY, k) && !may_write(MOE_ACL_ROLE_WORKER, k));
    ASSERT(!may_write(MOE_ACL_ROLE_ROUTER, k));
    ASSERT(may_run(MOE_ACL_ROLE_GATEWAY, "+hgetall", k));
    ASSERT(!may_run(MOE_ACL_ROLE_GATEWAY, "+hset", k) &&
           !may_run(MOE_ACL_ROLE_WORKER, "+hgetall", k));
    ASSERT(may_run(MOE_ACL_ROLE_ADMIN, "+hset", k) && may_run(MOE_ACL_ROLE_ADMIN, "+watch", k));
    moe_key_tenants(k, sizeof k, "p");
    ASSERT_STR_EQ(k, "p:tenants");
    ASSERT(may_write(MOE_ACL_ROLE_ADMIN, k) && !may_write(MOE_ACL_ROLE_GATEWAY, k));
    ASSERT(may_run(MOE_ACL_ROLE_GATEWAY, "+smembers", k));
    ASSERT(!may_run(MOE_ACL_ROLE_WORKER, "+smembers", k));
    moe_key_tenants_version(k, sizeof k, "p");
    ASSERT_STR_EQ(k, "p:tenants:version");
    ASSERT(may_write(MOE_ACL_ROLE_ADMIN, k) && !may_write(MOE_ACL_ROLE_GATEWAY, k));
    ASSERT(may_run(MOE_ACL_ROLE_GATEWAY, "+get", k) && may_run(MOE_ACL_ROLE_ADMIN, "+incr", k));
    /* the version is not a tenant, and another deployment's tenants are out of reach */
    ASSERT(!may_run(MOE_ACL_ROLE_ADMIN, "+hset", k));
    moe_key_tenant(k, sizeof k, "q", "acme");
    ASSERT(!may_write(MOE_ACL_ROLE_ADMIN, k) && !may_run(MOE_ACL_ROLE_GATEWAY, "+hgetall", k));
    /* the tenants event */
    char m[64];
    moe_event ev = {.kind = MOE_EVENT_TENANTS, .epoch = 12};
    ASSERT_EQ_INT(moe_event_format(m, sizeof m, &ev), 10);
    ASSERT_STR_EQ(m, "tenants 12");
    ASSERT_EQ_INT(moe_event_parse(&ev, "tenants 13"), 0);
    ASSERT(ev.kind == MOE_EVENT_TENANTS && ev.epoch == 13);
    ASSERT_EQ_INT(moe_event_parse(&ev, "tenants x"), MOE_EFORMAT);
}

TEST(schema_acl_limits) {
    char k[MOE_SCHEMA_KEY_MAX], c[MOE_SCHEMA_KEY_MAX + 16];
    /* the gateway runs the limits script on its tenant counters and the replica set; the
     * script's own commands are allowed there (Redis checks them against the caller) */
    moe_key_limit(k, sizeof k, "p", "acme");
    ASSERT_STR_EQ(k, "p:limit:{acme}"); /* a hash tag: one tenant's keys, one cluster slot */
    snprintf(c, sizeof c, "%s:r:29000000", k);
    ASSERT_STR_EQ(c, "p:limit:{acme}:r:29000000");
    ASSERT(may_write(MOE_ACL_ROLE_GATEWAY, k)); /* the base, KEYS[1] of each run */
    ASSERT(!may_write(MOE_ACL_ROLE_GATEWAY, "p:limit:acme:r:29000000")); /* untagged */
    ASSERT(may_write(MOE_ACL_ROLE_GATEWAY, c));
    ASSERT(may_run(MOE_ACL_ROLE_GATEWAY, "+evalsha", k) &&
           may_run(MOE_ACL_ROLE_GATEWAY, "+eval", k));
    ASSERT(may_run(MOE_ACL_ROLE_GATEWAY, "+incrby", c) &&
           may_run(MOE_ACL_ROLE_GATEWAY, "+zremrangebyscore", c));
    ASSERT(!may_run(MOE_ACL_ROLE_GATEWAY, "+del", c) && !may_write(MOE_ACL_ROLE_WORKER, c));
    moe_key_gateways(k, sizeof k, "p");
    ASSERT_STR_EQ(k, "p:gateways");
    ASSERT(may_run(MOE_ACL_ROLE_GATEWAY, "+evalsha", k) &&
           may_run(MOE_ACL_ROLE_GATEWAY, "+zadd", k));
    ASSERT(!may_run(MOE_ACL_ROLE_GATEWAY, "+incrby", k));
    /* tenants stay read-only to the gateway, and another deployment out of reach */
    moe_key_tenant(k, sizeof k, "p", "acme");
    ASSERT(!may_run(MOE_ACL_ROLE_GATEWAY, "+evalsha", k));
    moe_key_limit(k, sizeof k, "q", "acme");
    ASSERT(!may_write(MOE_ACL_ROLE_GATEWAY, k));
    char b[2048];
    MOE_ASSERT(moe_acl_rules(b, sizeof b, "p", MOE_ACL_ROLE_GATEWAY, 0) > 0);
    ASSERT(strstr(b, " +time ") != NULL);
}

TEST(schema_lease_addr) {
    const char *good[] = {"10.0.0.5:50051", "127.0.0.1:1", "worker-0.svc_x:65535", "[::1]:50051",
                          "[fe80::1:2]:9"};
    const char *bad[] = {"",           "nohost", ":50051", "h:",      "h:0",
                         "h:65536",    "h:12a",  "h:-1",   "a b:1",   "h/x:1",
                         "[::1:50051", "[]:1",   "[zz]:1", "h:1:2:x", "h:99999999999999999999"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (moe_lease_addr_check(good[i]) != 0) TEST_FAIL("'%s' refused", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (moe_lease_addr_check(bad[i]) != MOE_EFORMAT) TEST_FAIL("'%s' accepted", bad[i]);
    char longer[300];
    memset(longer, 'a', sizeof longer);
    memcpy(longer + 290, ":50051", 7);
    ASSERT_EQ_INT(moe_lease_addr_check(longer), MOE_EFORMAT);
}
