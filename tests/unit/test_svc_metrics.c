/* test_svc_metrics.c - the service kit's metrics registry: exact text,
 * label bounds and the "other" series, buckets, refused values, promtool on
 * a rendered registry. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "svc/metrics.h"
#include "svc/strbuf.h"
#include "test.h"

/* ==== Metrics ==================================================================== */

TEST(svc_metrics_exact_text) {
    moe_metrics *reg;
    ASSERT_EQ_INT(moe_metrics_create(&reg), 0);
    moe_metric *rows =
        moe_metrics_counter(reg, "t_rows_total", "Rows \\ served.\nTwo lines.", NULL, 0);
    moe_metric *st = moe_metrics_gauge(reg, "t_workers", "Workers by state.", "state,zone", 4);
    static const double le[] = {1, 10, 1e6};
    moe_metric *h = moe_metrics_histogram(reg, "t_seconds", "Latency.", NULL, 0, le, 3);
    moe_metric *idle = moe_metrics_gauge(reg, "t_idle", "Never set.", NULL, 0);
    ASSERT(rows && st && h && idle);
    ASSERT_EQ_INT(moe_metric_inc(rows, NULL, 12), 0);
    ASSERT_EQ_INT(moe_metric_inc(rows, NULL, 0.5), 0);
    ASSERT_EQ_INT(moe_metric_set(st, (const char *[]){"serving", "a\"b\\c\nd"}, 3), 0);
    ASSERT_EQ_INT(moe_metric_set(st, (const char *[]){"draining", "z"}, 0.1), 0);
    ASSERT_EQ_INT(moe_metric_inc(st, (const char *[]){"serving", "a\"b\\c\nd"}, -1), 0);
    for (double v = 0.5; v < 2e6; v *= 4) ASSERT_EQ_INT(moe_metric_observe(h, NULL, v), 0);
    moe_buf b = {.s = malloc(64), .cap = 64};
    moe_err err;
    ASSERT_EQ_INT(moe_metrics_render(reg, &b, &err), 0);
    /* 0.5 2 8 32 128 512 2048 8192 32768 131072 524288 (11 values, sum 699050.5) */
    ASSERT_STR_EQ(b.s, "# HELP t_rows_total Rows \\\\ served.\\nTwo lines.\n"
                       "# TYPE t_rows_total counter\n"
                       "t_rows_total 12.5\n"
                       "# HELP t_workers Workers by state.\n"
                       "# TYPE t_workers gauge\n"
                       "t_workers{state=\"serving\",zone=\"a\\\"b\\\\c\\nd\"} 2\n"
                       "t_workers{state=\"draining\",zone=\"z\"} 0.1\n"
                       "# HELP t_seconds Latency.\n"
                       "# TYPE t_seconds histogram\n"
                       "t_seconds_bucket{le=\"1\"} 1\n"
                       "t_seconds_bucket{le=\"10\"} 3\n"
                       "t_seconds_bucket{le=\"1000000\"} 11\n"
                       "t_seconds_bucket{le=\"+Inf\"} 11\n"
                       "t_seconds_sum 699050.5\n"
                       "t_seconds_count 11\n"
                       "# HELP t_idle Never set.\n"
                       "# TYPE t_idle gauge\n"
                       "t_idle 0\n");
    /* misuse is refused, not rendered */
    ASSERT_EQ_INT(moe_metric_inc(rows, NULL, -1), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_observe(rows, NULL, 1), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_set(h, NULL, 1), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_set(st, NULL, 1), MOE_EINVAL);
    ASSERT(!moe_metrics_gauge(reg, "t_workers", "again", NULL, 0));
    ASSERT(!moe_metrics_gauge(reg, "9bad", "x", NULL, 0));
    ASSERT(!moe_metrics_histogram(reg, "t_h2", "x", "le", 2, le, 3));
    ASSERT(!moe_metrics_histogram(reg, "t_h3", "x", NULL, 0, (const double[]){2, 1}, 2));
    b.n = 0;
    ASSERT_EQ_INT(moe_metrics_render(reg, &b, &err), MOE_EINVAL);
    ASSERT_STR_EQ(err.msg, "metric 't_workers': added twice");
    char v[40];
    ASSERT_STR_EQ(moe_metrics_fmt(0.1, v, sizeof v), "0.1");
    ASSERT_STR_EQ(moe_metrics_fmt(1.0 / 3, v, sizeof v), "0.3333333333333333");
    ASSERT_STR_EQ(moe_metrics_fmt(-1.0 / 0.0, v, sizeof v), "-Inf");
    ASSERT_STR_EQ(moe_metrics_fmt(18446744073709551616.0, v, sizeof v), "1.8446744073709552e+19");
    free(b.s);
    moe_metrics_free(reg);
}

/* reg renders exactly as want; frees reg. */
static void assert_rendered_free(moe_metrics *reg, const char *want) {
    moe_buf b = {.s = malloc(64), .cap = 64};
    ASSERT_EQ_INT(moe_metrics_render(reg, &b, NULL), 0);
    ASSERT_STR_EQ(b.s, want);
    free(b.s);
    moe_metrics_free(reg);
}

TEST(svc_metrics_label_bound) {
    moe_metrics *reg;
    ASSERT_EQ_INT(moe_metrics_create(&reg), 0);
    moe_metric *refuse = moe_metrics_counter(reg, "t_by_expert_total", "By expert.", "expert", 2);
    moe_metric *other =
        moe_metrics_counter(reg, "t_by_model_total", "By model.", "model", 2 | MOE_METRIC_OTHER);
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "e%d", i);
        ASSERT_EQ_INT(moe_metric_inc(refuse, (const char *[]){name}, 1), i < 2 ? 0 : MOE_ENOSPC);
        ASSERT_EQ_INT(moe_metric_inc(other, (const char *[]){name}, 1), 0);
    }
    /* a known label set is still updated after the bound is reached */
    ASSERT_EQ_INT(moe_metric_inc(refuse, (const char *[]){"e1"}, 1), 0);
    ASSERT_EQ_INT(moe_metric_refused(refuse), 3);
    ASSERT_EQ_INT(moe_metric_refused(other), 0);
    assert_rendered_free(reg,
                         "# HELP t_by_expert_total By expert.\n"
                         "# TYPE t_by_expert_total counter\n"
                         "t_by_expert_total{expert=\"e0\"} 1\n"
                         "t_by_expert_total{expert=\"e1\"} 2\n"
                         "# HELP t_by_model_total By model.\n"
                         "# TYPE t_by_model_total counter\n"
                         "t_by_model_total{model=\"e0\"} 1\n"
                         "t_by_model_total{model=\"e1\"} 1\n"
                         "t_by_model_total{model=\"other\"} 3\n"
                         "# HELP moemesh_metrics_series_refused_total Updates refused: a new label "
                         "set beyond the family's bound.\n"
                         "# TYPE moemesh_metrics_series_refused_total counter\n"
                         "moemesh_metrics_series_refused_total{metric=\"t_by_expert_total\"} 3\n");
}

TEST(svc_metrics_histogram_buckets) {
    moe_metrics *reg;
    ASSERT_EQ_INT(moe_metrics_create(&reg), 0);
    static const double le[] = {0, 100, 1000};
    moe_metric *h = moe_metrics_histogram(reg, "t_rows", "Rows.", "kind", 2, le, 3);
    /* a value on a bound counts in that bucket (le: less or equal) */
    static const double v[] = {0, 0, 100, 100.5, 1000, 5000, -1};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        ASSERT_EQ_INT(moe_metric_observe(h, (const char *[]){"a"}, v[i]), 0);
    ASSERT_EQ_INT(moe_metric_observe(h, (const char *[]){"b"}, 7), 0);
    assert_rendered_free(reg, "# HELP t_rows Rows.\n# TYPE t_rows histogram\n"
                              "t_rows_bucket{kind=\"a\",le=\"0\"} 3\n"
                              "t_rows_bucket{kind=\"a\",le=\"100\"} 4\n"
                              "t_rows_bucket{kind=\"a\",le=\"1000\"} 6\n"
                              "t_rows_bucket{kind=\"a\",le=\"+Inf\"} 7\n"
                              "t_rows_sum{kind=\"a\"} 6199.5\n"
                              "t_rows_count{kind=\"a\"} 7\n"
                              "t_rows_bucket{kind=\"b\",le=\"0\"} 0\n"
                              "t_rows_bucket{kind=\"b\",le=\"100\"} 1\n"
                              "t_rows_bucket{kind=\"b\",le=\"1000\"} 1\n"
                              "t_rows_bucket{kind=\"b\",le=\"+Inf\"} 1\n"
                              "t_rows_sum{kind=\"b\"} 7\n"
                              "t_rows_count{kind=\"b\"} 1\n");
}

/* promtool (Debian's prometheus package, installed by deploy/deps.sh) accepts a
 * rendered registry with every kind, labels, escapes and the refusal counter;
 * and refuses a page with a planted fault (so the check can fail). */
TEST(svc_metrics_promtool) {
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        SKIP("promtool not installed (make deps: prometheus)");
    moe_metrics *reg;
    ASSERT_EQ_INT(moe_metrics_create(&reg), 0);
    moe_metric *c =
        moe_metrics_counter(reg, "moemesh_t_rows_total", "Rows \\ served\nto all.", "worker", 1);
    moe_metric *g =
        moe_metrics_gauge(reg, "moemesh_t_workers", "Workers.", "state", 1 | MOE_METRIC_OTHER);
    static const double le[] = {0.5, 1, 100};
    moe_metric *h = moe_metrics_histogram(reg, "moemesh_t_seconds", "Time.", "op", 2, le, 3);
    moe_metric_inc(c, (const char *[]){"w\"1\\\n"}, 3);
    moe_metric_inc(c, (const char *[]){"w2"}, 3); /* refused: counted */
    moe_metric_set(g, (const char *[]){"serving"}, 2);
    moe_metric_set(g, (const char *[]){"draining"}, 1);
    moe_metric_observe(h, (const char *[]){"fwd"}, 0.7);
    moe_metric_observe(h, (const char *[]){"info"}, 1e9);
    moe_buf b = {.s = malloc(64), .cap = 64};
    ASSERT_EQ_INT(moe_metrics_render(reg, &b, NULL), 0);
    char path[] = "/tmp/moe-test-prom-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0 && write(fd, b.s, b.n) == (ssize_t)b.n);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics <%s", path);
    int rc = system(cmd);
    /* a planted fault: a label value with its quote not escaped */
    FILE *f = fopen(path, "a");
    fprintf(f, "moemesh_t_workers{state=\"a\"b\"} 1\n");
    fclose(f);
    int bad = system(cmd);
    unlink(path);
    if (rc != 0) TEST_FAIL("promtool check metrics failed (%d) on:\n%s", rc, b.s);
    ASSERT(bad != 0);
    free(b.s);
    moe_metrics_free(reg);
}

TEST(svc_metrics_other_and_values) {
    moe_metrics *reg;
    ASSERT_EQ_INT(moe_metrics_create(&reg), 0);
    moe_metric *c = moe_metrics_counter(reg, "t_total", "T.", "l", 2 | MOE_METRIC_OTHER);
    /* a real "other" before the bound: the overflow series, never a second one */
    ASSERT_EQ_INT(moe_metric_inc(c, (const char *[]){"other"}, 1), 0);
    ASSERT_EQ_INT(moe_metric_inc(c, (const char *[]){"a"}, 1), 0);
    ASSERT_EQ_INT(moe_metric_inc(c, (const char *[]){"b"}, 1), 0);
    ASSERT_EQ_INT(moe_metric_inc(c, (const char *[]){"c"}, 1), 0);
    ASSERT_EQ_INT(moe_metric_inc(c, (const char *[]){"other"}, 1), 0);
    /* non-finite values are refused, not stored; a counter never goes down */
    moe_metric *n = moe_metrics_counter(reg, "t_set_total", "S.", NULL, 0);
    ASSERT_EQ_INT(moe_metric_set(n, NULL, 5), 0);
    ASSERT_EQ_INT(moe_metric_set(n, NULL, 3), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_set(n, NULL, -1), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_inc(n, NULL, 1.0 / 0.0), MOE_EINVAL);
    moe_metric *g = moe_metrics_gauge(reg, "t_g", "G.", "v", 4);
    ASSERT_EQ_INT(moe_metric_set(g, (const char *[]){"n"}, 0.0 / 0.0), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_set(g, (const char *[]){"n"}, 2), 0);
    ASSERT_EQ_INT(moe_metric_set(g, (const char *[]){"n"}, -1.0 / 0.0), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_inc(g, (const char *[]){"n"}, 0.0 / 0.0), MOE_EINVAL);
    /* label values: at most 128 bytes, cut between characters; invalid UTF-8 repaired */
    char longv[301], want[1024];
    memset(longv, 'x', 300), longv[300] = 0;
    longv[127] = '\xc3', longv[128] = '\xa9'; /* é across the 128-byte line */
    ASSERT_EQ_INT(moe_metric_set(g, (const char *[]){longv}, 1), 0);
    longv[250] = 'y'; /* differs only past the cut: the same series */
    ASSERT_EQ_INT(moe_metric_set(g, (const char *[]){longv}, 3), 0);
    ASSERT_EQ_INT(moe_metric_set(g,
                                 (const char *[]){"a\xff"
                                                  "b"},
                                 4),
                  0);
    moe_metric *h = moe_metrics_histogram(reg, "t_h", "H.", NULL, 0, (const double[]){1}, 1);
    ASSERT_EQ_INT(moe_metric_observe(h, NULL, 0.0 / 0.0), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_observe(h, NULL, 1.0 / 0.0), MOE_EINVAL);
    ASSERT_EQ_INT(moe_metric_observe(h, NULL, 0.5), 0);
    snprintf(want, sizeof want,
             "# HELP t_total T.\n# TYPE t_total counter\n"
             "t_total{l=\"other\"} 3\nt_total{l=\"a\"} 1\nt_total{l=\"b\"} 1\n"
             "# HELP t_set_total S.\n# TYPE t_set_total counter\nt_set_total 5\n"
             "# HELP t_g G.\n# TYPE t_g gauge\nt_g{v=\"n\"} 2\nt_g{v=\"%.127s\"} 3\n"
             "t_g{v=\"a\xef\xbf\xbd"
             "b\"} 4\n"
             "# HELP t_h H.\n# TYPE t_h histogram\nt_h_bucket{le=\"1\"} 1\n"
             "t_h_bucket{le=\"+Inf\"} 1\nt_h_sum 0.5\nt_h_count 1\n",
             longv);
    assert_rendered_free(reg, want);
}
