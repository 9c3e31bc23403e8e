/*
 * scheduler.h - the engine thread: continuous batching over one moe_ctx.
 *
 * Every iteration builds one batch from (1) a decode row for every running
 * sequence and (2) prefill rows of admitted prompts, chunked: while
 * sequences decode, a step carries at most about as many prompt rows as
 * decode rows (prefill_chunk), so a long prompt takes several steps and the
 * running streams keep their pace; with nobody decoding a prompt gets the
 * whole max_batch_tokens. A request joins at the next step.
 * Admission: a waiting job is admitted when the policy picks it and enough
 * KV slots are free for its choices (or the policy names a running job to
 * preempt for it: see gw_policy.victim); the queue of waiting jobs is bounded
 * (a full queue is answered 503 at submit). A prompt's choices (n > 1) share
 * one prefill: the leader's slot is copied into the others'. A freed slot
 * keeps its tokens: the next prompt that starts the same way reuses them
 * (prompt_tokens_details.cached_tokens).
 *
 *     gw_sched *s;
 *     if (gw_sched_start(&s, &params, &err) < 0) ...
 *     if (gw_sched_submit(s, job, &apierr) < 0) reply(apierr.status, ...);
 *     ... gw_sched_cancel_all / gw_sched_stop(s) at shutdown ...
 *
 * A job whose client went away (job->cancelled) or that passed its deadline
 * is ended at the next step and its slots are free again.
 */
#ifndef GW_SCHEDULER_H
#define GW_SCHEDULER_H

#include <stdint.h>

#include "job.h"
#include "usage.h"
#include "moe/model.h"
#include "svc/metrics.h"

/* Which waiting job is admitted next, and in which order admitted prompts
 * get a step's prefill rows: fair.h gives a fair share between tenants;
 * the default is first come, first served. Every hook runs on the engine
 * thread; all but pick are optional. */
typedef struct gw_policy {
    const char *name;
    void *state;
    /* Index in waiting[0..n) (arrival order) of the job to admit next, or -1
     * to admit nothing now. */
    int (*pick)(void *state, gw_job *const *waiting, int n);
    void (*on_wait)(void *state, gw_job *j);            /* j joined the waiting jobs */
    void (*on_admit)(void *state, gw_job *j);           /* ... was admitted */
    void (*on_drop)(void *state, gw_job *j);            /* ... left them unadmitted */
    void (*on_end)(void *state, gw_job *j, int tokens); /* an admitted j ended */
    /* rows the engine just served j: prompt rows prefilled, tokens generated */
    void (*on_served)(void *state, gw_job *j, int prompt_rows, int gen_tokens);
    /* admitted prompts are prefilled lowest key first (NULL: admission order) */
    double (*prefill_key)(void *state, const gw_job *j);
    /* 1: j's prompt goes whole into the next step (ahead of the others',
     * within max_batch_tokens) instead of a chunk within the step's budget */
    int (*prefill_whole)(void *state, const gw_job *j, int max_seqs);
    /* want (picked) finds no free slot: the index in running[0..n) of a job
     * to preempt for it, or -1 for none. A preempted job gives up its slots
     * (their caches stay for reuse), waits again in its arrival order, and
     * when admitted again prefills its tokens so far and goes on where it
     * was: its stream pauses, nothing is lost. */
    int (*victim)(void *state, gw_job *const *running, int n, const gw_job *want, int max_seqs);
    void (*on_preempt)(void *state, gw_job *j); /* j went back to waiting */
} gw_policy;

/* First come, first served. */
extern const gw_policy gw_policy_fifo;

/* The gateway's metric families the scheduler updates (NULL members are
 * skipped). */
typedef struct gw_sched_metrics {
    moe_metric *queue_depth;   /* gauge */
    moe_metric *running;       /* gauge: sequences generating or prefilling */
    moe_metric *slots_used;    /* gauge: KV slots held */
    moe_metric *batch_rows;    /* histogram: rows per engine step */
    moe_metric *ttft;          /* histogram, seconds */
    moe_metric *itl;           /* histogram, seconds */
    moe_metric *e2e;           /* histogram, seconds */
    moe_metric *prompt_tokens; /* counter */
    moe_metric *gen_tokens;    /* counter */
    moe_metric *cached_tokens; /* counter */
    moe_metric *ended;         /* counter {reason}: stop|length|cancelled|deadline|error */
    moe_metric *step_seconds;  /* histogram: one engine step */
    moe_metric *preemptions;   /* counter: jobs preempted for another tenant */
    moe_metric *recomputed;    /* counter: tokens they prefilled again to go on */
} gw_sched_metrics;

typedef struct gw_sched_params {
    moe_ctx *ctx;            /* borrowed; n_slots >= max_seqs */
    const moe_vocab *vocab;  /* borrowed */
    int n_vocab;             /* the model's logit rows */
    int max_seqs;            /* sequences at once (<= the context's slots) */
    int max_queue;           /* waiting jobs; more are refused with 503 */
    int max_batch_tokens;    /* rows per step (decode + prefill) */
    int chunked_prefill;     /* 0: a prompt is prefilled whole in one step */
    int prefill_chunk;       /* prompt rows per step beside decode rows (0: auto,
                                max(32, 3 x decode rows)) */
    int64_t timeout_ms;      /* per job, from arrival (0: none) */
    int log_prompts;         /* the "request ended" line shows the prompt's text */
    const gw_policy *policy; /* NULL: FIFO */
    gw_usage *usage;         /* per-tenant accounting (usage.h; NULL: none); the
                              * context's on_route must feed the same one */
    gw_sched_metrics metrics;
} gw_sched_params;

typedef struct gw_sched gw_sched;

/* Starts the engine thread. 0, or MOE_E* with err. */
int gw_sched_start(gw_sched **out, const gw_sched_params *p, moe_err *err);

/* Queues j (takes a reference; the arrival time and deadline are set here).
 * 0, or -1 with *e: 503 when the queue is full or the scheduler stops. */
int gw_sched_submit(gw_sched *s, gw_job *j, gw_api_error *e);

/* Wakes the engine thread (a job was cancelled). Any thread. */
void gw_sched_poke(gw_sched *s);

typedef struct gw_sched_stats {
    int waiting, running, slots_used;
    uint64_t steps, jobs_done;
    int last_decode_failed; /* the last engine step failed (experts unavailable) */
    int64_t last_fail_ms;   /* when a step last failed (moe_mono_ms; 0: never) */
} gw_sched_stats;
void gw_sched_get_stats(gw_sched *s, gw_sched_stats *out);

/* Ends every job with 503 "the server is shutting down" and stops the
 * thread; later submits get 503. s stays valid (the HTTP side may still
 * call it) until gw_sched_free. */
void gw_sched_stop(gw_sched *s);
/* Frees a stopped scheduler (after the HTTP side is gone). NULL is allowed. */
void gw_sched_free(gw_sched *s);

#endif
