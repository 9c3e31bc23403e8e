/* test_svc.c - the service kit: flags (types, environment twins, precedence,
 * bad values, --help), logs (JSON lines, escaping, level filter, the libmoe
 * callback) and the metrics registry (exact text, label bounds, buckets,
 * promtool on a rendered registry). */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moe/log.h"
#include "router_internal.h"
#include "svc/flags.h"
#include "svc/log.h"
#include "svc/metrics.h"
#include "svc/signal.h"
#include "svc/strbuf.h"
#include "test.h"

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_)) TEST_FAIL("%s == %s:\n'%s'\n!=\n'%s'", #a, #b, a_, b_);  \
    } while (0)

/* ==== Flags ====================================================================== */

typedef struct opts {
    const char *name;
    int threads, verbose, ms;
    int64_t big;
    double ratio;
    uint64_t size;
    const char *pos[2];
    int n_pos;
} opts;

static int check_even(const void *dst, char *why, size_t cap) {
    if (*(const int *)dst % 2 == 0) return 0;
    snprintf(why, cap, "must be even");
    return -1;
}

/* argv: "prog", then args up to a NULL or max of them, then a NULL (argv
 * holds max + 2); returns argc. */
static int prog_argv(char **argv, const char *const *args, int max) {
    int argc = 1;
    argv[0] = "prog";
    while (argc <= max && args && args[argc - 1]) argv[argc] = (char *)args[argc - 1], argc++;
    argv[argc] = NULL;
    return argc;
}

/* Arguments that are refused, and the message they give. */
typedef struct bad_args {
    const char *args[8]; /* NULL-terminated unless all 8 are used */
    const char *msg;
} bad_args;

/* Parses argv (NULL-terminated) into o with a fresh table; returns the rc. */
static int parse(opts *o, moe_err *err, const char *const *args, FILE *usage) {
    *o = (opts){.name = "anon", .threads = 1, .ms = 250, .ratio = 0.5};
    const moe_flag flags[] = {
        {"--name", "MOE_T_NAME", MOE_FLAG_STRING, &o->name, "S", .help = "a name",
         .required = "name"},
        {"--threads", "MOE_T_THREADS", MOE_FLAG_INT, &o->threads, "N", .help = "threads", .min = 1,
         .max = 64, .alias = "-t"},
        {"--verbose", "MOE_T_VERBOSE", MOE_FLAG_BOOL, &o->verbose, NULL, .help = "talk"},
        {"--big", NULL, MOE_FLAG_INT64, &o->big, NULL, .help = "a large one"},
        {"--ratio", "MOE_T_RATIO", MOE_FLAG_DOUBLE, &o->ratio, "R", .help = "a fraction", .min = 0,
         .max = 1},
        {"--size", "MOE_T_SIZE", MOE_FLAG_SIZE, &o->size, NULL, .help = "bytes",
         .def = "all memory"},
        {"--wait", "MOE_T_WAIT", MOE_FLAG_MS, &o->ms, NULL, .help = "how long\nto wait",
         .check = check_even},
        {0}};
    char *argv[32];
    int argc = prog_argv(argv, args, 30);
    const moe_flagset fs = {.prog = "prog",
                            .args = "[options] FILE",
                            .about = "Does things.",
                            .footer = "Footnote.",
                            .flags = flags,
                            .max_pos = 2,
                            .pos = o->pos,
                            .n_pos = &o->n_pos};
    if (usage) moe_flags_usage(&fs, usage);
    return moe_flags_parse(&fs, argc, argv, err);
}

static void clear_env(void) {
    static const char *const vars[] = {"MOE_T_NAME",  "MOE_T_THREADS", "MOE_T_VERBOSE",
                                       "MOE_T_RATIO", "MOE_T_SIZE",    "MOE_T_WAIT"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
}

TEST(svc_flags_types) {
    clear_env();
    opts o;
    moe_err err;
    const char *a[] = {"--name", "w1",          "-t",           "8",      "--verbose",
                       "--big",  "-9000000000", "--ratio=0.25", "--size", "1.5G",
                       "--wait", "1.5s",        "in.txt",       NULL};
    ASSERT_EQ_INT(parse(&o, &err, a, NULL), 0);
    ASSERT_STR_EQ(o.name, "w1");
    ASSERT_EQ_INT(o.threads, 8);
    ASSERT_EQ_INT(o.verbose, 1);
    ASSERT_EQ_INT(o.big, -9000000000LL);
    ASSERT_NEAR(o.ratio, 0.25, 0);
    ASSERT_EQ_INT(o.size, 1610612736ULL);
    ASSERT_EQ_INT(o.ms, 1500);
    ASSERT_EQ_INT(o.n_pos, 1);
    ASSERT_STR_EQ(o.pos[0], "in.txt");
    const char *b[] = {"--size", "512KiB", "--wait", "2m", "--verbose=false", "--", "-x", NULL};
    ASSERT_EQ_INT(parse(&o, &err, b, NULL), 0);
    ASSERT_EQ_INT(o.size, 524288);
    ASSERT_EQ_INT(o.ms, 120000);
    ASSERT_EQ_INT(o.verbose, 0);
    ASSERT_STR_EQ(o.pos[0], "-x");
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){"--name=", NULL}, NULL), MOE_EINVAL);
    ASSERT_STR_EQ(err.msg, "no name (--name or MOE_T_NAME)");
    /* untouched: the defaults */
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){NULL}, NULL), 0);
    ASSERT_EQ_INT(o.threads, 1);
    ASSERT_STR_EQ(o.name, "anon");
    ASSERT_EQ_INT(o.ms, 250);
}

TEST(svc_flags_env_twin_and_precedence) {
    clear_env();
    setenv("MOE_T_THREADS", "4", 1);
    setenv("MOE_T_NAME", "from-env", 1);
    setenv("MOE_T_VERBOSE", "yes", 1);
    setenv("MOE_T_SIZE", "2M", 1);
    opts o;
    moe_err err;
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){NULL}, NULL), 0);
    ASSERT_EQ_INT(o.threads, 4);
    ASSERT_STR_EQ(o.name, "from-env");
    ASSERT_EQ_INT(o.verbose, 1);
    ASSERT_EQ_INT(o.size, 2 << 20);
    /* the flag wins over its twin */
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){"--threads", "16", "--name=flag", NULL}, NULL),
                  0);
    ASSERT_EQ_INT(o.threads, 16);
    ASSERT_STR_EQ(o.name, "flag");
    /* an empty variable is unset */
    setenv("MOE_T_THREADS", "", 1);
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){NULL}, NULL), 0);
    ASSERT_EQ_INT(o.threads, 1);
    /* a bad twin names the variable and the value */
    setenv("MOE_T_RATIO", "lots", 1);
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){NULL}, NULL), MOE_EINVAL);
    ASSERT_STR_EQ(err.msg, "MOE_T_RATIO 'lots' is not a number in [0, 1]");
    clear_env();
}

TEST(svc_flags_bad_values) {
    clear_env();
    opts o;
    moe_err err;
    static const bad_args cases[] = {
        {{"--threads", "two"}, "--threads 'two' is not an integer in [1, 64]"},
        {{"-t", "0"}, "-t '0' is not an integer in [1, 64]"},
        {{"--threads", "99999999999"}, "--threads '99999999999' is not an integer in [1, 64]"},
        {{"--ratio", "1.5"}, "--ratio '1.5' is not a number in [0, 1]"},
        {{"--size", "12Q"}, "--size '12Q' is not a size (e.g. 512M, 8G)"},
        {{"--size", "-1"}, "--size '-1' is not a size (e.g. 512M, 8G)"},
        {{"--wait", "3 s"}, "--wait '3 s' is not a duration (e.g. 1500, 250ms, 1.5s)"},
        {{"--wait", "15"}, "--wait '15': must be even"},
        {{"--verbose=maybe"}, "--verbose 'maybe' is not a boolean (true/false)"},
        {{"--frobnicate", "1"}, "unknown option '--frobnicate'"},
        {{"--threads"}, "--threads needs a value"},
        {{"a", "b", "c"}, "unexpected argument 'c'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        err.msg[0] = 0;
        ASSERT_EQ_INT(parse(&o, &err, cases[i].args, NULL), MOE_EINVAL);
        ASSERT_STR_EQ(err.msg, cases[i].msg);
    }
}

TEST(svc_flags_help) {
    clear_env();
    opts o;
    moe_err err;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    /* --help wins even over a bad value before it, and sets nothing */
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){"--threads", "x", "--help", NULL}, f),
                  MOE_FLAGS_HELP);
    fclose(f);
    ASSERT_STR_EQ(text, "usage: prog [options] FILE\n"
                        "Does things.\n"
                        "  --name S             a name (MOE_T_NAME, default anon)\n"
                        "  --threads, -t N      threads (MOE_T_THREADS, default 1)\n"
                        "  --verbose            talk (MOE_T_VERBOSE)\n"
                        "  --big N              a large one\n"
                        "  --ratio R            a fraction (MOE_T_RATIO, default 0.5)\n"
                        "  --size BYTES         bytes (MOE_T_SIZE, default all memory)\n"
                        "  --wait MS            how long\n"
                        "                       to wait (MOE_T_WAIT, default 250)\n"
                        "Footnote.\n");
    free(text);
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){"-h", NULL}, NULL), MOE_FLAGS_HELP);
    /* "--name --help": a value, not a request for help */
    ASSERT_EQ_INT(parse(&o, &err, (const char *[]){"--name", "--help", NULL}, NULL), 0);
    ASSERT_STR_EQ(o.name, "--help");
}

/* A shared fragment ({.include}), nested twice, with a float and a repeated
 * string flag: found, twinned, checked and listed where it stands. */
static int check_nonempty(const void *dst, char *why, size_t cap) {
    const moe_flag_strs *l = dst;
    if (*l->v[l->n - 1]) return 0;
    snprintf(why, cap, "must not be empty");
    return -1;
}

TEST(svc_flags_include_float_strings) {
    unsetenv("MOE_T_TEMP");
    int threads = 1, n = 16;
    float temp = 0.5f;
    const char *stop_v[2];
    moe_flag_strs stop = {.v = stop_v, .max = 2};
    const moe_flag inner[] = {{"--temp", "MOE_T_TEMP", MOE_FLAG_FLOAT, &temp, "T",
                               .help = "temperature", .min = 0, .max = 2},
                              {0}};
    const moe_flag shared[] = {
        {"--threads", NULL, MOE_FLAG_INT, &threads, "N", .help = "threads", .alias = "-t"},
        {.include = inner},
        {0}};
    const moe_flag flags[] = {{"-n", NULL, MOE_FLAG_INT, &n, "N", .help = "count"},
                              {.include = shared},
                              {"--stop", NULL, MOE_FLAG_STRINGS, &stop, "STR",
                               .help = "stop string (up to 2)", .check = check_nonempty},
                              {0}};
    const moe_flagset fs = {.prog = "prog", .about = "About.", .footer = "Footer.", .flags = flags};
    moe_err err;
    char *argv[] = {"prog", "--stop", "a", "-t", "3", "--temp=1.25", "-n", "4", "--stop", "b c"};
    ASSERT_EQ_INT(moe_flags_parse(&fs, 10, argv, &err), 0);
    ASSERT_EQ_INT(threads, 3);
    ASSERT_EQ_INT(n, 4);
    ASSERT_NEAR(temp, 1.25, 0);
    ASSERT_EQ_INT(stop.n, 2);
    ASSERT_STR_EQ(stop.v[0], "a");
    ASSERT_STR_EQ(stop.v[1], "b c");
    /* a twin inside a nested fragment; the flag still wins */
    setenv("MOE_T_TEMP", "0.75", 1);
    stop.n = 0;
    ASSERT_EQ_INT(moe_flags_parse(&fs, 1, argv, &err), 0);
    ASSERT_NEAR(temp, 0.75, 0);
    ASSERT_EQ_INT(moe_flags_parse(&fs, 2, (char *[]){"prog", "--temp=2", NULL}, &err), 0);
    ASSERT_NEAR(temp, 2, 0);
    unsetenv("MOE_T_TEMP");
    static const bad_args cases[] = {
        {{"--temp", "3"}, "--temp '3' is not a number in [0, 2]"},
        {{"--temp", "1e300"}, "--temp '1e300' is not a number in [0, 2]"},
        {{"--stop", "a", "--stop", "b", "--stop", "c"}, "--stop 'c': given more than 2 times"},
        {{"--stop", ""}, "--stop '': must not be empty"},
        {{"--frob"}, "unknown option '--frob'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *a[10];
        int argc = prog_argv(a, cases[i].args, 8);
        stop.n = 0;
        err.msg[0] = 0;
        ASSERT_EQ_INT(moe_flags_parse(&fs, argc, a, &err), MOE_EINVAL);
        ASSERT_STR_EQ(err.msg, cases[i].msg);
    }
    /* a float flag out of float's range, without a range of its own */
    float f = 1;
    const moe_flag fl[] = {{"--f", NULL, MOE_FLAG_FLOAT, &f, NULL, .help = "f"}, {0}};
    const moe_flagset ffs = {.prog = "p", .flags = fl};
    ASSERT_EQ_INT(moe_flags_parse(&ffs, 3, (char *[]){"p", "--f", "1e39", NULL}, &err), MOE_EINVAL);
    ASSERT_STR_EQ(err.msg, "--f '1e39' is not a number");
    ASSERT_EQ_INT(moe_flags_parse(&ffs, 3, (char *[]){"p", "--f", "-2.5", NULL}, &err), 0);
    ASSERT_NEAR(f, -2.5, 0);
    /* --help lists the included flags where the include rows stand */
    temp = 0.5f, threads = 1, n = 16;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    moe_flags_usage(&fs, out);
    fclose(out);
    ASSERT_STR_EQ(text, "usage: prog [options]\n"
                        "About.\n"
                        "  -n N                 count (default 16)\n"
                        "  --threads, -t N      threads (default 1)\n"
                        "  --temp T             temperature (MOE_T_TEMP, default 0.5)\n"
                        "  --stop STR           stop string (up to 2)\n"
                        "Footer.\n");
    free(text);
    /* a table that includes itself: see svc_flags_nesting_and_required (it aborts) */
}

/* ==== Logs ======================================================================= */

/* The logger writing into a memory stream at level (format json). */
static FILE *log_to_memory(char **text, size_t *len, const char *level, const char *format) {
    FILE *f = open_memstream(text, len);
    ASSERT(f);
    moe_err err;
    ASSERT_EQ_INT(
        moe_logger_init(&(moe_logger_cfg){.out = f, .level = level, .format = format}, &err), 0);
    return f;
}

TEST(svc_log_json_lines) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = log_to_memory(&text, &len, "info", "json");
    const char *nasty = "quote\" back\\slash\nnewline\ttab \x01 \xc3\xa9";
    moe_log(MOE_LOG_INFO, "expert-worker", "joined %s", nasty);
    const moe_log_kv kv[] = {{"worker", "w\"1"}, {"epoch", "7"}};
    moe_log_fields(MOE_LOG_ERROR, "router-svc", kv, 2, "worker %d left", 3);
    fflush(f);
    /* two lines, each one well-formed object with the fields in order */
    char *nl = strchr(text, '\n');
    ASSERT(nl && nl[1] && strchr(nl + 1, '\n') && !strchr(nl + 1, '\n')[1]);
    *nl = 0;
    cJSON *a = cJSON_Parse(text), *b = cJSON_Parse(nl + 1);
    ASSERT(a && b);
    ASSERT_STR_EQ(cJSON_GetObjectItem(a, "level")->valuestring, "info");
    ASSERT_STR_EQ(cJSON_GetObjectItem(a, "component")->valuestring, "expert-worker");
    char want[128];
    snprintf(want, sizeof want, "joined %s", nasty);
    ASSERT_STR_EQ(cJSON_GetObjectItem(a, "msg")->valuestring, want);
    const char *ts = cJSON_GetObjectItem(a, "ts")->valuestring;
    ASSERT(strlen(ts) == 24 && ts[10] == 'T' && ts[23] == 'Z');
    ASSERT_STR_EQ(cJSON_GetObjectItem(b, "level")->valuestring, "error");
    ASSERT_STR_EQ(cJSON_GetObjectItem(b, "msg")->valuestring, "worker 3 left");
    ASSERT_STR_EQ(cJSON_GetObjectItem(b, "worker")->valuestring, "w\"1");
    ASSERT_STR_EQ(cJSON_GetObjectItem(b, "epoch")->valuestring, "7");
    ASSERT_STR_CONTAINS(nl + 1, "\"msg\":\"worker 3 left\",\"worker\":\"w\\\"1\",\"epoch\":\"7\"}");
    ASSERT_STR_CONTAINS(text, "\\u0001");
    cJSON_Delete(a);
    cJSON_Delete(b);
    moe_log_set_callback(NULL, NULL);
    fclose(f);
    free(text);
}

TEST(svc_log_level_filter_and_text) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = log_to_memory(&text, &len, "warn", "text");
    moe_log(MOE_LOG_DEBUG, "x", "debug line");
    moe_log(MOE_LOG_INFO, "x", "info line");
    moe_log(MOE_LOG_WARN, "x", "warn line");
    const moe_log_kv kv[] = {{"k", "v"}};
    moe_log_fields(MOE_LOG_ERROR, "y", kv, 1, "error line");
    fflush(f);
    ASSERT(!strstr(text, "debug line") && !strstr(text, "info line"));
    ASSERT_STR_CONTAINS(text, " warn x: warn line\n");
    ASSERT_STR_CONTAINS(text, " error y: error line k=v\n");
    moe_log_set_callback(NULL, NULL);
    fclose(f);
    free(text);
    moe_err err;
    ASSERT_EQ_INT(moe_logger_init(&(moe_logger_cfg){.level = "loud"}, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "'loud'");
    ASSERT_EQ_INT(moe_logger_init(&(moe_logger_cfg){.format = "xml"}, &err), MOE_EINVAL);
}

typedef struct seen {
    int n;
    moe_log_level level;
    char who[32], msg[64], kv[64];
} seen;

static void capture(void *ud, moe_log_level level, const char *who, const char *msg,
                    const moe_log_kv *kv, size_t n_kv) {
    seen *s = ud;
    s->n++;
    s->level = level;
    snprintf(s->who, sizeof s->who, "%s", who);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    snprintf(s->kv, sizeof s->kv, "%s=%s", n_kv ? kv[0].key : "", n_kv ? kv[0].val : "");
}

TEST(svc_log_callback) {
    seen s = {0};
    moe_log_set_callback(capture, &s);
    moe_log(MOE_LOG_WARN, "remote experts", "worker %s failed", "127.0.0.1:9");
    ASSERT_EQ_INT(s.n, 1);
    ASSERT_EQ_INT(s.level, MOE_LOG_WARN);
    ASSERT_STR_EQ(s.who, "remote experts");
    ASSERT_STR_EQ(s.msg, "worker 127.0.0.1:9 failed");
    moe_log_fields(MOE_LOG_DEBUG, "w", (const moe_log_kv[]){{"a", "b"}}, 1, "m");
    ASSERT_EQ_INT(s.n, 2);
    ASSERT_STR_EQ(s.kv, "a=b");
    /* with no callback: "who: msg k=v" on stderr */
    moe_log_set_callback(NULL, NULL);
    char path[] = "/tmp/moe-test-log-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    moe_log_fields(MOE_LOG_INFO, "remote experts", (const moe_log_kv[]){{"k", "v"}}, 1,
                   "worker %s serves again", "h:1");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[256] = {0};
    ASSERT(pread(fd, buf, sizeof buf - 1, 0) > 0);
    close(fd);
    unlink(path);
    ASSERT_STR_EQ(buf, "remote experts: worker h:1 serves again k=v\n");
    ASSERT_EQ_INT(s.n, 2);
}

TEST(svc_json_escaper) {
    moe_buf b = {.s = malloc(16), .cap = 16};
    moe_buf_json(&b, "a\"b\\c\n\x1f");
    ASSERT_STR_EQ(b.s, "\"a\\\"b\\\\c\\u000a\\u001f\"");
    b.n = 0;
    /* valid UTF-8 kept, a cut sequence and a stray byte become U+FFFD, NUL escaped */
    moe_buf_json_n(&b, "\xc3\xa9\xe2\x82x\0y\xff", 8, MOE_JSON_UTF8_FIX);
    ASSERT_STR_EQ(b.s, "\"\xc3\xa9\\ufffd\\ufffdx\\u0000y\\ufffd\"");
    b.n = 0; /* without the flag, bytes pass as they are */
    moe_buf_json_n(&b, "\xe2\x82x", 3, 0);
    ASSERT_STR_EQ(b.s, "\"\xe2\x82x\"");
    ASSERT(!b.oom);
    free(b.s);
}

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

/* ==== Review fixes: levels, UTF-8, assertions, signals, flags, metrics ========== */

/* Runs fn in a child process with its fd 2 (and fd 1) captured into out
 * (cap bytes, NUL-terminated); returns the child's wait status. */
static int run_child(void (*fn)(void), char *out, size_t cap) {
    int p[2];
    ASSERT(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 1);
        dup2(p[1], 2);
        fn();
        _exit(0);
    }
    close(p[1]);
    size_t n = 0;
    for (ssize_t r; n + 1 < cap && (r = read(p[0], out + n, cap - 1 - n)) > 0;) n += (size_t)r;
    out[n] = 0;
    close(p[0]);
    int st = 0;
    ASSERT(waitpid(pid, &st, 0) == pid);
    return st;
}

TEST(svc_log_router_levels) {
    seen s = {0};
    moe_log_set_callback(capture, &s);
    rt_warn("worker %s: unusable expert_bytes '%s'", "w1", "x");
    ASSERT_EQ_INT(s.level, MOE_LOG_WARN);
    ASSERT_STR_EQ(s.msg, "worker w1: unusable expert_bytes 'x'");
    rt_err("cannot place the experts: %s", "why");
    ASSERT_EQ_INT(s.level, MOE_LOG_ERROR);
    ASSERT_STR_EQ(s.who, "router-svc");
    rt_log("epoch 3 active");
    ASSERT_EQ_INT(s.level, MOE_LOG_INFO);
    moe_log_set_callback(NULL, NULL);
}

TEST(svc_log_json_repairs_utf8) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = log_to_memory(&text, &len, "info", "json");
    const moe_log_kv kv[] = {{"worker", "w\xff\xc0\xaf"}, {"why", "ERR \xed\xa0\x80 \xc3\xa9"}};
    moe_log_fields(MOE_LOG_WARN, "comp\xf5", kv, 2, "bad \xe0\x80\xaf");
    fflush(f);
    for (size_t i = 0; i < len; i++) /* only é is non-ASCII, and well-formed */
        if ((unsigned char)text[i] >= 0x80 &&
            !((unsigned char)text[i] == 0xc3 && (unsigned char)text[i + 1] == 0xa9))
            if (!(i && (unsigned char)text[i - 1] == 0xc3 && (unsigned char)text[i] == 0xa9))
                TEST_FAIL("raw byte 0x%02x at %zu in %s", (unsigned char)text[i], i, text);
    cJSON *a = cJSON_Parse(text);
    ASSERT(a);
    ASSERT_STR_EQ(cJSON_GetObjectItem(a, "component")->valuestring, "comp\xef\xbf\xbd");
    ASSERT_STR_CONTAINS(text, "\"worker\":\"w\\ufffd\\ufffd\\ufffd\"");
    ASSERT_STR_CONTAINS(text, "\"why\":\"ERR \\ufffd\\ufffd\\ufffd \xc3\xa9\"");
    ASSERT_STR_CONTAINS(text, "\"msg\":\"bad \\ufffd\\ufffd\\ufffd\"");
    cJSON_Delete(a);
    moe_log_set_callback(NULL, NULL);
    fclose(f);
    free(text);
}

TEST(svc_utf8_strict) {
    moe_buf b = {.s = malloc(16), .cap = 16};
    /* overlong (C0 AF, E0 80 AF), a surrogate (ED A0 80), above U+10FFFF
     * (F4 90 80 80), an F5 lead: each byte U+FFFD; then a valid 4-byte one */
    moe_buf_json_n(&b, "\xc0\xaf\xe0\x80\xaf\xed\xa0\x80\xf4\x90\x80\x80\xf5\x80\xf0\x9f\x98\x80",
                   18, MOE_JSON_UTF8_FIX);
    char want[128] = "\"";
    for (int i = 0; i < 14; i++) strcat(want, "\\ufffd");
    strcat(want, "\xf0\x9f\x98\x80\"");
    ASSERT_STR_EQ(b.s, want);
    b.n = 0; /* the edges that are well-formed */
    moe_buf_json_n(&b, "\xe0\xa0\x80\xed\x9f\xbf\xf4\x8f\xbf\xbf\xc2\x80", 12, MOE_JSON_UTF8_FIX);
    ASSERT_STR_EQ(b.s, "\"\xe0\xa0\x80\xed\x9f\xbf\xf4\x8f\xbf\xbf\xc2\x80\"");
    free(b.s);
    char out[8];
    ASSERT_EQ_INT(moe_utf8_repair(out, 5, "ab\xc3\xa9\xc3\xa9"), 4); /* cut between characters */
    ASSERT_STR_EQ(out, "ab\xc3\xa9");
    ASSERT_EQ_INT(moe_utf8_repair(out, sizeof out, "a\xff"), 4);
    ASSERT_STR_EQ(out, "a\xef\xbf\xbd");
}

static size_t g_msg_len;
static char g_msg_tail[8];
static void capture_len(void *ud, moe_log_level level, const char *who, const char *msg,
                        const moe_log_kv *kv, size_t n_kv) {
    (void)ud, (void)level, (void)who, (void)kv, (void)n_kv;
    g_msg_len = strlen(msg);
    snprintf(g_msg_tail, sizeof g_msg_tail, "%s", msg + (g_msg_len > 2 ? g_msg_len - 2 : 0));
}

TEST(svc_log_cut_at_character) {
    /* 2046 bytes and a 2-byte character: the 2047-byte cut would split it */
    char *long_msg = malloc(2100);
    memset(long_msg, 'a', 2046);
    strcpy(long_msg + 2046, "\xc3\xa9\xc3\xa9");
    moe_log_set_callback(capture_len, NULL);
    moe_log(MOE_LOG_INFO, "x", "%s", long_msg);
    ASSERT_EQ_INT(g_msg_len, 2046);
    ASSERT_STR_EQ(g_msg_tail, "aa");
    long_msg[2045] = 0; /* short ones pass whole */
    moe_log(MOE_LOG_INFO, "x", "%s\xc3\xa9", long_msg);
    ASSERT_EQ_INT(g_msg_len, 2047);
    moe_log_set_callback(NULL, NULL);
    free(long_msg);
}

TEST(svc_log_text_escapes_lines) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = log_to_memory(&text, &len, "info", "text");
    const moe_log_kv kv[] = {{"worker", "w1\n2026-01-01T00:00:00.000Z error router-svc: forged"}};
    moe_log_fields(MOE_LOG_WARN, "x", kv, 1, "left\r\tnow \x1b[31m back\\slash");
    fflush(f);
    ASSERT(strchr(text, '\n') == text + len - 1); /* one line */
    ASSERT_STR_CONTAINS(text, " warn x: left\\r\\tnow \\x1b[31m back\\\\slash worker=w1\\n2026");
    moe_log_set_callback(NULL, NULL);
    fclose(f);
    free(text);
}

static void assert_fails_in_child(void) {
    moe_log_set_callback(capture, &(seen){0}); /* never called: fd 2 only */
    moe__assert_fail("dir/file.c", 1234, "n > 0");
}

TEST(svc_assert_writes_fd2_then_aborts) {
    char out[256];
    int st = run_child(assert_fails_in_child, out, sizeof out);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    ASSERT_STR_EQ(out, "dir/file.c:1234: assertion failed: n > 0\n");
}

static void stop_then_signals(void) {
    moe_err err;
    if (moe_stop_install(&err) < 0) _exit(3);
    moe_stop_request(); /* a stop the service asked for itself */
    raise(SIGTERM);     /* the first signal: still a graceful stop */
    if (write(1, "alive\n", 6) != 6) _exit(4);
    if (!*moe_stop_flag()) _exit(5);
    raise(SIGTERM); /* the second signal: now */
    _exit(0);
}

TEST(svc_signal_second_signal_only) {
    char out[64];
    int st = run_child(stop_then_signals, out, sizeof out);
    ASSERT_STR_EQ(out, "alive\n");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ_INT(WEXITSTATUS(st), 128 + SIGTERM);
}

TEST(svc_flags_empty_about_footer) {
    /* the byte before each empty text is not a newline: nothing may read it */
    static const char about[] = "x", footer[] = "y";
    int v = 0;
    const moe_flag fl[] = {{"--v", NULL, MOE_FLAG_BOOL, &v, NULL, .help = "v"}, {0}};
    const moe_flagset fs = {.prog = "p", .about = about + 1, .footer = footer + 1, .flags = fl};
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    moe_flags_usage(&fs, out);
    fclose(out);
    ASSERT_STR_EQ(text, "usage: p [options]\n  --v                  v\n");
    free(text);
}

static moe_flag g_deep[6][3];
static int g_deep_v;
/* g_deep[0] includes [1] ... includes [depth]; the flag "--deep" is in [depth] */
static moe_flagset deep_tables(int depth) {
    memset(g_deep, 0, sizeof g_deep);
    for (int i = 0; i < depth; i++) g_deep[i][0] = (moe_flag){.include = g_deep[i + 1]};
    g_deep[depth][0] = (moe_flag){"--deep", NULL, MOE_FLAG_BOOL, &g_deep_v, NULL, .help = "d"};
    return (moe_flagset){.prog = "p", .flags = g_deep[0]};
}

static void parse_too_deep(void) {
    const moe_flagset fs = deep_tables(5);
    moe_err err;
    moe_flags_parse(&fs, 2, (char *[]){"p", "--deep", NULL}, &err);
}

static void parse_self_include(void) {
    static moe_flag loop[3];
    loop[0] = (moe_flag){"--x", NULL, MOE_FLAG_BOOL, &g_deep_v, NULL, .help = "x"};
    loop[1] = (moe_flag){.include = loop};
    const moe_flagset fs = {.prog = "p", .flags = loop};
    moe_err err;
    moe_flags_parse(&fs, 2, (char *[]){"p", "--y", NULL}, &err);
}

static void parse_required_int(void) {
    int n = 0;
    const moe_flag fl[] = {{"--n", NULL, MOE_FLAG_INT, &n, NULL, .help = "n", .required = "n"},
                           {0}};
    const moe_flagset fs = {.prog = "p", .flags = fl};
    moe_err err;
    moe_flags_parse(&fs, 3, (char *[]){"p", "--n", "3", NULL}, &err);
}

TEST(svc_flags_nesting_and_required) {
    /* 4 levels of includes work; a fifth (or a table including itself) is a bug */
    const moe_flagset fs = deep_tables(4);
    moe_err err;
    g_deep_v = 0;
    ASSERT_EQ_INT(moe_flags_parse(&fs, 2, (char *[]){"p", "--deep", NULL}, &err), 0);
    ASSERT_EQ_INT(g_deep_v, 1);
    char out[512];
    int st = run_child(parse_too_deep, out, sizeof out);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    ASSERT_STR_CONTAINS(out, "assertion failed");
    st = run_child(parse_self_include, out, sizeof out);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    /* .required: a string or strings flag; on a number it is a bug */
    st = run_child(parse_required_int, out, sizeof out);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    const char *v[2];
    moe_flag_strs stop = {.v = v, .max = 2};
    const moe_flag fl[] = {
        {"--stop", NULL, MOE_FLAG_STRINGS, &stop, NULL, .help = "s", .required = "stop string"},
        {0}};
    const moe_flagset sfs = {.prog = "p", .flags = fl};
    ASSERT_EQ_INT(moe_flags_parse(&sfs, 1, (char *[]){"p", NULL}, &err), MOE_EINVAL);
    ASSERT_STR_EQ(err.msg, "no stop string (--stop)");
    ASSERT_EQ_INT(moe_flags_parse(&sfs, 3, (char *[]){"p", "--stop", "x", NULL}, &err), 0);
    ASSERT_EQ_INT(stop.n, 1);
}

TEST(svc_flags_decimal_only) {
    static const char *const bad_ms[] = {"-5s", "0x10", "1e3", "+5",  " 5", "inf",  "nan",
                                         ".5s", "1.s",  "-0",  "5 s", "",   "0x1p4"};
    int64_t ms = 7;
    for (size_t i = 0; i < sizeof bad_ms / sizeof *bad_ms; i++)
        if (moe_flags_parse_ms(bad_ms[i], &ms) != MOE_EINVAL)
            TEST_FAIL("duration '%s' accepted (%lld)", bad_ms[i], (long long)ms);
    static const char *const bad_size[] = {"0x1p4", "0x10", "1e3", "-1",  "+1", " 1",
                                           "inf",   "nan",  ".5K", "1.K", ""};
    uint64_t size = 7;
    for (size_t i = 0; i < sizeof bad_size / sizeof *bad_size; i++)
        if (moe_flags_parse_size(bad_size[i], &size) != MOE_EINVAL)
            TEST_FAIL("size '%s' accepted (%llu)", bad_size[i], (unsigned long long)size);
    ASSERT_EQ_INT(moe_flags_parse_ms("1.5s", &ms), 0);
    ASSERT_EQ_INT(ms, 1500);
    ASSERT_EQ_INT(moe_flags_parse_ms("0", &ms), 0);
    ASSERT_EQ_INT(ms, 0);
    ASSERT_EQ_INT(moe_flags_parse_ms("2h", &ms), 0);
    ASSERT_EQ_INT(ms, 7200000);
    ASSERT_EQ_INT(moe_flags_parse_size("8GB", &size), 0);
    ASSERT_EQ_INT(size, 8589934592ULL);
    ASSERT_EQ_INT(moe_flags_parse_size("0.5KiB", &size), 0);
    ASSERT_EQ_INT(size, 512);
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
