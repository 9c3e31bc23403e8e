/* gguf_patch.h - test helper: copy a GGUF file with one u32 key changed
 * (or added), through the project's reader and writer. Supports the key
 * types moe_testmodel writes (u32, i32, f32, bool, string, arrays of i32 and
 * of strings). */
#ifndef MOE_TEST_GGUF_PATCH_H
#define MOE_TEST_GGUF_PATCH_H

#include <stdlib.h>
#include <string.h>

#include "moe/gguf.h"
#include "test.h"

static void gguf_patch_u32(const char *src, const char *dst, const char *key, uint32_t value) {
    moe_gguf *g;
    moe_err err;
    if (moe_gguf_open(&g, src, &err) < 0) TEST_FAIL("%s", err.msg);
    moe_gguf_writer *w = moe_gguf_writer_create();
    int found = 0;
    for (int64_t i = 0; i < moe_gguf_n_kv(g); i++) {
        const moe_gguf_kv *kv = moe_gguf_kv_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)kv->key.len, kv->key.ptr);
        int rc = 0;
        if (!strcmp(name, key)) {
            rc = moe_gguf_writer_set_u32(w, name, value);
            found = 1;
        } else if (kv->type == MOE_GGUF_TYPE_UINT32) {
            rc = moe_gguf_writer_set_u32(w, name, (uint32_t)kv->v.u64);
        } else if (kv->type == MOE_GGUF_TYPE_INT32) {
            rc = moe_gguf_writer_set_i32(w, name, (int32_t)kv->v.i64);
        } else if (kv->type == MOE_GGUF_TYPE_FLOAT32) {
            rc = moe_gguf_writer_set_f32(w, name, (float)kv->v.f64);
        } else if (kv->type == MOE_GGUF_TYPE_BOOL) {
            rc = moe_gguf_writer_set_bool(w, name, (int)kv->v.u64);
        } else if (kv->type == MOE_GGUF_TYPE_STRING) {
            char *v = strndup(kv->v.str.ptr, kv->v.str.len);
            rc = moe_gguf_writer_set_str(w, name, v);
            free(v);
        } else if (kv->type == MOE_GGUF_TYPE_ARRAY && kv->arr_type == MOE_GGUF_TYPE_STRING) {
            char **v = calloc(kv->arr_n + 1, sizeof *v);
            for (uint64_t j = 0; j < kv->arr_n; j++) {
                moe_gguf_str e = moe_gguf_arr_str(g, kv, j);
                v[j] = strndup(e.ptr, e.len);
            }
            rc = moe_gguf_writer_set_arr_str(w, name, (const char *const *)v, kv->arr_n);
            for (uint64_t j = 0; j < kv->arr_n; j++) free(v[j]);
            free(v);
        } else if (kv->type == MOE_GGUF_TYPE_ARRAY && kv->arr_type == MOE_GGUF_TYPE_INT32) {
            int32_t *v = malloc(kv->arr_n * 4 + 4);
            memcpy(v, kv->arr_data, kv->arr_n * 4);
            rc = moe_gguf_writer_set_arr(w, name, MOE_GGUF_TYPE_INT32, v, kv->arr_n);
            free(v);
        } else {
            TEST_FAIL("gguf_patch: key %s has a type this helper does not copy", name);
        }
        if (rc < 0) TEST_FAIL("gguf_patch: cannot copy key %s", name);
    }
    if (!found) moe_gguf_writer_set_u32(w, key, value);
    for (int64_t i = 0; i < moe_gguf_n_tensors(g); i++) {
        const moe_gguf_tensor *t = moe_gguf_tensor_at(g, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        if (moe_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data) < 0)
            TEST_FAIL("gguf_patch: cannot copy tensor %s", name);
    }
    if (moe_gguf_writer_write(w, dst, &err) < 0) TEST_FAIL("%s", err.msg);
    moe_gguf_writer_destroy(w);
    moe_gguf_close(g);
}

#endif
