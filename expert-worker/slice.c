/* slice.c - parsing --experts (see slice.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "slice.h"

/* Parses "a-b,c" at *p into mark[0..n); stops at end, ';' or 'L'. */
static int parse_ranges(const char **pp, uint8_t *mark, int n, const char *spec, moe_err *err) {
    const char *p = *pp;
    int any = 0;
    while (*p && *p != ';' && *p != 'L') {
        if (*p == ',') {
            p++;
            continue;
        }
        if (!isdigit((unsigned char)*p))
            return moe_err_set(err, MOE_EINVAL, "--experts '%s': expected an expert number at '%s'",
                               spec, p);
        char *end;
        long a = strtol(p, &end, 10), b = a;
        p = end;
        if (*p == '-') {
            p++;
            if (!isdigit((unsigned char)*p))
                return moe_err_set(err, MOE_EINVAL, "--experts '%s': bad range end at '%s'", spec, p);
            b = strtol(p, &end, 10);
            p = end;
        }
        if (a > b || b >= n)
            return moe_err_set(err, MOE_EINVAL, "--experts '%s': experts %ld-%ld out of range [0, %d)",
                               spec, a, b, n);
        for (long e = a; e <= b; e++) mark[e] = 1;
        any = 1;
    }
    if (!any) return moe_err_set(err, MOE_EINVAL, "--experts '%s': empty expert list", spec);
    *pp = p;
    return 0;
}

int ew_slice_parse(ew_slice *s, const char *spec, int n_layer, int n_expert,
                   const uint8_t *moe_layer_ok, moe_err *err) {
    s->n_layer = n_layer;
    s->n_expert = n_expert;
    s->held = calloc((size_t)n_layer * (size_t)n_expert, 1);
    if (!s->held) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    uint8_t *mark = calloc((size_t)n_expert, 1);
    if (!mark) {
        ew_slice_free(s);
        return moe_err_set(err, MOE_ENOMEM, "out of memory");
    }
    int rc = 0;
    const char *p = spec;
    if (!strcmp(spec, "all")) {
        for (int l = 0; l < n_layer; l++)
            if (moe_layer_ok[l]) memset(s->held + (size_t)l * n_expert, 1, (size_t)n_expert);
    } else if (*p != 'L') {
        if ((rc = parse_ranges(&p, mark, n_expert, spec, err)) < 0) goto done;
        if (*p) {
            rc = moe_err_set(err, MOE_EINVAL, "--experts '%s': unexpected '%s'", spec, p);
            goto done;
        }
        for (int l = 0; l < n_layer; l++)
            if (moe_layer_ok[l]) memcpy(s->held + (size_t)l * n_expert, mark, (size_t)n_expert);
    } else {
        while (*p) {
            if (*p == ';' || *p == ',') {
                p++;
                continue;
            }
            if (*p != 'L' || !isdigit((unsigned char)p[1])) {
                rc = moe_err_set(err, MOE_EINVAL, "--experts '%s': expected 'L<layer>:' at '%s'", spec, p);
                goto done;
            }
            char *end;
            long l = strtol(p + 1, &end, 10);
            if (*end != ':' || l < 0 || l >= n_layer || !moe_layer_ok[l]) {
                rc = moe_err_set(err, MOE_EINVAL,
                                 "--experts '%s': layer at '%s' is not a MoE layer of this model "
                                 "(0-%d)", spec, p, n_layer - 1);
                goto done;
            }
            p = end + 1;
            memset(mark, 0, (size_t)n_expert);
            if ((rc = parse_ranges(&p, mark, n_expert, spec, err)) < 0) goto done;
            for (int e = 0; e < n_expert; e++) s->held[(size_t)l * n_expert + e] |= mark[e];
        }
    }
    if (ew_slice_count(s) == 0)
        rc = moe_err_set(err, MOE_EINVAL, "--experts '%s' selects no expert", spec);
done:
    free(mark);
    if (rc < 0) ew_slice_free(s);
    return rc;
}

void ew_slice_free(ew_slice *s) {
    free(s->held);
    s->held = NULL;
}

int ew_slice_has(const ew_slice *s, int layer, int expert) {
    return layer >= 0 && layer < s->n_layer && expert >= 0 && expert < s->n_expert &&
           s->held[(size_t)layer * s->n_expert + expert];
}

int ew_slice_count(const ew_slice *s) {
    int n = 0;
    for (size_t i = 0; i < (size_t)s->n_layer * (size_t)s->n_expert; i++) n += s->held[i];
    return n;
}
