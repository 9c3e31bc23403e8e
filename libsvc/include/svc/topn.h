/* topn.h - the indices of the k largest positive values (for bounded "top-N"
 * metric series: the busiest experts by rank). Ties keep the lower index. */
#ifndef MOE_TOPN_H
#define MOE_TOPN_H

#include <stddef.h>

/* Writes up to k indices into idx (largest first); returns how many. */
static inline int moe_top_n(const double *v, size_t n, size_t *idx, int k) {
    int nt = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(v[i] > 0)) continue;
        int j;
        if (nt < k)
            j = nt++;
        else if (v[i] > v[idx[k - 1]])
            j = k - 1;
        else
            continue;
        while (j > 0 && v[idx[j - 1]] < v[i]) idx[j] = idx[j - 1], j--;
        idx[j] = i;
    }
    return nt;
}

#endif
