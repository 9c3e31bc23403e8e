/*
 * spm.c - SentencePiece-style BPE ("llama" vocabularies: Llama 2, Mistral,
 * Mixtral), as llama.cpp's llm_tokenizer_spm_session does it:
 *
 *   1. spaces become U+2581 ("▁"), with one prepended where the caller asks
 *      (the leading-space rule: at the start of the text and after a special
 *      token, when tokenizer.ggml.add_space_prefix);
 *   2. the text is cut into UTF-8 characters (a lead byte's length, so a
 *      broken sequence stays one symbol);
 *   3. adjacent symbols whose concatenation is a token are merged, highest
 *      tokenizer.ggml.scores first, leftmost on ties, until none is left;
 *   4. each symbol is its token, or - when it is not one (a character the
 *      vocabulary lacks) - its bytes as <0xNN> byte tokens (byte fallback).
 *
 * Merge candidates sit in a binary heap; a merge invalidates the candidates
 * of its two symbols, which are recognised when popped (their size no longer
 * adds up) rather than removed.
 */
#include <stdlib.h>
#include <string.h>

#include "moe/vocab.h"
#include "vocab_internal.h"

typedef struct sym {
    uint32_t off, n; /* bytes of the escaped text; n == 0 once merged away */
    int32_t prev, next;
} sym;

typedef struct bigram {
    float score;
    int32_t left, right;
    uint32_t size;
} bigram;

typedef struct spm {
    const moe_vocab *v;
    const char *t; /* escaped text */
    sym *s;
    bigram *h;
    size_t nh;
} spm;

/* a pops before b: higher score, then the leftmost */
static int before(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(spm *p, bigram b) {
    size_t i = p->nh++;
    while (i > 0) {
        const size_t up = (i - 1) / 2;
        if (!before(&b, &p->h[up])) break;
        p->h[i] = p->h[up];
        i = up;
    }
    p->h[i] = b;
}

static bigram heap_pop(spm *p) {
    const bigram top = p->h[0], last = p->h[--p->nh];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= p->nh) break;
        if (c + 1 < p->nh && before(&p->h[c + 1], &p->h[c])) c++;
        if (!before(&p->h[c], &last)) break;
        p->h[i] = p->h[c];
        i = c;
    }
    if (p->nh) p->h[i] = last;
    return top;
}

static void try_bigram(spm *p, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const uint32_t size = p->s[l].n + p->s[r].n;
    const int32_t id = moe_vocab_find(p->v, p->t + p->s[l].off, size);
    if (id < 0) return;
    heap_push(p, (bigram){moe_vocab_score(p->v, id), l, r, size});
}

/* lengths by a lead byte's high nibble (continuation bytes count as 1) */
static const uint8_t utf8_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};

int moe__spm_encode(const moe_vocab *v, const char *text, size_t len, int prefix_space,
                    int32_t *out, int cap) {
    /* escape: ' ' -> U+2581 (3 bytes) */
    size_t n_sp = prefix_space ? 1 : 0;
    for (size_t i = 0; i < len; i++) n_sp += text[i] == ' ';
    const size_t el = len + (prefix_space ? 1 : 0) + 2 * n_sp;
    if (el == 0) return 0;
    if (el > INT32_MAX / 2) return MOE_ERANGE;
    char *t = malloc(el);
    sym *s = malloc(el * sizeof *s);
    /* at most one candidate per symbol pair plus two per merge */
    bigram *h = malloc(3 * el * sizeof *h);
    int n = 0, rc = 0;
    if (!t || !s || !h) {
        rc = MOE_ENOMEM;
        goto done;
    }
    size_t o = 0;
    if (prefix_space) memcpy(t, "\xe2\x96\x81", 3), o = 3;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ')
            memcpy(t + o, "\xe2\x96\x81", 3), o += 3;
        else
            t[o++] = text[i];
    }
    int32_t ns = 0;
    for (size_t i = 0; i < el;) {
        size_t l = utf8_len[(unsigned char)t[i] >> 4];
        if (l > el - i) l = el - i;
        s[ns] = (sym){(uint32_t)i, (uint32_t)l, ns - 1, i + l == el ? -1 : ns + 1};
        ns++, i += l;
    }
    spm p = {v, t, s, h, 0};
    for (int32_t i = 1; i < ns; i++) try_bigram(&p, i - 1, i);
    while (p.nh) {
        const bigram b = heap_pop(&p);
        sym *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = b.left;
        try_bigram(&p, l->prev, b.left);
        try_bigram(&p, b.left, l->next);
    }
#define PUSH(id)                                                                                   \
    do {                                                                                           \
        if (n < cap) out[n] = (id);                                                                \
        n++;                                                                                       \
    } while (0)
    for (int32_t i = 0; i >= 0 && ns > 0; i = s[i].next) {
        const int32_t id = moe_vocab_find(v, t + s[i].off, s[i].n);
        if (id >= 0) {
            PUSH(id);
            continue;
        }
        for (uint32_t k = 0; k < s[i].n; k++) { /* byte fallback */
            const unsigned char c = (unsigned char)t[s[i].off + k];
            int32_t b = moe__vocab_byte_token(v, c);
            if (b < 0) b = moe_vocab_find(v, (const char *)&c, 1);
            if (b < 0) b = moe_vocab_unk(v);
            if (b < 0) {
                rc = MOE_ENOTFOUND;
                goto done;
            }
            PUSH(b);
        }
    }
#undef PUSH
done:
    free(t), free(s), free(h);
    return rc < 0 ? rc : n;
}
