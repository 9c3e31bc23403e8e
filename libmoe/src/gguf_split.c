/*
 * gguf_split.c - split models (see moe/gguf.h: moe_gguf_open_split): the
 * parts llama.cpp's gguf-split writes, "<prefix>-00001-of-0000N.gguf" ...,
 * opened as one handle.
 *
 * The format, as the pinned llama.cpp reads it (llama-model-loader.cpp):
 * every part carries split.no (u16, 0-based), split.count (u16) and
 * split.tensors.count (i32, the tensors of all parts); the first part carries
 * all other metadata. A model is opened through its first part (another part
 * is refused); the other parts' names are derived from the first's (its
 * suffix "-00001-of-0000N.gguf" replaced, llama_split_prefix/_path), and
 * every tensor must be found exactly once over all of them.
 *
 * The first part's handle becomes the set's: its tensor list and name index
 * are rebuilt over every part's tensors (each keeps its data pointer into its
 * own part's mapping and says which part it is in), so every look-up of
 * gguf_lookup.c works unchanged; the other parts' handles hang off it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_internal.h"

#define GS_KEY_NO "split.no"
#define GS_KEY_COUNT "split.count"
#define GS_KEY_TENSORS "split.tensors.count"
/* llama.cpp's split.no and split.count are u16. */
#define GS_MAX_PARTS 65535

int moe_gguf_split_path(char *buf, size_t cap, const char *prefix, int i, int n) {
    int len = snprintf(buf, cap, "%s-%05d-of-%05d.gguf", prefix, i + 1, n);
    return len < 0 || (size_t)len >= cap ? 0 : len;
}

int moe_gguf_n_parts(const moe_gguf *g) {
    return g->n_parts > 1 ? g->n_parts : 1;
}

size_t moe_gguf_part_size(const moe_gguf *g, int i) {
    if (i == 0) return g->size;
    return i > 0 && i < g->n_parts ? g->parts[i]->size : 0;
}

/* Reads a split key of a part as an integer; MOE_ENOTFOUND if absent. */
static int gs_get(const moe_gguf *g, const char *key, int64_t *v) {
    return moe_gguf_get_i64(g, key, v);
}

/* The prefix of path, the first part of n: path without its
 * "-00001-of-0000N.gguf" suffix (llama_split_prefix). NULL if path does not
 * end so (malloc'ed otherwise). */
static char *gs_prefix(const char *path, int n) {
    char suffix[40];
    snprintf(suffix, sizeof suffix, "-%05d-of-%05d.gguf", 1, n);
    size_t pl = strlen(path), sl = strlen(suffix);
    if (pl <= sl || strcmp(path + pl - sl, suffix) != 0) return NULL;
    char *p = malloc(pl - sl + 1);
    if (!p) return NULL;
    memcpy(p, path, pl - sl);
    p[pl - sl] = '\0';
    return p;
}

/* Checks part i (file name) of n: its split.no and split.count, and its
 * split.tensors.count against the first part's (want_tensors). */
static int gs_check_part(const moe_gguf *p, const char *name, int i, int n, int64_t want_tensors,
                         moe_err *err) {
    int64_t no = -1, count = -1, nt = -1;
    if (gs_get(p, GS_KEY_NO, &no) < 0 || gs_get(p, GS_KEY_COUNT, &count) < 0)
        return moe_err_set(err, MOE_EFORMAT,
                           "%s: split part %d of %d has no valid %s/%s keys: not a part of this "
                           "split model",
                           name, i + 1, n, GS_KEY_NO, GS_KEY_COUNT);
    if (count != n)
        return moe_err_set(err, MOE_EFORMAT,
                           "%s: %s is %lld, the first part says %d: a part of another split "
                           "model (re-split the model, or keep its parts together)",
                           name, GS_KEY_COUNT, (long long)count, n);
    if (no != i)
        return moe_err_set(err, MOE_EFORMAT, "%s: %s is %lld, expected %d (part %d of %d)", name,
                           GS_KEY_NO, (long long)no, i, i + 1, n);
    if (gs_get(p, GS_KEY_TENSORS, &nt) == 0 && nt != want_tensors)
        return moe_err_set(err, MOE_EFORMAT,
                           "%s: %s is %lld, the first part says %lld: a part of another split "
                           "model",
                           name, GS_KEY_TENSORS, (long long)nt, (long long)want_tensors);
    return 0;
}

/* Rebuilds g's tensor list and name index over every part; checks that no
 * tensor is in two parts and that there are want_tensors in all. */
static int gs_merge_tensors(moe_gguf *g, const char *path, int64_t want_tensors, moe_err *err) {
    int64_t total = g->n_tensors;
    for (int i = 1; i < g->n_parts; i++) total += g->parts[i]->n_tensors;
    if (total != want_tensors)
        return moe_err_set(err, MOE_EFORMAT,
                           "%s: the %d parts hold %lld tensors, %s says %lld: a part is missing "
                           "tensors or belongs to another split model",
                           path, g->n_parts, (long long)total, GS_KEY_TENSORS,
                           (long long)want_tensors);
    moe_gguf_tensor *t = calloc((size_t)total + 1, sizeof *t);
    moe__gguf_name *ix = calloc((size_t)total + 1, sizeof *ix);
    if (!t || !ix) {
        free(t);
        free(ix);
        return moe_err_set(err, MOE_ENOMEM, "%s: out of memory", path);
    }
    int64_t k = 0;
    for (int i = 0; i < g->n_parts; i++) {
        const moe_gguf *p = i ? g->parts[i] : g;
        for (int64_t j = 0; j < p->n_tensors; j++, k++) {
            t[k] = p->tensors[j];
            t[k].part = (uint16_t)i;
            ix[k] = (moe__gguf_name){t[k].name, k};
        }
    }
    free(g->tensors);
    free(g->tensor_names);
    g->tensors = t;
    g->tensor_names = ix;
    g->n_tensors = total;
    int64_t first = -1, dup = moe__gguf_names_sort(ix, total, &first);
    if (dup >= 0)
        return moe_err_set(err, MOE_EFORMAT,
                           "%s: tensor '%.*s' is in part %d and again in part %d: a part of "
                           "another split model?",
                           path, (int)(t[dup].name.len < 64 ? t[dup].name.len : 64),
                           t[dup].name.ptr, t[first].part + 1, t[dup].part + 1);
    return 0;
}

int moe_gguf_open_split(moe_gguf **out, const char *path, moe_err *err) {
    moe_gguf *g = NULL;
    char *prefix = NULL, *name = NULL;
    int64_t no = 0, count = 1, want = 0;
    int rc;

    if ((rc = moe_gguf_open(&g, path, err)) < 0) return rc;
    if ((rc = gs_get(g, GS_KEY_COUNT, &count)) == MOE_ENOTFOUND || (rc == 0 && count == 1)) {
        *out = g; /* a single file */
        return 0;
    }
    if (rc < 0 || count < 1 || count > GS_MAX_PARTS) {
        rc = moe_err_set(err, MOE_EFORMAT, "%s: bad value for key '%s'", path, GS_KEY_COUNT);
        goto fail;
    }
    if (gs_get(g, GS_KEY_NO, &no) < 0 || no != 0) {
        rc = moe_err_set(err, MOE_EINVAL,
                         "%s: this is part %lld of a split model of %lld parts: open the first "
                         "part (-00001-of-%05lld.gguf)",
                         path, (long long)no + 1, (long long)count, (long long)count);
        goto fail;
    }
    if (gs_get(g, GS_KEY_TENSORS, &want) < 0 || want < 0) {
        rc = moe_err_set(err, MOE_EFORMAT, "%s: split model without a valid '%s' key", path,
                         GS_KEY_TENSORS);
        goto fail;
    }
    if (!(prefix = gs_prefix(path, (int)count))) {
        rc = moe_err_set(err, MOE_EINVAL,
                         "%s: split model of %lld parts whose file name does not end in "
                         "-00001-of-%05lld.gguf (the other parts are found by name)",
                         path, (long long)count, (long long)count);
        goto fail;
    }
    size_t cap = strlen(prefix) + 32;
    g->parts = calloc((size_t)count, sizeof *g->parts);
    name = malloc(cap);
    if (!g->parts || !name) {
        rc = moe_err_set(err, MOE_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    g->n_parts = 1;
    for (int i = 1; i < (int)count; i++) {
        moe_gguf_split_path(name, cap, prefix, i, (int)count);
        moe_err perr;
        if ((rc = moe_gguf_open(&g->parts[i], name, &perr)) < 0) {
            rc = moe_err_set(err, rc, "%s: split part %d of %lld: %s", path, i + 1,
                             (long long)count, perr.msg);
            goto fail;
        }
        g->n_parts = i + 1;
        if ((rc = gs_check_part(g->parts[i], name, i, (int)count, want, err)) < 0) goto fail;
    }
    if ((rc = gs_merge_tensors(g, path, want, err)) < 0) goto fail;
    free(name);
    free(prefix);
    *out = g;
    return 0;
fail:
    free(name);
    free(prefix);
    moe_gguf_close(g);
    return rc;
}
