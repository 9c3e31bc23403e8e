/*
 * context.c - a model context: thread pool, KV cache with a slot per
 * sequence, scratch sized once for n_batch tokens, and the batched forward
 * pass (see moe/model.h).
 *
 * One forward step over n tokens (any mix of slots and positions):
 *   x = embed(tokens)
 *   per layer:  h = rmsnorm(x);  q,k,v = h.Wq,Wk,Wv (+bias, qk-norm, rope)
 *               store k,v in the cache; attention per (token, head); x += o.Wo
 *               h = rmsnorm(x);  router -> top-k experts per token
 *               rows grouped by expert -> expert backend (submit)
 *               shared expert while the backend works; wait; x += weighted sum
 *   logits = rmsnorm(x).Wout for the flagged rows
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "context_internal.h"

moe_ctx_params moe_ctx_default_params(void) {
    return (moe_ctx_params){.n_threads = 1,
                            .n_ctx = 0,
                            .n_slots = 1,
                            .n_batch = 512,
                            .experts = NULL,
                            .kv_type = MOE_DTYPE_F16,
                            .split = MOE_SPLIT_AUTO};
}

void moe_ctx_destroy(moe_ctx *c) {
    if (!c) return;
    if (c->own_experts) moe_expert_backend_destroy(c->experts);
    moe_pool_destroy(c->pool);
    MOE_FREE_ALL(c->slot_len, c->slot_tmp, c->kv_k, c->kv_v, c->x, c->h, c->act, c->q, c->kx, c->vx,
                 c->attn, c->scores, c->router, c->route_scratch, c->sel, c->selw, c->grp_expert,
                 c->grp_start, c->row_of, c->count, c->ex_x, c->ex_y, c->sh_g, c->sh_u, c->sh_gate,
                 c->moe_out, c->out_rows, c->logits, c->gate_margin, c->mla_qa, c->mla_qabs,
                 c->mla_o, c->mla_tmp, c->head_jobs, c->att16, c);
}

int moe_ctx_create(moe_ctx **out, const moe_model *m, const moe_ctx_params *p, moe_err *err) {
    *out = NULL;
    moe_ctx_params d = moe_ctx_default_params();
    if (!p) p = &d;
    const moe_hparams *hp = &m->hp;
    int n_ctx = p->n_ctx > 0 ? p->n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    if (p->kv_type != MOE_DTYPE_F16 && p->kv_type != MOE_DTYPE_F32)
        return moe_err_set(err, MOE_EINVAL, "KV cache type %s: f16 or f32 only",
                           moe_dtype_name(p->kv_type));
    if (p->n_threads < 1 || p->n_threads > 256)
        return moe_err_set(err, MOE_EINVAL, "n_threads %d out of range [1, 256]", p->n_threads);
    if (p->n_slots < 1 || p->n_slots > 65536 || p->n_batch < 1 || p->n_batch > 65536 || n_ctx < 1 ||
        n_ctx > (1 << 22))
        return moe_err_set(err, MOE_EINVAL, "n_ctx %d, n_slots %d or n_batch %d out of range",
                           n_ctx, p->n_slots, p->n_batch);
    moe_ctx *c = calloc(1, sizeof *c);
    if (!c) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    c->m = m;
    c->hp = *hp;
    c->k = moe_cpu_kernels_pick(p->exact);
    c->exact = p->exact != 0;
    c->split = p->split == MOE_SPLIT_ON || p->split == MOE_SPLIT_AUTO ? p->split : MOE_SPLIT_OFF;
    c->n_ctx = n_ctx;
    c->n_slots = p->n_slots;
    c->n_batch = p->n_batch;
    c->q_dim = hp->n_head * hp->head_dim;
    c->kv_type = p->kv_type;
    c->kv_es = moe_dtype_block_bytes(p->kv_type);
    if (hp->mla_kv_b) { /* per-head K and V rows (see attention_mla_kv_b) */
        c->k_dim = hp->n_head * hp->head_dim;
        c->v_dim = hp->n_head * hp->head_dim_v;
    } else if (hp->is_mla) { /* [latent | k_pe]; V is the latent */
        c->k_dim = hp->kv_lora_rank + hp->n_rot;
        c->v_dim = 0;
    } else {
        c->k_dim = c->v_dim = hp->n_head_kv * hp->head_dim;
    }
    c->dense_moe = p->dense_moe != 0;
    c->capacity_factor = p->capacity_factor > 0.0f ? p->capacity_factor : 0.0f;
    c->gate_margins = p->gate_margins != 0;
    c->on_route = p->on_route;
    c->on_route_ud = p->on_route_ud;
    c->k_route = c->dense_moe ? hp->n_expert : hp->n_expert_used;
    moe_routing rcheck;
    moe_model_routing(m, hp->n_layer - 1, &rcheck);
    rcheck.dense = c->dense_moe;
    if (moe_routing_check(&rcheck) < 0) {
        free(c);
        return moe_err_set(err, MOE_EINVAL, "the model's routing configuration is invalid");
    }
    int rc = moe_pool_create(&c->pool, p->n_threads);
    if (rc < 0) {
        moe_err_set(err, rc, "cannot start %d threads", p->n_threads);
        goto fail;
    }

    const size_t B = (size_t)c->n_batch, E = (size_t)hp->n_embd, K = (size_t)c->k_route;
    const size_t kv_rows = (size_t)hp->n_layer * (size_t)c->n_slots * (size_t)n_ctx;
    const size_t H = (size_t)hp->n_head, R = (size_t)hp->kv_lora_rank;
    size_t attn_w = (size_t)c->q_dim > H * (size_t)hp->head_dim_v ? (size_t)c->q_dim
                                                                  : H * (size_t)hp->head_dim_v;
    size_t max_k = E;
    if (attn_w > max_k) max_k = attn_w;
    if (hp->is_mla) {
        const size_t tmpw =
            R > (size_t)(hp->head_dim - hp->n_rot) ? R : (size_t)(hp->head_dim - hp->n_rot);
        if (H * tmpw > max_k) max_k = H * tmpw; /* every head's rows quantised at once */
        if ((size_t)hp->q_lora_rank > max_k) max_k = (size_t)hp->q_lora_rank;
        c->mla_qa = moe__alloc(B * ((size_t)hp->q_lora_rank + 1) * 4);
        c->mla_qabs = moe__alloc(B * H * (R + (size_t)hp->n_rot) * 4);
        c->mla_o = moe__alloc(B * H * R * 4);
        c->mla_tmp = moe__alloc(B * tmpw * 4);
        c->head_jobs = calloc(H, sizeof *c->head_jobs);
        if (!c->mla_qa || !c->mla_qabs || !c->mla_o || !c->mla_tmp || !c->head_jobs) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for MLA scratch");
            goto fail;
        }
    }
    const int n_ff_dense = hp->n_layer_dense_lead > 0 ? hp->n_ff : 0;
    const size_t S = (size_t)(hp->n_ff_shexp > n_ff_dense ? hp->n_ff_shexp : n_ff_dense) + 1;
    if (S > max_k) max_k = S;
    c->slot_len = calloc((size_t)c->n_slots, sizeof(int));
    c->slot_tmp = calloc((size_t)c->n_slots, sizeof(int));
    c->kv_k = moe__alloc(kv_rows * (size_t)c->k_dim * c->kv_es);
    /* absorbed MLA: V is K's latent */
    c->kv_v = moe__alloc(c->v_dim ? kv_rows * (size_t)c->v_dim * c->kv_es : 64);
    c->x = moe__alloc(B * E * 4);
    c->h = moe__alloc(B * E * 4);
    c->act = moe__alloc(B * max_k * 4);
    c->q = moe__alloc(B * (size_t)c->q_dim * 4);
    /* MLA: kx holds [latent | k_pe]; legacy MLA: vx holds attn_kv_b's output */
    const size_t kxw =
        (size_t)c->k_dim > R + (size_t)hp->n_rot ? (size_t)c->k_dim : R + (size_t)hp->n_rot;
    const size_t kvbw = H * (size_t)(hp->head_dim - hp->n_rot + hp->head_dim_v);
    c->kx = moe__alloc(B * kxw * 4);
    c->vx = moe__alloc(B * (hp->mla_kv_b && kvbw > (size_t)c->k_dim ? kvbw : (size_t)c->k_dim) * 4);
    /* legacy MLA puts one row's K and V together in attn before storing them */
    const size_t attn_n =
        B * attn_w > (size_t)(c->k_dim + c->v_dim) ? B * attn_w : (size_t)(c->k_dim + c->v_dim);
    c->attn = moe__alloc(attn_n * 4);
    /* each thread's scores, for up to MOE_ATTN_GROUP heads at once */
    c->scores = moe__alloc((size_t)p->n_threads * MOE_ATTN_GROUP * (size_t)n_ctx * 4);
    /* f16 cache: each thread's q (k_dim at most) and probabilities (n_ctx),
     * up to MOE_ATTN_GROUP heads' */
    c->att16_w = c->k_dim > n_ctx ? c->k_dim : n_ctx;
    c->att16 = moe__alloc((size_t)p->n_threads * MOE_ATTN_GROUP * (size_t)c->att16_w * 2);
    c->router = moe__alloc(B * (size_t)hp->n_expert * 4);
    c->route_scratch = moe__alloc(MOE_ROUTE_SCRATCH(hp->n_expert) * 4);
    c->sel = moe__alloc(B * K * 4);
    c->selw = moe__alloc(B * K * 4);
    /* two sets: each of two outstanding works (the halves of a split ubatch) */
    c->grp_expert = moe__alloc(2 * (size_t)hp->n_expert * 4);
    c->grp_start = moe__alloc(2 * ((size_t)hp->n_expert + 1) * 4);
    c->row_of = moe__alloc(B * K * 4);
    c->count = moe__alloc((size_t)hp->n_expert * 4);
    c->ex_x = moe__alloc(B * K * E * 4);
    c->ex_y = moe__alloc(B * K * E * 4);
    c->sh_g = moe__alloc(B * S * 4);
    c->sh_u = moe__alloc(B * S * 4);
    c->sh_gate = moe__alloc(B * 4);
    c->moe_out = moe__alloc(B * E * 4);
    c->out_rows = moe__alloc(B * E * 4);
    if (!c->slot_len || !c->slot_tmp || !c->kv_k || !c->kv_v || !c->att16 || !c->x || !c->h ||
        !c->act || !c->q || !c->kx || !c->vx || !c->attn || !c->scores || !c->router ||
        !c->route_scratch || !c->sel || !c->selw || !c->grp_expert || !c->grp_start || !c->row_of ||
        !c->count || !c->ex_x || !c->ex_y || !c->sh_g || !c->sh_u || !c->sh_gate || !c->moe_out ||
        !c->out_rows) {
        rc = moe_err_set(
            err, MOE_ENOMEM, "out of memory for the KV cache (%.1f MiB %s) and scratch",
            (double)kv_rows * (double)(c->k_dim + c->v_dim) * (double)c->kv_es / (1 << 20),
            moe_dtype_name(c->kv_type));
        goto fail;
    }
    if (p->experts) {
        c->experts = p->experts;
    } else {
        rc = moe_expert_backend_local_create(&c->experts, m, c->pool, (int)(B * K), err);
        if (rc < 0) goto fail;
        c->own_experts = 1;
    }
    *out = c;
    return 0;
fail:
    moe_ctx_destroy(c);
    return rc;
}

/* ---- Helpers ----------------------------------------------------------------- */

static void embed_row(const moe_tensor *t, int32_t tok, float *out) {
    const size_t rb = moe_dtype_row_bytes(t->type, t->ne[0]);
    moe_dtype_to_f32(t->type, (const char *)t->data + rb * (size_t)tok, out, t->ne[0]);
}

/* ---- Row ops over the pool ------------------------------------------------------- */

typedef struct rows_op {
    const float *x, *w;
    float *y;
    int64_t dim;
    float eps;
} rows_op;

static void rmsnorm_range(void *arg, int i0, int i1) {
    const rows_op *o = arg;
    moe_op_rmsnorm_rows(o->x + (size_t)i0 * (size_t)o->dim, o->w, i1 - i0, o->dim, o->eps,
                        o->y + (size_t)i0 * (size_t)o->dim);
}

void moe__ctx_rmsnorm(moe_ctx *c, const float *x, const float *w, int n, int dim, float *y) {
    rows_op o = {.x = x, .w = w, .y = y, .dim = dim, .eps = c->hp.rms_eps};
    moe_pool_for(c->pool, n, moe__rows_min_par(dim), rmsnorm_range, &o);
}

void moe__ctx_quantize(moe_ctx *c, moe_dtype wt, const float *x, void *dst, int n, int64_t k) {
    moe__pool_quantize(c->pool, c->k, wt, x, dst, n, k);
}

static void add_range(void *arg, int i0, int i1) {
    const rows_op *o = arg;
    for (size_t i = (size_t)i0 * (size_t)o->dim; i < (size_t)i1 * (size_t)o->dim; i++)
        o->y[i] += o->x[i];
}

void moe__ctx_add(moe_ctx *c, float *x, const float *h, int n, int dim) {
    rows_op o = {.x = h, .y = x, .dim = dim};
    moe_pool_for(c->pool, n, moe__rows_min_par(dim), add_range, &o);
}

/* ---- FFN blocks --------------------------------------------------------------------- */

typedef struct swiglu_ctx {
    float *g;
    const float *u;
    int n;
    int64_t width;
} swiglu_ctx;

static void swiglu_rows(void *arg, int ith, int nth) {
    const swiglu_ctx *s = arg;
    for (int64_t i = (int64_t)s->n * ith / nth; i < (int64_t)s->n * (ith + 1) / nth; i++)
        moe_op_swiglu(s->g + (size_t)i * s->width, s->u + (size_t)i * s->width,
                      s->g + (size_t)i * s->width, s->width);
}

/* out (n rows) = down(silu(gate . h) * (up . h)) for the rows of c->h: a dense
 * FFN or a shared expert, computed here. */
static void ffn_local(moe_ctx *c, const moe_tensor *gate, const moe_tensor *up,
                      const moe_tensor *down, int n, float *out) {
    const int64_t E = c->hp.n_embd, S = gate->ne[1];
    moe__ctx_quantize(c, gate->type, c->h, c->act, n, E);
    c->jobs[0] = moe__weight_job(gate, c->act, n, c->sh_g, S);
    c->jobs[1] = moe__weight_job(up, c->act, n, c->sh_u, S);
    moe__matmul_jobs(c->k, c->pool, c->jobs, 2);
    swiglu_ctx sw = {c->sh_g, c->sh_u, n, S};
    moe_pool_run(c->pool, swiglu_rows, &sw);
    moe__ctx_matmul_f32(c, down, c->sh_g, n, out, E);
}

/* Rows [row0, row0 + n) of a ubatch on their way through one MoE layer:
 * where their routed work lives from submit to finish (the whole ubatch, or
 * one of the two halves the context overlaps when its experts are remote). */
typedef struct ubhalf {
    int row0, n;   /* rows of the ubatch */
    int batch_row; /* the first one's row in the decode's batch */
    float *x;      /* (n, n_embd) residual rows: c->x + row0 */
    float *moe_out;
    int32_t *sel, *row_of;
    float *selw;
    float *ex_x, *ex_y;
    int32_t *grp_expert, *grp_start;
    moe_expert_backend *be;
    int batched;       /* moe_expert_work.batched of the ubatch */
    moe_expert_work w; /* the work submitted (the backend holds a pointer to it) */
    int pending;       /* a work submitted and not yet waited for */
    int64_t t_sub;     /* when it was submitted (on_route) */
} ubhalf;

static void dense_block(moe_ctx *c, int il, const ubhalf *u) {
    const moe_layer *L = &c->m->layers[il];
    const int E = c->hp.n_embd;
    ffn_local(c, &L->ffn_gate, &L->ffn_up, &L->ffn_down, u->n, u->moe_out);
    moe__ctx_add(c, u->x, u->moe_out, u->n, E);
}

static int64_t ctx_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct finish_rows {
    moe_ctx *c;
    const ubhalf *u;
} finish_rows;

/* rows [i0, i1) of h copied to their experts' rows of ex_x */
static void gather_range(void *arg, int i0, int i1) {
    const finish_rows *f = arg;
    const ubhalf *u = f->u;
    const int E = f->c->hp.n_embd, K = f->c->k_route;
    for (int i = i0; i < i1; i++)
        for (int k = 0; k < K; k++) {
            const int32_t r_ = u->row_of[(size_t)i * K + k];
            if (r_ >= 0)
                memcpy(u->ex_x + (size_t)r_ * E, f->c->h + (size_t)i * E,
                       (size_t)E * sizeof(float));
        }
}

/* Layer il's FFN for u's rows, up to the wait: rmsnorm, then a dense FFN
 * (done here) or the router, the rows grouped by expert and handed to u's
 * backend, and the shared experts computed while it works. c->h, c->act,
 * c->router and the FFN scratch are free again when it returns. */
static int moe_submit(moe_ctx *c, int il, ubhalf *u, moe_err *err) {
    const moe_hparams *hp = &c->hp;
    const moe_layer *L = &c->m->layers[il];
    const int E = hp->n_embd, X = hp->n_expert, K = c->k_route, n = u->n;
    moe__ctx_rmsnorm(c, u->x, L->ffn_norm.data, n, E, c->h);
    if (!moe_model_layer_is_moe(c->m, il)) {
        dense_block(c, il, u);
        return 0;
    }

    /* router */
    moe_routing r;
    moe_model_routing(c->m, il, &r);
    r.dense = c->dense_moe;
    moe__ctx_matmul_f32(c, &L->gate_inp, c->h, n, c->router, X);
    for (int i = 0; i < n; i++) {
        if (moe_route(&r, c->router + (size_t)i * X, c->route_scratch, u->sel + (size_t)i * K,
                      u->selw + (size_t)i * K) < 0)
            return moe_err_set(err, MOE_ENUMERIC,
                               "layer %d: non-finite router logit (or bias) for batch row %d", il,
                               u->batch_row + i);
        if (c->gate_margins) {
            const float gm = moe_route_margin(&r, c->route_scratch, u->sel + (size_t)i * K);
            float *mm = &c->gate_margin[u->batch_row + i];
            if (gm < *mm) *mm = gm;
        }
    }
    c->stats.n_dropped +=
        (uint64_t)moe_route_capacity(c->capacity_factor, X, n, K, u->sel, u->selw, c->count);

    /* group rows by expert; dropped choices (sel -1) get no row */
    memset(c->count, 0, (size_t)X * sizeof(int32_t));
    for (int i = 0; i < n * K; i++)
        if (u->sel[i] >= 0) c->count[u->sel[i]]++;
    int n_groups = 0, row = 0;
    for (int e = 0; e < X; e++) {
        if (!c->count[e]) continue;
        u->grp_expert[n_groups] = e;
        u->grp_start[n_groups] = row;
        row += c->count[e];
        c->count[e] = u->grp_start[n_groups]; /* now: next free row of e */
        n_groups++;
    }
    u->grp_start[n_groups] = row;
    c->stats.n_expert_rows += (uint64_t)row;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < K; k++) {
            const int32_t e = u->sel[(size_t)i * K + k];
            if (e < 0) {
                u->row_of[(size_t)i * K + k] = -1;
                continue;
            }
            u->row_of[(size_t)i * K + k] = c->count[e]++;
        }
    }
    finish_rows gr = {c, u};
    moe_pool_for(c->pool, n, moe__rows_min_par((int64_t)E * K), gather_range, &gr);
    u->w = (moe_expert_work){.layer = il,
                             .n_groups = n_groups,
                             .expert = u->grp_expert,
                             .row_start = u->grp_start,
                             .n_embd = E,
                             .x = u->ex_x,
                             .y = u->ex_y,
                             .exact = c->exact,
                             .batched = u->batched};
    u->t_sub = c->on_route ? ctx_now_us() : 0;
    int rc = u->be->submit(u->be->ctx, &u->w, err);
    if (rc < 0) return rc;
    u->pending = 1;

    /* shared experts while the routed ones are computed */
    if (hp->n_ff_shexp) {
        ffn_local(c, &L->gate_shexp, &L->up_shexp, &L->down_shexp, n, u->moe_out);
        if (L->gate_inp_shexp.data) {
            moe__ctx_matmul_f32(c, &L->gate_inp_shexp, c->h, n, c->sh_gate, 1);
            for (int i = 0; i < n; i++) {
                const float g = 1.0f / (1.0f + expf(-c->sh_gate[i]));
                for (int j = 0; j < E; j++) u->moe_out[(size_t)i * E + j] *= g;
            }
        }
    }
    return 0;
}

/* combine rows [i0, i1): the weighted routed outputs in selection order,
 * then the shared experts, then the residual */
static void finish_range(void *arg, int i0, int i1) {
    const finish_rows *f = arg;
    moe_ctx *c = f->c;
    const ubhalf *u = f->u;
    const moe_hparams *hp = &c->hp;
    const int E = hp->n_embd, K = c->k_route;
    for (int i = i0; i < i1; i++) {
        float *xo = u->x + (size_t)i * E;
        float *acc = c->h + (size_t)i * E; /* h is free now */
        int first = 1;
        for (int k = 0; k < K; k++) {
            const int32_t r_ = u->row_of[(size_t)i * K + k];
            if (r_ < 0) continue;
            const float wk = u->selw[(size_t)i * K + k];
            const float *y = u->ex_y + (size_t)r_ * E;
            if (first)
                for (int j = 0; j < E; j++) acc[j] = y[j] * wk;
            else
                for (int j = 0; j < E; j++) acc[j] += y[j] * wk;
            first = 0;
        }
        if (first) memset(acc, 0, (size_t)E * sizeof(float));
        if (hp->n_ff_shexp) {
            const float *sh = u->moe_out + (size_t)i * E;
            for (int j = 0; j < E; j++) acc[j] += sh[j];
        }
        for (int j = 0; j < E; j++) xo[j] += acc[j];
    }
}

/* The rest of layer il's FFN for u's rows: waits for the routed experts (if
 * submitted) and adds their weighted outputs and the shared experts' to the
 * residual. Uses c->h as scratch. */
static int moe_finish(moe_ctx *c, int il, ubhalf *u, moe_err *err) {
    if (!u->pending) return 0;
    const moe_hparams *hp = &c->hp;
    const int E = hp->n_embd, K = c->k_route, n = u->n;
    u->pending = 0;
    int rc = u->be->wait(u->be->ctx, err);
    if (rc < 0) return rc;
    if (c->on_route)
        c->on_route(c->on_route_ud, il, u->batch_row, n, K, u->sel,
                    (double)(ctx_now_us() - u->t_sub));

    finish_rows f = {c, u};
    moe_pool_for(c->pool, n, moe__rows_min_par(E), finish_range, &f);
    return 0;
}

/* ---- Decode ------------------------------------------------------------------------ */

/* Rows [row0, row0 + n) of the ubatch as a ubhalf: views into the
 * context's row state (ex_x/ex_y from row0 x k_route), with grouping
 * arrays set gi (0 or 1: each of two outstanding works has its own) and
 * backend be. */
static ubhalf ub_half(moe_ctx *c, int row0, int n, int batch_row, int gi, moe_expert_backend *be,
                      int batched) {
    const size_t E = (size_t)c->hp.n_embd, K = (size_t)c->k_route, r = (size_t)row0;
    return (ubhalf){.row0 = row0,
                    .n = n,
                    .batch_row = batch_row,
                    .x = c->x + r * E,
                    .moe_out = c->moe_out + r * E,
                    .sel = c->sel + r * K,
                    .row_of = c->row_of + r * K,
                    .selw = c->selw + r * K,
                    .ex_x = c->ex_x + r * K * E,
                    .ex_y = c->ex_y + r * K * E,
                    .grp_expert = c->grp_expert + (size_t)gi * (size_t)c->hp.n_expert,
                    .grp_start = c->grp_start + (size_t)gi * ((size_t)c->hp.n_expert + 1),
                    .be = be,
                    .batched = batched};
}

/* Layer il's attention for u's rows (the attention blocks work on c->x's
 * first rows: pointed at u's for the call). */
static void attention(moe_ctx *c, int il, const ubhalf *u, const int32_t *pos,
                      const int32_t *slot) {
    float *x = c->x;
    c->x = u->x;
    pos += u->row0;
    slot += u->row0;
    if (c->hp.mla_kv_b)
        moe__attention_mla_kv_b(c, il, u->n, pos, slot);
    else if (c->hp.is_mla)
        moe__attention_mla(c, il, u->n, pos, slot);
    else
        moe__attention_block(c, il, u->n, pos, slot);
    c->x = x;
}

/* Whether a ubatch of n rows goes through the layers as two halves: with a
 * second expert backend (moe_expert_backend.second), each half's attention
 * and routing run while the other half's experts are out. From 6 rows, so
 * each half has MOE_FAST_MIN_ROWS or more: every product of a half then
 * takes the numerics the whole ubatch would (the float types' tinyBLAS
 * from 2 rows, the fast Q8_0 tile from 3; the routed experts' groups by
 * the ubatch's size, moe_expert_work.batched, whatever their own rows),
 * and the logits are the same bits either way. */
static int ub_split_possible(const moe_ctx *c, int n) {
    return c->split != MOE_SPLIT_OFF && c->experts->second && n >= 2 * MOE_FAST_MIN_ROWS;
}

/* MOE_SPLIT_AUTO: which way to run a ubatch of n rows. Each size class
 * tries both ways first, then takes the one with the lower time per token,
 * and tries the other again after `every` ubatches (8, doubling up to 256
 * while the other keeps losing, back to 8 when it wins): whether halves pay
 * depends on where the experts run (the workers' cores shared with this
 * process or not, the network), which only timing shows. */
#define SPLIT_EVERY_MIN 8
#define SPLIT_EVERY_MAX 256
static int split_class(int n) {
    int k = 0;
    while (n > 1 && k < 16) n >>= 1, k++;
    return k;
}

static int ub_split(moe_ctx *c, int n) {
    if (!ub_split_possible(c, n)) return 0;
    if (c->split == MOE_SPLIT_ON) return 1;
    struct split_rec *r = &c->split_rec[split_class(n)];
    if (r->us_tok[0] <= 0) return 0;
    if (r->us_tok[1] <= 0) return 1;
    const int best = r->us_tok[1] < r->us_tok[0];
    if (++r->since >= r->every) {
        r->since = 0;
        return !best;
    }
    return best;
}

/* Records that a ubatch of n rows took us microseconds run one way. */
static void split_note(moe_ctx *c, int n, int split, int64_t us) {
    if (c->split != MOE_SPLIT_AUTO || !ub_split_possible(c, n)) return;
    struct split_rec *r = &c->split_rec[split_class(n)];
    const double t = (double)us / n;
    const int best_before = r->us_tok[1] > 0 && r->us_tok[1] < r->us_tok[0];
    r->us_tok[split] = r->us_tok[split] > 0 ? 0.75 * r->us_tok[split] + 0.25 * t : t;
    if (r->us_tok[0] <= 0 || r->us_tok[1] <= 0) return;
    const int best = r->us_tok[1] < r->us_tok[0];
    if (split != best_before) /* a trial of the other way: it lost again, or won */
        r->every = best == best_before
                       ? (r->every * 2 > SPLIT_EVERY_MAX ? SPLIT_EVERY_MAX : r->every * 2)
                       : SPLIT_EVERY_MIN;
    if (r->every < SPLIT_EVERY_MIN) r->every = SPLIT_EVERY_MIN;
}

static int forward_ubatch(moe_ctx *c, const moe_batch *b, int i0, int n, moe_err *err) {
    const moe_hparams *hp = &c->hp;
    const int E = hp->n_embd;
    const int32_t *tok = b->token + i0, *pos = b->pos + i0, *slot = b->slot + i0;
    const int batched = n >= MOE_FAST_MIN_ROWS;
    for (int i = 0; i < n; i++) embed_row(&c->m->tok_embd, tok[i], c->x + (size_t)i * E);
    ubhalf u[2];
    int nu = 1, rc = 0;
    const int64_t t0 = ctx_now_us();
    if (ub_split(c, n)) {
        const int na = n / 2;
        u[0] = ub_half(c, 0, na, i0, 0, c->experts, batched);
        u[1] = ub_half(c, na, n - na, i0 + na, 1, c->experts->second, batched);
        nu = 2;
        c->stats.n_split++;
    } else {
        u[0] = ub_half(c, 0, n, i0, 0, c->experts, batched);
    }
    /* per layer and half: finish the previous layer's FFN, then this
     * layer's attention and FFN up to the wait (so one half's experts are
     * out while the other half's attention and routing run) */
    for (int il = 0; il < hp->n_layer && rc == 0; il++)
        for (int h = 0; h < nu && rc == 0; h++) {
            if (il > 0) rc = moe_finish(c, il - 1, &u[h], err);
            if (rc < 0) break;
            attention(c, il, &u[h], pos, slot);
            rc = moe_submit(c, il, &u[h], err);
        }
    for (int h = 0; h < nu; h++) {
        if (rc == 0) {
            rc = moe_finish(c, hp->n_layer - 1, &u[h], err);
        } else if (u[h].pending) { /* failed: the backend still holds its rows */
            moe_err ignore;
            u[h].pending = 0;
            u[h].be->wait(u[h].be->ctx, &ignore);
        }
    }
    if (rc < 0) return rc;
    split_note(c, n, nu == 2, ctx_now_us() - t0);
    for (int i = 0; i < n; i++) c->slot_len[slot[i]] = pos[i] + 1;
    c->stats.n_tokens += (uint64_t)n;

    /* logits for the flagged rows */
    int n_out = 0;
    for (int i = 0; i < n; i++) {
        const int want = b->logits ? b->logits[i0 + i] != 0 : (i0 + i == b->n_tokens - 1);
        if (!want) continue;
        moe_op_rmsnorm(c->x + (size_t)i * E, c->m->output_norm.data, E, hp->rms_eps,
                       c->out_rows + (size_t)n_out * E);
        n_out++;
    }
    if (n_out) {
        float *dst = c->logits + (size_t)c->n_logits * (size_t)hp->n_vocab;
        moe__ctx_matmul_f32(c, &c->m->output, c->out_rows, n_out, dst, hp->n_vocab);
        c->n_logits += n_out;
    }
    return 0;
}

int moe_ctx_decode(moe_ctx *c, const moe_batch *b, moe_err *err) {
    const moe_hparams *hp = &c->hp;
    if (!b || b->n_tokens < 0 || (b->n_tokens > 0 && (!b->token || !b->pos || !b->slot)))
        return moe_err_set(err, MOE_EINVAL, "batch: missing token, pos or slot arrays");
    /* validate everything before touching state */
    memcpy(c->slot_tmp, c->slot_len, (size_t)c->n_slots * sizeof(int));
    int n_out = 0;
    for (int i = 0; i < b->n_tokens; i++) {
        const int32_t t = b->token[i], s = b->slot[i], p = b->pos[i];
        if (t < 0 || t >= hp->n_vocab)
            return moe_err_set(err, MOE_ERANGE, "batch row %d: token id %d out of range [0, %d)", i,
                               t, hp->n_vocab);
        if (s < 0 || s >= c->n_slots)
            return moe_err_set(err, MOE_ERANGE, "batch row %d: slot %d out of range [0, %d)", i, s,
                               c->n_slots);
        if (p != c->slot_tmp[s])
            return moe_err_set(err, MOE_EINVAL,
                               "batch row %d: slot %d expects position %d next, got %d", i, s,
                               c->slot_tmp[s], p);
        if (p >= c->n_ctx)
            return moe_err_set(err, MOE_ENOSPC,
                               "batch row %d: position %d exceeds the context size %d", i, p,
                               c->n_ctx);
        c->slot_tmp[s] = p + 1;
        if (b->logits ? b->logits[i] != 0 : i == b->n_tokens - 1) n_out++;
    }
    if (n_out > c->cap_logits) {
        float *nl = realloc(c->logits, (size_t)n_out * (size_t)hp->n_vocab * sizeof(float));
        if (!nl) return moe_err_set(err, MOE_ENOMEM, "out of memory for %d logit rows", n_out);
        c->logits = nl;
        c->cap_logits = n_out;
    }
    c->n_logits = 0;
    if (c->gate_margins) {
        if (b->n_tokens > c->cap_margins) {
            float *nm = realloc(c->gate_margin, (size_t)b->n_tokens * sizeof(float));
            if (!nm) {
                c->n_margins = 0;
                return moe_err_set(err, MOE_ENOMEM, "out of memory for gate margins");
            }
            c->gate_margin = nm;
            c->cap_margins = b->n_tokens;
        }
        for (int i = 0; i < b->n_tokens; i++) c->gate_margin[i] = INFINITY;
        c->n_margins = b->n_tokens;
    }
    /* slot_tmp holds the lengths before this batch: restored on failure so
     * a failed batch changes nothing (cache rows past a slot's length are
     * never read) */
    memcpy(c->slot_tmp, c->slot_len, (size_t)c->n_slots * sizeof(int));
    for (int i0 = 0; i0 < b->n_tokens; i0 += c->n_batch) {
        const int n = b->n_tokens - i0 < c->n_batch ? b->n_tokens - i0 : c->n_batch;
        int rc = forward_ubatch(c, b, i0, n, err);
        if (rc < 0) {
            memcpy(c->slot_len, c->slot_tmp, (size_t)c->n_slots * sizeof(int));
            c->n_logits = 0;
            c->n_margins = 0; /* partial minimums are no answer: NAN */
            return rc;
        }
    }
    return 0;
}

const float *moe_ctx_logits(const moe_ctx *c, int i) {
    if (i < 0 || i >= c->n_logits) return NULL;
    return c->logits + (size_t)i * (size_t)c->hp.n_vocab;
}

float moe_ctx_gate_margin(const moe_ctx *c, int i) {
    if (!c->gate_margins || i < 0 || i >= c->n_margins) return NAN;
    return c->gate_margin[i];
}

int moe_ctx_n_logits(const moe_ctx *c) {
    return c->n_logits;
}

void moe_ctx_slot_clear(moe_ctx *c, int slot) {
    if (slot >= 0 && slot < c->n_slots) c->slot_len[slot] = 0;
}

int moe_ctx_slot_truncate(moe_ctx *c, int slot, int len) {
    if (slot < 0 || slot >= c->n_slots || len < 0 || len > c->slot_len[slot]) return MOE_EINVAL;
    c->slot_len[slot] = len;
    return 0;
}

int moe_ctx_slot_copy(moe_ctx *c, int dst, int src) {
    if (dst < 0 || dst >= c->n_slots || src < 0 || src >= c->n_slots) return MOE_EINVAL;
    if (dst == src) return 0;
    const int n = c->slot_len[src];
    const size_t kb = (size_t)n * (size_t)c->k_dim * c->kv_es;
    const size_t vb = (size_t)n * (size_t)c->v_dim * c->kv_es;
    for (int il = 0; il < c->hp.n_layer; il++) {
        memcpy(moe__kv_at(c, c->kv_k, c->k_dim, il, dst, 0),
               moe__kv_at(c, c->kv_k, c->k_dim, il, src, 0), kb);
        if (vb) /* absorbed MLA: one latent cache (kv_k) */
            memcpy(moe__kv_at(c, c->kv_v, c->v_dim, il, dst, 0),
                   moe__kv_at(c, c->kv_v, c->v_dim, il, src, 0), vb);
    }
    c->slot_len[dst] = n;
    return 0;
}

int moe_ctx_n_slots(const moe_ctx *c) {
    return c->n_slots;
}

int moe_ctx_n_ctx(const moe_ctx *c) {
    return c->n_ctx;
}

int moe_ctx_slot_len(const moe_ctx *c, int slot) {
    return slot >= 0 && slot < c->n_slots ? c->slot_len[slot] : -1;
}

void moe_ctx_get_stats(const moe_ctx *c, moe_ctx_stats *out) {
    *out = c->stats;
}

size_t moe_ctx_kv_bytes_per_token(const moe_ctx *c) {
    return (size_t)c->hp.n_layer * (size_t)(c->k_dim + c->v_dim) * c->kv_es;
}

moe_dtype moe_ctx_kv_type(const moe_ctx *c) {
    return c->kv_type;
}

int moe_kv_type_parse(const char *name, moe_dtype *out) {
    if (!name) return -1;
    if (!strcasecmp(name, "f16"))
        *out = MOE_DTYPE_F16;
    else if (!strcasecmp(name, "f32"))
        *out = MOE_DTYPE_F32;
    else
        return -1;
    return 0;
}
