/*
 * auth.h - API keys on the gateway: who is calling (docs/security.md, "API
 * keys and tenants"). http.c asks for every route but /healthz, /readyz and
 * /metrics when tenants are configured (--tenants), as soon as a request's
 * headers are in, before its body is read. The key comes from
 * "Authorization: Bearer KEY" or "api-key: KEY"; the store (mesh/tenant.h)
 * hashes it and probes its current set: no Redis command, no allocation.
 *
 * A refusal is the OpenAI error object OpenAI's clients know (401,
 * type invalid_request_error, code invalid_api_key: the npm client raises
 * AuthenticationError), showing at most a redacted prefix and suffix of the
 * key; it is counted (moemesh_gateway_auth_failures_total{reason}) and
 * logged at most once a second (reason, peer, how many since; never the
 * key).
 *
 *     gw_auth *a;
 *     gw_auth_create(&a, store, reg);
 *     moe_tenant t;
 *     gw_api_error e;
 *     if (gw_auth_check(a, authorization, api_key, peer, &t, &e) < 0) reply(&e);
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include <sys/socket.h>

#include "api.h"
#include "mesh/tenant.h"
#include "svc/metrics.h"

typedef struct gw_auth gw_auth;

/* An authenticator over store (borrowed until gw_auth_free); its counter
 * goes into reg (may be NULL). 0 or MOE_ENOMEM. */
int gw_auth_create(gw_auth **out, moe_tenants *store, moe_metrics *reg);
void gw_auth_free(gw_auth *a);

/* Checks a request's key. authorization and api_key are the values of
 * those headers (NULL when absent; Authorization wins when both are given);
 * peer is the client's address, for the log only (may be NULL). Returns 0
 * (*t: the caller), or -1 with *e: 401 (no key, a malformed Authorization,
 * an unknown key) or 503 (the store has no set yet). Any thread. */
int gw_auth_check(gw_auth *a, const char *authorization, const char *api_key,
                  const struct sockaddr *peer, moe_tenant *t, gw_api_error *e);

/* The key in an Authorization value ("Bearer KEY", the scheme in any case,
 * spaces around): *key and *len, or -1 (another scheme, no key). */
int gw_auth_bearer(const char *authorization, const char **key, size_t *len);

#endif
