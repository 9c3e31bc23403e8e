/* test_tls.c - which addresses count as loopback (plaintext allowed there
 * only), and the plaintext rule with and without --insecure. The TLS
 * handshakes themselves are shown by tests/integration/mtls.sh. */
#include <string.h>

#include "mesh/tls.h"
#include "test.h"

TEST(tls_loopback_addresses) {
    static const char *yes[] = {"127.0.0.1:50051", "127.8.9.10:1",     "localhost:50051",
                                "[::1]:50051",     "unix:/tmp/w.sock", "ipv4:127.0.0.1:5",
                                "127.0.0.1",       "dns:localhost:7"};
    static const char *no[] = {"0.0.0.0:50051", "10.0.0.1:50051",    "[::]:50051",      "[::2]:1",
                               "128.0.0.1:1",   "w1:50051",          "example:1",       "",
                               "[::1",          "126.255.255.255:9", "localhost.evil:1"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!moe_addr_is_loopback(yes[i])) TEST_FAIL("%s should be loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (moe_addr_is_loopback(no[i])) TEST_FAIL("%s should not be loopback", no[i]);
    ASSERT(!moe_addr_is_loopback(NULL));
}

TEST(tls_plaintext_rule) {
    moe_tls_opts o = moe_tls_opts_default();
    moe_err err;
    ASSERT_EQ_INT(moe_tls_plaintext_ok(&o, "127.0.0.1:1", "test", &err), 0);
    ASSERT_EQ_INT(moe_tls_plaintext_ok(&o, "10.1.2.3:50051", "test", &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "--insecure");
    ASSERT_STR_CONTAINS(err.msg, "10.1.2.3:50051");
    o.insecure = 1;
    ASSERT_EQ_INT(moe_tls_plaintext_ok(&o, "10.1.2.3:50051", "test", &err), 0);
    ASSERT(!moe_tls_on(&o));
    o.ca = "x.pem";
    ASSERT(moe_tls_on(&o));
    ASSERT_EQ_INT(moe_tls_check(&o, NULL, &err), MOE_EINVAL); /* not all three */
    ASSERT_STR_CONTAINS(err.msg, "go together");
}
