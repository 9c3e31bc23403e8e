/* test_router_check.c - which leases router-svc believes (router-svc/
 * router_check.c): a lease like a worker's passes; each defect a hostile
 * writer of leases could choose is refused with its reason; the checks
 * against the deployment's shape; each refused id counted once while it
 * fails the same check; suspects (workers that missed an acknowledgement)
 * cleared only by a valid acknowledgement of a later epoch.
 * tests/integration/rogue_worker.sh runs them against real leases. */
#include <string.h>

#include "mesh/schema.h"
#include "router_internal.h"
#include "test.h"

#define NOW 1700000000000LL

/* A lease as a worker writes it: 2 layers x 4 experts of 1000 bytes. */
static rs_worker good(void) {
    return (rs_worker){.id = "w0",
                       .addr = "10.0.0.5:50051",
                       .domain = "z1",
                       .model = "llama/2x4/64/1234",
                       .held = "L0:0-1;L1:3",
                       .expert_bytes = "0:1000,1:1000",
                       .capacity = 1 << 20,
                       .epoch = 7,
                       .n_layer = 2,
                       .n_expert = 4,
                       .started_ms = NOW - 5000,
                       .pttl_ms = 2500,
                       .lease_ms = 3000,
                       .fields = RS_F_ALL};
}

static rt_reject check(const rs_worker *w, char *why) {
    return rt_lease_check(w, NOW, 9, why, 160);
}

TEST(router_lease_check_fields) {
    char why[160];
    rs_worker w = good();
    ASSERT_EQ_INT(check(&w, why), RT_REJECT_NONE);
    w.pttl_ms = 3000, w.epoch = 9, w.started_ms = NOW + RT_SKEW_MS; /* the edges pass */
    ASSERT_EQ_INT(check(&w, why), RT_REJECT_NONE);
#define REFUSED(field_change, reason, text)                                                        \
    do {                                                                                           \
        rs_worker w_ = good();                                                                     \
        field_change;                                                                              \
        why[0] = 0;                                                                                \
        ASSERT_EQ_INT(check(&w_, why), reason);                                                    \
        ASSERT_STR_CONTAINS(why, text);                                                            \
    } while (0)
    REFUSED(w_.fields &= ~RS_F_STARTED, RT_REJECT_FIELDS, "no field 'started_ms'");
    REFUSED(w_.fields &= ~RS_F_STATE, RT_REJECT_FIELDS, "no field 'state'");
    REFUSED(w_.bad_field = MOE_LEASE_N_EXPERT, RT_REJECT_FIELDS, "'n_expert' has a bad value");
    REFUSED(w_.n_layer = 0, RT_REJECT_FIELDS, "n_layer 0");
    REFUSED(w_.n_expert = 5000, RT_REJECT_FIELDS, "n_expert 5000");
    REFUSED(w_.capacity = 0, RT_REJECT_FIELDS, "capacity_bytes 0");
    REFUSED(w_.model = "", RT_REJECT_FIELDS, "model ''");
    REFUSED(w_.addr = "nohost", RT_REJECT_ADDR, "'nohost' is not host:port");
    REFUSED(w_.addr = "h:0", RT_REJECT_ADDR, "not host:port");
    REFUSED(w_.lease_ms = 999999, RT_REJECT_LEASE_MS, "lease_ms 999999 is outside 300..60000");
    REFUSED(w_.lease_ms = 100, RT_REJECT_LEASE_MS, "outside");
    REFUSED(w_.pttl_ms = -1, RT_REJECT_TTL, "no TTL");
    REFUSED(w_.pttl_ms = 3001, RT_REJECT_TTL, "TTL 3001 ms is above its lease_ms 3000");
    REFUSED(w_.started_ms = NOW + RT_SKEW_MS + 1, RT_REJECT_STARTED, "in the future");
    REFUSED(w_.started_ms = 0, RT_REJECT_STARTED, "not a time");
    REFUSED(w_.epoch = 10, RT_REJECT_EPOCH, "epoch 10 was never issued (at most 9)");
    REFUSED(w_.epoch = 0, RT_REJECT_HELD, "holds experts at epoch 0");
#undef REFUSED
    /* no epoch known yet (a standby, a new leader): only the ceiling */
    w = good();
    w.epoch = RT_EPOCH_MAX;
    ASSERT_EQ_INT(rt_lease_check(&w, NOW, RT_EPOCH_MAX, why, sizeof why), RT_REJECT_NONE);
    w.epoch = RT_EPOCH_MAX + 1;
    ASSERT_EQ_INT(rt_lease_check(&w, NOW, RT_EPOCH_MAX, why, sizeof why), RT_REJECT_EPOCH);
    w = good();
    w.epoch = 0, w.held = ""; /* a new worker */
    ASSERT_EQ_INT(check(&w, why), RT_REJECT_NONE);
    ASSERT_STR_EQ(rt_reject_name(RT_REJECT_LEASE_MS), "lease_ms");
    ASSERT_STR_EQ(rt_reject_name(RT_REJECT_NO_ACK), "no_ack");
}

TEST(router_lease_check_shape) {
    char why[160];
    const uint64_t bytes[2] = {1000, 1000}, dense_first[2] = {0, 1000};
    rs_worker w = good();
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, bytes, why, sizeof why), RT_REJECT_NONE);
    w.held = "*"; /* too many to list */
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, bytes, why, sizeof why), RT_REJECT_NONE);
    w = good();
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 8, bytes, why, sizeof why), RT_REJECT_SHAPE);
    ASSERT_STR_CONTAINS(why, "2 layers x 4 experts, not the deployment's 2 x 8");
    w.expert_bytes = "0:1000,1:999";
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, bytes, why, sizeof why), RT_REJECT_SHAPE);
    w.expert_bytes = "0:1000,1:1000,9:1";
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, bytes, why, sizeof why), RT_REJECT_SHAPE);
    w = good();
    w.held = "L1:7";
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, bytes, why, sizeof why), RT_REJECT_HELD);
    w = good(); /* layer 0 dense in the deployment: experts held there cannot be */
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, dense_first, why, sizeof why), RT_REJECT_SHAPE);
    w.expert_bytes = "1:1000";
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, dense_first, why, sizeof why), RT_REJECT_HELD);
    w.held = "L1:0-3";
    ASSERT_EQ_INT(rt_lease_check_shape(&w, 2, 4, dense_first, why, sizeof why), RT_REJECT_NONE);
}

TEST(router_rejected_counted_once) {
    router *r = calloc(1, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    char *ids[] = {"a", "b"}, *text[] = {"x", "y"};
    rt_reject why[] = {RT_REJECT_TTL, RT_REJECT_ADDR};
    for (int i = 0; i < 5; i++) rt_note_rejected(r, ids, why, text, 2); /* five reads */
    ASSERT_EQ_INT(r->st.rejected[RT_REJECT_TTL], 1);
    ASSERT_EQ_INT(r->st.rejected[RT_REJECT_ADDR], 1);
    ASSERT_EQ_INT(r->st.n_rejected, 2);
    why[0] = RT_REJECT_EPOCH; /* another reason: counted again */
    rt_note_rejected(r, ids, why, text, 2);
    ASSERT_EQ_INT(r->st.rejected[RT_REJECT_EPOCH], 1);
    rt_note_rejected(r, ids, why, text, 0); /* fixed, then failing again */
    ASSERT_EQ_INT(r->st.n_rejected, 0);
    rt_note_rejected(r, ids, why, text, 1);
    ASSERT_EQ_INT(r->st.rejected[RT_REJECT_EPOCH], 2);
    rt_check_free(r);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

TEST(router_suspects) {
    router *r = calloc(1, sizeof *r);
    rt_suspect_add(r, "fake", 5);
    ASSERT(rt_suspect_is(r, "fake") && !rt_suspect_is(r, "w0"));
    ASSERT_EQ_INT(rt_suspect_acked(r, "fake", 5), 0); /* the epoch it missed: not enough */
    rt_suspect_add(r, "fake", 8);                     /* missed another */
    ASSERT_EQ_INT(rt_suspect_acked(r, "fake", 7), 0);
    ASSERT(rt_suspect_is(r, "fake"));
    ASSERT_EQ_INT(rt_suspect_acked(r, "fake", 9), 1);
    ASSERT(!rt_suspect_is(r, "fake"));
    char id[16];
    for (int i = 0; i < 5000; i++) { /* bounded: the oldest are forgotten */
        snprintf(id, sizeof id, "f%d", i);
        rt_suspect_add(r, id, 1);
    }
    ASSERT_EQ_INT(r->n_suspects, 4096);
    ASSERT(!rt_suspect_is(r, "f0") && rt_suspect_is(r, "f4999"));
    rt_check_free(r);
    free(r);
}

/* The last workers drained, or every one a suspect: the experts still get a
 * live worker (the issue-14 finding: drained real workers and a dead fake). */
TEST(router_compute_never_leaves_experts) {
    router *r = calloc(1, sizeof *r);
    r->cfg.place = (rt_place_params){.min_replicas = 1, .target_load = 1000, .load_weight = 0.5};
    const rt_expert es[] = {{0, 0, 100, 0}, {0, 1, 100, 0}, {1, 0, 100, 0}, {1, 1, 100, 0}};
    rt_placement *pl;
    moe_err err;
    /* w0 serving, w1 draining: w0 takes everything */
    rt_worker ws[] = {{"w0", "a", 1000, 1, 0}, {"w1", "b", 1000, 1, 1}};
    ASSERT_EQ_INT(rt_compute_next(r, ws, 2, 2, es, 4, &pl, &err), 0);
    ASSERT_EQ_INT(pl->worker_bytes[0], 400);
    ASSERT_EQ_INT(pl->worker_bytes[1], 0);
    rt_placement_free(pl);
    /* both draining: they keep (here: get) the experts */
    ws[0].draining = 1, ws[1].draining = 1;
    ASSERT_EQ_INT(rt_compute_next(r, ws, 2, 2, es, 4, &pl, &err), 0);
    ASSERT_EQ_INT(pl->worker_bytes[0] + pl->worker_bytes[1], 400);
    rt_placement_free(pl);
    /* w0 serving but too small, w1 a suspect: w1 is used only because it must be */
    rt_worker small[] = {{"w0", "a", 250, 1, 0}, {"w1", "b", 1000, 1, 0}};
    ASSERT_EQ_INT(rt_compute_next(r, small, 1, 2, es, 4, &pl, &err), 0);
    ASSERT_EQ_INT(pl->worker_bytes[0] + pl->worker_bytes[1], 400);
    ASSERT(pl->worker_bytes[1] > 0);
    rt_placement_free(pl);
    /* every live worker a suspect */
    ASSERT_EQ_INT(rt_compute_next(r, ws, 0, 2, es, 4, &pl, &err), 0);
    rt_placement_free(pl);
    /* a suspect that is not needed gets nothing */
    rt_worker roomy[] = {{"w0", "a", 1000, 1, 0}, {"w1", "b", 1000, 1, 0}};
    ASSERT_EQ_INT(rt_compute_next(r, roomy, 1, 2, es, 4, &pl, &err), 0);
    ASSERT_EQ_INT(pl->n_workers, 1);
    rt_placement_free(pl);
    /* nothing fits at all: an error that says why, no placement */
    rt_worker tiny[] = {{"w0", "a", 10, 1, 1}};
    ASSERT_EQ_INT(rt_compute_next(r, tiny, 1, 1, es, 4, &pl, &err), MOE_ENOSPC);
    ASSERT(pl == NULL);
    ASSERT_STR_CONTAINS(err.msg, "bytes");
    free(r);
}
