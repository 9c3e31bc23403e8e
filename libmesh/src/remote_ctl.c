/* remote_ctl.c - the remote backend's control thread (see remote_ctl.h). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moe/model.h"
#include "remote_ctl.h"
#include "mesh/rlink.h"
#include "moe/log.h"
#include "mesh/schema.h"
#include "svc/clock.h"

#define CHECK_MS 1000
#define FLUSH_MS 1000

struct moe__rctl {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, kick;
    moe_rlink *cmd, *sub;
    char *prefix;
    int n_layer, n_expert;
    moe_pldoc *next;     /* newest placement not taken yet */
    uint64_t seen_epoch; /* the epoch of the newest document read */
    int have_seen;
    uint64_t *counts;   /* (n_layer, n_expert) rows since the last flush */
    uint64_t *unsent;   /* control thread only: counts taken, not written yet */
    uint64_t bad_epoch; /* an epoch whose document failed to parse (logged once) */
    char model_id[160]; /* this model's identity; documents must match */
    char problem[600];  /* why the newest epoch is unusable ("" if none) */
    moe__rctl_stats st;
};

static void on_message(void *ud, const char *channel, const char *msg) {
    moe__rctl *c = ud;
    (void)channel;
    moe_event ev;
    if (moe_event_parse(&ev, msg) == 0 &&
        (ev.kind == MOE_EVENT_ACTIVE || ev.kind == MOE_EVENT_DOWN)) {
        pthread_mutex_lock(&c->mu);
        c->kick = 1;
        pthread_mutex_unlock(&c->mu);
    }
}

/* Reads the active epoch and, if it changed, its document. */
static void check(moe__rctl *c) {
    uint64_t e = 0;
    char key[MOE_SCHEMA_KEY_MAX];
    moe_key_placement_active(key, sizeof key, c->prefix);
    if (moe_pldoc_get_epoch(c->cmd, key, &e) != 0) return;
    if ((c->have_seen && e == c->seen_epoch) || e == c->bad_epoch) return;
    moe_pldoc *d;
    moe_err err;
    int rc = moe_pldoc_fetch(&d, c->cmd, c->prefix, e, c->n_layer, c->n_expert, &err);
    if (rc == MOE_EUNAVAIL) return;
    if (rc == MOE_ENOTFOUND) { /* tried again on the next check */
        pthread_mutex_lock(&c->mu);
        snprintf(c->problem, sizeof c->problem, "active epoch %" PRIu64 ": %.300s", e, err.msg);
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (rc == 0 && *d->model && strcmp(d->model, c->model_id)) {
        rc = moe_err_set(&err, MOE_EINVAL, "it places model %.100s, not this one (%.100s)",
                         d->model, c->model_id);
        moe_pldoc_free(d);
    }
    pthread_mutex_lock(&c->mu);
    if (rc < 0) {
        snprintf(c->problem, sizeof c->problem, "placement epoch %" PRIu64 " is unusable: %.300s",
                 e, err.msg);
        moe_log(MOE_LOG_WARN, "remote experts", "%s", c->problem);
        c->bad_epoch = e;
    } else {
        moe_pldoc_free(c->next);
        c->next = d;
        c->seen_epoch = e;
        c->have_seen = 1;
        c->st.epoch = e;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

typedef struct flush_read {
    moe__rctl *c;
    size_t n_incr; /* the HINCRBYs, in unsent's order; then the EXPIRE */
    size_t at;     /* unsent's index of the next HINCRBY's reply */
    uint64_t rows; /* rows Redis took */
    size_t n_failed;
    char first[128]; /* the first error reply */
} flush_read;

/* A count Redis took is cleared; one it refused (an error reply) is kept
 * for the next flush, so nothing is counted twice or lost. */
static void on_flush(void *ud, size_t i, redisReply *x) {
    flush_read *f = ud;
    const int bad = x->type == REDIS_REPLY_ERROR;
    if (bad && !f->n_failed++) snprintf(f->first, sizeof f->first, "%s", x->str ? x->str : "");
    if (i >= f->n_incr) return;
    while (!f->c->unsent[f->at]) f->at++; /* the expert of the i-th HINCRBY */
    if (!bad) {
        f->rows += f->c->unsent[f->at];
        f->c->unsent[f->at] = 0;
    }
    f->at++;
}

/* Writes the counts in one pipeline: HINCRBY per expert seen, one EXPIRE. */
static void flush(moe__rctl *c) {
    const size_t n = (size_t)c->n_layer * (size_t)c->n_expert;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        c->unsent[i] += c->counts[i];
        c->counts[i] = 0;
    }
    pthread_mutex_unlock(&c->mu);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += c->unsent[i];
    if (!total || moe_rlink_begin(c->cmd) < 0) return;
    char key[MOE_SCHEMA_KEY_MAX];
    moe_key_load(key, sizeof key, c->prefix, moe_schema_load_bucket(moe_wall_ms()));
    flush_read f = {.c = c};
    for (size_t i = 0; i < n; i++) {
        if (!c->unsent[i]) continue;
        f.n_incr++;
        char field[32];
        moe_expert_field_format(field, sizeof field, (int)(i / (size_t)c->n_expert),
                                (int)(i % (size_t)c->n_expert));
        moe_rlink_append(c->cmd, "HINCRBY %s %s %llu", key, field,
                         (unsigned long long)c->unsent[i]);
    }
    moe_rlink_append(c->cmd, "EXPIRE %s %d", key, MOE_SCHEMA_LOAD_TTL_S);
    if (moe_rlink_flush(c->cmd, on_flush, &f) < 0) return; /* the link broke: all kept */
    if (f.n_failed)
        moe_log(MOE_LOG_WARN, "remote experts",
                "load flush: %zu of %zu command(s) failed (%s); their counts are kept", f.n_failed,
                f.n_incr + 1, f.first);
    pthread_mutex_lock(&c->mu);
    if (!f.n_failed) c->st.load_flushes++;
    c->st.rows_reported += f.rows;
    pthread_mutex_unlock(&c->mu);
}

static void *run(void *arg) {
    moe__rctl *c = arg;
    char chan[MOE_SCHEMA_KEY_MAX];
    moe_key_events(chan, sizeof chan, c->prefix);
    moe_rlink_subscribe(c->sub, chan);
    int64_t next_check = 0, next_flush = moe_mono_ms() + FLUSH_MS;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        int stop = c->stop, kick = c->kick;
        c->kick = 0;
        pthread_mutex_unlock(&c->mu);
        if (stop) break;
        const int64_t now = moe_mono_ms();
        if (kick || now >= next_check) {
            check(c);
            next_check = now + CHECK_MS;
        }
        if (now >= next_flush) {
            flush(c);
            next_flush = now + FLUSH_MS;
        }
        moe_rlink_sub_poll(c->sub, 100, on_message, c);
        moe_rlink_stats a = moe_rlink_get_stats(c->cmd), b = moe_rlink_get_stats(c->sub);
        pthread_mutex_lock(&c->mu);
        c->st.redis_connects = a.connects + b.connects;
        c->st.redis_failures = a.failures + b.failures;
        pthread_mutex_unlock(&c->mu);
    }
    flush(c); /* the last counts, if Redis is there */
    return NULL;
}

int moe__rctl_start(moe__rctl **out, const char *url, const char *prefix, const moe_model *m,
                    moe_err *err) {
    const int n_layer = m->hp.n_layer, n_expert = m->hp.n_expert;
    *out = NULL;
    moe__rctl *c = calloc(1, sizeof *c);
    if (!c) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    const size_t n = (size_t)n_layer * (size_t)n_expert;
    c->n_layer = n_layer;
    c->n_expert = n_expert;
    moe_model_identity(m, c->model_id, sizeof c->model_id);
    c->prefix = strdup(moe_schema_prefix(prefix));
    c->counts = calloc(n + 1, sizeof *c->counts);
    c->unsent = calloc(n + 1, sizeof *c->unsent);
    int rc = 0;
    if (!c->prefix || !c->counts || !c->unsent) rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
    if (!rc) rc = moe_schema_check_names(c->prefix, NULL, err);
    if (!rc) rc = moe_rlink_create(&c->cmd, url, "remote experts", err);
    if (!rc) rc = moe_rlink_create(&c->sub, url, "remote experts (events)", err);
    if (!rc) {
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        if (pthread_create(&c->th, NULL, run, c) != 0) {
            pthread_mutex_destroy(&c->mu);
            pthread_cond_destroy(&c->cv);
            rc = moe_err_set(err, MOE_ENOMEM, "cannot start the control thread");
        }
    }
    if (rc < 0) {
        moe_rlink_free(c->cmd), moe_rlink_free(c->sub);
        free(c->prefix), free(c->counts), free(c->unsent), free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void moe__rctl_stop(moe__rctl *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->th, NULL);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    moe_rlink_free(c->cmd), moe_rlink_free(c->sub);
    moe_pldoc_free(c->next);
    free(c->prefix), free(c->counts), free(c->unsent), free(c);
}

moe_pldoc *moe__rctl_take(moe__rctl *c) {
    pthread_mutex_lock(&c->mu);
    moe_pldoc *d = c->next;
    c->next = NULL;
    if (d) c->st.placements++;
    pthread_mutex_unlock(&c->mu);
    return d;
}

int moe__rctl_peek(moe__rctl *c, void (*fn)(void *ud, const moe_pldoc *d), void *ud) {
    pthread_mutex_lock(&c->mu);
    const int have = c->next != NULL;
    if (have) fn(ud, c->next);
    pthread_mutex_unlock(&c->mu);
    return have;
}

int moe__rctl_wait(moe__rctl *c, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&c->mu);
    while (!c->next) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0) break;
    }
    int have = c->next != NULL;
    pthread_mutex_unlock(&c->mu);
    return have;
}

void moe__rctl_count(moe__rctl *c, int layer, int n_groups, const int32_t *expert,
                     const int32_t *row_start) {
    if (layer < 0 || layer >= c->n_layer) return;
    pthread_mutex_lock(&c->mu);
    for (int g = 0; g < n_groups; g++)
        if (expert[g] >= 0 && expert[g] < c->n_expert)
            c->counts[(size_t)layer * (size_t)c->n_expert + (size_t)expert[g]] +=
                (uint64_t)(row_start[g + 1] - row_start[g]);
    pthread_mutex_unlock(&c->mu);
}

void moe__rctl_kick(moe__rctl *c) {
    pthread_mutex_lock(&c->mu);
    c->kick = 1;
    pthread_mutex_unlock(&c->mu);
}

void moe__rctl_problem(moe__rctl *c, char *buf, size_t cap) {
    pthread_mutex_lock(&c->mu);
    snprintf(buf, cap, "%s", c->problem);
    pthread_mutex_unlock(&c->mu);
}

moe__rctl_stats moe__rctl_get_stats(moe__rctl *c) {
    pthread_mutex_lock(&c->mu);
    moe__rctl_stats s = c->st;
    pthread_mutex_unlock(&c->mu);
    return s;
}
