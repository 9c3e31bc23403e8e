/*
 * testmodel.c - random-weight MoE models in GGUF (see testmodel.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "moe/gguf.h"
#include "testmodel.h"
#include "hf_tokenizer.h"
#include "moe/vocab.h"
#include "testmodel_internal.h"

/* ---- Tensors ---------------------------------------------------------------------- */

typedef enum init_kind { INIT_UNIFORM, INIT_NORM, INIT_BIAS } init_kind;

/* The type a tensor of rows of ne0 is stored in when the model's type is t:
 * t itself where its block divides ne0, else the fallback llama-quantize
 * takes for such a tensor (llama-quant.cpp, tensor_type_fallback: Q4_K ->
 * Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL, Q2_K and Q3_K ->
 * Q4_0), and F16 where even that does not fit. */
static moe_dtype tensor_type(moe_dtype t, int64_t ne0) {
    if (ne0 % (int64_t)moe_dtype_block_elems(t) == 0) return t;
    switch (t) {
    case MOE_DTYPE_Q4_K:
        t = MOE_DTYPE_Q5_0;
        break;
    case MOE_DTYPE_Q5_K:
        t = MOE_DTYPE_Q5_1;
        break;
    case MOE_DTYPE_Q6_K:
        t = MOE_DTYPE_Q8_0;
        break;
    case MOE_DTYPE_IQ4_XS:
        t = MOE_DTYPE_IQ4_NL;
        break;
    case MOE_DTYPE_Q2_K:
    case MOE_DTYPE_Q3_K:
        t = MOE_DTYPE_Q4_0;
        break;
    default:
        break;
    }
    return ne0 % (int64_t)moe_dtype_block_elems(t) == 0 ? t : MOE_DTYPE_F16;
}

/* llama-quantize's layer rule for "more bits": the first and last eighth of
 * the layers and every third in between. */
static int use_more_bits(int il, int n) {
    return il < n / 8 || il >= 7 * n / 8 || (il - n / 8) % 3 == 2;
}

/* llama-quantize's mixes: name, base type. */
static const struct {
    moe_testmodel_mix mix;
    const char *name;
    moe_dtype base;
} mixes[] = {{MOE_MIX_Q2_K, "Q2_K", MOE_DTYPE_Q2_K},
             {MOE_MIX_Q3_K_M, "Q3_K_M", MOE_DTYPE_Q3_K},
             {MOE_MIX_Q4_K_M, "Q4_K_M", MOE_DTYPE_Q4_K},
             {MOE_MIX_Q5_K_M, "Q5_K_M", MOE_DTYPE_Q5_K}};
#define N_MIXES (sizeof mixes / sizeof mixes[0])

const char *moe_testmodel_mix_name(moe_testmodel_mix mix) {
    for (size_t j = 0; j < N_MIXES; j++)
        if (mixes[j].mix == mix) return mixes[j].name;
    return NULL;
}

moe_dtype moe_testmodel_mix_base(moe_testmodel_mix mix) {
    for (size_t j = 0; j < N_MIXES; j++)
        if (mixes[j].mix == mix) return mixes[j].base;
    return MOE_DTYPE_F32;
}

int moe_testmodel_mix_parse(const char *name, moe_testmodel_mix *mix) {
    for (size_t j = 0; j < N_MIXES; j++)
        if (!strcasecmp(name, mixes[j].name)) {
            *mix = mixes[j].mix;
            return 0;
        }
    return MOE_EINVAL;
}

/* llama.cpp's n_gqa() as it reads this model's keys (deepseek2's legacy
 * attn_kv_b files have a kv head per head). */
static int n_gqa(const moe_testmodel_params *o) {
    if (o->arch == MOE_ARCH_DEEPSEEK2 && o->mla_kv_b) return 1;
    return o->n_head / o->n_head_kv;
}

/* The ffn_down tensors layer il has: the dense one, or the experts' and
 * the shared experts' (deepseek, deepseek2, qwen2moe). */
static int n_ffn_down(const moe_testmodel_params *o, int il) {
    const int ds = o->arch == MOE_ARCH_DEEPSEEK || o->arch == MOE_ARCH_DEEPSEEK2;
    if (ds && il < o->n_layer_dense_lead) return 1;
    return ds || o->arch == MOE_ARCH_QWEN2MOE ? 2 : 1;
}

/* The layer llama-quantize's ffn_down rules take for tensor name of layer
 * il: il (from the name) in a model of more than one expert, else its
 * counter i_ffn_down, the ffn_down tensors before this one in its order
 * (by layer, then name: ffn_down_exps or ffn_down.E before ffn_down_shexp). */
static int ffn_down_layer(const moe_testmodel_params *o, int il, const char *name) {
    if (o->n_expert > 1) return il;
    int i = strstr(name, "ffn_down_shexp") != NULL;
    for (int l = 0; l < il; l++) i += n_ffn_down(o, l);
    return i;
}

/* The type llama-quantize's mix o->mix gives a matrix of the mix's base
 * type t, before the fallback for rows a type does not fit (tensor_type).
 * The rules of llama-quant.cpp llama_tensor_get_type_impl (llama.cpp as
 * tests/ref pins it: node-llama-cpp 3.22.1's release v0.5.0, commit
 * de3ff815) for the tensors these models have; not falcon, no imatrix.
 * n_expert is the model's expert count, il the layer in the name.
 *   output.weight            Q6_K (Q8_0 if its rows do not fit 256)
 *   attn_v, attn_kv_b        one a layer, so its counter i_attention_wv is il
 *                            and n_attention_wv n_layer: Q2_K: Q4_K if
 *                            n_gqa >= 4, else Q3_K; Q3_K_M: Q5_K for the
 *                            first 2, then Q4_K; Q4_K_M/Q5_K_M: Q6_K in the
 *                            more-bits layers. A llama of 80 layers with GQA
 *                            and not 8 experts (llama.cpp's 70B): Q3_K/Q4_K
 *                            -> Q5_K. Then Q8_0 whatever the mix with 8
 *                            experts.
 *   attn_k                   Q8_0 with 8 experts
 *   attn_output              with 8 experts Q5_K (not Q5_K_M); else Q2_K:
 *                            Q3_K, Q3_K_M: Q4_K
 *   ffn_down (dense, _exps,  Q2_K: Q3_K; Q3_K_M: Q5_K in the first
 *   _shexp, per expert)      n_layer/16 layers, then Q4_K; Q4_K_M/Q5_K_M:
 *                            Q6_K in the more-bits layers (the layer:
 *                            ffn_down_layer)
 *   the rest (token_embd,    t
 *   attn_q, attn_q_a/q_b,
 *   attn_kv_a_mqa, attn_k_b,
 *   attn_v_b, ffn_gate/up)
 * tests/integration/quant_mixes.sh compares them with llama-quantize's own.
 */
static moe_dtype mix_type(const moe_testmodel_params *o, const char *name, moe_dtype t,
                          int64_t ne0) {
    const moe_testmodel_mix m = o->mix;
    if (m == MOE_MIX_NONE || t == MOE_DTYPE_F32) return t;
    if (!strcmp(name, "output.weight")) return ne0 % 256 ? MOE_DTYPE_Q8_0 : MOE_DTYPE_Q6_K;
    int il = 0;
    if (sscanf(name, "blk.%d.", &il) != 1) return t;
    const int e8 = o->n_expert == 8;
    if (strstr(name, "attn_kv_b.weight") || strstr(name, "attn_v.weight")) {
        moe_dtype v = t;
        if (m == MOE_MIX_Q2_K)
            v = n_gqa(o) >= 4 ? MOE_DTYPE_Q4_K : MOE_DTYPE_Q3_K;
        else if (m == MOE_MIX_Q3_K_M)
            v = il < 2 ? MOE_DTYPE_Q5_K : MOE_DTYPE_Q4_K;
        else if (use_more_bits(il, o->n_layer))
            v = MOE_DTYPE_Q6_K;
        if (o->arch == MOE_ARCH_LLAMA && o->n_layer == 80 && o->n_head != o->n_head_kv && !e8 &&
            (v == MOE_DTYPE_Q3_K || v == MOE_DTYPE_Q4_K))
            v = MOE_DTYPE_Q5_K;
        return e8 ? MOE_DTYPE_Q8_0 : v;
    }
    if (strstr(name, "attn_k.weight")) return e8 ? MOE_DTYPE_Q8_0 : t;
    if (strstr(name, "attn_output.weight")) {
        if (e8) return m == MOE_MIX_Q5_K_M ? t : MOE_DTYPE_Q5_K;
        return m == MOE_MIX_Q2_K ? MOE_DTYPE_Q3_K : m == MOE_MIX_Q3_K_M ? MOE_DTYPE_Q4_K : t;
    }
    if (strstr(name, "ffn_down")) {
        const int i = ffn_down_layer(o, il, name);
        if (m == MOE_MIX_Q2_K) return MOE_DTYPE_Q3_K;
        if (m == MOE_MIX_Q3_K_M) return i < o->n_layer / 16 ? MOE_DTYPE_Q5_K : MOE_DTYPE_Q4_K;
        return use_more_bits(i, o->n_layer) ? MOE_DTYPE_Q6_K : t;
    }
    return t;
}

/* The data of tensor name (n_dims dims ne0 x ne1 x ne2, type t): values
 * from the seed and the name, stored in t. Returns a malloc'ed buffer (the
 * caller frees it) or NULL. */
static void *gen(const moe_testmodel_params *o, const char *name, moe_dtype t, int n_dims,
                 int64_t ne0, int64_t ne1, int64_t ne2, init_kind kind, float amp) {
    const size_t n = (size_t)ne0 * (size_t)(n_dims > 1 ? ne1 : 1) * (size_t)(n_dims > 2 ? ne2 : 1);
    float *f = malloc(n * sizeof(float));
    void *q = malloc(moe_dtype_row_bytes(t, ne0) * (n / (size_t)ne0) + 64);
    if (!f || !q) {
        free(f), free(q);
        return NULL;
    }
    uint64_t s = stream_for(o->seed, name);
    for (size_t i = 0; i < n; i++) {
        float u = urand(&s);
        f[i] = kind == INIT_NORM ? 1.0f + 0.1f * u : kind == INIT_BIAS ? 0.1f * u : amp * u;
    }
    const size_t rows = n / (size_t)ne0, rb = moe_dtype_row_bytes(t, ne0);
    for (size_t r = 0; r < rows; r++)
        moe_dtype_from_f32(t, f + r * (size_t)ne0, (char *)q + r * rb, ne0);
    free(f);
    return q;
}

/* The type tensor name of rows of ne0 is stored in when the model's type is
 * t: the mix's choice (mix_type), or t, where its block fits. */
static moe_dtype stored_type(const moe_testmodel_params *o, const char *name, moe_dtype t,
                             int64_t ne0) {
    return tensor_type(mix_type(o, name, t, ne0), ne0);
}

/* Adds a tensor of n_dims dims filled per kind: UNIFORM with amplitude amp,
 * NORM 1 + 0.1 u, BIAS 0.1 u. Stored as the model's type t (stored_type). */
static int add(moe_gguf_writer *w, const moe_testmodel_params *o, moe_err *err, const char *name,
               moe_dtype t, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2, init_kind kind,
               float amp) {
    const int64_t ne[3] = {ne0, ne1, ne2};
    t = stored_type(o, name, t, ne0);
    void *q = gen(o, name, t, n_dims, ne0, ne1, ne2, kind, amp);
    if (!q) return moe_err_set(err, MOE_ENOMEM, "out of memory for tensor %s", name);
    int rc = moe_gguf_writer_add_tensor(w, name, t, (uint32_t)n_dims, ne, q);
    free(q);
    return rc < 0 ? moe_err_set(err, rc, "cannot add tensor %s", name) : 0;
}

/* Layer il's routed experts: the merged tensors blk.N.ffn_{gate,down,up}_exps
 * or, with o->expert_per_tensor, the same values as one 2-D tensor per
 * expert, blk.N.ffn_{gate,down,up}.E.weight, expert by expert (the order
 * the pre-2024 Mixtral converter wrote): the same model in the old layout. */
static int add_experts(moe_gguf_writer *w, const moe_testmodel_params *o, moe_err *err, int il,
                       moe_dtype T, int64_t E, int64_t F, int64_t X, float aE, float aF) {
    static const char *const base[3] = {"ffn_gate", "ffn_down", "ffn_up"};
    const int64_t ne[3][2] = {{E, F}, {F, E}, {E, F}};
    const float amp[3] = {aE, aF, aE};
    void *q[3] = {NULL, NULL, NULL};
    moe_dtype t[3] = {T, T, T}; /* each as the merged tensor would be stored */
    char n[128];
    int rc = 0;
    for (int j = 0; j < 3 && !rc; j++) {
        snprintf(n, sizeof n, "blk.%d.%s_exps.weight", il, base[j]);
        if (!o->expert_per_tensor) {
            rc = add(w, o, err, n, T, 3, ne[j][0], ne[j][1], X, INIT_UNIFORM, amp[j]);
            continue;
        }
        t[j] = stored_type(o, n, T, ne[j][0]);
        q[j] = gen(o, n, t[j], 3, ne[j][0], ne[j][1], X, INIT_UNIFORM, amp[j]);
        if (!q[j]) rc = moe_err_set(err, MOE_ENOMEM, "out of memory for tensor %s", n);
    }
    for (int64_t e = 0; e < X && !rc && o->expert_per_tensor; e++) {
        for (int j = 0; j < 3 && !rc; j++) {
            const size_t bytes = moe_dtype_row_bytes(t[j], ne[j][0]) * (size_t)ne[j][1];
            snprintf(n, sizeof n, "blk.%d.%s.%lld.weight", il, base[j], (long long)e);
            rc = moe_gguf_writer_add_tensor(w, n, t[j], 2, ne[j],
                                            (const char *)q[j] + bytes * (size_t)e);
            if (rc < 0) rc = moe_err_set(err, rc, "cannot add tensor %s", n);
        }
    }
    free(q[0]), free(q[1]), free(q[2]);
    return rc;
}

/* ---- The model -------------------------------------------------------------------- */

static int set_keys(moe_gguf_writer *w, const moe_testmodel_params *o, moe_err *err) {
    const char *a = moe_arch_name(o->arch);
    char k[128];
    int rc = 0;
#define U32(key, v)                                                                                \
    do {                                                                                           \
        snprintf(k, sizeof k, "%s." key, a);                                                       \
        rc |= moe_gguf_writer_set_u32(w, k, (uint32_t)(v));                                        \
    } while (0)
#define F32(key, v)                                                                                \
    do {                                                                                           \
        snprintf(k, sizeof k, "%s." key, a);                                                       \
        rc |= moe_gguf_writer_set_f32(w, k, (v));                                                  \
    } while (0)
    rc |= moe_gguf_writer_set_str(w, "general.architecture", a);
    char name[64];
    const char *mix = moe_testmodel_mix_name(o->mix);
    snprintf(name, sizeof name, "moemesh-test-%s-%s%s", a, mix ? "q" : moe_dtype_name(o->dtype),
             mix ? mix + 1 : ""); /* q4_K_M, q2_K, ... */
    rc |= moe_gguf_writer_set_str(w, "general.name", name);
    /* a mix: its llama_ftype, as llama-quantize writes it (llama.cpp prints
     * "Q2_K - Medium" rather than the type most tensors have) */
    if (mix) rc |= moe_gguf_writer_set_u32(w, "general.file_type", (uint32_t)o->mix);
    U32("context_length", o->n_ctx);
    U32("embedding_length", o->n_embd);
    U32("block_count", o->n_layer);
    U32("feed_forward_length",
        o->arch == MOE_ARCH_DEEPSEEK || o->arch == MOE_ARCH_DEEPSEEK2 ? o->n_ff_dense : o->n_ff);
    U32("attention.head_count", o->n_head);
    U32("attention.head_count_kv", o->n_head_kv);
    if (o->arch == MOE_ARCH_DEEPSEEK2) {
        /* MLA as llama.cpp's converter writes it: the cache is one "head" of
         * latent + rope; the per-head sizes are the _mla keys */
        if (o->mla_kv_b) { /* legacy: per-head sizes, no _mla keys, a kv head per head */
            U32("attention.key_length", o->head_dim + o->rope_dim);
            U32("attention.value_length", o->head_dim_v);
            U32("attention.head_count_kv", o->n_head);
        } else {
            U32("attention.key_length", o->kv_lora_rank + o->rope_dim);
            U32("attention.value_length", o->kv_lora_rank);
            U32("attention.key_length_mla", o->head_dim + o->rope_dim);
            U32("attention.value_length_mla", o->head_dim_v);
        }
        U32("attention.q_lora_rank", o->q_lora_rank);
        U32("attention.kv_lora_rank", o->kv_lora_rank);
        U32("rope.dimension_count", o->rope_dim);
    } else {
        U32("attention.key_length", o->head_dim);
        U32("attention.value_length", o->head_dim);
        U32("rope.dimension_count", o->rope_dim > 0 ? o->rope_dim : o->head_dim);
    }
    F32("rope.freq_base", o->rope_base);
    F32("attention.layer_norm_rms_epsilon", o->rms_eps > 0.0f ? o->rms_eps : 1e-5f);
    U32("expert_count", o->n_expert);
    U32("expert_used_count", o->n_expert_used);
    U32("vocab_size", o->n_vocab);
    if (o->arch == MOE_ARCH_QWEN2MOE || o->arch == MOE_ARCH_QWEN3MOE)
        U32("expert_feed_forward_length", o->n_ff);
    if (o->arch == MOE_ARCH_QWEN2MOE) U32("expert_shared_feed_forward_length", o->n_ff_shexp);
    if (o->arch == MOE_ARCH_DEEPSEEK2) {
        U32("leading_dense_block_count", o->n_layer_dense_lead);
        U32("expert_feed_forward_length", o->n_ff);
        U32("expert_shared_count", o->n_expert_shared);
        F32("expert_weights_scale", o->expert_scale);
        snprintf(k, sizeof k, "%s.expert_weights_norm", a);
        rc |= moe_gguf_writer_set_bool(w, k, o->expert_norm);
        U32("expert_gating_func", o->gating_sigmoid ? 2 : 1);
        if (o->n_groups > 1) {
            U32("expert_group_count", o->n_groups);
            U32("expert_group_used_count", o->n_groups_used);
        }
        if (o->yarn_factor > 1.0f) {
            snprintf(k, sizeof k, "%s.rope.scaling.type", a);
            rc |= moe_gguf_writer_set_str(w, k, "yarn");
            F32("rope.scaling.factor", o->yarn_factor);
            U32("rope.scaling.original_context_length", o->yarn_orig_ctx);
            F32("rope.scaling.yarn_log_multiplier", 0.1f * o->yarn_mscale_all);
        }
    }
    if (o->arch == MOE_ARCH_DEEPSEEK) {
        U32("leading_dense_block_count", o->n_layer_dense_lead);
        U32("expert_feed_forward_length", o->n_ff);
        U32("expert_shared_count", o->n_expert_shared);
        F32("expert_weights_scale", 1.0f);
    }
#undef U32
#undef F32
    return rc < 0 ? moe_err_set(err, MOE_ENOMEM, "cannot add hyperparameters") : 0;
}

/* The legacy deepseek2 attn_kv_b (kv_lora_rank -> n_head x (nope + v)) with
 * the values attn_k_b and attn_v_b get in the MLA layout: head h's rows are
 * its k_nope rows (attn_k_b[h] transposed) then its v rows (attn_v_b[h]),
 * as llama.cpp's converter splits them apart. The same model in the layout
 * files converted before that split have. */
static int add_kv_b(moe_gguf_writer *w, const moe_testmodel_params *o, moe_err *err, int il,
                    moe_dtype T, int64_t H, int64_t R, int64_t Dv, float aR) {
    const int64_t nope = o->head_dim, KVB = nope + Dv, ne[2] = {R, H * KVB};
    char n[128], kvn[128];
    snprintf(kvn, sizeof kvn, "blk.%d.attn_kv_b.weight", il);
    T = stored_type(o, kvn, T, R);
    snprintf(n, sizeof n, "blk.%d.attn_k_b.weight", il);
    float *kb = gen(o, n, MOE_DTYPE_F32, 3, nope, R, H, INIT_UNIFORM, sqrtf(3.0f / (float)nope));
    snprintf(n, sizeof n, "blk.%d.attn_v_b.weight", il);
    float *vb = gen(o, n, MOE_DTYPE_F32, 3, R, Dv, H, INIT_UNIFORM, aR);
    float *kv = malloc((size_t)(R * H * KVB) * sizeof(float));
    void *q = malloc(moe_dtype_row_bytes(T, R) * (size_t)(H * KVB));
    int rc = 0;
    if (!kb || !vb || !kv || !q) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for attn_kv_b");
        goto done;
    }
    for (int64_t h = 0; h < H; h++)
        for (int64_t r = 0; r < R; r++) {
            for (int64_t i = 0; i < nope; i++)
                kv[(h * KVB + i) * R + r] = kb[(h * R + r) * nope + i];
            for (int64_t j = 0; j < Dv; j++)
                kv[(h * KVB + nope + j) * R + r] = vb[(h * Dv + j) * R + r];
        }
    for (int64_t row = 0; row < H * KVB; row++)
        moe_dtype_from_f32(T, kv + row * R, (char *)q + moe_dtype_row_bytes(T, R) * (size_t)row, R);
    if ((rc = moe_gguf_writer_add_tensor(w, kvn, T, 2, ne, q)) < 0)
        rc = moe_err_set(err, rc, "cannot add tensor %s", kvn);
done:
    free(q), free(kv), free(vb), free(kb);
    return rc;
}

static int add_tensors(moe_gguf_writer *w, const moe_testmodel_params *o, moe_err *err) {
    const moe_dtype T = o->dtype, F32 = MOE_DTYPE_F32;
    const int64_t E = o->n_embd, V = o->n_vocab, qd = (int64_t)o->n_head * o->head_dim,
                  kvd = (int64_t)o->n_head_kv * o->head_dim, F = o->n_ff, X = o->n_expert,
                  S = o->n_ff_shexp;
    const float aE = sqrtf(3.0f / (float)E), aQ = sqrtf(3.0f / (float)qd),
                aF = sqrtf(3.0f / (float)F);
    int rc = 0;
    rc = rc ? rc : add(w, o, err, "token_embd.weight", T, 2, E, V, 1, INIT_UNIFORM, 1.0f);
    for (int il = 0; il < o->n_layer && !rc; il++) {
        char n[128];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
        rc = rc ? rc : add(w, o, err, NAME("attn_norm.weight"), F32, 1, E, 1, 1, INIT_NORM, 0);
        if (o->arch == MOE_ARCH_DEEPSEEK2) {
            const int64_t H = o->n_head, Dk = o->head_dim + o->rope_dim, R = o->kv_lora_rank,
                          QL = o->q_lora_rank, Dv = o->head_dim_v;
            const float aR = sqrtf(3.0f / (float)R);
            if (QL) {
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_q_a.weight"), T, 2, E, QL, 1, INIT_UNIFORM, aE);
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_q_a_norm.weight"), F32, 1, QL, 1, 1, INIT_NORM,
                              0);
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_q_b.weight"), T, 2, QL, H * Dk, 1, INIT_UNIFORM,
                              sqrtf(3.0f / (float)QL));
            } else {
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_q.weight"), T, 2, E, H * Dk, 1, INIT_UNIFORM,
                              aE);
            }
            rc = rc ? rc
                    : add(w, o, err, NAME("attn_kv_a_mqa.weight"), T, 2, E, R + o->rope_dim, 1,
                          INIT_UNIFORM, aE);
            rc = rc ? rc
                    : add(w, o, err, NAME("attn_kv_a_norm.weight"), F32, 1, R, 1, 1, INIT_NORM, 0);
            if (o->mla_kv_b) {
                rc = rc ? rc : add_kv_b(w, o, err, il, T, H, R, Dv, aR);
            } else {
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_k_b.weight"), T, 3, o->head_dim, R, H,
                              INIT_UNIFORM, sqrtf(3.0f / (float)o->head_dim));
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_v_b.weight"), T, 3, R, Dv, H, INIT_UNIFORM, aR);
            }
            rc = rc ? rc
                    : add(w, o, err, NAME("attn_output.weight"), T, 2, H * Dv, E, 1, INIT_UNIFORM,
                          sqrtf(3.0f / (float)(H * Dv)));
        } else {
            rc = rc ? rc : add(w, o, err, NAME("attn_q.weight"), T, 2, E, qd, 1, INIT_UNIFORM, aE);
            rc = rc ? rc : add(w, o, err, NAME("attn_k.weight"), T, 2, E, kvd, 1, INIT_UNIFORM, aE);
            rc = rc ? rc : add(w, o, err, NAME("attn_v.weight"), T, 2, E, kvd, 1, INIT_UNIFORM, aE);
            if (o->arch == MOE_ARCH_QWEN2MOE) {
                rc = rc ? rc : add(w, o, err, NAME("attn_q.bias"), F32, 1, qd, 1, 1, INIT_BIAS, 0);
                rc = rc ? rc : add(w, o, err, NAME("attn_k.bias"), F32, 1, kvd, 1, 1, INIT_BIAS, 0);
                rc = rc ? rc : add(w, o, err, NAME("attn_v.bias"), F32, 1, kvd, 1, 1, INIT_BIAS, 0);
            }
            if (o->arch == MOE_ARCH_QWEN3MOE) {
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_q_norm.weight"), F32, 1, o->head_dim, 1, 1,
                              INIT_NORM, 0);
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_k_norm.weight"), F32, 1, o->head_dim, 1, 1,
                              INIT_NORM, 0);
            }
            if (o->arch == MOE_ARCH_OLMOE) {
                rc =
                    rc ? rc
                       : add(w, o, err, NAME("attn_q_norm.weight"), F32, 1, qd, 1, 1, INIT_NORM, 0);
                rc = rc ? rc
                        : add(w, o, err, NAME("attn_k_norm.weight"), F32, 1, kvd, 1, 1, INIT_NORM,
                              0);
            }
            rc = rc ? rc
                    : add(w, o, err, NAME("attn_output.weight"), T, 2, qd, E, 1, INIT_UNIFORM, aQ);
        }
        rc = rc ? rc : add(w, o, err, NAME("ffn_norm.weight"), F32, 1, E, 1, 1, INIT_NORM, 0);
        if ((o->arch == MOE_ARCH_DEEPSEEK || o->arch == MOE_ARCH_DEEPSEEK2) &&
            il < o->n_layer_dense_lead) {
            const int64_t D = o->n_ff_dense;
            const float aD = sqrtf(3.0f / (float)D);
            rc = rc ? rc : add(w, o, err, NAME("ffn_gate.weight"), T, 2, E, D, 1, INIT_UNIFORM, aE);
            rc = rc ? rc : add(w, o, err, NAME("ffn_down.weight"), T, 2, D, E, 1, INIT_UNIFORM, aD);
            rc = rc ? rc : add(w, o, err, NAME("ffn_up.weight"), T, 2, E, D, 1, INIT_UNIFORM, aE);
            continue;
        }
        /* router logits of std ~3: wide margins between experts */
        rc = rc ? rc
                : add(w, o, err, NAME("ffn_gate_inp.weight"), F32, 2, E, X, 1, INIT_UNIFORM,
                      3.0f * aE);
        if (o->expert_bias)
            rc = rc ? rc
                    : add(w, o, err, NAME("exp_probs_b.bias"), F32, 1, X, 1, 1, INIT_UNIFORM, 0.3f);
        rc = rc ? rc : add_experts(w, o, err, il, T, E, F, X, aE, aF);
        if (o->arch == MOE_ARCH_DEEPSEEK || o->arch == MOE_ARCH_DEEPSEEK2) {
            const int64_t SD = (int64_t)o->n_ff * o->n_expert_shared;
            const float aS = sqrtf(3.0f / (float)SD);
            rc = rc ? rc
                    : add(w, o, err, NAME("ffn_gate_shexp.weight"), T, 2, E, SD, 1, INIT_UNIFORM,
                          aE);
            rc = rc ? rc
                    : add(w, o, err, NAME("ffn_down_shexp.weight"), T, 2, SD, E, 1, INIT_UNIFORM,
                          aS);
            rc = rc ? rc
                    : add(w, o, err, NAME("ffn_up_shexp.weight"), T, 2, E, SD, 1, INIT_UNIFORM, aE);
        }
        if (o->arch == MOE_ARCH_QWEN2MOE) {
            const float aS = sqrtf(3.0f / (float)S);
            rc = rc ? rc
                    : add(w, o, err, NAME("ffn_gate_inp_shexp.weight"), F32, 1, E, 1, 1,
                          INIT_UNIFORM, aE);
            rc =
                rc ? rc
                   : add(w, o, err, NAME("ffn_gate_shexp.weight"), T, 2, E, S, 1, INIT_UNIFORM, aE);
            rc =
                rc ? rc
                   : add(w, o, err, NAME("ffn_down_shexp.weight"), T, 2, S, E, 1, INIT_UNIFORM, aS);
            rc = rc ? rc
                    : add(w, o, err, NAME("ffn_up_shexp.weight"), T, 2, E, S, 1, INIT_UNIFORM, aE);
        }
#undef NAME
    }
    rc = rc ? rc : add(w, o, err, "output_norm.weight", F32, 1, E, 1, 1, INIT_NORM, 0);
    rc = rc ? rc : add(w, o, err, "output.weight", T, 2, E, V, 1, INIT_UNIFORM, 2.0f * aE);
    return rc;
}

int moe_testmodel_defaults(moe_testmodel_params *p, moe_arch arch, const char *preset) {
    memset(p, 0, sizeof *p);
    p->arch = arch;
    p->dtype = MOE_DTYPE_F32;
    p->seed = 1;
    p->rope_base = 10000.0f;
    p->rms_eps = 1e-5f;
    int v2 = 0;
    if (arch == MOE_ARCH_DEEPSEEK2) { /* MLA presets are tiny only, for now */
        if (!strcmp(preset, "tiny-v2"))
            v2 = 1;
        else if (strcmp(preset, "tiny"))
            return MOE_EINVAL;
        preset = "tiny";
    }
    if (!strcmp(preset, "tiny")) {
        p->n_embd = 128, p->n_layer = 2, p->n_head = 4, p->n_head_kv = 2, p->head_dim = 32;
        p->n_ff = 96, p->n_ff_shexp = 160, p->n_expert = 8, p->n_expert_used = 2;
        p->n_vocab = 512, p->n_ctx = 512;
    } else if (!strcmp(preset, "bench")) {
        p->n_embd = 1024, p->n_layer = 8, p->n_head = 8, p->n_head_kv = 2, p->head_dim = 128;
        p->n_ff = 2816, p->n_ff_shexp = 2816, p->n_expert = 8, p->n_expert_used = 2;
        p->n_vocab = 4096, p->n_ctx = 4096;
    } else {
        return MOE_EINVAL;
    }
    if (arch == MOE_ARCH_OLMOE) p->n_head_kv = p->n_head; /* OLMoE has no GQA */
    p->expert_scale = 1.0f;
    if (arch == MOE_ARCH_DEEPSEEK2) {
        /* MLA: 4 heads of (32 no-rope + 32 rope) q/k dims, 32 v dims, latent 64 */
        p->n_layer += 1;
        p->n_layer_dense_lead = 1;
        p->n_head = 4;
        p->n_head_kv = 1;
        p->head_dim = 32;
        p->rope_dim = 32;
        p->head_dim_v = 32;
        p->kv_lora_rank = 64;
        p->q_lora_rank = v2 ? 0 : 64;
        p->n_expert = 16;
        p->n_expert_used = 4;
        p->n_ff = 32;
        p->n_expert_shared = 1;
        p->n_ff_dense = 256;
        p->gating_sigmoid = !v2;
        p->expert_bias = !v2;
        p->n_groups = v2 ? 0 : 4;
        p->n_groups_used = v2 ? 0 : 2;
        p->expert_norm = !v2;
        p->expert_scale = v2 ? 1.0f : 2.5f;
        p->yarn_factor = v2 ? 0.0f : 4.0f;
        p->yarn_orig_ctx = 128;
        p->yarn_mscale_all = 0.707f;
    }
    if (arch == MOE_ARCH_DEEPSEEK) {
        /* fine-grained experts, shared experts, a leading dense layer */
        p->n_layer += 1;
        p->n_layer_dense_lead = 1;
        p->n_expert *= 2;
        p->n_expert_used *= 2;
        p->n_ff = p->n_ff >= 64 ? p->n_ff / 2 : 32;
        p->n_ff -= p->n_ff % 32;
        p->n_expert_shared = 2;
        p->n_ff_dense = 2 * p->n_ff * p->n_expert_used;
    }
    return 0;
}

/* Writes the model; hv: the vocabulary of o->tokenizer_json (n_vocab already set), or NULL. */
static int testmodel_write(const moe_testmodel_params *o, const moe__hf_vocab *hv, const char *path,
                           moe_err *err) {
    if (!moe_arch_name(o->arch)) return moe_err_set(err, MOE_EINVAL, "unknown architecture");
    if (!moe_dtype_supported(o->dtype)) return moe_err_set(err, MOE_EINVAL, "unknown dtype");
    if (o->mix != MOE_MIX_NONE && !moe_testmodel_mix_name(o->mix))
        return moe_err_set(err, MOE_EINVAL, "unknown mix %d", (int)o->mix);
    if (o->mix != MOE_MIX_NONE && moe_testmodel_mix_base(o->mix) != o->dtype)
        return moe_err_set(err, MOE_EINVAL, "the %s mix needs dtype %s",
                           moe_testmodel_mix_name(o->mix),
                           moe_dtype_name(moe_testmodel_mix_base(o->mix)));
    const int dims[] = {o->n_embd,        o->n_layer, o->n_head,     o->n_head_kv,
                        o->head_dim,      o->n_ff,    o->n_ff_shexp, o->n_expert,
                        o->n_expert_used, o->n_vocab, o->n_ctx};
    for (size_t j = 0; j < sizeof dims / sizeof dims[0]; j++)
        if (dims[j] < 1) return moe_err_set(err, MOE_EINVAL, "every dimension must be >= 1");
    if (o->n_expert > 256 || o->n_layer > 256 || o->n_vocab > 1 << 20 || o->n_embd > 1 << 16 ||
        o->n_ff > 1 << 18 || o->n_ff_shexp > 1 << 18 || o->n_head > 1024 || o->head_dim > 1024 ||
        o->n_ctx > 1 << 24 || o->n_ff_dense > 1 << 18 || o->n_expert_shared > 64 ||
        o->kv_lora_rank > 1 << 16 || o->q_lora_rank > 1 << 16 || o->rope_dim > 1024 ||
        o->head_dim_v > 1024)
        return moe_err_set(err, MOE_EINVAL, "dimensions too large for a test model");
    if (o->arch == MOE_ARCH_DEEPSEEK2 &&
        (o->head_dim % 32 || o->kv_lora_rank < 32 || o->kv_lora_rank % 32 || o->q_lora_rank % 32 ||
         o->q_lora_rank < 0 || o->rope_dim < 2 || o->rope_dim % 2 || o->head_dim_v % 32 ||
         o->head_dim_v < 32 || o->n_head_kv != 1 || (o->n_layer >= 26 && o->n_layer <= 27)))
        return moe_err_set(err, MOE_EINVAL,
                           "deepseek2 needs kv/q LoRA ranks, the no-rope head dim and v head dims "
                           "that are multiples of 32, an even rope dim, one kv head, and not 26/27 "
                           "layers (llama.cpp "
                           "treats those as V2-Lite)");
    if (o->n_embd % 32 || o->n_ff % 32 || o->n_ff_shexp % 32 || (o->n_head * o->head_dim) % 32)
        return moe_err_set(
            err, MOE_EINVAL,
            "n_embd, n_ff, n_ff_shexp and n_head x head_dim must be multiples of 32");
    if (o->head_dim % 2) return moe_err_set(err, MOE_EINVAL, "head_dim must be even");
    if (o->arch != MOE_ARCH_DEEPSEEK2 && o->rope_dim &&
        (o->rope_dim < 2 || o->rope_dim % 2 || o->rope_dim > o->head_dim ||
         (o->arch == MOE_ARCH_LLAMA && o->rope_dim != o->head_dim)))
        return moe_err_set(err, MOE_EINVAL,
                           "rope dims must be even and at most head_dim (llama: equal to it; "
                           "llama.cpp refuses partial rotary there)");
    if (!(o->rope_base > 0.0f) || !(o->rms_eps >= 0.0f) || !(o->expert_scale >= 0.0f))
        return moe_err_set(err, MOE_EINVAL, "rope base must be > 0, rms eps and expert scale >= 0");
    if (o->n_head % o->n_head_kv)
        return moe_err_set(err, MOE_EINVAL, "n_head must be a multiple of n_head_kv");
    if (o->arch == MOE_ARCH_OLMOE && o->n_head_kv != o->n_head)
        return moe_err_set(
            err, MOE_EINVAL,
            "olmoe needs n_head_kv == n_head (its k norm spans n_embd in llama.cpp)");
    if (o->n_expert_used > o->n_expert)
        return moe_err_set(err, MOE_EINVAL, "n_expert_used exceeds n_expert");
    if (o->n_groups > 1) {
        moe_routing r = {.n_expert = o->n_expert,
                         .n_used = o->n_expert_used,
                         .scale = 1,
                         .n_groups = o->n_groups,
                         .n_groups_used = o->n_groups_used};
        if (moe_routing_check(&r) < 0 || o->n_groups_used >= o->n_groups)
            return moe_err_set(err, MOE_EINVAL,
                               "expert groups: %d experts in %d groups with %d used cannot give %d",
                               o->n_expert, o->n_groups, o->n_groups_used, o->n_expert_used);
    }
    if ((o->arch == MOE_ARCH_DEEPSEEK || o->arch == MOE_ARCH_DEEPSEEK2) &&
        (o->n_layer_dense_lead < 0 || o->n_layer_dense_lead >= o->n_layer ||
         o->n_expert_shared < 1 || o->n_ff_dense < 32 || o->n_ff_dense % 32))
        return moe_err_set(
            err, MOE_EINVAL,
            "deepseek needs 0 <= dense lead layers < n_layer, >= 1 shared expert and "
            "a dense width that is a multiple of 32");
    if (o->n_vocab < 300)
        return moe_err_set(err, MOE_EINVAL,
                           "n_vocab must be >= 300 (256 bytes + merges + specials)");
    if (o->n_expert > 256 || o->n_layer > 256 || o->n_vocab > 1 << 20 || o->n_embd > 1 << 16 ||
        o->n_ff > 1 << 18 || o->n_ff_shexp > 1 << 18 || o->n_head > 1024 || o->head_dim > 1024 ||
        o->n_ctx > 1 << 24)
        return moe_err_set(err, MOE_EINVAL, "dimensions too large for a test model");

    moe_gguf_writer *w = moe_gguf_writer_create();
    if (!w) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    int rc = set_keys(w, o, err);
    if (!rc) rc = moe__testmodel_add_vocab(w, o, hv, err);
    if (!rc) rc = add_tensors(w, o, err);
    if (o->mla_kv_b && o->arch != MOE_ARCH_DEEPSEEK2)
        rc = moe_err_set(err, MOE_EINVAL, "attn_kv_b is for deepseek2");
    if (!rc && (o->split_max_tensors > 0 || o->split_parts > 0)) {
        int64_t nt = moe_gguf_writer_n_tensors(w), k = o->split_parts;
        int max = o->split_max_tensors > 0 ? o->split_max_tensors : (int)((nt + k - 1) / k);
        if (o->split_parts > 0 && (nt + max - 1) / max != k)
            rc = moe_err_set(err, MOE_EINVAL, "%lld tensors cannot make %lld parts of equal count",
                             (long long)nt, (long long)k);
        else
            rc = moe_gguf_writer_write_split(w, path, max, err); /* parts written */
    } else if (!rc) {
        rc = moe_gguf_writer_write(w, path, err);
    }
    moe_gguf_writer_destroy(w);
    return rc;
}

int moe_testmodel_write(const moe_testmodel_params *o, const char *path, moe_err *err) {
    if (!o->tokenizer_json) return testmodel_write(o, NULL, path, err);
    moe__hf_vocab hv;
    int rc = moe__hf_vocab_load(&hv, o->tokenizer_json, err);
    if (rc) return rc;
    moe_testmodel_params p = *o;
    p.n_vocab = hv.n_tokens;
    rc = testmodel_write(&p, &hv, path, err);
    moe__hf_vocab_free(&hv);
    return rc;
}
