/* test_fair.c - the fair-share policy (gateway/fair.c) driven through its
 * hooks as the scheduler calls them, against counts worked out by hand:
 * a quiet tenant is served within one request of a flood, weights share
 * admissions in proportion, a higher class goes first, idle time is not
 * banked, and every job's state is given back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fair.h" /* gateway/ */
#include "test.h"

static gw_job *job(const char *tenant, double weight, int priority) {
    gw_job *j = calloc(1, sizeof *j);
    snprintf(j->tenant, sizeof j->tenant, "%s", tenant);
    j->weight = weight, j->priority = priority;
    return j;
}

/* A waiting list the way the scheduler keeps it: arrival order. */
typedef struct queue {
    gw_job *w[512];
    int n;
} queue;

static void arrive(const gw_policy *p, queue *q, gw_job *j) {
    q->w[q->n++] = j;
    p->on_wait(p->state, j);
}

/* Admits the policy's pick and serves it whole (prompt rows, then tokens),
 * then ends it; returns it (the caller frees it). */
static gw_job *admit_serve_end(const gw_policy *p, queue *q, int prompt, int gen) {
    const int k = p->pick(p->state, q->w, q->n);
    if (k < 0) return NULL;
    gw_job *j = q->w[k];
    memmove(&q->w[k], &q->w[k + 1], (size_t)(q->n - k - 1) * sizeof *q->w);
    q->n--;
    p->on_admit(p->state, j);
    p->on_served(p->state, j, prompt, 0);
    for (int t = 0; t < gen; t++) p->on_served(p->state, j, 0, 1);
    p->on_end(p->state, j, gen);
    return j;
}

TEST(fair_quiet_tenant_within_one_request_of_a_flood) {
    gw_fair *f;
    ASSERT_EQ_INT(gw_fair_create(&f, 1.0, 2.0), 0);
    const gw_policy *p = gw_fair_policy(f);
    queue q = {0};
    for (int i = 0; i < 200; i++) arrive(p, &q, job("flood", 1, 0));
    for (int i = 0; i < 50; i++) free(admit_serve_end(p, &q, 100, 50)); /* the flood runs */
    arrive(p, &q, job("quiet", 1, 0));
    /* FIFO would serve the 150 flood requests first; here the quiet one is
     * lifted to the flood's counter and goes at most one request later */
    int waited = 0;
    for (;;) {
        gw_job *j = admit_serve_end(p, &q, 100, 50);
        ASSERT(j != NULL);
        const int quiet = !strcmp(j->tenant, "quiet");
        free(j);
        if (quiet) break;
        waited++;
    }
    ASSERT(waited <= 1);
    while (q.n) free(admit_serve_end(p, &q, 1, 1));
    gw_fair_free(f);
}

TEST(fair_weights_share_admissions) {
    gw_fair *f;
    ASSERT_EQ_INT(gw_fair_create(&f, 1.0, 2.0), 0);
    const gw_policy *p = gw_fair_policy(f);
    queue q = {0};
    int served_a = 0, served_b = 0;
    /* both always backlogged: each keeps 4 waiting */
    for (int i = 0; i < 4; i++) arrive(p, &q, job("a", 1, 0)), arrive(p, &q, job("b", 3, 0));
    for (int n = 0; n < 400; n++) {
        gw_job *j = admit_serve_end(p, &q, 10, 20);
        ASSERT(j != NULL);
        const int is_a = !strcmp(j->tenant, "a");
        served_a += is_a, served_b += !is_a;
        arrive(p, &q, job(j->tenant, j->weight, 0));
        free(j);
    }
    const double ratio = (double)served_b / served_a;
    printf("weights 3:1 -> admissions %d:%d (%.2f)\n", served_b, served_a, ratio);
    ASSERT(ratio > 2.8 && ratio < 3.2);
    while (q.n) free(admit_serve_end(p, &q, 1, 1));
    gw_fair_free(f);
}

TEST(fair_priority_class_first) {
    gw_fair *f;
    ASSERT_EQ_INT(gw_fair_create(&f, 1.0, 2.0), 0);
    const gw_policy *p = gw_fair_policy(f);
    queue q = {0};
    arrive(p, &q, job("low", 1, 0));
    free(admit_serve_end(p, &q, 1, 1)); /* low has the smaller counter now? no: high is new */
    arrive(p, &q, job("low", 1, 0));
    gw_job *hi = job("high", 1, 1);
    arrive(p, &q, hi);
    /* high was lifted to low's counter and low waits first, yet high's class wins */
    ASSERT_EQ_INT(p->pick(p->state, q.w, q.n), 1);
    ASSERT(p->prefill_key(p->state, hi) < p->prefill_key(p->state, q.w[0]));
    while (q.n) free(admit_serve_end(p, &q, 1, 1));
    gw_fair_free(f);
}

TEST(fair_idle_time_not_banked) {
    gw_fair *f;
    ASSERT_EQ_INT(gw_fair_create(&f, 1.0, 2.0), 0);
    const gw_policy *p = gw_fair_policy(f);
    queue q = {0};
    /* c is seen once, then idles while a is served a lot */
    arrive(p, &q, job("c", 1, 0));
    free(admit_serve_end(p, &q, 1, 1));
    for (int i = 0; i < 100; i++) arrive(p, &q, job("a", 1, 0));
    for (int i = 0; i < 50; i++) free(admit_serve_end(p, &q, 100, 100));
    for (int i = 0; i < 10; i++) arrive(p, &q, job("c", 1, 0));
    /* c comes back with 10: without the lift it would take all next 10 */
    int a = 0;
    for (int i = 0; i < 10; i++) {
        gw_job *j = admit_serve_end(p, &q, 100, 100);
        a += !strcmp(j->tenant, "a");
        free(j);
    }
    printf("after c's idle time, a got %d of the next 10\n", a);
    ASSERT(a >= 4 && a <= 6);
    while (q.n) free(admit_serve_end(p, &q, 1, 1));
    gw_fair_tenant t[8];
    const int n = gw_fair_snapshot(f, t, 8);
    ASSERT_EQ_INT(n, 2);
    for (int i = 0; i < n; i++) ASSERT(t[i].waiting == 0 && t[i].running == 0);
    gw_fair_free(f);
}

TEST(fair_drop_and_forget) {
    gw_fair *f;
    ASSERT_EQ_INT(gw_fair_create(&f, 1.0, 2.0), 0);
    const gw_policy *p = gw_fair_policy(f);
    /* more tenants than the table holds at once: idle ones are forgotten */
    for (int i = 0; i < 10000; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        gw_job *j = job(name, 1, 0);
        p->on_wait(p->state, j);
        p->on_drop(p->state, j); /* left before admission (deadline, client gone) */
        ASSERT(j->policy_data == NULL);
        free(j);
    }
    gw_fair_tenant t[1];
    ASSERT(gw_fair_snapshot(f, t, 1) <= 4096);
    ASSERT_EQ_INT(gw_fair_create(&(gw_fair *){NULL}, 0, 1), MOE_EINVAL);
    gw_fair_free(f);
}

/* Sixteen slots held by a flood with more of it waiting; a quiet tenant
 * arrives (lifted to the flood's counter): it may take a flood job's slot
 * at once (a tie is enough), and its prompt goes whole into a step while
 * the flood's are chunked; alone again, the flood's are chunked as before. */
TEST(fair_light_tenant_preempts_and_prefills_whole) {
    gw_fair *f;
    ASSERT_EQ_INT(gw_fair_create(&f, 1.0, 2.0), 0);
    const gw_policy *p = gw_fair_policy(f);
    queue q = {0};
    gw_job *run[16];
    for (int i = 0; i < 20; i++) arrive(p, &q, job("flood", 1, 0));
    for (int i = 0; i < 16; i++) { /* admitted in arrival order */
        run[i] = q.w[0];
        memmove(&q.w[0], &q.w[1], (size_t)(q.n - 1) * sizeof *q.w);
        q.n--;
        p->on_admit(p->state, run[i]);
        p->on_served(p->state, run[i], 10, 0);
    }
    ASSERT_EQ_INT(p->prefill_whole(p->state, run[0], 16), 0); /* nobody else: chunks */
    gw_job *quiet = job("quiet", 1, 0);
    arrive(p, &q, quiet);
    ASSERT(p->pick(p->state, q.w, q.n) == q.n - 1); /* ahead of the flood's waiting jobs */
    const int v = p->victim(p->state, run, 16, quiet, 16);
    ASSERT(v >= 0 && v < 16);
    p->on_preempt(p->state, run[v]); /* it waits again, first in arrival order */
    memmove(&q.w[1], &q.w[0], (size_t)q.n * sizeof *q.w);
    q.w[0] = run[v];
    q.n++;
    q.n--; /* the quiet job (last) is admitted */
    p->on_admit(p->state, quiet);
    ASSERT_EQ_INT(p->prefill_whole(p->state, quiet, 16), 1);
    ASSERT_EQ_INT(p->prefill_whole(p->state, run[(v + 1) % 16], 16), 0);
    /* the flood cannot preempt the quiet tenant back: it is over its share */
    gw_job *after = job("flood", 1, 0);
    arrive(p, &q, after);
    gw_job *with_quiet[16];
    for (int i = 0, n = 0; i < 16; i++) with_quiet[n++] = i == v ? quiet : run[i];
    ASSERT_EQ_INT(p->victim(p->state, with_quiet, 16, after, 16), -1);
    p->on_served(p->state, quiet, 128, 0);
    p->on_end(p->state, quiet, 0);
    free(quiet);
    ASSERT_EQ_INT(p->prefill_whole(p->state, run[(v + 1) % 16], 16), 0);
    for (int i = 0; i < 16; i++) {
        if (i == v) continue; /* it waits (in q, dropped below) */
        p->on_end(p->state, run[i], 0);
        free(run[i]);
    }
    for (int i = 0; i < q.n; i++) p->on_drop(p->state, q.w[i]), free(q.w[i]);
    gw_fair_tenant t[4];
    const int n = gw_fair_snapshot(f, t, 4);
    for (int i = 0; i < n && i < 4; i++) ASSERT(t[i].waiting == 0 && t[i].running == 0);
    gw_fair_free(f);
}
