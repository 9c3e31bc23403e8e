/* scheduler.c - the engine thread: admission by free KV slots, prefix
 * reuse, preemption, ending jobs (see scheduler.h; one step's batch is in
 * sched_step.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched_internal.h"
#include "svc/clock.h"
#include "svc/log.h"

/* ==== Policy ============================================================ */

static int fifo_pick(void *state, gw_job *const *waiting, int n) {
    (void)state, (void)waiting;
    return n > 0 ? 0 : -1;
}

const gw_policy gw_policy_fifo = {.name = "fifo", .pick = fifo_pick};

/* ==== Slots ============================================================= */

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* May slot k be taken? Free, and (unless any) not kept for a preempted job. */
static int can_take(const gw_sched *s, int k, int any) {
    return s->slot_busy[k] == SLOT_FREE || (any && s->slot_busy[k] == SLOT_KEPT);
}

/* A free slot for a prompt's leader: the one whose cached tokens share the
 * longest prefix with the prompt (at most n - 1 reused: the last prompt
 * token is decoded for its logits). *reuse gets that length. Slots kept
 * for preempted jobs are taken last (any: they count like the others; a
 * preempted job coming back finds its own that way). */
static int take_slot_for_prompt(gw_sched *s, const int32_t *ids, int n, int *reuse, int any) {
    int best = -1, best_len = -1;
    for (int k = 0; k < s->n_slots; k++) {
        if (!can_take(s, k, any)) continue;
        int l = common_prefix(s->slot_tok + (size_t)k * (size_t)s->n_ctx, s->slot_tok_len[k], ids,
                              n - 1);
        /* ties: the slot with the least cached (keep long caches for later) */
        if (l > best_len || (l == best_len && s->slot_tok_len[k] < s->slot_tok_len[best])) {
            best = k;
            best_len = l;
        }
    }
    if (best < 0) return any ? -1 : take_slot_for_prompt(s, ids, n, reuse, 1);
    s->slot_busy[best] = SLOT_BUSY;
    s->slots_used++;
    moe_ctx_slot_truncate(s->c, best, best_len);
    s->slot_tok_len[best] = best_len;
    *reuse = best_len;
    return best;
}

/* A free slot whose cache is worth the least (followers overwrite it). */
static int take_slot_any(gw_sched *s, int any) {
    int best = -1;
    for (int k = 0; k < s->n_slots; k++)
        if (can_take(s, k, any) && (best < 0 || s->slot_tok_len[k] < s->slot_tok_len[best]))
            best = k;
    if (best < 0) return any ? -1 : take_slot_any(s, 1);
    s->slot_busy[best] = SLOT_BUSY;
    s->slots_used++;
    moe_ctx_slot_clear(s->c, best);
    s->slot_tok_len[best] = 0;
    return best;
}

/* Frees c's slot, remembering the tokens its cache holds (state: SLOT_FREE,
 * or SLOT_KEPT while c's job waits after a preemption). */
static void release_slot_as(gw_sched *s, gw_choice *c, unsigned char state) {
    if (c->slot < 0) return;
    const int k = c->slot;
    int n = moe_ctx_slot_len(s->c, k), nt = 0;
    const int32_t *toks = moe_gen_seq_tokens(c->seq, &nt);
    if (n > nt) n = nt; /* never: the cache holds a prefix of the tokens */
    if (n < 0) n = 0;
    memcpy(s->slot_tok + (size_t)k * (size_t)s->n_ctx, toks, (size_t)n * sizeof *toks);
    s->slot_tok_len[k] = n;
    moe_ctx_slot_truncate(s->c, k, n);
    s->slot_busy[k] = state;
    s->slots_used--;
    c->slot = -1;
}

static void release_slot(gw_sched *s, gw_choice *c) {
    release_slot_as(s, c, SLOT_FREE);
}

/* ==== Ending jobs ======================================================= */

/* A logged prompt's text is cut here (--log-prompts). */
#define LOG_PROMPT_MAX 2048

/* One log line per ended job (what happened to it) and the ended metric. */
static void log_end(gw_sched *s, gw_job *j, const char *reason) {
    moe_metric_inc(s->p.metrics.ended, (const char *[]){reason}, 1);
    const int64_t now = moe_mono_us();
    char n_ch[16], prompt[16], cached[16], gen[16], ttft[32], total[32], queue[32];
    snprintf(n_ch, sizeof n_ch, "%d", j->n_ch);
    snprintf(prompt, sizeof prompt, "%d", j->prompt_tokens);
    snprintf(cached, sizeof cached, "%d", j->cached_tokens);
    snprintf(gen, sizeof gen, "%d", gw_job_completion_tokens(j));
    snprintf(ttft, sizeof ttft, "%.1f",
             j->t_first_us ? (double)(j->t_first_us - j->t_arrive_us) / 1e3 : -1.0);
    snprintf(total, sizeof total, "%.1f", (double)(now - j->t_arrive_us) / 1e3);
    snprintf(queue, sizeof queue, "%.1f",
             (double)((j->t_admit_us ? j->t_admit_us : now) - j->t_arrive_us) / 1e3);
    moe_log_kv kv[] = {{"id", j->id},
                       {"tenant", j->tenant},
                       {"route", j->req.route == GW_ROUTE_CHAT ? "chat" : "completions"},
                       {"end", reason},
                       {"choices", n_ch},
                       {"prompt_tokens", prompt},
                       {"cached_tokens", cached},
                       {"completion_tokens", gen},
                       {"queue_ms", queue},
                       {"ttft_ms", ttft},
                       {"total_ms", total},
                       {"stream", j->req.stream ? "true" : "false"},
                       {"request_id", j->req_id}, /* its x-request-id */
                       {"prompt", NULL}};
    size_t n_kv = sizeof kv / sizeof kv[0] - 1;
    /* the prompt's text only with --log-prompts (the first prompt, cut at
     * LOG_PROMPT_MAX bytes) */
    char text[LOG_PROMPT_MAX + 4];
    if (s->p.log_prompts && j->req.n_prompts > 0 && s->p.vocab) {
        const gw_prompt *pr = &j->req.prompts[0];
        long n = moe_detokenize(s->p.vocab, pr->ids, pr->n, 0, text, LOG_PROMPT_MAX);
        if (n < 0) n = 0;
        if (n > LOG_PROMPT_MAX) { /* text[0..LOG_PROMPT_MAX) was written */
            n = LOG_PROMPT_MAX - 8;
            while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80) n--; /* whole characters */
            memcpy(text + n, "...", 3), n += 3;
        }
        text[n] = 0;
        kv[n_kv++].val = text;
    }
    /* without API keys there is no tenant: its field is left out */
    const moe_log_kv *kvs = kv;
    moe_log_kv without[sizeof kv / sizeof kv[0]];
    if (!j->tenant[0]) {
        without[0] = kv[0];
        memcpy(without + 1, kv + 2, (n_kv - 2) * sizeof *kv);
        kvs = without;
        n_kv--;
    }
    moe_log_fields(!strcmp(reason, "error") ? MOE_LOG_WARN : MOE_LOG_INFO, "gateway", kvs, n_kv,
                   "request ended");
}

/* Removes j from the running list, frees its slots, tells the policy, drops
 * the scheduler's reference. The caller emitted the job's end. */
static void drop_running(gw_sched *s, gw_job *j) {
    for (int i = 0; i < j->n_ch; i++) release_slot(s, &j->ch[i]);
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == j) {
            memmove(&s->running[i], &s->running[i + 1],
                    (size_t)(s->n_running - i - 1) * sizeof *s->running);
            s->n_running--;
            break;
        }
    if (s->pol->on_end) s->pol->on_end(s->pol->state, j, gw_job_completion_tokens(j));
    if (s->p.usage)
        gw_usage_add_request(s->p.usage, j->usage_idx, j->prompt_tokens,
                             gw_job_completion_tokens(j));
    pthread_mutex_lock(&s->mu);
    s->st.jobs_done++;
    pthread_mutex_unlock(&s->mu);
    gw_job_unref(j);
}

/* Ends every running choice of j (cancel) without output. */
static void cancel_choices(gw_job *j) {
    for (int i = 0; i < j->n_ch; i++) {
        gw_choice *c = &j->ch[i];
        if (c->seq && moe_gen_seq_finish(c->seq) == MOE_GEN_FINISH_NONE)
            moe_gen_seq_cancel(c->seq, NULL);
    }
}

void gws_fail_running(gw_sched *s, gw_job *j, const gw_api_error *e, const char *reason) {
    cancel_choices(j);
    gw_job_emit_error(j, e);
    log_end(s, j, reason);
    drop_running(s, j);
}

/* Removes and returns waiting job k (the queue has room for one more). */
static gw_job *take_waiting(gw_sched *s, int k) {
    gw_job *j = s->waiting[k];
    memmove(&s->waiting[k], &s->waiting[k + 1],
            (size_t)(s->n_waiting - k - 1) * sizeof *s->waiting);
    s->n_waiting--;
    pthread_mutex_lock(&s->mu);
    s->queued--;
    pthread_mutex_unlock(&s->mu);
    return j;
}

/* Takes j out of the waiting list (index k), ending it with e (or quietly
 * if e is NULL: the client is gone). */
static void drop_waiting(gw_sched *s, int k, const gw_api_error *e, const char *reason) {
    gw_job *j = take_waiting(s, k);
    if (j->preempted) /* it will not come back for the slots kept for it */
        for (int i = 0; i < s->n_slots; i++)
            if (s->slot_busy[i] == SLOT_KEPT && s->slot_kept[i] == j) s->slot_busy[i] = SLOT_FREE;
    if (s->pol->on_drop) s->pol->on_drop(s->pol->state, j);
    cancel_choices(j);
    gw_api_error gone;
    if (!e) {
        gw_api_error_set(&gone, 499, "", "the client closed the connection");
        e = &gone;
    }
    gw_job_emit_error(j, e);
    log_end(s, j, reason);
    gw_job_unref(j);
}

/* ==== Steps ============================================================= */

/* A choice's step result: output, metrics, and its end. */
void gws_after_step(gw_sched *s, gw_job *j, gw_choice *c, const moe_gen_step *st, int64_t now) {
    if (st->token >= 0) {
        if (s->pol->on_served) s->pol->on_served(s->pol->state, j, 0, 1);
        atomic_fetch_add_explicit(&j->lim_tokens, 1, memory_order_relaxed); /* limiter.c */
        if (!j->t_first_us) {
            j->t_first_us = now;
            moe_metric_observe(s->p.metrics.ttft, NULL, secs(now - j->t_arrive_us));
        }
        if (c->t_last_us) moe_metric_observe(s->p.metrics.itl, NULL, secs(now - c->t_last_us));
        c->t_last_us = now;
    }
    gw_job_emit_step(j, c, st);
    if (st->finish != MOE_GEN_FINISH_NONE) {
        release_slot(s, c);
        j->n_done++;
    }
}

/* The end of a job all of whose choices finished. */
void gws_end_if_done(gw_sched *s, gw_job *j, int64_t now) {
    if (j->n_done < j->n_ch) return;
    int failed = 0;
    for (int i = 0; i < j->n_ch; i++) failed |= j->ch[i].finish == MOE_GEN_FINISH_ERROR;
    const int gen = gw_job_completion_tokens(j);
    moe_metric_inc(s->p.metrics.gen_tokens, NULL, gen);
    if (failed) {
        gw_api_error e;
        gw_api_error_set(&e, 500, "",
                         "sampling failed: the model produced non-finite logits or every token "
                         "was excluded; try other sampling parameters");
        gw_job_emit_error(j, &e);
        log_end(s, j, "error");
    } else {
        gw_job_emit_end(j);
        moe_metric_observe(s->p.metrics.e2e, NULL, secs(now - j->t_arrive_us));
        int length = 0;
        for (int i = 0; i < j->n_ch; i++)
            length |= j->ch[i].finish == MOE_GEN_FINISH_MAX_TOKENS ||
                      j->ch[i].finish == MOE_GEN_FINISH_CONTEXT;
        log_end(s, j, length ? "length" : "stop");
    }
    drop_running(s, j);
}

/* Admits j: slots for its choices (leaders reuse cached prefixes). */
static void admit(gw_sched *s, gw_job *j, int64_t now) {
    if (j->started) { /* again, after a preemption: each choice's tokens so far */
        for (int i = 0; i < j->n_ch; i++) {
            gw_choice *c = &j->ch[i];
            if (moe_gen_seq_finish(c->seq) != MOE_GEN_FINISH_NONE) continue;
            int n = 0, reuse = 0;
            const int32_t *toks = moe_gen_seq_tokens(c->seq, &n);
            c->slot = take_slot_for_prompt(s, toks, n, &reuse, 1);
            c->n_prefilled = reuse;
            c->resume = reuse < n - 1; /* its cache may have been kept whole */
        }
        s->running[s->n_running++] = j;
        if (s->pol->on_admit) s->pol->on_admit(s->pol->state, j);
        return;
    }
    j->admitted = 1;
    j->started = 1;
    j->usage_idx = s->p.usage ? gw_usage_tenant(s->p.usage, j->tenant) : -1;
    j->t_admit_us = now;
    gw_api_error e;
    if (gw_job_start(j, s->p.vocab, s->p.n_vocab, &e) < 0) {
        cancel_choices(j);
        gw_job_emit_error(j, &e);
        log_end(s, j, "error");
        gw_job_unref(j);
        return;
    }
    for (int i = 0; i < j->n_ch; i++) {
        gw_choice *c = &j->ch[i];
        if (moe_gen_seq_finish(c->seq) != MOE_GEN_FINISH_NONE) continue; /* max_tokens 0 */
        const gw_prompt *pr = &j->req.prompts[c->prompt];
        if (c->leader) {
            int reuse = 0;
            c->slot = take_slot_for_prompt(s, pr->ids, pr->n, &reuse, 0);
            c->n_prefilled = reuse;
            j->cached_tokens += reuse;
        } else {
            c->slot = take_slot_any(s, 0);
        }
    }
    moe_metric_inc(s->p.metrics.prompt_tokens, NULL, j->prompt_tokens);
    moe_metric_inc(s->p.metrics.cached_tokens, NULL, j->cached_tokens);
    s->running[s->n_running++] = j;
    if (s->pol->on_admit) s->pol->on_admit(s->pol->state, j);
    /* choices born finished (max_tokens 0) end now */
    for (int i = 0; i < j->n_ch; i++) {
        gw_choice *c = &j->ch[i];
        if (moe_gen_seq_finish(c->seq) == MOE_GEN_FINISH_NONE) continue;
        moe_gen_step st = {.token = -1, .finish = moe_gen_seq_finish(c->seq), .stop_index = -1};
        gws_after_step(s, j, c, &st, now);
    }
    gws_end_if_done(s, j, now);
}

/* Slots j still needs: its unfinished choices. */
static int slots_needed(const gw_job *j) {
    if (!j->admitted) return j->req.gen.max_tokens == 0 ? 0 : j->n_ch;
    int n = 0;
    for (int i = 0; i < j->n_ch; i++) n += moe_gen_seq_finish(j->ch[i].seq) == MOE_GEN_FINISH_NONE;
    return n;
}

static void reap(gw_sched *s, int64_t now) {
    /* clients that hung up while their connection waits (every 100 ms) */
    if (now - s->last_probe_us >= 100000) {
        s->last_probe_us = now;
        for (int k = 0; k < s->n_waiting; k++)
            if (gw_job_client_gone(s->waiting[k])) atomic_store(&s->waiting[k]->cancelled, 1);
        for (int k = 0; k < s->n_running; k++)
            if (gw_job_client_gone(s->running[k])) atomic_store(&s->running[k]->cancelled, 1);
    }
    for (int k = 0; k < s->n_waiting;) {
        gw_job *j = s->waiting[k];
        if (atomic_load(&j->cancelled)) {
            drop_waiting(s, k, NULL, "cancelled");
        } else if (j->deadline_us && now >= j->deadline_us) {
            gw_api_error e;
            gw_api_error_set(&e, 503, "",
                             "the request waited %.1f s in the queue without a free sequence slot "
                             "and passed its deadline (--request-timeout); retry later",
                             secs(now - j->t_arrive_us));
            drop_waiting(s, k, &e, "deadline");
        } else {
            k++;
        }
    }
    for (int k = 0; k < s->n_running;) {
        gw_job *j = s->running[k];
        if (atomic_load(&j->cancelled)) {
            cancel_choices(j);
            gw_api_error e;
            gw_api_error_set(&e, 499, "", "the client closed the connection");
            gw_job_emit_error(j, &e); /* nobody reads it */
            moe_metric_inc(s->p.metrics.gen_tokens, NULL, gw_job_completion_tokens(j));
            log_end(s, j, "cancelled");
            drop_running(s, j);
        } else if (j->deadline_us && now >= j->deadline_us) {
            gw_api_error e;
            gw_api_error_set(&e, 504, "",
                             "the request passed its deadline after %.1f s (--request-timeout) "
                             "with %d tokens generated; ask for fewer tokens",
                             secs(now - j->t_arrive_us), gw_job_completion_tokens(j));
            moe_metric_inc(s->p.metrics.gen_tokens, NULL, gw_job_completion_tokens(j));
            gws_fail_running(s, j, &e, "deadline");
        } else {
            k++;
        }
    }
}

/* Running job r gives its slots up and waits again (see gw_policy.victim). */
static void preempt(gw_sched *s, int r) {
    gw_job *j = s->running[r];
    memmove(&s->running[r], &s->running[r + 1],
            (size_t)(s->n_running - r - 1) * sizeof *s->running);
    s->n_running--;
    for (int i = 0; i < j->n_ch; i++) {
        gw_choice *c = &j->ch[i];
        if (c->slot >= 0) s->slot_kept[c->slot] = j;
        release_slot_as(s, c, SLOT_KEPT); /* the re-admission finds its cache */
        c->n_prefilled = 0;
        c->resume = 0;
    }
    j->preempted++;
    moe_metric_inc(s->p.metrics.preemptions, NULL, 1);
    int k = s->n_waiting; /* back in arrival order */
    while (k > 0 && s->waiting[k - 1]->t_arrive_us > j->t_arrive_us) k--;
    memmove(&s->waiting[k + 1], &s->waiting[k], (size_t)(s->n_waiting - k) * sizeof *s->waiting);
    s->waiting[k] = j;
    s->n_waiting++;
    pthread_mutex_lock(&s->mu);
    s->queued++;
    pthread_mutex_unlock(&s->mu);
    if (s->pol->on_preempt) s->pol->on_preempt(s->pol->state, j);
}

static void admit_waiting(gw_sched *s, int64_t now) {
    int preempts = 0;
    while (s->n_waiting > 0) {
        int k = s->pol->pick(s->pol->state, s->waiting, s->n_waiting);
        if (k < 0 || k >= s->n_waiting) break;
        gw_job *j = s->waiting[k];
        if (slots_needed(j) > s->p.max_seqs - s->slots_used || s->n_running >= s->p.max_seqs) {
            /* the policy may make room (a tenant over its share); the
             * waiting list has room: preempt() only puts back what left it */
            const int v =
                s->pol->victim && s->n_waiting < s->p.max_queue && preempts < s->p.max_seqs
                    ? s->pol->victim(s->pol->state, s->running, s->n_running, j, s->p.max_seqs)
                    : -1;
            if (v < 0 || v >= s->n_running) break; /* waits for slots: the order is kept */
            preempt(s, v);
            preempts++;
            continue;
        }
        admit(s, take_waiting(s, k), now);
    }
}

static void publish_stats(gw_sched *s) {
    int running_seqs = 0;
    for (int r = 0; r < s->n_running; r++) running_seqs += slots_needed(s->running[r]);
    pthread_mutex_lock(&s->mu);
    s->st.waiting = s->queued;
    s->st.running = running_seqs;
    s->st.slots_used = s->slots_used;
    s->st.last_decode_failed = s->last_failed;
    s->st.last_fail_ms = s->last_fail_ms;
    const int queued = s->queued;
    pthread_mutex_unlock(&s->mu);
    moe_metric_set(s->p.metrics.queue_depth, NULL, queued);
    moe_metric_set(s->p.metrics.running, NULL, running_seqs);
    moe_metric_set(s->p.metrics.slots_used, NULL, s->slots_used);
}

static void *engine_main(void *arg) {
    gw_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        /* sleep while there is nothing to run (waiting jobs are rechecked
         * for deadlines and cancellation every 50 ms) */
        while (!s->stopping && !s->in_head && s->n_running == 0) {
            if (s->n_waiting == 0) {
                pthread_cond_wait(&s->cv, &s->mu);
            } else {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 50 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
                if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) break;
            }
        }
        const int stopping = s->stopping;
        gw_job *in = s->in_head;
        s->in_head = s->in_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        while (in) {
            gw_job *next = in->next;
            in->next = NULL;
            s->waiting[s->n_waiting++] = in;
            if (s->pol->on_wait) s->pol->on_wait(s->pol->state, in);
            in = next;
        }
        if (stopping) break;
        const int64_t now = moe_mono_us();
        reap(s, now);
        admit_waiting(s, now);
        int rows = gws_step(s);
        if (rows < 0) {
            moe_log(MOE_LOG_ERROR, "gateway", "out of memory for the engine's batch");
            gw_api_error e;
            gw_api_error_set(&e, 503, "", "the server is out of memory");
            while (s->n_running) gws_fail_running(s, s->running[0], &e, "error");
        }
        publish_stats(s);
        pthread_mutex_lock(&s->mu);
        s->st.steps += rows > 0;
        pthread_mutex_unlock(&s->mu);
    }
    /* stopping: everything still here ends with 503 */
    gw_api_error e;
    gw_api_error_set(&e, 503, "", "the server is shutting down; retry on another replica");
    while (s->n_running) gws_fail_running(s, s->running[0], &e, "error");
    while (s->n_waiting) drop_waiting(s, 0, &e, "error");
    publish_stats(s);
    return NULL;
}

/* ==== API =============================================================== */

/* Frees s and its buffers (no thread runs). */
static void free_state(gw_sched *s) {
    free(s->waiting), free(s->running), free(s->order), free(s->key), free(s->whole),
        free(s->slot_busy), free(s->slot_tok);
    free(s->slot_tok_len), free(s->slot_kept), free(s->b_tok), free(s->b_pos), free(s->b_slot),
        free(s->b_logits);
    free(s->b_tenant);
    free(s->refs);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int gw_sched_start(gw_sched **out, const gw_sched_params *p, moe_err *err) {
    *out = NULL;
    if (p->max_seqs < 1 || p->max_seqs > moe_ctx_n_slots(p->ctx) || p->max_queue < 1 ||
        p->max_batch_tokens < 1)
        return moe_err_set(err, MOE_EINVAL, "scheduler: bad limits (max_seqs %d, slots %d)",
                           p->max_seqs, moe_ctx_n_slots(p->ctx));
    gw_sched *s = calloc(1, sizeof *s);
    if (!s) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    s->p = *p;
    s->c = p->ctx;
    s->pol = p->policy ? p->policy : &gw_policy_fifo;
    s->n_slots = moe_ctx_n_slots(p->ctx);
    s->n_ctx = moe_ctx_n_ctx(p->ctx);
    s->waiting = calloc((size_t)p->max_queue, sizeof *s->waiting);
    s->running = calloc((size_t)p->max_seqs, sizeof *s->running);
    s->order = calloc((size_t)p->max_seqs, sizeof *s->order);
    s->key = calloc((size_t)p->max_seqs, sizeof *s->key);
    s->whole = calloc((size_t)p->max_seqs, 1);
    s->slot_busy = calloc((size_t)s->n_slots, 1);
    s->slot_tok = malloc((size_t)s->n_slots * (size_t)s->n_ctx * sizeof *s->slot_tok);
    s->slot_tok_len = calloc((size_t)s->n_slots, sizeof *s->slot_tok_len);
    s->slot_kept = calloc((size_t)s->n_slots, sizeof *s->slot_kept);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (!s->waiting || !s->running || !s->order || !s->key || !s->whole || !s->slot_busy ||
        !s->slot_tok || !s->slot_tok_len || !s->slot_kept ||
        gws_grow_batch(s, p->max_seqs + p->max_batch_tokens) < 0)
        goto oom;
    for (int k = 0; k < s->n_slots; k++) moe_ctx_slot_clear(s->c, k);
    if (pthread_create(&s->th, NULL, engine_main, s) != 0) goto oom;
    *out = s;
    return 0;
oom:
    free_state(s);
    return moe_err_set(err, MOE_ENOMEM, "out of memory for the scheduler");
}

int gw_sched_submit(gw_sched *s, gw_job *j, gw_api_error *e) {
    j->t_arrive_us = moe_mono_us();
    j->deadline_us = s->p.timeout_ms > 0 ? j->t_arrive_us + s->p.timeout_ms * 1000 : 0;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        gw_api_error_set(e, 503, "", "the server is shutting down; retry on another replica");
        return -1;
    }
    if (s->queued >= s->p.max_queue) {
        const int q = s->queued;
        pthread_mutex_unlock(&s->mu);
        gw_api_error_set(e, 503, "",
                         "the server is at capacity: %d requests are already waiting "
                         "(--max-queue); retry later",
                         q);
        return -1;
    }
    gw_job_ref(j);
    j->next = NULL;
    if (s->in_tail)
        s->in_tail->next = j;
    else
        s->in_head = j;
    s->in_tail = j;
    s->queued++;
    s->st.waiting = s->queued;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

void gw_sched_poke(gw_sched *s) {
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void gw_sched_get_stats(gw_sched *s, gw_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void gw_sched_stop(gw_sched *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->stopping = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    /* submitted after the thread's last look (submit refuses from now on) */
    pthread_mutex_lock(&s->mu);
    gw_job *in = s->in_head;
    s->in_head = s->in_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    gw_api_error e;
    gw_api_error_set(&e, 503, "", "the server is shutting down; retry on another replica");
    while (in) {
        gw_job *next = in->next;
        cancel_choices(in);
        gw_job_emit_error(in, &e);
        gw_job_unref(in);
        in = next;
    }
}

void gw_sched_free(gw_sched *s) {
    if (!s) return;
    gw_sched_stop(s);
    free_state(s);
}
