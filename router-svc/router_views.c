/* router_views.c - router-svc's HTTP views: /metrics, /v1/scale,
 * /v1/placement, /healthz (see router.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/topn.h"
#include "router_internal.h"
#include "svc/strbuf.h"

/* ==== HTTP views ================================================================= */

/* The N busiest experts, for a bounded top-N series. */
#define TOP_N 10

static void metrics(const router *r, const rs_snap *s, moe_buf *b) {
    moe_buf_printf(b,
                  "# HELP moemesh_router_leader 1 if this replica leads.\n"
                  "# TYPE moemesh_router_leader gauge\nmoemesh_router_leader %d\n"
                  "# HELP moemesh_router_redis_up 1 if Redis answers.\n"
                  "# TYPE moemesh_router_redis_up gauge\nmoemesh_router_redis_up %d\n"
                  "# HELP moemesh_router_redis_failures_total Redis connections lost or refused.\n"
                  "# TYPE moemesh_router_redis_failures_total counter\n"
                  "moemesh_router_redis_failures_total %" PRIu64 "\n"
                  "# HELP moemesh_router_workers Workers with a live lease, by state.\n"
                  "# TYPE moemesh_router_workers gauge\n"
                  "moemesh_router_workers{state=\"serving\"} %d\n"
                  "moemesh_router_workers{state=\"draining\"} %d\n"
                  "moemesh_router_workers{state=\"other_model\"} %d\n"
                  "# HELP moemesh_router_workers_wanted Workers the load calls for (the "
                  "autoscaling signal).\n"
                  "# TYPE moemesh_router_workers_wanted gauge\n"
                  "moemesh_router_workers_wanted %zu\n"
                  "# HELP moemesh_router_epoch The active placement epoch.\n"
                  "# TYPE moemesh_router_epoch gauge\nmoemesh_router_epoch %" PRIu64 "\n"
                  "# HELP moemesh_router_pending_epoch The epoch being loaded (0: none).\n"
                  "# TYPE moemesh_router_pending_epoch gauge\n"
                  "moemesh_router_pending_epoch %" PRIu64 "\n"
                  "# HELP moemesh_router_assignments Replicas in the active placement.\n"
                  "# TYPE moemesh_router_assignments gauge\nmoemesh_router_assignments %zu\n"
                  "# HELP moemesh_router_replicas_short Replicas the load wants that memory "
                  "does not allow.\n"
                  "# TYPE moemesh_router_replicas_short gauge\n"
                  "moemesh_router_replicas_short %zu\n"
                  "# HELP moemesh_router_rounds_total Placement epochs started.\n"
                  "# TYPE moemesh_router_rounds_total counter\n"
                  "moemesh_router_rounds_total %" PRIu64 "\n"
                  "# HELP moemesh_router_rounds_abandoned_total Epochs abandoned before "
                  "activation.\n"
                  "# TYPE moemesh_router_rounds_abandoned_total counter\n"
                  "moemesh_router_rounds_abandoned_total %" PRIu64 "\n"
                  "# HELP moemesh_router_failovers_total Epochs started because a worker left.\n"
                  "# TYPE moemesh_router_failovers_total counter\n"
                  "moemesh_router_failovers_total %" PRIu64 "\n"
                  "# HELP moemesh_router_moves_total Assignments added and removed.\n"
                  "# TYPE moemesh_router_moves_total counter\n"
                  "moemesh_router_moves_total{kind=\"added\"} %" PRIu64 "\n"
                  "moemesh_router_moves_total{kind=\"removed\"} %" PRIu64 "\n"
                  "# HELP moemesh_router_switch_seconds The last epoch's pending-to-active time.\n"
                  "# TYPE moemesh_router_switch_seconds gauge\n"
                  "moemesh_router_switch_seconds %.3f\n",
                  s->leader, s->redis_up, s->redis_failures, s->n_usable - s->n_draining,
                  s->n_draining, s->n_workers - s->n_usable, s->workers_wanted, s->epoch,
                  s->pending, s->n_assignments, s->replicas_short, s->rounds, s->rounds_abandoned,
                  s->failovers, s->moves_added, s->moves_removed, s->last_switch_ms / 1000.0);
    if (!s->load || !s->replicas) return;
    const size_t np = (size_t)s->n_layer * (size_t)s->n_expert;
    /* experts by replica count and by load: histograms, not a series per expert */
    static const int rb[] = {1, 2, 3, 4, 6, 8, 16};
    static const double lb[] = {1, 10, 100, 1000, 10000, 100000};
    moe_buf_printf(b, "# HELP moemesh_router_expert_replicas Experts by replica count.\n"
                     "# TYPE moemesh_router_expert_replicas histogram\n");
    size_t n = 0, sum = 0;
    for (size_t i = 0; i < np; i++)
        if (s->replicas[i] >= 0) n++, sum += (size_t)s->replicas[i];
    for (size_t k = 0; k < sizeof rb / sizeof *rb; k++) {
        size_t c = 0;
        for (size_t i = 0; i < np; i++) c += s->replicas[i] >= 0 && s->replicas[i] <= rb[k];
        moe_buf_printf(b, "moemesh_router_expert_replicas_bucket{le=\"%d\"} %zu\n", rb[k], c);
    }
    moe_buf_printf(b,
                  "moemesh_router_expert_replicas_bucket{le=\"+Inf\"} %zu\n"
                  "moemesh_router_expert_replicas_sum %zu\nmoemesh_router_expert_replicas_count "
                  "%zu\n",
                  n, sum, n);
    moe_buf_printf(b, "# HELP moemesh_router_expert_load_rows Experts by smoothed load (rows/s).\n"
                     "# TYPE moemesh_router_expert_load_rows histogram\n");
    double lsum = 0;
    size_t ln = 0;
    for (size_t i = 0; i < np; i++)
        if (s->replicas[i] >= 0 || s->load[i] > 0) lsum += s->load[i], ln++;
    for (size_t k = 0; k < sizeof lb / sizeof *lb; k++) {
        size_t c = 0;
        for (size_t i = 0; i < np; i++)
            c += (s->replicas[i] >= 0 || s->load[i] > 0) && s->load[i] <= lb[k];
        moe_buf_printf(b, "moemesh_router_expert_load_rows_bucket{le=\"%g\"} %zu\n", lb[k], c);
    }
    moe_buf_printf(b,
                  "moemesh_router_expert_load_rows_bucket{le=\"+Inf\"} %zu\n"
                  "moemesh_router_expert_load_rows_sum %.3f\n"
                  "moemesh_router_expert_load_rows_count %zu\n",
                  ln, lsum, ln);
    moe_buf_printf(b, "# HELP moemesh_router_hot_expert_load_rows The %d busiest experts' load "
                     "(rows/s), by rank.\n# TYPE moemesh_router_hot_expert_load_rows gauge\n",
                  TOP_N);
    size_t top[TOP_N];
    const int nt = moe_top_n(s->load, np, top, TOP_N);
    for (int k = 0; k < nt; k++)
        moe_buf_printf(b,
                      "moemesh_router_hot_expert_load_rows{rank=\"%d\",layer=\"%zu\",expert=\"%zu\","
                      "replicas=\"%d\"} %.3f\n",
                      k + 1, top[k] / (size_t)s->n_expert, top[k] % (size_t)s->n_expert,
                      s->replicas[top[k]], s->load[top[k]]);
    (void)r;
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
        metrics(r, s, &b);
    } else if (!strcmp(path, "/v1/scale")) {
        moe_buf_printf(&b,
                      "{\"workers_wanted\":%zu,\"workers\":%d,\"draining\":%d,\"epoch\":%" PRIu64
                      ",\"replicas_short\":%zu,\"leader\":%s}\n",
                      s->workers_wanted, s->n_usable, s->n_draining, s->epoch, s->replicas_short,
                      s->leader ? "true" : "false");
    } else if (!strcmp(path, "/v1/placement")) {
        if (s->placement) moe_buf_printf(&b, "%s\n", s->placement);
        else status = 404, moe_buf_printf(&b, "{\"error\":\"no active placement yet\"}\n");
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
