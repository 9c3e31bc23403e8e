/*
 * svc/metrics.h - a Prometheus metrics registry: counters, gauges and
 * histograms (fixed buckets) with labels whose set of values is bounded, and
 * the text exposition format (version 0.0.4) that /metrics serves.
 *
 *     moe_metrics *reg;
 *     if (moe_metrics_create(&reg) < 0) ... out of memory ...
 *     moe_metric *rows = moe_metrics_counter(reg, "moemesh_worker_rows_total",
 *                                            "Token rows computed.", NULL, 0);
 *     moe_metric *workers = moe_metrics_gauge(reg, "moemesh_router_workers",
 *                                             "Workers by state.", "state", 4);
 *     static const double le[] = {1, 10, 100};
 *     moe_metric *lat = moe_metrics_histogram(reg, "moemesh_x_seconds", "Latency.",
 *                                             NULL, 0, le, 3);
 *     moe_metric_inc(rows, NULL, 12);
 *     moe_metric_set(workers, (const char *[]){"serving"}, 3);
 *     moe_metric_observe(lat, NULL, 0.25);
 *     moe_buf b = {.s = malloc(4096), .cap = 4096};
 *     if (moe_metrics_render(reg, &b, &err) < 0) ... err.msg ...
 *     moe_metrics_free(reg);
 *
 * renders
 *
 *     # HELP moemesh_worker_rows_total Token rows computed.
 *     # TYPE moemesh_worker_rows_total counter
 *     moemesh_worker_rows_total 12
 *     # HELP moemesh_router_workers Workers by state.
 *     # TYPE moemesh_router_workers gauge
 *     moemesh_router_workers{state="serving"} 3
 *     # HELP moemesh_x_seconds Latency.
 *     # TYPE moemesh_x_seconds histogram
 *     moemesh_x_seconds_bucket{le="1"} 1
 *     ... le="10", le="100", le="+Inf" ...
 *     moemesh_x_seconds_sum 0.25
 *     moemesh_x_seconds_count 1
 *
 * Families render in the order they were added, series in the order they
 * first got a value (moe_metrics_fmt writes the numbers); a family without labels always has its
 * one series (zero until updated), a labelled one without series renders its HELP and TYPE only.
 * Values print in the shortest form that reads back to the same double
 * (+Inf, -Inf, NaN as Prometheus spells them); HELP text escapes '\' and
 * newlines, label values '\', '"' and newlines.
 *
 * Bounded labels: a labelled family holds at most max_series series. An
 * update for a new label set beyond the bound is refused and counted (the
 * count renders as moemesh_metrics_series_refused_total{metric="NAME"} once
 * it is not zero), unless the family was added with MOE_METRIC_OTHER: then it
 * goes to one extra series whose every label value is "other" (an update
 * whose every label value is "other" goes there too, before the bound is
 * reached, so that series is never rendered twice). A label value is kept as
 * well-formed UTF-8 (invalid bytes become U+FFFD) of at most 128 bytes (cut
 * at a character boundary): values that agree that far share a series.
 *
 * Thread-safe: updates and rendering take the registry's mutex. Adding a
 * family is for set-up (or one thread building a page). A failed add
 * (a bad name, out of memory) returns NULL, makes updates on NULL no-ops and
 * is reported by moe_metrics_render.
 */
#ifndef MOE_SVC_METRICS_H
#define MOE_SVC_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "moe/error.h"
#include "svc/strbuf.h"

typedef struct moe_metrics moe_metrics;
typedef struct moe_metric moe_metric;

/* max_series flag: beyond the bound, updates go to an "other" series. */
#define MOE_METRIC_OTHER 0x40000000

/* Creates an empty registry; 0 or MOE_ENOMEM. Free with moe_metrics_free. */
int moe_metrics_create(moe_metrics **out);
/* Frees the registry and its families. NULL is allowed. */
void moe_metrics_free(moe_metrics *reg);

/* Adds a family. name: [a-zA-Z_:][a-zA-Z0-9_:]*; help: one sentence (copied);
 * labels: comma-separated label names ("state", "layer,expert"), NULL for
 * none; max_series: the bound on label sets (ignored without labels; 0 means
 * 64), optionally | MOE_METRIC_OTHER. The family is owned by the registry.
 * NULL on a bad name, a duplicate name or out of memory (see above). */
moe_metric *moe_metrics_counter(moe_metrics *reg, const char *name, const char *help,
                                const char *labels, int max_series);
moe_metric *moe_metrics_gauge(moe_metrics *reg, const char *name, const char *help,
                              const char *labels, int max_series);
/* A histogram with n_buckets increasing finite upper bounds (copied; +Inf is
 * implicit); "le" may not be a label. */
moe_metric *moe_metrics_histogram(moe_metrics *reg, const char *name, const char *help,
                                  const char *labels, int max_series, const double *buckets,
                                  int n_buckets);

/* Label values: an array of as many strings as the family has labels
 * (borrowed; copied when a series is created), or NULL for a family without.
 * Each returns 0, MOE_ENOSPC (a new label set beyond the bound: refused and
 * counted), MOE_EINVAL (the wrong kind of family, a non-finite value, a
 * negative counter step, a counter set lower than it is, NULL values for a
 * labelled family; nothing is stored) or MOE_ENOMEM. */

/* Adds by (>= 0 for a counter) to a counter or a gauge. */
int moe_metric_inc(moe_metric *m, const char *const *values, double by);
/* Sets a gauge; or a counter to a total kept elsewhere (never lower it). */
int moe_metric_set(moe_metric *m, const char *const *values, double v);
/* Counts v into a histogram's buckets, sum and count. */
int moe_metric_observe(moe_metric *m, const char *const *values, double v);

/* Updates refused by the bound so far. */
uint64_t moe_metric_refused(const moe_metric *m);

/* Appends the exposition text to out. Returns 0, MOE_EINVAL (a family could
 * not be added: named in err; the rest is rendered) or MOE_ENOMEM (out->oom). */
int moe_metrics_render(moe_metrics *reg, moe_buf *out, moe_err *err);

/* The shortest text of v that reads back to v; whole numbers below 1e15 in
 * full ("12", "1000000", "0.25", "1e+21",
 * "+Inf", "NaN"); buf >= 32 bytes. Returns buf. */
const char *moe_metrics_fmt(double v, char *buf, size_t cap);

#endif
