/* test_usage.c - per-tenant expert accounting (gateway/usage.c) fed routing
 * decisions as moe_ctx reports them, against counts worked out by hand. */
#include <math.h>
#include <string.h>

#include "moe/error.h"
#include "test.h"
#include "usage.h" /* gateway/ */

TEST(usage_rows_and_time_by_tenant) {
    gw_usage *u;
    ASSERT_EQ_INT(gw_usage_create(&u, 2, 4, 8), 0);
    const int a = gw_usage_tenant(u, "a"), b = gw_usage_tenant(u, "b");
    ASSERT_EQ_INT(gw_usage_tenant(u, "a"), a);
    const int32_t rows[] = {a, a, b, -1};
    gw_usage_set_rows(u, rows, 4);
    /* layer 0: rows 0..3 with k = 2; row 2's second choice dropped; row 3 nobody's */
    const int32_t sel0[] = {0, 1, 0, 2, 3, -1, 1, 1};
    gw_usage_on_route(u, 0, 0, 4, 2, sel0, 500.0);
    /* layer 1 in two chunks (the context splits big batches): rows 0-1, then 2-3 */
    const int32_t sel1a[] = {3, 2, 3, 1}, sel1b[] = {2, 0, 1, 1};
    gw_usage_on_route(u, 1, 0, 2, 2, sel1a, 100.0);
    gw_usage_on_route(u, 1, 2, 2, 2, sel1b, 100.0);
    gw_usage_add_request(u, a, 7, 3);
    gw_usage_add_request(u, b, 2, 1);
    gw_usage_totals t;
    ASSERT_EQ_INT(gw_usage_get(u, "a", &t), 0);
    ASSERT_EQ_INT((int)t.expert_rows, 8); /* 4 in layer 0, 4 in layer 1 */
    ASSERT_EQ_INT((int)t.requests, 1);
    ASSERT_EQ_INT((int)t.prompt_tokens, 7);
    ASSERT_EQ_INT((int)t.completion_tokens, 3);
    /* layer 0: a 4 of 5 counted rows of 500 us; layer 1: all 4 of the first chunk */
    ASSERT_NEAR(t.expert_seconds, 400e-6 + 100e-6, 1e-12);
    ASSERT_EQ_INT(gw_usage_get(u, "b", &t), 0);
    ASSERT_EQ_INT((int)t.expert_rows, 3); /* layer 0: 1; layer 1 (row 2): 2 */
    ASSERT_NEAR(t.expert_seconds, 100e-6 + 100e-6, 1e-12);
    ASSERT_EQ_INT((int)gw_usage_rows(u, "a", 0, 0), 2);
    ASSERT_EQ_INT((int)gw_usage_rows(u, "a", 1, 3), 2);
    ASSERT_EQ_INT((int)gw_usage_rows(u, "b", 0, 1), 0); /* row 3's choices are nobody's */
    gw_usage_expert top[3];
    ASSERT_EQ_INT(gw_usage_top_experts(u, "a", top, 3), 3);
    /* a: (0,0) 2, (1,3) 2, then (0,1) (0,2) (1,1) (1,2) 1 each: ties by layer, expert */
    ASSERT(top[0].layer == 0 && top[0].expert == 0 && top[0].rows == 2);
    ASSERT(top[1].layer == 1 && top[1].expert == 3 && top[1].rows == 2);
    ASSERT(top[2].layer == 0 && top[2].expert == 1 && top[2].rows == 1);
    ASSERT_EQ_INT(gw_usage_get(u, "nobody", &t), -1);
    ASSERT_EQ_INT(gw_usage_top_experts(u, "nobody", top, 3), -1);
    gw_usage_free(u);
}

TEST(usage_tenants_beyond_the_bound_are_other) {
    gw_usage *u;
    ASSERT_EQ_INT(gw_usage_create(&u, 1, 2, 2), 0);
    ASSERT_EQ_INT(gw_usage_tenant(u, "a"), 0);
    ASSERT_EQ_INT(gw_usage_tenant(u, "b"), 1);
    const int c = gw_usage_tenant(u, "c"), d = gw_usage_tenant(u, "d");
    ASSERT_EQ_INT(c, 2);
    ASSERT_EQ_INT(d, 2);
    gw_usage_add_request(u, c, 1, 1);
    gw_usage_totals t[4];
    ASSERT_EQ_INT(gw_usage_list(u, t, 4), 3);
    ASSERT_STR_EQ(t[2].tenant, "(other)");
    ASSERT_EQ_INT((int)t[2].requests, 1);
    ASSERT_EQ_INT(gw_usage_create(&(gw_usage *){NULL}, 0, 1, 1), MOE_EINVAL);
    gw_usage_free(u);
}
