/* detok.c - token ids to text, whole or streamed (see moe/vocab.h). */
#include <stdlib.h>
#include <string.h>

#include "moe/vocab.h"

long moe_detokenize(const moe_vocab *v, const int32_t *ids, int n, int flags, char *out,
                    size_t cap) {
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        size_t tl;
        if (!moe_vocab_text(v, ids[i], &tl)) return MOE_ERANGE;
        const int ty = moe_vocab_token_type(v, ids[i]);
        if ((flags & MOE_DETOK_SKIP_SPECIAL) && (ty == 2 || ty == 3)) continue;
        /* a token's bytes are never longer than its stored text */
        char small[256], *tmp = small;
        const int direct = len <= cap && cap - len >= tl;
        if (!direct && tl > sizeof small && !(tmp = malloc(tl))) return MOE_ENOMEM;
        char *dst = direct ? out + len : tmp;
        int l = moe_vocab_token_bytes(v, ids[i], dst, tl);
        if (l < 0) l = 0;
        int skip = 0;
        if (i == 0 && (flags & MOE_DETOK_STRIP_SPACE) && moe_vocab_add_space_prefix(v) && l > 0 &&
            dst[0] == ' ')
            skip = 1;
        if (direct) {
            if (skip) memmove(dst, dst + 1, (size_t)l - 1);
        } else if (len < cap) {
            const size_t m = (size_t)(l - skip) < cap - len ? (size_t)(l - skip) : cap - len;
            memcpy(out + len, tmp + skip, m);
        }
        if (tmp != small) free(tmp);
        len += (size_t)(l - skip);
    }
    return (long)len;
}

void moe_detok_stream_init(moe_detok_stream *s, const moe_vocab *v, int flags) {
    memset(s, 0, sizeof *s);
    s->v = v;
    s->flags = flags;
}

int moe_detok_stream_push(moe_detok_stream *s, int32_t id, char *out, size_t cap) {
    size_t tl;
    if (!moe_vocab_text(s->v, id, &tl)) return MOE_ERANGE;
    if (cap < (size_t)s->n_pend + tl) return MOE_ENOSPC;
    const int flags = s->n_tokens ? s->flags & ~MOE_DETOK_STRIP_SPACE : s->flags;
    memcpy(out, s->pend, (size_t)s->n_pend);
    const long l = moe_detokenize(s->v, &id, 1, flags, out + s->n_pend, cap - (size_t)s->n_pend);
    if (l < 0) return (int)l;
    const size_t total = (size_t)s->n_pend + (size_t)l;
    size_t done = moe_utf8_complete(out, total);
    if (total - done > sizeof s->pend) done = total; /* not a character: let it out */
    s->n_pend = (int)(total - done);
    memcpy(s->pend, out + done, (size_t)s->n_pend);
    s->n_tokens++;
    return (int)done;
}

int moe_detok_stream_flush(moe_detok_stream *s, char *out, size_t cap) {
    if (cap < (size_t)s->n_pend) return MOE_ENOSPC;
    const int n = s->n_pend;
    memcpy(out, s->pend, (size_t)n);
    s->n_pend = 0;
    return n;
}
