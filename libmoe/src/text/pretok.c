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
 *   llama3   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen2    the same with \p{N} (single digits)
 *   deepseek-v3  \p{N}{1,3} , [\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+ ,
 *            [ASCII punct][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
 *             ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *   deepseek-llm  [\r\n] , \s?[A-Za-zµÀ-ÖØ-ö...]+ (cased letters: dsl_letters) ,
 *            \s?[!-/:-~！-／：-～‘-‟　-。]+ , \s+$ , [一-龥ࠀ-一가-퟿]+ , \p{N}+
 *            ($: the end of the piece being split; see the deepseek-llm banner)
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

static int is_letter(uint32_t c) {
    return moe__unicode_class(c) == MOE__UC_LETTER;
}
static int is_number(uint32_t c) {
    return moe__unicode_class(c) == MOE__UC_NUMBER;
}
static int is_space(uint32_t c) {
    return moe__unicode_is_space(c);
}

/* length of the run of code points satisfying f starting at i */
static size_t run(const char *s, size_t n, size_t i, int (*f)(uint32_t)) {
    size_t j = i, l;
    while (j < n && f(cp_at(s, n, j, &l))) j += l;
    return j - i;
}

static int is_other(uint32_t c) {
    return !is_space(c) && !is_letter(c) && !is_number(c);
}

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

/* ---- llama3 / qwen2: ordered alternatives, as the regex tries them ---- */

static int is_crlf(uint32_t c) {
    return c == '\r' || c == '\n';
}
static int is_not_s_l_n(uint32_t c) {
    return !is_space(c) && !is_letter(c) && !is_number(c);
}

static size_t contraction_ci(const char *s, size_t n, size_t i) {
    if (s[i] != '\'' || i + 1 >= n) return 0;
    static const char *const sfx[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (int k = 0; k < 7; k++) {
        const size_t l = strlen(sfx[k]);
        if (i + 1 + l > n) continue;
        size_t j = 0;
        while (j < l && (s[i + 1 + j] | 0x20) == sfx[k][j]) j++;
        if (j == l) return 1 + l;
    }
    return 0;
}

static size_t m_llama3_digits(const char *s, size_t n, size_t i, int max_digits) {
    size_t l;
    const size_t c = contraction_ci(s, n, i);
    if (c) return c;
    uint32_t c0 = cp_at(s, n, i, &l);
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!is_crlf(c0) && !is_letter(c0) && !is_number(c0) && i + l < n) {
        const size_t lr = run(s, n, i + l, is_letter);
        if (lr) return l + lr;
    }
    if (is_letter(c0)) return run(s, n, i, is_letter);
    /* \p{N}{1,max} */
    if (is_number(c0)) {
        size_t j = i, k = 0, ln;
        while (j < n && k < (size_t)max_digits && is_number(cp_at(s, n, j, &ln))) j += ln, k++;
        return j - i;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    {
        size_t j = i;
        if (c0 == ' ' && i + l < n) j += l;
        const size_t r = run(s, n, j, is_not_s_l_n);
        if (r) return j + r - i + run(s, n, j + r, is_crlf);
    }
    /* \s*[\r\n]+ : up to and including the last CR/LF of the whitespace run */
    const size_t w = run(s, n, i, is_space);
    if (w) {
        size_t last = 0, k = i;
        uint32_t cc;
        while (k < i + w) {
            const size_t lk = (size_t)moe__utf8_next(s + k, n - k, &cc);
            if (is_crlf(cc)) last = k + lk;
            k += lk;
        }
        if (last) return last - i;
    }
    /* \s+(?!\S) and \s+ */
    if (!w) return 0;
    if (i + w >= n) return w;
    if (w > 1) {
        size_t lastc = i, k = i;
        uint32_t cc;
        while (k < i + w) lastc = k, k += (size_t)moe__utf8_next(s + k, n - k, &cc);
        return lastc - i;
    }
    return w;
}

static size_t m_llama3(const char *s, size_t n, size_t i) {
    return m_llama3_digits(s, n, i, 3);
}
static size_t m_qwen2(const char *s, size_t n, size_t i) {
    return m_llama3_digits(s, n, i, 1);
}

/* ---- deepseek-v3 ---- */

static int is_ds_cjk(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x3040 && c <= 0x309F) ||
           (c >= 0x30A0 && c <= 0x30FF);
}
static int is_ascii_punct(uint32_t c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
}
static int is_ascii_letter(uint32_t c) {
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}
static int is_p_or_s(uint32_t c) {
    const int k = moe__unicode_class(c);
    return k == MOE__UC_PUNCT || k == MOE__UC_SYMBOL;
}
static int is_l_or_m(uint32_t c) {
    const int k = moe__unicode_class(c);
    return k == MOE__UC_LETTER || k == MOE__UC_MARK;
}

static size_t m_ds_digits(const char *s, size_t n, size_t i) {
    size_t j = i, k = 0, l;
    while (j < n && k < 3 && is_number(cp_at(s, n, j, &l))) j += l, k++;
    return j - i;
}
static size_t m_ds_cjk(const char *s, size_t n, size_t i) {
    return run(s, n, i, is_ds_cjk);
}

static size_t m_ds3(const char *s, size_t n, size_t i) {
    size_t l;
    const uint32_t c0 = cp_at(s, n, i, &l);
    /* [ASCII punct][A-Za-z]+ */
    if (is_ascii_punct(c0) && i + l < n) {
        const size_t r = run(s, n, i + l, is_ascii_letter);
        if (r) return l + r;
    }
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ */
    if (!is_crlf(c0) && !is_letter(c0) && !is_p_or_s(c0) && i + l < n) {
        const size_t r = run(s, n, i + l, is_l_or_m);
        if (r) return l + r;
    }
    if (is_l_or_m(c0)) return run(s, n, i, is_l_or_m);
    /*  ?[\p{P}\p{S}]+[\r\n]* */
    {
        size_t j = i;
        if (c0 == ' ' && i + l < n) j += l;
        const size_t r = run(s, n, j, is_p_or_s);
        if (r) return j + r - i + run(s, n, j + r, is_crlf);
    }
    /* \s*[\r\n]+ , \s+(?!\S) , \s+ : as in llama3 */
    const size_t w = run(s, n, i, is_space);
    if (!w) return 0;
    size_t last = 0, lastc = i, k = i;
    uint32_t cc;
    while (k < i + w) {
        const size_t lk = (size_t)moe__utf8_next(s + k, n - k, &cc);
        if (is_crlf(cc)) last = k + lk;
        lastc = k;
        k += lk;
    }
    if (last) return last - i;
    if (i + w >= n) return w;
    return w > 1 ? lastc - i : w;
}

/* ---- deepseek-llm ----
 *
 * llama.cpp runs these patterns through std::wregex (all but the last) on
 * the code points with every non-ASCII White_Space character replaced by
 * U+000B, and \p{N}+ through std::regex on a one-byte-per-code-point
 * "collapsed" text. So: \s is exactly White_Space (libstdc++'s \s covers
 * only \t..\r and space, the rest is U+000B), no bracket below ever matches
 * a White_Space character (U+3000 in 　-。 and the spaces inside ࠀ-一 never
 * reach the regex as themselves), $ is the end of the piece being split,
 * and \p{N} is '0'..'9' or a non-ASCII code point of category N. The
 * patterns apply piece by piece, so the ASCII-only punctuation class (it
 * covers A-Z and a-z too) cuts a letter piece such as "café" into "caf",
 * "é", and " über" into " ü", "ber": llama.cpp does the same.
 */

/* the letter class of the second pattern, as listed in llama.cpp (adjacent
 * ranges merged); {first, last}, sorted */
static const uint32_t dsl_letters[][2] = {
    {0x0041, 0x005A},   {0x0061, 0x007A},   {0x00B5, 0x00B5},   {0x00C0, 0x00D6},
    {0x00D8, 0x00F6},   {0x00F8, 0x01BA},   {0x01BC, 0x01BF},   {0x01C4, 0x0293},
    {0x0295, 0x02AF},   {0x0370, 0x0373},   {0x0376, 0x0377},   {0x037B, 0x037D},
    {0x037F, 0x037F},   {0x0386, 0x0386},   {0x0388, 0x038A},   {0x038C, 0x038C},
    {0x038E, 0x03A1},   {0x03A3, 0x03F5},   {0x03F7, 0x0481},   {0x048A, 0x052F},
    {0x0531, 0x0556},   {0x10A0, 0x10C5},   {0x13A0, 0x13F5},   {0x13F8, 0x13FD},
    {0x1C90, 0x1CBA},   {0x1CBD, 0x1CBF},   {0x1D00, 0x1D2B},   {0x1D6B, 0x1D77},
    {0x1D79, 0x1D9A},   {0x1E00, 0x1F15},   {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},   {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},   {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},
    {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},
    {0x2102, 0x2102},   {0x2107, 0x2107},   {0x210A, 0x2113},   {0x2115, 0x2115},
    {0x2119, 0x211D},   {0x2124, 0x2124},   {0x2126, 0x2126},   {0x2128, 0x2128},
    {0x212A, 0x212D},   {0x212F, 0x2134},   {0x2139, 0x2139},   {0x213C, 0x213F},
    {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2184},   {0x2C00, 0x2C7B},
    {0x2C7E, 0x2CE4},   {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF3},   {0xA640, 0xA66D},
    {0xA680, 0xA69B},   {0xA722, 0xA76F},   {0xA771, 0xA787},   {0xA78B, 0xA78E},
    {0xAB70, 0xABBF},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},   {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A},   {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

static int is_dsl_letter(uint32_t c) {
    int lo = 0, hi = (int)(sizeof dsl_letters / sizeof *dsl_letters) - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        if (c < dsl_letters[mid][0])
            hi = mid - 1;
        else if (c > dsl_letters[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}
/* [!-/:-~！-／：-～‘-‟　-。] less U+3000 (a space, see above) */
static int is_dsl_punct(uint32_t c) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) || (c >= 0xFF01 && c <= 0xFF0F) ||
           (c >= 0xFF1A && c <= 0xFF5E) || (c >= 0x2018 && c <= 0x201F) || c == 0x3001 ||
           c == 0x3002;
}
/* [一-龥ࠀ-一가-퟿] less the White_Space characters in U+0800..U+4E00 */
static int is_dsl_cjk(uint32_t c) {
    return ((c >= 0x0800 && c <= 0x9FA5) || (c >= 0xAC00 && c <= 0xD7FF)) && !is_space(c);
}
static int is_dsl_number(uint32_t c) {
    return c < 0x80 ? c >= '0' && c <= '9' : is_number(c) && !is_space(c);
}

static size_t m_dsl_crlf(const char *s, size_t n, size_t i) {
    (void)n;
    return s[i] == '\r' || s[i] == '\n';
}

/* \s?[class]+ */
static size_t space_opt_run(const char *s, size_t n, size_t i, int (*f)(uint32_t)) {
    size_t l;
    const uint32_t c0 = cp_at(s, n, i, &l);
    if (is_space(c0) && i + l < n) {
        const size_t r = run(s, n, i + l, f);
        if (r) return l + r;
    }
    return run(s, n, i, f);
}
static size_t m_dsl_letters(const char *s, size_t n, size_t i) {
    return space_opt_run(s, n, i, is_dsl_letter);
}
static size_t m_dsl_punct(const char *s, size_t n, size_t i) {
    return space_opt_run(s, n, i, is_dsl_punct);
}
static size_t m_dsl_cjk(const char *s, size_t n, size_t i) {
    return run(s, n, i, is_dsl_cjk);
}
static size_t m_dsl_digits(const char *s, size_t n, size_t i) {
    return run(s, n, i, is_dsl_number);
}

/* \s+$ splits each piece into the text before its trailing whitespace run
 * and that run: one pass per piece (a matcher tried at every position
 * would rescan whitespace runs that stop short of the end: quadratic). */
static int split_trailing_space(const char *s, const size_t *off, int n_pieces, size_t *out,
                                int cap) {
    int k = 0;
    for (int p = 0; p < n_pieces; p++) {
        const size_t a = off[p], b = off[p + 1];
        size_t i = a, ws = b; /* ws: start of the current whitespace run (b: none) */
        while (i < b) {
            uint32_t c;
            const size_t l = (size_t)moe__utf8_next(s + i, b - i, &c);
            if (!is_space(c))
                ws = b;
            else if (ws == b)
                ws = i;
            i += l;
        }
        if (a < ws) {
            if (k + 1 >= cap) return -1;
            out[k++] = a;
        }
        if (ws < b) {
            if (k + 1 >= cap) return -1;
            out[k++] = ws;
        }
    }
    out[k] = n_pieces ? off[n_pieces] : 0;
    return k;
}

static int is_punct_default(uint32_t c) {
    return moe__unicode_class(c) == MOE__UC_PUNCT || c == '$' || c == '+' || c == '<' || c == '=' ||
           c == '>' || c == '^' || c == '~' || c == '|';
}
static size_t m_punct(const char *s, size_t n, size_t i) {
    return run(s, n, i, is_punct_default);
}
static size_t m_digits(const char *s, size_t n, size_t i) {
    return run(s, n, i, is_number);
}
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
    if (!strcmp(pre, "gpt-2") || !strcmp(pre, "gpt2") || !strcmp(pre, "olmo"))
        return MOE__PRETOK_GPT2;
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3")) return MOE__PRETOK_LLAMA3;
    if (!strcmp(pre, "qwen2")) return MOE__PRETOK_QWEN2;
    if (!strcmp(pre, "deepseek-v3")) return MOE__PRETOK_DEEPSEEK3;
    if (!strcmp(pre, "deepseek-llm")) return MOE__PRETOK_DEEPSEEK_LLM;
    return -1;
}

int moe__pretok_split(int kind, const char *s, size_t n, size_t *off, size_t *tmp, int cap) {
    if (n == 0) return 0;
    /* NULL in a chain: split_trailing_space (\s+$) */
    static const matcher chain_default[] = {m_punct, m_gpt2, m_digits, m_3digits};
    static const matcher chain_gpt2[] = {m_gpt2}, chain_llama3[] = {m_llama3},
                         chain_qwen2[] = {m_qwen2}, chain_ds3[] = {m_ds_digits, m_ds_cjk, m_ds3},
                         chain_dsl[] = {m_dsl_crlf, m_dsl_letters, m_dsl_punct,
                                        NULL,       m_dsl_cjk,     m_dsl_digits};
    static const struct {
        const matcher *m;
        int n;
    } chains[] = {
        [MOE__PRETOK_DEFAULT] = {chain_default, 4}, [MOE__PRETOK_GPT2] = {chain_gpt2, 1},
        [MOE__PRETOK_LLAMA3] = {chain_llama3, 1},   [MOE__PRETOK_QWEN2] = {chain_qwen2, 1},
        [MOE__PRETOK_DEEPSEEK3] = {chain_ds3, 3},   [MOE__PRETOK_DEEPSEEK_LLM] = {chain_dsl, 6},
    };
    if (kind < 0 || kind >= (int)(sizeof chains / sizeof *chains)) kind = MOE__PRETOK_DEFAULT;
    if (cap < 2) return -1;
    off[0] = 0, off[1] = n;
    int np = 1;
    for (int k = 0; k < chains[kind].n; k++) {
        const matcher m = chains[kind].m[k];
        np = m ? split(s, off, np, m, tmp, cap) : split_trailing_space(s, off, np, tmp, cap);
        if (np < 0) return -1;
        memcpy(off, tmp, (size_t)(np + 1) * sizeof *off);
    }
    return np;
}
