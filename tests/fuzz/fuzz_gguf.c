/* fuzz_gguf.c - libFuzzer target: any bytes as a GGUF file: the reader must
 * refuse or accept without reading out of bounds; what opens is walked, and
 * its vocabulary loaded if it has one. */
#include <stdlib.h>
#include <string.h>

#include "moe/gguf.h"
#include "moe/vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    /* an exact-size copy so ASan sees any overread */
    void *buf = malloc(n ? n : 1);
    if (!buf) return 0;
    memcpy(buf, data, n);
    moe_gguf *g;
    moe_err err;
    if (moe_gguf_open_buffer(&g, buf, n, "fuzz", &err) == 0) {
        for (int64_t i = 0; i < moe_gguf_n_kv(g); i++) {
            const moe_gguf_kv *kv = moe_gguf_kv_at(g, i);
            if (kv->type == MOE_GGUF_TYPE_ARRAY && kv->arr_type == MOE_GGUF_TYPE_STRING)
                for (uint64_t j = 0; j < kv->arr_n && j < 64; j++) (void)moe_gguf_arr_str(g, kv, j);
        }
        volatile unsigned sum = 0;
        for (int64_t i = 0; i < moe_gguf_n_tensors(g); i++) {
            const moe_gguf_tensor *t = moe_gguf_tensor_at(g, i);
            if (t->nbytes) sum += ((const unsigned char *)t->data)[t->nbytes - 1];
        }
        moe_vocab *v;
        if (moe_vocab_load(&v, g, &err) == 0) {
            int32_t ids[64];
            (void)moe_tokenize(v, "hello world 123", 15, 1, 1, ids, 64, &err);
            moe_vocab_free(v);
        }
        moe_gguf_close(g);
    }
    free(buf);
    return 0;
}
