/* strbuf.c - a growing string for JSON and metrics text (see strbuf.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/error.h"

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

/* Bytes of the whole UTF-8 sequence that starts at s[i] (1 to 4), or 0. */
static size_t utf8_len(const unsigned char *s, size_t i, size_t n) {
    const unsigned char c = s[i];
    size_t need = c < 0x80             ? 1
                  : (c & 0xE0) == 0xC0 ? 2
                  : (c & 0xF0) == 0xE0 ? 3
                  : (c & 0xF8) == 0xF0 ? 4
                                       : 0;
    if (!need || i + need > n) return 0;
    for (size_t k = 1; k < need; k++)
        if ((s[i + k] & 0xC0) != 0x80) return 0;
    return need;
}

void moe_buf_json_n(moe_buf *b, const char *str, size_t n, int flags) {
    const unsigned char *s = (const unsigned char *)str;
    moe_buf_printf(b, "\"");
    for (size_t i = 0; i < n && !b->oom;) {
        const size_t k = flags & MOE_JSON_UTF8_FIX ? utf8_len(s, i, n) : 1;
        if (!k)
            moe_buf_printf(b, "\\ufffd"), i++;
        else if (k > 1)
            moe_buf_printf(b, "%.*s", (int)k, (const char *)s + i), i += k;
        else if (s[i] == '"' || s[i] == '\\')
            moe_buf_printf(b, "\\%c", s[i]), i++;
        else if (s[i] < 0x20)
            moe_buf_printf(b, "\\u%04x", s[i]), i++;
        else
            moe_buf_printf(b, "%c", s[i]), i++;
    }
    moe_buf_printf(b, "\"");
}

void moe_buf_json(moe_buf *b, const char *s) {
    moe_buf_json_n(b, s, strlen(s), 0);
}

int moe_json_write(FILE *f, const char *s, size_t n, int flags) {
    moe_buf b = {.s = malloc(n + 64), .cap = n + 64};
    int rc = 0;
    if (!b.s) return MOE_ENOMEM;
    moe_buf_json_n(&b, s, n, flags);
    if (b.oom)
        rc = MOE_ENOMEM;
    else if (fwrite(b.s, 1, b.n, f) != b.n)
        rc = MOE_EIO;
    free(b.s);
    return rc;
}
