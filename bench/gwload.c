/*
 * bench/gwload.c - build/bench-gwload: a bounded loopback load generator for
 * the gateway's OpenAI API. N keep-alive HTTP/1.1 connections, each sending R
 * streaming completion requests one after another (closed loop: the next
 * request goes when the previous one has ended), every prompt P random token
 * ids, max_tokens G, temperature 0, ignore_eos. Single-threaded: non-blocking
 * sockets and poll(); each read is time-stamped and every token event in it
 * gets that time.
 *
 * Prints one JSON line: aggregate tok/s, TTFT and inter-token latency p50/p99,
 * goodput against an SLO, errors.
 *
 * Prefill-interference mode (--long-prompt-tokens L): the N clients are the
 * "running streams"; once every one of them has its first token, one more
 * connection keeps sending L-token prompts (max_tokens 1, not streamed), each
 * --long-every-ms after the previous one ended, until the streams are done.
 * The ITL figures then count only the streams' token gaps that start after
 * that point (all streams decoding, long prompts arriving).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "svc/clock.h"
#include "svc/flags.h"
#include "svc/strbuf.h"

/* ==== Options =========================================================== */

static const char *o_addr = NULL, *o_model = NULL;
static int o_clients = 1, o_prompt = 128, o_gen = 64, o_requests = 1, o_vocab = 4000;
static uint64_t o_seed = 1;
static int o_timeout_ms = 120000, o_slo_ttft_ms = 10000, o_slo_itl_ms = 250;
static int o_long_prompt = 0, o_long_every_ms = 500, o_long_max = 1000;
static int o_quiet = 0;
static const char *o_key = NULL; /* --key: Authorization: Bearer KEY */
static int o_gap_ms = 0;         /* --gap-ms: pause between a stream's requests */

/* ==== Small helpers ===================================================== */

static int64_t now_ns(void) {
    return moe_mono_ns();
}

typedef struct dvec {
    double *v;
    size_t n, cap;
} dvec;

static void dvec_push(dvec *d, double x) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        double *v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            fprintf(stderr, "bench-gwload: out of memory\n");
            exit(1);
        }
        d->v = v, d->cap = cap;
    }
    d->v[d->n++] = x;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* nearest-rank percentile of a sorted vector; NAN when empty */
static double pct(const dvec *d, double q) {
    if (!d->n) return NAN;
    size_t i = (size_t)ceil(q * (double)d->n);
    if (i < 1) i = 1;
    if (i > d->n) i = d->n;
    return d->v[i - 1];
}

/* a JSON number, or null for NAN */
static void put_num(const char *key, double x, int comma) {
    if (isnan(x))
        printf("\"%s\":null%s", key, comma ? "," : "");
    else
        printf("\"%s\":%.3f%s", key, x, comma ? "," : "");
}

static void buf_init(moe_buf *b, size_t cap) {
    b->s = malloc(cap);
    b->cap = cap, b->n = 0, b->oom = !b->s;
    if (b->s) b->s[0] = 0;
}

/* xorshift64* */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ==== Connections ======================================================= */

enum { K_STREAM, K_LONG };
enum { S_IDLE, S_CONNECTING, S_SENDING, S_READING, S_WAIT, S_FINISHED };
enum { P_HEAD, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER, P_LEN, P_EOF };

typedef struct conn {
    int id, kind, fd, state;
    int sent, target; /* requests sent, requests to send */
    moe_buf req;      /* the request being written */
    size_t woff;      /* bytes of it written */
    moe_buf raw;      /* bytes read, not yet parsed */
    moe_buf pl;       /* the body so far (de-chunked): SSE events or a JSON body */
    int ps;           /* parser state */
    int status;       /* HTTP status of the current response */
    int close_after;  /* the server said Connection: close */
    int64_t left;     /* bytes left in the current chunk or the body */
    /* the current request */
    int64_t t_send, t_first, t_prev;
    int events, usage_tokens, done_seen, sse_error;
    int64_t next_at; /* K_LONG: when to send the next one (ns) */
} conn;

typedef struct stats {
    dvec ttft, itl, long_lat;
    int64_t tokens, events, completed, good, errors, long_done;
    int64_t t0, t_end, t_steady; /* t_steady: all streams decoding (0: not yet) */
    int streams_started;
} stats;

static stats S;
static struct sockaddr_storage g_sa;
static socklen_t g_salen;
static int g_err_printed;

static void report_error(const conn *c, const char *fmt, const char *detail) {
    S.errors++;
    if (g_err_printed++ < 5) {
        fprintf(stderr, "bench-gwload: client %d, request %d: ", c->id, c->sent);
        fprintf(stderr, fmt, detail ? detail : "");
        fputc('\n', stderr);
    } else if (g_err_printed == 6) {
        fprintf(stderr, "bench-gwload: (further errors not printed)\n");
    }
}

static void conn_close(conn *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* Starts a non-blocking connect; a failure here (not EINPROGRESS) is fatal:
 * the server is not there. */
static int conn_open(conn *c) {
    int fd = socket(g_sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("bench-gwload: socket");
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    if (connect(fd, (struct sockaddr *)&g_sa, g_salen) < 0 && errno != EINPROGRESS) {
        fprintf(stderr, "bench-gwload: cannot connect to %s: %s\n", o_addr, strerror(errno));
        return -1;
    }
    c->state = S_CONNECTING;
    return 0;
}

/* Builds the next request of c into c->req. */
static void build_request(conn *c, int idx) {
    const int P = c->kind == K_LONG ? o_long_prompt : o_prompt;
    /* different ids for every client and request: no shared prefixes */
    uint64_t s = o_seed * 0x9E3779B97F4A7C15ULL + (uint64_t)c->id * 0x100000001B3ULL +
                 (uint64_t)idx * 0xC2B2AE3D27D4EB4FULL + 1;
    for (int i = 0; i < 4; i++) rng_next(&s);
    moe_buf body = {0};
    buf_init(&body, (size_t)P * 6 + 256);
    moe_buf_printf(&body, "{\"model\":");
    moe_buf_json(&body, o_model);
    moe_buf_printf(&body, ",\"prompt\":[");
    for (int i = 0; i < P; i++)
        moe_buf_printf(&body, "%s%d", i ? "," : "",
                       1 + (int)(rng_next(&s) % (uint64_t)(o_vocab - 1)));
    if (c->kind == K_LONG)
        moe_buf_printf(&body, "],\"max_tokens\":1,\"temperature\":0,\"ignore_eos\":true,"
                              "\"stream\":false}");
    else
        moe_buf_printf(&body,
                       "],\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,"
                       "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                       o_gen);
    c->req.n = 0;
    moe_buf_printf(&c->req,
                   "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                   "Accept: %s\r\nContent-Length: %zu\r\n",
                   o_addr, c->kind == K_LONG ? "application/json" : "text/event-stream", body.n);
    if (o_key) moe_buf_printf(&c->req, "Authorization: Bearer %s\r\n", o_key);
    moe_buf_printf(&c->req, "\r\n");
    moe_buf_append(&c->req, body.s, body.n);
    free(body.s);
    if (body.oom || c->req.oom) {
        fprintf(stderr, "bench-gwload: out of memory\n");
        exit(1);
    }
}

/* Begins the next request on c (connecting first when needed). */
static int start_request(conn *c) {
    build_request(c, c->sent);
    c->woff = 0;
    c->raw.n = 0, c->pl.n = 0;
    c->ps = P_HEAD, c->status = 0, c->close_after = 0, c->left = 0;
    c->t_send = now_ns(), c->t_first = 0, c->t_prev = 0;
    c->events = 0, c->usage_tokens = -1, c->done_seen = 0, c->sse_error = 0;
    c->sent++;
    if (c->fd < 0) return conn_open(c);
    c->state = S_SENDING;
    return 0;
}

/* One SSE event (without its "\n\n") of a streaming response. */
static void on_event(conn *c, const char *e, size_t n, int64_t t) {
    if (n >= 12 && !memcmp(e, "data: [DONE]", 12)) {
        c->done_seen = 1;
        return;
    }
    if (n < 7 || memcmp(e, "data: {", 7)) return;
    /* a JSON object: an error, a text chunk, the finish chunk or the usage */
    if (n >= 15 && !memcmp(e, "data: {\"error\"", 15)) {
        c->sse_error = 1;
        report_error(c, "error event in the stream: %s", e);
        return;
    }
    const char *u = memmem(e, n, "\"completion_tokens\":", 20);
    if (u) c->usage_tokens = atoi(u + 20);
    const char *x = memmem(e, n, "\"text\":\"", 8);
    if (!x || x + 8 >= e + n || x[8] == '"') return; /* no text, or "" */
    c->events++;
    if (!c->t_first) {
        c->t_first = t;
        dvec_push(&S.ttft, (double)(t - c->t_send) / 1e6);
        if (++S.streams_started == o_clients && !S.t_steady) S.t_steady = t;
    } else if (!o_long_prompt || (S.t_steady && c->t_prev >= S.t_steady)) {
        dvec_push(&S.itl, (double)(t - c->t_prev) / 1e6);
    }
    c->t_prev = t;
}

/* Bytes of the body (de-chunked). */
static void on_payload(conn *c, const char *p, size_t n, int64_t t) {
    if (c->status != 200 || c->kind == K_LONG) {
        if (c->pl.n < 65536) moe_buf_append(&c->pl, p, n);
        return;
    }
    moe_buf_append(&c->pl, p, n);
    size_t start = 0;
    for (;;) {
        char *end = memmem(c->pl.s + start, c->pl.n - start, "\n\n", 2);
        if (!end) break;
        *end = 0;
        on_event(c, c->pl.s + start, (size_t)(end - (c->pl.s + start)), t);
        start = (size_t)(end - c->pl.s) + 2;
    }
    if (start) {
        memmove(c->pl.s, c->pl.s + start, c->pl.n - start);
        c->pl.n -= start;
        c->pl.s[c->pl.n] = 0;
    }
}

static void print_body(const conn *c) {
    size_t n = c->pl.n;
    while (n && (c->pl.s[n - 1] == '\n' || c->pl.s[n - 1] == '\r')) n--;
    fprintf(stderr, "  body: %.*s\n", (int)n, c->pl.s);
}

/* The current response has ended (ok or not); records it and moves on. */
static void on_response_end(conn *c, int64_t t) {
    if (c->kind == K_LONG) {
        if (c->status == 200) {
            S.long_done++;
            dvec_push(&S.long_lat, (double)(t - c->t_send) / 1e6);
        } else {
            char st[16];
            snprintf(st, sizeof st, "%d", c->status);
            report_error(c, "long prompt: HTTP %s", st);
            if (g_err_printed <= 5) print_body(c);
        }
        c->next_at = t + (int64_t)o_long_every_ms * 1000000;
    } else if (c->status != 200) {
        char msg[64];
        snprintf(msg, sizeof msg, "%d", c->status);
        report_error(c, "HTTP %s", msg);
        if (g_err_printed <= 5) print_body(c);
    } else if (!c->done_seen && !c->sse_error) {
        report_error(c, "the stream ended without data: [DONE]%s", "");
    } else if (!c->sse_error) {
        const int tokens = c->usage_tokens >= 0 ? c->usage_tokens : c->events;
        S.tokens += tokens;
        S.events += c->events;
        S.completed++;
        const double ttft_ms = c->t_first ? (double)(c->t_first - c->t_send) / 1e6 : INFINITY;
        const double itl_ms =
            c->events > 1 ? (double)(c->t_prev - c->t_first) / 1e6 / (double)(c->events - 1) : 0;
        if (tokens == o_gen && c->events > 0 && ttft_ms <= o_slo_ttft_ms && itl_ms <= o_slo_itl_ms)
            S.good++;
        S.t_end = t;
    }
    if (c->close_after) conn_close(c);
    c->state = c->kind == K_LONG ? S_WAIT : S_IDLE;
    if (c->kind == K_STREAM && o_gap_ms > 0) { /* an open-loop-ish client: a pause first */
        c->state = S_WAIT;
        c->next_at = t + (int64_t)o_gap_ms * 1000000;
    }
}

/* Parses what has been read; returns -1 on a protocol error (the connection
 * is dropped). */
static int parse(conn *c, int64_t t) {
    size_t off = 0;
    for (;;) {
        char *p = c->raw.s + off;
        size_t n = c->raw.n - off;
        if (c->ps == P_HEAD) {
            char *e = n ? memmem(p, n, "\r\n\r\n", 4) : NULL;
            if (!e) {
                if (n > 65536) return report_error(c, "response head too long%s", ""), -1;
                break;
            }
            *e = 0;
            if (sscanf(p, "HTTP/1.%*d %d", &c->status) != 1)
                return report_error(c, "not an HTTP response: %s", p), -1;
            int chunked = 0;
            int64_t len = -1;
            for (char *h = strstr(p, "\r\n"); h; h = strstr(h, "\r\n")) {
                h += 2;
                if (!strncasecmp(h, "transfer-encoding:", 18) && strcasestr(h, "chunked"))
                    chunked = 1;
                else if (!strncasecmp(h, "content-length:", 15))
                    len = strtoll(h + 15, NULL, 10);
                else if (!strncasecmp(h, "connection:", 11)) {
                    char *v = h + 11;
                    while (*v == ' ') v++;
                    if (!strncasecmp(v, "close", 5)) c->close_after = 1;
                }
            }
            off += (size_t)(e - p) + 4;
            if (chunked)
                c->ps = P_CHUNK_SIZE;
            else if (len >= 0)
                c->ps = P_LEN, c->left = len;
            else
                c->ps = P_EOF, c->close_after = 1;
            if (c->ps == P_LEN && c->left == 0) {
                on_response_end(c, t);
                off = c->raw.n;
                break;
            }
        } else if (c->ps == P_CHUNK_SIZE || c->ps == P_TRAILER) {
            char *e = n ? memmem(p, n, "\r\n", 2) : NULL;
            if (!e) {
                if (n > 4096) return report_error(c, "bad chunk header%s", ""), -1;
                break;
            }
            off += (size_t)(e - p) + 2;
            if (c->ps == P_TRAILER) {
                if (e == p) { /* the empty line: the response is complete */
                    on_response_end(c, t);
                    off = c->raw.n; /* nothing may follow: the next request is ours */
                    break;
                }
                continue;
            }
            char *end;
            long long sz = strtoll(p, &end, 16);
            if (end == p || sz < 0) return report_error(c, "bad chunk size%s", ""), -1;
            if (sz == 0)
                c->ps = P_TRAILER;
            else
                c->ps = P_CHUNK_DATA, c->left = sz;
        } else if (c->ps == P_CHUNK_DATA || c->ps == P_LEN || c->ps == P_EOF) {
            if (!n) break;
            size_t k = c->ps == P_EOF ? n : (size_t)c->left < n ? (size_t)c->left : n;
            on_payload(c, p, k, t);
            off += k;
            if (c->ps == P_EOF) continue;
            c->left -= (int64_t)k;
            if (c->left == 0) {
                if (c->ps == P_LEN) {
                    on_response_end(c, t);
                    off = c->raw.n;
                    break;
                }
                c->ps = P_CHUNK_CRLF;
            }
        } else { /* P_CHUNK_CRLF */
            if (n < 2) break;
            if (p[0] != '\r' || p[1] != '\n') return report_error(c, "bad chunk end%s", ""), -1;
            off += 2;
            c->ps = P_CHUNK_SIZE;
        }
    }
    if (off) {
        memmove(c->raw.s, c->raw.s + off, c->raw.n - off);
        c->raw.n -= off;
        if (c->raw.s) c->raw.s[c->raw.n] = 0;
    }
    return 0;
}

/* ==== Address =========================================================== */

static int resolve_loopback(const char *addr) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1] || (size_t)(colon - addr) >= sizeof host) {
        fprintf(stderr, "bench-gwload: --addr: want HOST:PORT, got '%s'\n", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') h[strlen(h) - 1] = 0, h++;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    int rc = getaddrinfo(h, colon + 1, &hints, &res);
    if (rc) {
        fprintf(stderr, "bench-gwload: --addr %s: %s\n", addr, gai_strerror(rc));
        return -1;
    }
    int ok = 0;
    for (struct addrinfo *a = res; a && !ok; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            const struct sockaddr_in *s = (const struct sockaddr_in *)a->ai_addr;
            ok = (ntohl(s->sin_addr.s_addr) >> 24) == 127;
        } else if (a->ai_family == AF_INET6) {
            const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a->ai_addr;
            ok = !memcmp(&s->sin6_addr, &in6addr_loopback, sizeof s->sin6_addr);
        }
        if (ok) memcpy(&g_sa, a->ai_addr, a->ai_addrlen), g_salen = a->ai_addrlen;
    }
    freeaddrinfo(res);
    if (!ok) fprintf(stderr, "bench-gwload: --addr %s is not a loopback address\n", addr);
    return ok ? 0 : -1;
}

/* ==== Main ============================================================== */

static const char about[] =
    "A bounded loopback load generator for the gateway: N keep-alive connections,\n"
    "each sending R streaming /v1/completions requests in turn (P random token ids\n"
    "in [1, --vocab), max_tokens G, temperature 0, ignore_eos). Prints one JSON line:\n"
    "  tok_s        completion tokens (the usage chunk's count) / wall_s; wall_s runs\n"
    "               from the first request to the last completed one\n"
    "  ttft_*_ms    request sent -> first token event (p50, p99)\n"
    "  itl_*_ms     gaps between consecutive token events of a stream (p50, p99)\n"
    "  goodput      requests per second that returned exactly G tokens within the\n"
    "               SLO: TTFT <= --slo-ttft-ms and mean ITL <= --slo-itl-ms\n"
    "  errors       failed requests (non-200: its body is printed; an error event;\n"
    "               no [DONE]; a dropped connection; the timeout)\n"
    "With --long-prompt-tokens L (prefill interference): once all N streams have\n"
    "their first token, one more connection sends L-token prompts (max_tokens 1,\n"
    "not streamed), the next --long-every-ms after the previous answer, until the\n"
    "streams end; itl_* then count only the streams' gaps from that point on.";

int main(int argc, char **argv) {
    const moe_flag flags[] = {
        {"--addr", NULL, MOE_FLAG_STRING, &o_addr, "HOST:PORT",
         .help = "the gateway (loopback only)", .required = "gateway address"},
        {"--model", NULL, MOE_FLAG_STRING, &o_model, "NAME", .help = "the served model name",
         .required = "model name"},
        {"--clients", NULL, MOE_FLAG_INT, &o_clients, "N", .help = "concurrent streams", .min = 1,
         .max = 1024},
        {"--prompt-tokens", NULL, MOE_FLAG_INT, &o_prompt, "P", .help = "prompt tokens", .min = 1,
         .max = 65536},
        {"--gen", NULL, MOE_FLAG_INT, &o_gen, "G", .help = "max_tokens (ignore_eos: exactly G)",
         .min = 1, .max = 65536},
        {"--requests", NULL, MOE_FLAG_INT, &o_requests, "R",
         .help = "requests per client, one after another", .min = 1, .max = 100000},
        {"--vocab", NULL, MOE_FLAG_INT, &o_vocab, "V", .help = "prompt ids are in [1, V)", .min = 2,
         .max = 1 << 24},
        {"--seed", NULL, MOE_FLAG_UINT64, &o_seed, "S", .help = "prompt ids' seed"},
        {"--timeout-ms", NULL, MOE_FLAG_MS, &o_timeout_ms, "DUR",
         .help = "hard limit on the whole run (unfinished requests count as errors)", .min = 1,
         .max = 3600000},
        {"--slo-ttft-ms", NULL, MOE_FLAG_MS, &o_slo_ttft_ms, "DUR",
         .help = "goodput SLO: time to first token", .min = 0, .max = 3600000},
        {"--slo-itl-ms", NULL, MOE_FLAG_MS, &o_slo_itl_ms, "DUR",
         .help = "goodput SLO: a request's mean inter-token latency", .min = 0, .max = 3600000},
        {"--long-prompt-tokens", NULL, MOE_FLAG_INT, &o_long_prompt, "L",
         .help = "prefill interference: L-token prompts arriving (0: off)", .min = 0, .max = 65536},
        {"--long-every-ms", NULL, MOE_FLAG_MS, &o_long_every_ms, "DUR",
         .help = "pause between a long prompt's answer and the next", .min = 0, .max = 3600000},
        {"--long-max", NULL, MOE_FLAG_INT, &o_long_max, "K", .help = "at most K long prompts",
         .min = 1, .max = 1000000},
        {"--quiet", NULL, MOE_FLAG_BOOL, &o_quiet, NULL, .help = "no progress line on stderr"},
        {"--key", NULL, MOE_FLAG_STRING, &o_key, "KEY",
         .help = "send Authorization: Bearer KEY (a tenant's API key)"},
        {"--gap-ms", NULL, MOE_FLAG_MS, &o_gap_ms, "DUR",
         .help = "each client pauses this long between its requests (a quiet tenant)", .min = 0,
         .max = 3600000},
        {0}};
    const moe_flagset fs = {.prog = "bench-gwload",
                            .args = "--addr HOST:PORT --model NAME [options]",
                            .about = about,
                            .flags = flags};
    int rc = moe_flags_run(&fs, argc, argv, stdout, stderr);
    if (rc >= 0) return rc;
    if (resolve_loopback(o_addr) < 0) return 2;

    const int nconn = o_clients + (o_long_prompt ? 1 : 0);
    conn *cs = calloc((size_t)nconn, sizeof *cs);
    struct pollfd *pfd = calloc((size_t)nconn, sizeof *pfd);
    char *buf = malloc(1 << 16);
    if (!cs || !pfd || !buf) return fprintf(stderr, "bench-gwload: out of memory\n"), 1;
    S.t0 = now_ns();
    const int64_t deadline = S.t0 + (int64_t)o_timeout_ms * 1000000;
    for (int i = 0; i < nconn; i++) {
        conn *c = &cs[i];
        c->id = i, c->fd = -1, c->state = S_IDLE;
        buf_init(&c->req, 4096), buf_init(&c->raw, 4096), buf_init(&c->pl, 4096);
        c->kind = i < o_clients ? K_STREAM : K_LONG;
        c->target = c->kind == K_LONG ? o_long_max : o_requests;
        if (c->kind == K_LONG) c->state = S_WAIT, c->next_at = INT64_MAX;
    }
    int timed_out = 0, fatal = 0;
    int64_t last_note = S.t0;
    for (;;) {
        int64_t t = now_ns();
        int active = 0, streams_active = 0;
        for (int i = 0; i < nconn; i++) {
            conn *c = &cs[i];
            if (c->kind == K_STREAM && c->state == S_WAIT && t >= c->next_at) c->state = S_IDLE;
            if (c->kind == K_LONG && c->state == S_WAIT && S.t_steady) {
                if (c->next_at == INT64_MAX) c->next_at = S.t_steady;
                if (t >= c->next_at) c->state = S_IDLE;
            }
            if (c->state == S_IDLE) {
                if (c->sent < c->target) {
                    if (start_request(c) < 0) {
                        fatal = 1;
                        break;
                    }
                } else {
                    c->state = S_FINISHED;
                    conn_close(c);
                }
            }
            if (c->kind == K_STREAM && c->state != S_FINISHED) streams_active++;
        }
        if (fatal || !streams_active) break;
        if (t >= deadline) {
            timed_out = 1;
            break;
        }
        /* the long-prompt connection stops with the streams */
        int64_t wake = deadline;
        for (int i = 0; i < nconn; i++) {
            conn *c = &cs[i];
            pfd[i].fd = -1, pfd[i].events = 0, pfd[i].revents = 0;
            if (c->state == S_WAIT && c->next_at < wake) wake = c->next_at;
            if (c->fd < 0) continue;
            pfd[i].fd = c->fd;
            pfd[i].events = c->state == S_CONNECTING || c->state == S_SENDING ? POLLOUT : POLLIN;
            active++;
        }
        if (!o_quiet && t - last_note > 5000000000LL) {
            fprintf(stderr, "bench-gwload: %.0f s: %lld requests done, %lld tokens\n",
                    (double)(t - S.t0) / 1e9, (long long)S.completed, (long long)S.tokens);
            last_note = t;
        }
        int ms = (int)((wake - t + 999999) / 1000000);
        if (ms < 0) ms = 0;
        if (ms > 1000) ms = 1000;
        int n = poll(pfd, (nfds_t)nconn, ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("bench-gwload: poll");
            return 1;
        }
        for (int i = 0; i < nconn && n > 0; i++) {
            conn *c = &cs[i];
            if (pfd[i].fd < 0 || !pfd[i].revents) continue;
            if (c->state == S_CONNECTING) {
                int e = 0;
                socklen_t el = sizeof e;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &el);
                if (e) {
                    fprintf(stderr, "bench-gwload: cannot connect to %s: %s\n", o_addr,
                            strerror(e));
                    fatal = 1;
                    break;
                }
                c->state = S_SENDING;
            }
            if (c->state == S_SENDING) {
                ssize_t w = send(c->fd, c->req.s + c->woff, c->req.n - c->woff, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    report_error(c, "send: %s", strerror(errno));
                    conn_close(c);
                    c->state = S_IDLE;
                    continue;
                }
                if (w > 0) c->woff += (size_t)w;
                if (c->woff == c->req.n) c->state = S_READING;
                continue;
            }
            if (c->state != S_READING) { /* an idle keep-alive connection: closed? */
                ssize_t r = recv(c->fd, buf, 1 << 16, 0);
                if (r <= 0) conn_close(c);
                continue;
            }
            ssize_t r = recv(c->fd, buf, 1 << 16, 0);
            const int64_t tr = now_ns();
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) continue;
                report_error(c, "recv: %s", strerror(errno));
                conn_close(c);
                c->state = S_IDLE;
                continue;
            }
            if (r == 0) {
                if (c->ps == P_EOF) {
                    on_response_end(c, tr);
                } else {
                    report_error(c, "the server closed the connection mid-response%s", "");
                    c->state = S_IDLE;
                }
                conn_close(c);
                continue;
            }
            moe_buf_append(&c->raw, buf, (size_t)r);
            if (c->raw.oom) return fprintf(stderr, "bench-gwload: out of memory\n"), 1;
            if (parse(c, tr) < 0) {
                conn_close(c);
                c->state = S_IDLE;
            }
        }
        if (fatal) break;
    }
    /* requests still running count as errors */
    int unfinished = 0;
    for (int i = 0; i < nconn; i++) {
        conn *c = &cs[i];
        if (c->kind == K_STREAM)
            unfinished +=
                (c->state == S_SENDING || c->state == S_READING || c->state == S_CONNECTING) +
                (c->state == S_FINISHED ? 0 : c->target - c->sent);
        conn_close(c);
    }
    if (timed_out)
        fprintf(stderr, "bench-gwload: timed out after %d ms with %d requests unfinished\n",
                o_timeout_ms, unfinished);
    S.errors += unfinished;
    if (fatal) return 1; /* the server is not there: said above */

    const double wall = S.t_end > S.t0 ? (double)(S.t_end - S.t0) / 1e9 : NAN;
    dvec *all[] = {&S.ttft, &S.itl, &S.long_lat};
    for (int i = 0; i < 3; i++)
        if (all[i]->n) qsort(all[i]->v, all[i]->n, sizeof(double), cmp_d);
    printf("{\"clients\":%d,\"prompt_tokens\":%d,\"gen\":%d,\"requests\":%lld,\"tokens\":%lld,"
           "\"text_events\":%lld,",
           o_clients, o_prompt, o_gen, (long long)S.completed, (long long)S.tokens,
           (long long)S.events);
    put_num("wall_s", wall, 1);
    put_num("tok_s", wall > 0 ? (double)S.tokens / wall : NAN, 1);
    put_num("ttft_p50_ms", pct(&S.ttft, 0.50), 1);
    put_num("ttft_p99_ms", pct(&S.ttft, 0.99), 1);
    put_num("itl_p50_ms", pct(&S.itl, 0.50), 1);
    put_num("itl_p99_ms", pct(&S.itl, 0.99), 1);
    printf("\"itl_samples\":%zu,", S.itl.n);
    put_num("goodput", wall > 0 ? (double)S.good / wall : NAN, 1);
    printf("\"good_requests\":%lld,\"slo_ttft_ms\":%d,\"slo_itl_ms\":%d,", (long long)S.good,
           o_slo_ttft_ms, o_slo_itl_ms);
    if (o_long_prompt) {
        const double p50 = pct(&S.itl, 0.50), p99 = pct(&S.itl, 0.99);
        put_num("itl_p99_over_p50", p50 > 0 ? p99 / p50 : NAN, 1);
        printf("\"long_prompt_tokens\":%d,\"long_requests\":%lld,", o_long_prompt,
               (long long)S.long_done);
        put_num("long_latency_p50_ms", pct(&S.long_lat, 0.50), 1);
    }
    printf("\"timed_out\":%s,\"errors\":%lld}\n", timed_out ? "true" : "false",
           (long long)S.errors);
    fflush(stdout);
    for (int i = 0; i < nconn; i++) free(cs[i].req.s), free(cs[i].raw.s), free(cs[i].pl.s);
    for (int i = 0; i < 3; i++) free(all[i]->v);
    free(cs), free(pfd), free(buf);
    return S.errors || timed_out ? 1 : 0;
}
