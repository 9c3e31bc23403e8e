/* residency.c - which of a mapped model's expert pages are in memory (see
 * moe/model.h: moe_expert_bytes, moe_expert_load_pages, moe_expert_drop_pages). */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "moe/dtype.h"
#include "moe/model.h"

/* The three expert tensors of layer l and the bytes of expert e in each. */
static void expert_parts(const moe_model *m, int l, int e, const uint8_t *base[3], size_t len[3]) {
    const moe_layer *L = &m->layers[l];
    const moe_tensor *t[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    for (int i = 0; i < 3; i++) {
        len[i] =
            t[i]->data ? moe_dtype_row_bytes(t[i]->type, t[i]->ne[0]) * (size_t)t[i]->ne[1] : 0;
        base[i] = t[i]->data ? (const uint8_t *)moe_tensor_expert(t[i], e) : NULL;
    }
}

size_t moe_expert_bytes(const moe_model *m, int l) {
    const uint8_t *base[3];
    size_t len[3];
    expert_parts(m, l, 0, base, len);
    return len[0] + len[1] + len[2];
}

/* Loads (the pages touching it) or drops (the whole pages inside it: its
 * neighbours may be held) one part of an expert. The weights are a read-only
 * file mapping, so dropped pages come back from the file if read again. */
static void part_residency(const uint8_t *base, size_t len, int load) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = (uintptr_t)base, hi = lo + len;
    if (load) {
        const uintptr_t a = lo & ~(page - 1);
        madvise((void *)a, (size_t)(hi - a), MADV_WILLNEED);
        volatile uint8_t sink = 0;
        for (size_t off = 0; off < len; off += page) sink ^= base[off];
        (void)sink;
    } else {
        const uintptr_t a = (lo + page - 1) & ~(page - 1), z = hi & ~(page - 1);
        if (z > a) madvise((void *)a, (size_t)(z - a), MADV_DONTNEED);
    }
}

static void expert_residency(const moe_model *m, int l, int e, int load) {
    const uint8_t *base[3];
    size_t len[3];
    expert_parts(m, l, e, base, len);
    for (int i = 0; i < 3; i++)
        if (base[i]) part_residency(base[i], len[i], load);
}

void moe_expert_load_pages(const moe_model *m, int l, int e) {
    expert_residency(m, l, e, 1);
}

void moe_expert_drop_pages(const moe_model *m, int l, int e) {
    expert_residency(m, l, e, 0);
}

void moe_model_identity(const moe_model *m, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%dx%d/%d/%zu", moe_arch_name(m->hp.arch), m->hp.n_layer, m->hp.n_expert,
             m->hp.n_embd, m->n_bytes);
}
