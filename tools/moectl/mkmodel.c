/* mkmodel.c - moectl mkmodel: random-weight test models (see testmodel.h). */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "testmodel.h"
#include "moectl.h"

static const char about[] = "Writes a random-weight model that llama.cpp also loads.\n";

static const char footer[] =
    "The n- and head- flags override the preset's dimensions. Dimensions that feed a\n"
    "matrix product must be multiples of 32.\n";

static int check_rms_eps(const void *dst, char *why, size_t cap) {
    const float f = *(const float *)dst;
    if (f > 0.0f && f < 1.0f) return 0;
    snprintf(why, cap, "must be in (0, 1)");
    return -1;
}

static int check_expert_scale(const void *dst, char *why, size_t cap) {
    const float f = *(const float *)dst;
    if (f > 0.0f && f < 1e3f) return 0;
    snprintf(why, cap, "must be in (0, 1000)");
    return -1;
}

/* A dimension flag: writes ov (INT_MIN: not given, the preset's). */
/* clang-format off */
#define DIM(name, ov, help_, lo)                                                                   \
    {name, NULL, MOE_FLAG_INT, ov, "N", .help = help_, .def = "the preset's", .min = lo,           \
     .max = INT32_MAX}
/* clang-format on */

int cmd_mkmodel(const moectl_cmd *cmd, int argc, char **argv) {
    const char *out = NULL, *arch = NULL, *dtype = NULL, *preset = "tiny", *pre = NULL,
               *tokenizer = NULL;
    uint64_t seed = 1;
    int spm = 0, pure = 0;
    int ov[14];
    for (int j = 0; j < 14; j++) ov[j] = INT_MIN;                      /* not given */
    float rope_base = 10000.0f, rms_eps = -1.0f, expert_scale = -1.0f; /* -1: not given */
    int rope_dim = -1;
    const char *expert_layout = "merged";
    int split_max_tensors = 0, split_parts = 0, kv_b = 0;
    const moe_flag flags[] = {
        {"--arch", NULL, MOE_FLAG_STRING, &arch, "A",
         .help = "llama | qwen2moe | qwen3moe | olmoe | deepseek | deepseek2"},
        {"--dtype", NULL, MOE_FLAG_STRING, &dtype, "D",
         .help = "f32 | f16 | bf16 | q8_0 | q4_0 | q4_1 | q5_0 | q5_1 |\n"
                 "iq4_nl | q3_k | q4_k | q5_k | q6_k | iq4_xs: every matrix\n"
                 "in it | q2_k | q3_k_m | q4_k_m | q5_k_m: llama-quantize's\n"
                 "mixed file types of q2_k ... q5_k (output q6_k; attn_v,\n"
                 "attn_output, ffn_down in more bits, attn_v/attn_k q8_0\n"
                 "with 8 experts, ...). A matrix whose rows do not fit a\n"
                 "256-element type takes llama-quantize's fallback: q4_k ->\n"
                 "q5_0, q5_k -> q5_1, q6_k -> q8_0, iq4_xs -> iq4_nl,\n"
                 "q2_k/q3_k -> q4_0",
         .def = "f32"},
        {"--pure", NULL, MOE_FLAG_BOOL, &pure, NULL,
         .help = "with a mixed file type: every matrix in its base type\n"
                 "(llama-quantize --pure; --dtype q2_k --pure: all q2_k)"},
        {"--seed", NULL, MOE_FLAG_UINT64, &seed, "S", .help = "weights seed"},
        {"--preset", NULL, MOE_FLAG_STRING, &preset, "P",
         .help = "tiny | bench (hidden 1024, 8 layers, 8 experts\n"
                 "top-2, ff 2816, vocab 4096: ~620 MB in q8_0)\n"
                 "deepseek2: tiny (V3-style: sigmoid, bias, groups, q LoRA,\n"
                 "x2.5, YaRN) | tiny-v2 (V2-style: softmax, no q LoRA)"},
        DIM("--n-embd", &ov[0], "hidden size", 1),
        DIM("--n-layer", &ov[1], "layers", 1),
        DIM("--n-head", &ov[2], "attention heads", 1),
        DIM("--n-head-kv", &ov[3], "key/value heads", 1),
        {"--head-dim", NULL, MOE_FLAG_INT, &ov[4], "N", .help = "dims per head",
         .def = "the preset's; n-embd / n-head when either is given", .min = 1, .max = INT32_MAX},
        DIM("--n-ff", &ov[5], "expert FFN width", 1),
        DIM("--n-ff-shexp", &ov[6], "shared expert FFN width", 1),
        DIM("--n-expert", &ov[7], "routed experts", 1),
        DIM("--n-expert-used", &ov[8], "experts per token", 1),
        DIM("--n-vocab", &ov[9], "vocabulary size", 1),
        DIM("--n-ctx", &ov[10], "training context", 1),
        DIM("--n-expert-shared", &ov[11], "deepseek: shared experts", 1),
        DIM("--n-dense-lead", &ov[12], "deepseek: leading dense layers", 0),
        DIM("--n-ff-dense", &ov[13], "deepseek: dense FFN width", 1),
        {"--rope-base", NULL, MOE_FLAG_FLOAT, &rope_base, "F",
         .help = "rope.freq_base (Qwen3: 1e6)"},
        {"--rope-dim", NULL, MOE_FLAG_INT, &rope_dim, "N",
         .help = "rotary dims per head, rope.dimension_count (fewer\n"
                 "than the head dim: partial rotary, not for llama;\n"
                 "deepseek2: the decoupled RoPE dims)",
         .def = "the head dim; deepseek2: 32", .min = 2, .max = INT32_MAX},
        {"--rms-eps", NULL, MOE_FLAG_FLOAT, &rms_eps, "F",
         .help = "attention.layer_norm_rms_epsilon", .def = "1e-5", .check = check_rms_eps},
        {"--expert-scale", NULL, MOE_FLAG_FLOAT, &expert_scale, "F",
         .help = "deepseek2: expert_weights_scale", .def = "tiny 2.5, tiny-v2 1",
         .check = check_expert_scale},
        {"--pre", NULL, MOE_FLAG_STRING, &pre, "NAME", .help = "tokenizer.ggml.pre (e.g. gpt-2)",
         .def = "\"default\""},
        {"--tokenizer", NULL, MOE_FLAG_STRING, &tokenizer, "FILE",
         .help = "a Hugging Face tokenizer.json (byte-level BPE, e.g. Llama 3,\n"
                 "Qwen2/3, DeepSeek-V3): its vocabulary, merges, added tokens,\n"
                 "bos/eos (from tokenizer_config.json beside it, if any) and\n"
                 "pre-tokenizer name; n_vocab becomes its size. Also\n"
                 "SentencePiece-style BPE with byte fallback (Llama 2, Mistral)"},
        {"--spm", NULL, MOE_FLAG_BOOL, &spm, NULL,
         .help = "a generated SentencePiece vocabulary (tokenizer model \"llama\",\n"
                 "scores, byte fallback, BOS added) instead of byte-level BPE"},
        {"--expert-layout", NULL, MOE_FLAG_STRING, &expert_layout, "L",
         .help = "merged (blk.N.ffn_gate_exps) | per-expert (blk.N.ffn_gate.E:\n"
                 "the pre-2024 Mixtral layout; same weights)",
         .def = "merged"},
        {"--split-max-tensors", NULL, MOE_FLAG_INT, &split_max_tensors, "N",
         .help = "a split model as llama.cpp's gguf-split writes it: parts of at\n"
                 "most N tensors, OUT-00001-of-0000K.gguf ... (OUT without .gguf)",
         .min = 1, .max = INT32_MAX},
        {"--split", NULL, MOE_FLAG_INT, &split_parts, "K",
         .help = "a split model of K parts (tensors spread evenly)", .min = 1, .max = 65535},
        {"--kv-b", NULL, MOE_FLAG_BOOL, &kv_b, NULL,
         .help = "deepseek2: the legacy attn_kv_b layout (no *_mla keys;\n"
                 "llama.cpp runs it as multi-head attention) instead of\n"
                 "attn_k_b/attn_v_b; same weights"},
        {"-o", NULL, MOE_FLAG_STRING, &out, "OUT.gguf", .help = "the file to write"},
        {0}};
    moe_flagset fs = cmd_flagset(cmd, about, flags);
    fs.footer = footer;
    const int status = parse_args(&fs, NULL, argc, argv);
    if (status >= 0) return status;
    if (!arch || !out) return usage_error(&fs);
    moe_arch a;
    if (moe_arch_parse(arch, &a) < 0)
        return die(
            "mkmodel: unknown --arch '%s' (llama, qwen2moe, qwen3moe, olmoe, deepseek, deepseek2)",
            arch);
    moe_testmodel_params p;
    if (moe_testmodel_defaults(&p, a, preset) < 0)
        return die("mkmodel: unknown --preset '%s' for %s (tiny, bench; deepseek2: tiny, tiny-v2)",
                   preset, arch);
    if (dtype && !moe_testmodel_mix_parse(dtype, &p.mix)) {
        p.dtype = moe_testmodel_mix_base(p.mix); /* q2_k .. q5_k_m: the mix */
        if (pure) p.mix = MOE_MIX_NONE;
    } else if (dtype && (moe_dtype_parse(dtype, &p.dtype) < 0 || !moe_dtype_is_weight(p.dtype))) {
        return die("mkmodel: unknown --dtype '%s' (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, "
                   "iq4_nl, q3_k, q4_k, q5_k, q6_k, iq4_xs; mixes q2_k, q3_k_m, q4_k_m, q5_k_m)",
                   dtype);
    }
    p.seed = seed;
    p.rope_base = rope_base;
    if (rms_eps != -1.0f) p.rms_eps = rms_eps; /* checked by the table */
    if (expert_scale != -1.0f) {
        if (p.arch != MOE_ARCH_DEEPSEEK2) return die("mkmodel: --expert-scale is for deepseek2");
        p.expert_scale = expert_scale;
    }
    if (rope_dim != -1) p.rope_dim = rope_dim;
    p.tokenizer_pre = pre;
    p.tokenizer_json = tokenizer;
    p.tokenizer_spm = spm;
    if (spm && (tokenizer || pre))
        return die("mkmodel: --spm makes its own vocabulary (not with --tokenizer or --pre)");
    int *dims[14] = {&p.n_embd,
                     &p.n_layer,
                     &p.n_head,
                     &p.n_head_kv,
                     &p.head_dim,
                     &p.n_ff,
                     &p.n_ff_shexp,
                     &p.n_expert,
                     &p.n_expert_used,
                     &p.n_vocab,
                     &p.n_ctx,
                     &p.n_expert_shared,
                     &p.n_layer_dense_lead,
                     &p.n_ff_dense};
    for (int j = 0; j < 14; j++)
        if (ov[j] != INT_MIN) *dims[j] = ov[j]; /* ranges checked by the table */
    if (ov[4] == INT_MIN && (ov[0] != INT_MIN || ov[2] != INT_MIN) && p.n_head > 0 &&
        p.arch != MOE_ARCH_DEEPSEEK2)
        p.head_dim = p.n_embd / p.n_head; /* deepseek2's head dims are set by its preset */
    if (!strcmp(expert_layout, "per-expert"))
        p.expert_per_tensor = 1;
    else if (strcmp(expert_layout, "merged"))
        return die("mkmodel: unknown --expert-layout '%s' (merged, per-expert)", expert_layout);
    if (split_max_tensors && split_parts)
        return die("mkmodel: --split-max-tensors or --split, not both");
    p.split_max_tensors = split_max_tensors;
    p.split_parts = split_parts;
    if (kv_b && p.arch != MOE_ARCH_DEEPSEEK2) return die("mkmodel: --kv-b is for deepseek2");
    p.mla_kv_b = kv_b;
    moe_err err;
    const int parts = moe_testmodel_write(&p, out, &err);
    if (parts < 0) return die("mkmodel: %s", err.msg);
    char first[4096];
    if (parts > 0) { /* a split model: name its first part, as gguf-split does */
        size_t pl = strlen(out);
        if (pl > 5 && !strcmp(out + pl - 5, ".gguf")) pl -= 5;
        char prefix[4000];
        if (pl >= sizeof prefix) return die("mkmodel: path too long");
        snprintf(prefix, sizeof prefix, "%.*s", (int)pl, out);
        if (!moe_gguf_split_path(first, sizeof first, prefix, 0, parts))
            return die("mkmodel: path too long");
        out = first;
    }
    printf("{\"path\": ");
    json_str(stdout, out, strlen(out));
    if (parts > 0) printf(", \"parts\": %d", parts);
    const char *mix = moe_testmodel_mix_name(p.mix);
    printf(", \"arch\": \"%s\", \"dtype\": \"%s%s\", ", moe_arch_name(p.arch),
           mix ? "q" : moe_dtype_name(p.dtype), mix ? mix + 1 : "");
    if (mix) printf("\"mix\": true, "); /* q2_K: the mix, not every matrix in q2_K */
    printf("\"seed\": %llu}\n", (unsigned long long)p.seed);
    return 0;
}
