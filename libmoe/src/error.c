/* error.c - error codes and messages (see moe/error.h). */
#include <stdarg.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#include "moe/error.h"
#include "moe/log.h"

const char *moe_strerror(int code) {
    switch (code) {
    case MOE_OK:
        return "success";
    case MOE_EINVAL:
        return "invalid argument";
    case MOE_ENOMEM:
        return "out of memory";
    case MOE_EIO:
        return "input/output error";
    case MOE_EFORMAT:
        return "malformed input";
    case MOE_ERANGE:
        return "value out of range";
    case MOE_ENOTSUP:
        return "not supported";
    case MOE_ENOTFOUND:
        return "not found";
    case MOE_ENOSPC:
        return "no space left";
    case MOE_ENUMERIC:
        return "non-finite number";
    case MOE_EUNAVAIL:
        return "unavailable";
    default:
        return "unknown error";
    }
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
