/*
 * job.h - one API request on its way through the gateway: its parsed
 * parameters, a choice (a generated sequence) per prompt x n, and what goes
 * back to the client. Shared by the HTTP thread (http.c), which creates it
 * and sends its bytes, and the engine thread (scheduler.c), which runs its
 * choices and appends output with the gw_job_emit_* functions.
 *
 * Ownership: reference counted. The HTTP side holds one reference while its
 * connection lives (and the streaming response one more); the scheduler one
 * from gw_sched_submit until it has emitted the job's end. The last
 * gw_job_unref frees it.
 *
 * Threads: fields under "mu" are shared; the rest of the output state is
 * the engine thread's until the job is done, then the HTTP thread's.
 * cancelled is set by the HTTP side when its client goes away, and with
 * cancel_asked by DELETE /v1/requests/{id} (requests.h).
 */
#ifndef GW_JOB_H
#define GW_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "api.h"
#include "mesh/tenant.h"
#include "moe/generate.h"
#include "svc/strbuf.h"

typedef struct gw_choice {
    moe_gen_seq *seq;  /* NULL until the job is admitted (gw_job_start) */
    uint64_t seed;     /* its sampler's seed */
    int index;         /* the OpenAI choice index: prompt * n + j */
    int prompt;        /* index in req.prompts */
    int leader;        /* 1: prefills the prompt; else copies the leader's slot */
    int leader_idx;    /* index in ch[] of the choice that prefills this prompt */
    int slot;          /* KV slot, -1 when none */
    int n_prefilled;   /* prompt tokens in the slot (cached ones included) */
    int resume;        /* preempted: its tokens so far are prefilled again before
                        * it decodes on (n_prefilled counts them) */
    int started;       /* stream: the first chunk (role) was sent */
    int64_t t_last_us; /* when its last token was emitted (inter-token latency) */
    moe_gen_finish finish;
    /* what the final (non-streamed) response needs */
    moe_buf text;    /* echo + generated text */
    moe_buf lp;      /* chat: logprobs content items; completions: "tokens" items */
    moe_buf lp_vals; /* completions: token_logprobs items */
    moe_buf lp_top;  /* completions: top_logprobs items */
    moe_buf lp_off;  /* completions: text_offset items */
    int n_lp;        /* logprob entries so far */
    long text_off;   /* completions: bytes of text so far (text_offset) */
} gw_choice;

/* How a job ended, for its on_end hook. */
typedef enum gw_job_end {
    GW_JOB_END_COMPLETED, /* every choice finished (gw_job_emit_end) */
    GW_JOB_END_FAILED,    /* an error (gw_job_emit_error) */
    GW_JOB_END_CANCELLED, /* its client went away or asked (cancelled set) */
} gw_job_end;

typedef struct gw_job gw_job;
struct gw_job {
    gw_api_req req; /* owned */
    gw_choice *ch;  /* (n_ch) = req.n_prompts x req.n */
    int n_ch;
    char id[48];
    char tenant[MOE_TENANT_NAME_MAX + 1]; /* the caller ("" without API keys) */
    int64_t created;                      /* unix seconds */
    atomic_int refs;
    atomic_int cancelled;     /* the client went away, or cancel_asked */
    atomic_int cancel_asked;  /* DELETE /v1/requests/{id}: the job ends cleanly (its unfinished
                               * choices with finish_reason "cancelled", then usage and [DONE];
                               * a waiting client gets the object so far) instead of an error */
    char req_id[40];          /* its x-request-id ("" without one; requests.h) */
    _Atomic int64_t admit_us; /* mono us it was admitted (0: queued); set by gw_job_start */
    /* (optional) called once at the job's end, by gw_job_emit_end / _error before anything
     * else (before done): requests.c's record. Set before submit. */
    void (*on_end)(gw_job *j, gw_job_end how);
    void *on_end_ud;
    int reg_idx; /* its record in on_end_ud's registry (under that registry's mutex) */

    pthread_mutex_t mu;
    /* ---- under mu ---- */
    moe_buf out; /* stream: SSE bytes not yet sent start at out_sent */
    size_t out_sent;
    int done;   /* the scheduler emitted the end (response complete) */
    int failed; /* done with an error: err */
    gw_api_error err;
    int suspended;           /* the HTTP side waits for a wake */
    void (*wake)(gw_job *j); /* the HTTP side's resume, called under mu when suspended */
    void *conn;              /* the HTTP side's connection, NULL once it is gone */
    int fd;                  /* its socket, -1 when unknown (peeked by gw_job_client_gone) */

    /* ---- engine thread ---- */
    int64_t t_arrive_us, t_admit_us, t_first_us, deadline_us;
    int admitted;
    int started;   /* its sequences exist (gw_job_start ran) */
    int preempted; /* times it gave its slots up to another tenant */
    int prompt_tokens, cached_tokens;
    int n_done;        /* choices finished */
    gw_job *next;      /* scheduler queues */
    void *policy_data; /* for the scheduling policy (tenants) */

    /* ---- set by the HTTP side before submit ---- */
    double weight;         /* its tenant's fair-share weight (> 0; 1 by default) */
    int priority;          /* its class: higher is served first (0 by default) */
    int usage_idx;         /* engine thread: its tenant in the usage accounting (-1: none) */
    atomic_int lim_tokens; /* tokens generated so far: the engine adds, limiter.c reads */
};

/* A job for a parsed request (takes ownership of *req, which is zeroed):
 * its choices with their seeds (the request's seed + the choice index, or
 * drawn from rng), an id. One reference. 0, or -1 with *e (503 out of
 * memory). */
int gw_job_create(gw_job **out, gw_api_req *req, uint64_t *rng, gw_api_error *e);
/* Creates the choices' sequences (their O(n_vocab) sampler state): called
 * when the job is admitted, so that queued jobs hold only their prompts.
 * 0, or -1 with *e (503 out of memory, 400 from moe_gen_seq_create). */
int gw_job_start(gw_job *j, const moe_vocab *v, int n_vocab, gw_api_error *e);
void gw_job_ref(gw_job *j);
void gw_job_unref(gw_job *j);

/* ---- engine thread: output --------------------------------------------- */

/* One step of choice c (from moe_gen_seq_step): text, logprobs, and the
 * choice's finish when st->finish is set. */
void gw_job_emit_step(gw_job *j, gw_choice *c, const moe_gen_step *st);
/* Every choice finished: the stream's usage chunk and [DONE]; done = 1.
 * Both emitters call j->on_end first. */
void gw_job_emit_end(gw_job *j);
/* Ends the job with an error (status, message): a stream gets an error
 * event and [DONE], a waiting client the error object; done = 1. With
 * cancel_asked, the end is clean instead: a stream gets a chunk with
 * finish_reason "cancelled" for each unfinished choice, the usage chunk
 * (include_usage) and [DONE]; a waiting client the object so far. */
void gw_job_emit_error(gw_job *j, const gw_api_error *e);

/* 1 if the client closed its connection while the job waits for output (a
 * suspended connection is not watched by the HTTP library): a peek at its
 * socket sees the end of the stream. Cheap (one recv(MSG_PEEK)); any thread. */
int gw_job_client_gone(gw_job *j);

/* ---- HTTP thread: the response of a finished, non-streamed job -------- */

/* The chat.completion or text_completion object (with usage) into b. */
void gw_job_render_final(gw_job *j, moe_buf *b);

/* usage: prompt, completion and total tokens, cached tokens. */
int gw_job_completion_tokens(const gw_job *j);

#endif
