/*
 * remote_choice.c - which replica gets a row group, and when a silent
 * worker is given up on (see remote_internal.h): both read each worker's
 * answer time, a moving average kept here from every result.
 */
#include "remote_internal.h"
#include "svc/clock.h"

/* A worker's answer time is trusted this long after its last sample; an
 * older one (a worker that got no work because it was slow) counts as the
 * fastest fresh replica's, so it is tried again and measured anew. */
#define SPEED_FRESH_MS 1000
/* Weight of the newest answer in a worker's answer time. */
#define SPEED_EWMA 0.3

/* Gives group g to the live replica with the least rows in flight plus g's,
 * weighted by its answers' round trip (a moving average): a slower or
 * farther worker gets fewer rows - and answers sooner with fewer, which
 * balances it (per row, a worker given few rows would look slow for its
 * fixed cost, and get fewer still). Unmeasured workers count as the
 * fastest measured one, so with no measurements it is the fewest rows in
 * flight; ties rotate. Leaves g unassigned (-1) when no replica is left. */
void moe__remote_assign(remote_be *b, int g) {
    const int ne = b->m->hp.n_expert;
    const size_t k = (size_t)b->work->layer * ne + b->work->expert[g];
    const uint32_t lo = b->pl.off ? b->pl.off[k] : 0, hi = b->pl.off ? b->pl.off[k + 1] : 0;
    const int64_t now = moe_mono_ms();
    const int rows = moe__remote_group_rows(b, g);
    int best = -1;
    double best_cost = 0, fastest = 0;
    const uint32_t n = hi - lo;
    for (uint32_t j = 0; j < n; j++) {
        const rworker *w = b->w[b->pl.rep[lo + j]];
        if (w->us_answer > 0 && now - w->us_answer_ms <= SPEED_FRESH_MS &&
            (fastest == 0 || w->us_answer < fastest))
            fastest = w->us_answer;
    }
    if (fastest == 0) fastest = 1;
    for (uint32_t j = 0; j < n; j++) {
        const int wi = b->pl.rep[lo + (j + b->rr) % n];
        const rworker *w = b->w[wi];
        if (w->failed || w->down_until_ms > now) continue;
        const double speed =
            w->us_answer > 0 && now - w->us_answer_ms <= SPEED_FRESH_MS ? w->us_answer : fastest;
        const double cost = (double)(w->rows_in_flight + rows) * speed;
        if (best < 0 || cost < best_cost) best = wi, best_cost = cost;
    }
    if (best < 0) { /* every replica failed lately: retry the ones not failed in this batch */
        for (uint32_t j = 0; j < n && best < 0; j++)
            if (!b->w[b->pl.rep[lo + j]]->failed) best = b->pl.rep[lo + j];
    }
    b->owner[g] = best;
    if (best < 0) return;
    rworker *w = b->w[best];
    w->queued[w->n_queued++] = g;
    w->rows_in_flight += rows;
}

/* Takes an answer that arrived at t_answer (us): the worker's answer time
 * per message and per row, for assign and the suspect rule. */
void moe__remote_note_answer(rworker *w, int64_t t_answer) {
    if (w->sent_us <= 0) return;
    const double per = (double)(t_answer - w->sent_us);
    w->us_answer = w->us_answer > 0 ? (1.0 - SPEED_EWMA) * w->us_answer + SPEED_EWMA * per : per;
    w->us_answer_ms = t_answer / 1000;
    if (w->n_rows > 0) {
        const double row = per / w->n_rows;
        w->us_row = w->us_row > 0 ? (1.0 - SPEED_EWMA) * w->us_row + SPEED_EWMA * row : row;
    }
}

/* How long busy worker w may stay silent before it is suspect (ms; 0: never,
 * only the deadline): suspect_ms, or 8x what its answers usually take for a
 * message of this size if that is longer. A prefill message's rows scale the
 * per-row estimate, which small messages' fixed costs only inflate. A worker
 * never measured waits for the deadline; an old measurement still counts
 * (a worker retried after its link was cut has none newer). */
int64_t moe__remote_suspect_after_ms(const remote_be *b, const rworker *w) {
    if (b->p.suspect_ms <= 0 || w->us_answer <= 0) return 0;
    double usual = w->us_answer;
    if (w->us_row * w->n_rows > usual) usual = w->us_row * w->n_rows;
    const int64_t ms = (int64_t)(8.0 * usual / 1000.0);
    return ms > b->p.suspect_ms ? ms : b->p.suspect_ms;
}

/* 1 if every row group in flight on w has another replica that is live
 * (not failed in this batch, not in its down window): only then may w be
 * given up on early - a batch must never lose its last replica to a guess. */
int moe__remote_replicas_left(const remote_be *b, const rworker *w, int64_t now) {
    const int ne = b->m->hp.n_expert;
    for (int i = 0; i < w->n_groups; i++) {
        const int g = w->msg_groups[i];
        if (b->done[g]) continue;
        const size_t k = (size_t)b->work->layer * ne + b->work->expert[g];
        const uint32_t lo = b->pl.off ? b->pl.off[k] : 0, hi = b->pl.off ? b->pl.off[k + 1] : 0;
        int other = 0;
        for (uint32_t j = lo; j < hi && !other; j++) {
            const rworker *o = b->w[b->pl.rep[j]];
            other = o != w && !o->failed && o->down_until_ms <= now;
        }
        if (!other) return 0;
    }
    return 1;
}
