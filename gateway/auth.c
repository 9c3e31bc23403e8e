/* auth.c - API keys on the gateway (see auth.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "moe/log.h"
#include "svc/clock.h"

#define GW "gateway"
#define LOG_EVERY_MS 1000 /* refusals logged at most this often */

struct gw_auth {
    moe_tenants *store;
    moe_metric *failures; /* {reason}: missing, invalid */
    pthread_mutex_t mu;   /* the log's rate limit */
    int64_t last_log_ms;
    uint64_t unlogged; /* refusals since the last line */
};

int gw_auth_create(gw_auth **out, moe_tenants *store, moe_metrics *reg) {
    gw_auth *a = calloc(1, sizeof *a);
    *out = NULL;
    if (!a) return MOE_ENOMEM;
    a->store = store;
    if (reg)
        a->failures = moe_metrics_counter(reg, "moemesh_gateway_auth_failures_total",
                                          "Requests refused for their API key (401), by reason: "
                                          "missing (none, or not Bearer), invalid (unknown key).",
                                          "reason", 4);
    pthread_mutex_init(&a->mu, NULL);
    a->last_log_ms = -LOG_EVERY_MS;
    *out = a;
    return 0;
}

void gw_auth_free(gw_auth *a) {
    if (!a) return;
    pthread_mutex_destroy(&a->mu);
    free(a);
}

int gw_auth_bearer(const char *authorization, const char **key, size_t *len) {
    const char *p = authorization;
    while (*p == ' ' || *p == '\t') p++;
    if (strncasecmp(p, "bearer", 6) || (p[6] != ' ' && p[6] != '\t')) return -1;
    p += 6;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    if (!n) return -1;
    *key = p;
    *len = n;
    return 0;
}

static void peer_str(const struct sockaddr *sa, char *buf, size_t cap) {
    snprintf(buf, cap, "?");
    if (!sa) return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)cap);
}

/* Counts a refusal and logs it, at most once every LOG_EVERY_MS (never the key). */
static void refused(gw_auth *a, const char *reason, const struct sockaddr *peer) {
    moe_metric_inc(a->failures, (const char *[]){reason}, 1);
    const int64_t now = moe_mono_ms();
    pthread_mutex_lock(&a->mu);
    const int log = now - a->last_log_ms >= LOG_EVERY_MS;
    const uint64_t before = a->unlogged;
    if (log) {
        a->last_log_ms = now;
        a->unlogged = 0;
    } else {
        a->unlogged++;
    }
    pthread_mutex_unlock(&a->mu);
    if (!log) return;
    char ip[64], more[24];
    peer_str(peer, ip, sizeof ip);
    snprintf(more, sizeof more, "%llu", (unsigned long long)before);
    const moe_log_kv kv[] = {{"reason", reason}, {"peer", ip}, {"refused_unlogged", more}};
    moe_log_fields(MOE_LOG_WARN, GW, kv, 3, "API key refused (401)");
}

/* OpenAI's 401 for a key: type invalid_request_error, param null, code invalid_api_key. */
static int fail401(gw_api_error *e) {
    e->status = 401;
    e->type = "invalid_request_error";
    e->param[0] = 0;
    snprintf(e->code, sizeof e->code, "invalid_api_key");
    return -1;
}

int gw_auth_check(gw_auth *a, const char *authorization, const char *api_key,
                  const struct sockaddr *peer, moe_tenant *t, gw_api_error *e) {
    const char *key = NULL;
    size_t len = 0;
    if (authorization) {
        if (gw_auth_bearer(authorization, &key, &len) < 0) key = NULL;
    } else if (api_key) {
        key = api_key;
        len = strlen(key);
        while (len && (key[len - 1] == ' ' || key[len - 1] == '\t')) len--;
        while (len && (*key == ' ' || *key == '\t')) key++, len--;
        if (!len) key = NULL;
    }
    if (!key) {
        refused(a, "missing", peer);
        snprintf(e->message, sizeof e->message,
                 "You didn't provide an API key. You need to provide your API key in an "
                 "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                 "or in an api-key header. You can get an API key from the operators of this "
                 "deployment.");
        return fail401(e);
    }
    const int rc = moe_tenants_auth(a->store, key, len, t);
    if (rc == 0) return 0;
    if (rc == MOE_EUNAVAIL) {
        gw_api_error_set(e, 503, NULL,
                         "the API keys are not loaded yet (their source does not answer); retry "
                         "shortly");
        return -1;
    }
    char shown[32];
    moe_tenant_key_redact(key, len, shown, sizeof shown);
    refused(a, "invalid", peer);
    snprintf(e->message, sizeof e->message,
             "Incorrect API key provided: %s. You can get an API key from the operators of this "
             "deployment.",
             shown);
    return fail401(e);
}
