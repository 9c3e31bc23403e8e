/* router_leases.c - router-svc's leadership (the P:leader lock) and the
 * workers' leases (see router.h, docs/redis-schema.md). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/schema.h"
#include "router_internal.h"
#include "svc/strbuf.h"
#include "svc/clock.h"

#define MAX_WORKERS 4096

static size_t n_pairs(const router *r) {
    return (size_t)r->n_layer * (size_t)r->n_expert;
}

/* ==== Leadership ============================================================= */

static const char RENEW_LUA[] = "if redis.call('get', KEYS[1]) == ARGV[1] then "
                                "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/* Takes the lock if it is free - or already ours: a command this router sent
 * before a partition can reach Redis after it (the kernel keeps resending a
 * closed socket's unacknowledged bytes), so a SET NX that timed out here may
 * have set the lock to our id after all. SET NX alone would then wait out
 * the whole TTL with nobody leading. */
static const char ACQUIRE_LUA[] =
    "local v = redis.call('get', KEYS[1]) "
    "if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end "
    "if v then return 0 end "
    "redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";

void rt_lead(router *r) {
    const int64_t now = moe_mono_ms();
    if (r->leader && now - r->leader_renewed_ms < r->cfg.leader_ttl_ms / 4) return;
    char key[MOE_SCHEMA_KEY_MAX], ttl[16];
    moe_key_leader(key, sizeof key, r->prefix);
    snprintf(ttl, sizeof ttl, "%d", r->cfg.leader_ttl_ms);
    int was = r->leader;
    redisReply *x = NULL;
    if (r->leader) {
        x = moe_rlink_cmd(r->cmd, "EVAL %s 1 %s %s %s", RENEW_LUA, key, r->id, ttl);
        r->leader = x && x->type == REDIS_REPLY_INTEGER && x->integer == 1;
        if (x) freeReplyObject(x);
        /* lost the key (Redis restarted empty): take it again if free */
    }
    if (!r->leader) {
        x = moe_rlink_cmd(r->cmd, "EVAL %s 1 %s %s %s", ACQUIRE_LUA, key, r->id, ttl);
        r->leader = x && x->type == REDIS_REPLY_INTEGER && x->integer == 1;
        if (x) freeReplyObject(x);
    }
    if (!r->leader && was && now - r->leader_renewed_ms < r->cfg.leader_ttl_ms) {
        /* Redis unreachable: the lock may still be ours until it expires */
        if (!moe_rlink_get_stats(r->cmd).connected) r->leader = 1;
    }
    if (r->leader && (x || !was)) r->leader_renewed_ms = now;
    if (r->leader != was) {
        rt_log(r->leader ? "leading (%s)" : "standing by (%s)", r->id);
        r->have_prev_loaded = 0; /* a new leader reads the placement back first */
    }
}

/* ==== Leases ================================================================= */

static void worker_clear(rs_worker *w) {
    free(w->id), free(w->addr), free(w->domain), free(w->model), free(w->held);
    free(w->expert_bytes);
    memset(w, 0, sizeof *w);
}

void rt_workers_clear(router *r) {
    for (int i = 0; i < r->nw; i++) worker_clear(&r->ws[i]);
    free(r->ws);
    r->ws = NULL;
    r->nw = 0;
}

typedef struct lease_read {
    router *r;
    rs_worker *ws;
    int n;
    const redisReply *ids;
    char **gone;
    int n_gone;
    int have_cur; /* ws[n] holds a lease whose PTTL is the next reply */
} lease_read;

/* Decimal digits only (1 to 19), as a value of at most max: 1, else 0. */
static int num(const char *s, uint64_t max, uint64_t *v) {
    size_t n = 0;
    uint64_t x = 0;
    for (; s[n] >= '0' && s[n] <= '9'; n++) {
        if (n >= 19) return 0;
        x = x * 10 + (uint64_t)(s[n] - '0');
    }
    if (!n || s[n] || x > max) return 0;
    *v = x;
    return 1;
}

/* One field of a lease into w (router_check.c judges the values). */
static void lease_field(rs_worker *w, const char *f, const char *v) {
    static const struct {
        const char *name;
        unsigned bit;
        uint64_t max;
    } nums[] = {
        {MOE_LEASE_CAPACITY_BYTES, RS_F_CAPACITY, UINT64_MAX / 2},
        {MOE_LEASE_EPOCH, RS_F_EPOCH, UINT64_MAX / 2},
        {MOE_LEASE_N_LAYER, RS_F_N_LAYER, 1u << 30},
        {MOE_LEASE_N_EXPERT, RS_F_N_EXPERT, 1u << 30},
        {MOE_LEASE_STARTED_MS, RS_F_STARTED, INT64_MAX / 2},
        {MOE_LEASE_LEASE_MS, RS_F_LEASE_MS, 1u << 30},
    };
    char **str = !strcmp(f, MOE_LEASE_ADDR)           ? &w->addr
                 : !strcmp(f, MOE_LEASE_DOMAIN)       ? &w->domain
                 : !strcmp(f, MOE_LEASE_MODEL)        ? &w->model
                 : !strcmp(f, MOE_LEASE_HELD)         ? &w->held
                 : !strcmp(f, MOE_LEASE_EXPERT_BYTES) ? &w->expert_bytes
                                                      : NULL;
    if (str) {
        free(*str);
        *str = strdup(v);
        w->fields |= !strcmp(f, MOE_LEASE_ADDR)           ? RS_F_ADDR
                     : !strcmp(f, MOE_LEASE_MODEL)        ? RS_F_MODEL
                     : !strcmp(f, MOE_LEASE_EXPERT_BYTES) ? RS_F_EXPERT_BYTES
                                                          : 0;
        return;
    }
    if (!strcmp(f, MOE_LEASE_STATE)) {
        w->fields |= RS_F_STATE;
        w->draining = !strcmp(v, MOE_LEASE_STATE_DRAINING);
        if (!w->draining && strcmp(v, MOE_LEASE_STATE_READY) && strcmp(v, MOE_LEASE_STATE_STARTING))
            w->bad_field = MOE_LEASE_STATE;
        return;
    }
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        if (strcmp(f, nums[i].name)) continue;
        uint64_t x = 0;
        w->fields |= nums[i].bit;
        if (!num(v, nums[i].max, &x)) w->bad_field = nums[i].name;
        switch (nums[i].bit) {
        case RS_F_CAPACITY:
            w->capacity = x;
            break;
        case RS_F_EPOCH:
            w->epoch = x;
            break;
        case RS_F_N_LAYER:
            w->n_layer = (int)x;
            break;
        case RS_F_N_EXPERT:
            w->n_expert = (int)x;
            break;
        case RS_F_STARTED:
            w->started_ms = (int64_t)x;
            break;
        default:
            w->lease_ms = (int)x;
            break;
        }
    }
}

/* Replies in pairs per id: HGETALL (the lease), then PTTL (its TTL). */
static void on_lease(void *ud, size_t i, redisReply *x) {
    lease_read *lr = ud;
    if (i / 2 >= lr->ids->elements) return;
    const char *id = lr->ids->element[i / 2]->str;
    rs_worker *w = &lr->ws[lr->n];
    if (i % 2) {
        if (!lr->have_cur) return;
        lr->have_cur = 0;
        if (x->type == REDIS_REPLY_INTEGER && x->integer != -2) {
            w->pttl_ms = x->integer;
            lr->n++;
            return;
        }
        worker_clear(w); /* gone between the two, or an error: read it again next tick */
        if (x->type == REDIS_REPLY_INTEGER && lr->n_gone < MAX_WORKERS)
            lr->gone[lr->n_gone++] = strdup(id);
        return;
    }
    if (x->type == REDIS_REPLY_ERROR) return; /* NOPERM, WRONGTYPE: not known to be gone */
    if (x->type != REDIS_REPLY_ARRAY || x->elements < 2) {
        if (lr->n_gone < MAX_WORKERS) lr->gone[lr->n_gone++] = strdup(id);
        return;
    }
    memset(w, 0, sizeof *w);
    for (size_t k = 0; k + 1 < x->elements; k += 2) {
        const char *f = x->element[k]->str, *v = x->element[k + 1]->str;
        if (f && v) lease_field(w, f, v);
    }
    w->id = strdup(id);
    if (!w->domain) w->domain = strdup("");
    if (!w->held) w->held = strdup("");
    if (!w->id || !w->domain || !w->held) {
        worker_clear(w); /* out of memory: read again next tick */
        return;
    }
    lr->have_cur = 1;
}

static int cmp_worker(const void *a, const void *b) {
    return strcmp(((const rs_worker *)a)->id, ((const rs_worker *)b)->id);
}

/* The model most usable workers serve (ties: the first by id) becomes the
 * deployment's; workers of another model are left out, once logged. */
static int choose_model(router *r) {
    const char *best = NULL;
    int best_n = 0;
    for (int i = 0; i < r->nw; i++) {
        int n = 0;
        for (int j = 0; j < r->nw; j++) n += !strcmp(r->ws[i].model, r->ws[j].model);
        if (n > best_n) best = r->ws[i].model, best_n = n;
    }
    if (!best) return -1;
    if (!r->model || strcmp(r->model, best)) {
        const rs_worker *w = NULL;
        for (int i = 0; i < r->nw && !w; i++)
            if (!strcmp(r->ws[i].model, best)) w = &r->ws[i];
        if (r->model) { /* a rolling upgrade: keep placing the model in use (restart to switch) */
            char *logged = r->logged_model;
            if (strncmp(logged, best, sizeof r->logged_model - 1)) {
                rt_warn("most workers now serve model %s; still placing %s (restart router-svc "
                        "to switch)",
                        best, r->model);
                snprintf(logged, sizeof r->logged_model, "%s", best);
            }
            best = r->model;
        } else {
            r->n_layer = w->n_layer;
            r->n_expert = w->n_expert;
            const size_t np = n_pairs(r);
            r->layer_bytes = calloc((size_t)r->n_layer, sizeof *r->layer_bytes);
            r->load = calloc(np, sizeof *r->load);
            r->slot[0] = calloc(np, sizeof **r->slot);
            r->slot[1] = calloc(np, sizeof **r->slot);
            r->model = strdup(best);
            if (!r->layer_bytes || !r->load || !r->slot[0] || !r->slot[1] || !r->model ||
                moe_lease_layer_bytes_parse(r->layer_bytes, r->n_layer, w->expert_bytes) < 0) {
                char *logged = r->logged_lease;
                if (strncmp(logged, w->id, sizeof r->logged_lease - 1)) {
                    rt_warn("worker %s: unusable expert_bytes '%.200s'", w->id, w->expert_bytes);
                    snprintf(logged, sizeof r->logged_lease, "%s", w->id);
                }
                free(r->model), free(r->layer_bytes), free(r->load), free(r->slot[0]),
                    free(r->slot[1]);
                r->model = NULL;
                r->layer_bytes = NULL;
                r->load = NULL;
                r->slot[0] = r->slot[1] = NULL;
                r->n_layer = r->n_expert = 0;
                return -1;
            }
            rt_log("model %s: %d layers x %d experts", r->model, r->n_layer, r->n_expert);
        }
    }
    for (int i = 0; i < r->nw; i++) /* the rest of its shape: rt_lease_check_shape */
        r->ws[i].usable = !strcmp(r->ws[i].model, r->model);
    return 0;
}

/* The leases router-svc believes (router_check.c): ws[0..*n) keeps them, in
 * order, and becomes r->ws; the others are counted, logged and freed. */
static void believe(router *r, rs_worker *ws, int *n) {
    rs_worker *no = calloc((size_t)*n + 1, sizeof *no);
    rt_reject *why = calloc((size_t)*n + 1, sizeof *why);
    char **ids = calloc((size_t)*n + 1, sizeof *ids), **text = calloc((size_t)*n + 1, sizeof *text);
    char(*detail)[160] = calloc((size_t)*n + 1, sizeof *detail);
    if (!no || !why || !ids || !text || !detail) goto done; /* out of memory: all believed */
    const uint64_t max_epoch =
        r->leader && r->have_prev_loaded && r->next_epoch > 0 ? r->next_epoch - 1 : RT_EPOCH_MAX;
    const int64_t now = moe_wall_ms();
    int kept = 0, nr = 0;
    for (int i = 0; i < *n; i++) { /* on its own */
        const rt_reject y = rt_lease_check(&ws[i], now, max_epoch, detail[nr], sizeof *detail);
        if (y)
            why[nr] = y, no[nr++] = ws[i];
        else
            ws[kept++] = ws[i];
    }
    *n = kept;
    r->ws = ws, r->nw = kept; /* for choose_model */
    if (kept) choose_model(r);
    kept = 0;
    for (int i = 0; i < *n; i++) { /* against the deployment */
        rs_worker *w = &ws[i];
        const rt_reject y = w->usable && r->model
                                ? rt_lease_check_shape(w, r->n_layer, r->n_expert, r->layer_bytes,
                                                       detail[nr], sizeof *detail)
                                : RT_REJECT_NONE;
        if (y)
            why[nr] = y, no[nr++] = *w;
        else
            ws[kept++] = *w;
    }
    *n = kept;
    const int n_no = nr;
    r->ws = NULL, r->nw = 0;
    for (int i = 0; i < nr; i++) ids[i] = no[i].id, text[i] = detail[i];
    for (int i = 0; i < *n; i++) { /* missed acks: still workers, but given nothing */
        ws[i].suspect = rt_suspect_is(r, ws[i].id);
        if (!ws[i].suspect) continue;
        snprintf(detail[nr], sizeof *detail,
                 "it did not acknowledge an epoch in time; nothing more until it acknowledges one");
        why[nr] = RT_REJECT_NO_ACK, ids[nr] = ws[i].id, text[nr] = detail[nr];
        nr++;
    }
    rt_note_rejected(r, ids, why, text, nr);
    for (int i = 0; i < n_no; i++) worker_clear(&no[i]);
    for (int i = 0; i < *n; i++) /* the longest lease, for the waits after a Redis restart */
        if (ws[i].lease_ms > r->max_lease_ms) r->max_lease_ms = ws[i].lease_ms;
done:
    free(no), free(why), free(ids), free(text), free(detail);
}

/* Reads every lease; prunes P:workers of expired ones. 0, or -1 (Redis away). */
int rt_read_workers(router *r) {
    char workers[MOE_SCHEMA_KEY_MAX], key[MOE_SCHEMA_KEY_MAX];
    moe_key_workers(workers, sizeof workers, r->prefix);
    redisReply *ids = moe_rlink_cmd(r->cmd, "ZRANGE %s 0 %d", workers, MAX_WORKERS - 1);
    if (!ids) return -1;
    const uint64_t connects = moe_rlink_get_stats(r->cmd).connects;
    if (connects > 1 && connects != r->redis_connects) {
        /* Redis came back (maybe empty): every worker re-registers within a
         * heartbeat; until a whole lease has passed, a missing one is not dead */
        const int lease = r->max_lease_ms ? r->max_lease_ms : MOE_SCHEMA_LEASE_MS_DEFAULT;
        r->hold_until_ms = moe_mono_ms() + lease;
        rt_log("Redis is back: no placement change for %d ms while leases return", lease);
    }
    r->redis_connects = connects;
    if (ids->type != REDIS_REPLY_ARRAY) {
        if (moe_mono_ms() - r->logged_workers_ms > 10000) {
            rt_err("%s is not a sorted set (%s): no worker can be read", workers,
                   ids->type == REDIS_REPLY_ERROR ? ids->str : "wrong type");
            r->logged_workers_ms = moe_mono_ms();
        }
        freeReplyObject(ids);
        return -1;
    }
    lease_read lr = {r,   calloc(ids->elements + 1, sizeof *lr.ws),   0,
                     ids, calloc(ids->elements + 1, sizeof *lr.gone), 0,
                     0};
    int rc = -1;
    if (lr.ws && lr.gone && moe_rlink_begin(r->cmd) == 0) {
        for (size_t i = 0; i < ids->elements; i++) {
            /* an id too long for a key has no lease: read as gone */
            if (moe_key_worker(key, sizeof key, r->prefix,
                               ids->element[i]->str ? ids->element[i]->str : "") < 0)
                moe_key_worker(key, sizeof key, r->prefix, "");
            moe_rlink_append(r->cmd, "HGETALL %s", key);
            moe_rlink_append(r->cmd, "PTTL %s", key);
        }
        rc = moe_rlink_flush(r->cmd, on_lease, &lr) == 0 ? 0 : -1;
    }
    char drain_key[MOE_SCHEMA_KEY_MAX], events[MOE_SCHEMA_KEY_MAX];
    moe_key_drain(drain_key, sizeof drain_key, r->prefix);
    moe_key_events(events, sizeof events, r->prefix);
    redisReply *drain = rc == 0 ? moe_rlink_cmd(r->cmd, "SMEMBERS %s", drain_key) : NULL;
    for (int i = 0; drain && drain->type == REDIS_REPLY_ARRAY && i < lr.n; i++)
        for (size_t k = 0; k < drain->elements; k++)
            if (drain->element[k]->str && !strcmp(drain->element[k]->str, lr.ws[i].id))
                lr.ws[i].draining = 1;
    if (drain) freeReplyObject(drain);
    for (int i = 0; i < lr.n_gone; i++) {
        if (rc == 0 && lr.gone[i]) {
            redisReply *x = moe_rlink_cmd(r->cmd, "ZREM %s %s", workers, lr.gone[i]);
            if (x) freeReplyObject(x);
            x = moe_rlink_cmd(r->cmd, "SREM %s %s", drain_key, lr.gone[i]);
            if (x) freeReplyObject(x);
            char msg[MOE_SCHEMA_KEY_MAX];
            const moe_event ev = {.kind = MOE_EVENT_DOWN, .worker = lr.gone[i]};
            if (r->leader && moe_event_format(msg, sizeof msg, &ev) >= 0) {
                /* gateways check the placement now */
                x = moe_rlink_cmd(r->cmd, "PUBLISH %s %s", events, msg);
                if (x) freeReplyObject(x);
            }
            rt_warn("worker %s: lease expired", lr.gone[i]);
        }
        free(lr.gone[i]);
    }
    free(lr.gone);
    freeReplyObject(ids);
    if (rc < 0) {
        for (int i = 0; i < lr.n; i++) worker_clear(&lr.ws[i]);
        free(lr.ws);
        return -1;
    }
    qsort(lr.ws, (size_t)lr.n, sizeof *lr.ws, cmp_worker);
    rt_workers_clear(r);
    believe(r, lr.ws, &lr.n);
    r->ws = lr.ws;
    r->nw = lr.n;
    /* the eligible set's signature: a change restarts the settle clock */
    moe_buf sig = {.s = malloc(64), .cap = 64};
    if (sig.s) sig.s[0] = '\0'; /* no usable worker: "" */
    for (int i = 0; i < r->nw; i++)
        if (r->ws[i].usable && !r->ws[i].suspect)
            moe_buf_printf(&sig, "%s%s%s|", r->ws[i].id, r->ws[i].draining ? "-" : "+",
                           r->ws[i].addr);
    if (sig.s && !sig.oom && (!r->worker_sig || strcmp(sig.s, r->worker_sig))) {
        free(r->worker_sig);
        r->worker_sig = sig.s;
        r->stable_since_ms = moe_mono_ms();
    } else {
        free(sig.s);
    }
    return 0;
}

const rs_worker *rt_find_worker(const router *r, const char *id) {
    for (int i = 0; i < r->nw; i++)
        if (!strcmp(r->ws[i].id, id)) return &r->ws[i];
    return NULL;
}
