/* test_svc_log.c - the service kit's logs (JSON lines, escaping, level
 * filter, the libmoe callback, UTF-8 repair, text lines), MOE_ASSERT and the
 * stop signals. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "moe/log.h"
#include "router_internal.h"
#include "svc/log.h"
#include "svc/signal.h"
#include "svc/strbuf.h"
#include "test.h"

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

/* ==== Levels, UTF-8, assertions, signals ===================================== */

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
    const moe_log_kv kv[] = {{"worker", "w1\n2026-01-01T00:00:00.000Z error router-svc: forged"},
                             {"prompt", "hi\" end=stop tenant=\"b"},
                             {"plain", "a\\b"}};
    moe_log_fields(MOE_LOG_WARN, "x", kv, 3, "left\r\tnow \x1b[31m back\\slash");
    fflush(f);
    ASSERT(strchr(text, '\n') == text + len - 1); /* one line */
    /* a value with a space, '=' or '"' is quoted (logfmt): it cannot pass
     * for more fields */
    ASSERT_STR_CONTAINS(text, " warn x: left\\r\\tnow \\x1b[31m back\\\\slash worker=\"w1\\n2026");
    ASSERT_STR_CONTAINS(text, " prompt=\"hi\\\" end=stop tenant=\\\"b\" plain=a\\\\b\n");
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
    int st = test_run_child(assert_fails_in_child, out, sizeof out);
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
    int st = test_run_child(stop_then_signals, out, sizeof out);
    ASSERT_STR_EQ(out, "alive\n");
    ASSERT(WIFEXITED(st));
    ASSERT_EQ_INT(WEXITSTATUS(st), 128 + SIGTERM);
}
