/*
 * moe/sampler.h - choosing the next token from one row of logits, with the
 * knobs an OpenAI-compatible server exposes: greedy, temperature, top-k,
 * top-p (nucleus), min-p, repetition / frequency / presence penalties, a seed
 * for reproducible runs, and logprobs.
 *
 *     moe_sampler_params p = moe_sampler_default_params(); // greedy
 *     p.temperature = 0.8f; p.top_p = 0.95f; p.seed = 42; p.n_logprobs = 5;
 *     moe_sampler *s;
 *     moe_err err;
 *     if (moe_sampler_create(&s, n_vocab, &p, &err) < 0)
 *         return reply_400(err.msg);               // a bad request, not a crash
 *     for (int i = 0; i < n_prompt; i++)
 *         moe_sampler_accept(s, prompt[i]);        // optional: penalise the prompt
 *     for (;;) {
 *         moe_sample_result r;
 *         int rc = moe_sampler_sample(s, logits, &r); // logits: (n_vocab)
 *         if (rc < 0) break;                       // MOE_ENUMERIC: NaN in logits
 *         moe_sampler_accept(s, r.token);          // sample does not record it
 *         emit(r.token, r.logprob, r.top, r.n_top);
 *         ...
 *     }
 *     moe_sampler_destroy(s);
 *
 * The order of operations, per call of moe_sampler_sample:
 *   1. penalties, on a copy of the logits, for every token t seen in the
 *      window of the last penalty_last_n accepted tokens (count c >= 1):
 *        repetition (llama.cpp / CTRL):  l > 0 ? l / repeat_penalty
 *                                              : l * repeat_penalty
 *        then OpenAI:  l -= frequency_penalty * c + presence_penalty
 *      The result is "the penalised logits".
 *   2. logprobs: log_softmax(penalised logits), i.e. at temperature 1 and
 *      before any truncation - the model's own distribution, as OpenAI
 *      reports it. The chosen token's value and the n_logprobs best
 *      (descending, ties by lower id) go into the result.
 *   3. temperature == 0: greedy, the argmax of the penalised logits (ties:
 *      lowest id); steps 4-7 are skipped and no random number is drawn.
 *   4. temperature: p ~ exp(l / temperature) over the unmasked tokens.
 *   5. top-k (top_k > 0): keep the top_k best tokens (ties: lower id first).
 *   6. top-p (top_p < 1): renormalise over what is left and keep the
 *      smallest prefix, best first, whose cumulative probability >= top_p.
 *   7. min-p (min_p > 0): keep tokens with p >= min_p * p_max.
 *   8. draw one uniform number from the sampler's own PRNG (xoshiro256**
 *      seeded by splitmix64 from seed) and pick from the renormalised rest.
 * This is the vLLM / Hugging Face order (temperature before truncation);
 * llama.cpp applies temperature last, which gives different top-p sets.
 *
 * Masking: a logit of -INFINITY is a masked token (grammar, stop lists). It
 * is never chosen and never listed in the top alternatives. NaN or
 * +INFINITY in the logits, or penalties that overflow a logit to +inf/NaN,
 * give MOE_ENUMERIC; every token masked gives MOE_EINVAL.
 *
 * Memory: all scratch (n_vocab candidates, the penalty window, counts) is
 * allocated by moe_sampler_create; moe_sampler_sample and moe_sampler_accept
 * allocate nothing. Top-k is a heap selection, O(n_vocab + k log n_vocab),
 * not a full sort. A sampler holds no global state; one sampler per request,
 * used by one thread at a time.
 */
#ifndef MOE_SAMPLER_H
#define MOE_SAMPLER_H

#include <stdint.h>

#include "moe/error.h"

/* The most alternatives a result can carry (OpenAI's top_logprobs limit). */
#define MOE_SAMPLER_MAX_LOGPROBS 20
/* The largest penalty window moe_sampler_create accepts. */
#define MOE_SAMPLER_MAX_PENALTY_LAST_N (1 << 20)

typedef struct moe_sampler moe_sampler;

typedef struct moe_sampler_params {
    float temperature;       /* >= 0; 0 = greedy (default 0) */
    int top_k;               /* >= 0; 0 = off (default 0) */
    float top_p;             /* (0, 1]; 1 = off (default 1) */
    float min_p;             /* [0, 1); 0 = off (default 0) */
    float repeat_penalty;    /* > 0; 1 = off (default 1) */
    float frequency_penalty; /* finite; 0 = off (default 0) */
    float presence_penalty;  /* finite; 0 = off (default 0) */
    int penalty_last_n;      /* penalty window in accepted tokens,
                                0..MOE_SAMPLER_MAX_PENALTY_LAST_N;
                                0 = no penalties (default 64) */
    uint64_t seed;           /* PRNG seed: same seed, same draws (default 0) */
    int n_logprobs;          /* alternatives to report,
                                0..MOE_SAMPLER_MAX_LOGPROBS (default 0) */
} moe_sampler_params;

typedef struct moe_token_logprob {
    int32_t token;
    float logprob; /* log_softmax of the penalised logits, at temperature 1 */
} moe_token_logprob;

typedef struct moe_sample_result {
    int32_t token; /* the chosen token; -1 after an error */
    float logprob; /* its log probability (see moe_token_logprob) */
    int n_top;     /* entries in top: min(n_logprobs, unmasked tokens) */
    moe_token_logprob top[MOE_SAMPLER_MAX_LOGPROBS]; /* (n_top) best first,
                                                        ties by lower id */
} moe_sample_result;

/* Greedy-equivalent defaults: temperature 0, every filter and penalty off,
 * penalty_last_n 64, seed 0, no logprobs. */
moe_sampler_params moe_sampler_default_params(void);

/* Checks p (ranges as in moe_sampler_params; NaN is never in range) and
 * n_vocab > 0. Returns 0, or MOE_EINVAL with a message naming the field in
 * err (may be NULL). */
int moe_sampler_params_check(int n_vocab, const moe_sampler_params *p, moe_err *err);

/* Creates a sampler for rows of n_vocab logits; p is copied. All scratch is
 * allocated here. On success *out is owned by the caller (free with
 * moe_sampler_destroy); on failure *out is NULL and MOE_EINVAL (a bad
 * parameter, see moe_sampler_params_check) or MOE_ENOMEM is returned. */
int moe_sampler_create(moe_sampler **out, int n_vocab, const moe_sampler_params *p, moe_err *err);

/* Frees s and its scratch; NULL is allowed. */
void moe_sampler_destroy(moe_sampler *s);

/* Records token in the penalty window (the oldest entry falls out once the
 * window holds penalty_last_n tokens). Feed the prompt with it if the prompt
 * should be penalised too, then every token sampled. O(1), allocates
 * nothing. Returns 0, or MOE_ERANGE if token is not in [0, n_vocab) (the
 * window is left unchanged). */
int moe_sampler_accept(moe_sampler *s, int32_t token);

/* Picks a token from logits (n_vocab floats, borrowed for the call, not
 * modified) in the order given at the top of this file and fills *out.
 * Does not record the token: call moe_sampler_accept. Allocates nothing.
 * Returns 0; MOE_ENUMERIC if logits hold NaN or +inf or a penalty pushes a
 * logit to +inf; MOE_EINVAL if every token is masked (-inf). On error
 * out->token is -1, out->n_top is 0 and the PRNG has not advanced. */
int moe_sampler_sample(moe_sampler *s, const float *logits, moe_sample_result *out);

/* Forgets the penalty window and reseeds the PRNG from params.seed: the
 * next calls repeat a fresh sampler's results exactly. */
void moe_sampler_reset(moe_sampler *s);

#endif
