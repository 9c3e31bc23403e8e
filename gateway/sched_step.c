/* sched_step.c - one engine step of the scheduler (see scheduler.h): the
 * batch (a decode row per generating sequence, prompt chunks in the
 * policy's order within the step's budget), the decode, and what follows
 * from its logits. */
#include <stdlib.h>
#include <string.h>

#include "sched_internal.h"
#include "svc/clock.h"
#include "svc/log.h"

int gws_grow_batch(gw_sched *s, int need) {
    if (need <= s->b_cap) return 0;
    int cap = s->b_cap ? s->b_cap : 256;
    while (cap < need) cap *= 2;
    int32_t *t = realloc(s->b_tok, (size_t)cap * sizeof *t);
    if (t) s->b_tok = t;
    int32_t *p = realloc(s->b_pos, (size_t)cap * sizeof *p);
    if (p) s->b_pos = p;
    int32_t *sl = realloc(s->b_slot, (size_t)cap * sizeof *sl);
    if (sl) s->b_slot = sl;
    int8_t *l = realloc(s->b_logits, (size_t)cap);
    if (l) s->b_logits = l;
    row_ref *r = realloc(s->refs, (size_t)cap * sizeof *r);
    if (r) s->refs = r;
    int32_t *tn = realloc(s->b_tenant, (size_t)cap * sizeof *tn);
    if (tn) s->b_tenant = tn;
    if (!t || !p || !sl || !l || !r || !tn) return MOE_ENOMEM;
    s->b_cap = cap;
    return 0;
}

/* A step that carries a prompt chunk next to decode rows may take about
 * this many times a decode-only step: the running streams' inter-token
 * gap while prompts arrive stays within a small multiple of its median. */
#define CHUNK_STEP_COST 2.0
/* Weight of the newest step in the moving cost averages. */
#define COST_EWMA 0.2

/* Prompt rows this step may carry next to n_decode decode rows. Nobody
 * decoding: the whole step budget. Otherwise (--prefill-chunk, or) as many
 * rows as fit in (CHUNK_STEP_COST - 1) decode steps by the measured costs:
 * the chunk follows the engine (with the fast int8 tile a decode step of 32
 * streams is bound by reading the experts' weights and prompt rows are
 * cheap; with --exact, or on a slower CPU, fewer rows fit), between 16 rows
 * and the step budget. Until both costs are measured: max(64, 4 x n_decode)
 * rows, the rule measured before (bench/gateway.sh, exact tile, 32 streams:
 * 1x n_decode gave 0.68x the engine's throughput, 2x 0.91x, 4x 1.00x).
 * Always within max_batch_tokens (at least a quarter of it when decode rows
 * fill it). In a burst, when more prompts wait for their prefill than
 * streams decode (backlog: their rows), the chunk grows to a quarter of the
 * backlog: those requests' first tokens matter as much as the few running
 * streams' pace. */
static int prefill_budget(const gw_sched *s, int n_decode, int backlog, int n_backlog) {
    const gw_sched_params *p = &s->p;
    if (n_decode == 0) return p->max_batch_tokens;
    int chunk;
    if (p->prefill_chunk > 0) {
        chunk = p->prefill_chunk;
    } else if (s->t_decode_us > 0 && s->t_row_us > 0) {
        const double c = (CHUNK_STEP_COST - 1.0) * s->t_decode_us / s->t_row_us;
        chunk = c > 65536.0 ? 65536 : c < 16.0 ? 16 : (int)c;
    } else {
        chunk = 4 * n_decode > 64 ? 4 * n_decode : 64;
    }
    if (p->prefill_chunk == 0 && n_backlog >= 2) { /* a queue of prompts */
        if (chunk < 4 * n_decode) chunk = 4 * n_decode;
        if (chunk < backlog / 4) chunk = backlog / 4;
    }
    int room = p->max_batch_tokens - n_decode;
    if (room < p->max_batch_tokens / 4) room = p->max_batch_tokens / 4;
    if (chunk > room) chunk = room;
    return chunk > 0 ? chunk : 1;
}

/* Folds a step's time into the cost averages: a decode-only step's time,
 * and a mixed step's time beyond the decode average, per prompt row. */
static void note_step_cost(gw_sched *s, int n_decode, int n_prompt, int64_t us) {
    if (n_decode > 0 && n_prompt == 0) {
        s->t_decode_us = s->t_decode_us > 0
                             ? (1.0 - COST_EWMA) * s->t_decode_us + COST_EWMA * (double)us
                             : (double)us;
    } else if (n_decode > 0 && n_prompt > 0 && s->t_decode_us > 0) {
        double per = ((double)us - s->t_decode_us) / n_prompt;
        if (per < 1.0) per = 1.0;
        s->t_row_us = s->t_row_us > 0 ? (1.0 - COST_EWMA) * s->t_row_us + COST_EWMA * per : per;
    } else if (n_decode == 0 && n_prompt > 0 && s->t_row_us == 0) {
        s->t_row_us = (double)us / n_prompt; /* a first guess: prefill alone */
    }
}

/* One engine step: builds the batch, decodes, hands out the logits. Returns
 * the rows decoded (0: nothing to do). */
int gws_step(gw_sched *s) {
    int rows = 0, flagged = 0;
    /* decode rows: every generating choice */
    for (int r = 0; r < s->n_running; r++) {
        gw_job *j = s->running[r];
        for (int i = 0; i < j->n_ch; i++) {
            gw_choice *c = &j->ch[i];
            if (c->slot < 0 || c->resume || moe_gen_seq_finish(c->seq) != MOE_GEN_FINISH_NONE ||
                moe_gen_seq_n_generated(c->seq) == 0)
                continue;
            if (gws_grow_batch(s, rows + 1) < 0) return -1;
            int n = 0;
            const int32_t *toks = moe_gen_seq_tokens(c->seq, &n);
            s->b_tok[rows] = toks[n - 1];
            s->b_pos[rows] = n - 1;
            s->b_slot[rows] = c->slot;
            s->b_tenant[rows] = j->usage_idx;
            s->b_logits[rows] = 1;
            s->refs[flagged++] = (row_ref){j, i, 0};
            rows++;
        }
    }
    const int n_decode = rows;
    /* prefill rows, in admission order, within the step's token budget */
    int backlog = 0, n_backlog = 0;
    for (int r = 0; r < s->n_running; r++) {
        const gw_job *j = s->running[r];
        for (int i = 0; i < j->n_ch; i++)
            if ((j->ch[i].leader || j->ch[i].resume) && j->ch[i].slot >= 0) {
                int n = j->req.prompts[j->ch[i].prompt].n;
                if (j->ch[i].resume) moe_gen_seq_tokens(j->ch[i].seq, &n), n--;
                const int left = n - j->ch[i].n_prefilled;
                backlog += left;
                n_backlog += left > 0;
            }
    }
    int budget = prefill_budget(s, n_decode, backlog, n_backlog);
    /* the policy's order (fair share: a light tenant's whole prompt, then
     * the least served tenant's prompt first) */
    const int chunked = s->p.chunked_prefill;
    for (int r = 0; r < s->n_running; r++) {
        const gw_job *j = s->running[r];
        s->order[r] = r;
        s->whole[r] = chunked && s->pol->prefill_whole &&
                      s->pol->prefill_whole(s->pol->state, j, s->p.max_seqs);
        s->key[r] = s->pol->prefill_key ? s->pol->prefill_key(s->pol->state, j) : 0;
        if (s->whole[r]) s->key[r] = -1e300;
    }
    for (int r = 1; r < s->n_running; r++) { /* insertion sort: stable, n <= max_seqs */
        const int x = s->order[r];
        int q = r;
        while (q > 0 && s->key[s->order[q - 1]] > s->key[x]) s->order[q] = s->order[q - 1], q--;
        s->order[q] = x;
    }
    for (int r = 0; r < s->n_running; r++) {
        gw_job *j = s->running[s->order[r]];
        const int whole = s->whole[s->order[r]];
        for (int i = 0; i < j->n_ch; i++) {
            gw_choice *c = &j->ch[i];
            /* rows this choice may take: the budget, or for a whole prompt
             * what the step has room for */
            int cap = budget;
            if (whole && s->p.max_batch_tokens - rows > cap) cap = s->p.max_batch_tokens - rows;
            if (chunked && cap <= 0) break;
            if (c->resume && c->slot >= 0) { /* after a preemption: its tokens so far */
                int n = 0;
                const int32_t *toks = moe_gen_seq_tokens(c->seq, &n);
                int take = n - 1 - c->n_prefilled; /* the last token is decoded next */
                if (take <= 0) {
                    c->resume = 0;
                    continue;
                }
                if (chunked && take > cap) take = cap;
                if (gws_grow_batch(s, rows + take) < 0) return -1;
                moe_metric_inc(s->p.metrics.recomputed, NULL, take);
                for (int t = 0; t < take; t++) {
                    const int pos = c->n_prefilled + t;
                    s->b_tok[rows] = toks[pos];
                    s->b_pos[rows] = pos;
                    s->b_slot[rows] = c->slot;
                    s->b_tenant[rows] = j->usage_idx;
                    s->b_logits[rows] = 0;
                    rows++;
                }
                budget -= take;
                continue;
            }
            if (!c->leader || c->slot < 0 || moe_gen_seq_finish(c->seq) != MOE_GEN_FINISH_NONE)
                continue;
            const gw_prompt *pr = &j->req.prompts[c->prompt];
            if (c->n_prefilled >= pr->n) continue;
            int take = pr->n - c->n_prefilled;
            if (chunked && take > cap) take = cap;
            if (gws_grow_batch(s, rows + take) < 0) return -1;
            for (int t = 0; t < take; t++) {
                const int pos = c->n_prefilled + t;
                s->b_tok[rows] = pr->ids[pos];
                s->b_pos[rows] = pos;
                s->b_slot[rows] = c->slot;
                s->b_tenant[rows] = j->usage_idx;
                s->b_logits[rows] = pos == pr->n - 1;
                rows++;
            }
            if (c->n_prefilled + take == pr->n) s->refs[flagged++] = (row_ref){j, i, 1};
            if (s->pol->on_served) s->pol->on_served(s->pol->state, j, take, 0);
            budget -= take;
        }
    }
    if (rows == 0) return 0;
    const moe_batch b = {rows, s->b_tok, s->b_pos, s->b_slot, s->b_logits};
    moe_err err = {0};
    const int64_t t0 = moe_mono_us();
    if (s->p.usage) gw_usage_set_rows(s->p.usage, s->b_tenant, rows);
    int rc = moe_ctx_decode(s->c, &b, &err);
    const int64_t now = moe_mono_us();
    moe_metric_observe(s->p.metrics.batch_rows, NULL, rows);
    moe_metric_observe(s->p.metrics.step_seconds, NULL, secs(now - t0));
    if (rc == 0) note_step_cost(s, n_decode, rows - n_decode, now - t0);
    if (rc < 0) {
        /* nothing changed in the cache: end the jobs that had rows in it */
        s->last_failed = 1;
        s->last_fail_ms = moe_mono_ms();
        moe_log(MOE_LOG_WARN, "gateway", "engine step of %d rows failed: %s", rows, err.msg);
        gw_api_error e;
        gw_api_error_set(&e, rc == MOE_EUNAVAIL ? 503 : 500, "", "the model step failed: %s",
                         err.msg);
        for (int r = s->n_running - 1; r >= 0; r--) {
            gw_job *j = s->running[r];
            int involved = 0;
            for (int i = 0; i < j->n_ch && !involved; i++) involved = j->ch[i].slot >= 0;
            if (involved) gws_fail_running(s, j, &e, "error");
        }
        return rows;
    }
    s->last_failed = 0;
    /* prefill progress */
    for (int r = n_decode; r < rows;) {
        const int slot = s->b_slot[r];
        int k = r;
        while (k < rows && s->b_slot[k] == slot) k++;
        for (int jr = 0; jr < s->n_running; jr++) {
            gw_job *j = s->running[jr];
            for (int i = 0; i < j->n_ch; i++) {
                gw_choice *c = &j->ch[i];
                if (c->slot != slot || (!c->leader && !c->resume)) continue;
                c->n_prefilled += k - r;
                if (c->resume) { /* caught up: it decodes on from the next step */
                    int n = 0;
                    moe_gen_seq_tokens(c->seq, &n);
                    if (c->n_prefilled >= n - 1) c->resume = 0;
                }
            }
        }
        r = k;
    }
    /* logits, in flagged-row order */
    for (int f = 0; f < flagged; f++) {
        gw_job *j = s->refs[f].j;
        gw_choice *c = &j->ch[s->refs[f].ch];
        const float *logits = moe_ctx_logits(s->c, f);
        if (s->refs[f].prefill) {
            /* the prompt is in the leader's slot: followers copy it */
            for (int i = 0; i < j->n_ch; i++) {
                gw_choice *o = &j->ch[i];
                if (o == c || o->leader_idx != c->index || o->slot < 0) continue;
                moe_ctx_slot_copy(s->c, o->slot, c->slot);
                o->n_prefilled = c->n_prefilled;
            }
            for (int i = 0; i < j->n_ch; i++) {
                gw_choice *o = &j->ch[i];
                if (o->leader_idx != c->index || o->slot < 0 ||
                    moe_gen_seq_finish(o->seq) != MOE_GEN_FINISH_NONE)
                    continue;
                moe_gen_step st;
                moe_gen_seq_step(o->seq, logits, &st, &err);
                gws_after_step(s, j, o, &st, now);
            }
        } else {
            moe_gen_step st;
            moe_gen_seq_step(c->seq, logits, &st, &err);
            gws_after_step(s, j, c, &st, now);
        }
    }
    for (int r = s->n_running - 1; r >= 0; r--) gws_end_if_done(s, s->running[r], now);
    return rows;
}
