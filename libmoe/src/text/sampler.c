/*
 * text/sampler.c - the sampler chain of moe/sampler.h: penalties, logprobs,
 * greedy or temperature -> top-k -> top-p -> min-p -> draw.
 *
 * Candidates are ordered by (logit descending, id ascending), a total order,
 * so every selection is deterministic whatever the algorithm. Truncation uses
 * one binary max-heap over the unmasked candidates: building it is O(n) and
 * each pop O(log n), so top-k costs O(n + k log n) and top-p pops only the
 * prefix it keeps. Temperature never changes that order, so the heap is
 * keyed on the penalised logits and weights are exp((l - max) / T), computed
 * in double (no overflow at any T > 0).
 */
#include "moe/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

typedef struct cand {
    int32_t id;
    float logit; /* penalised, not temperature-scaled */
} cand;

struct moe_sampler {
    int n_vocab;
    moe_sampler_params p;
    uint64_t rng[4]; /* xoshiro256** state */
    float *work;     /* (n_vocab) penalised logits */
    cand *cands;     /* (n_vocab) unmasked candidates, then a heap */
    cand *sorted;    /* (n_vocab) candidates popped from the heap, best first */
    int32_t *counts; /* (n_vocab) occurrences of each token in the window */
    int32_t *window; /* (p.penalty_last_n) ring of accepted tokens */
    int win_len;     /* tokens in the window */
    int win_pos;     /* next slot to write */
};

/* ==== PRNG: xoshiro256**, seeded by splitmix64 ==== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static void rng_seed(uint64_t st[4], uint64_t seed) {
    for (int i = 0; i < 4; i++) st[i] = splitmix64(&seed);
}

static uint64_t rng_next(uint64_t st[4]) {
    uint64_t r = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return r;
}

/* Uniform in [0, 1), 53 bits. */
static double rng_uniform(uint64_t st[4]) {
    return (double)(rng_next(st) >> 11) * 0x1.0p-53;
}

/* ==== Parameters ==== */

moe_sampler_params moe_sampler_default_params(void) {
    /* the defaults sampler.h gives: these, every other field 0 (greedy, filters off) */
    return (moe_sampler_params){.top_p = 1.0f, .repeat_penalty = 1.0f, .penalty_last_n = 64};
}

int moe_sampler_params_check(int n_vocab, const moe_sampler_params *p, moe_err *err) {
    if (!p) return moe_err_set(err, MOE_EINVAL, "sampler: params is NULL");
    if (n_vocab <= 0)
        return moe_err_set(err, MOE_EINVAL, "sampler: n_vocab must be > 0, got %d", n_vocab);
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return moe_err_set(err, MOE_EINVAL, "sampler: temperature must be finite and >= 0, got %g",
                           (double)p->temperature);
    if (p->top_k < 0)
        return moe_err_set(err, MOE_EINVAL, "sampler: top_k must be >= 0 (0 = off), got %d",
                           p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return moe_err_set(err, MOE_EINVAL, "sampler: top_p must be in (0, 1] (1 = off), got %g",
                           (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p < 1.0f))
        return moe_err_set(err, MOE_EINVAL, "sampler: min_p must be in [0, 1) (0 = off), got %g",
                           (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return moe_err_set(err, MOE_EINVAL,
                           "sampler: repeat_penalty must be finite and > 0 (1 = off), got %g",
                           (double)p->repeat_penalty);
    if (!isfinite(p->frequency_penalty))
        return moe_err_set(err, MOE_EINVAL, "sampler: frequency_penalty must be finite, got %g",
                           (double)p->frequency_penalty);
    if (!isfinite(p->presence_penalty))
        return moe_err_set(err, MOE_EINVAL, "sampler: presence_penalty must be finite, got %g",
                           (double)p->presence_penalty);
    if (p->penalty_last_n < 0 || p->penalty_last_n > MOE_SAMPLER_MAX_PENALTY_LAST_N)
        return moe_err_set(err, MOE_EINVAL,
                           "sampler: penalty_last_n must be in [0, %d] (0 = off), got %d",
                           MOE_SAMPLER_MAX_PENALTY_LAST_N, p->penalty_last_n);
    if (p->n_logprobs < 0 || p->n_logprobs > MOE_SAMPLER_MAX_LOGPROBS)
        return moe_err_set(err, MOE_EINVAL, "sampler: n_logprobs must be in [0, %d], got %d",
                           MOE_SAMPLER_MAX_LOGPROBS, p->n_logprobs);
    return 0;
}

/* ==== Life cycle ==== */

int moe_sampler_create(moe_sampler **out, int n_vocab, const moe_sampler_params *p, moe_err *err) {
    int rc;
    moe_sampler *s = NULL;
    if (!out) return moe_err_set(err, MOE_EINVAL, "sampler: out is NULL");
    *out = NULL;
    rc = moe_sampler_params_check(n_vocab, p, err);
    if (rc < 0) return rc;

    s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->n_vocab = n_vocab;
    s->p = *p;
    s->work = malloc((size_t)n_vocab * sizeof *s->work);
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->sorted = malloc((size_t)n_vocab * sizeof *s->sorted);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    if (p->penalty_last_n > 0) s->window = malloc((size_t)p->penalty_last_n * sizeof *s->window);
    if (!s->work || !s->cands || !s->sorted || !s->counts || (p->penalty_last_n > 0 && !s->window))
        goto nomem;
    rng_seed(s->rng, p->seed);
    *out = s;
    return 0;

nomem:
    moe_sampler_destroy(s);
    return moe_err_set(err, MOE_ENOMEM, "sampler: out of memory for n_vocab %d", n_vocab);
}

void moe_sampler_destroy(moe_sampler *s) {
    if (!s) return;
    MOE_FREE_ALL(s->window, s->counts, s->sorted, s->cands, s->work, s);
}

void moe_sampler_reset(moe_sampler *s) {
    for (int i = 0; i < s->win_len; i++) s->counts[s->window[i]] = 0;
    s->win_len = 0;
    s->win_pos = 0;
    rng_seed(s->rng, s->p.seed);
}

int moe_sampler_accept(moe_sampler *s, int32_t token) {
    int n = s->p.penalty_last_n;
    if (token < 0 || token >= s->n_vocab) return MOE_ERANGE;
    if (n == 0) return 0;
    if (s->win_len == n)
        s->counts[s->window[s->win_pos]]--; /* evict the oldest */
    else
        s->win_len++;
    s->window[s->win_pos] = token;
    s->counts[token]++;
    s->win_pos = (s->win_pos + 1) % n;
    return 0;
}

/* ==== Penalties ==== */

static int penalties_active(const moe_sampler_params *p) {
    return p->penalty_last_n > 0 && (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f ||
                                     p->presence_penalty != 0.0f);
}

/* Penalises w once per distinct token in the window. A token's count is
 * negated once it is done and restored afterwards, so no extra memory. */
static void penalties_apply(moe_sampler *s, float *w) {
    const double rp = s->p.repeat_penalty, fp = s->p.frequency_penalty, pp = s->p.presence_penalty;
    for (int i = 0; i < s->win_len; i++) {
        int32_t t = s->window[i];
        int32_t c = s->counts[t];
        if (c <= 0) continue; /* already done */
        double l = w[t];
        l = l > 0 ? l / rp : l * rp;
        l -= fp * c + pp;
        w[t] = (float)l;
        s->counts[t] = -c;
    }
    for (int i = 0; i < s->win_len; i++) {
        int32_t t = s->window[i];
        if (s->counts[t] < 0) s->counts[t] = -s->counts[t];
    }
}

/* ==== Heap of candidates: best (highest logit, then lowest id) on top ==== */

static int cand_before(cand a, cand b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

static void heap_sift_down(cand *h, int n, int i) {
    cand x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(h[c + 1], h[c])) c++;
        if (!cand_before(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void heap_build(cand *h, int n) {
    for (int i = n / 2 - 1; i >= 0; i--) heap_sift_down(h, n, i);
}

static cand heap_pop(cand *h, int *n) {
    cand top = h[0];
    h[0] = h[--*n];
    heap_sift_down(h, *n, 0);
    return top;
}

/* ==== Sampling ==== */

/* Chooses among the unmasked tokens of w at temperature T > 0 (steps 4-8 of
 * moe/sampler.h); max is the largest logit of w. */
static int32_t sample_temperature(moe_sampler *s, const float *w, float max) {
    const double T = s->p.temperature;
    const double fmax = max;
    cand *c = s->cands;
    int n = 0;
    for (int i = 0; i < s->n_vocab; i++)
        if (w[i] != -INFINITY) c[n++] = (cand){.id = i, .logit = w[i]};

    int limit = (s->p.top_k > 0 && s->p.top_k < n) ? s->p.top_k : n;
    int m = n; /* kept candidates, in c */
    if (limit < n || s->p.top_p < 1.0f) {
        cand *h = s->cands;
        int hn = n;
        heap_build(h, hn);
        if (s->p.top_p < 1.0f) {
            /* the mass to reach: top_p of what top-k keeps */
            double z = 0;
            int popped = 0;
            if (limit < n) {
                for (; popped < limit; popped++) {
                    s->sorted[popped] = heap_pop(h, &hn);
                    z += exp((s->sorted[popped].logit - fmax) / T);
                }
            } else {
                for (int i = 0; i < n; i++) z += exp((h[i].logit - fmax) / T);
            }
            const double target = (double)s->p.top_p * z;
            double cum = 0;
            m = 0;
            while (m < limit) {
                if (m >= popped) s->sorted[popped++] = heap_pop(h, &hn);
                cum += exp((s->sorted[m].logit - fmax) / T);
                m++;
                if (cum >= target) break;
            }
        } else {
            for (m = 0; m < limit; m++) s->sorted[m] = heap_pop(h, &hn);
        }
        c = s->sorted;
    }

    /* min-p: p_max is the overall best token, which is always kept */
    if (s->p.min_p > 0.0f) {
        const double mp = s->p.min_p;
        int j = 0;
        for (int i = 0; i < m; i++)
            if (exp((c[i].logit - fmax) / T) >= mp) c[j++] = c[i];
        m = j;
    }

    double total = 0;
    for (int i = 0; i < m; i++) total += exp((c[i].logit - fmax) / T);
    const double r = rng_uniform(s->rng) * total;
    double cum = 0;
    for (int i = 0; i < m; i++) {
        cum += exp((c[i].logit - fmax) / T);
        if (r < cum) return c[i].id;
    }
    return c[m - 1].id; /* r rounded onto total */
}

int moe_sampler_sample(moe_sampler *s, const float *logits, moe_sample_result *out) {
    const int nv = s->n_vocab;
    float *w = s->work;
    out->token = -1;
    out->logprob = 0.0f;
    out->n_top = 0;

    for (int i = 0; i < nv; i++) {
        float x = logits[i];
        if (isnan(x) || x == INFINITY) return MOE_ENUMERIC;
        w[i] = x;
    }
    if (penalties_active(&s->p)) penalties_apply(s, w);

    /* the best token (ties: lowest id), and a check of the penalised values */
    int32_t best = -1;
    float max = -INFINITY;
    for (int i = 0; i < nv; i++) {
        float x = w[i];
        if (isnan(x) || x == INFINITY) return MOE_ENUMERIC;
        if (x > max) {
            max = x;
            best = i;
        }
    }
    if (best < 0) return MOE_EINVAL; /* every token masked */

    /* log_softmax at temperature 1, in double */
    double z = 0;
    for (int i = 0; i < nv; i++) z += exp((double)w[i] - max);
    const double lse = (double)max + log(z);

    /* the n_logprobs best, by insertion (n <= 20); a later equal logit never
     * passes an earlier one, so ties stay in id order */
    const int ntop = s->p.n_logprobs;
    cand top[MOE_SAMPLER_MAX_LOGPROBS];
    int nt = 0;
    for (int i = 0; i < nv && ntop > 0; i++) {
        float x = w[i];
        if (x == -INFINITY) continue;
        if (nt == ntop && !(x > top[nt - 1].logit)) continue;
        int pos = nt < ntop ? nt++ : ntop - 1;
        while (pos > 0 && x > top[pos - 1].logit) {
            top[pos] = top[pos - 1];
            pos--;
        }
        top[pos] = (cand){.id = i, .logit = x};
    }

    int32_t tok = s->p.temperature == 0.0f ? best : sample_temperature(s, w, max);

    out->token = tok;
    out->logprob = (float)((double)w[tok] - lse);
    out->n_top = nt;
    for (int i = 0; i < nt; i++) {
        out->top[i].token = top[i].id;
        out->top[i].logprob = (float)((double)top[i].logit - lse);
    }
    return 0;
}
