/* error.c - error codes and messages (see moe/error.h). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "moe/error.h"

static const char *const err_msgs[] = {
    [-MOE_OK] = "success",
    [-MOE_EINVAL] = "invalid argument",
    [-MOE_ENOMEM] = "out of memory",
    [-MOE_EIO] = "input/output error",
    [-MOE_EFORMAT] = "malformed input",
    [-MOE_ERANGE] = "value out of range",
    [-MOE_ENOTSUP] = "not supported",
    [-MOE_ENOTFOUND] = "not found",
    [-MOE_ENOSPC] = "no space left",
    [-MOE_ENUMERIC] = "non-finite number",
    [-MOE_EUNAVAIL] = "unavailable",
};

const char *moe_strerror(int code) {
    const int n = (int)(sizeof err_msgs / sizeof err_msgs[0]);
    return code <= 0 && code > -n ? err_msgs[-code] : "unknown error";
}

const char *moe_errno_str(int errnum, char *buf, size_t cap) {
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(errnum, buf, cap);
#else
    if (strerror_r(errnum, buf, cap) != 0) snprintf(buf, cap, "error %d", errnum);
    return buf;
#endif
}

int moe_err_set(moe_err *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Appends s to buf[*n..cap - 1), as much as fits. */
static void assert_put(char *buf, size_t *n, size_t cap, const char *s) {
    while (*s && *n < cap - 1) buf[(*n)++] = *s++;
}

/* The process is in an unknown state (a corrupt heap, a held lock): the line
 * is built in a fixed buffer on the stack and written to fd 2 with write(2) -
 * no malloc, no lock, no log callback - then the process aborts. */
void moe__assert_fail(const char *file, int line, const char *expr) {
    char buf[1024], num[16];
    size_t n = 0, k = sizeof num - 1;
    unsigned v = line < 0 ? 0u : (unsigned)line;
    num[k] = 0;
    do num[--k] = (char)('0' + v % 10), v /= 10;
    while (v && k > 0);
    assert_put(buf, &n, sizeof buf, file ? file : "?");
    assert_put(buf, &n, sizeof buf, ":");
    assert_put(buf, &n, sizeof buf, num + k);
    assert_put(buf, &n, sizeof buf, ": assertion failed: ");
    assert_put(buf, &n, sizeof buf, expr ? expr : "?");
    buf[n++] = '\n';
    for (size_t off = 0; off < n;) {
        ssize_t w = write(2, buf + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    abort();
}
