/*
 * svc/flags.h - command-line flags, each with an environment twin, and the
 * --help text, all from one table per binary (or per moectl subcommand).
 *
 * A flag's destination holds its default before parsing; parsing writes the
 * environment twin's value there, then the command line's (a flag wins over
 * its twin). Unknown flags, missing values, values of the wrong type or out
 * of range are errors that name the flag (or variable) and the bad value.
 *
 *     int threads = 1;
 *     uint64_t capacity = 0;
 *     const char *redis = NULL;
 *     const moe_flag flags[] = {
 *         {"--threads", "MOE_THREADS", MOE_FLAG_INT, &threads, "N", .help = "compute threads",
 *          .min = 1, .max = 256},
 *         {"--capacity", "MOE_CAPACITY", MOE_FLAG_SIZE, &capacity, "BYTES",
 *          .help = "memory for weights (K/M/G suffixes)", .def = "the whole model"},
 *         {"--redis", "MOE_REDIS", MOE_FLAG_STRING, &redis, "URL", .help = "redis://host:port",
 *          .alias = "--router"},
 *         {0}};
 *     const moe_flagset fs = {.prog = "expert-worker", .args = "--model PATH [options]",
 *                             .flags = flags};
 *     int rc = moe_flags_run(&fs, argc, argv, stdout, stderr);
 *     if (rc >= 0) return rc;   // --help printed (0), or an error reported (2)
 *
 * A row {.include = t} stands for the rows of the table t (ended by {0}): a
 * fragment that several tables share, e.g. the options of every moectl
 * command that runs a model:
 *
 *     const moe_flag run[] = {{"--threads", ...}, {"--workers", ...}, {0}};
 *     const moe_flag flags[] = {{"--tokens", ...}, {.include = run}, {0}};
 *
 * Syntax: "--name value", "--name=value"; a bool flag takes no value
 * ("--name") unless written "--name=false". "--" ends the flags. "-h" and
 * "--help" ask for the usage. Values: int/int64 decimal; double; bool
 * 1/0/true/false/yes/no/on/off; size a number with an optional K/M/G (x1024)
 * suffix and an optional "i"/"B" ("512M", "8GiB"); ms a duration in
 * milliseconds with an optional ms/s/m/h suffix ("1500", "1.5s"). A size or a
 * duration is decimal digits with an optional fraction, then the suffix: no
 * sign, exponent or hex ("-5s", "0x10", "1e3" are refused).
 */
#ifndef MOE_SVC_FLAGS_H
#define MOE_SVC_FLAGS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "moe/error.h"

typedef enum moe_flag_type {
    MOE_FLAG_STRING, /* dst: const char ** (points into argv or the environment) */
    MOE_FLAG_INT,    /* dst: int * */
    MOE_FLAG_INT64,  /* dst: int64_t * */
    MOE_FLAG_DOUBLE, /* dst: double * */
    MOE_FLAG_BOOL,   /* dst: int * (0 or 1) */
    MOE_FLAG_SIZE,   /* dst: uint64_t *, bytes */
    MOE_FLAG_MS,     /* dst: int *, milliseconds */
    MOE_FLAG_UINT64, /* dst: uint64_t *, decimal (seeds, ids) */
    MOE_FLAG_FLOAT,  /* dst: float * (finite in float) */
    MOE_FLAG_STRINGS /* dst: moe_flag_strs *; each use appends one value */
} moe_flag_type;

/* The destination of a MOE_FLAG_STRINGS flag: a flag given several times
 * ("--stop a --stop b"). The caller owns v (max entries); values point into
 * argv or the environment. More than max values is an error. */
typedef struct moe_flag_strs {
    const char **v;
    int max;
    int n; /* values so far (0 before parsing) */
} moe_flag_strs;

/* One row of a table; a row with neither name nor include ends it. Borrowed
 * by the parser. */
typedef struct moe_flag moe_flag;
struct moe_flag {
    const char *name; /* "--threads" */
    const char *env;  /* "MOE_THREADS", or NULL for no twin */
    moe_flag_type type;
    void *dst;           /* the destination, holding the default (see moe_flag_type) */
    const char *metavar; /* the value's name in --help ("N", "ADDR"); NULL: from the type */
    const char *help;    /* one sentence; --help appends the twin and the default */
    const char *alias;   /* (optional) another spelling ("-n", "--router") */
    const char *def;     /* (optional) the default as --help says it ("all", "host:pid");
                          * NULL: the destination's value, if it is not zero or NULL */
    double min, max;     /* (optional) a range for numbers, checked when min < max */
    /* (optional) a further check of the parsed value; returns 0, or -1 with a
     * reason in why (cap bytes), reported with the flag and the value */
    int (*check)(const void *dst, char *why, size_t cap);
    /* (optional) a string flag that must be given, non-empty (a strings flag:
     * at least once): what it names, for the error "no NOUN (--flag or ENV)".
     * On another type it is a bug (MOE_ASSERT). */
    const char *required;
    /* (optional) instead of a flag: this row stands for the rows of another
     * table (ended by {0}; borrowed; tables nest at most 4 deep: deeper is a
     * bug, MOE_ASSERT) */
    const moe_flag *include;
};

/* A binary's (or subcommand's) flags; borrowed by the parser. */
typedef struct moe_flagset {
    const char *prog;   /* "expert-worker", "moectl info" */
    const char *args;   /* after "usage: PROG ": "--model PATH [options]" */
    const char *about;  /* (optional) lines printed under the usage line */
    const char *footer; /* (optional) lines printed after the flags */
    const moe_flag *flags;
    int max_pos;      /* positional arguments allowed (0: none) */
    const char **pos; /* receives them (max_pos entries), borrowed from argv */
    int *n_pos;       /* receives their count (may be NULL when max_pos is 0) */
} moe_flagset;

/* What moe_flags_parse returns besides 0 and MOE_E*: --help or -h was given. */
#define MOE_FLAGS_HELP 1

/* Applies the environment twins, then argv[1..argc-1]. Returns 0,
 * MOE_FLAGS_HELP (nothing written then), or MOE_EINVAL with err naming the
 * flag (or variable) and the bad value. On an error some destinations may
 * already hold new values. */
int moe_flags_parse(const moe_flagset *fs, int argc, char **argv, moe_err *err);

/* Writes the usage generated from the table: usage line, about, one entry
 * per flag (metavar, help, "(MOE_X, default D)"; included tables' flags
 * where the include row stands), footer. */
void moe_flags_usage(const moe_flagset *fs, FILE *out);

/* moe_flags_parse for a main(): returns -1 when the program goes on; else
 * the exit status after writing the usage to out (--help: 0) or
 * "PROG: error: MSG" to errs (2). */
int moe_flags_run(const moe_flagset *fs, int argc, char **argv, FILE *out, FILE *errs);

/* Parses value into f->dst as moe_flags_parse does for one flag (range and
 * check included); who names it in the error ("--seed", "MOE_SEED").
 * Returns 0 or MOE_EINVAL. For programs that walk argv themselves. */
int moe_flag_set(const moe_flag *f, const char *who, const char *value, moe_err *err);

/* Parses a size ("512M", "8GiB", "1024"): the value parsers, for programs
 * that read one elsewhere. Return 0 or MOE_EINVAL. */
int moe_flags_parse_size(const char *s, uint64_t *out);
/* Parses a duration in ms ("1500", "250ms", "1.5s", "2m", "1h"). */
int moe_flags_parse_ms(const char *s, int64_t *out);

#endif
