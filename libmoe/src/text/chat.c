/* chat.c - chat templates: recognise a Jinja template's family and render
 * messages in that family's format (see moe/chat.h). */
#include "moe/chat.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const kind_names[MOE_CHAT_COUNT] = {"chatml", "mistral", "llama3", "deepseek3",
                                                       "olmoe"};

const char *moe_chat_template_name(int kind) {
    return kind >= 0 && kind < MOE_CHAT_COUNT ? kind_names[kind] : NULL;
}

const char *const *moe_chat_end_texts(int kind) {
    static const char *const chatml[] = {"<|im_end|>", "<|endoftext|>", NULL};
    static const char *const mistral[] = {"</s>", NULL};
    static const char *const llama3[] = {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", NULL};
    static const char *const deepseek3[] = {"<\xef\xbd\x9c"
                                            "end\xe2\x96\x81of\xe2\x96\x81sentence"
                                            "\xef\xbd\x9c>",
                                            NULL};
    static const char *const olmoe[] = {"<|endoftext|>", NULL};
    static const char *const none[] = {NULL};
    switch (kind) {
    case MOE_CHAT_CHATML:
        return chatml;
    case MOE_CHAT_MISTRAL:
        return mistral;
    case MOE_CHAT_LLAMA3:
        return llama3;
    case MOE_CHAT_DEEPSEEK3:
        return deepseek3;
    case MOE_CHAT_OLMOE:
        return olmoe;
    default:
        return none;
    }
}

int moe_chat_template_parse_name(const char *name) {
    if (!name) return MOE_EINVAL;
    for (int k = 0; k < MOE_CHAT_COUNT; k++)
        if (!strcasecmp(name, kind_names[k])) return k;
    return MOE_EINVAL;
}

/* 1 if needle occurs in hay[0..len). */
static int contains(const char *hay, size_t len, const char *needle) {
    const size_t m = strlen(needle);
    if (m > len) return 0;
    for (size_t i = 0; i + m <= len; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, m)) return 1;
    return 0;
}

int moe_chat_template_detect(const char *tmpl, size_t len, moe_err *err) {
    if (tmpl) {
        /* Most distinctive first: DeepSeek and Llama 3 templates never use
         * ChatML or [INST] markers; some ChatML templates mention [INST]. */
        if (contains(tmpl, len, "<|im_start|>")) return MOE_CHAT_CHATML;
        if (contains(tmpl, len, "<|start_header_id|>")) return MOE_CHAT_LLAMA3;
        if (contains(tmpl, len, "<\xef\xbd\x9cUser\xef\xbd\x9c>") ||
            contains(tmpl, len,
                     "<\xef\xbd\x9c"
                     "Assistant\xef\xbd\x9c>"))
            return MOE_CHAT_DEEPSEEK3;
        if (contains(tmpl, len, "[INST]")) return MOE_CHAT_MISTRAL;
        if (contains(tmpl, len, "<|user|>") && contains(tmpl, len, "<|assistant|>"))
            return MOE_CHAT_OLMOE;
    }
    return moe_err_set(err, MOE_ENOTSUP,
                       "unrecognised chat template (%zu bytes); choose a format with "
                       "--chat-template NAME (chatml, mistral, llama3, deepseek3, olmoe)",
                       tmpl ? len : 0);
}

/* Output that counts what it cannot store. */
typedef struct sink {
    char *out;
    size_t cap, pos;
} sink;

static void put(sink *s, const char *p, size_t n) {
    if (s->pos < s->cap && n <= s->cap - s->pos) memcpy(s->out + s->pos, p, n);
    s->pos += n;
}

static void puts_(sink *s, const char *p) {
    put(s, p, strlen(p));
}

static int is_ws(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Content trimmed of ASCII whitespace at both ends (Jinja's `| trim`). */
static void put_trimmed(sink *s, const char *p) {
    size_t a = 0, b = strlen(p);
    while (a < b && is_ws((unsigned char)p[a])) a++;
    while (b > a && is_ws((unsigned char)p[b - 1])) b--;
    put(s, p + a, b - a);
}

enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

#define DS_BOS                                                                                     \
    "<\xef\xbd\x9c"                                                                                \
    "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_EOS                                                                                     \
    "<\xef\xbd\x9c"                                                                                \
    "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define DS_ASSISTANT                                                                               \
    "<\xef\xbd\x9c"                                                                                \
    "Assistant\xef\xbd\x9c>"

/* The formats with a header per message (ChatML, Llama 3): for each message
 * open, role, sep, content (trimmed if trim), close; then, if gen, the
 * assistant's header (open "assistant" sep). */
static void render_headers(const moe_chat_msg *msgs, int n, int gen, const char *open,
                           const char *sep, const char *close, int trim, sink *s) {
    for (int i = 0; i < n; i++) {
        puts_(s, open);
        puts_(s, msgs[i].role);
        puts_(s, sep);
        if (trim)
            put_trimmed(s, msgs[i].content);
        else
            puts_(s, msgs[i].content);
        puts_(s, close);
    }
    if (gen) {
        puts_(s, open);
        puts_(s, "assistant");
        puts_(s, sep);
    }
}

static void render(int kind, const moe_chat_msg *msgs, const int *roles, int n, int gen, sink *s) {
    switch (kind) {
    case MOE_CHAT_CHATML:
        render_headers(msgs, n, gen, "<|im_start|>", "\n", "<|im_end|>\n", 0, s);
        break;
    case MOE_CHAT_MISTRAL: {
        /* Mixtral-8x7B-Instruct-v0.1's template has no system role; a system
         * message goes before the next user message (later Mistral
         * templates do the same with "\n\n"). */
        puts_(s, "<s>");
        int pending = -1; /* index of a system message not yet written */
        for (int i = 0; i < n; i++) {
            if (roles[i] == ROLE_SYSTEM) {
                if (pending >= 0) {
                    puts_(s, "[INST] ");
                    puts_(s, msgs[pending].content);
                    puts_(s, " [/INST]");
                }
                pending = i;
            } else if (roles[i] == ROLE_USER) {
                puts_(s, "[INST] ");
                if (pending >= 0) {
                    puts_(s, msgs[pending].content);
                    puts_(s, "\n\n");
                    pending = -1;
                }
                puts_(s, msgs[i].content);
                puts_(s, " [/INST]");
            } else {
                puts_(s, msgs[i].content);
                puts_(s, "</s>");
            }
        }
        if (pending >= 0) {
            puts_(s, "[INST] ");
            puts_(s, msgs[pending].content);
            puts_(s, " [/INST]");
        }
        break;
    }
    case MOE_CHAT_LLAMA3:
        puts_(s, "<|begin_of_text|>");
        render_headers(msgs, n, gen, "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
                       1, s);
        break;
    case MOE_CHAT_DEEPSEEK3: {
        puts_(s, DS_BOS);
        int first = 1;
        for (int i = 0; i < n; i++) {
            if (roles[i] != ROLE_SYSTEM) continue;
            if (!first) puts_(s, "\n\n");
            puts_(s, msgs[i].content);
            first = 0;
        }
        for (int i = 0; i < n; i++) {
            if (roles[i] == ROLE_USER) {
                puts_(s, DS_USER);
                puts_(s, msgs[i].content);
            } else if (roles[i] == ROLE_ASSISTANT) {
                puts_(s, DS_ASSISTANT);
                puts_(s, msgs[i].content);
                puts_(s, DS_EOS);
            }
        }
        if (gen) puts_(s, DS_ASSISTANT);
        break;
    }
    case MOE_CHAT_OLMOE:
        puts_(s, "<|endoftext|>");
        for (int i = 0; i < n; i++) {
            if (roles[i] == ROLE_SYSTEM)
                puts_(s, "<|system|>\n");
            else if (roles[i] == ROLE_USER)
                puts_(s, "<|user|>\n");
            else
                puts_(s, "<|assistant|>\n");
            puts_(s, msgs[i].content);
            puts_(s, roles[i] == ROLE_ASSISTANT ? "<|endoftext|>\n" : "\n");
        }
        /* The template writes it inside the message loop (loop.last). */
        if (gen && n > 0) puts_(s, "<|assistant|>\n");
        break;
    }
}

int moe_chat_apply(int kind, const moe_chat_msg *msgs, int n, int add_generation_prompt, char *out,
                   size_t cap, size_t *needed, moe_err *err) {
    if (kind < 0 || kind >= MOE_CHAT_COUNT)
        return moe_err_set(err, MOE_EINVAL, "invalid chat template kind %d", kind);
    if (n < 0 || (n > 0 && !msgs))
        return moe_err_set(err, MOE_EINVAL, "invalid message list (%d messages)", n);
    if (!out && cap)
        return moe_err_set(err, MOE_EINVAL, "NULL output buffer with capacity %zu", cap);
    enum { SMALL = 64 };
    int small[SMALL];
    int *roles = small;
    /* Roles are checked first, so nothing is written for a bad list. */
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return moe_err_set(err, MOE_EINVAL, "message %d has no %s", i,
                               msgs[i].role ? "content" : "role");
        const char *r = msgs[i].role;
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return moe_err_set(err, MOE_EINVAL,
                               "message %d: unknown chat role '%.64s' (want system, user or "
                               "assistant)",
                               i, r);
    }
    int *heap = NULL;
    if (n > SMALL) {
        heap = malloc((size_t)n * sizeof *heap);
        if (!heap) return moe_err_set(err, MOE_ENOMEM, "out of memory");
        roles = heap;
    }
    for (int i = 0; i < n; i++)
        roles[i] = !strcmp(msgs[i].role, "system") ? ROLE_SYSTEM
                   : !strcmp(msgs[i].role, "user") ? ROLE_USER
                                                   : ROLE_ASSISTANT;
    sink s = {out, cap, 0};
    render(kind, msgs, roles, n, add_generation_prompt, &s);
    free(heap);
    if (needed) *needed = s.pos + 1;
    if (s.pos >= cap)
        return moe_err_set(err, MOE_ENOSPC, "chat prompt needs %zu bytes, buffer has %zu",
                           s.pos + 1, cap);
    out[s.pos] = '\0';
    return 0;
}
