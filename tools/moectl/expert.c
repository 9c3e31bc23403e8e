/* expert.c - moectl expert: one MoE layer's expert FFNs on given rows,
 * locally or on expert workers (the C client of moe.v1). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe/model.h"
#include "mesh/remote.h"
#include "moe/threadpool.h"
#include "moectl.h"

static const char about[] =
    "Runs rows through experts of one MoE layer and prints {\"outputs\": [[...], ...]}\n"
    "in row order: y = down(silu(gate x) * up x). FILE is text: a first line\n"
    "'G e1 n1 ... eG nG' (G groups: expert e takes the next n rows), then one row\n"
    "of hidden-size numbers per line. With --workers the rows go over gRPC.\n";

int cmd_expert(const moectl_cmd *cmd, int argc, char **argv) {
    const char *path = NULL, *input = NULL;
    moe_remote_opts ro = moe_remote_opts_default();
    int layer = -1, threads = 1, exact = 0;
    const moe_flag flags[] = {
        {"--layer", NULL, MOE_FLAG_INT, &layer, "L", .help = "the MoE layer to run",
         .def = "none: required", .min = 0, .max = INT32_MAX},
        {"--input", NULL, MOE_FLAG_STRING, &input, "FILE", .help = "the groups and rows (above)"},
        {"--exact", "MOE_EXACT", MOE_FLAG_BOOL, &exact, NULL,
         .help = "llama.cpp's exact Q8_0, Q5_K, Q6_K and IQ4_XS arithmetic\n"
                 "(default: the fast int8 tiles for groups of 3+ rows)"},
        {"--workers", "MOE_WORKERS", MOE_FLAG_STRING, &ro.workers, "H:P,...",
         .help = "run the experts on these expert workers"},
        {"--wire", "MOE_WIRE", MOE_FLAG_STRING, &ro.wire, "f32|bf16",
         .help = "activations on the wire", .check = moe_remote_check_wire},
        {"--threads", "MOE_THREADS", MOE_FLAG_INT, &threads, "N", .help = "threads", .min = 1,
         .max = 256},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, about, flags);
    const int status = parse_args(&fs, &path, argc, argv);
    if (status >= 0) return status;
    if (!input || layer < 0) return usage_error(&fs);
    moe_model *m;
    if (load_model(&m, path, MOE_REPACK_ALL)) return 1;
    moe_err err;
    const int E = m->hp.n_embd;
    int rc = 0, ng = 0, rows = 0;
    int32_t *expert = NULL, *row_start = NULL;
    float *x = NULL, *y = NULL;
    moe_pool *pool = NULL;
    moe_expert_backend *be = NULL;
    FILE *f = fopen(input, "r");
    if (!f) {
        rc = die("%s: %s", input, strerror(errno));
        goto done;
    }
    if (layer >= m->hp.n_layer || !moe_model_layer_is_moe(m, layer)) {
        rc = die("layer %d is not a MoE layer of this model", layer);
        goto done;
    }
    if (fscanf(f, "%d", &ng) != 1 || ng < 1 || ng > m->hp.n_expert) {
        rc = die("%s: first line must start with a group count in [1, %d]", input, m->hp.n_expert);
        goto done;
    }
    expert = calloc((size_t)ng, sizeof *expert);
    row_start = calloc((size_t)ng + 1, sizeof *row_start);
    for (int g = 0; g < ng; g++) {
        int e, n;
        if (fscanf(f, "%d %d", &e, &n) != 2 || e < 0 || e >= m->hp.n_expert || n < 1 || n > 4096) {
            rc = die("%s: group %d needs an expert in [0, %d) and a row count in [1, 4096]", input,
                     g, m->hp.n_expert);
            goto done;
        }
        expert[g] = e;
        row_start[g] = rows;
        rows += n;
    }
    row_start[ng] = rows;
    x = malloc((size_t)rows * E * sizeof *x);
    y = malloc((size_t)rows * E * sizeof *y);
    for (size_t i = 0; i < (size_t)rows * E; i++)
        if (fscanf(f, "%f", &x[i]) != 1) {
            rc =
                die("%s: expected %d rows of %d numbers, ran out at number %zu", input, rows, E, i);
            goto done;
        }
    if (moe_pool_create(&pool, threads) < 0) {
        rc = die("cannot start threads");
        goto done;
    }
    if (ro.workers) {
        moe_remote_params rp = moe_remote_default_params();
        rp.max_rows = rows;
        rp.allow_partial = 1; /* only the experts in FILE need a worker */
        if (moe_remote_opts_open(&be, m, &ro, &rp, &err) < 0) {
            rc = die("%s", err.msg);
            goto done;
        }
    } else if (moe_expert_backend_local_create(&be, m, pool, rows, &err) < 0) {
        rc = die("%s", err.msg);
        goto done;
    }
    moe_expert_work w = {layer, ng, expert, row_start, E, x, y, NULL, exact, 0};
    if (be->submit(be->ctx, &w, &err) < 0 || be->wait(be->ctx, &err) < 0) {
        rc = die("%s", err.msg);
        goto done;
    }
    printf("{\"outputs\": [");
    for (int r = 0; r < rows; r++) {
        printf("%s[", r ? ", " : "");
        for (int j = 0; j < E; j++) {
            if (j) fputs(", ", stdout);
            json_float(stdout, y[(size_t)r * E + j]);
        }
        printf("]");
    }
    printf("]}\n");
done:
    if (f) fclose(f);
    moe_expert_backend_destroy(be);
    moe_pool_destroy(pool);
    free(expert), free(row_start), free(x), free(y);
    moe_model_free(m);
    return rc;
}
