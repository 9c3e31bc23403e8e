/*
 * sched_internal.h - the scheduler's state, shared by scheduler.c (the
 * engine thread, admission, preemption, ending jobs) and sched_step.c (one
 * engine step). Engine thread only, except the members under mu.
 */
#ifndef GW_SCHED_INTERNAL_H
#define GW_SCHED_INTERNAL_H

#include <pthread.h>

#include "scheduler.h"

/* A flagged (logits) row of the batch: whose logits they are. */
typedef struct row_ref {
    gw_job *j;
    int ch;      /* choice index in j->ch */
    int prefill; /* 1: the last row of a prompt (steps the leader and its followers) */
} row_ref;

struct gw_sched {
    gw_sched_params p;
    moe_ctx *c;
    const gw_policy *pol;
    int n_slots, n_ctx;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* ---- under mu ---- */
    gw_job *in_head, *in_tail; /* submitted, not yet taken by the engine */
    int queued;                /* submitted and not yet admitted or ended */
    int stopping;
    gw_sched_stats st;
    /* ---- engine thread ---- */
    gw_job **waiting; /* (max_queue) arrival order */
    int n_waiting;
    gw_job **running; /* (max_seqs) admitted, not ended */
    int *order;       /* (max_seqs) running indices in prefill order */
    double *key;      /* (max_seqs) each running job's prefill key, this step */
    char *whole;      /* (max_seqs) ... 1: its prompt goes whole into this step */
    int n_running;
    unsigned char *slot_busy; /* (n_slots) SLOT_* */
    int32_t *slot_tok;        /* (n_slots, n_ctx) the tokens each slot's cache holds */
    int *slot_tok_len;        /* (n_slots) */
    const gw_job **slot_kept; /* (n_slots) the preempted job a SLOT_KEPT slot is kept for */
    int slots_used;
    int32_t *b_tok, *b_pos, *b_slot;
    int32_t *b_tenant; /* each row's usage tenant (usage.h) */
    int8_t *b_logits;
    row_ref *refs;
    int b_cap;
    int last_failed;
    int64_t last_fail_ms;
    /* step costs, for the prompt chunk (prefill_budget): moving averages of
     * a decode-only step's time and of one prompt row's added time (us; 0:
     * not measured yet) */
    double t_decode_us, t_row_us;
    int64_t last_probe_us;
};

/* A KV slot's state. A kept slot is free but holds a preempted job's
 * cache: other prompts take it only when no other slot is free. */
enum { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_KEPT = 2 };

static inline double secs(int64_t us) {
    return (double)us / 1e6;
}

/* sched_step.c */
int gws_grow_batch(gw_sched *s, int need); /* batch arrays for need rows: 0 or MOE_ENOMEM */
int gws_step(gw_sched *s); /* one step: rows decoded (0: nothing to do), -1: out of memory */

/* scheduler.c */
void gws_after_step(gw_sched *s, gw_job *j, gw_choice *c, const moe_gen_step *st, int64_t now);
void gws_end_if_done(gw_sched *s, gw_job *j, int64_t now);
void gws_fail_running(gw_sched *s, gw_job *j, const gw_api_error *e, const char *reason);

#endif
