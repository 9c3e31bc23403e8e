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

static const char usage[] =
    "usage: moectl COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  info      MODEL.gguf [--json]          architecture, hyperparameters, tensors\n"
    "  logits    MODEL.gguf --tokens 1,2,3    logits after every prompt position\n"
    "  generate  MODEL.gguf --tokens 1,2,3 -n N   greedy (or --temp) continuation\n"
    "  bench     MODEL.gguf [--prompt P] [--gen G] [--batch B]   tokens/s\n"
    "  mkmodel   --arch A --dtype D --seed S -o OUT.gguf   random-weight test model\n"
    "  expert    MODEL.gguf --layer L --input FILE [--workers H:P,...]   one layer's experts\n"
    "  tokenize  MODEL.gguf --text TEXT | --texts FILE.json   text -> token ids\n"
    "  detokenize MODEL.gguf --tokens 1,2,3                  token ids -> text\n"
    "  chat-template (--model M.gguf | --template-file F | --name N) --messages FILE.json [--gen]\n"
    "                                                        messages -> chat prompt text\n"
    "\n"
    "'moectl COMMAND --help' describes each command. Output is JSON on stdout;\n"
    "errors go to stderr with a non-zero exit status.\n";

int die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("moectl: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int is_help(const char *a) {
    return !strcmp(a, "--help") || !strcmp(a, "-h");
}

/* If argv[*i] is name: parses its value into dst (svc/flags.h's parsers). */
static int opt_typed(int argc, char **argv, int *i, const char *name, moe_flag_type type,
                     void *dst) {
    if (strcmp(argv[*i], name)) return 0;
    if (*i + 1 >= argc) return die("option %s needs a value", name), -1;
    const moe_flag f = {.name = name, .type = type, .dst = dst};
    moe_err err;
    if (moe_flag_set(&f, name, argv[++*i], &err) < 0) return die("option %s", err.msg), -1;
    return 1;
}

int opt_int(int argc, char **argv, int *i, const char *name, int *out) {
    return opt_typed(argc, argv, i, name, MOE_FLAG_INT, out);
}

int opt_u64(int argc, char **argv, int *i, const char *name, uint64_t *out) {
    return opt_typed(argc, argv, i, name, MOE_FLAG_UINT64, out);
}

int opt_float(int argc, char **argv, int *i, const char *name, float *out) {
    double d = 0;
    int rc = opt_typed(argc, argv, i, name, MOE_FLAG_DOUBLE, &d);
    if (rc == 1) *out = (float)d;
    return rc;
}

int opt_str(int argc, char **argv, int *i, const char *name, const char **out) {
    return opt_typed(argc, argv, i, name, MOE_FLAG_STRING, out);
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

int main(int argc, char **argv) {
    if (argc < 2 || is_help(argv[1])) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"info", cmd_info},   {"logits", cmd_logits},   {"generate", cmd_generate},
                {"bench", cmd_bench}, {"mkmodel", cmd_mkmodel}, {"expert", cmd_expert},
                {"tokenize", cmd_tokenize}, {"detokenize", cmd_detokenize},
                {"chat-template", cmd_chat_template}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "moectl: error: unknown command '%s'\n\n%s", argv[1], usage);
    return 2;
}
