/*
 * remote.c - the remote expert backend (see moe/remote.h): one completion
 * queue, one persistent Forward stream per worker, one message per involved
 * worker per MoE layer. submit packs and sends; wait drives the queue until
 * every involved worker has answered or the deadline passes.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "moe/remote.h"
#include "wire.h"

typedef enum rop { R_START, R_SEND, R_RECV, R_STATUS, R_INFO } rop;
typedef struct rworker rworker;
typedef struct rtag {
    rworker *w;
    rop op;
} rtag;

struct rworker {
    char *addr;
    grpc_channel *ch;
    void *m_forward, *m_info;
    grpc_call *call;          /* the Forward stream; NULL when closed */
    int open;                 /* stream usable */
    int pending;              /* batches started on call, not completed */
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *send, *recv;
    /* this layer's batch */
    int active, got;
    uint64_t id;              /* the id this worker's result must carry */
    int n_rows, n_groups;
    int32_t *rowmap;          /* (max_rows) wire row -> row of the work */
    Moe__V1__RowGroup *groups;/* (n_expert) */
    Moe__V1__RowGroup **gp;
    uint8_t *act;             /* (max_rows, hidden) wire activations */
    uint8_t *msg;             /* packed request */
    size_t msg_cap;
    rtag t_start, t_send, t_recv, t_status, t_info;
};

typedef struct remote_be {
    moe_expert_backend be;
    const moe_model *m;
    moe_remote_params p;
    grpc_completion_queue *cq;
    rworker *w;
    int n;
    int16_t *holder;          /* (n_layer, n_expert) worker index or -1 */
    const moe_expert_work *work;
    uint64_t next_id;
    int status;
    moe_err err;
} remote_be;

moe_remote_params moe_remote_default_params(void) {
    return (moe_remote_params){.wire_bf16 = 0, .deadline_ms = 10000, .max_rows = 4096};
}

static gpr_timespec in_ms(int ms) {
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void start(rworker *w, grpc_call *call, const grpc_op *ops, size_t n, rtag *t) {
    if (grpc_call_start_batch(call, ops, n, t, NULL) == GRPC_CALL_OK) w->pending++;
    else w->open = 0;
}

/* Releases a closed stream once nothing is pending on it. */
static void reap(rworker *w) {
    if (w->call && !w->open && w->pending == 0) {
        grpc_call_unref(w->call);
        w->call = NULL;
        grpc_metadata_array_destroy(&w->md_init);
        grpc_metadata_array_destroy(&w->md_trail);
        grpc_slice_unref(w->details);
        if (w->send) grpc_byte_buffer_destroy(w->send);
        if (w->recv) grpc_byte_buffer_destroy(w->recv);
        w->send = w->recv = NULL;
    }
}

static int open_stream(remote_be *b, rworker *w) {
    w->call = grpc_channel_create_registered_call(w->ch, NULL, GRPC_PROPAGATE_DEFAULTS, b->cq,
                                                  w->m_forward, gpr_inf_future(GPR_CLOCK_REALTIME),
                                                  NULL);
    if (!w->call) return -1;
    w->open = 1;
    grpc_metadata_array_init(&w->md_init);
    grpc_metadata_array_init(&w->md_trail);
    w->details = grpc_empty_slice();
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &w->md_init;
    start(w, w->call, ops, 2, &w->t_start);
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &w->md_trail;
    st.data.recv_status_on_client.status = &w->status;
    st.data.recv_status_on_client.status_details = &w->details;
    start(w, w->call, &st, 1, &w->t_status);
    return w->open ? 0 : -1;
}

/* ==== Batches ================================================================== */

static int fail(remote_be *b, moe_err *err, const char *fmt, const char *addr, const char *why) {
    if (b->status == 0) b->status = moe_err_set(&b->err, MOE_EUNAVAIL, fmt, addr, why);
    if (err) *err = b->err;
    return b->status;
}

static int remote_submit(void *ctx, const moe_expert_work *wk, moe_err *err) {
    remote_be *b = ctx;
    const moe_hparams *hp = &b->m->hp;
    b->status = 0;
    b->work = wk;
    if (wk->layer < 0 || wk->layer >= hp->n_layer || wk->n_embd != hp->n_embd ||
        wk->n_groups < 0 || wk->n_groups > hp->n_expert)
        return b->status = moe_err_set(err, MOE_EINVAL, "remote experts: bad work");
    const int rows = wk->n_groups ? wk->row_start[wk->n_groups] : 0;
    if (rows > b->p.max_rows)
        return b->status = moe_err_set(err, MOE_ERANGE, "remote experts: %d rows exceed %d", rows,
                                       b->p.max_rows);
    for (int i = 0; i < b->n; i++) b->w[i].active = b->w[i].got = b->w[i].n_rows = b->w[i].n_groups = 0;
    for (int g = 0; g < wk->n_groups; g++) {
        const int e = wk->expert[g];
        const int h = e >= 0 && e < hp->n_expert ? b->holder[(size_t)wk->layer * hp->n_expert + e] : -1;
        if (h < 0)
            return b->status = moe_err_set(err, MOE_EUNAVAIL,
                                           "no worker holds layer %d expert %d", wk->layer, e);
        rworker *w = &b->w[h];
        const int r0 = wk->row_start[g], nr = wk->row_start[g + 1] - r0;
        if (nr <= 0) continue;
        Moe__V1__RowGroup *rg = &w->groups[w->n_groups];
        moe__v1__row_group__init(rg);
        rg->expert = (uint32_t)e;
        rg->first_row = (uint32_t)w->n_rows;
        rg->row_count = (uint32_t)nr;
        w->gp[w->n_groups++] = rg;
        for (int r = 0; r < nr; r++) w->rowmap[w->n_rows++] = r0 + r;
        w->active = 1;
    }
    const int dtype = b->p.wire_bf16 ? MOE__V1__DTYPE__DTYPE_BF16 : MOE__V1__DTYPE__DTYPE_F32;
    const size_t eb = moe_wire_elt_bytes(dtype), rb = (size_t)hp->n_embd * eb;
    for (int i = 0; i < b->n; i++) {
        rworker *w = &b->w[i];
        if (!w->active) continue;
        reap(w);
        if (!w->call && open_stream(b, w) < 0)
            return fail(b, err, "worker %s: %s", w->addr, "cannot open a Forward stream");
        for (int r = 0; r < w->n_rows; r++)
            moe_wire_from_f32(dtype, wk->x + (size_t)w->rowmap[r] * (size_t)hp->n_embd,
                              (size_t)hp->n_embd, w->act + (size_t)r * rb);
        Moe__V1__ForwardRequest req = MOE__V1__FORWARD_REQUEST__INIT;
        req.id = w->id = ++b->next_id;
        req.layer = (uint32_t)wk->layer;
        req.dtype = dtype;
        req.hidden = (uint32_t)hp->n_embd;
        req.n_groups = (size_t)w->n_groups;
        req.groups = w->gp;
        req.activations.data = w->act;
        req.activations.len = (size_t)w->n_rows * rb;
        const size_t need = moe__v1__forward_request__get_packed_size(&req);
        if (need > w->msg_cap) {
            uint8_t *nm = realloc(w->msg, need);
            if (!nm) return fail(b, err, "worker %s: %s", w->addr, "out of memory");
            w->msg = nm;
            w->msg_cap = need;
        }
        moe__v1__forward_request__pack(&req, w->msg);
        grpc_slice sl = grpc_slice_from_copied_buffer((const char *)w->msg, need);
        w->send = grpc_raw_byte_buffer_create(&sl, 1);
        grpc_slice_unref(sl);
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = w->send;
        start(w, w->call, &op, 1, &w->t_send);
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &w->recv;
        start(w, w->call, &op, 1, &w->t_recv);
        if (!w->open) return fail(b, err, "worker %s: %s", w->addr, "the Forward stream failed");
    }
    return 0;
}

/* One result: checks it and scatters its rows into the work's y. */
static void take_result(remote_be *b, rworker *w) {
    const moe_hparams *hp = &b->m->hp;
    size_t len = 0;
    uint8_t *data = moe_wire_read_all(w->recv, &len);
    grpc_byte_buffer_destroy(w->recv);
    w->recv = NULL;
    Moe__V1__ForwardResult *r = data ? moe__v1__forward_result__unpack(NULL, len, data) : NULL;
    free(data);
    char why[600];
    if (!r) {
        fail(b, NULL, "worker %s: %s", w->addr, "sent a result that is not a ForwardResult");
        return;
    }
    const size_t eb = moe_wire_elt_bytes((int)r->dtype);
    if (r->status != 0) {
        snprintf(why, sizeof why, "status %d: %s", r->status, r->error ? r->error : "");
        fail(b, NULL, "worker %s: %s", w->addr, why);
    } else if (r->id != w->id) {
        fail(b, NULL, "worker %s: %s", w->addr, "answered another batch");
    } else if (!eb || r->outputs.len != (size_t)w->n_rows * (size_t)hp->n_embd * eb) {
        fail(b, NULL, "worker %s: %s", w->addr, "returned outputs of the wrong size");
    } else {
        for (int i = 0; i < w->n_rows; i++)
            moe_wire_to_f32((int)r->dtype, r->outputs.data + (size_t)i * (size_t)hp->n_embd * eb,
                            (size_t)hp->n_embd,
                            b->work->y + (size_t)w->rowmap[i] * (size_t)hp->n_embd);
        w->got = 1;
    }
    moe__v1__forward_result__free_unpacked(r, NULL);
}

static void on_event(remote_be *b, rtag *t, int ok) {
    rworker *w = t->w;
    w->pending--;
    switch (t->op) {
    case R_START:
    case R_INFO:
        break;
    case R_SEND:
        grpc_byte_buffer_destroy(w->send);
        w->send = NULL;
        if (!ok) w->open = 0;
        break;
    case R_RECV:
        if (!ok || !w->recv) {
            w->open = 0;
            if (w->active && !w->got) fail(b, NULL, "worker %s: %s", w->addr, "the stream ended");
        } else {
            take_result(b, w);
        }
        break;
    case R_STATUS: {
        w->open = 0;
        if (w->active && !w->got) {
            char why[300];
            char *d = grpc_slice_to_c_string(w->details);
            snprintf(why, sizeof why, "stream closed (status %d: %s)", (int)w->status, d);
            gpr_free(d);
            fail(b, NULL, "worker %s: %s", w->addr, why);
        }
        break;
    }
    }
    reap(w);
}

static int remote_wait(void *ctx, moe_err *err) {
    remote_be *b = ctx;
    const gpr_timespec deadline = in_ms(b->p.deadline_ms);
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < b->n; i++)
            if (b->w[i].active && (!b->w[i].got || b->w[i].send)) waiting = 1;
        if (!waiting || b->status) break;
        grpc_event ev = grpc_completion_queue_next(b->cq, deadline, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            for (int i = 0; i < b->n; i++) {
                rworker *w = &b->w[i];
                if (!w->active || w->got) continue;
                char why[64];
                snprintf(why, sizeof why, "no result within %d ms", b->p.deadline_ms);
                fail(b, NULL, "worker %s: %s", w->addr, why);
            }
            break;
        }
        if (ev.type == GRPC_OP_COMPLETE) on_event(b, ev.tag, ev.success);
    }
    if (b->status) {
        /* a failed batch: cancel the involved streams that did not answer;
         * the next batch opens new ones */
        for (int i = 0; i < b->n; i++) {
            rworker *w = &b->w[i];
            if (w->call && (!w->got || !w->open)) {
                grpc_call_cancel(w->call, NULL);
                w->open = 0;
            }
        }
        /* collect what the cancellation completes (bounded) */
        const gpr_timespec drain = in_ms(2000);
        for (;;) {
            int pending = 0;
            for (int i = 0; i < b->n; i++) pending |= b->w[i].pending > 0 && !b->w[i].open;
            if (!pending) break;
            grpc_event ev = grpc_completion_queue_next(b->cq, drain, NULL);
            if (ev.type != GRPC_OP_COMPLETE) break;
            on_event(b, ev.tag, ev.success);
        }
        if (err) *err = b->err;
    }
    return b->status;
}

/* ==== Create / destroy ============================================================ */

static void remote_destroy(void *ctx) {
    remote_be *b = ctx;
    if (!b) return;
    for (int i = 0; i < b->n; i++) {
        rworker *w = &b->w[i];
        if (w->call) {
            grpc_call_cancel(w->call, NULL);
            w->open = 0;
        }
    }
    const gpr_timespec drain = in_ms(2000);
    for (;;) {
        int pending = 0;
        for (int i = 0; i < b->n; i++) pending |= b->w[i].pending > 0;
        if (!pending) break;
        grpc_event ev = grpc_completion_queue_next(b->cq, drain, NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        on_event(b, ev.tag, ev.success);
    }
    for (int i = 0; i < b->n; i++) {
        rworker *w = &b->w[i];
        reap(w);
        if (w->ch) grpc_channel_destroy(w->ch);
        free(w->addr), free(w->rowmap), free(w->groups), free(w->gp), free(w->act), free(w->msg);
    }
    if (b->cq) {
        grpc_completion_queue_shutdown(b->cq);
        while (grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(b->cq);
    }
    free(b->w);
    free(b->holder);
    free(b);
    grpc_shutdown();
}

/* Info of one worker (blocking, with the deadline); fills holder. */
static int read_info(remote_be *b, int i, moe_err *err) {
    rworker *w = &b->w[i];
    const moe_hparams *hp = &b->m->hp;
    grpc_call *call = grpc_channel_create_registered_call(w->ch, NULL, GRPC_PROPAGATE_DEFAULTS, b->cq,
                                                          w->m_info, in_ms(b->p.deadline_ms), NULL);
    if (!call) return moe_err_set(err, MOE_EUNAVAIL, "worker %s: cannot call Info", w->addr);
    Moe__V1__InfoRequest ir = MOE__V1__INFO_REQUEST__INIT;
    uint8_t ibuf[8];
    size_t il = moe__v1__info_request__pack(&ir, ibuf);
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)ibuf, il);
    grpc_byte_buffer *req = grpc_raw_byte_buffer_create(&sl, 1), *resp = NULL;
    grpc_slice_unref(sl);
    grpc_metadata_array mi, mt;
    grpc_metadata_array_init(&mi);
    grpc_metadata_array_init(&mt);
    grpc_status_code st = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &mi;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &mt;
    ops[5].data.recv_status_on_client.status = &st;
    ops[5].data.recv_status_on_client.status_details = &details;
    int rc = 0;
    if (grpc_call_start_batch(call, ops, 6, &w->t_info, NULL) != GRPC_CALL_OK) {
        rc = moe_err_set(err, MOE_EUNAVAIL, "worker %s: cannot start Info", w->addr);
    } else {
        w->pending++;
        for (;;) {
            grpc_event ev = grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE) {
                ((rtag *)ev.tag)->w->pending--;
                if (ev.tag == &w->t_info) break;
            }
        }
    }
    Moe__V1__InfoResponse *r = NULL;
    if (rc == 0 && st != GRPC_STATUS_OK) {
        char *d = grpc_slice_to_c_string(details);
        rc = moe_err_set(err, MOE_EUNAVAIL, "worker %s: Info failed (status %d: %s)", w->addr,
                         (int)st, d);
        gpr_free(d);
    } else if (rc == 0) {
        size_t len = 0;
        uint8_t *data = resp ? moe_wire_read_all(resp, &len) : NULL;
        r = data ? moe__v1__info_response__unpack(NULL, len, data) : NULL;
        free(data);
        if (!r) rc = moe_err_set(err, MOE_EFORMAT, "worker %s: Info reply is malformed", w->addr);
    }
    if (r && (r->n_layer != (uint32_t)hp->n_layer || r->n_expert != (uint32_t)hp->n_expert ||
              r->hidden != (uint32_t)hp->n_embd))
        rc = moe_err_set(err, MOE_EINVAL,
                         "worker %s serves a model of %u layers, %u experts, hidden %u; this one "
                         "has %d, %d, %d",
                         w->addr, r->n_layer, r->n_expert, r->hidden, hp->n_layer, hp->n_expert,
                         hp->n_embd);
    for (size_t k = 0; r && rc == 0 && k < r->n_held; k++) {
        const Moe__V1__LayerExperts *le = r->held[k];
        for (size_t j = 0; j < le->n_experts; j++) {
            if (le->layer >= (uint32_t)hp->n_layer || le->experts[j] >= (uint32_t)hp->n_expert) {
                rc = moe_err_set(err, MOE_EFORMAT, "worker %s: Info names layer %u expert %u",
                                 w->addr, le->layer, le->experts[j]);
                break;
            }
            int16_t *h = &b->holder[(size_t)le->layer * hp->n_expert + le->experts[j]];
            if (*h < 0) *h = (int16_t)i; /* first holder; replicas come with the control plane */
        }
    }
    if (r) moe__v1__info_response__free_unpacked(r, NULL);
    if (resp) grpc_byte_buffer_destroy(resp);
    grpc_byte_buffer_destroy(req);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&mi);
    grpc_metadata_array_destroy(&mt);
    grpc_call_unref(call);
    return rc;
}

int moe_expert_backend_remote_create(moe_expert_backend **out, const moe_model *m,
                                     const char *const *workers, int n,
                                     const moe_remote_params *p, moe_err *err) {
    *out = NULL;
    if (n < 1 || n > 4096) return moe_err_set(err, MOE_EINVAL, "need 1 to 4096 workers");
    moe_remote_params dp = moe_remote_default_params();
    if (!p) p = &dp;
    if (p->deadline_ms < 1 || p->max_rows < 1)
        return moe_err_set(err, MOE_EINVAL, "deadline and max_rows must be >= 1");
    mallopt(M_MMAP_THRESHOLD, 256 << 20); /* reuse large message buffers (stack-notes) */
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    grpc_init();
    remote_be *b = calloc(1, sizeof *b);
    if (!b) {
        grpc_shutdown();
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    const moe_hparams *hp = &m->hp;
    b->m = m;
    b->p = *p;
    b->n = n;
    b->cq = grpc_completion_queue_create_for_next(NULL);
    b->w = calloc((size_t)n, sizeof *b->w);
    b->holder = malloc((size_t)hp->n_layer * (size_t)hp->n_expert * sizeof *b->holder);
    int rc = 0;
    if (!b->w || !b->holder) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < (size_t)hp->n_layer * (size_t)hp->n_expert; i++) b->holder[i] = -1;
    const size_t eb = p->wire_bf16 ? 2 : 4;
    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 1 << 30},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, .value.integer = 1 << 30},
    };
    grpc_channel_args ch_args = {2, args};
    for (int i = 0; i < n; i++) {
        rworker *w = &b->w[i];
        w->t_start = (rtag){w, R_START};
        w->t_send = (rtag){w, R_SEND};
        w->t_recv = (rtag){w, R_RECV};
        w->t_status = (rtag){w, R_STATUS};
        w->t_info = (rtag){w, R_INFO};
        w->addr = strdup(workers[i]);
        w->rowmap = malloc((size_t)p->max_rows * sizeof *w->rowmap);
        w->groups = calloc((size_t)hp->n_expert, sizeof *w->groups);
        w->gp = calloc((size_t)hp->n_expert, sizeof *w->gp);
        w->act = malloc((size_t)p->max_rows * (size_t)hp->n_embd * eb);
        if (!w->addr || !w->rowmap || !w->groups || !w->gp || !w->act) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for worker buffers");
            goto fail;
        }
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        w->ch = grpc_channel_create(w->addr, creds, &ch_args);
        grpc_channel_credentials_release(creds);
        w->m_forward = grpc_channel_register_call(w->ch, "/moe.v1.ExpertService/Forward", NULL, NULL);
        w->m_info = grpc_channel_register_call(w->ch, "/moe.v1.ExpertService/Info", NULL, NULL);
        if ((rc = read_info(b, i, err)) < 0) goto fail;
    }
    for (int l = 0; l < hp->n_layer && !p->allow_partial; l++) {
        if (!moe_model_layer_is_moe(m, l)) continue;
        for (int e = 0; e < hp->n_expert; e++)
            if (b->holder[(size_t)l * hp->n_expert + e] < 0) {
                rc = moe_err_set(err, MOE_EUNAVAIL,
                                 "no worker holds layer %d expert %d (the %d worker(s) given "
                                 "leave it out)",
                                 l, e, n);
                goto fail;
            }
    }
    b->be = (moe_expert_backend){b, "remote", remote_submit, remote_wait, remote_destroy};
    *out = &b->be;
    return 0;
fail:
    remote_destroy(b);
    return rc;
}
