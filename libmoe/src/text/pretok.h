/* pretok.h - pre-tokenizers (see pretok.c). Internal. */
#ifndef MOE_TEXT_PRETOK_H
#define MOE_TEXT_PRETOK_H

#include <stddef.h>

enum {
    MOE__PRETOK_DEFAULT = 0,
    MOE__PRETOK_GPT2 = 1,
    MOE__PRETOK_LLAMA3 = 2,
    MOE__PRETOK_QWEN2 = 3,
    MOE__PRETOK_DEEPSEEK3 = 4,
    MOE__PRETOK_DEEPSEEK_LLM = 5
};

/* The pre-tokenizer for a tokenizer.ggml.pre name, or -1 if not supported. */
int moe__pretok_kind(const char *pre);

/* Splits s[0..n) into pieces: writes np+1 boundaries to off (piece k is
 * [off[k], off[k+1])) and returns np; tmp is scratch of the same size.
 * -1 if cap (entries of off and tmp) is too small. */
int moe__pretok_split(int kind, const char *s, size_t n, size_t *off, size_t *tmp, int cap);

#endif
