/*
 * rlink.h - a Redis link that outlives Redis: a synchronous hiredis context
 * with timeouts, connected lazily, dropped on any error and reconnected with
 * backoff (100 ms doubling to 2 s). Used by the services' control threads
 * (expert-worker registration, router-svc, the remote backend's placement
 * follower); never on a compute path. One link belongs to one thread.
 *
 *     moe_rlink *l;
 *     if (moe_rlink_create(&l, "redis://127.0.0.1:6379", "expert-worker", &err) < 0) ...
 *     redisReply *r = moe_rlink_cmd(l, "GET %s", key);   // NULL: Redis away (logged once)
 *     if (r) { ... freeReplyObject(r); }
 *
 *     // a pipeline: append, then one reply per appended command
 *     if (moe_rlink_begin(l) == 0) {
 *         moe_rlink_append(l, "HINCRBY %s %s %lld", key, field, n);
 *         ...
 *         if (moe_rlink_flush(l, NULL, NULL) == 0) ...    // every reply read, none an error
 *     }
 *
 *     // subscriber: a second link in subscribe mode
 *     moe_rlink_subscribe(sub, chan);                     // moe_key_events(), mesh/schema.h
 *     moe_rlink_sub_poll(sub, 100, on_message, ud);       // waits up to 100 ms
 *
 * URLs: redis://[[user:]password@]host[:port][/db], or host[:port]; the port
 * defaults to 6379, the database to 0; the host is a name or an IPv4 address.
 * The password is sent with AUTH on each connect; error messages show the
 * credentials as "***".
 */
#ifndef MOE_RLINK_H
#define MOE_RLINK_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "moe/error.h"

typedef struct moe_rlink moe_rlink;

typedef struct moe_redis_url {
    char host[256];
    int port;
    int db;
    char user[128], password[256]; /* "" when absent */
} moe_redis_url;

/* Parses a Redis URL (see above). Returns 0 or MOE_EINVAL naming the part. */
int moe_redis_url_parse(moe_redis_url *u, const char *url, moe_err *err);

/* Writes url into buf (cap bytes, NUL-terminated; MOE_REDIS_URL_SHOWN is
 * enough) with its credentials (user and password) replaced by "***": the
 * scheme and "@host:port/db" are kept. Use it wherever a Redis URL is logged,
 * printed or put in an error message: a password never appears there. */
#define MOE_REDIS_URL_SHOWN 256
void moe_redis_url_redact(char *buf, size_t cap, const char *url);

/* The password of every Redis link this process opens, read from a file
 * (its first line, without the line end; 1 to 255 bytes), so that it shows
 * neither in the process list nor in the environment. Call it once at
 * start, before the links are created; a URL that carries a password too is
 * then refused. A URL with a password and no file still works, with one
 * warning that says how to move it. Returns 0, MOE_EIO (unreadable) or
 * MOE_EINVAL (empty or too long). */
int moe_rlink_password_file(const char *path, moe_err *err);
/* Its flag row, for a flag table (svc/flags.h): dst is a const char *. */
#define MOE_RLINK_PASSWORD_FLAG(dst)                                                               \
    {                                                                                              \
        "--redis-password-file", "MOE_REDIS_PASSWORD_FILE", MOE_FLAG_STRING, (dst), "FILE",        \
            .help = "read the Redis password from this file (not the URL: argv\n"                  \
                    "is visible to every user in the process list); the user goes\n"               \
                    "in the URL: redis://USER@host:port"                                           \
    }

/* A link (not connected yet). who names the process in log lines. Returns 0,
 * MOE_EINVAL (bad URL) or MOE_ENOMEM. */
int moe_rlink_create(moe_rlink **out, const char *url, const char *who, moe_err *err);
void moe_rlink_free(moe_rlink *l);

/* Connects if not connected and the backoff allows; 1 if connected now. */
int moe_rlink_up(moe_rlink *l);
/* Drops the connection (after an error the caller saw); retried with backoff. */
void moe_rlink_drop(moe_rlink *l, const char *why);
/* Milliseconds each command may take (default 1000; connect: 500). */
void moe_rlink_set_timeouts(moe_rlink *l, int connect_ms, int cmd_ms);

/* One command; the reply (free with freeReplyObject), or NULL when Redis is
 * away or the connection broke (the link is dropped). An error reply
 * (REDIS_REPLY_ERROR) is returned as a reply, not NULL. */
redisReply *moe_rlink_cmd(moe_rlink *l, const char *fmt, ...);
redisReply *moe_rlink_cmdargv(moe_rlink *l, int argc, const char **argv, const size_t *argvlen);

/* A pipeline: begin (0, or MOE_EUNAVAIL when not connected), append
 * commands, flush reads every reply, handing each to cb (which must not keep
 * it) in order. flush returns 0, MOE_EUNAVAIL (the connection broke; the
 * link is dropped) or, with cb NULL only, MOE_EIO: every reply was read and
 * at least one was an error reply (LOADING, NOAUTH, WRONGTYPE, ...; each is
 * logged), so some commands may have taken effect and others not. With a cb,
 * error replies are the cb's to judge. */
int moe_rlink_begin(moe_rlink *l);
void moe_rlink_append(moe_rlink *l, const char *fmt, ...);
void moe_rlink_appendargv(moe_rlink *l, int argc, const char **argv, const size_t *argvlen);
int moe_rlink_flush(moe_rlink *l, void (*cb)(void *ud, size_t i, redisReply *r), void *ud);

/* Subscriber mode: the channel is (re)subscribed on every connect. */
void moe_rlink_subscribe(moe_rlink *l, const char *channel);
/* Waits up to timeout_ms for messages and calls cb(channel, message) for
 * each. Returns the number of messages, 0 on timeout, MOE_EUNAVAIL when not connected
 * (it then sleeps for the timeout, so a loop around it does not spin). */
int moe_rlink_sub_poll(moe_rlink *l, int timeout_ms,
                       void (*cb)(void *ud, const char *channel, const char *msg), void *ud);

/* Counters for metrics and logs. */
typedef struct moe_rlink_stats {
    uint64_t connects; /* successful connections */
    uint64_t failures; /* connection attempts and commands that failed */
    int connected;
} moe_rlink_stats;
moe_rlink_stats moe_rlink_get_stats(const moe_rlink *l);

#endif
