/* registry.c - an expert worker's lease and placement (see registry.h). */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mesh/rlink.h"
#include "moe/log.h"
#include "mesh/schema.h"
#include "registry.h"
#include "svc/clock.h"

#define CHECK_MS 1000
#define POLL_MS 100

struct ew_registry {
    ew_registry_cfg cfg;
    char *url, *prefix, *id, *addr, *domain, *device; /* copies */
    pthread_t th;
    pthread_mutex_t mu;
    int stop;
    moe_rlink *cmd, *sub;
    int kick;               /* an event came: check now */
    size_t np;              /* n_layer * n_expert */
    uint8_t *share_active;  /* (np) what the active epoch gives this worker */
    uint8_t *share_pending; /* (np) what the pending epoch gives it */
    int have_active, have_pending;
    uint64_t active, pending, acked;
    int64_t drop_at_ms; /* 0: nothing to drop */
    int op_drain;       /* in P:drain: an operator asked to empty it (logged) */
    int self_drain;     /* leaving: its lease says state=draining (thread's copy of want_drain) */
    int want_drain;     /* leaving: asked router-svc to move everything away */
    int drained;        /* the active epoch gives it nothing, and gateways had time */
    int64_t logged_beat_ms; /* the last heartbeat error logged */
    int64_t active_since_ms;
    int64_t next_beat_ms; /* the next heartbeat is due (loading keeps it up) */
    int64_t started_ms;
    char model_id[160];
    char *expert_bytes; /* "L:bytes,..." for MoE layers */
    ew_registry_stats st;
};

/* A log line at level with the worker's id as a field. */
static void log_line(ew_registry *r, moe_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void log_line(ew_registry *r, moe_log_level level, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const moe_log_kv kv[] = {{"worker", r->id}};
    moe_log_fields(level, "expert-worker", kv, 1, "%s", msg);
}

static void stat_add(ew_registry *r, uint64_t *v, uint64_t n) {
    pthread_mutex_lock(&r->mu);
    *v += n;
    pthread_mutex_unlock(&r->mu);
}

static void stat_set(ew_registry *r, uint64_t *v, uint64_t x) {
    pthread_mutex_lock(&r->mu);
    *v = x;
    pthread_mutex_unlock(&r->mu);
}

/* ==== Lease ===================================================================== */

typedef struct beat_read {
    size_t n;        /* replies: MULTI, 3 x QUEUED, EXEC */
    char first[160]; /* the first error ("" if none) */
} beat_read;

/* An error reply, or an error inside EXEC's array, fails the heartbeat. */
static void on_beat_reply(void *ud, size_t i, redisReply *x) {
    beat_read *b = ud;
    const redisReply *err = x->type == REDIS_REPLY_ERROR ? x : NULL;
    for (size_t k = 0; !err && i == b->n - 1 && x->type == REDIS_REPLY_ARRAY && k < x->elements;
         k++)
        if (x->element[k]->type == REDIS_REPLY_ERROR) err = x->element[k];
    if (err && !b->first[0]) snprintf(b->first, sizeof b->first, "%s", err->str ? err->str : "?");
    if (!err && i == b->n - 1 && x->type != REDIS_REPLY_ARRAY && !b->first[0])
        snprintf(b->first, sizeof b->first, "EXEC did not run");
}

/* The lease, in one MULTI/EXEC: router-svc never sees the hash without its
 * TTL (it refuses such a lease). Its state is "draining" once it is leaving
 * (SIGTERM): a worker never writes P:drain, the operators' (router-svc reads
 * both). */
static void heartbeat(ew_registry *r) {
    if (moe_rlink_begin(r->cmd) < 0) return;
    char key[MOE_SCHEMA_KEY_MAX], workers[MOE_SCHEMA_KEY_MAX], held[16384], cap[32], epoch[32],
        pid[32], started[32], nl[16], ne[16], lease[16];
    moe_key_worker(key, sizeof key, r->prefix, r->id);
    moe_key_workers(workers, sizeof workers, r->prefix);
    size_t hn = moe_slice_format(r->cfg.slice, held, sizeof held);
    if (hn >= sizeof held)
        snprintf(held, sizeof held, "*"); /* too long to list: router reads epochs */
    snprintf(cap, sizeof cap, "%" PRIu64, r->cfg.capacity_bytes);
    snprintf(epoch, sizeof epoch, "%" PRIu64, r->acked);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(started, sizeof started, "%" PRId64, r->started_ms);
    snprintf(nl, sizeof nl, "%d", r->cfg.model->hp.n_layer);
    snprintf(ne, sizeof ne, "%d", r->cfg.model->hp.n_expert);
    snprintf(lease, sizeof lease, "%d", r->cfg.lease_ms);
    /* one field and its value a line */
    /* clang-format off */
    const char *argv[] = {"HSET", key,
                          MOE_LEASE_ADDR, r->addr,
                          MOE_LEASE_CAPACITY_BYTES, cap,
                          MOE_LEASE_DEVICE, r->device,
                          MOE_LEASE_DOMAIN, r->domain,
                          MOE_LEASE_STATE, r->self_drain ? MOE_LEASE_STATE_DRAINING
                                                         : MOE_LEASE_STATE_READY,
                          MOE_LEASE_HELD, held,
                          MOE_LEASE_EPOCH, epoch,
                          MOE_LEASE_MODEL, r->model_id,
                          MOE_LEASE_PID, pid,
                          MOE_LEASE_STARTED_MS, started,
                          MOE_LEASE_N_LAYER, nl,
                          MOE_LEASE_N_EXPERT, ne,
                          MOE_LEASE_EXPERT_BYTES, r->expert_bytes,
                          MOE_LEASE_LEASE_MS, lease};
    /* clang-format on */
    moe_rlink_append(r->cmd, "MULTI");
    moe_rlink_appendargv(r->cmd, (int)(sizeof argv / sizeof *argv), argv, NULL);
    moe_rlink_append(r->cmd, "PEXPIRE %s %s", key, lease);
    moe_rlink_append(r->cmd, "ZADD %s %lld %s", workers, (long long)moe_wall_ms(), r->id);
    moe_rlink_append(r->cmd, "EXEC");
    beat_read b = {.n = 5};
    if (moe_rlink_flush(r->cmd, on_beat_reply, &b) == 0) {
        if (!b.first[0]) {
            stat_add(r, &r->st.heartbeats, 1);
        } else if (moe_mono_ms() - r->logged_beat_ms >= 10000) { /* NOPERM, OOM: every 10 s */
            log_line(r, MOE_LOG_ERROR, "heartbeat refused by Redis: %s", b.first);
            r->logged_beat_ms = moe_mono_ms();
        }
    }
    r->next_beat_ms = moe_mono_ms() + r->cfg.lease_ms / 3;
}

/* ==== Placement ================================================================== */

/* Reads epoch e's document into share (what it gives this worker). 0, or -1
 * when Redis is away or the document is missing or malformed. */
static int read_share(ew_registry *r, uint64_t e, uint8_t *share) {
    const moe_hparams *hp = &r->cfg.model->hp;
    moe_pldoc *d;
    moe_err err;
    int rc = moe_pldoc_fetch(&d, r->cmd, r->prefix, e, hp->n_layer, hp->n_expert, &err);
    if (rc < 0) {
        if (rc != MOE_EUNAVAIL)
            log_line(r, MOE_LOG_WARN, "placement epoch %" PRIu64 " is unusable: %s", e, err.msg);
        return -1;
    }
    memset(share, 0, r->np);
    const int me = moe_pldoc_worker(d, r->id);
    for (size_t i = 0; me >= 0 && i < d->n_experts; i++) {
        const moe_pldoc_expert *x = &d->experts[i];
        if (!moe_model_layer_is_moe(r->cfg.model, x->layer)) continue;
        for (int k = 0; k < x->n_replicas; k++)
            if (x->replicas[k] == me) share[(size_t)x->layer * hp->n_expert + x->expert] = 1;
    }
    moe_pldoc_free(d);
    return 0;
}

/* Loads every expert share gives and this worker does not hold yet. */
static void load_share(ew_registry *r, const uint8_t *share, uint64_t e) {
    const int ne = r->cfg.model->hp.n_expert;
    const int64_t t0 = moe_mono_ms();
    int n = 0;
    size_t bytes = 0;
    for (size_t i = 0; i < r->np; i++) {
        const int l = (int)(i / (size_t)ne), x = (int)(i % (size_t)ne);
        if (!share[i] || moe_slice_has(r->cfg.slice, l, x)) continue;
        if (moe_mono_ms() >= r->next_beat_ms)
            heartbeat(r); /* a long load must not lose the lease */
        moe_expert_load_pages(r->cfg.model, l, x);
        moe_slice_set(r->cfg.slice, l, x, 1);
        bytes += moe_expert_bytes(r->cfg.model, l);
        n++;
    }
    stat_add(r, &r->st.loads, (uint64_t)n);
    if (n)
        log_line(r, MOE_LOG_INFO, "epoch %" PRIu64 ": loaded %d expert(s), %.1f MB, in %lld ms", e,
                 n, (double)bytes / 1e6, (long long)(moe_mono_ms() - t0));
}

/* Drops what neither the active nor the pending epoch gives this worker. */
static void drop_unwanted(ew_registry *r) {
    const int ne = r->cfg.model->hp.n_expert;
    int n = 0;
    for (size_t i = 0; i < r->np; i++) {
        const int l = (int)(i / (size_t)ne), x = (int)(i % (size_t)ne);
        if (!moe_slice_has(r->cfg.slice, l, x)) continue;
        if ((r->have_active && r->share_active[i]) || (r->have_pending && r->share_pending[i]))
            continue;
        moe_slice_set(r->cfg.slice, l, x, 0);
        moe_expert_drop_pages(r->cfg.model, l, x);
        n++;
    }
    stat_add(r, &r->st.unloads, (uint64_t)n);
    if (n)
        log_line(r, MOE_LOG_INFO, "epoch %" PRIu64 ": dropped %d expert(s) after the grace period",
                 r->active, n);
}

typedef struct check_replies {
    int have_pending, have_active, draining;
    uint64_t pending, active;
} check_replies;

static void on_check_reply(void *ud, size_t i, redisReply *x) {
    check_replies *c = ud;
    if (i == 0)
        c->have_pending = moe_reply_epoch(x, &c->pending);
    else if (i == 1)
        c->have_active = moe_reply_epoch(x, &c->active);
    else
        c->draining = x->type == REDIS_REPLY_INTEGER && x->integer == 1;
}

static void check(ew_registry *r) {
    char pending[MOE_SCHEMA_KEY_MAX], active[MOE_SCHEMA_KEY_MAX], drain[MOE_SCHEMA_KEY_MAX];
    moe_key_placement_pending(pending, sizeof pending, r->prefix);
    moe_key_placement_active(active, sizeof active, r->prefix);
    moe_key_drain(drain, sizeof drain, r->prefix);
    if (moe_rlink_begin(r->cmd) < 0) return;
    moe_rlink_append(r->cmd, "GET %s", pending);
    moe_rlink_append(r->cmd, "GET %s", active);
    moe_rlink_append(r->cmd, "SISMEMBER %s %s", drain, r->id);
    check_replies c = {0};
    if (moe_rlink_flush(r->cmd, on_check_reply, &c) < 0) return;
    if (c.draining != r->op_drain) /* router-svc reads P:drain itself: nothing to write */
        log_line(r, MOE_LOG_INFO,
                 c.draining ? "draining (an operator's request, P:drain): router-svc moves its "
                              "experts away"
                            : "no longer draining (P:drain)");
    r->op_drain = c.draining;
    /* phase 1: load what a pending epoch gives, then acknowledge */
    if (c.have_pending && (!r->have_pending || c.pending != r->pending) &&
        (!r->have_active || c.pending != r->active)) {
        if (read_share(r, c.pending, r->share_pending) == 0) {
            load_share(r, r->share_pending, c.pending);
            char ack[MOE_SCHEMA_KEY_MAX];
            moe_key_ack(ack, sizeof ack, r->prefix, c.pending);
            redisReply *x = moe_rlink_cmd(r->cmd, "SADD %s %s", ack, r->id);
            if (x && x->type == REDIS_REPLY_ERROR) {
                log_line(r, MOE_LOG_ERROR, "epoch %" PRIu64 ": acknowledging failed: %s", c.pending,
                         x->str);
                freeReplyObject(x);
                x = NULL;
            }
            if (x) {
                freeReplyObject(x);
                x = moe_rlink_cmd(r->cmd, "EXPIRE %s %d", ack, MOE_SCHEMA_ACK_TTL_S);
                if (x) freeReplyObject(x);
                r->pending = r->acked = c.pending;
                r->have_pending = 1;
                stat_set(r, &r->st.epoch_acked, c.pending);
                log_line(r, MOE_LOG_INFO, "epoch %" PRIu64 ": acknowledged", c.pending);
                heartbeat(r); /* the lease shows the new epoch and held set at once */
            }
        }
    }
    /* phase 2: an epoch became active */
    if (c.have_active && (!r->have_active || c.active != r->active)) {
        if (read_share(r, c.active, r->share_active) == 0) {
            load_share(r, r->share_active, c.active); /* normally loaded in phase 1 already */
            r->active = c.active;
            r->have_active = 1;
            if (r->acked < c.active || !r->acked) r->acked = c.active;
            if (r->have_pending && r->pending == c.active) r->have_pending = 0;
            stat_set(r, &r->st.epoch_active, c.active);
            r->drop_at_ms = moe_mono_ms() + r->cfg.grace_ms;
            r->active_since_ms = moe_mono_ms();
            log_line(r, MOE_LOG_INFO, "epoch %" PRIu64 " active: holding %d expert(s)", c.active,
                     moe_slice_count(r->cfg.slice));
        }
    }
    /* no pending epoch: its share stops protecting experts only once the
     * active epoch read is current (it may be the pending one, activated) */
    if (!c.have_pending && (!c.have_active || (r->have_active && r->active == c.active)))
        r->have_pending = 0;
}

/* ==== Thread ===================================================================== */

static void on_message(void *ud, const char *channel, const char *msg) {
    ew_registry *r = ud;
    (void)channel;
    moe_event ev;
    if (moe_event_parse(&ev, msg) == 0 &&
        (ev.kind == MOE_EVENT_PENDING || ev.kind == MOE_EVENT_ACTIVE))
        r->kick = 1;
}

static void *run(void *arg) {
    ew_registry *r = arg;
    char chan[MOE_SCHEMA_KEY_MAX], key[MOE_SCHEMA_KEY_MAX], workers[MOE_SCHEMA_KEY_MAX];
    moe_key_events(chan, sizeof chan, r->prefix);
    moe_key_worker(key, sizeof key, r->prefix, r->id);
    moe_key_workers(workers, sizeof workers, r->prefix);
    moe_rlink_subscribe(r->sub, chan);
    int64_t next_check = 0;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        const int stop = r->stop, want_drain = r->want_drain;
        pthread_mutex_unlock(&r->mu);
        if (stop) break;
        if (want_drain && !r->self_drain) {
            r->self_drain = 1;
            heartbeat(r); /* router-svc reads state=draining on its next tick */
        }
        if (want_drain && r->have_active && !r->have_pending) {
            size_t held = 0;
            for (size_t i = 0; i < r->np; i++) held += r->share_active[i];
            /* gateways switch on the event or within a second: give them two */
            if (!held && moe_mono_ms() - r->active_since_ms >= 2000) {
                pthread_mutex_lock(&r->mu);
                if (!r->drained)
                    log_line(r, MOE_LOG_INFO, "drained: the active epoch gives it nothing");
                r->drained = 1;
                pthread_mutex_unlock(&r->mu);
            }
        }
        int64_t now = moe_mono_ms();
        if (now >= r->next_beat_ms) heartbeat(r);
        if (r->kick || now >= next_check) {
            r->kick = 0;
            check(r);
            next_check = moe_mono_ms() + CHECK_MS;
        }
        if (r->drop_at_ms && moe_mono_ms() >= r->drop_at_ms) {
            drop_unwanted(r);
            r->drop_at_ms = 0;
        }
        moe_rlink_sub_poll(r->sub, POLL_MS, on_message, r);
        pthread_mutex_lock(&r->mu);
        r->st.redis_up = moe_rlink_get_stats(r->cmd).connected;
        pthread_mutex_unlock(&r->mu);
    }
    /* a clean leave: the router reassigns at once instead of after the lease */
    redisReply *x = moe_rlink_cmd(r->cmd, "DEL %s", key);
    if (x) freeReplyObject(x);
    x = moe_rlink_cmd(r->cmd, "ZREM %s %s", workers, r->id);
    if (x) freeReplyObject(x);
    return NULL;
}

static void reg_free(ew_registry *r) {
    moe_rlink_free(r->cmd), moe_rlink_free(r->sub);
    free(r->url), free(r->prefix), free(r->id), free(r->addr), free(r->domain), free(r->device);
    free(r->share_active), free(r->share_pending), free(r->expert_bytes);
    free(r);
}

int ew_registry_start(ew_registry **out, const ew_registry_cfg *cfg, moe_err *err) {
    *out = NULL;
    ew_registry *r = calloc(1, sizeof *r);
    if (!r) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    r->cfg = *cfg;
    const moe_model *m = cfg->model;
    r->url = strdup(cfg->url);
    r->prefix = strdup(moe_schema_prefix(cfg->prefix));
    r->id = strdup(cfg->id);
    r->addr = strdup(cfg->addr);
    r->domain = strdup(cfg->domain ? cfg->domain : "");
    r->device = strdup(cfg->device ? cfg->device : "cpu");
    r->np = (size_t)m->hp.n_layer * (size_t)m->hp.n_expert;
    r->share_active = calloc(r->np + 1, 1);
    r->share_pending = calloc(r->np + 1, 1);
    const size_t eb_cap = (size_t)m->hp.n_layer * 32 + 1;
    r->expert_bytes = calloc(eb_cap, 1);
    uint64_t *layer_bytes = calloc((size_t)m->hp.n_layer + 1, sizeof *layer_bytes);
    r->started_ms = moe_wall_ms();
    int rc = 0;
    if (!r->url || !r->prefix || !r->id || !r->addr || !r->domain || !r->device ||
        !r->share_active || !r->share_pending || !r->expert_bytes || !layer_bytes)
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
    if (!rc) rc = moe_schema_check_names(r->prefix, r->id, err);
    if (!rc) rc = moe_rlink_create(&r->cmd, cfg->url, "expert-worker", err);
    if (!rc) rc = moe_rlink_create(&r->sub, cfg->url, "expert-worker (events)", err);
    if (rc < 0) {
        free(layer_bytes);
        reg_free(r);
        return rc;
    }
    r->cfg.url = r->url, r->cfg.prefix = r->prefix, r->cfg.id = r->id, r->cfg.addr = r->addr;
    r->cfg.domain = r->domain, r->cfg.device = r->device;
    for (int l = 0; l < m->hp.n_layer; l++)
        if (moe_model_layer_is_moe(m, l)) layer_bytes[l] = moe_expert_bytes(m, l);
    moe_lease_layer_bytes_format(r->expert_bytes, eb_cap, layer_bytes, m->hp.n_layer);
    free(layer_bytes);
    moe_model_identity(m, r->model_id, sizeof r->model_id);
    pthread_mutex_init(&r->mu, NULL);
    if (pthread_create(&r->th, NULL, run, r) != 0) {
        pthread_mutex_destroy(&r->mu);
        reg_free(r);
        return moe_err_set(err, MOE_ENOMEM, "cannot start the registry thread");
    }
    *out = r;
    return 0;
}

void ew_registry_stop(ew_registry *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->th, NULL);
    pthread_mutex_destroy(&r->mu);
    reg_free(r);
}

int ew_registry_drain(ew_registry *r) {
    pthread_mutex_lock(&r->mu);
    if (!r->want_drain)
        log_line(r, MOE_LOG_INFO, "leaving: draining (its experts move to other workers first)");
    r->want_drain = 1;
    const int done = r->drained;
    pthread_mutex_unlock(&r->mu);
    return done;
}

ew_registry_stats ew_registry_get_stats(ew_registry *r) {
    pthread_mutex_lock(&r->mu);
    ew_registry_stats s = r->st;
    pthread_mutex_unlock(&r->mu);
    return s;
}
