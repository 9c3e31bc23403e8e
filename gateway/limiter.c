/* limiter.c - per-tenant limits across gateway replicas (see limiter.h). */
#include <math.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "limiter.h"
#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "moe/log.h"
#include "svc/clock.h"

#define GW "gateway"
#define LIM_TICK_MS 50     /* the thread's longest wait */
#define LIM_CHARGE_MS 250  /* completion tokens charged this often */
#define LIM_HELLO_MS 1000  /* this replica in P:gateways */
#define LIM_TOUCH_MS 5000  /* concurrency leases renewed */
#define LIM_LEASE_MS 30000 /* ... this long */
#define LIM_BUCKETS 1024   /* the local tenant table */
#define DAY_MS 86400000LL

/* ==== The script ================================================================= */

/* KEYS[1] = P:limit:{<tenant>} (P:gateways for hello); ARGV[1] = the mode. Every key a
 * run touches is KEYS[1] or KEYS[1] with a suffix: one tenant's keys, whose hash tag
 * {<tenant>} puts them in one Redis Cluster slot. Returns, for admit: {hit (0, 1 rpm,
 * 2 tpm, 3 concurrency, 4 daily), requests, tokens, day tokens, in flight, ms to the
 * window's end, ms to the day's end}; for add: {requests, tokens, day tokens, slots}
 * added of those admitted alone. A run writes nothing before every key it writes has
 * been read: a key of the wrong type fails the whole run, never half of it. */
static const char SCRIPT[] =
    "local mode = ARGV[1]\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "if mode == 'hello' then\n"
    "  redis.call('ZADD', KEYS[1], now, ARGV[2])\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10000)\n"
    "  return redis.call('ZCARD', KEYS[1])\n"
    "end\n"
    "local w = tonumber(ARGV[2]) * 1000\n"
    "local win = math.floor(now / w)\n"
    "local day = math.floor(now / 86400000)\n"
    "local kr = KEYS[1] .. ':r:' .. win\n"
    "local kt = KEYS[1] .. ':t:' .. win\n"
    "local kd = KEYS[1] .. ':d:' .. day\n"
    "local kc = KEYS[1] .. ':c'\n"
    /* add: ARGV[3] completion tokens (this window, this day); what was admitted alone:
     * ARGV[5] requests and ARGV[6] tokens of local window ARGV[4] (dropped once Redis'
     * window is another), ARGV[8] tokens of day ARGV[7]; ARGV[9] the lease (ms) and
     * ARGV[10..] the slots of those still running */
    "if mode == 'add' then\n"
    "  for _, k in ipairs({kr, kt, kd}) do\n"
    "    local v = redis.call('GET', k)\n"
    "    if v and not tonumber(v) then return redis.error_reply('ERR no integer: ' .. k) end\n"
    "  end\n"
    "  if #ARGV >= 10 then redis.call('ZCARD', kc) end\n"
    "  local c = tonumber(ARGV[3])\n"
    "  local r, tk, dk = 0, 0, 0\n"
    "  if tonumber(ARGV[4]) == win then r, tk = tonumber(ARGV[5]), tonumber(ARGV[6]) end\n"
    "  if tonumber(ARGV[7]) == day then dk = tonumber(ARGV[8]) end\n"
    "  if r > 0 then redis.call('INCRBY', kr, r); redis.call('PEXPIRE', kr, 2 * w) end\n"
    "  if c + tk > 0 then redis.call('INCRBY', kt, c + tk); redis.call('PEXPIRE', kt, 2 * w) end\n"
    "  if c + dk > 0 then\n"
    "    redis.call('INCRBY', kd, c + dk); redis.call('PEXPIRE', kd, 2 * 86400000)\n"
    "  end\n"
    "  for i = 10, #ARGV do redis.call('ZADD', kc, now + tonumber(ARGV[9]), ARGV[i]) end\n"
    "  if #ARGV >= 10 then redis.call('PEXPIRE', kc, 2 * tonumber(ARGV[9])) end\n"
    "  return {r, tk, dk, #ARGV - 9}\n"
    "end\n"
    "if mode == 'end' then redis.call('ZREM', kc, ARGV[3]); return 1 end\n"
    "if mode == 'touch' then\n"
    "  for i = 4, #ARGV do redis.call('ZADD', kc, 'XX', now + tonumber(ARGV[3]), ARGV[i]) end\n"
    "  redis.call('PEXPIRE', kc, 2 * tonumber(ARGV[3]))\n"
    "  return 1\n"
    "end\n"
    "local rpm, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local conc, daily = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local req = tonumber(ARGV[7])\n"
    "local ur = tonumber(redis.call('GET', kr) or '0')\n"
    "local ut = tonumber(redis.call('GET', kt) or '0')\n"
    "local ud = tonumber(redis.call('GET', kd) or '0')\n"
    "local uc = 0\n"
    "if conc > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', kc, '-inf', now); uc = redis.call('ZCARD', kc)\n"
    "end\n"
    "local hit = 0\n"
    "if rpm > 0 and ur + 1 > rpm then hit = 1\n"
    "elseif tpm > 0 and ut + req > tpm then hit = 2\n"
    "elseif daily > 0 and ud + req > daily then hit = 4\n"
    "elseif conc > 0 and uc + 1 > conc then hit = 3 end\n"
    "if hit == 0 then\n"
    "  ur = redis.call('INCR', kr); redis.call('PEXPIRE', kr, 2 * w)\n"
    "  ut = redis.call('INCRBY', kt, req); redis.call('PEXPIRE', kt, 2 * w)\n"
    "  ud = redis.call('INCRBY', kd, req); redis.call('PEXPIRE', kd, 2 * 86400000)\n"
    "  if conc > 0 then\n"
    "    redis.call('ZADD', kc, now + tonumber(ARGV[9]), ARGV[8])\n"
    "    redis.call('PEXPIRE', kc, 2 * tonumber(ARGV[9])); uc = uc + 1\n"
    "  end\n"
    "end\n"
    "return {hit, ur, ut, ud, uc, (win + 1) * w - now, (day + 1) * 86400000 - now}\n";

enum { HIT_NONE, HIT_RPM, HIT_TPM, HIT_CONC, HIT_DAILY, HIT_CONTEXT };
static const char *const hit_names[] = {"none", "rpm", "tpm", "concurrency", "daily", "context"};

/* ==== State ====================================================================== */

/* This replica's own counts of a tenant (the limiter thread's). */
typedef struct lt {
    struct lt *next;
    char name[MOE_TENANT_NAME_MAX + 1];
    int64_t win, req, tok; /* the window (local clock) and its counts */
    int64_t day, day_tok;
    int64_t inflight;
    int64_t pending; /* completion tokens not yet charged in Redis */
    /* admitted alone (Redis away, or the script failed), not yet added to Redis: in
     * window win, in day day (cleared when they roll), and the slots still running */
    int64_t alone_req, alone_tok, alone_day_tok, alone_slots;
} lt;

struct gw_limits {
    gw_limits_params p;
    char prefix[64], id[128];
    moe_rlink *link; /* NULL: local only */
    char sha[41];
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    /* ---- under mu ---- */
    gw_limits_ticket *q, *q_tail; /* admissions to decide */
    gw_limits_ticket *ends;       /* requests that ended */
    /* ---- the limiter thread ---- */
    gw_limits_ticket *live; /* admitted, not ended */
    lt *tab[LIM_BUCKETS];
    int degraded; /* Redis away: local limits */
    int n_gw;     /* replicas seen (>= 1) */
    int64_t t_charge, t_hello, t_touch;
    int64_t back[5]; /* added since Redis was away: requests, tokens, day tokens, slots,
                        tenants (logged when it is back) */
    moe_metric *m_limited, *m_degraded, *m_script_err, *m_reconciled;
};

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static lt *lt_get(gw_limits *l, const char *name) {
    uint32_t h = 2166136261u;
    for (const char *c = name; *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
    lt **b = &l->tab[h % LIM_BUCKETS];
    for (lt *e = *b; e; e = e->next)
        if (!strcmp(e->name, name)) return e;
    lt *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->next = *b;
    *b = e;
    return e;
}

/* Rolls a tenant's local windows to now. */
static void lt_roll(gw_limits *l, lt *e, int64_t now) {
    const int64_t win = now / ((int64_t)l->p.window_s * 1000), day = now / DAY_MS;
    if (e->win != win) e->win = win, e->req = e->tok = e->alone_req = e->alone_tok = 0;
    if (e->day != day) e->day = day, e->day_tok = e->alone_day_tok = 0;
}

/* ==== Verdicts ==================================================================== */

static void dur(char *b, size_t cap, int64_t ms) {
    if (ms < 0) ms = 0;
    if (ms < 1000)
        snprintf(b, cap, "%lldms", (long long)ms);
    else if (ms < 60000)
        snprintf(b, cap, "%.3gs", (double)ms / 1000);
    else
        snprintf(b, cap, "%lldm%llds", (long long)(ms / 60000), (long long)(ms % 60000 / 1000));
}

void gw_limits_headers(const gw_limits_verdict *v, void (*add)(void *, const char *, const char *),
                       void *ud) {
    char b[32];
    if (v->has_req) {
        snprintf(b, sizeof b, "%lld", (long long)v->lim_req);
        add(ud, "x-ratelimit-limit-requests", b);
        snprintf(b, sizeof b, "%lld", (long long)v->rem_req);
        add(ud, "x-ratelimit-remaining-requests", b);
        dur(b, sizeof b, v->reset_req_ms);
        add(ud, "x-ratelimit-reset-requests", b);
    }
    if (v->has_tok) {
        snprintf(b, sizeof b, "%lld", (long long)v->lim_tok);
        add(ud, "x-ratelimit-limit-tokens", b);
        snprintf(b, sizeof b, "%lld", (long long)v->rem_tok);
        add(ud, "x-ratelimit-remaining-tokens", b);
        dur(b, sizeof b, v->reset_tok_ms);
        add(ud, "x-ratelimit-reset-tokens", b);
    }
    if (v->status == 429) {
        snprintf(b, sizeof b, "%d", v->retry_after_s);
        add(ud, "retry-after", b);
    }
}

/* The verdict of counts (Redis' or local): used after admission when not hit. */
static void verdict(gw_limits *l, gw_limits_ticket *t, int hit, const int64_t u[4],
                    const moe_tenant_limits *lim, int64_t reset_w, int64_t reset_d) {
    gw_limits_verdict *v = &t->v;
    const int64_t ur = u[0], ut = u[1], ud = u[2], uc = u[3];
    v->has_req = lim->rpm > 0;
    v->lim_req = lim->rpm;
    v->rem_req = lim->rpm > ur ? lim->rpm - ur : 0;
    v->reset_req_ms = reset_w;
    v->has_tok = lim->tpm > 0;
    v->lim_tok = lim->tpm;
    v->rem_tok = lim->tpm > ut ? lim->tpm - ut : 0;
    v->reset_tok_ms = reset_w;
    if (hit == HIT_NONE) {
        v->status = 200;
        return;
    }
    static const char *const what[] = {"", "requests per min (RPM)", "tokens per min (TPM)",
                                       "concurrent requests", "tokens per day (TPD)"};
    const int64_t limit[] = {0, lim->rpm, lim->tpm, lim->concurrency, lim->daily_tokens};
    const int64_t used[] = {0, ur, ut, uc, ud};
    const int64_t asked = hit == HIT_TPM || hit == HIT_DAILY ? t->prompt_tokens : 1;
    const int64_t wait = hit == HIT_DAILY ? reset_d : hit == HIT_CONC ? 1000 : reset_w;
    v->status = 429;
    v->retry_after_s = (int)((wait + 999) / 1000);
    if (v->retry_after_s < 1) v->retry_after_s = 1;
    gw_api_error_set(&v->err, 429, NULL,
                     "Rate limit reached for %s on tenant %s: Limit %lld, Used %lld, Requested "
                     "%lld. Please try again in %ds.",
                     what[hit], t->tenant.name, (long long)limit[hit], (long long)used[hit],
                     (long long)asked, v->retry_after_s);
    v->err.type = hit == HIT_TPM || hit == HIT_DAILY ? "tokens" : "requests";
    v->err.param[0] = 0;
    snprintf(v->err.code, sizeof v->err.code, "rate_limit_exceeded");
    moe_metric_inc(l->m_limited, (const char *[]){hit_names[hit]}, 1);
}

/* Local counts after an admission decided by Redis or alone (then, with Redis, also
 * pending for it: added when it answers again, redis_sync). */
static void local_admit(gw_limits *l, gw_limits_ticket *t) {
    lt *e = lt_get(l, t->tenant.name);
    if (!e) return;
    lt_roll(l, e, wall_ms());
    e->req++;
    e->tok += t->prompt_tokens;
    e->day_tok += t->prompt_tokens;
    e->inflight++;
    if (!l->link || !t->alone) return;
    e->alone_req++;
    e->alone_tok += t->prompt_tokens;
    e->alone_day_tok += t->prompt_tokens;
    e->alone_slots += t->tenant.lim.concurrency > 0;
}

/* Decides alone: this replica's counts against its share of each limit (Redis away, or
 * its script failed: failed). */
static void decide_local(gw_limits *l, gw_limits_ticket *t, int failed) {
    if (l->p.fail_closed && l->link) {
        gw_api_error_set(&t->v.err, 503, NULL,
                         "the rate limiter's Redis %s and this gateway runs with "
                         "--limits-fail-closed; retry shortly",
                         failed ? "could not run its script" : "does not answer");
        t->v.status = 503;
        moe_metric_inc(l->m_limited, (const char *[]){"unavailable"}, 1);
        return;
    }
    const int64_t now = wall_ms(), w = (int64_t)l->p.window_s * 1000;
    lt *e = lt_get(l, t->tenant.name);
    if (!e) { /* out of memory: let it through */
        t->v.status = 200;
        return;
    }
    lt_roll(l, e, now);
    moe_tenant_limits s = t->tenant.lim; /* this replica's share */
    int64_t *share[] = {&s.rpm, &s.tpm, &s.concurrency, &s.daily_tokens};
    for (int i = 0; i < 4; i++)
        if (*share[i] > 0) *share[i] = *share[i] / l->n_gw > 0 ? *share[i] / l->n_gw : 1;
    int hit = HIT_NONE;
    if (s.rpm > 0 && e->req + 1 > s.rpm)
        hit = HIT_RPM;
    else if (s.tpm > 0 && e->tok + t->prompt_tokens > s.tpm)
        hit = HIT_TPM;
    else if (s.daily_tokens > 0 && e->day_tok + t->prompt_tokens > s.daily_tokens)
        hit = HIT_DAILY;
    else if (s.concurrency > 0 && e->inflight + 1 > s.concurrency)
        hit = HIT_CONC;
    const int64_t u[4] = {e->req + (hit == HIT_NONE), e->tok + (hit ? 0 : t->prompt_tokens),
                          e->day_tok + (hit ? 0 : t->prompt_tokens), e->inflight};
    verdict(l, t, hit, u, &s, w - now % w, DAY_MS - now % DAY_MS);
}

/* ==== Redis ====================================================================== */

/* Appends one run of the script (EVALSHA, or EVAL with its text). */
static void append_script(gw_limits *l, int eval, const char *key, int argc, const char **args) {
    const char *argv[4 + argc];
    int n = 0;
    argv[n++] = eval ? "EVAL" : "EVALSHA";
    argv[n++] = eval ? SCRIPT : l->sha;
    argv[n++] = "1";
    argv[n++] = key;
    for (int i = 0; i < argc; i++) argv[n++] = args[i];
    moe_rlink_appendargv(l->link, n, argv, NULL);
}

/* The n integers of an array reply r into x: 0, or -1 when r is something else. */
static int int_array(const redisReply *r, int64_t *x, size_t n) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != n) return -1;
    for (size_t k = 0; k < n; k++) {
        if (r->element[k]->type != REDIS_REPLY_INTEGER) return -1;
        x[k] = r->element[k]->integer;
    }
    return 0;
}

/* A run of the script that failed otherwise than NOSCRIPT (a key of the wrong type, a
 * Lua error, OOM, ...): counted by reason, logged with its text at most every 10 s
 * (the limiter's thread only). */
static void script_error(gw_limits *l, const char *tenant, const redisReply *r, const char *then) {
    static const char *const known[] = {"wrongtype", "err",      "oom",     "busy",
                                        "noperm",    "readonly", "loading", "masterdown"};
    static int64_t last, quiet;
    const char *reason = "reply", *text = "a malformed reply";
    if (r->type == REDIS_REPLY_ERROR && r->str) {
        text = r->str;
        reason = "other";
        for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
            const size_t n = strlen(known[i]);
            if (!strncasecmp(r->str, known[i], n) && (r->str[n] == ' ' || !r->str[n]))
                reason = known[i];
        }
    }
    moe_metric_inc(l->m_script_err, (const char *[]){reason}, 1);
    const int64_t now = moe_mono_ms();
    if (last && now - last < 10000) {
        quiet++;
        return;
    }
    moe_log(MOE_LOG_WARN, GW,
            "limits: the script failed for tenant %s: %.200s; %s (%lld more "
            "failures in the last %llds not logged)",
            tenant, text, then, (long long)quiet, (long long)(last ? (now - last) / 1000 : 0));
    last = now;
    quiet = 0;
}

typedef struct batch {
    gw_limits *l;
    gw_limits_ticket **t;
    int n;
    int *noscript; /* (n) 1: answer NOSCRIPT, run again with EVAL */
    int *ok;       /* (n) 1: decided by Redis */
} batch;

static int is_noscript(const redisReply *r) {
    return r->type == REDIS_REPLY_ERROR && r->str && !strncmp(r->str, "NOSCRIPT", 8);
}

static void on_admit_reply(void *ud, size_t i, redisReply *r) {
    batch *b = ud;
    gw_limits_ticket *t = b->t[i];
    if (is_noscript(r)) {
        b->noscript[i] = 1;
        return;
    }
    int64_t x[7];
    if (int_array(r, x, 7) < 0) { /* decided alone (decide_local), as with Redis away */
        script_error(b->l, t->tenant.name, r,
                     b->l->p.fail_closed ? "refused (--limits-fail-closed)"
                                         : "this admission enforces the local share");
        return;
    }
    b->ok[i] = 1;
    b->noscript[i] = 0;
    verdict(b->l, t, (int)x[0], x + 1, &t->tenant.lim, x[5], x[6]);
}

/* Runs the admissions of b in one pipeline (and again with EVAL those that
 * found no script). 0, or MOE_EUNAVAIL: Redis away (b->ok says which are decided). */
static int redis_admit(gw_limits *l, batch *b) {
    char key[MOE_SCHEMA_KEY_MAX], a[6][24], win[16];
    snprintf(win, sizeof win, "%d", l->p.window_s);
    snprintf(a[5], sizeof a[5], "%d", LIM_LEASE_MS);
    for (int pass = 0; pass < 2; pass++) {
        if (moe_rlink_begin(l->link) < 0) return MOE_EUNAVAIL;
        int n = 0;
        for (int i = 0; i < b->n; i++) {
            if (pass && !b->noscript[i]) continue;
            const gw_limits_ticket *t = b->t[i];
            const moe_tenant_limits *m = &t->tenant.lim;
            snprintf(a[0], sizeof a[0], "%lld", (long long)m->rpm);
            snprintf(a[1], sizeof a[1], "%lld", (long long)m->tpm);
            snprintf(a[2], sizeof a[2], "%lld", (long long)m->concurrency);
            snprintf(a[3], sizeof a[3], "%lld", (long long)m->daily_tokens);
            snprintf(a[4], sizeof a[4], "%lld", (long long)t->prompt_tokens);
            moe_key_limit(key, sizeof key, l->prefix, t->tenant.name);
            const char *args[] = {"admit", win, a[0], a[1], a[2], a[3], a[4], t->job->id, a[5]};
            append_script(l, pass, key, 9, args);
            n++;
        }
        if (!n) return 0;
        if (pass) { /* replies go to the tickets that asked again, in order */
            gw_limits_ticket *again[n];
            int k = 0, idx[n];
            for (int i = 0; i < b->n; i++)
                if (b->noscript[i]) again[k] = b->t[i], idx[k++] = i;
            int ok2[n], ns2[n];
            memset(ok2, 0, sizeof ok2);
            memset(ns2, 0, sizeof ns2);
            batch b2 = {l, again, n, ns2, ok2};
            if (moe_rlink_flush(l->link, on_admit_reply, &b2) < 0) return MOE_EUNAVAIL;
            for (int i = 0; i < n; i++) b->ok[idx[i]] = ok2[i];
        } else if (moe_rlink_flush(l->link, on_admit_reply, b) < 0) {
            return MOE_EUNAVAIL;
        }
    }
    return 0;
}

/* One tenant's run of 'add': what it carries, taken off the pending counts once Redis
 * has it (a failed run leaves them for the next). */
typedef struct sync_call {
    lt *e;
    int64_t pend, req, tok, day_tok; /* completion tokens; admitted alone (lt) */
    gw_limits_ticket **slot;         /* (n_slot) admitted alone, running, not in Redis */
    int n_slot;
    int noscript; /* answered NOSCRIPT: run again with EVAL */
} sync_call;

typedef struct sync_batch {
    gw_limits *l;
    sync_call *c;
    int *idx; /* the pipeline's i-th run is c[idx[i]] */
} sync_batch;

static void on_sync_reply(void *ud, size_t i, redisReply *r) {
    sync_batch *b = ud;
    gw_limits *l = b->l;
    sync_call *c = &b->c[b->idx[i]];
    int64_t x[4];
    c->noscript = is_noscript(r);
    if (c->noscript) return;
    if (int_array(r, x, 4) < 0) {
        script_error(l, c->e->name, r, "its counts stay pending for the next try");
        return;
    }
    lt *e = c->e;
    e->pending -= c->pend;
    e->alone_req -= c->req;
    e->alone_tok -= c->tok;
    e->alone_day_tok -= c->day_tok;
    e->alone_slots -= c->n_slot;
    for (int k = 0; k < c->n_slot; k++) c->slot[k]->redis_slot = 1; /* 'end' removes it */
    static const char *const what[] = {"requests", "tokens", "day_tokens", "slots"};
    for (int k = 0; k < 4; k++) {
        if (x[k] > 0) moe_metric_inc(l->m_reconciled, (const char *[]){what[k]}, (double)x[k]);
        if (l->degraded) l->back[k] += x[k];
    }
    if (l->degraded) l->back[4] += x[0] || x[1] || x[2] || x[3];
}

static int lt_unsynced(const lt *e) {
    return e->pending > 0 || e->alone_req > 0 || e->alone_tok > 0 || e->alone_day_tok > 0 ||
           e->alone_slots > 0;
}

static int slot_alone(const gw_limits_ticket *t) {
    return t->alone && !t->redis_slot && t->tenant.lim.concurrency > 0;
}

/* Brings Redis up to date with this replica: one run of 'add' per tenant with something
 * pending (completion tokens; and what was admitted alone while Redis was away or the
 * script failed: requests and tokens of the current window, tokens of the day, the
 * slots still running), in one pipeline (again with EVAL those that found no script).
 * 0, or MOE_EUNAVAIL: Redis away. */
static int redis_sync(gw_limits *l) {
    const int64_t now = wall_ms();
    int k = 0, n_slot = 0, rc = 0;
    for (int h = 0; h < LIM_BUCKETS; h++)
        for (lt *e = l->tab[h]; e; e = e->next) {
            lt_roll(l, e, now);
            k += lt_unsynced(e);
        }
    if (!k) return 0;
    for (gw_limits_ticket *t = l->live; t; t = t->live_next) n_slot += slot_alone(t);
    sync_call *c = calloc((size_t)k, sizeof *c);
    gw_limits_ticket **slots = malloc((size_t)(n_slot + 1) * sizeof *slots);
    int *idx = malloc((size_t)k * sizeof *idx);
    if (!c || !slots || !idx) goto out; /* out of memory: the next tick tries again */
    int used = 0;
    k = 0;
    for (int h = 0; h < LIM_BUCKETS; h++)
        for (lt *e = l->tab[h]; e; e = e->next) {
            if (!lt_unsynced(e)) continue;
            c[k] = (sync_call){
                e, e->pending, e->alone_req, e->alone_tok, e->alone_day_tok, slots + used, 0, 0};
            for (gw_limits_ticket *t = l->live; t && e->alone_slots > 0; t = t->live_next)
                if (slot_alone(t) && used < n_slot && !strcmp(t->tenant.name, e->name))
                    slots[used++] = t, c[k].n_slot++;
            k++;
        }
    char key[MOE_SCHEMA_KEY_MAX], win[16], lease[16], a[7][24];
    snprintf(win, sizeof win, "%d", l->p.window_s);
    snprintf(lease, sizeof lease, "%d", LIM_LEASE_MS);
    sync_batch b = {l, c, idx};
    for (int pass = 0; pass < 2; pass++) {
        if (moe_rlink_begin(l->link) < 0) {
            rc = MOE_EUNAVAIL;
            goto out;
        }
        int n = 0;
        for (int i = 0; i < k; i++) {
            if (pass && !c[i].noscript) continue;
            const sync_call *s = &c[i];
            const int64_t v[] = {s->pend, s->e->win, s->req, s->tok, s->e->day, s->day_tok};
            const char *args[9 + s->n_slot];
            args[0] = "add", args[1] = win;
            for (int j = 0; j < 6; j++) {
                snprintf(a[j], sizeof a[j], "%lld", (long long)v[j]);
                args[2 + j] = a[j];
            }
            args[8] = lease;
            for (int j = 0; j < s->n_slot; j++) args[9 + j] = s->slot[j]->job->id;
            moe_key_limit(key, sizeof key, l->prefix, s->e->name);
            append_script(l, pass, key, 9 + s->n_slot, args);
            idx[n++] = i;
        }
        if (!n) break;
        if (moe_rlink_flush(l->link, on_sync_reply, &b) < 0) {
            rc = MOE_EUNAVAIL;
            goto out;
        }
    }
out:
    free(idx);
    free(slots);
    free(c);
    return rc;
}

/* 1 when Redis answers. Coming back, what was admitted alone meanwhile goes first, so
 * that the verdicts that follow count it. */
static int redis_back(gw_limits *l) {
    return moe_rlink_up(l->link) && (!l->degraded || redis_sync(l) == 0);
}

/* Registers this replica and learns how many there are (the local share). */
static int redis_hello(gw_limits *l) {
    char key[MOE_SCHEMA_KEY_MAX];
    moe_key_gateways(key, sizeof key, l->prefix);
    redisReply *r = moe_rlink_cmd(l->link, "EVAL %s 1 %s hello %s", SCRIPT, key, l->id);
    if (!r) return MOE_EUNAVAIL;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) l->n_gw = (int)r->integer;
    if (r->type == REDIS_REPLY_ERROR)
        moe_log(MOE_LOG_WARN, GW, "limits: registering the replica failed: %.200s", r->str);
    freeReplyObject(r);
    return 0;
}

/* Renews the concurrency leases of the requests running here. */
static void redis_touch(gw_limits *l) {
    char key[MOE_SCHEMA_KEY_MAX], lease[16];
    snprintf(lease, sizeof lease, "%d", LIM_LEASE_MS);
    if (moe_rlink_begin(l->link) < 0) return;
    for (gw_limits_ticket *t = l->live; t; t = t->live_next) {
        if (!t->redis_slot) continue;
        moe_key_limit(key, sizeof key, l->prefix, t->tenant.name);
        append_script(l, 0, key, 4, (const char *[]){"touch", "60", lease, t->job->id});
    }
    moe_rlink_flush(l->link, NULL, NULL);
}

static void set_degraded(gw_limits *l, int on) {
    if (l->degraded == on) return;
    l->degraded = on;
    moe_metric_set(l->m_degraded, NULL, on);
    if (on)
        moe_log(MOE_LOG_WARN, GW,
                "limits: Redis does not answer; %s (share 1/%d of each limit) until it is back",
                l->p.fail_closed ? "refusing requests of tenants with limits (503)"
                                 : "enforcing limits locally",
                l->n_gw);
    else
        moe_log(MOE_LOG_INFO, GW,
                "limits: Redis is back; added %lld requests, %lld tokens admitted locally for "
                "%lld tenants (%lld tokens to the day's counts, %lld concurrency slots); limits "
                "are shared again",
                (long long)l->back[0], (long long)l->back[1], (long long)l->back[4],
                (long long)l->back[2], (long long)l->back[3]);
    memset(l->back, 0, sizeof l->back);
}

/* ==== The thread ================================================================= */

/* The tokens a request generated since the last look: counted locally, and pending
 * for Redis. */
static void charge_one(gw_limits *l, gw_limits_ticket *t, int64_t now) {
    const int n = atomic_load_explicit(&t->job->lim_tokens, memory_order_relaxed);
    if (n <= t->charged) return;
    lt *e = lt_get(l, t->tenant.name);
    if (e) {
        lt_roll(l, e, now);
        e->tok += n - t->charged;
        e->day_tok += n - t->charged;
        if (l->link) e->pending += n - t->charged;
    }
    t->charged = n;
}

static void charge_live(gw_limits *l) {
    const int64_t now = wall_ms();
    for (gw_limits_ticket *t = l->live; t; t = t->live_next) charge_one(l, t, now);
}

/* Decides a batch of admissions and wakes their connections. */
static void decide(gw_limits *l, gw_limits_ticket **ts, int n) {
    int ns[n], ok[n];
    memset(ns, 0, sizeof ns);
    memset(ok, 0, sizeof ok);
    batch b = {l, ts, n, ns, ok};
    if (l->link) set_degraded(l, !(redis_back(l) && redis_admit(l, &b) == 0));
    for (int i = 0; i < n; i++) {
        gw_limits_ticket *t = ts[i];
        if (!ok[i]) decide_local(l, t, !l->degraded); /* Redis away, or the script failed */
        if (t->v.status == 200) {
            t->admitted = 1;
            t->alone = !ok[i];
            t->redis_slot = ok[i] && t->tenant.lim.concurrency > 0;
            local_admit(l, t);
            t->live_next = l->live;
            l->live = t;
        }
        pthread_mutex_lock(&l->mu);
        t->decided = 1;
        if (t->conn) t->wake(t->conn);
        pthread_mutex_unlock(&l->mu);
    }
}

/* Requests that ended (a list by end_next): their last tokens, their slots (one
 * pipeline of 'end' runs; again with EVAL after a NOSCRIPT), and the tickets. */
static void finish(gw_limits *l, gw_limits_ticket *list) {
    const int64_t now = wall_ms();
    int n_redis = 0;
    for (gw_limits_ticket *t = list; t; t = t->end_next) {
        if (!t->admitted) continue;
        charge_one(l, t, now);
        for (gw_limits_ticket **p = &l->live; *p; p = &(*p)->live_next)
            if (*p == t) {
                *p = t->live_next;
                break;
            }
        lt *e = lt_get(l, t->tenant.name);
        if (e && e->inflight > 0) e->inflight--;
        if (e && slot_alone(t) && e->alone_slots > 0) e->alone_slots--; /* never in Redis */
        n_redis += t->redis_slot;
    }
    for (int pass = 0; n_redis && pass < 2 && !l->degraded && moe_rlink_up(l->link); pass++) {
        if (moe_rlink_begin(l->link) < 0) break;
        char key[MOE_SCHEMA_KEY_MAX];
        for (gw_limits_ticket *t = list; t; t = t->end_next) {
            if (!t->admitted || !t->redis_slot) continue;
            moe_key_limit(key, sizeof key, l->prefix, t->tenant.name);
            append_script(l, pass, key, 3, (const char *[]){"end", "60", t->job->id});
        }
        if (moe_rlink_flush(l->link, NULL, NULL) != MOE_EIO) break; /* EIO: an error reply */
    }
    while (list) {
        gw_limits_ticket *t = list;
        list = t->end_next;
        gw_job_unref(t->job);
        free(t);
    }
}

static void *run(void *arg) {
    gw_limits *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        if (!l->q && !l->ends) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += LIM_TICK_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
        gw_limits_ticket *q = l->q, *ends = l->ends;
        l->q = l->q_tail = NULL;
        l->ends = NULL;
        pthread_mutex_unlock(&l->mu);
        /* ends first (a freed slot counts for the admissions queued with it); a ticket
         * ended before its verdict waits for it */
        gw_limits_ticket *ready = NULL, *later = NULL;
        while (ends) {
            gw_limits_ticket *t = ends, **to = t->decided ? &ready : &later;
            ends = t->end_next;
            t->end_next = *to;
            *to = t;
        }
        finish(l, ready);
        enum { BATCH = 256 };
        gw_limits_ticket *ts[BATCH];
        while (q) {
            int n = 0;
            while (q && n < BATCH) ts[n++] = q, q = q->next;
            decide(l, ts, n);
        }
        finish(l, later);
        const int64_t now = moe_mono_ms();
        if (now - l->t_charge >= LIM_CHARGE_MS) {
            l->t_charge = now;
            charge_live(l);
            if (l->link && moe_rlink_up(l->link)) redis_sync(l);
        }
        if (l->link && now - l->t_hello >= LIM_HELLO_MS) {
            l->t_hello = now;
            set_degraded(l, !(redis_back(l) && redis_hello(l) == 0));
        }
        if (l->link && !l->degraded && now - l->t_touch >= LIM_TOUCH_MS) {
            l->t_touch = now;
            redis_touch(l);
        }
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ==== API ======================================================================== */

pthread_mutex_t *gw_limits_mutex(gw_limits *l) {
    return &l->mu;
}

int gw_limits_counted(const moe_tenant_limits *lim) {
    return lim->rpm > 0 || lim->tpm > 0 || lim->concurrency > 0 || lim->daily_tokens > 0;
}

void gw_limits_count_context(gw_limits *l) {
    if (l) moe_metric_inc(l->m_limited, (const char *[]){"context"}, 1);
}

int gw_limits_check_context(gw_limits *l, const moe_tenant *t, gw_job *j, gw_api_error *e) {
    const int64_t mc = t->lim.max_context;
    if (mc <= 0) return 0;
    int64_t longest = 0;
    for (int i = 0; i < j->req.n_prompts; i++)
        if (j->req.prompts[i].n > longest) longest = j->req.prompts[i].n;
    const int64_t mt = j->req.gen.max_tokens;
    if (mt < 0 && longest < mc) {
        j->req.gen.max_tokens = (int)(mc - longest);
        return 0;
    }
    if (longest + (mt < 0 ? 1 : mt) <= mc) return 0;
    gw_limits_count_context(l);
    gw_api_error_set(e, 400, "messages",
                     "This tenant's maximum context length is %lld tokens. However, you requested "
                     "%lld tokens (%lld in the messages, %lld in the completion). Please reduce "
                     "the length of the messages or completion.",
                     (long long)mc, (long long)(longest + (mt < 0 ? 0 : mt)), (long long)longest,
                     (long long)(mt < 0 ? 0 : mt));
    snprintf(e->code, sizeof e->code, "context_length_exceeded");
    return -1;
}

gw_limits_ticket *gw_limits_ticket_new(const moe_tenant *t, gw_job *j) {
    gw_limits_ticket *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->tenant = *t;
    k->job = j;
    gw_job_ref(j);
    for (int i = 0; i < j->req.n_prompts; i++) k->prompt_tokens += j->req.prompts[i].n;
    return k;
}

void gw_limits_admit(gw_limits *l, gw_limits_ticket *t, void (*suspend)(void *conn)) {
    pthread_mutex_lock(&l->mu);
    if (suspend && t->conn) suspend(t->conn);
    t->next = NULL;
    if (l->q_tail)
        l->q_tail->next = t;
    else
        l->q = t;
    l->q_tail = t;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void gw_limits_end(gw_limits *l, gw_limits_ticket *t) {
    pthread_mutex_lock(&l->mu);
    t->conn = NULL;
    t->ended = 1;
    t->end_next = l->ends;
    l->ends = t;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

int gw_limits_start(gw_limits **out, const gw_limits_params *p, moe_err *err) {
    *out = NULL;
    gw_limits *l = calloc(1, sizeof *l);
    if (!l) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    l->p = *p;
    if (l->p.window_s <= 0) l->p.window_s = 60;
    snprintf(l->prefix, sizeof l->prefix, "%s", moe_schema_prefix(p->prefix));
    snprintf(l->id, sizeof l->id, "%s", p->id && *p->id ? p->id : "gateway");
    l->n_gw = 1;
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)SCRIPT, sizeof SCRIPT - 1, d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++) snprintf(l->sha + 2 * i, 3, "%02x", d[i]);
    if (p->redis) {
        int rc = moe_rlink_create(&l->link, p->redis, "gateway limits", err);
        if (rc < 0) {
            free(l);
            return rc;
        }
        moe_rlink_set_timeouts(l->link, 300, 500);
    }
    if (p->reg) {
        l->m_limited = moe_metrics_counter(
            p->reg, "moemesh_gateway_rate_limited_total",
            "Requests refused by a tenant's limit (429; context: 400; unavailable: 503 with "
            "--limits-fail-closed while Redis is away), by limit.",
            "limit", 8);
        l->m_degraded = moe_metrics_gauge(
            p->reg, "moemesh_gateway_limits_degraded",
            "1 while the limits' Redis is away and this replica enforces its share alone.", NULL,
            0);
        l->m_script_err = moe_metrics_counter(
            p->reg, "moemesh_gateway_limits_script_errors_total",
            "Runs of the limits script that failed (a key of the wrong type, a Lua error, OOM, "
            "...): an admission then enforces this replica's share alone (503 with "
            "--limits-fail-closed), a charge stays pending; by the error's first word.",
            "reason", 10 | MOE_METRIC_OTHER);
        l->m_reconciled = moe_metrics_counter(
            p->reg, "moemesh_gateway_limits_reconciled_total",
            "What this replica admitted alone (Redis away, or the script failed) and added to "
            "Redis afterwards: requests and tokens of the window still current, tokens of the "
            "day, concurrency slots still running.",
            "what", 4);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->th, NULL, run, l) != 0) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        moe_rlink_free(l->link);
        free(l);
        return moe_err_set(err, MOE_ENOMEM, "cannot start the limiter thread");
    }
    *out = l;
    return 0;
}

void gw_limits_stop(gw_limits *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->th, NULL);
    for (gw_limits_ticket *t = l->q, *n; t; t = n) { /* never decided: 503 */
        n = t->next;
        gw_api_error_set(&t->v.err, 503, NULL, "the server is shutting down");
        t->v.status = 503;
        t->decided = 1;
        if (t->conn) t->wake(t->conn);
    }
    for (gw_limits_ticket *t = l->ends, *n; t; t = n) {
        n = t->end_next;
        gw_job_unref(t->job);
        free(t);
    }
    for (int b = 0; b < LIM_BUCKETS; b++)
        for (lt *e = l->tab[b], *n; e; e = n) {
            n = e->next;
            free(e);
        }
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    moe_rlink_free(l->link);
    free(l);
}
