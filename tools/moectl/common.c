/* common.c - what the moectl commands share: errors and usage, the command
 * line, the model, files, token lists, JSON in and out. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "moe/model.h"
#include "moectl.h"

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

int parse_args(const moe_flagset *fs, const char **path, int argc, char **argv) {
    moe_flagset with_path = *fs;
    if (path) with_path.max_pos = 1, with_path.pos = path;
    const int status = moe_flags_run(&with_path, argc, argv, stdout, stderr);
    if (status >= 0) return status;
    return path && !*path ? usage_error(fs) : -1;
}

int load_model(moe_model **m, const char *path, moe_repack repack) {
    moe_err err;
    return moe_model_load_ex(m, path, repack, &err) < 0 ? die("%s", err.msg) : 0;
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

int json_escape_char(char c) {
    switch (c) {
    case '"':
    case '\\':
    case '/':
        return c;
    case 'n':
        return '\n';
    case 't':
        return '\t';
    case 'r':
        return '\r';
    case 'b':
        return '\b';
    case 'f':
        return '\f';
    default:
        return -1;
    }
}

int utf8_encode(uint32_t cp, char *dst) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | cp >> 6);
        dst[1] = (char)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | cp >> 12);
        dst[1] = (char)(0x80 | (cp >> 6 & 63));
        dst[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    dst[0] = (char)(0xF0 | cp >> 18);
    dst[1] = (char)(0x80 | (cp >> 12 & 63));
    dst[2] = (char)(0x80 | (cp >> 6 & 63));
    dst[3] = (char)(0x80 | (cp & 63));
    return 4;
}
