/*
 * httpd_parse.c - the admin HTTP server's request-head parser (see
 * httpd_parse.h): a function of the bytes alone, so that a fuzzer can call it.
 */
#include <string.h>
#include <strings.h>

#include "httpd_parse.h"

static int is_tchar(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int all_tchars(const char *p, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)p[i])) return 0;
    return 1;
}

/* Case-insensitive: does [p, p+n) equal the lowercase literal s? */
static int token_is(const char *p, size_t n, const char *s) {
    return strlen(s) == n && strncasecmp(p, s, n) == 0;
}

/* Does the comma-separated list [p, p+n) hold token s (case-insensitive)? */
static int list_has(const char *p, size_t n, const char *s) {
    const char *e = p + n;
    while (p < e) {
        const char *q = memchr(p, ',', (size_t)(e - p));
        if (!q) q = e;
        const char *a = p, *b = q;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        if (token_is(a, (size_t)(b - a), s)) return 1;
        p = q + 1;
    }
    return 0;
}

int moe__http_parse_head(char *b, size_t n, size_t max_head, size_t max_body, moe__http_head *h) {
    size_t lim = n < max_head ? n : max_head;
    size_t start = 0, end = 0;
    h->method = MOE__HTTP_GET; /* until known: a refusal has a body */
    while (start < lim && start < 8 && (b[start] == '\r' || b[start] == '\n')) start++;
    for (size_t i = h->scanned > start + 2 ? h->scanned - 2 : start; i < lim; i++) {
        unsigned char ch = (unsigned char)b[i];
        if ((ch < 0x20 && ch != '\r' && ch != '\n' && ch != '\t') || ch == 0x7f)
            return 400; /* binary, a TLS handshake, ...: no need to wait */
        if (ch != '\n') continue;
        if (i + 1 < lim && b[i + 1] == '\n') {
            end = i + 2;
            break;
        }
        if (i + 2 < lim && b[i + 1] == '\r' && b[i + 2] == '\n') {
            end = i + 3;
            break;
        }
    }
    if (end == 0) {
        h->scanned = lim; /* a client trickling bytes costs no rescans */
        return n >= max_head ? 431 : 0;
    }

    /* Lines are [p, le) with the '\n' and an optional '\r' before it cut off;
     * a '\r' anywhere else is malformed. */
    char *p = b + start, *e = b + end;
    char *nl = memchr(p, '\n', (size_t)(e - p));
    char *le = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
    if (memchr(p, '\r', (size_t)(le - p))) return 400;

    /* request line: method SP target SP HTTP/d.d */
    char *sp1 = memchr(p, ' ', (size_t)(le - p));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(le - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || memchr(sp2 + 1, ' ', (size_t)(le - sp2 - 1))) return 400;
    char *target = sp1 + 1, *ver = sp2 + 1;
    size_t mlen = (size_t)(sp1 - p), tlen = (size_t)(sp2 - target), vlen = (size_t)(le - ver);
    if (mlen > 32 || !all_tchars(p, mlen) || tlen == 0 || target[0] != '/') return 400;
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)target[i];
        if (ch <= 0x20 || ch >= 0x7f) return 400;
    }
    if (vlen != 8 || memcmp(ver, "HTTP/", 5) || ver[5] < '0' || ver[5] > '9' || ver[6] != '.' ||
        ver[7] < '0' || ver[7] > '9')
        return 400;
    if (ver[5] != '1') return 505;
    h->minor = ver[7] - '0';
    if (mlen == 3 && !memcmp(p, "GET", 3))
        h->method = MOE__HTTP_GET;
    else if (mlen == 4 && !memcmp(p, "HEAD", 4))
        h->method = MOE__HTTP_HEAD;
    else if (mlen == 4 && !memcmp(p, "POST", 4))
        h->method = MOE__HTTP_POST;
    else
        return 405;

    /* header fields: name ":" OWS value OWS */
    int conn_close_tok = 0, conn_keep_tok = 0, chunked = 0, have_len = 0;
    size_t clen = 0;
    h->expect_continue = 0;
    for (char *q = nl + 1; q < e;) {
        char *qn = memchr(q, '\n', (size_t)(e - q));
        char *qe = qn > q && qn[-1] == '\r' ? qn - 1 : qn;
        if (qe == q) break; /* the blank line */
        if (memchr(q, '\r', (size_t)(qe - q))) return 400;
        if (*q == ' ' || *q == '\t') return 400; /* obsolete line folding */
        char *colon = memchr(q, ':', (size_t)(qe - q));
        if (!colon || !all_tchars(q, (size_t)(colon - q))) return 400;
        size_t nlen = (size_t)(colon - q);
        char *v = colon + 1, *ve = qe;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t vl = (size_t)(ve - v);
        if (token_is(q, nlen, "content-length")) {
            size_t x = 0;
            if (vl == 0) return 400;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9') return 400;
                x = x > max_body ? x : x * 10 + (size_t)(v[i] - '0'); /* saturates */
            }
            if (have_len && x != clen) return 400;
            have_len = 1;
            clen = x;
        } else if (token_is(q, nlen, "transfer-encoding")) {
            chunked = 1;
        } else if (token_is(q, nlen, "connection")) {
            conn_close_tok |= list_has(v, vl, "close");
            conn_keep_tok |= list_has(v, vl, "keep-alive");
        } else if (token_is(q, nlen, "expect")) {
            h->expect_continue = token_is(v, vl, "100-continue");
        }
        q = qn + 1;
    }
    if (chunked) return 501;
    if (clen > max_body) return 413;

    /* cut the request line into strings */
    *sp1 = '\0';
    *sp2 = '\0';
    char *qm = memchr(target, '?', tlen);
    if (qm) *qm = '\0';
    h->off_method = (size_t)(p - b);
    h->off_path = (size_t)(target - b);
    h->off_query = qm ? (size_t)(qm + 1 - b) : 0;
    h->keep_alive = h->minor >= 1 ? !conn_close_tok : conn_keep_tok && !conn_close_tok;
    h->head_len = end;
    h->body_len = clen;
    h->scanned = 0;
    return 1;
}
