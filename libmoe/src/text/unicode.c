/*
 * unicode.c - UTF-8 decoding/encoding and lookups in the generated Unicode
 * tables (see unicode.h; the tables are in unicode_data.c and unicode_case.c).
 */
#include "unicode.h"

/* ==== UTF-8 ==== */

int moe__utf8_decode(const char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    const unsigned char *p = (const unsigned char *)s;
    uint32_t c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    uint32_t min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, min = 0x80, c &= 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, min = 0x800, c &= 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, min = 0x10000, c &= 0x07;
    } else {
        goto invalid; /* continuation byte, C0/C1 (always overlong), F5..FF */
    }
    if (n < (size_t)len) goto invalid;
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) goto invalid;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > MOE__UNICODE_MAX || (c >= 0xD800 && c <= 0xDFFF)) goto invalid;
    *cp = c;
    return len;
invalid:
    *cp = MOE__UNICODE_REPLACEMENT;
    return -1;
}

int moe__utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp > MOE__UNICODE_MAX) return 0;
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ==== Character properties ==== */

int moe__unicode_gc(uint32_t cp) {
    if (cp > MOE__UNICODE_MAX) return MOE__GC_CN;
    /* the last run whose first code point is <= cp (runs[0] starts at 0) */
    uint32_t key = MOE__UC_RUN(cp, 0xFF);
    int lo = 0, hi = moe__unicode_gc_runs_n; /* answer in [lo, hi) */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (moe__unicode_gc_runs[mid] <= key)
            lo = mid;
        else
            hi = mid;
    }
    return (int)(moe__unicode_gc_runs[lo] & 0xFF);
}

static const char gc_names[MOE__GC_COUNT][3] = {
    "Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps",
    "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co",
};

const char *moe__unicode_gc_name(int gc) {
    return gc >= 0 && gc < MOE__GC_COUNT ? gc_names[gc] : "??";
}

int moe__unicode_gc_class(int gc) {
    if (gc >= MOE__GC_LU && gc <= MOE__GC_LO) return MOE__UC_LETTER;
    if (gc >= MOE__GC_MN && gc <= MOE__GC_ME) return MOE__UC_MARK;
    if (gc >= MOE__GC_ND && gc <= MOE__GC_NO) return MOE__UC_NUMBER;
    if (gc >= MOE__GC_PC && gc <= MOE__GC_PO) return MOE__UC_PUNCT;
    if (gc >= MOE__GC_SM && gc <= MOE__GC_SO) return MOE__UC_SYMBOL;
    if (gc >= MOE__GC_ZS && gc <= MOE__GC_ZP) return MOE__UC_SEPARATOR;
    return MOE__UC_OTHER;
}

int moe__unicode_class(uint32_t cp) {
    return moe__unicode_gc_class(moe__unicode_gc(cp));
}

int moe__unicode_is_space(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
    for (int i = 0; i < moe__unicode_space_ranges_n; i++) {
        if (cp < moe__unicode_space_ranges[i][0]) return 0;
        if (cp <= moe__unicode_space_ranges[i][1]) return 1;
    }
    return 0;
}

uint32_t moe__unicode_tolower(uint32_t cp) {
    int lo = 0, hi = moe__unicode_lower_pairs_n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        uint32_t k = moe__unicode_lower_pairs[mid][0];
        if (k == cp) return moe__unicode_lower_pairs[mid][1];
        if (k < cp)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return cp;
}
