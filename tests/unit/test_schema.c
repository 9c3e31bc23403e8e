/* test_schema.c - the Redis schema's one module (libmesh/include/mesh/schema.h):
 * every key builder against the exact names of docs/redis-schema.md, the
 * limits that keep keys whole, load buckets, event messages, lease and load
 * fields, and the placement document: what the writer writes, the reader
 * reads back, field for field (fixed documents and seeded random ones with
 * quotes, escapes, control characters and UTF-8 in every string), and what
 * an error reply from Redis (LOADING, WRONGTYPE) means to the readers and to
 * a pipeline (a fake Redis on a loopback port answers from a script). */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "moe/error.h"
#include "test.h"

/* ==== Keys ====================================================================== */

#define ASSERT_KEY(call, want)                                                                     \
    do {                                                                                           \
        char k_[MOE_SCHEMA_KEY_MAX];                                                               \
        memset(k_, 'x', sizeof k_);                                                                \
        const int n_ = call;                                                                       \
        if (n_ < 0 || strcmp(k_, want) || (size_t)n_ != strlen(want))                              \
            TEST_FAIL("%s: %d '%s', want '%s'", #call, n_, n_ < 0 ? "" : k_, want);                \
    } while (0)

TEST(schema_keys_exact) {
    ASSERT_KEY(moe_key_worker(k_, sizeof k_, "moemesh", "w0"), "moemesh:worker:w0");
    ASSERT_KEY(moe_key_worker(k_, sizeof k_, "p", "10.0.0.5:50051"), "p:worker:10.0.0.5:50051");
    ASSERT_KEY(moe_key_workers(k_, sizeof k_, "moemesh"), "moemesh:workers");
    ASSERT_KEY(moe_key_placement(k_, sizeof k_, "moemesh", 7), "moemesh:placement:7");
    ASSERT_KEY(moe_key_placement(k_, sizeof k_, "a", UINT64_MAX),
               "a:placement:18446744073709551615");
    ASSERT_KEY(moe_key_placement_active(k_, sizeof k_, "moemesh"), "moemesh:placement:active");
    ASSERT_KEY(moe_key_placement_pending(k_, sizeof k_, "moemesh"), "moemesh:placement:pending");
    ASSERT_KEY(moe_key_placement_seq(k_, sizeof k_, "moemesh"), "moemesh:placement:seq");
    ASSERT_KEY(moe_key_ack(k_, sizeof k_, "moemesh", 12), "moemesh:ack:12");
    ASSERT_KEY(moe_key_events(k_, sizeof k_, "moemesh"), "moemesh:events");
    ASSERT_KEY(moe_key_load(k_, sizeof k_, "moemesh", 170000000), "moemesh:load:170000000");
    ASSERT_KEY(moe_key_load(k_, sizeof k_, "moemesh", 0), "moemesh:load:0");
    ASSERT_KEY(moe_key_workers_wanted(k_, sizeof k_, "moemesh"), "moemesh:scale:workers_wanted");
    ASSERT_KEY(moe_key_drain(k_, sizeof k_, "moemesh"), "moemesh:drain");
    ASSERT_KEY(moe_key_leader(k_, sizeof k_, "moemesh"), "moemesh:leader");
    /* another deployment's prefix, with the characters pod names and ids use */
    ASSERT_KEY(moe_key_worker(k_, sizeof k_, "prod-eu.1", "expert-worker-7f9c_2"),
               "prod-eu.1:worker:expert-worker-7f9c_2");
    ASSERT_KEY(moe_key_placement_active(k_, sizeof k_, "prod-eu.1"), "prod-eu.1:placement:active");
}

/* A key that does not fit is refused whole, never cut short. */
TEST(schema_keys_too_long) {
    char k[32];
    const size_t want = strlen("moemesh:placement:pending");
    ASSERT_EQ_INT(moe_key_placement_pending(k, want + 1, "moemesh"), (int)want);
    ASSERT(!strcmp(k, "moemesh:placement:pending"));
    memset(k, 'x', sizeof k);
    ASSERT_EQ_INT(moe_key_placement_pending(k, want, "moemesh"), MOE_ERANGE);
    ASSERT_EQ_INT(k[0], 0);
    ASSERT_EQ_INT(moe_key_worker(k, sizeof k, "moemesh", "a-worker-id-of-thirty-bytes"),
                  MOE_ERANGE);
    ASSERT_EQ_INT(k[0], 0);
    ASSERT_EQ_INT(moe_key_events(k, 0, "moemesh"), MOE_ERANGE);
    /* the longest prefix and id that pass the check: every key fits */
    char prefix[MOE_SCHEMA_PREFIX_MAX + 2], id[MOE_SCHEMA_ID_MAX + 2], buf[MOE_SCHEMA_KEY_MAX];
    memset(prefix, 'p', MOE_SCHEMA_PREFIX_MAX), prefix[MOE_SCHEMA_PREFIX_MAX] = 0;
    memset(id, 'w', MOE_SCHEMA_ID_MAX), id[MOE_SCHEMA_ID_MAX] = 0;
    ASSERT_EQ_INT(moe_schema_check_names(prefix, id, NULL), 0);
    ASSERT(moe_key_worker(buf, sizeof buf, prefix, id) > 0);
    ASSERT(moe_key_placement(buf, sizeof buf, prefix, UINT64_MAX) > 0);
    ASSERT(moe_key_ack(buf, sizeof buf, prefix, UINT64_MAX) > 0);
    ASSERT(moe_key_load(buf, sizeof buf, prefix, INT64_MIN) > 0);
    ASSERT(moe_key_workers_wanted(buf, sizeof buf, prefix) > 0);
    ASSERT(moe_key_placement_pending(buf, sizeof buf, prefix) > 0);
    const moe_event down = {.kind = MOE_EVENT_DOWN, .worker = id};
    ASSERT(moe_event_format(buf, sizeof buf, &down) > 0);
    /* one byte more is refused, naming which */
    moe_err err;
    strcat(prefix, "p");
    ASSERT_EQ_INT(moe_schema_check_names(prefix, NULL, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "prefix must have 1 to 200 bytes");
    strcat(id, "w");
    ASSERT_EQ_INT(moe_schema_check_names("moemesh", id, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "worker id must have 1 to 200 bytes");
    ASSERT_EQ_INT(moe_schema_check_names("", NULL, &err), MOE_EINVAL);
    ASSERT_EQ_INT(moe_schema_check_names(NULL, NULL, &err), MOE_EINVAL);
    ASSERT_EQ_INT(moe_schema_check_names("moemesh", "", &err), MOE_EINVAL);
}

TEST(schema_prefix_default) {
    ASSERT(!strcmp(moe_schema_prefix(NULL), "moemesh"));
    ASSERT(!strcmp(moe_schema_prefix(""), "moemesh"));
    ASSERT(!strcmp(moe_schema_prefix("p1"), "p1"));
    ASSERT(!strcmp(MOE_SCHEMA_PREFIX_DEFAULT, "moemesh"));
}

/* Buckets are unix seconds / 10, as docs/redis-schema.md and the shell
 * tests ($(date +%s) / 10) compute them. */
TEST(schema_load_bucket) {
    ASSERT_EQ_INT(MOE_SCHEMA_LOAD_BUCKET_S, 10);
    ASSERT_EQ_INT(moe_schema_load_bucket(0), 0);
    ASSERT_EQ_INT(moe_schema_load_bucket(9999), 0);
    ASSERT_EQ_INT(moe_schema_load_bucket(10000), 1);
    ASSERT_EQ_INT(moe_schema_load_bucket(1700000009999LL), 170000000);
    ASSERT_EQ_INT(moe_schema_load_bucket(1700000010000LL), 170000001);
    /* the TTLs the protocol names */
    ASSERT_EQ_INT(MOE_SCHEMA_LOAD_TTL_S, 600);
    ASSERT_EQ_INT(MOE_SCHEMA_ACK_TTL_S, 3600);
    ASSERT_EQ_INT(MOE_SCHEMA_PLACEMENT_OLD_TTL_S, 3600);
    ASSERT_EQ_INT(MOE_SCHEMA_LEASE_MS_DEFAULT, 3000);
    ASSERT_EQ_INT(MOE_SCHEMA_LEADER_TTL_MS_DEFAULT, 5000);
}

/* ==== Events ==================================================================== */

TEST(schema_events) {
    char m[64];
    moe_event ev = {.kind = MOE_EVENT_PENDING, .epoch = 7};
    ASSERT_EQ_INT(moe_event_format(m, sizeof m, &ev), 9);
    ASSERT(!strcmp(m, "pending 7"));
    ev = (moe_event){.kind = MOE_EVENT_ACTIVE, .epoch = UINT64_MAX};
    ASSERT(moe_event_format(m, sizeof m, &ev) > 0);
    ASSERT(!strcmp(m, "active 18446744073709551615"));
    ev = (moe_event){.kind = MOE_EVENT_DOWN, .worker = "w-3"};
    ASSERT(moe_event_format(m, sizeof m, &ev) > 0);
    ASSERT(!strcmp(m, "down w-3"));
    /* parsed back */
    moe_event got;
    ASSERT_EQ_INT(moe_event_parse(&got, "pending 7"), 0);
    ASSERT(got.kind == MOE_EVENT_PENDING && got.epoch == 7);
    ASSERT_EQ_INT(moe_event_parse(&got, "active 18446744073709551615"), 0);
    ASSERT(got.kind == MOE_EVENT_ACTIVE && got.epoch == UINT64_MAX);
    const char *msg = "down 10.0.0.5:50051";
    ASSERT_EQ_INT(moe_event_parse(&got, msg), 0);
    ASSERT(got.kind == MOE_EVENT_DOWN && got.worker == msg + 5);
    /* not events */
    static const char *bad[] = {"",
                                "pending",
                                "pending ",
                                "pending x",
                                "pending -1",
                                "pending 7 ",
                                " pending 7",
                                "Pending 7",
                                "active",
                                "active 1e3",
                                "active 18446744073709551616",
                                "down",
                                "down ",
                                "up w0",
                                "pending\t7"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (moe_event_parse(&got, bad[i]) != MOE_EFORMAT) TEST_FAIL("'%s' parsed", bad[i]);
    /* what cannot be written */
    ev = (moe_event){.kind = MOE_EVENT_DOWN};
    ASSERT_EQ_INT(moe_event_format(m, sizeof m, &ev), MOE_EINVAL);
    ev.worker = "";
    ASSERT_EQ_INT(moe_event_format(m, sizeof m, &ev), MOE_EINVAL);
    ev = (moe_event){.kind = (moe_event_kind)99, .epoch = 1};
    ASSERT_EQ_INT(moe_event_format(m, sizeof m, &ev), MOE_EINVAL);
    ev = (moe_event){.kind = MOE_EVENT_PENDING, .epoch = 12345};
    ASSERT_EQ_INT(moe_event_format(m, 13, &ev), MOE_ERANGE);
    ASSERT_EQ_INT(m[0], 0);
}

/* ==== Fields ==================================================================== */

TEST(schema_lease_fields) {
    /* the names docs/redis-schema.md gives the lease hash */
    ASSERT(!strcmp(MOE_LEASE_ADDR, "addr"));
    ASSERT(!strcmp(MOE_LEASE_CAPACITY_BYTES, "capacity_bytes"));
    ASSERT(!strcmp(MOE_LEASE_DEVICE, "device"));
    ASSERT(!strcmp(MOE_LEASE_DOMAIN, "domain"));
    ASSERT(!strcmp(MOE_LEASE_STATE, "state"));
    ASSERT(!strcmp(MOE_LEASE_HELD, "held"));
    ASSERT(!strcmp(MOE_LEASE_EPOCH, "epoch"));
    ASSERT(!strcmp(MOE_LEASE_MODEL, "model"));
    ASSERT(!strcmp(MOE_LEASE_N_LAYER, "n_layer"));
    ASSERT(!strcmp(MOE_LEASE_N_EXPERT, "n_expert"));
    ASSERT(!strcmp(MOE_LEASE_EXPERT_BYTES, "expert_bytes"));
    ASSERT(!strcmp(MOE_LEASE_PID, "pid"));
    ASSERT(!strcmp(MOE_LEASE_STARTED_MS, "started_ms"));
    ASSERT(!strcmp(MOE_LEASE_LEASE_MS, "lease_ms"));
    ASSERT(!strcmp(MOE_LEASE_STATE_READY, "ready"));
    ASSERT(!strcmp(MOE_LEASE_STATE_DRAINING, "draining"));
    ASSERT(!strcmp(MOE_LEASE_STATE_STARTING, "starting"));
}

TEST(schema_lease_layer_bytes) {
    const uint64_t bytes[5] = {0, 147456, 0, 10, 18446744073709551615ull};
    char s[128];
    ASSERT(moe_lease_layer_bytes_format(s, sizeof s, bytes, 5) > 0);
    ASSERT(!strcmp(s, "1:147456,3:10,4:18446744073709551615"));
    uint64_t got[5] = {9, 9, 9, 9, 9};
    ASSERT_EQ_INT(moe_lease_layer_bytes_parse(got, 5, s), 0);
    ASSERT(!memcmp(got, bytes, sizeof bytes));
    /* no MoE layer: "" and back */
    const uint64_t none[2] = {0, 0};
    ASSERT_EQ_INT(moe_lease_layer_bytes_format(s, sizeof s, none, 2), 0);
    ASSERT(!strcmp(s, ""));
    ASSERT_EQ_INT(moe_lease_layer_bytes_parse(got, 2, s), 0);
    ASSERT(got[0] == 0 && got[1] == 0);
    /* refused: a layer past the model, a zero or missing count, junk */
    static const char *bad[] = {"5:1", "1:0", "1:", ":5", "1", "x:1", "1:5x", "1;5", "-1:5", "1:-5",
                                "1:5,,2:3", " 1:5", "1:+5", "a", "1:18446744073709551616",
                                /* a comma with no entry after it, a layer named twice */
                                "1:5,", "3:10,", ",", "1:5,1:5", "1:5,3:10,1:6"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (moe_lease_layer_bytes_parse(got, 5, bad[i]) != MOE_EFORMAT)
            TEST_FAIL("'%s' parsed", bad[i]);
    ASSERT_EQ_INT(moe_lease_layer_bytes_format(s, 10, bytes, 5), MOE_ERANGE);
    ASSERT_EQ_INT(s[0], 0);
}

TEST(schema_expert_field) {
    char f[32];
    ASSERT_EQ_INT(moe_expert_field_format(f, sizeof f, 3, 17), 4);
    ASSERT(!strcmp(f, "3:17"));
    int l = -1, e = -1;
    ASSERT_EQ_INT(moe_expert_field_parse(f, &l, &e), 0);
    ASSERT(l == 3 && e == 17);
    ASSERT_EQ_INT(moe_expert_field_parse("0:0", &l, &e), 0);
    ASSERT(l == 0 && e == 0);
    ASSERT_EQ_INT(moe_expert_field_parse("1048576:1048576", &l, &e), 0);
    ASSERT(l == 1048576 && e == 1048576);
    static const char *bad[] = {"",     "3",    "3:",        ":3",        "3:1:2",
                                "a:1",  "1:b",  " 1:2",      "+1:2",      "1:2 ",
                                "-1:2", "1:-2", "1048577:0", "0:1048577", "99999999999999999999:1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (moe_expert_field_parse(bad[i], &l, &e) != MOE_EFORMAT) TEST_FAIL("'%s' parsed", bad[i]);
}

/* ==== The placement document ===================================================== */

/* Every field of two documents, with replicas compared by worker id. */
static void assert_same_doc(const moe_pldoc *a, const moe_pldoc *b) {
    ASSERT(a->epoch == b->epoch);
    if (strcmp(a->model, b->model)) TEST_FAIL("model '%s' vs '%s'", a->model, b->model);
    ASSERT_EQ_INT(a->n_workers, b->n_workers);
    for (int i = 0; i < a->n_workers; i++) {
        if (strcmp(a->ids[i], b->ids[i])) TEST_FAIL("id %d: '%s' vs '%s'", i, a->ids[i], b->ids[i]);
        if (strcmp(a->addrs[i], b->addrs[i]))
            TEST_FAIL("addr %d: '%s' vs '%s'", i, a->addrs[i], b->addrs[i]);
    }
    ASSERT_EQ_INT(a->n_experts, b->n_experts);
    for (size_t i = 0; i < a->n_experts; i++) {
        const moe_pldoc_expert *x = &a->experts[i], *y = &b->experts[i];
        ASSERT_EQ_INT(x->layer, y->layer);
        ASSERT_EQ_INT(x->expert, y->expert);
        ASSERT_EQ_INT(x->n_replicas, y->n_replicas);
        for (int k = 0; k < x->n_replicas; k++)
            ASSERT(!strcmp(a->ids[x->replicas[k]], b->ids[y->replicas[k]]));
    }
}

static moe_pldoc *write_read(const moe_pldoc *d, int n_layer, int n_expert, char **json) {
    char *js = NULL;
    moe_err err = {0};
    int rc = moe_pldoc_write(d, &js, &err);
    if (rc) TEST_FAIL("moe_pldoc_write: %d %s", rc, err.msg);
    moe_pldoc *got = NULL;
    rc = moe_pldoc_parse(&got, js, strlen(js), n_layer, n_expert, &err);
    if (rc) TEST_FAIL("moe_pldoc_parse(%s): %d %s", js, rc, err.msg);
    if (json)
        *json = js;
    else
        free(js);
    return got;
}

/* The exact bytes router-svc has always published, and back. */
TEST(schema_pldoc_write_exact) {
    char *ids[] = {"w2", "w0", "w1"}, *addrs[] = {"10.0.0.7:50051", "10.0.0.5:50051", "h:1"};
    int r0[] = {1, 2}, r1[] = {0}, r2[] = {2, 0, 1};
    moe_pldoc_expert ex[] = {{1, 0, 2, r0}, {1, 7, 1, r1}, {3, 5, 3, r2}, {2, 2, 0, NULL}};
    moe_pldoc d = {.epoch = 7,
                   .model = "llama/4x8/64/1234",
                   .n_workers = 3,
                   .ids = ids,
                   .addrs = addrs,
                   .n_experts = 4,
                   .experts = ex};
    char *js;
    moe_pldoc *got = write_read(&d, 4, 8, &js);
    static const char want[] =
        "{\"epoch\":7,\"model\":\"llama/4x8/64/1234\",\"workers\":{\"w2\":\"10.0.0.7:50051\","
        "\"w0\":\"10.0.0.5:50051\",\"w1\":\"h:1\"},\"experts\":[[1,0,[\"w0\",\"w1\"]],"
        "[1,7,[\"w2\"]],[3,5,[\"w1\",\"w2\",\"w0\"]],[2,2,[]]]}";
    if (strcmp(js, want)) TEST_FAIL("wrote\n  %s\nwant\n  %s", js, want);
    assert_same_doc(&d, got);
    moe_pldoc_free(got);
    free(js);
    /* empty: no workers, no experts, no model */
    moe_pldoc e = {.epoch = 0};
    got = write_read(&e, 0, 0, &js);
    ASSERT(!strcmp(js, "{\"epoch\":0,\"model\":\"\",\"workers\":{},\"experts\":[]}"));
    ASSERT(got->epoch == 0 && !strcmp(got->model, "") && !got->n_workers && !got->n_experts);
    moe_pldoc_free(got);
    free(js);
    /* the largest epoch the reader takes */
    e.epoch = 9007199254740991ull;
    got = write_read(&e, 0, 0, NULL);
    ASSERT(got->epoch == 9007199254740991ull);
    moe_pldoc_free(got);
}

/* d must be refused as MOE_EINVAL with a message containing what, *out NULL. */
static void write_refused(const moe_pldoc *d, const char *what) {
    char *js = (char *)(uintptr_t)1;
    moe_err err = {0};
    const int rc = moe_pldoc_write(d, &js, &err);
    if (rc != MOE_EINVAL) TEST_FAIL("rc %d (%s), want MOE_EINVAL for '%s'", rc, err.msg, what);
    ASSERT(js == NULL);
    ASSERT_STR_CONTAINS(err.msg, what);
    ASSERT_EQ_INT(moe_pldoc_write(d, &js, NULL), MOE_EINVAL); /* err may be NULL */
}

/* The writer refuses exactly what the reader (moe_pldoc_parse) would: a
 * document every consumer refuses would stall the round that publishes it. */
TEST(schema_pldoc_write_refuses) {
    char *ids[] = {"w0", NULL, "w2"}, *addrs[] = {"h:1", "h:2", "h:3"};
    int bad_hi[] = {3}, bad_lo[] = {-1}, ok[] = {0};
    moe_pldoc_expert ex[] = {{0, 0, 1, ok}};
    moe_pldoc d = {
        .epoch = 1, .n_workers = 3, .ids = ids, .addrs = addrs, .n_experts = 1, .experts = ex};
    write_refused(&d, "worker 1 has an empty id"); /* a NULL id */
    ids[1] = "";
    write_refused(&d, "worker 1 has an empty id");
    ids[1] = "w1";
    addrs[1] = NULL;
    write_refused(&d, "worker 'w1' has no address");
    addrs[1] = "";
    write_refused(&d, "worker 'w1' has no address");
    addrs[1] = "h:2";
    ids[2] = "w0";
    write_refused(&d, "worker 'w0' listed twice");
    ids[2] = "w2";
    ex[0].replicas = bad_hi;
    write_refused(&d, "replica 3 is no worker"); /* a replica past the workers */
    ex[0].replicas = bad_lo;
    write_refused(&d, "replica -1 is no worker");
    ex[0].replicas = ok;
    ex[0].layer = -1;
    write_refused(&d, "layer -1 expert 0) is out of range");
    ex[0].layer = (1 << 20) + 1;
    write_refused(&d, "out of range");
    ex[0].layer = 0;
    ex[0].expert = (1 << 20) + 1;
    write_refused(&d, "out of range");
    ex[0].expert = 0;
    d.epoch = 9007199254740992ull; /* the reader would refuse it */
    write_refused(&d, "above 2^53 - 1");
    d.epoch = 1;
    d.n_workers = 65537;
    write_refused(&d, "too many");
    d.n_workers = 3;
    char *js = NULL;
    moe_err err = {0};
    ASSERT_EQ_INT(moe_pldoc_write(&d, &js, &err), 0);
    free(js);
    /* what the reader refuses, written by hand, is refused by the reader */
    static const char *docs[] = {
        "{\"epoch\":1,\"workers\":{\"\":\"h:1\"},\"experts\":[]}",
        "{\"epoch\":1,\"workers\":{\"w0\":\"\"},\"experts\":[]}",
        "{\"epoch\":1,\"workers\":{\"w0\":\"h:1\",\"w0\":\"h:2\"},\"experts\":[]}"};
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        moe_pldoc *got = NULL;
        ASSERT_EQ_INT(moe_pldoc_parse(&got, docs[i], strlen(docs[i]), 0, 0, &err), MOE_EFORMAT);
    }
}

/* Reader, writer, reader: a document written by hand (spaces, escapes,
 * duplicate replicas) comes back the same after the writer. */
TEST(schema_pldoc_read_write_read) {
    static const char doc[] =
        "{\"epoch\": 4294967296, \"model\": \"m\\u00e9\\ud83d\\ude00\\\"\\\\/x\",\n"
        " \"workers\": {\"w\\t0\": \"h:1\", \"w\\u0001\": \"[::1]:2\", \"\xc3\xa9\": \"h:3\"},\n"
        " \"experts\": [[0, 0, [\"w\\t0\", \"\xc3\xa9\"]], [1e0, 2E0, []], [3, 1, "
        "[\"w\\u0001\", \"w\\t0\", \"w\\u0001\"]]], \"ignored\": [1, 2]}";
    moe_pldoc *a = NULL;
    moe_err err;
    if (moe_pldoc_parse(&a, doc, strlen(doc), 4, 4, &err)) TEST_FAIL("%s", err.msg);
    ASSERT(!strcmp(a->model, "m\xc3\xa9\xf0\x9f\x98\x80\"\\/x"));
    ASSERT_EQ_INT(a->experts[2].n_replicas, 2);
    char *js;
    moe_pldoc *b = write_read(a, 4, 4, &js);
    assert_same_doc(a, b);
    /* and the writer is a fixed point */
    char *js2;
    moe_pldoc *c = write_read(b, 4, 4, &js2);
    if (strcmp(js, js2)) TEST_FAIL("rewritten:\n  %s\n  %s", js, js2);
    moe_pldoc_free(a), moe_pldoc_free(b), moe_pldoc_free(c);
    free(js), free(js2);
}

/* A string of 1-12 characters from a set meant to break a JSON writer. */
static void rand_str(char *s, uint64_t *seed) {
    static const char *parts[] = {"a",
                                  "Z",
                                  "0",
                                  "-",
                                  ":",
                                  ".",
                                  "\"",
                                  "\\",
                                  "/",
                                  "\t",
                                  "\n",
                                  "\x01",
                                  "\x1f",
                                  "\x7f",
                                  " ",
                                  "{",
                                  "]",
                                  ",",
                                  "\xc3\xa9",
                                  "\xe2\x82\xac",
                                  "\xf0\x9f\x98\x80",
                                  "%s",
                                  "u0000"};
    const int n = 1 + (int)(test_rand_u64(seed) % 12);
    s[0] = 0;
    for (int i = 0; i < n; i++)
        strcat(s, parts[test_rand_u64(seed) % (sizeof parts / sizeof *parts)]);
}

/* 300 seeded random documents (0-20 workers, 0-60 experts, 0-all replicas,
 * ids, addresses and models from a hostile alphabet): written, read back,
 * every field equal. */
TEST(schema_pldoc_round_trip_random) {
    enum { NW = 20, NE = 60 };
    static char id_s[NW][160], addr_s[NW][160], model_s[160];
    static char *ids[NW], *addrs[NW];
    static int reps[NE][NW];
    static moe_pldoc_expert ex[NE];
    uint64_t seed = 0x5c4e3a0d1234ull;
    size_t total_reps = 0;
    for (int it = 0; it < 300; it++) {
        const int nw = (int)(test_rand_u64(&seed) % (NW + 1));
        const size_t ne = nw ? (size_t)(test_rand_u64(&seed) % (NE + 1)) : 0;
        const int n_layer = 1 + (int)(test_rand_u64(&seed) % 64);
        const int n_expert = 1 + (int)(test_rand_u64(&seed) % 256);
        for (int w = 0; w < nw; w++) {
            rand_str(id_s[w], &seed);
            snprintf(id_s[w] + strlen(id_s[w]), 16, "#%d", w); /* distinct */
            rand_str(addr_s[w], &seed);
            ids[w] = id_s[w], addrs[w] = addr_s[w];
        }
        rand_str(model_s, &seed);
        for (size_t i = 0; i < ne; i++) {
            ex[i].layer = (int32_t)(test_rand_u64(&seed) % (uint64_t)n_layer);
            ex[i].expert = (int32_t)(test_rand_u64(&seed) % (uint64_t)n_expert);
            ex[i].n_replicas = (int)(test_rand_u64(&seed) % (uint64_t)(nw + 1));
            ex[i].replicas = reps[i];
            /* distinct workers, in a random order: a partial Fisher-Yates */
            int perm[NW];
            for (int w = 0; w < nw; w++) perm[w] = w;
            for (int k = 0; k < ex[i].n_replicas; k++) {
                const int j = k + (int)(test_rand_u64(&seed) % (uint64_t)(nw - k));
                const int t = perm[k];
                perm[k] = perm[j], perm[j] = t;
                reps[i][k] = perm[k];
            }
            total_reps += (size_t)ex[i].n_replicas;
        }
        moe_pldoc d = {.epoch = test_rand_u64(&seed) % 9007199254740992ull,
                       .model = (it % 7) ? model_s : NULL,
                       .n_workers = nw,
                       .ids = ids,
                       .addrs = addrs,
                       .n_experts = ne,
                       .experts = ex};
        moe_pldoc *got = write_read(&d, n_layer, n_expert, NULL);
        moe_pldoc want = d;
        want.model = d.model ? d.model : "";
        assert_same_doc(&want, got);
        for (size_t i = 0; i < ne; i++) /* replicas keep their indices too */
            for (int k = 0; k < ex[i].n_replicas; k++)
                ASSERT_EQ_INT(got->experts[i].replicas[k], ex[i].replicas[k]);
        moe_pldoc_free(got);
    }
    fprintf(stderr, "300 documents, %zu replicas: written and read back equal\n", total_reps);
}

/* ==== Error replies from Redis ================================================== */

/* A fake Redis on 127.0.0.1: one connection at a time, each command answered
 * by its key (its second word): one containing "loading" or "wrongtype" gets
 * that error reply, "absent" nil, "seven" the string 7, "good:placement:7" a
 * valid document; anything else +OK. */
static const char FAKE_DOC[] =
    "{\"epoch\":7,\"workers\":{\"w0\":\"h:1\"},\"experts\":[[0,1,[\"w0\"]]]}";

static void fake_reply(int fd, const char *key) {
    char out[512];
    if (strstr(key, "loading"))
        snprintf(out, sizeof out, "-LOADING Redis is loading the dataset in memory\r\n");
    else if (strstr(key, "wrongtype"))
        snprintf(out, sizeof out,
                 "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n");
    else if (strstr(key, "absent"))
        snprintf(out, sizeof out, "$-1\r\n");
    else if (strstr(key, "seven"))
        snprintf(out, sizeof out, "$1\r\n7\r\n");
    else if (!strcmp(key, "good:placement:7"))
        snprintf(out, sizeof out, "$%zu\r\n%s\r\n", strlen(FAKE_DOC), FAKE_DOC);
    else
        snprintf(out, sizeof out, "+OK\r\n");
    ASSERT(write(fd, out, strlen(out)) == (ssize_t)strlen(out));
}

/* One RESP command ("*N\r\n" then N "$len\r\n<bytes>\r\n") at b[0..n):
 * its length, 0 if incomplete; its second word (or "") into key. */
static size_t fake_parse(const char *b, size_t n, char *key, size_t cap) {
    const char *p = b, *end = b + n;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) return 0;
    ASSERT(*p == '*');
    const long argc = strtol(p + 1, NULL, 10);
    p = nl + 1;
    key[0] = 0;
    for (long i = 0; i < argc; i++) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) return 0;
        ASSERT(*p == '$');
        const size_t len = (size_t)strtol(p + 1, NULL, 10);
        p = nl + 1;
        if ((size_t)(end - p) < len + 2) return 0;
        if (i == 1) snprintf(key, cap, "%.*s", (int)len, p);
        p += len + 2;
    }
    return (size_t)(p - b);
}

static void *fake_redis(void *arg) {
    const int ls = (int)(intptr_t)arg;
    for (;;) {
        const int fd = accept(ls, NULL, NULL);
        if (fd < 0) return NULL;
        char buf[65536], key[256];
        size_t n = 0;
        ssize_t k;
        while ((k = read(fd, buf + n, sizeof buf - n)) > 0) {
            n += (size_t)k;
            size_t used;
            while ((used = fake_parse(buf, n, key, sizeof key)) > 0) {
                fake_reply(fd, key);
                memmove(buf, buf + used, n - used);
                n -= used;
            }
        }
        close(fd);
    }
}

/* A link to a fresh fake Redis. */
static moe_rlink *fake_link(void) {
    const int ls = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(ls >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    ASSERT(bind(ls, (struct sockaddr *)&a, sizeof a) == 0 && listen(ls, 4) == 0);
    ASSERT(getsockname(ls, (struct sockaddr *)&a, &al) == 0);
    pthread_t th;
    ASSERT(pthread_create(&th, NULL, fake_redis, (void *)(intptr_t)ls) == 0);
    pthread_detach(th);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", ntohs(a.sin_port));
    moe_rlink *l;
    moe_err err;
    if (moe_rlink_create(&l, url, "test", &err) < 0) TEST_FAIL("%s", err.msg);
    return l;
}

/* An error reply is no answer about the key: MOE_EUNAVAIL (router-svc waits),
 * never MOE_ENOTFOUND (which would abandon its round or publish again). */
TEST(schema_pldoc_get_epoch_error_reply) {
    moe_rlink *l = fake_link();
    uint64_t e = 0;
    ASSERT_EQ_INT(moe_pldoc_get_epoch(l, "p:placement:seven", &e), 0);
    ASSERT_EQ_INT(e, 7);
    ASSERT_EQ_INT(moe_pldoc_get_epoch(l, "p:placement:absent", &e), MOE_ENOTFOUND);
    ASSERT_EQ_INT(moe_pldoc_get_epoch(l, "p:placement:loading", &e), MOE_EUNAVAIL);
    ASSERT_EQ_INT(moe_pldoc_get_epoch(l, "p:placement:wrongtype", &e), MOE_EUNAVAIL);
    ASSERT_EQ_INT(moe_pldoc_get_epoch(l, "p:placement:pending", &e), MOE_ENOTFOUND); /* "OK" */
    ASSERT(moe_rlink_get_stats(l).connected);
    moe_rlink_free(l);
}

TEST(schema_pldoc_fetch_error_reply) {
    moe_rlink *l = fake_link();
    moe_pldoc *d = NULL;
    moe_err err = {0};
    ASSERT_EQ_INT(moe_pldoc_fetch(&d, l, "good", 7, 4, 4, &err), 0);
    ASSERT(d && d->epoch == 7 && d->n_workers == 1 && d->n_experts == 1);
    moe_pldoc_free(d);
    ASSERT_EQ_INT(moe_pldoc_fetch(&d, l, "absent", 7, 4, 4, &err), MOE_ENOTFOUND);
    ASSERT(d == NULL);
    ASSERT_STR_CONTAINS(err.msg, "absent:placement:7 is missing");
    ASSERT_EQ_INT(moe_pldoc_fetch(&d, l, "loading", 7, 4, 4, &err), MOE_EUNAVAIL);
    ASSERT(d == NULL);
    ASSERT_STR_CONTAINS(err.msg, "LOADING");
    ASSERT_EQ_INT(moe_pldoc_fetch(&d, l, "wrongtype", 7, 4, 4, &err), MOE_EUNAVAIL);
    ASSERT_STR_CONTAINS(err.msg, "WRONGTYPE");
    moe_rlink_free(l);
}

static void count_errors(void *ud, size_t i, redisReply *r) {
    (void)i;
    *(int *)ud += r->type == REDIS_REPLY_ERROR;
}

/* A pipeline without a callback whose replies include an error: every reply
 * is read (the next command gets its own reply), and flush says so. */
TEST(rlink_flush_error_reply) {
    moe_rlink *l = fake_link();
    ASSERT_EQ_INT(moe_rlink_begin(l), 0);
    moe_rlink_append(l, "SET a 1");
    moe_rlink_append(l, "SET loading 1");
    moe_rlink_append(l, "SET b 1");
    moe_rlink_append(l, "SET wrongtype 1");
    moe_rlink_append(l, "SET c 1");
    ASSERT_EQ_INT(moe_rlink_flush(l, NULL, NULL), MOE_EIO);
    ASSERT(moe_rlink_get_stats(l).connected); /* the link stays up */
    redisReply *r = moe_rlink_cmd(l, "GET seven");
    ASSERT(r && r->type == REDIS_REPLY_STRING && !strcmp(r->str, "7"));
    freeReplyObject(r);
    /* all fine: 0 */
    ASSERT_EQ_INT(moe_rlink_begin(l), 0);
    moe_rlink_append(l, "SET a 1");
    moe_rlink_append(l, "SET b 1");
    ASSERT_EQ_INT(moe_rlink_flush(l, NULL, NULL), 0);
    /* with a callback, the callback judges the replies */
    int errors = 0;
    ASSERT_EQ_INT(moe_rlink_begin(l), 0);
    moe_rlink_append(l, "SET loading 1");
    moe_rlink_append(l, "SET a 1");
    ASSERT_EQ_INT(moe_rlink_flush(l, count_errors, &errors), 0);
    ASSERT_EQ_INT(errors, 1);
    moe_rlink_free(l);
}
