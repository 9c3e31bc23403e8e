/* router.c - router-svc's control loop (see router.h). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../libmoe/src/rpc/pldoc.h"
#include "../libmoe/src/rpc/rlink.h"
#include "router.h"
#include "router_internal.h"
#include "strbuf.h"

#define MAX_WORKERS 4096
#define LOAD_MS 1000
#define BUCKET_S 10

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char t[32];
    fprintf(stderr, "%s router-svc: %s\n", moe_log_stamp(t, sizeof t), msg);
}

static size_t n_pairs(const router *r) { return (size_t)r->n_layer * (size_t)r->n_expert; }

/* ==== Leadership ============================================================= */

static const char RENEW_LUA[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

static void lead(router *r) {
    const int64_t now = moe_mono_ms();
    if (r->leader && now - r->leader_renewed_ms < r->cfg.leader_ttl_ms / 4) return;
    char key[300], ttl[16];
    snprintf(key, sizeof key, "%s:leader", r->prefix);
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
        x = moe_rlink_cmd(r->cmd, "SET %s %s NX PX %s", key, r->id, ttl);
        r->leader = x && x->type == REDIS_REPLY_STATUS;
        if (x) freeReplyObject(x);
    }
    if (!r->leader && was && now - r->leader_renewed_ms < r->cfg.leader_ttl_ms) {
        /* Redis unreachable: the lock may still be ours until it expires */
        if (!moe_rlink_get_stats(r->cmd).connected) r->leader = 1;
    }
    if (r->leader && (x || !was)) r->leader_renewed_ms = now;
    if (r->leader != was) {
        log_line(r->leader ? "leading (%s)" : "standing by (%s)", r->id);
        r->have_prev_loaded = 0; /* a new leader reads the placement back first */
    }
}

/* ==== Leases ================================================================= */

static void worker_clear(rs_worker *w) {
    free(w->id), free(w->addr), free(w->domain), free(w->model), free(w->held);
    free(w->expert_bytes);
    memset(w, 0, sizeof *w);
}

static void workers_clear(router *r) {
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
} lease_read;

static void on_lease(void *ud, size_t i, redisReply *x) {
    lease_read *lr = ud;
    if (i >= lr->ids->elements) return;
    const char *id = lr->ids->element[i]->str;
    if (x->type != REDIS_REPLY_ARRAY || x->elements < 2) {
        if (lr->n_gone < MAX_WORKERS) lr->gone[lr->n_gone++] = strdup(id);
        return;
    }
    rs_worker *w = &lr->ws[lr->n];
    memset(w, 0, sizeof *w);
    for (size_t k = 0; k + 1 < x->elements; k += 2) {
        const char *f = x->element[k]->str, *v = x->element[k + 1]->str;
        if (!f || !v) continue;
        if (!strcmp(f, "addr")) free(w->addr), w->addr = strdup(v);
        else if (!strcmp(f, "domain")) free(w->domain), w->domain = strdup(v);
        else if (!strcmp(f, "model")) free(w->model), w->model = strdup(v);
        else if (!strcmp(f, "held")) free(w->held), w->held = strdup(v);
        else if (!strcmp(f, "expert_bytes")) free(w->expert_bytes), w->expert_bytes = strdup(v);
        else if (!strcmp(f, "capacity_bytes")) w->capacity = strtoull(v, NULL, 10);
        else if (!strcmp(f, "epoch")) w->epoch = strtoull(v, NULL, 10);
        else if (!strcmp(f, "n_layer")) w->n_layer = atoi(v);
        else if (!strcmp(f, "n_expert")) w->n_expert = atoi(v);
        else if (!strcmp(f, "state")) w->draining = !strcmp(v, "draining");
        else if (!strcmp(f, "lease_ms")) {
            const int ms = atoi(v);
            if (ms > lr->r->max_lease_ms && ms <= 600000) lr->r->max_lease_ms = ms;
        }
    }
    w->id = strdup(id);
    if (!w->id || !w->addr || !w->model || !w->expert_bytes || w->n_layer < 1 ||
        w->n_layer > 4096 || w->n_expert < 1 || w->n_expert > 4096) {
        worker_clear(w); /* a lease without what placement needs: not a worker */
        return;
    }
    if (!w->domain) w->domain = strdup("");
    if (!w->held) w->held = strdup("");
    lr->n++;
}

static int cmp_worker(const void *a, const void *b) {
    return strcmp(((const rs_worker *)a)->id, ((const rs_worker *)b)->id);
}

/* Parses "1:147456,2:147456" into layer_bytes. 0 or -1. */
static int parse_layer_bytes(router *r, const char *s) {
    memset(r->layer_bytes, 0, (size_t)r->n_layer * sizeof *r->layer_bytes);
    while (*s) {
        char *end;
        long l = strtol(s, &end, 10);
        if (*end != ':' || l < 0 || l >= r->n_layer) return -1;
        unsigned long long b = strtoull(end + 1, &end, 10);
        if (!b || (*end && *end != ',')) return -1;
        r->layer_bytes[l] = b;
        s = *end ? end + 1 : end;
    }
    return 0;
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
        if (r->model && n_pairs(r) != (size_t)w->n_layer * (size_t)w->n_expert) {
            log_line("the workers' model changed from %s to %s; keeping %s", r->model, best,
                     r->model);
            best = r->model;
        } else if (!r->model) {
            r->n_layer = w->n_layer;
            r->n_expert = w->n_expert;
            const size_t np = n_pairs(r);
            r->layer_bytes = calloc((size_t)r->n_layer, sizeof *r->layer_bytes);
            r->load = calloc(np, sizeof *r->load);
            r->slot[0] = calloc(np, sizeof **r->slot);
            r->slot[1] = calloc(np, sizeof **r->slot);
            r->model = strdup(best);
            if (!r->layer_bytes || !r->load || !r->slot[0] || !r->slot[1] || !r->model ||
                parse_layer_bytes(r, w->expert_bytes) < 0) {
                log_line("worker %s: unusable expert_bytes '%s'", w->id, w->expert_bytes);
                free(r->model);
                r->model = NULL;
                return -1;
            }
            log_line("model %s: %d layers x %d experts", r->model, r->n_layer, r->n_expert);
        }
    }
    for (int i = 0; i < r->nw; i++) {
        rs_worker *w = &r->ws[i];
        w->usable = !strcmp(w->model, r->model) && w->n_layer == r->n_layer &&
                    w->n_expert == r->n_expert;
    }
    return 0;
}

/* Reads every lease; prunes P:workers of expired ones. 0, or -1 (Redis away). */
static int read_workers(router *r) {
    redisReply *ids = moe_rlink_cmd(r->cmd, "ZRANGE %s:workers 0 %d", r->prefix, MAX_WORKERS - 1);
    if (!ids) return -1;
    const uint64_t connects = moe_rlink_get_stats(r->cmd).connects;
    if (connects > 1 && connects != r->redis_connects) {
        /* Redis came back (maybe empty): every worker re-registers within a
         * heartbeat; until a whole lease has passed, a missing one is not dead */
        const int lease = r->max_lease_ms ? r->max_lease_ms : 3000;
        r->hold_until_ms = moe_mono_ms() + lease;
        log_line("Redis is back: no placement change for %d ms while leases return", lease);
    }
    r->redis_connects = connects;
    if (ids->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(ids);
        return -1;
    }
    lease_read lr = {r, calloc(ids->elements + 1, sizeof *lr.ws), 0, ids,
                     calloc(ids->elements + 1, sizeof *lr.gone), 0};
    int rc = -1;
    if (lr.ws && lr.gone && moe_rlink_begin(r->cmd)) {
        for (size_t i = 0; i < ids->elements; i++)
            moe_rlink_append(r->cmd, "HGETALL %s:worker:%s", r->prefix,
                             ids->element[i]->str ? ids->element[i]->str : "");
        rc = moe_rlink_flush(r->cmd, on_lease, &lr) == 0 ? 0 : -1;
    }
    redisReply *drain = rc == 0 ? moe_rlink_cmd(r->cmd, "SMEMBERS %s:drain", r->prefix) : NULL;
    for (int i = 0; drain && drain->type == REDIS_REPLY_ARRAY && i < lr.n; i++)
        for (size_t k = 0; k < drain->elements; k++)
            if (drain->element[k]->str && !strcmp(drain->element[k]->str, lr.ws[i].id))
                lr.ws[i].draining = 1;
    if (drain) freeReplyObject(drain);
    for (int i = 0; i < lr.n_gone; i++) {
        if (rc == 0 && lr.gone[i]) {
            redisReply *x = moe_rlink_cmd(r->cmd, "ZREM %s:workers %s", r->prefix, lr.gone[i]);
            if (x) freeReplyObject(x);
            x = moe_rlink_cmd(r->cmd, "SREM %s:drain %s", r->prefix, lr.gone[i]);
            if (x) freeReplyObject(x);
            log_line("worker %s: lease expired", lr.gone[i]);
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
    workers_clear(r);
    r->ws = lr.ws;
    r->nw = lr.n;
    if (r->nw) choose_model(r);
    /* the eligible set's signature: a change restarts the settle clock */
    rt_buf sig = {.s = malloc(64), .cap = 64};
    for (int i = 0; i < r->nw; i++)
        if (r->ws[i].usable)
            rt_buf_printf(&sig, "%s%s%s|", r->ws[i].id, r->ws[i].draining ? "-" : "+",
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

static const rs_worker *find_worker(const router *r, const char *id) {
    for (int i = 0; i < r->nw; i++)
        if (!strcmp(r->ws[i].id, id)) return &r->ws[i];
    return NULL;
}


/* ==== Load ===================================================================== */

typedef struct load_read {
    router *r;
    int64_t bucket[2];
    uint64_t *got[2]; /* (np) counts in each bucket read */
} load_read;

static void on_load(void *ud, size_t i, redisReply *x) {
    load_read *lr = ud;
    router *r = lr->r;
    if (i > 1 || x->type != REDIS_REPLY_ARRAY) return;
    for (size_t k = 0; k + 1 < x->elements; k += 2) {
        const char *f = x->element[k]->str, *v = x->element[k + 1]->str;
        if (!f || !v) continue;
        char *end;
        long l = strtol(f, &end, 10), e;
        if (*end != ':') continue;
        e = strtol(end + 1, &end, 10);
        if (*end || l < 0 || l >= r->n_layer || e < 0 || e >= r->n_expert) continue;
        lr->got[i][(size_t)l * r->n_expert + e] = strtoull(v, NULL, 10);
    }
}

/* Reads the last two 10-s buckets; the rows they gained since the last read
 * over the time between is the rate the average moves toward. */
static void read_load(router *r) {
    if (!r->model) return;
    const int64_t now = moe_mono_ms();
    if (now - r->last_load_ms < LOAD_MS) return;
    const size_t np = n_pairs(r);
    const int64_t b = moe_wall_ms() / 1000 / BUCKET_S;
    load_read lr = {r, {b - 1, b}, {calloc(np, 8), calloc(np, 8)}};
    if (!lr.got[0] || !lr.got[1] || !moe_rlink_begin(r->cmd)) goto done;
    moe_rlink_append(r->cmd, "HGETALL %s:load:%lld", r->prefix, (long long)lr.bucket[0]);
    moe_rlink_append(r->cmd, "HGETALL %s:load:%lld", r->prefix, (long long)lr.bucket[1]);
    if (moe_rlink_flush(r->cmd, on_load, &lr) < 0) goto done;
    const double dt = r->last_load_ms ? (double)(now - r->last_load_ms) / 1000.0 : 1.0;
    double *rate = calloc(np, sizeof *rate);
    if (!rate) goto done;
    for (int k = 0; k < 2; k++) {
        int s = r->slot_id[0] == lr.bucket[k] ? 0 : r->slot_id[1] == lr.bucket[k] ? 1 : -1;
        if (s < 0) { /* a new bucket: take the slot of the older one */
            s = r->slot_id[0] < r->slot_id[1] ? 0 : 1;
            r->slot_id[s] = lr.bucket[k];
            if (!r->load_primed) memcpy(r->slot[s], lr.got[k], np * 8);
            else memset(r->slot[s], 0, np * 8);
        }
        for (size_t i = 0; i < np; i++) {
            if (lr.got[k][i] > r->slot[s][i]) rate[i] += (double)(lr.got[k][i] - r->slot[s][i]) / dt;
            r->slot[s][i] = lr.got[k][i];
        }
    }
    const double alpha = 1.0 - exp(-dt * log(2.0) * 1000.0 / (double)r->cfg.halflife_ms);
    for (size_t i = 0; i < np; i++) {
        r->load[i] += alpha * (rate[i] - r->load[i]);
        if (r->load[i] < 1e-6) r->load[i] = 0;
    }
    free(rate);
    r->load_primed = 1;
    r->last_load_ms = now;
done:
    free(lr.got[0]), free(lr.got[1]);
}

/* ==== Placement ================================================================= */

/* The active placement's document: workers with an assignment, by address. */
static char *placement_doc(const router *r, const rt_placement *pl) {
    rt_buf b = {.s = malloc(1024), .cap = 1024};
    int *used = calloc(pl->n_workers + 1, sizeof *used);
    if (!b.s || !used) {
        free(b.s), free(used);
        return NULL;
    }
    for (size_t i = 0; i < pl->n_experts; i++)
        for (int k = 0; k < pl->experts[i].n_replicas; k++) used[pl->experts[i].replicas[k]] = 1;
    rt_buf_printf(&b, "{\"epoch\":%" PRIu64 ",\"model\":", pl->epoch);
    rt_buf_json(&b, r->model);
    rt_buf_printf(&b, ",\"workers\":{");
    int first = 1;
    for (size_t i = 0; i < pl->n_workers; i++) {
        if (!used[i]) continue;
        const rs_worker *w = find_worker(r, pl->worker_ids[i]);
        rt_buf_printf(&b, "%s", first ? "" : ",");
        rt_buf_json(&b, pl->worker_ids[i]);
        rt_buf_printf(&b, ":");
        rt_buf_json(&b, w ? w->addr : "");
        first = 0;
    }
    rt_buf_printf(&b, "},\"experts\":[");
    for (size_t i = 0; i < pl->n_experts; i++) {
        const rt_placement_expert *e = &pl->experts[i];
        rt_buf_printf(&b, "%s[%d,%d,[", i ? "," : "", e->layer, e->expert);
        for (int k = 0; k < e->n_replicas; k++) {
            rt_buf_printf(&b, "%s", k ? "," : "");
            rt_buf_json(&b, pl->worker_ids[e->replicas[k]]);
        }
        rt_buf_printf(&b, "]]");
    }
    rt_buf_printf(&b, "]}");
    free(used);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* Parses "L1:0-7;L2:0-3" (a worker's held experts) into mark (np). */
static void parse_held(const router *r, const char *s, uint8_t *mark) {
    long layer = -1;
    while (*s) {
        char *end;
        if (*s == 'L') {
            layer = strtol(s + 1, &end, 10);
            if (*end != ':' || layer < 0 || layer >= r->n_layer) return;
            s = end + 1;
            continue;
        }
        if (*s == ',' || *s == ';') {
            s++;
            continue;
        }
        long a = strtol(s, &end, 10), z = a;
        if (end == s || layer < 0) return;
        s = end;
        if (*s == '-') {
            z = strtol(s + 1, &end, 10);
            if (end == s + 1) return;
            s = end;
        }
        for (long e = a; e <= z && e >= 0 && e < r->n_expert; e++)
            mark[(size_t)layer * r->n_expert + e] = 1;
    }
}

/* Builds the previous placement from explicit assignments. */
static rt_placement *build_prev(const router *r, uint64_t epoch, char **ids, int nw,
                                const uint8_t *held /* (nw, np) */) {
    const size_t np = n_pairs(r);
    rt_placement_expert *ex = calloc(np + 1, sizeof *ex);
    int *reps = calloc(np * (size_t)nw + 1, sizeof *reps);
    rt_placement *pl = NULL;
    if (ex && reps) {
        size_t n = 0;
        for (size_t i = 0; i < np; i++) {
            const int l = (int)(i / (size_t)r->n_expert);
            if (!r->layer_bytes[l]) continue;
            ex[n] = (rt_placement_expert){l, (int)(i % (size_t)r->n_expert), 0, reps + i * nw};
            for (int w = 0; w < nw; w++)
                if (held[(size_t)w * np + i]) ex[n].replicas[ex[n].n_replicas++] = w;
            n++;
        }
        if (rt_placement_from_lists(&pl, epoch, ids, (size_t)nw, ex, n) < 0) pl = NULL;
    }
    free(ex), free(reps);
    return pl;
}

/* A new leader's view: the active epoch in Redis, else what the workers
 * hold (Redis restarted empty), else nothing yet. */
static void load_prev(router *r) {
    rt_placement_free(r->active), rt_placement_free(r->round);
    r->active = r->round = NULL;
    r->active_published = 0;
    uint64_t maxe = 0;
    for (int i = 0; i < r->nw; i++)
        if (r->ws[i].epoch > maxe) maxe = r->ws[i].epoch;
    redisReply *a = moe_rlink_cmd(r->cmd, "GET %s:placement:active", r->prefix);
    redisReply *p = moe_rlink_cmd(r->cmd, "GET %s:placement:pending", r->prefix);
    if (!a || !p) goto done;
    if (p->type == REDIS_REPLY_STRING) { /* an earlier leader's round: start over, after it */
        uint64_t pe = strtoull(p->str, NULL, 10);
        if (pe > maxe) maxe = pe;
        redisReply *x = moe_rlink_cmd(r->cmd, "DEL %s:placement:pending", r->prefix);
        if (x) freeReplyObject(x);
    }
    const size_t np = n_pairs(r);
    if (a->type == REDIS_REPLY_STRING) {
        uint64_t e = strtoull(a->str, NULL, 10);
        if (e > maxe) maxe = e;
        redisReply *d = moe_rlink_cmd(r->cmd, "GET %s:placement:%" PRIu64, r->prefix, e);
        moe_pldoc *doc = NULL;
        moe_err err;
        if (d && d->type == REDIS_REPLY_STRING &&
            moe_pldoc_parse(&doc, d->str, d->len, r->n_layer, r->n_expert, &err) == 0) {
            uint8_t *held = calloc((size_t)doc->n_workers * np + 1, 1);
            if (held) {
                for (size_t i = 0; i < doc->n_experts; i++)
                    for (int k = 0; k < doc->experts[i].n_replicas; k++)
                        held[(size_t)doc->experts[i].replicas[k] * np +
                             (size_t)doc->experts[i].layer * r->n_expert +
                             doc->experts[i].expert] = 1;
                r->active = build_prev(r, e, doc->ids, doc->n_workers, held);
                r->active_published = r->active != NULL;
                if (r->active) log_line("epoch %" PRIu64 " is active (read back)", e);
            }
            free(held);
        }
        moe_pldoc_free(doc);
        if (d) freeReplyObject(d);
    }
    if (!r->active) { /* from what the workers hold */
        int n = 0;
        char **ids = calloc((size_t)r->nw + 1, sizeof *ids);
        uint8_t *held = calloc((size_t)r->nw * np + 1, 1);
        size_t total = 0;
        for (int i = 0; ids && held && i < r->nw; i++) {
            if (!r->ws[i].usable) continue;
            ids[n] = r->ws[i].id;
            parse_held(r, r->ws[i].held, held + (size_t)n * np);
            for (size_t k = 0; k < np; k++) total += held[(size_t)n * np + k];
            n++;
        }
        if (total) {
            r->active = build_prev(r, maxe, ids, n, held);
            if (r->active)
                log_line("no active placement in Redis: rebuilt epoch %" PRIu64
                         " from the experts %d worker(s) hold",
                         maxe, n);
        }
        free(ids), free(held);
    }
    r->have_prev_loaded = 1;
done:
    if (maxe + 1 > r->next_epoch) r->next_epoch = maxe + 1;
    if (a) freeReplyObject(a);
    if (p) freeReplyObject(p);
}

static void publish_cmd(router *r, const char *what, uint64_t e) {
    char msg[64]; /* one argument: "pending 7" */
    snprintf(msg, sizeof msg, "%s %" PRIu64, what, e);
    moe_rlink_append(r->cmd, "PUBLISH %s:events %s", r->prefix, msg);
}

static void start_round(router *r, rt_placement *pl, const char *why) {
    pl->epoch = r->next_epoch;
    char *doc = placement_doc(r, pl);
    if (!doc || !moe_rlink_begin(r->cmd)) {
        free(doc);
        rt_placement_free(pl);
        return;
    }
    char key[300];
    snprintf(key, sizeof key, "%s:placement:%" PRIu64, r->prefix, pl->epoch);
    moe_rlink_appendargv(r->cmd, 3, (const char *[]){"SET", key, doc}, NULL);
    moe_rlink_append(r->cmd, "SET %s:placement:pending %" PRIu64, r->prefix, pl->epoch);
    publish_cmd(r, "pending", pl->epoch);
    free(doc);
    if (moe_rlink_flush(r->cmd, NULL, NULL) < 0) {
        rt_placement_free(pl);
        return;
    }
    r->next_epoch++;
    r->round = pl;
    r->round_started_ms = r->last_round_ms = moe_mono_ms();
    pthread_mutex_lock(&r->mu);
    r->st.rounds++;
    r->st.pending = pl->epoch;
    pthread_mutex_unlock(&r->mu);
    log_line("epoch %" PRIu64 " pending (%s): %zu assignment(s) added, %zu removed, %zu replicas "
             "short; waiting for the workers to load",
             pl->epoch, why, pl->moves_added, pl->moves_removed, pl->replicas_short);
}

/* 1 if every worker the round gives experts to has acknowledged. */
static int round_acked(router *r, int *missing_dead) {
    *missing_dead = 0;
    redisReply *x = moe_rlink_cmd(r->cmd, "SMEMBERS %s:ack:%" PRIu64, r->prefix, r->round->epoch);
    if (!x || x->type != REDIS_REPLY_ARRAY) {
        if (x) freeReplyObject(x);
        return 0;
    }
    int all = 1;
    for (size_t i = 0; i < r->round->n_workers; i++) {
        int used = 0;
        for (size_t k = 0; k < r->round->n_experts && !used; k++)
            for (int j = 0; j < r->round->experts[k].n_replicas; j++)
                used |= r->round->experts[k].replicas[j] == (int)i;
        if (!used) continue;
        int acked = 0;
        for (size_t k = 0; k < x->elements && !acked; k++)
            acked = x->element[k]->str && !strcmp(x->element[k]->str, r->round->worker_ids[i]);
        if (!acked) {
            all = 0;
            const rs_worker *w = find_worker(r, r->round->worker_ids[i]);
            if (!w || !w->usable) *missing_dead = 1;
        }
    }
    freeReplyObject(x);
    return all;
}

static void activate(router *r) {
    rt_placement *pl = r->round;
    if (!moe_rlink_begin(r->cmd)) return;
    moe_rlink_append(r->cmd, "SET %s:placement:active %" PRIu64, r->prefix, pl->epoch);
    moe_rlink_append(r->cmd, "DEL %s:placement:pending", r->prefix);
    if (r->active && r->active_published)
        moe_rlink_append(r->cmd, "EXPIRE %s:placement:%" PRIu64 " 3600", r->prefix, r->active->epoch);
    publish_cmd(r, "active", pl->epoch);
    if (moe_rlink_flush(r->cmd, NULL, NULL) < 0) return;
    const double ms = (double)(moe_mono_ms() - r->round_started_ms);
    log_line("epoch %" PRIu64 " active after %.0f ms", pl->epoch, ms);
    rt_placement_free(r->active);
    r->active = pl;
    r->active_published = 1;
    r->round = NULL;
    char *doc = placement_doc(r, pl);
    pthread_mutex_lock(&r->mu);
    r->st.epoch = pl->epoch;
    r->st.pending = 0;
    r->st.moves_added += pl->moves_added;
    r->st.moves_removed += pl->moves_removed;
    r->st.last_switch_ms = ms;
    r->st.n_assignments = pl->n_assignments;
    free(r->st.placement);
    r->st.placement = doc;
    const size_t np = n_pairs(r);
    if (r->st.replicas) {
        for (size_t i = 0; i < np; i++) r->st.replicas[i] = -1;
        for (size_t i = 0; i < pl->n_experts; i++)
            r->st.replicas[(size_t)pl->experts[i].layer * r->n_expert + pl->experts[i].expert] =
                pl->experts[i].n_replicas;
    }
    pthread_mutex_unlock(&r->mu);
}

static void abandon_round(router *r, const char *why) {
    log_line("epoch %" PRIu64 " abandoned: %s", r->round->epoch, why);
    redisReply *x = moe_rlink_cmd(r->cmd, "DEL %s:placement:pending", r->prefix);
    if (x) freeReplyObject(x);
    rt_placement_free(r->round);
    r->round = NULL;
    pthread_mutex_lock(&r->mu);
    r->st.rounds_abandoned++;
    r->st.pending = 0;
    pthread_mutex_unlock(&r->mu);
}

/* 1 if a worker of the active placement is gone or draining. */
static int active_lost_worker(const router *r) {
    if (!r->active) return 0;
    for (size_t i = 0; i < r->active->n_workers; i++) {
        if (!r->active->worker_bytes) break;
        int used = 0;
        for (size_t k = 0; k < r->active->n_experts && !used; k++)
            for (int j = 0; j < r->active->experts[k].n_replicas; j++)
                used |= r->active->experts[k].replicas[j] == (int)i;
        if (!used) continue;
        const rs_worker *w = find_worker(r, r->active->worker_ids[i]);
        if (!w || !w->usable || w->draining) return 1;
    }
    return 0;
}

static void write_wanted(router *r, size_t wanted) {
    const int64_t now = moe_mono_ms();
    if (wanted == r->workers_wanted_written && now - r->wanted_written_ms < 10000) return;
    redisReply *x = moe_rlink_cmd(r->cmd, "SET %s:scale:workers_wanted %llu", r->prefix,
                                  (unsigned long long)wanted);
    if (x) {
        freeReplyObject(x);
        r->workers_wanted_written = wanted;
        r->wanted_written_ms = now;
    }
}

static void drive(router *r) {
    if (!r->model) return;
    const int64_t now = moe_mono_ms();
    if (now < r->hold_until_ms) return;
    if (!r->have_prev_loaded) load_prev(r);
    if (!r->have_prev_loaded) return;
    if (r->round) {
        int dead = 0;
        if (round_acked(r, &dead)) {
            activate(r);
            return;
        }
        if (dead) abandon_round(r, "a worker it gives experts to is gone");
        else if (now - r->round_started_ms > r->cfg.ack_timeout_ms)
            abandon_round(r, "not every worker acknowledged in time");
        else return;
    }
    if (r->active && r->active_published) { /* Redis restarted empty: publish it again */
        redisReply *x = moe_rlink_cmd(r->cmd, "GET %s:placement:active", r->prefix);
        if (!x) return;
        if (x->type != REDIS_REPLY_STRING || strtoull(x->str, NULL, 10) != r->active->epoch) {
            log_line("the active epoch %" PRIu64 " is gone from Redis (a restart?): publishing "
                     "the placement again",
                     r->active->epoch);
            r->active_published = 0;
        }
        freeReplyObject(x);
    }
    const size_t np = n_pairs(r);
    rt_worker *ws = calloc((size_t)r->nw + 1, sizeof *ws);
    rt_expert *es = calloc(np + 1, sizeof *es);
    int n_ok = 0;
    size_t ne = 0;
    if (!ws || !es) goto done;
    for (int i = 0; i < r->nw; i++) {
        const rs_worker *w = &r->ws[i];
        if (!w->usable) continue;
        ws[n_ok++] = (rt_worker){w->id, w->domain, w->capacity, 1, w->draining};
    }
    for (size_t i = 0; i < np; i++) {
        const int l = (int)(i / (size_t)r->n_expert);
        if (!r->layer_bytes[l]) continue;
        es[ne++] = (rt_expert){l, (int)(i % (size_t)r->n_expert), r->layer_bytes[l], r->load[i]};
    }
    if (!n_ok) goto done;
    if (!r->active && now - r->stable_since_ms < r->cfg.settle_ms) goto done;
    rt_placement *pl;
    moe_err err;
    if (rt_placement_compute(&pl, ws, (size_t)n_ok, es, ne, &r->cfg.place, r->active, &err) < 0) {
        static int64_t logged;
        if (now - logged > 10000) log_line("cannot place the experts: %s", err.msg), logged = now;
        goto done;
    }
    write_wanted(r, pl->workers_wanted);
    pthread_mutex_lock(&r->mu);
    r->st.workers_wanted = pl->workers_wanted;
    r->st.replicas_short = pl->replicas_short;
    pthread_mutex_unlock(&r->mu);
    const int moved = pl->moves_added + pl->moves_removed > 0;
    const int lost = active_lost_worker(r);
    if (!r->active || !r->active_published) {
        start_round(r, pl, r->active ? "publishing the placement the workers hold" : "first placement");
    } else if (moved && lost) {
        pthread_mutex_lock(&r->mu);
        r->st.failovers++;
        pthread_mutex_unlock(&r->mu);
        start_round(r, pl, "failover: a worker is gone or draining");
    } else if (moved && now - r->last_round_ms >= r->cfg.rebalance_ms) {
        start_round(r, pl, pl->fresh_layout ? "rebalance (fresh layout)" : "rebalance for the load");
    } else {
        rt_placement_free(pl);
    }
done:
    free(ws), free(es);
}

/* ==== Loop ====================================================================== */

static void snapshot(router *r) {
    const size_t np = n_pairs(r);
    int usable = 0, draining = 0;
    for (int i = 0; i < r->nw; i++) {
        usable += r->ws[i].usable;
        draining += r->ws[i].usable && r->ws[i].draining;
    }
    moe_rlink_stats ls = moe_rlink_get_stats(r->cmd);
    pthread_mutex_lock(&r->mu);
    r->st.leader = r->leader;
    r->st.redis_up = ls.connected;
    r->st.redis_failures = ls.failures;
    r->st.n_workers = r->nw;
    r->st.n_usable = usable;
    r->st.n_draining = draining;
    if (r->model && !r->st.load) {
        r->st.n_layer = r->n_layer;
        r->st.n_expert = r->n_expert;
        r->st.load = calloc(np + 1, sizeof *r->st.load);
        r->st.replicas = malloc((np + 1) * sizeof *r->st.replicas);
        for (size_t i = 0; r->st.replicas && i < np; i++) r->st.replicas[i] = -1;
    }
    if (r->st.load) memcpy(r->st.load, r->load, np * sizeof *r->load);
    pthread_mutex_unlock(&r->mu);
}

int router_run(router *r, moe_err *err) {
    (void)err;
    log_line("%s, prefix '%s', id %s: min %d replica(s), target %.0f rows/s per replica",
             r->cfg.url, r->prefix, r->id, r->cfg.place.min_replicas, r->cfg.place.target_load);
    while (!*r->cfg.stop) {
        const int64_t t0 = moe_mono_ms();
        lead(r);
        if (read_workers(r) == 0 && r->leader) {
            read_load(r);
            drive(r);
        }
        snapshot(r);
        /* while workers load a pending epoch, look for their acks more often */
        const int tick = r->round && r->cfg.tick_ms > 50 ? 50 : r->cfg.tick_ms;
        int64_t left = tick - (moe_mono_ms() - t0);
        while (left > 0 && !*r->cfg.stop) {
            const int64_t step = left < 50 ? left : 50;
            struct timespec ts = {0, (long)step * 1000000L};
            nanosleep(&ts, NULL);
            left -= step;
        }
    }
    if (r->leader) { /* hand over at once */
        char key[300];
        snprintf(key, sizeof key, "%s:leader", r->prefix);
        redisReply *x = moe_rlink_cmd(r->cmd, "EVAL %s 1 %s %s", 
                                      "if redis.call('get', KEYS[1]) == ARGV[1] then "
                                      "return redis.call('del', KEYS[1]) else return 0 end",
                                      key, r->id);
        if (x) freeReplyObject(x);
    }
    log_line("stopped");
    return 0;
}

int router_create(router **out, const router_cfg *cfg, moe_err *err) {
    *out = NULL;
    router *r = calloc(1, sizeof *r);
    if (!r) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    r->cfg = *cfg;
    if (r->cfg.tick_ms <= 0) r->cfg.tick_ms = 250;
    if (r->cfg.settle_ms < 0) r->cfg.settle_ms = 1500;
    if (r->cfg.rebalance_ms < 0) r->cfg.rebalance_ms = 5000;
    if (r->cfg.halflife_ms <= 0) r->cfg.halflife_ms = 5000;
    if (r->cfg.ack_timeout_ms <= 0) r->cfg.ack_timeout_ms = 60000;
    if (r->cfg.leader_ttl_ms <= 0) r->cfg.leader_ttl_ms = 5000;
    r->prefix = strdup(cfg->prefix && *cfg->prefix ? cfg->prefix : "moemesh");
    r->id = strdup(cfg->id && *cfg->id ? cfg->id : "router-svc");
    r->next_epoch = 1;
    r->slot_id[0] = r->slot_id[1] = -1;
    pthread_mutex_init(&r->mu, NULL);
    int rc = !r->prefix || !r->id ? moe_err_set(err, MOE_ENOMEM, "out of memory") : 0;
    if (!rc) rc = moe_rlink_create(&r->cmd, cfg->url, "router-svc", err);
    if (rc < 0) {
        router_free(r);
        return rc;
    }
    r->cfg.prefix = r->prefix;
    r->cfg.id = r->id;
    *out = r;
    return 0;
}

void router_free(router *r) {
    if (!r) return;
    workers_clear(r);
    moe_rlink_free(r->cmd);
    rt_placement_free(r->active), rt_placement_free(r->round);
    free(r->prefix), free(r->id), free(r->worker_sig), free(r->model), free(r->layer_bytes);
    free(r->load), free(r->slot[0]), free(r->slot[1]), free(r->active_doc);
    free(r->st.load), free(r->st.replicas), free(r->st.placement);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

