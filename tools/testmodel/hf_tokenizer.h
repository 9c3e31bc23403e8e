/* hf_tokenizer.h - a Hugging Face tokenizer.json as a GGUF vocabulary
 * (see hf_tokenizer.c). Internal: moe_testmodel_write uses it so a test model
 * can carry a real tokenizer's vocabulary.
 *
 *     moe__hf_vocab v;
 *     if (moe__hf_vocab_load(&v, "tokenizer.json", &err) < 0) ...
 *     ... v.tokens[id], v.types[id], v.merges, v.pre ...
 *     moe__hf_vocab_free(&v);
 */
#ifndef MOE_TEXT_HF_TOKENIZER_H
#define MOE_TEXT_HF_TOKENIZER_H

#include <stdint.h>

#include "moe/error.h"

typedef struct moe__hf_vocab {
    int n_tokens;   /* ids are dense: 0..n_tokens-1 (model.vocab and added_tokens) */
    char **tokens;  /* (n_tokens) id-indexed token text, owned */
    int32_t *types; /* (n_tokens) GGUF token types: 1 normal, 2 unknown, 3 control,
                     * 4 user-defined, 6 byte (<0xNN>, SentencePiece) */
    int spm;        /* 1: SentencePiece-style BPE with byte fallback (Llama 2,
                     * Mistral): write tokenizer.ggml.model "llama" with scores */
    float *scores;  /* (n_tokens) spm only: minus the rank of the first merge
                     * that makes the token (so merges go in HF's order), owned */
    int unk_id;     /* -1: none */
    int nfc;        /* 1: the normalizer is NFC (byte-level BPE; Qwen) */
    int n_merges;
    char **merges;       /* (n_merges) "left right", in rank order, owned */
    const char *pre;     /* tokenizer.ggml.pre for llama.cpp: "llama-bpe", "qwen2",
                          * "deepseek-v3" or "gpt-2" (a static string); NULL for spm */
    int bos_id;          /* -1: not known */
    int eos_id;          /* -1: not known */
    int add_bos;         /* 1 if the tokenizer adds BOS by default */
    char *chat_template; /* tokenizer_config.json's chat_template (a string), or NULL; owned */
} moe__hf_vocab;

/* Reads a BPE tokenizer.json into v: byte-level (a ByteLevel pre-tokenizer)
 * or SentencePiece-style (byte_fallback, spaces as U+2581 by a Prepend +
 * Replace normalizer or a Metaspace pre-tokenizer); bos/eos come from
 * tokenizer_config.json next to it when that exists, else from the
 * post-processor's template, else "<|endoftext|>" if it is a special token.
 * MOE_ENOTSUP for other models (Unigram, WordPiece) and for a pre-tokenizer
 * llama.cpp has no name for here (the message quotes its regex);
 * MOE_EFORMAT for a malformed file or ids that are not dense. On failure v
 * holds nothing to free. */
int moe__hf_vocab_load(moe__hf_vocab *v, const char *path, moe_err *err);

/* Frees what moe__hf_vocab_load allocated; v may be zeroed. */
void moe__hf_vocab_free(moe__hf_vocab *v);

#endif
