/*
 * moe/error.h - one error convention for all of libmoe.
 *
 * Every fallible function returns int: 0 on success, a negative MOE_E* code on
 * failure. moe_strerror() turns a code into a message. Functions that can say
 * more (a GGUF parse error: which field, at which offset) also fill a caller
 * supplied moe_err buffer.
 *
 *     moe_err err;
 *     moe_gguf *g;
 *     int rc = moe_gguf_open(&g, "model.gguf", &err);
 *     if (rc < 0) fprintf(stderr, "error: %s\n", err.msg);
 *
 * Two kinds of failure: a broken invariant (a bug) aborts with file and line
 * through MOE_ASSERT; bad input or an exhausted resource is a returned status.
 * Library code never calls exit().
 */
#ifndef MOE_ERROR_H
#define MOE_ERROR_H

#include <stddef.h>

enum moe_errno {
    MOE_OK = 0,
    MOE_EINVAL = -1,    /* invalid argument */
    MOE_ENOMEM = -2,    /* out of memory */
    MOE_EIO = -3,       /* read/write/open/mmap failed */
    MOE_EFORMAT = -4,   /* malformed file or message */
    MOE_ERANGE = -5,    /* value out of range (a count, an offset, a token id) */
    MOE_ENOTSUP = -6,   /* valid but not supported (an architecture, a dtype) */
    MOE_ENOTFOUND = -7, /* a key or tensor is missing */
    MOE_ENOSPC = -8,    /* a fixed-size resource is full (KV cache, batch) */
    MOE_ENUMERIC = -9,  /* NaN or Inf where a finite number is required */
    MOE_EUNAVAIL = -10, /* a remote backend is unavailable */
};

/* Returns a static message for a MOE_E* code. */
const char *moe_strerror(int code);

/* errno's message, thread-safe (strerror_r): writes it into buf (cap bytes,
 * "error N" if the C library has none) and returns buf or a static string. */
const char *moe_errno_str(int errnum, char *buf, size_t cap);

/* An error with detail. Functions that take a moe_err * fill it on failure
 * (code and a human readable message); passing NULL is allowed. */
typedef struct moe_err {
    int code;
    char msg[512];
} moe_err;

/* Fills err (if non-NULL) with code and a printf-formatted message; returns
 * code, so it can be used as `return moe_err_set(err, MOE_EFORMAT, ...)`. */
int moe_err_set(moe_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Aborts with file and line: for broken invariants only, never for input.
 * The line "file:line: assertion failed: x" goes straight to fd 2 (write(2)
 * from a stack buffer: no malloc, no lock, not through the log callback). */
#define MOE_ASSERT(x)                                                                              \
    do {                                                                                           \
        if (!(x)) moe__assert_fail(__FILE__, __LINE__, #x);                                        \
    } while (0)

void moe__assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));

#endif
