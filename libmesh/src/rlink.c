/* rlink.c - a Redis link that outlives Redis (see rlink.h). */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mesh/rlink.h"
#include "moe/log.h"
#include "svc/clock.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define MAX_CHANNELS 4

struct moe_rlink {
    moe_redis_url u;
    char who[64];
    redisContext *c;
    int connect_ms, cmd_ms;
    int64_t next_try_ms; /* no connection attempt before this */
    int backoff_ms;
    int was_up; /* for "lost"/"connected" log lines once per change */
    int logged_down;
    size_t n_appended; /* pipeline */
    int pipe_broken;
    char *channels[MAX_CHANNELS];
    int n_channels;
    moe_rlink_stats st;
};

static int copy_part(char *dst, size_t cap, const char *s, size_t n) {
    if (n >= cap) return -1;
    memcpy(dst, s, n);
    dst[n] = 0;
    return 0;
}

/* url for error messages, the credentials replaced by "***". */
void moe_redis_url_redact(char *buf, size_t cap, const char *url) {
    const char *at = strrchr(url, '@'), *s = strstr(url, "://");
    if (!at) {
        snprintf(buf, cap, "%.200s", url);
        return;
    }
    const int keep = s && s < at && s - url < 32 ? (int)(s + 3 - url) : 0;
    snprintf(buf, cap, "%.*s***%.200s", keep, url, at);
}

/* A host name or IPv4 address: letters, digits, '.', '-', '_'. */
static int host_ok(const char *h) {
    for (; *h; h++)
        if (!isalnum((unsigned char)*h) && *h != '.' && *h != '-' && *h != '_') return 0;
    return 1;
}

int moe_redis_url_parse(moe_redis_url *u, const char *url, moe_err *err) {
    memset(u, 0, sizeof *u);
    u->port = 6379;
    if (!url || !*url) return moe_err_set(err, MOE_EINVAL, "empty Redis URL");
    char shown[256];
    moe_redis_url_redact(shown, sizeof shown, url);
    const char *p = url;
    if (!strncmp(p, "redis://", 8))
        p += 8;
    else if (strstr(p, "://"))
        return moe_err_set(err, MOE_EINVAL, "Redis URL '%s': only redis:// is supported", shown);
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (copy_part(u->user, sizeof u->user, p, (size_t)(colon - p)) < 0 ||
                copy_part(u->password, sizeof u->password, colon + 1, (size_t)(at - colon - 1)) < 0)
                return moe_err_set(err, MOE_EINVAL, "Redis URL: credentials too long");
        } else if (copy_part(u->password, sizeof u->password, p, (size_t)(at - p)) < 0) {
            return moe_err_set(err, MOE_EINVAL, "Redis URL: password too long");
        }
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0) return moe_err_set(err, MOE_EINVAL, "Redis URL '%s': no host", shown);
    if (copy_part(u->host, sizeof u->host, p, hl) < 0)
        return moe_err_set(err, MOE_EINVAL, "Redis URL '%s': host too long", shown);
    if (!host_ok(u->host))
        return moe_err_set(err, MOE_EINVAL, "Redis URL '%s': bad host '%.100s'", shown, u->host);
    p += hl;
    if (*p == ':') {
        char *end = (char *)p + 1;
        errno = 0;
        long port = isdigit((unsigned char)p[1]) ? strtol(p + 1, &end, 10) : 0;
        if (errno || port < 1 || port > 65535 || (*end && *end != '/'))
            return moe_err_set(err, MOE_EINVAL, "Redis URL '%s': bad port", shown);
        u->port = (int)port;
        p = end;
    }
    if (*p == '/') {
        p++;
        if (*p) {
            char *end = (char *)p;
            errno = 0;
            long db = isdigit((unsigned char)*p) ? strtol(p, &end, 10) : -1;
            if (db < 0 || errno || *end || db > 1000000)
                return moe_err_set(err, MOE_EINVAL, "Redis URL '%s': bad database number", shown);
            u->db = (int)db;
        }
    } else if (*p) {
        return moe_err_set(err, MOE_EINVAL, "Redis URL '%s': unexpected '%s'", shown, p);
    }
    return 0;
}

/* The password from moe_rlink_password_file, set once at start. */
static char file_password[256];
static int have_file_password;

int moe_rlink_password_file(const char *path, moe_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return moe_err_set(err, MOE_EIO, "--redis-password-file %s: %s", path, strerror(errno));
    char buf[sizeof file_password + 2];
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    const int bad = ferror(f);
    fclose(f);
    if (bad) return moe_err_set(err, MOE_EIO, "--redis-password-file %s: read error", path);
    buf[n] = 0;
    size_t len = strcspn(buf, "\r\n");
    if (len == 0) return moe_err_set(err, MOE_EINVAL, "--redis-password-file %s: empty", path);
    if (len >= sizeof file_password)
        return moe_err_set(err, MOE_EINVAL, "--redis-password-file %s: longer than %zu bytes", path,
                           sizeof file_password - 1);
    memcpy(file_password, buf, len);
    file_password[len] = 0;
    have_file_password = 1;
    memset(buf, 0, sizeof buf);
    return 0;
}

int moe_rlink_create(moe_rlink **out, const char *url, const char *who, moe_err *err) {
    *out = NULL;
    moe_redis_url u;
    int rc = moe_redis_url_parse(&u, url, err);
    if (rc < 0) return rc;
    if (have_file_password) {
        /* with the password in a file, "redis://NAME@host" names the user */
        const char *s = strncmp(url, "redis://", 8) ? url : url + 8, *at = strrchr(s, '@');
        const char *colon = at ? memchr(s, ':', (size_t)(at - s)) : NULL;
        if (at && !colon && *u.password && !*u.user) {
            memcpy(u.user, u.password, sizeof u.user - 1);
            u.user[sizeof u.user - 1] = 0;
            memset(u.password, 0, sizeof u.password);
        }
        if (*u.password)
            return moe_err_set(err, MOE_EINVAL,
                               "the Redis password is both in the URL and in "
                               "--redis-password-file: give it in the file only");
        memcpy(u.password, file_password, sizeof u.password);
    } else if (*u.password) {
        static int warned;
        if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            moe_log(MOE_LOG_WARN, who ? who : "moemesh",
                    "the Redis URL carries a password: given as --redis it is visible to every "
                    "user in the process list; put it in a file for --redis-password-file "
                    "(MOE_REDIS_PASSWORD_FILE)");
    }
    moe_rlink *l = calloc(1, sizeof *l);
    if (!l) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    l->u = u;
    snprintf(l->who, sizeof l->who, "%s", who ? who : "moemesh");
    l->connect_ms = 500;
    l->cmd_ms = 1000;
    l->backoff_ms = BACKOFF_MIN_MS;
    *out = l;
    return 0;
}

void moe_rlink_free(moe_rlink *l) {
    if (!l) return;
    if (l->c) redisFree(l->c);
    for (int i = 0; i < l->n_channels; i++) free(l->channels[i]);
    free(l);
}

void moe_rlink_set_timeouts(moe_rlink *l, int connect_ms, int cmd_ms) {
    if (connect_ms > 0) l->connect_ms = connect_ms;
    if (cmd_ms > 0) l->cmd_ms = cmd_ms;
    if (l->c) {
        struct timeval tv = {l->cmd_ms / 1000, (l->cmd_ms % 1000) * 1000};
        redisSetTimeout(l->c, tv);
    }
}

void moe_rlink_drop(moe_rlink *l, const char *why) {
    if (l->c) {
        redisFree(l->c);
        l->c = NULL;
    }
    l->st.failures++;
    l->st.connected = 0;
    if (l->was_up || !l->logged_down) {
        moe_log(MOE_LOG_WARN, l->who, "redis %s:%d unavailable (%s); retrying with backoff",
                l->u.host, l->u.port, why ? why : "error");
        l->logged_down = 1;
    }
    l->was_up = 0;
    l->next_try_ms = moe_mono_ms() + l->backoff_ms;
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

/* A command on a fresh connection (AUTH, SELECT, SUBSCRIBE); 0 if it is OK. */
static int setup_cmd(moe_rlink *l, int argc, const char **argv) {
    redisReply *r = redisCommandArgv(l->c, argc, argv, NULL);
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (r && !ok) moe_log(MOE_LOG_ERROR, l->who, "redis: %s: %s", argv[0], r->str);
    if (r) freeReplyObject(r);
    return ok ? 0 : -1;
}

int moe_rlink_up(moe_rlink *l) {
    if (l->c) return 1;
    if (moe_mono_ms() < l->next_try_ms) return 0;
    struct timeval ct = {l->connect_ms / 1000, (l->connect_ms % 1000) * 1000};
    l->c = redisConnectWithTimeout(l->u.host, l->u.port, ct);
    if (!l->c || l->c->err) {
        char why[160];
        snprintf(why, sizeof why, "%s", l->c ? l->c->errstr : "out of memory");
        moe_rlink_drop(l, why);
        return 0;
    }
    struct timeval tv = {l->cmd_ms / 1000, (l->cmd_ms % 1000) * 1000};
    redisSetTimeout(l->c, tv);
    redisEnableKeepAlive(l->c);
    char db[16];
    snprintf(db, sizeof db, "%d", l->u.db);
    if ((*l->u.password &&
         (*l->u.user ? setup_cmd(l, 3, (const char *[]){"AUTH", l->u.user, l->u.password})
                     : setup_cmd(l, 2, (const char *[]){"AUTH", l->u.password}))) ||
        (l->u.db && setup_cmd(l, 2, (const char *[]){"SELECT", db}))) {
        moe_rlink_drop(l, "AUTH or SELECT failed");
        return 0;
    }
    for (int i = 0; i < l->n_channels; i++) {
        if (redisAppendCommand(l->c, "SUBSCRIBE %s", l->channels[i]) != REDIS_OK) {
            moe_rlink_drop(l, "SUBSCRIBE failed");
            return 0;
        }
    }
    if (!l->logged_down || !l->was_up) {
        moe_log(MOE_LOG_INFO, l->who, "redis %s:%d connected", l->u.host, l->u.port);
    }
    l->was_up = 1;
    l->logged_down = 0;
    l->backoff_ms = BACKOFF_MIN_MS;
    l->st.connects++;
    l->st.connected = 1;
    return 1;
}

static redisReply *check_reply(moe_rlink *l, redisReply *r) {
    if (!r) {
        char why[160];
        snprintf(why, sizeof why, "%s", l->c && l->c->err ? l->c->errstr : "no reply");
        moe_rlink_drop(l, why);
    }
    return r;
}

redisReply *moe_rlink_cmd(moe_rlink *l, const char *fmt, ...) {
    if (!moe_rlink_up(l)) return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(l->c, fmt, ap);
    va_end(ap);
    return check_reply(l, r);
}

redisReply *moe_rlink_cmdargv(moe_rlink *l, int argc, const char **argv, const size_t *argvlen) {
    if (!moe_rlink_up(l)) return NULL;
    return check_reply(l, redisCommandArgv(l->c, argc, argv, argvlen));
}

int moe_rlink_begin(moe_rlink *l) {
    l->n_appended = 0;
    l->pipe_broken = 0;
    return moe_rlink_up(l) ? 0 : MOE_EUNAVAIL;
}

void moe_rlink_append(moe_rlink *l, const char *fmt, ...) {
    if (!l->c || l->pipe_broken) return;
    va_list ap;
    va_start(ap, fmt);
    if (redisvAppendCommand(l->c, fmt, ap) == REDIS_OK)
        l->n_appended++;
    else
        l->pipe_broken = 1;
    va_end(ap);
}

void moe_rlink_appendargv(moe_rlink *l, int argc, const char **argv, const size_t *argvlen) {
    if (!l->c || l->pipe_broken) return;
    if (redisAppendCommandArgv(l->c, argc, argv, argvlen) == REDIS_OK)
        l->n_appended++;
    else
        l->pipe_broken = 1;
}

int moe_rlink_flush(moe_rlink *l, void (*cb)(void *ud, size_t i, redisReply *r), void *ud) {
    if (!l->c) return MOE_EUNAVAIL;
    if (l->pipe_broken) {
        moe_rlink_drop(l, "pipeline append failed");
        return MOE_EUNAVAIL;
    }
    int failed = 0;
    for (size_t i = 0; i < l->n_appended; i++) {
        void *r = NULL;
        if (redisGetReply(l->c, &r) != REDIS_OK || !r) {
            check_reply(l, NULL);
            return MOE_EUNAVAIL;
        }
        if (cb) {
            cb(ud, i, r);
        } else if (((redisReply *)r)->type == REDIS_REPLY_ERROR) {
            moe_log(MOE_LOG_ERROR, l->who, "redis: command %zu of a pipeline failed: %s", i + 1,
                    ((redisReply *)r)->str);
            failed = 1;
        }
        freeReplyObject(r);
    }
    l->n_appended = 0;
    return failed ? MOE_EIO : 0;
}

void moe_rlink_subscribe(moe_rlink *l, const char *channel) {
    if (l->n_channels >= MAX_CHANNELS) return;
    char *c = strdup(channel);
    if (!c) return;
    l->channels[l->n_channels++] = c;
    if (l->c && redisAppendCommand(l->c, "SUBSCRIBE %s", channel) != REDIS_OK)
        moe_rlink_drop(l, "SUBSCRIBE failed");
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int moe_rlink_sub_poll(moe_rlink *l, int timeout_ms,
                       void (*cb)(void *ud, const char *channel, const char *msg), void *ud) {
    if (!moe_rlink_up(l)) {
        sleep_ms(timeout_ms);
        return MOE_EUNAVAIL;
    }
    /* appended SUBSCRIBEs go out first */
    int done = 0;
    while (!done) {
        if (redisBufferWrite(l->c, &done) != REDIS_OK) {
            check_reply(l, NULL);
            return MOE_EUNAVAIL;
        }
    }
    int n = 0;
    /* replies already buffered come before waiting */
    for (int waited = 0;;) {
        void *r = NULL;
        if (redisGetReplyFromReader(l->c, &r) != REDIS_OK) {
            check_reply(l, NULL);
            return MOE_EUNAVAIL;
        }
        if (r) {
            redisReply *rr = r;
            if (rr->type == REDIS_REPLY_ARRAY && rr->elements == 3 &&
                rr->element[0]->type == REDIS_REPLY_STRING &&
                !strcmp(rr->element[0]->str, "message") &&
                rr->element[1]->type == REDIS_REPLY_STRING &&
                rr->element[2]->type == REDIS_REPLY_STRING) {
                cb(ud, rr->element[1]->str, rr->element[2]->str);
                n++;
            }
            freeReplyObject(r);
            continue;
        }
        if (waited || n) break;
        struct pollfd pfd = {.fd = l->c->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        waited = 1;
        if (pr <= 0) break;
        if (redisBufferRead(l->c) != REDIS_OK) {
            check_reply(l, NULL);
            return MOE_EUNAVAIL;
        }
    }
    return n;
}

moe_rlink_stats moe_rlink_get_stats(const moe_rlink *l) {
    return l->st;
}
