/*
 * expert_local.c - the local expert backend: routed expert FFNs on this CPU
 * (see moe/expert.h). Work is computed synchronously in submit; wait returns
 * its status. Three pool runs per layer: gate+up of every group, SwiGLU and
 * quantisation, down of every group.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "moe/model.h"

typedef struct local_be {
    moe_expert_backend be;
    const moe_model *m;
    moe_pool *pool;
    const moe_cpu_kernels *k;
    int max_rows;
    int max_groups;
    void *xq;          /* (max_rows) activation rows in the gate/up dot type */
    float *g;          /* (max_rows, n_ff_exp) gate outputs, then SwiGLU */
    float *u;          /* (max_rows, n_ff_exp) up outputs */
    void *hq;          /* (max_rows) hidden rows in the down dot type */
    moe__mm_job *jobs; /* (2 * max_groups) */
    uint64_t *ns;      /* (max_groups) time per group, when asked */
    int status;
    moe_err err;
} local_be;

typedef struct act_ctx {
    local_be *b;
    int n_rows;
    moe_dtype down_type;
} act_ctx;

static void act_rows(void *arg, int ith, int nth) {
    const act_ctx *a = arg;
    const local_be *b = a->b;
    const int64_t F = b->m->hp.n_ff_exp;
    const size_t rb = moe__act_row_bytes(a->down_type, F);
    const int r0 = (int)((int64_t)a->n_rows * ith / nth),
              r1 = (int)((int64_t)a->n_rows * (ith + 1) / nth);
    for (int r = r0; r < r1; r++) {
        float *g = b->g + (size_t)r * F;
        moe_op_swiglu(g, b->u + (size_t)r * F, g, F);
        b->k->from_f32(moe_dtype_dot_type(a->down_type), g, (char *)b->hq + rb * (size_t)r, F);
    }
}

/* The product of expert e's matrix of t with nb activation rows X into Y:
 * from its packed copy where the model has one (moe_tensor.packed), else
 * from the weights as stored. */
static moe__mm_job expert_job(const moe_tensor *t, int e, const void *X, int nb, float *Y,
                              int64_t ldy, uint64_t *ns, int batched) {
    const void *pk = t->packed ? __atomic_load_n(&t->packed[e], __ATOMIC_ACQUIRE) : NULL;
    return (moe__mm_job){t->type,  pk ? pk : moe_tensor_expert(t, e),
                         t->ne[1], t->ne[0],
                         X,        nb,
                         Y,        ldy,
                         ns,       pk ? t->ne[1] / MOE_Q8P_ROWS * MOE_Q8P_ROWS : 0,
                         batched};
}

static int local_submit(void *ctx, const moe_expert_work *w, moe_err *err) {
    local_be *b = ctx;
    const moe_model *m = b->m;
    const moe_hparams *hp = &m->hp;
    b->status = 0;
    if (w->layer < 0 || w->layer >= hp->n_layer || w->n_embd != hp->n_embd || w->n_groups < 0 ||
        w->n_groups > b->max_groups)
        return b->status = moe_err_set(err, MOE_EINVAL,
                                       "expert work: bad layer %d, width %d or group count %d",
                                       w->layer, w->n_embd, w->n_groups);
    const int n_rows = w->n_groups ? w->row_start[w->n_groups] : 0;
    if (n_rows > b->max_rows || (w->n_groups && w->row_start[0] != 0))
        return b->status = moe_err_set(err, MOE_ERANGE,
                                       "expert work: %d rows exceed the %d "
                                       "this backend was sized for",
                                       n_rows, b->max_rows);
    for (int g = 0; g < w->n_groups; g++) {
        if (w->expert[g] < 0 || w->expert[g] >= hp->n_expert ||
            w->row_start[g + 1] < w->row_start[g])
            return b->status = moe_err_set(err, MOE_EINVAL,
                                           "expert work: group %d has bad expert %d or rows", g,
                                           w->expert[g]);
    }
    if (n_rows == 0) return 0;

    const moe_layer *L = &m->layers[w->layer];
    const int64_t E = hp->n_embd, F = hp->n_ff_exp;
    const moe_dtype gt = L->gate_exps.type, dt = L->down_exps.type;
    const size_t xrb = moe__act_row_bytes(gt, E), hrb = moe__act_row_bytes(dt, F);

    const moe_cpu_kernels *k = w->exact ? b->k : moe_cpu_kernels_fast(b->k);
    moe__pool_quantize(b->pool, b->k, gt, w->x, b->xq, n_rows, E);
    uint64_t *ns = w->expert_us ? b->ns : NULL;
    if (ns) memset(ns, 0, (size_t)w->n_groups * sizeof *ns);

    int nj = 0;
    for (int g = 0; g < w->n_groups; g++) {
        const int e = w->expert[g], r0 = w->row_start[g], nb = w->row_start[g + 1] - r0;
        if (nb == 0) continue;
        const void *X = (const char *)b->xq + xrb * (size_t)r0;
        b->jobs[nj++] = expert_job(&L->gate_exps, e, X, nb, b->g + (size_t)r0 * F, F,
                                   ns ? ns + g : NULL, w->batched);
        b->jobs[nj++] = expert_job(&L->up_exps, e, X, nb, b->u + (size_t)r0 * F, F,
                                   ns ? ns + g : NULL, w->batched);
    }
    moe__matmul_jobs(k, b->pool, b->jobs, nj);

    act_ctx a = {b, n_rows, dt};
    moe_pool_run(b->pool, act_rows, &a);

    nj = 0;
    for (int g = 0; g < w->n_groups; g++) {
        const int e = w->expert[g], r0 = w->row_start[g], nb = w->row_start[g + 1] - r0;
        if (nb == 0) continue;
        b->jobs[nj++] = expert_job(&L->down_exps, e, (const char *)b->hq + hrb * (size_t)r0, nb,
                                   w->y + (size_t)r0 * E, E, ns ? ns + g : NULL, w->batched);
    }
    moe__matmul_jobs(k, b->pool, b->jobs, nj);
    if (ns)
        for (int g = 0; g < w->n_groups; g++) w->expert_us[g] = (uint32_t)((ns[g] + 500) / 1000);
    return 0;
}

static int local_wait(void *ctx, moe_err *err) {
    (void)err;
    return ((local_be *)ctx)->status;
}

static void local_destroy(void *ctx) {
    local_be *b = ctx;
    if (!b) return;
    moe_expert_backend_destroy(b->be.second);
    MOE_FREE_ALL(b->xq, b->g, b->u, b->hq, b->jobs, b->ns, b);
}

int moe_expert_backend_local_create(moe_expert_backend **out, const moe_model *m, moe_pool *pool,
                                    int max_rows, moe_err *err) {
    *out = NULL;
    if (max_rows < 1) return moe_err_set(err, MOE_EINVAL, "max_rows must be >= 1");
    local_be *b = calloc(1, sizeof *b);
    if (!b) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    const size_t E = (size_t)m->hp.n_embd, F = (size_t)m->hp.n_ff_exp, R = (size_t)max_rows;
    b->m = m;
    b->pool = pool;
    b->k = moe_cpu_kernels_best();
    b->max_rows = max_rows;
    b->max_groups = m->hp.n_expert;
    /* 4 bytes per element bounds every dot type */
    b->xq = moe__alloc(R * E * 4);
    b->g = moe__alloc(R * F * 4);
    b->u = moe__alloc(R * F * 4);
    b->hq = moe__alloc(R * F * 4);
    b->jobs = calloc((size_t)b->max_groups * 2, sizeof *b->jobs);
    b->ns = calloc((size_t)b->max_groups, sizeof *b->ns);
    if (!b->xq || !b->g || !b->u || !b->hq || !b->jobs || !b->ns) {
        local_destroy(b);
        return moe_err_set(err, MOE_ENOMEM, "out of memory for expert scratch (%d rows)", max_rows);
    }
    b->be = (moe_expert_backend){b, "local", local_submit, local_wait, local_destroy, NULL};
    *out = &b->be;
    return 0;
}

void moe_expert_backend_destroy(moe_expert_backend *be) {
    if (be) be->destroy(be->ctx);
}
