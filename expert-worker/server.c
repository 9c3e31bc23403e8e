/* server.c - the expert worker's gRPC server (see server.h). */
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/compression.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "mesh/wire.h"
#include "moe/expert.h"
#include "moe/ops.h"
#include "moe/threadpool.h"
#include "conncap.h"
#include "server.h"
#include "moe/log.h"
#include "svc/clock.h"

/* ==== State ================================================================ */

/* CALL_OTHER: any method not registered (answered UNIMPLEMENTED). */
typedef enum call_kind { CALL_FORWARD, CALL_INFO, CALL_HEALTH, CALL_OTHER, CALL_KINDS } call_kind;

/* Calls requested ahead of time per kind: a new stream is matched to one at
 * once instead of waiting in gRPC's pending queue (1.51 bounds that queue
 * nowhere; an unregistered call nobody asks for stays there forever). */
#define CALLS_AHEAD 16

/* A Health/Check request is a service name: anything bigger is refused
 * before it is decoded. */
#define HEALTH_MAX_BYTES 1024

/* After a burst, memory goes back to the OS once nothing happened this long
 * (at most once per interval). */
#define TRIM_IDLE_MS 500

/* How often the second completion-queue thread looks for ready events
 * (5 ms: lower peaks under a rapid reset, 1% of a core idle; 20 ms: 0.4%,
 * peaks up to 90 MB). */
#define SWEEP_MS 10

typedef struct ew_server ew_server;
typedef struct ew_call ew_call;

/* A completion-queue tag: which call, which operation. */
typedef enum tag_op { OP_NEW, OP_RECV, OP_SEND, OP_STATUS, OP_CLOSE, OP_REPLY } tag_op;
typedef struct ew_tag {
    ew_call *call;
    tag_op op;
} ew_tag;

/* A call's state is read and changed under the server's mu only (both
 * completion-queue threads and the compute thread touch it). */
struct ew_call {
    ew_server *srv;
    call_kind kind;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details cd;   /* CALL_OTHER: the method asked for */
    grpc_byte_buffer *recv; /* RECV_MESSAGE target (and unary payload) */
    grpc_byte_buffer *send; /* lives until its batch completes */
    grpc_byte_buffer *job;  /* a received Forward message queued for compute */
    ew_call *next_job;
    grpc_slice details;
    int cancelled;   /* written by RECV_CLOSE_ON_SERVER */
    int failed;      /* a batch could not start */
    int outstanding; /* batches started and not completed, plus a queued job */
    int closed;      /* RECV_CLOSE_ON_SERVER completed: the call is over */
    ew_tag t_new, t_recv, t_send, t_status, t_close, t_reply;
};

struct ew_server {
    const ew_config *cfg;
    grpc_completion_queue *cq;
    grpc_server *server;
    void *m_forward, *m_info, *m_health;
    moe_pool *pool;
    moe_expert_backend *experts;
    /* the compute thread's own (nothing else touches them) */
    float *x, *y; /* (max_rows, hidden) */
    int32_t *expert, *row_start;
    uint32_t *expert_us; /* (max_rows) per group */
    uint8_t *out;        /* bf16 outputs, (max_rows, hidden) x 2 bytes */
    uint64_t n_batches, n_rows;
    /* under mu: every call's batch state, the compute queue */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ew_call *jobs, *jobs_tail; /* Forward messages in arrival order */
    int exec_stop;             /* the compute thread drains the queue and ends */
    int exec_running;
    pthread_t exec;
    int n_live;            /* calls not yet freed */
    int trim_dirty;        /* calls ended or messages computed since the last trim */
    int64_t last_event_ms; /* when the completion queue last gave an event */
    /* the second completion-queue thread */
    pthread_t poller;
    int poller_running;
    int poller_stop; /* __atomic */
};

static int request_call(ew_server *s, call_kind kind);

/* Frees a call (under mu). */
static void call_free(ew_call *c) {
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    if (c->job) grpc_byte_buffer_destroy(c->job);
    grpc_metadata_array_destroy(&c->md);
    if (c->kind == CALL_OTHER) grpc_call_details_destroy(&c->cd);
    if (c->call) grpc_call_unref(c->call);
    c->srv->n_live--;
    c->srv->trim_dirty = 1;
    free(c);
}

/* Frees the call once it is over and nothing holds it (under mu). */
static void call_maybe_free(ew_call *c) {
    if (c->outstanding == 0 && c->closed) call_free(c);
}

static void start(ew_call *c, const grpc_op *ops, size_t n, ew_tag *tag) {
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
    if (e == GRPC_CALL_OK) {
        c->outstanding++;
    } else {
        moe_log(MOE_LOG_ERROR, "expert-worker", "start_batch failed (%d)", (int)e);
        c->failed = 1;
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

/* A received message that gRPC left compressed (the server takes identity
 * only and never inflates: see the channel arguments). */
static int is_compressed(grpc_byte_buffer *bb) {
    return bb->type == GRPC_BB_RAW && bb->data.raw.compression != GRPC_COMPRESS_NONE;
}

static void reply_health(ew_call *c) {
    if (c->recv &&
        (is_compressed(c->recv) || grpc_byte_buffer_length(c->recv) > HEALTH_MAX_BYTES)) {
        unary_reply(c, GRPC_STATUS_INVALID_ARGUMENT,
                    is_compressed(c->recv) ? "compressed messages are refused"
                                           : "a HealthCheckRequest is at most 1024 bytes");
        return;
    }
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

/* A method this worker does not serve: UNIMPLEMENTED at once, without
 * reading what the peer sends (the call is freed once closed). */
static void reply_unimplemented(ew_call *c) {
    const ew_config *cfg = c->srv->cfg;
    if (cfg->counters) __atomic_add_fetch(&cfg->counters->unknown_calls, 1, __ATOMIC_RELAXED);
    char msg[160];
    const size_t n = GRPC_SLICE_LENGTH(c->cd.method);
    snprintf(msg, sizeof msg, "unknown method %.*s%s", n > 100 ? 100 : (int)n,
             (const char *)GRPC_SLICE_START_PTR(c->cd.method), n > 100 ? "..." : "");
    unary_reply(c, GRPC_STATUS_UNIMPLEMENTED, msg);
}

/* ==== Forward (the compute thread) ============================================ */

/* A packed ForwardResult as a byte buffer: packed straight into the slice it
 * is sent from (gRPC's allocator aborts when out of memory). */
static grpc_byte_buffer *pack_result(const Moe__V1__ForwardResult *res) {
    const size_t n = moe__v1__forward_result__get_packed_size(res);
    grpc_slice sl = grpc_slice_malloc(n);
    moe__v1__forward_result__pack(res, GRPC_SLICE_START_PTR(sl));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    return bb;
}

/* Checks and computes one received message (takes ownership of bb); returns
 * its ForwardResult. Runs on the compute thread: a costly message holds this
 * thread, never the completion queue (other calls, health checks and
 * cancellations go on). */
static grpc_byte_buffer *forward_message(ew_server *s, grpc_byte_buffer *bb) {
    const ew_config *cfg = s->cfg;
    const moe_hparams *hp = &cfg->model->hp;
    Moe__V1__ForwardResult res = MOE__V1__FORWARD_RESULT__INIT;
    Moe__V1__ForwardRequest *r = NULL;
    char msg[600];
    moe_err err;
    const moe_wire_shape shape = {hp->n_layer, hp->n_expert, hp->n_embd, cfg->max_rows};
    int rows = 0;
    size_t len = 0;
    uint8_t *data = NULL;
    grpc_byte_buffer *out;
    if (is_compressed(bb)) {
        res.status = GRPC_STATUS_INVALID_ARGUMENT;
        res.error = (char *)"compressed messages are refused (send identity encoding)";
        goto send;
    }
    data = moe_wire_read_all(bb, &len);
    grpc_byte_buffer_destroy(bb); /* one copy of the message at a time */
    bb = NULL;
    if (!data) {
        res.status = GRPC_STATUS_RESOURCE_EXHAUSTED;
        res.error = (char *)"out of memory";
        goto send;
    }
    if (moe_wire_decode_request(data, len, &shape, &r, &rows, &res.id, &err) < 0) {
        res.status = GRPC_STATUS_INVALID_ARGUMENT;
        snprintf(msg, sizeof msg, "%s", err.msg);
        res.error = msg;
        goto send;
    }
    free(data); /* r holds its own copy of the activations */
    data = NULL;
    res.dtype = r->dtype;
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
                         .exact = r->exact,
                         .batched = r->batched};
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
    if (r->dtype == MOE__V1__DTYPE__DTYPE_BF16) {
        moe_wire_from_f32((int)r->dtype, s->y, n, s->out);
        res.outputs.data = s->out;
    } else {
        res.outputs.data = (uint8_t *)s->y; /* f32 on the wire is little-endian floats */
    }
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
    out = pack_result(&res);
    if (bb) grpc_byte_buffer_destroy(bb);
    free(data);
    if (r) moe__v1__forward_request__free_unpacked(r, NULL);
    return out;
}

/* The compute thread: takes queued messages in arrival order, computes each
 * without the lock, and starts its reply's SEND. */
static void *exec_main(void *arg) {
    ew_server *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->jobs && !s->exec_stop) pthread_cond_wait(&s->cv, &s->mu);
        ew_call *c = s->jobs;
        if (!c) break; /* stopping, and nothing left */
        s->jobs = c->next_job;
        if (!s->jobs) s->jobs_tail = NULL;
        grpc_byte_buffer *bb = c->job;
        c->job = NULL;
        const int gone = c->closed || c->failed || s->exec_stop;
        pthread_mutex_unlock(&s->mu);
        grpc_byte_buffer *reply = NULL;
        if (gone)
            grpc_byte_buffer_destroy(bb);
        else
            reply = forward_message(s, bb);
        pthread_mutex_lock(&s->mu);
        s->trim_dirty = 1;
        c->outstanding--; /* the job's hold, taken in OP_RECV */
        if (reply && !c->closed && !c->failed) {
            c->send = reply;
            start_one(
                c, (grpc_op){.op = GRPC_OP_SEND_MESSAGE, .data.send_message.send_message = reply},
                &c->t_send);
        } else if (reply) {
            grpc_byte_buffer_destroy(reply);
        }
        call_maybe_free(c);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queues a received Forward message for the compute thread (under mu). The
 * job holds the call like a batch until the thread is done with it. */
static void exec_push(ew_server *s, ew_call *c, grpc_byte_buffer *bb) {
    c->job = bb;
    c->next_job = NULL;
    c->outstanding++;
    if (s->jobs_tail)
        s->jobs_tail->next_job = c;
    else
        s->jobs = c;
    s->jobs_tail = c;
    pthread_cond_signal(&s->cv);
}

/* Ends the compute thread once it has drained its queue. */
static void exec_stop(ew_server *s) {
    if (!s->exec_running) return;
    pthread_mutex_lock(&s->mu);
    s->exec_stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->exec, NULL);
    s->exec_running = 0;
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

/* ==== Dispatch (the completion-queue thread, under mu) ======================== */

static void on_event(ew_server *s, ew_tag *t, int ok) {
    ew_call *c = t->call;
    if (t->op != OP_NEW) c->outstanding--;
    switch (t->op) {
    case OP_NEW:
        if (!ok) { /* the server is shutting down */
            call_free(c);
            return;
        }
        request_call(s, c->kind); /* keep CALLS_AHEAD waiting calls per kind */
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
        } else if (c->kind == CALL_HEALTH) {
            reply_health(c);
        } else {
            reply_unimplemented(c);
        }
        break;
    case OP_RECV:
        if (!ok) break; /* cancelled: wait for the close */
        if (!c->recv) { /* the client half-closed: end the stream */
            forward_status(c);
            break;
        }
        if (s->exec_stop) { /* stopping: the message is dropped with the call */
            grpc_byte_buffer_destroy(c->recv);
        } else {
            exec_push(s, c, c->recv);
        }
        c->recv = NULL;
        break;
    case OP_SEND:
        grpc_byte_buffer_destroy(c->send);
        c->send = NULL;
        if (ok && !s->exec_stop) forward_recv(c); /* stopping ends the streams */
        break;
    case OP_CLOSE:
        c->closed = 1;
        break;
    case OP_STATUS:
    case OP_REPLY:
        break;
    }
    call_maybe_free(c);
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
    grpc_call_error e;
    if (kind == CALL_OTHER) {
        grpc_call_details_init(&c->cd);
        e = grpc_server_request_call(s->server, &c->call, &c->cd, &c->md, s->cq, s->cq, &c->t_new);
        if (e != GRPC_CALL_OK) grpc_call_details_destroy(&c->cd);
    } else {
        void *m = kind == CALL_FORWARD ? s->m_forward : kind == CALL_INFO ? s->m_info : s->m_health;
        e = grpc_server_request_registered_call(s->server, m, &c->call, &c->deadline, &c->md,
                                                kind == CALL_FORWARD ? NULL : &c->recv, s->cq,
                                                s->cq, &c->t_new);
    }
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->md);
        free(c);
        return MOE_EUNAVAIL;
    }
    s->n_live++;
    return 0;
}

/* ==== Run ===================================================================== */

/* The server's channel arguments: every limit a peer meets (see server.h). */
static size_t server_args(const ew_config *cfg, grpc_arg *a) {
    const moe_hparams *hp = &cfg->model->hp;
    /* the biggest valid ForwardRequest: max_rows x hidden f32 activations,
     * one row group per expert (at most ~20 bytes each) and a few scalars;
     * what the worker sends (a result, an Info reply listing a big slice)
     * may take 1 MB more */
    uint64_t msg =
        (uint64_t)cfg->max_rows * (uint64_t)hp->n_embd * 4 + (uint64_t)hp->n_expert * 32 + 4096;
    if (msg > (uint64_t)1 << 30) msg = (uint64_t)1 << 30;
    const uint64_t msg_out = msg + (1 << 20);
    const int age = cfg->conn_age_ms > 0 ? cfg->conn_age_ms : INT_MAX;
    const int idle = cfg->conn_idle_ms > 0 ? cfg->conn_idle_ms : INT_MAX;
    const struct {
        const char *key;
        int value;
    } ints[] = {
        {GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, (int)msg},
        {GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, (int)msg_out},
        /* identity only, and a compressed message is handed over as it came
         * (never inflated): a 1 MB gzip bomb had become 1 GB before any check */
        {GRPC_COMPRESSION_CHANNEL_ENABLED_ALGORITHMS_BITSET, 1 << GRPC_COMPRESS_NONE},
        {GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0},
        {GRPC_ARG_MAX_CONCURRENT_STREAMS, cfg->max_streams > 0 ? cfg->max_streams : 32},
        {GRPC_ARG_MAX_CONNECTION_IDLE_MS, idle},
        /* a connection takes new streams for conn_age_ms, then gets GOAWAY;
         * its open streams (a gateway's Forward stream) are never cut */
        {GRPC_ARG_MAX_CONNECTION_AGE_MS, age},
        {GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, INT_MAX},
        /* keepalive: probe a silent peer every minute, drop it after 20 s;
         * a peer pinging more often than every 10 s without data is struck
         * (GOAWAY after 2 strikes) */
        {GRPC_ARG_KEEPALIVE_TIME_MS, 60000},
        {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000},
        {GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000},
        {GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2},
        /* a connection that has not finished its handshake in 10 s is closed */
        {GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10000},
    };
    const size_t n = sizeof ints / sizeof ints[0];
    for (size_t i = 0; i < n; i++)
        a[i] = (grpc_arg){
            .type = GRPC_ARG_INTEGER, .key = (char *)ints[i].key, .value.integer = ints[i].value};
    return n;
}

/* Gives freed memory back to the OS once the server has been idle a while
 * after work (a burst of calls leaves the heap large otherwise: the
 * thresholds below keep up to 512 MB for reuse). */
static void maybe_trim(ew_server *s) {
    const int64_t now = moe_mono_ms();
    pthread_mutex_lock(&s->mu);
    const int dirty = s->trim_dirty && !s->jobs && now - s->last_event_ms >= TRIM_IDLE_MS;
    if (dirty) s->trim_dirty = 0;
    pthread_mutex_unlock(&s->mu);
    if (dirty) malloc_trim(0);
}

/* Waits up to ms (0: not at all) for one event and handles it; 0 if none
 * came. */
static int poll_once(ew_server *s, int ms) {
    gpr_timespec dl =
        ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN))
               : gpr_inf_past(GPR_CLOCK_MONOTONIC);
    grpc_event ev = grpc_completion_queue_next(s->cq, dl, NULL);
    if (ev.type != GRPC_OP_COMPLETE) return 0;
    pthread_mutex_lock(&s->mu);
    on_event(s, ev.tag, ev.success);
    s->last_event_ms = moe_mono_ms();
    pthread_mutex_unlock(&s->mu);
    return 1;
}

/* The second completion-queue thread. gRPC 1.51 reads and parses all a
 * connection sends inside one thread's next() for as long as data keeps
 * coming: during a burst of streams opened and reset at once (HTTP/2 rapid
 * reset) that thread yields nothing, and every new call waited in gRPC's
 * queue (13 KB each: 100k streams took 1.3 GB). This thread takes what is
 * ready every SWEEP_MS and frees those calls meanwhile (the same burst then
 * peaks at 35-75 MB). It never waits inside gRPC: a second waiting poller
 * would take events from the first and cost each message a thread wake-up
 * (measured: +20-40 us per batch); idle, the sweeps cost ~0.5% of a core. */
static void *poller_main(void *arg) {
    ew_server *s = arg;
    const struct timespec nap = {0, SWEEP_MS * 1000000L};
    while (!__atomic_load_n(&s->poller_stop, __ATOMIC_ACQUIRE))
        if (!poll_once(s, 0)) nanosleep(&nap, NULL);
    return NULL;
}

int ew_server_run(const ew_config *cfg, moe_err *err) {
    /* large messages: keep freed memory instead of mmap/munmap per message
     * (stack-notes: glibc's mmap threshold costs 3-10x throughput) */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    mallopt(M_TOP_PAD, 64 << 20);

    ew_server s = {.cfg = cfg};
    const moe_hparams *hp = &cfg->model->hp;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    int rc = moe_pool_create(&s.pool, cfg->n_threads);
    if (rc < 0) {
        rc = moe_err_set(err, rc, "cannot start %d threads", cfg->n_threads);
        goto done;
    }
    rc = moe_expert_backend_local_create(&s.experts, cfg->model, s.pool, cfg->max_rows, err);
    if (rc < 0) goto done;
    const size_t n = (size_t)cfg->max_rows * (size_t)hp->n_embd;
    s.x = malloc(n * 4);
    s.y = malloc(n * 4);
    s.expert = calloc((size_t)cfg->max_rows + 1, sizeof *s.expert);
    s.row_start = calloc((size_t)cfg->max_rows + 2, sizeof *s.row_start);
    s.expert_us = calloc((size_t)cfg->max_rows + 1, sizeof *s.expert_us);
    s.out = malloc(n * 2);
    if (!s.x || !s.y || !s.expert || !s.row_start || !s.expert_us || !s.out) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for %d rows", cfg->max_rows);
        goto done;
    }
    if (pthread_create(&s.exec, NULL, exec_main, &s) != 0) {
        rc = moe_err_set(err, MOE_ENOMEM, "cannot start the compute thread");
        goto done;
    }
    s.exec_running = 1;

    grpc_init();
    s.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_arg args[16];
    grpc_channel_args ch_args = {server_args(cfg, args), args};
    s.server = grpc_server_create(&ch_args, NULL);
    grpc_server_register_completion_queue(s.server, s.cq, NULL);
    s.m_forward = grpc_server_register_method(s.server, "/moe.v1.ExpertService/Forward", NULL,
                                              GRPC_SRM_PAYLOAD_NONE, 0);
    s.m_info = grpc_server_register_method(s.server, "/moe.v1.ExpertService/Info", NULL,
                                           GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    s.m_health = grpc_server_register_method(s.server, "/grpc.health.v1.Health/Check", NULL,
                                             GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds =
        cfg->tls ? moe_tls_server_creds(cfg->tls) : grpc_insecure_server_credentials_create();
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
    pthread_mutex_lock(&s.mu);
    for (int k = 0; k < CALL_KINDS; k++)
        for (int i = 0; i < CALLS_AHEAD; i++)
            if (request_call(&s, (call_kind)k) < 0)
                moe_log(MOE_LOG_ERROR, "expert-worker", "cannot request calls");
    pthread_mutex_unlock(&s.mu);
    /* the real port (":0" binds any free one) */
    const char *colon = strrchr(cfg->listen, ':');
    printf("listening on %.*s:%d\n", colon ? (int)(colon - cfg->listen) : 0, cfg->listen, port);
    fflush(stdout);
    if (cfg->on_listen) cfg->on_listen(cfg->on_listen_ud, port);
    ew_conncap *cap = NULL;
    if (cfg->max_conns > 0 &&
        ew_conncap_start(&cap, port, cfg->max_conns,
                         cfg->counters ? &cfg->counters->conns_open : NULL,
                         cfg->counters ? &cfg->counters->conns_cut : NULL) < 0)
        moe_log(MOE_LOG_WARN, "expert-worker", "cannot start the connection cap's thread");

    s.last_event_ms = moe_mono_ms();
    if (pthread_create(&s.poller, NULL, poller_main, &s) == 0)
        s.poller_running = 1;
    else
        moe_log(MOE_LOG_WARN, "expert-worker", "cannot start a second completion-queue thread");
    while (!*cfg->stop || (cfg->may_stop && !cfg->may_stop(cfg->on_listen_ud)))
        if (!poll_once(&s, 100)) maybe_trim(&s);
    /* stop: no new calls; the batch in compute finishes, queued ones are
     * dropped with their cancelled calls; streams are told OK or cancelled
     * (the rest runs on this thread alone) */
    if (s.poller_running) {
        __atomic_store_n(&s.poller_stop, 1, __ATOMIC_RELEASE);
        pthread_join(s.poller, NULL);
        s.poller_running = 0;
    }
    ew_conncap_stop(cap);
    static ew_tag shutdown_tag = {NULL, OP_NEW};
    grpc_server_shutdown_and_notify(s.server, s.cq, &shutdown_tag);
    grpc_server_cancel_all_calls(s.server);
    exec_stop(&s);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        if (ev.tag == &shutdown_tag) break;
        pthread_mutex_lock(&s.mu);
        on_event(&s, ev.tag, ev.success);
        pthread_mutex_unlock(&s.mu);
    }
    grpc_server_destroy(s.server);
    grpc_completion_queue_shutdown(s.cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE && ev.tag != &shutdown_tag) {
            pthread_mutex_lock(&s.mu);
            on_event(&s, ev.tag, ev.success);
            pthread_mutex_unlock(&s.mu);
        }
    }
    grpc_completion_queue_destroy(s.cq);
    grpc_shutdown();
    moe_log(MOE_LOG_INFO, "expert-worker", "stopped after %llu batches, %llu rows",
            (unsigned long long)s.n_batches, (unsigned long long)s.n_rows);
    rc = 0;
done:
    exec_stop(&s);
    free(s.x), free(s.y), free(s.out), free(s.expert), free(s.row_start), free(s.expert_us);
    moe_expert_backend_destroy(s.experts);
    moe_pool_destroy(s.pool);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return rc;
}
