/*
 * moe/vocab.h - a model's vocabulary from its GGUF (tokenizer.ggml.*), and
 * text <-> token ids for byte-level BPE ("gpt2" models).
 *
 *     moe_vocab *v;
 *     if (moe_vocab_load(&v, model->gguf, &err) < 0) ...
 *     int32_t ids[256];
 *     int n = moe_vocab_encode_word(v, "hello", 5, ids, 256);   // one pre-token
 *     char buf[64];
 *     int len = moe_vocab_token_bytes(v, ids[0], buf, sizeof buf); // its bytes
 *
 * Byte-level BPE works on bytes mapped to printable characters (GPT-2's
 * byte-to-unicode table); merges apply lowest rank first. Splitting text
 * into pre-tokens (the model family's pre-tokenizer) comes on top of this.
 */
#ifndef MOE_VOCAB_H
#define MOE_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "moe/error.h"
#include "moe/gguf.h"

typedef enum moe_vocab_kind {
    MOE_VOCAB_BPE = 0, /* tokenizer.ggml.model "gpt2": byte-level BPE */
    MOE_VOCAB_SPM = 1, /* "llama": SentencePiece (not yet supported for encoding) */
} moe_vocab_kind;

typedef struct moe_vocab moe_vocab;

/* Reads tokens, types, merges (and scores), special ids from g (borrowed
 * only during the call). MOE_ENOTSUP for a tokenizer model other than gpt2
 * or llama; MOE_EFORMAT with the key named for inconsistent data. */
int moe_vocab_load(moe_vocab **out, const moe_gguf *g, moe_err *err);
void moe_vocab_free(moe_vocab *v);

moe_vocab_kind moe_vocab_kind_of(const moe_vocab *v);
int moe_vocab_n_tokens(const moe_vocab *v);
int moe_vocab_bos(const moe_vocab *v); /* -1 if none */
int moe_vocab_eos(const moe_vocab *v); /* -1 if none */
/* 1 if a prompt should start with BOS (tokenizer.ggml.add_bos_token) */
int moe_vocab_add_bos(const moe_vocab *v);
/* tokenizer.ggml.pre, "" if absent */
const char *moe_vocab_pre(const moe_vocab *v);
/* GGUF token type: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte */
int moe_vocab_token_type(const moe_vocab *v, int32_t id);
/* The id of a token's exact text, or -1. */
int32_t moe_vocab_find(const moe_vocab *v, const char *text, size_t len);

/* Encodes one pre-token (raw bytes) with byte-level BPE into out (at most
 * cap ids). Returns the number of ids, or MOE_ENOSPC if cap is too small,
 * or MOE_ENOTFOUND if a byte has no token (a vocabulary without all 256). */
int moe_vocab_encode_word(const moe_vocab *v, const char *word, size_t len, int32_t *out, int cap);

/* The raw bytes a token stands for (byte-level BPE: its characters mapped
 * back to bytes; control tokens: their text). Returns the length written, or
 * MOE_ENOSPC / MOE_ERANGE. The bytes of one token need not be whole UTF-8:
 * join pieces with moe_utf8_complete before showing them. */
int moe_vocab_token_bytes(const moe_vocab *v, int32_t id, char *out, size_t cap);

/* Tokenizes text: special tokens (control and user-defined) are matched as
 * text when parse_special; the rest is split by the vocabulary's
 * pre-tokenizer (tokenizer.ggml.pre: default, gpt-2, olmo so far) and each
 * piece encoded with BPE. add_bos prepends BOS (if the vocabulary has one).
 * Returns the number of ids written to out, MOE_ENOSPC if cap is too small
 * (err says how many are needed), MOE_ENOTSUP for an unsupported
 * pre-tokenizer or a SentencePiece vocabulary. Invalid UTF-8 is tokenized
 * byte by byte, never an error. */
int moe_tokenize(const moe_vocab *v, const char *text, size_t len, int add_bos, int parse_special,
                 int32_t *out, int cap, moe_err *err);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8
 * sequence (a streaming detokenizer emits that much and keeps the rest). */
size_t moe_utf8_complete(const char *s, size_t n);

#endif
