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

#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "mesh/slice.h"
#include "router.h"
#include "router_internal.h"
#include "svc/strbuf.h"
#include "svc/clock.h"

#define LOAD_MS 1000

static size_t n_pairs(const router *r) {
    return (size_t)r->n_layer * (size_t)r->n_expert;
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
        int l, e;
        if (moe_expert_field_parse(f, &l, &e) < 0 || l >= r->n_layer || e >= r->n_expert) continue;
        const long long n = strtoll(v, &end, 10);
        if (*end || n < 0) continue; /* not a count */
        lr->got[i][(size_t)l * r->n_expert + e] = (uint64_t)n;
    }
}

/* Reads the last two 10-s buckets; the rows they gained since the last read
 * over the time between is the rate the average moves toward. */
static void read_load(router *r) {
    if (!r->model) return;
    const int64_t now = moe_mono_ms();
    if (now - r->last_load_ms < LOAD_MS) return;
    const size_t np = n_pairs(r);
    const int64_t b = moe_schema_load_bucket(moe_wall_ms());
    load_read lr = {r, {b - 1, b}, {calloc(np, 8), calloc(np, 8)}};
    char k0[MOE_SCHEMA_KEY_MAX], k1[MOE_SCHEMA_KEY_MAX];
    moe_key_load(k0, sizeof k0, r->prefix, lr.bucket[0]);
    moe_key_load(k1, sizeof k1, r->prefix, lr.bucket[1]);
    if (!lr.got[0] || !lr.got[1] || moe_rlink_begin(r->cmd) < 0) goto done;
    moe_rlink_append(r->cmd, "HGETALL %s", k0);
    moe_rlink_append(r->cmd, "HGETALL %s", k1);
    if (moe_rlink_flush(r->cmd, on_load, &lr) < 0) goto done;
    const double dt = r->last_load_ms ? (double)(now - r->last_load_ms) / 1000.0 : 1.0;
    double *rate = calloc(np, sizeof *rate);
    if (!rate) goto done;
    for (int k = 0; k < 2; k++) {
        int s = r->slot_id[0] == lr.bucket[k] ? 0 : r->slot_id[1] == lr.bucket[k] ? 1 : -1;
        if (s < 0) { /* a new bucket: take the slot of the older one */
            s = r->slot_id[0] < r->slot_id[1] ? 0 : 1;
            r->slot_id[s] = lr.bucket[k];
            if (!r->load_primed)
                memcpy(r->slot[s], lr.got[k], np * 8);
            else
                memset(r->slot[s], 0, np * 8);
        }
        for (size_t i = 0; i < np; i++) {
            if (lr.got[k][i] > r->slot[s][i])
                rate[i] += (double)(lr.got[k][i] - r->slot[s][i]) / dt;
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
    rt_tload_read(r, lr.bucket); /* which tenants: the same buckets (router_tload.c) */
done:
    free(lr.got[0]), free(lr.got[1]);
}

/* ==== Placement ================================================================= */

/* The placement's document (P:placement:<e>): workers with an assignment, by
 * address. NULL (logged) when out of memory or when a worker it gives experts
 * to has no known address (its lease is gone): such a document is not
 * published, since every reader would refuse it. */
static char *placement_doc(const router *r, const rt_placement *pl) {
    const char **addrs = calloc(pl->n_workers + 1, sizeof *addrs);
    char *doc = NULL;
    moe_err err;
    if (!addrs) return NULL;
    for (size_t i = 0; i < pl->n_workers; i++) {
        const rs_worker *w = rt_find_worker(r, pl->worker_ids[i]);
        addrs[i] = w ? w->addr : NULL;
    }
    if (rt_placement_doc(pl, r->model, addrs, &doc, &err) < 0) {
        moe_log(MOE_LOG_WARN, "router-svc", "epoch %" PRIu64 " cannot be written: %s", pl->epoch,
                err.msg);
        doc = NULL;
    }
    free(addrs);
    return doc;
}

/* The experts a worker's lease says it holds ("L1:0-7;L2:0-3", the --experts
 * grammar) into mark (np); an unreadable list counts as none. */
static void held_of(const router *r, const rs_worker *w, uint8_t *mark) {
    if (!*w->held) return;
    uint8_t *moe_ok = calloc((size_t)r->n_layer, 1);
    if (!moe_ok) return;
    for (int l = 0; l < r->n_layer; l++) moe_ok[l] = r->layer_bytes[l] != 0;
    moe_slice sl;
    moe_err err;
    if (moe_slice_parse(&sl, w->held, r->n_layer, r->n_expert, moe_ok, &err) == 0) {
        memcpy(mark, sl.held, n_pairs(r));
        moe_slice_free(&sl);
    } else {
        rt_warn("worker %s: its held experts cannot be read (%s); counted as none", w->id, err.msg);
    }
    free(moe_ok);
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

/* What HTTP shows of the active placement. */
static void snap_active(router *r, const rt_placement *pl) {
    char *doc = placement_doc(r, pl);
    pthread_mutex_lock(&r->mu);
    r->st.epoch = pl->epoch;
    r->st.pending = 0;
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

/* A new leader's view: the active epoch in Redis, else what the workers
 * hold (Redis restarted empty), else nothing yet. */
static void load_prev(router *r) {
    rt_placement_free(r->active), rt_placement_free(r->round);
    r->active = r->round = NULL;
    r->active_published = 0;
    uint64_t maxe = 0;
    uint64_t a = 0, p = 0, q = 0;
    char ka[MOE_SCHEMA_KEY_MAX], kp[MOE_SCHEMA_KEY_MAX], kq[MOE_SCHEMA_KEY_MAX];
    moe_key_placement_active(ka, sizeof ka, r->prefix);
    moe_key_placement_pending(kp, sizeof kp, r->prefix);
    moe_key_placement_seq(kq, sizeof kq, r->prefix);
    const int ra = moe_pldoc_get_epoch(r->cmd, ka, &a);
    const int rp = moe_pldoc_get_epoch(r->cmd, kp, &p);
    const int rq = moe_pldoc_get_epoch(r->cmd, kq, &q);
    if (ra == MOE_EUNAVAIL || rp == MOE_EUNAVAIL || rq == MOE_EUNAVAIL) goto done;
    const int have_a = ra == 0, have_p = rp == 0, have_q = rq == 0;
    /* the workers' epochs, up to the last one issued when that is known: a
     * lease that claims more must not push the numbers up (to 2^53, where
     * no document can carry them) */
    for (int i = 0; i < r->nw; i++)
        if (r->ws[i].epoch > maxe && (!have_q || r->ws[i].epoch <= q)) maxe = r->ws[i].epoch;
    if (have_q && q > maxe) maxe = q;
    if (have_p) { /* an earlier leader's round: start over, after it */
        if (p > maxe) maxe = p;
        redisReply *x = moe_rlink_cmd(r->cmd, "DEL %s", kp);
        if (x) freeReplyObject(x);
    }
    const size_t np = n_pairs(r);
    if (have_a) {
        if (a > maxe) maxe = a;
        moe_pldoc *doc = NULL;
        moe_err err;
        if (moe_pldoc_fetch(&doc, r->cmd, r->prefix, a, r->n_layer, r->n_expert, &err) == 0) {
            uint8_t *held = calloc((size_t)doc->n_workers * np + 1, 1);
            if (held) {
                for (size_t i = 0; i < doc->n_experts; i++)
                    for (int k = 0; k < doc->experts[i].n_replicas; k++)
                        held[(size_t)doc->experts[i].replicas[k] * np +
                             (size_t)doc->experts[i].layer * r->n_expert + doc->experts[i].expert] =
                            1;
                r->active = build_prev(r, a, doc->ids, doc->n_workers, held);
                r->active_published = r->active != NULL;
                if (r->active) {
                    rt_log("epoch %" PRIu64 " is active (read back)", a);
                    snap_active(r, r->active);
                }
            }
            free(held);
        } else {
            rt_warn("the active epoch %" PRIu64 " cannot be read back: %s", a, err.msg);
        }
        moe_pldoc_free(doc);
    }
    const int lease = r->max_lease_ms ? r->max_lease_ms : MOE_SCHEMA_LEASE_MS_DEFAULT;
    if (!r->active && moe_mono_ms() - r->stable_since_ms <
                          (lease > r->cfg.settle_ms ? lease : r->cfg.settle_ms)) {
        goto done; /* leases may still be coming back: not loaded yet, try again */
    }
    if (!r->active) { /* from what the workers hold */
        int n = 0;
        char **ids = calloc((size_t)r->nw + 1, sizeof *ids);
        uint8_t *held = calloc((size_t)r->nw * np + 1, 1);
        size_t total = 0;
        for (int i = 0; ids && held && i < r->nw; i++) {
            if (!r->ws[i].usable || r->ws[i].suspect) continue;
            ids[n] = r->ws[i].id;
            held_of(r, &r->ws[i], held + (size_t)n * np);
            for (size_t k = 0; k < np; k++) total += held[(size_t)n * np + k];
            n++;
        }
        if (total) {
            r->active = build_prev(r, maxe, ids, n, held);
            if (r->active)
                rt_log("no active placement in Redis: rebuilt epoch %" PRIu64
                       " from the experts %d worker(s) hold",
                       maxe, n);
        }
        free(ids), free(held);
    }
    r->have_prev_loaded = 1;
done:
    if (maxe + 1 > r->next_epoch) r->next_epoch = maxe + 1;
}

static void publish_cmd(router *r, moe_event_kind what, uint64_t e) {
    char chan[MOE_SCHEMA_KEY_MAX], msg[MOE_SCHEMA_KEY_MAX]; /* one argument: "pending 7" */
    const moe_event ev = {.kind = what, .epoch = e};
    moe_key_events(chan, sizeof chan, r->prefix);
    moe_event_format(msg, sizeof msg, &ev);
    moe_rlink_append(r->cmd, "PUBLISH %s %s", chan, msg);
}

static void start_round(router *r, rt_placement *pl, const char *why) {
    pl->epoch = r->next_epoch++; /* burnt even if this fails: never reused */
    char *doc = placement_doc(r, pl);
    if (!doc || moe_rlink_begin(r->cmd) < 0) {
        free(doc);
        rt_placement_free(pl);
        return;
    }
    char key[MOE_SCHEMA_KEY_MAX], ack[MOE_SCHEMA_KEY_MAX], seq[MOE_SCHEMA_KEY_MAX],
        pending[MOE_SCHEMA_KEY_MAX];
    moe_key_placement(key, sizeof key, r->prefix, pl->epoch);
    moe_key_ack(ack, sizeof ack, r->prefix, pl->epoch);
    moe_key_placement_seq(seq, sizeof seq, r->prefix);
    moe_key_placement_pending(pending, sizeof pending, r->prefix);
    moe_rlink_append(r->cmd, "DEL %s", ack);
    moe_rlink_appendargv(r->cmd, 3, (const char *[]){"SET", key, doc}, NULL);
    moe_rlink_append(r->cmd, "SET %s %" PRIu64, seq, pl->epoch);
    moe_rlink_append(r->cmd, "SET %s %" PRIu64, pending, pl->epoch);
    publish_cmd(r, MOE_EVENT_PENDING, pl->epoch);
    free(doc);
    if (moe_rlink_flush(r->cmd, NULL, NULL) < 0) {
        rt_placement_free(pl);
        return;
    }
    r->round = pl;
    r->round_started_ms = r->last_round_ms = moe_mono_ms();
    pthread_mutex_lock(&r->mu);
    r->st.rounds++;
    r->st.pending = pl->epoch;
    pthread_mutex_unlock(&r->mu);
    rt_log("epoch %" PRIu64 " pending (%s): %zu assignment(s) added, %zu removed, %zu replicas "
           "short; waiting for the workers to load",
           pl->epoch, why, pl->moves_added, pl->moves_removed, pl->replicas_short);
}

/* What the round's workers have acknowledged (round_acked). */
enum { ACK_UNUSED, ACK_OK, ACK_MISSING, ACK_UNBACKED };

/* 1 if every worker the round gives experts to has acknowledged: it is in
 * P:ack:<e> and its own lease says it has loaded epoch e (anyone with the
 * worker role's password can add a name to the set; only the worker writes
 * its lease). state (the round's n_workers, or NULL) gets ACK_* per worker. */
static int round_acked(router *r, int *missing_dead, uint8_t *state) {
    *missing_dead = 0;
    char ack[MOE_SCHEMA_KEY_MAX];
    moe_key_ack(ack, sizeof ack, r->prefix, r->round->epoch);
    redisReply *x = moe_rlink_cmd(r->cmd, "SMEMBERS %s", ack);
    if (!x || x->type != REDIS_REPLY_ARRAY) {
        if (x) freeReplyObject(x);
        return 0;
    }
    for (size_t k = 0; k < x->elements && r->n_suspects; k++) { /* acknowledging again */
        const rs_worker *w = x->element[k]->str ? rt_find_worker(r, x->element[k]->str) : NULL;
        if (w && w->epoch >= r->round->epoch && rt_suspect_acked(r, w->id, r->round->epoch))
            rt_log("worker %.100s acknowledged epoch %" PRIu64 ": it may get experts again", w->id,
                   r->round->epoch);
    }
    int all = 1;
    for (size_t i = 0; i < r->round->n_workers; i++) {
        int used = 0;
        for (size_t k = 0; k < r->round->n_experts && !used; k++)
            for (int j = 0; j < r->round->experts[k].n_replicas; j++)
                used |= r->round->experts[k].replicas[j] == (int)i;
        if (state) state[i] = ACK_UNUSED;
        if (!used) continue;
        int acked = 0;
        for (size_t k = 0; k < x->elements && !acked; k++)
            acked = x->element[k]->str && !strcmp(x->element[k]->str, r->round->worker_ids[i]);
        const rs_worker *w = rt_find_worker(r, r->round->worker_ids[i]);
        const int backed = acked && w && w->epoch >= r->round->epoch;
        if (state) state[i] = backed ? ACK_OK : acked ? ACK_UNBACKED : ACK_MISSING;
        if (!backed) {
            all = 0;
            if (!w || !w->usable) *missing_dead = 1;
        }
    }
    freeReplyObject(x);
    return all;
}

/* A round not acknowledged in time: the workers that did not acknowledge it
 * (or whose lease does not back their acknowledgement) become suspects: no
 * experts (while the others can hold them) until they validly acknowledge a
 * later epoch, so the next round can complete without them. */
static void suspect_missing(router *r) {
    uint8_t *state = calloc(r->round->n_workers + 1, 1);
    int dead = 0;
    if (!state) return;
    round_acked(r, &dead, state);
    for (size_t i = 0; i < r->round->n_workers; i++) {
        if (state[i] != ACK_MISSING && state[i] != ACK_UNBACKED) continue;
        const rs_worker *w = rt_find_worker(r, r->round->worker_ids[i]);
        if (!w) continue;
        if (state[i] == ACK_UNBACKED)
            rt_warn("worker %.100s: in %s:ack:%" PRIu64 " but its lease says epoch %" PRIu64
                    ": not counted",
                    w->id, r->prefix, r->round->epoch, w->epoch);
        rt_suspect_add(r, w->id, r->round->epoch);
    }
    free(state);
}

static void activate(router *r) {
    rt_placement *pl = r->round;
    char active[MOE_SCHEMA_KEY_MAX], pending[MOE_SCHEMA_KEY_MAX], old[MOE_SCHEMA_KEY_MAX];
    moe_key_placement_active(active, sizeof active, r->prefix);
    moe_key_placement_pending(pending, sizeof pending, r->prefix);
    if (moe_rlink_begin(r->cmd) < 0) return;
    moe_rlink_append(r->cmd, "SET %s %" PRIu64, active, pl->epoch);
    moe_rlink_append(r->cmd, "DEL %s", pending);
    if (r->active && r->active_published) {
        moe_key_placement(old, sizeof old, r->prefix, r->active->epoch);
        moe_rlink_append(r->cmd, "EXPIRE %s %d", old, MOE_SCHEMA_PLACEMENT_OLD_TTL_S);
    }
    publish_cmd(r, MOE_EVENT_ACTIVE, pl->epoch);
    if (moe_rlink_flush(r->cmd, NULL, NULL) < 0) return;
    const double ms = (double)(moe_mono_ms() - r->round_started_ms);
    rt_log("epoch %" PRIu64 " active after %.0f ms", pl->epoch, ms);
    rt_placement_free(r->active);
    r->active = pl;
    r->active_published = 1;
    r->round = NULL;
    pthread_mutex_lock(&r->mu);
    r->st.moves_added += pl->moves_added;
    r->st.moves_removed += pl->moves_removed;
    r->st.last_switch_ms = ms;
    pthread_mutex_unlock(&r->mu);
    snap_active(r, pl);
}

static void abandon_round(router *r, const char *why) {
    rt_warn("epoch %" PRIu64 " abandoned: %s", r->round->epoch, why);
    char pending[MOE_SCHEMA_KEY_MAX], key[MOE_SCHEMA_KEY_MAX];
    moe_key_placement_pending(pending, sizeof pending, r->prefix);
    moe_key_placement(key, sizeof key, r->prefix, r->round->epoch);
    redisReply *x = moe_rlink_cmd(r->cmd, "DEL %s", pending);
    if (x) freeReplyObject(x);
    x = moe_rlink_cmd(r->cmd, "EXPIRE %s %d", key, MOE_SCHEMA_PLACEMENT_OLD_TTL_S);
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
        const rs_worker *w = rt_find_worker(r, r->active->worker_ids[i]);
        if (!w || !w->usable || w->draining || w->suspect) return 1;
    }
    return 0;
}

static void write_wanted(router *r, size_t wanted) {
    const int64_t now = moe_mono_ms();
    if (wanted == r->workers_wanted_written && now - r->wanted_written_ms < 10000) return;
    char key[MOE_SCHEMA_KEY_MAX];
    moe_key_workers_wanted(key, sizeof key, r->prefix);
    redisReply *x = moe_rlink_cmd(r->cmd, "SET %s %llu", key, (unsigned long long)wanted);
    if (x) {
        freeReplyObject(x);
        r->workers_wanted_written = wanted;
        r->wanted_written_ms = now;
    }
}

/* (router_internal.h) */
int rt_compute_next(router *r, rt_worker *ws, int n_ok, int n_all, const rt_expert *es, size_t ne,
                    rt_placement **pl, moe_err *err) {
    *pl = NULL;
    int rc = n_ok
                 ? rt_placement_compute(pl, ws, (size_t)n_ok, es, ne, &r->cfg.place, r->active, err)
                 : moe_err_set(err, MOE_ENOSPC, "every live worker missed an acknowledgement");
    int n_drain = 0;
    for (int i = 0; i < n_all; i++) n_drain += ws[i].draining;
    if (rc != MOE_ENOSPC || (!n_drain && n_all == n_ok)) return rc;
    const moe_err first = *err;
    for (int i = 0; i < n_all; i++) ws[i].draining = 0;
    const char *who = "draining";
    if (n_drain && n_ok)
        rc = rt_placement_compute(pl, ws, (size_t)n_ok, es, ne, &r->cfg.place, r->active, err);
    if (rc == MOE_ENOSPC && n_all > n_ok) {
        who = n_drain ? "draining and silent" : "silent (missed acknowledgements)";
        rc = rt_placement_compute(pl, ws, (size_t)n_all, es, ne, &r->cfg.place, r->active, err);
    }
    const int64_t now = moe_mono_ms();
    if (rc == 0 && now - r->logged_drain_ms > 10000) {
        rt_warn("%s workers keep or get experts: the others cannot hold them (%s)", who, first.msg);
        r->logged_drain_ms = now;
    }
    return rc;
}

static void drive(router *r) {
    if (!r->model) return;
    const int64_t now = moe_mono_ms();
    if (now < r->hold_until_ms) return;
    if (!r->have_prev_loaded) load_prev(r);
    if (!r->have_prev_loaded) return;
    if (r->round) {
        uint64_t e = 0;
        char key[MOE_SCHEMA_KEY_MAX];
        moe_key_placement_pending(key, sizeof key, r->prefix);
        const int rc = moe_pldoc_get_epoch(r->cmd, key, &e);
        if (rc == MOE_EUNAVAIL) return;
        if (rc < 0 || e != r->round->epoch)
            abandon_round(r, "its pending key is gone from Redis (a restart?)");
    }
    if (r->round) {
        int dead = 0;
        if (round_acked(r, &dead, NULL)) {
            activate(r);
            return;
        }
        if (dead) {
            abandon_round(r, "a worker it gives experts to is gone");
        } else if (now - r->round_started_ms > r->cfg.ack_timeout_ms) {
            suspect_missing(r);
            abandon_round(r, "not every worker acknowledged in time (they get nothing more until "
                             "they do)");
        } else {
            return;
        }
    }
    if (r->active && r->active_published) { /* Redis restarted empty: publish it again */
        uint64_t e = 0;
        char key[MOE_SCHEMA_KEY_MAX];
        moe_key_placement_active(key, sizeof key, r->prefix);
        const int rc = moe_pldoc_get_epoch(r->cmd, key, &e);
        if (rc == MOE_EUNAVAIL) return;
        if (rc < 0 || e != r->active->epoch) {
            rt_warn("the active epoch %" PRIu64 " is gone from Redis (a restart?): publishing "
                    "the placement again",
                    r->active->epoch);
            r->active_published = 0;
        }
    }
    const size_t np = n_pairs(r);
    rt_worker *ws = calloc((size_t)r->nw + 1, sizeof *ws);
    rt_expert *es = calloc(np + 1, sizeof *es);
    int n_ok = 0, n_all = 0;
    size_t ne = 0;
    if (!ws || !es) goto done;
    for (int pass = 0; pass < 2; pass++) { /* the suspects last: only if need be */
        for (int i = 0; i < r->nw; i++) {
            const rs_worker *w = &r->ws[i];
            if (w->usable && pass == (w->suspect || rt_suspect_is(r, w->id)))
                ws[n_all++] = (rt_worker){w->id, w->domain, w->capacity, 1, w->draining};
        }
        if (!pass) n_ok = n_all;
    }
    for (size_t i = 0; i < np; i++) {
        const int l = (int)(i / (size_t)r->n_expert);
        if (!r->layer_bytes[l]) continue;
        es[ne++] = (rt_expert){l, (int)(i % (size_t)r->n_expert), r->layer_bytes[l], r->load[i]};
    }
    if (!n_all) goto done;
    if (!r->active && now - r->stable_since_ms < r->cfg.settle_ms) goto done;
    rt_placement *pl;
    moe_err err;
    const int rc = rt_compute_next(r, ws, n_ok, n_all, es, ne, &pl, &err);
    if (rc < 0) {
        if (now - r->logged_place_ms > 10000) {
            rt_err("cannot place the experts: %s", err.msg);
            r->logged_place_ms = now;
        }
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
        start_round(r, pl,
                    r->active ? "publishing the placement the workers hold" : "first placement");
    } else if (moved && lost) {
        pthread_mutex_lock(&r->mu);
        r->st.failovers++;
        pthread_mutex_unlock(&r->mu);
        rt_tload_log_hot(r, pl);
        start_round(r, pl, "failover: a worker is gone or draining");
    } else if (moved && now - r->last_round_ms >= r->cfg.rebalance_ms) {
        rt_tload_log_hot(r, pl);
        start_round(r, pl,
                    pl->fresh_layout ? "rebalance (fresh layout)" : "rebalance for the load");
    } else {
        rt_placement_free(pl);
    }
done:
    free(ws), free(es);
}

/* ==== Loop ====================================================================== */

static void snapshot(router *r) {
    const size_t np = n_pairs(r);
    int usable = 0, draining = 0, other = 0;
    for (int i = 0; i < r->nw; i++) {
        const rs_worker *w = &r->ws[i];
        usable += w->usable && !w->suspect; /* suspects: counted as rejected */
        draining += w->usable && !w->suspect && w->draining;
        other += !w->usable;
    }
    moe_rlink_stats ls = moe_rlink_get_stats(r->cmd);
    pthread_mutex_lock(&r->mu);
    r->st.leader = r->leader;
    r->st.redis_up = ls.connected;
    r->st.redis_failures = ls.failures;
    r->st.n_workers = r->nw;
    r->st.n_usable = usable;
    r->st.n_other = other;
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
    char url[MOE_REDIS_URL_SHOWN];
    moe_redis_url_redact(url, sizeof url, r->cfg.url);
    rt_log("%s, prefix '%s', id %s: min %d replica(s), target %.0f rows/s per replica", url,
           r->prefix, r->id, r->cfg.place.min_replicas, r->cfg.place.target_load);
    while (!*r->cfg.stop) {
        const int64_t t0 = moe_mono_ms();
        rt_lead(r);
        if (rt_read_workers(r) == 0 && r->leader) {
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
        char key[MOE_SCHEMA_KEY_MAX];
        moe_key_leader(key, sizeof key, r->prefix);
        redisReply *x = moe_rlink_cmd(r->cmd, "EVAL %s 1 %s %s",
                                      "if redis.call('get', KEYS[1]) == ARGV[1] then "
                                      "return redis.call('del', KEYS[1]) else return 0 end",
                                      key, r->id);
        if (x) freeReplyObject(x);
    }
    rt_log("stopped");
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
    if (r->cfg.leader_ttl_ms <= 0) r->cfg.leader_ttl_ms = MOE_SCHEMA_LEADER_TTL_MS_DEFAULT;
    r->prefix = strdup(moe_schema_prefix(cfg->prefix));
    r->id = strdup(cfg->id && *cfg->id ? cfg->id : "router-svc");
    r->next_epoch = 1;
    r->slot_id[0] = r->slot_id[1] = -1;
    pthread_mutex_init(&r->mu, NULL);
    int rc = !r->prefix || !r->id ? moe_err_set(err, MOE_ENOMEM, "out of memory") : 0;
    if (!rc) rc = moe_schema_check_names(r->prefix, NULL, err);
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
    rt_workers_clear(r);
    rt_check_free(r);
    moe_rlink_free(r->cmd);
    rt_placement_free(r->active), rt_placement_free(r->round);
    free(r->prefix), free(r->id), free(r->worker_sig), free(r->model), free(r->layer_bytes);
    free(r->load), free(r->slot[0]), free(r->slot[1]), free(r->active_doc);
    rt_tload_free(r->tload), free(r->tload);
    free(r->st.load), free(r->st.replicas), free(r->st.placement);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
