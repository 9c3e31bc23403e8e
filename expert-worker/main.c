/*
 * expert-worker - a stateless gRPC server hosting a slice of a MoE model's
 * (layer, expert) FFNs (moe.v1.ExpertService; grpc.health.v1.Health).
 * Every flag has an environment twin, so a container needs no config file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "moe/model.h"
#include "mesh/schema.h"
#include "moe/ops.h"
#include "mesh/rlink.h"
#include "metrics.h"
#include "registry.h"
#include "server.h"
#include "mesh/slice.h"
#include "mesh/tls.h"
#include "svc/clock.h"
#include "svc/log.h"
#include "svc/signal.h"
#include "svc/start.h"

static const char about[] =
    "Serves moe.v1.ExpertService (Forward, Info) and grpc.health.v1.Health.\n"
    "Every flag has an environment twin (in brackets), so a container needs no file.";
static const char footer[] =
    "With --redis the worker joins a router-svc deployment (instead of --experts; see\n"
    "docs/redis-schema.md): it registers, takes the experts router-svc assigns, and\n"
    "loads and drops them as the placement changes.\n"
    "Only the hosted experts' weights are read from the file (it is mapped, so\n"
    "resident memory grows with the slice). SIGTERM/SIGINT: drain (with --redis),\n"
    "finish the batch in hand, end the streams, leave the deployment, exit 0; a\n"
    "second signal exits at once.\n";
static const moe_svc svc = {.name = "expert-worker",
                            .args = "--model MODEL.gguf [options]",
                            .about = about,
                            .footer = footer};

typedef struct reg_start {
    ew_registry_cfg cfg;
    const char *advertise, *listen;
    ew_registry *reg;
    ew_metrics *metrics;
    int failed;
    int drain_ms;
    int64_t drain_deadline;
} reg_start;

/* Registration starts once the port is known. */
static void on_listen(void *ud, int port) {
    reg_start *rs = ud;
    static char addr[300], id[300];
    if (rs->advertise && *rs->advertise) {
        snprintf(addr, sizeof addr, "%s", rs->advertise);
    } else {
        const char *colon = strrchr(rs->listen, ':');
        char host[256];
        snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - rs->listen) : 0, rs->listen);
        if (!*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]")) {
            const char *pod = getenv("POD_IP");
            if (pod && *pod)
                snprintf(host, sizeof host, "%s", pod);
            else if (gethostname(host, sizeof host) != 0)
                snprintf(host, sizeof host, "localhost");
        }
        snprintf(addr, sizeof addr, "%s:%d", host, port);
    }
    if (!rs->cfg.id || !*rs->cfg.id) {
        snprintf(id, sizeof id, "%s", addr);
        rs->cfg.id = id;
    }
    rs->cfg.addr = addr;
    moe_err err;
    if (ew_registry_start(&rs->reg, &rs->cfg, &err) < 0) {
        moe_log(MOE_LOG_ERROR, "expert-worker", "%s", err.msg);
        rs->failed = 1;
        moe_stop_request();
        return;
    }
    if (rs->metrics) __atomic_store_n(&rs->metrics->reg, rs->reg, __ATOMIC_RELEASE);
    char url[MOE_REDIS_URL_SHOWN];
    moe_redis_url_redact(url, sizeof url, rs->cfg.url);
    moe_log(MOE_LOG_INFO, "expert-worker", "joined %s as '%s' (%s), capacity %.1f MB, domain '%s'",
            url, rs->cfg.id, addr, (double)rs->cfg.capacity_bytes / 1e6,
            rs->cfg.domain ? rs->cfg.domain : "");
}

/* SIGTERM with --redis: drain first (bounded by drain_ms), then stop. */
static int may_stop(void *ud) {
    reg_start *rs = ud;
    if (!rs->reg || rs->failed || rs->drain_ms == 0) return 1;
    if (!rs->drain_deadline) rs->drain_deadline = moe_mono_ms() + rs->drain_ms;
    if (ew_registry_drain(rs->reg)) return 1;
    if (moe_mono_ms() >= rs->drain_deadline) {
        moe_log(MOE_LOG_WARN, "expert-worker", "drain not finished after %d ms; stopping anyway",
                rs->drain_ms);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *listen = "127.0.0.1:50051", *experts = NULL, *redis = NULL,
               *redis_pw = NULL, *prefix = NULL, *domain = NULL, *worker_id = NULL,
               *advertise = NULL, *metrics_addr = NULL;
    int n_threads = 1, max_rows = 4096, lease_ms = MOE_SCHEMA_LEASE_MS_DEFAULT, grace_ms = 10000,
        drain_ms = 30000, max_streams = 32, max_conns = 256, idle_ms = 60000, age_ms = 1800000;
    uint64_t capacity = 0;
    moe_tls_opts tls = moe_tls_opts_default();
    moe_flag tls_flags[MOE_TLS_N_FLAGS + 1];
    moe_tls_opts_flags(&tls, tls_flags);
    const moe_flag flags[] = {
        {"--model", "MOE_MODEL", MOE_FLAG_STRING, &model, "PATH", .help = "GGUF model",
         .required = "model"},
        {"--listen", "MOE_LISTEN", MOE_FLAG_STRING, &listen, "ADDR",
         .help = "host:port to listen on; port 0 picks a free one and is printed"},
        {"--experts", "MOE_EXPERTS", MOE_FLAG_STRING, &experts, "SPEC",
         .help = "which experts to host: all | 0-3,6 (every layer) | L1:0-7;L2:0-3", .def = "all"},
        {"--threads", "MOE_THREADS", MOE_FLAG_INT, &n_threads, "N", .help = "compute threads",
         .min = 1, .max = 256},
        {"--max-rows", "MOE_MAX_ROWS", MOE_FLAG_INT, &max_rows, "N",
         .help = "rows one request may carry", .min = 1, .max = 1 << 20},
        {"--max-streams", "MOE_MAX_STREAMS", MOE_FLAG_INT, &max_streams, "N",
         .help = "concurrent gRPC streams one connection may open", .min = 1, .max = 1 << 20},
        {"--max-connections", "MOE_MAX_CONNECTIONS", MOE_FLAG_INT, &max_conns, "N",
         .help = "TCP connections to the gRPC port; the newest beyond are cut\n"
                 "(gateways keep theirs)",
         .min = 1, .max = 1 << 20},
        {"--idle-ms", "MOE_IDLE_MS", MOE_FLAG_MS, &idle_ms, "MS",
         .help = "close a connection that has had no call this long (0: never)", .min = 0,
         .max = 86400000},
        {"--max-age-ms", "MOE_MAX_AGE_MS", MOE_FLAG_MS, &age_ms, "MS",
         .help = "a connection takes no new calls after this long (GOAWAY; its\n"
                 "open streams run on; 0: never)",
         .min = 0, .max = 86400000},
        {"--metrics", "MOE_METRICS", MOE_FLAG_STRING, &metrics_addr, "ADDR",
         .help = "HTTP /metrics and /healthz on host:port", .def = "off"},
        {"--redis", "MOE_REDIS", MOE_FLAG_STRING, &redis, "URL",
         .help = "redis://host:port: join a router-svc deployment (see below)",
         .alias = "--router"},
        MOE_RLINK_PASSWORD_FLAG(&redis_pw),
        {"--prefix", "MOE_PREFIX", MOE_FLAG_STRING, &prefix, "P",
         .help = "the deployment's key prefix", .def = MOE_SCHEMA_PREFIX_DEFAULT},
        {"--failure-domain", "MOE_FAILURE_DOMAIN", MOE_FLAG_STRING, &domain, "D",
         .help = "node or zone; replicas of an expert avoid sharing one", .def = "none"},
        {"--worker-id", "MOE_WORKER_ID", MOE_FLAG_STRING, &worker_id, "ID", .help = "unique id",
         .def = "the advertised address"},
        {"--advertise", "MOE_ADVERTISE", MOE_FLAG_STRING, &advertise, "H:P",
         .help = "address gateways dial",
         .def = "the listen host, or $POD_IP or the host name for 0.0.0.0, and the port"},
        {"--capacity", "MOE_CAPACITY", MOE_FLAG_SIZE, &capacity, "BYTES",
         .help = "memory for expert weights, with K/M/G suffixes",
         .def = "the whole model's experts", .min = 1, .max = 1e18},
        {"--lease-ms", "MOE_LEASE_MS", MOE_FLAG_MS, &lease_ms, "MS",
         .help = "lease TTL; heartbeat every N/3", .min = MOE_SCHEMA_LEASE_MS_MIN,
         .max = MOE_SCHEMA_LEASE_MS_MAX},
        {"--grace-ms", "MOE_GRACE_MS", MOE_FLAG_MS, &grace_ms, "MS",
         .help = "keep experts a new epoch drops this long", .min = 0, .max = 3600000},
        {"--drain-ms", "MOE_DRAIN_MS", MOE_FLAG_MS, &drain_ms, "MS",
         .help = "on SIGTERM, serve on while router-svc moves the experts away,\n"
                 "at most this long (0: leave at once)",
         .min = 0, .max = 3600000},
        {.include = tls_flags},
        {0}};
    const int status = moe_svc_start(&svc, flags, argc, argv);
    if (status >= 0) return status;
    moe_err err;
    const int joined = redis && *redis;
    if (redis_pw && moe_rlink_password_file(redis_pw, &err) < 0) {
        moe_log(MOE_LOG_ERROR, "expert-worker", "%s", err.msg);
        return 2;
    }
    /* peers must show a certificate from the CA, and ours must name us */
    const char *tls_name = worker_id && *worker_id ? worker_id : advertise;
    if (moe_tls_on(&tls) ? moe_tls_check(&tls, tls_name, &err) < 0
                         : moe_tls_plaintext_ok(&tls, listen && *listen ? listen : "127.0.0.1",
                                                "expert-worker", &err) < 0) {
        moe_log(MOE_LOG_ERROR, "expert-worker", "%s", err.msg);
        return 2;
    }
    if (joined && experts && *experts) {
        moe_log(MOE_LOG_ERROR, "expert-worker",
                "--experts and --redis exclude each other (with --redis, router-svc assigns the "
                "experts)");
        return 2;
    }

    moe_model *m;
    /* the experts this worker holds are packed as it loads them (static
     * slice: below; router-svc's placement: registry.c), not all at once */
    if (moe_model_load_ex(&m, model, MOE_REPACK_LAZY, &err) < 0) {
        moe_log(MOE_LOG_ERROR, "expert-worker", "%s", err.msg);
        return 1;
    }
    uint8_t *moe_ok = calloc((size_t)m->hp.n_layer, 1);
    for (int l = 0; l < m->hp.n_layer; l++) moe_ok[l] = (uint8_t)moe_model_layer_is_moe(m, l);
    moe_slice slice;
    if (joined ? moe_slice_init_empty(&slice, m->hp.n_layer, m->hp.n_expert) < 0 &&
                     moe_err_set(&err, MOE_ENOMEM, "out of memory") < 0
               : moe_slice_parse(&slice, experts && *experts ? experts : "all", m->hp.n_layer,
                                 m->hp.n_expert, moe_ok, &err) < 0) {
        moe_log(MOE_LOG_ERROR, "expert-worker", "%s", err.msg);
        free(moe_ok);
        moe_model_free(m);
        return 2;
    }
    free(moe_ok);
    int packs = 0; /* experts the model packs (moe/model.h: moe_repack) */
    for (int l = 0; l < m->hp.n_layer; l++)
        packs |= m->layers[l].gate_exps.packed || m->layers[l].down_exps.packed;
    if (!joined && packs) { /* the static slice: pack what it holds */
        const int64_t t0 = moe_mono_ms();
        for (int l = 0; l < m->hp.n_layer; l++)
            for (int x = 0; x < m->hp.n_expert; x++)
                if (moe_slice_has(&slice, l, x)) moe_expert_load_pages(m, l, x);
        moe_log(MOE_LOG_INFO, "expert-worker",
                "experts packed for the int8 tiles in %lld ms (MOE_REPACK=0: as stored)",
                (long long)(moe_mono_ms() - t0));
    }
    moe_log(MOE_LOG_INFO, "expert-worker",
            "%s (%s), hosting %d of %d (layer, expert) pairs, %d threads", model,
            moe_arch_name(m->hp.arch), moe_slice_count(&slice),
            m->hp.n_expert * (m->hp.n_layer - m->hp.n_layer_dense_lead), n_threads);

    const char *name = strrchr(model, '/');
    ew_config cfg = {.model = m,
                     .model_name = name ? name + 1 : model,
                     .slice = &slice,
                     .listen = listen && *listen ? listen : "127.0.0.1:50051",
                     .n_threads = n_threads,
                     .max_rows = max_rows,
                     .max_streams = max_streams,
                     .conn_idle_ms = idle_ms,
                     .conn_age_ms = age_ms,
                     .max_conns = max_conns,
                     .tls = moe_tls_on(&tls) ? &tls : NULL,
                     .stop = moe_stop_flag()};
    char device[48];
    snprintf(device, sizeof device, "cpu:%s", moe_cpu_describe());
    reg_start rs = {.listen = cfg.listen, .advertise = advertise, .drain_ms = drain_ms};
    if (joined) {
        uint64_t all = 0;
        for (int l = 0; l < m->hp.n_layer; l++)
            if (moe_model_layer_is_moe(m, l))
                all += moe_expert_bytes(m, l) * (uint64_t)m->hp.n_expert;
        rs.cfg = (ew_registry_cfg){.url = redis,
                                   .prefix = prefix,
                                   .id = worker_id,
                                   .domain = domain,
                                   .device = device,
                                   .capacity_bytes = capacity ? capacity : all,
                                   .lease_ms = lease_ms,
                                   .grace_ms = grace_ms,
                                   .model = m,
                                   .slice = &slice};
        cfg.on_listen = on_listen;
        cfg.may_stop = may_stop;
        cfg.on_listen_ud = &rs;
    }
    ew_counters counters = {.expert_rows =
                                calloc((size_t)m->hp.n_layer * (size_t)m->hp.n_expert + 1,
                                       sizeof *counters.expert_rows)};
    ew_metrics metrics = {.model = m, .slice = &slice, .counters = &counters};
    cfg.counters = &counters;
    rs.metrics = &metrics;
    moe_httpd *admin = NULL;
    int rc = 0;
    if (metrics_addr && *metrics_addr) {
        rc = moe_httpd_start(&admin, metrics_addr, ew_metrics_http, &metrics, &err);
        if (rc == 0) __atomic_store_n(&metrics.admin, admin, __ATOMIC_RELEASE);
        if (rc == 0)
            moe_log(MOE_LOG_INFO, "expert-worker", "metrics on http://%s (port %d)", metrics_addr,
                    moe_httpd_port(admin));
    }
    if (rc == 0) rc = ew_server_run(&cfg, &err);
    if (rc < 0) moe_log(MOE_LOG_ERROR, "expert-worker", "%s", err.msg);
    moe_httpd_stop(admin);
    ew_registry_stop(rs.reg);
    free(counters.expert_rows);
    if (rs.failed) rc = -1;
    moe_slice_free(&slice);
    moe_model_free(m);
    return rc < 0 ? 1 : 0;
}
