/* server.c - the expert worker's gRPC server (see server.h). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "mesh/wire.h"
#include "moe/expert.h"
#include "moe/ops.h"
#include "moe/threadpool.h"
#include "server.h"
#include "moe/log.h"
#include "svc/clock.h"

/* ==== State ================================================================ */

typedef enum call_kind { CALL_FORWARD, CALL_INFO, CALL_HEALTH } call_kind;

typedef struct ew_server ew_server;
typedef struct ew_call ew_call;

/* A completion-queue tag: which call, which operation. */
typedef enum tag_op { OP_NEW, OP_RECV, OP_SEND, OP_STATUS, OP_CLOSE, OP_REPLY } tag_op;
typedef struct ew_tag {
    ew_call *call;
    tag_op op;
} ew_tag;

struct ew_call {
    ew_server *srv;
    call_kind kind;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *recv; /* RECV_MESSAGE target (and unary payload) */
    grpc_byte_buffer *send; /* lives until its batch completes */
    grpc_slice details;
    int cancelled;
    int outstanding; /* batches started and not completed */
    int closed;      /* RECV_CLOSE_ON_SERVER completed */
    ew_tag t_new, t_recv, t_send, t_status, t_close, t_reply;
};

struct ew_server {
    const ew_config *cfg;
    grpc_completion_queue *cq;
    grpc_server *server;
    void *m_forward, *m_info, *m_health;
    moe_pool *pool;
    moe_expert_backend *experts;
    float *x, *y; /* (max_rows, hidden) */
    int32_t *expert, *row_start;
    uint32_t *expert_us; /* (max_rows) per group */
    uint8_t *out;        /* packed outputs, (max_rows, hidden) x 4 bytes */
    int n_live;          /* calls not yet freed */
    uint64_t n_batches, n_rows;
};

static int request_call(ew_server *s, call_kind kind);

static void call_free(ew_call *c) {
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    grpc_metadata_array_destroy(&c->md);
    if (c->call) grpc_call_unref(c->call);
    c->srv->n_live--;
    free(c);
}

static void start(ew_call *c, const grpc_op *ops, size_t n, ew_tag *tag) {
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e == GRPC_CALL_OK) {
        c->outstanding++;
    } else {
        moe_log(MOE_LOG_ERROR, "expert-worker", "start_batch failed (%d)", (int)e);
        c->cancelled = 1;
    }
}

/* Starts one op (its other fields zero) as a batch of its own. */
static void start_one(ew_call *c, grpc_op op, ew_tag *tag) {
    start(c, &op, 1, tag);
}

/* Waits for the client's close, which says whether the call was cancelled. */
static void start_close(ew_call *c) {
    start_one(c,
              (grpc_op){.op = GRPC_OP_RECV_CLOSE_ON_SERVER,
                        .data.recv_close_on_server.cancelled = &c->cancelled},
              &c->t_close);
}

/* ==== Replies ================================================================ */

/* Wraps a packed message into a byte buffer owned by the call. */
static void set_send(ew_call *c, const uint8_t *data, size_t n) {
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)data, n);
    c->send = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
}

/* A whole unary reply: metadata, message (if any), status; and the close. */
static void unary_reply(ew_call *c, grpc_status_code st, const char *details) {
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->send) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->send;
    }
    c->details = grpc_slice_from_copied_string(details ? details : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = st;
    ops[n++].data.send_status_from_server.status_details = &c->details;
    start(c, ops, n, &c->t_reply);
    grpc_slice_unref(c->details);
    start_close(c);
}

static void reply_info(ew_call *c) {
    const ew_config *cfg = c->srv->cfg;
    const moe_model *m = cfg->model;
    const moe_slice *sl = cfg->slice;
    Moe__V1__InfoResponse r = MOE__V1__INFO_RESPONSE__INIT;
    r.model = (char *)cfg->model_name;
    r.architecture = (char *)moe_arch_name(m->hp.arch);
    r.n_layer = (uint32_t)m->hp.n_layer;
    r.n_expert = (uint32_t)m->hp.n_expert;
    r.hidden = (uint32_t)m->hp.n_embd;
    char device[32];
    snprintf(device, sizeof device, "cpu:%s", moe_cpu_describe());
    r.device = device;
    Moe__V1__LayerExperts *le = calloc((size_t)m->hp.n_layer, sizeof *le);
    Moe__V1__LayerExperts **lp = calloc((size_t)m->hp.n_layer, sizeof *lp);
    uint32_t *ids = calloc((size_t)m->hp.n_layer * (size_t)m->hp.n_expert + 1, sizeof *ids);
    if (!le || !lp || !ids) {
        free(le), free(lp), free(ids);
        unary_reply(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t nl = 0, ni = 0;
    uint64_t bytes = 0;
    for (int l = 0; l < m->hp.n_layer; l++) {
        uint32_t *first = ids + ni;
        size_t k = 0;
        for (int e = 0; e < m->hp.n_expert; e++)
            if (moe_slice_has(sl, l, e)) first[k++] = (uint32_t)e;
        if (!k) continue;
        const size_t per = moe_expert_bytes(m, l);
        bytes += per * k;
        moe__v1__layer_experts__init(&le[nl]);
        le[nl].layer = (uint32_t)l;
        le[nl].n_experts = k;
        le[nl].experts = first;
        lp[nl] = &le[nl];
        nl++;
        ni += k;
    }
    r.n_held = nl;
    r.held = lp;
    r.capacity_bytes = bytes;
    size_t n = moe__v1__info_response__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        moe__v1__info_response__pack(&r, buf);
        set_send(c, buf, n);
    }
    free(buf), free(le), free(lp), free(ids);
    unary_reply(c, buf ? GRPC_STATUS_OK : GRPC_STATUS_RESOURCE_EXHAUSTED,
                buf ? "" : "out of memory");
}

static void reply_health(ew_call *c) {
    size_t len = 0;
    uint8_t *req = c->recv ? moe_wire_read_all(c->recv, &len) : NULL;
    Grpc__Health__V1__HealthCheckRequest *hr =
        req ? grpc__health__v1__health_check_request__unpack(NULL, len, req) : NULL;
    free(req);
    if (c->recv && !hr) {
        unary_reply(c, GRPC_STATUS_INVALID_ARGUMENT, "not a HealthCheckRequest");
        return;
    }
    const char *svc = hr && hr->service ? hr->service : "";
    int known = !*svc || !strcmp(svc, "moe.v1.ExpertService");
    if (hr) grpc__health__v1__health_check_request__free_unpacked(hr, NULL);
    if (!known) {
        unary_reply(c, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    uint8_t buf[16];
    size_t n = grpc__health__v1__health_check_response__pack(&r, buf);
    set_send(c, buf, n);
    unary_reply(c, GRPC_STATUS_OK, "");
}

/* ==== Forward ================================================================ */

/* Computes one request into a packed ForwardResult in c->send. */
static void forward_one(ew_call *c, const uint8_t *data, size_t len) {
    ew_server *s = c->srv;
    const ew_config *cfg = s->cfg;
    const moe_hparams *hp = &cfg->model->hp;
    Moe__V1__ForwardResult res = MOE__V1__FORWARD_RESULT__INIT;
    char msg[600];
    moe_err err;
    Moe__V1__ForwardRequest *r = moe__v1__forward_request__unpack(NULL, len, data);
    if (!r) {
        res.status = GRPC_STATUS_INVALID_ARGUMENT;
        res.error = (char *)"not a moe.v1.ForwardRequest";
        goto send;
    }
    res.id = r->id;
    res.dtype = r->dtype;
    const moe_wire_shape shape = {hp->n_layer, hp->n_expert, hp->n_embd, cfg->max_rows};
    int rows = 0;
    if (moe_wire_check_request(r, &shape, &rows, &err) < 0) {
        res.status = GRPC_STATUS_INVALID_ARGUMENT;
        snprintf(msg, sizeof msg, "%s", err.msg);
        res.error = msg;
        goto send;
    }
    for (size_t g = 0; g < r->n_groups; g++) {
        if (!moe_slice_has(cfg->slice, (int)r->layer, (int)r->groups[g]->expert)) {
            res.status = GRPC_STATUS_FAILED_PRECONDITION;
            if (cfg->counters) __atomic_add_fetch(&cfg->counters->refused, 1, __ATOMIC_RELAXED);
            snprintf(msg, sizeof msg,
                     "layer %u expert %u is not held by this worker (placement epoch %llu)",
                     r->layer, r->groups[g]->expert, (unsigned long long)r->placement_epoch);
            res.error = msg;
            goto send;
        }
        s->expert[g] = (int32_t)r->groups[g]->expert;
        s->row_start[g] = (int32_t)r->groups[g]->first_row;
    }
    s->row_start[r->n_groups] = rows;
    const size_t n = (size_t)rows * (size_t)hp->n_embd;
    moe_wire_to_f32((int)r->dtype, r->activations.data, n, s->x);
    moe_expert_work w = {.layer = (int)r->layer,
                         .n_groups = (int)r->n_groups,
                         .expert = s->expert,
                         .row_start = s->row_start,
                         .n_embd = hp->n_embd,
                         .x = s->x,
                         .y = s->y,
                         .expert_us = s->expert_us,
                         .exact = r->exact};
    const int64_t t0 = moe_mono_us();
    int rc = s->experts->submit(s->experts->ctx, &w, &err);
    if (rc == 0) rc = s->experts->wait(s->experts->ctx, &err);
    const int64_t t1 = moe_mono_us();
    if (rc < 0) {
        res.status = GRPC_STATUS_INTERNAL;
        snprintf(msg, sizeof msg, "%s", err.msg);
        res.error = msg;
        goto send;
    }
    res.compute_us = (uint32_t)(t1 - t0);
    moe_wire_from_f32((int)r->dtype, s->y, n, s->out);
    res.outputs.data = s->out;
    res.outputs.len = n * moe_wire_elt_bytes((int)r->dtype);
    res.n_expert_us = r->n_groups;
    res.expert_us = s->expert_us;
    s->n_batches++;
    s->n_rows += (uint64_t)rows;
    if (cfg->counters) {
        ew_counters *k = cfg->counters;
        __atomic_add_fetch(&k->batches, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&k->rows, (uint64_t)rows, __ATOMIC_RELAXED);
        for (size_t g = 0; g < r->n_groups && k->expert_rows; g++)
            __atomic_add_fetch(
                &k->expert_rows[(size_t)r->layer * (size_t)hp->n_expert + r->groups[g]->expert],
                (uint64_t)r->groups[g]->row_count, __ATOMIC_RELAXED);
    }
send:
    if (cfg->counters && res.status != 0 && res.status != GRPC_STATUS_FAILED_PRECONDITION)
        __atomic_add_fetch(&cfg->counters->errors, 1, __ATOMIC_RELAXED);
    size_t plen = moe__v1__forward_result__get_packed_size(&res);
    uint8_t *buf = malloc(plen ? plen : 1);
    if (buf) {
        moe__v1__forward_result__pack(&res, buf);
        set_send(c, buf, plen);
        free(buf);
    }
    if (r) moe__v1__forward_request__free_unpacked(r, NULL);
}

static void forward_recv(ew_call *c) {
    start_one(c, (grpc_op){.op = GRPC_OP_RECV_MESSAGE, .data.recv_message.recv_message = &c->recv},
              &c->t_recv);
}

static void forward_status(ew_call *c) {
    c->details = grpc_slice_from_static_string("");
    start_one(c,
              (grpc_op){.op = GRPC_OP_SEND_STATUS_FROM_SERVER,
                        .data.send_status_from_server = {.status = GRPC_STATUS_OK,
                                                         .status_details = &c->details}},
              &c->t_status);
}

/* ==== Dispatch ================================================================ */

static void on_event(ew_server *s, ew_tag *t, int ok) {
    ew_call *c = t->call;
    if (t->op != OP_NEW) c->outstanding--;
    switch (t->op) {
    case OP_NEW:
        if (!ok) { /* the server is shutting down */
            call_free(c);
            return;
        }
        request_call(s, c->kind); /* keep one waiting call per method */
        if (c->kind == CALL_FORWARD) {
            grpc_op ops[2];
            memset(ops, 0, sizeof ops);
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_RECV_MESSAGE;
            ops[1].data.recv_message.recv_message = &c->recv;
            start(c, ops, 2, &c->t_recv);
            start_close(c);
        } else if (c->kind == CALL_INFO) {
            reply_info(c);
        } else {
            reply_health(c);
        }
        break;
    case OP_RECV:
        if (!ok) break; /* cancelled: wait for the close */
        if (!c->recv) { /* the client half-closed: end the stream */
            forward_status(c);
            break;
        }
        {
            size_t len = 0;
            uint8_t *data = moe_wire_read_all(c->recv, &len);
            grpc_byte_buffer_destroy(c->recv);
            c->recv = NULL;
            forward_one(c, data ? data : (const uint8_t *)"", data ? len : 0);
            free(data);
        }
        if (c->send)
            start_one(
                c, (grpc_op){.op = GRPC_OP_SEND_MESSAGE, .data.send_message.send_message = c->send},
                &c->t_send);
        break;
    case OP_SEND:
        grpc_byte_buffer_destroy(c->send);
        c->send = NULL;
        if (ok) forward_recv(c); /* stopping ends the streams at shutdown */
        break;
    case OP_CLOSE:
        c->closed = 1;
        break;
    case OP_STATUS:
    case OP_REPLY:
        break;
    }
    if (c->outstanding == 0 && c->closed) call_free(c);
}

static int request_call(ew_server *s, call_kind kind) {
    ew_call *c = calloc(1, sizeof *c);
    if (!c) return MOE_ENOMEM;
    c->srv = s;
    c->kind = kind;
    grpc_metadata_array_init(&c->md);
    ew_tag *tags[] = {&c->t_new, &c->t_recv, &c->t_send, &c->t_status, &c->t_close, &c->t_reply};
    const tag_op ops[] = {OP_NEW, OP_RECV, OP_SEND, OP_STATUS, OP_CLOSE, OP_REPLY};
    for (int i = 0; i < 6; i++) *tags[i] = (ew_tag){c, ops[i]};
    void *m = kind == CALL_FORWARD ? s->m_forward : kind == CALL_INFO ? s->m_info : s->m_health;
    grpc_call_error e = grpc_server_request_registered_call(
        s->server, m, &c->call, &c->deadline, &c->md, kind == CALL_FORWARD ? NULL : &c->recv, s->cq,
        s->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->md);
        free(c);
        return MOE_EUNAVAIL;
    }
    s->n_live++;
    return 0;
}

/* ==== Run ===================================================================== */

int ew_server_run(const ew_config *cfg, moe_err *err) {
    /* large messages: keep freed memory instead of mmap/munmap per message
     * (stack-notes: glibc's mmap threshold costs 3-10x throughput) */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    mallopt(M_TOP_PAD, 64 << 20);

    ew_server s = {.cfg = cfg};
    const moe_hparams *hp = &cfg->model->hp;
    int rc = moe_pool_create(&s.pool, cfg->n_threads);
    if (rc < 0) return moe_err_set(err, rc, "cannot start %d threads", cfg->n_threads);
    rc = moe_expert_backend_local_create(&s.experts, cfg->model, s.pool, cfg->max_rows, err);
    if (rc < 0) {
        moe_pool_destroy(s.pool);
        return rc;
    }
    const size_t n = (size_t)cfg->max_rows * (size_t)hp->n_embd;
    s.x = malloc(n * 4);
    s.y = malloc(n * 4);
    s.out = malloc(n * 4);
    s.expert = calloc((size_t)cfg->max_rows + 1, sizeof *s.expert);
    s.row_start = calloc((size_t)cfg->max_rows + 2, sizeof *s.row_start);
    s.expert_us = calloc((size_t)cfg->max_rows + 1, sizeof *s.expert_us);
    if (!s.x || !s.y || !s.out || !s.expert || !s.row_start || !s.expert_us) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for %d rows", cfg->max_rows);
        goto done;
    }

    grpc_init();
    s.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_arg args[2] = {
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
         .value.integer = (int)(n * 4 + (1 << 20) > (size_t)1 << 30 ? 1 << 30 : n * 4 + (1 << 20))},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
         .value.integer = (int)(n * 4 + (1 << 20) > (size_t)1 << 30 ? 1 << 30 : n * 4 + (1 << 20))},
    };
    grpc_channel_args ch_args = {2, args};
    s.server = grpc_server_create(&ch_args, NULL);
    grpc_server_register_completion_queue(s.server, s.cq, NULL);
    s.m_forward = grpc_server_register_method(s.server, "/moe.v1.ExpertService/Forward", NULL,
                                              GRPC_SRM_PAYLOAD_NONE, 0);
    s.m_info = grpc_server_register_method(s.server, "/moe.v1.ExpertService/Info", NULL,
                                           GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    s.m_health = grpc_server_register_method(s.server, "/grpc.health.v1.Health/Check", NULL,
                                             GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(s.server, cfg->listen, creds);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        rc = moe_err_set(err, MOE_EIO, "cannot listen on '%s'", cfg->listen);
        grpc_server_destroy(s.server);
        grpc_completion_queue_shutdown(s.cq);
        while (grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(s.cq);
        grpc_shutdown();
        goto done;
    }
    grpc_server_start(s.server);
    if (request_call(&s, CALL_FORWARD) < 0 || request_call(&s, CALL_INFO) < 0 ||
        request_call(&s, CALL_HEALTH) < 0)
        moe_log(MOE_LOG_ERROR, "expert-worker", "cannot request calls");
    /* the real port (":0" binds any free one) */
    const char *colon = strrchr(cfg->listen, ':');
    printf("listening on %.*s:%d\n", colon ? (int)(colon - cfg->listen) : 0, cfg->listen, port);
    fflush(stdout);
    if (cfg->on_listen) cfg->on_listen(cfg->on_listen_ud, port);

    while (!*cfg->stop || (cfg->may_stop && !cfg->may_stop(cfg->on_listen_ud))) {
        gpr_timespec dl =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(s.cq, dl, NULL);
        if (ev.type == GRPC_OP_COMPLETE) on_event(&s, ev.tag, ev.success);
    }
    /* stop: no new calls; in-flight batches already finished (computed on
     * this thread); streams are told OK or cancelled */
    static ew_tag shutdown_tag = {NULL, OP_NEW};
    grpc_server_shutdown_and_notify(s.server, s.cq, &shutdown_tag);
    grpc_server_cancel_all_calls(s.server);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        if (ev.tag == &shutdown_tag) break;
        on_event(&s, ev.tag, ev.success);
    }
    grpc_server_destroy(s.server);
    grpc_completion_queue_shutdown(s.cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE && ev.tag != &shutdown_tag)
            on_event(&s, ev.tag, ev.success);
    }
    grpc_completion_queue_destroy(s.cq);
    grpc_shutdown();
    moe_log(MOE_LOG_INFO, "expert-worker", "stopped after %llu batches, %llu rows",
            (unsigned long long)s.n_batches, (unsigned long long)s.n_rows);
    rc = 0;
done:
    free(s.x), free(s.y), free(s.out), free(s.expert), free(s.row_start), free(s.expert_us);
    moe_expert_backend_destroy(s.experts);
    moe_pool_destroy(s.pool);
    return rc;
}
