/*
 * testmodel_vocab.c - the vocabularies of testmodel's models: a real
 * tokenizer's (hf_tokenizer.h), or a generated SentencePiece or BPE one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/vocab.h"
#include "testmodel_internal.h"

/* ---- Vocabulary ------------------------------------------------------------------- */

/* A real tokenizer's vocabulary (see moe__hf_vocab_load); o->tokenizer_pre overrides its pre. */
static int add_hf_vocab(moe_gguf_writer *w, const moe_testmodel_params *o, const moe__hf_vocab *hv,
                        moe_err *err) {
    const uint64_t V = (uint64_t)hv->n_tokens;
    if (hv->spm) { /* as llama.cpp's converter writes a SentencePiece vocabulary */
        int rc = moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama") < 0 ||
                 (o->tokenizer_pre &&
                  moe_gguf_writer_set_str(w, "tokenizer.ggml.pre", o->tokenizer_pre) < 0) ||
                 moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens",
                                             (const char *const *)hv->tokens, V) < 0 ||
                 moe_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MOE_GGUF_TYPE_FLOAT32,
                                         hv->scores, V) < 0 ||
                 moe_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_TYPE_INT32,
                                         hv->types, V) < 0 ||
                 (hv->bos_id >= 0 && moe_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
                                                             (uint32_t)hv->bos_id) < 0) ||
                 (hv->eos_id >= 0 && moe_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id",
                                                             (uint32_t)hv->eos_id) < 0) ||
                 (hv->unk_id >= 0 && moe_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id",
                                                             (uint32_t)hv->unk_id) < 0) ||
                 moe_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", hv->add_bos) < 0 ||
                 moe_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0) < 0 ||
                 moe_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", 1) < 0 ||
                 (hv->chat_template &&
                  moe_gguf_writer_set_str(w, "tokenizer.chat_template", hv->chat_template) < 0);
        return rc ? moe_err_set(err, MOE_ENOMEM, "cannot add the vocabulary") : 0;
    }
    int rc =
        moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2") < 0 ||
        moe_gguf_writer_set_str(w, "tokenizer.ggml.pre",
                                o->tokenizer_pre ? o->tokenizer_pre : hv->pre) < 0 ||
        moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)hv->tokens,
                                    V) < 0 ||
        moe_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_TYPE_INT32, hv->types, V) <
            0 ||
        moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)hv->merges,
                                    (uint64_t)hv->n_merges) < 0 ||
        (hv->bos_id >= 0 &&
         moe_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)hv->bos_id) < 0) ||
        (hv->eos_id >= 0 &&
         moe_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)hv->eos_id) < 0) ||
        moe_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", hv->add_bos) < 0 ||
        moe_gguf_writer_set_str(w, "moemesh.tokenizer.normalizer", hv->nfc ? "nfc" : "none") < 0 ||
        (hv->chat_template &&
         moe_gguf_writer_set_str(w, "tokenizer.chat_template", hv->chat_template) < 0);
    return rc ? moe_err_set(err, MOE_ENOMEM, "cannot add the vocabulary") : 0;
}

/* A generated SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte
 * tokens, "▁" and the characters below, then pieces made of two earlier
 * ones. Scores fall with the order pieces were made but tie in threes, so a
 * test sees llama.cpp's leftmost-first rule for equal scores; the characters
 * not in the list (most of Unicode) go through byte fallback. */
static int add_spm_vocab(moe_gguf_writer *w, const moe_testmodel_params *o, moe_err *err) {
    static const char *const chars[] = {"\xe2\x96\x81",
                                        "a",
                                        "b",
                                        "c",
                                        "d",
                                        "e",
                                        "f",
                                        "g",
                                        "h",
                                        "i",
                                        "j",
                                        "k",
                                        "l",
                                        "m",
                                        "n",
                                        "o",
                                        "p",
                                        "q",
                                        "r",
                                        "s",
                                        "t",
                                        "u",
                                        "v",
                                        "w",
                                        "x",
                                        "y",
                                        "z",
                                        "T",
                                        "H",
                                        "A",
                                        "I",
                                        ".",
                                        ",",
                                        "'",
                                        "0",
                                        "1",
                                        "2",
                                        "\xc3\xa9",
                                        "\xe4\xbd\xa0",
                                        "\xe5\xa5\xbd"};
    const int n_chars = (int)(sizeof chars / sizeof chars[0]), V = o->n_vocab;
    if (V < 3 + 256 + n_chars + 1)
        return moe_err_set(err, MOE_EINVAL, "a SentencePiece test vocabulary needs n_vocab >= %d",
                           3 + 256 + n_chars + 1);
    char **tok = calloc((size_t)V, sizeof *tok);
    int32_t *type = calloc((size_t)V, sizeof *type);
    float *score = calloc((size_t)V, sizeof *score);
    int rc = 0, n = 0;
    if (!tok || !type || !score) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the vocabulary");
        goto done;
    }
    tok[n] = strdup("<unk>"), type[n++] = 2;
    tok[n] = strdup("<s>"), type[n++] = 3;
    tok[n] = strdup("</s>"), type[n++] = 3;
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        tok[n] = strdup(buf), type[n++] = 6;
    }
    const int first_char = n;
    for (int c = 0; c < n_chars; c++) tok[n] = strdup(chars[c]), type[n++] = 1;
    /* English-like pieces first (every prefix of these words, so merges
     * compete: "th"+"e" against "t"+"he"), then random pairs */
    static const char *const words[] = {"\xe2\x96\x81the",
                                        "\xe2\x96\x81there",
                                        "\xe2\x96\x81hello",
                                        "\xe2\x96\x81test",
                                        "\xe2\x96\x81it",
                                        "\xe2\x96\x81"
                                        "and",
                                        "\xe2\x96\x81"
                                        "a",
                                        "ing",
                                        "the",
                                        "he",
                                        "ere",
                                        "er",
                                        "in",
                                        "re",
                                        "an",
                                        "on",
                                        "at",
                                        "es",
                                        "st",
                                        "'s",
                                        "ll",
                                        "lo",
                                        "\xe2\x96\x81\xe2\x96\x81",
                                        "\xe2\x96\x81\xe2\x96\x81\xe2\x96\x81\xe2\x96\x81",
                                        "\xe4\xbd\xa0\xe5\xa5\xbd"};
    int made = 0;
    for (size_t w_ = 0; w_ < sizeof words / sizeof words[0] && n < V; w_++) {
        const char *wd = words[w_];
        for (size_t l = 1; l <= strlen(wd) && n < V; l++) {
            if ((wd[l] & 0xC0) == 0x80) continue; /* whole characters only */
            int dup = 0;
            for (int i = first_char; i < n && !dup; i++)
                dup = strlen(tok[i]) == l && !memcmp(tok[i], wd, l);
            if (dup) continue;
            tok[n] = strndup(wd, l), type[n] = 1, score[n] = -(float)(made++ / 3);
            n++;
        }
    }
    uint64_t s = stream_for(o->seed, "spm-vocab");
    for (int tries = 0; n < V && tries < V * 100; tries++) {
        /* a piece of two: mostly a character then anything made so far */
        const int a = splitmix(&s) % 3
                          ? first_char + (int)(splitmix(&s) % (uint64_t)n_chars)
                          : first_char + (int)(splitmix(&s) % (uint64_t)(n - first_char));
        const int b = first_char + (int)(splitmix(&s) % (uint64_t)(n - first_char));
        if (!tok[a] || !tok[b] || strlen(tok[a]) + strlen(tok[b]) > 16) continue;
        char buf[40];
        snprintf(buf, sizeof buf, "%s%s", tok[a], tok[b]);
        int dup = 0;
        for (int i = first_char; i < n && !dup; i++) dup = !strcmp(tok[i], buf);
        if (dup) continue;
        tok[n] = strdup(buf), type[n] = 1, score[n] = -(float)(made++ / 3);
        n++;
    }
    for (; n < V; n++) { /* an unlikely shortfall: unused pieces */
        char buf[32];
        snprintf(buf, sizeof buf, "<unused_%d>", n);
        tok[n] = strdup(buf), type[n] = 5;
    }
    for (int i = 0; i < V; i++)
        if (!tok[i]) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the vocabulary");
            goto done;
        }
    if (moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama") < 0 ||
        moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok,
                                    (uint64_t)V) < 0 ||
        moe_gguf_writer_set_arr(w, "tokenizer.ggml.scores", MOE_GGUF_TYPE_FLOAT32, score,
                                (uint64_t)V) < 0 ||
        moe_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_TYPE_INT32, type,
                                (uint64_t)V) < 0 ||
        moe_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0) < 0 ||
        moe_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1) < 0 ||
        moe_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2) < 0)
        rc = moe_err_set(err, MOE_ENOMEM, "cannot add the vocabulary");
done:
    if (tok)
        for (int i = 0; i < V; i++) free(tok[i]);
    free(tok), free(type), free(score);
    return rc;
}

int moe__testmodel_add_vocab(moe_gguf_writer *w, const moe_testmodel_params *o,
                             const moe__hf_vocab *hv, moe_err *err) {
    if (hv) return add_hf_vocab(w, o, hv, err);
    if (o->tokenizer_spm) return add_spm_vocab(w, o, err);
    const int V = o->n_vocab;
    char **tok = calloc((size_t)V, sizeof *tok);
    int32_t *type = calloc((size_t)V, sizeof *type);
    int n_merges = 0;
    char **merges = calloc((size_t)V, sizeof *merges);
    int rc = 0;
    if (!tok || !type || !merges) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the vocabulary");
        goto done;
    }
    for (int b = 0; b < 256; b++) {
        char buf[4];
        int l = moe_gpt2_byte_char(b, buf);
        tok[b] = strndup(buf, (size_t)l);
        type[b] = 1; /* normal */
        if (!tok[b]) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the vocabulary");
            goto done;
        }
    }
    /* merges over printable letters and earlier merges, unique, deterministic;
     * a hash set of the merged tokens keeps this linear in the vocabulary */
    size_t cap = 64;
    while (cap < (size_t)V * 2) cap *= 2;
    int32_t *set = malloc(cap * sizeof *set);
    if (!set) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the vocabulary");
        goto done;
    }
    for (size_t i = 0; i < cap; i++) set[i] = -1;
    uint64_t s = stream_for(o->seed, "vocab");
    int n = 256;
    int tries = 0;
    while (n < V - 1 && tries < V * 100) {
        tries++;
        int a = n > 256 && (splitmix(&s) & 1) ? 256 + (int)(splitmix(&s) % (uint64_t)(n - 256))
                                              : 'a' + (int)(splitmix(&s) % 26);
        int b = 'a' + (int)(splitmix(&s) % 26);
        if (strlen(tok[a]) + strlen(tok[b]) > 12) continue;
        char buf[32];
        snprintf(buf, sizeof buf, "%s%s", tok[a], tok[b]);
        size_t h = (size_t)stream_for(0, buf) & (cap - 1);
        int dup = 0;
        for (; set[h] >= 0; h = (h + 1) & (cap - 1))
            if (!strcmp(tok[set[h]], buf)) {
                dup = 1;
                break;
            }
        if (dup) continue;
        char mb[32];
        snprintf(mb, sizeof mb, "%s %s", tok[a], tok[b]);
        tok[n] = strdup(buf);
        merges[n_merges] = strdup(mb);
        if (!tok[n] || !merges[n_merges]) {
            free(set);
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the vocabulary");
            goto done;
        }
        n_merges++;
        set[h] = n;
        type[n] = 1;
        n++;
    }
    free(set);
    for (; n < V - 1; n++) { /* fallback: numbered tokens (only for odd sizes) */
        char buf[32];
        snprintf(buf, sizeof buf, "<|tok_%d|>", n);
        tok[n] = strdup(buf);
        type[n] = 4; /* user defined */
    }
    tok[V - 1] = strdup("<|endoftext|>");
    type[V - 1] = 3; /* control */
    for (int i = 0; i < V; i++)
        if (!tok[i]) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the vocabulary");
            goto done;
        }
    if (moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2") < 0 ||
        moe_gguf_writer_set_str(w, "tokenizer.ggml.pre",
                                o->tokenizer_pre ? o->tokenizer_pre : "default") < 0 ||
        moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok,
                                    (uint64_t)V) < 0 ||
        moe_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_TYPE_INT32, type,
                                (uint64_t)V) < 0 ||
        moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges,
                                    (uint64_t)n_merges) < 0 ||
        moe_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)(V - 1)) < 0 ||
        moe_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)(V - 1)) < 0 ||
        moe_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 0) < 0)
        rc = moe_err_set(err, MOE_ENOMEM, "cannot add the vocabulary");
done:
    if (tok)
        for (int i = 0; i < V; i++) free(tok[i]);
    if (merges)
        for (int i = 0; i < n_merges; i++) free(merges[i]);
    free(tok);
    free(type);
    free(merges);
    return rc;
}
