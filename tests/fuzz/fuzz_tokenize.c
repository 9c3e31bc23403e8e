/* fuzz_tokenize.c - libFuzzer target: any bytes through the tokenizers of
 * generated vocabularies (byte-level BPE with two pre-tokenizers, and
 * SentencePiece), never a crash, and the property that detokenizing gives
 * the input back (without special-token parsing both are lossless, except
 * that SentencePiece reads a literal U+2581 as its escaped space and is
 * lossless for valid UTF-8 only, and NFC,
 * for the qwen2 vocabulary, is not undone). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/gguf.h"
#include "testmodel.h"
#include "moe/vocab.h"
#include "text/unicode.h"

#define N_VOCABS 4
static moe_vocab *vocab[N_VOCABS];
static moe_gguf *gguf[N_VOCABS];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    static const char *pre[N_VOCABS] = {"default", "gpt-2", NULL,
                                        "qwen2"}; /* qwen2 normalises to NFC */
    for (int k = 0; k < N_VOCABS; k++) {
        moe_testmodel_params p;
        moe_testmodel_defaults(&p, MOE_ARCH_LLAMA, "tiny");
        p.tokenizer_pre = pre[k];
        p.tokenizer_spm = !pre[k];
        char path[64];
        snprintf(path, sizeof path, "/tmp/moe-fuzz-vocab-%d-%d.gguf", (int)getpid(), k);
        moe_err err;
        if (moe_testmodel_write(&p, path, &err) < 0 || moe_gguf_open(&gguf[k], path, &err) < 0 ||
            moe_vocab_load(&vocab[k], gguf[k], &err) < 0) {
            fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
            abort();
        }
        unlink(path); /* the mapping stays valid */
    }
    return 0;
}

static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        const int l = moe__utf8_decode((const char *)s + i, n - i, &cp);
        if (l <= 0) return 0;
        i += (size_t)l;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n > 4096) return 0;
    int32_t ids[4100];
    char back[4096 * 2];
    moe_err err;
    for (int k = 0; k < N_VOCABS; k++) {
        const int m = moe_tokenize(vocab[k], (const char *)data, n, 0, 0, ids, 4100, &err);
        if (m < 0) abort(); /* every byte has a token: must not fail */
        const long o = moe_detokenize(vocab[k], ids, m, MOE_DETOK_STRIP_SPACE, back, sizeof back);
        /* SentencePiece: a literal U+2581 reads as a space, and a broken
         * UTF-8 lead byte swallows the bytes after it, an escaped space's too
         * (llama.cpp does the same) */
        const int escaped_space =
            k == 2 && (memmem(data, n, "\xe2\x96\x81", 3) || !valid_utf8(data, n));
        if (o < 0 || (k != 3 && !escaped_space && ((size_t)o != n || memcmp(back, data, n))))
            abort(); /* lossless */
        (void)moe_tokenize(vocab[k], (const char *)data, n, 1, 1, ids, 4100, &err);
    }
    return 0;
}
