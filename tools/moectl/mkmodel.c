/* mkmodel.c - moectl mkmodel: random-weight test models (see testmodel.h). */
#include <limits.h>
#include <string.h>

#include "testmodel.h"
#include "moectl.h"

static const char help[] =
    "usage: moectl mkmodel --arch A [--dtype D] [--seed S] [dims...] -o OUT.gguf\n"
    "Writes a random-weight model that llama.cpp also loads.\n"
    "  --arch A          llama | qwen2moe | qwen3moe | olmoe | deepseek | deepseek2\n"
    "  --dtype D         f32 | f16 | bf16 | q8_0 (matrices; default f32)\n"
    "  --seed S          weights seed (default 1)\n"
    "  --preset P        tiny (default) | bench (hidden 1024, 8 layers, 8 experts\n"
    "                    top-2, ff 2816, vocab 4096: ~620 MB in q8_0)\n"
    "                    deepseek2: tiny (V3-style: sigmoid, bias, groups, q LoRA,\n"
    "                    x2.5, YaRN) | tiny-v2 (V2-style: softmax, no q LoRA)\n"
    "dims (override the preset):\n"
    "  --n-embd N --n-layer N --n-head N --n-head-kv N --head-dim N --n-ff N\n"
    "  --n-ff-shexp N --n-expert N --n-expert-used N --n-vocab N --n-ctx N\n"
    "  --rope-base F     rope.freq_base (default 10000; Qwen3: 1e6)\n"
    "  --rope-dim N      rotary dims per head, rope.dimension_count (default: the\n"
    "                    head dim; fewer: partial rotary, not for llama; deepseek2:\n"
    "                    the decoupled RoPE dims, default 32)\n"
    "  --rms-eps F       attention.layer_norm_rms_epsilon (default 1e-5)\n"
    "  --expert-scale F  deepseek2: expert_weights_scale (tiny 2.5, tiny-v2 1)\n"
    "  --pre NAME        tokenizer.ggml.pre (default \"default\"; e.g. gpt-2)\n"
    "  --tokenizer FILE  a Hugging Face tokenizer.json (byte-level BPE, e.g. Llama 3,\n"
    "                    Qwen2/3, DeepSeek-V3): its vocabulary, merges, added tokens,\n"
    "                    bos/eos (from tokenizer_config.json beside it, if any) and\n"
    "                    pre-tokenizer name; n_vocab becomes its size. Also\n"
    "                    SentencePiece-style BPE with byte fallback (Llama 2, Mistral)\n"
    "  --spm             a generated SentencePiece vocabulary (tokenizer model \"llama\",\n"
    "                    scores, byte fallback, BOS added) instead of byte-level BPE\n"
    "  deepseek: --n-expert-shared N --n-dense-lead N --n-ff-dense N\n"
    "Dimensions that feed a matrix product must be multiples of 32.\n";

int cmd_mkmodel(int argc, char **argv) {
    const char *out = NULL, *arch = NULL, *dtype = NULL, *preset = "tiny", *pre = NULL, *tokenizer = NULL;
    uint64_t seed = 1;
    int spm = 0;
    int ov[14];
    for (int j = 0; j < 14; j++) ov[j] = INT_MIN; /* not given */
    static const char *dim_names[14] = {"--n-embd",     "--n-layer",       "--n-head",
                                        "--n-head-kv",  "--head-dim",      "--n-ff",
                                        "--n-ff-shexp", "--n-expert",      "--n-expert-used",
                                        "--n-vocab",    "--n-ctx",         "--n-expert-shared",
                                        "--n-dense-lead", "--n-ff-dense"};
    float rope_base = 10000.0f, rms_eps = -1.0f, expert_scale = -1.0f;
    int rope_dim = -1;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) return fputs(help, stdout), 0;
        int r = 0;
        if ((r = opt_str(argc, argv, &i, "--arch", &arch)) || (r = opt_str(argc, argv, &i, "--dtype", &dtype)) ||
            (r = opt_u64(argc, argv, &i, "--seed", &seed)) || (r = opt_str(argc, argv, &i, "-o", &out)) ||
            (r = opt_str(argc, argv, &i, "--preset", &preset)) || (r = opt_str(argc, argv, &i, "--pre", &pre)) ||
            (r = opt_str(argc, argv, &i, "--tokenizer", &tokenizer)) ||
            (r = opt_float(argc, argv, &i, "--rope-base", &rope_base)) ||
            (r = opt_float(argc, argv, &i, "--rms-eps", &rms_eps)) ||
            (r = opt_float(argc, argv, &i, "--expert-scale", &expert_scale)) ||
            (r = opt_int(argc, argv, &i, "--rope-dim", &rope_dim))) {
            if (r < 0) return 1;
            continue;
        }
        if (!strcmp(argv[i], "--spm")) {
            spm = 1;
            continue;
        }
        for (int j = 0; j < 14 && !r; j++) r = opt_int(argc, argv, &i, dim_names[j], &ov[j]);
        if (r < 0) return 1;
        if (r) continue;
        return die("mkmodel: unknown option '%s' (see --help)", argv[i]);
    }
    if (!arch || !out) return fputs(help, stderr), 2;
    moe_arch a;
    if (moe_arch_parse(arch, &a) < 0)
        return die("mkmodel: unknown --arch '%s' (llama, qwen2moe, qwen3moe, olmoe, deepseek, deepseek2)", arch);
    moe_testmodel_params p;
    if (moe_testmodel_defaults(&p, a, preset) < 0)
        return die("mkmodel: unknown --preset '%s' for %s (tiny, bench; deepseek2: tiny, tiny-v2)",
                   preset, arch);
    if (dtype && moe_dtype_parse(dtype, &p.dtype) < 0)
        return die("mkmodel: unknown --dtype '%s' (f32, f16, bf16, q8_0)", dtype);
    p.seed = seed;
    p.rope_base = rope_base;
    if (rms_eps != -1.0f) {
        if (!(rms_eps > 0.0f && rms_eps < 1.0f)) return die("mkmodel: --rms-eps must be in (0, 1)");
        p.rms_eps = rms_eps;
    }
    if (expert_scale != -1.0f) {
        if (p.arch != MOE_ARCH_DEEPSEEK2) return die("mkmodel: --expert-scale is for deepseek2");
        if (!(expert_scale > 0.0f && expert_scale < 1e3f)) return die("mkmodel: --expert-scale must be in (0, 1000)");
        p.expert_scale = expert_scale;
    }
    if (rope_dim != -1) {
        if (rope_dim < 2) return die("mkmodel: --rope-dim must be >= 2");
        p.rope_dim = rope_dim;
    }
    p.tokenizer_pre = pre;
    p.tokenizer_json = tokenizer;
    p.tokenizer_spm = spm;
    if (spm && (tokenizer || pre)) return die("mkmodel: --spm makes its own vocabulary (not with --tokenizer or --pre)");
    int *dims[14] = {&p.n_embd,     &p.n_layer,       &p.n_head,     &p.n_head_kv,
                     &p.head_dim,   &p.n_ff,          &p.n_ff_shexp, &p.n_expert,
                     &p.n_expert_used, &p.n_vocab,    &p.n_ctx,      &p.n_expert_shared,
                     &p.n_layer_dense_lead, &p.n_ff_dense};
    for (int j = 0; j < 14; j++) {
        if (ov[j] == INT_MIN) continue;
        if (ov[j] < 1 && !(ov[j] == 0 && j == 12)) /* 0 dense layers is fine */
            return die("mkmodel: %s must be >= 1", dim_names[j]);
        *dims[j] = ov[j];
    }
    if (ov[4] == INT_MIN && (ov[0] != INT_MIN || ov[2] != INT_MIN) && p.n_head > 0 &&
        p.arch != MOE_ARCH_DEEPSEEK2)
        p.head_dim = p.n_embd / p.n_head; /* deepseek2's head dims are set by its preset */
    moe_err err;
    if (moe_testmodel_write(&p, out, &err) < 0) return die("mkmodel: %s", err.msg);
    printf("{\"path\": ");
    json_str(stdout, out, strlen(out));
    printf(", \"arch\": \"%s\", \"dtype\": \"%s\", \"seed\": %llu}\n", moe_arch_name(p.arch),
           moe_dtype_name(p.dtype), (unsigned long long)p.seed);
    return 0;
}
