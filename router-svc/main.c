/*
 * router-svc - the control plane: worker leases, expert placement with
 * replicas of hot experts, failover, the autoscaling signal (Redis; see
 * docs/redis-schema.md). Every flag has an environment twin.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "svc/httpd.h"
#include "router.h"

static const char usage[] =
    "usage: router-svc --redis URL [options]\n"
    "Owns the placement of a deployment's experts on its expert-workers.\n"
    "  --redis URL          redis://host:port[/db] (MOE_REDIS)\n"
    "  --prefix P           the deployment's key prefix (MOE_PREFIX, default moemesh)\n"
    "  --listen ADDR        HTTP for /metrics, /v1/scale, /v1/placement, /healthz\n"
    "                       (MOE_LISTEN, default 127.0.0.1:9400; port 0 picks one)\n"
    "  --min-replicas N     replicas of every expert (MOE_MIN_REPLICAS, default 1)\n"
    "  --max-replicas N     at most this many (MOE_MAX_REPLICAS, default 0: the workers)\n"
    "  --target-load R      rows/s one replica should carry; busier experts get more\n"
    "                       replicas (MOE_TARGET_LOAD, default 2000)\n"
    "  --headroom F         fraction of each worker's capacity kept free (MOE_HEADROOM,\n"
    "                       default 0.1)\n"
    "  --worker-max-load R  rows/s one worker can serve, for workers_wanted\n"
    "                       (MOE_WORKER_MAX_LOAD, default 0: memory and replicas only)\n"
    "  --rebalance-ms N     at most one load-driven change per N ms (MOE_REBALANCE_MS,\n"
    "                       default 5000); a lost worker is replaced at once\n"
    "  --halflife-ms N      half-life of the load's moving average (MOE_HALFLIFE_MS,\n"
    "                       default 5000)\n"
    "  --settle-ms N        wait for the workers to be stable this long before the\n"
    "                       first placement (MOE_SETTLE_MS, default 1500)\n"
    "  --id ID              this replica's id for the leader lock (MOE_ROUTER_ID,\n"
    "                       default host:pid)\n"
    "Two replicas may run: one leads (a Redis lock with a TTL), the other stands by.\n"
    "SIGTERM/SIGINT: hand leadership over and exit 0.\n";

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int num(const char *name, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "router-svc: error: %s '%s' is not a number in [%g, %g]\n", name, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
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
    resp->content_type = ct;
    resp->body = body;
    resp->body_len = body ? strlen(body) : 0;
}

int main(int argc, char **argv) {
    struct {
        const char *flag, *env, *val;
    } o[] = {
        {"--redis", "MOE_REDIS", NULL},          {"--prefix", "MOE_PREFIX", NULL},
        {"--listen", "MOE_LISTEN", NULL},        {"--min-replicas", "MOE_MIN_REPLICAS", NULL},
        {"--max-replicas", "MOE_MAX_REPLICAS", NULL}, {"--target-load", "MOE_TARGET_LOAD", NULL},
        {"--headroom", "MOE_HEADROOM", NULL},    {"--worker-max-load", "MOE_WORKER_MAX_LOAD", NULL},
        {"--rebalance-ms", "MOE_REBALANCE_MS", NULL}, {"--halflife-ms", "MOE_HALFLIFE_MS", NULL},
        {"--settle-ms", "MOE_SETTLE_MS", NULL},  {"--id", "MOE_ROUTER_ID", NULL},
    };
    enum { REDIS, PREFIX, LISTEN, MINR, MAXR, TARGET, HEADROOM, WMAX, REBAL, HALF, SETTLE, ID, NOPT };
    for (int k = 0; k < NOPT; k++) o[k].val = getenv(o[k].env);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return fputs(usage, stdout), 0;
        int k = 0;
        while (k < NOPT && strcmp(argv[i], o[k].flag)) k++;
        if (k == NOPT) {
            fprintf(stderr, "router-svc: error: unknown option '%s'\n\n%s", argv[i], usage);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "router-svc: error: %s needs a value\n", argv[i]);
            return 2;
        }
        o[k].val = argv[++i];
    }
    if (!o[REDIS].val || !*o[REDIS].val) {
        fprintf(stderr, "router-svc: error: no Redis (--redis or MOE_REDIS)\n\n%s", usage);
        return 2;
    }
    double minr = 1, maxr = 0, target = 2000, headroom = 0.1, wmax = 0, rebal = 5000, half = 5000,
           settle = 1500;
    if ((o[MINR].val && num("--min-replicas", o[MINR].val, 1, 64, &minr) < 0) ||
        (o[MAXR].val && num("--max-replicas", o[MAXR].val, 0, 4096, &maxr) < 0) ||
        (o[TARGET].val && num("--target-load", o[TARGET].val, 1e-6, 1e12, &target) < 0) ||
        (o[HEADROOM].val && num("--headroom", o[HEADROOM].val, 0, 0.99, &headroom) < 0) ||
        (o[WMAX].val && num("--worker-max-load", o[WMAX].val, 0, 1e12, &wmax) < 0) ||
        (o[REBAL].val && num("--rebalance-ms", o[REBAL].val, 0, 3.6e6, &rebal) < 0) ||
        (o[HALF].val && num("--halflife-ms", o[HALF].val, 1, 3.6e6, &half) < 0) ||
        (o[SETTLE].val && num("--settle-ms", o[SETTLE].val, 0, 3.6e6, &settle) < 0))
        return 2;
    if (maxr && maxr < minr) {
        fprintf(stderr, "router-svc: error: --max-replicas %g is below --min-replicas %g\n", maxr, minr);
        return 2;
    }
    char id[300];
    if (o[ID].val && *o[ID].val) {
        snprintf(id, sizeof id, "%s", o[ID].val);
    } else {
        char host[256];
        if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "router");
        host[sizeof host - 1] = 0;
        snprintf(id, sizeof id, "%s:%d", host, (int)getpid());
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    router_cfg cfg = {.url = o[REDIS].val, .prefix = o[PREFIX].val, .id = id,
                      .place = {.min_replicas = (int)minr, .max_replicas = (int)maxr,
                                .headroom = headroom, .target_load = target, .load_weight = 0.5,
                                .worker_max_load = wmax},
                      .rebalance_ms = (int)rebal, .halflife_ms = (int)half,
                      .settle_ms = (int)settle, .stop = &g_stop};
    router *r;
    moe_err err;
    if (router_create(&r, &cfg, &err) < 0) {
        fprintf(stderr, "router-svc: error: %s\n", err.msg);
        return 2;
    }
    moe_httpd *h = NULL;
    const char *listen = o[LISTEN].val && *o[LISTEN].val ? o[LISTEN].val : "127.0.0.1:9400";
    if (moe_httpd_start(&h, listen, on_http, r, &err) < 0) {
        fprintf(stderr, "router-svc: error: %s\n", err.msg);
        router_free(r);
        return 1;
    }
    printf("listening on http://%.*s:%d\n", (int)(strrchr(listen, ':') ? strrchr(listen, ':') - listen : 0),
           listen, moe_httpd_port(h));
    fflush(stdout);
    int rc = router_run(r, &err);
    if (rc < 0) fprintf(stderr, "router-svc: error: %s\n", err.msg);
    moe_httpd_stop(h);
    router_free(r);
    return rc < 0 ? 1 : 0;
}
