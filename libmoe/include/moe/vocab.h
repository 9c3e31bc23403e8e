/*
 * moe/vocab.h - a model's vocabulary from its GGUF (tokenizer.ggml.*), and
 * text <-> token ids: byte-level BPE ("gpt2": Llama 3, Qwen, DeepSeek, OLMoE)
 * and SentencePiece-style BPE ("llama": Llama 2, Mistral, Mixtral).
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
    MOE_VOCAB_SPM = 1, /* "llama": SentencePiece BPE with scores and byte fallback */
} moe_vocab_kind;

typedef struct moe_vocab moe_vocab;

/* Reads tokens, types, merges (and scores), special ids from g (borrowed
 * only during the call). MOE_ENOTSUP for a tokenizer model other than gpt2
 * or llama; MOE_EFORMAT with the key named for inconsistent data. */
int moe_vocab_load(moe_vocab **out, const moe_gguf *g, moe_err *err);
void moe_vocab_free(moe_vocab *v);

moe_vocab_kind moe_vocab_kind_of(const moe_vocab *v);
int moe_vocab_n_tokens(const moe_vocab *v);
/* Bytes of the longest token text (a token's raw bytes are never longer). */
size_t moe_vocab_max_token_len(const moe_vocab *v);
int moe_vocab_bos(const moe_vocab *v); /* -1 if none */
int moe_vocab_eos(const moe_vocab *v); /* -1 if none */
int moe_vocab_unk(const moe_vocab *v); /* -1 if none */
/* 1 if text gets a leading space (SentencePiece's rule; add_space_prefix) */
int moe_vocab_add_space_prefix(const moe_vocab *v);
/* 1 if text is NFC-normalised before it is split, as the tokenizer.json
 * asked (GGUF key moemesh.tokenizer.normalizer: "nfc" or "none"; without it,
 * pre-tokenizer qwen2 normalises, as every Qwen2/Qwen3 tokenizer does, which
 * llama.cpp skips). Special-token text is matched before normalising. */
int moe_vocab_nfc(const moe_vocab *v);
/* tokenizer.ggml.scores[id] (0 without scores) */
float moe_vocab_score(const moe_vocab *v, int32_t id);
/* A token's text as stored in the file (not NUL-terminated), or NULL. */
const char *moe_vocab_text(const moe_vocab *v, int32_t id, size_t *len);
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

/* GPT-2's byte-to-unicode map (byte-level BPE vocabularies): writes byte b's
 * character as UTF-8 (1 or 2 bytes) to out and returns the length. */
int moe_gpt2_byte_char(int b, char out[2]);

/* The raw bytes a token stands for (byte-level BPE: its characters mapped
 * back to bytes; SentencePiece: U+2581 as a space, <0xNN> as that byte;
 * unknown, control and user-defined tokens: their text; SentencePiece unused
 * tokens: nothing). Returns the length written, or
 * MOE_ENOSPC / MOE_ERANGE. The bytes of one token need not be whole UTF-8:
 * join pieces with moe_utf8_complete before showing them. */
int moe_vocab_token_bytes(const moe_vocab *v, int32_t id, char *out, size_t cap);

/* Tokenizes text as llama.cpp does: user-defined tokens' text is always
 * matched, control and unknown tokens' only when parse_special (each token,
 * longest first, splits the text at all its occurrences); the text between
 * is split by the vocabulary's pre-tokenizer (tokenizer.ggml.pre) and
 * encoded with byte-level BPE, or SentencePiece-encoded (a leading space at
 * the start and after each special token, when add_space_prefix). add_bos
 * prepends BOS (if the vocabulary has one). Returns the number of ids written
 * to out, MOE_ENOSPC if cap is too small (err says how many are needed),
 * MOE_ENOTSUP for an unsupported pre-tokenizer. Invalid UTF-8 is tokenized
 * byte by byte, never an error. */
int moe_tokenize(const moe_vocab *v, const char *text, size_t len, int add_bos, int parse_special,
                 int32_t *out, int cap, moe_err *err);

/* Token ids to text (llama.cpp's detokenize): MOE_DETOK_STRIP_SPACE removes
 * the space a SentencePiece tokenizer put before the first token (for a
 * whole text; not for a continuation); MOE_DETOK_SKIP_SPECIAL gives control
 * and unknown tokens no text. Writes at most cap bytes and returns the full
 * length (more than cap: call again with a larger buffer), or MOE_ERANGE for
 * an id outside the vocabulary. */
enum { MOE_DETOK_STRIP_SPACE = 1, MOE_DETOK_SKIP_SPECIAL = 2 };
long moe_detokenize(const moe_vocab *v, const int32_t *ids, int n, int flags, char *out,
                    size_t cap);

/* Streaming detokenizer: text for one token at a time, never ending inside
 * a UTF-8 character (the bytes of a character split over tokens are held
 * until it is complete). Plain struct: no allocation.
 *
 *     moe_detok_stream ds;
 *     moe_detok_stream_init(&ds, v, 0);
 *     for each generated id: n = moe_detok_stream_push(&ds, id, buf, sizeof buf); emit buf[0..n)
 *     at the end: n = moe_detok_stream_flush(&ds, buf, sizeof buf);   // a cut-off tail
 */
typedef struct moe_detok_stream {
    const moe_vocab *v;
    int flags;    /* MOE_DETOK_* for the first token */
    int n_tokens; /* pushed so far */
    int n_pend;
    char pend[4]; /* an incomplete UTF-8 character */
} moe_detok_stream;
void moe_detok_stream_init(moe_detok_stream *s, const moe_vocab *v, int flags);
/* Writes the newly complete text (at most cap bytes; 4 + the longest
 * token's length always suffices) and returns its length, or MOE_ENOSPC
 * (nothing consumed) / MOE_ERANGE. */
int moe_detok_stream_push(moe_detok_stream *s, int32_t id, char *out, size_t cap);
/* The held bytes of a character that never completed; returns their count. */
int moe_detok_stream_flush(moe_detok_stream *s, char *out, size_t cap);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8
 * sequence (a streaming detokenizer emits that much and keeps the rest). */
size_t moe_utf8_complete(const char *s, size_t n);

#endif
