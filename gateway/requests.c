/* requests.c - request ids and the per-tenant registry of requests (see
 * requests.h). Records live in one array: a free stack, the ones in flight,
 * and a ring of finished ones (oldest first, evicted past GW_REQS_KEEP or
 * GW_REQS_KEEP_MS); one chained hash table (keyed, seeded from getrandom)
 * finds a record by either of its ids. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "requests.h"
#include "svc/clock.h"

/* ==== Ids =============================================================== */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n random bytes: getrandom(2); if that fails (never on Linux >= 3.17 once
 * the pool is ready), the clock, a counter and the pid mixed. */
static void random_bytes(unsigned char *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        const ssize_t k = getrandom(p + got, n - got, 0);
        if (k <= 0) break;
        got += (size_t)k;
    }
    if (got == n) return;
    static atomic_ullong ctr;
    for (size_t i = got; i < n; i += 8) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t z =
            mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ ((uint64_t)getpid() << 48) ^
                  atomic_fetch_add(&ctr, 1) * 0x9e3779b97f4a7c15ull);
        memcpy(p + i, &z, n - i < 8 ? n - i : 8);
    }
}

void gw_reqs_new_id(char id[GW_REQ_ID_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    random_bytes(b, sizeof b);
    memcpy(id, "req_", 4);
    for (int i = 0; i < 16; i++) {
        id[4 + 2 * i] = hex[b[i] >> 4];
        id[5 + 2 * i] = hex[b[i] & 15];
    }
    id[GW_REQ_ID_LEN] = 0;
}

int gw_reqs_client_id_ok(const char *s) {
    if (!s || !s[0]) return 0;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= GW_CLIENT_REQ_ID_MAX || (unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e)
            return 0;
    return 1;
}

/* 1 if id could be one of ours: 1..GW_REQS_ID_MAX of [A-Za-z0-9_-]. */
static int id_ok(const char *id) {
    size_t n = 0;
    for (; id[n]; n++) {
        const char c = id[n];
        if (n >= GW_REQS_ID_MAX || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                     (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return n > 0;
}

/* ==== The registry ====================================================== */

enum { REC_FREE, REC_LIVE, REC_DONE };

typedef struct rec {
    gw_req_info in; /* final once done; id, cid, model, created, stream, prompt from the start */
    char tenant[MOE_TENANT_NAME_MAX + 1];
    gw_job *job;       /* in flight (no reference: see requests.h); NULL once done */
    int64_t arrive_us; /* mono: registered (queued) */
    int64_t ended_ms;  /* mono: done */
    int cancel;        /* a cancel was asked while in flight */
    int state;         /* REC_* */
    int next[2];       /* hash chains (nodes idx * 2 + kind; kind 0: id, 1: cid); -1 ends */
} rec;

struct gw_reqs {
    pthread_mutex_t mu;
    rec *recs; /* (cap) */
    int cap;
    int *free_stack; /* (cap) */
    int n_free;
    int *done_q; /* (GW_REQS_KEEP) finished records, oldest at dq_head */
    int dq_head, dq_n;
    int *heads; /* (mask + 1) first node of each bucket, -1: none */
    uint32_t mask;
    uint64_t k0, k1; /* the hash's key */
};

static uint32_t hash_id(const gw_reqs *r, const char *s) {
    uint64_t h = r->k0;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return (uint32_t)mix64(h ^ r->k1) & r->mask;
}

static const char *node_key(const gw_reqs *r, int node) {
    const rec *k = &r->recs[node >> 1];
    return node & 1 ? k->in.cid : k->in.id;
}

static void idx_insert(gw_reqs *r, int idx, int kind) {
    const int node = idx * 2 + kind;
    const uint32_t b = hash_id(r, node_key(r, node));
    r->recs[idx].next[kind] = r->heads[b];
    r->heads[b] = node;
}

static void idx_remove(gw_reqs *r, int idx, int kind) {
    const int node = idx * 2 + kind;
    int *at = &r->heads[hash_id(r, node_key(r, node))];
    while (*at >= 0 && *at != node) at = &r->recs[*at >> 1].next[*at & 1];
    if (*at == node) *at = r->recs[idx].next[kind];
}

/* The record whose id or completion id is id, or -1. */
static int lookup(const gw_reqs *r, const char *id) {
    for (int node = r->heads[hash_id(r, id)]; node >= 0; node = r->recs[node >> 1].next[node & 1])
        if (!strcmp(node_key(r, node), id)) return node >> 1;
    return -1;
}

static void evict_oldest(gw_reqs *r) {
    const int idx = r->done_q[r->dq_head];
    r->dq_head = (r->dq_head + 1) % GW_REQS_KEEP;
    r->dq_n--;
    idx_remove(r, idx, 0);
    idx_remove(r, idx, 1);
    r->recs[idx].state = REC_FREE;
    r->free_stack[r->n_free++] = idx;
}

/* Forgets the finished records older than GW_REQS_KEEP_MS. */
static void expire(gw_reqs *r, int64_t now_ms) {
    while (r->dq_n > 0 && now_ms - r->recs[r->done_q[r->dq_head]].ended_ms >= GW_REQS_KEEP_MS)
        evict_oldest(r);
}

int gw_reqs_create(gw_reqs **out, int max_records) {
    *out = NULL;
    if (max_records < GW_REQS_KEEP + 1) max_records = GW_REQS_KEEP + 1;
    gw_reqs *r = calloc(1, sizeof *r);
    if (!r) return MOE_ENOMEM;
    uint32_t nb = 1;
    while (nb < 4u * (uint32_t)max_records) nb <<= 1; /* two nodes per record, load <= 1/2 */
    r->cap = max_records;
    r->mask = nb - 1;
    r->recs = calloc((size_t)max_records, sizeof *r->recs);
    r->free_stack = malloc((size_t)max_records * sizeof *r->free_stack);
    r->done_q = malloc(GW_REQS_KEEP * sizeof *r->done_q);
    r->heads = malloc((size_t)nb * sizeof *r->heads);
    if (!r->recs || !r->free_stack || !r->done_q || !r->heads) {
        gw_reqs_free(r);
        return MOE_ENOMEM;
    }
    for (uint32_t b = 0; b < nb; b++) r->heads[b] = -1;
    for (int i = 0; i < max_records; i++) r->free_stack[r->n_free++] = max_records - 1 - i;
    uint64_t k[2];
    random_bytes((unsigned char *)k, sizeof k);
    r->k0 = k[0] | 1, r->k1 = k[1];
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

void gw_reqs_free(gw_reqs *r) {
    if (!r) return;
    if (r->heads) pthread_mutex_destroy(&r->mu);
    free(r->recs);
    free(r->free_stack);
    free(r->done_q);
    free(r->heads);
    free(r);
}

int gw_reqs_add(gw_reqs *r, gw_job *j, int64_t now_us) {
    pthread_mutex_lock(&r->mu);
    expire(r, now_us / 1000);
    if (r->n_free == 0 && r->dq_n > 0) evict_oldest(r);
    if (r->n_free == 0) { /* every record in flight */
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    const int idx = r->free_stack[--r->n_free];
    rec *k = &r->recs[idx];
    memset(k, 0, sizeof *k);
    snprintf(k->in.id, sizeof k->in.id, "%s", j->req_id);
    snprintf(k->in.cid, sizeof k->in.cid, "%s", j->id);
    snprintf(k->in.model, sizeof k->in.model, "%s", j->req.model ? j->req.model : "");
    snprintf(k->tenant, sizeof k->tenant, "%s", j->tenant);
    k->in.created = j->created;
    k->in.stream = j->req.stream;
    k->in.prompt_tokens = j->prompt_tokens;
    k->job = j;
    k->arrive_us = now_us;
    k->state = REC_LIVE;
    idx_insert(r, idx, 0);
    idx_insert(r, idx, 1);
    j->reg_idx = idx;
    j->on_end = gw_reqs_job_ended;
    j->on_end_ud = r;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* A finished choice's finish_reason (job.c's mapping). */
static const char *finish_of(const gw_choice *c) {
    switch (c->finish) {
    case MOE_GEN_FINISH_NONE:
        return "cancelled";
    case MOE_GEN_FINISH_MAX_TOKENS:
    case MOE_GEN_FINISH_CONTEXT:
        return "length";
    default:
        return "stop";
    }
}

void gw_reqs_job_ended(gw_job *j, gw_job_end how) {
    gw_reqs *r = j->on_end_ud;
    const int64_t now = moe_mono_us();
    pthread_mutex_lock(&r->mu);
    const int idx = j->reg_idx;
    if (idx < 0 || r->recs[idx].job != j) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    rec *k = &r->recs[idx];
    if (k->cancel) how = GW_JOB_END_CANCELLED;
    k->in.status = how == GW_JOB_END_COMPLETED   ? "completed"
                   : how == GW_JOB_END_CANCELLED ? "cancelled"
                                                 : "failed";
    /* as the "request ended" log line counts it */
    const int64_t arrive = j->t_arrive_us ? j->t_arrive_us : k->arrive_us;
    k->in.queue_ms = (double)((j->t_admit_us ? j->t_admit_us : now) - arrive) / 1e3;
    k->in.completion_tokens = gw_job_completion_tokens(j);
    k->in.finish_reason = how == GW_JOB_END_FAILED ? NULL
                          : j->n_ch > 0            ? finish_of(&j->ch[0])
                                                   : "stop";
    if (how == GW_JOB_END_COMPLETED && k->in.finish_reason &&
        !strcmp(k->in.finish_reason, "cancelled"))
        k->in.finish_reason = "stop";
    k->job = NULL;
    k->state = REC_DONE;
    k->ended_ms = now / 1000;
    j->reg_idx = -1;
    if (r->dq_n == GW_REQS_KEEP) evict_oldest(r);
    r->done_q[(r->dq_head + r->dq_n) % GW_REQS_KEEP] = idx;
    r->dq_n++;
    pthread_mutex_unlock(&r->mu);
}

int gw_reqs_find(gw_reqs *r, const char *tenant, const char *id, int cancel, gw_req_info *out,
                 int *poke) {
    *poke = 0;
    if (!id_ok(id)) return -1;
    const int64_t now = moe_mono_us();
    pthread_mutex_lock(&r->mu);
    expire(r, now / 1000);
    const int idx = lookup(r, id);
    if (idx < 0 || strcmp(r->recs[idx].tenant, tenant)) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    rec *k = &r->recs[idx];
    *out = k->in;
    if (k->job) { /* in flight */
        gw_job *j = k->job;
        if (cancel && !k->cancel) {
            k->cancel = 1;
            atomic_store(&j->cancel_asked, 1);
            atomic_store(&j->cancelled, 1);
            *poke = 1;
        }
        const int64_t admit = atomic_load(&j->admit_us);
        out->status = k->cancel ? "cancelled" : admit ? "running" : "queued";
        out->queue_ms = (double)((admit ? admit : now) - k->arrive_us) / 1e3;
        if (out->queue_ms < 0) out->queue_ms = 0;
        out->completion_tokens = atomic_load_explicit(&j->lim_tokens, memory_order_relaxed);
        out->finish_reason = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void gw_reqs_json(const gw_req_info *in, moe_buf *b) {
    moe_buf_printf(b, "{\"id\":\"%s\",\"object\":\"request\",\"completion_id\":\"%s\",\"model\":",
                   in->id, in->cid);
    moe_buf_json(b, in->model);
    moe_buf_printf(b,
                   ",\"status\":\"%s\",\"created\":%lld,\"stream\":%s,\"queue_ms\":%.1f,"
                   "\"prompt_tokens\":%d,\"completion_tokens\":%d,\"finish_reason\":",
                   in->status, (long long)in->created, in->stream ? "true" : "false", in->queue_ms,
                   in->prompt_tokens, in->completion_tokens);
    if (in->finish_reason)
        moe_buf_printf(b, "\"%s\"}\n", in->finish_reason);
    else
        moe_buf_printf(b, "null}\n");
}

void gw_reqs_not_found(gw_api_error *e) {
    gw_api_error_set(e, 404, "",
                     "no such request among yours: give the x-request-id or the completion id "
                     "(chatcmpl-..., cmpl-...) of one of your requests of the last %d minutes",
                     GW_REQS_KEEP_MS / 60000);
    snprintf(e->code, sizeof e->code, "request_not_found");
}
