/* test_nfc.c - NFC normalisation (libmoe/src/text/unicode_norm.h): hand cases,
 * invalid UTF-8, every code point alone, the Unicode conformance file
 * NormalizationTest.txt and (through tests/integration/nfc_conformance.sh)
 * Node's String.prototype.normalize("NFC"). Inputs are exact-length heap
 * copies, so an overread shows up under ASan (make test-san). */
#include <stdlib.h>
#include <string.h>

#include "text/unicode.h"
#include "text/unicode_norm.h"
#include "moe/error.h"
#include "test.h"

/* Prints s[0..n) as hex bytes (for failure messages), into a static buffer. */
static const char *hexs(const char *s, size_t n) {
    static char buf[2][512];
    static int which;
    char *b = buf[which ^= 1];
    size_t w = 0;
    for (size_t i = 0; i < n && w + 4 < sizeof buf[0]; i++)
        w +=
            (size_t)snprintf(b + w, sizeof buf[0] - w, "%s%02X", i ? " " : "", (unsigned char)s[i]);
    if (n == 0) b[0] = '\0';
    return b;
}

/* NFC of a heap copy of exactly in[0..n); checks the result is NUL terminated
 * and that the quick check never says yes to text NFC changes. Caller frees. */
static char *nfc(const char *in, size_t n, size_t *out_len) {
    char *copy = malloc(n ? n : 1), *out = NULL;
    ASSERT(copy);
    memcpy(copy, in, n);
    int rc = moe__utf8_nfc(copy, n, &out, out_len);
    ASSERT_EQ_INT(rc, 0);
    ASSERT(out && out[*out_len] == '\0');
    int same = *out_len == n && memcmp(out, in, n) == 0;
    if (moe__utf8_is_nfc_quick(copy, n) && !same)
        TEST_FAIL("quick check says NFC but NFC(%s) = %s", hexs(in, n), hexs(out, *out_len));
    free(copy);
    return out;
}

static void expect_nfc_n(const char *in, size_t n, const char *want, size_t want_n) {
    size_t len;
    char *out = nfc(in, n, &len);
    if (len != want_n || memcmp(out, want, len) != 0)
        TEST_FAIL("NFC(%s) = %s, want %s", hexs(in, n), hexs(out, len), hexs(want, want_n));
    /* NFC is idempotent */
    size_t len2;
    char *again = nfc(out, len, &len2);
    if (len2 != len || memcmp(again, out, len) != 0)
        TEST_FAIL("NFC(NFC(%s)) = %s", hexs(in, n), hexs(again, len2));
    free(again);
    free(out);
}
#define expect_nfc(in, want) expect_nfc_n(in, strlen(in), want, strlen(want))

/* Encodes cps[0..n) as UTF-8 into out (room for 4 * n bytes); returns the length. */
static size_t utf8_of(const uint32_t *cps, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += (size_t)moe__utf8_encode(cps[i], out + w);
    return w;
}

TEST(nfc_composes_and_decomposes) {
    expect_nfc("", "");
    expect_nfc("hello, world", "hello, world");
    expect_nfc("e\xCC\x81", "\xC3\xA9");                    /* e + U+0301 -> U+00E9 */
    expect_nfc("\xC3\xA9", "\xC3\xA9");                     /* é stays */
    expect_nfc("cafe\xCC\x81s", "caf\xC3\xA9s");            /* inside a word */
    expect_nfc("A\xCC\x8A", "\xC3\x85");                    /* A + ring -> U+00C5 */
    expect_nfc("\xE2\x84\xAB", "\xC3\x85");                 /* U+212B ANGSTROM SIGN (singleton) */
    expect_nfc("\xE2\x84\xA6", "\xCE\xA9");                 /* U+2126 OHM SIGN -> U+03A9 */
    expect_nfc("\xE0\xA5\x98", "\xE0\xA4\x95\xE0\xA4\xBC"); /* U+0958 excluded: QA -> KA + NUKTA */
    expect_nfc("\xCD\x84", "\xCC\x88\xCC\x81");             /* U+0344: non-starter decomposition */
    expect_nfc("\xEF\xAC\xAC", "\xD7\xA9\xD6\xBC\xD7\x81"); /* U+FB2C, excluded, two levels */
    /* U+01D5 (Ü with macron) decomposes to three code points and composes back */
    expect_nfc("U\xCC\x88\xCC\x84", "\xC7\x95");
    expect_nfc("\xC3\x9C\xCC\x84", "\xC7\x95");
    /* U+1E9B U+0323: the conformance file's NFC example (long s with dot) */
    expect_nfc("\xE1\xBA\x9B\xCC\xA3", "\xE1\xBA\x9B\xCC\xA3");
    /* two starters compose: U+0B47 + U+0B3E -> U+0B4B */
    expect_nfc("\xE0\xAD\x87\xE0\xAC\xBE", "\xE0\xAD\x8B");
}

TEST(nfc_hangul) {
    /* U+1100 U+1161 -> U+AC00; U+1100 U+1161 U+11A8 -> U+AC01 */
    expect_nfc("\xE1\x84\x80\xE1\x85\xA1", "\xEA\xB0\x80");
    expect_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81");
    expect_nfc("\xEA\xB0\x80\xE1\x86\xA8", "\xEA\xB0\x81"); /* LV + T */
    expect_nfc("\xEA\xB0\x81", "\xEA\xB0\x81");             /* LVT stays */
    /* LVT + T does not compose; U+11A7 (T base) is no trailing consonant */
    expect_nfc("\xEA\xB0\x81\xE1\x86\xA8", "\xEA\xB0\x81\xE1\x86\xA8");
    expect_nfc("\xEA\xB0\x80\xE1\x86\xA7", "\xEA\xB0\x80\xE1\x86\xA7");
    /* the last syllable, U+D7A3 = U+1112 U+1175 U+11C2 */
    expect_nfc("\xE1\x84\x92\xE1\x85\xB5\xE1\x87\x82", "\xED\x9E\xA3");
    /* "한국어" decomposed */
    expect_nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB\xE1\x84\x80\xE1\x85\xAE\xE1\x86\xA8"
               "\xE1\x84\x8B\xE1\x85\xA5",
               "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4");
    uint32_t d[MOE__UNICODE_DECOMP_MAX];
    ASSERT_EQ_INT(moe__unicode_decompose(0xD7A3, d), 3);
    ASSERT_EQ_INT(d[0], 0x1112);
    ASSERT_EQ_INT(d[1], 0x1175);
    ASSERT_EQ_INT(d[2], 0x11C2);
    ASSERT_EQ_INT(moe__unicode_decompose(0xAC00, d), 2);
    ASSERT_EQ_INT(moe__unicode_compose(0xAC00, 0x11A8), 0xAC01);
    ASSERT_EQ_INT(moe__unicode_compose(0xAC01, 0x11A8), 0);
}

TEST(nfc_canonical_order_and_blocking) {
    /* q + dot above (230) + dot below (220): reordered, nothing composes */
    expect_nfc("q\xCC\x87\xCC\xA3", "q\xCC\xA3\xCC\x87");
    /* U+1E0B (ḋ) + dot below -> U+1E0D (ḍ) + dot above (UAX #15's example) */
    expect_nfc("\xE1\xB8\x8B\xCC\xA3", "\xE1\xB8\x8D\xCC\x87");
    expect_nfc("d\xCC\x87\xCC\xA3", "\xE1\xB8\x8D\xCC\x87");
    /* a + ogonek (202) + acute (230): ą, then acute has no composite with it */
    expect_nfc("a\xCC\xA8\xCC\x81", "\xC4\x85\xCC\x81");
    /* equal classes keep their order (stable) and block: a + acute + grave */
    expect_nfc("a\xCC\x81\xCC\x80", "\xC3\xA1\xCC\x80");
    expect_nfc("a\xCC\x80\xCC\x81", "\xC3\xA0\xCC\x81");
    /* a starter between blocks: the acute after b cannot reach e */
    expect_nfc("eb\xCC\x81", "eb\xCC\x81");
    /* text opening with marks: reordered, composes with nothing */
    expect_nfc("\xCC\x81\xCC\xA3z", "\xCC\xA3\xCC\x81z");
    /* a long run of marks (counting sort): a + 40 x (acute, dot below) */
    char in[1 + 40 * 4], want[3 + 39 * 2 + 40 * 2];
    size_t n = 0, w = 0;
    in[n++] = 'a';
    for (int i = 0; i < 40; i++) memcpy(in + n, "\xCC\x81\xCC\xA3", 4), n += 4;
    memcpy(want, "\xE1\xBA\xA1", 3), w = 3; /* U+1EA1 ạ */
    for (int i = 0; i < 39; i++) memcpy(want + w, "\xCC\xA3", 2), w += 2;
    for (int i = 0; i < 40; i++) memcpy(want + w, "\xCC\x81", 2), w += 2;
    ASSERT_EQ_INT(n, sizeof in);
    ASSERT_EQ_INT(w, sizeof want);
    expect_nfc_n(in, n, want, w);
}

TEST(nfc_invalid_utf8_passes_through) {
    /* lone bytes, truncated and overlong forms, surrogates: copied as they are */
    static const char *const bad[] = {
        "\xFF",     "\xC3",    "\x80",         "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
        "\xE2\x84", "abc\xFE", "\xF0\x9F\x98",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_nfc(bad[i], bad[i]);
        ASSERT(moe__utf8_is_nfc_quick(bad[i], strlen(bad[i])));
    }
    /* an invalid byte is a boundary: the acute after it composes with nothing */
    expect_nfc("e\xFF\xCC\x81", "e\xFF\xCC\x81");
    expect_nfc("e\xCC", "e\xCC"); /* a truncated U+0301 */
    /* and normalisation goes on around it */
    expect_nfc("\xFFo\xCC\x81\xFE", "\xFF\xC3\xB3\xFE"); /* o + acute: U+00F3 */
    expect_nfc("A\xCC\x8A\x80\xE2\x84\xAB\xC3", "\xC3\x85\x80\xC3\x85\xC3");
    /* NUL is an ordinary starter */
    expect_nfc_n("a\0e\xCC\x81", 5, "a\0\xC3\xA9", 4);
    /* NULL with n = 0 */
    char *out = (char *)1;
    size_t len = 9;
    ASSERT_EQ_INT(moe__utf8_nfc(NULL, 0, &out, &len), 0);
    ASSERT(out && len == 0 && out[0] == '\0');
    free(out);
    ASSERT(moe__utf8_is_nfc_quick(NULL, 0));
}

TEST(nfc_quick_check) {
    ASSERT(moe__utf8_is_nfc_quick("plain ASCII text\n", 17));
    ASSERT(moe__utf8_is_nfc_quick("caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80", 16));
    ASSERT(moe__utf8_is_nfc_quick("\xEA\xB0\x81", 3));  /* a Hangul syllable */
    ASSERT(!moe__utf8_is_nfc_quick("e\xCC\x81", 3));    /* U+0301: Maybe */
    ASSERT(!moe__utf8_is_nfc_quick("\xE2\x84\xAB", 3)); /* U+212B: No */
    ASSERT(!moe__utf8_is_nfc_quick("\xE1\x85\xA1", 3)); /* a V jamo: Maybe */
    /* U+0591 (220) then U+0483 (230): in order; the reverse is not */
    ASSERT(moe__utf8_is_nfc_quick("x\xD6\x91\xD2\x83", 5));
    ASSERT(!moe__utf8_is_nfc_quick("x\xD2\x83\xD6\x91", 5));
    expect_nfc("x\xD2\x83\xD6\x91", "x\xD6\x91\xD2\x83");
}

/* Every code point alone: NFC is idempotent, agrees with its properties, and
 * never grows the text more than 3 times. */
TEST(nfc_every_code_point) {
    long changed = 0;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        char in[4];
        size_t n = (size_t)moe__utf8_encode(cp, in), len;
        char *out = nfc(in, n, &len);
        ASSERT(len <= 3 * n);
        if (len != n || memcmp(in, out, n) != 0) {
            changed++;
            size_t len2;
            char *again = nfc(out, len, &len2);
            if (len2 != len || memcmp(again, out, len) != 0)
                TEST_FAIL("U+%04X: NFC not idempotent", cp);
            free(again);
        }
        free(out);
        uint32_t d[MOE__UNICODE_DECOMP_MAX];
        int k = moe__unicode_decompose(cp, d);
        for (int i = 0; i < k; i++) { /* full decompositions: no further step */
            uint32_t e[MOE__UNICODE_DECOMP_MAX];
            if (moe__unicode_decompose(d[i], e) != 0)
                TEST_FAIL("U+%04X: decomposition not full at U+%04X", cp, d[i]);
        }
    }
    /* Unicode 15.0: 1120 code points are not NFC by themselves (NFC_QC=No) */
    fprintf(stderr, "%ld code points change under NFC\n", changed);
    ASSERT(changed > 1000 && changed < 1300);
}

/* Seeded random strings of fragments: well-formed pieces that interact (marks,
 * jamo, composable letters) and stray bytes. NFC never fails, is idempotent,
 * and a byte 0xFF (never valid UTF-8) splits the text into independent parts:
 * NFC(a 0xFF b) == NFC(a) 0xFF NFC(b). */
TEST(nfc_random_bytes) {
    static const char *const frag[] = {
        "a",
        "e",
        "q",
        "\xCC\x81",
        "\xCC\xA3",
        "\xCC\x88",
        "\xCC\x87",
        "\xD6\x91",
        "\xD2\x83",
        "\xE1\x84\x80",
        "\xE1\x85\xA1",
        "\xE1\x86\xA8",
        "\xEA\xB0\x80",
        "\xE2\x84\xAB",
        "\xC3\xA9",
        "\xE0\xAD\x87",
        "\xE0\xAC\xBE",
        "\xCD\x84",
        "\xC3",
        "\x80",
        "\xE1\x84",
    };
    const size_t nfrag = sizeof frag / sizeof frag[0];
    uint64_t seed = 0x5eed;
    char a[64 * 3], b[64 * 3], ab[sizeof a + 1 + sizeof b];
    for (int iter = 0; iter < 20000; iter++) {
        size_t na = 0, nb = 0;
        for (int k = (int)(test_rand_u64(&seed) % 20); k > 0; k--) {
            const char *f = frag[test_rand_u64(&seed) % nfrag];
            memcpy(a + na, f, strlen(f)), na += strlen(f);
        }
        for (int k = (int)(test_rand_u64(&seed) % 20); k > 0; k--) {
            const char *f = frag[test_rand_u64(&seed) % nfrag];
            memcpy(b + nb, f, strlen(f)), nb += strlen(f);
        }
        memcpy(ab, a, na), ab[na] = '\xFF', memcpy(ab + na + 1, b, nb);
        size_t la, lb, lab;
        char *oa = nfc(a, na, &la), *ob = nfc(b, nb, &lb), *oab = nfc(ab, na + 1 + nb, &lab);
        size_t l2;
        char *again = nfc(oab, lab, &l2);
        if (l2 != lab || memcmp(again, oab, lab) != 0)
            TEST_FAIL("NFC(NFC(%s)) = %s", hexs(ab, na + 1 + nb), hexs(again, l2));
        if (lab != la + 1 + lb || memcmp(oab, oa, la) != 0 || oab[la] != '\xFF' ||
            memcmp(oab + la + 1, ob, lb) != 0)
            TEST_FAIL("NFC(%s) = %s: not split at FF", hexs(ab, na + 1 + nb), hexs(oab, lab));
        free(again), free(oa), free(ob), free(oab);
    }
}

/* ---- NormalizationTest.txt ---- */

/* Parses one field of space separated hex code points at *p (up to ';') into
 * UTF-8 in out; returns its length and moves *p past the ';'. */
static size_t parse_field(char **p, char *out, uint32_t *cps, size_t *ncps) {
    size_t n = 0;
    char *s = *p;
    while (*s && *s != ';') {
        if (*s == ' ') {
            s++;
            continue;
        }
        char *e;
        unsigned long v = strtoul(s, &e, 16);
        if (e == s || v > 0x10FFFF || n >= 64) TEST_FAIL("bad field near '%s'", s);
        cps[n++] = (uint32_t)v;
        s = e;
    }
    if (*s != ';') TEST_FAIL("bad line near '%s'", *p);
    *p = s + 1;
    *ncps = n;
    return utf8_of(cps, n, out);
}

static void expect_field(long line, int col, const char *in, size_t n, const char *want,
                         size_t want_n) {
    size_t len;
    char *out = nfc(in, n, &len);
    if (len != want_n || memcmp(out, want, len) != 0)
        TEST_FAIL("NormalizationTest.txt line %ld: NFC(c%d) = %s, want %s", line, col,
                  hexs(out, len), hexs(want, want_n));
    free(out);
}

/* NormalizationTest.txt from $MOE_NFC_TEST_FILE (plain text), else
 * $UNICODE_DIR (default /usr/share/unicode)/NormalizationTest.txt.bz2 through
 * bzcat. Checks c2 == NFC(c1) == NFC(c2) == NFC(c3) and c4 == NFC(c4) ==
 * NFC(c5) on every line, and NFC(X) == X for every code point X that Part 1
 * does not list. */
TEST(nfc_conformance) {
    const char *path = getenv("MOE_NFC_TEST_FILE");
    FILE *fp;
    int piped = 0;
    if (path && *path) {
        fp = fopen(path, "r");
        if (!fp) TEST_FAIL("cannot open MOE_NFC_TEST_FILE=%s", path);
    } else {
        const char *d = getenv("UNICODE_DIR");
        char bz[1024], cmd[1200];
        snprintf(bz, sizeof bz, "%s/NormalizationTest.txt.bz2", d && *d ? d : "/usr/share/unicode");
        FILE *probe = fopen(bz, "r");
        if (!probe) SKIP("no NormalizationTest.txt.bz2 (apt-get install unicode-data)");
        fclose(probe);
        snprintf(cmd, sizeof cmd, "bzcat '%s' 2>/dev/null", bz);
        fp = popen(cmd, "r");
        if (!fp) SKIP("cannot run bzcat (apt-get install bzip2)");
        piped = 1;
    }
    unsigned char *in_part1 = calloc(0x110000, 1);
    ASSERT(in_part1);
    static char line[4096];
    char f[5][64 * 4];
    size_t fn[5];
    uint32_t cps[64];
    long lineno = 0, checked = 0;
    int part = -1;
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        if (line[0] == '@') {
            part = atoi(line + 5); /* "@Part1 # ..." */
            continue;
        }
        if (line[0] == '#' || line[0] == '\n') continue;
        char *p = line;
        size_t ncps;
        for (int c = 0; c < 5; c++) {
            fn[c] = parse_field(&p, f[c], cps, &ncps);
            if (c == 0 && part == 1 && ncps == 1) in_part1[cps[0]] = 1;
        }
        /* c2 == NFC(c1) == NFC(c2) == NFC(c3) */
        for (int c = 0; c < 3; c++) expect_field(lineno, c + 1, f[c], fn[c], f[1], fn[1]);
        /* c4 == NFC(c4) == NFC(c5) */
        for (int c = 3; c < 5; c++) expect_field(lineno, c + 1, f[c], fn[c], f[3], fn[3]);
        checked++;
    }
    int status = piped ? pclose(fp) : fclose(fp);
    if (piped && checked == 0) SKIP("bzcat gave nothing (apt-get install bzip2)");
    ASSERT_EQ_INT(status, 0);
    long others = 0;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        if (in_part1[cp] || (cp >= 0xD800 && cp <= 0xDFFF)) continue;
        char s[4];
        size_t n = (size_t)moe__utf8_encode(cp, s);
        expect_field(0, 1, s, n, s, n);
        others++;
    }
    free(in_part1);
    fprintf(stderr,
            "NormalizationTest.txt: %ld lines checked (5 columns each), %ld other code "
            "points unchanged\n",
            checked, others);
    ASSERT(checked > 10000);
}

/* ---- Node's String.prototype.normalize ---- */

static size_t unhex(const char *s, size_t n, char *out) {
    size_t w = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        if (sscanf(s + i, "%2x", &v) != 1) TEST_FAIL("bad hex '%.*s'", (int)n, s);
        out[w++] = (char)v;
    }
    return w;
}

/* 1 when every code point of s[0..n) (valid UTF-8) is assigned in the Unicode
 * version of the tables: NFC of such text is stable across versions. */
static int all_assigned(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int len = moe__utf8_decode(s + i, n - i, &cp);
        if (len <= 0 || moe__unicode_gc(cp) == MOE__GC_CN) return 0;
        i += (size_t)len;
    }
    return 1;
}

/* Pairs "HEX(input) HEX(NFC by Node)" a line in $MOE_NFC_PAIRS, written by
 * tests/integration/nfc_conformance.sh. Inputs with code points unassigned in
 * our Unicode version are not compared (Node's may be newer). */
TEST(ext_nfc_node_pairs) {
    const char *path = getenv("MOE_NFC_PAIRS");
    if (!path || !*path)
        SKIP("MOE_NFC_PAIRS not set (tests/integration/nfc_conformance.sh sets it)");
    FILE *fp = fopen(path, "r");
    if (!fp) TEST_FAIL("cannot open MOE_NFC_PAIRS=%s", path);
    size_t cap = 1 << 16;
    char *line = malloc(cap), *in = malloc(cap), *want = malloc(cap);
    ASSERT(line && in && want);
    long lineno = 0, checked = 0, changed = 0, unassigned = 0;
    while (fgets(line, (int)cap, fp)) {
        lineno++;
        size_t ll = strcspn(line, "\n");
        if (ll + 1 >= cap) TEST_FAIL("line %ld too long", lineno);
        line[ll] = '\0';
        char *sp = strchr(line, ' ');
        if (!sp) TEST_FAIL("line %ld: no space", lineno);
        size_t n = unhex(line, (size_t)(sp - line), in);
        size_t want_n = unhex(sp + 1, strlen(sp + 1), want);
        if (!all_assigned(in, n)) {
            unassigned++;
            continue;
        }
        size_t len;
        char *out = nfc(in, n, &len);
        if (len != want_n || memcmp(out, want, len) != 0)
            TEST_FAIL("line %ld: NFC(%s) = %s, Node says %s", lineno, hexs(in, n), hexs(out, len),
                      hexs(want, want_n));
        changed += n != want_n || memcmp(in, want, n) != 0;
        checked++;
        free(out);
    }
    fclose(fp);
    free(line), free(in), free(want);
    fprintf(stderr, "Node pairs: %ld checked (%ld changed by NFC), %ld skipped as unassigned\n",
            checked, changed, unassigned);
    ASSERT(checked > 0);
}
