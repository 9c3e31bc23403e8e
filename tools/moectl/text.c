/* text.c - moectl tokenize / detokenize. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "moe/gguf.h"
#include "moe/vocab.h"
#include "moectl.h"

static const char tok_about[] =
    "Prints {\"tokens\": [...]} for --text, or {\"results\": [{\"tokens\": [...]}, ...]} for a\n"
    "JSON array of strings.\n";

static const char detok_about[] =
    "Prints {\"text\": \"...\"}: the tokens' text joined (invalid UTF-8 shown as U+FFFD).\n"
    "--results reads what `moectl tokenize --texts` prints ({\"results\": [{\"tokens\":\n"
    "[...]}, ...]}) and prints {\"results\": [{\"text\": \"...\"}, ...]}.\n";

/* Parses a JSON array of strings (whole file); returns count or -1. Strings
 * are malloc'd with their byte lengths. */
static int parse_string_array(const char *s, char ***out, size_t **lens) {
    int cap = 64, n = 0;
    char **v = malloc((size_t)cap * sizeof *v);
    size_t *l = malloc((size_t)cap * sizeof *l);
    if (!v || !l) return free(v), free(l), -1;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    if (*s++ != '[') goto bad;
    for (;;) {
        while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t' || *s == ',') s++;
        if (*s == ']') break;
        if (*s++ != '"') goto bad;
        size_t sz = 0, scap = 64;
        char *str = malloc(scap);
        if (!str) goto bad;
        while (*s && *s != '"') {
            uint32_t cp;
            if (*s != '\\') {
                if (sz + 1 >= scap) str = realloc(str, scap *= 2);
                str[sz++] = *s++;
                continue;
            }
            s++;
            if (*s == 'u') {
                char h[5] = {0};
                memcpy(h, s + 1, 4);
                cp = (uint32_t)strtoul(h, NULL, 16);
                s += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && s[1] == '\\' && s[2] == 'u') {
                    memcpy(h, s + 3, 4);
                    const uint32_t lo = (uint32_t)strtoul(h, NULL, 16);
                    if (lo >= 0xDC00 && lo < 0xE000)
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00), s += 6;
                }
            } else {
                const int e = json_escape_char(*s); /* leniently, any other as itself */
                cp = e >= 0 ? (uint32_t)e : (unsigned char)*s;
            }
            s++;
            if (sz + 5 >= scap) str = realloc(str, scap *= 2);
            sz += (size_t)utf8_encode(cp, str + sz);
        }
        if (*s++ != '"') {
            free(str);
            goto bad;
        }
        if (n == cap) {
            cap *= 2;
            v = realloc(v, (size_t)cap * sizeof *v);
            l = realloc(l, (size_t)cap * sizeof *l);
        }
        v[n] = str;
        l[n++] = sz;
    }
    *out = v;
    *lens = l;
    return n;
bad:
    for (int i = 0; i < n; i++) free(v[i]);
    free(v), free(l);
    return -1;
}

static int open_vocab(const char *path, moe_gguf **g, moe_vocab **v) {
    moe_err err;
    if (moe_gguf_open(g, path, &err) < 0) return die("%s", err.msg);
    if (moe_vocab_load(v, *g, &err) < 0) {
        moe_gguf_close(*g);
        return die("%s: %s", path, err.msg);
    }
    return 0;
}

static int print_tokens(const moe_vocab *v, const char *t, size_t n, int bos, int special) {
    int cap = (int)n + 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    moe_err err;
    const int k = ids ? moe_tokenize(v, t, n, bos, special, ids, cap, &err) : MOE_ENOMEM;
    if (k < 0) {
        free(ids);
        return die("%s", k == MOE_ENOMEM ? "out of memory" : err.msg);
    }
    printf("{\"tokens\": [");
    for (int i = 0; i < k; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("]}");
    free(ids);
    return 0;
}

int cmd_tokenize(const moectl_cmd *cmd, int argc, char **argv) {
    const char *path = NULL, *text = NULL, *texts = NULL;
    int special = 0, bos = 0, bench = 0;
    const moe_flag flags[] = {
        {"--text", NULL, MOE_FLAG_STRING, &text, "TEXT", .help = "one text"},
        {"--texts", NULL, MOE_FLAG_STRING, &texts, "FILE.json", .help = "a JSON array of strings"},
        {"--special", NULL, MOE_FLAG_BOOL, &special, NULL, .help = "match special-token text"},
        {"--bos", NULL, MOE_FLAG_BOOL, &bos, NULL, .help = "prepend BOS"},
        {"--bench", NULL, MOE_FLAG_INT, &bench, "R",
         .help = "tokenize the texts R times (best of 3) and print {\"mb_s\": ...} instead"},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, tok_about, flags);
    const int status = parse_args(&fs, &path, argc, argv);
    if (status >= 0) return status;
    if (!text == !texts) return usage_error(&fs);
    moe_gguf *g;
    moe_vocab *v;
    if (open_vocab(path, &g, &v)) return 1;
    int rc = 0;
    if (text) {
        rc = print_tokens(v, text, strlen(text), bos, special);
        if (!rc) printf("\n");
    } else {
        FILE *f = fopen(texts, "rb");
        char *buf = NULL;
        long size = 0;
        if (f && !fseek(f, 0, SEEK_END) && (size = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET) &&
            (buf = malloc((size_t)size + 1)) && fread(buf, 1, (size_t)size, f) == (size_t)size) {
            buf[size] = 0;
            char **strs;
            size_t *lens;
            const int n = parse_string_array(buf, &strs, &lens);
            if (n < 0) {
                rc = die("%s: not a JSON array of strings", texts);
            } else if (bench > 0) {
                size_t bytes = 0, maxl = 0;
                for (int i = 0; i < n; i++)
                    bytes += lens[i], maxl = lens[i] > maxl ? lens[i] : maxl;
                int32_t *ids = malloc((maxl + 8) * sizeof *ids);
                double best = 1e30;
                moe_err err;
                if (!ids) rc = die("out of memory");
                /* a text that fails to tokenize fails the benchmark: a
                 * rate over errors would measure nothing */
                for (int rep = 0; !rc && rep < 3; rep++) {
                    const double t0 = now_s();
                    for (int r = 0; !rc && r < bench; r++)
                        for (int i = 0; !rc && i < n; i++) {
                            const int k = moe_tokenize(v, strs[i], lens[i], bos, special, ids,
                                                       (int)maxl + 8, &err);
                            if (k < 0) rc = die("%s: text %d: %s", texts, i, err.msg);
                        }
                    const double t = now_s() - t0;
                    if (t < best) best = t;
                }
                free(ids);
                if (!rc)
                    printf("{\"bytes\": %zu, \"seconds\": %.6f, \"mb_s\": %.3f}\n",
                           bytes * (size_t)bench, best, (double)bytes * bench / best / 1e6);
                for (int i = 0; i < n; i++) free(strs[i]);
                free(strs), free(lens);
            } else {
                printf("{\"results\": [");
                for (int i = 0; i < n && !rc; i++) {
                    if (i) printf(", ");
                    rc = print_tokens(v, strs[i], lens[i], bos, special);
                }
                printf("]}\n");
                for (int i = 0; i < n; i++) free(strs[i]);
                free(strs), free(lens);
            }
        } else {
            rc = die("%s: %s", texts, strerror(errno));
        }
        free(buf);
        if (f) fclose(f);
    }
    moe_vocab_free(v);
    moe_gguf_close(g);
    return rc;
}

/* Prints {"text": ...} for ids (checked against the vocabulary). */
static int print_text(const moe_vocab *v, const int32_t *ids, int n, int flags, const char *end) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= moe_vocab_n_tokens(v))
            return die("token id %d out of range [0, %d)", ids[i], moe_vocab_n_tokens(v));
    size_t cap = 256;
    char *out = malloc(cap);
    long len = 0;
    while (out && (len = moe_detokenize(v, ids, n, flags, out, cap)) > (long)cap) {
        free(out);
        out = malloc(cap = (size_t)len);
    }
    if (!out || len < 0) return free(out), die("%s", out ? "detokenize failed" : "out of memory");
    printf("{\"text\": ");
    json_utf8(stdout, out, (size_t)len);
    printf("}%s", end);
    free(out);
    return 0;
}

int cmd_detokenize(const moectl_cmd *cmd, int argc, char **argv) {
    const char *path = NULL, *toks = NULL, *results = NULL;
    int skip_special = 0, continuation = 0;
    const moe_flag table[] = {
        {"--tokens", NULL, MOE_FLAG_STRING, &toks, "1,2,3", .help = "token ids"},
        {"--results", NULL, MOE_FLAG_STRING, &results, "FILE.json",
         .help = "what `moectl tokenize --texts` prints"},
        {"--skip-special", NULL, MOE_FLAG_BOOL, &skip_special, NULL,
         .help = "control and unknown tokens (BOS, EOS, <unk>) have no text"},
        {"--continuation", NULL, MOE_FLAG_BOOL, &continuation, NULL,
         .help = "the tokens continue an earlier text: for a SentencePiece vocabulary,\n"
                 "keep the space the tokenizer puts before the text (removed otherwise)"},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, detok_about, table);
    const int status = parse_args(&fs, &path, argc, argv);
    if (status >= 0) return status;
    if (!!toks + !!results != 1) return usage_error(&fs);
    const int flags =
        (skip_special ? MOE_DETOK_SKIP_SPECIAL : 0) | (continuation ? 0 : MOE_DETOK_STRIP_SPACE);
    moe_gguf *g;
    moe_vocab *v;
    if (open_vocab(path, &g, &v)) return 1;
    int rc = 0;
    if (toks) {
        int32_t *ids;
        const int n = parse_tokens(toks, &ids);
        if (n < 0)
            rc = 1;
        else
            rc = print_text(v, ids, n, flags, "\n"), free(ids);
    } else {
        size_t fl;
        char *f = read_file(results, &fl);
        cJSON *root = f ? cJSON_ParseWithLength(f, fl) : NULL;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "results"), *e;
        if (!f)
            rc = 1;
        else if (!cJSON_IsArray(arr))
            rc = die("%s: not {\"results\": [...]} JSON", results);
        int first = 1;
        if (!rc) printf("{\"results\": [");
        cJSON_ArrayForEach(e, arr) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "tokens"), *x;
            const int n = cJSON_GetArraySize(t);
            int32_t *ids = malloc((size_t)(n + 1) * sizeof *ids);
            int k = 0;
            if (!ids || !cJSON_IsArray(t)) {
                rc = die("%s: a result without \"tokens\"", results);
                free(ids);
                break;
            }
            cJSON_ArrayForEach(x, t) ids[k++] =
                cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble < 2147483647.0
                    ? x->valueint
                    : -1;
            printf("%s", first ? "" : ", ");
            first = 0;
            rc = print_text(v, ids, n, flags, "");
            free(ids);
            if (rc) break;
        }
        if (!rc) printf("]}\n");
        cJSON_Delete(root);
        free(f);
    }
    moe_vocab_free(v);
    moe_gguf_close(g);
    return rc;
}
