/* flags.c - flags with environment twins and generated --help (see svc/flags.h). */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "svc/flags.h"

/* ==== Value parsers ============================================================== */

/* Parses the decimal number at the start of s: digits with an optional
 * fraction ("12", "1.5"), nothing else (no sign, space, exponent, hex,
 * inf/nan). Returns its value and sets *end after it; *end = s when s does
 * not start with a digit. */
static double parse_decimal(const char *s, const char **end) {
    const char *p = s;
    while (isdigit((unsigned char)*p)) p++;
    if (p == s) return *end = s, 0;
    if (*p == '.' && isdigit((unsigned char)p[1]))
        for (p++; isdigit((unsigned char)*p);) p++;
    char buf[64];
    if ((size_t)(p - s) >= sizeof buf) return *end = s, 0; /* too long to be a sane value */
    memcpy(buf, s, (size_t)(p - s));
    buf[p - s] = 0;
    *end = p;
    return strtod(buf, NULL);
}

int moe_flags_parse_size(const char *s, uint64_t *out) {
    const char *end;
    double x = parse_decimal(s, &end);
    double mul = 1;
    if (end == s) return MOE_EINVAL;
    if (*end == 'K' || *end == 'k')
        mul = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024.0 * 1024 * 1024, end++;
    else if (*end == 'T' || *end == 't')
        mul = 1024.0 * 1024 * 1024 * 1024, end++;
    if (mul > 1 && *end == 'i') end++;
    if (*end == 'B') end++;
    if (*end || !(x >= 0) || x * mul > 1.8e19) return MOE_EINVAL;
    *out = (uint64_t)(x * mul);
    return 0;
}

int moe_flags_parse_ms(const char *s, int64_t *out) {
    const char *end;
    double x = parse_decimal(s, &end);
    if (end == s) return MOE_EINVAL;
    double mul = 1;
    if (!strcmp(end, "ms") || !*end)
        mul = 1;
    else if (!strcmp(end, "s"))
        mul = 1e3;
    else if (!strcmp(end, "m"))
        mul = 60e3;
    else if (!strcmp(end, "h"))
        mul = 3600e3;
    else
        return MOE_EINVAL;
    x *= mul;
    if (!(x < 9.2e18)) return MOE_EINVAL;
    *out = (int64_t)llround(x);
    return 0;
}

static int parse_i64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || isspace((unsigned char)*s)) return MOE_EINVAL;
    *out = x;
    return 0;
}

static int parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no",
                                                                                "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) return *out = 1, 0;
        if (!strcasecmp(s, no[i])) return *out = 0, 0;
    }
    return MOE_EINVAL;
}

static const char *type_noun(moe_flag_type t) {
    switch (t) {
    case MOE_FLAG_INT:
    case MOE_FLAG_INT64:
        return "an integer";
    case MOE_FLAG_UINT64:
        return "a non-negative integer";
    case MOE_FLAG_DOUBLE:
    case MOE_FLAG_FLOAT:
        return "a number";
    case MOE_FLAG_BOOL:
        return "a boolean (true/false)";
    case MOE_FLAG_SIZE:
        return "a size (e.g. 512M, 8G)";
    case MOE_FLAG_MS:
        return "a duration (e.g. 1500, 250ms, 1.5s)";
    default:
        return "a string";
    }
}

int moe_flag_set(const moe_flag *f, const char *who, const char *v, moe_err *err) {
    int rc = 0;
    double num = 0;
    int has_num = 1;
    union {
        int64_t i;
        uint64_t u;
        double d;
        int b;
    } x;
    switch (f->type) {
    case MOE_FLAG_STRING:
        has_num = 0;
        break;
    case MOE_FLAG_STRINGS: {
        const moe_flag_strs *l = f->dst;
        if (l->n >= l->max)
            return moe_err_set(err, MOE_EINVAL, "%s '%s': given more than %d times", who, v,
                               l->max);
        has_num = 0;
        break;
    }
    case MOE_FLAG_INT:
    case MOE_FLAG_INT64:
        rc = parse_i64(v, &x.i);
        if (!rc && f->type == MOE_FLAG_INT && (x.i < INT32_MIN || x.i > INT32_MAX)) rc = MOE_EINVAL;
        num = (double)x.i;
        break;
    case MOE_FLAG_DOUBLE:
    case MOE_FLAG_FLOAT: {
        char *end;
        errno = 0;
        x.d = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x.d)) rc = MOE_EINVAL;
        if (f->type == MOE_FLAG_FLOAT && !(fabs(x.d) <= FLT_MAX)) rc = MOE_EINVAL;
        num = x.d;
        break;
    }
    case MOE_FLAG_BOOL:
        rc = parse_bool(v, &x.b);
        has_num = 0;
        break;
    case MOE_FLAG_SIZE:
        rc = moe_flags_parse_size(v, &x.u);
        num = (double)x.u;
        break;
    case MOE_FLAG_UINT64: {
        char *end;
        errno = 0;
        x.u = strtoull(v, &end, 10);
        if (errno || end == v || *end || !isdigit((unsigned char)*v)) rc = MOE_EINVAL;
        num = (double)x.u;
        break;
    }
    case MOE_FLAG_MS:
        rc = moe_flags_parse_ms(v, &x.i);
        if (!rc && (x.i < INT32_MIN || x.i > INT32_MAX)) rc = MOE_EINVAL;
        num = (double)x.i;
        break;
    }
    const int ranged = has_num && f->min < f->max;
    if (rc < 0 || (ranged && !(num >= f->min && num <= f->max))) {
        if (ranged)
            return moe_err_set(err, MOE_EINVAL, "%s '%s' is not %s in [%.15g, %.15g]", who, v,
                               type_noun(f->type), f->min, f->max);
        return moe_err_set(err, MOE_EINVAL, "%s '%s' is not %s", who, v, type_noun(f->type));
    }
    switch (f->type) {
    case MOE_FLAG_STRING:
        *(const char **)f->dst = v;
        break;
    case MOE_FLAG_STRINGS: {
        moe_flag_strs *l = f->dst;
        l->v[l->n++] = v;
        break;
    }
    case MOE_FLAG_INT:
    case MOE_FLAG_MS:
        *(int *)f->dst = (int)x.i;
        break;
    case MOE_FLAG_INT64:
        *(int64_t *)f->dst = x.i;
        break;
    case MOE_FLAG_DOUBLE:
        *(double *)f->dst = x.d;
        break;
    case MOE_FLAG_FLOAT:
        *(float *)f->dst = (float)x.d;
        break;
    case MOE_FLAG_BOOL:
        *(int *)f->dst = x.b;
        break;
    case MOE_FLAG_SIZE:
    case MOE_FLAG_UINT64:
        *(uint64_t *)f->dst = x.u;
        break;
    }
    if (f->check) {
        char why[256] = "";
        if (f->check(f->dst, why, sizeof why) < 0)
            return moe_err_set(err, MOE_EINVAL, "%s '%s': %s", who, v, *why ? why : "not allowed");
    }
    return 0;
}

/* ==== Parsing ==================================================================== */

/* The next flag row at or after *at, stepping into included tables (stack:
 * where to go on after each, depth at most MAX_DEPTH); NULL at the end. */
#define MAX_DEPTH 4
typedef struct walk {
    const moe_flag *at, *stack[MAX_DEPTH];
    int depth;
} walk;

static walk walk_start(const moe_flag *t) {
    return (walk){.at = t};
}

static const moe_flag *walk_next(walk *w) {
    while (w->at) {
        const moe_flag *f = w->at;
        if (f->name) {
            w->at = f + 1;
            return f;
        }
        if (f->include) { /* deeper nesting (or a table that includes itself) is a bug */
            MOE_ASSERT(w->depth < MAX_DEPTH);
            w->stack[w->depth++] = f + 1;
            w->at = f->include;
        } else {
            w->at = w->depth ? w->stack[--w->depth] : NULL;
        }
    }
    return NULL;
}

static const moe_flag *find(const moe_flagset *fs, const char *a, size_t n) {
    walk w = walk_start(fs->flags);
    for (const moe_flag *f; (f = walk_next(&w));)
        if ((strlen(f->name) == n && !strncmp(f->name, a, n)) ||
            (f->alias && strlen(f->alias) == n && !strncmp(f->alias, a, n)))
            return f;
    return NULL;
}

int moe_flags_parse(const moe_flagset *fs, int argc, char **argv, moe_err *err) {
    int n_pos = 0;
    for (int i = 1; i < argc; i++) { /* --help first, even with a bad twin */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return MOE_FLAGS_HELP;
        if (!strcmp(argv[i], "--")) break;
        const moe_flag *f = argv[i][0] == '-' ? find(fs, argv[i], strlen(argv[i])) : NULL;
        if (f && f->type != MOE_FLAG_BOOL) i++; /* its value */
    }
    walk w = walk_start(fs->flags);
    for (const moe_flag *f; (f = walk_next(&w));) {
        /* .required is for string flags only (a number has no "not given") */
        MOE_ASSERT(!f->required || f->type == MOE_FLAG_STRING || f->type == MOE_FLAG_STRINGS);
        const char *v = f->env ? getenv(f->env) : NULL;
        if (!v || !*v) continue; /* an empty variable is an unset one */
        int rc = moe_flag_set(f, f->env, v, err);
        if (rc < 0) return rc;
    }
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || !a[1]) {
            if (n_pos >= fs->max_pos)
                return moe_err_set(err, MOE_EINVAL, "unexpected argument '%s'", a);
            fs->pos[n_pos++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_pos = 1;
            continue;
        }
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
        const size_t n = eq ? (size_t)(eq - a) : strlen(a);
        const moe_flag *f = find(fs, a, n);
        if (!f) return moe_err_set(err, MOE_EINVAL, "unknown option '%.*s'", (int)n, a);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)n, a);
        const char *v = eq ? eq + 1 : NULL;
        if (!v && f->type == MOE_FLAG_BOOL) v = "true";
        if (!v) {
            if (i + 1 >= argc) return moe_err_set(err, MOE_EINVAL, "%s needs a value", name);
            v = argv[++i];
        }
        int rc = moe_flag_set(f, name, v, err);
        if (rc < 0) return rc;
    }
    if (fs->n_pos) *fs->n_pos = n_pos;
    w = walk_start(fs->flags);
    for (const moe_flag *f; (f = walk_next(&w));) {
        const char *s = f->type == MOE_FLAG_STRING ? *(const char *const *)f->dst : NULL;
        const int given =
            f->type == MOE_FLAG_STRINGS ? ((const moe_flag_strs *)f->dst)->n > 0 : s && *s;
        if (f->required && !given)
            return moe_err_set(err, MOE_EINVAL, "no %s (%s%s%s)", f->required, f->name,
                               f->env ? " or " : "", f->env ? f->env : "");
    }
    return 0;
}

/* ==== Usage ====================================================================== */

static const char *metavar(const moe_flag *f) {
    if (f->metavar) return f->metavar;
    switch (f->type) {
    case MOE_FLAG_STRING:
    case MOE_FLAG_STRINGS:
        return "S";
    case MOE_FLAG_DOUBLE:
    case MOE_FLAG_FLOAT:
        return "X";
    case MOE_FLAG_BOOL:
        return NULL;
    case MOE_FLAG_SIZE:
        return "BYTES";
    case MOE_FLAG_MS:
        return "MS";
    default:
        return "N";
    }
}

/* The destination's value as a default, or "" when it is zero/NULL. */
static void default_text(const moe_flag *f, char *buf, size_t cap) {
    *buf = 0;
    if (f->def) {
        snprintf(buf, cap, "%s", f->def);
        return;
    }
    switch (f->type) {
    case MOE_FLAG_STRING: {
        const char *s = *(const char *const *)f->dst;
        if (s && *s) snprintf(buf, cap, "%s", s);
        break;
    }
    case MOE_FLAG_INT:
    case MOE_FLAG_MS:
        if (*(const int *)f->dst) snprintf(buf, cap, "%d", *(const int *)f->dst);
        break;
    case MOE_FLAG_INT64:
        if (*(const int64_t *)f->dst) snprintf(buf, cap, "%" PRId64, *(const int64_t *)f->dst);
        break;
    case MOE_FLAG_DOUBLE:
        if (*(const double *)f->dst != 0) snprintf(buf, cap, "%g", *(const double *)f->dst);
        break;
    case MOE_FLAG_FLOAT:
        if (*(const float *)f->dst != 0) snprintf(buf, cap, "%g", (double)*(const float *)f->dst);
        break;
    case MOE_FLAG_STRINGS:
        break;
    case MOE_FLAG_BOOL:
        if (*(const int *)f->dst) snprintf(buf, cap, "true");
        break;
    case MOE_FLAG_SIZE:
    case MOE_FLAG_UINT64:
        if (*(const uint64_t *)f->dst) snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)f->dst);
        break;
    }
}

void moe_flags_usage(const moe_flagset *fs, FILE *out) {
    fprintf(out, "usage: %s %s\n", fs->prog, fs->args ? fs->args : "[options]");
    if (fs->about && *fs->about)
        fprintf(out, "%s%s", fs->about, fs->about[strlen(fs->about) - 1] == '\n' ? "" : "\n");
    walk w = walk_start(fs->flags);
    for (const moe_flag *f; (f = walk_next(&w));) {
        char head[128], def[128], tail[320];
        const char *mv = metavar(f);
        int n = snprintf(head, sizeof head, "  %s%s%s%s%s", f->name, f->alias ? ", " : "",
                         f->alias ? f->alias : "", mv ? " " : "", mv ? mv : "");
        default_text(f, def, sizeof def);
        tail[0] = 0;
        if (f->env && *def)
            snprintf(tail, sizeof tail, " (%s, default %s)", f->env, def);
        else if (f->env)
            snprintf(tail, sizeof tail, " (%s)", f->env);
        else if (*def)
            snprintf(tail, sizeof tail, " (default %s)", def);
        if (n < 22)
            fprintf(out, "%-22s ", head);
        else
            fprintf(out, "%s\n%-22s ", head, "");
        size_t col = 23; /* lines after the first indented; the twin on a line of its own
                          * when the help's last line leaves no room */
        for (const char *h = f->help ? f->help : ""; *h; h++)
            if (*h == '\n')
                fprintf(out, "\n%-22s ", ""), col = 23;
            else
                fputc(*h, out), col++;
        if (*tail && col + strlen(tail) > 100)
            fprintf(out, "\n%-22s%s\n", "", tail);
        else
            fprintf(out, "%s\n", tail);
    }
    if (fs->footer && *fs->footer)
        fprintf(out, "%s%s", fs->footer, fs->footer[strlen(fs->footer) - 1] == '\n' ? "" : "\n");
}

int moe_flags_run(const moe_flagset *fs, int argc, char **argv, FILE *out, FILE *errs) {
    moe_err err;
    int rc = moe_flags_parse(fs, argc, argv, &err);
    if (rc == MOE_FLAGS_HELP) {
        moe_flags_usage(fs, out);
        return 0;
    }
    if (rc < 0) {
        fprintf(errs, "%s: error: %s (see %s --help)\n", fs->prog, err.msg, fs->prog);
        return 2;
    }
    return -1;
}
