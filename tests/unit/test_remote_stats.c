/* test_remote_stats.c - what other threads read of the remote backend
 * (mesh/remote.h): coverage (readiness) of a fixed placement and of a
 * placement document not taken yet, workers' down windows, per-worker round
 * trips and their buckets, the RTT hook, and the snapshot being published
 * once per wait, read concurrently (run under -fsanitize=thread to check the
 * locking). No processes: a backend is assembled by hand from
 * remote_internal.h, without gRPC. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/remote.h"
#include "remote_internal.h"
#include "svc/clock.h"
#include "test.h"

/* 3 layers (layer 0 dense), 4 experts: 8 routed pairs. */
static moe_model model;

static remote_be *fake(int n_workers) {
    memset(&model, 0, sizeof model);
    model.hp.n_layer = 3, model.hp.n_expert = 4, model.hp.n_layer_dense_lead = 1;
    remote_be *b = calloc(1, sizeof *b);
    ASSERT(b);
    b->be = (moe_expert_backend){b, "remote", NULL, NULL, NULL, NULL};
    b->m = &model;
    pthread_mutex_init(&b->pub_mu, NULL);
    b->cap = n_workers;
    b->w = calloc((size_t)n_workers, sizeof *b->w);
    for (int i = 0; i < n_workers; i++) {
        rworker *w = calloc(1, sizeof *w);
        char a[32];
        snprintf(a, sizeof a, "10.0.0.%d:50051", i);
        w->addr = strdup(a);
        b->w[b->n++] = w;
    }
    return b;
}

static void fake_free(remote_be *b) {
    for (int i = 0; i < b->n; i++) free(b->w[i]->addr), free(b->w[i]);
    free(b->w), free(b->pl.off), free(b->pl.rep);
    pthread_mutex_destroy(&b->pub_mu);
    free(b);
}

/* The placement: held[(l * 4 + e) * n + w] != 0 when worker w holds (l, e). */
static void place(remote_be *b, uint64_t epoch, const char *held) {
    const size_t np = 12;
    free(b->pl.off), free(b->pl.rep);
    b->pl.epoch = epoch;
    b->pl.off = calloc(np + 1, sizeof *b->pl.off);
    b->pl.rep = calloc(np * (size_t)b->n + 1, sizeof *b->pl.rep);
    uint32_t k = 0;
    for (size_t i = 0; i < np; i++) {
        b->pl.off[i] = k;
        for (int w = 0; w < b->n; w++)
            if (held[i * (size_t)b->n + (size_t)w] != '.') b->pl.rep[k++] = w;
    }
    b->pl.off[np] = k;
}

static moe_remote_coverage cover(remote_be *b) {
    moe_remote_coverage c;
    ASSERT_EQ_INT(moe_remote_get_coverage(&b->be, &c), 0);
    return c;
}

/* Workers a, b, c; per pair a 3-character column "abc" ('.' = not held). */
static const char held3[] =
    /* layer 0 (dense: not counted, even unheld) */
    "..."
    "..."
    "..."
    "..."
    /* layer 1: e0 a+c, e1 a+c, e2 b+c, e3 b+c */
    "a.c"
    "a.c"
    ".bc"
    ".bc"
    /* layer 2: e0 a, e1 a+c, e2 b+c, e3 nobody */
    "a.."
    "a.c"
    ".bc"
    "...";

TEST(remote_coverage_fixed_list) {
    remote_be *b = fake(3);
    place(b, 0, held3);
    moe_remote_coverage c = cover(b);
    ASSERT_EQ_INT(c.pairs, 8);
    ASSERT_EQ_INT(c.uncovered, 1); /* layer 2 expert 3: held by nobody */
    ASSERT_EQ_INT(c.unplaced, 1);
    ASSERT_EQ_INT(c.layer, 2);
    ASSERT_EQ_INT(c.expert, 3);
    ASSERT_EQ_INT(c.workers, 3);
    ASSERT_EQ_INT(c.workers_live, 3); /* never tried: live */
    ASSERT_EQ_INT(c.workers_known, 3);
    ASSERT_EQ_INT(c.epoch, 0);

    /* c in its down window: still covered by a and b (except 2:3) */
    const int64_t now = moe_mono_ms();
    b->w[2]->pub.down_until_ms = now + 60000;
    c = cover(b);
    ASSERT_EQ_INT(c.uncovered, 1);
    ASSERT_EQ_INT(c.workers_live, 2);
    /* and a: layer 1 e0, e1 and layer 2 e0, e1 lose their live holders */
    b->w[0]->pub.down_until_ms = now + 60000;
    c = cover(b);
    ASSERT_EQ_INT(c.uncovered, 5);
    ASSERT_EQ_INT(c.unplaced, 1);
    ASSERT_EQ_INT(c.layer, 1);
    ASSERT_EQ_INT(c.expert, 0);
    ASSERT_EQ_INT(c.workers_live, 1);
    /* a's window passes; c served again (0) */
    b->w[0]->pub.down_until_ms = now - 1;
    b->w[2]->pub.down_until_ms = 0;
    c = cover(b);
    ASSERT_EQ_INT(c.uncovered, 1);
    ASSERT_EQ_INT(c.workers_live, 3);

    /* only the published state counts: the compute thread's own is not read */
    b->w[1]->obs.down_until_ms = now + 60000;
    ASSERT_EQ_INT(cover(b).workers_live, 3);
    b->w[1]->dirty = 1;
    moe__remote_publish(b);
    c = cover(b);
    ASSERT_EQ_INT(c.workers_live, 2);
    ASSERT_EQ_INT(c.uncovered, 1); /* b's pairs all have c */
    fake_free(b);
}

TEST(remote_coverage_every_pair_held) {
    remote_be *b = fake(2);
    place(b, 5,
          "........"
          "a.a.a..b"
          "abababab");
    moe_remote_coverage c = cover(b);
    ASSERT_EQ_INT(c.uncovered, 0);
    ASSERT_EQ_INT(c.layer, -1);
    ASSERT_EQ_INT(c.expert, -1);
    ASSERT_EQ_INT(c.epoch, 5);
    b->w[1]->pub.down_until_ms = moe_mono_ms() + 60000;
    c = cover(b);
    ASSERT_EQ_INT(c.uncovered, 1); /* layer 1 expert 3: only b */
    ASSERT_EQ_INT(c.unplaced, 0);
    ASSERT_EQ_INT(c.layer, 1);
    ASSERT_EQ_INT(c.expert, 3);
    fake_free(b);
}

TEST(remote_coverage_document) {
    /* a document naming a known down worker (10.0.0.1), a known live one
     * (10.0.0.0) and one never met (10.0.0.9: live) */
    remote_be *b = fake(2);
    b->w[1]->pub.down_until_ms = moe_mono_ms() + 60000;
    char *addrs[] = {"10.0.0.9:50051", "10.0.0.1:50051", "10.0.0.0:50051"};
    char *ids[] = {"n", "w1", "w0"};
    int r_new[] = {0}, r_down[] = {1}, r_both[] = {1, 2}, r_bad[] = {7};
    moe_pldoc_expert ex[] =
        {
            {1, 0, 1, r_new}, {1, 1, 1, r_down}, {1, 2, 2, r_both},
            {1, 3, 1, r_bad}, {2, 0, 1, r_new},  {2, 1, 1, r_new},
            {2, 2, 1, r_new}, {2, 3, 2, r_both}, {0, 0, 1, r_down}, /* a dense layer: not counted */
        };
    moe_pldoc d = {.epoch = 9,
                   .model = "",
                   .n_workers = 3,
                   .ids = ids,
                   .addrs = addrs,
                   .n_experts = sizeof ex / sizeof ex[0],
                   .experts = ex};
    moe_remote_coverage c;
    pthread_mutex_lock(&b->pub_mu);
    ASSERT_EQ_INT(moe__remote_cover(b, &d, moe_mono_ms(), &c), 0);
    pthread_mutex_unlock(&b->pub_mu);
    ASSERT_EQ_INT(c.epoch, 9);
    ASSERT_EQ_INT(c.pairs, 8);
    ASSERT_EQ_INT(c.uncovered, 2); /* 1:1 (its one holder is down), 1:3 (a bad index) */
    ASSERT_EQ_INT(c.unplaced, 1);
    ASSERT_EQ_INT(c.layer, 1);
    ASSERT_EQ_INT(c.expert, 1);
    ASSERT_EQ_INT(c.workers, 3);
    ASSERT_EQ_INT(c.workers_live, 2);
    ASSERT_EQ_INT(c.workers_known, 2);
    fake_free(b);
}

TEST(remote_coverage_not_remote) {
    moe_expert_backend other = {NULL, "local", NULL, NULL, NULL, NULL};
    moe_remote_coverage c;
    ASSERT_EQ_INT(moe_remote_get_coverage(&other, &c), MOE_EINVAL);
    ASSERT_EQ_INT(c.pairs, 0);
    ASSERT_EQ_INT(c.layer, -1);
    ASSERT_EQ_INT(moe_remote_get_coverage(NULL, &c), MOE_EINVAL);
    moe_remote_worker_stats ws[1];
    ASSERT_EQ_INT(moe_remote_get_worker_stats(&other, ws, 1), 0);
    ASSERT_EQ_INT(moe_remote_set_rtt_hook(&other, NULL, NULL), MOE_EINVAL);
    ASSERT_EQ_INT(moe_remote_get_stats(&other).messages, 0);
}

typedef struct hook_seen {
    int calls;
    char addr[64];
    double ms;
    int rows;
} hook_seen;

static void hook(void *ud, const char *addr, double ms, int rows) {
    hook_seen *h = ud;
    h->calls++;
    snprintf(h->addr, sizeof h->addr, "%s", addr);
    h->ms = ms;
    h->rows = rows;
}

/* One message of rows to w answered rtt_us ago. */
static void answered(remote_be *b, rworker *w, int rows, int64_t rtt_us) {
    w->obs.messages++;
    w->obs.rows += (uint64_t)rows;
    w->n_rows = rows;
    w->sent_us = moe_mono_us() - rtt_us;
    moe__remote_note_result(b, w);
}

TEST(remote_worker_rtt_buckets) {
    remote_be *b = fake(3);
    place(b, 0, held3);
    hook_seen h = {0};
    ASSERT_EQ_INT(moe_remote_set_rtt_hook(&b->be, hook, &h), 0);
    answered(b, b->w[1], 5, 40000); /* 40 ms: within 50, not 25 */
    ASSERT_EQ_INT(h.calls, 1);
    ASSERT(!strcmp(h.addr, "10.0.0.1:50051"));
    ASSERT_EQ_INT(h.rows, 5);
    ASSERT(h.ms >= 40.0 && h.ms < 50.0);
    answered(b, b->w[1], 2, 0);       /* ~0 ms: every bucket */
    answered(b, b->w[1], 1, 2000000); /* 2 s: none (+Inf only) */
    moe__remote_note_failure(b->w[1]);
    b->st.messages = 3;

    /* nothing published yet: readers see zeros */
    moe_remote_worker_stats ws[3];
    ASSERT_EQ_INT(moe_remote_get_worker_stats(&b->be, ws, 3), 3);
    ASSERT_EQ_INT(ws[1].messages, 0);
    ASSERT_EQ_INT(moe_remote_get_stats(&b->be).messages, 0);

    moe__remote_publish(b);
    ASSERT_EQ_INT(moe_remote_get_stats(&b->be).messages, 3);
    ASSERT_EQ_INT(moe_remote_get_stats(&b->be).workers, 3);
    ASSERT_EQ_INT(moe_remote_get_worker_stats(&b->be, ws, 3), 3);
    ASSERT(!strcmp(ws[1].addr, "10.0.0.1:50051"));
    ASSERT_EQ_INT(ws[1].messages, 3);
    ASSERT_EQ_INT(ws[1].rows, 8);
    ASSERT_EQ_INT(ws[1].failures, 1);
    ASSERT_EQ_INT(ws[1].rtt_count, 3);
    ASSERT(ws[1].rtt_ms_sum >= 2040.0 && ws[1].rtt_ms_sum < 2100.0);
    static const int want[MOE_REMOTE_RTT_BUCKETS] = {1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2};
    for (int i = 0; i < MOE_REMOTE_RTT_BUCKETS; i++) ASSERT_EQ_INT(ws[1].rtt_le[i], want[i]);
    ASSERT_NEAR(moe_remote_rtt_le_ms[0], 0.25, 0);
    ASSERT_NEAR(moe_remote_rtt_le_ms[MOE_REMOTE_RTT_BUCKETS - 1], 1000, 0);
    ASSERT_EQ_INT(ws[0].messages, 0);
    ASSERT(ws[0].live && ws[1].live && ws[2].live);
    ASSERT(ws[0].in_placement && ws[1].in_placement && ws[2].in_placement);

    /* cap below n: n returned, cap filled; cap 0 with NULL */
    memset(ws, 0x55, sizeof ws);
    ASSERT_EQ_INT(moe_remote_get_worker_stats(&b->be, ws, 1), 3);
    ASSERT(!strcmp(ws[0].addr, "10.0.0.0:50051"));
    ASSERT_EQ_INT(ws[1].messages, 0x5555555555555555ULL);
    ASSERT_EQ_INT(moe_remote_get_worker_stats(&b->be, NULL, 0), 3);

    /* a worker the placement does not use; one in its down window */
    place(b, 0,
          "............"
          "a.ca.ca.ca.c"
          "a..a.ca.ca..");
    b->w[2]->obs.down_until_ms = moe_mono_ms() + 60000;
    b->w[2]->dirty = 1;
    moe__remote_publish(b);
    moe_remote_get_worker_stats(&b->be, ws, 3);
    ASSERT(ws[0].in_placement && !ws[1].in_placement && ws[2].in_placement);
    ASSERT(ws[0].live && ws[1].live && !ws[2].live);

    ASSERT_EQ_INT(moe_remote_set_rtt_hook(&b->be, NULL, NULL), 0);
    answered(b, b->w[0], 1, 0);
    ASSERT_EQ_INT(h.calls, 3);
    fake_free(b);
}

/* A reader polls while the compute thread counts and publishes: the
 * snapshot is always whole (each worker's buckets add up to its count, and
 * its count to its messages). Meant for -fsanitize=thread as well. */
typedef struct reader {
    remote_be *b;
    atomic_int stop, reads;
    int torn;
} reader;

static void *read_loop(void *arg) {
    reader *r = arg;
    moe_remote_worker_stats ws[3];
    while (!atomic_load(&r->stop)) {
        moe_remote_coverage c;
        if (moe_remote_get_coverage(&r->b->be, &c) < 0 || c.pairs != 8) r->torn++;
        const int n = moe_remote_get_worker_stats(&r->b->be, ws, 3);
        for (int i = 0; i < n && i < 3; i++)
            if (ws[i].rtt_le[MOE_REMOTE_RTT_BUCKETS - 1] != ws[i].rtt_count ||
                ws[i].rtt_count != ws[i].messages)
                r->torn++;
        (void)moe_remote_get_stats(&r->b->be);
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

TEST(remote_stats_concurrent_reader) {
    remote_be *b = fake(3);
    place(b, 0, held3);
    reader r = {.b = b};
    pthread_t th;
    ASSERT_EQ_INT(pthread_create(&th, NULL, read_loop, &r), 0);
    /* the reader runs before and after the writes (a loaded 2-core machine
     * may not schedule it at all otherwise); each wait bounded to 10 s */
    const int64_t t_end = moe_mono_ms() + 10000;
    while (atomic_load(&r.reads) == 0 && moe_mono_ms() < t_end) sched_yield();
    for (int batch = 0; batch < 20000; batch++) {
        for (int i = 0; i < 3; i++) {
            b->st.messages++;
            answered(b, b->w[i], 1, 0);
        }
        if (batch % 1000 == 0) { /* a worker fails, then serves again */
            b->w[batch / 1000 % 3]->obs.down_until_ms = moe_mono_ms() + 5;
            b->w[batch / 1000 % 3]->dirty = 1;
        }
        moe__remote_publish(b);
    }
    const int before = atomic_load(&r.reads);
    while (atomic_load(&r.reads) <= before + 1 && moe_mono_ms() < t_end) sched_yield();
    atomic_store(&r.stop, 1);
    pthread_join(th, NULL);
    ASSERT(atomic_load(&r.reads) > before + 1);
    ASSERT_EQ_INT(r.torn, 0);
    ASSERT_EQ_INT(moe_remote_get_stats(&b->be).messages, 60000);
    fake_free(b);
}
