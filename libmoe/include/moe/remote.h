/*
 * moe/remote.h - the remote expert backend: a model's routed experts on
 * expert-worker processes, over gRPC (moe.v1.ExpertService). Same interface
 * as the local backend (moe/expert.h); link libmoe_rpc.a.
 *
 *     moe_remote_params rp = moe_remote_default_params();
 *     const char *workers[] = {"127.0.0.1:50051", "127.0.0.1:50052"};
 *     moe_expert_backend *be;
 *     if (moe_expert_backend_remote_create(&be, m, workers, 2, &rp, &err) < 0) ...
 *     moe_ctx_params p = moe_ctx_default_params();
 *     p.experts = be;                       // borrowed by the context
 *
 * At create, each worker's Info says which (layer, expert) pairs it holds;
 * every expert of every MoE layer must be held by some worker. Each worker
 * gets one persistent Forward stream; a layer's submit sends one message per
 * involved worker (all of that worker's rows) and wait collects the results,
 * failing with MOE_EUNAVAIL (worker address and reason) if one fails or
 * misses its deadline.
 */
#ifndef MOE_REMOTE_H
#define MOE_REMOTE_H

#include "moe/expert.h"
#include "moe/model.h"

typedef struct moe_remote_params {
    int wire_bf16;      /* 1: activations and outputs as bf16 (half the bytes) */
    int deadline_ms;    /* per batch (default 10000) */
    int max_rows;       /* rows one submit may carry (default 4096) */
    int allow_partial;  /* 1: do not require every expert to be held at create
                         * (a submit naming an unheld one still fails) */
} moe_remote_params;

moe_remote_params moe_remote_default_params(void);

/* Connects to n workers ("host:port"), reads their Info, checks that every
 * routed expert is held and the model shapes agree. The model is borrowed. */
int moe_expert_backend_remote_create(moe_expert_backend **out, const moe_model *m,
                                     const char *const *workers, int n,
                                     const moe_remote_params *p, moe_err *err);

#endif
