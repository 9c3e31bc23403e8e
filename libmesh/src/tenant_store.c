/* tenant_store.c - the tenant store: the current tenant set behind a
 * read-write lock, and the thread that replaces it when its source changes
 * (see mesh/tenant.h, "The store").
 *
 * Lookups hash the presented key outside the lock, then probe the set under
 * a read lock (writer-preferring, so a stream of lookups cannot hold a new
 * set back); the thread builds a new set without the lock and takes the
 * write lock only to swap the pointer. Nothing a lookup does waits on Redis
 * or the file system: a key costs one SHA-256 and one probe whether it is
 * known or not, so no negative cache is needed (an unknown key is exactly
 * as cheap as a known one, and no Redis command is ever sent per key). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>

#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "mesh/tenant.h"
#include "moe/log.h"
#include "svc/clock.h"

/* What identifies a file's content without reading it. */
typedef struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} file_id;

struct moe_tenants {
    pthread_rwlock_t lock;
    moe_tenant_set *cur; /* under lock; NULL until the first load */

    /* the source (the thread's after open) */
    char *file;
    file_id fid;
    int file_bad;    /* the file's current content failed (logged once) */
    int down_logged; /* Redis away, logged once */
    moe_rlink *link;
    char prefix[MOE_SCHEMA_PREFIX_MAX + 1];
    char who[64];
    int poll_ms;

    pthread_t th;
    int running;
    pthread_mutex_t mu; /* stop, stats */
    pthread_cond_t cv;
    int stop;
    moe_tenants_stats st;
};

/* ==== The current set ============================================================= */

static void swap_set(moe_tenants *ts, moe_tenant_set *s) {
    pthread_rwlock_wrlock(&ts->lock);
    moe_tenant_set *old = ts->cur;
    ts->cur = s;
    pthread_rwlock_unlock(&ts->lock);
    moe_tenant_set_free(old);
    pthread_mutex_lock(&ts->mu);
    ts->st.loaded = 1;
    ts->st.n_tenants = moe_tenant_set_count(s);
    ts->st.n_keys = moe_tenant_set_n_keys(s);
    ts->st.version = moe_tenant_set_version(s);
    ts->st.reloads++;
    pthread_mutex_unlock(&ts->mu);
}

int moe_tenants_auth(moe_tenants *ts, const char *key, size_t len, moe_tenant *out) {
    uint8_t d[MOE_TENANT_DIGEST];
    const int hashed = len > 0 && len <= MOE_TENANT_KEY_MAX;
    if (hashed) moe_tenant_key_digest(key, len, d);
    int rc = MOE_ENOTFOUND;
    pthread_rwlock_rdlock(&ts->lock);
    if (!ts->cur) {
        rc = MOE_EUNAVAIL;
    } else if (hashed) {
        const moe_tenant *t = moe_tenant_set_find_key(ts->cur, d);
        if (t) {
            *out = *t;
            rc = 0;
        }
    }
    pthread_rwlock_unlock(&ts->lock);
    OPENSSL_cleanse(d, sizeof d);
    return rc;
}

int moe_tenants_with_set(moe_tenants *ts, int (*fn)(void *ud, const moe_tenant_set *s), void *ud) {
    pthread_rwlock_rdlock(&ts->lock);
    const int rc = ts->cur ? fn(ud, ts->cur) : MOE_EUNAVAIL;
    pthread_rwlock_unlock(&ts->lock);
    return rc;
}

void moe_tenants_get_stats(moe_tenants *ts, moe_tenants_stats *st) {
    pthread_mutex_lock(&ts->mu);
    *st = ts->st;
    pthread_mutex_unlock(&ts->mu);
}

/* ==== Sources ===================================================================== */

static void count_check(moe_tenants *ts, int up, int invalid) {
    pthread_mutex_lock(&ts->mu);
    ts->st.source_up = up;
    if (up)
        ts->st.synced_ms = moe_mono_ms();
    else
        ts->st.source_failures++;
    ts->st.invalid += (uint64_t)invalid;
    pthread_mutex_unlock(&ts->mu);
}

static int stat_file(const char *path, file_id *id) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    *id = (file_id){st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim};
    return 0;
}

static int same_file(const file_id *a, const file_id *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Re-reads the file when it changed (a Kubernetes Secret volume replaces it
 * by a rename, which changes the inode). A file that no longer parses, or
 * is gone, keeps the last set. */
static void check_file(moe_tenants *ts) {
    file_id id;
    if (stat_file(ts->file, &id) != 0) {
        if (!ts->file_bad)
            moe_log(MOE_LOG_ERROR, ts->who, "tenants file %s is gone; keeping the last %d tenants",
                    ts->file, ts->st.n_tenants);
        ts->file_bad = 1;
        ts->fid = (file_id){0};
        count_check(ts, 0, 0);
        return;
    }
    if (same_file(&id, &ts->fid)) {
        count_check(ts, 1, 0);
        return;
    }
    ts->fid = id;
    moe_tenant_set *s;
    moe_err err;
    if (moe_tenant_set_load_file(&s, ts->file, &err) < 0) {
        moe_log(MOE_LOG_ERROR, ts->who, "tenants file: %s; keeping the last %d tenants", err.msg,
                ts->st.n_tenants);
        ts->file_bad = 1;
        count_check(ts, 1, 1);
        return;
    }
    ts->file_bad = 0;
    swap_set(ts, s);
    count_check(ts, 1, 0);
    moe_log(MOE_LOG_INFO, ts->who, "tenants file %s read again: %d tenants, %d keys", ts->file,
            moe_tenant_set_count(s), moe_tenant_set_n_keys(s));
}

/* Loads from Redis when the version moved (or nothing is loaded yet). */
static void check_redis(moe_tenants *ts) {
    pthread_mutex_lock(&ts->mu);
    const int loaded = ts->st.loaded;
    const uint64_t have = ts->st.version;
    pthread_mutex_unlock(&ts->mu);
    uint64_t v;
    int rc = moe_tenants_redis_version(ts->link, ts->prefix, &v);
    if (rc == 0 && ts->down_logged) {
        moe_log(MOE_LOG_INFO, ts->who, "Redis answers again");
        ts->down_logged = 0;
    }
    if (rc == 0 && loaded && v == have) {
        count_check(ts, 1, 0);
        return;
    }
    moe_tenant_set *s = NULL;
    int skipped = 0;
    moe_err err = {0};
    if (rc == 0) rc = moe_tenants_redis_load(&s, ts->link, ts->prefix, &skipped, &err);
    if (rc < 0) {
        if (!ts->down_logged)
            moe_log(MOE_LOG_WARN, ts->who, "cannot read the tenants from Redis (%s); %s",
                    rc == MOE_EUNAVAIL ? "unavailable" : err.msg,
                    loaded ? "serving the last set loaded"
                           : "none loaded yet: API requests get 503 until then");
        ts->down_logged = 1;
        count_check(ts, 0, 0);
        return;
    }
    const int n = moe_tenant_set_count(s), nk = moe_tenant_set_n_keys(s);
    const uint64_t nv = moe_tenant_set_version(s);
    if (loaded && nv < have)
        moe_log(MOE_LOG_WARN, ts->who,
                "P:tenants:version went back from %llu to %llu (Redis restarted empty?): "
                "following Redis",
                (unsigned long long)have, (unsigned long long)nv);
    swap_set(ts, s);
    count_check(ts, 1, skipped);
    moe_log(MOE_LOG_INFO, ts->who, "version %llu from Redis: %d tenants, %d keys%s",
            (unsigned long long)nv, n, nk, skipped ? " (some skipped: see above)" : "");
}

static void *run(void *arg) {
    moe_tenants *ts = arg;
    pthread_mutex_lock(&ts->mu);
    while (!ts->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)(ts->poll_ms % 1000) * 1000000L;
        until.tv_sec += ts->poll_ms / 1000 + until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!ts->stop && pthread_cond_timedwait(&ts->cv, &ts->mu, &until) != ETIMEDOUT) {
        }
        if (ts->stop) break;
        pthread_mutex_unlock(&ts->mu);
        if (ts->file)
            check_file(ts);
        else
            check_redis(ts);
        pthread_mutex_lock(&ts->mu);
    }
    pthread_mutex_unlock(&ts->mu);
    return NULL;
}

/* ==== Open and close ============================================================= */

static moe_tenants *alloc_store(void) {
    moe_tenants *ts = calloc(1, sizeof *ts);
    if (!ts) return NULL;
    pthread_rwlockattr_t a;
    pthread_rwlockattr_init(&a);
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ts->lock, &a);
    pthread_rwlockattr_destroy(&a);
    pthread_mutex_init(&ts->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ts->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(ts->who, sizeof ts->who, "tenants");
    return ts;
}

int moe_tenants_open_set(moe_tenants **out, moe_tenant_set *set) {
    *out = alloc_store();
    if (!*out) {
        moe_tenant_set_free(set);
        return MOE_ENOMEM;
    }
    if (set) swap_set(*out, set);
    return 0;
}

int moe_tenants_open(moe_tenants **out, const moe_tenants_params *p, moe_err *err) {
    *out = NULL;
    if (!p->file == !p->redis)
        return moe_err_set(err, MOE_EINVAL, "tenants: give a file or a Redis URL (one of them)");
    const char *prefix = moe_schema_prefix(p->prefix);
    int rc = moe_schema_check_names(prefix, NULL, err);
    if (rc < 0) return rc;
    moe_tenants *ts = alloc_store();
    if (!ts) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    snprintf(ts->prefix, sizeof ts->prefix, "%s", prefix);
    if (p->who) snprintf(ts->who, sizeof ts->who, "%s", p->who);
    ts->poll_ms = p->poll_ms > 0 ? p->poll_ms : MOE_TENANTS_POLL_MS;
    if (p->file) {
        moe_tenant_set *s;
        if (!(ts->file = strdup(p->file))) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
            goto fail;
        }
        stat_file(ts->file, &ts->fid); /* a change after this is read again */
        if ((rc = moe_tenant_set_load_file(&s, ts->file, err)) < 0) goto fail;
        swap_set(ts, s);
        count_check(ts, 1, 0);
    } else {
        if ((rc = moe_rlink_create(&ts->link, p->redis, ts->who, err)) < 0) goto fail;
        check_redis(ts); /* Redis away: the thread goes on trying */
    }
    if (pthread_create(&ts->th, NULL, run, ts) != 0) {
        rc = moe_err_set(err, MOE_ENOMEM, "tenants: cannot start a thread");
        goto fail;
    }
    ts->running = 1;
    *out = ts;
    return 0;
fail:
    moe_tenants_close(ts);
    return rc;
}

void moe_tenants_close(moe_tenants *ts) {
    if (!ts) return;
    if (ts->running) {
        pthread_mutex_lock(&ts->mu);
        ts->stop = 1;
        pthread_cond_signal(&ts->cv);
        pthread_mutex_unlock(&ts->mu);
        pthread_join(ts->th, NULL);
    }
    moe_tenant_set_free(ts->cur);
    moe_rlink_free(ts->link);
    free(ts->file);
    pthread_cond_destroy(&ts->cv);
    pthread_mutex_destroy(&ts->mu);
    pthread_rwlock_destroy(&ts->lock);
    free(ts);
}
