/*
 * internal.h - helpers shared inside libmoe (not installed, not public).
 */
#ifndef MOE_INTERNAL_H
#define MOE_INTERNAL_H

#include <stdint.h>
#include <stdlib.h>

#include "moe/model.h"
#include "moe/ops.h"

/* One matrix product of a batch of jobs: Y (nb rows, stride ldy) = X . W^T,
 * W: m rows of k elements of type wt; X already in wt's dot type. */
typedef struct moe__mm_job {
    moe_dtype wt;
    const void *W;
    int64_t m, k;
    const void *X;
    int64_t nb;
    float *Y;
    int64_t ldy;
    uint64_t *ns;     /* optional: each thread adds the nanoseconds it spent on this job */
    int64_t q8p_rows; /* W is packed (moe_packed_pack's layout for its type): its first
                       * q8p_rows rows are tiles */
    int batched;      /* a batch's arithmetic whatever nb (moe_expert_work.batched) */
} moe__mm_job;

/* The job Y (nb rows, stride ldy) = X . W^T for a 2-D weight t: from its
 * packed copy where the model made one (moe_tensor.packed), else as stored. */
static inline moe__mm_job moe__weight_job(const moe_tensor *t, const void *X, int64_t nb, float *Y,
                                          int64_t ldy) {
    const void *pk = t->packed ? t->packed[0] : NULL;
    return (moe__mm_job){t->type,  pk ? pk : t->data,
                         t->ne[1], t->ne[0],
                         X,        nb,
                         Y,        ldy,
                         NULL,     pk ? t->ne[1] / MOE_Q8P_ROWS * MOE_Q8P_ROWS : 0,
                         0};
}

/* Runs all jobs in one pool run: each large job's rows are split over every
 * thread; small ones go whole to one thread. */
void moe__matmul_jobs(const moe_cpu_kernels *k, moe_pool *pool, const moe__mm_job *jobs,
                      int n_jobs);

/* Bytes of one row of k activations in the dot type of weight type wt. */
static inline size_t moe__act_row_bytes(moe_dtype wt, int64_t k) {
    return moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
}

/* Below this many elements a row op runs on the caller alone (a pool
 * hand-off costs about a microsecond): the rows of dim elements from
 * which moe_pool_for splits them. */
#define MOE_ROWS_PAR_MIN_ELEMS 16384
static inline int moe__rows_min_par(int64_t dim) {
    const int64_t r = MOE_ROWS_PAR_MIN_ELEMS / (dim > 0 ? dim : 1);
    return r < 2 ? 2 : (int)r;
}

/* moe_op_quantize of n rows of k over the pool's threads (the same bytes). */
void moe__pool_quantize(moe_pool *pool, const moe_cpu_kernels *k, moe_dtype wt, const float *x,
                        void *dst, int n, int64_t dim);

/* Allocates zeroed memory aligned to 64 bytes; free with free(). NULL on failure. */
void *moe__alloc(size_t n);

/* residency.c: the memory of a packed expert matrix (moe_tensor.packed) of
 * len bytes, from 2 MB on 2 MB-aligned in transparent huge pages; NULL on
 * failure. */
void *moe__packed_alloc(size_t len);
void moe__packed_free(void *p, size_t len);
/* One mapping for n packed copies of len bytes each (MOE_REPACK_ALL: one per
 * expert tensor of a layer), copy i at i x moe__packed_stride(len); each is
 * freed on its own with moe__packed_free(copy, len). NULL on failure. */
void *moe__packed_arena(size_t n, size_t len);
size_t moe__packed_stride(size_t len);
/* MOE_REPACK_ALL: every expert packed at load, on up to 16 threads (reading
 * the file's pages and writing the copies is bound by page faults and
 * memory, ~0.3 GB/s a thread on the 2-vCPU VM), each expert tensor of a
 * layer into one arena. */
void moe__pack_all_experts(const moe_model *m);
/* The list of dropped experts' packed copies (moe_model.retired): created
 * at load where the model packs, freed (with every copy on it) with it. */
int moe__retired_create(moe_model *m);
void moe__retired_free(moe_model *m);

/* Frees each of the n pointers in ps (NULL ones included, as free() takes them). */
static inline void moe__free_each(void *const *ps, size_t n) {
    for (size_t i = 0; i < n; i++) free(ps[i]);
}

/* MOE_FREE_ALL(a, b, ...): free(a); free(b); ... in the order given (each
 * argument evaluated once): a destroy function's list of owned buffers. */
#define MOE_FREE_ALL(...)                                                                          \
    moe__free_each((void *const[]){__VA_ARGS__},                                                   \
                   sizeof((void *const[]){__VA_ARGS__}) / sizeof(void *))

#endif
