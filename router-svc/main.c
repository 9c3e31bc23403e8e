/*
 * router-svc - the control plane: worker leases, expert placement with
 * replicas of hot experts, failover, the autoscaling signal (Redis; see
 * docs/redis-schema.md). Every flag has an environment twin.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "svc/httpd.h"
#include "svc/log.h"
#include "svc/metrics.h"
#include "svc/signal.h"
#include "svc/start.h"
#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "router.h"

static const char about[] = "Owns the placement of a deployment's experts on its expert-workers.\n"
                            "Every flag has an environment twin (in brackets).";
static const char footer[] =
    "Two replicas may run: one leads (a Redis lock with a TTL), the other stands by.\n"
    "SIGTERM/SIGINT: hand leadership over and exit 0; a second signal exits at once.\n";
static const moe_svc svc = {
    .name = "router-svc", .args = "--redis URL [options]", .about = about, .footer = footer};

/* This process's admin server (set once started): /metrics shows its
 * connections too. */
static moe_httpd *admin_http;

/* Appends the admin server's own families to a /metrics page (body, taken). */
static char *add_http_metrics(char *body) {
    moe_metrics *reg = NULL;
    moe_buf b = {0};
    moe_buf_printf(&b, "%s", body);
    free(body);
    if (moe_metrics_create(&reg) == 0) {
        moe_httpd_metrics(__atomic_load_n(&admin_http, __ATOMIC_ACQUIRE), reg, "moemesh_router");
        if (moe_metrics_render(reg, &b, NULL) == MOE_ENOMEM) b.oom = 1;
        moe_metrics_free(reg);
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

static void on_http(void *ud, const moe_http_req *req, moe_http_resp *resp) {
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
        resp->status = 405;
        resp->content_type = "application/json";
        resp->body = strdup("{\"error\":\"GET only\"}\n");
        resp->body_len = resp->body ? strlen(resp->body) : 0;
        return;
    }
    char *body = NULL;
    const char *ct = NULL;
    resp->status = router_render(ud, req->path, &body, &ct);
    if (resp->status == 200 && body && !strcmp(req->path, "/metrics")) {
        body = add_http_metrics(body);
        if (!body) resp->status = 500;
    }
    resp->content_type = ct;
    resp->body = body;
    resp->body_len = body ? strlen(body) : 0;
}

int main(int argc, char **argv) {
    const char *redis = NULL, *prefix = NULL, *listen = "127.0.0.1:9400", *id_s = NULL;
    const char *redis_pw = NULL;
    int minr = 1, maxr = 0, rebal = 5000, half = 5000, settle = 1500, ack = 60000;
    double target = 2000, headroom = 0.1, wmax = 0;
    const moe_flag flags[] = {
        {"--redis", "MOE_REDIS", MOE_FLAG_STRING, &redis, "URL", .help = "redis://host:port[/db]",
         .required = "Redis"},
        MOE_RLINK_PASSWORD_FLAG(&redis_pw),
        {"--prefix", "MOE_PREFIX", MOE_FLAG_STRING, &prefix, "P",
         .help = "the deployment's key prefix", .def = MOE_SCHEMA_PREFIX_DEFAULT},
        {"--listen", "MOE_LISTEN", MOE_FLAG_STRING, &listen, "ADDR",
         .help = "HTTP for /metrics, /v1/scale, /v1/placement, /v1/tenant-load,\n"
                 "/healthz (port 0 picks one)"},
        {"--min-replicas", "MOE_MIN_REPLICAS", MOE_FLAG_INT, &minr, "N",
         .help = "replicas of every expert", .min = 1, .max = 64},
        {"--max-replicas", "MOE_MAX_REPLICAS", MOE_FLAG_INT, &maxr, "N",
         .help = "at most this many (0: the workers)", .def = "0", .min = 0, .max = 4096},
        {"--target-load", "MOE_TARGET_LOAD", MOE_FLAG_DOUBLE, &target, "R",
         .help = "rows/s one replica should carry; busier experts get more replicas", .min = 1e-6,
         .max = 1e12},
        {"--headroom", "MOE_HEADROOM", MOE_FLAG_DOUBLE, &headroom, "F",
         .help = "fraction of each worker's capacity kept free", .min = 0, .max = 0.99},
        {"--worker-max-load", "MOE_WORKER_MAX_LOAD", MOE_FLAG_DOUBLE, &wmax, "R",
         .help = "rows/s one worker can serve, for workers_wanted (0: memory and replicas only)",
         .def = "0", .min = 0, .max = 1e12},
        {"--rebalance-ms", "MOE_REBALANCE_MS", MOE_FLAG_MS, &rebal, "MS",
         .help = "at most one load-driven change per this long; a lost worker is replaced at once",
         .min = 0, .max = 3.6e6},
        {"--halflife-ms", "MOE_HALFLIFE_MS", MOE_FLAG_MS, &half, "MS",
         .help = "half-life of the load's moving average", .min = 1, .max = 3.6e6},
        {"--settle-ms", "MOE_SETTLE_MS", MOE_FLAG_MS, &settle, "MS",
         .help = "wait for the workers to be stable this long before the first placement", .min = 0,
         .max = 3.6e6},
        {"--ack-timeout-ms", "MOE_ACK_TIMEOUT_MS", MOE_FLAG_MS, &ack, "MS",
         .help = "a round not acknowledged by then is abandoned; who did not ack gets nothing more",
         .min = 100, .max = 3.6e6},
        {"--id", "MOE_ROUTER_ID", MOE_FLAG_STRING, &id_s, "ID",
         .help = "this replica's id for the leader lock", .def = "host:pid"},
        {0}};
    const int status = moe_svc_start(&svc, flags, argc, argv);
    if (status >= 0) return status;
    moe_err err;
    if (redis_pw && moe_rlink_password_file(redis_pw, &err) < 0) {
        moe_log(MOE_LOG_ERROR, "router-svc", "%s", err.msg);
        return 2;
    }
    if (maxr && maxr < minr) {
        moe_log(MOE_LOG_ERROR, "router-svc", "--max-replicas %d is below --min-replicas %d", maxr,
                minr);
        return 2;
    }
    char id[300];
    if (id_s && *id_s) {
        snprintf(id, sizeof id, "%s", id_s);
    } else {
        char host[256];
        if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "router");
        host[sizeof host - 1] = 0;
        snprintf(id, sizeof id, "%s:%d", host, (int)getpid());
    }

    router_cfg cfg = {.url = redis,
                      .prefix = prefix,
                      .id = id,
                      .place = {.min_replicas = minr,
                                .max_replicas = maxr,
                                .headroom = headroom,
                                .target_load = target,
                                .load_weight = 0.5,
                                .worker_max_load = wmax},
                      .rebalance_ms = rebal,
                      .halflife_ms = half,
                      .settle_ms = settle,
                      .ack_timeout_ms = ack,
                      .stop = moe_stop_flag()};
    router *r;
    if (router_create(&r, &cfg, &err) < 0) {
        moe_log(MOE_LOG_ERROR, "router-svc", "%s", err.msg);
        return 2;
    }
    moe_httpd *h = NULL;
    if (!*listen) listen = "127.0.0.1:9400";
    if (moe_httpd_start(&h, listen, on_http, r, &err) < 0) {
        moe_log(MOE_LOG_ERROR, "router-svc", "%s", err.msg);
        router_free(r);
        return 1;
    }
    __atomic_store_n(&admin_http, h, __ATOMIC_RELEASE);
    printf("listening on http://%.*s:%d\n",
           (int)(strrchr(listen, ':') ? strrchr(listen, ':') - listen : 0), listen,
           moe_httpd_port(h));
    fflush(stdout);
    int rc = router_run(r, &err);
    if (rc < 0) moe_log(MOE_LOG_ERROR, "router-svc", "%s", err.msg);
    moe_httpd_stop(h);
    router_free(r);
    return rc < 0 ? 1 : 0;
}
