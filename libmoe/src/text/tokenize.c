/* tokenize.c - text to token ids: special tokens, pre-tokenizer, BPE (see
 * moe/vocab.h). Not on the decode hot path: scratch is allocated per call. */
#include <stdlib.h>
#include <string.h>

#include "moe/vocab.h"
#include "pretok.h"
#include "vocab_internal.h"

/* A special token whose text occurs at s[i], longest first; -1 if none. */
static int32_t special_at(const moe_vocab *v, const int32_t *sp, int n_sp, const char *s, size_t n,
                          size_t i, size_t *len) {
    char buf[256];
    for (int k = 0; k < n_sp; k++) {
        const int l = moe_vocab_token_bytes(v, sp[k], buf, sizeof buf);
        if (l > 0 && i + (size_t)l <= n && !memcmp(s + i, buf, (size_t)l)) {
            *len = (size_t)l;
            return sp[k];
        }
    }
    return -1;
}

typedef struct sort_ctx {
    const moe_vocab *v;
} sort_ctx;

static int token_len(const moe_vocab *v, int32_t id) {
    char buf[256];
    return moe_vocab_token_bytes(v, id, buf, sizeof buf);
}

static int cmp_len_desc(const void *a, const void *b, void *ctx) {
    const sort_ctx *c = ctx;
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    const int lx = token_len(c->v, x), ly = token_len(c->v, y);
    return lx != ly ? ly - lx : (x > y) - (x < y);
}

int moe_tokenize(const moe_vocab *v, const char *text, size_t len, int add_bos, int parse_special,
                 int32_t *out, int cap, moe_err *err) {
    if (moe_vocab_kind_of(v) != MOE_VOCAB_BPE)
        return moe_err_set(err, MOE_ENOTSUP, "tokenizing SentencePiece vocabularies is not supported yet");
    const int kind = moe__pretok_kind(moe_vocab_pre(v));
    if (kind < 0)
        return moe_err_set(err, MOE_ENOTSUP, "pre-tokenizer '%s' is not supported yet (default, gpt-2, olmo, llama-bpe, qwen2, deepseek-v3)",
                           moe_vocab_pre(v));
    const int nv = moe_vocab_n_tokens(v);
    int32_t *sp = NULL;
    int n_sp = 0;
    if (parse_special) {
        sp = malloc((size_t)nv * sizeof *sp);
        if (!sp) return moe_err_set(err, MOE_ENOMEM, "out of memory");
        for (int32_t id = 0; id < nv; id++) {
            const int t = moe_vocab_token_type(v, id);
            if ((t == 3 || t == 4) && token_len(v, id) > 0) sp[n_sp++] = id;
        }
        sort_ctx sc = {v};
        qsort_r(sp, (size_t)n_sp, sizeof *sp, cmp_len_desc, &sc);
    }
    const int pcap = (int)(len < 1 ? 2 : len + 2);
    size_t *off = malloc((size_t)pcap * sizeof *off), *tmp = malloc((size_t)pcap * sizeof *tmp);
    int32_t *word = malloc((len + 1) * sizeof *word);
    int rc = 0, n = 0;
    if (!off || !tmp || !word) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto done;
    }
#define PUSH(id)                                                                              \
    do {                                                                                      \
        if (n < cap) out[n] = (id);                                                           \
        n++;                                                                                  \
    } while (0)
    if (add_bos && moe_vocab_bos(v) >= 0) PUSH(moe_vocab_bos(v));
    size_t i = 0;
    while (i < len) {
        /* the next raw segment ends at the next special token */
        size_t j = i, sl = 0;
        int32_t sid = -1;
        if (n_sp)
            for (; j < len; j++)
                if ((sid = special_at(v, sp, n_sp, text, len, j, &sl)) >= 0) break;
        if (!n_sp) j = len;
        if (j > i) {
            const int np = moe__pretok_split(kind, text + i, j - i, off, tmp, pcap);
            if (np < 0) {
                rc = moe_err_set(err, MOE_ENOMEM, "too many pieces");
                goto done;
            }
            for (int p = 0; p < np; p++) {
                /* Llama 3's tokenizer ignores merges for a piece that is a
                 * token (HF ignore_merges; llama.cpp does the same) */
                if (kind == MOE__PRETOK_LLAMA3) {
                    const int32_t whole = moe__vocab_find_bytes(v, text + i + off[p], off[p + 1] - off[p]);
                    if (whole >= 0) {
                        PUSH(whole);
                        continue;
                    }
                }
                const int k = moe_vocab_encode_word(v, text + i + off[p], off[p + 1] - off[p], word,
                                                    (int)(len + 1));
                if (k < 0) {
                    rc = moe_err_set(err, k, "a byte has no token in this vocabulary");
                    goto done;
                }
                for (int q = 0; q < k; q++) PUSH(word[q]);
            }
        }
        if (sid >= 0) {
            PUSH(sid);
            j += sl;
        }
        i = j;
    }
#undef PUSH
    if (n > cap) rc = moe_err_set(err, MOE_ENOSPC, "%d tokens do not fit in %d", n, cap);
done:
    free(sp), free(off), free(tmp), free(word);
    return rc < 0 ? rc : n;
}
