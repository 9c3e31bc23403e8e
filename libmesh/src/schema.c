/* schema.c - the Redis schema: keys, events, lease fields and the placement
 * document's writer and reader (see schema.h, docs/redis-schema.md). */
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "svc/strbuf.h"

/* ==== Constants ================================================================= */

const char *moe_schema_prefix(const char *p) {
    return p && *p ? p : MOE_SCHEMA_PREFIX_DEFAULT;
}

int moe_schema_check_names(const char *prefix, const char *id, moe_err *err) {
    if (!prefix || !*prefix || strlen(prefix) > MOE_SCHEMA_PREFIX_MAX)
        return moe_err_set(err, MOE_EINVAL, "the key prefix must have 1 to %d bytes",
                           MOE_SCHEMA_PREFIX_MAX);
    if (id && (!*id || strlen(id) > MOE_SCHEMA_ID_MAX))
        return moe_err_set(err, MOE_EINVAL, "a worker id must have 1 to %d bytes",
                           MOE_SCHEMA_ID_MAX);
    return 0;
}

int64_t moe_schema_load_bucket(int64_t wall_ms) {
    return wall_ms / 1000 / MOE_SCHEMA_LOAD_BUCKET_S;
}

/* ==== Keys ====================================================================== */

static int fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *buf, size_t cap, const char *f, ...) {
    if (!cap) return MOE_ERANGE;
    va_list ap;
    va_start(ap, f);
    const int n = vsnprintf(buf, cap, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) {
        buf[0] = 0;
        return MOE_ERANGE;
    }
    return n;
}

int moe_key_worker(char *buf, size_t cap, const char *prefix, const char *id) {
    return fmt(buf, cap, "%s:worker:%s", prefix, id);
}

int moe_key_placement(char *buf, size_t cap, const char *prefix, uint64_t e) {
    return fmt(buf, cap, "%s:placement:%" PRIu64, prefix, e);
}

int moe_key_ack(char *buf, size_t cap, const char *prefix, uint64_t e) {
    return fmt(buf, cap, "%s:ack:%" PRIu64, prefix, e);
}

int moe_key_tenant(char *buf, size_t cap, const char *prefix, const char *name) {
    return fmt(buf, cap, "%s:tenant:%s", prefix, name);
}

int moe_key_limit(char *buf, size_t cap, const char *prefix, const char *name) {
    return fmt(buf, cap, "%s:limit:{%s}", prefix, name);
}

int moe_key_load(char *buf, size_t cap, const char *prefix, int64_t bucket) {
    return fmt(buf, cap, "%s:load:%" PRId64, prefix, bucket);
}

int moe_key_load_tenants(char *buf, size_t cap, const char *prefix, int64_t bucket) {
    return fmt(buf, cap, "%s:load:%" PRId64 ":tenants", prefix, bucket);
}

/* The keys that are the prefix and a fixed suffix: "<prefix>:<suffix>". */
#define FIXED_KEY(fn, suffix)                                                                      \
    int fn(char *buf, size_t cap, const char *prefix) {                                            \
        return fmt(buf, cap, "%s:" suffix, prefix);                                                \
    }
FIXED_KEY(moe_key_workers, "workers")
FIXED_KEY(moe_key_placement_active, "placement:active")
FIXED_KEY(moe_key_placement_pending, "placement:pending")
FIXED_KEY(moe_key_placement_seq, "placement:seq")
FIXED_KEY(moe_key_events, "events")
FIXED_KEY(moe_key_workers_wanted, "scale:workers_wanted")
FIXED_KEY(moe_key_drain, "drain")
FIXED_KEY(moe_key_leader, "leader")
FIXED_KEY(moe_key_tenants, "tenants")
FIXED_KEY(moe_key_tenants_version, "tenants:version")
FIXED_KEY(moe_key_gateways, "gateways")
#undef FIXED_KEY

/* ==== Events ==================================================================== */

/* Decimal digits only (1 to 20), within uint64: 1, else 0. */
static int parse_u64(const char *s, size_t n, uint64_t *out) {
    if (n < 1 || n > 20) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        if (c < '0' || c > '9' || v > (UINT64_MAX - (uint64_t)(c - '0')) / 10) return 0;
        v = v * 10 + (uint64_t)(c - '0');
    }
    *out = v;
    return 1;
}

int moe_event_format(char *buf, size_t cap, const moe_event *ev) {
    switch (ev->kind) {
    case MOE_EVENT_PENDING:
        return fmt(buf, cap, "pending %" PRIu64, ev->epoch);
    case MOE_EVENT_ACTIVE:
        return fmt(buf, cap, "active %" PRIu64, ev->epoch);
    case MOE_EVENT_DOWN:
        if (!ev->worker || !*ev->worker) break;
        return fmt(buf, cap, "down %s", ev->worker);
    case MOE_EVENT_TENANTS:
        return fmt(buf, cap, "tenants %" PRIu64, ev->epoch);
    }
    if (cap) buf[0] = 0;
    return MOE_EINVAL;
}

int moe_event_parse(moe_event *ev, const char *msg) {
    memset(ev, 0, sizeof *ev);
    if (!strncmp(msg, "pending ", 8) && parse_u64(msg + 8, strlen(msg + 8), &ev->epoch)) {
        ev->kind = MOE_EVENT_PENDING;
    } else if (!strncmp(msg, "active ", 7) && parse_u64(msg + 7, strlen(msg + 7), &ev->epoch)) {
        ev->kind = MOE_EVENT_ACTIVE;
    } else if (!strncmp(msg, "tenants ", 8) && parse_u64(msg + 8, strlen(msg + 8), &ev->epoch)) {
        ev->kind = MOE_EVENT_TENANTS;
    } else if (!strncmp(msg, "down ", 5) && msg[5]) {
        ev->kind = MOE_EVENT_DOWN;
        ev->worker = msg + 5;
    } else {
        return MOE_EFORMAT;
    }
    return 0;
}

/* ==== Fields ==================================================================== */

int moe_lease_layer_bytes_format(char *buf, size_t cap, const uint64_t *bytes, int n_layer) {
    if (!cap) return MOE_ERANGE;
    size_t n = 0;
    buf[0] = 0;
    for (int l = 0; l < n_layer; l++) {
        if (!bytes[l]) continue;
        const int k = snprintf(buf + n, cap - n, "%s%d:%" PRIu64, n ? "," : "", l, bytes[l]);
        if (k < 0 || (size_t)k >= cap - n) {
            buf[0] = 0;
            return MOE_ERANGE;
        }
        n += (size_t)k;
    }
    return (int)n;
}

/* Leading decimal digits of s as a uint64 (*end after them): 1, or 0 if
 * none or too many. */
static int digits(const char *s, const char **end, uint64_t *v) {
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') n++;
    *end = s + n;
    return parse_u64(s, n, v);
}

int moe_lease_layer_bytes_parse(uint64_t *bytes, int n_layer, const char *s) {
    memset(bytes, 0, (size_t)(n_layer > 0 ? n_layer : 0) * sizeof *bytes);
    while (*s) {
        const char *end;
        uint64_t l, b;
        if (!digits(s, &end, &l) || *end != ':' || l >= (uint64_t)(n_layer > 0 ? n_layer : 0))
            return MOE_EFORMAT;
        if (!digits(end + 1, &end, &b) || !b || (*end && *end != ',') || bytes[l])
            return MOE_EFORMAT; /* bytes[l] set: a layer named twice */
        bytes[l] = b;
        if (*end && !end[1]) return MOE_EFORMAT; /* a comma with no entry after it */
        s = *end ? end + 1 : end;
    }
    return 0;
}

int moe_lease_addr_check(const char *addr) {
    const size_t n = strlen(addr);
    const char *colon = strrchr(addr, ':');
    if (!n || n > 255 || !colon || colon == addr) return MOE_EFORMAT;
    if (addr[0] == '[') { /* [IPv6]:port */
        if (colon[-1] != ']' || colon - addr < 3) return MOE_EFORMAT;
        for (const char *p = addr + 1; p < colon - 1; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.') return MOE_EFORMAT;
    } else {
        for (const char *p = addr; p < colon; p++)
            if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
                return MOE_EFORMAT;
    }
    uint64_t port;
    const char *end;
    if (!digits(colon + 1, &end, &port) || *end || port < 1 || port > 65535) return MOE_EFORMAT;
    return 0;
}

int moe_expert_field_format(char *buf, size_t cap, int layer, int expert) {
    return fmt(buf, cap, "%d:%d", layer, expert);
}

int moe_expert_field_parse(const char *s, int *layer, int *expert) {
    const char *end;
    uint64_t l, e;
    if (!digits(s, &end, &l) || *end != ':' || l > (1u << 20)) return MOE_EFORMAT;
    if (!digits(end + 1, &end, &e) || *end || e > (1u << 20)) return MOE_EFORMAT;
    *layer = (int)l;
    *expert = (int)e;
    return 0;
}

/* ==== The placement document: writer ============================================ */

/* What the reader takes (moe_pldoc_parse); the writer refuses the rest. */
#define PLDOC_EPOCH_MAX 9007199254740991ull /* 2^53 - 1: exact in a JSON number */
#define PLDOC_WORKERS_MAX 65536
#define PLDOC_EXPERTS_MAX (16 * 1024 * 1024)
#define PLDOC_INDEX_MAX (1 << 20) /* a layer or expert number */

int moe_pldoc_write(const moe_pldoc *d, char **out, moe_err *err) {
    *out = NULL;
    if (d->epoch > PLDOC_EPOCH_MAX)
        return moe_err_set(err, MOE_EINVAL, "placement: epoch %" PRIu64 " is above 2^53 - 1",
                           d->epoch);
    if (d->n_workers < 0 || d->n_workers > PLDOC_WORKERS_MAX || d->n_experts > PLDOC_EXPERTS_MAX)
        return moe_err_set(err, MOE_EINVAL, "placement: %d workers, %zu experts: too many",
                           d->n_workers, d->n_experts);
    for (int i = 0; i < d->n_workers; i++) {
        if (!d->ids[i] || !*d->ids[i])
            return moe_err_set(err, MOE_EINVAL, "placement: worker %d has an empty id", i);
        if (!d->addrs[i] || !*d->addrs[i])
            return moe_err_set(err, MOE_EINVAL, "placement: worker '%.100s' has no address",
                               d->ids[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(d->ids[i], d->ids[j]))
                return moe_err_set(err, MOE_EINVAL, "placement: worker '%.100s' listed twice",
                                   d->ids[i]);
    }
    for (size_t i = 0; i < d->n_experts; i++) {
        const moe_pldoc_expert *e = &d->experts[i];
        if (e->layer < 0 || e->layer > PLDOC_INDEX_MAX || e->expert < 0 ||
            e->expert > PLDOC_INDEX_MAX || e->n_replicas < 0)
            return moe_err_set(err, MOE_EINVAL,
                               "placement: expert %zu (layer %d expert %d) is out of range", i,
                               e->layer, e->expert);
        for (int k = 0; k < e->n_replicas; k++)
            if (e->replicas[k] < 0 || e->replicas[k] >= d->n_workers)
                return moe_err_set(err, MOE_EINVAL,
                                   "placement: layer %d expert %d: replica %d is no worker",
                                   e->layer, e->expert, e->replicas[k]);
    }
    moe_buf b = {.s = malloc(1024), .cap = 1024};
    if (!b.s) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    b.s[0] = 0;
    moe_buf_printf(&b, "{\"epoch\":%" PRIu64 ",\"model\":", d->epoch);
    moe_buf_json(&b, d->model ? d->model : "");
    moe_buf_printf(&b, ",\"workers\":{");
    for (int i = 0; i < d->n_workers; i++) {
        moe_buf_printf(&b, "%s", i ? "," : "");
        moe_buf_json(&b, d->ids[i]);
        moe_buf_printf(&b, ":");
        moe_buf_json(&b, d->addrs[i]);
    }
    moe_buf_printf(&b, "},\"experts\":[");
    for (size_t i = 0; i < d->n_experts; i++) {
        const moe_pldoc_expert *e = &d->experts[i];
        moe_buf_printf(&b, "%s[%d,%d,[", i ? "," : "", e->layer, e->expert);
        for (int k = 0; k < e->n_replicas; k++) {
            moe_buf_printf(&b, "%s", k ? "," : "");
            moe_buf_json(&b, d->ids[e->replicas[k]]);
        }
        moe_buf_printf(&b, "]]");
    }
    moe_buf_printf(&b, "]}");
    if (b.oom) {
        free(b.s);
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    *out = b.s;
    return 0;
}

/* ==== The placement document: reader ============================================ */

void moe_pldoc_free(moe_pldoc *d) {
    if (!d) return;
    for (int i = 0; i < d->n_workers; i++) free(d->ids[i]), free(d->addrs[i]);
    for (size_t i = 0; i < d->n_experts; i++) free(d->experts[i].replicas);
    free(d->ids), free(d->addrs), free(d->experts), free(d->model);
    free(d);
}

int moe_pldoc_worker(const moe_pldoc *d, const char *id) {
    for (int i = 0; i < d->n_workers; i++)
        if (!strcmp(d->ids[i], id)) return i;
    return -1;
}

/* Worker ids -> index while parsing: open addressing over FNV-1a hashes,
 * so a document of many workers and replicas parses in linear time (a
 * linear search per name took 62 s for a 6 MB document). */
typedef struct id_index {
    int32_t *slot; /* worker index + 1, 0: empty */
    size_t mask;
} id_index;

static uint64_t id_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static int id_index_init(id_index *x, int n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap <<= 1;
    x->slot = calloc(cap, sizeof *x->slot);
    x->mask = cap - 1;
    return x->slot ? 0 : -1;
}

/* The index of id in d, or -1; with add >= 0, records id as worker add
 * when absent (and returns -1). */
static int id_index_find(const id_index *x, const moe_pldoc *d, const char *id, int add) {
    for (size_t i = (size_t)id_hash(id) & x->mask;; i = (i + 1) & x->mask) {
        const int32_t v = x->slot[i];
        if (v == 0) {
            if (add >= 0) x->slot[i] = add + 1;
            return -1;
        }
        if (!strcmp(d->ids[v - 1], id)) return v - 1;
    }
}

static int is_uint(const cJSON *j, double max) {
    return cJSON_IsNumber(j) && j->valuedouble >= 0 && j->valuedouble <= max &&
           j->valuedouble == (double)(int64_t)j->valuedouble;
}

int moe_pldoc_parse(moe_pldoc **out, const char *json, size_t len, int n_layer, int n_expert,
                    moe_err *err) {
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) return moe_err_set(err, MOE_EFORMAT, "placement: not JSON");
    while (end < json + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')) end++;
    if (end != json + len) { /* cJSON stops after one value; the rest must be empty */
        cJSON_Delete(root);
        return moe_err_set(err, MOE_EFORMAT, "placement: bytes after the JSON document");
    }
    int rc = 0;
    id_index ix = {0};
    int32_t *seen = NULL; /* per worker: 1 + the last expert that named it */
    moe_pldoc *d = calloc(1, sizeof *d);
    if (!d) {
        cJSON_Delete(root);
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(root, "epoch");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(root, "workers");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "experts");
    if (!cJSON_IsObject(root) || !is_uint(ep, (double)PLDOC_EPOCH_MAX) || !cJSON_IsObject(ws) ||
        !cJSON_IsArray(ex) || (model && !cJSON_IsString(model))) {
        rc = moe_err_set(err, MOE_EFORMAT,
                         "placement: need {\"epoch\": N, \"model\": \"...\" (optional), "
                         "\"workers\": {...}, \"experts\": [...]}");
        goto done;
    }
    d->epoch = (uint64_t)ep->valuedouble;
    d->model = strdup(model ? model->valuestring : "");
    int nw = cJSON_GetArraySize(ws);
    int ne = cJSON_GetArraySize(ex);
    if (nw > PLDOC_WORKERS_MAX || ne > PLDOC_EXPERTS_MAX) {
        rc = moe_err_set(err, MOE_EFORMAT, "placement: %d workers, %d experts: too many", nw, ne);
        goto done;
    }
    d->ids = calloc((size_t)nw + 1, sizeof *d->ids);
    d->addrs = calloc((size_t)nw + 1, sizeof *d->addrs);
    d->experts = calloc((size_t)ne + 1, sizeof *d->experts);
    seen = calloc((size_t)nw + 1, sizeof *seen);
    if (!d->model || !d->ids || !d->addrs || !d->experts || !seen || id_index_init(&ix, nw) < 0) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto done;
    }
    const cJSON *w;
    cJSON_ArrayForEach(w, ws) {
        if (!w->string || !*w->string) {
            rc = moe_err_set(err, MOE_EFORMAT, "placement: a worker id is empty");
            goto done;
        }
        if (!cJSON_IsString(w) || !*w->valuestring) {
            rc = moe_err_set(err, MOE_EFORMAT,
                             "placement: worker '%.100s': its address must be a non-empty string",
                             w->string);
            goto done;
        }
        d->ids[d->n_workers] = strdup(w->string);
        d->addrs[d->n_workers] = strdup(w->valuestring);
        if (!d->ids[d->n_workers] || !d->addrs[d->n_workers]) {
            free(d->ids[d->n_workers]), free(d->addrs[d->n_workers]);
            d->ids[d->n_workers] = d->addrs[d->n_workers] = NULL;
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
            goto done;
        }
        if (id_index_find(&ix, d, w->string, d->n_workers) >= 0) {
            free(d->ids[d->n_workers]), free(d->addrs[d->n_workers]);
            d->ids[d->n_workers] = d->addrs[d->n_workers] = NULL;
            rc =
                moe_err_set(err, MOE_EFORMAT, "placement: worker '%.100s' listed twice", w->string);
            goto done;
        }
        d->n_workers++;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, ex) {
        const cJSON *L = cJSON_GetArrayItem(e, 0), *E = cJSON_GetArrayItem(e, 1),
                    *R = cJSON_GetArrayItem(e, 2);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 3 || !is_uint(L, PLDOC_INDEX_MAX) ||
            !is_uint(E, PLDOC_INDEX_MAX) || !cJSON_IsArray(R) ||
            (n_layer > 0 && L->valuedouble >= n_layer) ||
            (n_expert > 0 && E->valuedouble >= n_expert)) {
            rc = moe_err_set(err, MOE_EFORMAT,
                             "placement: expert %zu is not [layer, expert, [workers]] within "
                             "%d layers and %d experts",
                             d->n_experts, n_layer, n_expert);
            goto done;
        }
        moe_pldoc_expert *pe = &d->experts[d->n_experts];
        pe->layer = (int32_t)L->valuedouble;
        pe->expert = (int32_t)E->valuedouble;
        int nr = cJSON_GetArraySize(R);
        pe->replicas = calloc((size_t)nr + 1, sizeof *pe->replicas);
        if (!pe->replicas) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
            goto done;
        }
        d->n_experts++;
        const cJSON *r;
        cJSON_ArrayForEach(r, R) {
            int wi = cJSON_IsString(r) ? id_index_find(&ix, d, r->valuestring, -1) : -1;
            if (wi < 0) {
                rc = moe_err_set(err, MOE_EFORMAT,
                                 "placement: layer %d expert %d names a worker not in \"workers\"",
                                 pe->layer, pe->expert);
                goto done;
            }
            if (seen[wi] == (int32_t)d->n_experts) continue; /* named twice: once counts */
            seen[wi] = (int32_t)d->n_experts;
            pe->replicas[pe->n_replicas++] = wi;
        }
    }
done:
    cJSON_Delete(root);
    free(ix.slot);
    free(seen);
    if (rc < 0) {
        moe_pldoc_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

/* ==== Reading from Redis ======================================================== */

int moe_reply_epoch(const redisReply *r, uint64_t *e) {
    if (!r || r->type != REDIS_REPLY_STRING) return 0;
    return parse_u64(r->str, r->len, e);
}

int moe_pldoc_get_epoch(moe_rlink *l, const char *key, uint64_t *e) {
    redisReply *r = moe_rlink_cmd(l, "GET %s", key);
    if (!r) return MOE_EUNAVAIL;
    /* an error reply (LOADING, NOAUTH, WRONGTYPE) says nothing about the key */
    const int rc = r->type == REDIS_REPLY_ERROR ? MOE_EUNAVAIL
                   : moe_reply_epoch(r, e)      ? 0
                                                : MOE_ENOTFOUND;
    freeReplyObject(r);
    return rc;
}

int moe_pldoc_fetch(moe_pldoc **out, moe_rlink *l, const char *prefix, uint64_t e, int n_layer,
                    int n_expert, moe_err *err) {
    *out = NULL;
    char key[MOE_SCHEMA_KEY_MAX];
    if (moe_key_placement(key, sizeof key, prefix, e) < 0)
        return moe_err_set(err, MOE_ERANGE, "the key prefix is too long");
    redisReply *r = moe_rlink_cmd(l, "GET %s", key);
    if (!r) return moe_err_set(err, MOE_EUNAVAIL, "Redis is away");
    int rc;
    if (r->type == REDIS_REPLY_STRING)
        rc = moe_pldoc_parse(out, r->str, r->len, n_layer, n_expert, err);
    else if (r->type == REDIS_REPLY_ERROR)
        rc = moe_err_set(err, MOE_EUNAVAIL, "GET %s: %.200s", key, r->str);
    else
        rc = moe_err_set(err, MOE_ENOTFOUND, "%s is missing", key);
    freeReplyObject(r);
    return rc;
}
