/* vocab_internal.h - text helpers shared inside libmoe. */
#ifndef MOE_VOCAB_INTERNAL_H
#define MOE_VOCAB_INTERNAL_H

#include <stdint.h>

/* GPT-2's byte-to-unicode map: byte b's code point, and its UTF-8 (1 or 2
 * bytes written to out; returns the length). */
uint32_t moe__gpt2_byte_cp(int b);
int moe__gpt2_byte_char(int b, char out[2]);

#endif
