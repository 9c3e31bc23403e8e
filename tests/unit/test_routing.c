/* test_routing.c - the routing conformance suite: every gating function on
 * hand-computed cases (see moe/routing.h). */
#include <math.h>
#include <string.h>

#include "moe/error.h"
#include "moe/routing.h"
#include "test.h"

static float scratch[4 * 64];
static int32_t sel[256]; /* the chosen experts of the last route() */
static float w[256];     /* and their weights */

/* A routing config without groups, bias or dense (the caller sets those). */
static moe_routing routing(moe_gating gating, int n_expert, int n_used, int norm, float scale) {
    moe_routing r = {
        .gating = gating, .n_expert = n_expert, .n_used = n_used, .norm = norm, .scale = scale};
    return r;
}

/* Checks r and routes logits into sel and w. */
static void route(const moe_routing *r, const float *logits) {
    ASSERT_EQ_INT(moe_routing_check(r), 0);
    ASSERT_EQ_INT(moe_route(r, logits, scratch, sel, w), 0);
}

/* Checks the first chosen experts: ASSERT_SEL(1, 2) is sel[0] == 1, sel[1] == 2. */
#define ASSERT_SEL(...)                                                                            \
    assert_sel((const int32_t[]){__VA_ARGS__},                                                     \
               (int)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)), __LINE__)
static void assert_sel(const int32_t *want, int n, int line) {
    for (int i = 0; i < n; i++) {
        if (sel[i] != want[i])
            TEST_FAIL("(line %d) sel[%d] == %d, want %d", line, i, (int)sel[i], (int)want[i]);
    }
}

static double sigm(double x) {
    return 1.0 / (1.0 + exp(-x));
}

/* softmax top-2 of 4, renormalised (Mixtral): logits 1,3,2,0 ->
 * probs e^1,e^3,e^2,e^0 / Z; chosen 1 then 2; weights e^3/(e^3+e^2), e^2/(...) */
TEST(routing_softmax_topk_renormalised) {
    const float logits[4] = {1, 3, 2, 0};
    moe_routing r = routing(MOE_GATING_SOFTMAX, 4, 2, 1, 1);
    route(&r, logits);
    ASSERT_SEL(1, 2);
    ASSERT_NEAR(w[0], exp(3) / (exp(3) + exp(2)), 1e-6);
    ASSERT_NEAR(w[1], exp(2) / (exp(3) + exp(2)), 1e-6);
}

/* the same without renormalisation (Qwen2-MoE, OLMoE): the softmax probs */
TEST(routing_softmax_topk_not_renormalised) {
    const float logits[4] = {1, 3, 2, 0};
    moe_routing r = routing(MOE_GATING_SOFTMAX, 4, 2, 0, 1);
    route(&r, logits);
    const double Z = exp(0) + exp(1) + exp(2) + exp(3);
    ASSERT_NEAR(w[0], exp(3) / Z, 1e-6);
    ASSERT_NEAR(w[1], exp(2) / Z, 1e-6);
}

/* sigmoid gating: weights are sigmoids, not a distribution */
TEST(routing_sigmoid_vs_softmax) {
    const float logits[4] = {-1, 0.5f, 2, -3};
    moe_routing r = routing(MOE_GATING_SIGMOID, 4, 2, 0, 1);
    route(&r, logits);
    ASSERT_SEL(2, 1);
    ASSERT_NEAR(w[0], sigm(2), 1e-6);
    ASSERT_NEAR(w[1], sigm(0.5), 1e-6);
    r.norm = 1;
    route(&r, logits);
    ASSERT_NEAR(w[0], sigm(2) / (sigm(2) + sigm(0.5)), 1e-6);
    ASSERT_NEAR(w[0] + w[1], 1.0, 1e-6);
}

/* DeepSeek-V3: the bias changes which experts are chosen, never their weight */
TEST(routing_bias_selects_only) {
    const float logits[4] = {2, 1, 0, -1};
    const float bias[4] = {0, 0, 0, 1.0f}; /* sigmoid(-1)+1 = 1.27 beats sigmoid(2) = 0.88 */
    moe_routing r = routing(MOE_GATING_SIGMOID, 4, 2, 0, 1);
    r.bias = bias;
    route(&r, logits);
    ASSERT_SEL(3, 0);
    ASSERT_NEAR(w[0], sigm(-1), 1e-6); /* unbiased */
    ASSERT_NEAR(w[1], sigm(2), 1e-6);
    r.bias = NULL;
    route(&r, logits);
    ASSERT_SEL(0, 1);
}

/* groups: 8 experts in 4 groups of 2; group score = sum of its top-2; the
 * best 2 groups stay; the globally best single expert may be excluded. */
TEST(routing_groups_score_and_mask) {
    /* sigmoid is monotone; use selection values directly via logits.
     * group 0: {5, -5}   score s(5)+s(-5) = 1.000
     * group 1: {1, 1}    score 2 s(1)     = 1.462
     * group 2: {0.5, 0.5}score 2 s(0.5)   = 1.245
     * group 3: {-1, -2}  score            = 0.388
     * chosen groups: 1, 2; expert 0 (the best alone) is excluded. */
    const float logits[8] = {5, -5, 1, 1, 0.5f, 0.5f, -1, -2};
    moe_routing r = routing(MOE_GATING_SIGMOID, 8, 3, 1, 1);
    r.n_groups = 4, r.n_groups_used = 2;
    route(&r, logits);
    ASSERT_SEL(2, 3, 4); /* tie 2/3: lowest index first */
    const double s = 2 * sigm(1) + sigm(0.5);
    ASSERT_NEAR(w[0], sigm(1) / s, 1e-6);
    ASSERT_NEAR(w[2], sigm(0.5) / s, 1e-6);
    /* without the group limit expert 0 wins */
    r.n_groups = 0;
    route(&r, logits);
    ASSERT_SEL(0);
}

/* group scores use the biased selection values */
TEST(routing_groups_use_bias) {
    const float logits[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float bias[8] = {0, 0, 0, 0, 0, 0, 0.3f, 0.3f};
    moe_routing r = routing(MOE_GATING_SIGMOID, 8, 2, 1, 1);
    r.n_groups = 4, r.n_groups_used = 1, r.bias = bias;
    route(&r, logits);
    ASSERT_SEL(6, 7);
    ASSERT_NEAR(w[0], 0.5, 1e-6);
}

/* the routed scaling factor multiplies after renormalisation */
TEST(routing_scale_after_norm) {
    const float logits[4] = {1, 2, 3, 4};
    moe_routing r = routing(MOE_GATING_SIGMOID, 4, 2, 1, 2.5f);
    route(&r, logits);
    ASSERT_NEAR(w[0] + w[1], 2.5, 1e-5);
    ASSERT_NEAR(w[0], 2.5 * sigm(4) / (sigm(4) + sigm(3)), 1e-6);
    r.norm = 0;
    route(&r, logits);
    ASSERT_NEAR(w[0], 2.5 * sigm(4), 1e-6);
}

/* ties: the lowest expert index wins, at every rank */
TEST(routing_ties_lowest_index) {
    const float logits[6] = {1, 2, 2, 1, 2, 0};
    moe_routing r = routing(MOE_GATING_SOFTMAX, 6, 4, 0, 1);
    route(&r, logits);
    ASSERT_SEL(1, 2, 4, 0);
    const float flat[4] = {0, 0, 0, 0};
    r.n_expert = 4;
    r.n_used = 2;
    route(&r, flat);
    ASSERT_SEL(0, 1);
    ASSERT_NEAR(w[0], 0.25, 1e-7);
}

/* NaN and Inf in gate logits (or the bias) are an error, not propagated */
TEST(routing_rejects_non_finite) {
    moe_routing r = routing(MOE_GATING_SOFTMAX, 4, 2, 1, 1);
    sel[0] = sel[1] = -7;
    w[0] = w[1] = -7;
    float bad[4] = {0, NAN, 1, 2};
    ASSERT_EQ_INT(moe_route(&r, bad, scratch, sel, w), MOE_ENUMERIC);
    bad[1] = INFINITY;
    ASSERT_EQ_INT(moe_route(&r, bad, scratch, sel, w), MOE_ENUMERIC);
    bad[1] = -INFINITY;
    ASSERT_EQ_INT(moe_route(&r, bad, scratch, sel, w), MOE_ENUMERIC);
    ASSERT_EQ_INT(sel[0], -7); /* outputs untouched */
    const float ok[4] = {0, 1, 2, 3};
    const float bias[4] = {0, 0, NAN, 0};
    r.bias = bias;
    ASSERT_EQ_INT(moe_route(&r, ok, scratch, sel, w), MOE_ENUMERIC);
}

/* dense MoE: every expert, in index order, weighted by the gate */
TEST(routing_dense_all_experts) {
    const float logits[3] = {0, 1, 2};
    moe_routing r = routing(MOE_GATING_SOFTMAX, 3, 1, 0, 1);
    r.dense = 1;
    ASSERT_EQ_INT(moe_routing_k(&r), 3);
    route(&r, logits);
    const double Z = exp(0) + exp(1) + exp(2);
    for (int e = 0; e < 3; e++) {
        ASSERT_EQ_INT(sel[e], e);
        ASSERT_NEAR(w[e], exp(e) / Z, 1e-6);
    }
}

/* capacity: ceil(factor * tokens * k / experts) rows per expert; overflow
 * choices, in batch order, are dropped with weight 0 */
TEST(routing_capacity_drops_overflow) {
    /* 4 tokens, k = 1, 2 experts, factor 1 -> capacity 2 */
    int32_t sel1[4] = {0, 0, 0, 1};
    float w1[4] = {1, 1, 1, 1};
    int32_t counts[2];
    ASSERT_EQ_INT(moe_route_capacity(1.0f, 2, 4, 1, sel1, w1, counts), 1);
    ASSERT_EQ_INT(sel1[2], -1);
    ASSERT_NEAR(w1[2], 0, 0);
    ASSERT_EQ_INT(sel1[3], 1);
    /* factor 2 -> capacity 4: nothing dropped; factor 0: off */
    int32_t sel2[4] = {0, 0, 0, 1};
    ASSERT_EQ_INT(moe_route_capacity(2.0f, 2, 4, 1, sel2, w1, counts), 0);
    ASSERT_EQ_INT(moe_route_capacity(0.0f, 2, 4, 1, sel2, w1, counts), 0);
    /* k = 2, 3 tokens, 3 experts, factor 0.5 -> capacity ceil(1) = 1 */
    const int32_t sel3[6] = {0, 1, 0, 2, 1, 2};
    memcpy(sel, sel3, sizeof sel3);
    float w3[6] = {1, 1, 1, 1, 1, 1};
    int32_t c3[3];
    ASSERT_EQ_INT(moe_route_capacity(0.5f, 3, 3, 2, sel, w3, c3), 3);
    ASSERT_SEL(0, 1, -1, 2, -1, -1);
}

TEST(routing_check_and_describe) {
    const float bias[256] = {0};
    moe_routing r = routing(MOE_GATING_SIGMOID, 256, 8, 1, 2.5f);
    r.n_groups = 8, r.n_groups_used = 4, r.bias = bias;
    ASSERT_EQ_INT(moe_routing_check(&r), 0);
    char buf[128];
    moe_routing_describe(&r, buf, sizeof buf);
    ASSERT_STR_CONTAINS(
        buf, "sigmoid, bias-corrected, 8 of 256 experts in 4 of 8 groups, normalised, x2.5");
    r.n_groups = 7; /* 256 not divisible */
    ASSERT_EQ_INT(moe_routing_check(&r), MOE_EINVAL);
    r.n_groups = 128, r.n_groups_used = 2; /* 2 groups of 2 cannot give 8 */
    ASSERT_EQ_INT(moe_routing_check(&r), MOE_EINVAL);
    moe_routing z = {.n_expert = 4, .n_used = 5, .scale = 1};
    ASSERT_EQ_INT(moe_routing_check(&z), MOE_EINVAL);
}

/* moe_route_margin: the k-th chosen minus the best unchosen selection value,
 * and with group limits the last allowed minus the best excluded group */
TEST(routing_margin_experts_and_groups) {
    const float logits[4] = {1, 3, 2, 0};
    moe_routing r = routing(MOE_GATING_SOFTMAX, 4, 2, 1, 1);
    route(&r, logits);
    const double Z = exp(0) + exp(1) + exp(2) + exp(3);
    ASSERT_NEAR(moe_route_margin(&r, scratch, sel), (exp(2) - exp(1)) / Z, 1e-6);
    /* groups: 0 {5, -5} score 1.000, 1 {1, 1} 1.462, 2 {0.2, 0.2} 1.0997,
     * 3 {-1, -2}; groups 1 and 2 allowed; chosen 2, 3 (s(1)); best free
     * allowed s(0.2): expert margin s(1) - s(0.2) = 0.181 > group margin
     * 2 s(0.2) - (s(5) + s(-5)) = 0.0997 */
    const float gl[8] = {5, -5, 1, 1, 0.2f, 0.2f, -1, -2};
    moe_routing g = routing(MOE_GATING_SIGMOID, 8, 2, 1, 1);
    g.n_groups = 4, g.n_groups_used = 2;
    route(&g, gl);
    ASSERT_SEL(2, 3);
    ASSERT_NEAR(moe_route_margin(&g, scratch, sel), 2 * sigm(0.2) - (sigm(5) + sigm(-5)), 1e-6);
    g.n_groups = 0; /* no groups: expert 0 (s(5)) and 2 (s(1)) chosen; best free s(1) */
    route(&g, gl);
    ASSERT_NEAR(moe_route_margin(&g, scratch, sel), 0.0, 1e-7);
    /* dense: nothing competes */
    r.dense = 1;
    route(&r, logits);
    ASSERT(isinf(moe_route_margin(&r, scratch, sel)));
}
