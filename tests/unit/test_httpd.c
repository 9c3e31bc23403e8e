/* tests/unit/test_httpd.c - the admin HTTP server (libsvc/include/svc/httpd.h),
 * over real sockets on 127.0.0.1. Every client socket has 5 s send and
 * receive timeouts and every loop a count bound, so a server bug fails a
 * test instead of hanging it. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "svc/clock.h"
#include "svc/httpd.h"
#include "moe/error.h"
#include "test.h"

/* ==== The server side ====================================================== */

typedef struct srv {
    moe_httpd *h;
    int port;
    atomic_int n_req;
    atomic_int bad; /* the handler saw a request breaking the API's promises */
} srv;

#define BIG_BODY (1 << 20)

static char *dup_str(const char *s, size_t *len) {
    *len = strlen(s);
    char *p = malloc(*len + 1);
    memcpy(p, s, *len + 1);
    return p;
}

/* /echo: "<method> <path> q=<query> b=<body>"; /len: the body's length;
 * /big: BIG_BODY bytes; /status?N: status N; /ctype-bad: a content type with
 * CR LF; anything else: left to the server (404). */
static void handler(void *ud, const moe_http_req *req, moe_http_resp *resp) {
    srv *s = ud;
    atomic_fetch_add(&s->n_req, 1);
    if (!req->method || !req->path || !req->query || !req->body || req->body[req->body_len] ||
        req->path[0] != '/' || strchr(req->path, '?'))
        atomic_fetch_add(&s->bad, 1);
    if (!strcmp(req->path, "/echo")) {
        size_t cap =
            32 + strlen(req->method) + strlen(req->path) + strlen(req->query) + req->body_len;
        resp->body = malloc(cap);
        int n = snprintf(resp->body, cap, "%s %s q=%s b=", req->method, req->path, req->query);
        memcpy(resp->body + n, req->body, req->body_len);
        resp->body_len = (size_t)n + req->body_len;
        resp->status = 200;
        resp->content_type = "text/plain";
    } else if (!strcmp(req->path, "/len")) {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%zu", req->body_len);
        resp->body = dup_str(tmp, &resp->body_len);
        resp->status = 200;
    } else if (!strcmp(req->path, "/big")) {
        resp->body = malloc(BIG_BODY);
        memset(resp->body, 'x', BIG_BODY);
        resp->body_len = BIG_BODY;
        resp->status = 200;
    } else if (!strcmp(req->path, "/status")) {
        resp->status = atoi(req->query);
        resp->body = dup_str("status body", &resp->body_len);
    } else if (!strcmp(req->path, "/ctype-bad")) {
        resp->status = 200;
        resp->content_type = "text/plain\r\nX-Injected: 1";
        resp->body = dup_str("x", &resp->body_len);
    } else {
        resp->body = dup_str("ignored", &resp->body_len); /* status 0: freed, 404 sent */
    }
}

static srv *srv_start(void) {
    srv *s = calloc(1, sizeof *s);
    moe_err err = {0};
    int rc = moe_httpd_start(&s->h, "127.0.0.1:0", handler, s, &err);
    if (rc < 0) TEST_FAIL("moe_httpd_start: %s", err.msg);
    s->port = moe_httpd_port(s->h);
    ASSERT(s->port > 0);
    return s;
}

static void srv_stop(srv *s) {
    moe_httpd_stop(s->h);
    ASSERT_EQ_INT(atomic_load(&s->bad), 0);
    free(s);
}

/* ==== The client side ====================================================== */

typedef struct answer {
    int status;
    long clen; /* -1: no Content-Length */
    int conn_close;
    char head[4096];
    char body[8192]; /* NUL-terminated; longer bodies are cut */
    size_t body_len;
} answer;

typedef struct cli {
    int fd;
    size_t len;
    char buf[1 << 16]; /* received, not yet consumed */
    answer a;          /* the last answer cli_ask read */
    srv *s;            /* the server cli_start started, or NULL */
} cli;

static int fd_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        TEST_FAIL("connect to port %d: %s", port, strerror(errno));
    return fd;
}

static cli *cli_open(int port) {
    cli *c = calloc(1, sizeof *c);
    c->fd = fd_connect(port);
    return c;
}

static void cli_close(cli *c) {
    close(c->fd);
    free(c);
}

/* Sends all of p; -1 if the connection fails (the server may have closed). */
static int send_try(int fd, const void *p, size_t n) {
    for (size_t off = 0; off < n;) {
        ssize_t k = send(fd, (const char *)p + off, n - off, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        off += (size_t)k;
    }
    return 0;
}

static void cli_send(cli *c, const char *s) {
    if (send_try(c->fd, s, strlen(s)) < 0) TEST_FAIL("send: %s", strerror(errno));
}

/* One recv into the buffer: 1 got bytes, 0 EOF, -1 error or timeout. */
static int cli_fill(cli *c) {
    if (c->len == sizeof c->buf) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n > 0) c->len += (size_t)n;
    return n > 0 ? 1 : n == 0 ? 0 : -1;
}

/* Reads one answer (no body after a HEAD). Returns 0, or -1 if the
 * connection ends or times out first. */
static int cli_answer(cli *c, answer *a, int head_only) {
    memset(a, 0, sizeof *a);
    a->clen = -1;
    char *end = NULL;
    for (int i = 0; i < 1000 && !(end = memmem(c->buf, c->len, "\r\n\r\n", 4)); i++)
        if (cli_fill(c) <= 0) return -1;
    if (!end) return -1;
    size_t hl = (size_t)(end + 4 - c->buf);
    ASSERT(hl < sizeof a->head);
    memcpy(a->head, c->buf, hl);
    if (sscanf(a->head, "HTTP/1.1 %d ", &a->status) != 1) TEST_FAIL("status line: %s", a->head);
    for (char *l = strstr(a->head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        if (!strncasecmp(l + 2, "content-length:", 15)) a->clen = atol(l + 17);
        if (!strncasecmp(l + 2, "connection: close", 17)) a->conn_close = 1;
    }
    size_t blen = head_only || a->clen < 0 ? 0 : (size_t)a->clen;
    ASSERT(hl + blen <= sizeof c->buf);
    for (int i = 0; i < 10000 && c->len < hl + blen; i++)
        if (cli_fill(c) <= 0) return -1;
    if (c->len < hl + blen) return -1;
    a->body_len = blen;
    memcpy(a->body, c->buf + hl, blen < sizeof a->body ? blen : sizeof a->body - 1);
    memmove(c->buf, c->buf + hl + blen, c->len - hl - blen);
    c->len -= hl + blen;
    return 0;
}

static void cli_must_answer(cli *c, answer *a, int head_only) {
    if (cli_answer(c, a, head_only) < 0) TEST_FAIL("no answer: %s", strerror(errno));
}

/* Sends req (unless NULL), reads the next answer into c->a and checks its
 * status (unless 0) and its body (unless NULL). */
static void cli_ask(cli *c, const char *req, int head_only, int status, const char *body) {
    answer *a = &c->a;
    if (req) cli_send(c, req);
    cli_must_answer(c, a, head_only);
    if (status && a->status != status)
        TEST_FAIL("status %d, want %d; head:\n%s", a->status, status, a->head);
    if (body && strcmp(a->body, body)) TEST_FAIL("body '%s', want '%s'", a->body, body);
}

/* A fresh server (c->s) and a client connected to it. */
static cli *cli_start(void) {
    srv *s = srv_start();
    cli *c = cli_open(s->port);
    c->s = s;
    return c;
}

/* Closes the client, then stops its server. */
static void cli_stop(cli *c) {
    srv *s = c->s;
    cli_close(c);
    srv_stop(s);
}

/* Waits up to ms for the server to close (EOF or reset), discarding bytes.
 * Returns 1 if it closed. */
static int fd_wait_closed(int fd, int ms) {
    int64_t deadline = moe_mono_ms() + ms;
    for (int i = 0; i < 100000; i++) {
        int left = (int)(deadline - moe_mono_ms());
        if (left <= 0) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) continue;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return 1;
    }
    return 0;
}

/* One request on a fresh connection; the answer's status. */
static int get_once(int port, const char *req, answer *a) {
    cli *c = cli_open(port);
    int rc = send_try(c->fd, req, strlen(req)) < 0 || cli_answer(c, a, 0) < 0 ? -1 : a->status;
    cli_close(c);
    return rc;
}

static void assert_still_serves(srv *s) {
    answer a;
    ASSERT_EQ_INT(get_once(s->port, "GET /echo?ok HTTP/1.1\r\nHost: t\r\n\r\n", &a), 200);
    ASSERT(!strcmp(a.body, "GET /echo q=ok b="));
}

/* ==== Requests and answers ================================================= */

TEST(httpd_get_body_and_length) {
    cli *c = cli_start();
    cli_ask(c, "GET /echo HTTP/1.1\r\nHost: t\r\nUser-Agent: test\r\n\r\n", 0, 200,
            "GET /echo q= b=");
    ASSERT_EQ_INT(c->a.clen, strlen("GET /echo q= b="));
    ASSERT_STR_CONTAINS(c->a.head, "Content-Type: text/plain\r\n");
    ASSERT_STR_CONTAINS(c->a.head, "\r\nDate: ");
    ASSERT(!c->a.conn_close);
    ASSERT_EQ_INT(atomic_load(&c->s->n_req), 1);
    cli_stop(c);
}

TEST(httpd_query_split) {
    static const struct {
        const char *target, *body;
    } cases[] = {
        {"/echo?a=1&b=2", "GET /echo q=a=1&b=2 b="},
        {"/echo?", "GET /echo q= b="},
        {"/echo?x?y=%20", "GET /echo q=x?y=%20 b="},
        {"/echo", "GET /echo q= b="},
    };
    cli *c = cli_start();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", cases[i].target);
        cli_ask(c, req, 0, 200, NULL);
        if (strcmp(c->a.body, cases[i].body)) TEST_FAIL("%s: got '%s'", cases[i].target, c->a.body);
    }
    cli_stop(c);
}

TEST(httpd_post_body) {
    cli *c = cli_start();
    cli_ask(c, "POST /echo?k=v HTTP/1.1\r\nHost: t\r\ncontent-length:  11 \r\n\r\nhello world", 0,
            200, "POST /echo q=k=v b=hello world");
    /* the body arriving in pieces, then a body of exactly the limit */
    cli_send(c, "POST /len HTTP/1.1\r\nContent-Length: 6\r\n\r\nab");
    usleep(20000);
    cli_ask(c, "cdef", 0, 0, "6");
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    memset(big, 'b', n);
    big[n] = '\0';
    cli_send(c, "POST /len HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n");
    cli_ask(c, big, 0, 200, "1048576");
    free(big);
    cli_stop(c);
}

TEST(httpd_default_404) {
    srv *s = srv_start();
    answer a;
    ASSERT_EQ_INT(get_once(s->port, "GET /nope HTTP/1.1\r\n\r\n", &a), 404);
    ASSERT_EQ_INT(a.clen, strlen(a.body));
    ASSERT(a.clen > 0);
    srv_stop(s);
}

TEST(httpd_handler_misuse) {
    srv *s = srv_start();
    answer a;
    ASSERT_EQ_INT(get_once(s->port, "GET /ctype-bad HTTP/1.1\r\n\r\n", &a), 500);
    ASSERT(!strstr(a.head, "X-Injected"));
    ASSERT_EQ_INT(get_once(s->port, "GET /status?42 HTTP/1.1\r\n\r\n", &a), 500);
    ASSERT_EQ_INT(get_once(s->port, "GET /status?1000 HTTP/1.1\r\n\r\n", &a), 500);
    ASSERT_EQ_INT(get_once(s->port, "GET /status?503 HTTP/1.1\r\n\r\n", &a), 503);
    ASSERT(!strcmp(a.body, "status body"));
    /* 204 has neither body nor length; the connection stays usable */
    cli *c = cli_open(s->port);
    cli_ask(c, "GET /status?204 HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n", 0, 204, NULL);
    ASSERT_EQ_INT(c->a.clen, -1);
    cli_ask(c, NULL, 0, 200, NULL);
    cli_close(c);
    srv_stop(s);
}

TEST(httpd_head_has_no_body) {
    cli *c = cli_start();
    /* HEAD then GET in one write: if the HEAD answer carried a body, the
     * GET's status line would not come next */
    cli_ask(c, "HEAD /echo HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n", 1, 200, NULL);
    ASSERT_EQ_INT(c->a.clen, strlen("HEAD /echo q= b="));
    cli_ask(c, NULL, 0, 200, "GET /echo q= b=");
    cli_ask(c, "HEAD /nope HTTP/1.1\r\n\r\n", 1, 404, NULL);
    ASSERT(c->a.clen > 0);
    usleep(50000);
    ASSERT_EQ_INT(recv(c->fd, c->a.body, sizeof c->a.body, MSG_DONTWAIT), -1); /* nothing more */
    cli_stop(c);
}

TEST(httpd_expect_continue) {
    cli *c = cli_start();
    cli_ask(c, "POST /len HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 0, 100,
            NULL);
    cli_ask(c, "abc", 0, 200, "3");
    cli_stop(c);
}

/* ==== Connections ========================================================== */

TEST(httpd_keepalive_pipelined) {
    cli *c = cli_start();
    cli_ask(c,
            "GET /echo?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"
            "POST /echo?n=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody"
            "GET /echo?n=3 HTTP/1.1\r\nHost: t\r\n\r\n",
            0, 0, "GET /echo q=n=1 b=");
    cli_ask(c, NULL, 0, 0, "POST /echo q=n=2 b=body");
    cli_ask(c, NULL, 0, 0, "GET /echo q=n=3 b=");
    ASSERT(!c->a.conn_close);
    /* still open: a later request on the same connection */
    cli_ask(c, "GET /echo?n=4 HTTP/1.1\r\n\r\n", 0, 0, "GET /echo q=n=4 b=");
    ASSERT_EQ_INT(atomic_load(&c->s->n_req), 4);
    cli_stop(c);
}

TEST(httpd_connection_close) {
    static const char *closing[] = {
        "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /echo HTTP/1.1\r\nConnection: foo, Close\r\n\r\n",
        "GET /echo HTTP/1.0\r\n\r\n",
    };
    srv *s = srv_start();
    for (size_t i = 0; i < sizeof closing / sizeof closing[0]; i++) {
        cli *c = cli_open(s->port);
        cli_ask(c, closing[i], 0, 200, NULL);
        ASSERT(c->a.conn_close);
        ASSERT(fd_wait_closed(c->fd, 3000));
        cli_close(c);
    }
    /* HTTP/1.0 asking for keep-alive stays open */
    cli *c = cli_open(s->port);
    cli_ask(c, "GET /echo?a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 0, NULL);
    ASSERT_STR_CONTAINS(c->a.head, "Connection: keep-alive");
    cli_ask(c, "GET /echo?b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 0, "GET /echo q=b b=");
    cli_close(c);
    srv_stop(s);
}

TEST(httpd_client_gone_mid_request) {
    srv *s = srv_start();
    static const char *partial[] = {
        "GET /echo HTTP/1.1\r\nHost: t\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly some",
        "GE",
    };
    for (int i = 0; i < 3; i++) {
        cli *c = cli_open(s->port);
        cli_send(c, partial[i]);
        cli_close(c); /* FIN */
        c = cli_open(s->port);
        cli_send(c, partial[i]);
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        cli_close(c); /* RST */
    }
    /* a client that half-closes after a complete request still gets it */
    cli *c = cli_open(s->port);
    cli_send(c, "GET /echo?half HTTP/1.1\r\n\r\n");
    shutdown(c->fd, SHUT_WR);
    cli_ask(c, NULL, 0, 0, "GET /echo q=half b=");
    ASSERT(fd_wait_closed(c->fd, 3000));
    cli_close(c);
    /* a client gone while its (big) answer is being written */
    c = cli_open(s->port);
    cli_send(c, "GET /big HTTP/1.1\r\n\r\nGET /big HTTP/1.1\r\n\r\n");
    usleep(20000);
    cli_close(c);
    assert_still_serves(s);
    srv_stop(s);
}

TEST(httpd_many_connections) {
    enum { N = 300 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 1024 && rl.rlim_max >= 1024) {
        rl.rlim_cur = 1024;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 2 * N + 64) SKIP("RLIMIT_NOFILE too low for 300 connections");
    srv *s = srv_start();
    int *fd = malloc(N * sizeof *fd);
    for (int i = 0; i < N; i++) fd[i] = fd_connect(s->port);
    const char *req = "GET /echo HTTP/1.1\r\n\r\n";
    for (int i = 0; i < N; i++) (void)send_try(fd[i], req, strlen(req));
    int answered = 0, closed = 0;
    for (int i = 0; i < N; i++) {
        char buf[512];
        ssize_t n = recv(fd[i], buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            ASSERT_STR_CONTAINS(buf, "HTTP/1.1 200 OK\r\n");
            answered++;
        } else if (n == 0 || errno == ECONNRESET) {
            closed++;
        }
    }
    /* the server keeps 256: each one past them closed the one that had
     * waited longest unserved (it may have been answered already) */
    ASSERT(answered >= 256);
    ASSERT_EQ_INT(answered + closed, N);
    moe_httpd_stats st;
    moe_httpd_stats_get(s->h, &st);
    ASSERT_EQ_INT(st.accepted, N);
    ASSERT_EQ_INT(st.evicted, N - 256);
    for (int i = 0; i < N; i++) close(fd[i]);
    free(fd);
    /* once the server has seen them go (bounded retries), a new one is served */
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        answer a;
        ok = get_once(s->port, "GET /echo HTTP/1.1\r\n\r\n", &a) == 200;
        if (!ok) usleep(20000);
    }
    ASSERT(ok);
    srv_stop(s);
}

TEST(httpd_slow_reader_blocks_nobody) {
    srv *s = srv_start();
    cli *slow = cli_open(s->port);
    int rcvbuf = 4096;
    setsockopt(slow->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    char req[32 * 24] = "";
    for (int i = 0; i < 32; i++) strcat(req, "GET /big HTTP/1.1\r\n\r\n");
    cli_send(slow, req); /* 32 MiB of answers it never reads */
    usleep(50000);
    int64_t t0 = moe_mono_ms();
    for (int i = 0; i < 5; i++) assert_still_serves(s);
    ASSERT(moe_mono_ms() - t0 < 3000);
    /* the server paused it: it has not run all 32 requests */
    ASSERT(atomic_load(&s->n_req) < 32 + 5);
    cli_close(slow);
    srv_stop(s);
}

TEST(httpd_timeouts) {
    srv *s = srv_start();
    moe__httpd_set_timeouts(s->h, 400, 200, 200, 400);
    cli *partial = cli_open(s->port), *idle = cli_open(s->port), *used = cli_open(s->port);
    cli_send(partial, "GET /echo HTTP/1.1\r\n");
    cli_send(used, "GET /echo HTTP/1.1\r\n\r\n");
    answer a;
    cli_must_answer(used, &a, 0);
    int64_t t0 = moe_mono_ms();
    ASSERT(fd_wait_closed(partial->fd, 3000));
    ASSERT(fd_wait_closed(idle->fd, 3000));
    ASSERT(fd_wait_closed(used->fd, 3000));
    int64_t dt = moe_mono_ms() - t0;
    ASSERT(dt >= 250 && dt < 2500);
    cli_close(partial);
    cli_close(idle);
    cli_close(used);
    srv_stop(s);
}

/* A new connection that stays silent goes after the first-byte timeout; one
 * that was served stays for the (longer) keep-alive timeout; a request
 * whose head does not end goes after the head timeout, although it trickles
 * bytes; a slow body has the request timeout. */
TEST(httpd_first_byte_and_head_timeouts) {
    srv *s = srv_start();
    moe__httpd_set_timeouts(s->h, 300, 600, 1500, 30000);
    cli *silent = cli_open(s->port), *used = cli_open(s->port), *trickle = cli_open(s->port);
    cli *body = cli_open(s->port);
    cli_ask(used, "GET /echo HTTP/1.1\r\n\r\n", 0, 200, NULL);
    cli_send(body, "POST /len HTTP/1.1\r\nContent-Length: 10\r\n\r\nab");
    int64_t t0 = moe_mono_ms();
    int trickle_closed = 0;
    for (int i = 0; i < 20 && !trickle_closed; i++) { /* a byte every 100 ms, up to 2 s */
        trickle_closed = send_try(trickle->fd, "G", 1) < 0 || fd_wait_closed(trickle->fd, 100);
    }
    int64_t dt_trickle = moe_mono_ms() - t0;
    ASSERT(trickle_closed);
    ASSERT(dt_trickle >= 450 && dt_trickle < 1900);
    ASSERT(fd_wait_closed(silent->fd, 100)); /* long gone by now */
    ASSERT(fd_wait_closed(body->fd, 3000));  /* the body: within the request timeout */
    ASSERT(moe_mono_ms() - t0 >= 1200);
    cli_ask(used, "GET /echo?again HTTP/1.1\r\n\r\n", 0, 200, "GET /echo q=again b=");
    moe_httpd_stats st;
    moe_httpd_stats_get(s->h, &st);
    ASSERT_EQ_INT(st.timed_out, 3);
    ASSERT_EQ_INT(st.open, 1);
    ASSERT_EQ_INT(st.evicted, 0);
    cli_close(silent);
    cli_close(used);
    cli_close(trickle);
    cli_close(body);
    srv_stop(s);
}

/* A full table makes room: the connection unserved longest goes (silent and
 * half-sent ones before served keep-alive ones), and a probe is answered. */
TEST(httpd_full_table_evicts_the_longest_unserved) {
    enum { N = 256 };
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 1024 && rl.rlim_max >= 1024) {
        rl.rlim_cur = 1024;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 2 * N + 64) SKIP("RLIMIT_NOFILE too low for 256 connections");
    srv *s = srv_start();
    moe__httpd_set_timeouts(s->h, 60000, 60000, 60000, 60000);
    cli *kept = cli_open(s->port); /* served: outlives every unserved one */
    cli_ask(kept, "GET /echo HTTP/1.1\r\n\r\n", 0, 200, NULL);
    int *fd = malloc(N * sizeof *fd);
    for (int i = 0; i < N - 1; i++) {
        fd[i] = fd_connect(s->port);
        if (i % 2) (void)send_try(fd[i], "GET /echo HTT", 13); /* half a request */
    }
    moe_httpd_stats st;
    for (int i = 0; i < 200; i++) { /* up to 2 s for the server to accept them all */
        moe_httpd_stats_get(s->h, &st);
        if (st.open == N) break;
        usleep(10000);
    }
    ASSERT_EQ_INT(st.open, N);
    /* N - 1 probes in turn, each kept open once answered (served, so it
     * outlives the unserved): each one closes one unserved connection */
    cli **probe = malloc(N * sizeof *probe);
    for (int i = 0; i < N - 1; i++) {
        probe[i] = cli_open(s->port);
        cli_ask(probe[i], "GET /echo?probe HTTP/1.1\r\n\r\n", 0, 200, "GET /echo q=probe b=");
        if (i == 0) usleep(20000); /* no tie on the millisecond clock with the next */
    }
    for (int i = 0; i < N - 1; i++)
        if (!fd_wait_closed(fd[i], 2000)) TEST_FAIL("unserved connection %d still open", i);
    cli_ask(kept, "GET /echo?kept HTTP/1.1\r\n\r\n", 0, 200, "GET /echo q=kept b=");
    moe_httpd_stats_get(s->h, &st);
    ASSERT_EQ_INT(st.evicted, N - 1);
    ASSERT_EQ_INT(st.open, N);
    /* one more: now the served connection idle longest goes (kept has just
     * been used; probe[0] has waited longest) */
    cli *last = cli_open(s->port);
    cli_ask(last, "GET /echo HTTP/1.1\r\n\r\n", 0, 200, NULL);
    ASSERT(fd_wait_closed(probe[0]->fd, 2000));
    cli_ask(kept, "GET /echo?still HTTP/1.1\r\n\r\n", 0, 200, "GET /echo q=still b=");
    cli_close(last);
    for (int i = 0; i < N - 1; i++) {
        close(fd[i]);
        cli_close(probe[i]);
    }
    free(probe);
    free(fd);
    cli_close(kept);
    srv_stop(s);
}

TEST(httpd_stop_is_prompt) {
    srv *s = srv_start();
    cli *c = cli_open(s->port);
    answer a;
    cli_send(c, "GET /echo HTTP/1.1\r\n\r\n");
    cli_must_answer(c, &a, 0); /* now an idle keep-alive connection */
    cli *mid = cli_open(s->port);
    cli_send(mid, "GET /echo HTTP/1.1\r\n"); /* and one mid-request */
    usleep(20000);
    int64_t t0 = moe_mono_ms();
    srv_stop(s);
    ASSERT(moe_mono_ms() - t0 < 1000);
    ASSERT(fd_wait_closed(c->fd, 1000));
    ASSERT(fd_wait_closed(mid->fd, 1000));
    cli_close(c);
    cli_close(mid);
}

/* ==== Bad input ============================================================ */

TEST(httpd_oversize_head_431) {
    srv *s = srv_start();
    cli *c = cli_open(s->port);
    size_t n = 17 * 1024;
    char *req = malloc(n + 64);
    strcpy(req, "GET /echo HTTP/1.1\r\nX-Big: ");
    size_t l = strlen(req);
    memset(req + l, 'a', n);
    strcpy(req + l + n, "\r\n\r\n");
    (void)send_try(c->fd, req, strlen(req));
    cli_ask(c, NULL, 0, 431, NULL);
    ASSERT(c->a.conn_close);
    ASSERT(fd_wait_closed(c->fd, 3000));
    cli_close(c);
    free(req);
    assert_still_serves(s);
    srv_stop(s);
}

TEST(httpd_oversize_body_413) {
    srv *s = srv_start();
    answer a;
    ASSERT_EQ_INT(get_once(s->port, "POST /len HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", &a),
                  413);
    ASSERT(a.conn_close);
    ASSERT_EQ_INT(get_once(s->port,
                           "POST /len HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                           &a),
                  413);
    /* the client sends the body anyway: it still reads the 413 */
    cli *c = cli_open(s->port);
    cli_send(c, "POST /len HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n");
    char *junk = calloc(1, 256 * 1024);
    for (int i = 0; i < 8; i++)
        if (send_try(c->fd, junk, 256 * 1024) < 0) break;
    free(junk);
    cli_ask(c, NULL, 0, 413, NULL);
    cli_close(c);
    assert_still_serves(s);
    srv_stop(s);
}

TEST(httpd_garbage_400) {
    srv *s = srv_start();
#define S(lit) lit, sizeof lit - 1 /* a literal and its length, NULs included */
    static const struct {
        const char *req;
        size_t len;
        int status;
    } cases[] = {
        {S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), 400}, /* a TLS ClientHello */
        {S("hello\r\n\r\n"), 400},
        {S("GET\r\n\r\n"), 400},
        {S("GET /\r\n\r\n"), 400},
        {S("GET  / HTTP/1.1\r\n\r\n"), 400},
        {S("GET / HTTP/1.1 x\r\n\r\n"), 400},
        {S("GET noslash HTTP/1.1\r\n\r\n"), 400},
        {S("GET http://h/ HTTP/1.1\r\n\r\n"), 400},
        {S("GET /a\x01 HTTP/1.1\r\n\r\n"), 400},
        {S("GET /a\0b HTTP/1.1\r\n\r\n"), 400},
        {S("GET /\xc3\xa9 HTTP/1.1\r\n\r\n"), 400},
        {S("GET / HTTP/1.1\rX\r\n\r\n"), 400},
        {S("GET / HTTP/1.x\r\n\r\n"), 400},
        {S("GET / FTP/1.1\r\n\r\n"), 400},
        {S("GET / HTTP/2.0\r\n\r\n"), 505},
        {S("BREW / HTTP/1.1\r\n\r\n"), 405},
        {S("get / HTTP/1.1\r\n\r\n"), 405},
        {S("G(T / HTTP/1.1\r\n\r\n"), 400},
        {S("GET / HTTP/1.1\r\nNo colon\r\n\r\n"), 400},
        {S("GET / HTTP/1.1\r\n: empty name\r\n\r\n"), 400},
        {S("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400},
        {S("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), 400},
        {S("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), 400},
        {S("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n"), 400},
        {S("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400},
        {S("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), 400},
        {S("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"), 400},
        {S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), 501},
        {S("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n"), 400}, /* too many empty lines */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli *c = cli_open(s->port);
        (void)send_try(c->fd, cases[i].req, cases[i].len);
        answer a;
        if (cli_answer(c, &a, 0) < 0) TEST_FAIL("case %zu: no answer", i);
        if (a.status != cases[i].status)
            TEST_FAIL("case %zu: status %d, want %d", i, a.status, cases[i].status);
        ASSERT(a.conn_close);
        ASSERT_EQ_INT(a.clen, a.body_len);
        if (a.status == 405) ASSERT_STR_CONTAINS(a.head, "Allow: GET, HEAD, POST\r\n");
        ASSERT(fd_wait_closed(c->fd, 3000));
        cli_close(c);
    }
    ASSERT_EQ_INT(atomic_load(&s->n_req), 0);
    /* empty lines before a request are skipped, LF alone ends lines */
    answer a;
    ASSERT_EQ_INT(get_once(s->port, "\r\nGET /echo HTTP/1.1\nHost: t\n\n", &a), 200);
    assert_still_serves(s);
    srv_stop(s);
}

/* Valid requests that httpd_random_input_survives changes at random. */
static const char *const random_seeds[] = {
    "GET /echo?a=1 HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
    "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"
    "GET /len HTTP/1.0\r\n\r\n", /* two, pipelined */
    "HEAD /nope HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
};

/* Random bytes, and valid requests with random bytes changed, each on its own
 * connection closed for writing: whatever comes back is an HTTP answer, the
 * server serves on, and (under ASan) nothing leaks or is touched out of
 * bounds. */
TEST(httpd_random_input_survives) {
    srv *s = srv_start();
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    int64_t t0 = moe_mono_ms();
    for (int i = 0; i < 400 && moe_mono_ms() - t0 < 60000; i++) {
        char buf[2048];
        size_t len;
        if (i % 4 == 0) {
            len = 1 + test_rand_u64(&rng) % sizeof buf;
            for (size_t k = 0; k < len; k++) buf[k] = (char)test_rand_u64(&rng);
        } else {
            const char *seed = random_seeds[test_rand_u64(&rng) % 3];
            len = strlen(seed);
            memcpy(buf, seed, len);
            int edits = 1 + (int)(test_rand_u64(&rng) % 4);
            for (int k = 0; k < edits; k++) {
                size_t at = test_rand_u64(&rng) % len;
                uint64_t r = test_rand_u64(&rng);
                buf[at] = r & 1 ? (char)(r >> 8) : "\r\n :0?/9 "[(r >> 8) % 9];
            }
            if (test_rand_u64(&rng) % 4 == 0) len = test_rand_u64(&rng) % len; /* cut short */
        }
        cli *c = cli_open(s->port);
        (void)send_try(c->fd, buf, len);
        shutdown(c->fd, SHUT_WR);
        int k = 0;
        while (k < 100 && cli_fill(c) > 0) k++; /* to EOF */
        if (c->len > 0 && memcmp(c->buf, "HTTP/1.1 ", 9))
            TEST_FAIL("input %d: answer starts '%.20s'", i, c->buf);
        cli_close(c);
    }
    assert_still_serves(s);
    srv_stop(s);
}

TEST(httpd_listen_addresses) {
    static const char *good[] = {"127.0.0.1:0", ":0", "localhost:0", "0.0.0.0:0", "*:0"};
    for (int i = 0; i < 5; i++) {
        moe_httpd *h = NULL;
        moe_err err = {0};
        if (moe_httpd_start(&h, good[i], handler, NULL, &err) < 0)
            TEST_FAIL("%s: %s", good[i], err.msg);
        ASSERT(moe_httpd_port(h) > 0);
        moe_httpd_stop(h);
    }
    static const char *bad[] = {"",         "9100",           "127.0.0.1:", "127.0.0.1:65536",
                                "host:12a", "example.com:80", "1.2.3:80",   "127.0.0.1:-1"};
    for (int i = 0; i < 8; i++) {
        moe_httpd *h = (moe_httpd *)1;
        moe_err err = {0};
        ASSERT_EQ_INT(moe_httpd_start(&h, bad[i], handler, NULL, &err), MOE_EINVAL);
        ASSERT(h == NULL);
        ASSERT_STR_CONTAINS(err.msg, bad[i]);
    }
    moe_err err = {0};
    moe_httpd *h = NULL;
    ASSERT_EQ_INT(moe_httpd_start(&h, NULL, handler, NULL, &err), MOE_EINVAL);
    ASSERT_EQ_INT(moe_httpd_start(&h, ":0", NULL, NULL, &err), MOE_EINVAL);
    /* a port in use: MOE_EIO naming the address */
    srv *s = srv_start();
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    ASSERT_EQ_INT(moe_httpd_start(&h, addr, handler, NULL, &err), MOE_EIO);
    ASSERT_STR_CONTAINS(err.msg, addr);
    moe_httpd_stop(NULL);
    srv_stop(s);
}
