/* info.c - moectl info: what a model file holds. */
#include <stdlib.h>
#include <string.h>

#include "moe/model.h"
#include "moectl.h"

/* More element types than ggml has (~40). */
#define MOE_DTYPE_COUNT_MAX 64

static const char about[] =
    "Prints the architecture, hyperparameters, routing, tensors and sizes of a\n"
    "GGUF model. Text by default; --json prints one JSON object.\n";

static void routing_words(const moe_model *m, char *buf, size_t n) {
    moe_routing r;
    moe_model_routing(m, m->hp.n_layer - 1, &r);
    int len = moe_routing_describe(&r, buf, (int)n);
    const moe_hparams *hp = &m->hp;
    if (len > 0 && (size_t)len < n && hp->n_ff_shexp)
        snprintf(buf + len, n - (size_t)len, "%s",
                 hp->shexp_gate ? ", sigmoid-gated shared expert" : ", shared experts");
}

/* ---- Type mix and layout ----------------------------------------------------- */

/* Tensors and bytes of each type in the file (all parts). */
typedef struct type_mix {
    int n_types;
    moe_dtype type[MOE_DTYPE_COUNT_MAX];
    int64_t n[MOE_DTYPE_COUNT_MAX];
    uint64_t bytes[MOE_DTYPE_COUNT_MAX];
    uint64_t file_bytes; /* all parts */
} type_mix;

/* Bytes of the model's files (every part of a split model). */
static size_t files_bytes(const moe_gguf *g) {
    size_t n = 0;
    for (int i = 0; i < moe_gguf_n_parts(g); i++) n += moe_gguf_part_size(g, i);
    return n;
}

static void type_mix_count(const moe_gguf *g, type_mix *x) {
    memset(x, 0, sizeof *x);
    x->file_bytes = files_bytes(g);
    for (int64_t i = 0; i < moe_gguf_n_tensors(g); i++) {
        const moe_gguf_tensor *t = moe_gguf_tensor_at(g, i);
        int k = 0;
        while (k < x->n_types && x->type[k] != t->type) k++;
        if (k == x->n_types) {
            if (k == MOE_DTYPE_COUNT_MAX) continue; /* cannot happen: types are few */
            x->type[x->n_types++] = t->type;
        }
        x->n[k]++;
        x->bytes[k] += t->nbytes;
    }
}

/* Tensors in part i. */
static int64_t part_tensors(const moe_gguf *g, int part) {
    int64_t n = 0;
    for (int64_t i = 0; i < moe_gguf_n_tensors(g); i++) n += moe_gguf_tensor_at(g, i)->part == part;
    return n;
}

static const char *layout_name(const moe_model *m) {
    return m->expert_layout == MOE_EXPERT_LAYOUT_PER_EXPERT ? "per-expert" : "merged";
}

static void print_layout_json(const moe_model *m) {
    const moe_gguf *g = m->gguf;
    type_mix x;
    type_mix_count(g, &x);
    printf(", \"layout\": {\"experts\": \"%s\", \"attn_kv_b\": %s, \"parts\": [", layout_name(m),
           m->hp.mla_kv_b ? "true" : "false");
    for (int i = 0; i < moe_gguf_n_parts(g); i++)
        printf("%s{\"bytes\": %zu, \"tensors\": %lld}", i ? ", " : "", moe_gguf_part_size(g, i),
               (long long)part_tensors(g, i));
    printf("]}, \"types\": [");
    for (int k = 0; k < x.n_types; k++)
        printf("%s{\"type\": \"%s\", \"tensors\": %lld, \"bytes\": %llu, \"share\": %.4f}",
               k ? ", " : "", moe_dtype_name(x.type[k]), (long long)x.n[k],
               (unsigned long long)x.bytes[k],
               x.file_bytes ? (double)x.bytes[k] / (double)x.file_bytes : 0.0);
    printf("]");
}

static void print_layout_text(const moe_model *m) {
    const moe_gguf *g = m->gguf;
    type_mix x;
    type_mix_count(g, &x);
    printf("layout        experts %s%s, ", layout_name(m),
           m->expert_layout == MOE_EXPERT_LAYOUT_PER_EXPERT
               ? " (blk.N.ffn_{gate,up,down}.E: pre-2024 Mixtral)"
               : " (blk.N.ffn_{gate,up,down}_exps)");
    if (m->hp.mla_kv_b) printf("legacy attn_kv_b (multi-head attention), ");
    if (moe_gguf_n_parts(g) == 1) {
        printf("one file of %.1f MiB\n", (double)x.file_bytes / (1 << 20));
    } else {
        printf("split in %d parts:", moe_gguf_n_parts(g));
        for (int i = 0; i < moe_gguf_n_parts(g); i++)
            printf(" %lld tensors %.1f MiB%s", (long long)part_tensors(g, i),
                   (double)moe_gguf_part_size(g, i) / (1 << 20),
                   i + 1 < moe_gguf_n_parts(g) ? "," : "\n");
    }
    printf("types        ");
    for (int k = 0; k < x.n_types; k++)
        printf("%s %s %lld tensors %.1f MiB (%.1f%% of the file)", k ? ";" : "",
               moe_dtype_name(x.type[k]), (long long)x.n[k], (double)x.bytes[k] / (1 << 20),
               x.file_bytes ? 100.0 * (double)x.bytes[k] / (double)x.file_bytes : 0.0);
    printf("\n");
}

int cmd_info(const moectl_cmd *cmd, int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    const moe_flag flags[] = {
        {"--json", NULL, MOE_FLAG_BOOL, &json, NULL, .help = "one JSON object instead of text"},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, about, flags);
    const int status = parse_args(&fs, &path, argc, argv);
    if (status >= 0) return status;
    moe_model *m;
    if (load_model(&m, path, MOE_REPACK_OFF)) return 1;
    const moe_hparams *hp = &m->hp;
    char routing[256];
    routing_words(m, routing, sizeof routing);
    const moe_gguf *g = m->gguf;
    size_t kv_mha;
    moe_model_kv_bytes_per_token(m, MOE_DTYPE_F16, &kv_mha);
    if (json) {
        printf("{\"path\": ");
        json_str(stdout, path, strlen(path));
        printf(", \"architecture\": \"%s\", \"file_bytes\": %zu, \"n_params\": %zu, "
               "\"n_bytes\": %zu, \"active_bytes_per_token\": %zu, \"kv_bytes_per_token\": %zu, "
               "\"kv_bytes_per_token_f32\": %zu, \"kv_bytes_per_token_mha\": %zu, \"routing\": ",
               moe_arch_name(hp->arch), files_bytes(g), m->n_params, m->n_bytes,
               moe_model_active_bytes(m), moe_model_kv_bytes_per_token(m, MOE_DTYPE_F16, NULL),
               moe_model_kv_bytes_per_token(m, MOE_DTYPE_F32, NULL), kv_mha);
        json_str(stdout, routing, strlen(routing));
        printf(", \"hparams\": {\"n_vocab\": %d, \"n_ctx_train\": %d, \"n_embd\": %d, "
               "\"n_layer\": %d, \"n_head\": %d, \"n_head_kv\": %d, \"head_dim\": %d, "
               "\"head_dim_v\": %d, \"kv_lora_rank\": %d, \"q_lora_rank\": %d, "
               "\"n_layer_dense_lead\": %d, \"n_expert_shared\": %d, "
               "\"n_rot\": %d, \"n_ff_exp\": %d, \"n_ff_shexp\": %d, \"n_expert\": %d, "
               "\"n_expert_used\": %d, \"rms_eps\": %g, \"rope_freq_base\": %g, "
               "\"rope_neox\": %s, \"expert_norm\": %s, \"qkv_bias\": %s, \"qk_norm\": \"%s\"}",
               hp->n_vocab, hp->n_ctx_train, hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv,
               hp->head_dim, hp->head_dim_v, hp->kv_lora_rank, hp->q_lora_rank,
               hp->n_layer_dense_lead, hp->n_expert_shared, hp->n_rot, hp->n_ff_exp, hp->n_ff_shexp,
               hp->n_expert, hp->n_expert_used, (double)hp->rms_eps, (double)hp->rope_freq_base,
               hp->rope_neox ? "true" : "false", hp->expert_norm ? "true" : "false",
               hp->qkv_bias ? "true" : "false",
               hp->qk_norm == MOE_QK_NORM_HEAD   ? "head"
               : hp->qk_norm == MOE_QK_NORM_FULL ? "full"
                                                 : "none");
        print_layout_json(m);
        printf(", \"tensors\": [");
        for (int64_t i = 0; i < moe_gguf_n_tensors(g); i++) {
            const moe_gguf_tensor *t = moe_gguf_tensor_at(g, i);
            printf("%s{\"name\": ", i ? ", " : "");
            json_str(stdout, t->name.ptr, t->name.len);
            printf(", \"type\": \"%s\", \"shape\": [", moe_dtype_name(t->type));
            for (uint32_t d = 0; d < t->n_dims; d++)
                printf("%s%lld", d ? ", " : "", (long long)t->ne[d]);
            printf("], \"bytes\": %llu}", (unsigned long long)t->nbytes);
        }
        printf("]}\n");
    } else {
        printf("model         %s\n", path);
        printf("architecture  %s\n", moe_arch_name(hp->arch));
        printf("size          %.1f MiB in %lld tensors, %.1f M parameters\n",
               (double)m->n_bytes / (1 << 20), (long long)moe_gguf_n_tensors(g),
               (double)m->n_params / 1e6);
        printf("active/token  %.1f MiB read per decoded token at batch 1\n",
               (double)moe_model_active_bytes(m) / (1 << 20));
        printf("layers        %d, embedding %d, vocabulary %d, context %d\n", hp->n_layer,
               hp->n_embd, hp->n_vocab, hp->n_ctx_train);
        printf("attention     %d heads (%d kv) of %d, rope %s over %d dims, base %g%s%s\n",
               hp->n_head, hp->n_head_kv, hp->head_dim, hp->rope_neox ? "neox" : "normal",
               hp->n_rot, (double)hp->rope_freq_base, hp->qkv_bias ? ", qkv bias" : "",
               hp->qk_norm == MOE_QK_NORM_HEAD   ? ", per-head q/k norm"
               : hp->qk_norm == MOE_QK_NORM_FULL ? ", full-width q/k norm"
                                                 : "");
        size_t mha;
        const size_t kvb = moe_model_kv_bytes_per_token(m, MOE_DTYPE_F16, &mha);
        const size_t kv32 = moe_model_kv_bytes_per_token(m, MOE_DTYPE_F32, NULL);
        if (hp->is_mla)
            printf(
                "mla           latent %d + rope %d per token, q LoRA %d, heads %d (q/k %d, v %d)\n"
                "kv cache      %zu bytes/token in f16 (the default), %zu in f32; plain "
                "multi-head attention would need %zu (%.1fx)\n",
                hp->kv_lora_rank, hp->n_rot, hp->q_lora_rank, hp->n_head, hp->head_dim,
                hp->head_dim_v, kvb, kv32, mha, (double)mha / (double)kvb);
        else
            printf("kv cache      %zu bytes/token in f16 (the default), %zu in f32\n", kvb, kv32);
        printf("experts       %d routed of width %d", hp->n_expert, hp->n_ff_exp);
        if (hp->n_expert_shared > 0)
            printf(", %d shared of width %d (one FFN of %d)", hp->n_expert_shared,
                   hp->n_ff_shexp / hp->n_expert_shared, hp->n_ff_shexp);
        else if (hp->n_ff_shexp)
            printf(", shared expert of width %d", hp->n_ff_shexp);
        if (hp->n_layer_dense_lead)
            printf("\ndense         first %d layer(s) dense, FFN width %d", hp->n_layer_dense_lead,
                   hp->n_ff);
        printf("\nrouting       %s\n", routing);
        print_layout_text(m);
        printf("tensors:\n");
        for (int64_t i = 0; i < moe_gguf_n_tensors(g); i++) {
            const moe_gguf_tensor *t = moe_gguf_tensor_at(g, i);
            char shape[96] = "";
            for (uint32_t d = 0; d < t->n_dims; d++) {
                size_t l = strlen(shape);
                snprintf(shape + l, sizeof shape - l, "%s%lld", d ? " x " : "",
                         (long long)t->ne[d]);
            }
            printf("  %-36.*s %-5s %-22s %10llu bytes\n", (int)t->name.len, t->name.ptr,
                   moe_dtype_name(t->type), shape, (unsigned long long)t->nbytes);
        }
    }
    moe_model_free(m);
    return 0;
}
