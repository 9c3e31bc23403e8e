/* test_routing.c - the routing conformance suite: every gating function on
 * hand-computed cases (see moe/routing.h). */
#include <math.h>
#include <string.h>

#include "moe/error.h"
#include "moe/routing.h"
#include "test.h"

static float scratch[4 * 64];

static void route(const moe_routing *r, const float *logits, int32_t *sel, float *w) {
    ASSERT_EQ_INT(moe_routing_check(r), 0);
    ASSERT_EQ_INT(moe_route(r, logits, scratch, sel, w), 0);
}

static double sigm(double x) {
    return 1.0 / (1.0 + exp(-x));
}

/* softmax top-2 of 4, renormalised (Mixtral): logits 1,3,2,0 ->
 * probs e^1,e^3,e^2,e^0 / Z; chosen 1 then 2; weights e^3/(e^3+e^2), e^2/(...) */
TEST(routing_softmax_topk_renormalised) {
    const float logits[4] = {1, 3, 2, 0};
    moe_routing r = {
        .gating = MOE_GATING_SOFTMAX, .n_expert = 4, .n_used = 2, .norm = 1, .scale = 1};
    int32_t sel[2];
    float w[2];
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 1);
    ASSERT_EQ_INT(sel[1], 2);
    ASSERT_NEAR(w[0], exp(3) / (exp(3) + exp(2)), 1e-6);
    ASSERT_NEAR(w[1], exp(2) / (exp(3) + exp(2)), 1e-6);
}

/* the same without renormalisation (Qwen2-MoE, OLMoE): the softmax probs */
TEST(routing_softmax_topk_not_renormalised) {
    const float logits[4] = {1, 3, 2, 0};
    moe_routing r = {
        .gating = MOE_GATING_SOFTMAX, .n_expert = 4, .n_used = 2, .norm = 0, .scale = 1};
    int32_t sel[2];
    float w[2];
    route(&r, logits, sel, w);
    const double Z = exp(0) + exp(1) + exp(2) + exp(3);
    ASSERT_NEAR(w[0], exp(3) / Z, 1e-6);
    ASSERT_NEAR(w[1], exp(2) / Z, 1e-6);
}

/* sigmoid gating: weights are sigmoids, not a distribution */
TEST(routing_sigmoid_vs_softmax) {
    const float logits[4] = {-1, 0.5f, 2, -3};
    moe_routing r = {
        .gating = MOE_GATING_SIGMOID, .n_expert = 4, .n_used = 2, .norm = 0, .scale = 1};
    int32_t sel[2];
    float w[2];
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 2);
    ASSERT_EQ_INT(sel[1], 1);
    ASSERT_NEAR(w[0], sigm(2), 1e-6);
    ASSERT_NEAR(w[1], sigm(0.5), 1e-6);
    r.norm = 1;
    route(&r, logits, sel, w);
    ASSERT_NEAR(w[0], sigm(2) / (sigm(2) + sigm(0.5)), 1e-6);
    ASSERT_NEAR(w[0] + w[1], 1.0, 1e-6);
}

/* DeepSeek-V3: the bias changes which experts are chosen, never their weight */
TEST(routing_bias_selects_only) {
    const float logits[4] = {2, 1, 0, -1};
    const float bias[4] = {0, 0, 0, 1.0f}; /* sigmoid(-1)+1 = 1.27 beats sigmoid(2) = 0.88 */
    moe_routing r = {.gating = MOE_GATING_SIGMOID,
                     .n_expert = 4,
                     .n_used = 2,
                     .norm = 0,
                     .scale = 1,
                     .bias = bias};
    int32_t sel[2];
    float w[2];
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 3);
    ASSERT_EQ_INT(sel[1], 0);
    ASSERT_NEAR(w[0], sigm(-1), 1e-6); /* unbiased */
    ASSERT_NEAR(w[1], sigm(2), 1e-6);
    r.bias = NULL;
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 0);
    ASSERT_EQ_INT(sel[1], 1);
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
    moe_routing r = {.gating = MOE_GATING_SIGMOID,
                     .n_expert = 8,
                     .n_used = 3,
                     .norm = 1,
                     .scale = 1,
                     .n_groups = 4,
                     .n_groups_used = 2};
    int32_t sel[3];
    float w[3];
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 2); /* tie 2/3: lowest index first */
    ASSERT_EQ_INT(sel[1], 3);
    ASSERT_EQ_INT(sel[2], 4);
    const double s = 2 * sigm(1) + sigm(0.5);
    ASSERT_NEAR(w[0], sigm(1) / s, 1e-6);
    ASSERT_NEAR(w[2], sigm(0.5) / s, 1e-6);
    /* without the group limit expert 0 wins */
    r.n_groups = 0;
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 0);
}

/* group scores use the biased selection values */
TEST(routing_groups_use_bias) {
    const float logits[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float bias[8] = {0, 0, 0, 0, 0, 0, 0.3f, 0.3f};
    moe_routing r = {.gating = MOE_GATING_SIGMOID,
                     .n_expert = 8,
                     .n_used = 2,
                     .norm = 1,
                     .scale = 1,
                     .n_groups = 4,
                     .n_groups_used = 1,
                     .bias = bias};
    int32_t sel[2];
    float w[2];
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 6);
    ASSERT_EQ_INT(sel[1], 7);
    ASSERT_NEAR(w[0], 0.5, 1e-6);
}

/* the routed scaling factor multiplies after renormalisation */
TEST(routing_scale_after_norm) {
    const float logits[4] = {1, 2, 3, 4};
    moe_routing r = {
        .gating = MOE_GATING_SIGMOID, .n_expert = 4, .n_used = 2, .norm = 1, .scale = 2.5f};
    int32_t sel[2];
    float w[2];
    route(&r, logits, sel, w);
    ASSERT_NEAR(w[0] + w[1], 2.5, 1e-5);
    ASSERT_NEAR(w[0], 2.5 * sigm(4) / (sigm(4) + sigm(3)), 1e-6);
    r.norm = 0;
    route(&r, logits, sel, w);
    ASSERT_NEAR(w[0], 2.5 * sigm(4), 1e-6);
}

/* ties: the lowest expert index wins, at every rank */
TEST(routing_ties_lowest_index) {
    const float logits[6] = {1, 2, 2, 1, 2, 0};
    moe_routing r = {
        .gating = MOE_GATING_SOFTMAX, .n_expert = 6, .n_used = 4, .norm = 0, .scale = 1};
    int32_t sel[4];
    float w[4];
    route(&r, logits, sel, w);
    ASSERT_EQ_INT(sel[0], 1);
    ASSERT_EQ_INT(sel[1], 2);
    ASSERT_EQ_INT(sel[2], 4);
    ASSERT_EQ_INT(sel[3], 0);
    const float flat[4] = {0, 0, 0, 0};
    r.n_expert = 4;
    r.n_used = 2;
    route(&r, flat, sel, w);
    ASSERT_EQ_INT(sel[0], 0);
    ASSERT_EQ_INT(sel[1], 1);
    ASSERT_NEAR(w[0], 0.25, 1e-7);
}

/* NaN and Inf in gate logits (or the bias) are an error, not propagated */
TEST(routing_rejects_non_finite) {
    moe_routing r = {
        .gating = MOE_GATING_SOFTMAX, .n_expert = 4, .n_used = 2, .norm = 1, .scale = 1};
    int32_t sel[2] = {-7, -7};
    float w[2] = {-7, -7};
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
    moe_routing r = {.gating = MOE_GATING_SOFTMAX,
                     .n_expert = 3,
                     .n_used = 1,
                     .norm = 0,
                     .scale = 1,
                     .dense = 1};
    ASSERT_EQ_INT(moe_routing_k(&r), 3);
    int32_t sel[3];
    float w[3];
    route(&r, logits, sel, w);
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
    int32_t sel[4] = {0, 0, 0, 1};
    float w[4] = {1, 1, 1, 1};
    int32_t counts[2];
    ASSERT_EQ_INT(moe_route_capacity(1.0f, 2, 4, 1, sel, w, counts), 1);
    ASSERT_EQ_INT(sel[2], -1);
    ASSERT_NEAR(w[2], 0, 0);
    ASSERT_EQ_INT(sel[3], 1);
    /* factor 2 -> capacity 4: nothing dropped; factor 0: off */
    int32_t sel2[4] = {0, 0, 0, 1};
    ASSERT_EQ_INT(moe_route_capacity(2.0f, 2, 4, 1, sel2, w, counts), 0);
    ASSERT_EQ_INT(moe_route_capacity(0.0f, 2, 4, 1, sel2, w, counts), 0);
    /* k = 2, 3 tokens, 3 experts, factor 0.5 -> capacity ceil(1) = 1 */
    int32_t sel3[6] = {0, 1, 0, 2, 1, 2};
    float w3[6] = {1, 1, 1, 1, 1, 1};
    int32_t c3[3];
    ASSERT_EQ_INT(moe_route_capacity(0.5f, 3, 3, 2, sel3, w3, c3), 3);
    ASSERT_EQ_INT(sel3[0], 0);
    ASSERT_EQ_INT(sel3[1], 1);
    ASSERT_EQ_INT(sel3[2], -1);
    ASSERT_EQ_INT(sel3[3], 2);
    ASSERT_EQ_INT(sel3[4], -1);
    ASSERT_EQ_INT(sel3[5], -1);
}

TEST(routing_check_and_describe) {
    moe_routing r = {.gating = MOE_GATING_SIGMOID,
                     .n_expert = 256,
                     .n_used = 8,
                     .norm = 1,
                     .scale = 2.5f,
                     .n_groups = 8,
                     .n_groups_used = 4};
    const float bias[256] = {0};
    r.bias = bias;
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
    moe_routing r = {
        .gating = MOE_GATING_SOFTMAX, .n_expert = 4, .n_used = 2, .norm = 1, .scale = 1};
    int32_t sel[4];
    float w[4];
    route(&r, logits, sel, w);
    const double Z = exp(0) + exp(1) + exp(2) + exp(3);
    ASSERT_NEAR(moe_route_margin(&r, scratch, sel), (exp(2) - exp(1)) / Z, 1e-6);
    /* groups: 0 {5, -5} score 1.000, 1 {1, 1} 1.462, 2 {0.2, 0.2} 1.0997,
     * 3 {-1, -2}; groups 1 and 2 allowed; chosen 2, 3 (s(1)); best free
     * allowed s(0.2): expert margin s(1) - s(0.2) = 0.181 > group margin
     * 2 s(0.2) - (s(5) + s(-5)) = 0.0997 */
    const float gl[8] = {5, -5, 1, 1, 0.2f, 0.2f, -1, -2};
    moe_routing g = {.gating = MOE_GATING_SIGMOID,
                     .n_expert = 8,
                     .n_used = 2,
                     .norm = 1,
                     .scale = 1,
                     .n_groups = 4,
                     .n_groups_used = 2};
    route(&g, gl, sel, w);
    ASSERT_EQ_INT(sel[0], 2);
    ASSERT_EQ_INT(sel[1], 3);
    ASSERT_NEAR(moe_route_margin(&g, scratch, sel), 2 * sigm(0.2) - (sigm(5) + sigm(-5)), 1e-6);
    g.n_groups = 0; /* no groups: expert 0 (s(5)) and 2 (s(1)) chosen; best free s(1) */
    route(&g, gl, sel, w);
    ASSERT_NEAR(moe_route_margin(&g, scratch, sel), 0.0, 1e-7);
    /* dense: nothing competes */
    r.dense = 1;
    route(&r, logits, sel, w);
    ASSERT(isinf(moe_route_margin(&r, scratch, sel)));
}
