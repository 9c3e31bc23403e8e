/*
 * context_internal.h - the model context's state (struct moe_ctx), shared by
 * context.c (create, the forward pass, the slot API) and attention.c (the
 * attention blocks: standard and MLA).
 */
#ifndef MOE_CONTEXT_INTERNAL_H
#define MOE_CONTEXT_INTERNAL_H

#include "internal.h"
#include "moe/model.h"
#include "moe/ops.h"

struct moe_ctx {
    const moe_model *m;
    moe_hparams hp;
    const moe_cpu_kernels *k;
    moe_pool *pool;
    moe_expert_backend *experts;
    int own_experts;
    int n_ctx, n_slots, n_batch;
    int *slot_len; /* (n_slots) */
    int *slot_tmp; /* (n_slots) validation scratch */
    int q_dim;
    int k_dim, v_dim; /* elements of a cache row (one layer, slot and position) of K and V;
                       * v_dim 0 for absorbed MLA, whose V is the latent part of K */
    int k_route;      /* experts per token: n_expert_used, or n_expert when dense */
    int dense_moe;
    int exact; /* llama.cpp's exact Q8_0 / Q5_K / Q6_K / IQ4_XS arithmetic for batches
                  (moe_ctx_params.exact) */
    int split; /* moe_ctx_params.split */
    /* MOE_SPLIT_AUTO's record per ubatch size class (floor(log2 n)): each
     * way's time per token (moving average, 0: not tried), the ubatches
     * since the slower way was last tried, and how many to wait before
     * trying it again */
    struct split_rec {
        double us_tok[2];
        int since, every;
    } split_rec[17];
    float capacity_factor;
    moe_ctx_stats stats;

    moe_dtype kv_type; /* MOE_DTYPE_F16 or MOE_DTYPE_F32 */
    size_t kv_es;      /* its element size */
    void *kv_k;        /* (n_layer, n_slots, n_ctx, k_dim) */
    void *kv_v;        /* (n_layer, n_slots, n_ctx, v_dim) */

    /* scratch for one ubatch of up to n_batch tokens */
    float *x;    /* (n_batch, n_embd) residual stream */
    float *h;    /* (n_batch, n_embd) normed input of a block */
    void *act;   /* (n_batch) rows of up to max_k elements in a dot type */
    float *q;    /* (n_batch, q_dim) */
    float *kx;   /* (n_batch, kv_dim) */
    float *vx;   /* (n_batch, kv_dim) */
    float *attn; /* (n_batch, max(q_dim, n_head*head_dim_v)) attention output */
    /* MLA scratch (deepseek2) */
    float *mla_qa;          /* (n_batch, q_lora_rank) */
    float *mla_qabs;        /* (n_batch, n_head*(kv_lora_rank+n_rot)) absorbed q | q_pe */
    float *mla_o;           /* (n_batch, n_head*kv_lora_rank) attention output in the latent */
    float *mla_tmp;         /* (n_batch, max(head_dim - n_rot, kv_lora_rank)) one head's rows */
    moe__mm_job *head_jobs; /* (n_head) */
    float *scores;          /* (n_threads, n_ctx) */
    uint16_t *att16;        /* (n_threads, att16_w) f16 cache: q, then the probabilities */
    int att16_w;
    float *router;        /* (n_batch, n_expert) */
    float *route_scratch; /* MOE_ROUTE_SCRATCH(n_expert) */
    int32_t *sel;         /* (n_batch, n_expert_used) chosen experts */
    float *selw;          /* (n_batch, n_expert_used) their weights */
    int32_t *grp_expert;  /* (2, n_expert): a set for each of two outstanding works */
    int32_t *grp_start;   /* (2, n_expert + 1) */
    int32_t *row_of;      /* (n_batch, n_expert_used) row in ex_x of each choice */
    int32_t *count;       /* (n_expert) */
    float *ex_x;          /* (n_batch * n_expert_used, n_embd) */
    float *ex_y;          /* (n_batch * n_expert_used, n_embd) */
    float *sh_g;          /* (n_batch, max(n_ff_shexp, n_ff)) shared/dense FFN gate */
    float *sh_u;          /* (n_batch, max(n_ff_shexp, n_ff)) shared/dense FFN up */
    float *sh_gate;       /* (n_batch) */
    float *moe_out;       /* (n_batch, n_embd) */
    float *out_rows;      /* (n_batch, n_embd) normed rows that need logits */
    moe__mm_job jobs[8];

    float *logits; /* (n_logits, n_vocab) of the last decode */
    int n_logits, cap_logits;
    int gate_margins; /* record gate_margin (moe_ctx_params.gate_margins) */
    void (*on_route)(void *ud, int layer, int row0, int n, int k, const int32_t *sel, double us);
    void *on_route_ud;
    float *gate_margin; /* (cap_margins) per row of the last decode, if recorded */
    int n_margins, cap_margins;
};

/* K or V of (layer il, slot, position pos): a row of dim elements (c->k_dim
 * or c->v_dim) of the cache's type in base (c->kv_k or c->kv_v). */
static inline char *moe__kv_at(const moe_ctx *c, void *base, int dim, int il, int slot, int pos) {
    return (char *)base +
           (((size_t)il * (size_t)c->n_slots + (size_t)slot) * (size_t)c->n_ctx + (size_t)pos) *
               (size_t)dim * c->kv_es;
}

/* Stores n floats at a cache address in the cache's type (f16: rounded to
 * nearest, as ggml's copy into an F16 cache). */
static inline void moe__kv_store(const moe_ctx *c, void *dst, const float *src, int n) {
    c->k->from_f32(c->kv_type, src, dst, n);
}

/* Row ops over the context's pool (context.c), each row's bits as one
 * thread's: n rows of dim of x rmsnormed into y (y may be x); n rows of k
 * quantised for weights of type wt; x[i] += h[i] for n rows of dim. */
void moe__ctx_rmsnorm(moe_ctx *c, const float *x, const float *w, int n, int dim, float *y);
void moe__ctx_quantize(moe_ctx *c, moe_dtype wt, const float *x, void *dst, int n, int64_t k);
void moe__ctx_add(moe_ctx *c, float *x, const float *h, int n, int dim);

/* Y (n rows) = X . W^T for one weight, X given in f32 (quantised into c->act). */
static inline void moe__ctx_matmul_f32(moe_ctx *c, const moe_tensor *W, const float *X, int n,
                                       float *Y, int64_t ldy) {
    const int64_t k = W->ne[0];
    moe__ctx_quantize(c, W->type, X, c->act, n, k);
    moe__mm_job j = moe__weight_job(W, c->act, n, Y, ldy);
    moe__matmul_jobs(c->k, c->pool, &j, 1);
}

/* attention.c: layer il's attention block for the ubatch's n rows of c->x
 * (tokens at pos[i] of slot[i]): rmsnorm, the projections, their K/V into
 * the cache, attention over the slot, the output projection added to c->x
 * (c->h is scratch). */
void moe__attention_block(moe_ctx *c, int il, int n, const int32_t *pos, const int32_t *slot);
/* The same for deepseek2's multi-head latent attention: absorbed attn_k_b /
 * attn_v_b, or a file's attn_kv_b. */
void moe__attention_mla(moe_ctx *c, int il, int n, const int32_t *pos, const int32_t *slot);
void moe__attention_mla_kv_b(moe_ctx *c, int il, int n, const int32_t *pos, const int32_t *slot);

#endif
