/*
 * expert-worker - a stateless gRPC server hosting a slice of a MoE model's
 * (layer, expert) FFNs (moe.v1.ExpertService; grpc.health.v1.Health).
 * Every flag has an environment twin, so a container needs no config file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "moe/model.h"
#include "moe/ops.h"
#include "mesh/rlink.h"
#include "metrics.h"
#include "registry.h"
#include "server.h"
#include "mesh/slice.h"
#include "svc/clock.h"

static const char usage[] =
    "usage: expert-worker --model MODEL.gguf [options]\n"
    "Serves moe.v1.ExpertService (Forward, Info) and grpc.health.v1.Health.\n"
    "  --model PATH      GGUF model (MOE_MODEL)\n"
    "  --listen ADDR     host:port to listen on; port 0 picks a free one and is\n"
    "                    printed (MOE_LISTEN, default 127.0.0.1:50051)\n"
    "  --experts SPEC    which experts to host: all | 0-3,6 (every layer) |\n"
    "                    L1:0-7;L2:0-3 (MOE_EXPERTS, default all)\n"
    "  --threads N       compute threads (MOE_THREADS, default 1)\n"
    "  --max-rows N      rows one request may carry (MOE_MAX_ROWS, default 4096)\n"
    "  --metrics ADDR    HTTP /metrics and /healthz on host:port (MOE_METRICS; off by\n"
    "                    default)\n"
    "Joining a router-svc deployment (instead of --experts; see docs/redis-schema.md):\n"
    "  --redis URL       redis://host:port: register, take the experts router-svc\n"
    "                    assigns, load and drop them as the placement changes (MOE_REDIS)\n"
    "  --prefix P        the deployment's key prefix (MOE_PREFIX, default moemesh)\n"
    "  --failure-domain D  node or zone; replicas of an expert avoid sharing one\n"
    "                    (MOE_FAILURE_DOMAIN, default: none)\n"
    "  --worker-id ID    unique id (MOE_WORKER_ID, default: the advertised address)\n"
    "  --advertise H:P   address gateways dial (MOE_ADVERTISE; default: the listen\n"
    "                    host, or $POD_IP or the host name for 0.0.0.0, and the port)\n"
    "  --capacity BYTES  memory for expert weights, with K/M/G suffixes (MOE_CAPACITY,\n"
    "                    default: the whole model's experts)\n"
    "  --lease-ms N      lease TTL; heartbeat every N/3 (MOE_LEASE_MS, default 3000)\n"
    "  --grace-ms N      keep experts a new epoch drops this long (MOE_GRACE_MS,\n"
    "                    default 10000)\n"
    "  --drain-ms N      on SIGTERM, serve on while router-svc moves the experts away,\n"
    "                    at most N ms (MOE_DRAIN_MS, default 30000; 0: leave at once)\n"
    "Only the hosted experts' weights are read from the file (it is mapped, so\n"
    "resident memory grows with the slice). SIGTERM/SIGINT: drain (with --redis),\n"
    "finish the batch in hand, end the streams, leave the deployment, exit 0.\n";

static volatile sig_atomic_t g_stop;

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
            if (pod && *pod) snprintf(host, sizeof host, "%s", pod);
            else if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
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
        fprintf(stderr, "expert-worker: error: %s\n", err.msg);
        rs->failed = 1;
        g_stop = 1;
        return;
    }
    if (rs->metrics) __atomic_store_n(&rs->metrics->reg, rs->reg, __ATOMIC_RELEASE);
    fprintf(stderr, "expert-worker: joined %s as '%s' (%s), capacity %.1f MB, domain '%s'\n",
            rs->cfg.url, rs->cfg.id, addr, (double)rs->cfg.capacity_bytes / 1e6,
            rs->cfg.domain ? rs->cfg.domain : "");
}

/* SIGTERM with --redis: drain first (bounded by drain_ms), then stop. */
static int may_stop(void *ud) {
    reg_start *rs = ud;
    if (!rs->reg || rs->failed || rs->drain_ms == 0) return 1;
    if (!rs->drain_deadline) rs->drain_deadline = moe_mono_ms() + rs->drain_ms;
    if (ew_registry_drain(rs->reg)) return 1;
    if (moe_mono_ms() >= rs->drain_deadline) {
        fprintf(stderr, "expert-worker: drain not finished after %d ms; stopping anyway\n",
                rs->drain_ms);
        return 1;
    }
    return 0;
}

static int parse_bytes(const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024, end++;
    else if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (errno || end == v || *end || !(x > 0) || x * mul > 1e18) {
        fprintf(stderr, "expert-worker: error: --capacity '%s' is not a size (e.g. 512M, 8G)\n", v);
        return -1;
    }
    *out = (uint64_t)(x * mul);
    return 0;
}

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int parse_int(const char *name, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "expert-worker: error: %s '%s' is not an integer in [%d, %d]\n", name, v,
                lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    const char *model = getenv("MOE_MODEL"), *listen = getenv("MOE_LISTEN"),
               *experts = getenv("MOE_EXPERTS"), *threads_s = getenv("MOE_THREADS"),
               *rows_s = getenv("MOE_MAX_ROWS"), *redis = getenv("MOE_REDIS"),
               *prefix = getenv("MOE_PREFIX"), *domain = getenv("MOE_FAILURE_DOMAIN"),
               *worker_id = getenv("MOE_WORKER_ID"), *advertise = getenv("MOE_ADVERTISE"),
               *capacity_s = getenv("MOE_CAPACITY"), *lease_s = getenv("MOE_LEASE_MS"),
               *grace_s = getenv("MOE_GRACE_MS"), *drain_s = getenv("MOE_DRAIN_MS"),
               *metrics_addr = getenv("MOE_METRICS");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(usage, stdout), 0;
        const char **dst = !strcmp(a, "--model")     ? &model
                           : !strcmp(a, "--listen")  ? &listen
                           : !strcmp(a, "--experts") ? &experts
                           : !strcmp(a, "--threads") ? &threads_s
                           : !strcmp(a, "--max-rows") ? &rows_s
                           : !strcmp(a, "--redis") ? &redis
                           : !strcmp(a, "--router") ? &redis
                           : !strcmp(a, "--prefix") ? &prefix
                           : !strcmp(a, "--failure-domain") ? &domain
                           : !strcmp(a, "--worker-id") ? &worker_id
                           : !strcmp(a, "--advertise") ? &advertise
                           : !strcmp(a, "--capacity") ? &capacity_s
                           : !strcmp(a, "--lease-ms") ? &lease_s
                           : !strcmp(a, "--grace-ms") ? &grace_s
                           : !strcmp(a, "--drain-ms") ? &drain_s
                           : !strcmp(a, "--metrics") ? &metrics_addr
                                                      : NULL;
        if (!dst) {
            fprintf(stderr, "expert-worker: error: unknown option '%s'\n\n%s", a, usage);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "expert-worker: error: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!model || !*model) {
        fprintf(stderr, "expert-worker: error: no model (--model or MOE_MODEL)\n\n%s", usage);
        return 2;
    }
    int n_threads = 1, max_rows = 4096;
    if (threads_s && parse_int("--threads", threads_s, 1, 256, &n_threads) < 0) return 2;
    if (rows_s && parse_int("--max-rows", rows_s, 1, 1 << 20, &max_rows) < 0) return 2;
    const int joined = redis && *redis;
    if (joined && experts && *experts) {
        fprintf(stderr, "expert-worker: error: --experts and --redis exclude each other "
                        "(with --redis, router-svc assigns the experts)\n");
        return 2;
    }
    int lease_ms = 3000, grace_ms = 10000, drain_ms = 30000;
    uint64_t capacity = 0;
    if (lease_s && parse_int("--lease-ms", lease_s, 300, 600000, &lease_ms) < 0) return 2;
    if (grace_s && parse_int("--grace-ms", grace_s, 0, 3600000, &grace_ms) < 0) return 2;
    if (drain_s && parse_int("--drain-ms", drain_s, 0, 3600000, &drain_ms) < 0) return 2;
    if (capacity_s && *capacity_s && parse_bytes(capacity_s, &capacity) < 0) return 2;

    moe_model *m;
    moe_err err;
    if (moe_model_load(&m, model, &err) < 0) {
        fprintf(stderr, "expert-worker: error: %s\n", err.msg);
        return 1;
    }
    uint8_t *moe_ok = calloc((size_t)m->hp.n_layer, 1);
    for (int l = 0; l < m->hp.n_layer; l++) moe_ok[l] = (uint8_t)moe_model_layer_is_moe(m, l);
    moe_slice slice;
    if (joined ? moe_slice_init_empty(&slice, m->hp.n_layer, m->hp.n_expert) < 0 &&
                     moe_err_set(&err, MOE_ENOMEM, "out of memory") < 0
               : moe_slice_parse(&slice, experts && *experts ? experts : "all", m->hp.n_layer,
                                m->hp.n_expert, moe_ok, &err) < 0) {
        fprintf(stderr, "expert-worker: error: %s\n", err.msg);
        free(moe_ok);
        moe_model_free(m);
        return 2;
    }
    free(moe_ok);
    fprintf(stderr, "expert-worker: %s (%s), hosting %d of %d (layer, expert) pairs, %d threads\n",
            model, moe_arch_name(m->hp.arch), moe_slice_count(&slice),
            m->hp.n_expert * (m->hp.n_layer - m->hp.n_layer_dense_lead), n_threads);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *name = strrchr(model, '/');
    ew_config cfg = {.model = m, .model_name = name ? name + 1 : model, .slice = &slice,
                     .listen = listen && *listen ? listen : "127.0.0.1:50051",
                     .n_threads = n_threads, .max_rows = max_rows, .stop = &g_stop};
    char device[48];
    snprintf(device, sizeof device, "cpu:%s", moe_cpu_kernels_best()->name);
    reg_start rs = {.listen = cfg.listen, .advertise = advertise, .drain_ms = drain_ms};
    if (joined) {
        uint64_t all = 0;
        for (int l = 0; l < m->hp.n_layer; l++)
            if (moe_model_layer_is_moe(m, l)) all += moe_expert_bytes(m, l) * (uint64_t)m->hp.n_expert;
        rs.cfg = (ew_registry_cfg){.url = redis, .prefix = prefix, .id = worker_id,
                                   .domain = domain, .device = device,
                                   .capacity_bytes = capacity ? capacity : all,
                                   .lease_ms = lease_ms, .grace_ms = grace_ms, .model = m,
                                   .slice = &slice};
        cfg.on_listen = on_listen;
        cfg.may_stop = may_stop;
        cfg.on_listen_ud = &rs;
    }
    ew_counters counters = {.expert_rows = calloc((size_t)m->hp.n_layer * (size_t)m->hp.n_expert + 1,
                                                  sizeof *counters.expert_rows)};
    ew_metrics metrics = {.model = m, .slice = &slice, .counters = &counters};
    cfg.counters = &counters;
    rs.metrics = &metrics;
    moe_httpd *admin = NULL;
    int rc = 0;
    if (metrics_addr && *metrics_addr) {
        rc = moe_httpd_start(&admin, metrics_addr, ew_metrics_http, &metrics, &err);
        if (rc == 0)
            fprintf(stderr, "expert-worker: metrics on http://%s (port %d)\n", metrics_addr,
                    moe_httpd_port(admin));
    }
    if (rc == 0) rc = ew_server_run(&cfg, &err);
    if (rc < 0) fprintf(stderr, "expert-worker: error: %s\n", err.msg);
    moe_httpd_stop(admin);
    ew_registry_stop(rs.reg);
    free(counters.expert_rows);
    if (rs.failed) rc = -1;
    moe_slice_free(&slice);
    moe_model_free(m);
    return rc < 0 ? 1 : 0;
}
