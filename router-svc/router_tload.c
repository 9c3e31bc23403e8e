/* router_tload.c - which tenants heat which experts (router_internal.h):
 * the gateways' P:load:<b>:tenants, read beside the per-expert load, every
 * entry checked (Redis content is not trusted), merged into each expert's
 * tenants by rows; shown on /metrics and /v1/tenant-load, and named when an
 * expert gets more replicas. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/schema.h"
#include "router_internal.h"
#include "svc/clock.h"

/* ==== Parsing one field ========================================================= */

static const char *const skip_names[RT_TLOAD_SKIP_COUNT] = {[RT_TLOAD_OK] = "ok",
                                                            [RT_TLOAD_SKIP_FIELD] = "field",
                                                            [RT_TLOAD_SKIP_EXPERT] = "expert",
                                                            [RT_TLOAD_SKIP_VALUE] = "value",
                                                            [RT_TLOAD_SKIP_TYPE] = "type",
                                                            [RT_TLOAD_SKIP_CAP] = "cap",
                                                            [RT_TLOAD_SKIP_TENANTS] = "tenants"};

const char *rt_tload_skip_name(rt_tload_skip why) {
    return why >= 0 && why < RT_TLOAD_SKIP_COUNT ? skip_names[why] : "?";
}

static int is_alnum(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A tenant name (mesh/tenant.h's grammar) or the gateway's "(none)", "(other)". */
static int tenant_ok(const char *s, size_t n) {
    if ((n == 6 && !memcmp(s, "(none)", 6)) || (n == 7 && !memcmp(s, "(other)", 7))) return 1;
    if (n < 1 || n > MOE_TENANT_NAME_MAX || !is_alnum(s[0])) return 0;
    for (size_t i = 1; i < n; i++)
        if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') return 0;
    return 1;
}

rt_tload_skip rt_tload_parse(const char *field, size_t flen, const char *value, size_t vlen,
                             int n_layer, int n_expert, char *tenant, size_t *pair,
                             uint64_t *rows) {
    /* "<tenant>|L:E": at most a name, '|' and two numbers of 7 digits */
    char f[MOE_TENANT_NAME_MAX + 24];
    if (!field || flen >= sizeof f || memchr(field, 0, flen)) return RT_TLOAD_SKIP_FIELD;
    memcpy(f, field, flen);
    f[flen] = 0;
    char *bar = strchr(f, '|');
    if (!bar || !tenant_ok(f, (size_t)(bar - f))) return RT_TLOAD_SKIP_FIELD;
    int l, e;
    if (moe_expert_field_parse(bar + 1, &l, &e) < 0 || l >= n_layer || e >= n_expert)
        return RT_TLOAD_SKIP_EXPERT;
    /* a count: decimal digits, no sign, at most RT_TLOAD_ROWS_MAX (16 digits) */
    if (!value || vlen < 1 || vlen > 16) return RT_TLOAD_SKIP_VALUE;
    uint64_t v = 0;
    for (size_t i = 0; i < vlen; i++) {
        if (value[i] < '0' || value[i] > '9') return RT_TLOAD_SKIP_VALUE;
        v = v * 10 + (uint64_t)(value[i] - '0');
    }
    if (v > RT_TLOAD_ROWS_MAX) return RT_TLOAD_SKIP_VALUE;
    *bar = 0;
    memcpy(tenant, f, (size_t)(bar - f) + 1);
    *pair = (size_t)l * (size_t)n_expert + (size_t)e;
    *rows = v;
    return RT_TLOAD_OK;
}

/* ==== The accumulator =========================================================== */

#define SLOTS (2 * RT_TLOAD_TENANTS_MAX)

int rt_tload_init(rt_tload *t, int n_layer, int n_expert) {
    memset(t, 0, sizeof *t);
    t->n_layer = n_layer;
    t->n_expert = n_expert;
    t->names = malloc(RT_TLOAD_TENANTS_MAX * sizeof *t->names);
    t->slots = calloc(SLOTS, sizeof *t->slots);
    if (!t->names || !t->slots) {
        rt_tload_free(t);
        return MOE_ENOMEM;
    }
    return 0;
}

void rt_tload_free(rt_tload *t) {
    if (!t) return;
    free(t->names), free(t->slots), free(t->rows);
    t->names = NULL, t->slots = NULL, t->rows = NULL;
    t->n_rows = t->cap_rows = 0;
}

/* The index of a tenant, added if new; -1 beyond RT_TLOAD_TENANTS_MAX. */
static int tenant_index(rt_tload *t, const char *name) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    for (uint32_t k = h % SLOTS;; k = (k + 1) % SLOTS) {
        const int i = t->slots[k] - 1;
        if (i < 0) {
            if (t->n_names == RT_TLOAD_TENANTS_MAX) return -1;
            snprintf(t->names[t->n_names], sizeof t->names[0], "%s", name);
            t->slots[k] = ++t->n_names;
            return t->n_names - 1;
        }
        if (!strcmp(t->names[i], name)) return i;
    }
}

int rt_tload_add(rt_tload *t, const char *field, size_t flen, const char *value, size_t vlen) {
    char name[MOE_TENANT_NAME_MAX + 1];
    size_t pair;
    uint64_t rows;
    t->n_fields++;
    rt_tload_skip why =
        rt_tload_parse(field, flen, value, vlen, t->n_layer, t->n_expert, name, &pair, &rows);
    const int ti = why == RT_TLOAD_OK ? tenant_index(t, name) : 0;
    if (ti < 0) why = RT_TLOAD_SKIP_TENANTS;
    if (why != RT_TLOAD_OK) {
        t->skipped[why]++;
        return why;
    }
    if (!rows) return RT_TLOAD_OK;
    if (t->n_rows == t->cap_rows) {
        const size_t cap = t->cap_rows ? 2 * t->cap_rows : 256;
        rt_tload_row *p = realloc(t->rows, cap * sizeof *p);
        if (!p) return -1;
        t->rows = p, t->cap_rows = cap;
    }
    t->rows[t->n_rows++] = (rt_tload_row){(uint32_t)pair, (uint32_t)ti, rows};
    return RT_TLOAD_OK;
}

typedef struct name_ix {
    char name[MOE_TENANT_NAME_MAX + 1];
    int old;
} name_ix;

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

static int cmp_pair_tenant(const void *a, const void *b) {
    const rt_tload_row *x = a, *y = b;
    if (x->pair != y->pair) return x->pair < y->pair ? -1 : 1;
    return x->tenant < y->tenant ? -1 : x->tenant > y->tenant;
}

static int cmp_pair_rows(const void *a, const void *b) {
    const rt_tload_row *x = a, *y = b;
    if (x->pair != y->pair) return x->pair < y->pair ? -1 : 1;
    if (x->rows != y->rows) return x->rows > y->rows ? -1 : 1;
    return x->tenant < y->tenant ? -1 : x->tenant > y->tenant;
}

int rt_tload_finish(rt_tload *t) {
    /* tenants in name order, so ties read the same whatever Redis' order */
    name_ix *ix = malloc(((size_t)t->n_names + 1) * sizeof *ix);
    int *remap = malloc(((size_t)t->n_names + 1) * sizeof *remap);
    if (!ix || !remap) {
        free(ix), free(remap);
        return MOE_ENOMEM;
    }
    for (int i = 0; i < t->n_names; i++) {
        memcpy(ix[i].name, t->names[i], sizeof ix[i].name);
        ix[i].old = i;
    }
    qsort(ix, (size_t)t->n_names, sizeof *ix, cmp_name);
    for (int i = 0; i < t->n_names; i++) {
        memcpy(t->names[i], ix[i].name, sizeof ix[i].name);
        remap[ix[i].old] = i;
    }
    memset(t->slots, 0, SLOTS * sizeof *t->slots); /* no more adds */
    for (size_t i = 0; i < t->n_rows; i++) t->rows[i].tenant = (uint32_t)remap[t->rows[i].tenant];
    free(ix), free(remap);
    /* the same tenant and expert in both buckets: one row */
    if (t->n_rows)
        qsort(t->rows, t->n_rows, sizeof *t->rows, cmp_pair_tenant); /* rows NULL: none */
    size_t n = 0;
    for (size_t i = 0; i < t->n_rows; i++) {
        if (n && t->rows[n - 1].pair == t->rows[i].pair &&
            t->rows[n - 1].tenant == t->rows[i].tenant)
            t->rows[n - 1].rows += t->rows[i].rows; /* <= 2 x 10^15 */
        else
            t->rows[n++] = t->rows[i];
    }
    t->n_rows = n;
    if (t->n_rows) qsort(t->rows, t->n_rows, sizeof *t->rows, cmp_pair_rows);
    t->finished = 1;
    return 0;
}

/* The first row of pair (binary search), or n_rows. */
static size_t first_row(const rt_tload *t, size_t pair) {
    size_t lo = 0, hi = t->n_rows;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        if (t->rows[mid].pair < pair)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Fills out from the rows of one pair starting at row i; returns the row after. */
static size_t fill_expert(const rt_tload *t, size_t i, rt_tload_expert *out) {
    const uint32_t pair = t->rows[i].pair;
    memset(out, 0, sizeof *out);
    out->layer = (int)(pair / (uint32_t)t->n_expert);
    out->expert = (int)(pair % (uint32_t)t->n_expert);
    for (; i < t->n_rows && t->rows[i].pair == pair; i++) {
        out->rows += t->rows[i].rows;
        if (out->n_top < RT_TLOAD_TOP_TENANTS) {
            rt_tload_tenant *tt = &out->top[out->n_top++];
            memcpy(tt->name, t->names[t->rows[i].tenant], sizeof tt->name);
            tt->rows = t->rows[i].rows;
        }
        out->n_tenants++;
    }
    return i;
}

int rt_tload_expert_get(const rt_tload *t, size_t pair, rt_tload_expert *out) {
    memset(out, 0, sizeof *out);
    if (!t || !t->finished || !t->n_expert) return 0;
    out->layer = (int)(pair / (size_t)t->n_expert);
    out->expert = (int)(pair % (size_t)t->n_expert);
    const size_t i = first_row(t, pair);
    if (i == t->n_rows || t->rows[i].pair != pair) return 0;
    fill_expert(t, i, out);
    return out->n_tenants;
}

void rt_tload_view_fill(const rt_tload *t, rt_tload_view *v) {
    v->read = 1;
    v->n_tenants = t->n_names;
    v->n_fields = t->n_fields;
    memcpy(v->skipped, t->skipped, sizeof v->skipped);
    v->n = 0;
    rt_tload_expert e;
    for (size_t i = 0; i < t->n_rows;) {
        i = fill_expert(t, i, &e);
        /* insert by rows, descending; equal rows keep the lower pair first */
        int j = v->n < RT_TLOAD_TOP_EXPERTS ? v->n++ : RT_TLOAD_TOP_EXPERTS;
        if (j == RT_TLOAD_TOP_EXPERTS && e.rows <= v->e[j - 1].rows) continue;
        if (j == RT_TLOAD_TOP_EXPERTS) j--;
        while (j > 0 && v->e[j - 1].rows < e.rows) v->e[j] = v->e[j - 1], j--;
        v->e[j] = e;
    }
}

/* ==== Reading Redis ============================================================= */

typedef struct tl_read {
    router *r;
    rt_tload *t;
    long long len[2]; /* HLEN; -1: not a hash; -2: unreadable */
    char err[2][128];
} tl_read;

static void on_len(void *ud, size_t i, redisReply *x) {
    tl_read *tr = ud;
    if (i > 1) return;
    if (x->type == REDIS_REPLY_INTEGER) {
        tr->len[i] = x->integer;
    } else if (x->type == REDIS_REPLY_ERROR && x->str && !strncmp(x->str, "WRONGTYPE", 9)) {
        tr->len[i] = -1;
    } else {
        tr->len[i] = -2;
        snprintf(tr->err[i], sizeof tr->err[i], "%.100s",
                 x->type == REDIS_REPLY_ERROR && x->str ? x->str : "not a count");
    }
}

/* Adds the field-value pairs of an HGETALL (or HSCAN page) array, at most
 * up to *budget fields; 0, or -1 when out of memory or not an array. */
static int take(rt_tload *t, const redisReply *a, long long *budget) {
    if (!a || a->type != REDIS_REPLY_ARRAY) return -1;
    for (size_t k = 0; k + 1 < a->elements && *budget > 0; k += 2, --*budget) {
        const redisReply *f = a->element[k], *v = a->element[k + 1];
        const int fs = f->type == REDIS_REPLY_STRING, vs = v->type == REDIS_REPLY_STRING;
        if (rt_tload_add(t, fs ? f->str : NULL, fs ? f->len : 0, vs ? v->str : NULL,
                         vs ? v->len : 0) < 0)
            return -1;
    }
    return 0;
}

/* One bucket's hash of n fields; 0, or -1 (Redis away, out of memory). */
static int read_bucket(router *r, rt_tload *t, const char *key, long long n) {
    long long budget = RT_TLOAD_FIELDS_MAX;
    if (n <= RT_TLOAD_FIELDS_MAX) {
        redisReply *x = moe_rlink_cmd(r->cmd, "HGETALL %s", key);
        if (!x) return -1;
        const int rc = x->type == REDIS_REPLY_ARRAY ? take(t, x, &budget) : 0;
        if (rc == 0 && x->elements / 2 > RT_TLOAD_FIELDS_MAX) /* it grew since HLEN */
            t->skipped[RT_TLOAD_SKIP_CAP] += x->elements / 2 - RT_TLOAD_FIELDS_MAX;
        freeReplyObject(x);
        return rc;
    }
    /* too many fields for one reply: HSCAN pages up to the cap (a field may
     * come twice while Redis rehashes; the count is approximate there) */
    char cursor[32] = "0";
    int pages = 0; /* bounded even if the cursor never comes back to 0 */
    do {
        redisReply *x = moe_rlink_cmd(r->cmd, "HSCAN %s %s COUNT 1024", key, cursor);
        if (!x) return -1;
        int rc = -1;
        if (x->type == REDIS_REPLY_ARRAY && x->elements == 2 &&
            x->element[0]->type == REDIS_REPLY_STRING && x->element[0]->len < sizeof cursor) {
            snprintf(cursor, sizeof cursor, "%s", x->element[0]->str);
            rc = take(t, x->element[1], &budget);
        }
        freeReplyObject(x);
        if (rc < 0) return -1;
    } while (strcmp(cursor, "0") && budget > 0 && ++pages < 4 * RT_TLOAD_FIELDS_MAX / 1024);
    t->skipped[RT_TLOAD_SKIP_CAP] += (uint64_t)(n - (RT_TLOAD_FIELDS_MAX - budget));
    const int64_t now = moe_mono_ms();
    if (now - r->logged_tload_ms > 60000) {
        rt_warn("%s has %lld fields, above the cap of %d: the rest is skipped (tenants beyond "
                "the cap are missing from the breakdown)",
                key, n, RT_TLOAD_FIELDS_MAX);
        r->logged_tload_ms = now;
    }
    return 0;
}

void rt_tload_read(router *r, const int64_t bucket[2]) {
    char key[2][MOE_SCHEMA_KEY_MAX];
    rt_tload *t = calloc(1, sizeof *t);
    tl_read tr = {r, t, {0, 0}, {"", ""}};
    if (!t || rt_tload_init(t, r->n_layer, r->n_expert) < 0) goto fail;
    for (int k = 0; k < 2; k++) moe_key_load_tenants(key[k], sizeof key[k], r->prefix, bucket[k]);
    if (moe_rlink_begin(r->cmd) < 0) goto fail;
    moe_rlink_append(r->cmd, "HLEN %s", key[0]);
    moe_rlink_append(r->cmd, "HLEN %s", key[1]);
    if (moe_rlink_flush(r->cmd, on_len, &tr) < 0) goto fail;
    const int64_t now = moe_mono_ms();
    for (int k = 0; k < 2; k++) {
        if (tr.len[k] == -1) t->skipped[RT_TLOAD_SKIP_TYPE]++;
        if (tr.len[k] < 0 && now - r->logged_tload_ms > 60000) {
            rt_warn("%s: %s; skipped", key[k], tr.len[k] == -1 ? "not a hash" : tr.err[k]);
            r->logged_tload_ms = now;
        }
        if (tr.len[k] > 0 && read_bucket(r, t, key[k], tr.len[k]) < 0) goto fail;
    }
    if (rt_tload_finish(t) < 0) goto fail;
    rt_tload_view v = {0};
    rt_tload_view_fill(t, &v);
    v.bucket[0] = bucket[0], v.bucket[1] = bucket[1];
    pthread_mutex_lock(&r->mu);
    r->st.tload = v;
    pthread_mutex_unlock(&r->mu);
    if (r->tload) rt_tload_free(r->tload);
    free(r->tload);
    r->tload = t;
    return;
fail: /* Redis away or out of memory: the last read stays */
    rt_tload_free(t);
    free(t);
}

/* ==== The hot experts' log line ================================================= */

#define HOT_LINES_MAX 8

/* "acme 81%, beta 19%" (at most 3 named, then "2 more 4%") into buf. */
static void shares(const rt_tload_expert *e, char *buf, size_t cap) {
    if (!e->n_tenants || !e->rows) {
        snprintf(buf, cap, "none reported");
        return;
    }
    size_t n = 0;
    uint64_t named = 0;
    buf[0] = 0;
    const int shown = e->n_top < 3 ? e->n_top : 3;
    for (int k = 0; k < shown && n < cap; k++) {
        named += e->top[k].rows;
        n += (size_t)snprintf(buf + n, cap - n, "%s%s %.0f%%", k ? ", " : "", e->top[k].name,
                              100.0 * (double)e->top[k].rows / (double)e->rows);
    }
    if (e->n_tenants > shown && n < cap)
        snprintf(buf + n, cap - n, ", %d more %.0f%%", e->n_tenants - shown,
                 100.0 * (double)(e->rows - named) / (double)e->rows);
}

void rt_tload_log_hot(router *r, const rt_placement *pl) {
    if (!r->active || !r->n_expert) return;
    const size_t np = (size_t)r->n_layer * (size_t)r->n_expert;
    int *prev = calloc(np + 1, sizeof *prev);
    if (!prev) return;
    for (size_t i = 0; i < r->active->n_experts; i++) {
        const rt_placement_expert *pe = &r->active->experts[i];
        if (pe->layer >= 0 && pe->layer < r->n_layer && pe->expert >= 0 && pe->expert < r->n_expert)
            prev[(size_t)pe->layer * r->n_expert + pe->expert] = pe->n_replicas;
    }
    int lines = 0, more = 0;
    for (size_t i = 0; i < pl->n_experts; i++) {
        const rt_placement_expert *pe = &pl->experts[i];
        const size_t pair = (size_t)pe->layer * r->n_expert + pe->expert;
        if (pe->layer >= r->n_layer || pe->expert >= r->n_expert) continue;
        if (!prev[pair] || pe->n_replicas <= prev[pair]) continue;
        if (lines == HOT_LINES_MAX) {
            more++;
            continue;
        }
        rt_tload_expert e;
        char who[400];
        rt_tload_expert_get(r->tload, pair, &e);
        shares(&e, who, sizeof who);
        rt_log("expert %d:%d hot: %.0f rows/s, %d -> %d replicas; tenants: %s", pe->layer,
               pe->expert, r->load ? r->load[pair] : 0.0, prev[pair], pe->n_replicas, who);
        lines++;
    }
    if (more) rt_log("%d more expert(s) get more replicas", more);
    free(prev);
}
