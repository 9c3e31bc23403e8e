/* metrics.c - a Prometheus registry with bounded label sets (see svc/metrics.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/metrics.h"

#define MAX_LABELS 8
#define DEFAULT_MAX_SERIES 64
#define MAX_VALUE_BYTES 128 /* a label value is cut (at a character boundary) to this */

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind;

typedef struct series {
    char **values;     /* n_labels label values (owned) */
    double v;          /* counter or gauge value; a histogram's sum */
    uint64_t count;    /* a histogram's observations */
    uint64_t *buckets; /* a histogram's per-bucket counts (not cumulative), n_buckets */
} series;

struct moe_metric {
    moe_metrics *reg;
    kind kind;
    char *name, *help;
    int n_labels;
    char *labels[MAX_LABELS];
    int max_series, other;
    double *bounds;
    int n_buckets;
    series *s;
    int n_series, cap_series;
    int other_idx; /* the "other" series, or -1 */
    uint64_t refused;
};

struct moe_metrics {
    pthread_mutex_t mu;
    moe_metric **m;
    int n, cap;
    char bad[200]; /* the first failed add, or "" */
};

int moe_metrics_create(moe_metrics **out) {
    moe_metrics *r = calloc(1, sizeof *r);
    if (!r) return MOE_ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return 0;
}

static void series_free(series *s, int n_labels) {
    for (int k = 0; s->values && k < n_labels; k++) free(s->values[k]);
    free(s->values);
    free(s->buckets);
}

static void metric_free(moe_metric *m) {
    if (!m) return;
    for (int i = 0; i < m->n_series; i++) series_free(&m->s[i], m->n_labels);
    for (int k = 0; k < m->n_labels; k++) free(m->labels[k]);
    free(m->s);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
}

void moe_metrics_free(moe_metrics *reg) {
    if (!reg) return;
    for (int i = 0; i < reg->n; i++) metric_free(reg->m[i]);
    free(reg->m);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

/* ==== Families ===================================================================== */

static int valid_name(const char *s, int label) {
    if (!s || !*s) return 0;
    for (const char *p = s; *p; p++) {
        const int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                          (!label && *p == ':');
        if (!alpha && !(p > s && *p >= '0' && *p <= '9')) return 0;
    }
    return !(label && s[0] == '_' && s[1] == '_'); /* reserved */
}

static moe_metric *add(moe_metrics *reg, kind k, const char *name, const char *help,
                       const char *labels, int max_series, const double *bounds, int n_buckets) {
    moe_metric *m = NULL;
    const char *why = "out of memory";
    if (!reg) return NULL;
    pthread_mutex_lock(&reg->mu);
    if (!valid_name(name, 0)) {
        why = "not a metric name";
        goto fail;
    }
    for (int i = 0; i < reg->n; i++)
        if (!strcmp(reg->m[i]->name, name)) {
            why = "added twice";
            goto fail;
        }
    m = calloc(1, sizeof *m);
    if (!m) goto fail;
    m->reg = reg;
    m->kind = k;
    m->other_idx = -1;
    m->other = (max_series & MOE_METRIC_OTHER) != 0;
    max_series &= ~MOE_METRIC_OTHER;
    m->max_series = max_series > 0 ? max_series : DEFAULT_MAX_SERIES;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    if (!m->name || !m->help) goto fail;
    for (const char *p = labels; p && *p;) {
        const char *c = strchr(p, ',');
        const size_t n = c ? (size_t)(c - p) : strlen(p);
        if (m->n_labels == MAX_LABELS) {
            why = "more than 8 labels";
            goto fail;
        }
        if (!(m->labels[m->n_labels] = strndup(p, n))) goto fail;
        const char *l = m->labels[m->n_labels++];
        if (!valid_name(l, 1) || (k == KIND_HISTOGRAM && !strcmp(l, "le"))) {
            why = "a bad label name";
            goto fail;
        }
        for (int j = 0; j + 1 < m->n_labels; j++)
            if (!strcmp(m->labels[j], l)) {
                why = "a label named twice";
                goto fail;
            }
        p = c ? c + 1 : p + n;
    }
    if (!m->n_labels) m->max_series = 1;
    if (k == KIND_HISTOGRAM) {
        if (n_buckets < 0 || (n_buckets && !bounds)) {
            why = "bad buckets";
            goto fail;
        }
        for (int i = 0; i < n_buckets; i++)
            if (!isfinite(bounds[i]) || (i && !(bounds[i] > bounds[i - 1]))) {
                why = "buckets not finite and increasing";
                goto fail;
            }
        m->bounds = malloc(sizeof *m->bounds * (size_t)(n_buckets + 1));
        if (!m->bounds) goto fail;
        if (n_buckets) memcpy(m->bounds, bounds, sizeof *bounds * (size_t)n_buckets);
        m->n_buckets = n_buckets;
    }
    if (reg->n == reg->cap) {
        int cap = reg->cap ? reg->cap * 2 : 16;
        moe_metric **a = realloc(reg->m, sizeof *a * (size_t)cap);
        if (!a) goto fail;
        reg->m = a;
        reg->cap = cap;
    }
    reg->m[reg->n++] = m;
    pthread_mutex_unlock(&reg->mu);
    return m;
fail:
    if (!*reg->bad)
        snprintf(reg->bad, sizeof reg->bad, "metric '%.120s': %s", name ? name : "", why);
    pthread_mutex_unlock(&reg->mu);
    metric_free(m);
    return NULL;
}

moe_metric *moe_metrics_counter(moe_metrics *reg, const char *name, const char *help,
                                const char *labels, int max_series) {
    return add(reg, KIND_COUNTER, name, help, labels, max_series, NULL, 0);
}

moe_metric *moe_metrics_gauge(moe_metrics *reg, const char *name, const char *help,
                              const char *labels, int max_series) {
    return add(reg, KIND_GAUGE, name, help, labels, max_series, NULL, 0);
}

moe_metric *moe_metrics_histogram(moe_metrics *reg, const char *name, const char *help,
                                  const char *labels, int max_series, const double *buckets,
                                  int n_buckets) {
    return add(reg, KIND_HISTOGRAM, name, help, labels, max_series, buckets, n_buckets);
}

/* ==== Updates ====================================================================== */

/* The series for raw (created if the bound allows): its index, or
 * MOE_ENOSPC / MOE_ENOMEM / MOE_EINVAL. Label values are looked up and kept
 * as well-formed UTF-8 of at most MAX_VALUE_BYTES; with MOE_METRIC_OTHER a
 * label set that is all "other" is the overflow series, never a second one.
 * Called with the mutex held. */
static int find_series(moe_metric *m, const char *const *raw) {
    if (m->n_labels && !raw) return MOE_EINVAL;
    char buf[MAX_LABELS][MAX_VALUE_BYTES + 1];
    const char *values[MAX_LABELS];
    int all_other = m->other && m->n_labels > 0;
    for (int k = 0; k < m->n_labels; k++) {
        moe_utf8_repair(buf[k], sizeof buf[k], raw[k] ? raw[k] : "");
        values[k] = buf[k];
        all_other &= !strcmp(values[k], "other");
    }
    if (all_other && m->other_idx >= 0) return m->other_idx;
    for (int i = 0; i < m->n_series && !all_other; i++) {
        int k = 0;
        while (k < m->n_labels && !strcmp(m->s[i].values[k], values[k])) k++;
        if (k == m->n_labels && i != m->other_idx) return i;
    }
    const int used = m->n_series - (m->other_idx >= 0);
    const int to_other = all_other || used >= m->max_series;
    if (to_other && !m->other) {
        m->refused++;
        return MOE_ENOSPC;
    }
    if (to_other && m->other_idx >= 0) return m->other_idx;
    if (m->n_series == m->cap_series) {
        int cap = m->cap_series ? m->cap_series * 2 : 4;
        series *a = realloc(m->s, sizeof *a * (size_t)cap);
        if (!a) return MOE_ENOMEM;
        m->s = a;
        m->cap_series = cap;
    }
    series s = {0};
    if (m->n_labels && !(s.values = calloc((size_t)m->n_labels, sizeof *s.values)))
        return MOE_ENOMEM;
    for (int k = 0; k < m->n_labels; k++)
        if (!(s.values[k] = strdup(to_other ? "other" : values[k]))) {
            series_free(&s, m->n_labels);
            return MOE_ENOMEM;
        }
    if (m->kind == KIND_HISTOGRAM &&
        !(s.buckets = calloc((size_t)m->n_buckets + 1, sizeof *s.buckets))) {
        series_free(&s, m->n_labels);
        return MOE_ENOMEM;
    }
    m->s[m->n_series] = s;
    if (to_other) m->other_idx = m->n_series;
    return m->n_series++;
}

typedef enum { OP_INC, OP_SET, OP_OBSERVE } op;

static int update(moe_metric *m, const char *const *values, double v, op o) {
    if (!m) return 0;
    /* a non-finite value is refused, never stored (a NaN _sum stays NaN) */
    const int ok = isfinite(v) && (o == OP_OBSERVE ? m->kind == KIND_HISTOGRAM
                                                   : m->kind != KIND_HISTOGRAM &&
                                                         !(m->kind == KIND_COUNTER && v < 0));
    if (!ok) return MOE_EINVAL;
    pthread_mutex_lock(&m->reg->mu);
    int i = find_series(m, values);
    if (i >= 0) {
        series *s = &m->s[i];
        if (o == OP_INC)
            s->v += v;
        else if (o == OP_SET && m->kind == KIND_COUNTER && v < s->v)
            i = MOE_EINVAL; /* a counter never goes down */
        else if (o == OP_SET)
            s->v = v;
        else {
            int b = 0;
            while (b < m->n_buckets && !(v <= m->bounds[b])) b++;
            s->buckets[b]++;
            s->count++;
            s->v += v;
        }
    }
    pthread_mutex_unlock(&m->reg->mu);
    return i < 0 ? i : 0;
}

int moe_metric_inc(moe_metric *m, const char *const *values, double by) {
    return update(m, values, by, OP_INC);
}

int moe_metric_set(moe_metric *m, const char *const *values, double v) {
    return update(m, values, v, OP_SET);
}

int moe_metric_observe(moe_metric *m, const char *const *values, double v) {
    return update(m, values, v, OP_OBSERVE);
}

uint64_t moe_metric_refused(const moe_metric *m) {
    if (!m) return 0;
    pthread_mutex_lock(&m->reg->mu);
    uint64_t n = m->refused;
    pthread_mutex_unlock(&m->reg->mu);
    return n;
}

/* ==== Rendering ==================================================================== */

const char *moe_metrics_fmt(double v, char *buf, size_t cap) {
    if (isnan(v))
        snprintf(buf, cap, "NaN");
    else if (isinf(v))
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.0f", v); /* whole numbers */
    else
        for (int p = 1; p <= 17; p++) {
            snprintf(buf, cap, "%.*g", p, v);
            if (strtod(buf, NULL) == v) break;
        }
    return buf;
}

static void escaped(moe_buf *b, const char *s, int quote) {
    for (; *s; s++) {
        if (*s == '\\')
            moe_buf_printf(b, "\\\\");
        else if (*s == '\n')
            moe_buf_printf(b, "\\n");
        else if (quote && *s == '"')
            moe_buf_printf(b, "\\\"");
        else
            moe_buf_printf(b, "%c", *s);
    }
}

/* name{l1="v1",...[,le="x"]} */
static void series_name(moe_buf *b, const moe_metric *m, const series *s, const char *suffix,
                        const char *le) {
    moe_buf_printf(b, "%s%s", m->name, suffix);
    if (!m->n_labels && !le) return;
    moe_buf_printf(b, "{");
    for (int k = 0; k < m->n_labels; k++) {
        moe_buf_printf(b, "%s%s=\"", k ? "," : "", m->labels[k]);
        escaped(b, s->values[k], 1);
        moe_buf_printf(b, "\"");
    }
    if (le) moe_buf_printf(b, "%sle=\"%s\"", m->n_labels ? "," : "", le);
    moe_buf_printf(b, "}");
}

static void render_family(moe_buf *b, const moe_metric *m) {
    static const char *const type[] = {"counter", "gauge", "histogram"};
    char v[40], le[40];
    moe_buf_printf(b, "# HELP %s ", m->name);
    escaped(b, m->help, 0);
    moe_buf_printf(b, "\n# TYPE %s %s\n", m->name, type[m->kind]);
    /* a family without labels has its one series from the start, at zero */
    const series zero = {0};
    const int n = m->n_series ? m->n_series : !m->n_labels;
    for (int i = 0; i < n; i++) {
        const series *s = m->n_series ? &m->s[i] : &zero;
        if (m->kind != KIND_HISTOGRAM) {
            series_name(b, m, s, "", NULL);
            moe_buf_printf(b, " %s\n", moe_metrics_fmt(s->v, v, sizeof v));
            continue;
        }
        uint64_t cum = 0;
        for (int k = 0; k <= m->n_buckets; k++) {
            cum += s == &zero ? 0 : s->buckets[k];
            series_name(b, m, s, "_bucket",
                        k < m->n_buckets ? moe_metrics_fmt(m->bounds[k], le, sizeof le) : "+Inf");
            moe_buf_printf(b, " %llu\n", (unsigned long long)cum);
        }
        series_name(b, m, s, "_sum", NULL);
        moe_buf_printf(b, " %s\n", moe_metrics_fmt(s->v, v, sizeof v));
        series_name(b, m, s, "_count", NULL);
        moe_buf_printf(b, " %llu\n", (unsigned long long)s->count);
    }
}

int moe_metrics_render(moe_metrics *reg, moe_buf *out, moe_err *err) {
    pthread_mutex_lock(&reg->mu);
    int any_refused = 0;
    for (int i = 0; i < reg->n; i++) {
        render_family(out, reg->m[i]);
        any_refused |= reg->m[i]->refused != 0;
    }
    if (any_refused) {
        moe_buf_printf(out, "# HELP moemesh_metrics_series_refused_total Updates refused: a new "
                            "label set beyond the family's bound.\n"
                            "# TYPE moemesh_metrics_series_refused_total counter\n");
        for (int i = 0; i < reg->n; i++)
            if (reg->m[i]->refused)
                moe_buf_printf(out, "moemesh_metrics_series_refused_total{metric=\"%s\"} %llu\n",
                               reg->m[i]->name, (unsigned long long)reg->m[i]->refused);
    }
    int rc = 0;
    if (out->oom)
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory rendering metrics");
    else if (*reg->bad)
        rc = moe_err_set(err, MOE_EINVAL, "%s", reg->bad);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}
