/* test_pldoc.c - the two parsers of what the services read from Redis, both
 * untrusted input: placement documents (libmesh/include/mesh/schema.h) and Redis
 * URLs (libmesh/include/mesh/rlink.h). Valid input is read exactly; anything else
 * is an error naming the problem, never a crash, a leak (build-san) or a
 * read past the bytes given (a guard page after the document). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mesh/schema.h"
#include "mesh/rlink.h"
#include "moe/error.h"
#include "svc/clock.h"
#include "test.h"

/* ==== Placement documents ======================================================= */

#define DOC_OK                                                                                     \
    "{\"epoch\": 7, \"model\": \"llama/4x8/64/1234\",\n"                                           \
    " \"workers\": {\"w2\": \"10.0.0.7:50051\", \"w0\": \"10.0.0.5:50051\", "                      \
    "\"w1\": \"10.0.0.6:50052\"},\n"                                                               \
    " \"experts\": [[1, 0, [\"w0\", \"w1\"]], [1, 7, [\"w2\"]], [3, 5, [\"w1\", \"w2\", "          \
    "\"w0\"]]]}"

static moe_pldoc *parse_ok(const char *json, int n_layer, int n_expert) {
    moe_pldoc *d = NULL;
    moe_err err = {0};
    int rc = moe_pldoc_parse(&d, json, strlen(json), n_layer, n_expert, &err);
    if (rc != 0) TEST_FAIL("moe_pldoc_parse(%s): %d %s", json, rc, err.msg);
    ASSERT(d != NULL);
    return d;
}

/* The status of parsing json (whose failure must leave *out NULL); err gets
 * the message. */
static int parse_rc_n(const char *json, size_t len, int n_layer, int n_expert, moe_err *err) {
    moe_pldoc *d = (moe_pldoc *)(uintptr_t)1;
    int rc = moe_pldoc_parse(&d, json, len, n_layer, n_expert, err);
    if (rc == 0) {
        ASSERT(d != NULL);
        moe_pldoc_free(d);
    } else {
        ASSERT(d == NULL);
    }
    return rc;
}

static int parse_rc(const char *json, int n_layer, int n_expert, moe_err *err) {
    return parse_rc_n(json, strlen(json), n_layer, n_expert, err);
}

/* json must be refused as MOE_EFORMAT with a message containing what. */
static void refuse(const char *json, int n_layer, int n_expert, const char *what) {
    moe_err err = {0};
    int rc = parse_rc(json, n_layer, n_expert, &err);
    if (rc != MOE_EFORMAT) TEST_FAIL("'%s': rc %d (%s), want MOE_EFORMAT", json, rc, err.msg);
    ASSERT_STR_CONTAINS(err.msg, what);
}

/* A document of one worker "w0" and experts (the JSON array's inside). */
static void refuse_experts(const char *experts, int n_layer, int n_expert, const char *what) {
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"epoch\": 1, \"workers\": {\"w0\": \"h:1\", \"w1\": \"h:2\"}, \"experts\": [%s]}",
             experts);
    refuse(buf, n_layer, n_expert, what);
}

static int replica_is(const moe_pldoc *d, size_t e, int k, const char *id) {
    return d->experts[e].replicas[k] == moe_pldoc_worker(d, id);
}

TEST(pldoc_parse_valid) {
    moe_pldoc *d = parse_ok(DOC_OK, 4, 8);
    ASSERT_EQ_INT(d->epoch, 7);
    ASSERT(!strcmp(d->model, "llama/4x8/64/1234"));
    /* workers in document order */
    ASSERT_EQ_INT(d->n_workers, 3);
    ASSERT(!strcmp(d->ids[0], "w2") && !strcmp(d->addrs[0], "10.0.0.7:50051"));
    ASSERT(!strcmp(d->ids[1], "w0") && !strcmp(d->addrs[1], "10.0.0.5:50051"));
    ASSERT(!strcmp(d->ids[2], "w1") && !strcmp(d->addrs[2], "10.0.0.6:50052"));
    /* experts in document order, replicas as indices into ids/addrs */
    ASSERT_EQ_INT(d->n_experts, 3);
    ASSERT_EQ_INT(d->experts[0].layer, 1);
    ASSERT_EQ_INT(d->experts[0].expert, 0);
    ASSERT_EQ_INT(d->experts[0].n_replicas, 2);
    ASSERT_EQ_INT(d->experts[0].replicas[0], 1);
    ASSERT_EQ_INT(d->experts[0].replicas[1], 2);
    ASSERT_EQ_INT(d->experts[1].layer, 1);
    ASSERT_EQ_INT(d->experts[1].expert, 7);
    ASSERT_EQ_INT(d->experts[1].n_replicas, 1);
    ASSERT_EQ_INT(d->experts[1].replicas[0], 0);
    ASSERT_EQ_INT(d->experts[2].layer, 3);
    ASSERT_EQ_INT(d->experts[2].expert, 5);
    ASSERT_EQ_INT(d->experts[2].n_replicas, 3);
    ASSERT(replica_is(d, 2, 0, "w1") && replica_is(d, 2, 1, "w2") && replica_is(d, 2, 2, "w0"));
    moe_pldoc_free(d);
    /* the bounds unchecked (0), whitespace around, no model, epoch 0 and the largest */
    d = parse_ok(" \t\r\n{\"experts\": [], \"workers\": {}, \"epoch\": 0}\n", 0, 0);
    ASSERT_EQ_INT(d->epoch, 0);
    ASSERT(d->model && !strcmp(d->model, ""));
    ASSERT_EQ_INT(d->n_workers, 0);
    ASSERT_EQ_INT(d->n_experts, 0);
    moe_pldoc_free(d);
    d = parse_ok("{\"epoch\": 9007199254740991, \"workers\": {}, \"experts\": []}", 4, 8);
    ASSERT(d->epoch == 9007199254740991ull);
    moe_pldoc_free(d);
    /* unknown keys are ignored; an expert may have no replica (yet) */
    d = parse_ok("{\"epoch\": 3, \"x\": [1, {\"y\": null}], \"workers\": {\"w0\": \"h:1\"}, "
                 "\"experts\": [[0, 0, []]]}",
                 1, 1);
    ASSERT_EQ_INT(d->n_experts, 1);
    ASSERT_EQ_INT(d->experts[0].n_replicas, 0);
    moe_pldoc_free(d);
    moe_pldoc_free(NULL);
}

TEST(pldoc_parse_duplicate_replicas_collapse) {
    moe_pldoc *d = parse_ok("{\"epoch\": 1, \"workers\": {\"a\": \"h:1\", \"b\": \"h:2\"}, "
                            "\"experts\": [[0, 1, [\"b\", \"a\", \"b\", \"b\", \"a\"]], "
                            "[0, 2, [\"a\", \"a\"]]]}",
                            2, 4);
    ASSERT_EQ_INT(d->experts[0].n_replicas, 2);
    ASSERT_EQ_INT(d->experts[0].replicas[0], 1);
    ASSERT_EQ_INT(d->experts[0].replicas[1], 0);
    ASSERT_EQ_INT(d->experts[1].n_replicas, 1);
    ASSERT_EQ_INT(d->experts[1].replicas[0], 0);
    moe_pldoc_free(d);
}

TEST(pldoc_parse_unknown_worker) {
    refuse_experts("[0, 0, [\"w0\", \"w9\"]]", 2, 2, "names a worker not in \"workers\"");
    refuse_experts("[0, 0, [\"W0\"]]", 2, 2, "names a worker not in \"workers\""); /* case */
    refuse_experts("[0, 0, [\"\"]]", 2, 2, "names a worker not in \"workers\"");
    refuse_experts("[0, 0, [\"w\"]]", 2, 2, "names a worker not in \"workers\"");
    /* a replica that is no string */
    refuse_experts("[0, 0, [0]]", 2, 2, "names a worker");
    refuse_experts("[0, 0, [null]]", 2, 2, "names a worker");
    refuse_experts("[0, 0, [[\"w0\"]]]", 2, 2, "names a worker");
    refuse_experts("[0, 0, [{\"w0\": 1}]]", 2, 2, "names a worker");
    /* the worker's address given instead of its id */
    refuse_experts("[0, 0, [\"h:1\"]]", 2, 2, "names a worker");
}

/* text parses, within n_layers and n_experts, to a first entry for layer
 * and expert. */
static void parse_first_expert(const char *text, int n_layers, int n_experts, int layer,
                               int expert) {
    moe_pldoc *d = parse_ok(text, n_layers, n_experts);
    ASSERT_EQ_INT(d->experts[0].layer, layer);
    ASSERT_EQ_INT(d->experts[0].expert, expert);
    moe_pldoc_free(d);
}

TEST(pldoc_parse_bounds) {
    parse_first_expert("{\"epoch\": 1, \"workers\": {\"w0\": \"h:1\"}, "
                       "\"experts\": [[3, 7, [\"w0\"]], [0, 0, [\"w0\"]]]}",
                       4, 8, 3, 7);
    refuse_experts("[4, 0, [\"w0\"]]", 4, 8, "within 4 layers and 8 experts");
    refuse_experts("[0, 8, [\"w0\"]]", 4, 8, "within 4 layers and 8 experts");
    refuse_experts("[0, 0, [\"w0\"]], [100, 0, [\"w0\"]]", 4, 8, "expert 1 is not");
    refuse_experts("[0, 1000000, [\"w0\"]]", 4, 8, "not [layer, expert, [workers]]");
    /* unchecked (0): anything up to 2^20 */
    parse_first_expert("{\"epoch\": 1, \"workers\": {}, \"experts\": [[1048576, 1048576, []]]}", 0,
                       0, 1048576, 1048576);
    refuse_experts("[1048577, 0, []]", 0, 0, "not [layer, expert, [workers]]");
    refuse_experts("[0, 1048577, []]", 0, 0, "not [layer, expert, [workers]]");
    /* one bound checked, the other not */
    refuse_experts("[0, 9, []]", 0, 8, "not [layer");
    refuse_experts("[9, 0, []]", 8, 0, "not [layer");
}

TEST(pldoc_parse_missing_fields) {
    static const char *docs[] = {
        "{\"workers\": {}, \"experts\": []}",
        "{\"epoch\": 1, \"experts\": []}",
        "{\"epoch\": 1, \"workers\": {}}",
        "{\"Epoch\": 1, \"workers\": {}, \"experts\": []}", /* names are case-sensitive */
        "{\"epoch\": 1, \"Workers\": {}, \"experts\": []}",
        "{}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++)
        refuse(docs[i], 4, 8, "placement: need {\"epoch\": N");
}

TEST(pldoc_parse_wrong_types) {
    char buf[512];
    /* epoch */
    static const char *epochs[] = {"-1",   "1.5",  "\"7\"", "true", "null",
                                   "[7]",  "{}",   "-0.5",  "1e-3", "9007199254740992",
                                   "1e16", "1e308"};
    for (size_t i = 0; i < sizeof epochs / sizeof *epochs; i++) {
        snprintf(buf, sizeof buf, "{\"epoch\": %s, \"workers\": {}, \"experts\": []}", epochs[i]);
        refuse(buf, 4, 8, "placement: need {\"epoch\": N");
    }
    /* an exact integer in another spelling is one */
    moe_pldoc *d = parse_ok("{\"epoch\": 7.0e0, \"workers\": {}, \"experts\": []}", 4, 8);
    ASSERT_EQ_INT(d->epoch, 7);
    moe_pldoc_free(d);
    /* model: a string when present */
    static const char *models[] = {"5", "null", "true", "[\"m\"]", "{}"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        snprintf(buf, sizeof buf, "{\"epoch\": 1, \"model\": %s, \"workers\": {}, \"experts\": []}",
                 models[i]);
        refuse(buf, 4, 8, "\"model\": \"...\" (optional)");
    }
    /* workers: an object of non-empty strings under non-empty ids */
    static const char *workers[] = {"[]", "[\"h:1\"]", "\"w0\"", "null", "1"};
    for (size_t i = 0; i < sizeof workers / sizeof *workers; i++) {
        snprintf(buf, sizeof buf, "{\"epoch\": 1, \"workers\": %s, \"experts\": []}", workers[i]);
        refuse(buf, 4, 8, "placement: need {\"epoch\": N");
    }
    static const char *addrs[] = {"50051", "null", "true", "[\"h:1\"]", "{\"h\": 1}", "\"\""};
    for (size_t i = 0; i < sizeof addrs / sizeof *addrs; i++) {
        snprintf(buf, sizeof buf,
                 "{\"epoch\": 1, \"workers\": {\"w0\": \"h:1\", \"w1\": %s}, \"experts\": []}",
                 addrs[i]);
        refuse(buf, 4, 8, "worker 'w1': its address must be a non-empty string");
    }
    refuse("{\"epoch\": 1, \"workers\": {\"\": \"h:1\"}, \"experts\": []}", 4, 8,
           "a worker id is empty");
    refuse("{\"epoch\": 1, \"workers\": {\"\\u0000x\": \"h:1\"}, \"experts\": []}", 4, 8,
           "a worker id is empty");
    /* experts: an array of [layer, expert, [ids]] */
    static const char *experts[] = {"{}", "\"x\"", "null", "{\"0\": [0, 0, []]}"};
    for (size_t i = 0; i < sizeof experts / sizeof *experts; i++) {
        snprintf(buf, sizeof buf, "{\"epoch\": 1, \"workers\": {}, \"experts\": %s}", experts[i]);
        refuse(buf, 4, 8, "placement: need {\"epoch\": N");
    }
    static const char *entries[] = {/* not a 3-element array */
                                    "[]", "[0]", "[0, 0]", "[0, 0, [\"w0\"], 1]", "[0, 0, [], []]",
                                    "{\"0\": 0, \"1\": 0, \"2\": []}", "null", "0", "\"w0\"",
                                    /* a layer or expert that is no integer >= 0 */
                                    "[\"0\", 0, []]", "[0, \"0\", []]", "[-1, 0, []]",
                                    "[0, -1, []]", "[0.5, 0, []]", "[0, 1.5, []]", "[null, 0, []]",
                                    "[true, 0, []]", "[[0], 0, []]",
                                    /* replicas that are no array */
                                    "[0, 0, \"w0\"]", "[0, 0, null]", "[0, 0, {}]", "[0, 0, 0]"};
    for (size_t i = 0; i < sizeof entries / sizeof *entries; i++)
        refuse_experts(entries[i], 4, 8, "is not [layer, expert, [workers]]");
    /* the bad entry named by position */
    refuse_experts("[0, 0, []], [1, 1, []], [2]", 4, 8, "expert 2 is not");
}

TEST(pldoc_parse_duplicate_workers) {
    refuse("{\"epoch\": 1, \"workers\": {\"w0\": \"h:1\", \"w1\": \"h:2\", \"w0\": \"h:3\"}, "
           "\"experts\": []}",
           4, 8, "worker 'w0' listed twice");
    /* the same id even when spelt with an escape */
    refuse("{\"epoch\": 1, \"workers\": {\"w0\": \"h:1\", \"w\\u0030\": \"h:1\"}, \"experts\": []}",
           4, 8, "listed twice");
    /* an id cut short by an escaped NUL is the id before it: still one id */
    refuse("{\"epoch\": 1, \"workers\": {\"w0\": \"h:1\", \"w0\\u0000x\": \"h:2\"}, "
           "\"experts\": []}",
           4, 8, "listed twice");
    /* two workers at one address are two workers */
    moe_pldoc *d = parse_ok("{\"epoch\": 1, \"workers\": {\"a\": \"h:1\", \"b\": \"h:1\"}, "
                            "\"experts\": []}",
                            4, 8);
    ASSERT_EQ_INT(d->n_workers, 2);
    moe_pldoc_free(d);
}

TEST(pldoc_parse_empty_and_not_json) {
    moe_err err;
    ASSERT_EQ_INT(parse_rc_n("", 0, 4, 8, &err), MOE_EFORMAT);
    ASSERT_STR_CONTAINS(err.msg, "not JSON");
    ASSERT_EQ_INT(parse_rc_n(NULL, 0, 4, 8, &err), MOE_EFORMAT);
    static const char *docs[] = {" ",
                                 "\n\n",
                                 "null",
                                 "true",
                                 "0",
                                 "\"epoch\"",
                                 "[]",
                                 "[{\"epoch\": 1, \"workers\": {}, \"experts\": []}]",
                                 "{,}",
                                 "{\"epoch\" 1}",
                                 "{'epoch': 1}",
                                 "epoch",
                                 "\x01\x02\x03",
                                 "\xff\xfe{}"};
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        int rc = parse_rc(docs[i], 4, 8, &err);
        if (rc != MOE_EFORMAT) TEST_FAIL("'%s': rc %d, want MOE_EFORMAT", docs[i], rc);
    }
    /* a NUL inside: what follows it counts, so the document is bad */
    static const char nul[] = "{\"epoch\": 1, \"workers\": {}, \"experts\": []}\0{\"x\": 1}";
    ASSERT_EQ_INT(parse_rc_n(nul, sizeof nul - 1, 4, 8, &err), MOE_EFORMAT);
    /* random bytes, and random bytes after a valid prefix */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    char buf[256];
    for (int it = 0; it < 4000; it++) {
        size_t n = (size_t)(test_rand_u64(&s) % sizeof buf), k = 0;
        if (it & 1) {
            k = (size_t)(test_rand_u64(&s) % 60);
            memcpy(buf, DOC_OK, k);
            if (n < k) n = k;
        }
        for (size_t i = k; i < n; i++) buf[i] = (char)test_rand_u64(&s);
        int rc = parse_rc_n(buf, n, 4, 8, &err);
        ASSERT(rc == MOE_EFORMAT);
    }
}

/* The document must end where len says: nothing but whitespace after it. */
TEST(pldoc_parse_trailing_bytes) {
    static const char *tails[] = {"x", "}", "]", "{}", ",", "\"\"", "0", "\x01", "{\"epoch\": 2}"};
    char buf[1024];
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        snprintf(buf, sizeof buf, "%s%s", DOC_OK, tails[i]);
        refuse(buf, 4, 8, "bytes after the JSON document");
        snprintf(buf, sizeof buf, "%s \n %s", DOC_OK, tails[i]);
        refuse(buf, 4, 8, "bytes after the JSON document");
    }
    snprintf(buf, sizeof buf, "%s \t\r\n", DOC_OK);
    moe_pldoc_free(parse_ok(buf, 4, 8));
}

/* Every proper prefix of a valid document is refused, parsed from the end
 * of a page followed by an inaccessible one: no byte past len is read. */
TEST(pldoc_parse_truncated) {
    const long pg = sysconf(_SC_PAGESIZE);
    char *m =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(m != MAP_FAILED);
    ASSERT_EQ_INT(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    static const char *docs[] = {
        DOC_OK,
        "{\"epoch\": 1, \"model\": \"m\\u00e9\\ud83d\\ude00\\\"\\\\\", \"workers\": "
        "{\"w\\t0\": \"h:1\"}, \"experts\": [[0, 0, [\"w\\t0\"]], [1e0, 2E0, []]]}",
    };
    for (size_t k = 0; k < sizeof docs / sizeof *docs; k++) {
        const size_t len = strlen(docs[k]);
        ASSERT(len < (size_t)pg);
        for (size_t n = 0; n <= len; n++) {
            char *p = m + pg - n;
            memcpy(p, docs[k], n);
            moe_err err;
            int rc = parse_rc_n(p, n, 4, 8, &err);
            if (n < len && rc != MOE_EFORMAT)
                TEST_FAIL("doc %zu cut to %zu of %zu bytes: rc %d, want MOE_EFORMAT", k, n, len,
                          rc);
            if (n == len && rc != 0) TEST_FAIL("doc %zu: %d %s", k, rc, err.msg);
        }
    }
    munmap(m, (size_t)pg * 2);
}

TEST(pldoc_parse_huge_numbers) {
    static const char *nums[] = {"1e308",
                                 "1e999",
                                 "-1e999",
                                 "18446744073709551616",
                                 "99999999999999999999999999999999999999999999999999999999999999999"
                                 "9999999999999999999999",
                                 "4294967296",
                                 "2147483648",
                                 "1048577"};
    char buf[512];
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        snprintf(buf, sizeof buf, "{\"epoch\": %s, \"workers\": {}, \"experts\": []}", nums[i]);
        if (i < 5) refuse(buf, 0, 0, "placement: "); /* cJSON reads 63 digits at most */
        snprintf(buf, sizeof buf, "[%s, 0, []]", nums[i]);
        refuse_experts(buf, 0, 0, "placement: ");
        snprintf(buf, sizeof buf, "[0, %s, []]", nums[i]);
        refuse_experts(buf, 0, 0, "placement: ");
    }
    /* an epoch past 2^32 is fine */
    moe_pldoc *d = parse_ok("{\"epoch\": 4294967296, \"workers\": {}, \"experts\": []}", 4, 8);
    ASSERT(d->epoch == 4294967296ull);
    moe_pldoc_free(d);
}

TEST(pldoc_parse_deep_nesting) {
    const size_t depth = 100000;
    char *buf = malloc(depth * 5 + 256);
    ASSERT(buf);
    moe_err err;
    /* the whole document */
    memset(buf, '[', depth);
    memset(buf + depth, ']', depth);
    ASSERT_EQ_INT(parse_rc_n(buf, depth * 2, 4, 8, &err), MOE_EFORMAT);
    memset(buf, '[', depth); /* unclosed */
    ASSERT_EQ_INT(parse_rc_n(buf, depth, 4, 8, &err), MOE_EFORMAT);
    /* inside a field: objects nested in an unknown key, arrays as a replica */
    size_t n = (size_t)sprintf(buf, "{\"epoch\": 1, \"workers\": {}, \"experts\": [], \"x\": ");
    for (size_t i = 0; i < depth; i++) memcpy(buf + n + 5 * i, "{\"a\":", 5);
    n += 5 * depth;
    ASSERT_EQ_INT(parse_rc_n(buf, n, 4, 8, &err), MOE_EFORMAT);
    n = (size_t)sprintf(buf,
                        "{\"epoch\": 1, \"workers\": {\"w0\": \"h:1\"}, \"experts\": [[0, 0, ");
    memset(buf + n, '[', depth);
    memset(buf + n + depth, ']', depth);
    n += 2 * depth;
    n += (size_t)sprintf(buf + n, "]]}");
    ASSERT_EQ_INT(parse_rc_n(buf, n, 4, 8, &err), MOE_EFORMAT);
    /* a moderate depth in an ignored key is still a document */
    n = (size_t)sprintf(buf, "{\"epoch\": 1, \"workers\": {}, \"experts\": [], \"x\": ");
    memset(buf + n, '[', 100);
    memset(buf + n + 100, ']', 100);
    n += 200;
    buf[n++] = '}';
    ASSERT_EQ_INT(parse_rc_n(buf, n, 4, 8, &err), 0);
    free(buf);
}

/* A full placement of a large model parses; too many workers is refused. */
TEST(pldoc_parse_large) {
    const int nl = 60, ne = 128, nw = 200;
    size_t cap = 8u << 20, n = 0;
    char *buf = malloc(cap);
    ASSERT(buf);
    n += (size_t)snprintf(buf + n, cap - n, "{\"epoch\": 12, \"workers\": {");
    for (int w = 0; w < nw; w++)
        n += (size_t)snprintf(buf + n, cap - n, "%s\"worker-%d\": \"10.1.%d.%d:50051\"",
                              w ? ", " : "", w, w / 256, w % 256);
    n += (size_t)snprintf(buf + n, cap - n, "}, \"experts\": [");
    for (int l = 0; l < nl; l++)
        for (int e = 0; e < ne; e++)
            n += (size_t)snprintf(buf + n, cap - n, "%s[%d, %d, [\"worker-%d\", \"worker-%d\"]]",
                                  l || e ? ", " : "", l, e, (l * ne + e) % nw,
                                  (l * ne + e + 1) % nw);
    n += (size_t)snprintf(buf + n, cap - n, "]}");
    ASSERT(n < cap);
    moe_pldoc *d = NULL;
    moe_err err;
    int rc = moe_pldoc_parse(&d, buf, n, nl, ne, &err);
    if (rc) TEST_FAIL("%d %s", rc, err.msg);
    ASSERT_EQ_INT(d->n_workers, nw);
    ASSERT_EQ_INT(d->n_experts, (size_t)nl * ne);
    for (size_t i = 0; i < d->n_experts; i++) {
        const moe_pldoc_expert *x = &d->experts[i];
        ASSERT_EQ_INT((size_t)x->layer * ne + (size_t)x->expert, i);
        ASSERT_EQ_INT(x->n_replicas, 2);
        ASSERT_EQ_INT(x->replicas[0], (int)(i % (size_t)nw));
        ASSERT_EQ_INT(x->replicas[1], (int)((i + 1) % (size_t)nw));
    }
    ASSERT_EQ_INT(moe_pldoc_worker(d, "worker-199"), 199);
    moe_pldoc_free(d);
    /* 65537 workers: too many */
    n = (size_t)snprintf(buf, cap, "{\"epoch\": 1, \"experts\": [], \"workers\": {");
    for (int w = 0; w < 65537; w++)
        n += (size_t)snprintf(buf + n, cap - n, "%s\"w%d\": \"h:1\"", w ? "," : "", w);
    n += (size_t)snprintf(buf + n, cap - n, "}}");
    ASSERT(n < cap);
    ASSERT_EQ_INT(parse_rc_n(buf, n, 4, 8, &err), MOE_EFORMAT);
    ASSERT_STR_CONTAINS(err.msg, "65537 workers, 0 experts: too many");
    free(buf);
}

/* Issue 14's finding: a 6 MB document of 65536 workers and experts naming
 * late workers (and one naming every worker) took 62 s to parse with a
 * linear search per name, past the 3 s lease of the registry thread that
 * reads it. Lookups are hashed now: this parses in tens of milliseconds;
 * the bound (10 s, for a loaded 2-core machine under ASan) only catches a
 * return of the quadratic search, which takes minutes here. */
TEST(pldoc_large_document_linear) {
    const int nw = 65536, ne = 200000, wide = 20000;
    const size_t cap = 12u << 20;
    char *buf = malloc(cap);
    ASSERT(buf != NULL);
    size_t n = (size_t)snprintf(buf, cap, "{\"epoch\": 1, \"workers\": {");
    for (int w = 0; w < nw; w++)
        n += (size_t)snprintf(buf + n, cap - n, "%s\"w%d\": \"h:1\"", w ? "," : "", w);
    n += (size_t)snprintf(buf + n, cap - n, "}, \"experts\": [[0, 0, [");
    for (int w = 0; w < wide; w++) /* one expert on 20000 workers, each named twice */
        n += (size_t)snprintf(buf + n, cap - n, "%s\"w%d\",\"w%d\"", w ? "," : "", nw - 1 - w,
                              nw - 1 - w);
    n += (size_t)snprintf(buf + n, cap - n, "]]");
    for (int e = 1; e < ne; e++)
        n += (size_t)snprintf(buf + n, cap - n, ",[%d, %d, [\"w%d\"]]", e % 4, e % 8,
                              nw - 1 - e % 100);
    n += (size_t)snprintf(buf + n, cap - n, "]}");
    ASSERT(n < cap);
    moe_pldoc *d = NULL;
    moe_err err;
    const int64_t t0 = moe_mono_ms();
    const int rc = moe_pldoc_parse(&d, buf, n, 4, 8, &err);
    const int64_t ms = moe_mono_ms() - t0;
    fprintf(stderr, "%.1f MB placement document (%d workers, %d experts) parsed in %lld ms\n",
            (double)n / 1e6, nw, ne, (long long)ms);
    if (rc) TEST_FAIL("%d %s", rc, err.msg);
    ASSERT_EQ_INT(d->n_workers, nw);
    ASSERT_EQ_INT(d->n_experts, (size_t)ne);
    ASSERT_EQ_INT(d->experts[0].n_replicas, wide);
    ASSERT_EQ_INT(d->experts[0].replicas[wide - 1], nw - wide);
    ASSERT_EQ_INT(d->experts[ne - 1].replicas[0], nw - 1 - (ne - 1) % 100);
    ASSERT(ms < 10000);
    moe_pldoc_free(d);
    free(buf);
}

TEST(pldoc_worker_lookup) {
    moe_pldoc *d = parse_ok(DOC_OK, 4, 8);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "w2"), 0);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "w0"), 1);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "w1"), 2);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "w3"), -1);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "W1"), -1);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "w"), -1);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "w10"), -1);
    ASSERT_EQ_INT(moe_pldoc_worker(d, ""), -1);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "10.0.0.5:50051"), -1); /* ids, not addresses */
    moe_pldoc_free(d);
    d = parse_ok("{\"epoch\": 1, \"workers\": {}, \"experts\": []}", 4, 8);
    ASSERT_EQ_INT(moe_pldoc_worker(d, "w0"), -1);
    moe_pldoc_free(d);
}

/* ==== Redis URLs ================================================================ */

static moe_redis_url url_ok(const char *s) {
    moe_redis_url u;
    moe_err err = {0};
    int rc = moe_redis_url_parse(&u, s, &err);
    if (rc != 0) TEST_FAIL("moe_redis_url_parse(%s): %d %s", s, rc, err.msg);
    return u;
}

/* s must be refused as MOE_EINVAL with a message containing what. */
static void url_refuse(const char *s, const char *what) {
    moe_redis_url u;
    moe_err err = {0};
    int rc = moe_redis_url_parse(&u, s, &err);
    if (rc != MOE_EINVAL)
        TEST_FAIL("'%s': rc %d, want MOE_EINVAL (host '%s' port %d db %d)", s ? s : "(null)", rc,
                  u.host, u.port, u.db);
    ASSERT_STR_CONTAINS(err.msg, what);
}

/* A URL and the host, port and database it parses to. */
typedef struct url_case {
    const char *url, *host;
    int port, db;
} url_case;

/* c->url parses to c's host, port and database, user and password. */
static void check_url(const url_case *c, const char *user, const char *password) {
    moe_redis_url u = url_ok(c->url);
    if (strcmp(u.host, c->host) || u.port != c->port || u.db != c->db || strcmp(u.user, user) ||
        strcmp(u.password, password))
        TEST_FAIL("'%s': host '%s' port %d db %d user '%s' password '%s', want host '%s' port %d "
                  "db %d user '%s' password '%s'",
                  c->url, u.host, u.port, u.db, u.user, u.password, c->host, c->port, c->db, user,
                  password);
}

/* Each URL of cases has no user and no password. */
#define CHECK_URLS(cases)                                                                          \
    for (size_t i_ = 0; i_ < sizeof cases / sizeof *cases; i_++) check_url(&cases[i_], "", "")

TEST(redis_url_defaults) {
    static const url_case cases[] = {
        {"localhost", "localhost", 6379, 0},
        {"redis://localhost", "localhost", 6379, 0},
        {"redis://10.0.0.1/", "10.0.0.1", 6379, 0},
        {"redis-0.redis.svc.cluster.local", "redis-0.redis.svc.cluster.local", 6379, 0},
        {"redis_1", "redis_1", 6379, 0},
    };
    CHECK_URLS(cases);
}

TEST(redis_url_host_port_db) {
    static const url_case cases[] = {
        {"127.0.0.1:6380", "127.0.0.1", 6380, 0},  {"redis://h:1", "h", 1, 0},
        {"redis://h:65535", "h", 65535, 0},        {"redis://h:6379/3", "h", 6379, 3},
        {"redis://h/15", "h", 6379, 15},           {"h:7000/2", "h", 7000, 2},
        {"redis://h:7000/", "h", 7000, 0},         {"redis://h:007000/0", "h", 7000, 0},
        {"redis://h/1000000", "h", 6379, 1000000},
    };
    CHECK_URLS(cases);
}

TEST(redis_url_credentials) {
    static const struct {
        url_case at;
        const char *user, *password;
    } cases[] = {
        {{"redis://:secret@h", "h", 6379, 0}, "", "secret"},
        {{"redis://secret@h:7000", "h", 7000, 0}, "", "secret"},
        {{"redis://alice:secret@h:7000/4", "h", 7000, 4}, "alice", "secret"},
        {{"redis://alice:@h", "h", 6379, 0}, "alice", ""},
        {{"redis://@h", "h", 6379, 0}, "", ""},
        /* the first ':' ends the user, the last '@' the password */
        {{"redis://alice:se:cr:et@h", "h", 6379, 0}, "alice", "se:cr:et"},
        {{"redis://alice:p@ss/w@h:1/2", "h", 1, 2}, "alice", "p@ss/w"},
        {{"s3cret@h", "h", 6379, 0}, "", "s3cret"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_url(&cases[i].at, cases[i].user, cases[i].password);
    /* lengths: user < 128, password < 256 */
    char s[700], cred[300];
    memset(cred, 'p', 255), cred[255] = 0;
    snprintf(s, sizeof s, "redis://:%s@h", cred);
    moe_redis_url u = url_ok(s);
    ASSERT_EQ_INT(strlen(u.password), 255);
    snprintf(s, sizeof s, "redis://:%sp@h", cred);
    url_refuse(s, "credentials too long");
    snprintf(s, sizeof s, "redis://%sp@h", cred);
    url_refuse(s, "password too long");
    memset(cred, 'u', 127), cred[127] = 0;
    snprintf(s, sizeof s, "redis://%s:pw@h", cred);
    u = url_ok(s);
    ASSERT_EQ_INT(strlen(u.user), 127);
    snprintf(s, sizeof s, "redis://%su:pw@h", cred);
    url_refuse(s, "credentials too long");
}

/* Error messages go to logs: they never show the credentials. */
TEST(redis_url_error_hides_credentials) {
    static const char *urls[] = {"redis://alice:hunter2@h:bad",   "redis://:hunter2@h:0",
                                 "redis://hunter2@h/x",           "redis://alice:hunter2@",
                                 "rediss://alice:hunter2@h:6379", "alice:hunter2@h:99999",
                                 "redis://alice:hunter2@h junk"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        moe_redis_url u;
        moe_err err = {0};
        ASSERT_EQ_INT(moe_redis_url_parse(&u, urls[i], &err), MOE_EINVAL);
        if (strstr(err.msg, "hunter2") || strstr(err.msg, "alice"))
            TEST_FAIL("'%s': the message shows the credentials: %s", urls[i], err.msg);
        ASSERT_STR_CONTAINS(err.msg, "***@");
    }
    url_refuse("redis://alice:hunter2@h:bad", "Redis URL 'redis://***@h:bad': bad port");
}

/* What services log for a URL: the credentials never appear. */
TEST(redis_url_redact) {
    static const char *const cases[][2] = {
        {"redis://:hunter2@h:6379/2", "redis://***@h:6379/2"},
        {"redis://alice:hunter2@10.0.0.1", "redis://***@10.0.0.1"},
        {"redis://alice:p@ss:hunter2@h", "redis://***@h"},
        {"hunter2@h:7000", "***@h:7000"},
        {"redis://h:6379", "redis://h:6379"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char shown[MOE_REDIS_URL_SHOWN];
        moe_redis_url_redact(shown, sizeof shown, cases[i][0]);
        if (strstr(shown, "hunter2") || strstr(shown, "alice"))
            TEST_FAIL("'%s' shown as '%s'", cases[i][0], shown);
        if (strcmp(shown, cases[i][1]))
            TEST_FAIL("'%s' shown as '%s', want '%s'", cases[i][0], shown, cases[i][1]);
    }
}

TEST(redis_url_bad_port) {
    static const char *urls[] = {"h:0",          "h:70000",  "h:65536", "h:abc",
                                 "h:",           "h:-1",     "h:+6379", "h: 6379",
                                 "h:6379x",      "h:63 79",  "h:0x10",  "h:99999999999999999999",
                                 "redis://h:/3", "h:6379:1", "h:-0",    "redis://h:6379.0"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) url_refuse(urls[i], "bad port");
}

TEST(redis_url_bad_db) {
    static const char *urls[] = {"h/x",   "h/-1",        "h/3x", "h/ 3",  "h/+3",
                                 "h/3/4", "h:1/1000001", "h//3", "h/0x1", "h/99999999999999999999"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++)
        url_refuse(urls[i], "bad database number");
}

TEST(redis_url_no_host) {
    url_refuse("", "empty Redis URL");
    url_refuse(NULL, "empty Redis URL");
    url_refuse("redis://", "no host");
    url_refuse(":6379", "no host");
    url_refuse("redis://:6379/1", "no host");
    url_refuse("redis://alice:pw@", "no host");
    url_refuse("redis://pw@:6379", "no host");
    url_refuse("/3", "no host");
}

TEST(redis_url_other_schemes) {
    static const char *urls[] = {"rediss://h:6380", "http://h:80",   "unix:///tmp/redis.sock",
                                 "REDIS://h",       "redis+tls://h", "://h"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++)
        url_refuse(urls[i], "only redis:// is supported");
    url_refuse("rediss://h:6380", "Redis URL 'rediss://h:6380': only redis:// is supported");
}

TEST(redis_url_trailing_junk) {
    url_refuse("redis://h:6379 x", "bad port");
    url_refuse("redis://h:6379/3 ", "bad database number");
    url_refuse("redis://h/3?x=1", "bad database number");
    static const char *urls[] = {"redis://h x",  "redis://h?db=1", "redis://h#frag",
                                 "h\n",          "h\t:6379",       "redis://[::1]:6379",
                                 "redis://h\\x", "redis://h\x01",  "redis://h%20"};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) url_refuse(urls[i], "bad host");
}

TEST(redis_url_long_host) {
    char host[300], s[400];
    memset(host, 'a', 255), host[255] = 0;
    snprintf(s, sizeof s, "redis://%s:1", host);
    moe_redis_url u = url_ok(s);
    ASSERT_EQ_INT(strlen(u.host), 255);
    ASSERT_EQ_INT(u.port, 1);
    snprintf(s, sizeof s, "redis://%sa:1", host);
    url_refuse(s, "host too long");
    snprintf(s, sizeof s, "%sa", host);
    url_refuse(s, "host too long");
    /* a very long URL: the message is cut, not overflowed */
    char *big = malloc(100000);
    ASSERT(big);
    memset(big, 'b', 99999), big[99999] = 0;
    url_refuse(big, "host too long");
    memcpy(big, "redis://h:1/", 12);
    url_refuse(big, "bad database number");
    free(big);
}

/* Epochs as GET replies carry them: decimal digits only, no overflow. */
TEST(pldoc_reply_epoch) {
    struct {
        const char *s;
        int type, ok;
        uint64_t want;
    } cases[] = {
        {"7", REDIS_REPLY_STRING, 1, 7},
        {"18446744073709551615", REDIS_REPLY_STRING, 1, UINT64_MAX},
        {"18446744073709551616", REDIS_REPLY_STRING, 0, 0},
        {"12abc", REDIS_REPLY_STRING, 0, 0},
        {"-3", REDIS_REPLY_STRING, 0, 0},
        {" 3", REDIS_REPLY_STRING, 0, 0},
        {"", REDIS_REPLY_STRING, 0, 0},
        {"7", REDIS_REPLY_STATUS, 0, 0},
        {"7", REDIS_REPLY_ERROR, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        redisReply r = {
            .type = cases[i].type, .str = (char *)cases[i].s, .len = strlen(cases[i].s)};
        uint64_t e = 99;
        ASSERT_EQ_INT(moe_reply_epoch(&r, &e), cases[i].ok);
        if (cases[i].ok) ASSERT(e == cases[i].want);
    }
    ASSERT_EQ_INT(moe_reply_epoch(NULL, NULL), 0);
    redisReply nil = {.type = REDIS_REPLY_NIL};
    uint64_t e;
    ASSERT_EQ_INT(moe_reply_epoch(&nil, &e), 0);
}
