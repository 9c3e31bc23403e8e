/*
 * moe/model.h - MoE transformer models from GGUF files, and contexts that run
 * them (a KV cache with a slot per sequence, batched forward passes).
 *
 * Architectures (llama.cpp's GGUF key and tensor names):
 *   llama     Mixtral-style experts: softmax over all experts, top-k, renormalised
 *   qwen2moe  q/k/v biases, no renormalisation, shared expert with a sigmoid gate
 *   qwen3moe  per-head q/k RMSNorm, renormalised
 *   olmoe     q/k RMSNorm over the full width, no renormalisation
 *   deepseek  DeepSeekMoE: leading dense FFN layers, fine-grained routed
 *             experts, ungated shared experts, softmax, no renormalisation
 *   deepseek2 DeepSeek-V2/V3: Multi-head Latent Attention (absorbed layout:
 *             the KV cache holds the compressed latent and the RoPE key per
 *             token), softmax or sigmoid gating, selection bias, expert
 *             groups, routed scaling, YaRN
 *
 *     moe_model *m; moe_ctx *c; moe_err err;
 *     if (moe_model_load(&m, "model.gguf", &err) < 0) ...
 *     moe_ctx_params p = moe_ctx_default_params();
 *     p.n_threads = 2;
 *     if (moe_ctx_create(&c, m, &p, &err) < 0) ...
 *     int32_t tok[3] = {1, 2, 3}, pos[3] = {0, 1, 2}, slot[3] = {0, 0, 0};
 *     int8_t out[3] = {0, 0, 1};                  // logits for the last row
 *     moe_batch b = {3, tok, pos, slot, out};
 *     if (moe_ctx_decode(c, &b, &err) < 0) ...
 *     const float *logits = moe_ctx_logits(c, 0); // n_vocab floats
 *     moe_ctx_destroy(c); moe_model_free(m);
 *
 * A sequence lives in a slot; its tokens must arrive in position order, the
 * first at the slot's current length. Many slots can decode in one batch.
 */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"
#include "moe/error.h"
#include "moe/expert.h"
#include "moe/gguf.h"
#include "moe/routing.h"

typedef enum moe_arch {
    MOE_ARCH_LLAMA = 0,
    MOE_ARCH_QWEN2MOE,
    MOE_ARCH_QWEN3MOE,
    MOE_ARCH_OLMOE,
    MOE_ARCH_DEEPSEEK,
    MOE_ARCH_DEEPSEEK2,
    MOE_ARCH_COUNT
} moe_arch;

/* "llama", "qwen2moe", ...; NULL for an out-of-range value. */
const char *moe_arch_name(moe_arch a);
/* Parses a GGUF general.architecture string; MOE_ENOTSUP if unknown. */
int moe_arch_parse(const char *name, moe_arch *out);

typedef enum moe_qk_norm {
    MOE_QK_NORM_NONE = 0,
    MOE_QK_NORM_HEAD = 1, /* RMSNorm of each head (qwen3moe), weight (head_dim) */
    MOE_QK_NORM_FULL = 2, /* RMSNorm over all heads (olmoe), weight (n_head*head_dim) */
} moe_qk_norm;

typedef struct moe_hparams {
    moe_arch arch;
    int n_vocab;
    int n_ctx_train;
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;   /* key/value head size (attention.key_length, else n_embd/n_head) */
    int n_rot;      /* rotary dims (rope.dimension_count, else head_dim) */
    int n_ff;       /* dense FFN width (leading dense layers) */
    int n_ff_exp;   /* routed expert FFN width */
    int n_ff_shexp; /* shared experts' FFN width, all of them together (0: none) */
    int n_expert;
    int n_expert_used;
    int n_expert_shared;    /* shared experts (deepseek: one FFN of n_ff_shexp) */
    int n_layer_dense_lead; /* leading layers with a dense FFN instead of experts */
    int n_expert_groups;    /* group-limited routing (<= 1: none) */
    int n_group_used;
    float rms_eps;
    float rope_freq_base;
    float rope_freq_scale;
    int rope_neox; /* 1: NeoX pairs (i, i+n_rot/2); 0: adjacent pairs */
    /* YaRN (rope.scaling.type "yarn"); ext_factor 0 = off */
    float rope_ext_factor, rope_attn_factor, rope_beta_fast, rope_beta_slow, rope_yarn_log_mul;
    int rope_n_ctx_orig;
    float kq_scale; /* attention logit scale (1/sqrt(head_dim) unless MLA/YaRN) */
    /* Multi-head Latent Attention (deepseek2) */
    int is_mla;
    int mla_kv_b;     /* legacy deepseek2 files (attn_kv_b, no *_mla keys): attention
                       * expands the latent through attn_kv_b and runs as plain
                       * multi-head attention, as llama.cpp does for them */
    int q_lora_rank;  /* 0: plain attn_q */
    int kv_lora_rank; /* compressed latent width */
    int head_dim_v;   /* value head size after attn_v_b (head_dim is q/k's) */
    moe_gating gating;
    int expert_norm;    /* 1: renormalise the chosen experts' weights to sum 1 */
    float expert_scale; /* routed weights multiplied by this (1 for none) */
    int qkv_bias;       /* attn_q/k/v have biases */
    moe_qk_norm qk_norm;
    int shexp_gate; /* shared expert output scaled by sigmoid(gate_inp_shexp . x) */
} moe_hparams;

/* A weight: a view into the mapped file. ne[0] is the contiguous dim. */
typedef struct moe_tensor {
    const void *data; /* NULL if the tensor is absent (optional ones) */
    moe_dtype type;
    int64_t ne[4];
    /* Expert weights (ne[2] experts) from a file with one tensor per expert
     * (the pre-2024 Mixtral layout, blk.N.ffn_gate.E.weight): expert e's
     * matrix is at experts[e] in the mapping (a table the model owns; data is
     * experts[0]). NULL: merged, expert e at data + e x one matrix's bytes.
     * Read it with moe_tensor_expert. */
    const void *const *experts;
    /* Q8_0 expert weights the model repacks (moe_model_load_ex): expert e's
     * matrix in the packed layout of moe/ops.h (moe_q8p_pack), or NULL while
     * it is not (then it is read as stored; the results are the same bits).
     * Read an entry with an acquire load: moe_expert_load_pages and
     * moe_expert_drop_pages set and clear them. NULL: never packed. */
    void **packed;
} moe_tensor;

/* Expert e's matrix (ne[0] x ne[1]) of a 3-D expert weight, in either layout. */
static inline const void *moe_tensor_expert(const moe_tensor *t, int e) {
    if (t->experts) return t->experts[e];
    return (const char *)t->data +
           moe_dtype_row_bytes(t->type, t->ne[0]) * (size_t)t->ne[1] * (size_t)e;
}

/* How a file stores the routed experts' weights. */
typedef enum moe_expert_layout {
    MOE_EXPERT_LAYOUT_MERGED = 0, /* blk.N.ffn_{gate,up,down}_exps.weight: one 3-D tensor */
    MOE_EXPERT_LAYOUT_PER_EXPERT, /* blk.N.ffn_{gate,up,down}.E.weight: one 2-D tensor each */
} moe_expert_layout;

typedef struct moe_layer {
    moe_tensor attn_norm;      /* (n_embd) */
    moe_tensor wq;             /* (n_embd -> n_head*head_dim) */
    moe_tensor wk;             /* (n_embd -> n_head_kv*head_dim) */
    moe_tensor wv;             /* (n_embd -> n_head_kv*head_dim) */
    moe_tensor bq, bk, bv;     /* biases (qwen2moe), f32 */
    moe_tensor q_norm, k_norm; /* (head_dim) or full width, per qk_norm */
    moe_tensor wo;             /* (n_head*head_dim_v -> n_embd) */
    /* MLA: q = wq_b(rmsnorm(wq_a x)) or wq x; [latent | k_pe] = wkv_a_mqa x */
    moe_tensor wq_a;           /* (n_embd -> q_lora_rank) */
    moe_tensor q_a_norm;       /* (q_lora_rank) */
    moe_tensor wq_b;           /* (q_lora_rank -> n_head*head_dim) */
    moe_tensor wkv_a_mqa;      /* (n_embd -> kv_lora_rank + n_rot) */
    moe_tensor kv_a_norm;      /* (kv_lora_rank) */
    moe_tensor wk_b;           /* per head (head_dim - n_rot -> kv_lora_rank) x n_head */
    moe_tensor wv_b;           /* per head (kv_lora_rank -> head_dim_v) x n_head */
    moe_tensor wkv_b;          /* legacy (mla_kv_b): (kv_lora_rank -> n_head*(nope + head_dim_v)),
                                * head h's k_nope rows then its v rows */
    moe_tensor ffn_norm;       /* (n_embd) */
    moe_tensor ffn_gate;       /* dense layers: (n_embd -> n_ff) */
    moe_tensor ffn_up;         /* dense layers: (n_embd -> n_ff) */
    moe_tensor ffn_down;       /* dense layers: (n_ff -> n_embd) */
    moe_tensor gate_inp;       /* router (n_embd -> n_expert) */
    moe_tensor exp_probs_b;    /* (n_expert) selection-only bias, f32, optional */
    moe_tensor gate_exps;      /* (n_embd -> n_ff_exp) x n_expert */
    moe_tensor up_exps;        /* (n_embd -> n_ff_exp) x n_expert */
    moe_tensor down_exps;      /* (n_ff_exp -> n_embd) x n_expert */
    moe_tensor gate_inp_shexp; /* (n_embd) -> 1 */
    moe_tensor gate_shexp;     /* (n_embd -> n_ff_shexp) */
    moe_tensor up_shexp;       /* (n_embd -> n_ff_shexp) */
    moe_tensor down_shexp;     /* (n_ff_shexp -> n_embd) */
} moe_layer;

struct moe_model {
    moe_gguf *gguf; /* owns the mapping */
    moe_hparams hp;
    moe_tensor tok_embd;    /* (n_embd) x n_vocab */
    moe_tensor output_norm; /* (n_embd) */
    moe_tensor output;      /* (n_embd -> n_vocab); tok_embd if the file has none */
    moe_layer *layers;      /* (n_layer) */
    size_t n_params;        /* elements in all tensors */
    size_t n_bytes;         /* bytes of all tensors */
    int bos_id, eos_id;     /* -1 if absent */
    moe_expert_layout expert_layout;
    const void **expert_ptrs; /* owned: the per-expert layout's tables (3 x n_expert a layer) */
    void **packed_ptrs;       /* owned: the tensors' packed tables (3 x n_expert a layer) */
    void **packed_dense;      /* owned: the 2-D weights' packed copies (MOE_REPACK_ALL) */
    void *retired;            /* owned: dropped experts' copies, freed later (residency.c) */
    int n_packed_dense;
    int repack; /* the moe_repack in force (MOE_REPACK_OFF where unusable) */
};

/* Whether the model repacks its weights for the batched int8 tiles (moe/ops.h:
 * the packed layouts of Q8_0, Q4_K, Q4_0 and IQ4_NL; each type where
 * moe_packed_usable() says so). A packed matrix is a private copy: the
 * file's pages of it are dropped. */
typedef enum moe_repack {
    MOE_REPACK_ALL = 0,   /* every expert at load (moe_model_load), and the 2-D
                           * weights the context multiplies (attention, shared experts,
                           * dense FFN layers, output head) */
    MOE_REPACK_LAZY = 1,  /* each expert when moe_expert_load_pages loads it, freed again by
                           * moe_expert_drop_pages (expert workers: only what they hold) */
    MOE_REPACK_OFF = 2,   /* read the experts as stored */
    MOE_REPACK_DENSE = 3, /* the 2-D weights as MOE_REPACK_ALL, the experts as stored (a
                           * gateway or moectl whose routed experts run on workers) */
} moe_repack;

/* Loads a model: maps the file (and, for the first part of a split model,
 * every part: moe_gguf_open_split), reads and checks hyperparameters and
 * every tensor's type and shape. Experts may be merged (ffn_*_exps) or one
 * tensor each (ffn_*.E, pre-2024 Mixtral); deepseek2 attention in the MLA
 * layout (attn_k_b/attn_v_b) or the legacy attn_kv_b. The result owns the mapping; free with
 * moe_model_free. On failure returns MOE_E* and fills err. */
int moe_model_load(moe_model **out, const char *path, moe_err *err);
/* moe_model_load with a repack choice (moe_model_load: MOE_REPACK_ALL).
 * MOE_REPACK=0 in the environment turns repacking off. */
int moe_model_load_ex(moe_model **out, const char *path, moe_repack repack, moe_err *err);
void moe_model_free(moe_model *m);

/* The routing of layer il (a MoE layer) as the model defines it. */
void moe_model_routing(const moe_model *m, int il, moe_routing *r);
/* 1 if layer il has routed experts (not a leading dense layer). */
int moe_model_layer_is_moe(const moe_model *m, int il);

/* Bytes of KV cache per token (all layers) in kv_type (MOE_DTYPE_F16 or
 * MOE_DTYPE_F32): what llama.cpp allocates with the same cache type. For
 * MLA the cache holds the latent and the RoPE key; *mha_equiv (if non-NULL)
 * gets what plain multi-head attention of the same model would hold (K and
 * V of every head). */
size_t moe_model_kv_bytes_per_token(const moe_model *m, moe_dtype kv_type, size_t *mha_equiv);

/* Bytes of weights read per token at batch 1 (attention, router, the chosen
 * experts, shared experts, output head): the memory-bound decode's traffic. */
size_t moe_model_active_bytes(const moe_model *m);
/* The weights a token multiplies (the same tensors, counted in elements,
 * the embedding lookup not): 2x this is its weight ops (multiply-adds x 2). */
size_t moe_model_active_params(const moe_model *m);

/* ---- Context ------------------------------------------------------------ */

typedef struct moe_ctx_params {
    int n_threads; /* >= 1 */
    int n_ctx;     /* positions per slot (default: min(n_ctx_train, 4096)) */
    int n_slots;   /* sequences held at once (default 1) */
    int n_batch;   /* tokens per forward step; larger batches are split (default 512) */
    moe_expert_backend *experts; /* NULL: a local backend is created and owned */
    int dense_moe;               /* 1: every expert for every token (weights from the gate) */
    float capacity_factor;       /* > 0: bound each expert's rows per batch (drops overflow) */
    int gate_margins;            /* 1: keep each decoded row's smallest routing margin over
                                  * layers (moe_ctx_gate_margin; a diagnostic, default 0) */
    moe_dtype kv_type;           /* the KV cache's type: MOE_DTYPE_F16 (default, llama.cpp's
                                  * default) or MOE_DTYPE_F32; attention reads it directly */
    int exact; /* 1: llama.cpp's exact Q8_0, Q5_K, Q6_K, IQ4_XS arithmetic for batches too
                * (what the parity tests compare); 0 (default): the fast
                * int8 tile from MOE_FAST_MIN_ROWS rows (moe/ops.h), its
                * logits within float rounding of the exact ones */
    /* (optional) called on the decoding thread after the routed experts of
     * every MoE layer of every decode, with the choices for batch rows
     * row0..row0+n-1 (sel: n x k expert ids in row order, -1 where the
     * capacity factor dropped a choice) and the wall time from handing the
     * rows to the experts to having their outputs (us): per-row accounting,
     * e.g. the gateway's expert usage per tenant. A decode that fails part-way
     * may have reported some layers. It must not call the context. */
    void (*on_route)(void *ud, int layer, int row0, int n, int k, const int32_t *sel,
                     double expert_us);
    void *on_route_ud;
    int split; /* with an experts backend that has a second (remote: a second set of
                * streams, moe_expert_backend.second), a ubatch of 6 or more tokens may
                * run as two halves, one half's attention and routing while the other
                * half's experts are out; the logits are the same bits either way.
                * MOE_SPLIT_AUTO (default): per size of ubatch, whichever way has
                * taken less time per token lately (both are tried, the slower again
                * now and then); MOE_SPLIT_ON: always; MOE_SPLIT_OFF: never */
} moe_ctx_params;

enum { MOE_SPLIT_OFF = 0, MOE_SPLIT_AUTO = 1, MOE_SPLIT_ON = 2 };

moe_ctx_params moe_ctx_default_params(void);

typedef struct moe_ctx moe_ctx;

/* Creates a context: thread pool, KV cache (n_slots x n_ctx), scratch for
 * n_batch tokens. The model is borrowed for the context's lifetime; an
 * experts backend given in params is borrowed too. */
int moe_ctx_create(moe_ctx **out, const moe_model *m, const moe_ctx_params *p, moe_err *err);
void moe_ctx_destroy(moe_ctx *c);

/* A batch of tokens, each in a slot at a position. */
typedef struct moe_batch {
    int n_tokens;
    const int32_t *token; /* (n_tokens) */
    const int32_t *pos;   /* (n_tokens) */
    const int32_t *slot;  /* (n_tokens) */
    const int8_t *logits; /* (n_tokens) 1: keep this row's logits; NULL: last row only */
} moe_batch;

/* Runs the batch through the model, appending each token to its slot's KV
 * cache, and keeps the logits of the flagged rows (read them with
 * moe_ctx_logits, in row order). Checks every token id, slot and position
 * first: on a bad batch nothing is changed and MOE_EINVAL/MOE_ERANGE is
 * returned with a message. A batch that fails part-way changes no slot and
 * leaves no logits or gate margins (moe_ctx_n_logits 0, margins NAN). */
int moe_ctx_decode(moe_ctx *c, const moe_batch *b, moe_err *err);
/* Logits of the i-th flagged row of the last decode (n_vocab floats), or NULL. */
const float *moe_ctx_logits(const moe_ctx *c, int i);
/* Number of logit rows the last decode kept. */
int moe_ctx_n_logits(const moe_ctx *c);
/* Empties a slot (its next token must be at position 0). */
void moe_ctx_slot_clear(moe_ctx *c, int slot);
/* Keeps the first len positions of a slot (a cached prompt prefix); the
 * next token goes at position len. MOE_EINVAL if len exceeds the slot's
 * length or the slot is out of range (nothing changes). */
int moe_ctx_slot_truncate(moe_ctx *c, int slot, int len);
/* Copies slot src's cache (its moe_ctx_slot_len positions) into slot dst,
 * which then has the same length: a prompt prefilled once serves several
 * sequences (n choices). O(n_layer x length x KV width). MOE_EINVAL for a
 * slot out of range. */
int moe_ctx_slot_copy(moe_ctx *c, int dst, int src);
/* The context's slots and positions per slot (its params, defaults applied). */
int moe_ctx_n_slots(const moe_ctx *c);
int moe_ctx_n_ctx(const moe_ctx *c);
/* Current length of a slot. */
int moe_ctx_slot_len(const moe_ctx *c, int slot);
/* With gate_margins set: the smallest moe_route_margin over the MoE layers
 * of row i of the last decode (in batch order), INFINITY if no layer's
 * selection had a competitor; NAN without gate_margins or for a bad i. */
float moe_ctx_gate_margin(const moe_ctx *c, int i);
/* Counters since the context was created. */
typedef struct moe_ctx_stats {
    uint64_t n_tokens;      /* tokens run */
    uint64_t n_expert_rows; /* (token, expert) rows sent to experts */
    uint64_t n_dropped;     /* choices dropped by the capacity factor */
    uint64_t n_split;       /* ubatches run as two overlapped halves (moe_ctx_params.split) */
} moe_ctx_stats;
void moe_ctx_get_stats(const moe_ctx *c, moe_ctx_stats *out);

/* Bytes of KV cache per token per slot. */
size_t moe_ctx_kv_bytes_per_token(const moe_ctx *c);
/* The KV cache's type (MOE_DTYPE_F16 or MOE_DTYPE_F32). */
moe_dtype moe_ctx_kv_type(const moe_ctx *c);
/* A KV cache type by name, as llama.cpp's --cache-type-k/-v take it: "f16"
 * or "f32" (any case). 0, or -1 for another name. */
int moe_kv_type_parse(const char *name, moe_dtype *out);

/* ---- Expert residency (residency.c): for services hosting a slice ---- */

/* Weight bytes of one expert of layer l (its gate, up and down matrices). */
size_t moe_expert_bytes(const moe_model *m, int l);
/* Brings expert e of layer l into memory (its pages of the mapped file). */
void moe_expert_load_pages(const moe_model *m, int l, int e);
/* Lets its memory go (the pages wholly inside it; neighbours' pages stay). */
void moe_expert_drop_pages(const moe_model *m, int l, int e);
/* A model's identity as workers publish it and placement documents carry it:
 * "arch/<layers>x<experts>/<hidden>/<tensor bytes>" (buf >= 96 bytes). */
void moe_model_identity(const moe_model *m, char *buf, size_t cap);

#endif
