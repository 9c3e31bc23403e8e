/* strbuf.h - a growing string: printf-appends, JSON strings. An allocation
 * failure sets oom and later appends do nothing; the caller checks oom once.
 *
 *     moe_buf b = {.s = malloc(256), .cap = 256};
 *     moe_buf_printf(&b, "{\"epoch\":%d}", 3);
 *     if (!b.s || b.oom) ... out of memory ...
 */
#ifndef MOE_STRBUF_H
#define MOE_STRBUF_H

#include <stddef.h>
#include <stdio.h>

typedef struct moe_buf {
    char *s;
    size_t n, cap;
    int oom;
} moe_buf;

void moe_buf_printf(moe_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends n raw bytes (kept NUL-terminated after them). */
void moe_buf_append(moe_buf *b, const void *p, size_t n);
/* Appends s as a quoted JSON string: '"' and '\\' escaped, bytes below 0x20
 * as \u00XX, everything else as it is (the tree's one JSON string escaper). */
void moe_buf_json(moe_buf *b, const char *s);

/* With moe_buf_json_n: bytes that are not part of a whole, well-formed UTF-8
 * sequence (cut, overlong, a surrogate, above U+10FFFF) are written as
 * \ufffd, one per byte (for text cut at any byte, such as token pieces, and
 * for text a peer sent). */
#define MOE_JSON_UTF8_FIX 1

/* moe_buf_json for n bytes of s (NULs included, as \u0000); flags: 0 or
 * MOE_JSON_UTF8_FIX. */
void moe_buf_json_n(moe_buf *b, const char *s, size_t n, int flags);

/* Copies the string s into out (cap bytes, NUL included) as well-formed
 * UTF-8: a byte that is not part of a well-formed sequence becomes U+FFFD
 * (EF BF BD); a string too long is cut at a character boundary. Returns the
 * length written (< cap; 0 when cap is 0). */
size_t moe_utf8_repair(char *out, size_t cap, const char *s);

/* Writes n bytes of s to f as moe_buf_json_n does. Returns 0, or
 * MOE_ENOMEM / MOE_EIO. */
int moe_json_write(FILE *f, const char *s, size_t n, int flags);

#endif
