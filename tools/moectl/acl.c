/* acl.c - moectl redis-acl: the Redis ACL users of a deployment, one per
 * role (router, worker, gateway, admin), with only the commands and keys
 * each needs (the rules: libmesh's moe_acl_rules, mesh/schema.h), and their
 * passwords in files (never on a command line). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mesh/schema.h"
#include "mesh/tenant.h"
#include "moectl.h"

static const char about[] =
    "Prints the Redis ACL users of a deployment (Redis >= 7.0), one per role:\n"
    "  P-router   router-svc\n"
    "  P-worker   the expert-workers (one user for all of them)\n"
    "  P-gateway  the gateways, and moectl runs with --redis\n"
    "  P-admin    operators: drain a worker (SADD P:drain ID), read the placement\n"
    "Each may send only the commands its code sends, on its deployment's keys only;\n"
    "a worker may read P:drain but never write it, nor the placement, the leader\n"
    "lock, the scale signal or the load. As ACL SETUSER commands (for redis-cli),\n"
    "or with --aclfile as the lines of an ACL file (which also turn the default\n"
    "user off). Not JSON: the lines go to Redis as they are.";

static const char footer[] =
    "With --password-dir each user's password is read from DIR/P-ROLE, or made (32\n"
    "random bytes in hex, mode 0600) when the file is missing; the lines carry only\n"
    "its SHA-256 (#...), never the password. Give the services the file, and the user\n"
    "in the URL: --redis redis://P-worker@HOST:6379 --redis-password-file DIR/P-worker.\n"
    "Without --password-dir the users have no password and cannot log in until one\n"
    "is added (ACL SETUSER NAME >PASSWORD).\n"
    "  moectl redis-acl --password-dir /etc/moemesh/redis | redis-cli  (as a user that\n"
    "  may run ACL SETUSER)\n";

/* The SHA-256 of n bytes at p, as 64 lowercase hex digits and a NUL (the
 * ACL's #hash of a password; the tenant store's digest, libcrypto). */
static void sha256_hex(const void *p, size_t n, char out[65]) {
    uint8_t d[MOE_TENANT_DIGEST];
    moe_tenant_key_digest(p, n, d);
    moe_tenant_digest_hex(d, out);
}

/* ==== Password files ============================================================= */

/* 32 random bytes as 64 hex digits (and a NUL) from /dev/urandom. 0 or -1 (reported). */
static int random_hex(char out[65]) {
    uint8_t b[32];
    size_t got = 0;
    const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    while (fd >= 0 && got < sizeof b) {
        const ssize_t k = read(fd, b + got, sizeof b - got);
        if (k <= 0 && !(k < 0 && errno == EINTR)) break;
        if (k > 0) got += (size_t)k;
    }
    if (fd >= 0) close(fd);
    if (got < sizeof b) return die("cannot read 32 bytes from /dev/urandom"), -1;
    for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
    memset(b, 0, sizeof b);
    return 0;
}

/* The password of user from dir/user (its first line), or a new one written
 * there (mode 0600). pw: 256 bytes. 0 or 1 (reported). */
static int user_password(const char *dir, const char *user, char pw[256]) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, user) >= sizeof path)
        return die("--password-dir: path too long");
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (random_hex(pw) < 0) return 1;
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        const size_t n = strlen(pw);
        int ok = fd >= 0 && write(fd, pw, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
        ok = fd >= 0 && fsync(fd) == 0 && ok;
        if (fd >= 0 && close(fd) != 0) ok = 0;
        if (!ok) return die("cannot write %s: %s", path, strerror(errno));
        fprintf(stderr, "moectl: wrote a new password to %s (mode 0600)\n", path);
        return 0;
    }
    if (fd < 0) return die("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "moectl: warning: %s can be read by others (mode %04o): chmod 600 it\n",
                path, (unsigned)(st.st_mode & 07777));
    char buf[300];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return die("cannot read %s: %s", path, strerror(errno));
    buf[n] = 0;
    const size_t len = strcspn(buf, "\r\n");
    if (len == 0 || len > 255) {
        memset(buf, 0, sizeof buf);
        return die("%s: the password must be its first line, 1 to 255 bytes", path);
    }
    memcpy(pw, buf, len);
    pw[len] = 0;
    memset(buf, 0, sizeof buf);
    return 0;
}

/* ==== The command ================================================================ */

int cmd_redis_acl(const moectl_cmd *cmd, int argc, char **argv) {
    const char *prefix = MOE_SCHEMA_PREFIX_DEFAULT, *dir = NULL;
    int aclfile = 0, allow_select = 0;
    const moe_flag flags[] = {
        {"--prefix", NULL, MOE_FLAG_STRING, &prefix, "P", .help = "the deployment's key prefix"},
        {"--password-dir", NULL, MOE_FLAG_STRING, &dir, "DIR",
         .help = "read each user's password from DIR/P-ROLE, or make it there", .def = "none"},
        {"--aclfile", NULL, MOE_FLAG_BOOL, &aclfile, NULL,
         .help = "print an ACL file (for redis-server --aclfile) instead of commands"},
        {"--select", NULL, MOE_FLAG_BOOL, &allow_select, NULL,
         .help = "allow SELECT (for Redis URLs with a database other than 0; ACLs\n"
                 "cannot tell databases apart: give deployments their own prefix)"},
        {0}};
    const moe_flagset fs = {
        .prog = cmd->prog, .args = cmd->args, .about = about, .footer = footer, .flags = flags};
    const int status = parse_args(&fs, NULL, argc, argv);
    if (status >= 0) return status;
    char rules[2048];
    if (moe_acl_rules(rules, sizeof rules, prefix, MOE_ACL_ROLE_ROUTER, allow_select) < 0)
        return die("--prefix '%s': a prefix for ACLs has 1 to %d bytes, none of them a space, a "
                   "control character or one of * ? [ ] \\ ( ) \" '",
                   prefix, MOE_SCHEMA_PREFIX_MAX);
    if (dir && *dir && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return die("--password-dir %s: %s", dir, strerror(errno));
    if (aclfile) printf("user default off\n");
    for (int role = 0; role < MOE_ACL_ROLE_COUNT; role++) {
        char user[MOE_SCHEMA_PREFIX_MAX + 16], pw[256], hash[65];
        snprintf(user, sizeof user, "%s-%s", prefix, moe_acl_role_name(role));
        if (moe_acl_rules(rules, sizeof rules, prefix, role, allow_select) < 0)
            return die("the ACL rules of %s do not fit", user);
        if (dir && *dir) {
            if (user_password(dir, user, pw)) return 1;
            sha256_hex(pw, strlen(pw), hash);
            memset(pw, 0, sizeof pw);
        }
        printf("%s %s reset on%s%s %s\n", aclfile ? "user" : "ACL SETUSER", user,
               dir && *dir ? " #" : "", dir && *dir ? hash : "", rules);
    }
    if (!dir || !*dir)
        fprintf(stderr, "moectl: no --password-dir: these users have no password yet\n");
    return fflush(stdout) == 0 ? 0 : die("cannot write the output");
}
