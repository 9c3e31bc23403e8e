/* strbuf.c - a growing string for JSON and metrics text (see strbuf.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "svc/strbuf.h"

void moe_buf_printf(moe_buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)k + 1;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

void moe_buf_json(moe_buf *b, const char *s) {
    moe_buf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            moe_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            moe_buf_printf(b, "\\u%04x", *p);
        else
            moe_buf_printf(b, "%c", *p);
    }
    moe_buf_printf(b, "\"");
}

