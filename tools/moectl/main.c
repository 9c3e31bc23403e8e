/*
 * moectl - the moemesh command-line tool: inspect models, make test models,
 * compute logits, generate, benchmark. JSON on stdout, errors on stderr.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moectl.h"
#include "svc/flags.h"

int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("moectl: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int usage_error(const moe_flagset *fs) {
    moe_flags_usage(fs, stderr);
    return 2;
}

int check_wire(const void *dst, char *why, size_t cap) {
    const char *w = *(const char *const *)dst;
    if (!strcmp(w, "f32") || !strcmp(w, "bf16")) return 0;
    snprintf(why, cap, "must be f32 or bf16");
    return -1;
}

/* Reads a whole file, NUL-terminated; NULL (reported) on failure. */
char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return die("cannot open %s", path), NULL;
    char *buf = NULL;
    long size = 0;
    if (!fseek(f, 0, SEEK_END) && (size = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET) &&
        (buf = malloc((size_t)size + 1)) && fread(buf, 1, (size_t)size, f) == (size_t)size) {
        buf[size] = 0;
        fclose(f);
        *len = (size_t)size;
        return buf;
    }
    free(buf);
    fclose(f);
    die("cannot read %s", path);
    return NULL;
}

int parse_tokens(const char *s, int32_t **out) {
    int cap = 16, n = 0;
    int32_t *t = malloc((size_t)cap * sizeof *t);
    if (!t) return die("out of memory"), -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 0x7fffffffL || (*end && *end != ',')) {
            free(t);
            die("--tokens: bad token id at '%s' (want comma-separated ids like 1,2,3)", p);
            return -1;
        }
        if (n == cap) {
            cap *= 2;
            int32_t *nt = realloc(t, (size_t)cap * sizeof *t);
            if (!nt) return free(t), die("out of memory"), -1;
            t = nt;
        }
        t[n++] = (int32_t)v;
        if (*end == ',' && end[1] == '\0') {
            free(t);
            die("--tokens: trailing comma in '%s'", s);
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        free(t);
        die("--tokens: no token ids given");
        return -1;
    }
    *out = t;
    return n;
}

void json_float(FILE *f, float v) {
    if (v != v || v == 1.0f / 0.0f || v == -1.0f / 0.0f) {
        fputs("null", f);
        return;
    }
    fprintf(f, "%.9g", (double)v);
}

/* The commands: each parses its own flags (see 'moectl COMMAND --help'). */
static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *synopsis; /* for 'moectl --help': arguments, then what it does */
} cmds[] = {
    {"info", cmd_info, "MODEL.gguf [--json]          architecture, hyperparameters, tensors"},
    {"logits", cmd_logits, "MODEL.gguf --tokens 1,2,3    logits after every prompt position"},
    {"generate", cmd_generate, "MODEL.gguf --tokens 1,2,3 -n N   greedy (or --temp) continuation"},
    {"bench", cmd_bench, "MODEL.gguf [--prompt P] [--gen G] [--batch B]   tokens/s"},
    {"mkmodel", cmd_mkmodel, "--arch A --dtype D --seed S -o OUT.gguf   random-weight test model"},
    {"expert", cmd_expert,
     "MODEL.gguf --layer L --input FILE [--workers H:P,...]   one layer's experts"},
    {"tokenize", cmd_tokenize, "MODEL.gguf --text TEXT | --texts FILE.json   text -> token ids"},
    {"detokenize", cmd_detokenize, "MODEL.gguf --tokens 1,2,3                  token ids -> text"},
    {"chat-template", cmd_chat_template,
     "(--model M.gguf | --template-file F | --name N) --messages FILE.json [--gen]\n"
     "                                                        messages -> chat prompt text"},
};

static void usage(FILE *out) {
    fputs("usage: moectl COMMAND [options]\n\ncommands:\n", out);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(out, "  %-9s %s\n", cmds[i].name, cmds[i].synopsis);
    fputs("\n'moectl COMMAND --help' describes each command. Output is JSON on stdout;\n"
          "errors go to stderr with a non-zero exit status.\n",
          out);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "moectl: error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
