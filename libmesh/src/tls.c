/* tls.c - mutual TLS options, checks and gRPC credentials (see mesh/tls.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <grpc/grpc_security.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mesh/tls.h"
#include "svc/log.h"

moe_tls_opts moe_tls_opts_default(void) {
    return (moe_tls_opts){.refresh_s = 10};
}

void moe_tls_opts_flags(moe_tls_opts *o, moe_flag t[MOE_TLS_N_FLAGS + 1]) {
    const moe_flag rows[MOE_TLS_N_FLAGS + 1] = {
        {"--tls-cert", "MOE_TLS_CERT", MOE_FLAG_STRING, &o->cert, "FILE",
         .help = "this process's certificate (PEM) for mutual TLS between\n"
                 "gateways and expert-workers; with --tls-key and --tls-ca"},
        {"--tls-key", "MOE_TLS_KEY", MOE_FLAG_STRING, &o->key, "FILE",
         .help = "its private key (PEM)"},
        {"--tls-ca", "MOE_TLS_CA", MOE_FLAG_STRING, &o->ca, "FILE",
         .help = "the CA certificates that sign the peers (PEM); a worker's\n"
                 "certificate must name its worker id"},
        {"--tls-refresh-s", "MOE_TLS_REFRESH_S", MOE_FLAG_INT, &o->refresh_s, "S",
         .help = "read the three files again this often (renewed certificates\n"
                 "serve new connections without a restart)",
         .min = 1, .max = 86400},
        {"--insecure", "MOE_INSECURE", MOE_FLAG_BOOL, &o->insecure, NULL,
         .help = "allow plaintext gRPC beyond loopback addresses (logs a warning)"},
        {0}};
    memcpy(t, rows, sizeof rows);
}

int moe_tls_on(const moe_tls_opts *o) {
    return o && ((o->cert && *o->cert) || (o->key && *o->key) || (o->ca && *o->ca));
}

int moe_addr_is_loopback(const char *addr) {
    if (!addr) return 0;
    if (!strncmp(addr, "unix:", 5) || !strncmp(addr, "unix-abstract:", 14)) return 1;
    if (!strncmp(addr, "ipv4:", 5))
        addr += 5;
    else if (!strncmp(addr, "ipv6:", 5))
        addr += 5;
    else if (!strncmp(addr, "dns:", 4))
        addr += 4;
    char host[256];
    const char *end;
    if (*addr == '[') {
        end = strchr(addr, ']');
        if (!end) return 0;
        addr++;
    } else {
        end = strrchr(addr, ':');
        if (!end) end = addr + strlen(addr);
    }
    if ((size_t)(end - addr) >= sizeof host) return 0;
    memcpy(host, addr, (size_t)(end - addr));
    host[end - addr] = 0;
    if (!strcmp(host, "localhost")) return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

int moe_tls_plaintext_ok(const moe_tls_opts *o, const char *addr, const char *who, moe_err *err) {
    if (moe_addr_is_loopback(addr)) return 0;
    if (o && o->insecure) {
        static int warned;
        if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            moe_log(MOE_LOG_WARN, who,
                    "plaintext gRPC with %s (--insecure): anyone on the network can read and "
                    "change the activations; use --tls-cert/--tls-key/--tls-ca",
                    addr);
        return 0;
    }
    return moe_err_set(err, MOE_EINVAL,
                       "%s is not a loopback address: give --tls-cert, --tls-key and --tls-ca "
                       "(mutual TLS), or --insecure to allow plaintext",
                       addr);
}

/* The last OpenSSL error as text (or fallback). */
static const char *ssl_why(const char *fallback) {
    static __thread char buf[160];
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (!e) return fallback;
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

/* The certificate chain in path: *leaf and the rest (intermediates). */
static int read_chain(const char *path, X509 **leaf, STACK_OF(X509) * *rest, moe_err *err) {
    BIO *bio = BIO_new_file(path, "r");
    if (!bio) return moe_err_set(err, MOE_EINVAL, "--tls-cert %s: cannot read it", path);
    *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    *rest = sk_X509_new_null();
    for (X509 *x; *leaf && *rest && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL));)
        sk_X509_push(*rest, x);
    ERR_clear_error(); /* the end of the file reads as an error */
    BIO_free(bio);
    if (!*leaf)
        return moe_err_set(err, MOE_EINVAL, "--tls-cert %s: no PEM certificate in it", path);
    return 0;
}

/* The host part of name: the name itself, or for "host:port" / "[v6]:port"
 * the host (as gRPC's host-name check splits its target). */
static void host_of(char *host, size_t cap, const char *name) {
    const char *colon = strrchr(name, ':');
    if (name[0] == '[' && strchr(name, ']')) {
        const char *e = strchr(name, ']');
        snprintf(host, cap, "%.*s", (int)(e - name - 1), name + 1);
    } else if (colon && colon == strchr(name, ':')) {
        snprintf(host, cap, "%.*s", (int)(colon - name), name);
    } else {
        snprintf(host, cap, "%s", name);
    }
}

static int names(X509 *cert, const char *name) {
    char host[256];
    host_of(host, sizeof host, name);
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1)
        return X509_check_ip_asc(cert, host, 0) == 1;
    return X509_check_host(cert, host, strlen(host), 0, NULL) == 1;
}

int moe_tls_check(const moe_tls_opts *o, const char *name, moe_err *err) {
    if (!moe_tls_on(o)) return 0;
    if (!o->cert || !*o->cert || !o->key || !*o->key || !o->ca || !*o->ca)
        return moe_err_set(
            err, MOE_EINVAL, "--tls-cert, --tls-key and --tls-ca go together (got %s%s%s)",
            o->cert && *o->cert ? "--tls-cert " : "", o->key && *o->key ? "--tls-key " : "",
            o->ca && *o->ca ? "--tls-ca" : "");
    X509 *leaf = NULL;
    STACK_OF(X509) *rest = NULL;
    EVP_PKEY *pk = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;
    int rc = read_chain(o->cert, &leaf, &rest, err);
    if (rc < 0) goto done;
    BIO *bio = BIO_new_file(o->key, "r");
    if (bio) pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL), BIO_free(bio);
    if (!pk) {
        rc = moe_err_set(err, MOE_EINVAL, "--tls-key %s: %s", o->key,
                         bio ? "no PEM private key in it (or it is encrypted)" : "cannot read it");
        goto done;
    }
    if (X509_check_private_key(leaf, pk) != 1) {
        rc = moe_err_set(err, MOE_EINVAL, "--tls-key %s is not the key of --tls-cert %s", o->key,
                         o->cert);
        goto done;
    }
    store = X509_STORE_new();
    if (!store || X509_STORE_load_file(store, o->ca) != 1) {
        rc = moe_err_set(err, MOE_EINVAL, "--tls-ca %s: %s", o->ca,
                         ssl_why("no PEM certificate in it"));
        goto done;
    }
    ctx = X509_STORE_CTX_new();
    if (!ctx || X509_STORE_CTX_init(ctx, store, leaf, rest) != 1) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto done;
    }
    if (X509_verify_cert(ctx) != 1) {
        rc = moe_err_set(err, MOE_EINVAL, "--tls-cert %s does not verify against --tls-ca %s: %s",
                         o->cert, o->ca,
                         X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
        goto done;
    }
    if (name && *name && !names(leaf, name))
        rc = moe_err_set(err, MOE_EINVAL,
                         "--tls-cert %s does not name this worker's id '%s' (a DNS "
                         "subjectAltName): gateways would refuse it",
                         o->cert, name);
done:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    EVP_PKEY_free(pk);
    X509_free(leaf);
    if (rest) sk_X509_pop_free(rest, X509_free);
    ERR_clear_error();
    return rc;
}

static grpc_tls_credentials_options *options(const moe_tls_opts *o) {
    grpc_tls_certificate_provider *p = grpc_tls_certificate_provider_file_watcher_create(
        o->key, o->cert, o->ca, (unsigned)(o->refresh_s > 0 ? o->refresh_s : 10));
    grpc_tls_credentials_options *op = grpc_tls_credentials_options_create();
    grpc_tls_credentials_options_set_certificate_provider(op, p);
    grpc_tls_certificate_provider_release(p); /* the options hold a ref */
    grpc_tls_credentials_options_watch_root_certs(op);
    grpc_tls_credentials_options_watch_identity_key_cert_pairs(op);
    return op;
}

void *moe_tls_channel_creds(const moe_tls_opts *o) {
    grpc_tls_credentials_options *op = options(o);
    grpc_tls_credentials_options_set_verify_server_cert(op, 1);
    grpc_tls_certificate_verifier *v = grpc_tls_certificate_verifier_host_name_create();
    grpc_tls_credentials_options_set_certificate_verifier(op, v);
    grpc_tls_certificate_verifier_release(v);
    /* the name is checked at the handshake, against the per-channel target
     * name (the worker id); calls carry no host of their own */
    grpc_tls_credentials_options_set_check_call_host(op, 0);
    return grpc_tls_credentials_create(op);
}

void *moe_tls_server_creds(const moe_tls_opts *o) {
    grpc_tls_credentials_options *op = options(o);
    grpc_tls_credentials_options_set_cert_request_type(
        op, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    return grpc_tls_server_credentials_create(op);
}
