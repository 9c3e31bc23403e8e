/* fuzz_tokenize.c - libFuzzer target: any bytes through the tokenizer of a
 * generated model's vocabulary (both pre-tokenizers), never a crash, and the
 * property that the tokens' bytes joined give the input back (without
 * special-token parsing, byte-level BPE is lossless). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/gguf.h"
#include "moe/testmodel.h"
#include "moe/vocab.h"

static moe_vocab *vocab[2];
static moe_gguf *gguf[2];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    static const char *pre[2] = {"default", "gpt-2"};
    for (int k = 0; k < 2; k++) {
        moe_testmodel_params p;
        moe_testmodel_defaults(&p, MOE_ARCH_LLAMA, "tiny");
        p.tokenizer_pre = pre[k];
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n > 4096) return 0;
    int32_t ids[4100];
    char back[4096 * 2];
    moe_err err;
    for (int k = 0; k < 2; k++) {
        const int m = moe_tokenize(vocab[k], (const char *)data, n, 0, 0, ids, 4100, &err);
        if (m < 0) abort(); /* every byte has a token: must not fail */
        size_t o = 0;
        for (int i = 0; i < m; i++) {
            const int l = moe_vocab_token_bytes(vocab[k], ids[i], back + o, sizeof back - o);
            if (l <= 0) abort();
            o += (size_t)l;
        }
        if (o != n || memcmp(back, data, n)) abort(); /* lossless */
        (void)moe_tokenize(vocab[k], (const char *)data, n, 1, 1, ids, 4100, &err);
    }
    return 0;
}
