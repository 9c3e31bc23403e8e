/*
 * text/generate.c - generation sequences (moe/generate.h): sampler, streaming
 * detokenizer and stop-string matcher behind one step function.
 *
 * The text a sequence has decoded but not yet emitted lives in `held`: at
 * most a stop string's length - 1 (a suffix that may begin a stop string)
 * plus the bytes of one UTF-8 character. A step appends its token's text and
 * feeds each new byte to one Knuth-Morris-Pratt matcher per stop string (its
 * state: the longest suffix of the text so far that is a prefix of the stop
 * string), so a step costs O(new bytes x stop strings) however long the stop
 * strings are. A match ends the sequence; otherwise the longest prefix that
 * cannot begin a stop string, cut at a character boundary, goes to `delta`.
 */
#include "moe/generate.h"

#include <stdlib.h>
#include <string.h>

#include "../internal.h"
#include "unicode.h"

struct moe_gen_seq {
    const moe_vocab *v; /* borrowed; NULL: ids only */
    int n_vocab;
    moe_gen_params p; /* stop and stop_tokens point into this struct's memory */
    moe_sampler *smp;
    moe_detok_stream ds;
    int32_t eos;     /* -1: none */
    int32_t *tokens; /* (cap_tokens) prompt, then generated; grows up to max_tokens_all */
    int n_prompt, n_tokens, cap_tokens, max_tokens_all;
    int max_gen;          /* generated tokens allowed by max_tokens (-1: no limit) */
    char **stop;          /* (p.n_stop) copies, in one allocation with stop_len */
    size_t *stop_len;     /* (p.n_stop) */
    size_t *stop_state;   /* (p.n_stop) KMP state: bytes of the stop string matched */
    int32_t **stop_pi;    /* (p.n_stop) KMP prefix function of each (stop_len entries) */
    int32_t *stop_tokens; /* (p.n_stop_tokens) */
    char *held;           /* (cap_text) decoded, not yet emitted */
    size_t n_held;
    char *delta; /* (cap_text) the text a step emits */
    size_t cap_text;
    char *bytes;    /* (1 + MOE_SAMPLER_MAX_LOGPROBS) x max_tok: token bytes */
    size_t max_tok; /* longest token text in the vocabulary */
    moe_gen_finish finish;
};

/* The tokens list's first size past the prompt (then it doubles). */
#define GEN_TOKENS_FIRST 1024

/* Knuth-Morris-Pratt: pi[i] = length of the longest proper prefix of
 * t[0..i] that is also a suffix of it. */
static void kmp_prefix(const char *t, size_t n, int32_t *pi) {
    if (n) pi[0] = 0;
    for (size_t i = 1; i < n; i++) {
        int32_t q = pi[i - 1];
        while (q > 0 && t[i] != t[q]) q = pi[q - 1];
        pi[i] = q + (t[i] == t[q]);
    }
}

/* ==== Parameters ==== */

moe_gen_params moe_gen_default_params(void) {
    moe_gen_params p = {
        .sampling = moe_sampler_default_params(),
        .max_tokens = 16,
        .n_ctx = 0,
        .ignore_eos = 0,
        .eos_id = MOE_GEN_EOS_FROM_VOCAB,
        .penalize_prompt = 1,
        .skip_special = 0,
    };
    return p;
}

const char *moe_gen_finish_reason(moe_gen_finish f) {
    switch (f) {
    case MOE_GEN_FINISH_EOS:
    case MOE_GEN_FINISH_STOP_TOKEN:
    case MOE_GEN_FINISH_STOP_STRING:
        return "stop";
    case MOE_GEN_FINISH_MAX_TOKENS:
    case MOE_GEN_FINISH_CONTEXT:
        return "length";
    case MOE_GEN_FINISH_ABORT:
        return "abort";
    case MOE_GEN_FINISH_ERROR:
        return "error";
    default:
        return NULL;
    }
}

/* Checks what the sampler does not: stops, limits, prompt ids. */
static int params_check(const moe_vocab *v, int n_vocab, const int32_t *prompt, int n_prompt,
                        const moe_gen_params *p, moe_err *err) {
    if (!p) return moe_err_set(err, MOE_EINVAL, "generate: params is NULL");
    if (!prompt || n_prompt < 1) return moe_err_set(err, MOE_EINVAL, "the prompt has no tokens");
    if (p->max_tokens > MOE_GEN_MAX_TOKENS)
        return moe_err_set(err, MOE_EINVAL, "generate: max_tokens must be <= %d, got %d",
                           MOE_GEN_MAX_TOKENS, p->max_tokens);
    if (p->n_ctx < 0)
        return moe_err_set(err, MOE_EINVAL, "generate: n_ctx must be >= 0 (0 = no limit)");
    if (p->max_tokens < 0 && p->n_ctx == 0)
        return moe_err_set(err, MOE_EINVAL, "generate: max_tokens < 0 (no limit) needs n_ctx > 0");
    if (p->n_ctx > 0 && n_prompt >= p->n_ctx)
        return moe_err_set(err, MOE_ERANGE,
                           "generate: the prompt (%d tokens) must be shorter than n_ctx %d",
                           n_prompt, p->n_ctx);
    if (p->n_stop < 0 || p->n_stop > MOE_GEN_MAX_STOP || (p->n_stop > 0 && !p->stop))
        return moe_err_set(err, MOE_EINVAL, "generate: n_stop must be in [0, %d]",
                           MOE_GEN_MAX_STOP);
    if (p->n_stop > 0 && !v)
        return moe_err_set(err, MOE_EINVAL, "generate: stop strings need the model's vocabulary");
    for (int k = 0; k < p->n_stop; k++) {
        const size_t l = p->stop[k] ? strlen(p->stop[k]) : 0;
        if (l == 0 || l > MOE_GEN_MAX_STOP_LEN)
            return moe_err_set(err, MOE_EINVAL, "generate: stop string %d must have 1 to %d bytes",
                               k, MOE_GEN_MAX_STOP_LEN);
        uint32_t cp;
        for (size_t i = 0; i < l;) {
            const int n = moe__utf8_decode(p->stop[k] + i, l - i, &cp);
            if (n <= 0)
                return moe_err_set(err, MOE_EINVAL,
                                   "generate: stop string %d is not valid UTF-8 (byte %zu)", k, i);
            i += (size_t)n;
        }
    }
    if (p->n_stop_tokens < 0 || p->n_stop_tokens > MOE_GEN_MAX_STOP_TOKENS ||
        (p->n_stop_tokens > 0 && !p->stop_tokens))
        return moe_err_set(err, MOE_EINVAL, "generate: n_stop_tokens must be in [0, %d]",
                           MOE_GEN_MAX_STOP_TOKENS);
    for (int k = 0; k < p->n_stop_tokens; k++)
        if (p->stop_tokens[k] < 0 || p->stop_tokens[k] >= n_vocab)
            return moe_err_set(err, MOE_ERANGE,
                               "generate: stop token %d: id %d out of range [0, %d)", k,
                               p->stop_tokens[k], n_vocab);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= n_vocab)
            return moe_err_set(err, MOE_ERANGE, "prompt token %d: id %d out of range [0, %d)", i,
                               prompt[i], n_vocab);
    return 0;
}

/* ==== Prompts ==== */

int moe_gen_tokenize_text(const moe_vocab *v, const char *text, size_t len, int flags,
                          int32_t **ids, int *n, moe_err *err) {
    int rc;
    int32_t *tok = NULL;
    *ids = NULL;
    *n = 0;
    if (!v || (!text && len))
        return moe_err_set(err, MOE_EINVAL, "generate: no vocabulary or text");
    if (len > (size_t)1 << 30) return moe_err_set(err, MOE_ERANGE, "generate: prompt over 1 GiB");
    tok = malloc((len + 2) * sizeof *tok); /* at most a token per byte, BOS and a space */
    if (!tok) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    const int bos = !(flags & MOE_GEN_TEXT_NO_BOS) && moe_vocab_add_bos(v);
    rc = moe_tokenize(v, text ? text : "", len, bos, !!(flags & MOE_GEN_TEXT_SPECIAL), tok,
                      (int)len + 2, err);
    if (rc == 0) rc = moe_err_set(err, MOE_EINVAL, "the prompt has no tokens");
    if (rc < 0) goto fail;
    *ids = tok;
    *n = rc;
    return 0;
fail:
    free(tok);
    return rc;
}

int moe_gen_tokenize_chat(const moe_vocab *v, int chat_kind, const moe_chat_msg *msgs, int n_msgs,
                          int32_t **ids, int *n, moe_err *err) {
    size_t need = 0;
    char *text = NULL;
    *ids = NULL;
    *n = 0;
    int rc = moe_chat_apply(chat_kind, msgs, n_msgs, 1, NULL, 0, &need, err);
    if (rc < 0 && rc != MOE_ENOSPC) goto done;
    text = malloc(need ? need : 1);
    if (!text) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto done;
    }
    rc = moe_chat_apply(chat_kind, msgs, n_msgs, 1, text, need, &need, err);
    if (rc < 0) goto done;
    /* the template writes its own BOS text; its markers are special tokens */
    rc = moe_gen_tokenize_text(v, text, need - 1, MOE_GEN_TEXT_SPECIAL | MOE_GEN_TEXT_NO_BOS, ids,
                               n, err);
done:
    free(text);
    return rc;
}

/* ==== Life cycle ==== */

int moe_gen_seq_create(moe_gen_seq **out, const moe_vocab *v, int n_vocab, const int32_t *prompt,
                       int n_prompt, const moe_gen_params *p, moe_err *err) {
    int rc;
    moe_gen_seq *s = NULL;
    if (!out) return moe_err_set(err, MOE_EINVAL, "generate: out is NULL");
    *out = NULL;
    if (n_vocab == 0 && v) n_vocab = moe_vocab_n_tokens(v);
    if (n_vocab <= 0) return moe_err_set(err, MOE_EINVAL, "generate: n_vocab must be > 0");
    if ((rc = params_check(v, n_vocab, prompt, n_prompt, p, err)) < 0) return rc;

    s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->v = v;
    s->n_vocab = n_vocab;
    s->p = *p;
    if ((rc = moe_sampler_create(&s->smp, n_vocab, &p->sampling, err)) < 0) goto fail;
    s->eos = p->eos_id == MOE_GEN_EOS_FROM_VOCAB ? (v ? moe_vocab_eos(v) : -1) : p->eos_id;

    /* tokens: the prompt and what may be generated */
    long room = p->max_tokens;
    if (p->n_ctx > 0 && (room < 0 || room > (long)p->n_ctx - n_prompt))
        room = (long)p->n_ctx - n_prompt;
    s->max_gen = p->max_tokens;
    s->max_tokens_all = n_prompt + (int)room;
    /* the list grows by doubling (moe_gen_seq_step), so a large max_tokens
     * costs nothing until it is used */
    s->cap_tokens = n_prompt + (int)(room < GEN_TOKENS_FIRST ? room : GEN_TOKENS_FIRST);
    s->tokens = malloc((size_t)s->cap_tokens * sizeof *s->tokens);
    if (!s->tokens) goto nomem;
    memcpy(s->tokens, prompt, (size_t)n_prompt * sizeof *prompt);
    s->n_prompt = s->n_tokens = n_prompt;

    /* stop strings and tokens: copies */
    size_t max_stop = 0, all = 0;
    for (int k = 0; k < p->n_stop; k++) {
        const size_t l = strlen(p->stop[k]);
        all += l + 1;
        if (l > max_stop) max_stop = l;
    }
    if (p->n_stop > 0) {
        /* one allocation: pointers, lengths, states, prefix functions, texts */
        const size_t n = (size_t)p->n_stop;
        s->stop = malloc(n * (2 * sizeof(char *) + 2 * sizeof(size_t)) +
                         (all - n) * sizeof(int32_t) + all);
        if (!s->stop) goto nomem;
        s->stop_pi = (int32_t **)(s->stop + n);
        s->stop_len = (size_t *)(s->stop_pi + n);
        s->stop_state = s->stop_len + n;
        int32_t *pi = (int32_t *)(s->stop_state + n);
        char *str = (char *)(pi + (all - n));
        for (int k = 0; k < p->n_stop; k++) {
            const size_t sl = strlen(p->stop[k]);
            s->stop_len[k] = sl;
            s->stop_state[k] = 0;
            memcpy(str, p->stop[k], sl + 1);
            s->stop[k] = str;
            str += sl + 1;
            s->stop_pi[k] = pi;
            kmp_prefix(s->stop[k], sl, pi);
            pi += sl;
        }
    }
    s->p.stop = (const char *const *)s->stop;
    if (p->n_stop_tokens > 0) {
        s->stop_tokens = malloc((size_t)p->n_stop_tokens * sizeof *s->stop_tokens);
        if (!s->stop_tokens) goto nomem;
        memcpy(s->stop_tokens, p->stop_tokens, (size_t)p->n_stop_tokens * sizeof *s->stop_tokens);
    }
    s->p.stop_tokens = s->stop_tokens;

    /* text buffers: a token's bytes are never longer than its stored text */
    if (v) {
        s->max_tok = moe_vocab_max_token_len(v);
        moe_detok_stream_init(&s->ds, v, p->skip_special ? MOE_DETOK_SKIP_SPECIAL : 0);
    }
    /* held: a stop string's prefix + a cut character; then a token's text and
     * the detokenizer's pending bytes */
    s->cap_text = max_stop + 8 + s->max_tok + 8;
    s->held = malloc(s->cap_text);
    s->delta = malloc(s->cap_text);
    s->bytes = malloc((1 + MOE_SAMPLER_MAX_LOGPROBS) * (s->max_tok ? s->max_tok : 1));
    if (!s->held || !s->delta || !s->bytes) goto nomem;

    if (p->penalize_prompt)
        for (int i = 0; i < n_prompt; i++) moe_sampler_accept(s->smp, prompt[i]);
    if (p->max_tokens == 0) s->finish = MOE_GEN_FINISH_MAX_TOKENS;
    *out = s;
    return 0;

nomem:
    rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
fail:
    moe_gen_seq_destroy(s);
    return rc;
}

/* moe_gen_seq_create over the n ids a tokenizer returned with status rc (a
 * failure passes through with *out NULL); frees ids either way. */
static int seq_create_tokenized(moe_gen_seq **out, const moe_vocab *v, int n_vocab, int rc,
                                int32_t *ids, int n, const moe_gen_params *p, moe_err *err) {
    if (rc == 0)
        rc = moe_gen_seq_create(out, v, n_vocab, ids, n, p, err);
    else if (out)
        *out = NULL;
    free(ids);
    return rc;
}

int moe_gen_seq_create_text(moe_gen_seq **out, const moe_vocab *v, int n_vocab, const char *text,
                            size_t len, int flags, const moe_gen_params *p, moe_err *err) {
    int32_t *ids = NULL;
    int n = 0;
    int rc = moe_gen_tokenize_text(v, text, len, flags, &ids, &n, err);
    return seq_create_tokenized(out, v, n_vocab, rc, ids, n, p, err);
}

int moe_gen_seq_create_chat(moe_gen_seq **out, const moe_vocab *v, int n_vocab, int chat_kind,
                            const moe_chat_msg *msgs, int n_msgs, const moe_gen_params *p,
                            moe_err *err) {
    int32_t *ids = NULL;
    int n = 0;
    int rc = moe_gen_tokenize_chat(v, chat_kind, msgs, n_msgs, &ids, &n, err);
    return seq_create_tokenized(out, v, n_vocab, rc, ids, n, p, err);
}

void moe_gen_seq_destroy(moe_gen_seq *s) {
    if (!s) return;
    moe_sampler_destroy(s->smp);
    MOE_FREE_ALL(s->bytes, s->delta, s->held, s->stop_tokens, s->stop, s->tokens, s);
}

const int32_t *moe_gen_seq_tokens(const moe_gen_seq *s, int *n_tokens) {
    if (n_tokens) *n_tokens = s->n_tokens;
    return s->tokens;
}

int moe_gen_seq_n_prompt(const moe_gen_seq *s) {
    return s->n_prompt;
}
int moe_gen_seq_n_generated(const moe_gen_seq *s) {
    return s->n_tokens - s->n_prompt;
}
int moe_gen_seq_n_tokens(const moe_gen_seq *s) {
    return s->n_tokens;
}
moe_gen_finish moe_gen_seq_finish(const moe_gen_seq *s) {
    return s->finish;
}

/* ==== Text: hold-back and stop strings ==== */

/* How much of held[0..n) can be emitted while a stop string may still match:
 * all but the longest matched prefix of a stop string (its KMP state), cut at
 * a character boundary. */
static size_t stop_safe(const moe_gen_seq *s, size_t n) {
    size_t hold = 0;
    for (int k = 0; k < s->p.n_stop; k++)
        if (s->stop_state[k] > hold) hold = s->stop_state[k];
    if (hold > n) hold = n; /* cannot happen: the matched bytes are still held */
    return moe_utf8_complete(s->held, n - hold);
}

/* Feeds held[old..n) (this step's new bytes) to every stop string's matcher.
 * Returns the stop string whose first match in them starts earliest (ties:
 * the first listed), its start in *at; or -1. */
static int stop_find(moe_gen_seq *s, size_t old, size_t n, size_t *at) {
    int found = -1;
    for (int k = 0; k < s->p.n_stop; k++) {
        const char *t = s->stop[k];
        const int32_t *pi = s->stop_pi[k];
        const size_t sl = s->stop_len[k];
        size_t q = s->stop_state[k];
        for (size_t i = old; i < n; i++) {
            const char c = s->held[i];
            while (q > 0 && t[q] != c) q = (size_t)pi[q - 1];
            if (t[q] == c) q++;
            if (q == sl) {
                const size_t start = i + 1 - sl;
                if (found < 0 || start < *at) found = k, *at = start;
                break; /* the sequence ends: later bytes do not matter */
            }
        }
        s->stop_state[k] = q;
    }
    return found;
}

/* Moves held[0..n) to the delta and keeps the rest held. */
static void emit(moe_gen_seq *s, moe_gen_step *out, size_t n) {
    memcpy(s->delta, s->held, n);
    memmove(s->held, s->held + n, s->n_held - n);
    s->n_held -= n;
    out->text = s->delta;
    out->text_len = n;
}

/* Ends the sequence other than by a stop string: everything held goes out,
 * with the bytes of a character the end cut off. */
static void end_flush(moe_gen_seq *s, moe_gen_finish why, moe_gen_step *out) {
    s->finish = why;
    if (s->v) {
        const int l = moe_detok_stream_flush(&s->ds, s->held + s->n_held, s->cap_text - s->n_held);
        if (l > 0) s->n_held += (size_t)l;
    }
    emit(s, out, s->n_held);
    out->finish = why;
}

/* The raw bytes of id into the slot-th token buffer. */
static const char *token_bytes(moe_gen_seq *s, int slot, int32_t id, int *n) {
    char *b = s->bytes + (size_t)slot * s->max_tok;
    const int l = s->v && s->max_tok ? moe_vocab_token_bytes(s->v, id, b, s->max_tok) : 0;
    *n = l > 0 ? l : 0;
    return b;
}

static void step_clear(moe_gen_step *out, const moe_gen_seq *s) {
    out->token = -1;
    out->logprob = 0.0f;
    out->bytes = s->bytes;
    out->n_bytes = 0;
    out->n_top = 0;
    out->text = s->delta;
    out->text_len = 0;
    out->finish = MOE_GEN_FINISH_NONE;
    out->stop_index = -1;
}

/* ==== Steps ==== */

int moe_gen_seq_step(moe_gen_seq *s, const float *logits, moe_gen_step *out, moe_err *err) {
    moe_sample_result r;
    if (s->finish != MOE_GEN_FINISH_NONE)
        return moe_err_set(err, MOE_EINVAL, "generate: the sequence has finished (%s)",
                           moe_gen_finish_reason(s->finish));
    if (!logits || !out) return moe_err_set(err, MOE_EINVAL, "generate: logits or out is NULL");
    step_clear(out, s);
    if (s->n_tokens == s->cap_tokens) { /* below max_tokens_all, or it would have ended */
        const int cap =
            s->cap_tokens > s->max_tokens_all / 2 ? s->max_tokens_all : 2 * s->cap_tokens;
        int32_t *t = realloc(s->tokens, (size_t)cap * sizeof *t);
        if (!t) {
            end_flush(s, MOE_GEN_FINISH_ERROR, out);
            return moe_err_set(err, MOE_ENOMEM, "out of memory for the token list");
        }
        s->tokens = t;
        s->cap_tokens = cap;
    }
    int rc = moe_sampler_sample(s->smp, logits, &r);
    if (rc < 0) {
        end_flush(s, MOE_GEN_FINISH_ERROR, out);
        return moe_err_set(err, rc, "sampling failed: %s",
                           rc == MOE_ENUMERIC ? "non-finite logits" : "every token is masked");
    }
    out->token = r.token;
    out->logprob = r.logprob;
    out->bytes = token_bytes(s, 0, r.token, &out->n_bytes);
    out->n_top = r.n_top;
    for (int i = 0; i < r.n_top; i++) {
        out->top[i].token = r.top[i].token;
        out->top[i].logprob = r.top[i].logprob;
        out->top[i].bytes = token_bytes(s, 1 + i, r.top[i].token, &out->top[i].n_bytes);
    }
    s->tokens[s->n_tokens++] = r.token;
    moe_sampler_accept(s->smp, r.token);

    /* EOS and stop tokens end it and are not part of the text */
    if (r.token == s->eos && !s->p.ignore_eos) {
        end_flush(s, MOE_GEN_FINISH_EOS, out);
        return 0;
    }
    for (int k = 0; k < s->p.n_stop_tokens; k++)
        if (r.token == s->stop_tokens[k]) {
            out->stop_index = k;
            end_flush(s, MOE_GEN_FINISH_STOP_TOKEN, out);
            return 0;
        }

    if (s->v) {
        const size_t old = s->n_held;
        const int l = moe_detok_stream_push(&s->ds, r.token, s->held + old, s->cap_text - old);
        MOE_ASSERT(l != MOE_ENOSPC);       /* cap_text fits the held text and any token */
        if (l > 0) s->n_held += (size_t)l; /* an id past the vocabulary has no text */
        size_t at = 0;
        const int k = stop_find(s, old, s->n_held, &at);
        if (k >= 0) {
            emit(s, out, at); /* the stop string and what follows are dropped */
            s->n_held = 0;
            s->finish = out->finish = MOE_GEN_FINISH_STOP_STRING;
            out->stop_index = k;
            return 0;
        }
    }
    if (s->max_gen >= 0 && s->n_tokens - s->n_prompt >= s->max_gen)
        end_flush(s, MOE_GEN_FINISH_MAX_TOKENS, out);
    else if (s->p.n_ctx > 0 && s->n_tokens >= s->p.n_ctx)
        end_flush(s, MOE_GEN_FINISH_CONTEXT, out);
    else
        emit(s, out, stop_safe(s, s->n_held));
    return 0;
}

static int end_now(moe_gen_seq *s, moe_gen_finish why, moe_gen_step *out) {
    moe_gen_step tmp;
    if (s->finish != MOE_GEN_FINISH_NONE) return MOE_EINVAL;
    if (!out) out = &tmp;
    step_clear(out, s);
    end_flush(s, why, out);
    return 0;
}

int moe_gen_seq_cancel(moe_gen_seq *s, moe_gen_step *out) {
    return end_now(s, MOE_GEN_FINISH_ABORT, out);
}

int moe_gen_seq_fail(moe_gen_seq *s, moe_gen_step *out) {
    return end_now(s, MOE_GEN_FINISH_ERROR, out);
}
