/* log.c - JSON or text log lines, installed as libmoe's log callback (see svc/log.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "svc/clock.h"
#include "svc/log.h"
#include "svc/strbuf.h"

static struct {
    pthread_mutex_t mu;
    FILE *out;
    moe_log_level min;
    int text;
} g_log = {.mu = PTHREAD_MUTEX_INITIALIZER};

int moe_logger_parse_level(const char *s, moe_log_level *out) {
    static const struct {
        const char *name;
        moe_log_level level;
    } names[] = {{"debug", MOE_LOG_DEBUG},
                 {"info", MOE_LOG_INFO},
                 {"warn", MOE_LOG_WARN},
                 {"warning", MOE_LOG_WARN},
                 {"error", MOE_LOG_ERROR}};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(s, names[i].name)) return *out = names[i].level, 0;
    return MOE_EINVAL;
}

int moe_logger_check_level(const void *dst, char *why, size_t cap) {
    moe_log_level l;
    if (moe_logger_parse_level(*(const char *const *)dst, &l) == 0) return 0;
    snprintf(why, cap, "not a log level (debug, info, warn, error)");
    return -1;
}

int moe_logger_check_format(const void *dst, char *why, size_t cap) {
    const char *s = *(const char *const *)dst;
    if (s && (!strcmp(s, "json") || !strcmp(s, "text"))) return 0;
    snprintf(why, cap, "not a log format (json, text)");
    return -1;
}

/* Appends s as a JSON string, invalid UTF-8 repaired (peers' ids, Redis
 * errors: any bytes). */
static void put_json(moe_buf *b, const char *s) {
    moe_buf_json_n(b, s, strlen(s), MOE_JSON_UTF8_FIX);
}

/* Appends s for a text line: '\\' and control characters escaped (\n, \r,
 * \t, \xNN), so that no value can end the line or forge another. */
static void put_text_n(moe_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    for (; p < end && !b->oom; p++) {
        if (*p == '\\')
            moe_buf_printf(b, "\\\\");
        else if (*p == '\n')
            moe_buf_printf(b, "\\n");
        else if (*p == '\r')
            moe_buf_printf(b, "\\r");
        else if (*p == '\t')
            moe_buf_printf(b, "\\t");
        else if (*p < 0x20 || *p == 0x7f)
            moe_buf_printf(b, "\\x%02x", *p);
        else
            moe_buf_printf(b, "%c", *p);
    }
}

static void put_text(moe_buf *b, const char *s) {
    put_text_n(b, s, strlen(s));
}

/* Appends a field's value for a text line: as put_text, in double quotes
 * (logfmt: '"' escaped) when it holds a space, '=' or '"', so that a value
 * (a peer's error, a logged prompt) cannot pass for more fields. */
static void put_value(moe_buf *b, const char *s) {
    if (!s[strcspn(s, " =\"")]) {
        put_text(b, s);
        return;
    }
    moe_buf_printf(b, "\"");
    for (const char *p = s; *p && !b->oom;) {
        const size_t n = strcspn(p, "\"");
        put_text_n(b, p, n);
        p += n;
        if (*p == '"') moe_buf_printf(b, "\\\""), p++;
    }
    moe_buf_printf(b, "\"");
}

/* The callback: renders one line, writes it whole. */
static void sink(void *ud, moe_log_level level, const char *who, const char *msg,
                 const moe_log_kv *kv, size_t n_kv) {
    (void)ud;
    if (level < __atomic_load_n(&g_log.min, __ATOMIC_RELAXED)) return;
    char ts[32];
    moe_log_stamp(ts, sizeof ts);
    moe_buf b = {.s = malloc(512), .cap = 512};
    if (!b.s) return;
    if (g_log.text) {
        moe_buf_printf(&b, "%s %s ", ts, moe_log_level_name(level));
        put_text(&b, who);
        moe_buf_printf(&b, "%s", *who ? ": " : "");
        put_text(&b, msg);
        for (size_t i = 0; i < n_kv; i++) {
            moe_buf_printf(&b, " ");
            put_text(&b, kv[i].key);
            moe_buf_printf(&b, "=");
            put_value(&b, kv[i].val ? kv[i].val : "");
        }
    } else {
        moe_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":", ts,
                       moe_log_level_name(level));
        put_json(&b, who);
        moe_buf_printf(&b, ",\"msg\":");
        put_json(&b, msg);
        for (size_t i = 0; i < n_kv; i++) {
            moe_buf_printf(&b, ",");
            put_json(&b, kv[i].key);
            moe_buf_printf(&b, ":");
            put_json(&b, kv[i].val ? kv[i].val : "");
        }
        moe_buf_printf(&b, "}");
    }
    moe_buf_printf(&b, "\n");
    if (!b.oom) {
        pthread_mutex_lock(&g_log.mu);
        FILE *out = g_log.out ? g_log.out : stderr;
        fwrite(b.s, 1, b.n, out);
        fflush(out);
        pthread_mutex_unlock(&g_log.mu);
    }
    free(b.s);
}

int moe_logger_init(const moe_logger_cfg *cfg, moe_err *err) {
    moe_log_level min = MOE_LOG_INFO;
    if (cfg->level && moe_logger_parse_level(cfg->level, &min) < 0)
        return moe_err_set(err, MOE_EINVAL, "log level '%s' is not debug, info, warn or error",
                           cfg->level);
    if (cfg->format && strcmp(cfg->format, "json") && strcmp(cfg->format, "text"))
        return moe_err_set(err, MOE_EINVAL, "log format '%s' is not json or text", cfg->format);
    pthread_mutex_lock(&g_log.mu);
    g_log.out = cfg->out;
    g_log.text = cfg->format && !strcmp(cfg->format, "text");
    __atomic_store_n(&g_log.min, min, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g_log.mu);
    moe_log_set_callback(sink, NULL);
    return 0;
}
