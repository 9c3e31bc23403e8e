/* test_unicode.c - UTF-8 decoding/encoding and the Unicode class tables
 * (libmoe/src/text/unicode.h). Buffers handed to the decoder are exact-length
 * heap copies, so an overread shows up under ASan (make SAN=1). */
#include <stdlib.h>
#include <string.h>

#include "text/unicode.h"
#include "test.h"

/* Decodes the first code point of a heap copy of exactly n bytes of s. */
static int decode_exact(const char *s, size_t n, uint32_t *cp) {
    char *buf = malloc(n ? n : 1);
    ASSERT(buf);
    memcpy(buf, s, n);
    int r = moe__utf8_decode(buf, n, cp);
    free(buf);
    return r;
}

static void expect_invalid(const char *s, size_t n) {
    uint32_t cp = 0;
    ASSERT_EQ_INT(decode_exact(s, n, &cp), -1);
    ASSERT_EQ_INT(cp, 0xFFFD);
    ASSERT_EQ_INT(moe__utf8_next(s, n, &cp), 1);
}

TEST(unicode_utf8_roundtrip_all) {
    char *buf[5] = {0};
    for (int i = 1; i <= 4; i++) ASSERT((buf[i] = malloc((size_t)i)));
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        char out[4];
        int len = moe__utf8_encode(cp, out);
        if (cp >= 0xD800 && cp <= 0xDFFF) {
            ASSERT_EQ_INT(len, 0);
            continue;
        }
        int want = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        if (len != want) TEST_FAIL("U+%04X: encoded length %d, want %d", cp, len, want);
        memcpy(buf[len], out, (size_t)len);
        uint32_t got = 0;
        int r = moe__utf8_decode(buf[len], (size_t)len, &got);
        if (r != len || got != cp) TEST_FAIL("U+%04X: decoded %d bytes, U+%04X", cp, r, got);
        for (int k = 1; k < len; k++) { /* every proper prefix is truncated */
            memcpy(buf[k], out, (size_t)k);
            r = moe__utf8_decode(buf[k], (size_t)k, &got);
            if (r != -1 || got != 0xFFFD) TEST_FAIL("U+%04X prefix %d: %d", cp, k, r);
        }
    }
    char out[4];
    ASSERT_EQ_INT(moe__utf8_encode(0x110000, out), 0);
    ASSERT_EQ_INT(moe__utf8_encode(0xFFFFFFFF, out), 0);
    for (int i = 1; i <= 4; i++) free(buf[i]);
}

TEST(unicode_utf8_known_bytes) {
    uint32_t cp;
    ASSERT_EQ_INT(decode_exact("\xC3\xA9", 2, &cp), 2); /* é */
    ASSERT_EQ_INT(cp, 0xE9);
    ASSERT_EQ_INT(decode_exact("\xE2\x82\xAC", 3, &cp), 3); /* € */
    ASSERT_EQ_INT(cp, 0x20AC);
    ASSERT_EQ_INT(decode_exact("\xF0\x9F\x98\x80", 4, &cp), 4); /* 😀 */
    ASSERT_EQ_INT(cp, 0x1F600);
    ASSERT_EQ_INT(decode_exact("\xF4\x8F\xBF\xBF", 4, &cp), 4);
    ASSERT_EQ_INT(cp, 0x10FFFF);
    ASSERT_EQ_INT(decode_exact("", 1, &cp), 1); /* NUL is a code point */
    ASSERT_EQ_INT(cp, 0);
    cp = 42;
    ASSERT_EQ_INT(decode_exact("x", 0, &cp), 0); /* nothing to decode */
    ASSERT_EQ_INT(cp, 42);
    char out[4];
    ASSERT_EQ_INT(moe__utf8_encode(0x20AC, out), 3);
    ASSERT(memcmp(out, "\xE2\x82\xAC", 3) == 0);
}

TEST(unicode_utf8_invalid) {
    expect_invalid("\xC0\xAF", 2);         /* overlong '/' */
    expect_invalid("\xC1\xBF", 2);         /* overlong */
    expect_invalid("\xE0\x80\xAF", 3);     /* overlong 3-byte */
    expect_invalid("\xE0\x9F\xBF", 3);     /* overlong U+07FF */
    expect_invalid("\xF0\x8F\xBF\xBF", 4); /* overlong U+FFFF */
    expect_invalid("\xED\xA0\x80", 3);     /* U+D800 */
    expect_invalid("\xED\xBF\xBF", 3);     /* U+DFFF */
    expect_invalid("\xF4\x90\x80\x80", 4); /* U+110000 */
    expect_invalid("\xF5\x80\x80\x80", 4);
    expect_invalid("\xFF", 1);
    expect_invalid("\xFE", 1);
    expect_invalid("\x80", 1); /* lone continuation */
    expect_invalid("\xBF", 1);
    expect_invalid("\xC3", 1); /* truncated */
    expect_invalid("\xE2\x82", 2);
    expect_invalid("\xF0\x9F\x98", 3);
    expect_invalid("\xC3\x41", 2); /* lead then non-continuation */
    expect_invalid("\xE2\x82\x41", 3);
    expect_invalid("\xF0\x9F\x98\xC3", 4);
    for (int b = 0x80; b <= 0xFF; b++) { /* invalid lead bytes, alone */
        if (b >= 0xC2 && b <= 0xF4) continue;
        char c = (char)b;
        expect_invalid(&c, 1);
    }
    /* recovery: skip one byte and go on; "A\x80\xE2\x82\xACB" -> A FFFD € B */
    const char s[] = "A\x80\xE2\x82\xAC"
                     "B\xE2\x82";
    size_t n = sizeof s - 1;
    char *buf = malloc(n);
    ASSERT(buf);
    memcpy(buf, s, n);
    uint32_t want[] = {'A', 0xFFFD, 0x20AC, 'B', 0xFFFD, 0xFFFD}, cp;
    size_t i = 0;
    int k = 0;
    while (i < n) {
        ASSERT(k < 6);
        i += (size_t)moe__utf8_next(buf + i, n - i, &cp);
        ASSERT_EQ_INT(cp, want[k]);
        k++;
    }
    ASSERT_EQ_INT(k, 6);
    ASSERT_EQ_INT(i, n);
    free(buf);
}

/* Facts from the Unicode charts, independent of the generated tables. */
TEST(unicode_class_known) {
    static const struct {
        uint32_t cp;
        int cls;
        int space;
    } k[] = {
        {'A', MOE__UC_LETTER, 0},       {'z', MOE__UC_LETTER, 0},
        {'5', MOE__UC_NUMBER, 0},       {'!', MOE__UC_PUNCT, 0},
        {'\'', MOE__UC_PUNCT, 0},       {'_', MOE__UC_PUNCT, 0},
        {'$', MOE__UC_SYMBOL, 0},       {'+', MOE__UC_SYMBOL, 0},
        {'`', MOE__UC_SYMBOL, 0},       {'^', MOE__UC_SYMBOL, 0},
        {' ', MOE__UC_SEPARATOR, 1},    {'\t', MOE__UC_OTHER, 1},
        {'\n', MOE__UC_OTHER, 1},       {'\r', MOE__UC_OTHER, 1},
        {0x0B, MOE__UC_OTHER, 1},       {0x0C, MOE__UC_OTHER, 1},
        {0x1C, MOE__UC_OTHER, 0},       {0, MOE__UC_OTHER, 0},
        {0x7F, MOE__UC_OTHER, 0},       {0x0085, MOE__UC_OTHER, 1},
        {0x00A0, MOE__UC_SEPARATOR, 1}, {0x00AD, MOE__UC_OTHER, 0},  /* soft hyphen Cf */
        {0x00E9, MOE__UC_LETTER, 0},    {0x00B2, MOE__UC_NUMBER, 0}, /* superscript two */
        {0x00BD, MOE__UC_NUMBER, 0},    {0x0301, MOE__UC_MARK, 0},
        {0x0660, MOE__UC_NUMBER, 0},    {0x0903, MOE__UC_MARK, 0}, /* Devanagari visarga Mc */
        {0x1680, MOE__UC_SEPARATOR, 1}, {0x2003, MOE__UC_SEPARATOR, 1},
        {0x200B, MOE__UC_OTHER, 0},     {0x2028, MOE__UC_SEPARATOR, 1},
        {0x2029, MOE__UC_SEPARATOR, 1}, {0x202F, MOE__UC_SEPARATOR, 1},
        {0x205F, MOE__UC_SEPARATOR, 1}, {0x2014, MOE__UC_PUNCT, 0},
        {0x201C, MOE__UC_PUNCT, 0},     {0x20AC, MOE__UC_SYMBOL, 0},
        {0x2160, MOE__UC_NUMBER, 0},    {0x3000, MOE__UC_SEPARATOR, 1},
        {0x3001, MOE__UC_PUNCT, 0},     {0x3042, MOE__UC_LETTER, 0},
        {0x4E00, MOE__UC_LETTER, 0},    {0x9FFF, MOE__UC_LETTER, 0},
        {0xAC00, MOE__UC_LETTER, 0},    {0xD7A3, MOE__UC_LETTER, 0},
        {0xD800, MOE__UC_OTHER, 0},     {0xE000, MOE__UC_OTHER, 0},
        {0xFEFF, MOE__UC_OTHER, 0},     {0xFFFD, MOE__UC_SYMBOL, 0},
        {0xFFFF, MOE__UC_OTHER, 0},     {0x1F600, MOE__UC_SYMBOL, 0},
        {0x1F3FB, MOE__UC_SYMBOL, 0},   {0x20000, MOE__UC_LETTER, 0},
        {0xE0001, MOE__UC_OTHER, 0},    {0xE0100, MOE__UC_MARK, 0},
        {0x10FFFF, MOE__UC_OTHER, 0},   {0x110000, MOE__UC_OTHER, 0},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        int c = moe__unicode_class(k[i].cp), s = moe__unicode_is_space(k[i].cp);
        if (c != k[i].cls || s != k[i].space)
            TEST_FAIL("U+%04X: class %d space %d, want %d %d", k[i].cp, c, s, k[i].cls, k[i].space);
    }
    ASSERT_EQ_INT(moe__unicode_gc('A'), MOE__GC_LU);
    ASSERT_EQ_INT(moe__unicode_gc('a'), MOE__GC_LL);
    ASSERT_EQ_INT(moe__unicode_gc(0x01C5), MOE__GC_LT); /* Dž */
    ASSERT_EQ_INT(moe__unicode_gc(0x0660), MOE__GC_ND);
    ASSERT_EQ_INT(moe__unicode_gc(0x0378), MOE__GC_CN); /* unassigned */
    ASSERT_EQ_INT(moe__unicode_gc(0xD800), MOE__GC_CS);
    ASSERT_EQ_INT(moe__unicode_gc(0xF0000), MOE__GC_CO);
    ASSERT(strcmp(moe__unicode_gc_name(MOE__GC_SO), "So") == 0);
    ASSERT(strcmp(moe__unicode_gc_name(-1), "??") == 0);
    ASSERT_EQ_INT(moe__unicode_tolower('A'), 'a');
    ASSERT_EQ_INT(moe__unicode_tolower('a'), 'a');
    ASSERT_EQ_INT(moe__unicode_tolower('1'), '1');
    ASSERT_EQ_INT(moe__unicode_tolower(0x00C9), 0x00E9);
    ASSERT_EQ_INT(moe__unicode_tolower(0x0130), 0x0069);
    ASSERT_EQ_INT(moe__unicode_tolower(0x0410), 0x0430); /* Cyrillic А */
    ASSERT_EQ_INT(moe__unicode_tolower(0x1E921), 0x1E943);
    ASSERT_EQ_INT(moe__unicode_tolower(0x10FFFF), 0x10FFFF);
}

/* ---- an independent re-parse of the UCD, to check the generated tables ---- */

static const char *ucd_dir(void) {
    const char *d = getenv("UNICODE_DIR");
    return d && *d ? d : "/usr/share/unicode";
}

static FILE *ucd_open(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", ucd_dir(), name);
    return fopen(path, "r");
}

/* Splits line at ';' into at most max fields (in place); returns the count. */
static int split_fields(char *line, char **f, int max) {
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == ';') *p = '\0', f[n++] = p + 1;
    return n;
}

TEST(unicode_tables_match_ucd) {
    FILE *fp = ucd_open("UnicodeData.txt");
    if (!fp) SKIP("no UnicodeData.txt (apt-get install unicode-data)");
    char(*gc)[3] = calloc(0x110000, 3);
    uint32_t *lower = malloc(0x110000 * sizeof *lower);
    ASSERT(gc && lower);
    for (uint32_t c = 0; c <= 0x10FFFF; c++) memcpy(gc[c], "Cn", 3), lower[c] = c;
    char line[1024];
    long range_first = -1, nlines = 0;
    while (fgets(line, sizeof line, fp)) {
        char *f[16];
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        int nf = split_fields(line, f, 16);
        if (nf < 15 || strlen(f[2]) != 2) TEST_FAIL("bad UnicodeData line %ld", nlines + 1);
        uint32_t c = (uint32_t)strtoul(f[0], NULL, 16);
        ASSERT(c <= 0x10FFFF);
        size_t nl = strlen(f[1]);
        if (nl > 8 && strcmp(f[1] + nl - 8, ", First>") == 0) {
            range_first = (long)c;
        } else if (nl > 7 && strcmp(f[1] + nl - 7, ", Last>") == 0) {
            ASSERT(range_first >= 0);
            for (uint32_t x = (uint32_t)range_first; x <= c; x++) memcpy(gc[x], f[2], 3);
            range_first = -1;
        } else {
            memcpy(gc[c], f[2], 3);
            if (f[13][0]) lower[c] = (uint32_t)strtoul(f[13], NULL, 16);
        }
        nlines++;
    }
    fclose(fp);
    ASSERT(nlines > 30000);

    static const char major[] = "LMNPSZC";
    static const int major_class[] = {MOE__UC_LETTER, MOE__UC_MARK,   MOE__UC_NUMBER,
                                      MOE__UC_PUNCT,  MOE__UC_SYMBOL, MOE__UC_SEPARATOR,
                                      MOE__UC_OTHER};
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        const char *got = moe__unicode_gc_name(moe__unicode_gc(c));
        if (strcmp(got, gc[c]) != 0) TEST_FAIL("U+%04X: gc %s, UCD says %s", c, got, gc[c]);
        const char *m = strchr(major, gc[c][0]);
        ASSERT(m);
        int want = major_class[m - major];
        if (moe__unicode_class(c) != want)
            TEST_FAIL("U+%04X: class %d, want %d", c, moe__unicode_class(c), want);
        if (moe__unicode_tolower(c) != lower[c])
            TEST_FAIL("U+%04X: lower U+%04X, UCD says U+%04X", c, moe__unicode_tolower(c),
                      lower[c]);
    }
    free(gc);
    free(lower);

    /* White_Space from PropList.txt */
    fp = ucd_open("PropList.txt");
    if (!fp) SKIP("no PropList.txt");
    unsigned char *ws = calloc(0x110000, 1);
    ASSERT(ws);
    int nws = 0;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "#\r\n")] = '\0';
        char *f[3];
        if (split_fields(line, f, 3) < 2) continue;
        char prop[64];
        if (sscanf(f[1], " %63s", prop) != 1 || strcmp(prop, "White_Space") != 0) continue;
        char *end;
        uint32_t a = (uint32_t)strtoul(f[0], &end, 16), b = a;
        if (end[0] == '.' && end[1] == '.') b = (uint32_t)strtoul(end + 2, NULL, 16);
        ASSERT(a <= b && b <= 0x10FFFF);
        for (uint32_t x = a; x <= b; x++) ws[x] = 1, nws++;
    }
    fclose(fp);
    ASSERT_EQ_INT(nws, 25);
    for (uint32_t c = 0; c <= 0x10FFFF; c++)
        if (moe__unicode_is_space(c) != ws[c])
            TEST_FAIL("U+%04X: is_space %d, PropList says %d", c, moe__unicode_is_space(c), ws[c]);
    free(ws);
    ASSERT_EQ_INT(moe__unicode_is_space(0x110000), 0);
}
