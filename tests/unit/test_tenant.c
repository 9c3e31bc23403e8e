/* test_tenant.c - API keys and tenants (mesh/tenant.h): keys and their
 * SHA-256, redaction, tenant sets (every key found, unknown and near-miss
 * digests not, a probe past colliding digests, duplicates refused with the
 * set unchanged), the tenants file against bad input (each error names the
 * entry and the field), the store (a file read again when it changes, a
 * broken file keeping the last set, lookups from several threads while sets
 * are swapped), and the gateway's key check (gateway/auth.c: Bearer and
 * api-key headers, OpenAI's 401 object, 503 before a set is loaded).
 * Redis end to end: tests/integration/tenants.sh. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "mesh/tenant.h"
#include "moe/error.h"
#include "svc/clock.h"
#include "test.h"

/* ==== Keys ======================================================================== */

TEST(tenant_keys) {
    char a[MOE_TENANT_KEY_LEN + 1], b[MOE_TENANT_KEY_LEN + 1];
    moe_err err;
    ASSERT_EQ_INT(moe_tenant_key_new(a, &err), 0);
    ASSERT_EQ_INT(moe_tenant_key_new(b, &err), 0);
    ASSERT_EQ_INT(strlen(a), MOE_TENANT_KEY_LEN);
    ASSERT(!strncmp(a, "moe-", 4) && strcmp(a, b) != 0);
    for (const char *p = a + 4; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p))
            TEST_FAIL("'%c' in key %s is not base64url", *p, a);
    /* FIPS 180-2's example: SHA-256("abc") */
    uint8_t d[32], back[32];
    char hex[65];
    moe_tenant_key_digest("abc", 3, d);
    moe_tenant_digest_hex(d, hex);
    ASSERT_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_EQ_INT(moe_tenant_digest_parse(hex, back), 0);
    ASSERT(!memcmp(d, back, 32));
    hex[0] = 'B'; /* either case */
    ASSERT_EQ_INT(moe_tenant_digest_parse(hex, back), 0);
    ASSERT_EQ_INT(moe_tenant_digest_parse("ba7816", back), MOE_EFORMAT);
    hex[5] = 'g';
    ASSERT_EQ_INT(moe_tenant_digest_parse(hex, back), MOE_EFORMAT);
    /* redaction: 6 + 4 characters at most, never more of the key */
    char r[32];
    moe_tenant_key_redact(a, strlen(a), r, sizeof r);
    ASSERT_EQ_INT(strlen(r), 13);
    ASSERT(!strncmp(r, a, 6) && !strcmp(r + 9, a + MOE_TENANT_KEY_LEN - 4));
    moe_tenant_key_redact("moe-short", 9, r, sizeof r);
    ASSERT_STR_EQ(r, "***");
    moe_tenant_key_redact("ab\ncdefghijklmnop\x01", 18, r, sizeof r);
    ASSERT_STR_EQ(r, "ab?cde***nop?");
    /* names */
    ASSERT_EQ_INT(moe_tenant_name_check("acme-eu.1_x", NULL), 0);
    const char *bad[] = {"", "-a", ".a", "a b", "a:b", "a*", "ä", NULL};
    for (int i = 0; bad[i]; i++)
        if (moe_tenant_name_check(bad[i], NULL) != MOE_EINVAL)
            TEST_FAIL("name '%s' passed", bad[i]);
    char longname[80];
    memset(longname, 'a', 65);
    longname[65] = 0;
    ASSERT_EQ_INT(moe_tenant_name_check(longname, NULL), MOE_EINVAL);
    longname[64] = 0;
    ASSERT_EQ_INT(moe_tenant_name_check(longname, NULL), 0);
}

TEST(tenant_limits) {
    moe_tenant_limits l = moe_tenant_limits_default();
    moe_err err;
    ASSERT_EQ_INT(moe_tenant_limits_check(&l, &err), 0);
    ASSERT(l.weight == 1 && l.priority == MOE_TENANT_PRIORITY_NORMAL && l.rpm == 0);
    l.tpm = -1;
    ASSERT_EQ_INT(moe_tenant_limits_check(&l, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "tpm");
    l = moe_tenant_limits_default();
    l.weight = 0;
    ASSERT_EQ_INT(moe_tenant_limits_check(&l, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "weight");
    moe_tenant_priority p;
    ASSERT(moe_tenant_priority_parse("low", &p) == 0 && p == MOE_TENANT_PRIORITY_LOW);
    ASSERT_EQ_INT(moe_tenant_priority_parse("urgent", &p), MOE_EINVAL);
}

/* ==== Sets ======================================================================== */

static moe_tenant named(const char *name) {
    moe_tenant t = {.lim = moe_tenant_limits_default()};
    snprintf(t.name, sizeof t.name, "%s", name);
    return t;
}

TEST(tenant_set_lookup) {
    moe_tenant_set *s;
    moe_err err;
    ASSERT_EQ_INT(moe_tenant_set_create(&s), 0);
    enum { N = 2000 };
    for (int i = 0; i < N; i++) {
        char name[32], key[64];
        uint8_t d[2][32];
        snprintf(name, sizeof name, "t%d", i);
        for (int k = 0; k < 2; k++) {
            snprintf(key, sizeof key, "moe-key-%d-%d-xxxxxxxx", i, k);
            moe_tenant_key_digest(key, strlen(key), d[k]);
        }
        moe_tenant t = named(name);
        t.lim.rpm = i;
        ASSERT_EQ_INT(moe_tenant_set_add(s, &t, (const uint8_t(*)[32])d, 2, &err), 0);
    }
    ASSERT_EQ_INT(moe_tenant_set_count(s), N);
    ASSERT_EQ_INT(moe_tenant_set_n_keys(s), 2 * N);
    for (int i = 0; i < N; i++) {
        char key[64], name[32];
        uint8_t d[32];
        snprintf(key, sizeof key, "moe-key-%d-%d-xxxxxxxx", i, i & 1);
        moe_tenant_key_digest(key, strlen(key), d);
        const moe_tenant *t = moe_tenant_set_find_key(s, d);
        snprintf(name, sizeof name, "t%d", i);
        if (!t || strcmp(t->name, name) || t->lim.rpm != i || t->n_keys != 2)
            TEST_FAIL("key %s: %s", key, t ? t->name : "not found");
        ASSERT(moe_tenant_set_find_name(s, name) == t);
        ASSERT(!memcmp(moe_tenant_set_key(s, i, i & 1), d, 32));
    }
    /* an unknown key, and a digest one bit off a stored one, are not found */
    uint8_t d[32];
    moe_tenant_key_digest("moe-key-unknown-xxxxxxxxx", 25, d);
    ASSERT(moe_tenant_set_find_key(s, d) == NULL);
    memcpy(d, moe_tenant_set_key(s, 7, 0), 32);
    d[31] ^= 1;
    ASSERT(moe_tenant_set_find_key(s, d) == NULL);
    ASSERT(moe_tenant_set_find_name(s, "t2000") == NULL);
    /* refused, and the set unchanged: a name again, a key again (another's, its own) */
    moe_tenant t = named("t5");
    ASSERT_EQ_INT(moe_tenant_set_add(s, &t, NULL, 0, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "listed twice");
    uint8_t two[2][32];
    moe_tenant_key_digest("moe-fresh-key-0000000", 21, two[0]);
    memcpy(two[1], moe_tenant_set_key(s, 9, 1), 32);
    t = named("fresh");
    ASSERT_EQ_INT(moe_tenant_set_add(s, &t, (const uint8_t(*)[32])two, 2, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "t9's");
    ASSERT(moe_tenant_set_find_key(s, two[0]) == NULL && !moe_tenant_set_find_name(s, "fresh"));
    memcpy(two[1], two[0], 32);
    ASSERT_EQ_INT(moe_tenant_set_add(s, &t, (const uint8_t(*)[32])two, 2, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "its own");
    ASSERT_EQ_INT(moe_tenant_set_add(s, &t, (const uint8_t(*)[32])two, 17, &err), MOE_EINVAL);
    t.lim.weight = -1;
    ASSERT_EQ_INT(moe_tenant_set_add(s, &t, (const uint8_t(*)[32])two, 1, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "tenant fresh: weight");
    ASSERT_EQ_INT(moe_tenant_set_count(s), N);
    ASSERT_EQ_INT(moe_tenant_set_n_keys(s), 2 * N);
    moe_tenant_set_free(s);
}

/* Digests that share their first 8 bytes land on one slot: the probe walks
 * past each, comparing all 32 bytes, and finds every one. */
TEST(tenant_set_colliding_digests) {
    moe_tenant_set *s;
    ASSERT_EQ_INT(moe_tenant_set_create(&s), 0);
    uint8_t d[12][32];
    for (int i = 0; i < 12; i++) {
        memset(d[i], 0xab, 32);
        d[i][31] = (uint8_t)i;
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        moe_tenant t = named(name);
        ASSERT_EQ_INT(moe_tenant_set_add(s, &t, (const uint8_t(*)[32])d[i], 1, NULL), 0);
    }
    for (int i = 0; i < 12; i++) {
        const moe_tenant *t = moe_tenant_set_find_key(s, d[i]);
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        if (!t || strcmp(t->name, name)) TEST_FAIL("digest %d: %s", i, t ? t->name : "none");
    }
    d[0][31] = 99;
    ASSERT(moe_tenant_set_find_key(s, d[0]) == NULL);
    moe_tenant_set_free(s);
}

/* ==== The tenants file ============================================================ */

TEST(tenant_file_parse) {
    char hex[65];
    uint8_t d[32];
    moe_tenant_key_digest("moe-acme-key-000000000", 22, d);
    moe_tenant_digest_hex(d, hex);
    char json[1024];
    snprintf(json, sizeof json,
             "{\"tenants\": [{\"name\": \"acme\", \"key_sha256\": [\"%s\"], \"rpm\": 600, "
             "\"tpm\": 100000, \"concurrency\": 8, \"max_context\": 8192, \"daily_tokens\": 0, "
             "\"weight\": 2.5, \"priority\": \"high\"},\n"
             " {\"name\": \"dev\", \"keys\": [\"moe-dev-key-in-clear-01\"], \"rpm\": null}]}",
             hex);
    moe_tenant_set *s;
    moe_err err;
    ASSERT_EQ_INT(moe_tenant_set_parse(&s, json, strlen(json), &err), 0);
    ASSERT_EQ_INT(moe_tenant_set_count(s), 2);
    const moe_tenant *t = moe_tenant_set_find_key(s, d);
    ASSERT(t && !strcmp(t->name, "acme"));
    ASSERT(t->lim.rpm == 600 && t->lim.tpm == 100000 && t->lim.concurrency == 8 &&
           t->lim.max_context == 8192 && t->lim.weight == 2.5 &&
           t->lim.priority == MOE_TENANT_PRIORITY_HIGH);
    moe_tenant_key_digest("moe-dev-key-in-clear-01", 23, d); /* "keys": hashed on load */
    t = moe_tenant_set_find_key(s, d);
    ASSERT(t && !strcmp(t->name, "dev") && t->lim.rpm == 0 && t->lim.weight == 1);
    moe_tenant_set_free(s);

    static const struct {
        const char *json, *want;
    } bad[] = {
        {"{\"tenants\": [", "not JSON"},
        {"[]", "want an object"},
        {"{\"tenant\": []}", "want an object"},
        {"{\"tenants\": [], \"x\": 1}", "unknown field \"x\""},
        {"{\"tenants\": [7]}", "tenants[0]: is not an object"},
        {"{\"tenants\": [{\"rpm\": 1}]}", "tenants[0]: \"name\" is missing"},
        {"{\"tenants\": [{\"name\": \"a b\"}]}", "tenants[0]: \"name\": a tenant name"},
        {"{\"tenants\": [{\"name\": \"a\", \"rpm\": -1}]}",
         "tenants[0] (a): \"rpm\" must be an integer"},
        {"{\"tenants\": [{\"name\": \"a\"}, {\"name\": \"b\", \"tpm\": 1.5}]}",
         "tenants[1] (b): \"tpm\" must be an integer"},
        {"{\"tenants\": [{\"name\": \"a\", \"concurrency\": \"8\"}]}", "\"concurrency\" must be"},
        {"{\"tenants\": [{\"name\": \"a\", \"daily_tokens\": 1e300}]}", "\"daily_tokens\" must"},
        {"{\"tenants\": [{\"name\": \"a\", \"weight\": 0}]}", "tenants[0] (a): \"weight\" must"},
        {"{\"tenants\": [{\"name\": \"a\", \"priority\": \"urgent\"}]}", "\"priority\" must"},
        {"{\"tenants\": [{\"name\": \"a\", \"rpn\": 5}]}", "unknown field \"rpn\""},
        {"{\"tenants\": [{\"name\": \"a\", \"rpm\": 5, \"rpm\": 6}]}", "\"rpm\" is given twice"},
        {"{\"tenants\": [{\"name\": \"a\", \"key_sha256\": [\"abc\"]}]}",
         "\"key_sha256\"[0] must be 64 hex digits"},
        {"{\"tenants\": [{\"name\": \"a\", \"key_sha256\": \"abc\"}]}",
         "\"key_sha256\" must be an array"},
        {"{\"tenants\": [{\"name\": \"a\", \"keys\": [\"short\"]}]}", "\"keys\"[0] must have 16"},
        {"{\"tenants\": [{\"name\": \"a\", \"keys\": [1]}]}", "\"keys\"[0] is not a string"},
        {"{\"tenants\": [{\"name\": \"a\"}, {\"name\": \"a\"}]}",
         "tenants[1] (a): tenant a is listed twice"},
        {"{\"tenants\": [{\"name\": \"a\", \"keys\": [\"moe-same-key-000000\"]}, "
         "{\"name\": \"b\", \"keys\": [\"moe-same-key-000000\"]}]}",
         "tenants[1] (b): tenant b: key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        const int rc = moe_tenant_set_parse(&s, bad[i].json, strlen(bad[i].json), &err);
        if (rc >= 0 || s) TEST_FAIL("accepted: %s", bad[i].json);
        if (!strstr(err.msg, bad[i].want))
            TEST_FAIL("%s: error '%s' lacks '%s'", bad[i].json, err.msg, bad[i].want);
    }
    /* 17 keys */
    char many[2048] = "{\"tenants\": [{\"name\": \"a\", \"keys\": [";
    for (int i = 0; i < 17; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%s\"moe-key-%02d-xxxxxxxxx\"",
                 i ? "," : "", i);
    strcat(many, "]}]}");
    ASSERT(moe_tenant_set_parse(&s, many, strlen(many), &err) < 0);
    ASSERT_STR_CONTAINS(err.msg, "more than 16 keys");
}

/* ==== The store =================================================================== */

static void write_file(const char *path, const char *text) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    MOE_ASSERT(f && fputs(text, f) >= 0 && fclose(f) == 0);
    MOE_ASSERT(rename(tmp, path) == 0); /* as a Secret volume swaps its files */
}

/* Waits up to 3 s for the key's lookup to return want. */
static int wait_auth(moe_tenants *ts, const char *key, int want) {
    moe_tenant t;
    for (int i = 0; i < 300; i++) {
        if (moe_tenants_auth(ts, key, strlen(key), &t) == want) return 1;
        usleep(10000);
    }
    return 0;
}

TEST(tenant_store_file) {
    char dir[] = "/tmp/moe-tenant-XXXXXX", path[600];
    ASSERT(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tenants.json", dir);
    moe_tenants *ts;
    moe_err err;
    const moe_tenants_params p = {.file = path, .poll_ms = 20};
    ASSERT_EQ_INT(moe_tenants_open(&ts, &p, &err), MOE_EIO); /* missing */
    ASSERT_STR_CONTAINS(err.msg, path);
    write_file(path, "{\"tenants\": [{\"name\": \"a\", \"rpm\": \"x\"}]}");
    ASSERT_EQ_INT(moe_tenants_open(&ts, &p, &err), MOE_EFORMAT);
    ASSERT_STR_CONTAINS(err.msg, "tenants.json: tenants[0] (a): \"rpm\"");
    write_file(path, "{\"tenants\": [{\"name\": \"a\", \"keys\": [\"moe-first-key-00000\"]}]}");
    ASSERT_EQ_INT(moe_tenants_open(&ts, &p, &err), 0);
    moe_tenant t;
    ASSERT_EQ_INT(moe_tenants_auth(ts, "moe-first-key-00000", 19, &t), 0);
    ASSERT_STR_EQ(t.name, "a");
    ASSERT_EQ_INT(moe_tenants_auth(ts, "moe-first-key-00001", 19, &t), MOE_ENOTFOUND);
    ASSERT_EQ_INT(moe_tenants_auth(ts, "", 0, &t), MOE_ENOTFOUND);
    char huge[MOE_TENANT_KEY_MAX + 2];
    memset(huge, 'k', sizeof huge);
    ASSERT_EQ_INT(moe_tenants_auth(ts, huge, sizeof huge, &t), MOE_ENOTFOUND);
    /* the file changes: the old key goes, a new one works */
    write_file(path, "{\"tenants\": [{\"name\": \"b\", \"keys\": [\"moe-second-key-0000\"]}]}");
    ASSERT(wait_auth(ts, "moe-second-key-0000", 0));
    ASSERT_EQ_INT(moe_tenants_auth(ts, "moe-first-key-00000", 19, &t), MOE_ENOTFOUND);
    /* a broken file keeps the last set, and is counted */
    write_file(path, "{\"tenants\": [{\"name\": \"c\", \"rpm\": -5}]}");
    moe_tenants_stats st = {0};
    for (int i = 0; i < 300 && !st.invalid; i++, usleep(10000)) moe_tenants_get_stats(ts, &st);
    ASSERT_EQ_INT(st.invalid, 1);
    ASSERT(st.loaded && st.n_tenants == 1 && st.reloads == 2 && st.source_up);
    ASSERT_EQ_INT(moe_tenants_auth(ts, "moe-second-key-0000", 19, &t), 0);
    moe_tenants_close(ts);
    unlink(path);
    rmdir(dir);
}

typedef struct hammer {
    moe_tenants *ts;
    volatile int stop;
    long n, bad;
} hammer;

static void *hammer_run(void *arg) {
    hammer *h = arg;
    moe_tenant t;
    while (!h->stop) {
        const int rc = moe_tenants_auth(h->ts, "moe-stable-key-0000", 19, &t);
        if (rc != 0 || strcmp(t.name, "stable")) __atomic_add_fetch(&h->bad, 1, __ATOMIC_RELAXED);
        moe_tenants_auth(h->ts, "moe-unknown-key-000", 19, &t);
        __atomic_add_fetch(&h->n, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* Lookups from 4 threads while the file is rewritten 50 times: the key in
 * every version is always found (a set is swapped whole, never seen half
 * built), and nothing crashes (make test-san runs this under ASan). */
TEST(tenant_store_threads) {
    char dir[] = "/tmp/moe-tenant-XXXXXX", path[600];
    ASSERT(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.json", dir);
    const char *stable = "{\"name\": \"stable\", \"keys\": [\"moe-stable-key-0000\"]}";
    char body[4096];
    snprintf(body, sizeof body, "{\"tenants\": [%s]}", stable);
    write_file(path, body);
    moe_tenants *ts;
    const moe_tenants_params p = {.file = path, .poll_ms = 5};
    ASSERT_EQ_INT(moe_tenants_open(&ts, &p, NULL), 0);
    hammer h = {.ts = ts};
    pthread_t th[4];
    for (int i = 0; i < 4; i++) ASSERT_EQ_INT(pthread_create(&th[i], NULL, hammer_run, &h), 0);
    for (int v = 0; v < 50; v++) {
        int n = snprintf(body, sizeof body, "{\"tenants\": [");
        for (int k = 0; k <= v % 7; k++)
            n += snprintf(body + n, sizeof body - (size_t)n,
                          "{\"name\": \"x%d\", \"keys\": [\"moe-v%d-k%d-xxxxxxxxxx\"]},", k, v, k);
        snprintf(body + n, sizeof body - (size_t)n, "%s]}", stable);
        write_file(path, body);
        usleep(8000);
    }
    h.stop = 1;
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    moe_tenants_stats st;
    moe_tenants_get_stats(ts, &st);
    moe_tenants_close(ts);
    unlink(path);
    rmdir(dir);
    ASSERT_EQ_INT(h.bad, 0);
    ASSERT(h.n > 1000 && st.reloads > 10);
}

/* ==== The gateway's key check (gateway/auth.c) ===================================== */

TEST(gw_auth_check_headers) {
    const char *key;
    size_t len;
    ASSERT(gw_auth_bearer("Bearer moe-abc", &key, &len) == 0 && len == 7 &&
           !strncmp(key, "moe-abc", 7));
    ASSERT(gw_auth_bearer("  bearer \t moe-abc  ", &key, &len) == 0 && len == 7);
    ASSERT(gw_auth_bearer("BEARER x", &key, &len) == 0 && len == 1);
    ASSERT_EQ_INT(gw_auth_bearer("Bearer ", &key, &len), -1);
    ASSERT_EQ_INT(gw_auth_bearer("Bearermoe-abc", &key, &len), -1);
    ASSERT_EQ_INT(gw_auth_bearer("Basic dXNlcjpwYXNz", &key, &len), -1);

    moe_tenants *ts;
    ASSERT_EQ_INT(moe_tenants_open_set(&ts, NULL), 0); /* nothing loaded yet */
    gw_auth *a;
    ASSERT_EQ_INT(gw_auth_create(&a, ts, NULL), 0);
    moe_tenant t;
    gw_api_error e;
    ASSERT_EQ_INT(gw_auth_check(a, "Bearer moe-whatever-000000", NULL, NULL, &t, &e), -1);
    ASSERT_EQ_INT(e.status, 503);
    ASSERT_EQ_INT(gw_auth_check(a, NULL, NULL, NULL, &t, &e), -1); /* no key: 401 anyway */
    ASSERT_EQ_INT(e.status, 401);
    gw_auth_free(a);
    moe_tenants_close(ts);

    const char *good = "moe-goodkey-0123456789abcdefXYZ";
    const char *json = "{\"tenants\": [{\"name\": \"acme\", \"keys\": "
                       "[\"moe-goodkey-0123456789abcdefXYZ\"], \"rpm\": 7}]}";
    moe_tenant_set *s;
    ASSERT_EQ_INT(moe_tenant_set_parse(&s, json, strlen(json), NULL), 0);
    ASSERT_EQ_INT(moe_tenants_open_set(&ts, s), 0);
    ASSERT_EQ_INT(gw_auth_create(&a, ts, NULL), 0);
    char bearer[128];
    snprintf(bearer, sizeof bearer, "Bearer %s", good);
    ASSERT_EQ_INT(gw_auth_check(a, bearer, NULL, NULL, &t, &e), 0);
    ASSERT(!strcmp(t.name, "acme") && t.lim.rpm == 7);
    memset(&t, 0, sizeof t);
    ASSERT_EQ_INT(gw_auth_check(a, NULL, good, NULL, &t, &e), 0); /* api-key */
    ASSERT_STR_EQ(t.name, "acme");
    /* Authorization wins over api-key */
    ASSERT_EQ_INT(gw_auth_check(a, "Bearer moe-wrongkey-0123456789abcdef", good, NULL, &t, &e), -1);
    /* OpenAI's objects: 401, invalid_request_error, code invalid_api_key, the key redacted */
    ASSERT_EQ_INT(e.status, 401);
    ASSERT_STR_EQ(e.code, "invalid_api_key");
    ASSERT_STR_EQ(e.type, "invalid_request_error");
    ASSERT(e.param[0] == 0);
    ASSERT_STR_CONTAINS(e.message, "Incorrect API key provided: moe-wr***cdef.");
    ASSERT(!strstr(e.message, "moe-wrongkey"));
    ASSERT_EQ_INT(gw_auth_check(a, "Basic dXNlcjpwYXNz", NULL, NULL, &t, &e), -1);
    ASSERT_STR_CONTAINS(e.message, "You didn't provide an API key");
    ASSERT_STR_EQ(e.code, "invalid_api_key");
    ASSERT_EQ_INT(gw_auth_check(a, NULL, "   ", NULL, &t, &e), -1);
    ASSERT_STR_CONTAINS(e.message, "You didn't provide an API key");
    gw_auth_free(a);
    moe_tenants_close(ts);
}
