/* fuzz_nfc.c - libFuzzer target: any bytes through NFC normalisation, never
 * a crash, and NFC's own properties: normalising twice changes nothing, and
 * the quick check never says "already NFC" for text NFC would change. */
#include <stdlib.h>
#include <string.h>

#include "text/unicode_norm.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n) {
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    if (moe__utf8_nfc((const char *)data, n, &a, &al) < 0) return 0; /* out of memory only */
    if (moe__utf8_is_nfc_quick((const char *)data, n) && (al != n || memcmp(a, data, n))) abort();
    if (moe__utf8_nfc(a, al, &b, &bl) < 0) {
        free(a);
        return 0;
    }
    if (bl != al || memcmp(a, b, al)) abort(); /* idempotent */
    free(a), free(b);
    return 0;
}
