/* remote_internal.h - the remote backend's state, shared by remote.c (batches,
 * replicas, failover), remote_info.c (reading a worker's Info) and
 * remote_stats.c (what other threads may read: counters, coverage).
 *
 * Threads: the compute thread (the one calling submit/wait) owns everything
 * here. Other threads read only what pub_mu guards: the worker list (w, n:
 * grown under it; a worker's addr never changes), the placement pl (replaced
 * under it), each worker's pub and the backend's pub_st (copied from obs and
 * st under it once per wait). The compute thread reads those without the
 * mutex (it is their only writer) and takes it only to change them. */
#ifndef MOE_REMOTE_INTERNAL_H
#define MOE_REMOTE_INTERNAL_H

#include <pthread.h>

#include <grpc/grpc.h>

#include "mesh/remote.h"
#include "mesh/tls.h"
#include "remote_ctl.h"
#include "mesh/wire.h"

typedef enum rop { R_START, R_SEND, R_RECV, R_STATUS, R_INFO } rop;

/* A worker's counters (moe_remote_worker_stats without the address). */
typedef struct robs {
    uint64_t messages, rows, failures, results;
    double rtt_ms_sum;
    uint64_t rtt_le[MOE_REMOTE_RTT_BUCKETS];
    int64_t down_until_ms; /* in a down window until then; 0 once it served again */
} robs;

typedef struct rworker rworker;
typedef struct rtag {
    rworker *w;
    rop op;
} rtag;

struct rworker {
    char *addr;
    char *name; /* the id its certificate must name (NULL: the host of addr) */
    grpc_channel *ch;
    void *m_forward, *m_info;
    grpc_call *call; /* the Forward stream; NULL when closed */
    int open;        /* stream usable */
    int pending;     /* batches started on call, not completed */
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status;
    grpc_slice details;
    grpc_byte_buffer *send, *recv;
    int64_t down_until_ms; /* failed recently: not chosen before this */
    int64_t failed_ms;     /* when it last failed */
    int down_ms;           /* the current backoff (doubles while it keeps failing) */
    int was_down;          /* logged as failed; logged again when it serves */
    /* this batch */
    int busy;   /* a message in flight */
    int failed; /* failed or refused during this batch: not chosen again */
    int64_t sent_ms;
    uint64_t id;          /* the id the in-flight message's result must carry */
    int n_rows, n_groups; /* the in-flight message */
    int32_t *msg_groups;  /* (n_expert) indices into the work's groups */
    int n_queued;
    int32_t *queued;           /* (n_expert) groups waiting for this worker */
    int64_t rows_in_flight;    /* rows assigned to this worker and not answered */
    double us_answer;          /* its answers' round trip, moving average (0: none yet) */
    int64_t us_answer_ms;      /* when us_answer last had a sample */
    double us_row;             /* the same per row of a message (moving average) */
    int32_t *rowmap;           /* (max_rows) wire row -> row of the work */
    Moe__V1__RowGroup *groups; /* (n_expert) */
    Moe__V1__RowGroup **gp;
    uint8_t *act; /* wire activations, grown on demand */
    size_t act_cap;
    uint8_t *msg; /* packed request */
    size_t msg_cap;
    int64_t sent_us; /* when the in-flight message was handed to gRPC (its RTT's start) */
    robs obs;        /* compute thread's counters */
    robs pub;        /* their copy other threads read (under pub_mu) */
    int dirty;       /* obs changed since the last publish */
    rtag t_start, t_send, t_recv, t_status, t_info;
};

/* Which workers hold each (layer, expert): rep[off[i] .. off[i+1]). */
typedef struct rplace {
    uint64_t epoch;
    uint32_t *off; /* (n_layer * n_expert + 1) */
    int32_t *rep;  /* worker indices into remote_be.w */
} rplace;

typedef struct remote_be {
    moe_expert_backend be;
    const moe_model *m;
    moe_remote_params p;
    grpc_completion_queue *cq;
    grpc_channel_args ch_args;
    grpc_arg args[2];
    grpc_channel_credentials *creds; /* mutual TLS (NULL: plaintext, loopback or --insecure) */
    moe_tls_opts tls;
    rworker **w;
    int n, cap;
    rplace pl;
    moe__rctl *ctl; /* NULL with a fixed worker list */
    /* the batch */
    const moe_expert_work *work;
    int32_t *owner; /* (n_expert) worker of each group, -1 = none now */
    uint8_t *done;  /* (n_expert) */
    int32_t *moved; /* (n_expert) scratch: a failed worker's groups */
    int n_todo;
    unsigned rr; /* rotates ties between equally loaded replicas */
    uint64_t next_id;
    int status;
    moe_err err;
    int64_t fail_us;    /* the batch's first worker failure (0: none) */
    char last_why[400]; /* the batch's last worker failure, for the error */
    moe_remote_stats st;
    /* what other threads read (see the top) */
    pthread_mutex_t pub_mu;
    moe_remote_stats pub_st;
    moe_remote_rtt_fn rtt_fn; /* compute thread: called for each result */
    void *rtt_ud;
} remote_be;

/* Info of worker i (blocking, with the deadline); calls cb(ud, layer,
 * expert) for every pair it holds after checking the model's shape. */
int moe__remote_read_info(remote_be *b, rworker *w, void (*cb)(void *ud, int l, int e), void *ud,
                          moe_err *err);

/* A hint to append to a failure of w with gRPC status and details d (""
 * when none applies): what mutual TLS needs when a handshake failed. */
void moe__remote_hint(const remote_be *b, const rworker *w, int status, const char *d, char *out,
                      size_t cap);

/* remote_stats.c. A result came from w (busy with a message): counts its
 * round trip and calls the hook. */
/* remote_choice.c: the replica choice and the suspect rule. */
static inline int moe__remote_group_rows(const remote_be *b, int g) {
    return b->work->row_start[g + 1] - b->work->row_start[g];
}
/* Queues group g on its least loaded live replica (owner -1: none left). */
void moe__remote_assign(remote_be *b, int g);
/* An answer arrived at t_answer (us): updates w's answer times. */
void moe__remote_note_answer(rworker *w, int64_t t_answer);
/* When busy w becomes suspect, in ms after sending (0: only the deadline). */
int64_t moe__remote_suspect_after_ms(const remote_be *b, const rworker *w);
/* 1 if every group in flight on w has another live replica. */
int moe__remote_replicas_left(const remote_be *b, const rworker *w, int64_t now);

void moe__remote_note_result(remote_be *b, rworker *w);
/* A message of w failed (counted once per failure). */
void moe__remote_note_failure(rworker *w);
/* Copies st and the dirty workers' obs to what other threads read (takes
 * pub_mu). The compute thread, once per wait. */
void moe__remote_publish(remote_be *b);
/* Coverage of the placement in use (d NULL) or of document d (a placement
 * not taken yet), with workers live by their published down windows at
 * now_ms. The caller holds pub_mu. 0 or MOE_ENOMEM (out zeroed). */
int moe__remote_cover(const remote_be *b, const moe_pldoc *d, int64_t now_ms,
                      moe_remote_coverage *out);

#endif
