/*
 * requests.h - request ids and the per-tenant registry of requests
 * (docs/security.md, "Request ids"; the issue: a tenant cannot read, cancel
 * or observe another tenant's requests).
 *
 * Every HTTP response of the gateway carries an x-request-id, fresh per
 * request ("req_" + 32 hex digits from getrandom(2)), and echoes a client's
 * bounded X-Client-Request-Id as x-client-request-id. A generation request
 * keeps its x-request-id in gw_job.req_id: the "request ended" log line
 * carries it (request_id=...), so an operator can grep the id a client
 * reports.
 *
 * The registry holds the generation requests in flight and the last
 * GW_REQS_KEEP finished ones (at most GW_REQS_KEEP_MS old), each findable
 * by its x-request-id or its completion id (chatcmpl-..., cmpl-...), and only
 * by its own tenant: GET /v1/requests/{id}, DELETE /v1/requests/{id} and
 * POST /v1/requests/{id}/cancel (http.c). A foreign id, an unknown one and a
 * malformed one get the same 404 (gw_reqs_not_found: the id is not echoed);
 * a lookup is one keyed hash probe and a string compare, whoever owns it.
 *
 *     gw_reqs *r;
 *     gw_reqs_create(&r, 1024 + max_queue + max_seqs);
 *     gw_reqs_add(r, j, mono_us);          // before gw_sched_submit
 *     ...                                  // job.c calls j->on_end at its end
 *     gw_req_info in;
 *     if (gw_reqs_find(r, tenant, id, 0, &in) < 0) reply(gw_reqs_not_found());
 *
 * Threads: one mutex guards everything; each call holds it for O(1) work
 * (no allocation, no I/O). The HTTP threads add, find and cancel; whichever
 * thread ends a job (the engine's, mostly) calls gw_reqs_job_ended. A job in
 * flight is pointed to without a reference: its end (job.c's emitters) runs
 * the hook, which unlinks it under the mutex, before any holder can drop the
 * job's last reference.
 */
#ifndef GW_REQUESTS_H
#define GW_REQUESTS_H

#include <stdint.h>

#include "api.h"
#include "job.h"
#include "svc/strbuf.h"

#define GW_REQS_KEEP 1024                /* finished requests kept */
#define GW_REQS_KEEP_MS (10 * 60 * 1000) /* ... for at most this long */
#define GW_REQ_ID_LEN 36                 /* "req_" + 32 hex digits */
#define GW_CLIENT_REQ_ID_MAX 128         /* X-Client-Request-Id: longer is ignored */
#define GW_REQS_ID_MAX 64                /* {id} in a URL: longer is not found */

typedef struct gw_reqs gw_reqs;

/* A request's state, as GET /v1/requests/{id} shows it. */
typedef struct gw_req_info {
    char id[40];  /* x-request-id (GW_REQ_ID_LEN) */
    char cid[48]; /* the completion's id */
    char model[128];
    const char *status; /* "queued", "running", "completed", "cancelled", "failed" (static) */
    int64_t created;    /* unix seconds */
    double queue_ms;    /* waited for a slot (so far, while queued) */
    int prompt_tokens, completion_tokens; /* completion tokens so far while in flight */
    const char *finish_reason;            /* NULL until done (static) */
    int stream;
} gw_req_info;

/* A fresh x-request-id ("req_" + 32 hex digits from getrandom(2); the
 * clock, a counter and the pid mixed if that fails) into id. Any thread. */
void gw_reqs_new_id(char id[GW_REQ_ID_LEN + 1]);

/* 1 if s is an X-Client-Request-Id to echo: 1..GW_CLIENT_REQ_ID_MAX
 * printable ASCII characters (0x20..0x7e); 0 (ignored) otherwise. */
int gw_reqs_client_id_ok(const char *s);

/* A registry for up to max_records requests: in flight ones first, then up
 * to GW_REQS_KEEP finished (give GW_REQS_KEEP + the most that can be in
 * flight: --max-queue + --max-seqs). 0 or MOE_ENOMEM. */
int gw_reqs_create(gw_reqs **out, int max_records);
void gw_reqs_free(gw_reqs *r);

/* Registers j (its req_id, id, tenant, created must be set), queued since
 * now_us, and points j->on_end at gw_reqs_job_ended. -1 when every record
 * holds a request in flight (j is then not findable; it runs all the same). */
int gw_reqs_add(gw_reqs *r, gw_job *j, int64_t now_us);

/* The end of a registered job (j->on_end): its final state is recorded
 * (status cancelled if a cancel was asked while it was in flight) and the
 * registry forgets the job itself. Called once, before the job's end is
 * visible to its client (done), from the thread that ends it. */
void gw_reqs_job_ended(gw_job *j, gw_job_end how);

/* The request with x-request-id or completion id `id` if it is tenant's
 * (""  without API keys): 0 with *out, or -1 (unknown, another tenant's, a
 * malformed id: the caller answers gw_reqs_not_found, nothing else). With
 * cancel, a request in flight is marked cancelled (job->cancel_asked and
 * job->cancelled; the caller pokes the scheduler) and *out says cancelled; a
 * finished one is left as it is. *poke is set to 1 when a job was marked. */
int gw_reqs_find(gw_reqs *r, const char *tenant, const char *id, int cancel, gw_req_info *out,
                 int *poke);

/* The "request" object into b. */
void gw_reqs_json(const gw_req_info *in, moe_buf *b);

/* The one 404 of every id that is not the caller's (no id in it). */
void gw_reqs_not_found(gw_api_error *e);

#endif
