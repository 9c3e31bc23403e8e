/* fuzz.h - what the fuzz targets share: an invariant check that aborts (so
 * libFuzzer records the input) with the file, line and condition. */
#ifndef MOE_FUZZ_H
#define MOE_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
