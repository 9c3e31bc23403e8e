/* metrics.c - the expert worker's admin HTTP: /metrics, /healthz (see metrics.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/strbuf.h"
#include "svc/topn.h"
#include "metrics.h"

#define TOP_N 10

static uint64_t ld(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static void render(const ew_metrics *m, moe_buf *b) {
    const ew_counters *k = m->counters;
    const moe_hparams *hp = &m->model->hp;
    const size_t np = (size_t)hp->n_layer * (size_t)hp->n_expert;
    int held = 0;
    uint64_t bytes = 0;
    for (int l = 0; l < hp->n_layer; l++)
        for (int e = 0; e < hp->n_expert; e++)
            if (moe_slice_has(m->slice, l, e)) held++, bytes += moe_expert_bytes(m->model, l);
    moe_buf_printf(b,
        "# HELP moemesh_worker_batches_total Forward batches computed.\n"
        "# TYPE moemesh_worker_batches_total counter\nmoemesh_worker_batches_total %" PRIu64 "\n"
        "# HELP moemesh_worker_rows_total Token rows computed.\n"
        "# TYPE moemesh_worker_rows_total counter\nmoemesh_worker_rows_total %" PRIu64 "\n"
        "# HELP moemesh_worker_refused_total Batches naming an expert this worker does not hold.\n"
        "# TYPE moemesh_worker_refused_total counter\nmoemesh_worker_refused_total %" PRIu64 "\n"
        "# HELP moemesh_worker_errors_total Malformed batches and compute errors.\n"
        "# TYPE moemesh_worker_errors_total counter\nmoemesh_worker_errors_total %" PRIu64 "\n"
        "# HELP moemesh_worker_experts_held (layer, expert) pairs held now.\n"
        "# TYPE moemesh_worker_experts_held gauge\nmoemesh_worker_experts_held %d\n"
        "# HELP moemesh_worker_expert_bytes_held Weight bytes of the experts held.\n"
        "# TYPE moemesh_worker_expert_bytes_held gauge\n"
        "moemesh_worker_expert_bytes_held %" PRIu64 "\n",
        ld(&k->batches), ld(&k->rows), ld(&k->refused), ld(&k->errors), held, bytes);
    ew_registry *reg = __atomic_load_n(&m->reg, __ATOMIC_ACQUIRE);
    if (reg) {
        ew_registry_stats rs = ew_registry_get_stats(reg);
        moe_buf_printf(b,
            "# HELP moemesh_worker_epoch Placement epochs: the newest loaded, the active one.\n"
            "# TYPE moemesh_worker_epoch gauge\n"
            "moemesh_worker_epoch{kind=\"acked\"} %" PRIu64 "\n"
            "moemesh_worker_epoch{kind=\"active\"} %" PRIu64 "\n"
            "# HELP moemesh_worker_expert_changes_total Experts loaded and dropped.\n"
            "# TYPE moemesh_worker_expert_changes_total counter\n"
            "moemesh_worker_expert_changes_total{kind=\"load\"} %" PRIu64 "\n"
            "moemesh_worker_expert_changes_total{kind=\"drop\"} %" PRIu64 "\n"
            "# HELP moemesh_worker_redis_up 1 if Redis answers.\n"
            "# TYPE moemesh_worker_redis_up gauge\nmoemesh_worker_redis_up %d\n",
            rs.epoch_acked, rs.epoch_active, rs.loads, rs.unloads, rs.redis_up);
    }
    if (!k->expert_rows) return;
    /* rows per held expert as a histogram, and the busiest by rank: bounded */
    double *rows = calloc(np + 1, sizeof *rows);
    if (!rows) return;
    size_t n = 0;
    double sum = 0;
    for (size_t i = 0; i < np; i++) {
        rows[i] = (double)ld(&k->expert_rows[i]);
        if (rows[i] > 0 || moe_slice_has(m->slice, (int)(i / (size_t)hp->n_expert),
                                        (int)(i % (size_t)hp->n_expert)))
            n++, sum += rows[i];
    }
    static const double le[] = {0, 100, 1e3, 1e4, 1e5, 1e6, 1e7};
    moe_buf_printf(b, "# HELP moemesh_worker_expert_rows Experts (held or served) by rows served.\n"
           "# TYPE moemesh_worker_expert_rows histogram\n");
    for (size_t j = 0; j < sizeof le / sizeof *le; j++) {
        size_t c = 0;
        for (size_t i = 0; i < np; i++)
            c += (rows[i] > 0 || moe_slice_has(m->slice, (int)(i / (size_t)hp->n_expert),
                                              (int)(i % (size_t)hp->n_expert))) &&
                 rows[i] <= le[j];
        moe_buf_printf(b, "moemesh_worker_expert_rows_bucket{le=\"%g\"} %zu\n", le[j], c);
    }
    moe_buf_printf(b,
        "moemesh_worker_expert_rows_bucket{le=\"+Inf\"} %zu\nmoemesh_worker_expert_rows_sum %.0f\n"
        "moemesh_worker_expert_rows_count %zu\n",
        n, sum, n);
    size_t top[TOP_N];
    const int nt = moe_top_n(rows, np, top, TOP_N);
    moe_buf_printf(b, "# HELP moemesh_worker_hot_expert_rows The %d experts that served the most rows.\n"
           "# TYPE moemesh_worker_hot_expert_rows gauge\n",
        TOP_N);
    for (int j = 0; j < nt; j++)
        moe_buf_printf(b, "moemesh_worker_hot_expert_rows{rank=\"%d\",layer=\"%zu\",expert=\"%zu\"} %.0f\n",
            j + 1, top[j] / (size_t)hp->n_expert, top[j] % (size_t)hp->n_expert, rows[top[j]]);
    free(rows);
}

void ew_metrics_http(void *ud, const moe_http_req *req, moe_http_resp *resp) {
    const ew_metrics *m = ud;
    moe_buf b = {.s = malloc(4096), .cap = 4096};
    if (!b.s) {
        resp->status = 500;
        return;
    }
    if (!strcmp(req->path, "/metrics")) {
        resp->content_type = "text/plain; version=0.0.4";
        render(m, &b);
    } else if (!strcmp(req->path, "/healthz")) {
        moe_buf_printf(&b, "ok\n");
    } else {
        free(b.s);
        return; /* 404 */
    }
    if (!b.s || b.oom) {
        free(b.s);
        resp->status = 500;
        return;
    }
    resp->status = 200;
    resp->body = b.s;
    resp->body_len = b.n;
}
