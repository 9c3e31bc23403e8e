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
        len[i] = t[i]->data ? moe_dtype_row_bytes(t[i]->type, t[i]->ne[0]) * (size_t)t[i]->ne[1] : 0;
        base[i] = t[i]->data ? (const uint8_t *)t[i]->data + len[i] * (size_t)e : NULL;
    }
}

size_t moe_expert_bytes(const moe_model *m, int l) {
    const uint8_t *base[3];
    size_t len[3];
    expert_parts(m, l, 0, base, len);
    return len[0] + len[1] + len[2];
}

void moe_expert_load_pages(const moe_model *m, int l, int e) {
    const uint8_t *base[3];
    size_t len[3];
    expert_parts(m, l, e, base, len);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 3; i++) {
        if (!base[i]) continue;
        uintptr_t a = (uintptr_t)base[i] & ~(uintptr_t)(page - 1);
        madvise((void *)a, (size_t)((uintptr_t)base[i] + len[i] - a), MADV_WILLNEED);
        volatile uint8_t sink = 0;
        for (size_t off = 0; off < len[i]; off += page) sink ^= base[i][off];
        (void)sink;
    }
}

void moe_expert_drop_pages(const moe_model *m, int l, int e) {
    const uint8_t *base[3];
    size_t len[3];
    expert_parts(m, l, e, base, len);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 3; i++) {
        if (!base[i]) continue;
        /* whole pages inside the expert only: neighbours may be held. The
         * weights are a read-only file mapping, so dropped pages come back
         * from the file if they are read again. */
        uintptr_t a = ((uintptr_t)base[i] + page - 1) & ~(uintptr_t)(page - 1);
        uintptr_t z = ((uintptr_t)base[i] + len[i]) & ~(uintptr_t)(page - 1);
        if (z > a) madvise((void *)a, (size_t)(z - a), MADV_DONTNEED);
    }
}

void moe_model_identity(const moe_model *m, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%dx%d/%d/%zu", moe_arch_name(m->hp.arch), m->hp.n_layer,
             m->hp.n_expert, m->hp.n_embd, m->n_bytes);
}
