/* log.c - the log hook libraries report through (see moe/log.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "moe/log.h"
#include "moe/vocab.h"

/* Set once at start-up (before other threads log); read on every line. */
static moe_log_fn g_fn;
static void *g_ud;

void moe_log_set_callback(moe_log_fn fn, void *ud) {
    __atomic_store_n(&g_ud, ud, __ATOMIC_RELAXED);
    __atomic_store_n(&g_fn, fn, __ATOMIC_RELEASE);
}

const char *moe_log_level_name(moe_log_level level) {
    static const char *const names[] = {[MOE_LOG_DEBUG] = "debug",
                                        [MOE_LOG_INFO] = "info",
                                        [MOE_LOG_WARN] = "warn",
                                        [MOE_LOG_ERROR] = "error"};
    return (unsigned)level < sizeof names / sizeof names[0] ? names[level] : "error";
}

static void emit(moe_log_level level, const char *who, const moe_log_kv *kv, size_t n_kv,
                 const char *fmt, va_list ap) {
    char msg[2048];
    /* a longer message is cut at a character boundary, never inside one */
    if (vsnprintf(msg, sizeof msg, fmt, ap) >= (int)sizeof msg)
        msg[moe_utf8_complete(msg, strlen(msg))] = 0;
    moe_log_fn fn = __atomic_load_n(&g_fn, __ATOMIC_ACQUIRE);
    if (fn) {
        fn(__atomic_load_n(&g_ud, __ATOMIC_RELAXED), level, who ? who : "", msg, kv, n_kv);
        return;
    }
    /* the default sink: one write per line, so threads do not interleave */
    char line[4096];
    int n = snprintf(line, sizeof line, "%s%s%s", who ? who : "", who && *who ? ": " : "", msg);
    for (size_t i = 0; i < n_kv && n >= 0 && (size_t)n < sizeof line; i++)
        n += snprintf(line + n, sizeof line - (size_t)n, " %s=%s", kv[i].key, kv[i].val);
    if (n < 0) return;
    if ((size_t)n >= sizeof line - 1) n = (int)moe_utf8_complete(line, sizeof line - 2);
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr);
}

void moe_log(moe_log_level level, const char *who, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(level, who, NULL, 0, fmt, ap);
    va_end(ap);
}

void moe_log_fields(moe_log_level level, const char *who, const moe_log_kv *kv, size_t n_kv,
                    const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    emit(level, who, kv, n_kv, fmt, ap);
    va_end(ap);
}
