/*
 * gguf_lookup.c - the GGUF reader's look-ups (see moe/gguf.h; parsing is
 * gguf.c): the sorted name index that gguf.c builds at open and these
 * functions binary-search (moe_gguf_find_kv, moe_gguf_find_tensor: O(log n)),
 * moe_gguf_arr_str through the string-array element index built at open
 * (O(1)), moe_gguf_str_eq, the handle's accessors and the typed getters
 * moe_gguf_get_*, which convert a value only where it fits the type asked
 * for. Nothing here allocates or changes the handle.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_internal.h"

/* ==== Sorted name index ================================================ */

static int gg_str_cmp(moe_gguf_str a, const void *s, uint64_t len) {
    uint64_t n = a.len < len ? a.len : len;
    int c = n ? memcmp(a.ptr, s, n) : 0;
    if (c) return c;
    return a.len < len ? -1 : a.len > len;
}

static int gg_name_cmp(const void *pa, const void *pb) {
    const moe__gguf_name *a = pa, *b = pb;
    int c = gg_str_cmp(a->name, b->name.ptr, b->name.len);
    return c ? c : (a->idx > b->idx) - (a->idx < b->idx);
}

/* Sorts ix[0..n). Returns the smallest idx whose name an earlier item already
 * has (and that item's idx in *first), or -1 if all names differ. */
int64_t moe__gguf_names_sort(moe__gguf_name *ix, int64_t n, int64_t *first) {
    int64_t dup = -1;
    if (n > 1) qsort(ix, (size_t)n, sizeof *ix, gg_name_cmp);
    for (int64_t i = 1, run = 0; i < n; i++) {
        if (gg_str_cmp(ix[i].name, ix[i - 1].name.ptr, ix[i - 1].name.len) != 0) {
            run = i;
        } else if (dup < 0 || ix[i].idx < dup) {
            dup = ix[i].idx;
            *first = ix[run].idx;
        }
    }
    return dup;
}

/* The idx of the item named s[0..len) in sorted ix[0..n), or -1. */
int64_t moe__gguf_names_find(const moe__gguf_name *ix, int64_t n, const void *s, uint64_t len) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = gg_str_cmp(ix[mid].name, s, len);
        if (c == 0) return ix[mid].idx;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ==== Accessors ========================================================= */

uint32_t moe_gguf_version(const moe_gguf *g) {
    return g->version;
}

uint64_t moe_gguf_alignment(const moe_gguf *g) {
    return g->alignment;
}

size_t moe_gguf_file_size(const moe_gguf *g) {
    return g->size;
}

int64_t moe_gguf_n_kv(const moe_gguf *g) {
    return g->n_kv;
}

const moe_gguf_kv *moe_gguf_kv_at(const moe_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kv[i] : NULL;
}

const moe_gguf_kv *moe_gguf_find_kv(const moe_gguf *g, const char *key) {
    int64_t i = moe__gguf_names_find(g->kv_names, g->n_kv, key, strlen(key));
    return i >= 0 ? &g->kv[i] : NULL;
}

int64_t moe_gguf_n_tensors(const moe_gguf *g) {
    return g->n_tensors;
}

const moe_gguf_tensor *moe_gguf_tensor_at(const moe_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const moe_gguf_tensor *moe_gguf_find_tensor(const moe_gguf *g, const char *name) {
    int64_t i = moe__gguf_names_find(g->tensor_names, g->n_tensors, name, strlen(name));
    return i >= 0 ? &g->tensors[i] : NULL;
}

int moe_gguf_str_eq(moe_gguf_str a, const char *s) {
    return gg_str_cmp(a, s, strlen(s)) == 0;
}

static uint64_t gg_load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Element i of a STRING array; {NULL, 0} if kv is not a string array of g or i
 * is out of range. */
moe_gguf_str moe_gguf_arr_str(const moe_gguf *g, const moe_gguf_kv *kv, uint64_t i) {
    moe_gguf_str s = {NULL, 0};
    uintptr_t a = (uintptr_t)kv, lo = (uintptr_t)g->kv, hi = (uintptr_t)(g->kv + g->n_kv);
    if (a < lo || a >= hi || (a - lo) % sizeof *kv != 0) return s;
    if (kv->type != MOE_GGUF_TYPE_ARRAY || kv->arr_type != MOE_GGUF_TYPE_STRING) return s;
    if (i >= kv->arr_n) return s;
    uint64_t off = g->str_off[g->kv_str_first[(a - lo) / sizeof *kv] + i];
    s.len = gg_load_u64(g->base + off);
    s.ptr = (const char *)g->base + off + 8;
    return s;
}

/* ==== Typed getters ===================================================== */

static int gg_is_unsigned(moe_gguf_type t) {
    return t == MOE_GGUF_TYPE_UINT8 || t == MOE_GGUF_TYPE_UINT16 || t == MOE_GGUF_TYPE_UINT32 ||
           t == MOE_GGUF_TYPE_UINT64;
}

static int gg_is_signed(moe_gguf_type t) {
    return t == MOE_GGUF_TYPE_INT8 || t == MOE_GGUF_TYPE_INT16 || t == MOE_GGUF_TYPE_INT32 ||
           t == MOE_GGUF_TYPE_INT64;
}

int moe_gguf_get_u32(const moe_gguf *g, const char *key, uint32_t *out) {
    const moe_gguf_kv *kv = moe_gguf_find_kv(g, key);
    if (!kv) return MOE_ENOTFOUND;
    if (gg_is_unsigned(kv->type) && kv->v.u64 <= UINT32_MAX) {
        *out = (uint32_t)kv->v.u64;
        return 0;
    }
    if (gg_is_signed(kv->type) && kv->v.i64 >= 0 && kv->v.i64 <= (int64_t)UINT32_MAX) {
        *out = (uint32_t)kv->v.i64;
        return 0;
    }
    return MOE_EFORMAT;
}

int moe_gguf_get_i64(const moe_gguf *g, const char *key, int64_t *out) {
    const moe_gguf_kv *kv = moe_gguf_find_kv(g, key);
    if (!kv) return MOE_ENOTFOUND;
    if (gg_is_unsigned(kv->type) && kv->v.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)kv->v.u64;
        return 0;
    }
    if (gg_is_signed(kv->type)) {
        *out = kv->v.i64;
        return 0;
    }
    return MOE_EFORMAT;
}

/* FLOAT32, or FLOAT64 within float range (NaN and infinities pass through). */
int moe_gguf_get_f32(const moe_gguf *g, const char *key, float *out) {
    const moe_gguf_kv *kv = moe_gguf_find_kv(g, key);
    if (!kv) return MOE_ENOTFOUND;
    if (kv->type == MOE_GGUF_TYPE_FLOAT32) {
        *out = (float)kv->v.f64;
        return 0;
    }
    if (kv->type == MOE_GGUF_TYPE_FLOAT64) {
        double v = kv->v.f64;
        if (isfinite(v) && fabs(v) > (double)FLT_MAX) return MOE_EFORMAT; /* beyond float */
        *out = (float)v;
        return 0;
    }
    return MOE_EFORMAT;
}

int moe_gguf_get_bool(const moe_gguf *g, const char *key, int *out) {
    const moe_gguf_kv *kv = moe_gguf_find_kv(g, key);
    if (!kv) return MOE_ENOTFOUND;
    if (kv->type != MOE_GGUF_TYPE_BOOL) return MOE_EFORMAT;
    *out = kv->v.u64 != 0;
    return 0;
}

int moe_gguf_get_str(const moe_gguf *g, const char *key, moe_gguf_str *out) {
    const moe_gguf_kv *kv = moe_gguf_find_kv(g, key);
    if (!kv) return MOE_ENOTFOUND;
    if (kv->type != MOE_GGUF_TYPE_STRING) return MOE_EFORMAT;
    *out = kv->v.str;
    return 0;
}
