/* remote_info.c - a worker's Info (which experts it holds), for the remote
 * backend's fixed worker list. */
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "remote_internal.h"

static gpr_timespec in_ms(int ms) {
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

int moe__remote_read_info(remote_be *b, rworker *w, void (*cb)(void *ud, int l, int e), void *ud,
                          moe_err *err) {
    const moe_hparams *hp = &b->m->hp;
    grpc_call *call = grpc_channel_create_registered_call(
        w->ch, NULL, GRPC_PROPAGATE_DEFAULTS, b->cq, w->m_info, in_ms(b->p.deadline_ms), NULL);
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
            grpc_event ev =
                grpc_completion_queue_next(b->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE) {
                ((rtag *)ev.tag)->w->pending--;
                if (ev.tag == &w->t_info) break;
            }
        }
    }
    Moe__V1__InfoResponse *r = NULL;
    if (rc == 0 && st != GRPC_STATUS_OK) {
        char *d = grpc_slice_to_c_string(details);
        char hint[200];
        moe__remote_hint(b, w, (int)st, d, hint, sizeof hint);
        rc = moe_err_set(err, MOE_EUNAVAIL, "worker %s: Info failed (status %d: %s)%s", w->addr,
                         (int)st, d, hint);
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
            cb(ud, (int)le->layer, (int)le->experts[j]);
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

void moe__remote_hint(const remote_be *b, const rworker *w, int status, const char *d, char *out,
                      size_t cap) {
    *out = 0;
    if (status != GRPC_STATUS_UNAVAILABLE || !d) return;
    const int tlsish = strstr(d, "Tls") || strstr(d, "TLS") || strstr(d, "andshake") ||
                       strstr(d, "erification") || strstr(d, "Socket closed");
    if (b->creds && tlsish)
        snprintf(out, cap,
                 "; mutual TLS: the worker's certificate must name '%s' and chain to --tls-ca, "
                 "and the worker must trust ours",
                 w->name ? w->name : w->addr);
    else if (!b->creds && strstr(d, "Socket closed"))
        snprintf(out, cap, "; if the worker uses mutual TLS, give --tls-cert, --tls-key, --tls-ca");
}
