/*
 * httpd_parse.h - the admin HTTP server's request-head parser (private to
 * libsvc; httpd.c serves with it, tests/fuzz/fuzz_httpd.c fuzzes it).
 *
 *     moe__http_head h = {0};               // once per request
 *     int r = moe__http_parse_head(buf, len, 16384, 1 << 20, &h);
 *     // 0: more bytes needed (call again with the longer buffer and the
 *     //    same h: it resumes where it stopped)
 *     // 1: the head is buf[0, h.head_len), the body the next h.body_len bytes;
 *     //    buf + h.off_method, buf + h.off_path are NUL-terminated strings
 *     // >= 400: the status refusing the request
 */
#ifndef MOE_SVC_HTTPD_PARSE_H
#define MOE_SVC_HTTPD_PARSE_H

#include <stddef.h>

enum { MOE__HTTP_GET, MOE__HTTP_HEAD, MOE__HTTP_POST };

/* One request's head, as the parser leaves it. */
typedef struct moe__http_head {
    size_t scanned;  /* in/out: bytes known to hold no end of head (0 to start) */
    size_t head_len; /* request line + header fields + the blank line */
    size_t body_len; /* Content-Length (0 when none) */
    size_t off_method, off_path, off_query; /* into the buffer; off_query 0: no '?' */
    int method;                             /* MOE__HTTP_*; GET until the method is known */
    int minor;                              /* HTTP/1.<minor>, once the version is read */
    int keep_alive;                         /* by the version and Connection */
    int expect_continue;                    /* "Expect: 100-continue" */
} moe__http_head;

/* Parses the header block at the start of b[0, n) once it is complete (after
 * up to 8 bytes of empty lines, which RFC 9112 lets a server skip; more are a
 * 400); the bytes are not
 * trusted. Returns 0 if more bytes are needed (h->scanned says how far it
 * looked, so a client trickling bytes costs no rescans), 1 with h's fields set
 * and the request line cut into NUL-terminated strings in place (b is
 * modified only then), or the status refusing the request: 400 malformed
 * (any control byte but CR, LF and TAB in the head, at once), 405 a method
 * other than GET, HEAD and POST, 413 a Content-Length above max_body, 431 no
 * end of head within max_head bytes, 501 Transfer-Encoding, 505 an HTTP major
 * version other than 1. Reads b[0, min(n, max_head)) only. */
int moe__http_parse_head(char *b, size_t n, size_t max_head, size_t max_body, moe__http_head *h);

#endif
