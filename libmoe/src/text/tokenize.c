/* tokenize.c - text to token ids: special tokens, then the pre-tokenizer and
 * BPE, or SentencePiece (see moe/vocab.h). Not on the decode hot path:
 * scratch is allocated per call. */
#include <stdlib.h>
#include <string.h>

#include "moe/vocab.h"
#include "pretok.h"
#include "unicode_norm.h"
#include "vocab_internal.h"

/* A piece of the input: raw text [off, off+len), or a special token. */
typedef struct frag {
    size_t off, len;
    int32_t token; /* -1: raw text */
} frag;

/* Splits the raw fragments at every occurrence of each special token's text,
 * longest token first (llama.cpp's tokenizer_st_partition). *pf holds *nf
 * fragments on entry and on return; it grows as needed. */
static int partition(const moe_vocab *v, int parse_special, const char *text, frag **pf, int *nf,
                     int *capf) {
    const int32_t *sp;
    const int n_sp = moe__vocab_specials(v, &sp);
    if (!n_sp || !*nf) return 0;
    /* a token whose first byte the text lacks cannot occur in it */
    unsigned char present[256] = {0};
    for (size_t i = 0; i < (*pf)[0].len; i++) present[(unsigned char)text[(*pf)[0].off + i]] = 1;
    for (int k = 0; k < n_sp; k++) {
        const int ty = moe_vocab_token_type(v, sp[k]);
        if (!parse_special && (ty == 2 || ty == 3)) continue; /* user-defined ones always */
        size_t tl;
        const char *t = moe_vocab_text(v, sp[k], &tl);
        if (!present[(unsigned char)t[0]]) continue;
        for (int f = 0; f < *nf; f++) {
            frag *fr = &(*pf)[f];
            if (fr->token >= 0 || fr->len < tl) continue;
            const char *hit = memmem(text + fr->off, fr->len, t, tl);
            if (!hit) continue;
            /* [left] token [right]: the right part is examined next */
            if (*nf + 2 > *capf) {
                const int nc = *capf * 2 + 8;
                frag *n = realloc(*pf, (size_t)nc * sizeof *n);
                if (!n) return MOE_ENOMEM;
                *pf = n, *capf = nc;
                fr = &(*pf)[f];
            }
            const size_t at = (size_t)(hit - text), end = fr->off + fr->len;
            const int has_left = at > fr->off, has_right = at + tl < end;
            const frag left = {fr->off, at - fr->off, -1}, tok = {at, tl, sp[k]},
                       right = {at + tl, end - at - tl, -1};
            const int add = has_left + 1 + has_right;
            memmove(&(*pf)[f + add], &(*pf)[f + 1], (size_t)(*nf - f - 1) * sizeof(frag));
            int w = f;
            if (has_left) (*pf)[w++] = left;
            (*pf)[w++] = tok;
            if (has_right) (*pf)[w++] = right;
            *nf += add - 1;
            f = w - 1 - has_right; /* continue with the right part (f++ reaches it) */
        }
    }
    return 0;
}

int moe_tokenize(const moe_vocab *v, const char *text, size_t len, int add_bos, int parse_special,
                 int32_t *out, int cap, moe_err *err) {
    const int spm = moe_vocab_kind_of(v) == MOE_VOCAB_SPM;
    const int kind = spm ? 0 : moe__pretok_kind(moe_vocab_pre(v));
    if (kind < 0)
        return moe_err_set(
            err, MOE_ENOTSUP,
            "pre-tokenizer '%s' is not supported yet (default, gpt-2, olmo, llama-bpe, "
            "qwen2, deepseek-v3, deepseek-llm)",
            moe_vocab_pre(v));
    int capf = 16, nf = 0;
    frag *fr = malloc((size_t)capf * sizeof *fr);
    /* BPE scratch for a fragment of up to wcap bytes (NFC may lengthen one) */
    size_t wcap = 0, *off = NULL, *tmp = NULL;
    int32_t *word = NULL;
    char *norm = NULL;
    int rc = 0, n = 0;
    if (!fr) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto done;
    }
    if (len) fr[nf++] = (frag){0, len, -1};
    if (partition(v, parse_special, text, &fr, &nf, &capf) < 0) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        goto done;
    }
#define PUSH(id)                                                                                   \
    do {                                                                                           \
        if (n < cap) out[n] = (id);                                                                \
        n++;                                                                                       \
    } while (0)
    if (add_bos && moe_vocab_bos(v) >= 0) PUSH(moe_vocab_bos(v));
    int prev_special = 1; /* SentencePiece: a leading space at the start */
    for (int f = 0; f < nf; f++) {
        const char *s = text + fr[f].off;
        size_t sl = fr[f].len;
        if (fr[f].token >= 0) {
            PUSH(fr[f].token);
            prev_special = 1;
            continue;
        }
        if (moe_vocab_nfc(v) && !moe__utf8_is_nfc_quick(s, sl)) {
            free(norm);
            norm = NULL;
            if (moe__utf8_nfc(s, sl, &norm, &sl) < 0) {
                rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
                goto done;
            }
            s = norm;
        }
        if (!spm && sl + 2 > wcap) {
            wcap = sl + 2;
            free(off), free(tmp), free(word);
            off = malloc(wcap * sizeof *off), tmp = malloc(wcap * sizeof *tmp),
            word = malloc(wcap * sizeof *word);
            if (!off || !tmp || !word) {
                rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
                goto done;
            }
        }
        if (spm) {
            const int k = moe__spm_encode(v, s, sl, moe_vocab_add_space_prefix(v) && prev_special,
                                          n < cap ? out + n : NULL, n < cap ? cap - n : 0);
            if (k < 0) {
                rc = moe_err_set(err, k,
                                 k == MOE_ENOMEM ? "out of memory"
                                                 : "a byte has no token in this vocabulary");
                goto done;
            }
            n += k;
            prev_special = 0;
            continue;
        }
        const int np = moe__pretok_split(kind, s, sl, off, tmp, (int)wcap);
        if (np < 0) {
            rc = moe_err_set(err, MOE_ENOMEM, "too many pieces");
            goto done;
        }
        for (int p = 0; p < np; p++) {
            /* Llama 3's tokenizer ignores merges for a piece that is a
             * token (HF ignore_merges; llama.cpp does the same) */
            if (kind == MOE__PRETOK_LLAMA3) {
                const int32_t whole = moe__vocab_find_bytes(v, s + off[p], off[p + 1] - off[p]);
                if (whole >= 0) {
                    PUSH(whole);
                    continue;
                }
            }
            const int k =
                moe_vocab_encode_word(v, s + off[p], off[p + 1] - off[p], word, (int)wcap);
            if (k < 0) {
                rc = moe_err_set(err, k, "a byte has no token in this vocabulary");
                goto done;
            }
            for (int q = 0; q < k; q++) PUSH(word[q]);
        }
    }
#undef PUSH
    if (n > cap) rc = moe_err_set(err, MOE_ENOSPC, "%d tokens do not fit in %d", n, cap);
done:
    free(fr), free(off), free(tmp), free(word), free(norm);
    return rc < 0 ? rc : n;
}
