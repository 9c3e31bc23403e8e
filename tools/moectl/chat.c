/* chat.c - moectl chat-template: render messages with a chat template. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe/chat.h"
#include "moe/gguf.h"
#include "moectl.h"

static const char chat_about[] =
    "Prints {\"template\": NAME, \"text\": \"...\"}: the messages rendered in the chat format\n"
    "recognised from the model's tokenizer.chat_template (or from the Jinja template in F),\n"
    "or named (--name or --chat-template: chatml, mistral, llama3, deepseek3, olmoe).\n";

static void skip_ws(const char **s) {
    while (**s == ' ' || **s == '\n' || **s == '\r' || **s == '\t') ++*s;
}

/* After an array element or object member: skips white space and a comma;
 * returns whether there was one (another element follows). */
static int skip_comma(const char **s) {
    skip_ws(s);
    if (**s != ',') return 0;
    ++*s;
    return 1;
}

static int hex4(const char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        const char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Parses a JSON string at *s (at its opening quote) into a malloc'd,
 * NUL-terminated UTF-8 string; NULL on a syntax error or out of memory. */
static char *parse_str(const char **s) {
    const char *p = *s;
    if (*p++ != '"') return NULL;
    size_t sz = 0, cap = 64;
    char *str = malloc(cap);
    if (!str) return NULL;
    while (*p != '"') {
        if (sz + 5 >= cap) {
            char *ns = realloc(str, cap *= 2);
            if (!ns) return free(str), NULL;
            str = ns;
        }
        if ((unsigned char)*p < 0x20) return free(str), NULL; /* also the NUL at the end */
        if (*p != '\\') {
            str[sz++] = *p++;
            continue;
        }
        p++;
        uint32_t cp;
        const int e = json_escape_char(*p);
        if (e >= 0) {
            cp = (uint32_t)e;
        } else if (*p == 'u') {
            if (hex4(p + 1, &cp)) return free(str), NULL;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                uint32_t lo;
                if (p[1] != '\\' || p[2] != 'u' || hex4(p + 3, &lo) || lo < 0xDC00 || lo >= 0xE000)
                    return free(str), NULL;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                return free(str), NULL;
            }
        } else {
            return free(str), NULL;
        }
        p++;
        if (cp == 0) return free(str), NULL; /* contents are C strings */
        sz += (size_t)utf8_encode(cp, str + sz);
    }
    str[sz] = 0;
    *s = p + 1;
    return str;
}

static void free_msgs(moe_chat_msg *m, int n) {
    for (int i = 0; i < n; i++) free((char *)m[i].role), free((char *)m[i].content);
    free(m);
}

/* Parses [{"role": "...", "content": "..."}, ...] (other keys with string
 * values are ignored); returns the count or -1 (reported). */
static int parse_messages(const char *s, const char *path, moe_chat_msg **out) {
    int cap = 8, n = 0;
    moe_chat_msg *m = malloc((size_t)cap * sizeof *m);
    if (!m) return die("out of memory"), -1;
    skip_ws(&s);
    if (*s++ != '[') goto bad;
    skip_ws(&s);
    if (*s == ']') {
        s++;
        goto done;
    }
    do {
        skip_ws(&s);
        if (*s++ != '{') goto bad;
        if (n == cap) {
            moe_chat_msg *nm = realloc(m, (size_t)(cap *= 2) * sizeof *m);
            if (!nm) goto bad;
            m = nm;
        }
        m[n].role = m[n].content = NULL;
        n++;
        skip_ws(&s);
        if (*s != '}') {
            do {
                skip_ws(&s);
                char *key = parse_str(&s);
                if (!key) goto bad;
                skip_ws(&s);
                char *val = NULL;
                if (*s++ == ':') skip_ws(&s), val = parse_str(&s);
                if (!val) {
                    free(key);
                    goto bad;
                }
                const char **slot = !strcmp(key, "role")      ? &m[n - 1].role
                                    : !strcmp(key, "content") ? &m[n - 1].content
                                                              : NULL;
                free(key);
                if (slot)
                    free((char *)*slot), *slot = val;
                else
                    free(val);
            } while (skip_comma(&s));
        }
        if (*s++ != '}') goto bad;
        if (!m[n - 1].role || !m[n - 1].content) {
            die("%s: message %d needs a \"role\" and a \"content\" string", path, n - 1);
            free_msgs(m, n);
            return -1;
        }
    } while (skip_comma(&s));
    if (*s++ != ']') goto bad;
done:
    skip_ws(&s);
    if (*s) goto bad;
    *out = m;
    return n;
bad:
    free_msgs(m, n);
    die("%s: not a JSON array of {\"role\": \"...\", \"content\": \"...\"} objects", path);
    return -1;
}

/* The chat format from --model, --template-file or --name; -1 (reported). */
static int pick_kind(const char *model, const char *tfile, const char *name) {
    moe_err err;
    if (name) {
        const int k = moe_chat_template_parse_name(name);
        if (k < 0)
            die("--name: unknown chat template '%s' (want chatml, mistral, llama3, deepseek3 or "
                "olmoe)",
                name);
        return k < 0 ? -1 : k;
    }
    if (tfile) {
        size_t len;
        char *t = read_file(tfile, &len);
        if (!t) return -1;
        const int k = moe_chat_template_detect(t, len, &err);
        free(t);
        if (k < 0) return die("%s: %s", tfile, err.msg), -1;
        return k;
    }
    moe_gguf *g;
    if (moe_gguf_open(&g, model, &err) < 0) return die("%s", err.msg), -1;
    moe_gguf_str t;
    int k = moe_gguf_get_str(g, "tokenizer.chat_template", &t);
    if (k < 0) {
        die("%s: %s tokenizer.chat_template; choose a format with --chat-template NAME (or "
            "--name NAME: chatml, mistral, llama3, deepseek3, olmoe)",
            model, k == MOE_ENOTFOUND ? "no" : "bad");
        k = -1;
    } else if ((k = moe_chat_template_detect(t.ptr, (size_t)t.len, &err)) < 0) {
        die("%s: %s", model, err.msg);
        k = -1;
    }
    moe_gguf_close(g);
    return k;
}

int chat_load(const char *model, const char *name, const char *messages_file, moe_chat_msg **msgs,
              int *n_msgs) {
    size_t flen;
    char *js = read_file(messages_file, &flen);
    if (!js) return -1;
    moe_chat_msg *m = NULL;
    const int n = parse_messages(js, messages_file, &m);
    free(js);
    if (n < 0) return -1;
    const int kind = pick_kind(model, NULL, name);
    if (kind < 0) {
        free_msgs(m, n);
        return -1;
    }
    *msgs = m;
    *n_msgs = n;
    return kind;
}

void chat_msgs_free(moe_chat_msg *m, int n) {
    free_msgs(m, n);
}

int cmd_chat_template(const moectl_cmd *cmd, int argc, char **argv) {
    const char *model = NULL, *tfile = NULL, *name = NULL, *mpath = NULL;
    int gen = 0;
    const moe_flag flags[] = {
        {"--model", NULL, MOE_FLAG_STRING, &model, "MODEL.gguf",
         .help = "the format of its tokenizer.chat_template"},
        {"--template-file", NULL, MOE_FLAG_STRING, &tfile, "F",
         .help = "the format of the Jinja template in F"},
        {"--name", NULL, MOE_FLAG_STRING, &name, "NAME", .alias = "--chat-template",
         .help = "chatml, mistral, llama3, deepseek3 or olmoe"},
        {"--messages", NULL, MOE_FLAG_STRING, &mpath, "FILE.json",
         .help = "an array of {\"role\": \"system\"|\"user\"|\"assistant\", \"content\": "
                 "\"...\"}"},
        {"--gen", NULL, MOE_FLAG_BOOL, &gen, NULL,
         .help = "add the generation prompt (the start of the assistant's turn)"},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, chat_about, flags);
    const int status = parse_args(&fs, NULL, argc, argv);
    if (status >= 0) return status;
    if (!mpath || (!!model + !!tfile + !!name) != 1) return usage_error(&fs);
    const int kind = pick_kind(model, tfile, name);
    if (kind < 0) return 1;
    size_t len;
    char *json = read_file(mpath, &len);
    if (!json) return 1;
    moe_chat_msg *msgs;
    const int n = parse_messages(json, mpath, &msgs);
    free(json);
    if (n < 0) return 1;
    moe_err err;
    size_t need = 0;
    char *out = NULL;
    int rc = moe_chat_apply(kind, msgs, n, gen, NULL, 0, &need, &err);
    if (rc == MOE_ENOSPC) {
        out = malloc(need);
        rc = out ? moe_chat_apply(kind, msgs, n, gen, out, need, &need, &err) : MOE_ENOMEM;
    }
    free_msgs(msgs, n);
    if (rc < 0) {
        free(out);
        return die("%s", rc == MOE_ENOMEM ? "out of memory" : err.msg);
    }
    printf("{\"template\": \"%s\", \"text\": ", moe_chat_template_name(kind));
    json_str(stdout, out, need - 1);
    printf("}\n");
    free(out);
    return 0;
}
