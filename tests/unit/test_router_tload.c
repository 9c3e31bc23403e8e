/* test_router_tload.c - router-svc's reader of the tenant load (router-svc/
 * router_tload.c): fields as a gateway writes them ("<tenant>|L:E" = rows)
 * parse; each defect a writer of Redis could choose is skipped with its
 * reason and counted; two buckets of the same tenant and expert sum; each
 * expert's tenants by rows, the experts with the most rows first; the
 * bounds on tenants. tests/integration/router_tenants.sh reads real ones. */
#include <string.h>

#include "router_internal.h"
#include "test.h"

static rt_tload_skip parse(const char *f, const char *v) {
    char name[MOE_TENANT_NAME_MAX + 1];
    size_t pair;
    uint64_t rows;
    return rt_tload_parse(f, f ? strlen(f) : 0, v, v ? strlen(v) : 0, 4, 8, name, &pair, &rows);
}

TEST(router_tload_parse) {
    char name[MOE_TENANT_NAME_MAX + 1];
    size_t pair;
    uint64_t rows;
    ASSERT_EQ_INT(rt_tload_parse("acme|2:5", 8, "1234", 4, 4, 8, name, &pair, &rows), RT_TLOAD_OK);
    ASSERT_STR_EQ(name, "acme");
    ASSERT_EQ_INT(pair, 2 * 8 + 5);
    ASSERT_EQ_INT(rows, 1234);
    ASSERT_EQ_INT(parse("(none)|0:0", "1"), RT_TLOAD_OK);
    ASSERT_EQ_INT(parse("(other)|3:7", "1000000000000000"), RT_TLOAD_OK); /* 10^15: the edge */
    ASSERT_EQ_INT(parse("a.b_c-9|3:7", "0"), RT_TLOAD_OK);
    char longest[MOE_TENANT_NAME_MAX + 8];
    memset(longest, 'x', MOE_TENANT_NAME_MAX);
    strcpy(longest + MOE_TENANT_NAME_MAX, "|1:1");
    ASSERT_EQ_INT(parse(longest, "3"), RT_TLOAD_OK);
    /* the field */
    longest[MOE_TENANT_NAME_MAX] = 'x';
    strcpy(longest + MOE_TENANT_NAME_MAX + 1, "|1:1");
    ASSERT_EQ_INT(parse(longest, "3"), RT_TLOAD_SKIP_FIELD);   /* a name of 65 bytes */
    ASSERT_EQ_INT(parse("acme2:5", "1"), RT_TLOAD_SKIP_FIELD); /* no '|' */
    ASSERT_EQ_INT(parse("|2:5", "1"), RT_TLOAD_SKIP_FIELD);
    ASSERT_EQ_INT(parse("-acme|2:5", "1"), RT_TLOAD_SKIP_FIELD);
    ASSERT_EQ_INT(parse("ac me|2:5", "1"), RT_TLOAD_SKIP_FIELD);
    ASSERT_EQ_INT(parse("(nobody)|2:5", "1"), RT_TLOAD_SKIP_FIELD);
    ASSERT_EQ_INT(parse("ac\"me|2:5", "1"), RT_TLOAD_SKIP_FIELD); /* would break a label */
    ASSERT_EQ_INT(parse(NULL, "1"), RT_TLOAD_SKIP_FIELD);         /* not a string */
    ASSERT_EQ_INT(rt_tload_parse("ac\0e|2:5", 8, "1", 1, 4, 8, name, &pair, &rows),
                  RT_TLOAD_SKIP_FIELD); /* a NUL inside */
    /* the expert */
    ASSERT_EQ_INT(parse("acme|2:5|1:1", "1"), RT_TLOAD_SKIP_EXPERT);
    ASSERT_EQ_INT(parse("acme|", "1"), RT_TLOAD_SKIP_EXPERT);
    ASSERT_EQ_INT(parse("acme|2", "1"), RT_TLOAD_SKIP_EXPERT);
    ASSERT_EQ_INT(parse("acme|2:x", "1"), RT_TLOAD_SKIP_EXPERT);
    ASSERT_EQ_INT(parse("acme|-1:5", "1"), RT_TLOAD_SKIP_EXPERT);
    ASSERT_EQ_INT(parse("acme|4:0", "1"), RT_TLOAD_SKIP_EXPERT); /* 4 layers */
    ASSERT_EQ_INT(parse("acme|0:8", "1"), RT_TLOAD_SKIP_EXPERT); /* 8 experts */
    ASSERT_EQ_INT(parse("acme|99999999999999999999:1", "1"), RT_TLOAD_SKIP_EXPERT);
    ASSERT_EQ_INT(parse("acme|9999999:1", "1"), RT_TLOAD_SKIP_EXPERT);
    /* the value */
    ASSERT_EQ_INT(parse("acme|2:5", "1000000000000001"), RT_TLOAD_SKIP_VALUE);
    ASSERT_EQ_INT(parse("acme|2:5", "18446744073709551616"), RT_TLOAD_SKIP_VALUE);
    ASSERT_EQ_INT(parse("acme|2:5", "-5"), RT_TLOAD_SKIP_VALUE);
    ASSERT_EQ_INT(parse("acme|2:5", "+5"), RT_TLOAD_SKIP_VALUE);
    ASSERT_EQ_INT(parse("acme|2:5", "12abc"), RT_TLOAD_SKIP_VALUE);
    ASSERT_EQ_INT(parse("acme|2:5", "1.5"), RT_TLOAD_SKIP_VALUE);
    ASSERT_EQ_INT(parse("acme|2:5", ""), RT_TLOAD_SKIP_VALUE);
    ASSERT_EQ_INT(parse("acme|2:5", NULL), RT_TLOAD_SKIP_VALUE);
    ASSERT_STR_EQ(rt_tload_skip_name(RT_TLOAD_SKIP_EXPERT), "expert");
    ASSERT_STR_EQ(rt_tload_skip_name(RT_TLOAD_SKIP_TENANTS), "tenants");
}

static void add(rt_tload *t, const char *f, const char *v) {
    rt_tload_add(t, f, strlen(f), v, strlen(v));
}

TEST(router_tload_merge) {
    rt_tload t;
    ASSERT_EQ_INT(rt_tload_init(&t, 4, 8), 0);
    /* bucket b-1, then bucket b (as HGETALL returns them: any order) */
    add(&t, "beta|2:5", "200");
    add(&t, "acme|2:5", "700");
    add(&t, "acme|0:1", "5");
    add(&t, "gamma|2:5", "100");
    add(&t, "acme|2:5", "110"); /* the next bucket: sums */
    add(&t, "zeta|1:1", "40");
    add(&t, "eta|1:1", "40"); /* a tie: by name */
    add(&t, "acme|2:5", "x");
    add(&t, "acme", "1");
    add(&t, "acme|9:9", "1");
    add(&t, "(none)|3:3", "0"); /* valid, no rows */
    ASSERT_EQ_INT(rt_tload_finish(&t), 0);
    ASSERT_EQ_INT(t.n_fields, 11);
    ASSERT_EQ_INT(t.skipped[RT_TLOAD_SKIP_VALUE], 1);
    ASSERT_EQ_INT(t.skipped[RT_TLOAD_SKIP_FIELD], 1);
    ASSERT_EQ_INT(t.skipped[RT_TLOAD_SKIP_EXPERT], 1);
    rt_tload_expert e;
    ASSERT_EQ_INT(rt_tload_expert_get(&t, 2 * 8 + 5, &e), 3);
    ASSERT_EQ_INT(e.layer, 2);
    ASSERT_EQ_INT(e.expert, 5);
    ASSERT_EQ_INT(e.rows, 1110);
    ASSERT_STR_EQ(e.top[0].name, "acme");
    ASSERT_EQ_INT(e.top[0].rows, 810);
    ASSERT_STR_EQ(e.top[1].name, "beta");
    ASSERT_STR_EQ(e.top[2].name, "gamma");
    ASSERT_EQ_INT(rt_tload_expert_get(&t, 1 * 8 + 1, &e), 2);
    ASSERT_STR_EQ(e.top[0].name, "eta");
    ASSERT_STR_EQ(e.top[1].name, "zeta");
    ASSERT_EQ_INT(rt_tload_expert_get(&t, 3 * 8 + 3, &e), 0);
    ASSERT_EQ_INT(rt_tload_expert_get(&t, 7, &e), 0);
    rt_tload_view v = {0};
    rt_tload_view_fill(&t, &v);
    ASSERT_EQ_INT(v.n, 3);
    ASSERT_EQ_INT(v.n_tenants, 6); /* acme beta gamma zeta eta (none) */
    ASSERT_EQ_INT(v.e[0].rows, 1110);
    ASSERT_EQ_INT(v.e[1].rows, 80);
    ASSERT_EQ_INT(v.e[2].rows, 5);
    rt_tload_free(&t);
}

TEST(router_tload_bounds) {
    rt_tload t;
    ASSERT_EQ_INT(rt_tload_init(&t, 2, 64), 0);
    char f[64], v[16];
    /* more tenants than the bound: the rest skipped and counted */
    for (int i = 0; i < RT_TLOAD_TENANTS_MAX + 10; i++) {
        snprintf(f, sizeof f, "t%d|1:%d", i, i % 64);
        snprintf(v, sizeof v, "%d", i + 1);
        add(&t, f, v);
    }
    ASSERT_EQ_INT(rt_tload_finish(&t), 0);
    ASSERT_EQ_INT(t.n_names, RT_TLOAD_TENANTS_MAX);
    ASSERT_EQ_INT(t.skipped[RT_TLOAD_SKIP_TENANTS], 10);
    rt_tload_view view = {0};
    rt_tload_view_fill(&t, &view);
    ASSERT_EQ_INT(view.n, RT_TLOAD_TOP_EXPERTS);
    for (int i = 0; i < view.n; i++) {
        ASSERT_EQ_INT(view.e[i].n_top, RT_TLOAD_TOP_TENANTS);
        ASSERT(view.e[i].n_tenants == 16 || view.e[i].n_tenants == 15);
        if (i) ASSERT(view.e[i - 1].rows >= view.e[i].rows);
        for (int k = 1; k < view.e[i].n_top; k++)
            ASSERT(view.e[i].top[k - 1].rows >= view.e[i].top[k].rows);
    }
    rt_tload_free(&t);
}
