/*
 * moe/log.h - the one way library code reports something that is not an
 * error return: a warning about a worker that failed, a Redis link that came
 * back. Libraries (libmoe, libmesh, libsvc) call moe_log(); they never write
 * stderr themselves. A program decides where lines go by installing a
 * callback once at start-up (services install libsvc's JSON logger, see
 * svc/log.h); with none installed a line goes to stderr as "who: msg".
 *
 *     moe_log(MOE_LOG_WARN, "remote experts", "worker %s failed (%s)", addr, why);
 *
 *     // with fields, for a structured sink (a JSON logger renders them as keys)
 *     moe_log_kv kv[] = {{"worker", addr}, {"why", why}};
 *     moe_log_fields(MOE_LOG_WARN, "remote experts", kv, 2, "worker failed");
 *
 *     // a program that wants the lines elsewhere
 *     static void sink(void *ud, moe_log_level lv, const char *who, const char *msg,
 *                      const moe_log_kv *kv, size_t n_kv) { ... }
 *     moe_log_set_callback(sink, &state);
 */
#ifndef MOE_LOG_H
#define MOE_LOG_H

#include <stddef.h>

typedef enum moe_log_level {
    MOE_LOG_DEBUG = 0,
    MOE_LOG_INFO = 1,
    MOE_LOG_WARN = 2,
    MOE_LOG_ERROR = 3,
} moe_log_level;

/* A key=value field of a structured line; both strings borrowed for the call. */
typedef struct moe_log_kv {
    const char *key;
    const char *val;
} moe_log_kv;

/* A sink. Called from whichever thread logs, possibly several at once (it
 * must be thread-safe); msg, who and kv are borrowed for the call only. */
typedef void (*moe_log_fn)(void *ud, moe_log_level level, const char *who, const char *msg,
                           const moe_log_kv *kv, size_t n_kv);

/* Installs fn (NULL: back to the stderr default) with ud (borrowed until
 * replaced). Call it at start-up, before other threads log. */
void moe_log_set_callback(moe_log_fn fn, void *ud);

/* Formats a line and hands it to the callback (or stderr: "who: msg").
 * A message longer than 2000 bytes is cut. */
void moe_log(moe_log_level level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* moe_log with n_kv key=value fields (the default sink appends " key=val"). */
void moe_log_fields(moe_log_level level, const char *who, const moe_log_kv *kv, size_t n_kv,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* "debug", "info", "warn", "error". */
const char *moe_log_level_name(moe_log_level level);

#endif
