/* router-svc/placement.c - the placement algorithm (see placement.h). */
#include "placement.h"
#include "mesh/schema.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A load within this fraction of a replica above a multiple of target_load
 * counts as that multiple (so 300 / 100 is 3 replicas, not 4 by rounding). */
#define RT_REPLICA_EPS 1e-9

typedef struct {
    uint64_t cap;   /* usable bytes: capacity x (1 - headroom); 0 if not eligible */
    uint64_t bytes; /* bytes placed so far */
    double load;    /* load placed so far */
    int domain;     /* failure domain id */
    int eligible;   /* alive, not draining, cap > 0 */
} pl_worker;

typedef struct {
    int want;   /* replicas planned: load, min/max and the capacity budget */
    int n;      /* replicas held now */
    int slots;  /* room in rep */
    int *rep;   /* (slots) worker indices */
    double lpr; /* load per replica: load / want */
} pl_expert;

typedef struct {
    const char *key;
    int idx;
} pl_name;

typedef struct {
    int32_t layer, expert;
    size_t idx;
} pl_key;

typedef struct {
    double lpr;
    uint64_t bytes;
    size_t idx;
} pl_order;

typedef struct {
    const rt_worker *workers;
    size_t nw;
    const rt_expert *experts;
    size_t ne;
    const rt_place_params *p;
    const rt_placement *prev;
    pl_worker *w;       /* (nw) */
    pl_expert *e;       /* (ne) */
    int *pool;          /* replica slots of every expert */
    int *prev_widx;     /* (prev->n_workers) current index of a previous worker, or -1 */
    size_t *prev_eidx;  /* (prev->n_experts) current index of a previous expert, or SIZE_MAX */
    size_t *order;      /* (ne) experts, heaviest first */
    double B, L, C;     /* planned bytes, total load, usable capacity (for scores) */
    size_t short_count; /* replicas that did not fit */
} pl_ctx;

/* ==== Helpers ==== */

static int cmp_name(const void *a, const void *b) {
    const pl_name *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* by (layer, expert) alone: find_key's comparison */
static int cmp_layer_expert(const void *a, const void *b) {
    const pl_key *x = a, *y = b;
    if (x->layer != y->layer) return x->layer < y->layer ? -1 : 1;
    return (x->expert > y->expert) - (x->expert < y->expert);
}

static int cmp_key(const void *a, const void *b) {
    const pl_key *x = a, *y = b;
    const int c = cmp_layer_expert(a, b);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

/* heaviest first: load per replica, then bytes, then index */
static int cmp_order(const void *a, const void *b) {
    const pl_order *x = a, *y = b;
    if (x->lpr != y->lpr) return x->lpr > y->lpr ? -1 : 1;
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* ceil(load / target) clamped to [lo, hi] (hi < 0: no upper limit), as an int */
static int replicas_for(double load, double target, int lo, int hi) {
    double r = ceil(load / target - RT_REPLICA_EPS);
    if (hi >= 0 && r > hi) r = hi;
    if (r > INT_MAX / 2) r = INT_MAX / 2;
    if (r < lo) r = lo;
    return (int)r;
}

/* the worker's share of bytes and load over its share of capacity, after
 * adding add_b bytes and add_l load */
static double pl_score(const pl_ctx *c, const pl_worker *w, uint64_t add_b, double add_l) {
    double share = (double)(w->bytes + add_b) / c->B;
    if (c->L > 0) {
        double lw = c->p->load_weight;
        share = (1 - lw) * share + lw * ((w->load + add_l) / c->L);
    }
    return share / ((double)w->cap / c->C);
}

static int holds(const pl_expert *e, int wi) {
    for (int k = 0; k < e->n; k++)
        if (e->rep[k] == wi) return 1;
    return 0;
}

static int domain_used(const pl_ctx *c, const pl_expert *e, int domain) {
    for (int k = 0; k < e->n; k++)
        if (c->w[e->rep[k]].domain == domain) return 1;
    return 0;
}

static void pl_add(pl_ctx *c, size_t ei, int wi) {
    pl_expert *e = &c->e[ei];
    MOE_ASSERT(e->n < e->slots);
    e->rep[e->n++] = wi;
    c->w[wi].bytes += c->experts[ei].bytes;
    c->w[wi].load += e->lpr;
}

static void pl_remove(pl_ctx *c, size_t ei, int k) {
    pl_expert *e = &c->e[ei];
    int wi = e->rep[k];
    c->w[wi].bytes -= c->experts[ei].bytes;
    c->w[wi].load -= e->lpr;
    e->rep[k] = e->rep[--e->n];
}

/* Places one more replica of expert ei; returns the worker or -1 if none has room. */
static int pl_place_one(pl_ctx *c, size_t ei) {
    const pl_expert *e = &c->e[ei];
    uint64_t b = c->experts[ei].bytes;
    int best = -1, best_tier = 0;
    double best_score = 0;
    for (size_t i = 0; i < c->nw; i++) {
        const pl_worker *w = &c->w[i];
        if (!w->eligible || w->cap - w->bytes < b || holds(e, (int)i)) continue;
        int tier = domain_used(c, e, w->domain);
        double s = pl_score(c, w, b, e->lpr);
        if (best < 0 || tier < best_tier || (tier == best_tier && s < best_score)) {
            best = (int)i;
            best_tier = tier;
            best_score = s;
        }
    }
    if (best >= 0) pl_add(c, ei, best);
    return best;
}

/* ==== The layout: keep, trim, place ==== */

static int pl_layout(pl_ctx *c, int use_prev, moe_err *err) {
    const rt_place_params *p = c->p;
    for (size_t i = 0; i < c->nw; i++) c->w[i].bytes = 0, c->w[i].load = 0;
    for (size_t i = 0; i < c->ne; i++) c->e[i].n = 0;
    c->short_count = 0;

    /* keep the previous assignments on eligible workers */
    if (use_prev && c->prev) {
        for (size_t pi = 0; pi < c->prev->n_experts; pi++) {
            size_t ei = c->prev_eidx[pi];
            if (ei == SIZE_MAX) continue;
            const rt_placement_expert *pe = &c->prev->experts[pi];
            for (int k = 0; k < pe->n_replicas; k++) {
                int r = pe->replicas[k];
                if (r < 0 || (size_t)r >= c->prev->n_workers) continue;
                int wi = c->prev_widx[r];
                if (wi < 0 || !c->w[wi].eligible || holds(&c->e[ei], wi)) continue;
                pl_add(c, ei, wi);
            }
        }
        /* a worker over its (new) capacity sheds replicas of its most
         * replicated, then least loaded experts */
        for (size_t wi = 0; wi < c->nw; wi++) {
            while (c->w[wi].bytes > c->w[wi].cap) {
                size_t victim = SIZE_MAX;
                int vk = -1;
                for (size_t ei = 0; ei < c->ne; ei++) {
                    const pl_expert *e = &c->e[ei];
                    for (int k = 0; k < e->n; k++) {
                        if (e->rep[k] != (int)wi) continue;
                        if (victim == SIZE_MAX || e->n > c->e[victim].n ||
                            (e->n == c->e[victim].n && e->lpr < c->e[victim].lpr)) {
                            victim = ei;
                            vk = k;
                        }
                    }
                }
                MOE_ASSERT(victim != SIZE_MAX);
                pl_remove(c, victim, vk);
            }
        }
        /* replicas no longer wanted leave the busiest workers first */
        for (size_t ei = 0; ei < c->ne; ei++) {
            pl_expert *e = &c->e[ei];
            while (e->n > e->want) {
                int bk = 0;
                double bs = pl_score(c, &c->w[e->rep[0]], 0, 0);
                for (int k = 1; k < e->n; k++) {
                    double s = pl_score(c, &c->w[e->rep[k]], 0, 0);
                    if (s > bs || (s == bs && e->rep[k] < e->rep[bk])) bk = k, bs = s;
                }
                pl_remove(c, ei, bk);
            }
        }
    }

    /* min_replicas of every expert first, heaviest first */
    for (size_t oi = 0; oi < c->ne; oi++) {
        size_t ei = c->order[oi];
        while (c->e[ei].n < p->min_replicas) {
            if (pl_place_one(c, ei) >= 0) continue;
            uint64_t largest = 0;
            for (size_t i = 0; i < c->nw; i++)
                if (c->w[i].eligible && !holds(&c->e[ei], (int)i) &&
                    c->w[i].cap - c->w[i].bytes > largest)
                    largest = c->w[i].cap - c->w[i].bytes;
            return moe_err_set(err, MOE_ENOSPC,
                               "expert (layer %d, expert %d) needs %llu bytes for replica %d of "
                               "min_replicas %d, but the largest free space on an eligible worker "
                               "without it is %llu bytes",
                               c->experts[ei].layer, c->experts[ei].expert,
                               (unsigned long long)c->experts[ei].bytes, c->e[ei].n + 1,
                               p->min_replicas, (unsigned long long)largest);
        }
    }
    /* then the extra replicas of hot experts */
    for (size_t oi = 0; oi < c->ne; oi++) {
        size_t ei = c->order[oi];
        while (c->e[ei].n < c->e[ei].want) {
            if (pl_place_one(c, ei) < 0) {
                c->short_count += (size_t)(c->e[ei].want - c->e[ei].n);
                break;
            }
        }
    }
    return 0;
}

/* ==== Replica counts ==== */

/* A max-heap of experts by the load one more replica would take off each
 * replica (load / current count); ties to the lower index. */
typedef struct {
    double prio;
    size_t idx;
} pl_heap_item;

static int heap_before(const pl_heap_item *a, const pl_heap_item *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->idx < b->idx);
}

static void heap_push(pl_heap_item *h, size_t *n, pl_heap_item it) {
    size_t i = (*n)++;
    h[i] = it;
    while (i > 0 && heap_before(&h[i], &h[(i - 1) / 2])) {
        pl_heap_item t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

static pl_heap_item heap_pop(pl_heap_item *h, size_t *n) {
    pl_heap_item top = h[0];
    h[0] = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && heap_before(&h[l], &h[m])) m = l;
        if (r < *n && heap_before(&h[r], &h[m])) m = r;
        if (m == i) break;
        pl_heap_item t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
    return top;
}

/* Sets c->e[*].want: the load's replica counts within the usable capacity. */
static int pl_plan(pl_ctx *c, size_t n_eligible, moe_err *err) {
    const rt_place_params *p = c->p;
    int hi = p->max_replicas > 0 && (size_t)p->max_replicas < n_eligible ? p->max_replicas
                                                                         : (int)n_eligible;
    double need_min = 0;
    for (size_t i = 0; i < c->ne; i++) need_min += (double)p->min_replicas * c->experts[i].bytes;
    if (need_min > c->C) {
        return moe_err_set(err, MOE_ENOSPC,
                           "min_replicas %d of %zu experts needs %.0f bytes, but the %zu eligible "
                           "workers have %.0f usable bytes (capacity less %.0f%% headroom)",
                           p->min_replicas, c->ne, need_min, n_eligible, c->C, p->headroom * 100);
    }
    double budget = c->C - need_min;
    pl_heap_item *h = malloc((c->ne ? c->ne : 1) * sizeof *h);
    if (!h) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    size_t hn = 0;
    int *goal = malloc((c->ne ? c->ne : 1) * sizeof *goal);
    if (!goal) {
        free(h);
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < c->ne; i++) {
        goal[i] = replicas_for(c->experts[i].load, p->target_load, p->min_replicas, hi);
        c->e[i].want = p->min_replicas;
        if (goal[i] > c->e[i].want)
            heap_push(h, &hn, (pl_heap_item){c->experts[i].load / c->e[i].want, i});
    }
    while (hn > 0) {
        pl_heap_item it = heap_pop(h, &hn);
        double b = (double)c->experts[it.idx].bytes;
        if (b > budget) continue; /* the budget only shrinks: never fits again */
        budget -= b;
        pl_expert *e = &c->e[it.idx];
        e->want++;
        if (e->want < goal[it.idx])
            heap_push(h, &hn, (pl_heap_item){c->experts[it.idx].load / e->want, it.idx});
    }
    for (size_t i = 0; i < c->ne; i++) c->short_count += (size_t)(goal[i] - c->e[i].want);
    free(goal);
    free(h);
    return 0;
}

/* The autoscaling signal (formula in placement.h). */
static size_t pl_workers_wanted(const pl_ctx *c) {
    const rt_place_params *p = c->p;
    if (c->ne == 0) return 0;
    int hi = p->max_replicas > 0 ? p->max_replicas : -1;
    double bytes = 0, load = 0;
    int rmax = 0;
    for (size_t i = 0; i < c->ne; i++) {
        int r = replicas_for(c->experts[i].load, p->target_load, p->min_replicas, hi);
        bytes += (double)r * c->experts[i].bytes;
        load += c->experts[i].load;
        if (r > rmax) rmax = r;
    }
    /* mean usable capacity of the alive workers (else of all workers) */
    double cap = 0;
    size_t n = 0;
    for (int pass = 0; pass < 2 && n == 0; pass++) {
        for (size_t i = 0; i < c->nw; i++) {
            const rt_worker *w = &c->workers[i];
            if (pass == 0 && (!w->alive || w->draining)) continue;
            if (w->capacity_bytes == 0) continue;
            cap += floor((double)w->capacity_bytes * (1 - p->headroom));
            n++;
        }
    }
    double want = rmax;
    if (n > 0 && cap > 0) {
        double by_mem = ceil(bytes / (cap / (double)n) * (1 - 1e-12));
        if (by_mem > want) want = by_mem;
    }
    if (p->worker_max_load > 0) {
        double by_load = ceil(load / p->worker_max_load - RT_REPLICA_EPS);
        if (by_load > want) want = by_load;
    }
    return want > (double)(SIZE_MAX / 2) ? SIZE_MAX / 2 : (size_t)want;
}

/* ==== Validation ==== */

static int pl_check(const rt_worker *workers, size_t nw, const rt_expert *experts, size_t ne,
                    const rt_place_params *p, moe_err *err) {
    if ((nw && !workers) || (ne && !experts) || !p)
        return moe_err_set(err, MOE_EINVAL, "NULL workers, experts or params");
    if (nw > INT_MAX / 2) return moe_err_set(err, MOE_EINVAL, "%zu workers: too many", nw);
    if (p->min_replicas < 1)
        return moe_err_set(err, MOE_EINVAL, "min_replicas %d must be >= 1", p->min_replicas);
    if (p->max_replicas != 0 && p->max_replicas < p->min_replicas)
        return moe_err_set(err, MOE_EINVAL, "max_replicas %d must be 0 or >= min_replicas %d",
                           p->max_replicas, p->min_replicas);
    if (!(p->headroom >= 0 && p->headroom < 1))
        return moe_err_set(err, MOE_EINVAL, "headroom %g must be in [0, 1)", p->headroom);
    if (!(p->target_load > 0 && isfinite(p->target_load)))
        return moe_err_set(err, MOE_EINVAL, "target_load %g must be finite and > 0",
                           p->target_load);
    if (!(p->load_weight >= 0 && p->load_weight <= 1))
        return moe_err_set(err, MOE_EINVAL, "load_weight %g must be in [0, 1]", p->load_weight);
    if (!(p->worker_max_load >= 0 && isfinite(p->worker_max_load)))
        return moe_err_set(err, MOE_EINVAL, "worker_max_load %g must be finite and >= 0",
                           p->worker_max_load);
    for (size_t i = 0; i < nw; i++)
        if (!workers[i].id || !workers[i].id[0])
            return moe_err_set(err, MOE_EINVAL, "worker %zu has no id", i);
    for (size_t i = 0; i < ne; i++)
        if (!(experts[i].load >= 0 && isfinite(experts[i].load)))
            return moe_err_set(err, MOE_ENUMERIC,
                               "expert (layer %d, expert %d) has load %g: must be finite, >= 0",
                               experts[i].layer, experts[i].expert, experts[i].load);
    return 0;
}

/* ==== rt_placement ==== */

int rt_placement_from_lists(rt_placement **out, uint64_t epoch, char *const *ids, size_t n_workers,
                            const rt_placement_expert *experts, size_t n_experts) {
    *out = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n_experts; i++) {
        if (experts[i].n_replicas < 0) return MOE_EINVAL;
        for (int k = 0; k < experts[i].n_replicas; k++)
            if (experts[i].replicas[k] < 0 || (size_t)experts[i].replicas[k] >= n_workers)
                return MOE_EINVAL;
        total += (size_t)experts[i].n_replicas;
    }
    rt_placement *pl = calloc(1, sizeof *pl);
    if (!pl) return MOE_ENOMEM;
    pl->epoch = epoch;
    pl->n_workers = n_workers;
    pl->n_experts = n_experts;
    pl->n_assignments = total;
    pl->worker_ids = calloc(n_workers + 1, sizeof *pl->worker_ids);
    pl->worker_bytes = calloc(n_workers + 1, sizeof *pl->worker_bytes);
    pl->worker_load = calloc(n_workers + 1, sizeof *pl->worker_load);
    pl->experts = calloc(n_experts + 1, sizeof *pl->experts);
    int *block = malloc((total + 1) * sizeof *block);
    if (!pl->worker_ids || !pl->worker_bytes || !pl->worker_load || !pl->experts || !block) {
        free(block);
        rt_placement_free(pl);
        return MOE_ENOMEM;
    }
    pl->experts[0].replicas = block; /* freed through experts[0] */
    for (size_t i = 0; i < n_workers; i++)
        if (!(pl->worker_ids[i] = strdup(ids[i]))) {
            rt_placement_free(pl);
            return MOE_ENOMEM;
        }
    for (size_t i = 0, off = 0; i < n_experts; i++) {
        pl->experts[i] = experts[i];
        pl->experts[i].replicas = block + off;
        memcpy(block + off, experts[i].replicas, (size_t)experts[i].n_replicas * sizeof *block);
        qsort(block + off, (size_t)experts[i].n_replicas, sizeof *block, cmp_int);
        off += (size_t)experts[i].n_replicas;
    }
    *out = pl;
    return 0;
}

void rt_placement_free(rt_placement *pl) {
    if (!pl) return;
    if (pl->worker_ids)
        for (size_t i = 0; i < pl->n_workers; i++) free(pl->worker_ids[i]);
    free(pl->worker_ids);
    free(pl->worker_bytes);
    free(pl->worker_load);
    if (pl->experts) free(pl->experts[0].replicas); /* one block for all experts */
    free(pl->experts);
    free(pl);
}

/* bsearch's comparison of a worker id with a sorted entry */
static int cmp_id_name(const void *id, const void *name) {
    return strcmp(id, ((const pl_name *)name)->key);
}

/* The index of worker id key in sorted[0..n) (ids unique), or -1. */
static int find_name(const pl_name *sorted, size_t n, const char *key) {
    const pl_name *p = bsearch(key, sorted, n, sizeof *sorted, cmp_id_name);
    return p ? p->idx : -1;
}

/* The index of expert (layer, expert) in sorted[0..n) (unique), or SIZE_MAX. */
static size_t find_key(const pl_key *sorted, size_t n, int32_t layer, int32_t expert) {
    const pl_key want = {layer, expert, 0};
    const pl_key *p = bsearch(&want, sorted, n, sizeof *sorted, cmp_layer_expert);
    return p ? p->idx : SIZE_MAX;
}

int rt_placement_compute(rt_placement **out, const rt_worker *workers, size_t n_workers,
                         const rt_expert *experts, size_t n_experts, const rt_place_params *params,
                         const rt_placement *prev, moe_err *err) {
    if (!out) return moe_err_set(err, MOE_EINVAL, "NULL out");
    *out = NULL;
    int rc = pl_check(workers, n_workers, experts, n_experts, params, err);
    if (rc < 0) return rc;

    pl_ctx c = {.workers = workers,
                .nw = n_workers,
                .experts = experts,
                .ne = n_experts,
                .p = params,
                .prev = prev};
    pl_name *names = NULL, *domains = NULL;
    pl_key *keys = NULL;
    pl_order *ord = NULL;
    rt_placement *pl = NULL;
    size_t nw1 = n_workers ? n_workers : 1, ne1 = n_experts ? n_experts : 1;

    names = malloc(nw1 * sizeof *names);
    domains = malloc(nw1 * sizeof *domains);
    keys = malloc(ne1 * sizeof *keys);
    ord = malloc(ne1 * sizeof *ord);
    c.w = calloc(nw1, sizeof *c.w);
    c.e = calloc(ne1, sizeof *c.e);
    c.order = malloc(ne1 * sizeof *c.order);
    if (!names || !domains || !keys || !ord || !c.w || !c.e || !c.order) goto nomem;

    /* worker ids: unique; domains: ids by name, "" or NULL a domain of its own */
    for (size_t i = 0; i < n_workers; i++) names[i] = (pl_name){workers[i].id, (int)i};
    qsort(names, n_workers, sizeof *names, cmp_name);
    for (size_t i = 1; i < n_workers; i++)
        if (!strcmp(names[i].key, names[i - 1].key)) {
            rc = moe_err_set(err, MOE_EINVAL, "duplicate worker id '%s'", names[i].key);
            goto done;
        }
    size_t nd = 0;
    for (size_t i = 0; i < n_workers; i++)
        if (workers[i].domain && workers[i].domain[0])
            domains[nd++] = (pl_name){workers[i].domain, (int)i};
    qsort(domains, nd, sizeof *domains, cmp_name);
    int next_domain = 0;
    for (size_t i = 0; i < nd; i++) {
        if (i > 0 && strcmp(domains[i].key, domains[i - 1].key)) next_domain++;
        c.w[domains[i].idx].domain = next_domain;
    }
    if (nd) next_domain++;
    for (size_t i = 0; i < n_workers; i++)
        if (!workers[i].domain || !workers[i].domain[0]) c.w[i].domain = next_domain++;

    /* experts: unique (layer, expert) */
    for (size_t i = 0; i < n_experts; i++)
        keys[i] = (pl_key){experts[i].layer, experts[i].expert, i};
    qsort(keys, n_experts, sizeof *keys, cmp_key);
    for (size_t i = 1; i < n_experts; i++)
        if (keys[i].layer == keys[i - 1].layer && keys[i].expert == keys[i - 1].expert) {
            rc = moe_err_set(err, MOE_EINVAL, "duplicate expert (layer %d, expert %d)",
                             keys[i].layer, keys[i].expert);
            goto done;
        }

    /* eligible workers and usable capacity */
    size_t n_eligible = 0;
    for (size_t i = 0; i < n_workers; i++) {
        pl_worker *w = &c.w[i];
        w->cap = (uint64_t)floor((double)workers[i].capacity_bytes * (1 - params->headroom));
        w->eligible = workers[i].alive && !workers[i].draining && w->cap > 0;
        if (!w->eligible) w->cap = 0;
        n_eligible += (size_t)w->eligible;
        c.C += (double)w->cap;
    }
    if (n_experts > 0 && n_eligible < (size_t)params->min_replicas) {
        rc = moe_err_set(err, MOE_ENOSPC,
                         "min_replicas %d needs %d distinct workers, but %zu of %zu are alive, "
                         "not draining and have capacity",
                         params->min_replicas, params->min_replicas, n_eligible, n_workers);
        goto done;
    }

    rc = pl_plan(&c, n_eligible, err);
    if (rc < 0) goto done;

    /* replica slots: room for the planned count or the previous one */
    if (prev) {
        c.prev_widx = malloc((prev->n_workers ? prev->n_workers : 1) * sizeof *c.prev_widx);
        c.prev_eidx = malloc((prev->n_experts ? prev->n_experts : 1) * sizeof *c.prev_eidx);
        if (!c.prev_widx || !c.prev_eidx) goto nomem;
        for (size_t i = 0; i < prev->n_workers; i++)
            c.prev_widx[i] = find_name(names, n_workers, prev->worker_ids[i]);
        for (size_t i = 0; i < prev->n_experts; i++) {
            size_t ei = find_key(keys, n_experts, prev->experts[i].layer, prev->experts[i].expert);
            c.prev_eidx[i] = ei;
            if (ei != SIZE_MAX && prev->experts[i].n_replicas > c.e[ei].slots)
                c.e[ei].slots = prev->experts[i].n_replicas;
        }
    }
    size_t pool_n = 0;
    c.B = 0;
    for (size_t i = 0; i < n_experts; i++) {
        pl_expert *e = &c.e[i];
        if (e->slots < e->want) e->slots = e->want;
        pool_n += (size_t)e->slots;
        e->lpr = experts[i].load / e->want;
        c.B += (double)e->want * experts[i].bytes;
        c.L += experts[i].load;
    }
    if (c.B <= 0) c.B = 1;
    c.pool = malloc((pool_n ? pool_n : 1) * sizeof *c.pool);
    if (!c.pool) goto nomem;
    for (size_t i = 0, off = 0; i < n_experts; i++) {
        c.e[i].rep = c.pool + off;
        off += (size_t)c.e[i].slots;
    }

    for (size_t i = 0; i < n_experts; i++) ord[i] = (pl_order){c.e[i].lpr, experts[i].bytes, i};
    qsort(ord, n_experts, sizeof *ord, cmp_order);
    for (size_t i = 0; i < n_experts; i++) c.order[i] = ord[i].idx;

    size_t planned_short = c.short_count;
    rc = pl_layout(&c, 1, err);
    int fresh = 0;
    if (rc == MOE_ENOSPC && prev) { /* a fresh layout may fit */
        fresh = 1;
        rc = pl_layout(&c, 0, err);
    }
    if (rc < 0) goto done;
    c.short_count += planned_short;

    /* the result */
    pl = calloc(1, sizeof *pl);
    if (!pl) goto nomem;
    pl->n_workers = n_workers;
    pl->n_experts = n_experts;
    pl->worker_ids = calloc(nw1, sizeof *pl->worker_ids);
    pl->worker_bytes = calloc(nw1, sizeof *pl->worker_bytes);
    pl->worker_load = calloc(nw1, sizeof *pl->worker_load);
    pl->experts = calloc(ne1, sizeof *pl->experts);
    size_t total = 0;
    for (size_t i = 0; i < n_experts; i++) total += (size_t)c.e[i].n;
    int *block = malloc((total ? total : 1) * sizeof *block);
    if (!pl->worker_ids || !pl->worker_bytes || !pl->worker_load || !pl->experts || !block) {
        free(block);
        goto nomem;
    }
    pl->experts[0].replicas = block; /* freed through experts[0] */
    for (size_t i = 0; i < n_workers; i++) {
        size_t len = strlen(workers[i].id) + 1;
        pl->worker_ids[i] = malloc(len);
        if (!pl->worker_ids[i]) goto nomem;
        memcpy(pl->worker_ids[i], workers[i].id, len);
    }
    for (size_t i = 0, off = 0; i < n_experts; i++) {
        rt_placement_expert *pe = &pl->experts[i];
        const pl_expert *e = &c.e[i];
        pe->layer = experts[i].layer;
        pe->expert = experts[i].expert;
        pe->n_replicas = e->n;
        pe->replicas = block + off;
        memcpy(pe->replicas, e->rep, (size_t)e->n * sizeof *e->rep);
        qsort(pe->replicas, (size_t)e->n, sizeof *pe->replicas, cmp_int);
        off += (size_t)e->n;
        for (int k = 0; k < e->n; k++) {
            pl->worker_bytes[e->rep[k]] += experts[i].bytes;
            pl->worker_load[e->rep[k]] += experts[i].load / e->n;
        }
    }
    pl->n_assignments = total;
    pl->replicas_short = c.short_count;
    pl->workers_wanted = pl_workers_wanted(&c);
    pl->fresh_layout = fresh;

    /* moves against the previous placement, by worker id and (layer, expert) */
    size_t common = 0, prev_total = 0;
    if (prev) {
        for (size_t pi = 0; pi < prev->n_experts; pi++) {
            const rt_placement_expert *pe = &prev->experts[pi];
            prev_total += (size_t)pe->n_replicas;
            size_t ei = c.prev_eidx[pi];
            if (ei == SIZE_MAX) continue;
            for (int k = 0; k < pe->n_replicas; k++) {
                int r = pe->replicas[k];
                if (r < 0 || (size_t)r >= prev->n_workers || c.prev_widx[r] < 0) continue;
                if (holds(&c.e[ei], c.prev_widx[r])) common++;
            }
        }
    }
    pl->moves_added = total - common;
    pl->moves_removed = prev_total - common;
    if (!prev)
        pl->epoch = 1;
    else
        pl->epoch = prev->epoch + (pl->moves_added || pl->moves_removed);
    *out = pl;
    pl = NULL;
    rc = 0;
    goto done;

nomem:
    rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
done:
    rt_placement_free(pl);
    free(c.pool);
    free(c.prev_eidx);
    free(c.prev_widx);
    free(c.order);
    free(c.e);
    free(c.w);
    free(ord);
    free(keys);
    free(domains);
    free(names);
    return rc;
}

/* ==== The placement document ==== */

int rt_placement_doc(const rt_placement *pl, const char *model, const char *const *addrs,
                     char **out, moe_err *err) {
    *out = NULL;
    size_t n_reps = 0;
    for (size_t i = 0; i < pl->n_experts; i++) n_reps += (size_t)pl->experts[i].n_replicas;
    int *widx = malloc((pl->n_workers + 1) * sizeof *widx); /* pl's index -> the document's */
    char **ids = calloc(pl->n_workers + 1, sizeof *ids);
    char **as = calloc(pl->n_workers + 1, sizeof *as);
    moe_pldoc_expert *ex = calloc(pl->n_experts + 1, sizeof *ex);
    int *reps = calloc(n_reps + 1, sizeof *reps);
    moe_pldoc d = {.epoch = pl->epoch,
                   .model = (char *)model,
                   .ids = ids,
                   .addrs = as,
                   .n_experts = pl->n_experts,
                   .experts = ex};
    int rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
    if (!widx || !ids || !as || !ex || !reps) goto done;
    for (size_t i = 0; i < pl->n_workers; i++) widx[i] = -1;
    for (size_t i = 0; i < pl->n_experts; i++)
        for (int k = 0; k < pl->experts[i].n_replicas; k++) {
            const int w = pl->experts[i].replicas[k];
            if (w < 0 || (size_t)w >= pl->n_workers) {
                rc = moe_err_set(err, MOE_EINVAL, "placement: replica %d is no worker", w);
                goto done;
            }
            widx[w] = 0;
        }
    for (size_t i = 0; i < pl->n_workers; i++) { /* only workers with an assignment */
        if (widx[i] < 0) continue;
        widx[i] = d.n_workers;
        ids[d.n_workers] = pl->worker_ids[i];
        as[d.n_workers] = (char *)addrs[i]; /* NULL or "": the writer refuses it */
        d.n_workers++;
    }
    size_t r = 0;
    for (size_t i = 0; i < pl->n_experts; i++) {
        const rt_placement_expert *e = &pl->experts[i];
        ex[i] = (moe_pldoc_expert){e->layer, e->expert, e->n_replicas, reps + r};
        for (int k = 0; k < e->n_replicas; k++) reps[r++] = widx[e->replicas[k]];
    }
    rc = moe_pldoc_write(&d, out, err);
done:
    free(widx), free(ids), free(as), free(ex), free(reps);
    return rc;
}
