/*
 * limiter.h - a tenant's limits, enforced across gateway replicas through
 * Redis (issue 15; docs/security.md "Limits per tenant", docs/redis-schema.md
 * "Limits"). The limits are mesh/tenant.h's moe_tenant_limits:
 *
 *   - max_context (prompt + max_tokens of one request): checked at once, on
 *     the HTTP thread, by gw_limits_check_context: a 400 (retrying the same
 *     request cannot help, so no 429 that clients would retry);
 *   - rpm, tpm (prompt + completion tokens per window), concurrency, and
 *     daily_tokens (per UTC day): checked and counted by one Lua script in
 *     Redis per admission (EVALSHA, EVAL when Redis answers NOSCRIPT), run by
 *     the limiter's own thread and connection. The HTTP thread never waits:
 *     it suspends the connection (gw_limits_admit) and the limiter resumes it
 *     with the verdict; admissions queued meanwhile go in one pipeline.
 *
 * Windows are fixed: the minute number of Redis' clock (TIME), so every
 * replica counts in the same window (--limits-window-s changes the length,
 * for tests). Completion tokens are counted as they are generated: the
 * engine adds to gw_job.lim_tokens (an atomic), and the limiter charges
 * what is new every 250 ms (one INCRBY per tenant through the script, never
 * one command per token). A running request is never cut: the token limits
 * refuse new requests once spent. Concurrency is a sorted set of request ids
 * scored with an expiry (a lease the limiter renews every 5 s, 30 s long), so
 * a replica that dies leaks its slots for 30 s at most.
 *
 * Redis away: the limiter decides alone from its own counts (kept all along)
 * against limit / N, N the replicas seen in P:gateways within the last 10 s
 * before Redis went away (at least 1 per limit); logged once each way,
 * moemesh_gateway_limits_degraded = 1. With fail_closed it refuses with 503
 * instead. When Redis is back, before any verdict of its own, each tenant's
 * counts gathered alone go into it (one script run per tenant): requests and
 * tokens admitted in the window if it is still current, tokens of the day,
 * the slots of requests still running (their end then frees them; a slot never
 * added is never removed), the completion tokens generated meanwhile. A script
 * run that fails otherwise (WRONGTYPE, a Lua error, OOM) decides that admission
 * the same way (local share, or 503), logged and counted by reason; its counts
 * are added later like the others.
 *
 *     gw_limits *l;
 *     gw_limits_start(&l, &params, &err);
 *     gw_limits_ticket *t = gw_limits_ticket_new(&tenant, job);  // job: prompt, id
 *     t->wake = resume; t->conn = conn;
 *     gw_limits_admit(l, t, suspend);        // suspend(conn) runs under the lock
 *     ... resumed: t->v.status == 200: go on; else reply t->v.err ...
 *     gw_limits_end(l, t);                   // the request's end: takes t
 */
#ifndef GW_LIMITER_H
#define GW_LIMITER_H

#include <pthread.h>
#include <stdint.h>

#include "api.h"
#include "job.h"
#include "mesh/tenant.h"
#include "svc/metrics.h"

typedef struct gw_limits gw_limits;

typedef struct gw_limits_params {
    const char *redis;  /* the Redis URL (the tenants'); NULL: local counts only */
    const char *prefix; /* the deployment's key prefix */
    const char *id;     /* this replica's name in P:gateways (host:port) */
    int fail_closed;    /* Redis away: 503 instead of local limits */
    int window_s;       /* the rpm/tpm window (0: 60); shorter only for tests */
    moe_metrics *reg;   /* (optional) metrics */
} gw_limits_params;

/* Starts the limiter's thread. 0, MOE_EINVAL (a bad URL, in err), MOE_ENOMEM. */
int gw_limits_start(gw_limits **out, const gw_limits_params *p, moe_err *err);
/* Stops the thread (verdicts still pending are 503) and frees l. NULL allowed. */
void gw_limits_stop(gw_limits *l);

/* 1 if a tenant has a limit the limiter counts (rpm, tpm, concurrency, daily). */
int gw_limits_counted(const moe_tenant_limits *lim);

/* Checks max_context: the longest prompt + max_tokens. A request without
 * max_tokens (-1) gets max_tokens = max_context - prompt (written to j).
 * 0, or -1 with *e (400, code context_length_exceeded). Any thread. */
int gw_limits_check_context(gw_limits *l, const moe_tenant *t, gw_job *j, gw_api_error *e);

/* A verdict, and what the x-ratelimit-* headers say. */
typedef struct gw_limits_verdict {
    int status;           /* 200 admitted, 429 a limit, 503 Redis away and fail-closed */
    gw_api_error err;     /* when not 200 */
    int retry_after_s;    /* 429: Retry-After */
    int has_req, has_tok; /* which header groups apply (rpm, tpm set) */
    int64_t lim_req, rem_req, reset_req_ms;
    int64_t lim_tok, rem_tok, reset_tok_ms;
} gw_limits_verdict;

typedef struct gw_limits_ticket gw_limits_ticket;
struct gw_limits_ticket {
    moe_tenant tenant;
    gw_job *job;              /* a reference (released at the end) */
    int64_t prompt_tokens;    /* charged at admission */
    int charged;              /* job->lim_tokens already charged (limiter thread) */
    void (*wake)(void *conn); /* the HTTP side's resume, called under the limiter's lock */
    void *conn;               /* NULL once the HTTP side is gone */
    int decided;              /* v is set (under the lock) */
    int admitted, ended;      /* limiter thread */
    int alone;                /* admitted without Redis' verdict (away, or the script failed) */
    int redis_slot;           /* its concurrency slot is in Redis (at admission, or added later) */
    gw_limits_verdict v;
    gw_limits_ticket *next, *end_next, *live_next; /* the limiter's queues */
};

/* A ticket for j (a reference taken). NULL when out of memory. */
gw_limits_ticket *gw_limits_ticket_new(const moe_tenant *t, gw_job *j);

/* Queues t for a verdict. suspend(conn) is called under the limiter's lock
 * before t is visible to the limiter, so the wake always follows it. */
void gw_limits_admit(gw_limits *l, gw_limits_ticket *t, void (*suspend)(void *conn));

/* The request ended (its response sent or its client gone): frees the
 * concurrency slot, charges the last tokens, and frees t (taken). Call it
 * once, also for a ticket still undecided (its conn is then dropped). */
void gw_limits_end(gw_limits *l, gw_limits_ticket *t);

/* The lock the limiter decides under (t->decided, t->conn): the HTTP side
 * takes it to re-suspend on a spurious resume. */
pthread_mutex_t *gw_limits_mutex(gw_limits *l);

/* Calls add(ud, name, value) for each x-ratelimit-* header of v (and
 * Retry-After on a 429). */
void gw_limits_headers(const gw_limits_verdict *v,
                       void (*add)(void *ud, const char *, const char *), void *ud);

/* Counts a refusal of gw_limits_check_context (limit="context"). */
void gw_limits_count_context(gw_limits *l);

#endif
