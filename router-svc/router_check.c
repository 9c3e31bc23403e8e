/* router_check.c - which leases router-svc believes (see router_internal.h,
 * docs/redis-schema.md, "Access control"). Any holder of the worker role's
 * password can write a lease; what it writes must at least look like what a
 * worker writes, or it is no worker: it gets no experts, its
 * acknowledgements do not count, and it is logged and counted once. A
 * worker that does not acknowledge a round in time (a dead or fake one) gets
 * nothing more until its own lease shows that epoch, so it never holds the
 * placement back twice. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/schema.h"
#include "mesh/slice.h"
#include "router_internal.h"
#include "svc/clock.h"

#define RELOG_MS 300000 /* a lease still refused is logged again after this */
#define LOG_PER_READ 10 /* newly refused leases logged per read; the rest summed up */
#define SUSPECTS_MAX 4096

static const char *const reject_names[RT_REJECT_COUNT] = {
    [RT_REJECT_NONE] = "none",         [RT_REJECT_FIELDS] = "fields",
    [RT_REJECT_ADDR] = "addr",         [RT_REJECT_TTL] = "ttl",
    [RT_REJECT_LEASE_MS] = "lease_ms", [RT_REJECT_STARTED] = "started",
    [RT_REJECT_EPOCH] = "epoch",       [RT_REJECT_SHAPE] = "shape",
    [RT_REJECT_HELD] = "held",         [RT_REJECT_NO_ACK] = "no_ack",
};

const char *rt_reject_name(rt_reject why) {
    return (unsigned)why < RT_REJECT_COUNT ? reject_names[why] : "?";
}

/* ==== One lease ================================================================ */

static const struct {
    unsigned bit;
    const char *name;
} required[] = {
    {RS_F_ADDR, MOE_LEASE_ADDR},
    {RS_F_MODEL, MOE_LEASE_MODEL},
    {RS_F_EXPERT_BYTES, MOE_LEASE_EXPERT_BYTES},
    {RS_F_N_LAYER, MOE_LEASE_N_LAYER},
    {RS_F_N_EXPERT, MOE_LEASE_N_EXPERT},
    {RS_F_CAPACITY, MOE_LEASE_CAPACITY_BYTES},
    {RS_F_EPOCH, MOE_LEASE_EPOCH},
    {RS_F_STARTED, MOE_LEASE_STARTED_MS},
    {RS_F_LEASE_MS, MOE_LEASE_LEASE_MS},
    {RS_F_STATE, MOE_LEASE_STATE},
};

rt_reject rt_lease_check(const rs_worker *w, int64_t now_ms, uint64_t max_epoch, char *why,
                         size_t cap) {
    if (w->bad_field) {
        snprintf(why, cap, "field '%s' has a bad value", w->bad_field);
        return RT_REJECT_FIELDS;
    }
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (!(w->fields & required[i].bit)) {
            snprintf(why, cap, "no field '%s'", required[i].name);
            return RT_REJECT_FIELDS;
        }
    if (w->n_layer < 1 || w->n_layer > 4096 || w->n_expert < 1 || w->n_expert > 4096 ||
        !w->capacity || !w->model || !*w->model || !w->expert_bytes) {
        snprintf(why, cap, "n_layer %d, n_expert %d, capacity_bytes %" PRIu64 ", model '%.60s'",
                 w->n_layer, w->n_expert, w->capacity, w->model ? w->model : "");
        return RT_REJECT_FIELDS;
    }
    if (!w->addr || moe_lease_addr_check(w->addr) < 0) {
        snprintf(why, cap, "addr '%.100s' is not host:port", w->addr ? w->addr : "");
        return RT_REJECT_ADDR;
    }
    if (w->lease_ms < MOE_SCHEMA_LEASE_MS_MIN || w->lease_ms > MOE_SCHEMA_LEASE_MS_MAX) {
        snprintf(why, cap, "lease_ms %d is outside %d..%d", w->lease_ms, MOE_SCHEMA_LEASE_MS_MIN,
                 MOE_SCHEMA_LEASE_MS_MAX);
        return RT_REJECT_LEASE_MS;
    }
    if (w->pttl_ms < 0 || w->pttl_ms > w->lease_ms) {
        if (w->pttl_ms < 0)
            snprintf(why, cap, "the key has no TTL: it would never expire");
        else
            snprintf(why, cap, "its TTL %" PRId64 " ms is above its lease_ms %d", w->pttl_ms,
                     w->lease_ms);
        return RT_REJECT_TTL;
    }
    if (w->started_ms <= 0 || w->started_ms > now_ms + RT_SKEW_MS) {
        snprintf(why, cap, "started_ms %" PRId64 " is %s", w->started_ms,
                 w->started_ms <= 0 ? "not a time" : "in the future");
        return RT_REJECT_STARTED;
    }
    if (w->epoch > max_epoch || w->epoch > RT_EPOCH_MAX) {
        snprintf(why, cap, "epoch %" PRIu64 " was never issued (at most %" PRIu64 ")", w->epoch,
                 max_epoch < RT_EPOCH_MAX ? max_epoch : RT_EPOCH_MAX);
        return RT_REJECT_EPOCH;
    }
    if (w->epoch == 0 && w->held && *w->held) {
        snprintf(why, cap, "it holds experts at epoch 0 (a worker loads only what an epoch gives)");
        return RT_REJECT_HELD;
    }
    return RT_REJECT_NONE;
}

rt_reject rt_lease_check_shape(const rs_worker *w, int n_layer, int n_expert,
                               const uint64_t *layer_bytes, char *why, size_t cap) {
    if (w->n_layer != n_layer || w->n_expert != n_expert) {
        snprintf(why, cap, "%d layers x %d experts, not the deployment's %d x %d", w->n_layer,
                 w->n_expert, n_layer, n_expert);
        return RT_REJECT_SHAPE;
    }
    uint64_t *b = calloc((size_t)n_layer + 1, sizeof *b);
    uint8_t *moe_ok = calloc((size_t)n_layer + 1, 1);
    rt_reject rc = RT_REJECT_NONE;
    if (!b || !moe_ok) goto done; /* out of memory: no verdict */
    if (moe_lease_layer_bytes_parse(b, n_layer, w->expert_bytes) < 0 ||
        memcmp(b, layer_bytes, (size_t)n_layer * sizeof *b)) {
        snprintf(why, cap, "expert_bytes '%.80s' differ from the deployment's", w->expert_bytes);
        rc = RT_REJECT_SHAPE;
        goto done;
    }
    for (int l = 0; l < n_layer; l++) moe_ok[l] = layer_bytes[l] != 0;
    moe_slice sl;
    moe_err err;
    if (w->held && *w->held && strcmp(w->held, "*")) { /* "*": too many to list */
        if (moe_slice_parse(&sl, w->held, n_layer, n_expert, moe_ok, &err) < 0) {
            snprintf(why, cap, "held '%.60s' cannot be read: %.80s", w->held, err.msg);
            rc = RT_REJECT_HELD;
            goto done;
        }
        moe_slice_free(&sl);
    }
done:
    free(b), free(moe_ok);
    return rc;
}

/* ==== Logging and counting =================================================== */

void rt_note_rejected(router *r, char *const *ids, const rt_reject *why, char *const *detail,
                      int n) {
    rt_rejected *now = calloc((size_t)n + 1, sizeof *now);
    if (!now) return; /* out of memory: counted on a later read */
    const int64_t t = moe_mono_ms();
    int logged = 0, unlogged = 0;
    for (int i = 0; i < n; i++) {
        const rt_rejected *was = NULL;
        for (int k = 0; k < r->n_rejected && !was; k++)
            if (!strcmp(r->rejected[k].id, ids[i])) was = &r->rejected[k];
        now[i].id = strdup(ids[i]);
        now[i].reason = why[i];
        const int fresh = !was || was->reason != why[i];
        now[i].logged_ms = was && !fresh ? was->logged_ms : 0;
        if (fresh) {
            pthread_mutex_lock(&r->mu);
            r->st.rejected[why[i]]++;
            pthread_mutex_unlock(&r->mu);
        }
        if (!fresh && t - was->logged_ms < RELOG_MS) continue;
        if (logged >= LOG_PER_READ) {
            now[i].logged_ms = t - RELOG_MS; /* logged on the next read */
            unlogged++;
            continue;
        }
        rt_warn("worker %.100s: lease refused (%s: %s)%s; it gets no experts", ids[i],
                rt_reject_name(why[i]), detail[i] ? detail[i] : "", fresh ? "" : ", still");
        now[i].logged_ms = t;
        logged++;
    }
    if (unlogged)
        rt_warn("%d more lease(s) refused (see moemesh_router_leases_rejected_total)", unlogged);
    for (int k = 0; k < r->n_rejected; k++) free(r->rejected[k].id);
    free(r->rejected);
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (now[i].id) now[kept++] = now[i]; /* a failed strdup: forgotten */
    r->rejected = now;
    r->n_rejected = kept;
    pthread_mutex_lock(&r->mu);
    r->st.n_rejected = n;
    pthread_mutex_unlock(&r->mu);
}

/* ==== Suspects: workers that missed an acknowledgement ========================== */

static int suspect_find(const router *r, const char *id) {
    for (int i = 0; i < r->n_suspects; i++)
        if (!strcmp(r->suspects[i].id, id)) return i;
    return -1;
}

static void suspect_remove(router *r, int i) {
    free(r->suspects[i].id);
    memmove(r->suspects + i, r->suspects + i + 1,
            (size_t)(r->n_suspects - i - 1) * sizeof *r->suspects);
    r->n_suspects--;
}

void rt_suspect_add(router *r, const char *id, uint64_t e) {
    const int i = suspect_find(r, id);
    if (i >= 0) {
        if (e > r->suspects[i].epoch) r->suspects[i].epoch = e;
        return;
    }
    char *copy = strdup(id);
    if (!copy) return;
    if (r->n_suspects >= SUSPECTS_MAX) suspect_remove(r, 0); /* the oldest */
    rt_suspect *s = realloc(r->suspects, ((size_t)r->n_suspects + 1) * sizeof *s);
    if (!s) {
        free(copy);
        return;
    }
    r->suspects = s;
    s[r->n_suspects++] = (rt_suspect){copy, e};
}

int rt_suspect_is(const router *r, const char *id) {
    return suspect_find(r, id) >= 0;
}

int rt_suspect_acked(router *r, const char *id, uint64_t e) {
    const int i = suspect_find(r, id);
    if (i < 0 || e <= r->suspects[i].epoch) return 0;
    suspect_remove(r, i);
    return 1;
}

void rt_check_free(router *r) {
    for (int i = 0; i < r->n_rejected; i++) free(r->rejected[i].id);
    for (int i = 0; i < r->n_suspects; i++) free(r->suspects[i].id);
    free(r->rejected), free(r->suspects);
    r->rejected = NULL, r->suspects = NULL;
    r->n_rejected = r->n_suspects = 0;
}
