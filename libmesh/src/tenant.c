/* tenant.c - API keys, tenant sets and the tenants file (see mesh/tenant.h).
 * The store that holds the current set is tenant_store.c; Redis is
 * tenant_redis.c. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "mesh/tenant.h"

/* err's message behind a prefix: "PREFIX: MESSAGE" (err may be NULL). Returns rc. */
static int wrap(moe_err *err, int rc, const char *prefix) {
    if (!err) return rc;
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    return moe_err_set(err, rc, "%s: %s", prefix, msg);
}

/* ==== Names, limits, priorities ================================================= */

static const char *const prio_names[] = {"high", "normal", "low"};

const char *moe_tenant_priority_name(moe_tenant_priority p) {
    return (unsigned)p < 3 ? prio_names[p] : NULL;
}

int moe_tenant_priority_parse(const char *s, moe_tenant_priority *out) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, prio_names[i])) {
            *out = (moe_tenant_priority)i;
            return 0;
        }
    return MOE_EINVAL;
}

moe_tenant_limits moe_tenant_limits_default(void) {
    return (moe_tenant_limits){.weight = 1.0, .priority = MOE_TENANT_PRIORITY_NORMAL};
}

int moe_tenant_limits_check(const moe_tenant_limits *lim, moe_err *err) {
    const struct {
        const char *name;
        int64_t v;
    } n[] = {{"rpm", lim->rpm},
             {"tpm", lim->tpm},
             {"concurrency", lim->concurrency},
             {"max_context", lim->max_context},
             {"daily_tokens", lim->daily_tokens}};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++)
        if (n[i].v < 0 || n[i].v > MOE_TENANT_LIMIT_MAX)
            return moe_err_set(err, MOE_EINVAL, "%s must be from 0 (unlimited) to 2^53", n[i].name);
    if (!isfinite(lim->weight) || lim->weight <= 0 || lim->weight > MOE_TENANT_WEIGHT_MAX)
        return moe_err_set(err, MOE_EINVAL, "weight must be above 0 and at most %g",
                           MOE_TENANT_WEIGHT_MAX);
    if (!moe_tenant_priority_name(lim->priority))
        return moe_err_set(err, MOE_EINVAL, "priority must be high, normal or low");
    return 0;
}

static int name_char(char c, int first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (!first && (c == '.' || c == '_' || c == '-'));
}

int moe_tenant_name_check(const char *name, moe_err *err) {
    const size_t n = name ? strlen(name) : 0;
    int ok = n >= 1 && n <= MOE_TENANT_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++) ok = name_char(name[i], i == 0);
    if (!ok)
        return moe_err_set(err, MOE_EINVAL,
                           "a tenant name has 1 to %d characters: a letter or digit, then "
                           "letters, digits, '.', '_' or '-'",
                           MOE_TENANT_NAME_MAX);
    return 0;
}

/* ==== Keys ====================================================================== */

int moe_tenant_key_new(char out[MOE_TENANT_KEY_LEN + 1], moe_err *err) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t b[33] = {0}; /* 32 random bytes and a zero that pads the last group */
    size_t got = 0;
    while (got < 32) {
        const ssize_t k = getrandom(b + got, 32 - got, 0);
        if (k < 0 && errno == EINTR) continue;
        char eb[128];
        if (k <= 0)
            return moe_err_set(err, MOE_EIO, "getrandom: %s", moe_errno_str(errno, eb, sizeof eb));
        got += (size_t)k;
    }
    char *p = out;
    memcpy(p, MOE_TENANT_KEY_PREFIX, 4);
    p += 4;
    for (int i = 0; i < 33; i += 3) { /* 11 groups of 4 characters; the last has 3 */
        const uint32_t v = (uint32_t)b[i] << 16 | (uint32_t)b[i + 1] << 8 | b[i + 2];
        *p++ = b64[v >> 18 & 63];
        *p++ = b64[v >> 12 & 63];
        *p++ = b64[v >> 6 & 63];
        if (i < 30) *p++ = b64[v & 63];
    }
    *p = 0;
    OPENSSL_cleanse(b, sizeof b);
    return 0;
}

void moe_tenant_key_digest(const char *key, size_t len, uint8_t out[MOE_TENANT_DIGEST]) {
    SHA256((const unsigned char *)key, len, out);
}

void moe_tenant_digest_hex(const uint8_t d[MOE_TENANT_DIGEST], char out[65]) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < MOE_TENANT_DIGEST; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[64] = 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int moe_tenant_digest_parse(const char *hex, uint8_t out[MOE_TENANT_DIGEST]) {
    if (!hex || strlen(hex) != 64) return MOE_EFORMAT;
    for (int i = 0; i < MOE_TENANT_DIGEST; i++) {
        const int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return MOE_EFORMAT;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void moe_tenant_key_redact(const char *key, size_t len, char *buf, size_t cap) {
    if (cap < 16) {
        if (cap) buf[0] = 0;
        return;
    }
    if (len < 16) {
        snprintf(buf, cap, "***");
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < 6; i++) buf[n++] = key[i] > ' ' && key[i] < 0x7f ? key[i] : '?';
    memcpy(buf + n, "***", 3);
    n += 3;
    for (size_t i = len - 4; i < len; i++) buf[n++] = key[i] > ' ' && key[i] < 0x7f ? key[i] : '?';
    buf[n] = 0;
}

/* ==== Tenant sets ================================================================ */

/* Two open-addressing tables of indices (-1: empty), kept at most half full:
 * key digests (hashed by their first 8 bytes: a digest is uniformly random)
 * and names (FNV-1a). */
struct moe_tenant_set {
    moe_tenant *t; /* (n) */
    int *first;    /* (n) index of tenant i's first digest in d */
    int n, cap;
    uint8_t (*d)[MOE_TENANT_DIGEST]; /* (n_d) */
    int *owner;                      /* (n_d) tenant of digest i */
    int n_d, cap_d;
    int *ktab, *ntab; /* (kmask + 1), (nmask + 1) */
    size_t kmask, nmask;
    uint64_t version;
};

static size_t key_hash(const uint8_t *d) {
    uint64_t h;
    memcpy(&h, d, sizeof h);
    return (size_t)h;
}

static size_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return (size_t)h;
}

static int *table_new(size_t slots) {
    int *t = malloc(slots * sizeof *t);
    if (t) memset(t, 0xff, slots * sizeof *t); /* -1 */
    return t;
}

int moe_tenant_set_create(moe_tenant_set **out) {
    moe_tenant_set *s = calloc(1, sizeof *s);
    *out = NULL;
    if (!s) return MOE_ENOMEM;
    s->kmask = s->nmask = 15;
    s->ktab = table_new(16);
    s->ntab = table_new(16);
    if (!s->ktab || !s->ntab) {
        moe_tenant_set_free(s);
        return MOE_ENOMEM;
    }
    *out = s;
    return 0;
}

void moe_tenant_set_free(moe_tenant_set *s) {
    if (!s) return;
    if (s->d) OPENSSL_cleanse(s->d, (size_t)s->cap_d * sizeof *s->d);
    free(s->t);
    free(s->first);
    free(s->d);
    free(s->owner);
    free(s->ktab);
    free(s->ntab);
    free(s);
}

/* Slot of digest d in the key table: where it is, or the empty slot where it goes. */
static size_t key_slot(const moe_tenant_set *s, const uint8_t *d, int *found) {
    size_t h = key_hash(d) & s->kmask;
    for (;; h = (h + 1) & s->kmask) {
        const int i = s->ktab[h];
        if (i < 0) break;
        if (CRYPTO_memcmp(s->d[i], d, MOE_TENANT_DIGEST) == 0) {
            *found = i;
            return h;
        }
    }
    *found = -1;
    return h;
}

static size_t name_slot(const moe_tenant_set *s, const char *name, int *found) {
    size_t h = name_hash(name) & s->nmask;
    for (;; h = (h + 1) & s->nmask) {
        const int i = s->ntab[h];
        if (i < 0) break;
        if (!strcmp(s->t[i].name, name)) {
            *found = i;
            return h;
        }
    }
    *found = -1;
    return h;
}

/* Makes room for one more tenant and k more digests (tables kept half full). */
static int grow(moe_tenant_set *s, int k) {
    if (s->n == s->cap) {
        const int cap = s->cap ? 2 * s->cap : 16;
        moe_tenant *t = realloc(s->t, (size_t)cap * sizeof *t);
        if (!t) return MOE_ENOMEM;
        s->t = t;
        int *f = realloc(s->first, (size_t)cap * sizeof *f);
        if (!f) return MOE_ENOMEM;
        s->first = f;
        s->cap = cap;
    }
    if (s->n_d + k > s->cap_d) {
        int cap = s->cap_d ? 2 * s->cap_d : 16;
        while (cap < s->n_d + k) cap *= 2;
        uint8_t(*d)[MOE_TENANT_DIGEST] = malloc((size_t)cap * sizeof *d);
        int *o = realloc(s->owner, (size_t)cap * sizeof *o);
        if (o) s->owner = o;
        if (!d || !o) {
            free(d);
            return MOE_ENOMEM;
        }
        if (s->n_d) memcpy(d, s->d, (size_t)s->n_d * sizeof *d);
        if (s->d) OPENSSL_cleanse(s->d, (size_t)s->cap_d * sizeof *s->d);
        free(s->d);
        s->d = d;
        s->cap_d = cap;
    }
    if ((size_t)(s->n_d + k) * 2 > s->kmask + 1) {
        size_t slots = (s->kmask + 1) * 2;
        while ((size_t)(s->n_d + k) * 2 > slots) slots *= 2;
        int *kt = table_new(slots);
        if (!kt) return MOE_ENOMEM;
        free(s->ktab);
        s->ktab = kt;
        s->kmask = slots - 1;
        for (int i = 0; i < s->n_d; i++) {
            int found;
            s->ktab[key_slot(s, s->d[i], &found)] = i;
        }
    }
    if ((size_t)(s->n + 1) * 2 > s->nmask + 1) {
        const size_t slots = (s->nmask + 1) * 2;
        int *nt = table_new(slots);
        if (!nt) return MOE_ENOMEM;
        free(s->ntab);
        s->ntab = nt;
        s->nmask = slots - 1;
        for (int i = 0; i < s->n; i++) {
            int found;
            s->ntab[name_slot(s, s->t[i].name, &found)] = i;
        }
    }
    return 0;
}

int moe_tenant_set_add(moe_tenant_set *s, const moe_tenant *t, const uint8_t (*digests)[32],
                       int n_keys, moe_err *err) {
    int rc = moe_tenant_name_check(t->name, err);
    if (rc < 0) return rc;
    if ((rc = moe_tenant_limits_check(&t->lim, err)) < 0) {
        char who[MOE_TENANT_NAME_MAX + 16];
        snprintf(who, sizeof who, "tenant %s", t->name);
        return wrap(err, rc, who);
    }
    if (n_keys < 0 || n_keys > MOE_TENANT_KEYS_MAX)
        return moe_err_set(err, MOE_EINVAL, "tenant %s: %d keys (at most %d)", t->name, n_keys,
                           MOE_TENANT_KEYS_MAX);
    if (s->n >= MOE_TENANTS_MAX)
        return moe_err_set(err, MOE_ENOSPC, "more than %d tenants", MOE_TENANTS_MAX);
    int found;
    name_slot(s, t->name, &found);
    if (found >= 0) return moe_err_set(err, MOE_EINVAL, "tenant %s is listed twice", t->name);
    for (int k = 0; k < n_keys; k++) {
        int own = 0;
        key_slot(s, digests[k], &found);
        for (int j = 0; j < k && !own; j++)
            own = !memcmp(digests[j], digests[k], MOE_TENANT_DIGEST);
        if (found >= 0 || own) {
            char hex[65];
            moe_tenant_digest_hex(digests[k], hex);
            return moe_err_set(err, MOE_EINVAL, "tenant %s: key %.12s... is also %s's", t->name,
                               hex, own ? "its own" : s->t[s->owner[found]].name);
        }
    }
    if (grow(s, n_keys) < 0) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    const int i = s->n++;
    s->t[i] = *t;
    s->t[i].n_keys = n_keys;
    s->first[i] = s->n_d;
    s->ntab[name_slot(s, t->name, &found)] = i;
    for (int k = 0; k < n_keys; k++) {
        const int di = s->n_d++;
        memcpy(s->d[di], digests[k], MOE_TENANT_DIGEST);
        s->owner[di] = i;
        s->ktab[key_slot(s, digests[k], &found)] = di;
    }
    return 0;
}

int moe_tenant_set_count(const moe_tenant_set *s) {
    return s->n;
}

const moe_tenant *moe_tenant_set_at(const moe_tenant_set *s, int i) {
    return i >= 0 && i < s->n ? &s->t[i] : NULL;
}

const uint8_t *moe_tenant_set_key(const moe_tenant_set *s, int i, int k) {
    return i >= 0 && i < s->n && k >= 0 && k < s->t[i].n_keys ? s->d[s->first[i] + k] : NULL;
}

int moe_tenant_set_n_keys(const moe_tenant_set *s) {
    return s->n_d;
}

const moe_tenant *moe_tenant_set_find_key(const moe_tenant_set *s,
                                          const uint8_t digest[MOE_TENANT_DIGEST]) {
    int found;
    key_slot(s, digest, &found);
    return found >= 0 ? &s->t[s->owner[found]] : NULL;
}

const moe_tenant *moe_tenant_set_find_name(const moe_tenant_set *s, const char *name) {
    int found;
    name_slot(s, name, &found);
    return found >= 0 ? &s->t[found] : NULL;
}

uint64_t moe_tenant_set_version(const moe_tenant_set *s) {
    return s->version;
}

void moe_tenant_set_set_version(moe_tenant_set *s, uint64_t v) {
    s->version = v;
}

/* ==== The tenants file =========================================================== */

/* A count field: absent or null leaves *v; else an integer 0..2^53. */
static int get_count(const cJSON *f, int64_t *v) {
    if (!cJSON_IsNumber(f)) return -1;
    const double d = f->valuedouble;
    if (!(d >= 0) || d > (double)MOE_TENANT_LIMIT_MAX || d != floor(d)) return -1;
    *v = (int64_t)d;
    return 0;
}

/* Parses one entry of "tenants" into t and its digests (kd, *nk). */
static int parse_entry(const cJSON *e, moe_tenant *t, uint8_t (*kd)[32], int *nk, moe_err *err) {
    static const char *const known[] = {"name",        "key_sha256",  "keys",   "rpm",
                                        "tpm",         "concurrency", "weight", "priority",
                                        "max_context", "daily_tokens"};
    unsigned seen = 0;
    *t = (moe_tenant){.lim = moe_tenant_limits_default()};
    *nk = 0;
    if (!cJSON_IsObject(e)) return moe_err_set(err, MOE_EFORMAT, "is not an object");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
    if (!cJSON_IsString(name))
        return moe_err_set(err, MOE_EFORMAT, "\"name\" is missing or not a string");
    if (moe_tenant_name_check(name->valuestring, err) < 0)
        return wrap(err, MOE_EFORMAT, "\"name\"");
    snprintf(t->name, sizeof t->name, "%s", name->valuestring);
    for (const cJSON *f = e->child; f; f = f->next) {
        size_t k = 0;
        while (k < sizeof known / sizeof *known && strcmp(f->string, known[k])) k++;
        if (k == sizeof known / sizeof *known)
            return moe_err_set(err, MOE_EFORMAT,
                               "unknown field \"%.60s\" (known: name, key_sha256, keys, rpm, tpm, "
                               "concurrency, max_context, daily_tokens, weight, priority)",
                               f->string);
        if (seen & 1u << k)
            return moe_err_set(err, MOE_EFORMAT, "\"%s\" is given twice", f->string);
        seen |= 1u << k;
        if (cJSON_IsNull(f) || k == 0) continue;
        if (k == 1 || k == 2) { /* key_sha256, keys */
            if (!cJSON_IsArray(f))
                return moe_err_set(err, MOE_EFORMAT, "\"%s\" must be an array of strings",
                                   f->string);
            int i = 0;
            for (const cJSON *x = f->child; x; x = x->next, i++) {
                if (*nk >= MOE_TENANT_KEYS_MAX)
                    return moe_err_set(err, MOE_EFORMAT, "more than %d keys", MOE_TENANT_KEYS_MAX);
                if (!cJSON_IsString(x))
                    return moe_err_set(err, MOE_EFORMAT, "\"%s\"[%d] is not a string", f->string,
                                       i);
                const size_t n = strlen(x->valuestring);
                if (k == 1 && moe_tenant_digest_parse(x->valuestring, kd[*nk]) < 0)
                    return moe_err_set(err, MOE_EFORMAT,
                                       "\"key_sha256\"[%d] must be 64 hex digits (a key's "
                                       "SHA-256: moectl tenant hash)",
                                       i);
                if (k == 2 && (n < 16 || n > MOE_TENANT_KEY_MAX))
                    return moe_err_set(err, MOE_EFORMAT, "\"keys\"[%d] must have 16 to %d bytes", i,
                                       MOE_TENANT_KEY_MAX);
                if (k == 2) moe_tenant_key_digest(x->valuestring, n, kd[*nk]);
                (*nk)++;
            }
            continue;
        }
        if (k == 6) { /* weight */
            if (!cJSON_IsNumber(f) || !(f->valuedouble > 0) ||
                f->valuedouble > MOE_TENANT_WEIGHT_MAX)
                return moe_err_set(err, MOE_EFORMAT,
                                   "\"weight\" must be a number above 0 and at most %g",
                                   MOE_TENANT_WEIGHT_MAX);
            t->lim.weight = f->valuedouble;
            continue;
        }
        if (k == 7) { /* priority */
            if (!cJSON_IsString(f) || moe_tenant_priority_parse(f->valuestring, &t->lim.priority))
                return moe_err_set(err, MOE_EFORMAT,
                                   "\"priority\" must be \"high\", \"normal\" or \"low\"");
            continue;
        }
        int64_t *dst = k == 3   ? &t->lim.rpm
                       : k == 4 ? &t->lim.tpm
                       : k == 5 ? &t->lim.concurrency
                       : k == 8 ? &t->lim.max_context
                                : &t->lim.daily_tokens;
        if (get_count(f, dst) < 0)
            return moe_err_set(err, MOE_EFORMAT,
                               "\"%s\" must be an integer from 0 (unlimited) to 2^53", f->string);
    }
    return 0;
}

int moe_tenant_set_parse(moe_tenant_set **out, const char *json, size_t len, moe_err *err) {
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        const size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return moe_err_set(err, MOE_EFORMAT, "not JSON (near byte %zu)", at);
    }
    moe_tenant_set *s = NULL;
    uint8_t(*kd)[32] = malloc(MOE_TENANT_KEYS_MAX * sizeof *kd);
    int rc = kd ? moe_tenant_set_create(&s) : MOE_ENOMEM;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "tenants");
    if (rc < 0) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto out;
    }
    if (!cJSON_IsObject(root) || !cJSON_IsArray(list)) {
        rc = moe_err_set(err, MOE_EFORMAT, "want an object {\"tenants\": [...]}");
        goto out;
    }
    for (const cJSON *f = root->child; f; f = f->next)
        if (strcmp(f->string, "tenants")) {
            rc = moe_err_set(err, MOE_EFORMAT, "unknown field \"%.60s\" (only \"tenants\")",
                             f->string);
            goto out;
        }
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
        moe_tenant t;
        int nk;
        if ((rc = parse_entry(e, &t, kd, &nk, err)) < 0 ||
            (rc = moe_tenant_set_add(s, &t, (const uint8_t(*)[32])kd, nk, err)) < 0) {
            char who[MOE_TENANT_NAME_MAX + 32];
            if (t.name[0])
                snprintf(who, sizeof who, "tenants[%d] (%s)", i, t.name);
            else
                snprintf(who, sizeof who, "tenants[%d]", i);
            wrap(err, rc, who);
            goto out;
        }
    }
    *out = s;
    s = NULL;
    rc = 0;
out:
    if (kd) OPENSSL_cleanse(kd, MOE_TENANT_KEYS_MAX * sizeof *kd);
    free(kd);
    moe_tenant_set_free(s);
    cJSON_Delete(root);
    return rc;
}

int moe_tenant_set_load_file(moe_tenant_set **out, const char *path, moe_err *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    char eb[128];
    if (!f) return moe_err_set(err, MOE_EIO, "%s: %s", path, moe_errno_str(errno, eb, sizeof eb));
    struct stat st;
    char *buf = NULL;
    int rc = 0;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = moe_err_set(err, MOE_EIO, "%s: not a regular file", path);
    } else if ((uint64_t)st.st_size > MOE_TENANTS_FILE_MAX) {
        rc = moe_err_set(err, MOE_EFORMAT, "%s: larger than %u bytes", path, MOE_TENANTS_FILE_MAX);
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
    } else if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        rc = moe_err_set(err, MOE_EIO, "%s: read error", path);
    }
    fclose(f);
    if (rc == 0) {
        rc = moe_tenant_set_parse(out, buf, (size_t)st.st_size, err);
        if (rc < 0) wrap(err, rc, path);
        OPENSSL_cleanse(buf, (size_t)st.st_size); /* may hold keys in clear ("keys") */
    }
    free(buf);
    return rc;
}
