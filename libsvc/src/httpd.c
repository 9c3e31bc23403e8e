/*
 * httpd.c - the admin HTTP/1.1 server (see httpd.h).
 *
 * One thread runs one poll() loop over a wake pipe, the listening socket and
 * up to HTTPD_MAX_CONN nonblocking connections. A connection has an input
 * buffer (the request being read, and whatever pipelined bytes came with it)
 * and an output buffer (answers not yet written, in request order). Bytes
 * are read only up to the end of the request being parsed, and neither read
 * nor parsed while more than HTTPD_OUT_HIGH bytes wait to be written, so a
 * client that never reads holds at most that much plus one answer, and
 * blocks nobody: every write is nonblocking and retried on POLLOUT.
 *
 * A connection's life: HC_OPEN (reading requests, answering them), HC_DRAIN
 * (its last answer is queued: an error, "Connection: close", or the client
 * finished sending), HC_LINGER (answer written, our side shut down; unread
 * input is discarded until the client closes or HTTPD_LINGER_MS pass, so
 * closing with unread bytes does not reset the connection and lose the
 * answer), HC_DEAD (closed, freed at the end of the loop iteration).
 *
 * Hostile peers (a slowloris: many connections that send nothing, or half a
 * request): a connection that sends nothing within HTTPD_FIRST_BYTE_MS of
 * its accept is closed, a request whose head is not complete
 * HTTPD_HEAD_MS after its first byte too, so silent connections go within
 * seconds. And the table never refuses a newcomer: when it is full, the
 * connection that has waited longest without being served (lingering ones
 * first, then those that never completed a request, then idle keep-alive
 * ones; by the time of their last progress) is closed to make room, so a
 * health probe, which sends its request at once, always gets in. Input
 * buffers grow with what arrives (4 KiB, then doubling up to the head limit)
 * and are freed between requests, so an idle connection holds ~200 bytes.
 *
 * The request head is parsed by moe__http_parse_head (httpd_parse.c), a
 * function of the bytes alone that tests/fuzz/fuzz_httpd.c fuzzes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "svc/clock.h"
#include "svc/httpd.h"
#include "svc/metrics.h"
#include "httpd_parse.h"

#define HTTPD_MAX_CONN 256
#define HTTPD_MAX_HEAD (16 * 1024)   /* request line + headers + blank line */
#define HTTPD_MAX_BODY (1024 * 1024) /* Content-Length */
#define HTTPD_OUT_HIGH (64 * 1024)   /* unwritten bytes above which a connection pauses */
#define HTTPD_IN_MIN 4096
#define HTTPD_FIRST_BYTE_MS 2000 /* from the accept to the first byte */
#define HTTPD_HEAD_MS 5000       /* from a request's first byte to the end of its head */
#define HTTPD_REQUEST_MS 10000   /* from a request's first byte to the end of its body */
#define HTTPD_IDLE_MS 30000      /* keep-alive between requests; a client not reading */
#define HTTPD_LINGER_MS 2000
#define HTTPD_ACCEPT_BATCH 64     /* accepts per loop iteration */
#define HTTPD_ACCEPT_PAUSE_MS 100 /* after EMFILE and the like */
#define HTTPD_POLL_MAX_MS 1000

enum { HC_OPEN, HC_DRAIN, HC_LINGER, HC_DEAD };

typedef struct hconn {
    int fd;
    int state;         /* HC_* */
    int read_eof;      /* the client shut its side down */
    int served;        /* it has had an answer (or a refusal) */
    int64_t t_active;  /* ms: last byte read or written, or the accept */
    int64_t t_request; /* ms: first byte of the request being read */
    int64_t t_linger;  /* ms: HC_LINGER closes at this time */
    char *in;          /* (in_cap) in_len bytes read; in_cap > in_len when in != NULL */
    size_t in_len, in_cap;
    char *out; /* (out_cap) bytes [out_off, out_len) not yet written */
    size_t out_off, out_len, out_cap;
    /* the request being read: h.scanned while its head is incomplete, the
     * rest once it has been parsed (have_head); the request is then
     * in[0, h.head_len + h.body_len) */
    moe__http_head h;
    int have_head;
    int continue_sent;
} hconn;

struct moe_httpd {
    int lfd;
    int wake[2]; /* moe_httpd_stop writes a byte to wake[1] */
    int port;
    moe_http_handler handler;
    void *ud;
    pthread_t tid;
    atomic_int stop;
    atomic_int first_ms, head_ms, request_ms, idle_ms;
    atomic_ullong n_accepted, n_evicted, n_timed_out; /* moe_httpd_stats */
    atomic_int n_open;
    int64_t now;                 /* ms, read once per loop iteration */
    int64_t accept_paused_until; /* ms */
    int n_conn;
    hconn *conns[HTTPD_MAX_CONN];
    hconn *polled[HTTPD_MAX_CONN]; /* the connection behind pfd[2 + i] */
    struct pollfd pfd[HTTPD_MAX_CONN + 2];
};

/* ==== Small helpers ======================================================== */

/* Grows *p to hold need bytes (at least doubling). Returns 0 or -1. */
static int buf_reserve(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap * 2 > need ? *cap * 2 : need;
    if (n < HTTPD_IN_MIN) n = HTTPD_IN_MIN;
    char *q = realloc(*p, n);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static size_t out_pending(const hconn *c) {
    return c->out_len - c->out_off;
}

static const char *status_reason(int status) {
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {{100, "Continue"},
                   {200, "OK"},
                   {201, "Created"},
                   {202, "Accepted"},
                   {204, "No Content"},
                   {301, "Moved Permanently"},
                   {302, "Found"},
                   {304, "Not Modified"},
                   {400, "Bad Request"},
                   {401, "Unauthorized"},
                   {403, "Forbidden"},
                   {404, "Not Found"},
                   {405, "Method Not Allowed"},
                   {408, "Request Timeout"},
                   {409, "Conflict"},
                   {411, "Length Required"},
                   {413, "Content Too Large"},
                   {415, "Unsupported Media Type"},
                   {422, "Unprocessable Content"},
                   {429, "Too Many Requests"},
                   {431, "Request Header Fields Too Large"},
                   {500, "Internal Server Error"},
                   {501, "Not Implemented"},
                   {503, "Service Unavailable"},
                   {505, "HTTP Version Not Supported"}};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status) return reasons[i].reason;
    return "";
}

/* ==== Connections: closing, writing ======================================== */

static void conn_close(hconn *c) {
    if (c->state == HC_DEAD) return;
    close(c->fd);
    c->fd = -1;
    c->state = HC_DEAD;
}

static void conn_free(hconn *c) {
    if (c->fd >= 0) close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

static int out_append(hconn *c, const void *p, size_t n) {
    if (out_pending(c) == 0) c->out_off = c->out_len = 0;
    if (buf_reserve(&c->out, &c->out_cap, c->out_len + n) < 0) return -1;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return 0;
}

/* Writes what it can. Once all is written, a draining connection shuts its
 * side down and lingers (or closes, if the client already finished). */
static void conn_flush(moe_httpd *s, hconn *c) {
    while (c->state != HC_DEAD && out_pending(c) > 0) {
        ssize_t n = send(c->fd, c->out + c->out_off, out_pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            c->t_active = s->now;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            conn_close(c); /* EPIPE, ECONNRESET: the client is gone */
            return;
        }
    }
    if (c->state == HC_DEAD) return;
    c->out_off = c->out_len = 0;
    if (c->out_cap > 4 * HTTPD_OUT_HIGH) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (c->state == HC_DRAIN) {
        if (c->read_eof) {
            conn_close(c);
            return;
        }
        shutdown(c->fd, SHUT_WR);
        c->state = HC_LINGER;
        c->t_linger = s->now + HTTPD_LINGER_MS;
    }
}

/* Queues one answer. extra: more header lines ("Name: value\r\n") or "". */
static int conn_queue_answer(hconn *c, int status, const char *ctype, const char *extra,
                             const char *body, size_t len, int send_body, int keep_alive) {
    char date[64], head[512];
    time_t t = time(NULL);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        date[0] = '\0';
    const char *conn = !keep_alive       ? "Connection: close\r\n"
                       : c->h.minor == 0 ? "Connection: keep-alive\r\n"
                                         : "";
    char clen[48] = "";
    if (status != 204 && status != 304)
        snprintf(clen, sizeof clen, "Content-Length: %zu\r\n", len);
    else
        send_body = 0; /* these never have a body, nor a length */
    int n =
        snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n%s%s%s\r\n",
                 status, status_reason(status), date, ctype, clen, conn, extra);
    MOE_ASSERT(n > 0 && (size_t)n < sizeof head); /* ctype is at most 200 bytes */
    if (out_append(c, head, (size_t)n) < 0) return -1;
    if (send_body && len > 0 && out_append(c, body, len) < 0) return -1;
    return 0;
}

/* Answers a request the server refuses (status >= 400) and closes after. */
static void conn_refuse(hconn *c, int status) {
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, status_reason(status));
    const char *extra = status == 405 ? "Allow: GET, HEAD, POST\r\n" : "";
    c->in_len = 0; /* nothing after a bad request can be trusted */
    c->served = 1;
    c->have_head = 0;
    c->h.scanned = 0;
    if (conn_queue_answer(c, status, "text/plain; charset=utf-8", extra, body, (size_t)n,
                          c->h.method != MOE__HTTP_HEAD, 0) < 0) {
        conn_close(c);
        return;
    }
    c->state = HC_DRAIN;
}

/* ==== Serving requests ===================================================== */

/* Calls the handler on the complete request at the start of c->in, queues
 * its answer and drops the request from the buffer. */
static void conn_dispatch(moe_httpd *s, hconn *c) {
    char *b = c->in;
    size_t end = c->h.head_len + c->h.body_len;
    char saved = b[end]; /* the next pipelined byte, or spare room (in_cap > in_len) */
    b[end] = '\0';
    moe_http_req req = {
        .method = b + c->h.off_method,
        .path = b + c->h.off_path,
        .query = c->h.off_query ? b + c->h.off_query : "",
        .body = b + c->h.head_len,
        .body_len = c->h.body_len,
    };
    moe_http_resp resp = {0};
    s->handler(s->ud, &req, &resp);
    b[end] = saved;

    int status = resp.status;
    const char *ctype = resp.content_type ? resp.content_type : "text/plain; charset=utf-8";
    const char *body = resp.body ? resp.body : "";
    size_t len = resp.body ? resp.body_len : 0;
    size_t ctlen = strnlen(ctype, 201);
    int ctype_ok = ctlen <= 200;
    for (size_t i = 0; i < ctlen && ctype_ok; i++)
        if ((unsigned char)ctype[i] < 0x20 || ctype[i] == 0x7f) ctype_ok = 0;
    if (status == 0 || status < 200 || status > 599 || !ctype_ok) {
        status = status == 0 ? 404 : 500;
        ctype = "text/plain; charset=utf-8";
        body = status == 404 ? "404 Not Found\n" : "500 Internal Server Error\n";
        len = strlen(body);
    }
    int rc = conn_queue_answer(c, status, ctype, "", body, len, c->h.method != MOE__HTTP_HEAD,
                               c->h.keep_alive);
    free(resp.body);
    if (rc < 0) {
        conn_close(c);
        return;
    }

    memmove(b, b + end, c->in_len - end);
    c->in_len -= end;
    c->served = 1;
    c->have_head = 0;
    c->h.scanned = 0;
    if (c->in_len > 0) {
        c->t_request = s->now;
        if (c->in_cap > 2 * (HTTPD_MAX_HEAD + 1) && c->in_len <= HTTPD_MAX_HEAD) {
            char *q = realloc(c->in, HTTPD_MAX_HEAD + 1); /* after a big body */
            if (q) c->in = q, c->in_cap = HTTPD_MAX_HEAD + 1;
        }
    } else {
        free(c->in); /* an idle keep-alive connection holds no buffer */
        c->in = NULL;
        c->in_cap = 0;
    }
    if (!c->h.keep_alive) c->state = HC_DRAIN;
}

/* Serves the complete requests buffered on c, in order, while its unwritten
 * output stays below HTTPD_OUT_HIGH, and writes what it can. */
static void conn_service(moe_httpd *s, hconn *c) {
    for (;;) {
        int paused = 0;
        while (c->state == HC_OPEN) {
            if (out_pending(c) >= HTTPD_OUT_HIGH) {
                paused = 1;
                break;
            }
            if (!c->have_head) {
                int r =
                    moe__http_parse_head(c->in, c->in_len, HTTPD_MAX_HEAD, HTTPD_MAX_BODY, &c->h);
                if (r > 1) {
                    conn_refuse(c, r);
                    break;
                }
                if (r == 0) {
                    if (c->read_eof) c->state = HC_DRAIN; /* a partial request is dropped */
                    break;
                }
                c->have_head = 1;
                c->continue_sent = 0;
            }
            if (c->in_len < c->h.head_len + c->h.body_len) {
                if (c->read_eof) {
                    c->state = HC_DRAIN;
                } else if (c->h.expect_continue && !c->continue_sent && c->h.minor >= 1) {
                    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                    if (out_append(c, cont, sizeof cont - 1) < 0) conn_close(c);
                    c->continue_sent = 1;
                }
                break;
            }
            conn_dispatch(s, c);
        }
        conn_flush(s, c);
        /* paused, and the write freed room: serve what is buffered */
        if (!paused || c->state != HC_OPEN || out_pending(c) >= HTTPD_OUT_HIGH) break;
    }
}

/* How many bytes c takes now: up to the header limit while the head is
 * incomplete, then up to the end of the request's body. */
static size_t conn_room(const hconn *c) {
    size_t want = c->have_head ? c->h.head_len + c->h.body_len : HTTPD_MAX_HEAD;
    return c->in_len < want ? want - c->in_len : 0;
}

static int conn_wants_read(const hconn *c) {
    if (c->state == HC_LINGER) return 1;
    return c->state == HC_OPEN && !c->read_eof && out_pending(c) < HTTPD_OUT_HIGH &&
           conn_room(c) > 0;
}

static void conn_read(moe_httpd *s, hconn *c) {
    if (c->state == HC_LINGER) {
        char tmp[4096];
        ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            conn_close(c);
        return;
    }
    if (!conn_wants_read(c)) return;
    /* a head is read into what the buffer has, at least HTTPD_IN_MIN bytes
     * more (doubling); a body's size is known: room for all of it */
    size_t room = conn_room(c), want = room;
    if (!c->have_head) {
        size_t spare = c->in_cap > c->in_len + 1 ? c->in_cap - c->in_len - 1 : 0;
        want = spare > HTTPD_IN_MIN ? spare : HTTPD_IN_MIN;
        if (want > room) want = room;
    }
    if (buf_reserve(&c->in, &c->in_cap, c->in_len + want + 1) < 0) {
        conn_close(c);
        return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, want, 0);
    if (n > 0) {
        if (c->in_len == 0) c->t_request = s->now;
        c->in_len += (size_t)n;
        c->t_active = s->now;
    } else if (n == 0) {
        c->read_eof = 1;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return;
    } else {
        conn_close(c); /* ECONNRESET and the like */
        return;
    }
    conn_service(s, c);
}

/* When c is closed if nothing happens. */
static int64_t conn_deadline(const moe_httpd *s, const hconn *c) {
    int64_t idle = atomic_load(&s->idle_ms), request = atomic_load(&s->request_ms);
    int64_t head = atomic_load(&s->head_ms), first = atomic_load(&s->first_ms);
    if (c->state == HC_LINGER) return c->t_linger;
    if (out_pending(c) > 0) return c->t_active + idle; /* a client that stopped reading */
    if (c->in_len > 0) return c->t_request + (c->have_head || request < head ? request : head);
    return c->t_active + (c->served ? idle : first); /* between requests; a new connection */
}

/* Which connection makes room for a new one when the table is full: the
 * lowest (class, since). Class 0: lingering (answered, closing anyway) or
 * never served; class 1: served and open. since: when it last made progress
 * (a lingering one: never mind). */
static int conn_evict_class(const hconn *c) {
    return c->state == HC_LINGER || !c->served ? 0 : 1;
}
static int64_t conn_evict_since(const hconn *c) {
    if (c->state == HC_LINGER) return INT64_MIN;
    return c->in_len > 0 ? c->t_request : c->t_active;
}

/* ==== The loop ============================================================= */

/* Frees the closed connections (those that timed out first, when
 * timeouts is set) and counts what is left open. */
static void server_reap(moe_httpd *s, int timeouts) {
    for (int i = 0; i < s->n_conn;) {
        hconn *c = s->conns[i];
        if (timeouts && c->state != HC_DEAD && s->now >= conn_deadline(s, c)) {
            if (c->state != HC_LINGER) atomic_fetch_add(&s->n_timed_out, 1);
            conn_close(c);
        }
        if (c->state == HC_DEAD) {
            conn_free(c);
            s->conns[i] = s->conns[--s->n_conn];
        } else {
            i++;
        }
    }
    atomic_store(&s->n_open, s->n_conn);
}

/* With the table full: closes the connection that has waited longest
 * without being served (conn_evict_class) and frees its slot. */
static void server_evict(moe_httpd *s) {
    int v = -1;
    for (int i = 0; i < s->n_conn; i++) {
        const hconn *c = s->conns[i], *w = v >= 0 ? s->conns[v] : NULL;
        if (!w || conn_evict_class(c) < conn_evict_class(w) ||
            (conn_evict_class(c) == conn_evict_class(w) &&
             conn_evict_since(c) < conn_evict_since(w)))
            v = i;
    }
    if (v < 0) return;
    conn_free(s->conns[v]); /* closes it */
    s->conns[v] = s->conns[--s->n_conn];
    atomic_fetch_add(&s->n_evicted, 1);
}

/* Runs after this iteration's events: s->polled is not used again before the
 * next poll, so connections can be freed here. */
static void server_accept(moe_httpd *s) {
    for (int k = 0; k < HTTPD_ACCEPT_BATCH; k++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            s->accept_paused_until = s->now + HTTPD_ACCEPT_PAUSE_MS; /* EMFILE, ENOBUFS, ... */
            break;
        }
        if (s->n_conn == HTTPD_MAX_CONN) server_reap(s, 0);
        if (s->n_conn == HTTPD_MAX_CONN) server_evict(s);
        hconn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd); /* out of memory */
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->state = HC_OPEN;
        c->t_active = s->now;
        s->conns[s->n_conn++] = c;
        atomic_fetch_add(&s->n_accepted, 1);
    }
    atomic_store(&s->n_open, s->n_conn);
}

static void *server_main(void *arg) {
    moe_httpd *s = arg;
    while (!atomic_load(&s->stop)) {
        s->now = moe_mono_ms();
        int64_t timeout = HTTPD_POLL_MAX_MS;
        s->pfd[0] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        s->pfd[1] =
            (struct pollfd){.fd = s->now >= s->accept_paused_until ? s->lfd : -1, .events = POLLIN};
        if (s->pfd[1].fd < 0) timeout = s->accept_paused_until - s->now;
        int np = 0;
        for (int i = 0; i < s->n_conn; i++) {
            hconn *c = s->conns[i];
            short ev = (short)((conn_wants_read(c) ? POLLIN : 0) | (out_pending(c) ? POLLOUT : 0));
            int64_t left = conn_deadline(s, c) - s->now;
            if (left < timeout) timeout = left < 0 ? 0 : left;
            s->polled[np] = c;
            s->pfd[2 + np++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        int rc = poll(s->pfd, (nfds_t)(2 + np), (int)timeout);
        if (rc < 0) {
            if (errno != EINTR) {
                struct timespec ts = {0, 10 * 1000000}; /* ENOMEM: try again shortly */
                nanosleep(&ts, NULL);
            }
            continue;
        }
        s->now = moe_mono_ms();
        if (s->pfd[0].revents) {
            char tmp[64];
            while (read(s->wake[0], tmp, sizeof tmp) > 0) {
            }
            continue; /* the loop condition reads stop */
        }
        for (int i = 0; i < np; i++) {
            hconn *c = s->polled[i];
            short re = s->pfd[2 + i].revents, ev = s->pfd[2 + i].events;
            if (!re || c->state == HC_DEAD) continue;
            if (re & (POLLERR | POLLNVAL)) {
                conn_close(c);
                continue;
            }
            if (re & POLLOUT) conn_service(s, c); /* writes, then serves what waited */
            if (c->state != HC_DEAD && (re & POLLIN)) conn_read(s, c);
            if (c->state != HC_DEAD && (re & POLLHUP) && !(ev & POLLIN)) conn_close(c);
        }
        if (s->pfd[1].fd >= 0 && (s->pfd[1].revents & POLLIN)) server_accept(s);
        server_reap(s, 1); /* timeouts, and freeing the closed */
    }
    return NULL;
}

/* ==== Start and stop ======================================================= */

/* "host:port" -> an IPv4 address; host "", "*" and "0.0.0.0" mean any. */
static int parse_listen(const char *addr, struct sockaddr_in *sa, moe_err *err) {
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon)
        return moe_err_set(err, MOE_EINVAL, "httpd: listen address '%s' is not host:port",
                           addr ? addr : "(null)");
    char host[64];
    size_t hlen = (size_t)(colon - addr);
    const char *port = colon + 1;
    size_t plen = strlen(port);
    unsigned long pv = 0;
    int port_ok = plen >= 1 && plen <= 5;
    for (size_t i = 0; i < plen && port_ok; i++) {
        if (port[i] < '0' || port[i] > '9') port_ok = 0;
        pv = pv * 10 + (unsigned long)(port[i] - '0');
    }
    if (!port_ok || pv > 65535)
        return moe_err_set(err, MOE_EINVAL, "httpd: listen address '%s': bad port", addr);
    if (hlen >= sizeof host)
        return moe_err_set(err, MOE_EINVAL, "httpd: listen address '%s': host too long", addr);
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)pv);
    if (!hlen || !strcmp(host, "*") || !strcmp(host, "0.0.0.0"))
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (!strcmp(host, "localhost"))
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return moe_err_set(err, MOE_EINVAL,
                           "httpd: listen address '%s': '%s' is not an IPv4 address", addr, host);
    return 0;
}

int moe_httpd_start(moe_httpd **out, const char *addr, moe_http_handler h, void *ud, moe_err *err) {
    if (!out || !h) return moe_err_set(err, MOE_EINVAL, "httpd: no out pointer or handler");
    *out = NULL;
    struct sockaddr_in sa;
    int rc = parse_listen(addr, &sa, err);
    if (rc < 0) return rc;

    moe_httpd *s = calloc(1, sizeof *s);
    if (!s) return moe_err_set(err, MOE_ENOMEM, "httpd: out of memory");
    s->lfd = s->wake[0] = s->wake[1] = -1;
    s->handler = h;
    s->ud = ud;
    atomic_init(&s->stop, 0);
    atomic_init(&s->first_ms, HTTPD_FIRST_BYTE_MS);
    atomic_init(&s->head_ms, HTTPD_HEAD_MS);
    atomic_init(&s->request_ms, HTTPD_REQUEST_MS);
    atomic_init(&s->idle_ms, HTTPD_IDLE_MS);
    atomic_init(&s->n_accepted, 0);
    atomic_init(&s->n_evicted, 0);
    atomic_init(&s->n_timed_out, 0);
    atomic_init(&s->n_open, 0);

    int one = 1;
    socklen_t salen = sizeof sa;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->lfd < 0) {
        rc = moe_err_set(err, MOE_EIO, "httpd: socket: %s", strerror(errno));
        goto fail;
    }
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        rc = moe_err_set(err, MOE_EIO, "httpd: cannot bind %s: %s", addr, strerror(errno));
        goto fail;
    }
    if (listen(s->lfd, SOMAXCONN) < 0 || getsockname(s->lfd, (struct sockaddr *)&sa, &salen) < 0) {
        rc = moe_err_set(err, MOE_EIO, "httpd: cannot listen on %s: %s", addr, strerror(errno));
        goto fail;
    }
    s->port = ntohs(sa.sin_port);
    if (pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        rc = moe_err_set(err, MOE_EIO, "httpd: pipe: %s", strerror(errno));
        goto fail;
    }

    /* The thread takes no asynchronous signals: they stay with the
     * application's threads (and never interrupt the loop). */
    sigset_t all, old;
    sigfillset(&all);
    int sync_sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof sync_sigs / sizeof sync_sigs[0]; i++)
        sigdelset(&all, sync_sigs[i]);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int prc = pthread_create(&s->tid, NULL, server_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) {
        rc = moe_err_set(err, prc == ENOMEM || prc == EAGAIN ? MOE_ENOMEM : MOE_EIO,
                         "httpd: cannot start the server thread: %s", strerror(prc));
        goto fail;
    }
    *out = s;
    return 0;

fail:
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    if (s->lfd >= 0) close(s->lfd);
    free(s);
    return rc;
}

int moe_httpd_port(const moe_httpd *s) {
    return s ? s->port : -1;
}

void moe_httpd_stats_get(const moe_httpd *s, moe_httpd_stats *st) {
    *st = (moe_httpd_stats){0};
    if (!s) return;
    st->accepted = atomic_load(&s->n_accepted);
    st->evicted = atomic_load(&s->n_evicted);
    st->timed_out = atomic_load(&s->n_timed_out);
    st->open = atomic_load(&s->n_open);
}

void moe_httpd_metrics(const moe_httpd *s, moe_metrics *reg, const char *prefix) {
    if (!s || !reg) return;
    moe_httpd_stats st;
    moe_httpd_stats_get(s, &st);
    static const struct {
        int gauge;
        const char *suffix, *help;
    } fam[] = {
        {1, "connections", "Open connections on the admin HTTP port."},
        {0, "connections_accepted_total", "Connections the admin HTTP port accepted."},
        {0, "connections_evicted_total",
         "Admin HTTP connections closed to make room for a new one (the table was full)."},
        {0, "connections_timed_out_total",
         "Admin HTTP connections closed by a timeout (first byte, head, request, idle)."},
    };
    const double v[] = {st.open, (double)st.accepted, (double)st.evicted, (double)st.timed_out};
    for (size_t i = 0; i < sizeof fam / sizeof fam[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s_http_%s", prefix, fam[i].suffix);
        moe_metric *m = fam[i].gauge ? moe_metrics_gauge(reg, name, fam[i].help, NULL, 0)
                                     : moe_metrics_counter(reg, name, fam[i].help, NULL, 0);
        moe_metric_set(m, NULL, v[i]);
    }
}

void moe__httpd_set_timeouts(moe_httpd *s, int first_ms, int head_ms, int request_ms, int idle_ms) {
    atomic_store(&s->first_ms, first_ms);
    atomic_store(&s->head_ms, head_ms);
    atomic_store(&s->request_ms, request_ms);
    atomic_store(&s->idle_ms, idle_ms);
    char b = 1;
    ssize_t r = write(s->wake[1], &b, 1); /* recompute the poll timeout now */
    (void)r;
}

void moe_httpd_stop(moe_httpd *s) {
    if (!s) return;
    MOE_ASSERT(!pthread_equal(pthread_self(), s->tid)); /* not from the handler */
    atomic_store(&s->stop, 1);
    char b = 1;
    ssize_t r = write(s->wake[1], &b, 1); /* a full pipe is already a wake-up */
    (void)r;
    pthread_join(s->tid, NULL);
    for (int i = 0; i < s->n_conn; i++) conn_free(s->conns[i]);
    close(s->wake[0]);
    close(s->wake[1]);
    close(s->lfd);
    free(s);
}
