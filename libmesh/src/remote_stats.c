/*
 * remote_stats.c - what other threads may read of a remote backend (see
 * mesh/remote.h and remote_internal.h): counters, per-worker round trips,
 * and coverage (readiness). The compute thread counts into its own fields
 * and publishes a copy under pub_mu once per wait; readers take pub_mu.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remote_internal.h"
#include "svc/clock.h"

const double moe_remote_rtt_le_ms[MOE_REMOTE_RTT_BUCKETS] = {0.25, 0.5, 1,   2.5, 5,   10,
                                                             25,   50,  100, 250, 1000};

static remote_be *remote_of(const moe_expert_backend *be) {
    if (!be || !be->name || strcmp(be->name, "remote") || !be->ctx) return NULL;
    return be->ctx;
}

/* ==== The compute thread ========================================================== */

void moe__remote_note_result(remote_be *b, rworker *w) {
    const double ms = (double)(moe_mono_us() - w->sent_us) / 1000.0;
    robs *o = &w->obs;
    o->results++;
    o->rtt_ms_sum += ms;
    for (int i = MOE_REMOTE_RTT_BUCKETS - 1; i >= 0 && ms <= moe_remote_rtt_le_ms[i]; i--)
        o->rtt_le[i]++;
    w->dirty = 1;
    if (b->rtt_fn) b->rtt_fn(b->rtt_ud, w->addr, ms, w->n_rows);
}

void moe__remote_note_failure(rworker *w) {
    w->obs.failures++;
    w->dirty = 1;
}

void moe__remote_publish(remote_be *b) {
    pthread_mutex_lock(&b->pub_mu);
    b->pub_st = b->st;
    b->pub_st.workers = b->n;
    for (int i = 0; i < b->n; i++) {
        rworker *w = b->w[i];
        if (!w->dirty) continue;
        w->pub = w->obs;
        w->dirty = 0;
    }
    pthread_mutex_unlock(&b->pub_mu);
}

/* ==== Readers (any thread) ======================================================== */

static moe_remote_stats stats_of(const remote_be *b) {
    moe_remote_stats s;
    pthread_mutex_lock((pthread_mutex_t *)&b->pub_mu);
    s = b->pub_st;
    pthread_mutex_unlock((pthread_mutex_t *)&b->pub_mu);
    if (b->ctl) {
        moe__rctl_stats c = moe__rctl_get_stats(b->ctl);
        s.placements = c.placements;
        s.rows_reported = c.rows_reported;
        s.redis_failures = c.redis_failures;
    }
    return s;
}

moe_remote_stats moe_remote_get_stats(const moe_expert_backend *be) {
    moe_remote_stats s;
    memset(&s, 0, sizeof s);
    remote_be *b = remote_of(be);
    if (!b) return s;
    s = stats_of(b);
    const remote_be *b2 = remote_of(be->second);
    if (b2) { /* the second set of streams: its traffic counts too */
        const moe_remote_stats t = stats_of(b2);
        s.batches += t.batches;
        s.second_batches = t.batches;
        s.messages += t.messages;
        s.bytes_sent += t.bytes_sent;
        s.bytes_received += t.bytes_received;
        s.retries += t.retries;
        s.worker_failures += t.worker_failures;
        s.suspects += t.suspects;
        s.rows_reported += t.rows_reported;
        s.redis_failures += t.redis_failures;
        if (t.stall_ms_max > s.stall_ms_max) s.stall_ms_max = t.stall_ms_max;
    }
    return s;
}

static const rworker *worker_by_addr(const remote_be *b, const char *addr) {
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->w[i]->addr, addr)) return b->w[i];
    return NULL;
}

int moe__remote_cover(const remote_be *b, const moe_pldoc *d, int64_t now_ms,
                      moe_remote_coverage *out) {
    const moe_hparams *hp = &b->m->hp;
    const size_t ne = (size_t)hp->n_expert, np = (size_t)hp->n_layer * ne;
    const int nw = d ? d->n_workers : b->n;
    memset(out, 0, sizeof *out);
    out->layer = out->expert = -1;
    uint8_t *pair = calloc(np + 1, 1);       /* bit 0: held, bit 1: held by a live worker */
    uint8_t *wk = calloc((size_t)nw + 1, 1); /* bit 0: live, bit 1: holds a pair */
    if (!pair || !wk) {
        free(pair), free(wk);
        return MOE_ENOMEM;
    }
    for (int i = 0; i < nw; i++) {
        const rworker *w = d ? worker_by_addr(b, d->addrs[i]) : b->w[i];
        wk[i] = !w || w->pub.down_until_ms <= now_ms; /* never met: never failed */
    }
    if (d) {
        for (size_t i = 0; i < d->n_experts; i++) {
            const moe_pldoc_expert *x = &d->experts[i];
            if (x->layer < 0 || x->layer >= hp->n_layer || x->expert < 0 ||
                x->expert >= hp->n_expert)
                continue;
            const size_t k = (size_t)x->layer * ne + (size_t)x->expert;
            for (int r = 0; r < x->n_replicas; r++) {
                const int wi = x->replicas[r];
                if (wi < 0 || wi >= nw) continue;
                wk[wi] |= 2;
                pair[k] |= (uint8_t)(1 | (wk[wi] & 1) << 1);
            }
        }
    } else if (b->pl.off) {
        for (size_t k = 0; k < np; k++)
            for (uint32_t j = b->pl.off[k]; j < b->pl.off[k + 1]; j++) {
                const int wi = b->pl.rep[j];
                wk[wi] |= 2;
                pair[k] |= (uint8_t)(1 | (wk[wi] & 1) << 1);
            }
    }
    out->epoch = d ? d->epoch : b->pl.epoch;
    for (int l = 0; l < hp->n_layer; l++) {
        if (!moe_model_layer_is_moe(b->m, l)) continue;
        for (size_t e = 0; e < ne; e++) {
            const uint8_t f = pair[(size_t)l * ne + e];
            out->pairs++;
            if (f & 2) continue;
            out->unplaced += !(f & 1);
            if (!out->uncovered++) out->layer = l, out->expert = (int)e;
        }
    }
    for (int i = 0; i < nw; i++)
        if (wk[i] & 2) {
            out->workers++;
            out->workers_live += wk[i] & 1;
        }
    out->workers_known = b->n;
    free(pair), free(wk);
    return 0;
}

typedef struct peek_cover {
    const remote_be *b;
    int64_t now_ms;
    moe_remote_coverage *out;
    int rc;
} peek_cover;

static void cover_doc(void *ud, const moe_pldoc *d) {
    peek_cover *p = ud;
    p->rc = moe__remote_cover(p->b, d, p->now_ms, p->out);
}

int moe_remote_get_coverage(const moe_expert_backend *be, moe_remote_coverage *out) {
    memset(out, 0, sizeof *out);
    out->layer = out->expert = -1;
    remote_be *b = remote_of(be);
    if (!b) return MOE_EINVAL;
    const int64_t now = moe_mono_ms();
    pthread_mutex_lock(&b->pub_mu);
    peek_cover p = {b, now, out, 0};
    /* a placement the compute thread has not taken yet is the one it will use */
    if (!b->ctl || !moe__rctl_peek(b->ctl, cover_doc, &p))
        p.rc = moe__remote_cover(b, NULL, now, out);
    pthread_mutex_unlock(&b->pub_mu);
    return p.rc;
}

int moe_remote_get_worker_stats(const moe_expert_backend *be, moe_remote_worker_stats *out,
                                int cap) {
    remote_be *b = remote_of(be);
    if (!b) return 0;
    const int64_t now = moe_mono_ms();
    pthread_mutex_lock(&b->pub_mu);
    const int n = b->n, k = out && cap > 0 ? (cap < n ? cap : n) : 0;
    for (int i = 0; i < k; i++) {
        const rworker *w = b->w[i];
        moe_remote_worker_stats *s = &out[i];
        memset(s, 0, sizeof *s);
        snprintf(s->addr, sizeof s->addr, "%s", w->addr);
        s->live = w->pub.down_until_ms <= now;
        s->messages = w->pub.messages;
        s->rows = w->pub.rows;
        s->failures = w->pub.failures;
        s->rtt_count = w->pub.results;
        s->rtt_ms_sum = w->pub.rtt_ms_sum;
        memcpy(s->rtt_le, w->pub.rtt_le, sizeof s->rtt_le);
    }
    if (k && b->pl.off) {
        const size_t np = (size_t)b->m->hp.n_layer * (size_t)b->m->hp.n_expert;
        for (uint32_t j = 0; j < b->pl.off[np]; j++)
            if (b->pl.rep[j] < k) out[b->pl.rep[j]].in_placement = 1;
    }
    pthread_mutex_unlock(&b->pub_mu);
    /* the second set of streams: its counters added to the same worker's */
    remote_be *b2 = remote_of(be->second);
    if (b2 && k) {
        pthread_mutex_lock(&b2->pub_mu);
        for (int i = 0; i < b2->n; i++) {
            const rworker *w = b2->w[i];
            for (int j = 0; j < k; j++) {
                moe_remote_worker_stats *s = &out[j];
                if (strncmp(s->addr, w->addr, sizeof s->addr - 1)) continue;
                s->live &= w->pub.down_until_ms <= now;
                s->messages += w->pub.messages;
                s->rows += w->pub.rows;
                s->failures += w->pub.failures;
                s->rtt_count += w->pub.results;
                s->rtt_ms_sum += w->pub.rtt_ms_sum;
                for (int q = 0; q < MOE_REMOTE_RTT_BUCKETS; q++) s->rtt_le[q] += w->pub.rtt_le[q];
                break;
            }
        }
        pthread_mutex_unlock(&b2->pub_mu);
    }
    return n;
}

int moe_remote_set_rtt_hook(moe_expert_backend *be, moe_remote_rtt_fn fn, void *ud) {
    remote_be *b = remote_of(be);
    if (!b) return MOE_EINVAL;
    b->rtt_fn = fn;
    b->rtt_ud = ud;
    remote_be *b2 = remote_of(be->second);
    if (b2) {
        b2->rtt_fn = fn;
        b2->rtt_ud = ud;
    }
    return 0;
}
