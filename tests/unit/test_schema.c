/* test_schema.c - the Redis schema's one module (libmesh/include/mesh/schema.h):
 * every key builder against the exact names of docs/redis-schema.md, the
 * limits that keep keys whole, load buckets, event messages, lease and load
 * fields, and the placement document: what the writer writes, the reader
 * reads back, field for field (fixed documents and seeded random ones with
 * quotes, escapes, control characters and UTF-8 in every string). */
#include <inttypes.h>
#include <string.h>

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
    static const char *bad[] = {"5:1",      "1:0",  "1:",   ":5",   "1",
                                "x:1",      "1:5x", "1;5",  "-1:5", "1:-5",
                                "1:5,,2:3", " 1:5", "1:+5", "a",    "1:18446744073709551616"};
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
    int rc = moe_pldoc_write(d, &js);
    if (rc) TEST_FAIL("moe_pldoc_write: %d", rc);
    moe_pldoc *got = NULL;
    moe_err err;
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

TEST(schema_pldoc_write_refuses) {
    char *ids[] = {"w0", NULL}, *addrs[] = {"h:1", "h:2"};
    int bad_hi[] = {2}, bad_lo[] = {-1}, ok[] = {0};
    moe_pldoc_expert ex[] = {{0, 0, 1, ok}};
    moe_pldoc d = {
        .epoch = 1, .n_workers = 2, .ids = ids, .addrs = addrs, .n_experts = 1, .experts = ex};
    char *js = (char *)(uintptr_t)1;
    ASSERT_EQ_INT(moe_pldoc_write(&d, &js), MOE_EINVAL); /* a NULL id */
    ASSERT(js == NULL);
    ids[1] = "w1";
    addrs[1] = NULL;
    ASSERT_EQ_INT(moe_pldoc_write(&d, &js), MOE_EINVAL); /* a NULL address */
    addrs[1] = "h:2";
    ex[0].replicas = bad_hi;
    ASSERT_EQ_INT(moe_pldoc_write(&d, &js), MOE_EINVAL); /* a replica past the workers */
    ex[0].replicas = bad_lo;
    ASSERT_EQ_INT(moe_pldoc_write(&d, &js), MOE_EINVAL);
    ex[0].replicas = ok;
    d.epoch = 9007199254740992ull; /* the reader would refuse it */
    ASSERT_EQ_INT(moe_pldoc_write(&d, &js), MOE_EINVAL);
    d.epoch = 1;
    ASSERT_EQ_INT(moe_pldoc_write(&d, &js), 0);
    free(js);
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
