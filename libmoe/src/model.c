/*
 * model.c - loading MoE models from GGUF: hyperparameters and weights, each
 * checked for presence, type and shape before use (see moe/model.h).
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "moe/model.h"
#include "moe/ops.h"

static const char *arch_names[MOE_ARCH_COUNT] = {
    [MOE_ARCH_LLAMA] = "llama",       [MOE_ARCH_QWEN2MOE] = "qwen2moe",
    [MOE_ARCH_QWEN3MOE] = "qwen3moe", [MOE_ARCH_OLMOE] = "olmoe",
    [MOE_ARCH_DEEPSEEK] = "deepseek", [MOE_ARCH_DEEPSEEK2] = "deepseek2",
};

const char *moe_arch_name(moe_arch a) {
    return (unsigned)a < MOE_ARCH_COUNT ? arch_names[a] : NULL;
}

int moe_arch_parse(const char *name, moe_arch *out) {
    for (int i = 0; i < MOE_ARCH_COUNT; i++) {
        if (!strcmp(name, arch_names[i])) {
            *out = (moe_arch)i;
            return 0;
        }
    }
    return MOE_ENOTSUP;
}

/* ---- Hyperparameters ------------------------------------------------------ */

/* What no GGUF key says, per architecture, as llama.cpp hard-codes it (the
 * rest zero until read). DeepSeek v1: softmax, no renormalisation; llama.cpp
 * reads expert_weights_scale but does not apply it (nor does the HF model).
 * DeepSeek v2/v3 read their gating, norm and scale (load_deepseek2_gating). */
static const moe_hparams arch_hparams[MOE_ARCH_COUNT] = {
    [MOE_ARCH_LLAMA] = {.arch = MOE_ARCH_LLAMA, .expert_norm = 1},
    [MOE_ARCH_QWEN2MOE] = {.arch = MOE_ARCH_QWEN2MOE,
                           .rope_neox = 1,
                           .qkv_bias = 1,
                           .shexp_gate = 1},
    [MOE_ARCH_QWEN3MOE] = {.arch = MOE_ARCH_QWEN3MOE,
                           .rope_neox = 1,
                           .expert_norm = 1,
                           .qk_norm = MOE_QK_NORM_HEAD},
    [MOE_ARCH_OLMOE] = {.arch = MOE_ARCH_OLMOE, .rope_neox = 1, .qk_norm = MOE_QK_NORM_FULL},
    [MOE_ARCH_DEEPSEEK] = {.arch = MOE_ARCH_DEEPSEEK},
    [MOE_ARCH_DEEPSEEK2] = {.arch = MOE_ARCH_DEEPSEEK2},
};

typedef struct loader {
    const moe_gguf *g;
    const moe_hparams *hp;
    const char *path;
    const char *arch;
    moe_err *err;
} loader;

/* Reads "<arch>.<key>" as u32 into *out; required keys fail when absent. */
static int get_u32(loader *l, const char *key, int *out, int required) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", l->arch, key);
    uint32_t v;
    int rc = moe_gguf_get_u32(l->g, full, &v);
    if (rc == MOE_ENOTFOUND && !required) return 0;
    if (rc < 0)
        return moe_err_set(l->err, rc == MOE_ENOTFOUND ? MOE_EFORMAT : rc, "%s: %s key '%s'",
                           l->path, rc == MOE_ENOTFOUND ? "missing required" : "bad value for",
                           full);
    if (v > (1u << 24)) /* no dimension of a real model comes near; keeps products in int */
        return moe_err_set(l->err, MOE_ERANGE, "%s: key '%s' = %u is out of range", l->path, full,
                           v);
    *out = (int)v;
    return 0;
}

static int get_f32(loader *l, const char *key, float *out, int required) {
    char full[128];
    snprintf(full, sizeof full, "%s.%s", l->arch, key);
    int rc = moe_gguf_get_f32(l->g, full, out);
    if (rc == MOE_ENOTFOUND && !required) return 0;
    if (rc < 0)
        return moe_err_set(l->err, rc == MOE_ENOTFOUND ? MOE_EFORMAT : rc, "%s: %s key '%s'",
                           l->path, rc == MOE_ENOTFOUND ? "missing required" : "bad value for",
                           full);
    return 0;
}

/* MLA dimensions (deepseek2). In llama.cpp's MLA files key_length and
 * value_length describe the latent cache (kv_lora_rank + n_rot and
 * kv_lora_rank); the per-head q/k and v sizes are key_length_mla and
 * value_length_mla. Legacy files (converted before llama.cpp split
 * attn_kv_b into attn_k_b/attn_v_b) have no _mla keys: key_length and
 * value_length are the per-head sizes and llama.cpp runs them as plain
 * multi-head attention through attn_kv_b (hp->mla_kv_b). */
static int load_mla(loader *l, moe_hparams *hp) {
    int rc;
    hp->is_mla = 1;
    if ((rc = get_u32(l, "attention.q_lora_rank", &hp->q_lora_rank, 0)) < 0) return rc;
    if ((rc = get_u32(l, "attention.kv_lora_rank", &hp->kv_lora_rank, 1)) < 0) return rc;
    if ((rc = get_u32(l, "rope.dimension_count", &hp->n_rot, 1)) < 0) return rc;
    if (hp->kv_lora_rank > 65536 || hp->q_lora_rank > 65536 || hp->n_rot > 65536)
        return moe_err_set(l->err, MOE_ERANGE, "%s: MLA ranks or rope dims out of range", l->path);
    int kmla = 0, vmla = 0;
    if ((rc = get_u32(l, "attention.key_length_mla", &kmla, 0)) < 0) return rc;
    if ((rc = get_u32(l, "attention.value_length_mla", &vmla, 0)) < 0) return rc;
    if (!kmla && !vmla) {
        if (!moe_gguf_find_tensor(l->g, "blk.0.attn_kv_b.weight"))
            return moe_err_set(l->err, MOE_EFORMAT,
                               "%s: %s.attention.key_length_mla/value_length_mla missing and no "
                               "legacy tensor 'blk.0.attn_kv_b.weight' either",
                               l->path, l->arch);
        hp->mla_kv_b = 1;
        if (hp->head_dim <= hp->n_rot || hp->kv_lora_rank < 32 || hp->kv_lora_rank % 32 ||
            hp->q_lora_rank % 32 || hp->n_head_kv != hp->n_head)
            return moe_err_set(l->err, MOE_ENOTSUP,
                               "%s: legacy MLA (attn_kv_b): kv_lora %d and q_lora %d must be "
                               "multiples of 32, key_length %d above the rope dims %d, "
                               "head_count_kv %d equal to head_count %d",
                               l->path, hp->kv_lora_rank, hp->q_lora_rank, hp->head_dim, hp->n_rot,
                               hp->n_head_kv, hp->n_head);
        return 0;
    }
    if (!kmla || !vmla)
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: %s.attention.key_length_mla and value_length_mla come together",
                           l->path, l->arch);
    if (hp->head_dim != hp->kv_lora_rank + hp->n_rot || hp->head_dim_v != hp->kv_lora_rank)
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: MLA key_length %d / value_length %d should be kv_lora_rank + "
                           "rope dims (%d) / kv_lora_rank (%d)",
                           l->path, hp->head_dim, hp->head_dim_v, hp->kv_lora_rank + hp->n_rot,
                           hp->kv_lora_rank);
    if (kmla <= hp->n_rot || hp->kv_lora_rank < 32 || hp->kv_lora_rank % 32 ||
        (kmla - hp->n_rot) % 32 || vmla % 32 || hp->q_lora_rank % 32)
        return moe_err_set(l->err, MOE_ENOTSUP,
                           "%s: MLA dims (q_lora %d, kv_lora %d, k %d, v %d, rope %d) must be "
                           "multiples of 32 beyond the rope part",
                           l->path, hp->q_lora_rank, hp->kv_lora_rank, kmla, vmla, hp->n_rot);
    hp->head_dim = kmla;
    hp->head_dim_v = vmla;
    return 0;
}

/* RoPE scaling: linear (rope.scaling.factor) and YaRN, as llama.cpp's
 * context defaults derive them (ext_factor 1, beta_fast 32, beta_slow 1). */
static int load_rope_scaling(loader *l, moe_hparams *hp) {
    int rc;
    char key[128];
    moe_gguf_str type = {"", 0};
    snprintf(key, sizeof key, "%s.rope.scaling.type", l->arch);
    if ((rc = moe_gguf_get_str(l->g, key, &type)) < 0 && rc != MOE_ENOTFOUND)
        return moe_err_set(l->err, rc, "%s: bad value for key '%s'", l->path, key);
    float factor = 0.0f;
    if ((rc = get_f32(l, "rope.scaling.factor", &factor, 0)) < 0) return rc;
    hp->rope_freq_scale = factor > 0.0f ? 1.0f / factor : 1.0f;
    hp->rope_attn_factor = 1.0f;
    hp->rope_beta_fast = 32.0f;
    hp->rope_beta_slow = 1.0f;
    hp->rope_n_ctx_orig = hp->n_ctx_train;
    if ((rc = get_u32(l, "rope.scaling.original_context_length", &hp->rope_n_ctx_orig, 0)) < 0)
        return rc;
    if (hp->rope_n_ctx_orig <= 0) hp->rope_n_ctx_orig = hp->n_ctx_train; /* as llama.cpp */
    float log_mul = 0.0f, attn_scale = 1.0f;
    if ((rc = get_f32(l, "rope.scaling.yarn_log_multiplier", &log_mul, 0)) < 0) return rc;
    if ((rc = get_f32(l, "rope.scaling.attn_factor", &attn_scale, 0)) < 0) return rc;
    if (moe_gguf_str_eq(type, "none")) hp->rope_freq_scale = 1.0f;
    if (moe_gguf_str_eq(type, "yarn")) {
        hp->rope_ext_factor = 1.0f;
    } else if (type.len && !moe_gguf_str_eq(type, "linear") && !moe_gguf_str_eq(type, "none")) {
        return moe_err_set(l->err, MOE_ENOTSUP, "%s: rope scaling type '%.*s' is not supported",
                           l->path, (int)type.len, type.ptr);
    }
    /* The attention factor, as llama.cpp's context derives it: converters
     * store yarn_log_multiplier as 0.1 * mscale_all_dim; the rope kernel
     * re-applies 1 + 0.1 ln(factor), which this cancels. */
    hp->rope_yarn_log_mul = log_mul / 0.1f;
    float attn = 1.0f;
    if (hp->rope_ext_factor != 0.0f) {
        const float sf = 1.0f / hp->rope_freq_scale;
#define MSCALE(s, m) ((s) <= 1.0f ? 1.0f : 1.0f + 0.1f * (m)*logf(s))
        if (hp->rope_yarn_log_mul != 0.0f) {
            const float all = hp->rope_yarn_log_mul;
            const float m = hp->arch == MOE_ARCH_DEEPSEEK2 && all != 1.0f ? all : 1.0f;
            attn = MSCALE(sf, m) / MSCALE(sf, all);
        } else {
            attn = MSCALE(sf, 1.0f);
        }
#undef MSCALE
        attn *= 1.0f / (1.0f + 0.1f * logf(sf));
    }
    hp->rope_attn_factor = attn * attn_scale;
    return 0;
}

/* The routing the hyperparameters give (no bias). */
static moe_routing hparams_routing(const moe_hparams *hp) {
    return (moe_routing){.gating = hp->gating,
                         .n_expert = hp->n_expert,
                         .n_used = hp->n_expert_used,
                         .norm = hp->expert_norm,
                         .scale = hp->expert_scale,
                         .n_groups = hp->n_expert_groups,
                         .n_groups_used = hp->n_group_used};
}

/* DeepSeek v2/v3 gating: softmax or sigmoid, the norm, the scale and the
 * expert groups from their keys. */
static int load_deepseek2_gating(loader *l, moe_hparams *hp) {
    int rc;
    uint32_t gf = 1;
    char key[128];
    snprintf(key, sizeof key, "%s.expert_gating_func", l->arch);
    if ((rc = moe_gguf_get_u32(l->g, key, &gf)) < 0 && rc != MOE_ENOTFOUND)
        return moe_err_set(l->err, rc, "%s: bad value for key '%s'", l->path, key);
    if (gf != 1 && gf != 2)
        return moe_err_set(l->err, MOE_ENOTSUP,
                           "%s: %s = %u is not supported (1 softmax, 2 sigmoid)", l->path, key, gf);
    hp->gating = gf == 2 ? MOE_GATING_SIGMOID : MOE_GATING_SOFTMAX;
    snprintf(key, sizeof key, "%s.expert_weights_norm", l->arch);
    if ((rc = moe_gguf_get_bool(l->g, key, &hp->expert_norm)) < 0 && rc != MOE_ENOTFOUND)
        return moe_err_set(l->err, rc, "%s: bad value for key '%s'", l->path, key);
    if (rc == MOE_ENOTFOUND) hp->expert_norm = 0;
    float sc = 0.0f;
    if ((rc = get_f32(l, "expert_weights_scale", &sc, 0)) < 0) return rc;
    hp->expert_scale = sc != 0.0f ? sc : 1.0f; /* 0: not applied */
    if ((rc = get_u32(l, "expert_group_count", &hp->n_expert_groups, 0)) < 0) return rc;
    return get_u32(l, "expert_group_used_count", &hp->n_group_used, 0);
}

static int load_hparams(loader *l, moe_hparams *hp) {
    int rc;
    *hp = arch_hparams[hp->arch];
    if ((rc = get_u32(l, "context_length", &hp->n_ctx_train, 1)) < 0) return rc;
    if ((rc = get_u32(l, "embedding_length", &hp->n_embd, 1)) < 0) return rc;
    if ((rc = get_u32(l, "block_count", &hp->n_layer, 1)) < 0) return rc;
    if ((rc = get_u32(l, "attention.head_count", &hp->n_head, 1)) < 0) return rc;
    hp->n_head_kv = hp->n_head;
    if ((rc = get_u32(l, "attention.head_count_kv", &hp->n_head_kv, 0)) < 0) return rc;
    if ((rc = get_u32(l, "expert_count", &hp->n_expert, 1)) < 0) return rc;
    if ((rc = get_u32(l, "expert_used_count", &hp->n_expert_used, 1)) < 0) return rc;
    if ((rc = get_f32(l, "attention.layer_norm_rms_epsilon", &hp->rms_eps, 1)) < 0) return rc;
    hp->rope_freq_base = 10000.0f;
    if ((rc = get_f32(l, "rope.freq_base", &hp->rope_freq_base, 0)) < 0) return rc;
    if ((rc = load_rope_scaling(l, hp)) < 0) return rc;

    if (hp->n_embd <= 0 || hp->n_layer <= 0 || hp->n_head <= 0 || hp->n_head_kv <= 0)
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: embedding_length, block_count and head counts must be > 0",
                           l->path);
    if (hp->n_layer > 4096 || hp->n_head > 4096 || hp->n_embd > (1 << 20) || hp->n_ctx_train < 1)
        return moe_err_set(l->err, MOE_ERANGE,
                           "%s: block_count %d, head_count %d, embedding_length %d or "
                           "context_length %d out of range",
                           l->path, hp->n_layer, hp->n_head, hp->n_embd, hp->n_ctx_train);
    if (hp->n_head % hp->n_head_kv)
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: head_count %d is not a multiple of head_count_kv %d", l->path,
                           hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((rc = get_u32(l, "attention.key_length", &hp->head_dim, 0)) < 0) return rc;
    int vlen = hp->head_dim;
    if ((rc = get_u32(l, "attention.value_length", &vlen, 0)) < 0) return rc;
    hp->head_dim_v = vlen;
    if (hp->arch == MOE_ARCH_DEEPSEEK2 && (rc = load_mla(l, hp)) < 0) return rc;
    if (vlen != hp->head_dim && !hp->is_mla)
        return moe_err_set(l->err, MOE_ENOTSUP,
                           "%s: attention.value_length %d != key_length %d is not supported "
                           "for this architecture",
                           l->path, vlen, hp->head_dim);
    if (!hp->is_mla) {
        hp->n_rot = hp->head_dim;
        if ((rc = get_u32(l, "rope.dimension_count", &hp->n_rot, 0)) < 0) return rc;
    }
    if (hp->head_dim <= 0 || hp->head_dim > 65536 || hp->head_dim_v <= 0 ||
        hp->head_dim_v > 65536 || hp->n_rot <= 0 || hp->n_rot > hp->head_dim || (hp->n_rot & 1))
        return moe_err_set(l->err, MOE_EFORMAT, "%s: bad head size %d / rotary dims %d", l->path,
                           hp->head_dim, hp->n_rot);
    if (hp->n_expert < 1 || hp->n_expert > 1024 || hp->n_expert_used < 1 ||
        hp->n_expert_used > hp->n_expert)
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: expert_count %d / expert_used_count %d out of range", l->path,
                           hp->n_expert, hp->n_expert_used);

    if (hp->arch == MOE_ARCH_DEEPSEEK || hp->arch == MOE_ARCH_DEEPSEEK2) {
        /* dense leading layers and shared experts (llama.cpp reads these
         * only for the DeepSeek family) */
        if ((rc = get_u32(l, "leading_dense_block_count", &hp->n_layer_dense_lead, 0)) < 0)
            return rc;
        if ((rc = get_u32(l, "expert_shared_count", &hp->n_expert_shared, 1)) < 0) return rc;
        if (hp->n_layer_dense_lead > 0 &&
            (rc = get_u32(l, "feed_forward_length", &hp->n_ff, 1)) < 0)
            return rc;
    }
    if (hp->n_layer_dense_lead > hp->n_layer)
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: leading_dense_block_count %d exceeds block_count %d", l->path,
                           hp->n_layer_dense_lead, hp->n_layer);

    hp->kq_scale = 1.0f / sqrtf((float)hp->head_dim);
    if (hp->is_mla) {
        /* llama.cpp pre-scales kq_scale by mscale^2 for YaRN (deepseek2.cpp):
         * attn_org = attn_factor * (1 + 0.1 ln(1 / freq_scale)),
         * mscale = attn_org * (1 + 0.1 * yarn_log_mul * ln(1 / freq_scale)) */
        const float lf = logf(1.0f / hp->rope_freq_scale);
        const float org = hp->rope_attn_factor * (1.0f + 0.1f * lf);
        const float mscale = org * (1.0f + 0.1f * hp->rope_yarn_log_mul * lf);
        hp->kq_scale = mscale * mscale / sqrtf((float)hp->head_dim);
    }

    hp->gating = MOE_GATING_SOFTMAX;
    hp->expert_scale = 1.0f;
    if (hp->arch == MOE_ARCH_DEEPSEEK2 && (rc = load_deepseek2_gating(l, hp)) < 0) return rc;
    /* routing: group limits as llama.cpp asserts them, then our own checks */
    if (hp->n_expert_groups > 1 && !(hp->n_expert_groups < hp->n_expert && hp->n_group_used >= 1 &&
                                     hp->n_group_used < hp->n_expert_groups))
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: expert_group_count %d / expert_group_used_count %d invalid for %d "
                           "experts (need 0 < used < groups < experts)",
                           l->path, hp->n_expert_groups, hp->n_group_used, hp->n_expert);
    moe_routing r = hparams_routing(hp);
    if (moe_routing_check(&r) < 0)
        return moe_err_set(l->err, MOE_EFORMAT,
                           "%s: routing of %d of %d experts in %d of %d groups (scale %g) is "
                           "invalid: groups must divide the experts and hold at least 2 each, "
                           "the allowed groups at least %d experts",
                           l->path, hp->n_expert_used, hp->n_expert, hp->n_group_used,
                           hp->n_expert_groups, (double)hp->expert_scale, hp->n_expert_used);
    return 0;
}

/* ---- Tensors --------------------------------------------------------------- */

/* Finds a tensor and checks its shape (dims given, trailing ones ignored);
 * returns 0 with t->data NULL if absent and optional. */
static int get_tensor(loader *l, moe_tensor *t, const char *name, int n_dims, const int64_t *ne,
                      int optional) {
    memset(t, 0, sizeof *t);
    const moe_gguf_tensor *gt = moe_gguf_find_tensor(l->g, name);
    if (!gt) {
        if (optional) return 0;
        return moe_err_set(l->err, MOE_EFORMAT, "%s: missing tensor '%s'", l->path, name);
    }
    for (int d = 0; d < 4; d++) {
        int64_t want = d < n_dims ? ne[d] : 1;
        if (gt->ne[d] != want)
            return moe_err_set(l->err, MOE_EFORMAT,
                               "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected "
                               "[%lld, %lld, %lld] (dim %d differs)",
                               l->path, name, (long long)gt->ne[0], (long long)gt->ne[1],
                               (long long)gt->ne[2], (long long)gt->ne[3], (long long)ne[0],
                               n_dims > 1 ? (long long)ne[1] : 1LL,
                               n_dims > 2 ? (long long)ne[2] : 1LL, d);
    }
    t->data = gt->data;
    t->type = gt->type;
    memcpy(t->ne, gt->ne, sizeof t->ne);
    return 0;
}

/* A weight used as a matmul operand: its row length must be a multiple of
 * 32 and of its type's block (256 for the K types; the GGUF reader checks
 * that too, this names the tensor's role). */
static int check_matmul(loader *l, const moe_tensor *t, const char *name) {
    const int64_t blk = (int64_t)moe_dtype_block_elems(t->type);
    if (t->data && (t->ne[0] % 32 || t->ne[0] % blk))
        return moe_err_set(l->err, MOE_ENOTSUP,
                           "%s: tensor '%s' row length %lld is not a multiple of 32 and of the "
                           "%s block (%lld)",
                           l->path, name, (long long)t->ne[0], moe_dtype_name(t->type),
                           (long long)blk);
    return 0;
}

static int check_f32(loader *l, const moe_tensor *t, const char *name) {
    if (t->data && t->type != MOE_DTYPE_F32)
        return moe_err_set(l->err, MOE_ENOTSUP, "%s: tensor '%s' must be f32, not %s", l->path,
                           name, moe_dtype_name(t->type));
    return 0;
}

#define T1(a) ((const int64_t[]){a})
#define T2(a, b) ((const int64_t[]){a, b})
#define T3(a, b, c) ((const int64_t[]){a, b, c})

/* ---- Routed experts: merged or one tensor per expert ----------------------- */

/* One expert weight of layer il in the per-expert layout: the n_expert 2-D
 * tensors "blk.<il>.<base>.<e>.weight", each (a x b), one type, become a
 * view of shape (a, b, n_expert) whose expert e is the e-th tensor's bytes
 * in the mapping (t->experts, a table in ptrs). No bytes are copied, so the
 * expert kernels run on the file as they do on the merged layout; the
 * tensors may lie anywhere (interleaved, in different split parts).
 * Why a table rather than a strided view where the spacing is constant: the
 * old converters wrote gate.E, down.E, up.E expert by expert, so even the
 * constant case is a stride of three matrices plus padding, which every
 * reader of the view (expert backend, residency) would have to honour, and
 * split parts break it anyway; the table covers every arrangement for
 * 3 x n_expert pointers a layer, and a kernel job takes a pointer per
 * expert already. */
static int get_expert_tensors(loader *l, moe_tensor *t, int il, const char *base, int64_t a,
                              int64_t b, const void **ptrs) {
    const int X = l->hp->n_expert;
    char name[128];
    memset(t, 0, sizeof *t);
    for (int e = 0; e < X; e++) {
        snprintf(name, sizeof name, "blk.%d.%s.%d.weight", il, base, e);
        const moe_gguf_tensor *gt = moe_gguf_find_tensor(l->g, name);
        if (!gt)
            return moe_err_set(l->err, MOE_EFORMAT,
                               "%s: missing tensor '%s' (per-expert layout: layer %d has "
                               "blk.%d.ffn_gate.0.weight, so needs all %d experts' tensors)",
                               l->path, name, il, il, X);
        if (gt->n_dims != 2 || gt->ne[0] != a || gt->ne[1] != b)
            return moe_err_set(l->err, MOE_EFORMAT,
                               "%s: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, "
                               "%lld]",
                               l->path, name, (long long)gt->ne[0], (long long)gt->ne[1],
                               (long long)gt->ne[2], (long long)a, (long long)b);
        if (e > 0 && gt->type != t->type)
            return moe_err_set(l->err, MOE_ENOTSUP,
                               "%s: tensor '%s' is %s, expert 0's is %s: one layer's experts "
                               "must share a type",
                               l->path, name, moe_dtype_name(gt->type), moe_dtype_name(t->type));
        t->type = gt->type;
        ptrs[e] = gt->data;
    }
    t->data = ptrs[0];
    t->ne[0] = a, t->ne[1] = b, t->ne[2] = X, t->ne[3] = 1;
    t->experts = ptrs;
    return 0;
}

/* Layer il's routed experts, merged (blk.N.ffn_gate_exps.weight) or, where
 * that is absent and blk.N.ffn_gate.0.weight exists, one tensor per expert.
 * The expert width comes from the tensors; every layer must agree. */
static int load_experts(loader *l, moe_model *m, int il) {
    moe_layer *L = &m->layers[il];
    const int64_t E = m->hp.n_embd, X = m->hp.n_expert;
    char name[128];
    int rc;
    snprintf(name, sizeof name, "blk.%d.ffn_gate_exps.weight", il);
    const moe_gguf_tensor *ge = moe_gguf_find_tensor(l->g, name);
    int per_expert = 0;
    if (!ge) {
        snprintf(name, sizeof name, "blk.%d.ffn_gate.0.weight", il);
        ge = moe_gguf_find_tensor(l->g, name);
        per_expert = ge != NULL;
        if (!ge) {
            snprintf(name, sizeof name, "blk.%d.ffn_gate_exps.weight", il);
            return moe_err_set(l->err, MOE_EFORMAT,
                               "%s: missing tensor '%s' (nor per-expert blk.%d.ffn_gate.0.weight)",
                               l->path, name, il);
        }
    }
    if (il > m->hp.n_layer_dense_lead &&
        per_expert != (m->expert_layout == MOE_EXPERT_LAYOUT_PER_EXPERT))
        return moe_err_set(l->err, MOE_ENOTSUP,
                           "%s: layer %d stores its experts %s, earlier layers %s: one layout "
                           "per file",
                           l->path, il, per_expert ? "per expert" : "merged",
                           per_expert ? "merged" : "per expert");
    m->expert_layout = per_expert ? MOE_EXPERT_LAYOUT_PER_EXPERT : MOE_EXPERT_LAYOUT_MERGED;
    if (!m->hp.n_ff_exp) m->hp.n_ff_exp = (int)ge->ne[1];
    const int64_t F = m->hp.n_ff_exp;
    if (per_expert) {
        if (!m->expert_ptrs) {
            m->expert_ptrs = calloc((size_t)m->hp.n_layer * 3 * (size_t)X, sizeof(void *));
            if (!m->expert_ptrs) return moe_err_set(l->err, MOE_ENOMEM, "out of memory");
        }
        const void **p = m->expert_ptrs + (size_t)il * 3 * (size_t)X;
        if ((rc = get_expert_tensors(l, &L->gate_exps, il, "ffn_gate", E, F, p)) < 0) return rc;
        if ((rc = get_expert_tensors(l, &L->up_exps, il, "ffn_up", E, F, p + X)) < 0) return rc;
        if ((rc = get_expert_tensors(l, &L->down_exps, il, "ffn_down", F, E, p + 2 * X)) < 0)
            return rc;
    } else {
        snprintf(name, sizeof name, "blk.%d.ffn_gate_exps.weight", il);
        if ((rc = get_tensor(l, &L->gate_exps, name, 3, T3(E, F, X), 0)) < 0) return rc;
        snprintf(name, sizeof name, "blk.%d.ffn_up_exps.weight", il);
        if ((rc = get_tensor(l, &L->up_exps, name, 3, T3(E, F, X), 0)) < 0) return rc;
        snprintf(name, sizeof name, "blk.%d.ffn_down_exps.weight", il);
        if ((rc = get_tensor(l, &L->down_exps, name, 3, T3(F, E, X), 0)) < 0) return rc;
    }
    const char *what = per_expert ? "ffn_{gate,up,down}.E" : "ffn_{gate,up,down}_exps";
    if ((rc = check_matmul(l, &L->gate_exps, what)) < 0 ||
        (rc = check_matmul(l, &L->up_exps, what)) < 0 ||
        (rc = check_matmul(l, &L->down_exps, what)) < 0)
        return rc;
    if (L->gate_exps.type != L->up_exps.type)
        return moe_err_set(l->err, MOE_ENOTSUP,
                           "%s: layer %d: expert gate (%s) and up (%s) weights must share a type",
                           l->path, il, moe_dtype_name(L->gate_exps.type),
                           moe_dtype_name(L->up_exps.type));
    return 0;
}

static int load_layer(loader *l, moe_model *m, int il) {
    const moe_hparams *hp = &m->hp;
    moe_layer *L = &m->layers[il];
    const int64_t E = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim,
                  kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    char name[128];
    int rc;
#define GET(field, suffix, nd, ne, opt)                                                            \
    do {                                                                                           \
        snprintf(name, sizeof name, "blk.%d.%s", il, suffix);                                      \
        if ((rc = get_tensor(l, &L->field, name, nd, ne, opt)) < 0) return rc;                     \
    } while (0)
#define MM(field, suffix, nd, ne, opt)                                                             \
    do {                                                                                           \
        GET(field, suffix, nd, ne, opt);                                                           \
        if ((rc = check_matmul(l, &L->field, name)) < 0) return rc;                                \
    } while (0)
#define VEC(field, suffix, n, opt)                                                                 \
    do {                                                                                           \
        GET(field, suffix, 1, T1(n), opt);                                                         \
        if ((rc = check_f32(l, &L->field, name)) < 0) return rc;                                   \
    } while (0)

    VEC(attn_norm, "attn_norm.weight", E, 0);
    if (hp->is_mla) {
        const int64_t R = hp->kv_lora_rank, H = hp->n_head, nope = hp->head_dim - hp->n_rot;
        if (hp->q_lora_rank) {
            MM(wq_a, "attn_q_a.weight", 2, T2(E, hp->q_lora_rank), 0);
            VEC(q_a_norm, "attn_q_a_norm.weight", hp->q_lora_rank, 0);
            MM(wq_b, "attn_q_b.weight", 2, T2(hp->q_lora_rank, qd), 0);
        } else {
            MM(wq, "attn_q.weight", 2, T2(E, qd), 0);
        }
        MM(wkv_a_mqa, "attn_kv_a_mqa.weight", 2, T2(E, R + hp->n_rot), 0);
        VEC(kv_a_norm, "attn_kv_a_norm.weight", R, 0);
        if (hp->mla_kv_b) {
            MM(wkv_b, "attn_kv_b.weight", 2, T2(R, H * (nope + hp->head_dim_v)), 0);
        } else {
            snprintf(name, sizeof name, "blk.%d.attn_k_b.weight", il);
            if (!moe_gguf_find_tensor(l->g, name)) {
                snprintf(name, sizeof name, "blk.%d.attn_kv_b.weight", il);
                if (moe_gguf_find_tensor(l->g, name))
                    return moe_err_set(l->err, MOE_ENOTSUP,
                                       "%s: tensor '%s' with the MLA keys "
                                       "(attention.key_length_mla): the absorbed layout needs "
                                       "attn_k_b/attn_v_b (llama.cpp refuses this mix too); "
                                       "reconvert the model with llama.cpp's convert_hf_to_gguf.py",
                                       l->path, name);
            }
            MM(wk_b, "attn_k_b.weight", 3, T3(nope, R, H), 0);
            MM(wv_b, "attn_v_b.weight", 3, T3(R, hp->head_dim_v, H), 0);
        }
        MM(wo, "attn_output.weight", 2, T2(H * hp->head_dim_v, E), 0);
    } else {
        MM(wq, "attn_q.weight", 2, T2(E, qd), 0);
        MM(wk, "attn_k.weight", 2, T2(E, kvd), 0);
        MM(wv, "attn_v.weight", 2, T2(E, kvd), 0);
        MM(wo, "attn_output.weight", 2, T2(qd, E), 0);
    }
    if (hp->qkv_bias) {
        VEC(bq, "attn_q.bias", qd, 0);
        VEC(bk, "attn_k.bias", kvd, 0);
        VEC(bv, "attn_v.bias", kvd, 0);
    }
    if (hp->qk_norm == MOE_QK_NORM_HEAD) {
        VEC(q_norm, "attn_q_norm.weight", hp->head_dim, 0);
        VEC(k_norm, "attn_k_norm.weight", hp->head_dim, 0);
    } else if (hp->qk_norm == MOE_QK_NORM_FULL) {
        VEC(q_norm, "attn_q_norm.weight", qd, 0);
        VEC(k_norm, "attn_k_norm.weight", kvd, 0);
    }
    VEC(ffn_norm, "ffn_norm.weight", E, 0);
    if (il < hp->n_layer_dense_lead) {
        const int64_t D = hp->n_ff;
        if (D <= 0)
            return moe_err_set(l->err, MOE_EFORMAT,
                               "%s: dense layer %d needs %s.feed_forward_length", l->path, il,
                               l->arch);
        MM(ffn_gate, "ffn_gate.weight", 2, T2(E, D), 0);
        MM(ffn_up, "ffn_up.weight", 2, T2(E, D), 0);
        MM(ffn_down, "ffn_down.weight", 2, T2(D, E), 0);
        if (L->ffn_gate.type != L->ffn_up.type)
            return moe_err_set(l->err, MOE_ENOTSUP,
                               "%s: layer %d: ffn_gate and ffn_up must share a type", l->path, il);
        return 0;
    }
    MM(gate_inp, "ffn_gate_inp.weight", 2, T2(E, hp->n_expert), 0);
    VEC(exp_probs_b, "exp_probs_b.bias", hp->n_expert, 1);

    if ((rc = load_experts(l, m, il)) < 0) return rc;

    if (hp->shexp_gate || hp->n_expert_shared > 0) {
        snprintf(name, sizeof name, "blk.%d.ffn_gate_shexp.weight", il);
        const moe_gguf_tensor *gs = moe_gguf_find_tensor(l->g, name);
        if (!gs) return moe_err_set(l->err, MOE_EFORMAT, "%s: missing tensor '%s'", l->path, name);
        if (!m->hp.n_ff_shexp) m->hp.n_ff_shexp = (int)gs->ne[1];
        const int64_t S = hp->n_ff_shexp;
        if (hp->shexp_gate) MM(gate_inp_shexp, "ffn_gate_inp_shexp.weight", 1, T1(E), 0);
        MM(gate_shexp, "ffn_gate_shexp.weight", 2, T2(E, S), 0);
        MM(up_shexp, "ffn_up_shexp.weight", 2, T2(E, S), 0);
        MM(down_shexp, "ffn_down_shexp.weight", 2, T2(S, E), 0);
        if (L->gate_shexp.type != L->up_shexp.type)
            return moe_err_set(l->err, MOE_ENOTSUP,
                               "%s: layer %d: shared expert gate and up must share a type", l->path,
                               il);
    }
#undef GET
#undef MM
#undef VEC
    return 0;
}

static void count_tensor(moe_model *m, const moe_tensor *t) {
    if (!t->data) return;
    size_t n = (size_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    m->n_params += n;
    m->n_bytes += moe_dtype_row_bytes(t->type, t->ne[0]) * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
}

/* The packed tables of every MoE layer's expert tensors of a type packed
 * here (moe_packed_usable) with at least one whole tile of rows
 * (the others keep packed NULL). */
static int packed_tables(moe_model *m) {
    const int X = m->hp.n_expert;
    m->packed_ptrs = calloc((size_t)m->hp.n_layer * 3 * (size_t)X, sizeof *m->packed_ptrs);
    if (!m->packed_ptrs) return MOE_ENOMEM;
    for (int il = 0; il < m->hp.n_layer; il++) {
        if (!moe_model_layer_is_moe(m, il)) continue;
        moe_layer *L = &m->layers[il];
        moe_tensor *t[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (int i = 0; i < 3; i++)
            if (t[i]->data && moe_packed_usable(t[i]->type) && t[i]->ne[1] >= MOE_Q8P_ROWS)
                t[i]->packed = m->packed_ptrs + ((size_t)il * 3 + (size_t)i) * (size_t)X;
    }
    return 0;
}

int moe_model_load(moe_model **out, const char *path, moe_err *err) {
    return moe_model_load_ex(out, path, MOE_REPACK_ALL, err);
}

/* MOE_REPACK_ALL's 2-D weights: those of the matmuls (moe__weight_job's
 * callers) in Q8_0 with a whole tile of rows, each packed into a copy
 * (packed: a table of one). Not tok_embd (looked up by row), nor MLA's
 * per-head wk_b / wv_b (read a head at a time). Returns 0, or MOE_ENOMEM
 * without room for the table (a copy that cannot be allocated leaves its
 * weight read as stored). */
static int pack_dense(moe_model *m) {
    enum { PER_LAYER = 14 };
    const int cap = m->hp.n_layer * PER_LAYER + 1;
    m->packed_dense = calloc((size_t)cap * 2, sizeof *m->packed_dense);
    if (!m->packed_dense) return MOE_ENOMEM;
    for (int il = 0; il <= m->hp.n_layer; il++) {
        moe_layer *L = il < m->hp.n_layer ? &m->layers[il] : NULL;
        moe_tensor *t[PER_LAYER] = {0};
        if (L) {
            moe_tensor *l[PER_LAYER] = {&L->wq,       &L->wk,        &L->wv,        &L->wo,
                                        &L->wq_a,     &L->wq_b,      &L->wkv_a_mqa, &L->wkv_b,
                                        &L->ffn_gate, &L->ffn_up,    &L->ffn_down,  &L->gate_shexp,
                                        &L->up_shexp, &L->down_shexp};
            memcpy(t, l, sizeof t);
        } else {
            t[0] = &m->output;
        }
        for (int i = 0; i < PER_LAYER; i++) {
            moe_tensor *w = t[i];
            if (!w || !w->data || !moe_packed_usable(w->type) || w->ne[1] < MOE_Q8P_ROWS ||
                w->ne[2] > 1)
                continue;
            const size_t len = moe_dtype_row_bytes(w->type, w->ne[0]) * (size_t)w->ne[1];
            void *p = moe__packed_alloc(len);
            if (!p) continue; /* read as stored, as an expert without its copy is */
            moe_packed_pack(w->type, w->data, p, w->ne[1], w->ne[0]);
            void **slot = m->packed_dense + 2 * m->n_packed_dense++;
            slot[0] = p, slot[1] = (void *)(uintptr_t)len; /* the copy and its size */
            w->packed = slot;
        }
    }
    return 0;
}

int moe_model_load_ex(moe_model **out, const char *path, moe_repack repack, moe_err *err) {
    *out = NULL;
    moe_model *m = calloc(1, sizeof *m);
    if (!m) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    int rc = moe_gguf_open_split(&m->gguf, path, err);
    if (rc < 0) goto fail;

    loader l = {.g = m->gguf, .hp = &m->hp, .path = path, .err = err};
    moe_gguf_str as;
    if (moe_gguf_get_str(m->gguf, "general.architecture", &as) < 0) {
        rc = moe_err_set(err, MOE_EFORMAT, "%s: missing key 'general.architecture'", path);
        goto fail;
    }
    char arch[64];
    snprintf(arch, sizeof arch, "%.*s", (int)(as.len < 63 ? as.len : 63), as.ptr);
    if (moe_arch_parse(arch, &m->hp.arch) < 0) {
        rc = moe_err_set(err, MOE_ENOTSUP,
                         "%s: architecture '%s' is not supported (supported: llama, qwen2moe, "
                         "qwen3moe, olmoe, deepseek, deepseek2)",
                         path, arch);
        goto fail;
    }
    l.arch = arch;
    if ((rc = load_hparams(&l, &m->hp)) < 0) goto fail;

    const moe_gguf_tensor *te = moe_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!te) {
        rc = moe_err_set(err, MOE_EFORMAT, "%s: missing tensor 'token_embd.weight'", path);
        goto fail;
    }
    m->hp.n_vocab = (int)te->ne[1];
    if (te->ne[1] < 1 || te->ne[1] > (1 << 24)) {
        rc = moe_err_set(err, MOE_ERANGE, "%s: vocabulary size %lld out of range", path,
                         (long long)te->ne[1]);
        goto fail;
    }
    const int64_t E = m->hp.n_embd, V = m->hp.n_vocab;
    if ((rc = get_tensor(&l, &m->tok_embd, "token_embd.weight", 2, T2(E, V), 0)) < 0) goto fail;
    if ((rc = get_tensor(&l, &m->output_norm, "output_norm.weight", 1, T1(E), 0)) < 0) goto fail;
    if ((rc = check_f32(&l, &m->output_norm, "output_norm.weight")) < 0) goto fail;
    if ((rc = get_tensor(&l, &m->output, "output.weight", 2, T2(E, V), 1)) < 0) goto fail;
    if (!m->output.data) m->output = m->tok_embd;
    if ((rc = check_matmul(&l, &m->output, "output.weight")) < 0) goto fail;

    m->layers = calloc((size_t)m->hp.n_layer, sizeof *m->layers);
    if (!m->layers) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto fail;
    }
    for (int il = 0; il < m->hp.n_layer; il++)
        if ((rc = load_layer(&l, m, il)) < 0) goto fail;

    m->bos_id = m->eos_id = -1;
    uint32_t id;
    if (moe_gguf_get_u32(m->gguf, "tokenizer.ggml.bos_token_id", &id) == 0 && id < (uint32_t)V)
        m->bos_id = (int)id;
    if (moe_gguf_get_u32(m->gguf, "tokenizer.ggml.eos_token_id", &id) == 0 && id < (uint32_t)V)
        m->eos_id = (int)id;

    for (int64_t i = 0; i < moe_gguf_n_tensors(m->gguf); i++) {
        const moe_gguf_tensor *t = moe_gguf_tensor_at(m->gguf, i);
        moe_tensor v = {.data = t->data, .type = t->type};
        memcpy(v.ne, t->ne, sizeof v.ne);
        count_tensor(m, &v);
    }
    /* off where no type is packed here (moe_packed_usable says which) */
    int any_packed = 0;
    for (uint32_t t = 0; t <= MOE_DTYPE_BF16 && !any_packed; t++)
        any_packed = moe_packed_usable((moe_dtype)t);
    m->repack = any_packed ? repack : MOE_REPACK_OFF;
    if (m->repack == MOE_REPACK_DENSE) {
        if (pack_dense(m) < 0) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the packed weights");
            goto fail;
        }
    } else if (m->repack != MOE_REPACK_OFF) {
        if (packed_tables(m) < 0 || moe__retired_create(m) < 0) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
            goto fail;
        }
        if (m->repack == MOE_REPACK_ALL) {
            if (pack_dense(m) < 0) {
                rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the packed weights");
                goto fail;
            }
            moe__pack_all_experts(m);
        }
    }
    *out = m;
    return 0;
fail:
    moe_model_free(m);
    return rc;
}

void moe_model_free(moe_model *m) {
    if (!m) return;
    for (int il = 0; m->packed_ptrs && il < m->hp.n_layer; il++) {
        const moe_layer *L = &m->layers[il];
        const moe_tensor *t[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (int i = 0; i < 3; i++)
            for (int e = 0; t[i]->packed && e < m->hp.n_expert; e++)
                moe__packed_free(t[i]->packed[e], moe_dtype_row_bytes(t[i]->type, t[i]->ne[0]) *
                                                      (size_t)t[i]->ne[1]);
    }
    free(m->packed_ptrs);
    moe__retired_free(m);
    for (int i = 0; i < m->n_packed_dense; i++)
        moe__packed_free(m->packed_dense[2 * i], (size_t)(uintptr_t)m->packed_dense[2 * i + 1]);
    free(m->packed_dense);
    free(m->expert_ptrs);
    free(m->layers);
    moe_gguf_close(m->gguf);
    free(m);
}

/* A tensor's bytes, or with elems its elements. */
static size_t tensor_size(const moe_tensor *t, int elems) {
    if (!t->data) return 0;
    const size_t rows = (size_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    return elems ? (size_t)t->ne[0] * rows : moe_dtype_row_bytes(t->type, t->ne[0]) * rows;
}

/* The weights one token uses, in bytes (the embedding row included) or
 * elements (the embedding lookup not: no multiply-adds). */
static size_t active_size(const moe_model *m, int elems) {
#define SZ(t) tensor_size(t, elems)
    const moe_hparams *hp = &m->hp;
    size_t b = SZ(&m->output) + SZ(&m->output_norm);
    if (!elems) b += moe_dtype_row_bytes(m->tok_embd.type, hp->n_embd);
    for (int il = 0; il < hp->n_layer; il++) {
        const moe_layer *L = &m->layers[il];
        b += SZ(&L->wq_a) + SZ(&L->q_a_norm) + SZ(&L->wq_b) + SZ(&L->wkv_a_mqa) +
             SZ(&L->kv_a_norm) + SZ(&L->wk_b) + SZ(&L->wv_b) + SZ(&L->wkv_b);
        b += SZ(&L->attn_norm) + SZ(&L->wq) + SZ(&L->wk) + SZ(&L->wv) + SZ(&L->wo) +
             SZ(&L->ffn_norm) + SZ(&L->gate_inp) + SZ(&L->gate_inp_shexp) + SZ(&L->gate_shexp) +
             SZ(&L->up_shexp) + SZ(&L->down_shexp) + SZ(&L->ffn_gate) + SZ(&L->ffn_up) +
             SZ(&L->ffn_down) + SZ(&L->exp_probs_b);
        if (!moe_model_layer_is_moe(m, il)) continue;
        size_t per_expert =
            (SZ(&L->gate_exps) + SZ(&L->up_exps) + SZ(&L->down_exps)) / (size_t)hp->n_expert;
        b += per_expert * (size_t)hp->n_expert_used;
    }
    return b;
#undef SZ
}

size_t moe_model_active_bytes(const moe_model *m) {
    return active_size(m, 0);
}

size_t moe_model_active_params(const moe_model *m) {
    return active_size(m, 1);
}

int moe_model_layer_is_moe(const moe_model *m, int il) {
    return il >= m->hp.n_layer_dense_lead;
}

void moe_model_routing(const moe_model *m, int il, moe_routing *r) {
    *r = hparams_routing(&m->hp);
    if (il >= 0 && il < m->hp.n_layer) r->bias = m->layers[il].exp_probs_b.data;
}

size_t moe_model_kv_bytes_per_token(const moe_model *m, moe_dtype kv_type, size_t *mha_equiv) {
    const moe_hparams *hp = &m->hp;
    const size_t L = (size_t)hp->n_layer, es = moe_dtype_block_bytes(kv_type);
    const size_t mha = L * (size_t)hp->n_head_kv * (size_t)(hp->head_dim + hp->head_dim_v) * es;
    if (mha_equiv)
        *mha_equiv = hp->is_mla
                         ? L * (size_t)hp->n_head * (size_t)(hp->head_dim + hp->head_dim_v) * es
                         : mha;
    if (hp->mla_kv_b) return mha; /* a per-head cache, as llama.cpp keeps for these */
    if (hp->is_mla) return L * (size_t)(hp->kv_lora_rank + hp->n_rot) * es;
    return mha;
}
