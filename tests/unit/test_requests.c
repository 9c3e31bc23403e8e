/* test_requests.c - request ids and the per-tenant registry of requests
 * (gateway/requests.c) with jobs that never reach an engine: found only by
 * their own tenant, by either id; a cancel marks the job and its end reads
 * cancelled (the final object too); finished records are evicted oldest
 * first past GW_REQS_KEEP. */
#include <stdatomic.h>
#include <string.h>

#include "job.h"      /* gateway/ */
#include "requests.h" /* gateway/ */
#include "test.h"

static gw_job *make_job(const char *tenant, uint64_t *rng) {
    gw_api_req r = {0};
    r.route = GW_ROUTE_CHAT;
    r.model = strdup("tiny");
    r.n = 1;
    r.n_prompts = 1;
    r.prompts = calloc(1, sizeof *r.prompts);
    r.prompts[0].ids = calloc(3, sizeof(int32_t));
    r.prompts[0].n = 3;
    gw_job *j;
    gw_api_error e;
    ASSERT_EQ_INT(gw_job_create(&j, &r, rng, &e), 0);
    snprintf(j->tenant, sizeof j->tenant, "%s", tenant);
    gw_reqs_new_id(j->req_id);
    return j;
}

TEST(requests_ids) {
    char a[GW_REQ_ID_LEN + 1], b[GW_REQ_ID_LEN + 1];
    gw_reqs_new_id(a);
    gw_reqs_new_id(b);
    ASSERT_EQ_INT(strlen(a), GW_REQ_ID_LEN);
    ASSERT(!strncmp(a, "req_", 4) && strspn(a + 4, "0123456789abcdef") == 32);
    ASSERT(strcmp(a, b) != 0);
    char longer[GW_CLIENT_REQ_ID_MAX + 2];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    ASSERT(!gw_reqs_client_id_ok(longer));
    longer[GW_CLIENT_REQ_ID_MAX] = 0;
    ASSERT(gw_reqs_client_id_ok(longer));
    ASSERT(gw_reqs_client_id_ok("my id 1"));
    ASSERT(!gw_reqs_client_id_ok(""));
    ASSERT(!gw_reqs_client_id_ok(NULL));
    ASSERT(!gw_reqs_client_id_ok("a\tb"));
    ASSERT(!gw_reqs_client_id_ok("caf\xc3\xa9"));
}

TEST(requests_own_tenant_only_and_cancel) {
    uint64_t rng = 1;
    gw_reqs *r;
    ASSERT_EQ_INT(gw_reqs_create(&r, 0), 0);
    gw_job *j = make_job("a", &rng);
    ASSERT_EQ_INT(gw_reqs_add(r, j, 1000), 0);
    gw_req_info in;
    int poke = 0;
    ASSERT_EQ_INT(gw_reqs_find(r, "a", j->req_id, 0, &in, &poke), 0);
    ASSERT(!strcmp(in.status, "queued") && !strcmp(in.cid, j->id) && in.prompt_tokens == 3);
    ASSERT_EQ_INT(gw_reqs_find(r, "a", j->id, 0, &in, &poke), 0); /* by the completion id */
    ASSERT_EQ_INT(gw_reqs_find(r, "b", j->req_id, 1, &in, &poke), -1);
    ASSERT_EQ_INT(gw_reqs_find(r, "b", j->id, 1, &in, &poke), -1);
    ASSERT_EQ_INT(gw_reqs_find(r, "", j->req_id, 0, &in, &poke), -1);
    ASSERT_EQ_INT(atomic_load(&j->cancelled), 0); /* another tenant's cancel did nothing */
    ASSERT_EQ_INT(gw_reqs_find(r, "a", "req_../x", 0, &in, &poke), -1);
    ASSERT_EQ_INT(gw_reqs_find(r, "a", "", 0, &in, &poke), -1);
    /* the owner cancels: marked, and its end reads cancelled */
    ASSERT_EQ_INT(gw_reqs_find(r, "a", j->req_id, 1, &in, &poke), 0);
    ASSERT(poke == 1 && !strcmp(in.status, "cancelled"));
    ASSERT(atomic_load(&j->cancelled) && atomic_load(&j->cancel_asked));
    gw_api_error e;
    gw_api_error_set(&e, 499, "", "the client closed the connection");
    gw_job_emit_error(j, &e);
    ASSERT(j->done && !j->failed);
    moe_buf b = {0};
    gw_job_render_final(j, &b);
    ASSERT(b.s && strstr(b.s, "\"finish_reason\":\"cancelled\""));
    free(b.s);
    ASSERT_EQ_INT(gw_reqs_find(r, "a", j->id, 1, &in, &poke), 0);
    ASSERT(poke == 0 && !strcmp(in.status, "cancelled") && !strcmp(in.finish_reason, "cancelled"));
    gw_job_unref(j);
    /* still found after the job is freed: the record is a copy */
    ASSERT_EQ_INT(gw_reqs_find(r, "a", in.id, 0, &in, &poke), 0);
    gw_reqs_free(r);
}

TEST(requests_finished_evicted_oldest_first) {
    uint64_t rng = 2;
    gw_reqs *r;
    ASSERT_EQ_INT(gw_reqs_create(&r, 0), 0);
    char first[48] = "", last[48] = "";
    for (int i = 0; i < GW_REQS_KEEP + 10; i++) {
        gw_job *j = make_job("t", &rng);
        ASSERT_EQ_INT(gw_reqs_add(r, j, 1000 + i), 0);
        if (i == 0) snprintf(first, sizeof first, "%s", j->req_id);
        snprintf(last, sizeof last, "%s", j->id);
        gw_job_emit_end(j);
        gw_job_unref(j);
    }
    gw_req_info in;
    int poke;
    ASSERT_EQ_INT(gw_reqs_find(r, "t", first, 0, &in, &poke), -1);
    ASSERT_EQ_INT(gw_reqs_find(r, "t", last, 0, &in, &poke), 0);
    ASSERT(!strcmp(in.status, "completed"));
    gw_reqs_free(r);
}

TEST(requests_not_found_names_no_id) {
    gw_api_error e1, e2;
    gw_reqs_not_found(&e1);
    gw_reqs_not_found(&e2);
    moe_buf a = {0}, b = {0};
    gw_api_error_json(&a, &e1);
    gw_api_error_json(&b, &e2);
    ASSERT(a.n == b.n && !memcmp(a.s, b.s, a.n) && e1.status == 404);
    free(a.s);
    free(b.s);
}
