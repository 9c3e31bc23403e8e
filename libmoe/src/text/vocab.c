/* vocab.c - GGUF vocabularies, byte-level BPE merges and token text (see
 * moe/vocab.h). SentencePiece encoding is in spm.c, text to ids in tokenize.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/vocab.h"
#include "vocab_internal.h"

struct moe_vocab {
    moe_vocab_kind kind;
    int n;
    char *arena;   /* every token's text, NUL-separated */
    uint32_t *off; /* (n) offset of token i in arena */
    uint32_t *len; /* (n) byte length */
    int32_t *type; /* (n) */
    int32_t *ids;  /* token hash: (cap) id or -1 */
    size_t cap;
    /* merges as (left id, right id) -> (rank, merged id) */
    uint64_t *mkey; /* (mcap) left << 32 | right, or ~0 */
    int32_t *mrank, *mres;
    size_t mcap;
    int32_t byte_id[256]; /* the token of each byte (-1 if missing) */
    int16_t cp_byte[512]; /* GPT-2 char (code point < 512) -> byte, or -1 */
    float *score;         /* (n) tokenizer.ggml.scores, or NULL (all 0) */
    int32_t *special;     /* token ids matched as text before splitting: unknown,
                           * control and user-defined, longest text first */
    int n_special;
    int bos, eos, unk;
    size_t max_len;       /* the longest token text */
    int add_bos;          /* tokenizer.ggml.add_bos_token (SentencePiece default 1) */
    int add_space_prefix; /* tokenizer.ggml.add_space_prefix (SentencePiece default 1) */
    int nfc;              /* NFC-normalise text before splitting (see moe_vocab_nfc) */
    char pre[64];
};

/* ==== GPT-2 bytes <-> characters ============================================= */

static int byte_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

uint32_t moe__gpt2_byte_cp(int b) {
    if (byte_printable(b)) return (uint32_t)b;
    uint32_t k = 0;
    for (int x = 0; x < b; x++) k += !byte_printable(x);
    return 256 + k;
}

int moe_gpt2_byte_char(int b, char out[2]) {
    const uint32_t cp = moe__gpt2_byte_cp(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* ==== Hashing ================================================================== */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

int32_t moe_vocab_find(const moe_vocab *v, const char *text, size_t len) {
    for (size_t h = hash_bytes(text, len) & (v->cap - 1);; h = (h + 1) & (v->cap - 1)) {
        const int32_t id = v->ids[h];
        if (id < 0) return -1;
        if (v->len[id] == len && !memcmp(v->arena + v->off[id], text, len)) return id;
    }
}

/* rank and result of merging (l, r), or -1 */
static int32_t merge_rank(const moe_vocab *v, int32_t l, int32_t r, int32_t *res) {
    if (!v->mcap) return -1;
    const uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    for (size_t h = hash_u64(key) & (v->mcap - 1);; h = (h + 1) & (v->mcap - 1)) {
        if (v->mkey[h] == ~0ULL) return -1;
        if (v->mkey[h] == key) {
            *res = v->mres[h];
            return v->mrank[h];
        }
    }
}

/* ==== Loading ===================================================================== */

void moe_vocab_free(moe_vocab *v) {
    if (!v) return;
    free(v->arena), free(v->off), free(v->len), free(v->type), free(v->ids);
    free(v->mkey), free(v->mrank), free(v->mres);
    free(v->score), free(v->special);
    free(v);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int cmp_special(const void *a, const void *b, void *ctx) {
    const moe_vocab *v = ctx;
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return v->len[x] != v->len[y] ? (v->len[x] < v->len[y] ? 1 : -1) : (x > y) - (x < y);
}

/* The tokens matched as text before the rest is split (llama.cpp's
 * cache_special_tokens): unknown, control and user-defined, longest first. */
static int load_specials(moe_vocab *v, moe_err *err) {
    int n = 0;
    for (int i = 0; i < v->n; i++)
        n += (v->type[i] == 2 || v->type[i] == 3 || v->type[i] == 4) && v->len[i] > 0;
    if (!n) return 0;
    if (!(v->special = malloc((size_t)n * sizeof *v->special)))
        return moe_err_set(err, MOE_ENOMEM, "out of memory for special tokens");
    for (int i = 0; i < v->n; i++)
        if ((v->type[i] == 2 || v->type[i] == 3 || v->type[i] == 4) && v->len[i] > 0)
            v->special[v->n_special++] = i;
    qsort_r(v->special, (size_t)n, sizeof *v->special, cmp_special, v);
    return 0;
}

int moe_vocab_load(moe_vocab **out, const moe_gguf *g, moe_err *err) {
    *out = NULL;
    moe_gguf_str model;
    if (moe_gguf_get_str(g, "tokenizer.ggml.model", &model) < 0)
        return moe_err_set(err, MOE_EFORMAT, "missing key 'tokenizer.ggml.model'");
    moe_vocab_kind kind;
    if (moe_gguf_str_eq(model, "gpt2"))
        kind = MOE_VOCAB_BPE;
    else if (moe_gguf_str_eq(model, "llama"))
        kind = MOE_VOCAB_SPM;
    else
        return moe_err_set(err, MOE_ENOTSUP,
                           "tokenizer model '%.*s' is not supported (gpt2, llama)",
                           (int)(model.len < 64 ? model.len : 64), model.ptr);
    const moe_gguf_kv *tk = moe_gguf_find_kv(g, "tokenizer.ggml.tokens");
    if (!tk || tk->type != MOE_GGUF_TYPE_ARRAY || tk->arr_type != MOE_GGUF_TYPE_STRING ||
        tk->arr_n == 0 || tk->arr_n > (1u << 24))
        return moe_err_set(err, MOE_EFORMAT, "'tokenizer.ggml.tokens' must be 1 to 2^24 strings");
    moe_vocab *v = calloc(1, sizeof *v);
    if (!v) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    int rc = 0;
    v->kind = kind;
    v->n = (int)tk->arr_n;
    size_t total = 0;
    for (int i = 0; i < v->n; i++) total += moe_gguf_arr_str(g, tk, (uint64_t)i).len + 1;
    v->arena = malloc(total ? total : 1);
    v->off = malloc((size_t)v->n * sizeof *v->off);
    v->len = malloc((size_t)v->n * sizeof *v->len);
    v->type = malloc((size_t)v->n * sizeof *v->type);
    v->cap = pow2_at_least((size_t)v->n * 2);
    v->ids = malloc(v->cap * sizeof *v->ids);
    if (!v->arena || !v->off || !v->len || !v->type || !v->ids || total > UINT32_MAX) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for %d tokens", v->n);
        goto fail;
    }
    for (size_t h = 0; h < v->cap; h++) v->ids[h] = -1;
    size_t at = 0;
    for (int i = 0; i < v->n; i++) {
        const moe_gguf_str s = moe_gguf_arr_str(g, tk, (uint64_t)i);
        memcpy(v->arena + at, s.ptr, s.len);
        v->arena[at + s.len] = 0;
        v->off[i] = (uint32_t)at;
        v->len[i] = (uint32_t)s.len;
        if (s.len > v->max_len) v->max_len = s.len;
        v->type[i] = 1;
        at += s.len + 1;
        size_t h = hash_bytes(s.ptr, s.len) & (v->cap - 1);
        for (; v->ids[h] >= 0; h = (h + 1) & (v->cap - 1))
            if (v->len[v->ids[h]] == s.len && !memcmp(v->arena + v->off[v->ids[h]], s.ptr, s.len))
                break; /* a repeated text: the last id wins, as llama.cpp's token_to_id[word] = i */
        v->ids[h] = i;
    }
    const moe_gguf_kv *tt = moe_gguf_find_kv(g, "tokenizer.ggml.token_type");
    if (tt) {
        if (tt->type != MOE_GGUF_TYPE_ARRAY || tt->arr_type != MOE_GGUF_TYPE_INT32 ||
            tt->arr_n != tk->arr_n) {
            rc = moe_err_set(err, MOE_EFORMAT,
                             "'tokenizer.ggml.token_type' must be %d int32 values", v->n);
            goto fail;
        }
        memcpy(v->type, tt->arr_data, (size_t)v->n * 4); /* arr_data may be unaligned */
    }
    /* bytes: GPT-2's characters for BPE; <0xNN> tokens for SentencePiece */
    for (int i = 0; i < 512; i++) v->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        char c[8];
        int l;
        if (kind == MOE_VOCAB_BPE) {
            l = moe_gpt2_byte_char(b, c);
            v->cp_byte[moe__gpt2_byte_cp(b)] = (int16_t)b;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            c[0] = '<', c[1] = '0', c[2] = 'x', c[3] = hex[b >> 4], c[4] = hex[b & 15], c[5] = '>';
            l = 6;
        }
        v->byte_id[b] = moe_vocab_find(v, c, (size_t)l);
    }
    /* merges: "left right" -> rank */
    const moe_gguf_kv *mk = moe_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (kind == MOE_VOCAB_BPE && mk) {
        if (mk->type != MOE_GGUF_TYPE_ARRAY || mk->arr_type != MOE_GGUF_TYPE_STRING ||
            mk->arr_n > (1u << 24)) {
            rc = moe_err_set(err, MOE_EFORMAT, "'tokenizer.ggml.merges' must be strings");
            goto fail;
        }
        v->mcap = pow2_at_least((size_t)mk->arr_n * 2 + 2);
        v->mkey = malloc(v->mcap * sizeof *v->mkey);
        v->mrank = malloc(v->mcap * sizeof *v->mrank);
        v->mres = malloc(v->mcap * sizeof *v->mres);
        char *tmp = malloc(1024);
        if (!v->mkey || !v->mrank || !v->mres || !tmp) {
            free(tmp);
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for merges");
            goto fail;
        }
        for (size_t h = 0; h < v->mcap; h++) v->mkey[h] = ~0ULL;
        for (uint64_t i = 0; i < mk->arr_n; i++) {
            const moe_gguf_str s = moe_gguf_arr_str(g, mk, i);
            /* split at the first space after the first byte (a token may be " ") */
            size_t sp = 1;
            while (sp < s.len && s.ptr[sp] != ' ') sp++;
            if (sp >= s.len || s.len - sp - 1 + sp > 1023) continue;
            const int32_t l = moe_vocab_find(v, s.ptr, sp),
                          r = moe_vocab_find(v, s.ptr + sp + 1, s.len - sp - 1);
            memcpy(tmp, s.ptr, sp);
            memcpy(tmp + sp, s.ptr + sp + 1, s.len - sp - 1);
            const int32_t res = moe_vocab_find(v, tmp, s.len - 1);
            if (l < 0 || r < 0 || res < 0) continue; /* llama.cpp also ignores these */
            const uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
            size_t h = hash_u64(key) & (v->mcap - 1);
            while (v->mkey[h] != ~0ULL && v->mkey[h] != key) h = (h + 1) & (v->mcap - 1);
            if (v->mkey[h] == key) continue; /* first rank wins */
            v->mkey[h] = key;
            v->mrank[h] = (int32_t)i;
            v->mres[h] = res;
        }
        free(tmp);
    }
    const moe_gguf_kv *sc = moe_gguf_find_kv(g, "tokenizer.ggml.scores");
    if (sc) {
        if (sc->type != MOE_GGUF_TYPE_ARRAY || sc->arr_n != tk->arr_n ||
            (sc->arr_type != MOE_GGUF_TYPE_FLOAT32 && sc->arr_type != MOE_GGUF_TYPE_INT32)) {
            rc = moe_err_set(err, MOE_EFORMAT,
                             "'tokenizer.ggml.scores' must be %d float32 (or int32) values", v->n);
            goto fail;
        }
        if (!(v->score = malloc((size_t)v->n * sizeof *v->score))) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for scores");
            goto fail;
        }
        memcpy(v->score, sc->arr_data, (size_t)v->n * 4);
        if (sc->arr_type == MOE_GGUF_TYPE_INT32)
            for (int i = 0; i < v->n; i++) {
                int32_t x;
                memcpy(&x, &v->score[i], 4);
                v->score[i] = (float)x;
            }
    }
    uint32_t id;
    v->bos = moe_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id) == 0 && id < (uint32_t)v->n
                 ? (int)id
                 : -1;
    v->eos = moe_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id) == 0 && id < (uint32_t)v->n
                 ? (int)id
                 : -1;
    v->unk = moe_gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &id) == 0 && id < (uint32_t)v->n
                 ? (int)id
                 : -1;
    /* defaults as llama.cpp: SentencePiece adds BOS and a leading space */
    if (moe_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos) < 0)
        v->add_bos = kind == MOE_VOCAB_SPM;
    if (moe_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix) < 0)
        v->add_space_prefix = kind == MOE_VOCAB_SPM;
    moe_gguf_str pre;
    if (moe_gguf_get_str(g, "tokenizer.ggml.pre", &pre) == 0)
        snprintf(v->pre, sizeof v->pre, "%.*s", (int)(pre.len < 63 ? pre.len : 63), pre.ptr);
    /* moemesh.tokenizer.normalizer ("nfc" or "none"; written by mkmodel
     * --tokenizer from tokenizer.json); without it, the Qwen2/Qwen3 family,
     * whose tokenizer.json files all normalise to NFC */
    moe_gguf_str norm;
    if (moe_gguf_get_str(g, "moemesh.tokenizer.normalizer", &norm) == 0) {
        if (moe_gguf_str_eq(norm, "nfc"))
            v->nfc = 1;
        else if (!moe_gguf_str_eq(norm, "none")) {
            rc = moe_err_set(err, MOE_EFORMAT,
                             "'moemesh.tokenizer.normalizer' is '%.*s' (nfc or none)",
                             (int)(norm.len < 32 ? norm.len : 32), norm.ptr);
            goto fail;
        }
    } else {
        v->nfc = kind == MOE_VOCAB_BPE && !strcmp(v->pre, "qwen2");
    }
    if ((rc = load_specials(v, err))) goto fail;
    *out = v;
    return 0;
fail:
    moe_vocab_free(v);
    return rc;
}

/* ==== Accessors ==================================================================== */

moe_vocab_kind moe_vocab_kind_of(const moe_vocab *v) {
    return v->kind;
}
size_t moe_vocab_max_token_len(const moe_vocab *v) {
    return v->max_len;
}
int moe_vocab_n_tokens(const moe_vocab *v) {
    return v->n;
}
int moe_vocab_bos(const moe_vocab *v) {
    return v->bos;
}
int moe_vocab_eos(const moe_vocab *v) {
    return v->eos;
}
const char *moe_vocab_pre(const moe_vocab *v) {
    return v->pre;
}
int moe_vocab_add_bos(const moe_vocab *v) {
    return v->add_bos && v->bos >= 0;
}
int moe_vocab_unk(const moe_vocab *v) {
    return v->unk;
}
int moe_vocab_add_space_prefix(const moe_vocab *v) {
    return v->add_space_prefix;
}
int moe_vocab_nfc(const moe_vocab *v) {
    return v->nfc;
}
float moe_vocab_score(const moe_vocab *v, int32_t id) {
    return v->score && id >= 0 && id < v->n ? v->score[id] : 0.0f;
}
const char *moe_vocab_text(const moe_vocab *v, int32_t id, size_t *len) {
    if (id < 0 || id >= v->n) return *len = 0, NULL;
    *len = v->len[id];
    return v->arena + v->off[id];
}
int moe__vocab_specials(const moe_vocab *v, const int32_t **ids) {
    *ids = v->special;
    return v->n_special;
}
int32_t moe__vocab_byte_token(const moe_vocab *v, int b) {
    return v->byte_id[b & 255];
}
int moe_vocab_token_type(const moe_vocab *v, int32_t id) {
    return id >= 0 && id < v->n ? v->type[id] : 0;
}

/* ==== BPE ============================================================================ */

int moe_vocab_encode_word(const moe_vocab *v, const char *word, size_t len, int32_t *out, int cap) {
    if (len == 0) return 0;
    /* symbols live in out while merging: every byte is one before any merge */
    if ((size_t)cap < len) return MOE_ENOSPC;
    int n = 0;
    int32_t *sym = out;
    for (size_t i = 0; i < len; i++) {
        const int32_t id = v->byte_id[(unsigned char)word[i]];
        if (id < 0) return MOE_ENOTFOUND;
        sym[n++] = id;
    }
    /* repeatedly merge the adjacent pair of lowest rank (leftmost on ties) */
    for (;;) {
        int best = -1;
        int32_t best_rank = INT32_MAX, best_res = -1;
        for (int i = 0; i + 1 < n; i++) {
            int32_t res;
            const int32_t r = merge_rank(v, sym[i], sym[i + 1], &res);
            if (r >= 0 && r < best_rank) best_rank = r, best = i, best_res = res;
        }
        if (best < 0) break;
        sym[best] = best_res;
        memmove(sym + best + 1, sym + best + 2, (size_t)(n - best - 2) * sizeof *sym);
        n--;
    }
    return n;
}

static int hex_digit(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : -1;
}

/* SentencePiece: a byte token <0xNN> is that byte; a normal token's U+2581
 * (the escaped space) is a space; unused tokens have no text (llama.cpp). */
static int spm_token_bytes(const char *t, size_t tl, int type, char *out, size_t cap) {
    if (type == 6 && tl == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>' &&
        hex_digit(t[3]) >= 0 && hex_digit(t[4]) >= 0) {
        if (cap < 1) return MOE_ENOSPC;
        out[0] = (char)(hex_digit(t[3]) << 4 | hex_digit(t[4]));
        return 1;
    }
    if (type != 1 && type != 6) return 0;
    size_t o = 0;
    for (size_t i = 0; i < tl;) {
        if (i + 3 <= tl && !memcmp(t + i, "\xe2\x96\x81", 3)) {
            if (o >= cap) return MOE_ENOSPC;
            out[o++] = ' ', i += 3;
        } else {
            if (o >= cap) return MOE_ENOSPC;
            out[o++] = t[i++];
        }
    }
    return (int)o;
}

int moe_vocab_token_bytes(const moe_vocab *v, int32_t id, char *out, size_t cap) {
    if (id < 0 || id >= v->n) return MOE_ERANGE;
    const char *t = v->arena + v->off[id];
    const size_t tl = v->len[id];
    const int type = v->type[id];
    if (type == 2 || type == 3 || type == 4) { /* unknown, control, user-defined: their text */
        if (tl > cap) return MOE_ENOSPC;
        memcpy(out, t, tl);
        return (int)tl;
    }
    if (v->kind == MOE_VOCAB_SPM) return spm_token_bytes(t, tl, type, out, cap);
    size_t o = 0;
    for (size_t i = 0; i < tl;) {
        const unsigned char c = (unsigned char)t[i];
        uint32_t cp;
        size_t l;
        if (c < 0x80)
            cp = c, l = 1;
        else if ((c & 0xE0) == 0xC0 && i + 1 < tl)
            cp = (uint32_t)(c & 0x1F) << 6 | ((unsigned char)t[i + 1] & 0x3F), l = 2;
        else
            cp = 0x7FFFFFFF, l = 1;
        if (o >= cap) return MOE_ENOSPC;
        if (cp < 512 && v->cp_byte[cp] >= 0) {
            out[o++] = (char)v->cp_byte[cp];
        } else { /* not a GPT-2 byte character: keep the text's own bytes */
            if (o + l > cap) return MOE_ENOSPC;
            memcpy(out + o, t + i, l);
            o += l;
        }
        i += l;
    }
    return (int)o;
}

size_t moe_utf8_complete(const char *s, size_t n) {
    /* walk back over at most 3 continuation bytes to the last lead byte */
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--, back++;
    if (i == 0) return back ? 0 : n; /* only continuation bytes: hold them */
    const unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead < 0x80             ? 1
                  : (lead & 0xE0) == 0xC0 ? 2
                  : (lead & 0xF0) == 0xE0 ? 3
                  : (lead & 0xF8) == 0xF0 ? 4
                                          : 1;
    return back + 1 >= need ? n : i - 1;
}

int32_t moe__vocab_find_bytes(const moe_vocab *v, const char *bytes, size_t len) {
    char buf[512];
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (o + 2 > sizeof buf) return -1;
        o += (size_t)moe_gpt2_byte_char((unsigned char)bytes[i], buf + o);
    }
    return moe_vocab_find(v, buf, o);
}
