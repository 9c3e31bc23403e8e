/*
 * attention.c - the attention blocks of the forward pass (context.c): per
 * (token, head) over the token's slot in the KV cache, split over the
 * thread pool; standard (with GQA, biases, qk-norm, rope) and deepseek2's
 * multi-head latent attention.
 */
#include <math.h>
#include <string.h>

#include "context_internal.h"

/* ---- Attention ------------------------------------------------------------------ */

typedef struct attn_ctx {
    moe_ctx *c;
    int il, n;
    const int32_t *pos, *slot;
    const float *q; /* head h of row i at q + i*q_stride + h*dk */
    int q_stride;
    int dk, dv; /* q/k head size, v head size */
    float *out; /* head h of row i at out + i*out_stride + h*dv */
    int out_stride;
    int mla; /* V is the first dv values of each K row, one kv head */
} attn_ctx;

/* Heads h0 .. h0 + g - 1 of row i, which share kv head kh, over an f16 cache
 * with the grouped kernels: K and V rows read once for the g heads; each
 * head's bits as attn_task's own. */
static void attn_heads_f16(const attn_ctx *a, int ith, int i, int h0, int g, int kh) {
    moe_ctx *c = a->c;
    const int n_kv = a->pos[i] + 1, ldv = a->mla ? c->k_dim : c->v_dim;
    const size_t nc = (size_t)c->n_ctx, w = (size_t)c->att16_w;
    float *sc = c->scores + (size_t)ith * MOE_ATTN_GROUP * nc;
    uint16_t *t16 = c->att16 + (size_t)ith * MOE_ATTN_GROUP * w;
    const char *K0 = moe__kv_at(c, c->kv_k, c->k_dim, a->il, a->slot[i], 0) +
                     (size_t)kh * (size_t)a->dk * c->kv_es;
    const char *V0 = a->mla ? K0
                            : moe__kv_at(c, c->kv_v, c->v_dim, a->il, a->slot[i], 0) +
                                  (size_t)kh * (size_t)a->dv * c->kv_es;
    const float *q = a->q + (size_t)i * (size_t)a->q_stride + (size_t)h0 * (size_t)a->dk;
    /* the g queries (adjacent heads: dk apart), as f16, dk apart */
    c->k->from_f32(MOE_DTYPE_F16, q, t16, (int64_t)g * a->dk);
    c->k->dots_f16_g(g, a->dk, t16, (const uint16_t *)K0, c->k_dim, n_kv, c->hp.kq_scale, sc,
                     (int64_t)nc);
    for (int h = 0; h < g; h++) {
        moe_op_softmax(sc + (size_t)h * nc, n_kv);
        c->k->from_f32(MOE_DTYPE_F16, sc + (size_t)h * nc, t16 + (size_t)h * w, n_kv);
    }
    float *o = a->out + (size_t)i * (size_t)a->out_stride + (size_t)h0 * (size_t)a->dv;
    c->k->wsum_f16_g(g, a->dv, t16, (int64_t)w, (const uint16_t *)V0, ldv, n_kv, o, a->dv);
}

/* Whether attn_task groups the heads of a kv head (grouped kernels for the
 * f16 cache, head sizes a multiple of 64, 2+ heads a kv head). */
static int attn_grouped(const attn_ctx *a, int group) {
    const moe_ctx *c = a->c;
    return c->kv_type == MOE_DTYPE_F16 && c->k->dots_f16_g && c->k->wsum_f16_g && group > 1 &&
           a->dk % 64 == 0 && a->dv % 64 == 0;
}

static void attn_task(void *arg, int ith, int nth) {
    const attn_ctx *a = arg;
    moe_ctx *c = a->c;
    const moe_hparams *hp = &c->hp;
    const int group = hp->n_head / (a->mla ? 1 : hp->n_head_kv);
    const float scale = hp->kq_scale;
    if (attn_grouped(a, group)) {
        /* tasks: (row, kv head, up to MOE_ATTN_GROUP of its heads) */
        const int per = (group + MOE_ATTN_GROUP - 1) / MOE_ATTN_GROUP, n_kvh = hp->n_head / group;
        const int64_t total = (int64_t)a->n * n_kvh * per;
        for (int64_t t = total * ith / nth; t < total * (ith + 1) / nth; t++) {
            const int i = (int)(t / ((int64_t)n_kvh * per)), r = (int)(t % ((int64_t)n_kvh * per));
            const int kh = r / per, sub = r % per, h0 = kh * group + sub * MOE_ATTN_GROUP;
            const int g = group - sub * MOE_ATTN_GROUP < MOE_ATTN_GROUP
                              ? group - sub * MOE_ATTN_GROUP
                              : MOE_ATTN_GROUP;
            attn_heads_f16(a, ith, i, h0, g, kh);
        }
        return;
    }
    float *sc = c->scores + (size_t)ith * (size_t)c->n_ctx;
    const int64_t total = (int64_t)a->n * hp->n_head;
    for (int64_t t = total * ith / nth; t < total * (ith + 1) / nth; t++) {
        const int i = (int)(t / hp->n_head), h = (int)(t % hp->n_head), kh = h / group;
        const int n_kv = a->pos[i] + 1;
        const float *q = a->q + (size_t)i * (size_t)a->q_stride + (size_t)h * (size_t)a->dk;
        const char *K0 = moe__kv_at(c, c->kv_k, c->k_dim, a->il, a->slot[i], 0) +
                         (size_t)kh * (size_t)a->dk * c->kv_es;
        const char *V0 = a->mla ? K0
                                : moe__kv_at(c, c->kv_v, c->v_dim, a->il, a->slot[i], 0) +
                                      (size_t)kh * (size_t)a->dv * c->kv_es;
        const int ldv = a->mla ? c->k_dim : c->v_dim;
        float *o = a->out + (size_t)i * (size_t)a->out_stride + (size_t)h * (size_t)a->dv;
        if (c->kv_type == MOE_DTYPE_F16) {
            /* as ggml's mul_mat with an F16 cache: q, then the
             * probabilities, converted to f16 first */
            uint16_t *t16 = c->att16 + (size_t)ith * (size_t)c->att16_w;
            c->k->from_f32(MOE_DTYPE_F16, q, t16, a->dk);
            c->k->dots_f16(a->dk, t16, (const uint16_t *)K0, c->k_dim, n_kv, scale, sc);
            moe_op_softmax(sc, n_kv);
            c->k->from_f32(MOE_DTYPE_F16, sc, t16, n_kv);
            c->k->wsum_f16(a->dv, t16, (const uint16_t *)V0, ldv, n_kv, o);
        } else {
            c->k->dots_f32(a->dk, q, (const float *)K0, c->k_dim, n_kv, scale, sc);
            moe_op_softmax(sc, n_kv);
            c->k->wsum_f32(a->dv, sc, (const float *)V0, ldv, n_kv, o);
        }
    }
}

/* The model's RoPE over n_rot dims (YaRN included). */
static void rope_params(const moe_hparams *hp, moe_rope *r) {
    moe_rope_init(r, hp->n_rot, hp->rope_neox, hp->rope_freq_base);
    r->freq_scale = hp->rope_freq_scale;
    r->ext_factor = hp->rope_ext_factor;
    r->attn_factor = hp->rope_attn_factor;
    r->beta_fast = hp->rope_beta_fast;
    r->beta_slow = hp->rope_beta_slow;
    r->n_ctx_orig = hp->rope_n_ctx_orig;
}

static void add_bias(float *x, const moe_tensor *b, int n, int dim) {
    if (!b->data) return;
    const float *bv = b->data;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) x[(size_t)i * (size_t)dim + (size_t)j] += bv[j];
}

/* The rows' q/k norms and rope, and their K and V into the cache. */
typedef struct qkv_rows {
    moe_ctx *c;
    int il;
    const int32_t *pos, *slot;
    moe_rope rope;
} qkv_rows;

static void qkv_rows_range(void *arg, int i0, int i1) {
    const qkv_rows *r = arg;
    moe_ctx *c = r->c;
    const moe_hparams *hp = &c->hp;
    const moe_layer *L = &c->m->layers[r->il];
    const int il = r->il, hd = hp->head_dim;
    const int32_t *pos = r->pos, *slot = r->slot;
    const int64_t qd = c->q_dim, kvd = c->k_dim;
    const moe_rope rope = r->rope;
    for (int i = i0; i < i1; i++) {
        float *q = c->q + (size_t)i * qd, *k = c->kx + (size_t)i * kvd;
        if (hp->qk_norm == MOE_QK_NORM_FULL) {
            moe_op_rmsnorm(q, L->q_norm.data, qd, hp->rms_eps, q);
            moe_op_rmsnorm(k, L->k_norm.data, kvd, hp->rms_eps, k);
        } else if (hp->qk_norm == MOE_QK_NORM_HEAD) {
            for (int h = 0; h < hp->n_head; h++)
                moe_op_rmsnorm(q + (size_t)h * hd, L->q_norm.data, hd, hp->rms_eps,
                               q + (size_t)h * hd);
            for (int h = 0; h < hp->n_head_kv; h++)
                moe_op_rmsnorm(k + (size_t)h * hd, L->k_norm.data, hd, hp->rms_eps,
                               k + (size_t)h * hd);
        }
        moe_op_rope(&rope, q, hp->n_head, hd, pos[i]);
        moe_op_rope(&rope, k, hp->n_head_kv, hd, pos[i]);
        moe__kv_store(c, moe__kv_at(c, c->kv_k, c->k_dim, il, slot[i], pos[i]), k, (int)kvd);
        moe__kv_store(c, moe__kv_at(c, c->kv_v, c->v_dim, il, slot[i], pos[i]),
                      c->vx + (size_t)i * kvd, (int)kvd);
    }
}

void moe__attention_block(moe_ctx *c, int il, int n, const int32_t *pos, const int32_t *slot) {
    const moe_hparams *hp = &c->hp;
    const moe_layer *L = &c->m->layers[il];
    const int E = hp->n_embd, hd = hp->head_dim;
    moe__ctx_rmsnorm(c, c->x, L->attn_norm.data, n, E, c->h);

    /* q, k, v in one pool run when they share a type (they share the input) */
    const int64_t qd = c->q_dim, kvd = c->k_dim; /* K and V rows alike here */
    if (L->wq.type == L->wk.type && L->wq.type == L->wv.type) {
        moe__ctx_quantize(c, L->wq.type, c->h, c->act, n, E);
        c->jobs[0] = moe__weight_job(&L->wq, c->act, n, c->q, qd);
        c->jobs[1] = moe__weight_job(&L->wk, c->act, n, c->kx, kvd);
        c->jobs[2] = moe__weight_job(&L->wv, c->act, n, c->vx, kvd);
        moe__matmul_jobs(c->k, c->pool, c->jobs, 3);
    } else {
        moe__ctx_matmul_f32(c, &L->wq, c->h, n, c->q, qd);
        moe__ctx_matmul_f32(c, &L->wk, c->h, n, c->kx, kvd);
        moe__ctx_matmul_f32(c, &L->wv, c->h, n, c->vx, kvd);
    }
    add_bias(c->q, &L->bq, n, (int)qd);
    add_bias(c->kx, &L->bk, n, (int)kvd);
    add_bias(c->vx, &L->bv, n, (int)kvd);

    qkv_rows r = {.c = c, .il = il, .pos = pos, .slot = slot};
    rope_params(hp, &r.rope);
    /* a row's rope is ~n_head sincos pairs a dim pair: worth a hand-off from 2 rows */
    moe_pool_for(c->pool, n, 2, qkv_rows_range, &r);

    attn_ctx a = {c, il, n, pos, slot, c->q, (int)qd, hd, hd, c->attn, (int)qd, 0};
    moe_pool_run(c->pool, attn_task, &a);

    /* x += attn . Wo (into h as scratch) */
    moe__ctx_matmul_f32(c, &L->wo, c->attn, n, c->h, E);
    moe__ctx_add(c, c->x, c->h, n, E);
}

/* Per-head products: for each head h, Y_h (n rows) = X_h . W_h^T where X_h is
 * the k columns at h*head_stride of X (row stride x_stride) and W_h the h-th
 * matrix of W (m rows of k). Y_h goes to Y + h*m with row stride ldy. */
static void matmul_heads(moe_ctx *c, const moe_tensor *W, const float *X, int x_stride,
                         int head_stride, int n, float *Y, int64_t ldy) {
    const int H = c->hp.n_head;
    const int64_t k = W->ne[0], m = W->ne[1];
    const size_t arb = moe__act_row_bytes(W->type, k), wrb = moe_dtype_row_bytes(W->type, k);
    for (int h = 0; h < H; h++) {
        for (int i = 0; i < n; i++)
            memcpy(c->mla_tmp + (size_t)i * (size_t)k,
                   X + (size_t)i * (size_t)x_stride + (size_t)h * (size_t)head_stride,
                   (size_t)k * sizeof(float));
        char *xq = (char *)c->act + arb * (size_t)n * (size_t)h;
        moe_op_quantize(c->k, W->type, c->mla_tmp, xq, n, k);
        c->head_jobs[h] = (moe__mm_job){W->type,
                                        (const char *)W->data + wrb * (size_t)m * (size_t)h,
                                        m,
                                        k,
                                        xq,
                                        n,
                                        Y + (size_t)h * (size_t)m,
                                        ldy,
                                        NULL,
                                        0,
                                        0};
    }
    moe__matmul_jobs(c->k, c->pool, c->head_jobs, H);
}

/* The MLA projections both layouts share: q (n_head x (nope | rope), the
 * rope part rotated) into c->q and [rmsnorm(latent) | rope(k_pe)] into c->kx
 * (rows of kv_lora_rank + n_rot). */
static void mla_project(moe_ctx *c, const moe_layer *L, int n, const int32_t *pos) {
    const moe_hparams *hp = &c->hp;
    const int E = hp->n_embd, H = hp->n_head, R = hp->kv_lora_rank, P = hp->n_rot;
    const int Dk = hp->head_dim, nope = Dk - P, QA = R + P;
    moe__ctx_rmsnorm(c, c->x, L->attn_norm.data, n, E, c->h);
    if (hp->q_lora_rank) {
        const int QL = hp->q_lora_rank;
        moe__ctx_matmul_f32(c, &L->wq_a, c->h, n, c->mla_qa, QL);
        moe__ctx_rmsnorm(c, c->mla_qa, L->q_a_norm.data, n, QL, c->mla_qa);
        moe__ctx_matmul_f32(c, &L->wq_b, c->mla_qa, n, c->q, c->q_dim);
    } else {
        moe__ctx_matmul_f32(c, &L->wq, c->h, n, c->q, c->q_dim);
    }
    moe__ctx_matmul_f32(c, &L->wkv_a_mqa, c->h, n, c->kx, QA);

    moe_rope rope;
    rope_params(hp, &rope);
    for (int i = 0; i < n; i++) {
        float *q = c->q + (size_t)i * (size_t)c->q_dim, *kv = c->kx + (size_t)i * (size_t)QA;
        for (int h = 0; h < H; h++) moe_op_rope(&rope, q + (size_t)h * Dk + nope, 1, P, pos[i]);
        moe_op_rope(&rope, kv + R, 1, P, pos[i]);
        moe_op_rmsnorm(kv, L->kv_a_norm.data, R, hp->rms_eps, kv);
    }
}

/* Legacy MLA files (attn_kv_b): as llama.cpp's non-MLA path (deepseek2.cpp)
 * runs them, the latent is expanded through attn_kv_b into each head's
 * k_nope and v; K is [k_nope | k_pe] per head, and attention is plain
 * multi-head attention over a per-head cache (K rows of n_head x head_dim,
 * V rows of n_head x head_dim_v; head h's K at
 * h*head_dim, its V at h*head_dim_v). */
void moe__attention_mla_kv_b(moe_ctx *c, int il, int n, const int32_t *pos, const int32_t *slot) {
    const moe_hparams *hp = &c->hp;
    const moe_layer *L = &c->m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, R = hp->kv_lora_rank, P = hp->n_rot;
    const int Dk = hp->head_dim, nope = Dk - P, Dv = hp->head_dim_v, QA = R + P;
    const int KVB = nope + Dv; /* one head's rows of attn_kv_b */
    mla_project(c, L, n, pos);
    for (int i = 0; i < n; i++)
        memcpy(c->mla_tmp + (size_t)i * R, c->kx + (size_t)i * QA, (size_t)R * sizeof(float));
    moe__ctx_matmul_f32(c, &L->wkv_b, c->mla_tmp, n, c->vx, (int64_t)H * KVB);
    /* each row's K (H x Dk) and V (H x Dv) put together in c->attn (free
     * until the attention writes it), then stored */
    for (int i = 0; i < n; i++) {
        const float *kv = c->vx + (size_t)i * H * KVB, *k_pe = c->kx + (size_t)i * QA + R;
        float *K = c->attn, *V = c->attn + (size_t)H * Dk;
        for (int h = 0; h < H; h++) {
            memcpy(K + (size_t)h * Dk, kv + (size_t)h * KVB, (size_t)nope * sizeof(float));
            memcpy(K + (size_t)h * Dk + nope, k_pe, (size_t)P * sizeof(float));
            memcpy(V + (size_t)h * Dv, kv + (size_t)h * KVB + nope, (size_t)Dv * sizeof(float));
        }
        moe__kv_store(c, moe__kv_at(c, c->kv_k, c->k_dim, il, slot[i], pos[i]), K, H * Dk);
        moe__kv_store(c, moe__kv_at(c, c->kv_v, c->v_dim, il, slot[i], pos[i]), V, H * Dv);
    }
    attn_ctx a = {c, il, n, pos, slot, c->q, c->q_dim, Dk, Dv, c->attn, H * Dv, 0};
    moe_pool_run(c->pool, attn_task, &a);
    moe__ctx_matmul_f32(c, &L->wo, c->attn, n, c->h, E);
    moe__ctx_add(c, c->x, c->h, n, E);
}

/* Multi-head Latent Attention, absorbed (deepseek2.cpp): the cache holds
 * [rmsnorm(latent) | rope(k_pe)] per token, one "kv head" for all heads;
 * q_nope is absorbed through attn_k_b into the latent space, the output is
 * expanded per head through attn_v_b. */
void moe__attention_mla(moe_ctx *c, int il, int n, const int32_t *pos, const int32_t *slot) {
    const moe_hparams *hp = &c->hp;
    const moe_layer *L = &c->m->layers[il];
    const int E = hp->n_embd, H = hp->n_head, R = hp->kv_lora_rank, P = hp->n_rot;
    const int Dk = hp->head_dim, nope = Dk - P, Dv = hp->head_dim_v, QA = R + P;
    mla_project(c, L, n, pos);
    for (int i = 0; i < n; i++)
        moe__kv_store(c, moe__kv_at(c, c->kv_k, c->k_dim, il, slot[i], pos[i]),
                      c->kx + (size_t)i * (size_t)QA, QA);

    /* q_abs[h] = attn_k_b[h] . q_nope[h]; then q_pe after it */
    matmul_heads(c, &L->wk_b, c->q, c->q_dim, Dk, n, c->mla_qabs, (int64_t)H * QA);
    /* matmul_heads wrote head h at offset h*R; spread them to stride QA */
    for (int i = 0; i < n; i++) {
        float *row = c->mla_qabs + (size_t)i * (size_t)H * QA;
        for (int h = H - 1; h >= 0; h--) {
            memmove(row + (size_t)h * QA, row + (size_t)h * R, (size_t)R * sizeof(float));
            memcpy(row + (size_t)h * QA + R,
                   c->q + (size_t)i * (size_t)c->q_dim + (size_t)h * Dk + nope,
                   (size_t)P * sizeof(float));
        }
    }

    attn_ctx a = {c, il, n, pos, slot, c->mla_qabs, H * QA, QA, R, c->mla_o, H * R, 1};
    moe_pool_run(c->pool, attn_task, &a);

    /* out[h] = attn_v_b[h] . o[h] */
    matmul_heads(c, &L->wv_b, c->mla_o, H * R, R, n, c->attn, (int64_t)H * Dv);
    moe__ctx_matmul_f32(c, &L->wo, c->attn, n, c->h, E);
    moe__ctx_add(c, c->x, c->h, n, E);
}
