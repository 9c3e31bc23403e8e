/*
 * unicode.h - UTF-8 and Unicode character classes for the tokenizers
 * (internal to libmoe, not installed).
 *
 * The byte-level BPE pre-tokenizers (gpt2, llama3, qwen2, deepseek) split text
 * by classes such as \p{L}, \p{N}, \p{P}, \p{S}, \p{M} and \s. This module
 * answers those questions per code point from tables generated out of the
 * Unicode Character Database (unicode_data.c, by tools/gen_unicode.sh; never
 * edited by hand).
 *
 *     size_t i = 0;
 *     while (i < n) {
 *         uint32_t cp;
 *         int len = moe__utf8_next(s + i, n - i, &cp);  // >= 1; U+FFFD if invalid
 *         if (moe__unicode_class(cp) == MOE__UC_LETTER) ...
 *         i += len;
 *     }
 *
 * All functions are pure and thread-safe; nothing allocates.
 */
#ifndef MOE_TEXT_UNICODE_H
#define MOE_TEXT_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#define MOE__UNICODE_REPLACEMENT 0xFFFDu
#define MOE__UNICODE_MAX 0x10FFFFu

/* ==== UTF-8 ==== */

/* Decodes one code point from s[0..n). Returns its length (1..4) and stores
 * it in *cp. Returns 0 when n == 0 (*cp untouched) and -1 when the bytes at s
 * are not valid UTF-8 (a continuation or invalid lead byte, an overlong form,
 * a surrogate, a value above U+10FFFF, or a sequence truncated by n); then *cp
 * is U+FFFD and the caller skips exactly 1 byte and decodes on from there.
 * Never reads past s[n - 1]. */
int moe__utf8_decode(const char *s, size_t n, uint32_t *cp);

/* moe__utf8_decode with the recovery applied: for n >= 1 returns the bytes
 * consumed (1..4; 1 for an invalid byte, with *cp = U+FFFD). */
static inline int moe__utf8_next(const char *s, size_t n, uint32_t *cp) {
    int len = moe__utf8_decode(s, n, cp);
    return len < 0 ? 1 : len;
}

/* Writes cp as UTF-8 to out and returns its length (1..4); returns 0 and
 * writes nothing for a surrogate (U+D800..U+DFFF) or cp > U+10FFFF. */
int moe__utf8_encode(uint32_t cp, char out[4]);

/* ==== Character properties ==== */

/* The Unicode general categories (UnicodeData.txt field 2). CN: unassigned. */
enum moe__gc {
    MOE__GC_CN = 0,
    MOE__GC_LU,
    MOE__GC_LL,
    MOE__GC_LT,
    MOE__GC_LM,
    MOE__GC_LO,
    MOE__GC_MN,
    MOE__GC_MC,
    MOE__GC_ME,
    MOE__GC_ND,
    MOE__GC_NL,
    MOE__GC_NO,
    MOE__GC_PC,
    MOE__GC_PD,
    MOE__GC_PS,
    MOE__GC_PE,
    MOE__GC_PI,
    MOE__GC_PF,
    MOE__GC_PO,
    MOE__GC_SM,
    MOE__GC_SC,
    MOE__GC_SK,
    MOE__GC_SO,
    MOE__GC_ZS,
    MOE__GC_ZL,
    MOE__GC_ZP,
    MOE__GC_CC,
    MOE__GC_CF,
    MOE__GC_CS,
    MOE__GC_CO,
    MOE__GC_COUNT
};

/* The major classes a pre-tokenizer regex asks for: \p{L}, \p{M}, \p{N},
 * \p{P}, \p{S}, \p{Z}; OTHER is \p{C} (Cc Cf Cs Co) and unassigned (Cn). */
enum moe__uc_class {
    MOE__UC_OTHER = 0,
    MOE__UC_LETTER,    /* Lu Ll Lt Lm Lo */
    MOE__UC_MARK,      /* Mn Mc Me */
    MOE__UC_NUMBER,    /* Nd Nl No */
    MOE__UC_PUNCT,     /* Pc Pd Ps Pe Pi Pf Po */
    MOE__UC_SYMBOL,    /* Sm Sc Sk So */
    MOE__UC_SEPARATOR, /* Zs Zl Zp */
};

/* The general category (enum moe__gc) of cp; MOE__GC_CN for unassigned code
 * points and for cp > U+10FFFF. */
int moe__unicode_gc(uint32_t cp);

/* The two-letter name of a general category ("Lu"), or "??" if out of range. */
const char *moe__unicode_gc_name(int gc);

/* The major class (enum moe__uc_class) of a general category / code point. */
int moe__unicode_gc_class(int gc);
int moe__unicode_class(uint32_t cp);

/* 1 if cp has the White_Space property (regex \s in Unicode mode: \t..\r,
 * space, U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F,
 * U+205F, U+3000), else 0. */
int moe__unicode_is_space(uint32_t cp);

/* The simple lowercase mapping of cp (UnicodeData.txt field 13), or cp itself
 * when it has none. One code point to one: no SpecialCasing (U+0130 -> U+0069). */
uint32_t moe__unicode_tolower(uint32_t cp);

/* ==== Generated tables (unicode_data.c) ==== */

/* A general-category run: first code point in the high 24 bits, gc low 8. */
#define MOE__UC_RUN(first, gc) (((uint32_t)(first) << 8) | (uint32_t)(gc))

extern const char moe__unicode_version[];     /* "15.0.0" */
extern const uint32_t moe__unicode_gc_runs[]; /* sorted; first run at U+0000 */
extern const int moe__unicode_gc_runs_n;
extern const uint32_t moe__unicode_space_ranges[][2]; /* {first, last}, sorted */
extern const int moe__unicode_space_ranges_n;
extern const uint32_t moe__unicode_lower_pairs[][2]; /* {cp, lower}, sorted */
extern const int moe__unicode_lower_pairs_n;

#endif
