/* fuzz_tenants.c - libFuzzer target: any bytes as a tenants file
 * (mesh/tenant.h, moe_tenant_set_parse): refused with an error message, or
 * parsed into a set whose invariants hold (valid names and limits, every
 * key digest found and pointing at its own tenant, every name found). Never
 * a crash or a leak. */
#include <stdint.h>
#include <string.h>

#include "mesh/tenant.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    moe_tenant_set *s = (moe_tenant_set *)(uintptr_t)1;
    moe_err err = {0};
    const int rc = moe_tenant_set_parse(&s, (const char *)data, n, &err);
    if (rc < 0) {
        CHECK(s == NULL);
        CHECK(rc == MOE_EFORMAT || rc == MOE_EINVAL || rc == MOE_ENOMEM || rc == MOE_ENOSPC);
        CHECK(err.msg[0] != 0);
        return 0;
    }
    const int count = moe_tenant_set_count(s);
    int keys = 0;
    for (int i = 0; i < count; i++) {
        const moe_tenant *t = moe_tenant_set_at(s, i);
        CHECK(moe_tenant_name_check(t->name, NULL) == 0);
        CHECK(moe_tenant_limits_check(&t->lim, NULL) == 0);
        CHECK(t->n_keys >= 0 && t->n_keys <= MOE_TENANT_KEYS_MAX);
        CHECK(moe_tenant_set_find_name(s, t->name) == t);
        for (int k = 0; k < t->n_keys; k++)
            CHECK(moe_tenant_set_find_key(s, moe_tenant_set_key(s, i, k)) == t);
        keys += t->n_keys;
    }
    CHECK(keys == moe_tenant_set_n_keys(s));
    moe_tenant_set_free(s);
    return 0;
}
