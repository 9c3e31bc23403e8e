/* test_svc_flags.c - the service kit's flags: types, environment twins,
 * precedence, bad values, --help, included tables, nesting limits, decimal
 * sizes and durations. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "svc/flags.h"
#include "test.h"

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
    int st = test_run_child(parse_too_deep, out, sizeof out);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    ASSERT_STR_CONTAINS(out, "assertion failed");
    st = test_run_child(parse_self_include, out, sizeof out);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    /* .required: a string or strings flag; on a number it is a bug */
    st = test_run_child(parse_required_int, out, sizeof out);
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
