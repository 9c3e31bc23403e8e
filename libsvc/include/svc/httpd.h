/*
 * httpd.h - a small embeddable HTTP/1.1 server for a service's admin port:
 * /metrics, /healthz and small JSON endpoints (router-svc, expert-worker).
 * One thread of its own, one poll() loop, plain POSIX sockets, no
 * dependencies. Not for the data path.
 *
 *     static void admin(void *ud, const moe_http_req *req, moe_http_resp *resp) {
 *         if (!strcmp(req->path, "/healthz")) {
 *             resp->status = 200;
 *             resp->body = strdup("ok\n");      // freed by the server
 *             resp->body_len = 3;
 *         }                                     // status left 0: 404
 *     }
 *
 *     moe_httpd *h;
 *     if (moe_httpd_start(&h, "0.0.0.0:9100", admin, &state, &err) < 0) -> err.msg
 *     ...
 *     moe_httpd_stop(h);
 *
 * The handler runs on the server's thread, one request at a time: it guards
 * the application state it reads, returns promptly (every connection waits
 * while it runs) and never calls moe_httpd_stop.
 *
 * What a client gets: GET, HEAD (the GET answer's headers, no body) and POST;
 * keep-alive as HTTP/1.1 says (Connection: close honoured; HTTP/1.0 closes
 * unless it asks for keep-alive); pipelined requests answered in order;
 * "Expect: 100-continue" answered. Every response carries Content-Length
 * (except 204 and 304, which have no body). Limits, each answered with its
 * status and a closed connection: request line + headers 16 KiB (431), a
 * Content-Length body 1 MiB (413), chunked or other transfer codings (501),
 * another method (405), an HTTP major version other than 1 (505), anything
 * malformed (400). Host is not required; the target is not decoded.
 *
 * Connections (against slowloris peers; a health probe always gets in): a
 * new connection that sends nothing for 2 s is closed, a request whose head
 * is not complete 5 s after its first byte, or whose body is not 10 s after
 * it, too; a keep-alive connection idle 30 s between requests, or a client
 * that reads nothing of its answers for 30 s, as well. At most 256
 * connections: a new one beyond that closes the one that has waited longest
 * without being served (never served before served; by the time of its last
 * progress), so a client that sends its request at once is always served.
 * moe_httpd_stats_get counts what was closed and why.
 */
#ifndef MOE_RPC_HTTPD_H
#define MOE_RPC_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include "moe/error.h"
#include "svc/metrics.h"

typedef struct moe_httpd moe_httpd;

/* A request, borrowed by the handler for the duration of the call. The
 * strings are NUL-terminated; body is too (the NUL not counted). */
typedef struct moe_http_req {
    const char *method; /* "GET", "HEAD" or "POST" */
    const char *path;   /* the target up to '?', as sent (not percent-decoded) */
    const char *query;  /* after the '?', or "" */
    const char *body;   /* Content-Length bytes ("" when none) */
    size_t body_len;
} moe_http_req;

/* A response, zeroed before the handler runs. status 0 answers 404; a status
 * outside 200..599 or a content type with control characters answers 500.
 * body is malloc'd by the handler, owned by the server once the handler
 * returns (freed even when not sent). content_type is borrowed until the
 * handler returns; NULL means "text/plain; charset=utf-8". */
typedef struct moe_http_resp {
    int status;
    const char *content_type;
    char *body;
    size_t body_len;
} moe_http_resp;

typedef void (*moe_http_handler)(void *ud, const moe_http_req *req, moe_http_resp *resp);

/* Binds addr ("host:port", IPv4: "0.0.0.0:9100", ":9100", "127.0.0.1:0",
 * "localhost:9100"; port 0 picks a free one) and starts the server thread,
 * which calls h(ud, ...) per request; ud is borrowed until moe_httpd_stop.
 * Returns 0, MOE_EINVAL (a bad address, naming it), MOE_EIO (bind or listen
 * failed, naming the address and the reason) or MOE_ENOMEM. */
int moe_httpd_start(moe_httpd **out, const char *addr, moe_http_handler h, void *ud, moe_err *err);

/* The port the server is bound to (the chosen one when asked for port 0). */
int moe_httpd_port(const moe_httpd *s);

/* Wakes and joins the server thread, closes the listening socket and every
 * connection (requests in flight get no answer) and frees s. Returns
 * promptly. NULL is allowed. Must not be called from the handler. */
void moe_httpd_stop(moe_httpd *s);

/* What the server did with connections, since it started. */
typedef struct moe_httpd_stats {
    uint64_t accepted;  /* connections accepted */
    uint64_t evicted;   /* closed to make room for a new one (the table was full) */
    uint64_t timed_out; /* closed by a timeout (first byte, head, request, idle) */
    int open;           /* connections open now */
} moe_httpd_stats;

/* Fills st (zeros for NULL s). Thread-safe: any thread, the handler too. */
void moe_httpd_stats_get(const moe_httpd *s, moe_httpd_stats *st);

/* Adds s's figures to reg (a /metrics page being built, e.g. in the
 * handler): <prefix>_http_connections (gauge: open now) and the counters
 * <prefix>_http_connections_accepted_total, ..._evicted_total and
 * ..._timed_out_total (prefix "moemesh_worker": moemesh_worker_http_...).
 * NULL s or reg: nothing. */
void moe_httpd_metrics(const moe_httpd *s, moe_metrics *reg, const char *prefix);

/* For tests: in milliseconds, the time a new connection may stay silent
 * (default 2000), a request's head and the whole request may take from its
 * first byte (5000, 10000), and a keep-alive connection may stay idle
 * (30000). Takes effect on the server's next loop. */
void moe__httpd_set_timeouts(moe_httpd *s, int first_ms, int head_ms, int request_ms, int idle_ms);

#endif
