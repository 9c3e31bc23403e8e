/* tload.c - the per-tenant load report (see tload.h). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "svc/clock.h"
#include "tload.h"

#define TLOAD_EVERY_MS 2000

struct gw_tload {
    pthread_t th;
    moe_rlink *l;
    char prefix[128];
    gw_usage *u;
    int stop;
    char key[MOE_SCHEMA_KEY_MAX];
    int n; /* HINCRBYs appended in this report */
};

static void append(void *ud, const char *tenant, int layer, int expert, uint64_t rows) {
    gw_tload *t = ud;
    char field[MOE_TENANT_NAME_MAX + 32];
    snprintf(field, sizeof field, "%s|%d:%d", tenant, layer, expert);
    moe_rlink_append(t->l, "HINCRBY %s %s %llu", t->key, field, (unsigned long long)rows);
    t->n++;
}

static void report(gw_tload *t) {
    if (moe_rlink_begin(t->l) < 0) return; /* Redis away: this interval's counts wait */
    moe_key_load_tenants(t->key, sizeof t->key, t->prefix, moe_schema_load_bucket(moe_wall_ms()));
    t->n = 0;
    gw_usage_take_deltas(t->u, append, t);
    if (t->n) moe_rlink_append(t->l, "EXPIRE %s %d", t->key, MOE_SCHEMA_LOAD_TTL_S);
    moe_rlink_flush(t->l, NULL, NULL);
}

static void *tload_main(void *arg) {
    gw_tload *t = arg;
    int64_t next = moe_mono_ms() + TLOAD_EVERY_MS;
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
        if (moe_mono_ms() < next) continue;
        next += TLOAD_EVERY_MS;
        report(t);
    }
    report(t);
    return NULL;
}

int gw_tload_start(gw_tload **out, const char *url, const char *prefix, gw_usage *u, moe_err *err) {
    *out = NULL;
    gw_tload *t = calloc(1, sizeof *t);
    if (!t) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    snprintf(t->prefix, sizeof t->prefix, "%s", moe_schema_prefix(prefix));
    t->u = u;
    int rc = moe_rlink_create(&t->l, url, "gateway tenant load", err);
    if (rc < 0) {
        free(t);
        return rc;
    }
    if (pthread_create(&t->th, NULL, tload_main, t) != 0) {
        moe_rlink_free(t->l);
        free(t);
        return moe_err_set(err, MOE_ENOMEM, "cannot start the tenant load thread");
    }
    *out = t;
    return 0;
}

void gw_tload_stop(gw_tload *t) {
    if (!t) return;
    __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
    pthread_join(t->th, NULL);
    moe_rlink_free(t->l);
    free(t);
}
