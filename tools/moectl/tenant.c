/* tenant.c - moectl tenant: the tenants of a deployment and their API keys,
 * in its Redis (mesh/tenant.h; docs/redis-schema.md, "Tenants"). A key is
 * printed once, when it is made; Redis keeps only its SHA-256. Every change
 * bumps P:tenants:version, and the gateways follow within a second. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "mesh/rlink.h"
#include "mesh/schema.h"
#include "mesh/tenant.h"
#include "moe/log.h"
#include "moectl.h"

static const char about[] =
    "Manages the tenants of a deployment and their API keys, in its Redis (as the\n"
    "P-admin user of 'moectl redis-acl'). Gateways started with --tenants redis\n"
    "(or --tenants-redis URL) follow every change within a second.\n"
    "\n"
    "  add NAME [limits]        a tenant and its first key: prints {\"tenant\", \"key\"},\n"
    "                           the only time the key is shown\n"
    "  add NAME --new-key       one more key for NAME (to rotate: add, move the\n"
    "                           clients, revoke the old one)\n"
    "  list                     tenants, limits, how many keys and their SHA-256\n"
    "                           prefixes (never a key)\n"
    "  revoke NAME              deletes the tenant and its keys\n"
    "  revoke NAME --key-prefix HEX   deletes one key (HEX: its SHA-256's first\n"
    "                           digits, as list shows them)\n"
    "  set-limits NAME [limits] changes the limits given\n"
    "  hash                     the SHA-256 of a key read from stdin, for a\n"
    "                           gateway's --tenants FILE (never put a key in argv)\n"
    "\n"
    "Limits: --rpm, --tpm, --concurrency, --max-context, --daily-tokens (0:\n"
    "unlimited), --weight (fair share, default 1), --priority high|normal|low.\n"
    "'moectl tenant SUBCOMMAND --help' lists each one's flags.";

/* ==== Shared flags ================================================================ */

typedef struct topts {
    const char *redis, *prefix, *password_file;
    int64_t rpm, tpm, concurrency, max_context, daily_tokens; /* -1: not given */
    double weight;                                            /* -1: not given */
    const char *priority;
    int new_key;
    int key_stdin; /* add: the key from stdin instead of a new one */
    const char *key_prefix;
    const char *name;
} topts;

#define LIM_MAX ((double)MOE_TENANT_LIMIT_MAX)

#define REDIS_FLAGS(o)                                                                             \
    {"--redis",                                                                                    \
     "MOE_REDIS",                                                                                  \
     MOE_FLAG_STRING,                                                                              \
     &(o)->redis,                                                                                  \
     "URL",                                                                                        \
     .help = "the deployment's Redis: redis://P-admin@host:port",                                  \
     .required = "Redis URL"},                                                                     \
        {"--prefix",                                                                               \
         "MOE_PREFIX",                                                                             \
         MOE_FLAG_STRING,                                                                          \
         &(o)->prefix,                                                                             \
         "P",                                                                                      \
         .help = "the deployment's key prefix",                                                    \
         .def = MOE_SCHEMA_PREFIX_DEFAULT},                                                        \
        MOE_RLINK_PASSWORD_FLAG(&(o)->password_file)

#define LIMIT_FLAGS(o)                                                                             \
    {"--rpm",    NULL,     MOE_FLAG_INT64,                                                         \
     &(o)->rpm,  "N",      .help = "requests per minute (0: unlimited)",                           \
     .def = "0", .min = 0, .max = LIM_MAX},                                                        \
        {"--tpm",    NULL,     MOE_FLAG_INT64,                                                     \
         &(o)->tpm,  "N",      .help = "tokens (prompt + completion) per minute",                  \
         .def = "0", .min = 0, .max = LIM_MAX},                                                    \
        {"--concurrency",   NULL,     MOE_FLAG_INT64,                                              \
         &(o)->concurrency, "N",      .help = "requests in flight",                                \
         .def = "0",        .min = 0, .max = LIM_MAX},                                             \
        {"--max-context",   NULL,     MOE_FLAG_INT64,                                              \
         &(o)->max_context, "N",      .help = "prompt + max_tokens of one request",                \
         .def = "0",        .min = 0, .max = LIM_MAX},                                             \
        {"--daily-tokens",   NULL,     MOE_FLAG_INT64,                                             \
         &(o)->daily_tokens, "N",      .help = "tokens per UTC day",                               \
         .def = "0",         .min = 0, .max = LIM_MAX},                                            \
        {"--weight", NULL, MOE_FLAG_DOUBLE, &(o)->weight, "W", .help = "fair-share weight (> 0)",  \
         .def = "1"},                                                                              \
    {                                                                                              \
        "--priority", NULL, MOE_FLAG_STRING, &(o)->priority, "C", .help = "high | normal | low",   \
                                                                  .def = "normal"                  \
    }

/* The limits given (mask) over defaults; 0, or 1 (reported). */
static int read_limits(const topts *o, moe_tenant_limits *lim, unsigned *mask) {
    *lim = moe_tenant_limits_default();
    *mask = 0;
    const struct {
        int64_t v, *dst;
        unsigned bit;
    } n[] = {{o->rpm, &lim->rpm, MOE_TENANT_LIM_RPM},
             {o->tpm, &lim->tpm, MOE_TENANT_LIM_TPM},
             {o->concurrency, &lim->concurrency, MOE_TENANT_LIM_CONCURRENCY},
             {o->max_context, &lim->max_context, MOE_TENANT_LIM_MAX_CONTEXT},
             {o->daily_tokens, &lim->daily_tokens, MOE_TENANT_LIM_DAILY_TOKENS}};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++)
        if (n[i].v != -1) *n[i].dst = n[i].v, *mask |= n[i].bit;
    if (o->weight != -1) lim->weight = o->weight, *mask |= MOE_TENANT_LIM_WEIGHT;
    if (o->priority) {
        if (moe_tenant_priority_parse(o->priority, &lim->priority) < 0)
            return die("--priority %s: give high, normal or low", o->priority);
        *mask |= MOE_TENANT_LIM_PRIORITY;
    }
    moe_err err;
    if (moe_tenant_limits_check(lim, &err) < 0) return die("%s", err.msg);
    return 0;
}

/* Parses a subcommand's argv (NAME first when want_name); -1 goes on. */
static int parse_sub(const char *prog, const char *args, const char *sub_about,
                     const moe_flag *flags, int want_name, topts *o, int argc, char **argv) {
    const moe_flagset fs = {.prog = prog, .args = args, .about = sub_about, .flags = flags};
    return parse_args(&fs, want_name ? &o->name : NULL, argc, argv);
}

/* The link to the deployment's Redis; NULL (reported). */
static moe_rlink *link_open(const topts *o) {
    moe_err err;
    moe_rlink *l;
    if (o->password_file && moe_rlink_password_file(o->password_file, &err) < 0)
        return die("%s", err.msg), NULL;
    if (moe_schema_check_names(o->prefix, NULL, &err) < 0)
        return die("--prefix: %s", err.msg), NULL;
    if (moe_rlink_create(&l, o->redis, "moectl", &err) < 0) return die("%s", err.msg), NULL;
    if (!moe_rlink_up(l)) {
        char shown[MOE_REDIS_URL_SHOWN];
        moe_redis_url_redact(shown, sizeof shown, o->redis);
        moe_rlink_free(l);
        return die("Redis %s does not answer", shown), NULL;
    }
    return l;
}

/* Only warnings and errors reach stderr (not the link's "connected"). */
static void quiet_log(void *ud, moe_log_level level, const char *who, const char *msg,
                      const moe_log_kv *kv, size_t n_kv) {
    (void)ud, (void)kv, (void)n_kv;
    if (level >= MOE_LOG_WARN) fprintf(stderr, "moectl: %s: %s\n", who, msg);
}

static void json_kv_str(const char *k, const char *v, int comma) {
    printf("%s\"%s\": ", comma ? ", " : "", k);
    json_str(stdout, v, strlen(v));
}

static void print_limits(const moe_tenant_limits *lim, unsigned mask) {
    const struct {
        unsigned bit;
        const char *k;
        int64_t v;
    } n[] = {{MOE_TENANT_LIM_RPM, "rpm", lim->rpm},
             {MOE_TENANT_LIM_TPM, "tpm", lim->tpm},
             {MOE_TENANT_LIM_CONCURRENCY, "concurrency", lim->concurrency},
             {MOE_TENANT_LIM_MAX_CONTEXT, "max_context", lim->max_context},
             {MOE_TENANT_LIM_DAILY_TOKENS, "daily_tokens", lim->daily_tokens}};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++)
        if (mask & n[i].bit) printf(", \"%s\": %lld", n[i].k, (long long)n[i].v);
    if (mask & MOE_TENANT_LIM_WEIGHT) printf(", \"weight\": %.9g", lim->weight);
    if (mask & MOE_TENANT_LIM_PRIORITY)
        json_kv_str("priority", moe_tenant_priority_name(lim->priority), 1);
}

/* Reads an API key from stdin, its first line, into buf (MOE_TENANT_KEY_MAX + 2
 * bytes); 0 and its length in *n, else a message printed and 1. */
static int read_key_stdin(char *buf, size_t size, size_t *n) {
    if (!fgets(buf, (int)size, stdin)) return die("no key on stdin");
    *n = strcspn(buf, "\r\n");
    if (*n == size - 1) return die("a key has at most %d bytes", MOE_TENANT_KEY_MAX);
    buf[*n] = 0;
    if (*n == 0) return die("no key on stdin");
    return 0;
}

/* A key given to `tenant add --key-stdin` is a secret only its hash is kept
 * of: it must be long enough not to be guessed (moectl's own keys have 43
 * random characters). */
#define KEY_MIN 32
static int key_strong_enough(size_t n) {
    if (n >= KEY_MIN) return 0;
    return die("the key on stdin has %zu bytes: a key needs at least %d (a random one: "
               "`moectl tenant add` without --key-stdin makes one)",
               n, KEY_MIN);
}

/* ==== Subcommands ================================================================= */

static int sub_add(topts *o, int argc, char **argv) {
    const moe_flag flags[] = {REDIS_FLAGS(o),
                              LIMIT_FLAGS(o),
                              {"--new-key", NULL, MOE_FLAG_BOOL, &o->new_key, NULL,
                               .help = "add a key to an existing tenant (no limits then)"},
                              {"--key-stdin", NULL, MOE_FLAG_BOOL, &o->key_stdin, NULL,
                               .help = "the key is read from stdin (its first line), not made: "
                                       "a kept key\ninto a Redis that "
                                       "lost it; prints {\"tenant\", \"key_sha256\"}"},
                              {0}};
    int st = parse_sub("moectl tenant add",
                       "NAME --redis URL [--prefix P] [limits] [--new-key] [--key-stdin]",
                       "Creates tenant NAME with one API key and prints {\"tenant\": NAME, "
                       "\"key\": KEY}:\nthe only time the key is shown (Redis keeps its "
                       "SHA-256). An existing NAME\nis refused unless --new-key, which adds a "
                       "key to it.",
                       flags, 1, o, argc, argv);
    if (st >= 0) return st;
    moe_tenant t = {0};
    unsigned mask;
    moe_err err;
    if (moe_tenant_name_check(o->name, &err) < 0) return die("%s", err.msg);
    if (read_limits(o, &t.lim, &mask)) return 1;
    if (o->new_key && mask)
        return die("--new-key adds a key and sets no limits (moectl tenant set-limits does)");
    snprintf(t.name, sizeof t.name, "%s", o->name);
    char key[MOE_TENANT_KEY_MAX + 2];
    uint8_t d[MOE_TENANT_DIGEST];
    size_t n;
    if (o->key_stdin) {
        if (read_key_stdin(key, sizeof key, &n) || key_strong_enough(n)) return 1;
    } else {
        if (moe_tenant_key_new(key, &err) < 0) return die("%s", err.msg);
        n = strlen(key);
    }
    moe_tenant_key_digest(key, n, d);
    moe_rlink *l = link_open(o);
    if (!l) return OPENSSL_cleanse(key, sizeof key), 1;
    const int rc = o->new_key ? moe_tenant_redis_add_key(l, o->prefix, o->name, d, &err)
                              : moe_tenant_redis_create(l, o->prefix, &t, d, &err);
    moe_rlink_free(l);
    if (rc == 0 && o->key_stdin) {
        char hex[65];
        moe_tenant_digest_hex(d, hex);
        printf("{\"tenant\": ");
        json_str(stdout, o->name, strlen(o->name));
        printf(", \"key_sha256\": \"%s\"}\n", hex);
    } else if (rc == 0) {
        printf("{\"tenant\": ");
        json_str(stdout, o->name, strlen(o->name));
        printf(", \"key\": \"%s\"}\n", key);
        fprintf(stderr, "moectl: this is the only time the key is shown: store it now\n");
    }
    OPENSSL_cleanse(key, sizeof key);
    if (rc < 0) return die("%s", err.msg);
    return fflush(stdout) == 0 ? 0 : die("cannot write the output");
}

static const moe_tenant_set *sort_set;
static int by_name(const void *a, const void *b) {
    return strcmp(moe_tenant_set_at(sort_set, *(const int *)a)->name,
                  moe_tenant_set_at(sort_set, *(const int *)b)->name);
}

static int sub_list(topts *o, int argc, char **argv) {
    const moe_flag flags[] = {REDIS_FLAGS(o), {0}};
    int st = parse_sub("moectl tenant list", "--redis URL [--prefix P]",
                       "Prints the tenants, their limits, and how many keys each has with the\n"
                       "first 12 hex digits of each key's SHA-256 (for revoke --key-prefix);\n"
                       "never a key.",
                       flags, 0, o, argc, argv);
    if (st >= 0) return st;
    moe_rlink *l = link_open(o);
    if (!l) return 1;
    moe_tenant_set *s;
    moe_err err;
    int skipped = 0;
    const int rc = moe_tenants_redis_load(&s, l, o->prefix, &skipped, &err);
    moe_rlink_free(l);
    if (rc < 0) return die("%s", err.msg);
    const int n = moe_tenant_set_count(s);
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return moe_tenant_set_free(s), die("out of memory");
    for (int i = 0; i < n; i++) order[i] = i;
    sort_set = s;
    qsort(order, (size_t)n, sizeof *order, by_name);
    printf("{\"version\": %llu, \"tenants\": [", (unsigned long long)moe_tenant_set_version(s));
    for (int j = 0; j < n; j++) {
        const moe_tenant *t = moe_tenant_set_at(s, order[j]);
        printf("%s\n  {", j ? "," : "");
        json_kv_str("tenant", t->name, 0);
        print_limits(&t->lim, MOE_TENANT_LIM_ALL);
        printf(", \"keys\": %d, \"key_sha256_prefixes\": [", t->n_keys);
        for (int k = 0; k < t->n_keys; k++) {
            char hex[65];
            moe_tenant_digest_hex(moe_tenant_set_key(s, order[j], k), hex);
            printf("%s\"%.12s\"", k ? ", " : "", hex);
        }
        printf("]}");
    }
    printf("%s]}\n", n ? "\n" : "");
    free(order);
    moe_tenant_set_free(s);
    if (skipped) fprintf(stderr, "moectl: %d malformed tenants left out (see above)\n", skipped);
    return fflush(stdout) == 0 ? 0 : die("cannot write the output");
}

static int sub_revoke(topts *o, int argc, char **argv) {
    const moe_flag flags[] = {REDIS_FLAGS(o),
                              {"--key-prefix", NULL, MOE_FLAG_STRING, &o->key_prefix, "HEX",
                               .help = "revoke only the key whose SHA-256 starts so (8+ hex "
                                       "digits; moectl tenant list)"},
                              {0}};
    int st = parse_sub("moectl tenant revoke", "NAME --redis URL [--prefix P] [--key-prefix HEX]",
                       "Deletes tenant NAME and its keys, or with --key-prefix one key; every\n"
                       "gateway refuses them within a second.",
                       flags, 1, o, argc, argv);
    if (st >= 0) return st;
    moe_rlink *l = link_open(o);
    if (!l) return 1;
    moe_err err;
    char removed[65] = "";
    const int rc = o->key_prefix ? moe_tenant_redis_delete_key(l, o->prefix, o->name, o->key_prefix,
                                                               removed, &err)
                                 : moe_tenant_redis_delete(l, o->prefix, o->name, &err);
    moe_rlink_free(l);
    if (rc < 0) return die("%s", err.msg);
    printf("{");
    json_kv_str("tenant", o->name, 0);
    if (o->key_prefix)
        json_kv_str("revoked_key_sha256", removed, 1);
    else
        json_kv_str("revoked", "tenant and all its keys", 1);
    printf("}\n");
    return fflush(stdout) == 0 ? 0 : die("cannot write the output");
}

static int sub_set_limits(topts *o, int argc, char **argv) {
    const moe_flag flags[] = {REDIS_FLAGS(o), LIMIT_FLAGS(o), {0}};
    int st = parse_sub("moectl tenant set-limits", "NAME --redis URL [--prefix P] [limits]",
                       "Changes the limits given of tenant NAME (the others stay); every\n"
                       "gateway uses them within a second.",
                       flags, 1, o, argc, argv);
    if (st >= 0) return st;
    moe_tenant_limits lim;
    unsigned mask;
    if (read_limits(o, &lim, &mask)) return 1;
    if (!mask) return die("no limit given (--rpm, --tpm, --concurrency, ...)");
    moe_rlink *l = link_open(o);
    if (!l) return 1;
    moe_err err;
    const int rc = moe_tenant_redis_set_limits(l, o->prefix, o->name, &lim, mask, &err);
    moe_rlink_free(l);
    if (rc < 0) return die("%s", err.msg);
    printf("{");
    json_kv_str("tenant", o->name, 0);
    print_limits(&lim, mask);
    printf("}\n");
    return fflush(stdout) == 0 ? 0 : die("cannot write the output");
}

static int sub_hash(topts *o, int argc, char **argv) {
    const moe_flag flags[] = {{0}};
    int st = parse_sub("moectl tenant hash", "< KEYFILE",
                       "Reads an API key from stdin (its first line) and prints its SHA-256,\n"
                       "{\"key_sha256\": HEX}, for the \"key_sha256\" list of a gateway's\n"
                       "--tenants FILE. The key never goes on the command line (every user sees\n"
                       "argv in the process list).",
                       flags, 0, o, argc, argv);
    if (st >= 0) return st;
    char buf[MOE_TENANT_KEY_MAX + 2];
    size_t n;
    if (read_key_stdin(buf, sizeof buf, &n)) return 1;
    uint8_t d[MOE_TENANT_DIGEST];
    char hex[65];
    moe_tenant_key_digest(buf, n, d);
    OPENSSL_cleanse(buf, sizeof buf);
    moe_tenant_digest_hex(d, hex);
    printf("{\"key_sha256\": \"%s\"}\n", hex);
    return fflush(stdout) == 0 ? 0 : die("cannot write the output");
}

/* ==== The command ================================================================= */

int cmd_tenant(const moectl_cmd *cmd, int argc, char **argv) {
    static const struct {
        const char *name;
        int (*fn)(topts *o, int argc, char **argv);
    } subs[] = {{"add", sub_add},
                {"list", sub_list},
                {"revoke", sub_revoke},
                {"set-limits", sub_set_limits},
                {"hash", sub_hash}};
    const int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    if (argc < 2 || help) {
        FILE *f = help ? stdout : stderr;
        fprintf(f, "usage: %s %s\n\n%s\n", cmd->prog, cmd->args, about);
        return help ? 0 : 2;
    }
    topts o = {.prefix = MOE_SCHEMA_PREFIX_DEFAULT,
               .rpm = -1,
               .tpm = -1,
               .concurrency = -1,
               .max_context = -1,
               .daily_tokens = -1,
               .weight = -1};
    moe_log_set_callback(quiet_log, NULL);
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (!strcmp(argv[1], subs[i].name)) return subs[i].fn(&o, argc - 1, argv + 1);
    fprintf(stderr, "moectl: error: unknown subcommand 'tenant %s'\n\nusage: %s %s\n", argv[1],
            cmd->prog, cmd->args);
    return 2;
}
