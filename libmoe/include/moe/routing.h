/*
 * moe/routing.h - choosing experts: the gating functions of Mixtral, Qwen,
 * OLMoE, DeepSeekMoE and DeepSeek-V2/V3, plus engine-level options (dense
 * MoE, a GShard-style capacity factor).
 *
 * Per token, as llama.cpp's build_moe_ffn:
 *   probs     = softmax(logits) or sigmoid(logits)
 *   selection = probs + bias                  (bias: DeepSeek-V3 exp_probs_b;
 *                                              it only chooses, never weighs)
 *   groups    : experts in n_groups equal groups; a group's score is the sum
 *               of its top-2 selection values; the n_groups_used best groups
 *               stay, the others are excluded
 *   chosen    = top n_used of selection (ties: lowest expert index)
 *   weights   = probs[chosen]; / max(their sum, 2^-14) if norm; * scale
 *
 *     moe_routing r = {.gating = MOE_GATING_SIGMOID, .n_expert = 256, .n_used = 8,
 *                      .norm = 1, .scale = 2.5f, .n_groups = 8, .n_groups_used = 4,
 *                      .bias = bias};
 *     int32_t sel[8]; float w[8];
 *     if (moe_route(&r, logits, scratch, sel, w) < 0) ... // NaN/Inf in logits
 *
 * Dense MoE (dense = 1) uses every expert, weighted by probs (normalised and
 * scaled as above). The capacity factor bounds the rows any expert takes in a
 * batch: capacity = ceil(factor * n_tokens * n_used / n_expert); choices past
 * it, in batch order, are dropped (weight 0: the token keeps its residual for
 * that expert). Accuracy caveat: a dropped choice changes the model's output,
 * so it sheds load at a quality cost and is off by default.
 */
#ifndef MOE_ROUTING_H
#define MOE_ROUTING_H

#include <stdint.h>

typedef enum moe_gating {
    MOE_GATING_SOFTMAX = 0, /* probs = softmax(logits) over all experts */
    MOE_GATING_SIGMOID = 1, /* probs = sigmoid(logits) */
} moe_gating;

typedef struct moe_routing {
    moe_gating gating;
    int n_expert;      /* experts in the layer */
    int n_used;        /* experts chosen per token (k); n_expert when dense */
    int norm;          /* renormalise the chosen weights to sum 1 */
    float scale;       /* multiply the weights (1 for none) */
    int n_groups;      /* expert groups (<= 1: no group limit) */
    int n_groups_used; /* groups a token may choose from */
    const float *bias; /* (n_expert) selection-only bias, or NULL */
    int dense;         /* 1: every expert, in index order */
} moe_routing;

/* Checks r: counts in range, n_expert divisible by n_groups, enough experts
 * in the allowed groups. Returns 0 or MOE_EINVAL. */
int moe_routing_check(const moe_routing *r);

/* Experts per token that moe_route writes: n_expert if dense, else n_used. */
int moe_routing_k(const moe_routing *r);

/* Floats of scratch moe_route needs. */
#define MOE_ROUTE_SCRATCH(n_expert) (4 * (size_t)(n_expert))

/* Routes one token. logits: (n_expert) gate outputs, read only. scratch:
 * MOE_ROUTE_SCRATCH(n_expert) floats. Writes moe_routing_k(r) experts to sel, in selection
 * order (best first), and their weights to w. Returns 0, or MOE_ENUMERIC if a
 * logit (or a bias) is NaN or infinite. */
int moe_route(const moe_routing *r, const float *logits, float *scratch, int32_t *sel, float *w);

/* After moe_route(r, ..., scratch, sel, ...) with the same scratch: how
 * close that token's selection came to another one (a diagnostic for
 * comparing engines: below a rounding step, another engine may choose other
 * experts). The smallest of: the k-th chosen expert's selection value minus
 * the best unchosen one's in the allowed groups, and, with group limits, the
 * last allowed group's score minus the best excluded group's. INFINITY when
 * nothing competes (dense, or k = n_expert). Reads scratch only. */
float moe_route_margin(const moe_routing *r, const float *scratch, const int32_t *sel);

/* Applies a capacity factor to a batch's choices: sel/w are (n_tokens, k) as
 * moe_route wrote them. Choices past an expert's capacity (in token order)
 * get sel = -1 and w = 0. counts: (n_expert) scratch. Returns the number
 * dropped. factor <= 0 disables (returns 0). */
int moe_route_capacity(float factor, int n_expert, int n_tokens, int k, int32_t *sel, float *w,
                       int32_t *counts);

/* The routing in words, e.g. "sigmoid, bias-corrected, 8 of 256 experts in
 * 4 of 8 groups, normalised, x2.5". Returns the length written (snprintf). */
int moe_routing_describe(const moe_routing *r, char *buf, int n);

#endif
