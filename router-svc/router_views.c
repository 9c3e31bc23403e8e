/* router_views.c - router-svc's HTTP views: /metrics, /v1/scale,
 * /v1/placement, /v1/tenant-load, /healthz (see router.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/topn.h"
#include "router_internal.h"
#include "svc/metrics.h"
#include "svc/strbuf.h"

/* ==== HTTP views ================================================================= */

/* The N busiest experts, for a bounded top-N series. */
#define TOP_N 10

static void set(moe_metric *m, const char *label, double v) {
    moe_metric_set(m, label ? (const char *[]){label} : NULL, v);
}

/* Which tenants heat which experts (router_tload.c): at most
 * RT_TLOAD_TOP_EXPERTS x RT_TLOAD_TOP_TENANTS series. */
static void tload_metrics(const rt_tload_view *v, moe_metrics *reg) {
    moe_metric *sk = moe_metrics_gauge(
        reg, "moemesh_router_tenant_load_skipped",
        "Entries of the tenant load (P:load:<b>:tenants) skipped in the last read, by reason: "
        "field, expert, value (malformed), type (a key not a hash), cap, tenants (over the "
        "bounds).",
        "reason", RT_TLOAD_SKIP_COUNT - 1);
    for (int i = 1; i < RT_TLOAD_SKIP_COUNT; i++)
        set(sk, rt_tload_skip_name(i), (double)v->skipped[i]);
    set(moe_metrics_gauge(reg, "moemesh_router_tenant_load_tenants",
                          "Tenants in the last read of the tenant load.", NULL, 0),
        NULL, v->n_tenants);
    char help[200];
    snprintf(help, sizeof help,
             "Rows each tenant routed to an expert in the last two 10-s load buckets: the %d "
             "tenants with the most rows of each of the %d experts with the most.",
             RT_TLOAD_TOP_TENANTS, RT_TLOAD_TOP_EXPERTS);
    moe_metric *m =
        moe_metrics_gauge(reg, "moemesh_router_expert_tenant_rows", help, "layer,expert,tenant",
                          RT_TLOAD_TOP_EXPERTS * RT_TLOAD_TOP_TENANTS);
    for (int i = 0; i < v->n; i++) {
        char layer[24], expert[24];
        snprintf(layer, sizeof layer, "%d", v->e[i].layer);
        snprintf(expert, sizeof expert, "%d", v->e[i].expert);
        for (int k = 0; k < v->e[i].n_top; k++)
            moe_metric_set(m, (const char *[]){layer, expert, v->e[i].top[k].name},
                           (double)v->e[i].top[k].rows);
    }
}

/* GET /v1/tenant-load: the last read as JSON (names are [A-Za-z0-9._-()]:
 * nothing to escape). */
static void tload_json(const rt_tload_view *v, moe_buf *b) {
    moe_buf_printf(b,
                   "{\"buckets\":[%" PRId64 ",%" PRId64 "],\"tenants\":%d,\"fields\":%zu,"
                   "\"skipped\":{",
                   v->bucket[0], v->bucket[1], v->n_tenants, v->n_fields);
    for (int i = 1; i < RT_TLOAD_SKIP_COUNT; i++)
        moe_buf_printf(b, "%s\"%s\":%" PRIu64, i > 1 ? "," : "", rt_tload_skip_name(i),
                       v->skipped[i]);
    moe_buf_printf(b, "},\"experts\":[");
    for (int i = 0; i < v->n; i++) {
        const rt_tload_expert *e = &v->e[i];
        moe_buf_printf(
            b, "%s{\"layer\":%d,\"expert\":%d,\"rows\":%" PRIu64 ",\"n_tenants\":%d,\"tenants\":[",
            i ? "," : "", e->layer, e->expert, e->rows, e->n_tenants);
        for (int k = 0; k < e->n_top; k++)
            moe_buf_printf(b, "%s[\"%s\",%" PRIu64 "]", k ? "," : "", e->top[k].name,
                           e->top[k].rows);
        moe_buf_printf(b, "]}");
    }
    moe_buf_printf(b, "]}\n");
}

static void metrics(const rs_snap *s, moe_metrics *reg) {
    set(moe_metrics_gauge(reg, "moemesh_router_leader", "1 if this replica leads.", NULL, 0), NULL,
        s->leader);
    set(moe_metrics_gauge(reg, "moemesh_router_redis_up", "1 if Redis answers.", NULL, 0), NULL,
        s->redis_up);
    set(moe_metrics_counter(reg, "moemesh_router_redis_failures_total",
                            "Redis connections lost or refused.", NULL, 0),
        NULL, (double)s->redis_failures);
    moe_metric *workers = moe_metrics_gauge(reg, "moemesh_router_workers",
                                            "Workers with a live lease, by state.", "state", 4);
    set(workers, "serving", s->n_usable - s->n_draining);
    set(workers, "draining", s->n_draining);
    set(workers, "other_model", s->n_other);
    set(workers, "rejected", s->n_rejected);
    moe_metric *rej = moe_metrics_counter(
        reg, "moemesh_router_leases_rejected_total",
        "Leases refused (no experts, acknowledgements not counted), by reason; each worker id "
        "once while it fails the same check.",
        "reason", RT_REJECT_COUNT - 1);
    for (int i = 1; i < RT_REJECT_COUNT; i++) set(rej, rt_reject_name(i), (double)s->rejected[i]);
    set(moe_metrics_gauge(reg, "moemesh_router_workers_wanted",
                          "Workers the load calls for (the autoscaling signal).", NULL, 0),
        NULL, (double)s->workers_wanted);
    set(moe_metrics_gauge(reg, "moemesh_router_epoch", "The active placement epoch.", NULL, 0),
        NULL, (double)s->epoch);
    set(moe_metrics_gauge(reg, "moemesh_router_pending_epoch", "The epoch being loaded (0: none).",
                          NULL, 0),
        NULL, (double)s->pending);
    set(moe_metrics_gauge(reg, "moemesh_router_assignments", "Replicas in the active placement.",
                          NULL, 0),
        NULL, (double)s->n_assignments);
    set(moe_metrics_gauge(reg, "moemesh_router_replicas_short",
                          "Replicas the load wants that memory does not allow.", NULL, 0),
        NULL, (double)s->replicas_short);
    set(moe_metrics_counter(reg, "moemesh_router_rounds_total", "Placement epochs started.", NULL,
                            0),
        NULL, (double)s->rounds);
    set(moe_metrics_counter(reg, "moemesh_router_rounds_abandoned_total",
                            "Epochs abandoned before activation.", NULL, 0),
        NULL, (double)s->rounds_abandoned);
    set(moe_metrics_counter(reg, "moemesh_router_failovers_total",
                            "Epochs started because a worker left.", NULL, 0),
        NULL, (double)s->failovers);
    moe_metric *moves = moe_metrics_counter(reg, "moemesh_router_moves_total",
                                            "Assignments added and removed.", "kind", 2);
    set(moves, "added", (double)s->moves_added);
    set(moves, "removed", (double)s->moves_removed);
    set(moe_metrics_gauge(reg, "moemesh_router_switch_seconds",
                          "The last epoch's pending-to-active time.", NULL, 0),
        NULL, s->last_switch_ms / 1000.0);
    if (s->tload.read) tload_metrics(&s->tload, reg);
    if (!s->load || !s->replicas) return;
    const size_t np = (size_t)s->n_layer * (size_t)s->n_expert;
    /* experts by replica count and by load: histograms, not a series per expert */
    static const double rb[] = {1, 2, 3, 4, 6, 8, 16};
    static const double lb[] = {1, 10, 100, 1000, 10000, 100000};
    moe_metric *reps =
        moe_metrics_histogram(reg, "moemesh_router_expert_replicas", "Experts by replica count.",
                              NULL, 0, rb, (int)(sizeof rb / sizeof *rb));
    moe_metric *load = moe_metrics_histogram(reg, "moemesh_router_expert_load_rows",
                                             "Experts by smoothed load (rows/s).", NULL, 0, lb,
                                             (int)(sizeof lb / sizeof *lb));
    for (size_t i = 0; i < np; i++) {
        if (s->replicas[i] >= 0) moe_metric_observe(reps, NULL, s->replicas[i]);
        if (s->replicas[i] >= 0 || s->load[i] > 0) moe_metric_observe(load, NULL, s->load[i]);
    }
    char help[80];
    snprintf(help, sizeof help, "The %d busiest experts' load (rows/s), by rank.", TOP_N);
    moe_metric *hot = moe_metrics_gauge(reg, "moemesh_router_hot_expert_load_rows", help,
                                        "rank,layer,expert,replicas", TOP_N);
    size_t top[TOP_N];
    const int nt = moe_top_n(s->load, np, top, TOP_N);
    for (int k = 0; k < nt; k++) {
        char rank[16], layer[24], expert[24], replicas[16];
        snprintf(rank, sizeof rank, "%d", k + 1);
        snprintf(layer, sizeof layer, "%zu", top[k] / (size_t)s->n_expert);
        snprintf(expert, sizeof expert, "%zu", top[k] % (size_t)s->n_expert);
        snprintf(replicas, sizeof replicas, "%d", s->replicas[top[k]]);
        moe_metric_set(hot, (const char *[]){rank, layer, expert, replicas}, s->load[top[k]]);
    }
}

/* The /metrics page from a registry filled from the snapshot; 0 or MOE_E*. */
static int render_metrics(const rs_snap *s, moe_buf *b) {
    moe_metrics *reg;
    int rc = moe_metrics_create(&reg);
    if (rc < 0) return rc;
    metrics(s, reg);
    rc = moe_metrics_render(reg, b, NULL);
    moe_metrics_free(reg);
    return rc;
}

int router_render(router *r, const char *path, char **body, const char **content_type) {
    moe_buf b = {.s = malloc(4096), .cap = 4096};
    *body = NULL;
    *content_type = "application/json";
    if (!b.s) return 500;
    int status = 200;
    pthread_mutex_lock(&r->mu);
    const rs_snap *s = &r->st;
    if (!strcmp(path, "/metrics")) {
        *content_type = "text/plain; version=0.0.4";
        if (render_metrics(s, &b) < 0) status = 500;
    } else if (!strcmp(path, "/v1/scale")) {
        moe_buf_printf(&b,
                       "{\"workers_wanted\":%zu,\"workers\":%d,\"draining\":%d,\"epoch\":%" PRIu64
                       ",\"replicas_short\":%zu,\"leader\":%s}\n",
                       s->workers_wanted, s->n_usable, s->n_draining, s->epoch, s->replicas_short,
                       s->leader ? "true" : "false");
    } else if (!strcmp(path, "/v1/placement")) {
        if (s->placement)
            moe_buf_printf(&b, "%s\n", s->placement);
        else
            status = 404, moe_buf_printf(&b, "{\"error\":\"no active placement yet\"}\n");
    } else if (!strcmp(path, "/v1/tenant-load")) {
        if (s->tload.read)
            tload_json(&s->tload, &b);
        else
            status = 404, moe_buf_printf(&b, "{\"error\":\"no tenant load read yet (the "
                                             "leader reads it)\"}\n");
    } else if (!strcmp(path, "/healthz")) {
        *content_type = "text/plain";
        moe_buf_printf(&b, "ok\n");
    } else {
        status = 404;
        moe_buf_printf(&b, "{\"error\":\"not found\"}\n");
    }
    pthread_mutex_unlock(&r->mu);
    if (b.oom) {
        free(b.s);
        return 500;
    }
    *body = b.s;
    return status;
}
