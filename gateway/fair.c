/* fair.c - weighted fair queuing over tenants (see fair.h). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fair.h"

/* Tenants with state at once; beyond, the ones with nothing waiting or
 * running are forgotten (a forgotten tenant that comes back is lifted to
 * the others' counters, as after any idle time), and if every entry is busy
 * the rest share one overflow entry. */
#define FAIR_CAP 4096

typedef struct tenant {
    char name[MOE_TENANT_NAME_MAX + 1];
    uint8_t used; /* 0 empty, 1 live, 2 deleted (a tombstone for probing) */
    double counter;
    double weight; /* its latest job's */
    int waiting, running;
} tenant;

struct gw_fair {
    gw_policy pol;
    double w_prompt, w_gen;
    pthread_mutex_t mu; /* the engine thread's changes vs snapshots */
    tenant t[FAIR_CAP];
    tenant overflow;
    int n_live;
    double last_left; /* the counter of the last tenant that went idle */
    double w_active;  /* the weights of the tenants with jobs waiting or running */
    int n_active;     /* ... and how many they are */
};

static uint32_t fnv(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* The lowest counter among tenants with jobs waiting (else running), or
 * last_left when nobody has any. */
static double lift_to(const gw_fair *f) {
    double lo_wait = -1, lo_run = -1;
    for (int i = 0; i < FAIR_CAP; i++) {
        const tenant *t = &f->t[i];
        if (t->used != 1) continue;
        if (t->waiting > 0 && (lo_wait < 0 || t->counter < lo_wait)) lo_wait = t->counter;
        if (t->running > 0 && (lo_run < 0 || t->counter < lo_run)) lo_run = t->counter;
    }
    return lo_wait >= 0 ? lo_wait : lo_run >= 0 ? lo_run : f->last_left;
}

/* Forgets idle tenants to make room (called when the table is full). */
static void forget_idle(gw_fair *f) {
    for (int i = 0; i < FAIR_CAP; i++)
        if (f->t[i].used == 1 && f->t[i].waiting == 0 && f->t[i].running == 0)
            f->t[i].used = 2, f->n_live--;
}

/* The entry for name, made (lifted) when missing. */
static tenant *find(gw_fair *f, const char *name) {
    const uint32_t h = fnv(name);
    int free_at = -1;
    for (int k = 0; k < FAIR_CAP; k++) {
        const int i = (int)((h + (uint32_t)k) & (FAIR_CAP - 1));
        tenant *t = &f->t[i];
        if (t->used == 1 && !strcmp(t->name, name)) return t;
        if (t->used != 1 && free_at < 0) free_at = i;
        if (t->used == 0) break;
    }
    if (free_at < 0 || f->n_live >= FAIR_CAP * 3 / 4) {
        forget_idle(f);
        if (f->n_live >= FAIR_CAP * 3 / 4) return &f->overflow;
        return find(f, name);
    }
    tenant *t = &f->t[free_at];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->used = 1;
    t->counter = lift_to(f);
    f->n_live++;
    return t;
}

static double weight_of(const gw_job *j) {
    return j->weight > 0 ? j->weight : 1.0;
}

static int is_active(const tenant *t) {
    return t->waiting > 0 || t->running > 0;
}

/* t just went idle: its weight leaves the active sum */
static void went_idle(gw_fair *f, tenant *t) {
    if (is_active(t)) return;
    f->last_left = t->counter;
    f->w_active -= t->weight;
    if (--f->n_active <= 0 || f->w_active < 0) f->w_active = 0, f->n_active = 0;
}

/* ---- the policy hooks (engine thread) ---- */

static void on_wait(void *state, gw_job *j) {
    gw_fair *f = state;
    pthread_mutex_lock(&f->mu);
    tenant *t = find(f, j->tenant);
    const double w = weight_of(j);
    if (!is_active(t)) { /* back after idle time: nothing banked */
        const double lo = lift_to(f);
        if (t->counter < lo) t->counter = lo;
        f->w_active += w;
        f->n_active++;
    } else {
        f->w_active += w - t->weight;
    }
    t->waiting++;
    t->weight = w;
    j->policy_data = t;
    pthread_mutex_unlock(&f->mu);
}

static void on_admit(void *state, gw_job *j) {
    gw_fair *f = state;
    tenant *t = j->policy_data;
    if (!t) return;
    pthread_mutex_lock(&f->mu);
    t->waiting--, t->running++;
    pthread_mutex_unlock(&f->mu);
}

static void on_end(void *state, gw_job *j, int tokens) {
    (void)tokens; /* counted as generated (on_served) */
    gw_fair *f = state;
    tenant *t = j->policy_data;
    if (!t) return;
    pthread_mutex_lock(&f->mu);
    t->running--;
    went_idle(f, t);
    pthread_mutex_unlock(&f->mu);
    j->policy_data = NULL;
}

static void on_preempt(void *state, gw_job *j) {
    gw_fair *f = state;
    tenant *t = j->policy_data;
    if (!t) return;
    pthread_mutex_lock(&f->mu);
    t->running--, t->waiting++;
    pthread_mutex_unlock(&f->mu);
}

/* Slots a tenant may hold while others want theirs: its weight's share of
 * max_seqs among the tenants with jobs waiting or running. */
static double share_of(const gw_fair *f, const tenant *t, int max_seqs) {
    const double wt = t->weight > 0 ? t->weight : 1.0;
    return f->w_active > wt ? (double)max_seqs * wt / f->w_active : max_seqs;
}

/* Tokens in a job's caches: what a preemption makes it compute again. */
static int progress(const gw_job *j) {
    int n = 0;
    for (int i = 0; i < j->n_ch; i++)
        n += j->ch[i].n_prefilled + (j->ch[i].seq ? moe_gen_seq_n_generated(j->ch[i].seq) : 0);
    return n;
}

/* Preemption: only for a tenant below its share, taking from the tenant
 * furthest above its own, the job with the least in its caches (the least
 * work redone); a job preempted before is spared while another candidate
 * exists, so one request is not bounced back and forth. */
static int victim(void *state, gw_job *const *running, int n, const gw_job *want, int max_seqs) {
    gw_fair *f = state;
    const tenant *tw = want->policy_data;
    if (!tw || tw == &f->overflow) return -1;
    if ((double)tw->running + 1 > share_of(f, tw, max_seqs) + 1e-9) return -1;
    int best = -1;
    double best_over = 0;
    for (int r = 0; r < n; r++) {
        const gw_job *j = running[r];
        const tenant *t = j->policy_data;
        if (!t || t == tw || j->priority > want->priority) continue;
        const double over = (double)t->running - share_of(f, t, max_seqs);
        /* not above its share (a tenant back from idle time was lifted to
         * the lowest counter: a tie is no reason to wait a step) */
        if (over < 1 - 1e-9 || t->counter < tw->counter) continue;
        if (best < 0 || over > best_over + 1e-9) {
            best = r, best_over = over;
            continue;
        }
        if (over < best_over - 1e-9) continue;
        const gw_job *b = running[best];
        if (j->preempted != b->preempted ? j->preempted < b->preempted : progress(j) < progress(b))
            best = r;
    }
    return best;
}

static void on_drop(void *state, gw_job *j) {
    gw_fair *f = state;
    tenant *t = j->policy_data;
    if (!t) return;
    pthread_mutex_lock(&f->mu);
    t->waiting--;
    went_idle(f, t);
    pthread_mutex_unlock(&f->mu);
    j->policy_data = NULL;
}

static void on_served(void *state, gw_job *j, int prompt_rows, int gen_tokens) {
    gw_fair *f = state;
    tenant *t = j->policy_data;
    if (!t) return;
    pthread_mutex_lock(&f->mu);
    t->counter += (f->w_prompt * prompt_rows + f->w_gen * gen_tokens) / weight_of(j);
    pthread_mutex_unlock(&f->mu);
}

/* a precedes b: a higher class, then a lower counter, then (a tie: a
 * tenant back from idle time is lifted to the lowest counter) the tenant
 * holding fewer slots for its weight (the engine thread is the only
 * writer, so reading without the lock is safe here) */
static int before(const gw_job *a, const gw_job *b) {
    if (a->priority != b->priority) return a->priority > b->priority;
    const tenant *ta = a->policy_data, *tb = b->policy_data;
    const double ca = ta ? ta->counter : 0, cb = tb ? tb->counter : 0;
    if (ca < cb - 1e-9 || ca > cb + 1e-9) return ca < cb;
    if (!ta || !tb || ta == tb) return 0;
    return ta->running / (ta->weight > 0 ? ta->weight : 1.0) <
           tb->running / (tb->weight > 0 ? tb->weight : 1.0);
}

static int pick(void *state, gw_job *const *waiting, int n) {
    (void)state;
    int best = -1;
    for (int i = 0; i < n; i++) /* strict: ties keep arrival order */
        if (best < 0 || before(waiting[i], waiting[best])) best = i;
    return best;
}

/* A light tenant's prompt (holding at most half its share of the slots
 * while another tenant is active) is prefilled whole in its first step
 * instead of in chunks beside the heavy tenants' decode rows: its first
 * token comes about as soon as if it were alone, at the cost of one longer
 * step for the others. */
static int prefill_whole(void *state, const gw_job *j, int max_seqs) {
    const gw_fair *f = state;
    const tenant *t = j->policy_data;
    if (!t || t == &f->overflow || f->n_active < 2) return 0;
    return 2.0 * t->running <= share_of(f, t, max_seqs) + 1e-9;
}

static double prefill_key(void *state, const gw_job *j) {
    (void)state;
    const tenant *t = j->policy_data;
    /* a higher class first, then the lower counter */
    return -(double)j->priority * 1e15 + (t ? t->counter : 0);
}

int gw_fair_create(gw_fair **out, double w_prompt, double w_gen) {
    *out = NULL;
    if (!(w_prompt > 0) || !(w_gen > 0)) return MOE_EINVAL;
    gw_fair *f = calloc(1, sizeof *f);
    if (!f) return MOE_ENOMEM;
    f->w_prompt = w_prompt, f->w_gen = w_gen;
    pthread_mutex_init(&f->mu, NULL);
    strcpy(f->overflow.name, "(overflow)");
    f->overflow.used = 1;
    f->pol = (gw_policy){.name = "fair",
                         .state = f,
                         .pick = pick,
                         .on_wait = on_wait,
                         .on_admit = on_admit,
                         .on_end = on_end,
                         .on_drop = on_drop,
                         .on_served = on_served,
                         .prefill_key = prefill_key,
                         .prefill_whole = prefill_whole,
                         .victim = victim,
                         .on_preempt = on_preempt};
    *out = f;
    return 0;
}

void gw_fair_free(gw_fair *f) {
    if (!f) return;
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const gw_policy *gw_fair_policy(gw_fair *f) {
    return &f->pol;
}

int gw_fair_snapshot(gw_fair *f, gw_fair_tenant *out, int cap) {
    pthread_mutex_lock(&f->mu);
    int n = 0;
    for (int i = 0; i < FAIR_CAP; i++) {
        const tenant *t = &f->t[i];
        if (t->used != 1) continue;
        if (n < cap) {
            gw_fair_tenant *o = &out[n];
            memcpy(o->name, t->name, sizeof o->name);
            o->counter = t->counter, o->waiting = t->waiting, o->running = t->running;
        }
        n++;
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}
