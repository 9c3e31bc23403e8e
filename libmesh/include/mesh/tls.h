/*
 * mesh/tls.h - mutual TLS between gateways and expert-workers (gRPC core's
 * TLS credentials), and the rule for when plaintext is allowed.
 *
 *     moe_tls_opts t = moe_tls_opts_default();
 *     moe_flag tls[MOE_TLS_N_FLAGS + 1];
 *     moe_tls_opts_flags(&t, tls);        // --tls-cert, --tls-key, --tls-ca, --insecure
 *     ... parse (a {.include = tls} row) ...
 *     if (moe_tls_check(&t, id, &err) < 0) -> err.msg  // files readable, key fits cert,
 *                                                       // the cert names id (a worker)
 *
 * Both sides present a certificate signed by the CA in --tls-ca and verify
 * the peer's against it. The client (a gateway, moectl) also checks that the
 * worker's certificate names the worker: the id the placement gives it (a
 * DNS subjectAltName equal to the id; for an id of the form host:port, the
 * host, as a DNS or IP subjectAltName), so a lease written into Redis cannot
 * send rows to a process that does not hold that worker's key. The files are
 * read again every refresh_s seconds: a renewed certificate (cert-manager)
 * serves new connections without a restart.
 *
 * Plaintext: allowed to and on loopback addresses (127.0.0.0/8, ::1,
 * localhost, unix:), elsewhere only with --insecure, which logs a warning.
 */
#ifndef MOE_TLS_H
#define MOE_TLS_H

#include "moe/error.h"
#include "svc/flags.h"

typedef struct moe_tls_opts {
    const char *cert; /* --tls-cert: this process's certificate chain (PEM) */
    const char *key;  /* --tls-key: its private key (PEM) */
    const char *ca;   /* --tls-ca: the CA bundle that signs peers (PEM) */
    int insecure;     /* --insecure: plaintext allowed beyond loopback */
    int refresh_s;    /* --tls-refresh-s: how often the files are read again */
} moe_tls_opts;

#define MOE_TLS_N_FLAGS 5

/* No files, not insecure, refresh every 10 s. */
moe_tls_opts moe_tls_opts_default(void);

/* Writes the flag rows of o (each with its MOE_* twin) and an end row. */
void moe_tls_opts_flags(moe_tls_opts *o, moe_flag t[MOE_TLS_N_FLAGS + 1]);

/* 1 when o gives certificates (TLS on), 0 when not. */
int moe_tls_on(const moe_tls_opts *o);

/* Checks o: all three files or none; each readable PEM; the key is the
 * certificate's; the certificate verifies against the CA and is within its
 * validity; with name (a worker's id; NULL: no check) the certificate names
 * it (see above). Returns 0 or MOE_EINVAL naming the flag and the problem. */
int moe_tls_check(const moe_tls_opts *o, const char *name, moe_err *err);

/* 1 when addr ("host:port", "[v6]:port", "unix:path") is on loopback. */
int moe_addr_is_loopback(const char *addr);

/* Whether plaintext may be used to or on addr under o: 0 (yes), or
 * MOE_EINVAL with err saying what to give instead. With --insecure and a
 * non-loopback address it logs a warning (as who) the first time. */
int moe_tls_plaintext_ok(const moe_tls_opts *o, const char *addr, const char *who, moe_err *err);

/* gRPC credentials for o (TLS on): the client's checks the server's
 * certificate against the CA and the name given per channel with
 * GRPC_SSL_TARGET_NAME_OVERRIDE_ARG; the server's requires and verifies a
 * client certificate. Returned as void * to keep gRPC's headers out of
 * this one: grpc_channel_credentials * and grpc_server_credentials *,
 * released by the caller (grpc_*_credentials_release). Call after grpc_init. */
void *moe_tls_channel_creds(const moe_tls_opts *o);
void *moe_tls_server_creds(const moe_tls_opts *o);

#endif
