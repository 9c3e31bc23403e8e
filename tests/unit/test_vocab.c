/* test_vocab.c - GGUF vocabularies and byte-level BPE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/gguf.h"
#include "testmodel.h"
#include "moe/vocab.h"
#include "test.h"

/* The vocabulary of a generated tiny model: byte-level BPE, or SentencePiece. */
static moe_vocab *gen_vocab(moe_gguf **g, char *path, size_t n, int spm) {
    moe_testmodel_params p;
    moe_testmodel_defaults(&p, MOE_ARCH_LLAMA, "tiny");
    p.tokenizer_spm = spm;
    snprintf(path, n, "/tmp/moe-test-%d-%s.gguf", (int)getpid(), spm ? "spm" : "vocab");
    moe_err err;
    if (moe_testmodel_write(&p, path, &err) < 0) TEST_FAIL("%s", err.msg);
    if (moe_gguf_open(g, path, &err) < 0) TEST_FAIL("%s", err.msg);
    moe_vocab *v;
    if (moe_vocab_load(&v, *g, &err) < 0) TEST_FAIL("%s", err.msg);
    return v;
}

static moe_vocab *tiny_vocab(moe_gguf **g, char *path, size_t n) {
    return gen_vocab(g, path, n, 0);
}
static moe_vocab *spm_vocab(moe_gguf **g, char *path, size_t n) {
    return gen_vocab(g, path, n, 1);
}

/* decoding what was encoded gives the input back, for any bytes */
TEST(vocab_bpe_roundtrip_random_bytes) {
    moe_gguf *g;
    char path[256];
    moe_vocab *v = tiny_vocab(&g, path, sizeof path);
    ASSERT_EQ_INT(moe_vocab_kind_of(v), MOE_VOCAB_BPE);
    ASSERT_EQ_INT(moe_vocab_n_tokens(v), 512);
    ASSERT_EQ_INT(moe_vocab_eos(v), 511);
    uint64_t s = 99;
    for (int t = 0; t < 500; t++) {
        char word[40];
        const int n = 1 + (int)(test_rand_u64(&s) % 39);
        for (int i = 0; i < n; i++)
            word[i] = t % 2 ? (char)('a' + test_rand_u64(&s) % 26) : (char)test_rand_u64(&s);
        int32_t ids[40];
        const int k = moe_vocab_encode_word(v, word, (size_t)n, ids, 40);
        ASSERT(k >= 1 && k <= n);
        char back[400];
        size_t o = 0;
        for (int i = 0; i < k; i++) {
            const int l = moe_vocab_token_bytes(v, ids[i], back + o, sizeof back - o);
            ASSERT(l > 0);
            o += (size_t)l;
        }
        ASSERT_EQ_INT(o, n);
        ASSERT(memcmp(back, word, (size_t)n) == 0);
    }
    int32_t one[1];
    ASSERT_EQ_INT(moe_vocab_encode_word(v, "ab", 2, one, 1), MOE_ENOSPC);
    moe_vocab_free(v);
    moe_gguf_close(g);
    unlink(path);
}

/* the rank-0 merge always applies to its own two parts */
TEST(vocab_bpe_first_merge) {
    moe_gguf *g;
    char path[256];
    moe_vocab *v = tiny_vocab(&g, path, sizeof path);
    const moe_gguf_kv *mk = moe_gguf_find_kv(g, "tokenizer.ggml.merges");
    ASSERT(mk && mk->arr_n > 0);
    const moe_gguf_str m0 = moe_gguf_arr_str(g, mk, 0);
    char joined[64];
    size_t j = 0;
    for (size_t i = 0; i < m0.len; i++)
        if (m0.ptr[i] != ' ') joined[j++] = m0.ptr[i];
    const int32_t want = moe_vocab_find(v, joined, j);
    ASSERT(want >= 256);
    int32_t ids[8];
    ASSERT_EQ_INT(moe_vocab_encode_word(v, joined, j, ids, 8), 1); /* plain letters: bytes = text */
    ASSERT_EQ_INT(ids[0], want);
    moe_vocab_free(v);
    moe_gguf_close(g);
    unlink(path);
}

TEST(vocab_utf8_complete) {
    ASSERT_EQ_INT(moe_utf8_complete("abc", 3), 3);
    ASSERT_EQ_INT(moe_utf8_complete("a\xC3", 2), 1);         /* lead of 2, missing 1 */
    ASSERT_EQ_INT(moe_utf8_complete("a\xC3\xA9", 3), 3);     /* é complete */
    ASSERT_EQ_INT(moe_utf8_complete("\xE2\x82", 2), 0);      /* € missing 1 */
    ASSERT_EQ_INT(moe_utf8_complete("x\xE2\x82\xAC", 4), 4); /* € complete */
    ASSERT_EQ_INT(moe_utf8_complete("\xF0\x9F\x98", 3), 0);  /* emoji missing 1 */
    ASSERT_EQ_INT(moe_utf8_complete("\xF0\x9F\x98\x80", 4), 4);
    ASSERT_EQ_INT(moe_utf8_complete("", 0), 0);
}

/* Writes w (destroyed here) to path; loading its vocabulary fails with
 * want, and a message that contains what. */
static void expect_load_error(moe_gguf_writer *w, const char *path, int want, const char *what) {
    moe_err err;
    moe_gguf *g;
    moe_vocab *v;
    ASSERT_EQ_INT(moe_gguf_writer_write(w, path, &err), 0);
    moe_gguf_writer_destroy(w);
    ASSERT_EQ_INT(moe_gguf_open(&g, path, &err), 0);
    ASSERT_EQ_INT(moe_vocab_load(&v, g, &err), want);
    ASSERT_STR_CONTAINS(err.msg, what);
    moe_gguf_close(g);
}

TEST(vocab_load_errors) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/moe-test-%d-badvocab.gguf", (int)getpid());
    moe_gguf_writer *w = moe_gguf_writer_create();
    moe_gguf_writer_set_str(w, "general.architecture", "llama");
    expect_load_error(w, path, MOE_EFORMAT, "tokenizer.ggml.model");
    w = moe_gguf_writer_create();
    moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "t5");
    expect_load_error(w, path, MOE_ENOTSUP, "'t5'");
    w = moe_gguf_writer_create();
    moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    const char *toks[2] = {"a", "b"};
    moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 2);
    const int32_t types[3] = {1, 1, 1};
    moe_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_TYPE_INT32, types, 3);
    expect_load_error(w, path, MOE_EFORMAT, "token_type");
    unlink(path);
}

/* invalid UTF-8 (overlong, surrogate, truncated, lone continuation, 0xFF)
 * is tokenized byte by byte, never an error, and decodes to the same bytes,
 * for every pre-tokenizer */
TEST(vocab_tokenize_invalid_utf8) {
    static const char *pres[] = {"default", "gpt-2", "llama-bpe", "qwen2", "deepseek-v3"};
    static const char bad[] =
        "ok \xC0\xAF \xED\xA0\x80 \xF4\x90\x80\x80 \xE2\x82 \x80\x80 \xFF\xFE end\xC3";
    const size_t n = sizeof bad - 1;
    for (size_t k = 0; k < sizeof pres / sizeof pres[0]; k++) {
        moe_testmodel_params p;
        moe_testmodel_defaults(&p, MOE_ARCH_LLAMA, "tiny");
        p.tokenizer_pre = pres[k];
        char path[256];
        snprintf(path, sizeof path, "/tmp/moe-test-%d-utf8.gguf", (int)getpid());
        moe_err err;
        moe_gguf *g;
        moe_vocab *v;
        if (moe_testmodel_write(&p, path, &err) < 0 || moe_gguf_open(&g, path, &err) < 0 ||
            moe_vocab_load(&v, g, &err) < 0)
            TEST_FAIL("%s", err.msg);
        char *copy = malloc(n); /* exact length: ASan catches any overread */
        memcpy(copy, bad, n);
        int32_t ids[128];
        const int m = moe_tokenize(v, copy, n, 0, 1, ids, 128, &err);
        if (m <= 0) TEST_FAIL("%s: %s", pres[k], err.msg);
        char back[256];
        size_t o = 0;
        for (int i = 0; i < m; i++)
            o += (size_t)moe_vocab_token_bytes(v, ids[i], back + o, sizeof back - o);
        ASSERT_EQ_INT(o, n);
        ASSERT(memcmp(back, bad, n) == 0);
        free(copy);
        moe_vocab_free(v);
        moe_gguf_close(g);
        unlink(path);
    }
}

static int text_is(const moe_vocab *v, int32_t id, const char *want) {
    size_t l;
    const char *t = moe_vocab_text(v, id, &l);
    return t && l == strlen(want) && !memcmp(t, want, l);
}

/* SentencePiece: defaults, the leading space (also after a special token),
 * merges by score, byte fallback, and the space removed again on decoding */
TEST(vocab_spm_basics) {
    moe_gguf *g;
    char path[256];
    moe_vocab *v = spm_vocab(&g, path, sizeof path);
    moe_err err;
    ASSERT_EQ_INT(moe_vocab_kind_of(v), MOE_VOCAB_SPM);
    ASSERT_EQ_INT(moe_vocab_add_bos(v), 1); /* no add_bos_token key: SentencePiece adds BOS */
    ASSERT_EQ_INT(moe_vocab_add_space_prefix(v), 1);
    ASSERT_EQ_INT(moe_vocab_unk(v), 0);
    int32_t ids[64];
    int n = moe_tokenize(v, "the", 3, 1, 0, ids, 64, &err);
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_INT(ids[0], 1);
    ASSERT(text_is(v, ids[1], "\xe2\x96\x81the")); /* one piece, space included */
    /* after <s> in the text (parsed), the space comes back */
    n = moe_tokenize(v, "<s>the</s>", 10, 0, 1, ids, 64, &err);
    ASSERT_EQ_INT(n, 3);
    ASSERT_EQ_INT(ids[0], 1);
    ASSERT(text_is(v, ids[1], "\xe2\x96\x81the"));
    ASSERT_EQ_INT(ids[2], 2);
    /* ü is not in the vocabulary: its two bytes */
    n = moe_tokenize(v, "\xc3\xbc", 2, 0, 0, ids, 64, &err);
    ASSERT_EQ_INT(n, 3);
    ASSERT(text_is(v, ids[0], "\xe2\x96\x81"));
    ASSERT(text_is(v, ids[1], "<0xC3>"));
    ASSERT(text_is(v, ids[2], "<0xBC>"));
    char out[64];
    ASSERT_EQ_INT(moe_detokenize(v, ids, n, MOE_DETOK_STRIP_SPACE, out, sizeof out), 2);
    ASSERT(!memcmp(out, "\xc3\xbc", 2));
    ASSERT_EQ_INT(moe_detokenize(v, ids, n, 0, out, sizeof out), 3); /* a continuation keeps it */
    ASSERT(!memcmp(out, " \xc3\xbc", 3));
    /* a too-small buffer: the full length is returned, nothing past cap written */
    out[1] = 'X';
    ASSERT_EQ_INT(moe_detokenize(v, ids, n, 0, out, 1), 3);
    ASSERT_EQ_INT(out[1], 'X');
    /* control tokens skipped on request */
    const int32_t bos_the[2] = {1, ids[0]};
    ASSERT_EQ_INT(moe_detokenize(v, bos_the, 2, MOE_DETOK_SKIP_SPECIAL, out, sizeof out), 1);
    ASSERT_EQ_INT(moe_detokenize(v, bos_the, 2, 0, out, sizeof out), 4); /* "<s> " */
    const int32_t bad[1] = {100000};
    ASSERT_EQ_INT(moe_detokenize(v, bad, 1, 0, out, sizeof out), MOE_ERANGE);
    moe_vocab_free(v);
    moe_gguf_close(g);
    unlink(path);
}

/* the streaming detokenizer emits whole characters only, and the pieces
 * add up to the whole text, for byte-level BPE and SentencePiece alike */
TEST(vocab_detok_stream) {
    static const char text[] =
        "h\xc3\xa9llo \xf0\x9f\x98\x80 w\xc3\xb6rld \xe4\xbd\xa0\xe5\xa5\xbd!";
    const size_t tl = sizeof text - 1;
    for (int kind = 0; kind < 2; kind++) {
        moe_gguf *g;
        char path[256];
        moe_vocab *v = kind ? spm_vocab(&g, path, sizeof path) : tiny_vocab(&g, path, sizeof path);
        moe_err err;
        int32_t ids[128];
        const int n = moe_tokenize(v, text, tl, 0, 0, ids, 128, &err);
        ASSERT(n > 0);
        moe_detok_stream ds;
        moe_detok_stream_init(&ds, v, MOE_DETOK_STRIP_SPACE);
        char all[256], piece[64];
        size_t o = 0;
        int held = 0;
        for (int i = 0; i < n; i++) {
            const int l = moe_detok_stream_push(&ds, ids[i], piece, sizeof piece);
            ASSERT(l >= 0);
            ASSERT_EQ_INT(moe_utf8_complete(piece, (size_t)l), (size_t)l); /* whole characters */
            held += ds.n_pend > 0;
            memcpy(all + o, piece, (size_t)l);
            o += (size_t)l;
        }
        ASSERT(held > 0); /* some character was split over tokens */
        ASSERT_EQ_INT(moe_detok_stream_flush(&ds, piece, sizeof piece), 0);
        ASSERT_EQ_INT(o, tl);
        ASSERT(!memcmp(all, text, tl));
        /* a character cut off at the end comes out of flush */
        moe_detok_stream_init(&ds, v, 0);
        const int32_t lead =
            moe_vocab_find(v, kind ? "<0xE4>" : "\xc3\xa4", kind ? 6 : 2); /* byte 0xE4 */
        ASSERT(lead >= 0);
        ASSERT_EQ_INT(moe_detok_stream_push(&ds, lead, piece, sizeof piece), 0);
        ASSERT_EQ_INT(moe_detok_stream_push(&ds, lead, piece, 1), MOE_ENOSPC);
        ASSERT_EQ_INT(moe_detok_stream_flush(&ds, piece, sizeof piece), 1);
        ASSERT_EQ_INT((unsigned char)piece[0], 0xE4);
        moe_vocab_free(v);
        moe_gguf_close(g);
        unlink(path);
    }
}
