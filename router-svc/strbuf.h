/* strbuf.h - a growing string: printf-appends, JSON strings. An allocation
 * failure sets oom and later appends do nothing; the caller checks oom once.
 *
 *     rt_buf b = {.s = malloc(256), .cap = 256};
 *     rt_buf_printf(&b, "{\"epoch\":%d}", 3);
 *     if (!b.s || b.oom) ... out of memory ...
 */
#ifndef RT_STRBUF_H
#define RT_STRBUF_H

#include <stddef.h>

typedef struct rt_buf {
    char *s;
    size_t n, cap;
    int oom;
} rt_buf;

void rt_buf_printf(rt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string. */
void rt_buf_json(rt_buf *b, const char *s);

#endif
