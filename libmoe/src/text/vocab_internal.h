/* vocab_internal.h - text helpers shared inside libmoe. */
#ifndef MOE_VOCAB_INTERNAL_H
#define MOE_VOCAB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* GPT-2's byte-to-unicode map: byte b's code point, and its UTF-8 (1 or 2
 * bytes written to out; returns the length). */
uint32_t moe__gpt2_byte_cp(int b);
int moe__gpt2_byte_char(int b, char out[2]);

/* The token whose text is these raw bytes in GPT-2 characters, or -1. */
typedef struct moe_vocab moe_vocab;
int32_t moe__vocab_find_bytes(const moe_vocab *v, const char *bytes, size_t len);

#endif
