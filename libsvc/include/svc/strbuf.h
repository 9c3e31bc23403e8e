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

typedef struct moe_buf {
    char *s;
    size_t n, cap;
    int oom;
} moe_buf;

void moe_buf_printf(moe_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string. */
void moe_buf_json(moe_buf *b, const char *s);

#endif
