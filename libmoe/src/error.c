/* error.c - error codes and messages (see moe/error.h). */
#include <stdarg.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#include "moe/error.h"
#include "moe/log.h"

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

void moe__assert_fail(const char *file, int line, const char *expr) {
    moe_log(MOE_LOG_ERROR, "moe", "%s:%d: assertion failed: %s", file, line, expr);
    fflush(NULL);
    abort();
}
