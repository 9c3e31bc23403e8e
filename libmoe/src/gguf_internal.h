/*
 * gguf_internal.h - what the two halves of the GGUF reader share (not
 * installed, not public): the moe_gguf handle, which gguf.c fills while it
 * parses a file and gguf_lookup.c reads, and the sorted name index that
 * gguf.c builds (finding duplicate keys and tensor names with it) and both
 * files search.
 */
#ifndef MOE_GGUF_INTERNAL_H
#define MOE_GGUF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "moe/gguf.h"

/* ==== Sorted name index ================================================ */

/* Keys and tensor names are looked up in arrays sorted by name (bytes, then
 * length, then file order): O(log n) finds, duplicates adjacent after the
 * sort, and no input can make building it slower than O(n log n) (a hash
 * table fed colliding names could). */
typedef struct moe__gguf_name {
    moe_gguf_str name;
    int64_t idx; /* kv or tensor number */
} moe__gguf_name;

/* Sorts ix[0..n). Returns the smallest idx whose name an earlier item already
 * has (and that item's idx in *first), or -1 if all names differ. */
int64_t moe__gguf_names_sort(moe__gguf_name *ix, int64_t n, int64_t *first);

/* The idx of the item named s[0..len) in sorted ix[0..n), or -1. */
int64_t moe__gguf_names_find(const moe__gguf_name *ix, int64_t n, const void *s, uint64_t len);

/* ==== The handle ======================================================== */

/* A moe_gguf owns everything it points to, except the caller's buffer for
 * moe_gguf_open_buffer; nothing in the reader is global. */
struct moe_gguf {
    const uint8_t *base; /* file bytes: our mapping or the caller's buffer */
    size_t size;         /* bytes at base */
    void *map;           /* our mmap of size bytes (NULL: borrowed buffer) */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_start; /* file offset of the data section */
    int64_t n_kv;
    moe_gguf_kv *kv;        /* owned, n_kv */
    uint64_t *kv_str_first; /* owned, n_kv: STRING arrays' first str_off entry */
    uint64_t *str_off;      /* owned: offset of each string array element's
                               length prefix, all arrays back to back */
    uint64_t n_str_off, cap_str_off;
    int64_t n_tensors;
    moe_gguf_tensor *tensors;     /* owned, n_tensors */
    moe__gguf_name *kv_names;     /* owned, n_kv, sorted */
    moe__gguf_name *tensor_names; /* owned, n_tensors, sorted */
    /* moe_gguf_open_split: the other parts (1..n_parts-1, owned; NULL and 1
     * for a single file) and each part's size; tensors then lists every
     * part's tensors (the other parts' point into their mappings) */
    moe_gguf **parts;
    int n_parts;
};

#endif
