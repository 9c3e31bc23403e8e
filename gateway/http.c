/* http.c - routes, bodies and streams on libmicrohttpd (see http.h).
 *
 * Hostile peers (a slowloris: many connections that send nothing or half a
 * request): libmicrohttpd 0.9.75 has one inactivity timeout per connection
 * and no deadline for a request's headers, and at its connection limit it
 * stops accepting (a health probe then waits in the listen backlog). So the
 * gateway tracks every connection (MHD_OPTION_NOTIFY_CONNECTION): a new one
 * gets the short --header-timeout until its headers are in, then
 * --idle-timeout; and when more than --max-connections are open, the one
 * that has waited longest without a request being answered (never served
 * before served; by the time of its last progress: the accept, a request's
 * headers or its answer's end) is shut down to make room (MHD reads the end
 * of its stream and closes it). MHD's own limit is --max-connections +
 * GW_CONN_RESERVE, so a probe
 * is accepted while the eviction happens, and the reserve is what is left
 * when every connection is busy. Connections being answered (a generation
 * queued, a stream) are never evicted, and a suspended connection has no
 * timeout in MHD (it restarts at the resume). What stays: below the limit a
 * client that trickles a header byte within every --header-timeout holds its
 * connection (evicted first once the table is full). */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "moe/log.h"
#include "requests.h"
#include "svc/clock.h"

#define GW "gateway"
#define GW_CONN_RESERVE 64 /* connections beyond --max-connections: see above */

typedef enum route {
    R_NONE,
    R_CHAT,
    R_COMPLETIONS,
    R_TOKENIZE,
    R_DETOKENIZE,
    R_MODELS,
    R_MODEL,
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    R_USAGE,
    R_REQUEST, /* /v1/requests/{id}[/cancel] (requests.h) */
} route;

static const char *const route_names[] = {"other",      "chat",    "completions", "tokenize",
                                          "detokenize", "models",  "model",       "healthz",
                                          "readyz",     "metrics", "usage",       "request"};

/* One open connection (MHD's socket context), in gw_http's list. */
typedef struct gw_sock {
    struct gw_sock *prev, *next;
    int fd;        /* MHD's; valid while the gw_sock is listed */
    int busy;      /* a complete request is being answered */
    int served;    /* a request has been answered on it */
    int evicted;   /* shut down to make room; MHD closes it next */
    int short_to;  /* on --header-timeout still (its MHD thread only) */
    int64_t since; /* ms: the accept, or its last request's headers or end */
} gw_sock;

struct gw_http {
    gw_http_params p;
    struct MHD_Daemon *d;
    int fd;
    char addr[80];
    atomic_int draining;
    atomic_int live; /* generation requests with an open connection */
    int64_t started; /* unix seconds: the model's "created" */
    pthread_mutex_t rng_mu;
    uint64_t rng;
    pthread_mutex_t socks_mu; /* guards the list and every gw_sock's fields but short_to */
    gw_sock *socks;           /* open connections, newest first */
    int n_socks, n_evicting;
    moe_metric *m_open, *m_evicted; /* gauge and counter (NULL without a registry) */
    gw_reqs *reqs;                  /* the requests' registry (requests.h) */
};

/* Per-connection request state (MHD's con_cls). */
typedef struct gw_conn {
    gw_http *h;
    route r;
    moe_buf body;
    int too_large;
    gw_job *job;                    /* a generation request, once queued */
    int live;                       /* counted in gw_http.live */
    moe_tenant tenant;              /* the caller, with API keys ("" without) */
    gw_limits_ticket *tk;           /* its limits' admission (limiter.h), ended with the request */
    gw_job *pending;                /* a job waiting for that admission */
    char req_id[GW_REQ_ID_LEN + 1]; /* its x-request-id */
    char client_id[GW_CLIENT_REQ_ID_MAX + 1]; /* X-Client-Request-Id to echo, or "" */
    const char *allow;                        /* a 405's Allow, when not the route's */
} gw_conn;

/* ==== Responses ========================================================= */

static void count(gw_http *h, route r, int status) {
    char st[16];
    snprintf(st, sizeof st, "%d", status);
    moe_metric_inc(h->p.requests, (const char *[]){route_names[r], st}, 1);
}

static void add_header(void *resp, const char *name, const char *value) {
    MHD_add_response_header(resp, name, value);
}

/* The x-ratelimit-* headers (and Retry-After) of a tenant with limits. */
static void add_limit_headers(const gw_conn *cs, struct MHD_Response *resp) {
    if (cs->tk && cs->tk->decided) gw_limits_headers(&cs->tk->v, add_header, resp);
}

/* x-request-id on every response (and the client's own id echoed). */
static void add_id_headers(const gw_conn *cs, struct MHD_Response *resp) {
    MHD_add_response_header(resp, "x-request-id", cs->req_id);
    if (cs->client_id[0]) MHD_add_response_header(resp, "x-client-request-id", cs->client_id);
}

/* Queues b (taken) as the response. */
static enum MHD_Result reply_buf(gw_conn *cs, struct MHD_Connection *conn, int status,
                                 const char *ctype, moe_buf *b) {
    if (b->oom || !b->s) {
        free(b->s);
        *b = (moe_buf){0};
        status = 500;
        ctype = "application/json";
        moe_buf_printf(b, "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                          "\"param\":null,\"code\":null}}\n");
        if (b->oom || !b->s) return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(b->n, b->s, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(b->s);
        return MHD_NO;
    }
    *b = (moe_buf){0};
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_limit_headers(cs, resp);
    add_id_headers(cs, resp);
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"moemesh\"");
    if (status == 405) {
        const int get = cs->r >= R_MODELS;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                cs->allow ? cs->allow
                                : get     ? "GET, HEAD"
                                          : "POST");
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    count(cs->h, cs->r, status);
    return ret;
}

static enum MHD_Result reply_error(gw_conn *cs, struct MHD_Connection *conn,
                                   const gw_api_error *e) {
    moe_buf b = {0};
    gw_api_error_json(&b, e);
    return reply_buf(cs, conn, e->status, "application/json", &b);
}

static enum MHD_Result reply_errorf(gw_conn *cs, struct MHD_Connection *conn, int status,
                                    const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static enum MHD_Result reply_errorf(gw_conn *cs, struct MHD_Connection *conn, int status,
                                    const char *param, const char *fmt, ...) {
    gw_api_error e;
    gw_api_error_set(&e, status, param, "%s", "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return reply_error(cs, conn, &e);
}

/* ==== Routes ============================================================ */

static route route_of(const char *url) {
    static const struct {
        const char *path;
        route r;
    } t[] = {{"/v1/chat/completions", R_CHAT},
             {"/v1/completions", R_COMPLETIONS},
             {"/tokenize", R_TOKENIZE},
             {"/detokenize", R_DETOKENIZE},
             {"/v1/models", R_MODELS},
             {"/healthz", R_HEALTHZ},
             {"/readyz", R_READYZ},
             {"/metrics", R_METRICS},
             {"/v1/usage", R_USAGE}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(url, t[i].path)) return t[i].r;
    if (!strncmp(url, "/v1/models/", 11) && url[11]) return R_MODEL;
    if (!strncmp(url, "/v1/requests/", 13) && url[13]) return R_REQUEST;
    return R_NONE;
}

static void model_json(moe_buf *b, const gw_http *h) {
    moe_buf_printf(b, "{\"id\":");
    moe_buf_json(b, h->p.api->model);
    moe_buf_printf(b,
                   ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"moemesh\","
                   "\"max_model_len\":%d}",
                   (long long)h->started, h->p.api->n_ctx);
}

static enum MHD_Result serve_get(gw_conn *cs, struct MHD_Connection *conn, const char *url) {
    gw_http *h = cs->h;
    moe_buf b = {0};
    char why[256];
    switch (cs->r) {
    case R_HEALTHZ:
        moe_buf_printf(&b, "ok\n");
        return reply_buf(cs, conn, 200, "text/plain; charset=utf-8", &b);
    case R_READYZ:
        if (atomic_load(&h->draining)) {
            moe_buf_printf(&b, "draining: the server is shutting down\n");
            return reply_buf(cs, conn, 503, "text/plain; charset=utf-8", &b);
        }
        if (h->p.ready && h->p.ready(h->p.ready_ud, why, sizeof why) != 0) {
            moe_buf_printf(&b, "not ready: %s\n", why);
            return reply_buf(cs, conn, 503, "text/plain; charset=utf-8", &b);
        }
        moe_buf_printf(&b, "ready\n");
        return reply_buf(cs, conn, 200, "text/plain; charset=utf-8", &b);
    case R_METRICS: {
        moe_err err = {0};
        pthread_mutex_lock(&h->socks_mu);
        moe_metric_set(h->m_open, NULL, h->n_socks);
        pthread_mutex_unlock(&h->socks_mu);
        if (h->p.before_metrics) h->p.before_metrics(h->p.ready_ud);
        if (moe_metrics_render(h->p.reg, &b, &err) == MOE_ENOMEM) b.oom = 1;
        return reply_buf(cs, conn, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
    }
    case R_USAGE: /* the caller's own usage (its tenant's; without API keys, everyone's) */
        if (!h->p.usage) return reply_errorf(cs, conn, 404, "", "no usage accounting here");
        gw_usage_json(h->p.usage, cs->tenant.name, &b);
        return reply_buf(cs, conn, 200, "application/json", &b);
    case R_MODELS:
        moe_buf_printf(&b, "{\"object\":\"list\",\"data\":[");
        model_json(&b, h);
        moe_buf_printf(&b, "]}\n");
        return reply_buf(cs, conn, 200, "application/json", &b);
    case R_MODEL:
        if (strcmp(url + 11, h->p.api->model)) {
            gw_api_error e;
            gw_api_error_set(&e, 404, "model",
                             "the model '%.200s' does not exist; this server serves '%s'", url + 11,
                             h->p.api->model);
            snprintf(e.code, sizeof e.code, "model_not_found");
            return reply_error(cs, conn, &e);
        }
        model_json(&b, h);
        moe_buf_append(&b, "\n", 1);
        return reply_buf(cs, conn, 200, "application/json", &b);
    default:
        return reply_errorf(cs, conn, 404, "", "no route %.200s", url);
    }
}

/* ==== Streams =========================================================== */

/* MHD's content reader for a streamed job: the SSE bytes so far, or a
 * suspended connection until the engine thread has more. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    gw_job *j = cls;
    ssize_t n = 0;
    pthread_mutex_lock(&j->mu);
    if (j->out.oom) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (j->out_sent < j->out.n) {
        size_t k = j->out.n - j->out_sent;
        if (k > max) k = max;
        memcpy(buf, j->out.s + j->out_sent, k);
        j->out_sent += k;
        if (j->out_sent == j->out.n) j->out.n = j->out_sent = 0; /* reuse the buffer */
        n = (ssize_t)k;
    } else if (j->done) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (j->conn) {
        j->suspended = 1;
        MHD_suspend_connection(j->conn);
    } else {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

static void stream_free(void *cls) {
    gw_job_unref(cls);
}

/* The engine thread's wake (under j->mu, with j->suspended). */
static void wake_conn(gw_job *j) {
    MHD_resume_connection(j->conn);
}

/* ==== Generation requests =============================================== */

static enum MHD_Result reply_final(gw_conn *cs, struct MHD_Connection *conn) {
    gw_job *j = cs->job;
    pthread_mutex_lock(&j->mu);
    if (!j->done) { /* a spurious resume: wait on */
        j->suspended = 1;
        MHD_suspend_connection(conn);
        pthread_mutex_unlock(&j->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&j->mu);
    if (j->failed) return reply_error(cs, conn, &j->err);
    moe_buf b = {0};
    gw_job_render_final(j, &b);
    return reply_buf(cs, conn, 200, "application/json", &b);
}

/* Queues an admitted job (the connection's reference moves to cs->job) and
 * answers: a stream, or the final response once the job is done. */
static enum MHD_Result submit_job(gw_conn *cs, struct MHD_Connection *conn, gw_job *j) {
    gw_http *h = cs->h;
    gw_api_error e;
    j->wake = wake_conn;
    j->conn = conn;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    j->fd = ci ? (int)ci->connect_fd : -1;
    cs->job = j;                            /* the connection's reference */
    gw_reqs_add(h->reqs, j, moe_mono_us()); /* before the engine can end it */
    if (gw_sched_submit(h->p.sched, j, &e) < 0) {
        if (j->on_end) j->on_end(j, GW_JOB_END_FAILED);
        pthread_mutex_lock(&j->mu);
        j->conn = NULL;
        j->done = 1; /* never queued: nothing to cancel */
        pthread_mutex_unlock(&j->mu);
        return reply_error(cs, conn, &e);
    }
    cs->live = 1;
    atomic_fetch_add(&h->live, 1);
    if (j->req.stream) {
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                      stream_read, j, stream_free);
        if (!resp) return MHD_NO;
        gw_job_ref(j); /* the response's */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        add_limit_headers(cs, resp);
        add_id_headers(cs, resp);
        enum MHD_Result ret = MHD_queue_response(conn, 200, resp);
        MHD_destroy_response(resp);
        count(h, cs->r, 200);
        return ret;
    }
    return reply_final(cs, conn);
}

static void suspend_conn(void *conn) {
    MHD_suspend_connection(conn);
}

static void resume_conn(void *conn) {
    MHD_resume_connection(conn);
}

/* Resumed by the limiter: its verdict on cs->pending. */
static enum MHD_Result after_admission(gw_conn *cs, struct MHD_Connection *conn) {
    gw_limits *l = cs->h->p.limits;
    pthread_mutex_lock(gw_limits_mutex(l));
    const int decided = cs->tk->decided;
    if (!decided) suspend_conn(conn); /* a spurious resume: wait on */
    pthread_mutex_unlock(gw_limits_mutex(l));
    if (!decided) return MHD_YES;
    gw_job *j = cs->pending;
    cs->pending = NULL;
    if (cs->tk->v.status != 200) {
        gw_job_unref(j);
        return reply_error(cs, conn, &cs->tk->v.err);
    }
    return submit_job(cs, conn, j);
}

static enum MHD_Result serve_generate(gw_conn *cs, struct MHD_Connection *conn) {
    gw_http *h = cs->h;
    if (atomic_load(&h->draining))
        return reply_errorf(cs, conn, 503, "",
                            "the server is shutting down; retry on another replica");
    gw_api_req req;
    gw_api_error e;
    const gw_route gr = cs->r == R_CHAT ? GW_ROUTE_CHAT : GW_ROUTE_COMPLETIONS;
    const int parsed =
        gw_api_parse(h->p.api, gr, cs->body.s ? cs->body.s : "", cs->body.n, &req, &e);
    /* the body (up to --max-body) is not kept while the request waits or runs */
    free(cs->body.s);
    cs->body = (moe_buf){0};
    if (parsed < 0) return reply_error(cs, conn, &e);
    gw_job *j;
    pthread_mutex_lock(&h->rng_mu);
    int rc = gw_job_create(&j, &req, &h->rng, &e);
    pthread_mutex_unlock(&h->rng_mu);
    if (rc < 0) {
        gw_api_req_free(&req);
        return reply_error(cs, conn, &e);
    }
    snprintf(j->tenant, sizeof j->tenant, "%s", cs->tenant.name);
    snprintf(j->req_id, sizeof j->req_id, "%s", cs->req_id);
    if (cs->tenant.name[0]) { /* its share and class in the scheduler (fair.h) */
        j->weight = cs->tenant.lim.weight > 0 ? cs->tenant.lim.weight : 1.0;
        j->priority = cs->tenant.lim.priority == MOE_TENANT_PRIORITY_HIGH  ? 1
                      : cs->tenant.lim.priority == MOE_TENANT_PRIORITY_LOW ? -1
                                                                           : 0;
    }
    gw_limits *l = h->p.limits;
    if (!l || !cs->tenant.name[0]) return submit_job(cs, conn, j);
    if (gw_limits_check_context(l, &cs->tenant, j, &e) < 0) {
        gw_job_unref(j);
        return reply_error(cs, conn, &e);
    }
    if (!gw_limits_counted(&cs->tenant.lim)) return submit_job(cs, conn, j);
    /* the limiter decides on its own thread; this connection waits suspended */
    if (!(cs->tk = gw_limits_ticket_new(&cs->tenant, j))) {
        gw_job_unref(j);
        return reply_errorf(cs, conn, 503, "", "out of memory");
    }
    cs->pending = j;
    cs->tk->wake = resume_conn;
    cs->tk->conn = conn;
    gw_limits_admit(l, cs->tk, suspend_conn);
    return MHD_YES;
}

static enum MHD_Result serve_post(gw_conn *cs, struct MHD_Connection *conn) {
    gw_http *h = cs->h;
    if (cs->too_large)
        return reply_errorf(cs, conn, 413, "",
                            "the request body is larger than %llu bytes (--max-body); send less",
                            (unsigned long long)h->p.max_body);
    if (cs->r == R_CHAT || cs->r == R_COMPLETIONS) return serve_generate(cs, conn);
    moe_buf b = {0};
    gw_api_error e;
    const char *body = cs->body.s ? cs->body.s : "";
    int rc = cs->r == R_TOKENIZE ? gw_api_tokenize(h->p.api, body, cs->body.n, &b, &e)
                                 : gw_api_detokenize(h->p.api, body, cs->body.n, &b, &e);
    if (rc < 0) {
        free(b.s);
        return reply_error(cs, conn, &e);
    }
    return reply_buf(cs, conn, 200, "application/json", &b);
}

/* ==== The caller's requests (requests.h) =============================== */

/* GET|HEAD /v1/requests/{id}: its state; DELETE /v1/requests/{id} and POST
 * /v1/requests/{id}/cancel: cancel it. Anything not the caller's: one 404. */
static enum MHD_Result serve_request(gw_conn *cs, struct MHD_Connection *conn, const char *url,
                                     const char *method) {
    char id[GW_REQS_ID_MAX + 2];
    const char *p = url + 13; /* after "/v1/requests/" */
    const char *slash = strchr(p, '/');
    const int on_cancel = slash && !strcmp(slash, "/cancel");
    const size_t n = slash ? (size_t)(slash - p) : strlen(p);
    int cancel;
    if (on_cancel
            ? !strcmp(method, "POST")
            : !strcmp(method, "GET") || !strcmp(method, "HEAD") || !strcmp(method, "DELETE")) {
        cancel = on_cancel || !strcmp(method, "DELETE");
    } else {
        cs->allow = on_cancel ? "POST" : "GET, HEAD, DELETE";
        return reply_errorf(cs, conn, 405, "", "%s is not allowed here; use %s", method, cs->allow);
    }
    gw_req_info in;
    int poke = 0;
    gw_api_error e;
    if ((slash && !on_cancel) || n > GW_REQS_ID_MAX)
        id[0] = 0; /* not found */
    else
        memcpy(id, p, n), id[n] = 0;
    if (gw_reqs_find(cs->h->reqs, cs->tenant.name, id, cancel, &in, &poke) < 0) {
        gw_reqs_not_found(&e);
        return reply_error(cs, conn, &e);
    }
    if (poke) gw_sched_poke(cs->h->p.sched);
    moe_buf b = {0};
    gw_reqs_json(&in, &b);
    return reply_buf(cs, conn, 200, "application/json", &b);
}

/* ==== API keys ========================================================= */

/* 0 when the request may go on (no keys configured, a probe, a known key:
 * cs->tenant); else -1 with the error to send. */
static int authenticate(gw_conn *cs, struct MHD_Connection *conn, gw_api_error *e) {
    gw_http *h = cs->h;
    if (!h->p.auth || cs->r == R_HEALTHZ || cs->r == R_READYZ || cs->r == R_METRICS) return 0;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    return gw_auth_check(h->p.auth,
                         MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"),
                         MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "api-key"),
                         ci ? ci->client_addr : NULL, &cs->tenant, e);
}

/* ==== Connections ====================================================== */

static gw_sock *sock_of(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Under socks_mu, with more than --max-connections open: shuts down the
 * connection that has waited longest without being answered (never served
 * first), not busy, not new; MHD sees the end of its stream and closes it. */
static void sock_evict_one(gw_http *h, const gw_sock *new) {
    gw_sock *v = NULL;
    for (gw_sock *k = h->socks; k; k = k->next) {
        if (k == new || k->busy || k->evicted) continue;
        if (!v || k->served < v->served || (k->served == v->served && k->since <= v->since))
            v = k; /* the list is newest first: on a tie, the older wins */
    }
    if (!v) return; /* all busy: the reserve takes the newcomer */
    shutdown(v->fd, SHUT_RDWR);
    v->evicted = 1;
    h->n_evicting++;
    moe_metric_inc(h->m_evicted, NULL, 1);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    gw_http *h = cls;
    gw_sock *k = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (!k) return;
        pthread_mutex_lock(&h->socks_mu);
        if (k->prev)
            k->prev->next = k->next;
        else
            h->socks = k->next;
        if (k->next) k->next->prev = k->prev;
        h->n_socks--;
        if (k->evicted) h->n_evicting--;
        pthread_mutex_unlock(&h->socks_mu);
        free(k);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || !(k = calloc(1, sizeof *k))) return; /* untracked: never evicted */
    k->fd = (int)ci->connect_fd;
    k->since = moe_mono_ms();
    if (h->p.header_timeout_s > 0 && h->p.header_timeout_s < h->p.idle_timeout_s) {
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned)h->p.header_timeout_s);
        k->short_to = 1;
    }
    *socket_context = k;
    pthread_mutex_lock(&h->socks_mu);
    k->next = h->socks;
    if (h->socks) h->socks->prev = k;
    h->socks = k;
    h->n_socks++;
    if (h->n_socks - h->n_evicting > h->p.max_connections) sock_evict_one(h, k);
    pthread_mutex_unlock(&h->socks_mu);
}

/* A request's headers are in: the connection gets --idle-timeout and counts
 * as making progress. */
static void sock_request_started(gw_http *h, struct MHD_Connection *conn) {
    gw_sock *k = sock_of(conn);
    if (!k) return;
    if (k->short_to) {
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned)h->p.idle_timeout_s);
        k->short_to = 0;
    }
    pthread_mutex_lock(&h->socks_mu);
    k->since = moe_mono_ms();
    pthread_mutex_unlock(&h->socks_mu);
}

/* busy 1: the request is complete and being answered; 0: it has ended. */
static void sock_set_busy(gw_http *h, struct MHD_Connection *conn, int busy) {
    gw_sock *k = sock_of(conn);
    if (!k) return;
    pthread_mutex_lock(&h->socks_mu);
    k->busy = busy;
    if (!busy) {
        k->served = 1;
        k->since = moe_mono_ms();
    }
    pthread_mutex_unlock(&h->socks_mu);
}

/* ==== MHD callbacks ===================================================== */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    gw_http *h = cls;
    gw_conn *cs = *con_cls;
    if (!cs) { /* the headers are in: answer at the final call (keep-alive) */
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        cs->h = h;
        cs->r = route_of(url);
        *con_cls = cs;
        gw_reqs_new_id(cs->req_id);
        const char *cid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Client-Request-Id");
        if (gw_reqs_client_id_ok(cid)) snprintf(cs->client_id, sizeof cs->client_id, "%s", cid);
        sock_request_started(h, conn);
        gw_api_error e;
        if (authenticate(cs, conn, &e) < 0) { /* answered before the body is read */
            sock_set_busy(h, conn, 1);
            return reply_error(cs, conn, &e);
        }
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->p.max_body) { /* refused before it is sent */
            cs->too_large = 1;
            sock_set_busy(h, conn, 1);
            return serve_post(cs, conn);
        }
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        if (!cs->too_large) {
            if (cs->body.n + *upload_size > h->p.max_body) {
                cs->too_large = 1;
                free(cs->body.s);
                cs->body = (moe_buf){0};
            } else {
                moe_buf_append(&cs->body, upload, *upload_size);
                if (cs->body.oom) return MHD_NO;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cs->job) return reply_final(cs, conn);         /* resumed: the job is done */
    if (cs->pending) return after_admission(cs, conn); /* resumed: the limits' verdict */
    sock_set_busy(h, conn, 1);
    const int post = !strcmp(method, "POST");
    const int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (cs->r == R_NONE)
        return reply_errorf(cs, conn, 404, "",
                            "no route %s %.200s; the API is under /v1 (/v1/chat/completions, "
                            "/v1/completions, /v1/models)",
                            method, url);
    if (cs->r == R_REQUEST) return serve_request(cs, conn, url, method);
    const int wants_post = cs->r <= R_DETOKENIZE;
    if ((wants_post && !post) || (!wants_post && !get))
        return reply_errorf(cs, conn, 405, "", "%s is not allowed on %.200s; use %s", method, url,
                            wants_post ? "POST" : "GET");
    if (get) return serve_get(cs, conn, url);
    return serve_post(cs, conn);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    sock_set_busy(cls, conn, 0);
    gw_conn *cs = *con_cls;
    if (!cs) return;
    *con_cls = NULL;
    gw_job *j = cs->job;
    if (cs->live) atomic_fetch_sub(&cs->h->live, 1);
    if (cs->tk) gw_limits_end(cs->h->p.limits, cs->tk); /* takes it */
    if (cs->pending) gw_job_unref(cs->pending);         /* never admitted */
    if (j) {
        pthread_mutex_lock(&j->mu);
        j->conn = NULL;
        j->suspended = 0;
        const int done = j->done;
        pthread_mutex_unlock(&j->mu);
        if (!done) {
            atomic_store(&j->cancelled, 1);
            gw_sched_poke(cs->h->p.sched);
        }
        gw_job_unref(j);
    }
    free(cs->body.s);
    free(cs);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    moe_log(MOE_LOG_DEBUG, GW, "http: %s", msg);
}

/* ==== Start and stop ==================================================== */

/* Splits "host:port" / "[v6]:port". */
static int split_hostport(const char *s, char *host, size_t hcap, char *port, size_t pcap) {
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') return -1;
        if ((size_t)(end - s - 1) >= hcap) return -1;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = 0;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= hcap) return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
    }
    if (!colon[1] || strlen(colon + 1) >= pcap) return -1;
    snprintf(port, pcap, "%s", colon + 1);
    return 0;
}

static int bind_listen(gw_http *h, moe_err *err) {
    char host[256], port[16];
    if (split_hostport(h->p.listen, host, sizeof host, port, sizeof port) < 0)
        return moe_err_set(err, MOE_EINVAL, "--listen %s: give HOST:PORT (e.g. 127.0.0.1:8000)",
                           h->p.listen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (gai) return moe_err_set(err, MOE_EINVAL, "--listen %s: %s", h->p.listen, gai_strerror(gai));
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return moe_err_set(err, MOE_EIO, "--listen %s: %s", h->p.listen,
                           strerror(e ? e : EADDRNOTAVAIL));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int bound_port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof ip);
            bound_port = ntohs(a6->sin6_port);
            snprintf(h->addr, sizeof h->addr, "[%s]:%d", ip, bound_port);
        } else {
            struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof ip);
            bound_port = ntohs(a4->sin_port);
            snprintf(h->addr, sizeof h->addr, "%s:%d", ip, bound_port);
        }
    }
    h->fd = fd;
    return 0;
}

int gw_http_start(gw_http **out, const gw_http_params *p, moe_err *err) {
    *out = NULL;
    gw_http *h = calloc(1, sizeof *h);
    if (!h) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    h->p = *p;
    h->fd = -1;
    h->rng = p->seed;
    h->started = (int64_t)time(NULL);
    atomic_init(&h->draining, 0);
    atomic_init(&h->live, 0);
    pthread_mutex_init(&h->rng_mu, NULL);
    pthread_mutex_init(&h->socks_mu, NULL);
    int rc = gw_reqs_create(&h->reqs, GW_REQS_KEEP + (p->max_live > 0 ? p->max_live : 1024));
    if (rc < 0) {
        moe_err_set(err, rc, "out of memory for the requests' registry");
        goto fail;
    }
    if (p->reg) {
        h->m_open = moe_metrics_gauge(p->reg, "moemesh_gateway_http_connections",
                                      "Open HTTP connections.", NULL, 0);
        h->m_evicted = moe_metrics_counter(
            p->reg, "moemesh_gateway_http_connections_evicted_total",
            "Connections closed to make room for a new one (more than --max-connections open).",
            NULL, 0);
    }
    rc = bind_listen(h, err);
    if (rc < 0) goto fail;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_connections + GW_CONN_RESERVE,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)p->idle_timeout_s, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, h, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(p->threads > 1 ? p->threads : 0), MHD_OPTION_END);
    if (!h->d) {
        rc = moe_err_set(err, MOE_EIO, "cannot start the HTTP server on %s", h->p.listen);
        goto fail;
    }
    *out = h;
    return 0;
fail:
    if (h->fd >= 0) close(h->fd);
    gw_reqs_free(h->reqs);
    pthread_mutex_destroy(&h->socks_mu);
    pthread_mutex_destroy(&h->rng_mu);
    free(h);
    return rc;
}

const char *gw_http_address(const gw_http *h) {
    return h->addr;
}

int gw_http_live(gw_http *h) {
    return atomic_load(&h->live);
}

void gw_http_drain(gw_http *h) {
    atomic_store(&h->draining, 1);
}

void gw_http_stop(gw_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);                            /* closes the listening socket it was given */
    for (gw_sock *k = h->socks, *next; k; k = next) { /* none: MHD notified every close */
        next = k->next;
        free(k);
    }
    gw_reqs_free(h->reqs); /* after the scheduler's stop: no job left to end */
    pthread_mutex_destroy(&h->socks_mu);
    pthread_mutex_destroy(&h->rng_mu);
    free(h);
}
