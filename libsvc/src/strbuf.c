/* strbuf.c - a growing string for JSON and metrics text (see strbuf.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/error.h"

#include "svc/strbuf.h"

/* Room for more bytes after b->n plus a NUL; 0, or -1 with b->oom set. */
static int buf_reserve(moe_buf *b, size_t more) {
    if (b->cap - b->n > more) return 0;
    const size_t cap = b->cap * 2 + more + 1;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void moe_buf_printf(moe_buf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* a zeroed buffer ({0}) has no storage yet: NULL + 0 is undefined */
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        if (buf_reserve(b, (size_t)k) < 0) return;
    }
}

void moe_buf_append(moe_buf *b, const void *p, size_t n) {
    if (b->oom || n == 0 || buf_reserve(b, n) < 0) return;
    memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
}

/* Bytes of the whole, well-formed UTF-8 sequence that starts at s[i] (1 to
 * 4), or 0: a continuation or C0, C1, F5..FF lead byte, an overlong form, a
 * surrogate (U+D800..U+DFFF), a value above U+10FFFF or a cut sequence
 * (Unicode's table 3-7 of well-formed byte sequences). */
static size_t utf8_len(const unsigned char *s, size_t i, size_t n) {
    const unsigned char c = s[i];
    unsigned char lo = 0x80, hi = 0xBF; /* the bounds of the second byte */
    size_t need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (i + need > n || s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k < need; k++)
        if ((s[i + k] & 0xC0) != 0x80) return 0;
    return need;
}

size_t moe_utf8_repair(char *out, size_t cap, const char *str) {
    static const char fffd[] = "\xEF\xBF\xBD";
    const unsigned char *s = (const unsigned char *)str;
    const size_t n = strlen(str);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        const size_t k = utf8_len(s, i, n);
        const char *src = k ? (const char *)s + i : fffd;
        const size_t len = k ? k : 3;
        if (o + len + 1 > cap) break;
        memcpy(out + o, src, len);
        o += len;
        i += k ? k : 1;
    }
    if (cap) out[o] = 0;
    return o;
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
