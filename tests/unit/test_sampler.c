/* test_sampler.c - the sampler chain of moe/sampler.h: greedy, temperature
 * statistics, top-k / top-p / min-p support on hand-computed cases,
 * penalties against their formulas, seeds, logprobs, bad input. */
#include <math.h>
#include <string.h>

#include "moe/error.h"
#include "moe/sampler.h"
#include "test.h"

static moe_sampler *mk(int n_vocab, moe_sampler_params p) {
    moe_sampler *s = NULL;
    moe_err err;
    int rc = moe_sampler_create(&s, n_vocab, &p, &err);
    if (rc < 0) TEST_FAIL("moe_sampler_create: %d %s", rc, err.msg);
    return s;
}

static int32_t draw(moe_sampler *s, const float *logits) {
    moe_sample_result r;
    ASSERT_EQ_INT(moe_sampler_sample(s, logits, &r), 0);
    return r.token;
}

/* log_softmax(l)[t] in double */
static double ref_logprob(const float *l, int n, int t) {
    double m = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) m = l[i] > m ? l[i] : m;
    for (int i = 0; i < n; i++) z += exp((double)l[i] - m);
    return (double)l[t] - m - log(z);
}

/* Counts draws per token; n_vocab <= 16. */
static void histogram(moe_sampler *s, const float *logits, int n_vocab, int draws, int *hist) {
    memset(hist, 0, sizeof(int) * (size_t)n_vocab);
    for (int i = 0; i < draws; i++) {
        int32_t t = draw(s, logits);
        ASSERT(t >= 0 && t < n_vocab);
        hist[t]++;
    }
}

/* The support a sampler with params p draws from (over 4000 draws) is
 * exactly the tokens with keep[t]. */
static void assert_support(moe_sampler_params p, const float *logits, int n_vocab,
                           const int *keep) {
    moe_sampler *s = mk(n_vocab, p);
    int hist[16];
    histogram(s, logits, n_vocab, 4000, hist);
    moe_sampler_destroy(s);
    for (int t = 0; t < n_vocab; t++) {
        if (keep[t] && hist[t] == 0) TEST_FAIL("token %d kept but never drawn", t);
        if (!keep[t] && hist[t] != 0) TEST_FAIL("token %d dropped but drawn %d times", t, hist[t]);
    }
}

TEST(sampler_greedy_argmax_ties_lowest_id) {
    moe_sampler *s = mk(6, moe_sampler_default_params());
    const float a[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, -INFINITY};
    ASSERT_EQ_INT(draw(s, a), 1);
    const float b[6] = {-INFINITY, -3.0f, -3.0f, -INFINITY, -4.0f, -5.0f};
    ASSERT_EQ_INT(draw(s, b), 1);
    const float c[6] = {0, 0, 0, 0, 0, 7.0f};
    ASSERT_EQ_INT(draw(s, c), 5);
    /* greedy ignores the truncation knobs: argmax always survives them */
    moe_sampler_params p = moe_sampler_default_params();
    p.top_k = 1;
    p.top_p = 0.1f;
    moe_sampler *s2 = mk(6, p);
    ASSERT_EQ_INT(draw(s2, a), 1);
    moe_sampler_destroy(s2);
    moe_sampler_destroy(s);
}

/* 20000 draws at T = 0.7: each frequency within 5 binomial standard
 * deviations, sqrt(p (1 - p) / N), of softmax(l / T); the seed is fixed, so
 * the outcome is deterministic (a correct sampler fails this with
 * probability < 6 * 6e-7 over seeds). Also a chi-square with 5 degrees of
 * freedom below 25 (p-value ~1e-4). */
TEST(sampler_temperature_frequencies_match_softmax) {
    enum { V = 6, N = 20000 };
    const float l[V] = {1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 2.0f};
    const double T = 0.7;
    moe_sampler_params p = moe_sampler_default_params();
    p.temperature = (float)T;
    p.seed = 1234;
    moe_sampler *s = mk(V, p);
    int hist[V];
    histogram(s, l, V, N, hist);
    double z = 0, e[V];
    for (int i = 0; i < V; i++) z += e[i] = exp(l[i] / T);
    double chi2 = 0;
    for (int i = 0; i < V; i++) {
        double pi = e[i] / z, f = (double)hist[i] / N;
        ASSERT_NEAR(f, pi, 5.0 * sqrt(pi * (1 - pi) / N));
        chi2 += (hist[i] - N * pi) * (hist[i] - N * pi) / (N * pi);
    }
    ASSERT(chi2 < 25.0);
    moe_sampler_destroy(s);
}

TEST(sampler_top_k_support_exactly_k_best) {
    /* hand case, with a tie at the boundary: lower id wins */
    const float l[6] = {1.0f, 3.0f, 2.0f, 2.0f, 0.0f, -INFINITY};
    moe_sampler_params p = moe_sampler_default_params();
    p.temperature = 3.0f; /* flat enough that every kept token shows up */
    p.top_k = 3;
    const int keep3[6] = {0, 1, 1, 1, 0, 0};
    assert_support(p, l, 6, keep3);
    p.top_k = 2;
    const int keep2[6] = {0, 1, 1, 0, 0, 0};
    assert_support(p, l, 6, keep2);
    /* k larger than the unmasked tokens: all five */
    p.top_k = 10;
    const int keep_all[6] = {1, 1, 1, 1, 1, 0};
    assert_support(p, l, 6, keep_all);

    /* larger vocabulary: every draw is among the 5 best (found by brute force) */
    enum { V = 1000 };
    static float big[V];
    uint64_t seed = 99;
    for (int i = 0; i < V; i++) big[i] = 2.0f * test_rand_f32(&seed);
    int best[5];
    for (int j = 0; j < 5; j++) {
        best[j] = -1;
        for (int i = 0; i < V; i++) {
            int used = 0;
            for (int q = 0; q < j; q++) used |= best[q] == i;
            if (!used && (best[j] < 0 || big[i] > big[best[j]])) best[j] = i;
        }
    }
    p.top_k = 5;
    p.temperature = 10.0f;
    moe_sampler *s = mk(V, p);
    int seen[5] = {0};
    for (int d = 0; d < 2000; d++) {
        int32_t t = draw(s, big);
        int k = -1;
        for (int j = 0; j < 5; j++)
            if (best[j] == t) k = j;
        if (k < 0) TEST_FAIL("draw %d: token %d is not among the 5 best", d, t);
        seen[k]++;
    }
    for (int j = 0; j < 5; j++) ASSERT(seen[j] > 0);
    moe_sampler_destroy(s);
}

/* probabilities 0.4 0.3 0.2 0.1 at T = 1 (logits = log p): cumulative 0.4,
 * 0.7, 0.9, 1.0 best first, so top_p 0.35 keeps {0}, 0.65 keeps {0, 1},
 * 0.75 keeps {0, 1, 2}, 0.95 keeps all. The tokens are listed out of order
 * to exercise the sort. */
TEST(sampler_top_p_smallest_prefix) {
    const float l[5] = {logf(0.2f), logf(0.4f), -INFINITY, logf(0.1f), logf(0.3f)};
    const float ps[4] = {0.35f, 0.65f, 0.75f, 0.95f};
    const int keep[4][5] = {{0, 1, 0, 0, 0}, {0, 1, 0, 0, 1}, {1, 1, 0, 0, 1}, {1, 1, 0, 1, 1}};
    for (int c = 0; c < 4; c++) {
        moe_sampler_params p = moe_sampler_default_params();
        p.temperature = 1.0f;
        p.top_p = ps[c];
        p.seed = (uint64_t)c;
        assert_support(p, l, 5, keep[c]);
    }
    /* after top-k 3 the mass renormalises to 4/9 3/9 2/9: top_p 0.75
     * (cumulative 0.444, 0.778) keeps {1, 4} only */
    moe_sampler_params p = moe_sampler_default_params();
    p.temperature = 1.0f;
    p.top_k = 3;
    p.top_p = 0.75f;
    const int keep_k[5] = {0, 1, 0, 0, 1};
    assert_support(p, l, 5, keep_k);
}

/* probabilities 0.5 0.25 0.15 0.1: min_p 0.25 -> threshold 0.125 keeps
 * {0, 1, 2}; min_p 0.45 -> 0.225 keeps {0, 1}; min_p 0.9 keeps {0}. */
TEST(sampler_min_p_relative_threshold) {
    const float l[4] = {logf(0.1f), logf(0.5f), logf(0.15f), logf(0.25f)};
    const float mps[3] = {0.25f, 0.45f, 0.9f};
    const int keep[3][4] = {{0, 1, 1, 1}, {0, 1, 0, 1}, {0, 1, 0, 0}};
    for (int c = 0; c < 3; c++) {
        moe_sampler_params p = moe_sampler_default_params();
        p.temperature = 1.0f;
        p.min_p = mps[c];
        assert_support(p, l, 4, keep[c]);
    }
    /* min-p acts after temperature: at T = 2 the ratios are sqrt'd, so
     * 0.25/0.5 -> 0.707, 0.15/0.5 -> 0.548, 0.1/0.5 -> 0.447; min_p 0.5
     * keeps {1, 3, 2} */
    moe_sampler_params p = moe_sampler_default_params();
    p.temperature = 2.0f;
    p.min_p = 0.5f;
    const int keep_t[4] = {0, 1, 1, 1};
    assert_support(p, l, 4, keep_t);
}

/* The reported logprobs are log_softmax of the penalised logits, so they
 * show the penalised values exactly. */
static void assert_penalised(moe_sampler *s, const float *l, const float *want, int n) {
    moe_sample_result r;
    ASSERT_EQ_INT(moe_sampler_sample(s, l, &r), 0);
    ASSERT_EQ_INT(r.n_top, n);
    for (int i = 0; i < n; i++) {
        int t = r.top[i].token;
        ASSERT(t >= 0 && t < n);
        ASSERT_NEAR(r.top[i].logprob, ref_logprob(want, n, t), 1e-5);
    }
}

/* Accepts seq[0..n), each accepted. */
static void accept_all(moe_sampler *s, const int32_t *seq, int n) {
    for (int i = 0; i < n; i++) ASSERT_EQ_INT(moe_sampler_accept(s, seq[i]), 0);
}

/* A sampler over n tokens with params p (n logprobs) that has seen
 * seen[0..n_seen) penalises the logits l to want. */
static void check_penalised(moe_sampler_params p, int n, const float *l, const int32_t *seen,
                            int n_seen, const float *want) {
    p.n_logprobs = n;
    moe_sampler *s = mk(n, p);
    accept_all(s, seen, n_seen);
    assert_penalised(s, l, want, n);
    moe_sampler_destroy(s);
}

TEST(sampler_repeat_penalty_formula) {
    /* penalty 2 on tokens 0 (positive: /2) and 1 (negative: *2); 0 twice
     * still penalised once */
    const float l[4] = {2.0f, -1.0f, 0.5f, 1.5f};
    moe_sampler_params p = moe_sampler_default_params();
    p.repeat_penalty = 2.0f;
    p.n_logprobs = 4;
    moe_sampler *s = mk(4, p);
    ASSERT_EQ_INT(draw(s, l), 0);
    accept_all(s, (const int32_t[]){0, 0, 1}, 3);
    const float want[4] = {1.0f, -2.0f, 0.5f, 1.5f};
    assert_penalised(s, l, want, 4);
    ASSERT_EQ_INT(draw(s, l), 3); /* greedy flips from 0 to 3 */
    moe_sampler_destroy(s);
}

TEST(sampler_frequency_presence_penalty_formula) {
    /* tokens 0, 0, 1 seen: l -= 0.5 * count + 0.25 * (count > 0) */
    const float l[4] = {3.0f, 2.0f, 1.0f, 0.0f};
    moe_sampler_params p = moe_sampler_default_params();
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    const float want[4] = {1.75f, 1.25f, 1.0f, 0.0f};
    check_penalised(p, 4, l, (const int32_t[]){0, 0, 1}, 3, want);

    /* repeat then frequency/presence, on a negative logit:
     * -1 * 2 - (1 * 1 + 0.5) = -3.5 */
    const float l2[3] = {-1.0f, 0.0f, 0.5f};
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 1.0f;
    p.presence_penalty = 0.5f;
    const float want2[3] = {-3.5f, 0.0f, 0.5f};
    check_penalised(p, 3, l2, (const int32_t[]){0}, 1, want2);
}

TEST(sampler_penalty_window_last_n) {
    /* window 2: after 0, 0, 1, 2 only {1, 2} count once each */
    const float l[4] = {3.0f, 2.0f, 1.0f, 0.0f};
    moe_sampler_params p = moe_sampler_default_params();
    p.frequency_penalty = 1.0f;
    p.penalty_last_n = 2;
    p.n_logprobs = 4;
    moe_sampler *s = mk(4, p);
    const int32_t seq[4] = {0, 0, 1, 2};
    accept_all(s, seq, 4);
    const float want[4] = {3.0f, 1.0f, 0.0f, 0.0f};
    assert_penalised(s, l, want, 4);
    ASSERT_EQ_INT(moe_sampler_accept(s, 4), MOE_ERANGE);
    ASSERT_EQ_INT(moe_sampler_accept(s, -1), MOE_ERANGE);
    assert_penalised(s, l, want, 4); /* unchanged by the rejected tokens */
    /* a token that left the window and comes back counts once: window
     * {2, 0} after 0, 0, 1, 2, 0 */
    ASSERT_EQ_INT(moe_sampler_accept(s, 0), 0);
    const float want2[4] = {2.0f, 2.0f, 0.0f, 0.0f};
    assert_penalised(s, l, want2, 4);
    /* reset forgets the window */
    moe_sampler_reset(s);
    assert_penalised(s, l, l, 4);
    ASSERT_EQ_INT(moe_sampler_accept(s, 0), 0); /* counts start again from 0 */
    const float want3[4] = {2.0f, 2.0f, 1.0f, 0.0f};
    assert_penalised(s, l, want3, 4);
    moe_sampler_destroy(s);
    /* penalty_last_n 0: no penalties at all */
    p.penalty_last_n = 0;
    check_penalised(p, 4, l, (const int32_t[]){0}, 1, l);
}

static void run_seq(moe_sampler *s, const float *l, int32_t *out, int n) {
    for (int i = 0; i < n; i++) out[i] = draw(s, l);
}

TEST(sampler_seed_reproducible_and_reset) {
    enum { V = 8, N = 200 };
    const float l[V] = {0.1f, 0.2f, 0.3f, 0.0f, -0.1f, 0.25f, 0.15f, 0.05f};
    moe_sampler_params p = moe_sampler_default_params();
    p.temperature = 1.0f;
    p.top_p = 0.9f;
    p.seed = 7;
    moe_sampler *a = mk(V, p), *b = mk(V, p);
    p.seed = 8;
    moe_sampler *c = mk(V, p);
    int32_t sa[N], sb[N], sc[N], sr[N];
    run_seq(a, l, sa, N);
    run_seq(b, l, sb, N);
    run_seq(c, l, sc, N);
    ASSERT(memcmp(sa, sb, sizeof sa) == 0);
    ASSERT(memcmp(sa, sc, sizeof sa) != 0);
    moe_sampler_reset(a);
    run_seq(a, l, sr, N);
    ASSERT(memcmp(sa, sr, sizeof sa) == 0);
    /* a failed call does not advance the PRNG */
    moe_sampler_reset(a);
    const float bad[V] = {NAN, 0, 0, 0, 0, 0, 0, 0};
    moe_sample_result r;
    ASSERT_EQ_INT(moe_sampler_sample(a, bad, &r), MOE_ENUMERIC);
    run_seq(a, l, sr, N);
    ASSERT(memcmp(sa, sr, sizeof sa) == 0);
    moe_sampler_destroy(c);
    moe_sampler_destroy(b);
    moe_sampler_destroy(a);
}

TEST(sampler_logprobs_match_log_softmax) {
    enum { V = 50 };
    float l[V];
    uint64_t seed = 5;
    for (int i = 0; i < V; i++) l[i] = 4.0f * test_rand_f32(&seed);
    l[10] = l[20] = l[30] = 5.0f; /* a three-way tie for the best */
    l[40] = -INFINITY;            /* masked: never listed */
    for (int greedy = 0; greedy < 2; greedy++) {
        moe_sampler_params p = moe_sampler_default_params();
        p.temperature = greedy ? 0.0f : 1.0f;
        p.n_logprobs = MOE_SAMPLER_MAX_LOGPROBS;
        p.seed = 3;
        moe_sampler *s = mk(V, p);
        for (int d = 0; d < 20; d++) {
            moe_sample_result r;
            ASSERT_EQ_INT(moe_sampler_sample(s, l, &r), 0);
            if (greedy) ASSERT_EQ_INT(r.token, 10);
            ASSERT(r.token != 40);
            ASSERT_NEAR(r.logprob, ref_logprob(l, V, r.token), 1e-5);
            ASSERT_EQ_INT(r.n_top, MOE_SAMPLER_MAX_LOGPROBS);
            ASSERT_EQ_INT(r.top[0].token, 10);
            ASSERT_EQ_INT(r.top[1].token, 20);
            ASSERT_EQ_INT(r.top[2].token, 30);
            for (int i = 0; i < r.n_top; i++) {
                ASSERT_NEAR(r.top[i].logprob, ref_logprob(l, V, r.top[i].token), 1e-5);
                if (i > 0) {
                    int a = r.top[i - 1].token, b = r.top[i].token;
                    ASSERT(l[a] > l[b] || (l[a] == l[b] && a < b));
                }
            }
            /* nothing left out beats the last listed */
            int last = r.top[r.n_top - 1].token;
            for (int t = 0; t < V; t++) {
                int listed = 0;
                for (int i = 0; i < r.n_top; i++) listed |= r.top[i].token == t;
                if (!listed) ASSERT(l[t] < l[last] || (l[t] == l[last] && t > last));
            }
        }
        moe_sampler_destroy(s);
    }
    /* fewer unmasked tokens than asked: only those are listed */
    const float m[4] = {-INFINITY, 1.0f, -INFINITY, 1.0f};
    moe_sampler_params p = moe_sampler_default_params();
    p.n_logprobs = 3;
    moe_sampler *s = mk(4, p);
    moe_sample_result r;
    ASSERT_EQ_INT(moe_sampler_sample(s, m, &r), 0);
    ASSERT_EQ_INT(r.token, 1);
    ASSERT_EQ_INT(r.n_top, 2);
    ASSERT_EQ_INT(r.top[0].token, 1);
    ASSERT_EQ_INT(r.top[1].token, 3);
    ASSERT_NEAR(r.logprob, log(0.5), 1e-6);
    moe_sampler_destroy(s);
}

TEST(sampler_masked_never_drawn) {
    const float l[5] = {-INFINITY, 0.0f, -INFINITY, 0.0f, -INFINITY};
    moe_sampler_params p = moe_sampler_default_params();
    p.temperature = 1.5f;
    const int keep[5] = {0, 1, 0, 1, 0};
    assert_support(p, l, 5, keep);
}

TEST(sampler_bad_logits) {
    moe_sampler_params p = moe_sampler_default_params();
    for (int greedy = 0; greedy < 2; greedy++) {
        p.temperature = greedy ? 0.0f : 1.0f;
        moe_sampler *s = mk(4, p);
        moe_sample_result r;
        const float nan_l[4] = {0, 1, NAN, 2};
        ASSERT_EQ_INT(moe_sampler_sample(s, nan_l, &r), MOE_ENUMERIC);
        ASSERT_EQ_INT(r.token, -1);
        ASSERT_EQ_INT(r.n_top, 0);
        const float inf_l[4] = {0, INFINITY, 1, 2};
        ASSERT_EQ_INT(moe_sampler_sample(s, inf_l, &r), MOE_ENUMERIC);
        const float masked[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        ASSERT_EQ_INT(moe_sampler_sample(s, masked, &r), MOE_EINVAL);
        ASSERT_EQ_INT(r.token, -1);
        moe_sampler_destroy(s);
    }
    /* a penalty that overflows a logit to +inf */
    p = moe_sampler_default_params();
    p.frequency_penalty = -3e38f;
    moe_sampler *s = mk(2, p);
    ASSERT_EQ_INT(moe_sampler_accept(s, 0), 0);
    ASSERT_EQ_INT(moe_sampler_accept(s, 0), 0);
    moe_sample_result r;
    const float l[2] = {3e38f, 0};
    ASSERT_EQ_INT(moe_sampler_sample(s, l, &r), MOE_ENUMERIC);
    moe_sampler_destroy(s);
}

static void expect_invalid(int n_vocab, moe_sampler_params p, const char *field) {
    moe_sampler *s = (moe_sampler *)&s; /* not NULL: create must clear it */
    moe_err err = {0};
    ASSERT_EQ_INT(moe_sampler_create(&s, n_vocab, &p, &err), MOE_EINVAL);
    ASSERT(s == NULL);
    ASSERT_EQ_INT(err.code, MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, field);
    ASSERT_EQ_INT(moe_sampler_create(&s, n_vocab, &p, NULL), MOE_EINVAL); /* NULL err */
}

TEST(sampler_params_validation) {
    const moe_sampler_params d = moe_sampler_default_params();
    ASSERT_EQ_INT(moe_sampler_params_check(10, &d, NULL), 0);
    moe_sampler_params p;
    expect_invalid(0, d, "n_vocab");
    p = d, p.temperature = -0.1f, expect_invalid(10, p, "temperature");
    p = d, p.temperature = NAN, expect_invalid(10, p, "temperature");
    p = d, p.temperature = INFINITY, expect_invalid(10, p, "temperature");
    p = d, p.top_k = -1, expect_invalid(10, p, "top_k");
    p = d, p.top_p = 0.0f, expect_invalid(10, p, "top_p");
    p = d, p.top_p = 1.01f, expect_invalid(10, p, "top_p");
    p = d, p.top_p = NAN, expect_invalid(10, p, "top_p");
    p = d, p.min_p = 1.0f, expect_invalid(10, p, "min_p");
    p = d, p.min_p = -0.01f, expect_invalid(10, p, "min_p");
    p = d, p.repeat_penalty = 0.0f, expect_invalid(10, p, "repeat_penalty");
    p = d, p.repeat_penalty = INFINITY, expect_invalid(10, p, "repeat_penalty");
    p = d, p.frequency_penalty = NAN, expect_invalid(10, p, "frequency_penalty");
    p = d, p.presence_penalty = -INFINITY, expect_invalid(10, p, "presence_penalty");
    p = d, p.penalty_last_n = -1, expect_invalid(10, p, "penalty_last_n");
    p = d, p.n_logprobs = 21, expect_invalid(10, p, "n_logprobs");
    p = d, p.n_logprobs = -1, expect_invalid(10, p, "n_logprobs");
    /* the edges that are in range */
    p = d, p.top_p = 1.0f, p.min_p = 0.99f, p.n_logprobs = 20, p.top_k = 1000;
    moe_sampler *s = mk(10, p);
    moe_sampler_destroy(s);
    moe_sampler_destroy(NULL);
}
