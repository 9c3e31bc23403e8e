/*
 * pretok.c - pre-tokenizers: text split into pieces before BPE, as each
 * model family declares in tokenizer.ggml.pre. A pre-tokenizer is a chain
 * of patterns applied in turn (llama.cpp's unicode_regex_split): each
 * pattern splits every current piece into its matches and the text between
 * them, both kept. Patterns are hand-written matchers over the generated
 * Unicode classes, not a regex engine.
 *
 *   gpt2     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
 *   default  [\p{P}$+<=>^~|]+ , gpt2 , \p{N}+ , [0-9][0-9][0-9]
 */
#include <string.h>

#include "pretok.h"
#include "unicode.h"

/* A matcher: the length of the match starting at s[i] (0: none). */
typedef size_t (*matcher)(const char *s, size_t n, size_t i);

static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *len) {
    uint32_t cp;
    *len = (size_t)moe__utf8_next(s + i, n - i, &cp);
    return cp;
}

static int is_letter(uint32_t c) { return moe__unicode_class(c) == MOE__UC_LETTER; }
static int is_number(uint32_t c) { return moe__unicode_class(c) == MOE__UC_NUMBER; }
static int is_space(uint32_t c) { return moe__unicode_is_space(c); }

/* length of the run of code points satisfying f starting at i */
static size_t run(const char *s, size_t n, size_t i, int (*f)(uint32_t)) {
    size_t j = i, l;
    while (j < n && f(cp_at(s, n, j, &l))) j += l;
    return j - i;
}

static int is_other(uint32_t c) { return !is_space(c) && !is_letter(c) && !is_number(c); }

static size_t m_gpt2(const char *s, size_t n, size_t i) {
    if (s[i] == '\'' && i + 1 < n) {
        static const char *const sfx[] = {"s", "t", "re", "ve", "m", "ll", "d"};
        for (int k = 0; k < 7; k++) {
            const size_t l = strlen(sfx[k]);
            if (i + 1 + l <= n && !memcmp(s + i + 1, sfx[k], l)) return 1 + l;
        }
    }
    size_t l;
    size_t j = i;
    uint32_t c = cp_at(s, n, j, &l);
    if (c == ' ' && j + l < n) { /* " ?" prefix */
        size_t l2;
        const uint32_t c2 = cp_at(s, n, j + l, &l2);
        if (is_letter(c2)) return l + run(s, n, j + l, is_letter);
        if (is_number(c2)) return l + run(s, n, j + l, is_number);
        if (is_other(c2)) return l + run(s, n, j + l, is_other);
    }
    if (is_letter(c)) return run(s, n, j, is_letter);
    if (is_number(c)) return run(s, n, j, is_number);
    if (is_other(c)) return run(s, n, j, is_other);
    /* \s+(?!\S): the whitespace run, less its last character if a
     * non-space follows (that one starts the next piece) */
    const size_t w = run(s, n, j, is_space);
    if (i + w >= n) return w;
    if (w <= 1) return 0;
    size_t last = i, k = i;
    while (k < i + w) last = k, k += (size_t)moe__utf8_next(s + k, n - k, &c);
    return last - i;
}

static int is_punct_default(uint32_t c) {
    return moe__unicode_class(c) == MOE__UC_PUNCT || c == '$' || c == '+' || c == '<' ||
           c == '=' || c == '>' || c == '^' || c == '~' || c == '|';
}
static size_t m_punct(const char *s, size_t n, size_t i) { return run(s, n, i, is_punct_default); }
static size_t m_digits(const char *s, size_t n, size_t i) { return run(s, n, i, is_number); }
static size_t m_3digits(const char *s, size_t n, size_t i) {
    return i + 3 <= n && s[i] >= '0' && s[i] <= '9' && s[i + 1] >= '0' && s[i + 1] <= '9' &&
                   s[i + 2] >= '0' && s[i + 2] <= '9'
               ? 3
               : 0;
}

/* Splits pieces [off[k], off[k+1]) by m; writes the new boundaries to out
 * (cap entries). Returns the new piece count or -1 if out is too small. */
static int split(const char *s, const size_t *off, int n_pieces, matcher m, size_t *out, int cap) {
    int k = 0;
    for (int p = 0; p < n_pieces; p++) {
        const size_t a = off[p], b = off[p + 1];
        size_t i = a, seg = a; /* seg: start of the unmatched text */
        while (i < b) {
            const size_t l = m(s, b, i);
            if (l == 0) {
                i += (size_t)moe__utf8_next(s + i, b - i, &(uint32_t){0});
                continue;
            }
            if (seg < i) {
                if (k + 1 >= cap) return -1;
                out[k++] = seg;
            }
            if (k + 1 >= cap) return -1;
            out[k++] = i;
            i += l;
            seg = i;
        }
        if (seg < b) {
            if (k + 1 >= cap) return -1;
            out[k++] = seg;
        }
    }
    out[k] = n_pieces ? off[n_pieces] : 0;
    return k;
}

int moe__pretok_kind(const char *pre) {
    if (!*pre || !strcmp(pre, "default")) return MOE__PRETOK_DEFAULT;
    if (!strcmp(pre, "gpt-2") || !strcmp(pre, "gpt2") || !strcmp(pre, "olmo")) return MOE__PRETOK_GPT2;
    return -1;
}

int moe__pretok_split(int kind, const char *s, size_t n, size_t *off, size_t *tmp, int cap) {
    if (n == 0) return 0;
    static const matcher chain_default[] = {m_punct, m_gpt2, m_digits, m_3digits};
    static const matcher chain_gpt2[] = {m_gpt2};
    const matcher *chain = kind == MOE__PRETOK_GPT2 ? chain_gpt2 : chain_default;
    const int nm = kind == MOE__PRETOK_GPT2 ? 1 : 4;
    if (cap < 2) return -1;
    off[0] = 0, off[1] = n;
    int np = 1;
    for (int k = 0; k < nm; k++) {
        np = split(s, off, np, chain[k], tmp, cap);
        if (np < 0) return -1;
        memcpy(off, tmp, (size_t)(np + 1) * sizeof *off);
    }
    return np;
}
