/*
 * remote.c - the remote expert backend (see mesh/remote.h): one completion
 * queue, one persistent Forward stream per worker, one message per involved
 * worker per MoE layer. submit assigns every row group to a replica and
 * sends (remote_choice.c picks the replica); wait drives the queue until
 * every group has its result, sending a failed worker's groups again to
 * another replica.
 */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "remote_internal.h"
#include "mesh/rlink.h"
#include "moe/log.h"
#include "mesh/schema.h"
#include "mesh/tls.h"
#include "svc/clock.h"

moe_remote_params moe_remote_default_params(void) {
    return (moe_remote_params){.wire_bf16 = 0,
                               .deadline_ms = 10000,
                               .max_rows = 4096,
                               .failover_ms = 30000,
                               .down_ms = 1000,
                               .suspect_ms = 250,
                               .placement_wait_ms = 30000};
}

static gpr_timespec in_ms(int ms) {
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void start(rworker *w, grpc_call *call, const grpc_op *ops, size_t n, rtag *t) {
    if (grpc_call_start_batch(call, ops, n, t, NULL) == GRPC_CALL_OK)
        w->pending++;
    else
        w->open = 0;
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
    w->call =
        grpc_channel_create_registered_call(w->ch, NULL, GRPC_PROPAGATE_DEFAULTS, b->cq,
                                            w->m_forward, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
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

/* ==== Workers and placements ======================================================= */

static void worker_free(rworker *w) {
    if (!w) return;
    reap(w);
    if (w->ch) grpc_channel_destroy(w->ch);
    free(w->addr), free(w->name), free(w->rowmap), free(w->groups), free(w->gp), free(w->act),
        free(w->msg);
    free(w->msg_groups), free(w->queued);
    free(w);
}

/* The worker at addr under name (the id its certificate must name; NULL:
 * the host of addr), created (with its channel) if new; MOE_ENOMEM, or
 * MOE_EINVAL when plaintext is not allowed to it (err says why). */
static int worker_get(remote_be *b, const char *addr, const char *name, moe_err *err) {
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->w[i]->addr, addr) &&
            (!b->creds || !strcmp(b->w[i]->name ? b->w[i]->name : "", name ? name : "")))
            return i;
    if (!b->creds) {
        const int rc = moe_tls_plaintext_ok(&b->tls, addr, "remote experts", err);
        if (rc < 0) return rc;
    }
    if (b->n == b->cap) {
        int nc = b->cap ? b->cap * 2 : 8;
        pthread_mutex_lock(&b->pub_mu); /* other threads read the list */
        rworker **nw = realloc(b->w, (size_t)nc * sizeof *nw);
        if (nw) b->w = nw, b->cap = nc;
        pthread_mutex_unlock(&b->pub_mu);
        if (!nw) return moe_err_set(err, MOE_ENOMEM, "out of memory for worker buffers");
    }
    const int ne = b->m->hp.n_expert;
    rworker *w = calloc(1, sizeof *w);
    if (!w) return moe_err_set(err, MOE_ENOMEM, "out of memory for worker buffers");
    w->t_start = (rtag){w, R_START};
    w->t_send = (rtag){w, R_SEND};
    w->t_recv = (rtag){w, R_RECV};
    w->t_status = (rtag){w, R_STATUS};
    w->t_info = (rtag){w, R_INFO};
    w->addr = strdup(addr);
    w->name = name ? strdup(name) : NULL;
    w->rowmap = malloc((size_t)b->p.max_rows * sizeof *w->rowmap);
    w->groups = calloc((size_t)ne, sizeof *w->groups);
    w->gp = calloc((size_t)ne, sizeof *w->gp);
    w->msg_groups = calloc((size_t)ne, sizeof *w->msg_groups);
    w->queued = calloc((size_t)ne, sizeof *w->queued);
    if (!w->addr || (name && !w->name) || !w->rowmap || !w->groups || !w->gp || !w->msg_groups ||
        !w->queued) {
        worker_free(w);
        return moe_err_set(err, MOE_ENOMEM, "out of memory for worker buffers");
    }
    /* with TLS the handshake checks that the worker's certificate names the
     * worker: its id, not whatever address a lease gives it */
    grpc_arg args[3] = {b->args[0], b->args[1]};
    grpc_channel_args ca = {2, args};
    if (b->creds && w->name)
        args[ca.num_args++] = (grpc_arg){.type = GRPC_ARG_STRING,
                                         .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                                         .value.string = w->name};
    if (b->creds) {
        w->ch = grpc_channel_create(w->addr, b->creds, &ca);
    } else {
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        w->ch = grpc_channel_create(w->addr, creds, &ca);
        grpc_channel_credentials_release(creds);
    }
    w->m_forward = grpc_channel_register_call(w->ch, "/moe.v1.ExpertService/Forward", NULL, NULL);
    w->m_info = grpc_channel_register_call(w->ch, "/moe.v1.ExpertService/Info", NULL, NULL);
    pthread_mutex_lock(&b->pub_mu);
    b->w[b->n] = w;
    const int i = b->n++;
    pthread_mutex_unlock(&b->pub_mu);
    return i;
}

static size_t n_pairs(const remote_be *b) {
    return (size_t)b->m->hp.n_layer * (size_t)b->m->hp.n_expert;
}

/* Builds the replica table from a placement document (workers by address).
 * Returns 0 or MOE_ENOMEM; b->pl is replaced only on success. */
static int apply_doc(remote_be *b, const moe_pldoc *d, moe_err *err) {
    const size_t np = n_pairs(b);
    const int ne = b->m->hp.n_expert;
    uint32_t *off = calloc(np + 1, sizeof *off);
    size_t total = 0;
    for (size_t i = 0; i < d->n_experts; i++) total += (size_t)d->experts[i].n_replicas;
    int32_t *rep = malloc((total + 1) * sizeof *rep);
    int *widx = malloc(((size_t)d->n_workers + 1) * sizeof *widx);
    if (!off || !rep || !widx) goto oom;
    for (int i = 0; i < d->n_workers; i++)
        if ((widx[i] = worker_get(b, d->addrs[i], d->ids[i], err)) < 0) {
            const int rc = widx[i];
            free(off), free(rep), free(widx);
            return rc;
        }
    for (size_t i = 0; i < d->n_experts; i++)
        off[(size_t)d->experts[i].layer * ne + d->experts[i].expert + 1] +=
            (uint32_t)d->experts[i].n_replicas;
    for (size_t i = 0; i < np; i++) off[i + 1] += off[i];
    uint32_t *fill = calloc(np + 1, sizeof *fill);
    if (!fill) goto oom;
    for (size_t i = 0; i < d->n_experts; i++) {
        const size_t k = (size_t)d->experts[i].layer * ne + d->experts[i].expert;
        for (int r = 0; r < d->experts[i].n_replicas; r++)
            rep[off[k] + fill[k]++] = widx[d->experts[i].replicas[r]];
    }
    free(fill), free(widx);
    pthread_mutex_lock(&b->pub_mu); /* other threads read the placement (coverage) */
    free(b->pl.off), free(b->pl.rep);
    b->pl = (rplace){d->epoch, off, rep};
    pthread_mutex_unlock(&b->pub_mu);
    /* workers this placement does not use give their buffers back (their
     * channels stay: cheap while idle, and reused if they come back) */
    for (int i = 0; i < b->n; i++) {
        rworker *w = b->w[i];
        int used = 0;
        for (size_t k = 0; k < total && !used; k++) used = rep[k] == i;
        if (used || w->busy || w->n_queued || w->send) continue;
        free(w->act), free(w->msg);
        w->act = w->msg = NULL;
        w->act_cap = w->msg_cap = 0;
    }
    b->st.epoch = d->epoch;
    return 0;
oom:
    free(off), free(rep), free(widx);
    return moe_err_set(err, MOE_ENOMEM, "out of memory for a placement");
}

/* Takes a newer placement from the control thread, if one came; 1 if so. */
static int refresh_placement(remote_be *b) {
    if (!b->ctl) return 0;
    moe_pldoc *d = moe__rctl_take(b->ctl);
    if (!d) return 0;
    moe_err err;
    int rc = apply_doc(b, d, &err);
    if (rc < 0 && !b->p.quiet) moe_log(MOE_LOG_WARN, "remote experts", "%s", err.msg);
    moe_pldoc_free(d);
    return rc == 0;
}

/* ==== Batches ======================================================================= */

static int fail(remote_be *b, moe_err *err, const char *fmt, const char *addr, const char *why) {
    if (b->status == 0) b->status = moe_err_set(&b->err, MOE_EUNAVAIL, fmt, addr, why);
    if (err) *err = b->err;
    return b->status;
}

/* Sends w's queued groups as one message. Returns 0 or -1 (the stream failed). */
static int send_queued(remote_be *b, rworker *w) {
    const moe_hparams *hp = &b->m->hp;
    const moe_expert_work *wk = b->work;
    const int dtype = b->p.wire_bf16 ? MOE__V1__DTYPE__DTYPE_BF16 : MOE__V1__DTYPE__DTYPE_F32;
    const size_t rb = (size_t)hp->n_embd * moe_wire_elt_bytes(dtype);
    reap(w);
    if (w->call && !w->open) return -1; /* the old stream is still closing */
    if (!w->call && open_stream(b, w) < 0) return -1;
    w->n_rows = w->n_groups = 0; /* built from queued; queued is emptied only once it is sent */
    for (int q = 0; q < w->n_queued; q++) {
        const int g = w->queued[q], r0 = wk->row_start[g], nr = moe__remote_group_rows(b, g);
        Moe__V1__RowGroup *rg = &w->groups[w->n_groups];
        moe__v1__row_group__init(rg);
        rg->expert = (uint32_t)wk->expert[g];
        rg->first_row = (uint32_t)w->n_rows;
        rg->row_count = (uint32_t)nr;
        w->gp[w->n_groups] = rg;
        w->msg_groups[w->n_groups++] = g;
        for (int r = 0; r < nr; r++) w->rowmap[w->n_rows++] = r0 + r;
    }
    if ((size_t)w->n_rows * rb > w->act_cap) {
        uint8_t *na = realloc(w->act, (size_t)w->n_rows * rb);
        if (!na) return -1;
        w->act = na;
        w->act_cap = (size_t)w->n_rows * rb;
    }
    for (int r = 0; r < w->n_rows; r++)
        moe_wire_from_f32(dtype, wk->x + (size_t)w->rowmap[r] * (size_t)hp->n_embd,
                          (size_t)hp->n_embd, w->act + (size_t)r * rb);
    Moe__V1__ForwardRequest req = MOE__V1__FORWARD_REQUEST__INIT;
    req.id = w->id = ++b->next_id;
    req.layer = (uint32_t)wk->layer;
    req.placement_epoch = b->pl.epoch;
    req.dtype = dtype;
    req.hidden = (uint32_t)hp->n_embd;
    req.exact = wk->exact != 0;
    req.batched = wk->batched != 0;
    req.n_groups = (size_t)w->n_groups;
    req.groups = w->gp;
    req.activations.data = w->act;
    req.activations.len = (size_t)w->n_rows * rb;
    const size_t need = moe__v1__forward_request__get_packed_size(&req);
    if (need > w->msg_cap) {
        uint8_t *nm = realloc(w->msg, need);
        if (!nm) return -1;
        w->msg = nm;
        w->msg_cap = need;
    }
    moe__v1__forward_request__pack(&req, w->msg);
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)w->msg, need);
    w->send = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    w->n_queued = 0; /* the groups are in the message now: a failure moves those */
    w->busy = 1;
    w->obs.messages++;
    w->obs.rows += (uint64_t)w->n_rows;
    w->dirty = 1;
    w->sent_us = moe_mono_us();
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = w->send;
    start(w, w->call, &op, 1, &w->t_send);
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &w->recv;
    start(w, w->call, &op, 1, &w->t_recv);
    w->sent_ms = moe_mono_ms();
    b->st.messages++;
    b->st.bytes_sent += need;
    return w->open ? 0 : -1;
}

/* A worker failed this batch (down: its connection broke or it timed out,
 * so it is avoided for down_ms; else it refused, e.g. an expert it no
 * longer holds): its groups go to other replicas now. */
static void worker_failed(remote_be *b, rworker *w, int down, const char *why) {
    w->failed = 1;
    moe__remote_note_failure(w);
    /* the stall counts from when the lost rows were sent, not from when
     * their loss was noticed (a silent worker costs the wait as well) */
    if (!b->fail_us) b->fail_us = w->busy && w->sent_us > 0 ? w->sent_us : moe_mono_us();
    snprintf(b->last_why, sizeof b->last_why, "worker %s: %s", w->addr, why);
    b->st.worker_failures++;
    w->failed_ms = moe_mono_ms();
    if (down) {
        /* a worker that keeps failing is tried less and less often (a host
         * that vanished without a reset costs a deadline per try) */
        w->down_ms = w->down_ms ? w->down_ms * 2 : b->p.down_ms;
        if (w->down_ms > 16 * b->p.down_ms) w->down_ms = 16 * b->p.down_ms;
        w->down_until_ms = w->failed_ms + w->down_ms;
        w->obs.down_until_ms = w->down_until_ms;
        if (w->call) {
            grpc_call_cancel(w->call, NULL);
            w->open = 0;
        }
    }
    int n = 0;
    int32_t *moved = b->moved; /* a group is in flight or queued, not both */
    if (w->busy)
        for (int i = 0; i < w->n_groups; i++) moved[n++] = w->msg_groups[i];
    for (int i = 0; i < w->n_queued; i++) moved[n++] = w->queued[i];
    w->busy = 0;
    w->n_queued = 0;
    w->n_groups = 0;
    w->rows_in_flight = 0;
    if (!b->p.quiet && (!w->was_down || !down))
        moe_log(MOE_LOG_WARN, "remote experts",
                "worker %s failed (%s); %d row group(s) to send again", w->addr, why, n);
    w->was_down |= down;
    if (b->ctl) moe__rctl_kick(b->ctl);
    for (int i = 0; i < n; i++) {
        b->st.retries++;
        moe__remote_assign(b, moved[i]);
    }
}

/* One result: checks it and scatters its rows into the work's y. */
static void take_result(remote_be *b, rworker *w) {
    const moe_hparams *hp = &b->m->hp;
    moe__remote_note_result(b, w);
    const int64_t t_answer = moe_mono_us();
    size_t len = 0;
    uint8_t *data = moe_wire_read_all(w->recv, &len);
    grpc_byte_buffer_destroy(w->recv);
    w->recv = NULL;
    b->st.bytes_received += len;
    Moe__V1__ForwardResult *r = data ? moe__v1__forward_result__unpack(NULL, len, data) : NULL;
    free(data);
    char why[600];
    if (!r) {
        moe__remote_note_failure(w);
        fail(b, NULL, "worker %s: %s", w->addr, "sent a result that is not a ForwardResult");
        return;
    }
    const size_t eb = moe_wire_elt_bytes((int)r->dtype);
    if (r->status == GRPC_STATUS_FAILED_PRECONDITION || r->status == GRPC_STATUS_UNAVAILABLE ||
        r->status == GRPC_STATUS_RESOURCE_EXHAUSTED) {
        /* it does not hold an expert (any more), or cannot serve now: retry elsewhere */
        snprintf(why, sizeof why, "status %d: %s", r->status, r->error ? r->error : "");
        worker_failed(b, w, r->status != GRPC_STATUS_FAILED_PRECONDITION, why);
    } else if (r->status != 0) {
        snprintf(why, sizeof why, "status %d: %s", r->status, r->error ? r->error : "");
        moe__remote_note_failure(w);
        fail(b, NULL, "worker %s: %s", w->addr, why);
    } else if (r->id != w->id) {
        moe__remote_note_failure(w);
        fail(b, NULL, "worker %s: %s", w->addr, "answered another batch");
    } else if (!eb || r->outputs.len != (size_t)w->n_rows * (size_t)hp->n_embd * eb) {
        moe__remote_note_failure(w);
        fail(b, NULL, "worker %s: %s", w->addr, "returned outputs of the wrong size");
    } else {
        for (int i = 0; i < w->n_rows; i++)
            moe_wire_to_f32((int)r->dtype, r->outputs.data + (size_t)i * (size_t)hp->n_embd * eb,
                            (size_t)hp->n_embd,
                            b->work->y + (size_t)w->rowmap[i] * (size_t)hp->n_embd);
        for (int i = 0; i < w->n_groups; i++) {
            const int g = w->msg_groups[i];
            if (!b->done[g]) b->done[g] = 1, b->n_todo--;
        }
        moe__remote_note_answer(w, t_answer);
        w->rows_in_flight -= w->n_rows;
        if (w->rows_in_flight < 0) w->rows_in_flight = 0;
        w->busy = 0;
        w->n_groups = 0;
        w->down_ms = 0;
        w->obs.down_until_ms = 0; /* it serves: live, whatever its backoff said */
        if (w->was_down && !b->p.quiet)
            moe_log(MOE_LOG_INFO, "remote experts", "worker %s serves again", w->addr);
        w->was_down = 0;
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
            if (w->busy) worker_failed(b, w, 1, "the stream ended");
        } else if (w->busy) {
            take_result(b, w);
        } else {
            grpc_byte_buffer_destroy(w->recv);
            w->recv = NULL;
        }
        break;
    case R_STATUS:
        w->open = 0;
        if (w->busy) {
            char why[400], hint[200];
            char *d = grpc_slice_to_c_string(w->details);
            moe__remote_hint(b, w, (int)w->status, d, hint, sizeof hint);
            snprintf(why, sizeof why, "stream closed (status %d: %s)%s", (int)w->status, d, hint);
            gpr_free(d);
            worker_failed(b, w, 1, why);
        }
        break;
    }
    reap(w);
}

/* Sends every idle worker's queued groups; a worker whose stream cannot be
 * used fails over. */
static void dispatch(remote_be *b) {
    for (int again = 1; again;) {
        again = 0;
        for (int i = 0; i < b->n; i++) {
            rworker *w = b->w[i];
            if (!w->n_queued || w->busy || w->send) continue; /* one send at a time */
            if (send_queued(b, w) < 0) {
                worker_failed(b, w, 1, "cannot open a Forward stream");
                again = 1;
            }
        }
    }
}

static int remote_submit(void *ctx, const moe_expert_work *wk, moe_err *err) {
    remote_be *b = ctx;
    const moe_hparams *hp = &b->m->hp;
    b->status = 0;
    b->last_why[0] = 0;
    b->work = wk;
    b->n_todo = 0;
    if (wk->layer < 0 || wk->layer >= hp->n_layer || wk->n_embd != hp->n_embd || wk->n_groups < 0 ||
        wk->n_groups > hp->n_expert)
        return b->status = moe_err_set(err, MOE_EINVAL, "remote experts: bad work");
    const int rows = wk->n_groups ? wk->row_start[wk->n_groups] : 0;
    if (rows > b->p.max_rows)
        return b->status = moe_err_set(err, MOE_ERANGE, "remote experts: %d rows exceed %d", rows,
                                       b->p.max_rows);
    for (int g = 0; g < wk->n_groups; g++)
        if (wk->expert[g] < 0 || wk->expert[g] >= hp->n_expert)
            return b->status = moe_err_set(err, MOE_EINVAL,
                                           "remote experts: expert %d out of range", wk->expert[g]);
    refresh_placement(b);
    b->st.batches++;
    if (b->ctl) moe__rctl_count(b->ctl, wk->layer, wk->n_groups, wk->expert, wk->row_start);
    for (int i = 0; i < b->n; i++) {
        rworker *w = b->w[i];
        w->failed = w->busy = w->n_queued = w->n_groups = 0;
        w->rows_in_flight = 0;
    }
    b->rr++;
    for (int g = 0; g < wk->n_groups; g++) {
        b->done[g] = moe__remote_group_rows(b, g) <= 0;
        b->owner[g] = -1;
        if (b->done[g]) continue;
        b->n_todo++;
        moe__remote_assign(b, g);
    }
    /* sent now, not at wait: the caller's work until then (shared experts,
     * the other half's attention) overlaps the workers' */
    dispatch(b);
    return 0;
}

static int remote_wait(void *ctx, moe_err *err) {
    remote_be *b = ctx;
    if (b->status) {
        moe__remote_publish(b);
        if (err) *err = b->err;
        return b->status;
    }
    const int ng = b->work->n_groups;
    const int64_t t0 = moe_mono_ms();
    for (;;) {
        int sending = 0; /* a stream takes one message at a time: see each send complete */
        for (int i = 0; i < b->n; i++) sending |= b->w[i]->send != NULL && b->w[i]->open;
        if ((b->n_todo == 0 && !sending) || b->status) break;
        dispatch(b);
        /* groups no live replica holds: wait for a placement that has one */
        int orphans = 0;
        for (int g = 0; g < ng; g++) orphans += !b->done[g] && b->owner[g] < 0;
        const int64_t now = moe_mono_ms();
        if (orphans) {
            if (b->ctl) {
                moe__rctl_kick(b->ctl);
                const int fresh = refresh_placement(b);
                /* a new placement decides again; else a worker that failed may be
                 * back (restarted, done loading): retry it once its backoff passed
                 * (a refusal: after 100 ms) */
                for (int i = 0; i < b->n; i++) {
                    rworker *w = b->w[i];
                    if (fresh || (w->failed && now >= (w->down_until_ms > w->failed_ms + 100
                                                           ? w->down_until_ms
                                                           : w->failed_ms + 100)))
                        w->failed = 0;
                }
                for (int g = 0; g < ng; g++)
                    if (!b->done[g] && b->owner[g] < 0) moe__remote_assign(b, g);
                dispatch(b);
            }
            int left = 0;
            for (int g = 0; g < ng; g++) left += !b->done[g] && b->owner[g] < 0;
            if (left && (!b->ctl || now - t0 > b->p.failover_ms)) {
                char why[200];
                int g = 0;
                while (b->done[g] || b->owner[g] >= 0) g++;
                if (b->ctl)
                    snprintf(why, sizeof why,
                             "no live worker holds layer %d expert %d (waited %d ms for a new "
                             "placement)",
                             b->work->layer, b->work->expert[g], b->p.failover_ms);
                else
                    snprintf(why, sizeof why, "no other worker holds layer %d expert %d",
                             b->work->layer, b->work->expert[g]);
                if (*b->last_why) {
                    fail(b, NULL, "%s; %s", b->last_why, why);
                    break;
                }
                fail(b, NULL, "%s%s", "", why);
                break;
            }
        }
        /* the nearest message deadline, or a short poll while groups wait */
        int64_t wake = now + (orphans ? 50 : b->p.deadline_ms);
        for (int i = 0; i < b->n; i++) {
            const rworker *w = b->w[i];
            if (!w->busy) continue;
            if (w->sent_ms + b->p.deadline_ms < wake) wake = w->sent_ms + b->p.deadline_ms;
            const int64_t sus = moe__remote_suspect_after_ms(b, w);
            if (sus && w->sent_ms + sus < wake) wake = w->sent_ms + sus;
        }
        grpc_event ev =
            grpc_completion_queue_next(b->cq, in_ms((int)(wake > now ? wake - now : 0)), NULL);
        if (ev.type == GRPC_OP_COMPLETE) on_event(b, ev.tag, ev.success);
        const int64_t after = moe_mono_ms();
        for (int i = 0; i < b->n; i++) {
            rworker *w = b->w[i];
            if (!w->busy) continue;
            const int64_t waited = after - w->sent_ms, sus = moe__remote_suspect_after_ms(b, w);
            if (waited >= b->p.deadline_ms) {
                char why[64];
                snprintf(why, sizeof why, "no result within %d ms", b->p.deadline_ms);
                worker_failed(b, w, 1, why);
            } else if (sus && waited >= sus && moe__remote_replicas_left(b, w, after)) {
                char why[128];
                snprintf(why, sizeof why,
                         "no result within %lld ms, its answers take %.1f ms (--suspect-ms)",
                         (long long)waited, w->us_answer / 1000.0);
                b->st.suspects++;
                worker_failed(b, w, 1, why);
            }
        }
    }
    if (b->status) {
        /* a failed batch: cancel the streams still busy; the next batch opens new ones */
        for (int i = 0; i < b->n; i++) {
            rworker *w = b->w[i];
            if (w->call && w->busy) {
                grpc_call_cancel(w->call, NULL);
                w->open = 0;
            }
            w->busy = 0;
        }
    }
    /* collect what cancellations complete (bounded), so the streams reopen */
    const gpr_timespec drain = in_ms(2000);
    for (;;) {
        int pending = 0;
        for (int i = 0; i < b->n; i++) pending |= b->w[i]->pending > 0 && !b->w[i]->open;
        if (!pending) break;
        grpc_event ev = grpc_completion_queue_next(b->cq, drain, NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        on_event(b, ev.tag, ev.success);
    }
    if (!b->status && b->fail_us) { /* served despite a failure: how long it stalled */
        const double ms = (double)(moe_mono_us() - b->fail_us) / 1000.0;
        b->st.stall_ms_last = ms;
        if (ms > b->st.stall_ms_max) b->st.stall_ms_max = ms;
    }
    b->fail_us = 0;
    moe__remote_publish(b);
    if (b->status && err) *err = b->err;
    return b->status;
}

/* ==== Create / destroy ============================================================ */

static void remote_destroy(void *ctx) {
    remote_be *b = ctx;
    if (!b) return;
    moe_expert_backend_destroy(b->be.second);
    moe__rctl_stop(b->ctl);
    for (int i = 0; i < b->n; i++) {
        rworker *w = b->w[i];
        if (w->call) {
            grpc_call_cancel(w->call, NULL);
            w->open = 0;
        }
    }
    const gpr_timespec drain = in_ms(2000);
    for (;;) {
        int pending = 0;
        for (int i = 0; i < b->n; i++) pending |= b->w[i]->pending > 0;
        if (!pending) break;
        grpc_event ev = grpc_completion_queue_next(b->cq, drain, NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        on_event(b, ev.tag, ev.success);
    }
    for (int i = 0; i < b->n; i++) worker_free(b->w[i]);
    if (b->creds) grpc_channel_credentials_release(b->creds);
    if (b->cq) {
        grpc_completion_queue_shutdown(b->cq);
        while (grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(b->cq);
    }
    free(b->w), free(b->pl.off), free(b->pl.rep), free(b->owner), free(b->done);
    free(b->moved);
    pthread_mutex_destroy(&b->pub_mu);
    free(b);
    grpc_shutdown();
}

/* The common part of both creates. */
static int create_common(remote_be **out, const moe_model *m, const moe_remote_params *p,
                         moe_err *err) {
    *out = NULL;
    moe_remote_params dp = moe_remote_default_params();
    if (!p) p = &dp;
    if (p->deadline_ms < 1 || p->max_rows < 1 || p->failover_ms < 0 || p->down_ms < 0 ||
        p->placement_wait_ms < 0)
        return moe_err_set(err, MOE_EINVAL, "deadline and max_rows must be >= 1, waits >= 0");
    int rc = moe_tls_check(p->tls, NULL, err);
    if (rc < 0) return rc;
    mallopt(M_MMAP_THRESHOLD, 256 << 20); /* reuse large message buffers (stack-notes) */
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    grpc_init();
    remote_be *b = calloc(1, sizeof *b);
    if (!b) {
        grpc_shutdown();
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    b->m = m;
    b->p = *p;
    b->p.tls = NULL;
    if (p->tls) b->tls = *p->tls;
    if (moe_tls_on(p->tls)) b->creds = moe_tls_channel_creds(p->tls);
    pthread_mutex_init(&b->pub_mu, NULL);
    b->cq = grpc_completion_queue_create_for_next(NULL);
    b->args[0] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                            .value.integer = 1 << 30};
    b->args[1] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                            .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                            .value.integer = 1 << 30};
    b->ch_args = (grpc_channel_args){2, b->args};
    b->owner = calloc((size_t)m->hp.n_expert + 1, sizeof *b->owner);
    b->done = calloc((size_t)m->hp.n_expert + 1, 1);
    b->moved = calloc((size_t)m->hp.n_expert + 1, sizeof *b->moved);
    b->be = (moe_expert_backend){b, "remote", remote_submit, remote_wait, remote_destroy, NULL};
    *out = b;
    if (!b->owner || !b->done || !b->moved) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    return 0;
}

/* With p->second: the second set of streams, a backend made by create with
 * the same parameters (quiet: the first logs), attached to b. */
static int open_second(remote_be *b, const moe_remote_params *p,
                       int (*create)(moe_expert_backend **, const moe_remote_params *, void *,
                                     moe_err *),
                       void *ud, moe_err *err) {
    if (!p || !p->second) return 0;
    moe_remote_params p2 = *p;
    p2.second = 0;
    p2.quiet = 1;
    return create(&b->be.second, &p2, ud, err);
}

/* Every routed expert of every MoE layer has a replica (unless allow_partial). */
static int check_coverage(const remote_be *b, const char *hint, moe_err *err) {
    const moe_hparams *hp = &b->m->hp;
    for (int l = 0; l < hp->n_layer && !b->p.allow_partial; l++) {
        if (!moe_model_layer_is_moe(b->m, l)) continue;
        for (int e = 0; e < hp->n_expert; e++) {
            const size_t k = (size_t)l * hp->n_expert + e;
            if (!b->pl.off || b->pl.off[k] == b->pl.off[k + 1])
                return moe_err_set(err, MOE_EUNAVAIL, "no worker holds layer %d expert %d (%s)", l,
                                   e, hint);
        }
    }
    return 0;
}

typedef struct info_acc {
    remote_be *b;
    int wi;
    uint8_t *held; /* (n_layer, n_expert, n_workers) */
} info_acc;

static void info_pair(void *ud, int l, int e) {
    info_acc *a = ud;
    a->held[((size_t)l * a->b->m->hp.n_expert + e) * (size_t)a->b->cap + a->wi] = 1;
}

typedef struct list_args {
    const moe_model *m;
    const char *const *workers;
    int n;
} list_args;

static int list_second(moe_expert_backend **out, const moe_remote_params *p, void *ud,
                       moe_err *err) {
    const list_args *a = ud;
    return moe_expert_backend_remote_create(out, a->m, a->workers, a->n, p, err);
}

typedef struct redis_args {
    const moe_model *m;
    const char *url, *prefix;
} redis_args;

static int redis_second(moe_expert_backend **out, const moe_remote_params *p, void *ud,
                        moe_err *err) {
    const redis_args *a = ud;
    return moe_expert_backend_remote_redis_create(out, a->m, a->url, a->prefix, p, err);
}

int moe_expert_backend_remote_create(moe_expert_backend **out, const moe_model *m,
                                     const char *const *workers, int n, const moe_remote_params *p,
                                     moe_err *err) {
    *out = NULL;
    if (n < 1 || n > 4096) return moe_err_set(err, MOE_EINVAL, "need 1 to 4096 workers");
    remote_be *b = NULL;
    int rc = create_common(&b, m, p, err);
    if (rc < 0) goto fail;
    for (int i = 0; i < n; i++) {
        /* "id@host:port": the certificate must name id (else the host) */
        const char *at = strchr(workers[i], '@');
        char name[256];
        if (at) snprintf(name, sizeof name, "%.*s", (int)(at - workers[i]), workers[i]);
        if ((rc = worker_get(b, at ? at + 1 : workers[i], at ? name : NULL, err)) < 0) goto fail;
    }
    /* the replicas each worker's Info names, as a placement of epoch 0 */
    const size_t np = n_pairs(b);
    info_acc acc = {b, 0, calloc(np * (size_t)b->cap + 1, 1)};
    b->pl.off = calloc(np + 1, sizeof *b->pl.off);
    b->pl.rep = malloc((np * (size_t)b->n + 1) * sizeof *b->pl.rep);
    if (!acc.held || !b->pl.off || !b->pl.rep) {
        free(acc.held);
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto fail;
    }
    for (acc.wi = 0; acc.wi < b->n; acc.wi++)
        if ((rc = moe__remote_read_info(b, b->w[acc.wi], info_pair, &acc, err)) < 0) {
            free(acc.held);
            goto fail;
        }
    size_t k = 0;
    for (size_t i = 0; i < np; i++) {
        b->pl.off[i] = (uint32_t)k;
        for (int wi = 0; wi < b->n; wi++)
            if (acc.held[i * (size_t)b->cap + wi]) b->pl.rep[k++] = wi;
    }
    b->pl.off[np] = (uint32_t)k;
    free(acc.held);
    char hint[64];
    snprintf(hint, sizeof hint, "the %d worker(s) given leave it out", n);
    if ((rc = check_coverage(b, hint, err)) < 0) goto fail;
    list_args la = {m, workers, n};
    if ((rc = open_second(b, p, list_second, &la, err)) < 0) goto fail;
    moe__remote_publish(b);
    *out = &b->be;
    return 0;
fail:
    remote_destroy(b);
    return rc;
}

int moe_expert_backend_remote_redis_create(moe_expert_backend **out, const moe_model *m,
                                           const char *url, const char *prefix,
                                           const moe_remote_params *p, moe_err *err) {
    *out = NULL;
    remote_be *b = NULL;
    int rc = create_common(&b, m, p, err);
    if (rc < 0) goto fail;
    if ((rc = moe__rctl_start(&b->ctl, url, prefix, m, err)) < 0) goto fail;
    /* in slices of 100 ms: a stop signal ends the wait */
    int waited = 0, have = 0;
    while (!(have = moe__rctl_wait(b->ctl, b->p.placement_wait_ms - waited < 100
                                               ? b->p.placement_wait_ms - waited
                                               : 100)) &&
           (waited += 100) < b->p.placement_wait_ms && !(b->p.stop && *b->p.stop)) {
    }
    if (!have && b->p.stop && *b->p.stop) {
        rc = moe_err_set(err, MOE_EUNAVAIL, "stopped while waiting for the first placement");
        goto fail;
    }
    if (!have) {
        char why[400], shown[MOE_REDIS_URL_SHOWN];
        moe__rctl_problem(b->ctl, why, sizeof why);
        moe_redis_url_redact(shown, sizeof shown, url);
        rc = moe_err_set(err, MOE_EUNAVAIL,
                         "no usable placement in Redis %s (prefix '%s') after %d ms: %s", shown,
                         moe_schema_prefix(prefix), b->p.placement_wait_ms,
                         *why ? why : "is router-svc running, with workers registered?");
        goto fail;
    }
    moe_pldoc *d = moe__rctl_take(b->ctl);
    rc = d ? apply_doc(b, d, err) : moe_err_set(err, MOE_EUNAVAIL, "no placement");
    moe_pldoc_free(d);
    if (rc < 0) goto fail;
    if ((rc = check_coverage(b, "the active placement leaves it out", err)) < 0) goto fail;
    redis_args ra = {m, url, prefix};
    if ((rc = open_second(b, p, redis_second, &ra, err)) < 0) goto fail;
    moe__remote_publish(b);
    *out = &b->be;
    return 0;
fail:
    remote_destroy(b);
    return rc;
}
