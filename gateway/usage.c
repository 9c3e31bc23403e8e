/* usage.c - per-tenant usage and expert accounting (see usage.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/error.h"
#include "svc/metrics.h"
#include "svc/strbuf.h"
#include "usage.h"

typedef struct utenant {
    gw_usage_totals tot;
    uint64_t *rows;     /* (n_layer x n_expert) */
    uint64_t *reported; /* rows as of the last gw_usage_take_deltas (NULL: none yet) */
} utenant;

struct gw_usage {
    int n_layer, n_expert, max_tenants;
    pthread_mutex_t mu;
    utenant *t; /* (max_tenants + 1): the last is "(other)" */
    int n;
    const int32_t *row_tenant; /* engine thread: the decode's rows */
    int n_rows;
    uint64_t *scratch; /* (max_tenants + 1) rows per tenant in one call */
    moe_metric *m_req, *m_tok, *m_rows, *m_sec, *m_top; /* /metrics (NULL: none) */
};

int gw_usage_create(gw_usage **out, int n_layer, int n_expert, int max_tenants) {
    *out = NULL;
    if (n_layer < 1 || n_expert < 1 || max_tenants < 1) return MOE_EINVAL;
    gw_usage *u = calloc(1, sizeof *u);
    if (!u) return MOE_ENOMEM;
    u->n_layer = n_layer, u->n_expert = n_expert, u->max_tenants = max_tenants;
    u->t = calloc((size_t)max_tenants + 1, sizeof *u->t);
    u->scratch = calloc((size_t)max_tenants + 1, sizeof *u->scratch);
    if (!u->t || !u->scratch) {
        free(u->t), free(u->scratch), free(u);
        return MOE_ENOMEM;
    }
    snprintf(u->t[max_tenants].tot.tenant, sizeof u->t[0].tot.tenant, "(other)");
    pthread_mutex_init(&u->mu, NULL);
    *out = u;
    return 0;
}

void gw_usage_free(gw_usage *u) {
    if (!u) return;
    for (int i = 0; i <= u->max_tenants; i++) free(u->t[i].rows), free(u->t[i].reported);
    pthread_mutex_destroy(&u->mu);
    free(u->t), free(u->scratch), free(u);
}

/* Index of name, or -1 (caller holds mu). */
static int find(const gw_usage *u, const char *name) {
    for (int i = 0; i < u->n; i++)
        if (!strcmp(u->t[i].tot.tenant, name)) return i;
    return -1;
}

int gw_usage_tenant(gw_usage *u, const char *name) {
    pthread_mutex_lock(&u->mu);
    int i = find(u, name);
    if (i < 0) {
        i = u->n < u->max_tenants ? u->n++ : u->max_tenants;
        if (i < u->max_tenants) snprintf(u->t[i].tot.tenant, sizeof u->t[i].tot.tenant, "%s", name);
    }
    pthread_mutex_unlock(&u->mu);
    return i;
}

void gw_usage_set_rows(gw_usage *u, const int32_t *row_tenant, int n_rows) {
    u->row_tenant = row_tenant, u->n_rows = n_rows;
}

static uint64_t *rows_of(gw_usage *u, utenant *t) {
    if (!t->rows) t->rows = calloc((size_t)u->n_layer * (size_t)u->n_expert, sizeof *t->rows);
    return t->rows;
}

void gw_usage_on_route(void *ud, int layer, int row0, int n, int k, const int32_t *sel,
                       double expert_us) {
    gw_usage *u = ud;
    if (!u->row_tenant || layer < 0 || layer >= u->n_layer) return;
    pthread_mutex_lock(&u->mu);
    uint64_t total = 0;
    memset(u->scratch, 0, ((size_t)u->max_tenants + 1) * sizeof *u->scratch);
    for (int i = 0; i < n; i++) {
        const int r = row0 + i;
        const int ti = r < u->n_rows ? u->row_tenant[r] : -1;
        if (ti < 0 || ti > u->max_tenants) continue;
        uint64_t *rows = rows_of(u, &u->t[ti]);
        for (int c = 0; c < k; c++) {
            const int32_t e = sel[(size_t)i * k + c];
            if (e < 0 || e >= u->n_expert) continue;
            if (rows) rows[(size_t)layer * u->n_expert + e]++;
            u->scratch[ti]++;
            total++;
        }
    }
    for (int ti = 0; ti <= u->max_tenants && total; ti++) {
        if (!u->scratch[ti]) continue;
        u->t[ti].tot.expert_rows += u->scratch[ti];
        u->t[ti].tot.expert_seconds += expert_us * 1e-6 * (double)u->scratch[ti] / (double)total;
    }
    pthread_mutex_unlock(&u->mu);
}

void gw_usage_add_request(gw_usage *u, int t, int prompt_tokens, int completion_tokens) {
    if (t < 0 || t > u->max_tenants) return;
    pthread_mutex_lock(&u->mu);
    gw_usage_totals *o = &u->t[t].tot;
    o->requests++;
    o->prompt_tokens += (uint64_t)(prompt_tokens > 0 ? prompt_tokens : 0);
    o->completion_tokens += (uint64_t)(completion_tokens > 0 ? completion_tokens : 0);
    pthread_mutex_unlock(&u->mu);
}

int gw_usage_list(gw_usage *u, gw_usage_totals *out, int cap) {
    pthread_mutex_lock(&u->mu);
    const int other = u->t[u->max_tenants].tot.requests || u->t[u->max_tenants].tot.expert_rows;
    const int n = u->n + other;
    for (int i = 0; i < u->n && i < cap; i++) out[i] = u->t[i].tot;
    if (other && u->n < cap) out[u->n] = u->t[u->max_tenants].tot;
    pthread_mutex_unlock(&u->mu);
    return n;
}

int gw_usage_get(gw_usage *u, const char *tenant, gw_usage_totals *out) {
    pthread_mutex_lock(&u->mu);
    const int i = find(u, tenant);
    if (i >= 0) *out = u->t[i].tot;
    pthread_mutex_unlock(&u->mu);
    return i >= 0 ? 0 : -1;
}

static int busier(const gw_usage_expert *a, const gw_usage_expert *b) {
    if (a->rows != b->rows) return a->rows > b->rows;
    return a->layer != b->layer ? a->layer < b->layer : a->expert < b->expert;
}

int gw_usage_top_experts(gw_usage *u, const char *tenant, gw_usage_expert *out, int n) {
    pthread_mutex_lock(&u->mu);
    const int i = find(u, tenant);
    int m = 0;
    if (i >= 0 && u->t[i].rows && n > 0) {
        const uint64_t *rows = u->t[i].rows;
        for (int l = 0; l < u->n_layer; l++)
            for (int e = 0; e < u->n_expert; e++) {
                const gw_usage_expert x = {l, e, rows[(size_t)l * u->n_expert + e]};
                if (!x.rows || (m == n && !busier(&x, &out[m - 1]))) continue;
                int q = m < n ? m++ : m - 1; /* insert, dropping the last when full */
                while (q > 0 && busier(&x, &out[q - 1])) out[q] = out[q - 1], q--;
                out[q] = x;
            }
    }
    pthread_mutex_unlock(&u->mu);
    return i >= 0 ? m : -1;
}

uint64_t gw_usage_rows(gw_usage *u, const char *tenant, int layer, int expert) {
    if (layer < 0 || layer >= u->n_layer || expert < 0 || expert >= u->n_expert) return 0;
    pthread_mutex_lock(&u->mu);
    const int i = find(u, tenant);
    const uint64_t r =
        i >= 0 && u->t[i].rows ? u->t[i].rows[(size_t)layer * u->n_expert + expert] : 0;
    pthread_mutex_unlock(&u->mu);
    return r;
}

int gw_usage_metrics_add(gw_usage *u, struct moe_metrics *reg) {
    const int cap = (u->max_tenants + 1) | MOE_METRIC_OTHER;
    u->m_req = moe_metrics_counter(reg, "moemesh_gateway_tenant_requests_total",
                                   "Requests served, by tenant.", "tenant", cap);
    u->m_tok = moe_metrics_counter(reg, "moemesh_gateway_tenant_tokens_total",
                                   "Tokens served, by tenant and kind (prompt, completion).",
                                   "tenant,kind", (2 * (u->max_tenants + 1)) | MOE_METRIC_OTHER);
    u->m_rows = moe_metrics_counter(reg, "moemesh_gateway_tenant_expert_rows_total",
                                    "(token, expert) rows sent to routed experts, by tenant.",
                                    "tenant", cap);
    u->m_sec = moe_metrics_counter(reg, "moemesh_gateway_tenant_expert_seconds_total",
                                   "The tenant's share (by rows) of the routed experts' time.",
                                   "tenant", cap);
    u->m_top = moe_metrics_counter(reg, "moemesh_gateway_tenant_top_expert_rows_total",
                                   "Rows of each tenant's busiest (layer, expert) pairs.",
                                   "tenant,layer,expert", 1024 | MOE_METRIC_OTHER);
    return u->m_req && u->m_tok && u->m_rows && u->m_sec && u->m_top ? 0 : MOE_ENOMEM;
}

void gw_usage_metrics_update(gw_usage *u, int top_n) {
    if (!u->m_req) return;
    gw_usage_totals tot[64];
    gw_usage_expert top[16];
    if (top_n > 16) top_n = 16;
    const int n = gw_usage_list(u, tot, 64); /* the first 64 tenants; the rest: "(other)" */
    for (int i = 0; i < n && i < 64; i++) {
        const char *t = tot[i].tenant[0] ? tot[i].tenant : "(none)";
        moe_metric_set(u->m_req, (const char *[]){t}, (double)tot[i].requests);
        moe_metric_set(u->m_tok, (const char *[]){t, "prompt"}, (double)tot[i].prompt_tokens);
        moe_metric_set(u->m_tok, (const char *[]){t, "completion"},
                       (double)tot[i].completion_tokens);
        moe_metric_set(u->m_rows, (const char *[]){t}, (double)tot[i].expert_rows);
        moe_metric_set(u->m_sec, (const char *[]){t}, tot[i].expert_seconds);
        const int m = gw_usage_top_experts(u, tot[i].tenant, top, top_n);
        for (int k = 0; k < m; k++) {
            char l[16], e[16];
            snprintf(l, sizeof l, "%d", top[k].layer);
            snprintf(e, sizeof e, "%d", top[k].expert);
            moe_metric_set(u->m_top, (const char *[]){t, l, e}, (double)top[k].rows);
        }
    }
}

void gw_usage_json(gw_usage *u, const char *tenant, struct moe_buf *b) {
    pthread_mutex_lock(&u->mu);
    const int i = find(u, tenant);
    gw_usage_totals t = {0};
    if (i >= 0) t = u->t[i].tot;
    moe_buf_printf(b, "{\"object\":\"usage\",\"tenant\":");
    if (tenant[0])
        moe_buf_json(b, tenant);
    else
        moe_buf_printf(b, "null");
    moe_buf_printf(b,
                   ",\"requests\":%llu,\"prompt_tokens\":%llu,\"completion_tokens\":%llu,"
                   "\"total_tokens\":%llu,\"expert_rows\":%llu,\"expert_seconds\":%.6f,"
                   "\"experts\":[",
                   (unsigned long long)t.requests, (unsigned long long)t.prompt_tokens,
                   (unsigned long long)t.completion_tokens,
                   (unsigned long long)(t.prompt_tokens + t.completion_tokens),
                   (unsigned long long)t.expert_rows, t.expert_seconds);
    int first = 1;
    for (int l = 0; i >= 0 && u->t[i].rows && l < u->n_layer; l++)
        for (int e = 0; e < u->n_expert; e++) {
            const uint64_t r = u->t[i].rows[(size_t)l * u->n_expert + e];
            if (!r) continue;
            moe_buf_printf(b, "%s[%d,%d,%llu]", first ? "" : ",", l, e, (unsigned long long)r);
            first = 0;
        }
    moe_buf_printf(b, "]}\n");
    pthread_mutex_unlock(&u->mu);
}

void gw_usage_take_deltas(gw_usage *u,
                          void (*fn)(void *ud, const char *tenant, int layer, int expert,
                                     uint64_t rows),
                          void *ud) {
    const size_t np = (size_t)u->n_layer * (size_t)u->n_expert;
    pthread_mutex_lock(&u->mu);
    for (int i = 0; i <= u->max_tenants; i++) {
        utenant *t = &u->t[i];
        if (!t->rows) continue;
        if (!t->reported && !(t->reported = calloc(np, sizeof *t->reported))) continue;
        const char *name = t->tot.tenant[0] ? t->tot.tenant : "(none)";
        for (size_t k = 0; k < np; k++)
            if (t->rows[k] > t->reported[k]) {
                fn(ud, name, (int)(k / (size_t)u->n_expert), (int)(k % (size_t)u->n_expert),
                   t->rows[k] - t->reported[k]);
                t->reported[k] = t->rows[k];
            }
    }
    pthread_mutex_unlock(&u->mu);
}
