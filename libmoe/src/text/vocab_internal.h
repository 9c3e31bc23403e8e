/* vocab_internal.h - text helpers shared inside libmoe. */
#ifndef MOE_VOCAB_INTERNAL_H
#define MOE_VOCAB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* GPT-2's byte-to-unicode map: byte b's code point (moe_gpt2_byte_char in
 * moe/vocab.h gives its UTF-8). */
uint32_t moe__gpt2_byte_cp(int b);

/* The token whose text is these raw bytes in GPT-2 characters, or -1. */
typedef struct moe_vocab moe_vocab;
int32_t moe__vocab_find_bytes(const moe_vocab *v, const char *bytes, size_t len);

/* The tokens matched as text before splitting (unknown, control,
 * user-defined), longest text first; returns how many. */
int moe__vocab_specials(const moe_vocab *v, const int32_t **ids);

/* The byte token of byte b (GPT-2 character or <0xNN>), or -1. */
int32_t moe__vocab_byte_token(const moe_vocab *v, int b);

/* SentencePiece-encodes one raw fragment (spm.c): writes at most cap ids to
 * out and returns how many there are (possibly more than cap), or
 * MOE_ENOMEM / MOE_ENOTFOUND (a byte with no token and no <unk>). */
int moe__spm_encode(const moe_vocab *v, const char *text, size_t len, int prefix_space,
                    int32_t *out, int cap);

#endif
