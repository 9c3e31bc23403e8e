/* test_placement.c - router-svc's placement algorithm (router-svc/placement.h):
 * balance, replicas and failure domains, hot experts, stability, failover,
 * draining, capacity errors, the autoscaling signal, and seeded random
 * clusters whose invariants are checked independently of the library. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mesh/schema.h"
#include "moe/error.h"
#include "placement.h"
#include "test.h"

#define MAXW 32
#define MAXE 512

typedef struct {
    rt_worker w[MAXW];
    char ids[MAXW][16];
    char doms[MAXW][16];
    size_t nw;
    rt_expert e[MAXE];
    size_t ne;
} cluster;

/* n workers "w0".."w{n-1}" of one capacity; domain "d{i % n_domains}" (none if 0) */
static void add_workers(cluster *c, size_t n, uint64_t cap, int n_domains) {
    for (size_t i = 0; i < n; i++) {
        size_t k = c->nw++;
        snprintf(c->ids[k], sizeof c->ids[k], "w%zu", k);
        snprintf(c->doms[k], sizeof c->doms[k], "d%d",
                 n_domains ? (int)(k % (size_t)n_domains) : 0);
        c->w[k] = (rt_worker){.id = c->ids[k],
                              .domain = n_domains ? c->doms[k] : NULL,
                              .capacity_bytes = cap,
                              .alive = 1};
    }
}

static void add_expert(cluster *c, int layer, int expert, uint64_t bytes, double load) {
    c->e[c->ne++] = (rt_expert){.layer = layer, .expert = expert, .bytes = bytes, .load = load};
}

/* Experts 0..n-1 of layer 0, of bytes each, with the loads given. */
static void add_experts(cluster *c, uint64_t bytes, const double *loads, int n) {
    for (int i = 0; i < n; i++) add_expert(c, 0, i, bytes, loads[i]);
}

static rt_placement *place(const cluster *c, const rt_place_params *p, const rt_placement *prev) {
    rt_placement *pl = NULL;
    moe_err err = {0};
    int rc = rt_placement_compute(&pl, c->w, c->nw, c->e, c->ne, p, prev, &err);
    if (rc < 0) TEST_FAIL("rt_placement_compute: %d %s", rc, err.msg);
    return pl;
}

/* Experts 0..n-1 of pl have want[i] replicas each. */
static void assert_replicas(const rt_placement *pl, const int *want, int n) {
    for (int i = 0; i < n; i++)
        if (pl->experts[i].n_replicas != want[i])
            TEST_FAIL("expert %d: %d replicas, want %d", i, pl->experts[i].n_replicas, want[i]);
}

static int holds(const rt_placement_expert *e, int w) {
    for (int k = 0; k < e->n_replicas; k++)
        if (e->replicas[k] == w) return 1;
    return 0;
}

/* The invariants, recomputed from the inputs: every expert placed in input
 * order, min..max replicas on distinct eligible workers, capacity respected,
 * the stats consistent. */
static void check_invariants(const cluster *c, const rt_place_params *p, const rt_placement *pl) {
    ASSERT_EQ_INT(pl->n_workers, c->nw);
    ASSERT_EQ_INT(pl->n_experts, c->ne);
    uint64_t bytes[MAXW] = {0};
    size_t total = 0;
    for (size_t i = 0; i < c->ne; i++) {
        const rt_placement_expert *e = &pl->experts[i];
        ASSERT_EQ_INT(e->layer, c->e[i].layer);
        ASSERT_EQ_INT(e->expert, c->e[i].expert);
        ASSERT(e->n_replicas >= p->min_replicas);
        if (p->max_replicas) ASSERT(e->n_replicas <= p->max_replicas);
        for (int k = 0; k < e->n_replicas; k++) {
            int w = e->replicas[k];
            ASSERT(w >= 0 && (size_t)w < c->nw);
            if (k) ASSERT(e->replicas[k - 1] < w); /* ascending, so distinct */
            ASSERT(c->w[w].alive && !c->w[w].draining);
            bytes[w] += c->e[i].bytes;
        }
        total += (size_t)e->n_replicas;
    }
    ASSERT_EQ_INT(pl->n_assignments, total);
    for (size_t w = 0; w < c->nw; w++) {
        ASSERT_EQ_INT(pl->worker_bytes[w], bytes[w]);
        ASSERT_STR_CONTAINS(pl->worker_ids[w], c->w[w].id);
        uint64_t usable = (uint64_t)floor((double)c->w[w].capacity_bytes * (1 - p->headroom));
        if (bytes[w] > usable)
            TEST_FAIL("worker %zu holds %llu bytes > usable %llu", w, (unsigned long long)bytes[w],
                      (unsigned long long)usable);
    }
}

/* assignments equal, expert by expert, by worker id (indices may differ) */
static int same_assignments(const rt_placement *a, const rt_placement *b) {
    if (a->n_experts != b->n_experts) return 0;
    for (size_t i = 0; i < a->n_experts; i++) {
        const rt_placement_expert *x = &a->experts[i], *y = &b->experts[i];
        if (x->n_replicas != y->n_replicas) return 0;
        for (int k = 0; k < x->n_replicas; k++) {
            int found = 0;
            for (int j = 0; j < y->n_replicas; j++)
                found |= !strcmp(a->worker_ids[x->replicas[k]], b->worker_ids[y->replicas[j]]);
            if (!found) return 0;
        }
    }
    return 1;
}

static size_t count_on(const rt_placement *pl, int w) {
    size_t n = 0;
    for (size_t i = 0; i < pl->n_experts; i++) n += (size_t)holds(&pl->experts[i], w);
    return n;
}

static const rt_place_params P1 = {
    .min_replicas = 1, .max_replicas = 4, .headroom = 0, .target_load = 100, .load_weight = 0.5};

/* ==== Balance ==== */

/* 64 equal experts over 8 equal workers: exactly 8 each (800 bytes). */
TEST(placement_initial_equal_experts_exact) {
    static cluster c;
    add_workers(&c, 8, 1000, 0);
    for (int i = 0; i < 64; i++) add_expert(&c, i / 8, i % 8, 100, 50);
    rt_placement *pl = place(&c, &P1, NULL);
    check_invariants(&c, &P1, pl);
    for (size_t w = 0; w < 8; w++) ASSERT_EQ_INT(pl->worker_bytes[w], 800);
    for (size_t w = 0; w < 8; w++) ASSERT_NEAR(pl->worker_load[w], 400, 1e-9);
    ASSERT_EQ_INT(pl->n_assignments, 64);
    ASSERT_EQ_INT(pl->moves_added, 64);
    ASSERT_EQ_INT(pl->moves_removed, 0);
    ASSERT_EQ_INT(pl->epoch, 1);
    ASSERT_EQ_INT(pl->replicas_short, 0);
    rt_placement_free(pl);
}

/* 96 experts of 50..150 bytes over 8 workers, bytes only (load_weight 0):
 * every worker within the largest expert (150 bytes) of the mean; in
 * practice much closer (printed). */
TEST(placement_initial_balanced_random_sizes) {
    static cluster c;
    add_workers(&c, 8, 4000, 0);
    uint64_t s = 42, total = 0;
    for (int i = 0; i < 96; i++) {
        uint64_t b = 50 + test_rand_u64(&s) % 101;
        total += b;
        add_expert(&c, i / 16, i % 16, b, (double)(test_rand_u64(&s) % 90));
    }
    rt_place_params p = P1;
    p.load_weight = 0;
    rt_placement *pl = place(&c, &p, NULL);
    check_invariants(&c, &p, pl);
    double mean = total / 8.0, dev = 0;
    for (size_t w = 0; w < 8; w++) dev = fmax(dev, fabs((double)pl->worker_bytes[w] - mean));
    fprintf(stderr, "bytes per worker: mean %.1f, max deviation %.1f (%.2f%%)\n", mean, dev,
            100 * dev / mean);
    ASSERT(dev <= 150);
    rt_placement_free(pl);
}

/* Workers of 2000 and 6000 bytes: each fills the same fraction of its
 * capacity, within one expert (100 bytes) of the smaller one's share. */
TEST(placement_initial_heterogeneous_capacity) {
    static cluster c;
    add_workers(&c, 2, 2000, 0);
    add_workers(&c, 2, 6000, 0);
    for (int i = 0; i < 120; i++) add_expert(&c, 0, i, 100, 10);
    rt_placement *pl = place(&c, &P1, NULL);
    check_invariants(&c, &P1, pl);
    /* 12000 bytes over 16000: 75% each -> 1500, 1500, 4500, 4500 */
    ASSERT_EQ_INT(pl->worker_bytes[0], 1500);
    ASSERT_EQ_INT(pl->worker_bytes[1], 1500);
    ASSERT_EQ_INT(pl->worker_bytes[2], 4500);
    ASSERT_EQ_INT(pl->worker_bytes[3], 4500);
    rt_placement_free(pl);
}

/* ==== Replicas and failure domains ==== */

/* min_replicas 3 over 6 workers in 3 domains: 3 distinct workers in 3
 * distinct domains for every expert; min 2 likewise in 2 domains. */
TEST(placement_min_replicas_distinct_domains) {
    static cluster c;
    add_workers(&c, 6, 10000, 3); /* w0 d0, w1 d1, w2 d2, w3 d0, ... */
    for (int i = 0; i < 24; i++) add_expert(&c, i / 8, i % 8, 100 + 10 * (i % 5), 20);
    for (int min = 2; min <= 3; min++) {
        rt_place_params p = P1;
        p.min_replicas = min;
        rt_placement *pl = place(&c, &p, NULL);
        check_invariants(&c, &p, pl);
        for (size_t i = 0; i < c.ne; i++) {
            const rt_placement_expert *e = &pl->experts[i];
            ASSERT_EQ_INT(e->n_replicas, min);
            int seen[3] = {0};
            for (int k = 0; k < e->n_replicas; k++) seen[e->replicas[k] % 3]++;
            for (int d = 0; d < 3; d++) ASSERT(seen[d] <= 1);
        }
        rt_placement_free(pl);
    }
}

/* 3 replicas but 2 domains: distinct workers, both domains used. */
TEST(placement_more_replicas_than_domains) {
    static cluster c;
    add_workers(&c, 4, 10000, 2);
    for (int i = 0; i < 10; i++) add_expert(&c, 0, i, 100, 0);
    rt_place_params p = P1;
    p.min_replicas = 3;
    rt_placement *pl = place(&c, &p, NULL);
    check_invariants(&c, &p, pl);
    for (size_t i = 0; i < c.ne; i++) {
        const rt_placement_expert *e = &pl->experts[i];
        ASSERT_EQ_INT(e->n_replicas, 3);
        int d0 = 0, d1 = 0;
        for (int k = 0; k < 3; k++) *(e->replicas[k] % 2 ? &d1 : &d0) += 1;
        ASSERT(d0 >= 1 && d1 >= 1);
    }
    rt_placement_free(pl);
}

/* ==== Hot experts ==== */

/* 16 experts, load 50 each except expert 3 (400 -> 4 replicas) and expert
 * 7 (250 -> 3 replicas): they get those replicas on distinct workers, the
 * rest one each, and the load per worker stays within 25% of the mean. */
TEST(placement_hot_experts_get_replicas) {
    static cluster c;
    add_workers(&c, 4, 1000, 2);
    for (int i = 0; i < 16; i++) add_expert(&c, 0, i, 100, i == 3 ? 400 : i == 7 ? 250 : 50);
    rt_placement *pl = place(&c, &P1, NULL);
    check_invariants(&c, &P1, pl);
    for (size_t i = 0; i < 16; i++)
        ASSERT_EQ_INT(pl->experts[i].n_replicas, i == 3 ? 4 : i == 7 ? 3 : 1);
    ASSERT_EQ_INT(pl->replicas_short, 0);
    double mean = (14 * 50 + 400 + 250) / 4.0, worst = 0;
    for (size_t w = 0; w < 4; w++) worst = fmax(worst, pl->worker_load[w]);
    fprintf(stderr, "load per worker: mean %.1f, max %.1f\n", mean, worst);
    ASSERT(worst <= 1.25 * mean);
    rt_placement_free(pl);
}

/* Hand-computed capacity limit: loads 300, 200, 100, 100 want 3, 2, 1, 1
 * replicas (700 bytes) but 3 workers hold 600. After min (400 bytes) 200
 * remain: expert 0 (300/1) gets one, then expert 1 (200/1 > 300/2) gets
 * one: 2, 2, 1, 1, one replica short. */
TEST(placement_hot_experts_within_capacity) {
    static cluster c;
    add_workers(&c, 3, 200, 0);
    add_experts(&c, 100, (const double[]){300, 200, 100, 100}, 4);
    rt_placement *pl = place(&c, &P1, NULL);
    check_invariants(&c, &P1, pl);
    assert_replicas(pl, (const int[]){2, 2, 1, 1}, 4);
    ASSERT_EQ_INT(pl->replicas_short, 1);
    for (size_t w = 0; w < 3; w++) ASSERT_EQ_INT(pl->worker_bytes[w], 200);
    rt_placement_free(pl);
}

/* max_replicas caps a very hot expert; 0 means "as many as workers". */
TEST(placement_max_replicas) {
    static cluster c;
    add_workers(&c, 6, 10000, 0);
    add_experts(&c, 100, (const double[]){10000, 10}, 2);
    rt_placement *pl = place(&c, &P1, NULL);
    ASSERT_EQ_INT(pl->experts[0].n_replicas, 4);
    rt_placement_free(pl);
    rt_place_params p = P1;
    p.max_replicas = 0;
    pl = place(&c, &p, NULL);
    check_invariants(&c, &p, pl);
    assert_replicas(pl, (const int[]){6, 1}, 2);
    rt_placement_free(pl);
}

/* ==== Stability ==== */

static void mixed_cluster(cluster *c, uint64_t seed) {
    add_workers(c, 8, 6000, 3);
    uint64_t s = seed;
    for (int i = 0; i < 64; i++)
        add_expert(c, i / 16, i % 16, 80 + test_rand_u64(&s) % 60,
                   (double)(test_rand_u64(&s) % 350));
}

/* The same inputs and the previous placement give exactly the previous
 * placement: 0 moves, same epoch. Without a previous placement the result
 * is deterministic too. */
TEST(placement_stable_same_inputs) {
    static cluster c;
    mixed_cluster(&c, 7);
    rt_placement *a = place(&c, &P1, NULL);
    check_invariants(&c, &P1, a);
    rt_placement *b = place(&c, &P1, a);
    ASSERT_EQ_INT(b->moves_added, 0);
    ASSERT_EQ_INT(b->moves_removed, 0);
    ASSERT_EQ_INT(b->epoch, a->epoch);
    ASSERT(same_assignments(a, b));
    rt_placement *d = place(&c, &P1, NULL);
    ASSERT(same_assignments(a, d));
    rt_placement_free(d);
    rt_placement_free(b);
    rt_placement_free(a);
}

/* The previous placement is matched by worker id, not index: the same
 * workers listed in reverse order give 0 moves. */
TEST(placement_stable_worker_order) {
    static cluster c, r;
    mixed_cluster(&c, 8);
    rt_placement *a = place(&c, &P1, NULL);
    r = c;
    for (size_t i = 0; i < c.nw; i++) {
        r.w[i] = c.w[c.nw - 1 - i];
        r.w[i].id = c.ids[c.nw - 1 - i];
        r.w[i].domain = c.doms[c.nw - 1 - i];
    }
    rt_placement *b = place(&r, &P1, a);
    check_invariants(&r, &P1, b);
    ASSERT_EQ_INT(b->moves_added + b->moves_removed, 0);
    ASSERT(same_assignments(a, b));
    rt_placement_free(b);
    rt_placement_free(a);
}

/* Small load changes: within the same replica count -> 0 moves; one expert
 * over a threshold (250 -> 310: 3 -> 4 replicas) -> exactly 1 added; one
 * cooling down (-> 90: 1 replica) -> exactly its surplus removed, and
 * nothing else moves. Bound asserted: moves == sum |count change|. */
TEST(placement_stable_small_load_change) {
    static cluster c;
    add_workers(&c, 8, 6000, 3);
    for (int i = 0; i < 32; i++) add_expert(&c, 0, i, 100, i == 5 ? 250 : i == 9 ? 380 : 40);
    rt_placement *a = place(&c, &P1, NULL);
    ASSERT_EQ_INT(a->experts[5].n_replicas, 3);
    ASSERT_EQ_INT(a->experts[9].n_replicas, 4);

    for (int i = 0; i < 32; i++) c.e[i].load *= 1.1; /* 10% hotter: 275, 418 (capped), 44 */
    rt_placement *b = place(&c, &P1, a);
    ASSERT_EQ_INT(b->moves_added + b->moves_removed, 0);
    ASSERT_EQ_INT(b->epoch, a->epoch);

    c.e[5].load = 310;
    rt_placement *d = place(&c, &P1, b);
    check_invariants(&c, &P1, d);
    ASSERT_EQ_INT(d->experts[5].n_replicas, 4);
    ASSERT_EQ_INT(d->moves_added, 1);
    ASSERT_EQ_INT(d->moves_removed, 0);
    ASSERT_EQ_INT(d->epoch, b->epoch + 1);
    for (int k = 0; k < 3; k++) /* the old replicas stay */
        ASSERT(holds(&d->experts[5], b->experts[5].replicas[k]));

    c.e[9].load = 90;
    rt_placement *f = place(&c, &P1, d);
    check_invariants(&c, &P1, f);
    ASSERT_EQ_INT(f->experts[9].n_replicas, 1);
    ASSERT_EQ_INT(f->moves_added, 0);
    ASSERT_EQ_INT(f->moves_removed, 3);
    ASSERT(holds(&d->experts[9], f->experts[9].replicas[0]));
    for (size_t i = 0; i < c.ne; i++)
        if (i != 9) ASSERT_EQ_INT(f->experts[i].n_replicas, d->experts[i].n_replicas);
    rt_placement_free(f);
    rt_placement_free(d);
    rt_placement_free(b);
    rt_placement_free(a);
}

/* ==== Failover and draining ==== */

/* A dead worker: all its replicas go to survivors, every survivor keeps
 * every assignment it had, moves = 2 x its replica count. */
TEST(placement_dead_worker_reassigned) {
    static cluster c;
    add_workers(&c, 6, 4000, 3);
    for (int i = 0; i < 30; i++) add_expert(&c, i / 10, i % 10, 100, i % 7 == 0 ? 260 : 30);
    rt_place_params p = P1;
    p.min_replicas = 2;
    rt_placement *a = place(&c, &p, NULL);
    size_t on2 = count_on(a, 2);
    ASSERT(on2 > 0);
    c.w[2].alive = 0;
    rt_placement *b = place(&c, &p, a);
    check_invariants(&c, &p, b);
    ASSERT_EQ_INT(count_on(b, 2), 0);
    ASSERT_EQ_INT(b->worker_bytes[2], 0);
    ASSERT_EQ_INT(b->moves_removed, on2);
    ASSERT_EQ_INT(b->moves_added, on2);
    for (size_t i = 0; i < c.ne; i++) {
        ASSERT_EQ_INT(b->experts[i].n_replicas, a->experts[i].n_replicas);
        for (int k = 0; k < a->experts[i].n_replicas; k++) {
            int w = a->experts[i].replicas[k];
            if (w != 2) ASSERT(holds(&b->experts[i], w));
        }
    }
    fprintf(stderr, "dead worker held %zu replicas: %zu added, %zu removed\n", on2, b->moves_added,
            b->moves_removed);
    rt_placement_free(b);
    rt_placement_free(a);
}

/* A worker whose lease is gone from the list entirely: the same, matched by id. */
TEST(placement_missing_worker_reassigned) {
    static cluster c;
    add_workers(&c, 5, 4000, 0);
    for (int i = 0; i < 20; i++) add_expert(&c, 0, i, 100, 50);
    rt_placement *a = place(&c, &P1, NULL);
    size_t on0 = count_on(a, 0);
    static cluster r;
    r = c;
    r.nw = 4;
    for (size_t i = 0; i < 4; i++) r.w[i].id = c.ids[i + 1];
    rt_placement *b = place(&r, &P1, a);
    check_invariants(&r, &P1, b);
    ASSERT_EQ_INT(b->moves_removed, on0);
    ASSERT_EQ_INT(b->moves_added, on0);
    rt_placement_free(b);
    rt_placement_free(a);
}

/* A draining worker is emptied and gets nothing new; the others keep theirs. */
TEST(placement_draining_worker_emptied) {
    static cluster c;
    add_workers(&c, 4, 4000, 2);
    for (int i = 0; i < 24; i++) add_expert(&c, 0, i, 100, i < 3 ? 220 : 60);
    rt_placement *a = place(&c, &P1, NULL);
    size_t on1 = count_on(a, 1);
    ASSERT(on1 > 0);
    c.w[1].draining = 1;
    rt_placement *b = place(&c, &P1, a);
    check_invariants(&c, &P1, b);
    ASSERT_EQ_INT(count_on(b, 1), 0);
    ASSERT_EQ_INT(b->moves_removed, on1);
    for (size_t i = 0; i < c.ne; i++)
        for (int k = 0; k < a->experts[i].n_replicas; k++)
            if (a->experts[i].replicas[k] != 1)
                ASSERT(holds(&b->experts[i], a->experts[i].replicas[k]));
    rt_placement_free(b);
    rt_placement_free(a);
}

/* ==== Errors ==== */

/* min_replicas 2 of 3 experts x 100 bytes = 600 bytes > 2 x 250 = 500. */
TEST(placement_enospc_total_capacity) {
    static cluster c;
    add_workers(&c, 2, 250, 0);
    for (int i = 0; i < 3; i++) add_expert(&c, 0, i, 100, 0);
    rt_place_params p = P1;
    p.min_replicas = 2;
    rt_placement *pl = (rt_placement *)&c; /* must be reset to NULL */
    moe_err err = {0};
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_ENOSPC);
    ASSERT(pl == NULL);
    ASSERT_EQ_INT(err.code, MOE_ENOSPC);
    ASSERT_STR_CONTAINS(err.msg, "needs 600 bytes");
    ASSERT_STR_CONTAINS(err.msg, "500 usable bytes");
    fprintf(stderr, "%s\n", err.msg);
    /* headroom counts: 3 x 100 = 300 > 2 x 250 x 0.5 = 250 */
    p.min_replicas = 1;
    p.headroom = 0.5;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_ENOSPC);
    ASSERT_STR_CONTAINS(err.msg, "250 usable bytes");
}

/* 300 bytes fit 2 x 150 in total but 100-byte experts do not pack. */
TEST(placement_enospc_fragmentation) {
    static cluster c;
    add_workers(&c, 2, 150, 0);
    for (int i = 0; i < 3; i++) add_expert(&c, 0, i, 100, 0);
    rt_placement *pl = NULL;
    moe_err err = {0};
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &P1, NULL, &err), MOE_ENOSPC);
    ASSERT_STR_CONTAINS(err.msg, "needs 100 bytes");
    ASSERT_STR_CONTAINS(err.msg, "largest free space on an eligible worker without it is 50 bytes");
    fprintf(stderr, "%s\n", err.msg);
}

/* min_replicas 3 needs 3 eligible workers: 2 alive and 1 draining is not enough. */
TEST(placement_enospc_too_few_workers) {
    static cluster c;
    add_workers(&c, 4, 10000, 0);
    c.w[0].alive = 0;
    c.w[3].draining = 1;
    add_expert(&c, 0, 0, 100, 0);
    rt_place_params p = P1;
    p.min_replicas = 3;
    rt_placement *pl = NULL;
    moe_err err = {0};
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_ENOSPC);
    ASSERT_STR_CONTAINS(err.msg, "needs 3 distinct workers, but 2 of 4");
}

/* The incremental layout leaves no room for a new expert, a fresh one does:
 * prev puts experts 0 and 1 (60 bytes) on w0 and w1 of 100 bytes; a new
 * 80-byte expert fits only if 0 and 1 share a worker. */
TEST(placement_fresh_layout_when_incremental_does_not_fit) {
    static cluster c;
    add_workers(&c, 2, 100, 0);
    add_expert(&c, 0, 0, 40, 0);
    add_expert(&c, 0, 1, 40, 0);
    rt_placement *a = place(&c, &P1, NULL);
    ASSERT(a->experts[0].replicas[0] != a->experts[1].replicas[0]);
    add_expert(&c, 0, 2, 80, 0);
    rt_placement *b = place(&c, &P1, a);
    check_invariants(&c, &P1, b);
    ASSERT_EQ_INT(b->experts[0].replicas[0], b->experts[1].replicas[0]);
    ASSERT_EQ_INT(b->fresh_layout, 1);
    ASSERT_EQ_INT(b->epoch, a->epoch + 1);
    rt_placement_free(b);
    rt_placement_free(a);
}

TEST(placement_invalid_inputs) {
    static cluster c;
    add_workers(&c, 2, 1000, 0);
    add_experts(&c, 100, (const double[]){1, 1}, 2);
    rt_placement *pl = NULL;
    moe_err err = {0};
    rt_place_params p = P1;
    p.min_replicas = 0;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_EINVAL);
    p = P1, p.max_replicas = 1, p.min_replicas = 2;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_EINVAL);
    p = P1, p.headroom = 1;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_EINVAL);
    p = P1, p.target_load = 0;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_EINVAL);
    p = P1, p.load_weight = 1.5;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &p, NULL, &err), MOE_EINVAL);
    c.e[1].load = NAN;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &P1, NULL, &err), MOE_ENUMERIC);
    c.e[1].load = -1;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &P1, NULL, &err), MOE_ENUMERIC);
    c.e[1].load = 1;
    c.e[1].expert = 0;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &P1, NULL, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "duplicate expert (layer 0, expert 0)");
    c.e[1].expert = 1;
    c.w[1].id = "w0";
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &P1, NULL, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "duplicate worker id 'w0'");
    c.w[1].id = NULL;
    ASSERT_EQ_INT(rt_placement_compute(&pl, c.w, c.nw, c.e, c.ne, &P1, NULL, &err), MOE_EINVAL);
    ASSERT(pl == NULL);
    ASSERT_EQ_INT(rt_placement_compute(NULL, c.w, c.nw, c.e, c.ne, &P1, NULL, &err), MOE_EINVAL);
}

/* No experts, or no workers and no experts: an empty placement. */
TEST(placement_empty) {
    static cluster c;
    rt_placement *pl = place(&c, &P1, NULL);
    ASSERT_EQ_INT(pl->n_experts, 0);
    ASSERT_EQ_INT(pl->workers_wanted, 0);
    rt_placement_free(pl);
    add_workers(&c, 2, 100, 0);
    pl = place(&c, &P1, NULL);
    ASSERT_EQ_INT(pl->n_assignments, 0);
    rt_placement_free(pl);
}

/* ==== The autoscaling signal ==== */

/* Hand-computed: 4 experts x 100 bytes, loads 0, 0, 250, 50, target 100:
 * replicas 1, 1, 3, 1 = 600 bytes; usable 250 x 0.8 = 200 per worker ->
 * 3 workers (and 3 distinct for expert 2). Expert 2 at 650 -> 7 replicas:
 * 1000 bytes -> 5 by memory, 7 distinct workers -> 7. With
 * worker_max_load 100, the load (700) asks for 7 as well; 1000 asks 10. */
TEST(placement_workers_wanted) {
    static cluster c;
    add_workers(&c, 4, 250, 0);
    add_experts(&c, 100, (const double[]){0, 0, 250, 50}, 4);
    rt_place_params p = P1;
    p.headroom = 0.2;
    p.max_replicas = 8;
    rt_placement *pl = place(&c, &p, NULL);
    ASSERT_EQ_INT(pl->workers_wanted, 3);
    rt_placement_free(pl);
    c.e[2].load = 650;
    pl = place(&c, &p, NULL);
    ASSERT_EQ_INT(pl->workers_wanted, 7);
    ASSERT_EQ_INT(pl->experts[2].n_replicas, 4); /* only 4 workers now */
    rt_placement_free(pl);
    c.e[1].load = 300;       /* 3 replicas: 1200 bytes -> 6 by memory; 7 distinct */
    p.worker_max_load = 100; /* 1000 load -> 10 */
    pl = place(&c, &p, NULL);
    ASSERT_EQ_INT(pl->workers_wanted, 10);
    rt_placement_free(pl);

    /* monotone in the load */
    static cluster m;
    add_workers(&m, 4, 4000, 0);
    for (int i = 0; i < 32; i++) add_expert(&m, 0, i, 100, 0);
    size_t last = 0;
    for (int step = 0; step <= 20; step++) {
        for (int i = 0; i < 32; i++) m.e[i].load = step * 10.0 * (1 + i % 4);
        p = P1;
        p.max_replicas = 0;
        pl = place(&m, &p, NULL);
        ASSERT(pl->workers_wanted >= last);
        last = pl->workers_wanted;
        rt_placement_free(pl);
    }
    fprintf(stderr, "workers_wanted grew to %zu\n", last);
    ASSERT(last > 4);
}

/* ==== The placement document ==== */

/* The document router-svc publishes (rt_placement_doc, written by libmesh's
 * moe_pldoc_write): exact bytes, workers without an assignment left out,
 * replicas by id; read back by the reader the workers and gateways use. */
TEST(placement_doc) {
    char *ids[] = {"w0", "w\"1", "w2"};
    int r0[] = {0, 1}, r1[] = {1};
    rt_placement_expert ex[] = {{0, 0, 2, r0}, {1, 3, 1, r1}};
    rt_placement *pl = NULL;
    ASSERT_EQ_INT(rt_placement_from_lists(&pl, 9, ids, 3, ex, 2), 0);
    const char *addrs[] = {"10.0.0.1:50051", "h:2", "h:3"};
    char *js = NULL;
    ASSERT_EQ_INT(rt_placement_doc(pl, "m/1", addrs, &js, NULL), 0);
    static const char want[] =
        "{\"epoch\":9,\"model\":\"m/1\",\"workers\":{\"w0\":\"10.0.0.1:50051\","
        "\"w\\\"1\":\"h:2\"},\"experts\":[[0,0,[\"w0\",\"w\\\"1\"]],"
        "[1,3,[\"w\\\"1\"]]]}";
    if (strcmp(js, want)) TEST_FAIL("document\n  %s\nwant\n  %s", js, want);
    moe_pldoc *d = NULL;
    moe_err err;
    ASSERT_EQ_INT(moe_pldoc_parse(&d, js, strlen(js), 2, 4, &err), 0);
    ASSERT_EQ_INT(d->epoch, 9);
    ASSERT(!strcmp(d->model, "m/1"));
    ASSERT_EQ_INT(d->n_workers, 2); /* w2 holds nothing */
    ASSERT(!strcmp(d->ids[0], "w0") && !strcmp(d->addrs[0], "10.0.0.1:50051"));
    ASSERT(!strcmp(d->ids[1], "w\"1") && !strcmp(d->addrs[1], "h:2"));
    ASSERT_EQ_INT(d->n_experts, 2);
    ASSERT(d->experts[0].layer == 0 && d->experts[0].expert == 0);
    ASSERT(d->experts[0].n_replicas == 2 && d->experts[0].replicas[0] == 0 &&
           d->experts[0].replicas[1] == 1);
    ASSERT(d->experts[1].layer == 1 && d->experts[1].expert == 3);
    ASSERT(d->experts[1].n_replicas == 1 && d->experts[1].replicas[0] == 1);
    moe_pldoc_free(d);
    free(js);
    /* a worker with an assignment whose address is unknown or "": no document
     * (every reader would refuse one that names it without an address) */
    const char *none[] = {"h:1", NULL, "h:3"}, *empty[] = {"h:1", "", "h:3"};
    js = (char *)(uintptr_t)1;
    ASSERT_EQ_INT(rt_placement_doc(pl, NULL, none, &js, &err), MOE_EINVAL);
    ASSERT(js == NULL);
    ASSERT_STR_CONTAINS(err.msg, "worker 'w\"1' has no address");
    ASSERT_EQ_INT(rt_placement_doc(pl, NULL, empty, &js, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "has no address");
    /* one without an assignment is left out, address or not */
    const char *idle[] = {"h:1", "h:2", NULL};
    ASSERT_EQ_INT(rt_placement_doc(pl, NULL, idle, &js, &err), 0);
    ASSERT_STR_CONTAINS(js, "\"workers\":{\"w0\":\"h:1\",\"w\\\"1\":\"h:2\"}");
    free(js);
    rt_placement_free(pl);
}

/* A computed placement survives the document: every expert's replicas, by
 * worker id, as the algorithm placed them. */
TEST(placement_doc_computed) {
    static cluster c;
    add_workers(&c, 5, 1000, 2);
    for (int i = 0; i < 12; i++) add_expert(&c, i / 4, i % 4, 100, 40.0 * (i % 5));
    rt_placement *pl = place(&c, &P1, NULL);
    const char *addrs[5] = {"a:0", "a:1", "a:2", "a:3", "a:4"};
    char *js = NULL;
    ASSERT_EQ_INT(rt_placement_doc(pl, "llama/3x4/8/9", addrs, &js, NULL), 0);
    moe_pldoc *d = NULL;
    moe_err err;
    if (moe_pldoc_parse(&d, js, strlen(js), 3, 4, &err)) TEST_FAIL("%s: %s", js, err.msg);
    ASSERT_EQ_INT(d->epoch, pl->epoch);
    ASSERT_EQ_INT(d->n_experts, pl->n_experts);
    for (size_t i = 0; i < pl->n_experts; i++) {
        const rt_placement_expert *e = &pl->experts[i];
        ASSERT_EQ_INT(d->experts[i].layer, e->layer);
        ASSERT_EQ_INT(d->experts[i].expert, e->expert);
        ASSERT_EQ_INT(d->experts[i].n_replicas, e->n_replicas);
        for (int k = 0; k < e->n_replicas; k++) {
            const int w = d->experts[i].replicas[k];
            ASSERT(!strcmp(d->ids[w], pl->worker_ids[e->replicas[k]]));
            ASSERT(!strcmp(d->addrs[w], addrs[e->replicas[k]]));
        }
    }
    moe_pldoc_free(d);
    free(js);
    rt_placement_free(pl);
}

/* ==== Random clusters ==== */

static size_t count_change(const rt_placement *a, const rt_placement *b) {
    size_t n = 0;
    for (size_t i = 0; i < a->n_experts; i++) {
        int d = b->experts[i].n_replicas - a->experts[i].n_replicas;
        n += (size_t)(d < 0 ? -d : d);
    }
    return n;
}

/* 200 seeded random clusters (1-12 workers, 0-4 domains, some dead or
 * draining, 1-120 experts, skewed loads, mixed capacities): whenever a
 * placement exists the invariants hold; computing again is a fixed point
 * (0 moves); a load change moves exactly the replica-count changes; a dead
 * worker leaves nothing on it and survivors keep their assignments unless
 * their expert lost replicas. ENOSPC only where the room is tight. */
TEST(placement_random_properties) {
    static cluster c;
    uint64_t s = 0x5eed1234abcdULL;
    int ok = 0, nospc = 0, fresh = 0;
    size_t moves_load = 0, moves_dead = 0;
    for (int iter = 0; iter < 200; iter++) {
        memset(&c, 0, sizeof c);
        int nw = 1 + (int)(test_rand_u64(&s) % 12), nd = (int)(test_rand_u64(&s) % 5);
        int ne = 1 + (int)(test_rand_u64(&s) % 120);
        rt_place_params p = {.min_replicas = 1 + (int)(test_rand_u64(&s) % 3),
                             .headroom = (double)(test_rand_u64(&s) % 30) / 100,
                             .target_load = 100,
                             .load_weight = (double)(test_rand_u64(&s) % 5) / 4};
        p.max_replicas = test_rand_u64(&s) % 4 ? p.min_replicas + (int)(test_rand_u64(&s) % 5) : 0;
        uint64_t bytes_min = 0;
        for (int i = 0; i < ne; i++) {
            uint64_t b = 1 + test_rand_u64(&s) % 1000;
            double load = test_rand_u64(&s) % 8 ? (double)(test_rand_u64(&s) % 100)
                                                : (double)(test_rand_u64(&s) % 1000);
            add_expert(&c, i / 32, i % 32, b, load);
            bytes_min += b * (uint64_t)p.min_replicas;
        }
        /* capacity: 0.6x to 3x what min_replicas needs, spread over the workers */
        double factor = 0.6 + (double)(test_rand_u64(&s) % 240) / 100;
        for (int w = 0; w < nw; w++) {
            uint64_t cap = (uint64_t)(factor * (double)bytes_min / nw *
                                      (0.5 + (double)(test_rand_u64(&s) % 100) / 100));
            add_workers(&c, 1, cap + 1000, nd);
            c.w[w].alive = test_rand_u64(&s) % 10 != 0;
            c.w[w].draining = test_rand_u64(&s) % 12 == 0;
        }
        rt_placement *a = NULL;
        moe_err err = {0};
        int rc = rt_placement_compute(&a, c.w, c.nw, c.e, c.ne, &p, NULL, &err);
        if (rc == MOE_ENOSPC) {
            nospc++;
            ASSERT(err.msg[0]);
            continue;
        }
        ASSERT_EQ_INT(rc, 0);
        ok++;
        check_invariants(&c, &p, a);

        rt_placement *b = place(&c, &p, a);
        ASSERT_EQ_INT(b->moves_added + b->moves_removed, 0);
        ASSERT(same_assignments(a, b));

        /* loads change by up to +-30% */
        for (size_t i = 0; i < c.ne; i++)
            c.e[i].load *= 0.7 + (double)(test_rand_u64(&s) % 61) / 100;
        rt_placement *d = place(&c, &p, b);
        check_invariants(&c, &p, d);
        ASSERT_EQ_INT(d->moves_added + d->moves_removed, count_change(b, d));
        moves_load += d->moves_added + d->moves_removed;

        /* a worker dies */
        int dead = (int)(test_rand_u64(&s) % (uint64_t)nw);
        c.w[dead].alive = 0;
        rt_placement *f = NULL;
        rc = rt_placement_compute(&f, c.w, c.nw, c.e, c.ne, &p, d, &err);
        if (rc == 0) {
            check_invariants(&c, &p, f);
            ASSERT_EQ_INT(count_on(f, dead), 0);
            moves_dead += f->moves_added + f->moves_removed;
            fresh += f->fresh_layout;
            for (size_t i = 0; i < c.ne; i++) {
                int kept_before = 0, kept_now = 0;
                for (int k = 0; k < d->experts[i].n_replicas; k++) {
                    int w = d->experts[i].replicas[k];
                    if (w == dead) continue;
                    kept_before++;
                    kept_now += holds(&f->experts[i], w);
                }
                /* a survivor loses an assignment only if the expert has fewer
                 * replicas now than it had on survivors (or a fresh layout) */
                if (kept_now < kept_before && f->experts[i].n_replicas >= kept_before &&
                    !f->fresh_layout)
                    TEST_FAIL("iter %d expert %zu: survivor assignment moved", iter, i);
            }
        } else {
            ASSERT_EQ_INT(rc, MOE_ENOSPC);
        }
        rt_placement_free(f);
        rt_placement_free(d);
        rt_placement_free(b);
        rt_placement_free(a);
    }
    fprintf(stderr,
            "%d placed, %d ENOSPC; moves after load changes %zu, after deaths %zu (%d fresh "
            "layouts)\n",
            ok, nospc, moves_load, moves_dead, fresh);
    ASSERT(ok >= 120);
}

/* ENOSPC only when it must: with 3x the bytes min_replicas needs, plenty of
 * workers and small experts, every random cluster is placed. */
TEST(placement_random_roomy_always_fits) {
    static cluster c;
    uint64_t s = 99;
    for (int iter = 0; iter < 200; iter++) {
        memset(&c, 0, sizeof c);
        int ne = 1 + (int)(test_rand_u64(&s) % 100), nw = 3 + (int)(test_rand_u64(&s) % 8);
        uint64_t total = 0;
        for (int i = 0; i < ne; i++) {
            uint64_t b = 1 + test_rand_u64(&s) % 100;
            add_expert(&c, 0, i, b, (double)(test_rand_u64(&s) % 500));
            total += b;
        }
        add_workers(&c, (size_t)nw, 3 * 2 * total / (uint64_t)nw + 100, 3);
        rt_place_params p = P1;
        p.min_replicas = 2;
        rt_placement *pl = place(&c, &p, NULL);
        check_invariants(&c, &p, pl);
        rt_placement_free(pl);
    }
}
