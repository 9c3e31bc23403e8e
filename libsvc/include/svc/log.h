/*
 * svc/log.h - a service's log: one JSON object per line on stderr (or text
 * for humans), with a level filter, installed as libmoe's log callback so
 * that libmoe, libmesh and the service's own code all log the same way.
 *
 *     const char *level = "info", *format = "json";
 *     moe_flag flags[] = {..., MOE_LOGGER_FLAGS(&level, &format), {0}};
 *     moe_flagset fs = {.prog = "router-svc", .flags = flags, ...};
 *     int status = moe_logger_start(&fs, argc, argv, &level, &format);
 *     if (status >= 0) return status;        // --help, or a bad flag
 *     moe_log(MOE_LOG_INFO, "expert-worker", "joined %s", url);
 *     moe_log_kv kv[] = {{"worker", id}, {"epoch", "7"}};
 *     moe_log_fields(MOE_LOG_WARN, "router-svc", kv, 2, "worker left");
 *
 * A JSON line: {"ts":"2026-11-22T14:40:01.123Z","level":"warn",
 * "component":"router-svc","msg":"worker left","worker":"w1","epoch":"7"}
 * (fields after msg, in order; every value a JSON string). A text line:
 * "2026-11-22T14:40:01.123Z warn router-svc: worker left worker=w1 epoch=7".
 * Lines are written whole (one fwrite under a mutex, then a flush), so
 * threads never interleave.
 */
#ifndef MOE_SVC_LOG_H
#define MOE_SVC_LOG_H

#include <stdio.h>

#include "moe/error.h"
#include "moe/log.h"
#include "svc/flags.h"

typedef struct moe_logger_cfg {
    FILE *out;          /* borrowed for the process's life; NULL: stderr */
    const char *level;  /* "debug", "info" (NULL), "warn", "error" */
    const char *format; /* "json" (NULL) or "text" */
} moe_logger_cfg;

/* Configures the process's logger and installs it as libmoe's log callback
 * (moe_log_set_callback). Call once at start-up, before threads log; may be
 * called again (tests). Returns 0 or MOE_EINVAL (a bad level or format,
 * named in err). */
int moe_logger_init(const moe_logger_cfg *cfg, moe_err *err);

/* A service's start: moe_flags_run over fs (whose table has the
 * MOE_LOGGER_FLAGS rows writing *level and *format), then moe_logger_init
 * on stderr with them. Returns -1 when the service goes on, else its exit
 * status (0 after --help; 2 after a bad flag, reported on stderr). */
int moe_logger_start(const moe_flagset *fs, int argc, char **argv, const char *const *level,
                     const char *const *format);

/* Parses "debug" / "info" / "warn" (or "warning") / "error"; 0 or MOE_EINVAL. */
int moe_logger_parse_level(const char *s, moe_log_level *out);

/* moe_flag checks for the two flags below (dst: const char **). */
int moe_logger_check_level(const void *dst, char *why, size_t cap);
int moe_logger_check_format(const void *dst, char *why, size_t cap);

/* The --log-level and --log-format rows of a flag table (MOE_LOG_LEVEL,
 * MOE_LOG_FORMAT); level and format are const char ** holding defaults. */
#define MOE_LOGGER_FLAGS(level, format)                                                            \
    {"--log-level",                                                                                \
     "MOE_LOG_LEVEL",                                                                              \
     MOE_FLAG_STRING,                                                                              \
     (level),                                                                                      \
     "LEVEL",                                                                                      \
     "debug, info, warn or error",                                                                 \
     .check = moe_logger_check_level},                                                             \
    {                                                                                              \
        "--log-format", "MOE_LOG_FORMAT", MOE_FLAG_STRING, (format), "F",                          \
            "json (one object a line) or text", .check = moe_logger_check_format                   \
    }

#endif
