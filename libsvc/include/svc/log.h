/*
 * svc/log.h - a service's log: one JSON object per line on stderr (or text
 * for humans), with a level filter, installed as libmoe's log callback so
 * that libmoe, libmesh and the service's own code all log the same way.
 *
 *     moe_logger_init(&(moe_logger_cfg){.level = "info"}, &err);  // or moe_svc_start
 *     moe_log(MOE_LOG_INFO, "expert-worker", "joined %s", url);
 *     moe_log_kv kv[] = {{"worker", id}, {"epoch", "7"}};
 *     moe_log_fields(MOE_LOG_WARN, "router-svc", kv, 2, "worker left");
 *
 * A JSON line: {"ts":"2026-11-22T14:40:01.123Z","level":"warn",
 * "component":"router-svc","msg":"worker left","worker":"w1","epoch":"7"}
 * (fields after msg, in order; every value a JSON string). A text line:
 * "2026-11-22T14:40:01.123Z warn router-svc: worker left worker=w1 epoch=7"
 * ('\\' and control characters escaped as \\, \n, \r, \t, \xNN, so a value
 * never starts a line of its own). JSON strings have invalid UTF-8 replaced
 * by \ufffd.
 * Lines are written whole (one fwrite under a mutex, then a flush), so
 * threads never interleave.
 */
#ifndef MOE_SVC_LOG_H
#define MOE_SVC_LOG_H

#include <stdio.h>

#include "moe/error.h"
#include "moe/log.h"

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

/* Parses "debug" / "info" / "warn" (or "warning") / "error"; 0 or MOE_EINVAL. */
int moe_logger_parse_level(const char *s, moe_log_level *out);

/* moe_flag checks for --log-level and --log-format (dst: const char **),
 * the flags moe_svc_start adds (svc/start.h). */
int moe_logger_check_level(const void *dst, char *why, size_t cap);
int moe_logger_check_format(const void *dst, char *why, size_t cap);

#endif
