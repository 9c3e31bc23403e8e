/* pldoc.c - placement documents (see pldoc.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "moe/model.h"
#include "mesh/pldoc.h"
#include "mesh/rlink.h"

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
    moe_pldoc *d = calloc(1, sizeof *d);
    if (!d) {
        cJSON_Delete(root);
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(root, "epoch");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(root, "workers");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "experts");
    if (!cJSON_IsObject(root) || !is_uint(ep, 9007199254740991.0) || !cJSON_IsObject(ws) ||
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
    if (nw > 65536 || ne > 16 * 1024 * 1024) {
        rc = moe_err_set(err, MOE_EFORMAT, "placement: %d workers, %d experts: too many", nw, ne);
        goto done;
    }
    d->ids = calloc((size_t)nw + 1, sizeof *d->ids);
    d->addrs = calloc((size_t)nw + 1, sizeof *d->addrs);
    d->experts = calloc((size_t)ne + 1, sizeof *d->experts);
    if (!d->model || !d->ids || !d->addrs || !d->experts) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto done;
    }
    const cJSON *w;
    cJSON_ArrayForEach(w, ws) {
        if (!cJSON_IsString(w) || !*w->valuestring || !w->string || !*w->string) {
            rc = moe_err_set(err, MOE_EFORMAT, "placement: worker addresses must be strings");
            goto done;
        }
        if (moe_pldoc_worker(d, w->string) >= 0) {
            rc = moe_err_set(err, MOE_EFORMAT, "placement: worker '%.100s' listed twice", w->string);
            goto done;
        }
        d->ids[d->n_workers] = strdup(w->string);
        d->addrs[d->n_workers] = strdup(w->valuestring);
        if (!d->ids[d->n_workers] || !d->addrs[d->n_workers]) {
            free(d->ids[d->n_workers]), free(d->addrs[d->n_workers]);
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
            goto done;
        }
        d->n_workers++;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, ex) {
        const cJSON *L = cJSON_GetArrayItem(e, 0), *E = cJSON_GetArrayItem(e, 1),
                    *R = cJSON_GetArrayItem(e, 2);
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 3 || !is_uint(L, 1 << 20) ||
            !is_uint(E, 1 << 20) || !cJSON_IsArray(R) ||
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
            int wi = cJSON_IsString(r) ? moe_pldoc_worker(d, r->valuestring) : -1;
            if (wi < 0) {
                rc = moe_err_set(err, MOE_EFORMAT,
                                 "placement: layer %d expert %d names a worker not in \"workers\"",
                                 pe->layer, pe->expert);
                goto done;
            }
            for (int k = 0; k < pe->n_replicas; k++)
                if (pe->replicas[k] == wi) wi = -1;
            if (wi >= 0) pe->replicas[pe->n_replicas++] = wi;
        }
    }
done:
    cJSON_Delete(root);
    if (rc < 0) {
        moe_pldoc_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int moe_reply_epoch(const redisReply *r, uint64_t *e) {
    if (!r || r->type != REDIS_REPLY_STRING || r->len < 1 || r->len > 20) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < r->len; i++) {
        const char c = r->str[i];
        if (c < '0' || c > '9' || v > (UINT64_MAX - (uint64_t)(c - '0')) / 10) return 0;
        v = v * 10 + (uint64_t)(c - '0');
    }
    *e = v;
    return 1;
}

int moe_pldoc_get_epoch(moe_rlink *l, const char *prefix, const char *name, uint64_t *e) {
    redisReply *r = moe_rlink_cmd(l, "GET %s:placement:%s", prefix, name);
    if (!r) return -1;
    const int have = moe_reply_epoch(r, e);
    freeReplyObject(r);
    return have;
}

int moe_pldoc_fetch(moe_pldoc **out, moe_rlink *l, const char *prefix, uint64_t e, int n_layer,
                    int n_expert, moe_err *err) {
    *out = NULL;
    char key[320];
    snprintf(key, sizeof key, "%.300s:placement:%llu", prefix, (unsigned long long)e);
    redisReply *r = moe_rlink_cmd(l, "GET %s", key);
    if (!r) return moe_err_set(err, MOE_EUNAVAIL, "Redis is away");
    int rc = r->type == REDIS_REPLY_STRING
                 ? moe_pldoc_parse(out, r->str, r->len, n_layer, n_expert, err)
                 : moe_err_set(err, MOE_ENOTFOUND, "%s is missing", key);
    freeReplyObject(r);
    return rc;
}
