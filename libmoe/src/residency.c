/* residency.c - which of a mapped model's expert pages are in memory (see
 * moe/model.h: moe_expert_bytes, moe_expert_load_pages, moe_expert_drop_pages). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "moe/dtype.h"
#include "internal.h"
#include "moe/model.h"
#include "moe/ops.h"

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

/* Transparent huge pages cover whole aligned 2 MB ranges of a mapping. */
#define HUGE_BYTES ((size_t)2 << 20)

static size_t page_round(size_t len) {
    const size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (len + pg - 1) & ~(pg - 1);
}

/* A private anonymous mapping of len bytes; from 2 MB on, starting on a
 * 2 MB boundary and in transparent huge pages where the kernel gives them
 * (fewer page faults to fill it, a TLB miss per 2 MB instead of per 4 KB
 * page to stream it). The slack around the aligned range is unmapped
 * again. The bench model's 3 MB experts, each mapped where mmap put it, had
 * ~1/3 of their bytes in huge pages, in arenas (moe__packed_arena) ~0.92:
 * decode at batch 1 ~3% faster (two models in one process, steps
 * alternating), 32 sequences the same within the noise. */
static void *map_copy(size_t len) {
    if (len < HUGE_BYTES) {
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    const size_t want = page_round(len), span = want + HUGE_BYTES;
    char *q = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)q + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1));
    if (a > q) munmap(q, (size_t)(a - q));
    if (q + span > a + want) munmap(a + want, (size_t)(q + span - (a + want)));
#ifdef MADV_HUGEPAGE
    madvise(a, want, MADV_HUGEPAGE);
#endif
    return a;
}

void *moe__packed_alloc(size_t len) {
    return map_copy(len);
}

void moe__packed_free(void *p, size_t len) {
    if (p) munmap(p, len);
}

size_t moe__packed_stride(size_t len) {
    return page_round(len);
}

void *moe__packed_arena(size_t n, size_t len) {
    return n && len ? map_copy(n * page_round(len)) : NULL;
}

/* Packs part t of expert e (MOE_REPACK_ALL / LAZY) from the mapping into a
 * private copy (dst, or one of its own) and publishes it; its file pages then go. A copy that
 * cannot be allocated leaves the expert read as stored. */
static void part_pack(const moe_tensor *t, int e, const uint8_t *base, size_t len, void *dst) {
    if (__atomic_load_n(&t->packed[e], __ATOMIC_ACQUIRE)) return;
    void *p = dst ? dst : moe__packed_alloc(len);
    if (!p) return;
#ifdef MADV_POPULATE_READ /* the file's pages mapped in one call, not a fault per page */
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)base & ~(pg - 1);
    madvise((void *)a, (uintptr_t)base + len - a, MADV_POPULATE_READ);
#endif
    moe_packed_pack(t->type, base, p, t->ne[1], t->ne[0]);
    __atomic_store_n(&t->packed[e], p, __ATOMIC_RELEASE);
    part_residency(base, len, 0);
}

/* Dropped experts' copies wait RETIRE_MS before they are unmapped: a
 * computation that read the pointer just before the drop (an expert
 * worker's request that passed its slice check as the slice changed) still
 * reads valid memory; later ones read the weights as stored. */
#define RETIRE_MS 2000

typedef struct retired_copy {
    void *p;
    size_t len;
    int64_t at_ms;
} retired_copy;

typedef struct retired_list {
    pthread_mutex_t mu;
    retired_copy *v;
    int n, cap;
} retired_list;

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int moe__retired_create(moe_model *m) {
    retired_list *r = calloc(1, sizeof *r);
    if (!r) return MOE_ENOMEM;
    pthread_mutex_init(&r->mu, NULL);
    m->retired = r;
    return 0;
}

void moe__retired_free(moe_model *m) {
    retired_list *r = m->retired;
    if (!r) return;
    for (int i = 0; i < r->n; i++) moe__packed_free(r->v[i].p, r->v[i].len);
    pthread_mutex_destroy(&r->mu);
    free(r->v);
    free(r);
    m->retired = NULL;
}

/* Unmaps the copies retired RETIRE_MS ago or more; with p, retires it (or,
 * with no room on the list, unmaps it now). */
static void retire(const moe_model *m, void *p, size_t len) {
    retired_list *r = m->retired;
    if (!r) {
        moe__packed_free(p, len);
        return;
    }
    const int64_t now = mono_ms();
    pthread_mutex_lock(&r->mu);
    int k = 0;
    for (int i = 0; i < r->n; i++)
        if (now - r->v[i].at_ms >= RETIRE_MS)
            moe__packed_free(r->v[i].p, r->v[i].len);
        else
            r->v[k++] = r->v[i];
    r->n = k;
    if (p && r->n == r->cap) {
        const int nc = r->cap ? 2 * r->cap : 64;
        retired_copy *nv = realloc(r->v, (size_t)nc * sizeof *nv);
        if (nv) r->v = nv, r->cap = nc;
    }
    if (p && r->n < r->cap)
        r->v[r->n++] = (retired_copy){p, len, now};
    else if (p)
        moe__packed_free(p, len);
    pthread_mutex_unlock(&r->mu);
}

/* Unpublishes part t of expert e's packed copy and retires it. */
static void part_unpack(const moe_model *m, const moe_tensor *t, int e, size_t len) {
    void *p = __atomic_exchange_n(&t->packed[e], NULL, __ATOMIC_ACQ_REL);
    if (p) retire(m, p, len);
}

static void expert_residency(const moe_model *m, int l, int e, int load, void *const dst[3]) {
    const uint8_t *base[3];
    size_t len[3];
    expert_parts(m, l, e, base, len);
    const moe_layer *L = &m->layers[l];
    const moe_tensor *t[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    for (int i = 0; i < 3; i++) {
        if (!base[i]) continue;
        if (!t[i]->packed) {
            part_residency(base[i], len[i], load);
        } else if (load) {
            retire(m, NULL, 0); /* copies dropped long enough ago go now */
            part_pack(t[i], e, base[i], len[i], dst ? dst[i] : NULL);
        } else {
            part_unpack(m, t[i], e, len[i]);
            part_residency(base[i], len[i], 0);
        }
    }
}

void moe_expert_load_pages(const moe_model *m, int l, int e) {
    expert_residency(m, l, e, 1, NULL);
}

/* The packed tensors of layer l (gate, up, down; NULL where not packed). */
static void packed_parts(const moe_model *m, int l, const moe_tensor *t[3]) {
    const moe_layer *L = &m->layers[l];
    const moe_tensor *all[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    for (int k = 0; k < 3; k++)
        t[k] = moe_model_layer_is_moe(m, l) && all[k]->data && all[k]->packed ? all[k] : NULL;
}

typedef struct pack_share {
    const moe_model *m;
    int ith, nth;
    char *const *arena; /* (n_layer x 3) a mapping per expert tensor (NULL: none) */
} pack_share;

/* Every nth (layer, expert) pair from the ith: packed as moe_expert_load_pages
 * packs, into the layer's arenas where they were mapped. */
static void *pack_pairs(void *arg) {
    const pack_share *s = arg;
    const moe_model *m = s->m;
    const int X = m->hp.n_expert;
    for (int i = s->ith; i < m->hp.n_layer * X; i += s->nth) {
        const int l = i / X, e = i % X;
        if (!moe_model_layer_is_moe(m, l)) continue;
        const uint8_t *base[3];
        size_t len[3];
        expert_parts(m, l, e, base, len);
        const moe_tensor *t[3];
        packed_parts(m, l, t);
        void *dst[3];
        for (int k = 0; k < 3; k++) {
            char *a = s->arena ? s->arena[3 * l + k] : NULL;
            dst[k] = a ? a + (size_t)e * moe__packed_stride(len[k]) : NULL;
        }
        expert_residency(m, l, e, 1, dst);
        /* a copy of an arena not published (no part in the file) goes */
        for (int k = 0; k < 3; k++)
            if (dst[k] && (!t[k] || __atomic_load_n(&t[k]->packed[e], __ATOMIC_ACQUIRE) != dst[k]))
                moe__packed_free(dst[k], len[k]);
    }
    return NULL;
}

void moe__pack_all_experts(const moe_model *m) {
    enum { MAX_T = 16 };
    const int n_arena = 3 * m->hp.n_layer, X = m->hp.n_expert;
    char **arena = calloc((size_t)n_arena, sizeof *arena); /* none: a mapping per copy */
    for (int l = 0; arena && l < m->hp.n_layer; l++) {
        const moe_tensor *t[3];
        const uint8_t *base[3];
        size_t len[3];
        packed_parts(m, l, t);
        expert_parts(m, l, 0, base, len);
        for (int k = 0; k < 3; k++)
            if (t[k]) arena[3 * l + k] = moe__packed_arena((size_t)X, len[k]);
    }
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    const int nth = nc < 1 ? 1 : nc > MAX_T ? MAX_T : (int)nc;
    pthread_t tid[MAX_T];
    pack_share sh[MAX_T];
    int started = 1;
    for (int t = 0; t < nth; t++) sh[t] = (pack_share){m, t, nth, arena};
    for (int t = 1; t < nth; t++) {
        if (pthread_create(&tid[t], NULL, pack_pairs, &sh[t])) break;
        started++;
    }
    for (int t = started; t < nth; t++) pack_pairs(&sh[t]); /* the ones not started */
    pack_pairs(&sh[0]);
    for (int t = 1; t < started; t++) pthread_join(tid[t], NULL);
    free(arena);
}

void moe_expert_drop_pages(const moe_model *m, int l, int e) {
    expert_residency(m, l, e, 0, NULL);
}

void moe_model_identity(const moe_model *m, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%dx%d/%d/%zu", moe_arch_name(m->hp.arch), m->hp.n_layer, m->hp.n_expert,
             m->hp.n_embd, m->n_bytes);
}
