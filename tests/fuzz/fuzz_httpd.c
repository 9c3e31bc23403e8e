/* fuzz_httpd.c - libFuzzer target: the admin HTTP server's request-head
 * parser (libsvc/src/httpd_parse.c) on bytes as a client sends them. The
 * first byte picks the head limit (bits 0-1: 16 KiB as served, or 64, 256,
 * 1024 bytes to reach the 431 path within -max_len) and the size of the
 * pieces the bytes arrive in (bits 2-7); the rest is the connection's input,
 * parsed request after request as httpd.c does (a parsed request and its body
 * are dropped, the next one parsed from what follows).
 *
 * Each request is parsed twice: in one call on all the bytes, and piece by
 * piece with the resume state carried over, as a trickling client makes the
 * server do: both give the same answer and the same fields. A refusal is one
 * of the statuses the header names; a parsed head lies within the bytes and
 * the limit, its method, path and query are NUL-terminated strings in it that
 * keep the promises httpd.h makes the handler (a path starting with '/',
 * no '?' and no byte outside 0x21..0x7e; the method GET, HEAD or POST), and
 * its body is at most the body limit. Never a read outside the bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httpd_parse.h"

#include "fuzz.h"

#define MAX_BODY (1024 * 1024)

static int status_known(int r) {
    return r == 0 || r == 1 || r == 400 || r == 405 || r == 413 || r == 431 || r == 501 || r == 505;
}

static void check_head(const char *b, size_t n, size_t max_head, const moe__http_head *h) {
    CHECK(h->head_len > 0 && h->head_len <= n && h->head_len <= max_head);
    CHECK(h->body_len <= MAX_BODY);
    CHECK(h->off_method < h->off_path && h->off_path < h->head_len);
    CHECK(h->off_query == 0 || (h->off_query > h->off_path && h->off_query < h->head_len));
    CHECK(h->minor >= 0 && h->minor <= 9);
    CHECK(h->keep_alive == 0 || h->keep_alive == 1);
    CHECK(h->expect_continue == 0 || h->expect_continue == 1);
    const char *m = memchr(b + h->off_method, '\0', h->head_len - h->off_method);
    CHECK(m != NULL);
    static const char *const names[] = {"GET", "HEAD", "POST"};
    CHECK(h->method >= MOE__HTTP_GET && h->method <= MOE__HTTP_POST);
    CHECK(!strcmp(b + h->off_method, names[h->method]));
    const char *path = b + h->off_path;
    const char *pe = memchr(path, '\0', h->head_len - h->off_path);
    CHECK(pe != NULL && path[0] == '/');
    for (const char *p = path; p < pe; p++)
        CHECK((unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f && *p != '?');
    if (h->off_query) {
        CHECK(b[h->off_query - 1] == '\0'); /* the cut '?' */
        CHECK(memchr(b + h->off_query, '\0', h->head_len - h->off_query) != NULL);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const size_t heads[] = {16 * 1024, 64, 256, 1024};
    const size_t max_head = heads[data[0] & 3];
    const size_t piece = 1 + (size_t)(data[0] >> 2); /* 1..64 bytes */
    const size_t n = size - 1;
    /* exactly n bytes each, so that ASan sees a read past them */
    char *one = malloc(n ? n : 1), *inc = malloc(n ? n : 1);
    if (!one || !inc) abort();
    memcpy(one, data + 1, n);
    memcpy(inc, data + 1, n);
    size_t off = 0;
    for (int k = 0; k < 64 && off < n; k++) {
        const size_t len = n - off;
        moe__http_head h1 = {0}, h2 = {0};
        const int r1 = moe__http_parse_head(one + off, len, max_head, MAX_BODY, &h1);
        CHECK(status_known(r1));
        int r2 = 0;
        for (size_t got = piece < len ? piece : len;; got = got + piece < len ? got + piece : len) {
            r2 = moe__http_parse_head(inc + off, got, max_head, MAX_BODY, &h2);
            CHECK(status_known(r2));
            CHECK(h2.scanned <= got);
            if (r2 != 0 || got == len) break;
        }
        CHECK(r1 == r2);
        if (r1 != 1) {
            CHECK(r1 != 0 ||
                  (len < max_head && h1.scanned == len)); /* 0: wants more, can take it */
            CHECK(r1 != 431 || len >= max_head);
            break;
        }
        CHECK(h1.head_len == h2.head_len && h1.body_len == h2.body_len);
        CHECK(h1.off_method == h2.off_method && h1.off_path == h2.off_path &&
              h1.off_query == h2.off_query);
        CHECK(h1.method == h2.method && h1.minor == h2.minor && h1.keep_alive == h2.keep_alive &&
              h1.expect_continue == h2.expect_continue);
        CHECK(!memcmp(one + off, inc + off, h1.head_len));
        check_head(one + off, len, max_head, &h1);
        if (h1.body_len > len - h1.head_len) break; /* the body has not all come */
        off += h1.head_len + h1.body_len;           /* the next pipelined request */
    }
    free(one);
    free(inc);
    return 0;
}
