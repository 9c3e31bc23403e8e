/*
 * moe/testmodel.h - random-weight MoE models in GGUF, for tests, benchmarks
 * and demos (no weights are ever downloaded). llama.cpp loads them too.
 *
 *     moe_testmodel_params p;
 *     moe_testmodel_defaults(&p, MOE_ARCH_QWEN2MOE, "tiny");
 *     p.dtype = MOE_DTYPE_Q8_0;
 *     p.seed = 7;
 *     if (moe_testmodel_write(&p, "/tmp/m.gguf", &err) < 0) ...
 *
 * Same parameters, same bytes. Weights are uniform with a fan-in scale;
 * norms 1 + noise; the router is scaled up so most routing margins are wide.
 * Matrices are stored in dtype; norms, biases and the router stay f32, as
 * llama.cpp's converters and quantizer keep them. The vocabulary is a small
 * byte-level BPE (256 byte tokens, generated merges, one control token), or
 * a real one read from a Hugging Face tokenizer.json (tokenizer_json).
 */
#ifndef MOE_TESTMODEL_H
#define MOE_TESTMODEL_H

#include <stdint.h>

#include "moe/dtype.h"
#include "moe/error.h"
#include "moe/model.h"

typedef struct moe_testmodel_params {
    moe_arch arch;
    moe_dtype dtype;
    uint64_t seed;
    int n_embd, n_layer, n_head, n_head_kv, head_dim;
    int n_ff;        /* routed expert width */
    int n_ff_shexp;  /* shared expert width (qwen2moe) */
    int n_expert, n_expert_used;
    int n_expert_shared;    /* deepseek: shared experts (width n_ff each) */
    int n_layer_dense_lead; /* deepseek: leading dense FFN layers */
    int n_ff_dense;         /* deepseek: dense FFN width */
    /* deepseek2 (MLA and V3 routing) */
    int q_lora_rank;        /* 0: plain attn_q (V2-Lite style) */
    int kv_lora_rank;
    int rope_dim;           /* decoupled RoPE dims; head_dim is the no-RoPE part */
    int head_dim_v;
    int gating_sigmoid;     /* 1: sigmoid gating (V3), 0: softmax (V2) */
    int expert_bias;        /* 1: exp_probs_b selection bias */
    int n_groups, n_groups_used;
    int expert_norm;
    float expert_scale;
    float yarn_factor;      /* > 1: YaRN rope scaling with this factor */
    int yarn_orig_ctx;
    float yarn_mscale_all;  /* mscale_all_dim (stored x0.1 as yarn_log_multiplier) */
    const char *tokenizer_pre; /* tokenizer.ggml.pre (default "default"; with
                                * tokenizer_json: the one detected) */
    const char *tokenizer_json; /* a Hugging Face tokenizer.json (byte-level BPE):
                                 * its vocabulary, merges, added tokens and
                                 * pre-tokenizer instead of the generated one;
                                 * n_vocab becomes its size. NULL: generated */
    int n_vocab, n_ctx;
    float rope_base;
} moe_testmodel_params;

/* Fills p for arch with a preset: "tiny" (hidden 128, 2 layers, 8 experts
 * top-2, vocab 512; deepseek: 3 layers, the first dense, 16 fine-grained
 * experts top-4 and 2 shared) or "bench" (hidden 1024, 8 layers, 8 experts top-2, ff
 * 2816, vocab 4096). dtype f32, seed 1. MOE_EINVAL for an unknown preset. */
int moe_testmodel_defaults(moe_testmodel_params *p, moe_arch arch, const char *preset);
/* deepseek2 presets: "tiny" is V3-style (sigmoid, bias, 4 groups of 4 with
 * 2 used, q LoRA, normalised, x2.5, YaRN x4); "tiny-v2" is V2-style
 * (softmax, no bias or groups, no q LoRA, not normalised, no YaRN). */

/* Checks p; writes the model to path. */
int moe_testmodel_write(const moe_testmodel_params *p, const char *path, moe_err *err);

#endif
