/*
 * moe/generate.h - the request loop of a text-generation server, one step at
 * a time: a prompt (text, chat messages or token ids) becomes a sequence;
 * each step's logits go in, and out come the sampled token, the text it adds
 * (held back while it could begin a stop string), its logprobs and, at the
 * end, why the sequence finished.
 *
 * A sequence (moe_gen_seq) is pure state: its tokens, a sampler
 * (moe/sampler.h), a streaming detokenizer (moe/vocab.h) and the stop-string
 * matcher. It never touches a model context: whoever runs the model (a
 * scheduler, moectl) owns the moe_ctx and its slots, runs moe_ctx_decode and
 * hands each sequence its row of logits. Every buffer is sized when the
 * sequence is created (its sampler's scratch is O(n_vocab)); moe_gen_seq_step
 * allocates only when the token list outgrows its first 1024 generated
 * tokens (it doubles, up to max_tokens). A step costs O(new bytes x stop
 * strings) for the stop strings, whatever their length.
 *
 * One sequence, one slot (what `moectl generate` does):
 *
 *     moe_gen_params gp = moe_gen_default_params();
 *     gp.sampling.temperature = 0.7f; gp.sampling.seed = 42;
 *     gp.max_tokens = 64;
 *     const char *stops[] = {"\n\n"};
 *     gp.stop = stops; gp.n_stop = 1;
 *     moe_gen_seq *s;
 *     if (moe_gen_seq_create_text(&s, vocab, m->hp.n_vocab, "Hello", 5, 0, &gp, &err) < 0)
 *         return reply_400(err.msg);
 *     int n;
 *     const int32_t *ids = moe_gen_seq_tokens(s, &n);     // the prompt: prefill it
 *     ... decode ids[0..n) at positions 0..n-1 in slot 0, logits of the last row ...
 *     moe_gen_step st;
 *     for (;;) {
 *         if (moe_gen_seq_step(s, moe_ctx_logits(c, 0), &st, &err) < 0) break; // st.text: the rest
 *         send(st.text, st.text_len);                    // may be empty (held back)
 *         if (st.finish) break;                          // moe_gen_finish_reason(st.finish)
 *         ... decode st.token at position moe_gen_seq_n_tokens(s) - 1 in slot 0 ...
 *     }
 *     moe_gen_seq_destroy(s);
 *
 * Many sequences in one context (a continuous-batching scheduler). The
 * scheduler owns the moe_ctx (n_slots >= the sequences it runs at once) and
 * a map sequence -> slot. Each iteration:
 *   1. Admit: for a new request, create its sequence, take a free slot k and
 *      moe_ctx_slot_clear(c, k). Its prompt, moe_gen_seq_tokens(s, &n) (all of
 *      it: nothing is generated yet), is to be prefilled: rows
 *      (ids[i], pos i, slot k), possibly over several iterations (chunked
 *      prefill); only the row of the prompt's last token (i == n - 1) asks
 *      for logits.
 *   2. Build one moe_batch: for every running sequence that has generated at
 *      least one token, one row (its last token, position
 *      moe_gen_seq_n_tokens(s) - 1, its slot) with logits = 1; plus the
 *      prefill rows of step 1. Remember, in row order, which sequence each
 *      logits-flagged row belongs to.
 *   3. moe_ctx_decode(c, &batch, &err). On failure, end the affected
 *      sequences with moe_gen_seq_fail (finish "error") and free their slots.
 *   4. For the j-th flagged row (in row order), moe_gen_seq_step(s_j,
 *      moe_ctx_logits(c, j), &st, &err) and send st.text / st.token /
 *      st.logprob. Read the logits before the next decode overwrites them.
 *   5. A sequence whose st.finish is not MOE_GEN_FINISH_NONE is done: its
 *      slot is free again (clear it before reuse) and it can be destroyed.
 *      A client that went away: moe_gen_seq_cancel (finish "abort"), then
 *      the same.
 * Sequences are independent: each is used by one thread at a time; different
 * sequences may step on different threads. The vocabulary is shared,
 * read-only, and must outlive every sequence created from it.
 *
 * Text. A token's text comes from moe_detok_stream (a continuation: a
 * SentencePiece leading space is kept). Deltas are whole UTF-8 characters;
 * text that could be the start of a stop string is held until it is decided.
 * When a stop string matches (anywhere in the text, also across tokens), the
 * text before it is emitted and the stop string and anything after it are
 * not. When the sequence ends any other way, the last delta carries all the
 * held text, including the bytes of a character the end cut off. The
 * concatenation of all deltas is the generated text.
 */
#ifndef MOE_GENERATE_H
#define MOE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "moe/chat.h"
#include "moe/error.h"
#include "moe/sampler.h"
#include "moe/vocab.h"

/* Limits checked by moe_gen_seq_create. */
#define MOE_GEN_MAX_STOP 16          /* stop strings */
#define MOE_GEN_MAX_STOP_LEN 1024    /* bytes of one stop string */
#define MOE_GEN_MAX_STOP_TOKENS 64   /* stop token ids */
#define MOE_GEN_MAX_TOKENS (1 << 24) /* max_tokens */
/* eos_id's default: the vocabulary's end-of-sequence id (none without one). */
#define MOE_GEN_EOS_FROM_VOCAB (-2)

/* Why a sequence ended. The OpenAI finish_reason of each is
 * moe_gen_finish_reason's. */
typedef enum moe_gen_finish {
    MOE_GEN_FINISH_NONE = 0,    /* still running */
    MOE_GEN_FINISH_EOS,         /* "stop": the end-of-sequence token */
    MOE_GEN_FINISH_STOP_TOKEN,  /* "stop": a token of params.stop_tokens */
    MOE_GEN_FINISH_STOP_STRING, /* "stop": a string of params.stop matched */
    MOE_GEN_FINISH_MAX_TOKENS,  /* "length": max_tokens generated */
    MOE_GEN_FINISH_CONTEXT,     /* "length": prompt + generated reached n_ctx */
    MOE_GEN_FINISH_ABORT,       /* "abort": moe_gen_seq_cancel */
    MOE_GEN_FINISH_ERROR,       /* "error": moe_gen_seq_fail or a failed step */
} moe_gen_finish;

typedef struct moe_gen_params {
    moe_sampler_params sampling; /* temperature, top-k/p, min-p, penalties, seed,
                                    n_logprobs (top alternatives, 0..20); copied.
                                    Default: moe_sampler_default_params() (greedy) */
    int max_tokens;              /* tokens to generate, 0..MOE_GEN_MAX_TOKENS; < 0: no limit
                                    but n_ctx (which must then be set). Default 16 */
    int n_ctx;                   /* > 0: prompt + generated never exceed it (the slot's
                                    positions): finish "length" when they reach it; the
                                    prompt must be shorter. 0: no limit (default) */
    int ignore_eos;              /* 1: the EOS token is generated like any other (default 0) */
    int32_t eos_id;              /* end-of-sequence id; -1: none; default MOE_GEN_EOS_FROM_VOCAB */
    int penalize_prompt;         /* 1: the prompt enters the sampler's penalty window (default 1) */
    int skip_special;            /* 1: control and unknown tokens add no text (default 0) */
    const char *const *stop;     /* (n_stop) NUL-terminated, non-empty stop strings;
                                    copied by create (borrowed only during the call) */
    int n_stop;                  /* 0..MOE_GEN_MAX_STOP; needs a vocabulary */
    const int32_t *stop_tokens;  /* (n_stop_tokens) ids that end the sequence like
                                    EOS (not part of the text); copied by create */
    int n_stop_tokens;           /* 0..MOE_GEN_MAX_STOP_TOKENS */
} moe_gen_params;

/* One alternative of a step's top logprobs. */
typedef struct moe_gen_top {
    int32_t token;
    float logprob;     /* as moe_token_logprob */
    const char *bytes; /* (n_bytes) the token's raw bytes (moe_vocab_token_bytes;
                          not whole UTF-8); borrowed until the next call on the
                          sequence */
    int n_bytes;
} moe_gen_top;

/* What one step (or the end of a sequence) gives back. Pointers are borrowed
 * from the sequence until the next call on it (step, cancel, fail, destroy). */
typedef struct moe_gen_step {
    int32_t token;     /* the sampled id; -1 when nothing was sampled (cancel,
                          fail, a failed step) */
    float logprob;     /* its log probability (always filled; moe/sampler.h) */
    const char *bytes; /* (n_bytes) its raw bytes; empty without a vocabulary */
    int n_bytes;
    int n_top; /* entries in top: min(sampling.n_logprobs, unmasked) */
    moe_gen_top top[MOE_SAMPLER_MAX_LOGPROBS]; /* (n_top) best first */
    const char *text; /* (text_len) the text this step adds; not NUL-terminated */
    size_t text_len;
    moe_gen_finish finish; /* MOE_GEN_FINISH_NONE while the sequence goes on */
    int stop_index;        /* STOP_STRING / STOP_TOKEN: index in stop / stop_tokens; else -1 */
} moe_gen_step;

typedef struct moe_gen_seq moe_gen_seq;

/* max_tokens 16, n_ctx 0, eos from the vocabulary, penalize_prompt 1, greedy
 * sampling, no stop strings or stop tokens. */
moe_gen_params moe_gen_default_params(void);

/* "stop" (EOS, STOP_TOKEN, STOP_STRING), "length" (MAX_TOKENS, CONTEXT),
 * "abort", "error"; NULL for NONE or an invalid value. Static strings. */
const char *moe_gen_finish_reason(moe_gen_finish f);

/* Flags of moe_gen_tokenize_text. */
enum {
    MOE_GEN_TEXT_SPECIAL = 1, /* special-token text becomes those tokens */
    MOE_GEN_TEXT_NO_BOS = 2,  /* no BOS, whatever the vocabulary says */
};

/* Tokenizes a prompt (len bytes of text) with v (borrowed for the call): BOS
 * first if the vocabulary asks for it (tokenizer.ggml.add_bos_token) unless
 * MOE_GEN_TEXT_NO_BOS. On success *ids is a malloc'd array of *n ids owned by
 * the caller (free()). MOE_EINVAL if the prompt has no tokens; MOE_ENOMEM;
 * MOE_ENOTSUP from moe_tokenize. */
int moe_gen_tokenize_text(const moe_vocab *v, const char *text, size_t len, int flags,
                          int32_t **ids, int *n, moe_err *err);

/* Renders n_msgs messages (borrowed for the call) in chat format chat_kind (a
 * moe_chat_kind: moe_chat_template_detect on the model's
 * tokenizer.chat_template, or moe_chat_template_parse_name) with the
 * generation prompt, and tokenizes the text with special tokens and no extra
 * BOS (the template writes its own). *ids as moe_gen_tokenize_text. Errors of
 * moe_chat_apply (MOE_EINVAL: unknown role or kind), and as
 * moe_gen_tokenize_text. */
int moe_gen_tokenize_chat(const moe_vocab *v, int chat_kind, const moe_chat_msg *msgs, int n_msgs,
                          int32_t **ids, int *n, moe_err *err);

/* Creates a sequence from a prompt of n_prompt >= 1 ids (copied), for rows of
 * n_vocab logits (the model's hp.n_vocab; 0: the vocabulary's size). v may be
 * NULL (ids in, ids out: no text, no stop strings); otherwise it is borrowed
 * until moe_gen_seq_destroy. p is copied (stop strings and stop tokens too).
 * Every buffer the steps need is allocated here (the token list grows). Stop
 * strings must be valid UTF-8. On success *out is owned by
 * the caller (moe_gen_seq_destroy); if max_tokens is 0 the sequence is born
 * finished (MOE_GEN_FINISH_MAX_TOKENS). Errors (*out NULL, err says which
 * field): MOE_EINVAL (a bad parameter, see moe_sampler_params_check; an
 * empty prompt; stop strings without a vocabulary), MOE_ERANGE (a prompt or
 * stop token id outside [0, n_vocab); a prompt not shorter than n_ctx),
 * MOE_ENOMEM. */
int moe_gen_seq_create(moe_gen_seq **out, const moe_vocab *v, int n_vocab, const int32_t *prompt,
                       int n_prompt, const moe_gen_params *p, moe_err *err);

/* moe_gen_tokenize_text, then moe_gen_seq_create (v must be non-NULL). */
int moe_gen_seq_create_text(moe_gen_seq **out, const moe_vocab *v, int n_vocab, const char *text,
                            size_t len, int flags, const moe_gen_params *p, moe_err *err);

/* moe_gen_tokenize_chat, then moe_gen_seq_create (v must be non-NULL). */
int moe_gen_seq_create_chat(moe_gen_seq **out, const moe_vocab *v, int n_vocab, int chat_kind,
                            const moe_chat_msg *msgs, int n_msgs, const moe_gen_params *p,
                            moe_err *err);

/* Frees s and everything it owns; NULL is allowed. */
void moe_gen_seq_destroy(moe_gen_seq *s);

/* The sequence's tokens: the prompt, then every generated token (an EOS or
 * stop token that ended it included), in an array the sequence owns (it
 * never moves: borrowed until moe_gen_seq_destroy); *n_tokens (if non-NULL)
 * gets their count, which grows by one per step. */
const int32_t *moe_gen_seq_tokens(const moe_gen_seq *s, int *n_tokens);
/* Number of prompt tokens (for usage counts). */
int moe_gen_seq_n_prompt(const moe_gen_seq *s);
/* Number of generated tokens so far. */
int moe_gen_seq_n_generated(const moe_gen_seq *s);
/* Prompt + generated: the next decode row of a running sequence is its last
 * token at position moe_gen_seq_n_tokens(s) - 1. */
int moe_gen_seq_n_tokens(const moe_gen_seq *s);
/* MOE_GEN_FINISH_NONE while running, else why it ended. */
moe_gen_finish moe_gen_seq_finish(const moe_gen_seq *s);

/* One step: samples from logits (n_vocab floats after the sequence's last
 * token; borrowed for the call, not modified), records the token, and fills
 * *out (see moe_gen_step). In this order: the token is EOS (unless
 * ignore_eos) -> EOS; a stop token -> STOP_TOKEN (neither adds text); its text
 * completes a stop string -> STOP_STRING (the earliest match in the text;
 * among matches at the same place, the first listed); max_tokens reached ->
 * MAX_TOKENS; n_ctx reached -> CONTEXT. Allocates nothing.
 * Returns 0 (also when the sequence ends). MOE_EINVAL if it has already
 * finished (nothing changes). A failed sampling - MOE_ENUMERIC (NaN or +inf
 * in the logits) or MOE_EINVAL (every token masked) - ends the sequence with
 * MOE_GEN_FINISH_ERROR: out->token is -1 and out->text holds the held text. */
int moe_gen_seq_step(moe_gen_seq *s, const float *logits, moe_gen_step *out, moe_err *err);

/* Ends a running sequence with MOE_GEN_FINISH_ABORT (the client went away,
 * the server stops). out (may be NULL) gets the held text, token -1. Returns
 * 0, or MOE_EINVAL if it had already finished. */
int moe_gen_seq_cancel(moe_gen_seq *s, moe_gen_step *out);

/* Ends a running sequence with MOE_GEN_FINISH_ERROR (the caller's decode
 * failed); otherwise as moe_gen_seq_cancel. */
int moe_gen_seq_fail(moe_gen_seq *s, moe_gen_step *out);

#endif
