/* test_limiter.c - a tenant's limits (gateway/limiter.c) without Redis: the
 * limiter's own counts, verdicts as OpenAI words them, the x-ratelimit-*
 * headers, max_context; through the public path (a ticket queued, the wake
 * from the limiter's thread). The Redis script is exercised end to end by
 * tests/integration/tenant_limits.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "limiter.h" /* gateway/ */
#include "moe/error.h"
#include "test.h"

/* A job of one prompt of n tokens and max_tokens mt. */
static gw_job *job(int n, int mt) {
    gw_api_req req;
    memset(&req, 0, sizeof req);
    req.n = 1;
    req.n_prompts = 1;
    req.prompts = calloc(1, sizeof *req.prompts);
    req.prompts[0].ids = calloc((size_t)n, sizeof(int32_t));
    req.prompts[0].n = n;
    req.gen.max_tokens = mt;
    gw_job *j;
    gw_api_error e;
    uint64_t rng = 1;
    MOE_ASSERT(gw_job_create(&j, &req, &rng, &e) == 0);
    return j;
}

static void wake(void *conn) {
    (void)conn;
}

/* Admits a request of tenant t and waits for the verdict; the ticket is
 * returned (end it with gw_limits_end). */
static gw_limits_ticket *admit(gw_limits *l, const moe_tenant *t, int prompt) {
    gw_job *j = job(prompt, 4);
    gw_limits_ticket *k = gw_limits_ticket_new(t, j);
    gw_job_unref(j);
    static int conn;
    k->wake = wake;
    k->conn = &conn;
    gw_limits_admit(l, k, NULL);
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(gw_limits_mutex(l));
        const int d = k->decided;
        pthread_mutex_unlock(gw_limits_mutex(l));
        if (d) return k;
        usleep(1000);
    }
    TEST_FAIL("no verdict within 2 s");
    return k;
}

static void add_hdr(void *ud, const char *name, const char *value) {
    char *b = ud;
    const size_t n = strlen(b);
    snprintf(b + n, 1024 - n, "%s=%s;", name, value);
}

static moe_tenant tenant(const char *name) {
    moe_tenant t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", name);
    t.lim = moe_tenant_limits_default();
    return t;
}

TEST(limiter_rpm_local) {
    gw_limits *l;
    moe_err err;
    const gw_limits_params p = {.window_s = 3600}; /* a test never straddles a window */
    ASSERT_EQ_INT(gw_limits_start(&l, &p, &err), 0);
    moe_tenant t = tenant("acme");
    t.lim.rpm = 2;
    ASSERT(gw_limits_counted(&t.lim));
    char h[1024];
    for (int i = 0; i < 2; i++) {
        gw_limits_ticket *k = admit(l, &t, 3);
        ASSERT_EQ_INT(k->v.status, 200);
        ASSERT_EQ_INT((int)k->v.rem_req, 1 - i);
        h[0] = 0;
        gw_limits_headers(&k->v, add_hdr, h);
        ASSERT_STR_CONTAINS(h, "x-ratelimit-limit-requests=2;");
        ASSERT(!strstr(h, "x-ratelimit-limit-tokens") && !strstr(h, "retry-after"));
        gw_limits_end(l, k);
    }
    gw_limits_ticket *k = admit(l, &t, 3);
    ASSERT_EQ_INT(k->v.status, 429);
    ASSERT_STR_EQ(k->v.err.type, "requests");
    ASSERT_STR_EQ(k->v.err.code, "rate_limit_exceeded");
    ASSERT_STR_CONTAINS(k->v.err.message,
                        "Rate limit reached for requests per min (RPM) on tenant acme: Limit 2, "
                        "Used 2, Requested 1. Please try again in ");
    ASSERT(k->v.retry_after_s >= 1 && k->v.retry_after_s <= 3600);
    h[0] = 0;
    gw_limits_headers(&k->v, add_hdr, h);
    ASSERT_STR_CONTAINS(h, "x-ratelimit-remaining-requests=0;x-ratelimit-reset-requests=");
    ASSERT_STR_CONTAINS(h, "retry-after=");
    gw_limits_end(l, k);
    /* another tenant has its own counts */
    moe_tenant o = tenant("other");
    o.lim.rpm = 1;
    k = admit(l, &o, 1);
    ASSERT_EQ_INT(k->v.status, 200);
    gw_limits_end(l, k);
    gw_limits_stop(l);
}

TEST(limiter_concurrency_and_tokens_local) {
    gw_limits *l;
    moe_err err;
    const gw_limits_params p = {.window_s = 3600};
    ASSERT_EQ_INT(gw_limits_start(&l, &p, &err), 0);
    moe_tenant t = tenant("c");
    t.lim.concurrency = 1;
    gw_limits_ticket *a = admit(l, &t, 2);
    ASSERT_EQ_INT(a->v.status, 200);
    gw_limits_ticket *b = admit(l, &t, 2);
    ASSERT_EQ_INT(b->v.status, 429);
    ASSERT_STR_CONTAINS(b->v.err.message, "concurrent requests on tenant c: Limit 1, Used 1");
    ASSERT_EQ_INT(b->v.retry_after_s, 1);
    gw_limits_end(l, b);
    gw_limits_end(l, a); /* its slot is freed on the limiter's thread, before the next verdict */
    b = admit(l, &t, 2);
    ASSERT_EQ_INT(b->v.status, 200);
    gw_limits_end(l, b);
    /* tpm: the prompt at admission, completion tokens as they are generated */
    moe_tenant m = tenant("tok");
    m.lim.tpm = 20;
    a = admit(l, &m, 5);
    ASSERT_EQ_INT(a->v.status, 200);
    ASSERT_EQ_INT((int)a->v.rem_tok, 15);
    atomic_fetch_add(&a->job->lim_tokens, 12); /* the engine generated 12 */
    usleep(400 * 1000);                        /* charged within 250 ms */
    b = admit(l, &m, 5);
    ASSERT_EQ_INT(b->v.status, 429);
    ASSERT_STR_EQ(b->v.err.type, "tokens");
    ASSERT_STR_CONTAINS(b->v.err.message, "tokens per min (TPM) on tenant tok: Limit 20, Used 17, "
                                          "Requested 5");
    gw_limits_end(l, b);
    gw_limits_end(l, a);
    /* daily */
    moe_tenant d = tenant("day");
    d.lim.daily_tokens = 4;
    a = admit(l, &d, 5);
    ASSERT_EQ_INT(a->v.status, 429);
    ASSERT_STR_CONTAINS(a->v.err.message, "tokens per day (TPD)");
    ASSERT(a->v.retry_after_s >= 1 && a->v.retry_after_s <= 86400);
    gw_limits_end(l, a);
    gw_limits_stop(l);
}

TEST(limiter_max_context) {
    moe_tenant t = tenant("x");
    gw_api_error e;
    gw_job *j = job(3, 8);
    ASSERT_EQ_INT(gw_limits_check_context(NULL, &t, j, &e), 0); /* unlimited */
    t.lim.max_context = 10;
    ASSERT_EQ_INT(gw_limits_check_context(NULL, &t, j, &e), -1);
    ASSERT_EQ_INT(e.status, 400);
    ASSERT_STR_EQ(e.code, "context_length_exceeded");
    ASSERT_STR_CONTAINS(e.message, "maximum context length is 10 tokens. However, you requested "
                                   "11 tokens (3 in the messages, 8 in the completion)");
    j->req.gen.max_tokens = 7;
    ASSERT_EQ_INT(gw_limits_check_context(NULL, &t, j, &e), 0);
    j->req.gen.max_tokens = -1; /* none given: the tenant's context bounds it */
    ASSERT_EQ_INT(gw_limits_check_context(NULL, &t, j, &e), 0);
    ASSERT_EQ_INT(j->req.gen.max_tokens, 7);
    gw_job_unref(j);
    j = job(10, -1); /* the prompt alone fills it */
    ASSERT_EQ_INT(gw_limits_check_context(NULL, &t, j, &e), -1);
    gw_job_unref(j);
}
