/* metrics.c - the expert worker's admin HTTP: /metrics, /healthz (see metrics.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "svc/metrics.h"
#include "svc/strbuf.h"
#include "svc/topn.h"

#define TOP_N 10

static double ld(const uint64_t *p) {
    return (double)__atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Fills a fresh registry from the counters and the state (one per scrape:
 * the per-expert histogram is a distribution of now, not an accumulation). */
static void fill(const ew_metrics *m, moe_metrics *reg) {
    const ew_counters *k = m->counters;
    const moe_hparams *hp = &m->model->hp;
    const size_t np = (size_t)hp->n_layer * (size_t)hp->n_expert;
    int held = 0;
    uint64_t bytes = 0;
    for (int l = 0; l < hp->n_layer; l++)
        for (int e = 0; e < hp->n_expert; e++)
            if (moe_slice_has(m->slice, l, e)) held++, bytes += moe_expert_bytes(m->model, l);
    moe_metric_set(moe_metrics_counter(reg, "moemesh_worker_batches_total",
                                       "Forward batches computed.", NULL, 0),
                   NULL, ld(&k->batches));
    moe_metric_set(
        moe_metrics_counter(reg, "moemesh_worker_rows_total", "Token rows computed.", NULL, 0),
        NULL, ld(&k->rows));
    moe_metric_set(moe_metrics_counter(reg, "moemesh_worker_refused_total",
                                       "Batches naming an expert this worker does not hold.", NULL,
                                       0),
                   NULL, ld(&k->refused));
    moe_metric_set(moe_metrics_counter(reg, "moemesh_worker_errors_total",
                                       "Malformed batches and compute errors.", NULL, 0),
                   NULL, ld(&k->errors));
    moe_metric_set(moe_metrics_counter(reg, "moemesh_worker_unknown_calls_total",
                                       "Calls to methods the worker does not serve "
                                       "(answered UNIMPLEMENTED).",
                                       NULL, 0),
                   NULL, ld(&k->unknown_calls));
    moe_metric_set(moe_metrics_gauge(reg, "moemesh_worker_grpc_connections",
                                     "TCP connections to the gRPC port (counted every 100 ms).",
                                     NULL, 0),
                   NULL, ld(&k->conns_open));
    moe_metric_set(moe_metrics_counter(reg, "moemesh_worker_grpc_connections_cut_total",
                                       "Connections shut down beyond --max-connections.", NULL, 0),
                   NULL, ld(&k->conns_cut));
    moe_metric_set(moe_metrics_gauge(reg, "moemesh_worker_experts_held",
                                     "(layer, expert) pairs held now.", NULL, 0),
                   NULL, held);
    moe_metric_set(moe_metrics_gauge(reg, "moemesh_worker_expert_bytes_held",
                                     "Weight bytes of the experts held.", NULL, 0),
                   NULL, (double)bytes);
    ew_registry *r = __atomic_load_n(&m->reg, __ATOMIC_ACQUIRE);
    if (r) {
        ew_registry_stats rs = ew_registry_get_stats(r);
        moe_metric *epoch =
            moe_metrics_gauge(reg, "moemesh_worker_epoch",
                              "Placement epochs: the newest loaded, the active one.", "kind", 2);
        moe_metric_set(epoch, (const char *[]){"acked"}, (double)rs.epoch_acked);
        moe_metric_set(epoch, (const char *[]){"active"}, (double)rs.epoch_active);
        moe_metric *changes = moe_metrics_counter(reg, "moemesh_worker_expert_changes_total",
                                                  "Experts loaded and dropped.", "kind", 2);
        moe_metric_set(changes, (const char *[]){"load"}, (double)rs.loads);
        moe_metric_set(changes, (const char *[]){"drop"}, (double)rs.unloads);
        moe_metric_set(
            moe_metrics_gauge(reg, "moemesh_worker_redis_up", "1 if Redis answers.", NULL, 0), NULL,
            rs.redis_up);
    }
    moe_httpd_metrics(__atomic_load_n(&m->admin, __ATOMIC_ACQUIRE), reg, "moemesh_worker");
    if (!k->expert_rows) return;
    /* rows per held expert as a histogram, and the busiest by rank: bounded */
    double *rows = calloc(np + 1, sizeof *rows);
    if (!rows) return;
    static const double le[] = {0, 100, 1e3, 1e4, 1e5, 1e6, 1e7};
    moe_metric *hist = moe_metrics_histogram(reg, "moemesh_worker_expert_rows",
                                             "Experts (held or served) by rows served.", NULL, 0,
                                             le, (int)(sizeof le / sizeof *le));
    for (size_t i = 0; i < np; i++) {
        rows[i] = ld(&k->expert_rows[i]);
        if (rows[i] > 0 || moe_slice_has(m->slice, (int)(i / (size_t)hp->n_expert),
                                         (int)(i % (size_t)hp->n_expert)))
            moe_metric_observe(hist, NULL, rows[i]);
    }
    size_t top[TOP_N];
    const int nt = moe_top_n(rows, np, top, TOP_N);
    char help[80];
    snprintf(help, sizeof help, "The %d experts that served the most rows.", TOP_N);
    moe_metric *hot =
        moe_metrics_gauge(reg, "moemesh_worker_hot_expert_rows", help, "rank,layer,expert", TOP_N);
    for (int j = 0; j < nt; j++) {
        char rank[16], layer[24], expert[24];
        snprintf(rank, sizeof rank, "%d", j + 1);
        snprintf(layer, sizeof layer, "%zu", top[j] / (size_t)hp->n_expert);
        snprintf(expert, sizeof expert, "%zu", top[j] % (size_t)hp->n_expert);
        moe_metric_set(hot, (const char *[]){rank, layer, expert}, rows[top[j]]);
    }
    free(rows);
}

void ew_metrics_http(void *ud, const moe_http_req *req, moe_http_resp *resp) {
    const ew_metrics *m = ud;
    moe_buf b = {.s = malloc(4096), .cap = 4096};
    moe_metrics *reg = NULL;
    if (!b.s) goto fail;
    if (!strcmp(req->path, "/metrics")) {
        resp->content_type = "text/plain; version=0.0.4";
        if (moe_metrics_create(&reg) < 0) goto fail;
        fill(m, reg);
        if (moe_metrics_render(reg, &b, NULL) < 0) goto fail;
        moe_metrics_free(reg);
        reg = NULL;
    } else if (!strcmp(req->path, "/healthz")) {
        moe_buf_printf(&b, "ok\n");
    } else {
        free(b.s);
        return; /* 404 */
    }
    if (b.oom) goto fail;
    resp->status = 200;
    resp->body = b.s;
    resp->body_len = b.n;
    return;
fail:
    moe_metrics_free(reg);
    free(b.s);
    resp->status = 500;
}
