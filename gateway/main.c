/*
 * gateway - the OpenAI-compatible front door: HTTP (http.c) -> request
 * parsing (api.c) -> the engine thread's continuous batching (scheduler.c) over
 * the model's non-expert part, with the routed experts in this process, on
 * a fixed list of expert-workers, or where router-svc's placement says.
 * Every flag has an environment twin.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "http.h"
#include "mesh/remote.h"
#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "mesh/tenant.h"
#include "moe/chat.h"
#include "moe/generate.h"
#include "moe/model.h"
#include "moe/ops.h"
#include "moe/vocab.h"
#include "fair.h"
#include "tload.h"
#include "scheduler.h"
#include "svc/clock.h"
#include "svc/log.h"
#include "svc/signal.h"
#include "svc/start.h"

#define GW "gateway"

static const char about[] =
    "Serves a MoE model over the OpenAI API (/v1/chat/completions, /v1/completions,\n"
    "/v1/models; streaming as server-sent events), batching every live request into\n"
    "each engine step. The routed experts run in this process (default), on\n"
    "expert-workers (--workers) or where router-svc places them (--redis).\n"
    "Every flag has an environment twin (in brackets).";
static const char footer[] =
    "API keys: with --tenants every route but /healthz, /readyz and /metrics needs\n"
    "'Authorization: Bearer KEY' (or 'api-key: KEY'); a missing or unknown key is a\n"
    "401. Tenants come from a JSON file (--tenants FILE, holding the keys' SHA-256)\n"
    "or from Redis (--tenants redis: the Redis of --redis, the placement's; or\n"
    "--tenants-redis URL, e.g. with the experts in process), under --prefix, where\n"
    "'moectl tenant add|list|revoke|set-limits' manages them. Without API keys the\n"
    "gateway listens on loopback only; --insecure-no-auth allows another address,\n"
    "open to anyone who can reach it.\n"
    "Limits: a tenant's rpm, tpm, concurrency and daily tokens hold across every\n"
    "replica through the tenants' Redis (one script per request; a refusal is\n"
    "OpenAI's 429 with Retry-After and x-ratelimit-* headers); max_context is a\n"
    "400. While Redis is away each replica enforces its share (limit / replicas)\n"
    "alone, or refuses with 503 under --limits-fail-closed.\n"
    "Probes: /healthz (alive), /readyz (serving: model loaded, experts reachable).\n"
    "SIGTERM/SIGINT: stop taking requests, finish the running ones (up to\n"
    "--drain-timeout), exit 0; a second signal exits at once.\n"
    "Example: gateway --model m.gguf --listen 127.0.0.1:8000, then\n"
    "  curl -N localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\\n"
    "    -d "
    "'{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}'\n";
static const moe_svc svc = {
    .name = GW, .args = "--model FILE [options]", .about = about, .footer = footer};

typedef struct gw_opts {
    const char *model, *listen, *name, *chat_template;
    moe_remote_opts ro; /* where the experts run (mesh/remote.h) */
    int threads, max_seqs, ctx, max_batch_tokens, max_queue, chunked_prefill, prefill_chunk;
    int spare_slots; /* -1: 1 with fair share, 0 with fifo */
    int exact;
    const char *cache_type;
    const char *schedule; /* "fair" or "fifo" */
    int timeout_ms;
    int max_connections, idle_ms, header_ms, http_threads, insecure, drain_ms;
    int log_prompts;
    const char *tenants, *tenants_redis; /* --tenants FILE|redis, --tenants-redis URL */
    int limits_fail_closed, limits_window_s;
    uint64_t max_body, seed;
} gw_opts;

static int check_cache_type(const void *dst, char *why, size_t cap) {
    moe_dtype t;
    if (moe_kv_type_parse(*(const char *const *)dst, &t) == 0) return 0;
    snprintf(why, cap, "must be f16 or f32");
    return -1;
}

static int check_schedule(const void *dst, char *why, size_t cap) {
    const char *v = *(const char *const *)dst;
    if (v && (!strcmp(v, "fair") || !strcmp(v, "fifo"))) return 0;
    snprintf(why, cap, "must be fair or fifo");
    return -1;
}

typedef struct gw_state {
    gw_opts o;
    moe_model *m;
    moe_vocab *vocab;
    moe_expert_backend *remote;
    moe_ctx *ctx;
    gw_sched *sched;
    gw_fair *fair;   /* --schedule fair */
    gw_usage *usage; /* per-tenant requests, tokens and expert rows */
    gw_tload *tload; /* their report to Redis (with --redis or --tenants-redis) */
    gw_http *http;
    moe_metrics *reg;
    moe_metric *rtt, *uncovered, *workers_live; /* remote experts only */
    moe_metric *w_failures, *w_suspects, *w_retries, *w_stall, *w_second;
    moe_tenants *tenants; /* API keys (NULL: none checked) */
    gw_auth *auth;
    const char *tenants_from; /* the tenants' Redis URL (NULL: a file) */
    gw_limits *limits;        /* the tenants' limits (with API keys) */
    moe_metric *m_tenants, *m_tenant_keys, *m_tenant_reloads, *m_tenant_failures, *m_tenant_invalid,
        *m_tenant_age;
} gw_state;

/* 1 if host (of HOST:PORT) names only loopback addresses. */
static int is_loopback(const char *listen) {
    char host[256];
    const char *colon = strrchr(listen, ':');
    size_t n = colon ? (size_t)(colon - listen) : strlen(listen);
    if (n >= sizeof host) return 0;
    memcpy(host, listen, n);
    host[n] = 0;
    if (host[0] == '[' && n >= 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = 0;
    }
    return !strncmp(host, "127.", 4) || !strcmp(host, "::1") || !strcmp(host, "localhost");
}

/* The served name: the file's base name without .gguf. */
static void default_name(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 5 && !strcmp(b + n - 5, ".gguf")) n -= 5;
    if (n >= cap) n = cap - 1;
    memcpy(out, b, n);
    out[n] = 0;
}

static int chat_kind_of(const gw_state *s, const char *override) {
    moe_err err;
    if (override) {
        const int k = moe_chat_template_parse_name(override);
        if (k < 0)
            moe_log(MOE_LOG_ERROR, GW,
                    "--chat-template: unknown format '%s' (chatml, mistral, llama3, deepseek3, "
                    "olmoe)",
                    override);
        return k;
    }
    moe_gguf_str t;
    if (moe_gguf_get_str(s->m->gguf, "tokenizer.chat_template", &t) < 0) {
        moe_log(MOE_LOG_WARN, GW,
                "the model has no tokenizer.chat_template: chat messages use chatml "
                "(--chat-template NAME to choose)");
        return MOE_CHAT_CHATML;
    }
    const int k = moe_chat_template_detect(t.ptr, (size_t)t.len, &err);
    if (k < 0) {
        moe_log(MOE_LOG_WARN, GW, "%s; chat messages use chatml", err.msg);
        return MOE_CHAT_CHATML;
    }
    return k;
}

static int ready(void *ud, char *why, size_t cap) {
    gw_state *s = ud;
    if (s->tenants) {
        moe_tenants_stats ts;
        moe_tenants_get_stats(s->tenants, &ts);
        if (!ts.loaded) {
            snprintf(why, cap, "the API keys are not loaded yet (their Redis does not answer)");
            return -1;
        }
    }
    if (s->remote) {
        moe_remote_coverage cv;
        if (moe_remote_get_coverage(s->remote, &cv) < 0) {
            snprintf(why, cap, "the experts' coverage is unknown");
            return -1;
        }
        if (cv.uncovered > 0) {
            snprintf(why, cap,
                     "%d of %d (layer, expert) pairs have no live holder (first: layer %d expert "
                     "%d); %d of %d workers live",
                     cv.uncovered, cv.pairs, cv.layer, cv.expert, cv.workers_live, cv.workers);
            return -1;
        }
    }
    gw_sched_stats st;
    gw_sched_get_stats(s->sched, &st);
    if (st.last_decode_failed && moe_mono_ms() - st.last_fail_ms < 5000) {
        snprintf(why, cap, "an engine step failed %.1f s ago (experts unavailable?)",
                 (double)(moe_mono_ms() - st.last_fail_ms) / 1000.0);
        return -1;
    }
    return 0;
}

/* The remote backend's round trips, per worker (engine thread). */
static void on_rtt(void *ud, const char *addr, double ms, int rows) {
    (void)rows;
    gw_state *s = ud;
    moe_metric_observe(s->rtt, (const char *[]){addr}, ms / 1000.0);
}

/* Gauges (and the tenant store's counters) read when /metrics is rendered. */
static void before_metrics(void *ud) {
    gw_state *s = ud;
    if (s->usage) gw_usage_metrics_update(s->usage, 5);
    if (s->tenants) {
        moe_tenants_stats ts;
        moe_tenants_get_stats(s->tenants, &ts);
        moe_metric_set(s->m_tenants, NULL, ts.n_tenants);
        moe_metric_set(s->m_tenant_keys, NULL, ts.n_keys);
        moe_metric_set(s->m_tenant_reloads, NULL, (double)ts.reloads);
        moe_metric_set(s->m_tenant_failures, NULL, (double)ts.source_failures);
        moe_metric_set(s->m_tenant_invalid, NULL, (double)ts.invalid);
        moe_metric_set(s->m_tenant_age, NULL,
                       ts.synced_ms ? (double)(moe_mono_ms() - ts.synced_ms) / 1000.0 : -1);
    }
    moe_remote_coverage cv;
    if (s->remote && moe_remote_get_coverage(s->remote, &cv) == 0) {
        moe_metric_set(s->uncovered, NULL, cv.uncovered);
        moe_metric_set(s->workers_live, NULL, cv.workers_live);
    }
    if (s->remote) {
        const moe_remote_stats rs = moe_remote_get_stats(s->remote);
        moe_metric_set(s->w_failures, NULL, (double)rs.worker_failures);
        moe_metric_set(s->w_suspects, NULL, (double)rs.suspects);
        moe_metric_set(s->w_retries, NULL, (double)rs.retries);
        moe_metric_set(s->w_second, NULL, (double)rs.second_batches);
        moe_metric_set(s->w_stall, NULL, rs.stall_ms_max / 1000.0);
    }
}

/* Opens the tenant store of --tenants / --tenants-redis (none: no keys are
 * checked). 0, or the exit status (2) after logging why. */
static int open_tenants(gw_state *s) {
    const gw_opts *o = &s->o;
    const char *file = o->tenants && *o->tenants ? o->tenants : NULL, *redis = NULL;
    if (o->tenants_redis && *o->tenants_redis) {
        if (file && strcmp(file, "redis")) {
            moe_log(MOE_LOG_ERROR, GW,
                    "--tenants %s and --tenants-redis exclude each other: the tenants come from "
                    "one file or one Redis",
                    file);
            return 2;
        }
        redis = o->tenants_redis;
    } else if (file && !strcmp(file, "redis")) {
        if (!o->ro.redis) {
            moe_log(MOE_LOG_ERROR, GW,
                    "--tenants redis: which Redis? Give --tenants-redis URL, or --redis URL "
                    "(the experts' placement)");
            return 2;
        }
        redis = o->ro.redis;
    }
    if (redis) file = NULL;
    if (!file && !redis) return 0;
    s->tenants_from = redis;
    moe_err err;
    if (redis && o->ro.redis_password_file &&
        moe_rlink_password_file(o->ro.redis_password_file, &err) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "%s", err.msg);
        return 2;
    }
    const moe_tenants_params tp = {.file = file, .redis = redis, .prefix = o->ro.prefix};
    if (moe_tenants_open(&s->tenants, &tp, &err) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "--tenants: %s", err.msg);
        return 2;
    }
    char shown[MOE_REDIS_URL_SHOWN];
    if (redis) moe_redis_url_redact(shown, sizeof shown, redis);
    moe_tenants_stats ts;
    moe_tenants_get_stats(s->tenants, &ts);
    moe_log(MOE_LOG_INFO, GW, "API keys: tenants from %s%s (%d tenants, %d keys%s)",
            redis ? "Redis " : "the file ", redis ? shown : file, ts.n_tenants, ts.n_keys,
            ts.loaded ? "" : "; not loaded yet");
    return 0;
}

static void add_tenant_metrics(gw_state *s) {
    moe_metrics *r = s->reg;
    s->m_tenants = moe_metrics_gauge(r, "moemesh_gateway_tenants",
                                     "Tenants in the current set (API keys).", NULL, 0);
    s->m_tenant_keys = moe_metrics_gauge(r, "moemesh_gateway_tenant_keys",
                                         "API keys (their SHA-256) in the current set.", NULL, 0);
    s->m_tenant_reloads =
        moe_metrics_counter(r, "moemesh_gateway_tenant_reloads_total",
                            "Tenant sets loaded from the file or Redis.", NULL, 0);
    s->m_tenant_failures = moe_metrics_counter(
        r, "moemesh_gateway_tenant_source_failures_total",
        "Checks that found the tenants' Redis away or their file gone (the last set stays).", NULL,
        0);
    s->m_tenant_invalid = moe_metrics_counter(
        r, "moemesh_gateway_tenant_invalid_total",
        "Tenants files that did not parse, and tenants in Redis skipped as malformed.", NULL, 0);
    s->m_tenant_age = moe_metrics_gauge(
        r, "moemesh_gateway_tenant_sync_age_seconds",
        "Seconds since the tenants' source last answered a check (-1: never).", NULL, 0);
}

static int open_experts(gw_state *s) {
    const moe_remote_opts *ro = &s->o.ro;
    if (ro->redis) {
        char safe[512];
        moe_redis_url_redact(safe, sizeof safe, ro->redis);
        moe_log(MOE_LOG_INFO, GW, "experts: following router-svc's placement in %s (overlap %s)",
                safe, ro->overlap);
    } else if (ro->workers) {
        moe_log(MOE_LOG_INFO, GW, "experts: on expert-workers %s (overlap %s)", ro->workers,
                ro->overlap);
    }
    moe_remote_params rp = moe_remote_default_params();
    rp.max_rows = (s->o.max_batch_tokens + s->o.max_seqs) * s->m->hp.n_expert_used;
    rp.stop = moe_stop_flag(); /* a SIGTERM while waiting for the first placement */
    rp.second = 1;             /* two halves of a batch out at once (unless --overlap off) */
    moe_err err;
    if (moe_remote_opts_open(&s->remote, s->m, ro, &rp, &err) < 0) {
        if (*moe_stop_flag()) return 1; /* asked to stop before serving: not an error */
        moe_log(MOE_LOG_ERROR, GW, "experts: %s", err.msg);
        return -1;
    }
    return 0;
}

static gw_sched_metrics add_metrics(moe_metrics *r, moe_metric **requests) {
    static const double lat[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
    static const double itl[] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5};
    static const double rows[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048};
    static const double e2e[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
    *requests = moe_metrics_counter(r, "moemesh_gateway_requests_total",
                                    "HTTP requests answered, by route and status.", "route,status",
                                    96 | MOE_METRIC_OTHER);
    gw_sched_metrics m = {
        .ttft = moe_metrics_histogram(r, "moemesh_gateway_time_to_first_token_seconds",
                                      "From a request's arrival to its first generated token.",
                                      NULL, 0, lat, (int)(sizeof lat / sizeof lat[0])),
        .itl = moe_metrics_histogram(r, "moemesh_gateway_inter_token_seconds",
                                     "Between consecutive tokens of one sequence.", NULL, 0, itl,
                                     (int)(sizeof itl / sizeof itl[0])),
        .e2e = moe_metrics_histogram(r, "moemesh_gateway_request_seconds",
                                     "From a generation request's arrival to its last token.", NULL,
                                     0, e2e, (int)(sizeof e2e / sizeof e2e[0])),
        .prompt_tokens = moe_metrics_counter(r, "moemesh_gateway_prompt_tokens_total",
                                             "Prompt tokens of admitted requests.", NULL, 0),
        .cached_tokens = moe_metrics_counter(r, "moemesh_gateway_cached_prompt_tokens_total",
                                             "Prompt tokens reused from a slot's cache.", NULL, 0),
        .gen_tokens = moe_metrics_counter(r, "moemesh_gateway_generation_tokens_total",
                                          "Tokens generated.", NULL, 0),
        .queue_depth = moe_metrics_gauge(r, "moemesh_gateway_queue_depth",
                                         "Requests waiting for sequence slots.", NULL, 0),
        .running = moe_metrics_gauge(r, "moemesh_gateway_running_sequences",
                                     "Sequences prefilling or generating.", NULL, 0),
        .slots_used = moe_metrics_gauge(r, "moemesh_gateway_kv_slots_used",
                                        "KV-cache slots held by sequences.", NULL, 0),
        .batch_rows = moe_metrics_histogram(r, "moemesh_gateway_batch_rows",
                                            "Token rows per engine step (decode + prefill).", NULL,
                                            0, rows, (int)(sizeof rows / sizeof rows[0])),
        .step_seconds =
            moe_metrics_histogram(r, "moemesh_gateway_step_seconds", "Time of one engine step.",
                                  NULL, 0, itl, (int)(sizeof itl / sizeof itl[0])),
        .preemptions = moe_metrics_counter(r, "moemesh_gateway_preemptions_total",
                                           "Requests that gave their sequence slots up to a "
                                           "tenant below its fair share (and went on later).",
                                           NULL, 0),
        .recomputed = moe_metrics_counter(
            r, "moemesh_gateway_preempted_tokens_recomputed_total",
            "Tokens that preempted requests prefilled again when they went on (their cache "
            "was overwritten; --spare-slots keeps it).",
            NULL, 0),
        .ended = moe_metrics_counter(r, "moemesh_gateway_requests_ended_total",
                                     "Generation requests ended, by reason "
                                     "(stop, length, cancelled, deadline, error).",
                                     "reason", 8),
    };
    return m;
}

int main(int argc, char **argv) {
    gw_state s = {0};
    gw_opts *o = &s.o;
    *o = (gw_opts){.listen = "127.0.0.1:8000",
                   .ro = moe_remote_opts_default(),
                   .threads = (int)sysconf(_SC_NPROCESSORS_ONLN),
                   .max_seqs = 32,
                   .max_batch_tokens = 256,
                   .max_queue = 256,
                   .schedule = "fair",
                   .spare_slots = -1,
                   .chunked_prefill = 1,
                   .timeout_ms = 600000,
                   .max_connections = 1024,
                   .idle_ms = 30000,
                   .header_ms = 2000,
                   .http_threads = 1,
                   .drain_ms = 30000,
                   .max_body = 8u << 20};
    if (o->threads < 1) o->threads = 1;
    moe_flag remote[MOE_REMOTE_N_FLAGS + 1];
    moe_remote_opts_flags(&o->ro, remote);
    const moe_flag flags[] = {
        {"--model", "MOE_MODEL", MOE_FLAG_STRING, &o->model, "FILE", .help = "the GGUF model",
         .required = "a model"},
        {"--listen", "MOE_LISTEN", MOE_FLAG_STRING, &o->listen, "HOST:PORT",
         .help = "the API's address (port 0 picks one; the log says which)"},
        {"--served-model-name", "MOE_SERVED_MODEL_NAME", MOE_FLAG_STRING, &o->name, "NAME",
         .help = "the model id clients send", .def = "the file's base name"},
        {"--threads", "MOE_THREADS", MOE_FLAG_INT, &o->threads, "N", .alias = "-t",
         .help = "engine threads", .def = "the CPUs", .min = 1, .max = 1024},
        {"--max-seqs", "MOE_MAX_SEQS", MOE_FLAG_INT, &o->max_seqs, "N",
         .help = "sequences decoded together (KV slots)", .min = 1, .max = 4096},
        {"--spare-slots", "MOE_SPARE_SLOTS", MOE_FLAG_INT, &o->spare_slots, "N",
         .help = "KV slots beyond --max-seqs that only keep caches: a request\n"
                 "preempted for another tenant resumes from its own instead of\n"
                 "computing its tokens again, and prompts find their prefixes",
         .def = "1 with --schedule fair, else 0", .min = 0, .max = 4096},
        {"--ctx", "MOE_CTX", MOE_FLAG_INT, &o->ctx, "N",
         .help = "positions per sequence (prompt + output)",
         .def = "min(the model's training context, 4096)", .min = 0, .max = 1 << 24},
        {"--max-batch-tokens", "MOE_MAX_BATCH_TOKENS", MOE_FLAG_INT, &o->max_batch_tokens, "N",
         .help = "token rows per engine step: decode rows, then prompt chunks", .min = 1,
         .max = 1 << 16},
        {"--chunked-prefill", "MOE_CHUNKED_PREFILL", MOE_FLAG_BOOL, &o->chunked_prefill, NULL,
         .help = "split long prompts over steps so running streams keep their pace\n"
                 "(--chunked-prefill=false: each prompt in one step)",
         .def = "true"},
        {"--prefill-chunk", "MOE_PREFILL_CHUNK", MOE_FLAG_INT, &o->prefill_chunk, "N",
         .help = "prompt rows per step while others decode (0: as many as\n"
                 "keep such a step within about 2x a decode step, by the measured\n"
                 "step costs; smaller: steadier streams, larger: more throughput\n"
                 "and faster first tokens)",
         .def = "0", .min = 0, .max = 1 << 16},
        {"--exact", "MOE_EXACT", MOE_FLAG_BOOL, &o->exact, NULL,
         .help = "llama.cpp's exact Q8_0, Q5_K, Q6_K and IQ4_XS arithmetic\n"
                 "for batches too (the default computes 3+ rows per matrix\n"
                 "with the fast int8 tiles: AMX or VNNI, 2-3x the throughput,\n"
                 "logits within float rounding)"},
        {"--cache-type", "MOE_CACHE_TYPE", MOE_FLAG_STRING, &o->cache_type, "f16|f32",
         .help = "the KV cache's type, as llama.cpp's --cache-type-k/-v (f16 holds\n"
                 "half the bytes; attention reads it directly)",
         .def = "f16", .check = check_cache_type},
        {"--max-queue", "MOE_MAX_QUEUE", MOE_FLAG_INT, &o->max_queue, "N",
         .help = "requests waiting for slots; more get 503", .min = 1, .max = 1 << 20},
        {"--schedule", "MOE_SCHEDULE", MOE_FLAG_STRING, &o->schedule, "fair|fifo",
         .help = "which waiting request goes next: fair share between tenants\n"
                 "(the least served tenant's, by weighted tokens; one tenant: first come)\n"
                 "or first come, first served",
         .check = check_schedule},
        {"--log-prompts", "MOE_LOG_PROMPTS", MOE_FLAG_BOOL, &o->log_prompts, NULL,
         .help = "the \"request ended\" log line shows the prompt's text (its first\n"
                 "2048 bytes); without it logs never carry a prompt or an output",
         .def = "false"},
        {"--request-timeout", "MOE_REQUEST_TIMEOUT", MOE_FLAG_MS, &o->timeout_ms, "DUR",
         .help = "a request's deadline from arrival (0: none)", .def = "600s", .min = 0,
         .max = 86400000},
        {.include = remote},
        {"--chat-template", "MOE_CHAT_TEMPLATE", MOE_FLAG_STRING, &o->chat_template, "NAME",
         .help = "chatml | mistral | llama3 | deepseek3 | olmoe",
         .def = "from the model's tokenizer.chat_template"},
        {"--max-body", "MOE_MAX_BODY", MOE_FLAG_SIZE, &o->max_body, "BYTES",
         .help = "largest request body (413 beyond)", .min = 1024, .max = 1u << 30},
        {"--max-connections", "MOE_MAX_CONNECTIONS", MOE_FLAG_INT, &o->max_connections, "N",
         .help = "open HTTP connections; a new one beyond closes the one that has\n"
                 "waited longest without being answered (64 more while all are busy)",
         .min = 1, .max = 1 << 20},
        {"--idle-timeout", "MOE_IDLE_TIMEOUT", MOE_FLAG_MS, &o->idle_ms, "DUR",
         .help = "close a connection silent this long", .def = "30s", .min = 1000, .max = 86400000},
        {"--header-timeout", "MOE_HEADER_TIMEOUT", MOE_FLAG_MS, &o->header_ms, "DUR",
         .help = "close a new connection silent this long before its first\n"
                 "request's headers are in (whole seconds)",
         .def = "2s", .min = 1000, .max = 86400000},
        {"--http-threads", "MOE_HTTP_THREADS", MOE_FLAG_INT, &o->http_threads, "N",
         .help = "HTTP threads", .min = 1, .max = 64},
        {"--drain-timeout", "MOE_DRAIN_TIMEOUT", MOE_FLAG_MS, &o->drain_ms, "DUR",
         .help = "on SIGTERM, wait this long for running requests", .def = "30s", .min = 0,
         .max = 86400000},
        {"--seed", "MOE_SEED", MOE_FLAG_UINT64, &o->seed, "N",
         .help = "seeds requests that give none (and response ids)", .def = "the clock"},
        {"--tenants", "MOE_TENANTS", MOE_FLAG_STRING, &o->tenants, "FILE|redis",
         .help = "require API keys: the tenants and their keys' SHA-256 from a\n"
                 "JSON file (read again when it changes), or 'redis': from the\n"
                 "Redis of --tenants-redis, else --redis, under --prefix (a change\n"
                 "is live within 1 s); a file named redis: ./redis",
         .def = "none: no key is checked"},
        {"--tenants-redis", "MOE_TENANTS_REDIS", MOE_FLAG_STRING, &o->tenants_redis, "URL",
         .help = "the Redis that holds the tenants (implies --tenants redis),\n"
                 "for experts that router-svc does not place (in process,\n"
                 "--workers); its password: --redis-password-file",
         .def = "--redis"},
        {"--limits-fail-closed", "MOE_LIMITS_FAIL_CLOSED", MOE_FLAG_BOOL, &o->limits_fail_closed,
         NULL,
         .help = "while the tenants' Redis is away, refuse requests of tenants\n"
                 "with limits (503) instead of enforcing this replica's share\n"
                 "of each limit alone"},
        {"--limits-window-s", "MOE_LIMITS_WINDOW_S", MOE_FLAG_INT, &o->limits_window_s, "N",
         .help = "the rpm/tpm window in seconds: 60 in a deployment (the limits\n"
                 "are per minute); shorter only for tests",
         .def = "60", .min = 1, .max = 3600},
        {"--insecure-no-auth", "MOE_INSECURE_NO_AUTH", MOE_FLAG_BOOL, &o->insecure, NULL,
         .help = "allow a non-loopback --listen without API keys"},
        {0}};
    const int status = moe_svc_start(&svc, flags, argc, argv);
    if (status >= 0) return status;
    /* before the model: a bad tenants file is a start-up error, at once */
    const int ts_status = open_tenants(&s);
    if (ts_status) return ts_status;
    if (o->log_prompts)
        moe_log(MOE_LOG_WARN, GW,
                "--log-prompts: the log shows every request's prompt text (tenants' data)");
    if (!is_loopback(o->listen) && !o->insecure && !s.tenants) {
        moe_log(MOE_LOG_ERROR, GW,
                "--listen %s is not a loopback address and API keys are not configured: anyone "
                "who reaches it could use the model. Listen on 127.0.0.1, require API keys "
                "(--tenants), or pass --insecure-no-auth (MOE_INSECURE_NO_AUTH=1) to accept that",
                o->listen);
        return 2;
    }
    int rc = 1;
    if (!o->seed) o->seed = (uint64_t)moe_wall_ms() ^ ((uint64_t)getpid() << 32);
    moe_err err = {0};
    char name[256];
    const int64_t t0 = moe_mono_ms();
    /* experts on workers: the gateway never reads them */
    const int experts_remote = (o->ro.workers && *o->ro.workers) || (o->ro.redis && *o->ro.redis);
    if (moe_model_load_ex(&s.m, o->model, experts_remote ? MOE_REPACK_DENSE : MOE_REPACK_ALL,
                          &err) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "%s", err.msg);
        goto out;
    }
    if (moe_vocab_load(&s.vocab, s.m->gguf, &err) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "%s: the model has no usable tokenizer: %s", o->model, err.msg);
        goto out;
    }
    if (!o->name) {
        default_name(o->model, name, sizeof name);
        o->name = name;
    }
    const int kind = chat_kind_of(&s, o->chat_template);
    if (kind < 0) goto out;
    const int ex = open_experts(&s);
    if (ex < 0) goto out;
    if (ex > 0) { /* a stop signal came while it waited for the placement */
        rc = 0;
        goto out;
    }
    moe_ctx_params cp = moe_ctx_default_params();
    cp.n_threads = o->threads;
    if (o->ctx) cp.n_ctx = o->ctx;
    if (o->spare_slots < 0) o->spare_slots = !strcmp(o->schedule, "fair");
    cp.n_slots = o->max_seqs + o->spare_slots;
    cp.n_batch = o->max_batch_tokens + o->max_seqs;
    cp.experts = s.remote;
    cp.exact = o->exact;
    cp.split = moe_remote_opts_split(&o->ro);
    if (o->cache_type) moe_kv_type_parse(o->cache_type, &cp.kv_type); /* checked by the flag */
    if (gw_usage_create(&s.usage, s.m->hp.n_layer, s.m->hp.n_expert, 1024) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "out of memory");
        goto out;
    }
    cp.on_route = gw_usage_on_route;
    cp.on_route_ud = s.usage;
    if (moe_ctx_create(&s.ctx, s.m, &cp, &err) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "%s", err.msg);
        goto out;
    }
    const int n_ctx = moe_ctx_n_ctx(s.ctx);
    /* the ids that end an assistant turn stop chat sequences */
    int32_t end_ids[8];
    int n_end = 0;
    for (const char *const *t = moe_chat_end_texts(kind); *t && n_end < 8; t++) {
        const int32_t id = moe_vocab_find(s.vocab, *t, strlen(*t));
        if (id >= 0) end_ids[n_end++] = id;
    }
    if (moe_metrics_create(&s.reg) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "out of memory");
        goto out;
    }
    moe_metric *requests = NULL;
    if (s.tenants) {
        add_tenant_metrics(&s);
        if (gw_auth_create(&s.auth, s.tenants, s.reg) < 0) {
            moe_log(MOE_LOG_ERROR, GW, "out of memory");
            goto out;
        }
        char id[300], host[256] = "gateway";
        gethostname(host, sizeof host - 1);
        snprintf(id, sizeof id, "%s:%d", host, (int)getpid());
        const gw_limits_params lp = {.redis = s.tenants_from,
                                     .prefix = o->ro.prefix,
                                     .id = id,
                                     .fail_closed = o->limits_fail_closed,
                                     .window_s = o->limits_window_s,
                                     .reg = s.reg};
        if (gw_limits_start(&s.limits, &lp, &err) < 0) {
            moe_log(MOE_LOG_ERROR, GW, "limits: %s", err.msg);
            goto out;
        }
    }
    gw_sched_params sp = {.ctx = s.ctx,
                          .vocab = s.vocab,
                          .n_vocab = s.m->hp.n_vocab,
                          .max_seqs = o->max_seqs,
                          .max_queue = o->max_queue,
                          .max_batch_tokens = o->max_batch_tokens,
                          .chunked_prefill = o->chunked_prefill,
                          .prefill_chunk = o->prefill_chunk,
                          .timeout_ms = o->timeout_ms,
                          .log_prompts = o->log_prompts,
                          .usage = s.usage,
                          .metrics = add_metrics(s.reg, &requests)};
    gw_usage_metrics_add(s.usage, s.reg);
    {
        const char *lr = o->ro.redis                             ? o->ro.redis
                         : o->tenants_redis && *o->tenants_redis ? o->tenants_redis
                                                                 : NULL;
        if (lr && gw_tload_start(&s.tload, lr, o->ro.prefix, s.usage, &err) < 0)
            moe_log(MOE_LOG_WARN, GW, "no per-tenant load report: %s", err.msg);
    }
    if (!strcmp(o->schedule, "fair")) {
        if (gw_fair_create(&s.fair, 1.0, 2.0) < 0) {
            moe_log(MOE_LOG_ERROR, GW, "out of memory");
            goto out;
        }
        sp.policy = gw_fair_policy(s.fair);
    }
    moe_metric_set(moe_metrics_gauge(s.reg, "moemesh_gateway_kv_slots",
                                     "KV-cache slots (--max-seqs).", NULL, 0),
                   NULL, o->max_seqs);
    if (s.remote) {
        static const double le[] = {0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                    0.025,   0.05,   0.1,   0.25,   1};
        s.rtt = moe_metrics_histogram(s.reg, "moemesh_gateway_expert_rtt_seconds",
                                      "Round trip of one Forward message, by worker.", "worker",
                                      64 | MOE_METRIC_OTHER, le, (int)(sizeof le / sizeof le[0]));
        s.uncovered = moe_metrics_gauge(s.reg, "moemesh_gateway_experts_uncovered",
                                        "(layer, expert) pairs with no live holder.", NULL, 0);
        s.workers_live = moe_metrics_gauge(s.reg, "moemesh_gateway_expert_workers_live",
                                           "Expert-workers not in a failure backoff.", NULL, 0);
        s.w_failures = moe_metrics_counter(
            s.reg, "moemesh_gateway_expert_worker_failures_total",
            "Expert-worker failures seen in batches (broken stream, deadline, silence, refusal).",
            NULL, 0);
        s.w_suspects = moe_metrics_counter(
            s.reg, "moemesh_gateway_expert_worker_suspects_total",
            "Of those, workers given up on before the deadline: silent past --suspect-ms and 8x "
            "their usual answer time while replicas were live.",
            NULL, 0);
        s.w_retries =
            moe_metrics_counter(s.reg, "moemesh_gateway_expert_retries_total",
                                "Row groups sent again to a replica after a failure.", NULL, 0);
        s.w_second = moe_metrics_counter(
            s.reg, "moemesh_gateway_expert_split_batches_total",
            "MoE-layer works sent as the second of two overlapped halves of a batch (--overlap).",
            NULL, 0);
        s.w_stall = moe_metrics_gauge(
            s.reg, "moemesh_gateway_expert_failover_stall_max_seconds",
            "Longest failover: from sending rows to a worker that failed to their batch served by "
            "replicas.",
            NULL, 0);
        moe_remote_set_rtt_hook(s.remote, on_rtt, &s);
    }
    if (gw_sched_start(&s.sched, &sp, &err) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "%s", err.msg);
        goto out;
    }
    const gw_api_ctx api = {.vocab = s.vocab,
                            .n_vocab = s.m->hp.n_vocab,
                            .n_ctx = n_ctx,
                            .chat_kind = kind,
                            .model = o->name,
                            .end_ids = end_ids,
                            .n_end = n_end,
                            .max_seqs = o->max_seqs};
    gw_http_params hp = {.listen = o->listen,
                         .max_connections = o->max_connections,
                         .idle_timeout_s = (o->idle_ms + 999) / 1000,
                         .header_timeout_s = (o->header_ms + 999) / 1000,
                         .max_body = o->max_body,
                         .threads = o->http_threads,
                         .sched = s.sched,
                         .api = &api,
                         .reg = s.reg,
                         .requests = requests,
                         .ready = ready,
                         .ready_ud = &s,
                         .before_metrics = before_metrics,
                         .seed = o->seed,
                         .usage = s.usage,
                         .auth = s.auth,
                         .limits = s.limits,
                         .max_live = o->max_queue + o->max_seqs};
    if (gw_http_start(&s.http, &hp, &err) < 0) {
        moe_log(MOE_LOG_ERROR, GW, "%s", err.msg);
        goto out;
    }
    const double kv_mib = (double)moe_ctx_kv_bytes_per_token(s.ctx) * n_ctx *
                          (o->max_seqs + o->spare_slots) / 1048576.0;
    moe_log(MOE_LOG_INFO, GW,
            "serving %s as '%s' on http://%s (experts %s; %s; %d sequences x %d positions, %d "
            "spare slots, KV %.0f MiB %s; schedule %s; chat format %s; %d threads, %s%s; ready in "
            "%.1f s)",
            o->model, o->name, gw_http_address(s.http),
            o->ro.redis     ? "per router-svc"
            : o->ro.workers ? "on workers"
                            : "in process",
            s.tenants ? "API keys required" : "no API keys", o->max_seqs, n_ctx, o->spare_slots,
            kv_mib, moe_dtype_name(moe_ctx_kv_type(s.ctx)), o->schedule,
            moe_chat_template_name(kind), o->threads, moe_cpu_kernels_best()->name,
            o->exact            ? ", exact arithmetic"
            : moe_cpu_has_amx() ? ", fast int8 batches on AMX"
                                : ", fast int8 batches",
            (double)(moe_mono_ms() - t0) / 1000.0);
    moe_stop_wait(-1);
    /* drain: no new requests; the running ones finish */
    gw_http_drain(s.http);
    gw_sched_stats st;
    gw_sched_get_stats(s.sched, &st);
    moe_log(MOE_LOG_INFO, GW,
            "stopping: draining %d running and %d waiting requests (up to %.0f s)", st.running,
            st.waiting, o->drain_ms / 1000.0);
    const int64_t until = moe_mono_ms() + o->drain_ms;
    while (moe_mono_ms() < until) {
        gw_sched_get_stats(s.sched, &st);
        if (st.running == 0 && st.waiting == 0 && gw_http_live(s.http) == 0) break;
        usleep(20000);
    }
    rc = 0;
out:
    gw_sched_stop(s.sched); /* ends what is left: every waiting connection is woken */
    gw_http_stop(s.http);
    gw_limits_stop(s.limits); /* after the HTTP side: it ends every ticket */
    gw_auth_free(s.auth);
    moe_tenants_close(s.tenants);
    gw_sched_free(s.sched);
    gw_fair_free(s.fair);
    gw_tload_stop(s.tload); /* reports what is left: before the usage goes */
    gw_usage_free(s.usage);
    moe_ctx_destroy(s.ctx);
    moe_expert_backend_destroy(s.remote);
    moe_metrics_free(s.reg);
    moe_vocab_free(s.vocab);
    moe_model_free(s.m);
    if (rc == 0) moe_log(MOE_LOG_INFO, GW, "stopped");
    return rc;
}
