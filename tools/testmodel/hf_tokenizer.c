/*
 * hf_tokenizer.c - a Hugging Face tokenizer.json (byte-level BPE) as a GGUF
 * vocabulary, the way llama.cpp's convert_hf_to_gguf.py writes it: tokens by
 * id, merges "a b", added tokens typed control (special) or user-defined,
 * and the pre-tokenizer named for llama.cpp (tokenizer.ggml.pre). The
 * converter names the pre-tokenizer by hashing a test string's tokens; here
 * the Split regexes of pre_tokenizer are matched against a table instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "hf_tokenizer.h"

/* ---- Pre-tokenizer names ---------------------------------------------------------- */

#define MAX_SPLITS 4

/* Split regexes (carriage returns, newlines and tabs written as \r \n \t)
 * in pre_tokenizer order, each followed by a ByteLevel without its own regex. */
static const struct {
    const char *pre;
    const char *regex[MAX_SPLITS];
} pre_table[] = {
    {"llama-bpe",
     {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
    {"qwen2",
     {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
    {"deepseek-v3",
     {"\\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}"
      "\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
};

/* s with CR, LF and TAB written as \r, \n, \t (files differ in whether the
 * JSON escapes them once or twice). Caller frees; NULL if out of memory. */
static char *regex_canon(const char *s) {
    char *o = malloc(strlen(s) * 2 + 1), *p = o;
    if (!o) return NULL;
    for (; *s; s++) {
        char e = *s == '\r' ? 'r' : *s == '\n' ? 'n' : *s == '\t' ? 't' : 0;
        if (e)
            *p++ = '\\', *p++ = e;
        else
            *p++ = *s;
    }
    *p = 0;
    return o;
}

/* 1 if j is a ByteLevel pre-tokenizer; *use_regex gets its use_regex
 * (default true). */
static int is_byte_level(const cJSON *j, int *use_regex) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "ByteLevel")) return 0;
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "use_regex");
    *use_regex = !cJSON_IsFalse(u);
    return 1;
}

/* Names the pre-tokenizer in j (the "pre_tokenizer" object). */
static int pre_name(const cJSON *j, const char **pre, moe_err *err) {
    const cJSON *list[MAX_SPLITS + 2];
    int n = 0;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(t))
        return moe_err_set(err, MOE_ENOTSUP,
                           "tokenizer.json has no pre_tokenizer (not byte-level BPE)");
    if (!strcmp(t->valuestring, "Sequence")) {
        const cJSON *e, *a = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        cJSON_ArrayForEach(e, a) {
            if (n == MAX_SPLITS + 2)
                return moe_err_set(err, MOE_ENOTSUP,
                                   "pre_tokenizer: more steps than any known one");
            list[n++] = e;
        }
    } else {
        list[n++] = j;
    }
    /* Splits (Isolated, not inverted), then one ByteLevel */
    const char *rx[MAX_SPLITS] = {0};
    char *canon[MAX_SPLITS] = {0};
    int n_rx = 0, byte_level = 0, use_regex = 0, rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(list[i], "type");
        const char *tn = cJSON_IsString(ty) ? ty->valuestring : "?";
        if (is_byte_level(list[i], &use_regex)) {
            if (i != n - 1)
                rc = moe_err_set(err, MOE_ENOTSUP, "pre_tokenizer: ByteLevel is not the last step");
            byte_level = 1;
            continue;
        }
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(list[i], "pattern");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(list[i], "behavior");
        if (strcmp(tn, "Split") || !cJSON_IsString(r) || n_rx == MAX_SPLITS ||
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(list[i], "invert")) ||
            !cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated")) {
            rc = moe_err_set(err, MOE_ENOTSUP,
                             "pre_tokenizer: step %d (%s) is not an isolating Split regex; "
                             "no llama.cpp pre-tokenizer is known for it",
                             i, tn);
            break;
        }
        rx[n_rx] = r->valuestring;
        if (!(canon[n_rx] = regex_canon(r->valuestring)))
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory");
        n_rx++;
    }
    if (!rc && !byte_level)
        rc = moe_err_set(err, MOE_ENOTSUP,
                         "pre_tokenizer has no ByteLevel step (SentencePiece-style tokenizers "
                         "are not supported yet)");
    if (!rc && n_rx == 0) {
        if (use_regex)
            *pre = "gpt-2";
        else
            rc = moe_err_set(err, MOE_ENOTSUP,
                             "pre_tokenizer: ByteLevel without a regex and no Split");
    } else if (!rc) {
        *pre = NULL;
        for (size_t k = 0; k < sizeof pre_table / sizeof pre_table[0] && !*pre; k++) {
            int m = !use_regex;
            for (int i = 0; i < MAX_SPLITS && m; i++)
                m = i < n_rx ? pre_table[k].regex[i] && !strcmp(pre_table[k].regex[i], canon[i])
                             : !pre_table[k].regex[i];
            if (m) *pre = pre_table[k].pre;
        }
        if (!*pre)
            rc = moe_err_set(err, MOE_ENOTSUP,
                             "unknown pre-tokenizer: %d Split regex(es)%s, the first \"%.300s\"; "
                             "known: llama-bpe, qwen2, deepseek-v3, gpt-2",
                             n_rx, use_regex ? " then a ByteLevel regex" : "", rx[0]);
    }
    for (int i = 0; i < n_rx; i++) free(canon[i]);
    return rc;
}

/* A byte-level BPE's normalizer: none, an empty Sequence, or NFC (alone or
 * as the one step of a Sequence). Others would change ids unnoticed. */
static int bpe_normalizer(const cJSON *root, const char *path, int *nfc, moe_err *err) {
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    *nfc = 0;
    if (!norm || cJSON_IsNull(norm)) return 0;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
    const int seq = cJSON_IsArray(list) && cJSON_GetArraySize(list) <= 1;
    const cJSON *one = seq ? cJSON_GetArrayItem(list, 0) : norm;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(one, "type");
    if (seq && !one) return 0; /* an empty Sequence */
    if (cJSON_IsString(ty) && !strcmp(ty->valuestring, "NFC")) return *nfc = 1, 0;
    ty = cJSON_GetObjectItemCaseSensitive(norm, "type");
    return moe_err_set(err, MOE_ENOTSUP, "%s: normalizer \"%.40s\" is not supported (none or NFC)",
                       path, cJSON_IsString(ty) ? ty->valuestring : "?");
}

/* ---- SentencePiece-style BPE ---------------------------------------------------- */

static int json_type_is(const cJSON *j, const char *type) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
    return cJSON_IsString(t) && !strcmp(t->valuestring, type);
}

/* A byte-fallback BPE must write spaces as U+2581 with one prepended, the
 * way llama.cpp's SentencePiece tokenizer does: Llama 2's normalizer
 * (Prepend "▁", Replace " " -> "▁") or a Metaspace pre-tokenizer that
 * prepends and does not split. */
static int spm_check(const cJSON *root, const char *path, moe_err *err) {
    static const char mark[] = "\xe2\x96\x81";
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    int prepend = 0, replace = 0, other = 0;
    const cJSON *e, *list = json_type_is(norm, "Sequence")
                                ? cJSON_GetObjectItemCaseSensitive(norm, "normalizers")
                                : NULL;
    if (list) {
        cJSON_ArrayForEach(e, list) {
            const cJSON *pp = cJSON_GetObjectItemCaseSensitive(e, "prepend");
            const cJSON *pat = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(e, "pattern"), "String");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
            if (json_type_is(e, "Prepend") && cJSON_IsString(pp) && !strcmp(pp->valuestring, mark))
                prepend = 1;
            else if (json_type_is(e, "Replace") && cJSON_IsString(pat) &&
                     !strcmp(pat->valuestring, " ") && cJSON_IsString(content) &&
                     !strcmp(content->valuestring, mark))
                replace = 1;
            else
                other = 1;
        }
    } else if (norm && !cJSON_IsNull(norm)) {
        other = 1;
    }
    if (!other && prepend && replace && (!pre || cJSON_IsNull(pre))) return 0;
    if ((!norm || cJSON_IsNull(norm)) && json_type_is(pre, "Metaspace")) {
        const cJSON *rep = cJSON_GetObjectItemCaseSensitive(pre, "replacement");
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(pre, "prepend_scheme");
        const cJSON *split = cJSON_GetObjectItemCaseSensitive(pre, "split");
        if (cJSON_IsString(rep) && !strcmp(rep->valuestring, mark) && cJSON_IsFalse(split) &&
            (!scheme || (cJSON_IsString(scheme) && (!strcmp(scheme->valuestring, "always") ||
                                                    !strcmp(scheme->valuestring, "first")))))
            return 0;
    }
    return moe_err_set(err, MOE_ENOTSUP,
                       "%s: a byte-fallback BPE whose spaces are not written the SentencePiece way "
                       "(normalizer Prepend+Replace with U+2581, or a non-splitting Metaspace) is "
                       "not supported yet",
                       path);
}

typedef struct text_id {
    const char *text;
    int id;
} text_id;

static int cmp_text_id(const void *a, const void *b) {
    return strcmp(((const text_id *)a)->text, ((const text_id *)b)->text);
}

static int is_byte_token(const char *t) {
    static const char hex[] = "0123456789ABCDEF";
    return strlen(t) == 6 && !strncmp(t, "<0x", 3) && t[5] == '>' && strchr(hex, t[3]) &&
           strchr(hex, t[4]);
}

/* Byte tokens typed 6; scores from the merges: a token scores minus the rank
 * of the first merge that makes it, so SentencePiece's "highest score first"
 * merges in HF's rank order. Tokens no merge makes score below all others. */
static int spm_types_scores(moe__hf_vocab *v, moe_err *err) {
    text_id *ix = malloc((size_t)v->n_tokens * sizeof *ix);
    v->scores = malloc((size_t)v->n_tokens * sizeof *v->scores);
    char *buf = malloc(4096);
    if (!ix || !v->scores || !buf) {
        free(ix), free(buf);
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    for (int i = 0; i < v->n_tokens; i++) {
        ix[i] = (text_id){v->tokens[i], i};
        if (v->types[i] == 1 && is_byte_token(v->tokens[i])) v->types[i] = 6;
        /* a single character or a byte token is never a merge result */
        const unsigned char c = (unsigned char)v->tokens[i][0];
        const size_t cl = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        v->scores[i] =
            v->types[i] != 1 || strlen(v->tokens[i]) <= cl ? 0.0f : -(float)(v->n_merges + i);
    }
    qsort(ix, (size_t)v->n_tokens, sizeof *ix, cmp_text_id);
    for (int r = v->n_merges - 1; r >= 0; r--) { /* the lowest rank is written last */
        const char *m = v->merges[r], *sp = strchr(m, ' ');
        const size_t l = strlen(m);
        if (!sp || l >= 4096) continue;
        memcpy(buf, m, (size_t)(sp - m));
        memcpy(buf + (sp - m), sp + 1, l - (size_t)(sp - m)); /* with the NUL */
        const text_id key = {buf, 0},
                      *hit = bsearch(&key, ix, (size_t)v->n_tokens, sizeof *ix, cmp_text_id);
        if (hit) v->scores[hit->id] = -(float)r;
    }
    free(ix), free(buf);
    return 0;
}

/* ---- Files ------------------------------------------------------------------------ */

/* Reads and parses a JSON file; *out NULL (and 0 returned) if it does not
 * exist and optional is set. */
static int json_load(const char *path, int optional, cJSON **out, moe_err *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return optional ? 0 : moe_err_set(err, MOE_EIO, "cannot open %s", path);
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
        *out = cJSON_ParseWithLength(buf, (size_t)n);
    }
    int rc = 0;
    if (n < 0)
        rc = moe_err_set(err, MOE_EIO, "cannot read %s", path);
    else if (!buf)
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory reading %s", path);
    else if (!*out)
        rc = moe_err_set(err, MOE_EFORMAT, "%s: not valid JSON", path);
    free(buf);
    fclose(f);
    return rc;
}

/* The id of the token with this text, or -1 (added tokens first, as HF). */
static int token_id(const moe__hf_vocab *v, const char *text) {
    for (int i = 0; i < v->n_tokens; i++)
        if (v->types[i] != 1 && !strcmp(v->tokens[i], text)) return i;
    for (int i = 0; i < v->n_tokens; i++)
        if (!strcmp(v->tokens[i], text)) return i;
    return -1;
}

/* tokenizer_config.json's bos_token / eos_token: a string or {"content": ...}. */
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(t)) t = cJSON_GetObjectItemCaseSensitive(t, "content");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* bos, eos and add_bos: tokenizer_config.json in the directory of path,
 * else the post-processor's TemplateProcessing, else "<|endoftext|>". */
static int special_ids(moe__hf_vocab *v, const cJSON *root, const char *path, moe_err *err) {
    v->bos_id = v->eos_id = -1;
    v->add_bos = 0;
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) + 1 : 0;
    char *cpath = malloc(dl + sizeof "tokenizer_config.json");
    if (!cpath) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    memcpy(cpath, path, dl);
    strcpy(cpath + dl, "tokenizer_config.json");
    cJSON *cfg = NULL;
    int rc = json_load(cpath, 1, &cfg, err);
    free(cpath);
    if (rc) return rc;
    int add_bos_known = 0;
    if (cfg) {
        const char *b = config_token(cfg, "bos_token"), *e = config_token(cfg, "eos_token");
        if (b) v->bos_id = token_id(v, b);
        if (e) v->eos_id = token_id(v, e);
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
        if (cJSON_IsBool(ab)) v->add_bos = cJSON_IsTrue(ab), add_bos_known = 1;
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (cJSON_IsString(ct) && !(v->chat_template = strdup(ct->valuestring))) {
            cJSON_Delete(cfg);
            return moe_err_set(err, MOE_ENOMEM, "out of memory");
        }
        cJSON_Delete(cfg);
    }
    /* TemplateProcessing (possibly inside a Sequence): single = [SpecialToken, Sequence, ...] */
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *procs = cJSON_GetObjectItemCaseSensitive(pp, "processors"), *tp = NULL, *e;
    if (cJSON_IsArray(procs)) {
        cJSON_ArrayForEach(e, procs) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
            if (cJSON_IsString(t) && !strcmp(t->valuestring, "TemplateProcessing")) tp = e;
        }
    } else {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(pp, "type");
        if (cJSON_IsString(t) && !strcmp(t->valuestring, "TemplateProcessing")) tp = pp;
    }
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(tp, "single"), 0);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id");
    if (cJSON_IsString(st)) {
        int id = token_id(v, st->valuestring);
        if (v->bos_id < 0) v->bos_id = id;
        if (!add_bos_known && id >= 0) v->add_bos = 1;
    }
    int eot = token_id(v, "<|endoftext|>");
    if (eot >= 0 && v->types[eot] == 3) { /* Qwen: config.json's bos and eos */
        if (v->bos_id < 0) v->bos_id = eot;
        if (v->eos_id < 0) v->eos_id = eot;
    }
    return 0;
}

/* ---- The vocabulary --------------------------------------------------------------- */

void moe__hf_vocab_free(moe__hf_vocab *v) {
    if (v->tokens)
        for (int i = 0; i < v->n_tokens; i++) free(v->tokens[i]);
    if (v->merges)
        for (int i = 0; i < v->n_merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
    free(v->scores);
    free(v->chat_template);
    memset(v, 0, sizeof *v);
}

/* Puts text at id (type ty); an id already holding the same text is retyped. */
static int put_token(moe__hf_vocab *v, int id, const char *text, int32_t ty, moe_err *err) {
    if (id < 0 || id >= v->n_tokens)
        return moe_err_set(err, MOE_EFORMAT, "token id %d out of range", id);
    if (v->tokens[id]) {
        if (strcmp(v->tokens[id], text))
            return moe_err_set(err, MOE_EFORMAT, "token id %d is both \"%.100s\" and \"%.100s\"",
                               id, v->tokens[id], text);
        v->types[id] = ty;
        return 0;
    }
    if (!(v->tokens[id] = strdup(text))) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    v->types[id] = ty;
    return 0;
}

int moe__hf_vocab_load(moe__hf_vocab *v, const char *path, moe_err *err) {
    memset(v, 0, sizeof *v);
    cJSON *root = NULL;
    int rc = json_load(path, 0, &root, err);
    if (rc) return rc;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *e;
    if (!cJSON_IsString(mtype)) {
        rc = moe_err_set(err, MOE_EFORMAT, "%s: no model.type (not a tokenizer.json?)", path);
        goto fail;
    }
    if (strcmp(mtype->valuestring, "BPE")) {
        rc = moe_err_set(err, MOE_ENOTSUP,
                         "%s: model.type \"%.40s\" is not supported (BPE only: byte-level or "
                         "SentencePiece-style with byte fallback)",
                         path, mtype->valuestring);
        goto fail;
    }
    v->unk_id = -1;
    v->spm = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
        rc = moe_err_set(err, MOE_EFORMAT, "%s: model.vocab or model.merges missing", path);
        goto fail;
    }
    if (v->spm) {
        if ((rc = spm_check(root, path, err))) goto fail;
    } else if ((rc = pre_name(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &v->pre,
                              err)) ||
               (rc = bpe_normalizer(root, path, &v->nfc, err))) {
        goto fail;
    }

    /* ids: the largest in vocab and added_tokens, then every one filled exactly once */
    int max_id = -1;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= 1 << 24) {
            rc = moe_err_set(err, MOE_EFORMAT, "%s: vocab entry \"%.100s\" has a bad id", path,
                             e->string);
            goto fail;
        }
        if (e->valueint > max_id) max_id = e->valueint;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= 1 << 24 ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "content"))) {
            rc = moe_err_set(err, MOE_EFORMAT, "%s: an added token has no id or content", path);
            goto fail;
        }
        if (id->valueint > max_id) max_id = id->valueint;
    }
    v->n_tokens = max_id + 1;
    v->tokens = calloc((size_t)v->n_tokens + 1, sizeof *v->tokens);
    v->types = calloc((size_t)v->n_tokens + 1, sizeof *v->types);
    v->merges = calloc((size_t)cJSON_GetArraySize(merges) + 1, sizeof *v->merges);
    if (!v->tokens || !v->types || !v->merges) {
        rc = moe_err_set(err, MOE_ENOMEM, "out of memory for %d tokens", v->n_tokens);
        goto fail;
    }
    cJSON_ArrayForEach(e, vocab) {
        if ((rc = put_token(v, e->valueint, e->string, 1, err))) goto fail;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *text = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        int special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        if ((rc = put_token(v, id->valueint, text, special ? 3 : 4, err))) goto fail;
    }
    for (int i = 0; i < v->n_tokens; i++)
        if (!v->tokens[i]) {
            rc = moe_err_set(err, MOE_EFORMAT,
                             "%s: token ids are not dense: no token has id %d (of %d)", path, i,
                             v->n_tokens);
            goto fail;
        }

    /* merges: "a b" strings (older files) or ["a", "b"] pairs */
    cJSON_ArrayForEach(e, merges) {
        char *m = NULL;
        if (cJSON_IsString(e)) {
            m = strdup(e->valuestring);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            const char *a = cJSON_GetArrayItem(e, 0)->valuestring,
                       *b = cJSON_GetArrayItem(e, 1)->valuestring;
            size_t la = strlen(a), lb = strlen(b);
            if ((m = malloc(la + lb + 2))) {
                memcpy(m, a, la);
                m[la] = ' ';
                memcpy(m + la + 1, b, lb + 1);
            }
        } else {
            rc = moe_err_set(err, MOE_EFORMAT, "%s: merge %d is neither \"a b\" nor [a, b]", path,
                             v->n_merges);
            goto fail;
        }
        if (!m) {
            rc = moe_err_set(err, MOE_ENOMEM, "out of memory for the merges");
            goto fail;
        }
        v->merges[v->n_merges++] = m;
    }
    if (v->spm) {
        const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
        if (cJSON_IsString(unk) && (v->unk_id = token_id(v, unk->valuestring)) >= 0)
            v->types[v->unk_id] = 2;
        if ((rc = spm_types_scores(v, err))) goto fail;
    }
    if ((rc = special_ids(v, root, path, err))) goto fail;
    cJSON_Delete(root);
    return 0;
fail:
    moe__hf_vocab_free(v);
    cJSON_Delete(root);
    return rc;
}
