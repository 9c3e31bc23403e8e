/* fuzz_pldoc.c - libFuzzer target: what the services read from Redis. Any
 * bytes as a placement document (schema.h), the first two giving the model's
 * layers and experts (0: unchecked), refused or parsed into a document whose
 * invariants hold; and the same bytes as a Redis URL (rlink.h), refused or
 * parsed into a usable host, port and database. Never a crash or a leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/schema.h"
#include "mesh/rlink.h"

#include "fuzz.h"

static void check_doc(const moe_pldoc *d, int n_layer, int n_expert) {
    CHECK(d->epoch <= 9007199254740991ull);
    CHECK(d->model != NULL);
    CHECK(d->n_workers >= 0 && d->n_workers <= 65536);
    for (int i = 0; i < d->n_workers; i++) {
        CHECK(d->ids[i] && *d->ids[i] && d->addrs[i] && *d->addrs[i]);
        CHECK(moe_pldoc_worker(d, d->ids[i]) == i); /* ids are distinct */
    }
    for (size_t i = 0; i < d->n_experts; i++) {
        const moe_pldoc_expert *x = &d->experts[i];
        CHECK(x->layer >= 0 && x->layer <= (n_layer > 0 ? n_layer - 1 : 1 << 20));
        CHECK(x->expert >= 0 && x->expert <= (n_expert > 0 ? n_expert - 1 : 1 << 20));
        CHECK(x->n_replicas >= 0 && x->n_replicas <= d->n_workers);
        for (int k = 0; k < x->n_replicas; k++) {
            CHECK(x->replicas[k] >= 0 && x->replicas[k] < d->n_workers);
            for (int j = 0; j < k; j++) CHECK(x->replicas[j] != x->replicas[k]);
        }
    }
}

static void check_url(const moe_redis_url *u) {
    const size_t hl = strnlen(u->host, sizeof u->host);
    CHECK(hl > 0 && hl < sizeof u->host);
    for (size_t i = 0; i < hl; i++)
        CHECK(u->host[i] != ':' && u->host[i] != '/' && u->host[i] != '@' && u->host[i] > ' ');
    CHECK(u->port >= 1 && u->port <= 65535);
    CHECK(u->db >= 0 && u->db <= 1000000);
    CHECK(strnlen(u->user, sizeof u->user) < sizeof u->user);
    CHECK(strnlen(u->password, sizeof u->password) < sizeof u->password);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    /* the document: after two bytes of model shape */
    if (n >= 2) {
        const int n_layer = data[0] % 65, n_expert = data[1] % 129;
        moe_pldoc *d = (moe_pldoc *)(uintptr_t)1;
        moe_err err;
        int rc = moe_pldoc_parse(&d, (const char *)data + 2, n - 2, n_layer, n_expert, &err);
        if (rc == 0) {
            check_doc(d, n_layer, n_expert);
            moe_pldoc_free(d);
        } else {
            CHECK(rc == MOE_EFORMAT || rc == MOE_ENOMEM);
            CHECK(d == NULL);
        }
    }
    /* the URL: all the bytes, as a C string */
    char *s = malloc(n + 1);
    if (!s) return 0;
    memcpy(s, data, n);
    s[n] = 0;
    moe_redis_url u;
    moe_err err;
    int rc = moe_redis_url_parse(&u, s, &err);
    if (rc == 0)
        check_url(&u);
    else
        CHECK(rc == MOE_EINVAL);
    free(s);
    return 0;
}
