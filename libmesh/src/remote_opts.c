/* remote_opts.c - the flags that put a program's experts on workers, and the
 * backend they describe (see mesh/remote.h, "Options"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/remote.h"
#include "mesh/rlink.h"
#include "mesh/schema.h"

moe_remote_opts moe_remote_opts_default(void) {
    return (moe_remote_opts){.wire = "f32",
                             .overlap = "auto",
                             .deadline_ms = moe_remote_default_params().deadline_ms,
                             .suspect_ms = moe_remote_default_params().suspect_ms,
                             .tls = moe_tls_opts_default()};
}

int moe_remote_check_wire(const void *dst, char *why, size_t cap) {
    const char *w = *(const char *const *)dst;
    if (w && (!strcmp(w, "f32") || !strcmp(w, "bf16"))) return 0;
    snprintf(why, cap, "must be f32 or bf16");
    return -1;
}

int moe_remote_check_overlap(const void *dst, char *why, size_t cap) {
    const char *v = *(const char *const *)dst;
    if (v && (!strcmp(v, "auto") || !strcmp(v, "on") || !strcmp(v, "off"))) return 0;
    snprintf(why, cap, "must be auto, on or off");
    return -1;
}

int moe_remote_opts_split(const moe_remote_opts *o) {
    if (!o->overlap || !strcmp(o->overlap, "auto")) return MOE_SPLIT_AUTO;
    return strcmp(o->overlap, "on") ? MOE_SPLIT_OFF : MOE_SPLIT_ON;
}

void moe_remote_opts_flags(moe_remote_opts *o, moe_flag t[MOE_REMOTE_N_FLAGS + 1]) {
    const moe_flag rows[MOE_REMOTE_N_FLAGS + 1] = {
        {"--workers", "MOE_WORKERS", MOE_FLAG_STRING, &o->workers, "[ID@]H:P,...",
         .help = "run the routed experts on these expert-workers (each\n"
                 "worker's Info says which it holds; with TLS, ID is the name\n"
                 "its certificate must carry, else the host)"},
        {"--redis", "MOE_REDIS", MOE_FLAG_STRING, &o->redis, "URL",
         .help = "run them where router-svc's active placement says\n"
                 "(redis://host:port), following its changes and reporting\n"
                 "per-expert load; a failed worker's rows go to a replica"},
        MOE_RLINK_PASSWORD_FLAG(&o->redis_password_file),
        {"--prefix", "MOE_PREFIX", MOE_FLAG_STRING, &o->prefix, "P",
         .help = "the deployment's Redis key prefix", .def = MOE_SCHEMA_PREFIX_DEFAULT},
        {"--wire", "MOE_WIRE", MOE_FLAG_STRING, &o->wire, "f32|bf16",
         .help = "activations on the wire; f32 is exact", .check = moe_remote_check_wire},
        {"--deadline-ms", "MOE_DEADLINE_MS", MOE_FLAG_MS, &o->deadline_ms, "DUR",
         .help = "per-layer deadline for the workers", .min = 1, .max = INT32_MAX},
        {"--suspect-ms", "MOE_SUSPECT_MS", MOE_FLAG_MS, &o->suspect_ms, "DUR",
         .help = "a worker silent this long and 8x its usual answer time has its\n"
                 "rows sent to another live replica (0: wait for the deadline)",
         .min = 0, .max = INT32_MAX},
        {"--overlap", "MOE_OVERLAP", MOE_FLAG_STRING, &o->overlap, "auto|on|off",
         .help = "a batch of 6+ tokens as two halves on two sets of streams,\n"
                 "one half's attention running while the other's experts are\n"
                 "out (the same logits either way); auto: per batch size,\n"
                 "whichever has been faster (the slower tried now and then)",
         .check = moe_remote_check_overlap},
        {.include = o->tls_flags},
        {0}};
    moe_tls_opts_flags(&o->tls, o->tls_flags);
    memcpy(t, rows, sizeof rows);
}

int moe_remote_opts_open(moe_expert_backend **out, const moe_model *m, const moe_remote_opts *o,
                         const moe_remote_params *base, moe_err *err) {
    *out = NULL;
    if (!o->workers && !o->redis) return 0;
    if (o->workers && o->redis)
        return moe_err_set(err, MOE_EINVAL,
                           "--workers and --redis (MOE_WORKERS, MOE_REDIS) exclude each other");
    char why[64];
    if (moe_remote_check_wire(&o->wire, why, sizeof why) < 0)
        return moe_err_set(err, MOE_EINVAL, "--wire %s: %s", o->wire ? o->wire : "(none)", why);
    moe_remote_params rp = base ? *base : moe_remote_default_params();
    rp.wire_bf16 = !strcmp(o->wire, "bf16");
    rp.deadline_ms = o->deadline_ms;
    rp.suspect_ms = o->suspect_ms;
    rp.tls = &o->tls;
    rp.second = rp.second && moe_remote_opts_split(o) != MOE_SPLIT_OFF;
    if (o->redis) {
        if (o->redis_password_file) {
            const int rc = moe_rlink_password_file(o->redis_password_file, err);
            if (rc < 0) return rc;
        }
        return moe_expert_backend_remote_redis_create(out, m, o->redis, o->prefix, &rp, err);
    }
    /* "a,b,c": one allocation holds the pointers and the copied text */
    int k = 1;
    for (const char *p = o->workers; *p; p++) k += *p == ',';
    const char **list = malloc((size_t)k * sizeof *list + strlen(o->workers) + 1);
    if (!list) return moe_err_set(err, MOE_ENOMEM, "out of memory");
    char *copy = (char *)(list + k);
    strcpy(copy, o->workers);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        list[n++] = t;
    int rc = n == 0 ? moe_err_set(err, MOE_EINVAL, "--workers: give host:port[,host:port...]")
                    : moe_expert_backend_remote_create(out, m, list, n, &rp, err);
    free(list);
    return rc;
}
