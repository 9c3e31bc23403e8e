/* routing.c - gating functions and capacity (see moe/routing.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "moe/error.h"
#include "moe/ops.h"
#include "moe/routing.h"

int moe_routing_check(const moe_routing *r) {
    if (r->n_expert < 1 || r->n_expert > 65536) return MOE_EINVAL;
    if (!r->dense && (r->n_used < 1 || r->n_used > r->n_expert)) return MOE_EINVAL;
    if (r->n_groups > 1) {
        if (r->n_expert % r->n_groups || r->n_groups_used < 1 || r->n_groups_used > r->n_groups)
            return MOE_EINVAL;
        /* the allowed groups must hold enough experts, and top-2 needs 2 */
        const int per = r->n_expert / r->n_groups;
        if (per < 2 || (!r->dense && per * r->n_groups_used < r->n_used)) return MOE_EINVAL;
    }
    if (!(r->scale == r->scale) || isinf(r->scale)) return MOE_EINVAL;
    return 0;
}

int moe_routing_k(const moe_routing *r) {
    return r->dense ? r->n_expert : r->n_used;
}

/* Index of the largest v[i] among i in [0, n) with taken[i] == 0; ties go to
 * the lowest index. -1 if none. */
static int argmax_free(const float *v, const float *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (taken[i] == 0.0f && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

int moe_route(const moe_routing *r, const float *logits, float *scratch, int32_t *sel, float *w) {
    const int X = r->n_expert;
    float *probs = scratch, *choose = scratch + X, *taken = scratch + 2 * X;
    for (int e = 0; e < X; e++) {
        if (!isfinite(logits[e])) return MOE_ENUMERIC;
        if (r->bias && !isfinite(r->bias[e])) return MOE_ENUMERIC;
    }
    memcpy(probs, logits, (size_t)X * sizeof(float));
    if (r->gating == MOE_GATING_SOFTMAX) {
        moe_op_softmax(probs, X);
    } else {
        for (int e = 0; e < X; e++) probs[e] = 1.0f / (1.0f + expf(-probs[e]));
    }
    const int K = moe_routing_k(r);
    if (r->dense) {
        for (int e = 0; e < X; e++) sel[e] = e, w[e] = probs[e];
    } else {
        for (int e = 0; e < X; e++) choose[e] = r->bias ? probs[e] + r->bias[e] : probs[e];
        for (int e = 0; e < X; e++) taken[e] = 0.0f;
        if (r->n_groups > 1 && r->n_groups_used < r->n_groups) {
            /* group score: the sum of the group's top-2 selection values */
            const int G = r->n_groups, per = X / G;
            float *gscore = scratch + 3 * X, *gtaken = gscore + G;
            for (int g = 0; g < G; g++) {
                const float *c = choose + g * per;
                int a = 0;
                for (int i = 1; i < per; i++)
                    if (c[i] > c[a]) a = i;
                int b = a == 0 ? 1 : 0;
                for (int i = 0; i < per; i++)
                    if (i != a && c[i] > c[b]) b = i;
                gscore[g] = c[a] + c[b];
                gtaken[g] = 0.0f;
            }
            for (int j = 0; j < r->n_groups_used; j++)
                gtaken[argmax_free(gscore, gtaken, G)] = 1.0f;
            /* experts of unchosen groups are excluded */
            for (int e = 0; e < X; e++) taken[e] = gtaken[e / per] == 0.0f ? 1.0f : 0.0f;
        }
        for (int k = 0; k < K; k++) {
            const int e = argmax_free(choose, taken, X);
            taken[e] = 1.0f;
            sel[k] = e;
            w[k] = probs[e];
        }
    }
    if (r->norm) {
        double s = 0.0;
        for (int k = 0; k < K; k++) s += w[k];
        float sf = (float)s;
        if (sf < 6.103515625e-5f) sf = 6.103515625e-5f; /* as llama.cpp: no division by ~0 */
        for (int k = 0; k < K; k++) w[k] /= sf;
    }
    if (r->scale != 1.0f)
        for (int k = 0; k < K; k++) w[k] *= r->scale;
    return 0;
}

float moe_route_margin(const moe_routing *r, const float *scratch, const int32_t *sel) {
    const int X = r->n_expert, K = moe_routing_k(r);
    if (r->dense || K >= X) return INFINITY;
    const float *choose = scratch + X, *taken = scratch + 2 * X;
    /* taken: the chosen experts and those of excluded groups */
    float low = INFINITY, high = -INFINITY;
    for (int k = 0; k < K; k++) low = fminf(low, choose[sel[k]]);
    for (int e = 0; e < X; e++)
        if (taken[e] == 0.0f) high = fmaxf(high, choose[e]);
    float m = high == -INFINITY ? INFINITY : low - high;
    if (r->n_groups > 1 && r->n_groups_used < r->n_groups) {
        const int G = r->n_groups;
        const float *gscore = scratch + 3 * X, *gtaken = gscore + G;
        float glow = INFINITY, ghigh = -INFINITY;
        for (int g = 0; g < G; g++) {
            if (gtaken[g] != 0.0f)
                glow = fminf(glow, gscore[g]);
            else
                ghigh = fmaxf(ghigh, gscore[g]);
        }
        m = fminf(m, glow - ghigh);
    }
    return m;
}

int moe_route_capacity(float factor, int n_expert, int n_tokens, int k, int32_t *sel, float *w,
                       int32_t *counts) {
    if (!(factor > 0.0f)) return 0;
    const double cap_d = ceil((double)factor * n_tokens * k / n_expert);
    const int cap = cap_d < 1 ? 1 : cap_d > 2147483647.0 ? 2147483647 : (int)cap_d;
    memset(counts, 0, (size_t)n_expert * sizeof(int32_t));
    int dropped = 0;
    for (int i = 0; i < n_tokens * k; i++) {
        if (sel[i] < 0) continue;
        if (counts[sel[i]] >= cap) {
            sel[i] = -1;
            w[i] = 0.0f;
            dropped++;
        } else {
            counts[sel[i]]++;
        }
    }
    return dropped;
}

int moe_routing_describe(const moe_routing *r, char *buf, int n) {
    char groups[64] = "", scale[32] = "";
    if (r->n_groups > 1)
        snprintf(groups, sizeof groups, " in %d of %d groups", r->n_groups_used, r->n_groups);
    if (r->scale != 1.0f) snprintf(scale, sizeof scale, ", x%g", (double)r->scale);
    if (r->dense)
        return snprintf(buf, (size_t)n, "%s%s, dense: all %d experts%s%s",
                        r->gating == MOE_GATING_SOFTMAX ? "softmax" : "sigmoid",
                        r->bias ? ", bias-corrected" : "", r->n_expert,
                        r->norm ? ", normalised" : ", not normalised", scale);
    return snprintf(buf, (size_t)n, "%s%s, %d of %d experts%s%s%s",
                    r->gating == MOE_GATING_SOFTMAX ? "softmax" : "sigmoid",
                    r->bias ? ", bias-corrected" : "", r->n_used, r->n_expert, groups,
                    r->norm ? ", normalised" : ", not normalised", scale);
}
