/*
 * moe/expert.h - the expert-backend interface: "compute these row groups with
 * these (layer, expert) FFNs and give me their outputs".
 *
 * The MoE layer never calls an expert FFN directly. It groups the batch's
 * token rows by chosen expert, submits one moe_expert_work, does other work
 * (shared experts) and then waits. The local backend computes on this
 * machine's CPU; a remote backend (gRPC expert workers) implements the same
 * two calls, so model code does not know where experts run.
 *
 *     moe_expert_work w = {
 *         .layer = il, .n_groups = 2,
 *         .expert = (int32_t[]){3, 5},
 *         .row_start = (int32_t[]){0, 4, 6},   // expert 3: rows 0..3, 5: 4..5
 *         .n_embd = n_embd, .x = rows, .y = out,
 *     };
 *     be->submit(be->ctx, &w, &err);
 *     ... shared expert ...
 *     be->wait(be->ctx, &err);                  // out is filled
 */
#ifndef MOE_EXPERT_H
#define MOE_EXPERT_H

#include <stdint.h>

#include "moe/error.h"

typedef struct moe_model moe_model;
typedef struct moe_pool moe_pool;

/* One MoE layer's routed work: rows grouped by expert. */
typedef struct moe_expert_work {
    int layer;                /* layer index */
    int n_groups;             /* number of (expert, rows) groups */
    const int32_t *expert;    /* (n_groups) expert index of each group */
    const int32_t *row_start; /* (n_groups + 1) group g is rows [row_start[g], row_start[g+1]) */
    int n_embd;               /* row width of x and y */
    const float *x;           /* (n_rows, n_embd) inputs, grouped; borrowed until wait returns */
    float *y;                 /* (n_rows, n_embd) outputs: y = down(silu(gate x) * up x) */
    uint32_t *expert_us;      /* (n_groups) optional output: CPU microseconds each group's
                               * products took, summed over threads; NULL to skip */
    int exact;                /* 1: llama.cpp's exact arithmetic for every group (Q8_0,
                               * Q5_K, Q6_K, IQ4_XS); 0: their fast numerics for groups of
                               * MOE_FAST_MIN_ROWS rows or more (moe_cpu_kernels_fast) */
    int batched;              /* 1: every group with a batch's arithmetic, whatever its rows:
                               * the float types' tinyBLAS from 1 row (gemm_batch), and
                               * with exact 0 the fast numerics. The context sets it for
                               * batches of MOE_FAST_MIN_ROWS tokens or more, so a group's
                               * numerics depend on the batch's size, not on how its rows
                               * fall into groups or halves */
} moe_expert_work;

/* A backend: a struct of function pointers over an opaque ctx. */
typedef struct moe_expert_backend {
    void *ctx;
    const char *name; /* "local", "remote", ... */
    /* Starts w. May compute synchronously or return at once; w's arrays are
     * borrowed until wait returns. At most one work is outstanding. */
    int (*submit)(void *ctx, const moe_expert_work *w, moe_err *err);
    /* Waits for the outstanding work and returns its status (0 or MOE_E*). */
    int (*wait)(void *ctx, moe_err *err);
    /* Frees the backend (and ctx, and second). */
    void (*destroy)(void *ctx);
    /* Optional (NULL: none): a backend over the same experts that runs a work
     * of its own while this one's is outstanding, owned by this one (a remote
     * backend's second set of streams). A context with one splits a batch in
     * two halves and overlaps them (moe_ctx_params.split). */
    struct moe_expert_backend *second;
} moe_expert_backend;

/* A backend over the model's own weights on this CPU. The model and pool are
 * borrowed for the backend's lifetime; max_rows bounds the rows of one work
 * (scratch is sized once, here). Returns 0 or MOE_ENOMEM. */
int moe_expert_backend_local_create(moe_expert_backend **out, const moe_model *m, moe_pool *pool,
                                    int max_rows, moe_err *err);
/* Frees any backend (NULL allowed). */
void moe_expert_backend_destroy(moe_expert_backend *be);

#endif
