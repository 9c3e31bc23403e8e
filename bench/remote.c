/*
 * bench/remote.c - one MoE layer through the remote expert backend (expert
 * workers over gRPC) against the local backend, same rows, same process:
 * per-layer dispatch + combine latency p50/p99 at several row counts, and
 * the bytes on the wire as the remote backend counts them (serialized
 * messages put in and read from gRPC byte buffers; payload_bytes is the
 * activations alone, for comparison). Prints one JSON object per line.
 *
 *   build/bench-remote MODEL.gguf HOST:PORT[,HOST:PORT...] [--reps N] [--bf16] [--threads N]
 * (--threads: the local backend's threads, to compare like with like)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moe/model.h"
#include "mesh/remote.h"
#include "moe/threadpool.h"
#include "svc/clock.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* p50 and p99 of n timings of one work through be */
static int time_layer(moe_expert_backend *be, const moe_expert_work *w, int reps, double *p50,
                      double *p99) {
    double *t = malloc((size_t)reps * sizeof *t);
    moe_err err;
    for (int r = -3; r < reps; r++) { /* 3 warm-up runs */
        double t0 = moe_mono_s() * 1e6;
        if (be->submit(be->ctx, w, &err) < 0 || be->wait(be->ctx, &err) < 0) {
            fprintf(stderr, "bench-remote: %s\n", err.msg);
            free(t);
            return -1;
        }
        if (r >= 0) t[r] = moe_mono_s() * 1e6 - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    *p50 = t[reps / 2];
    *p99 = t[(reps * 99) / 100 < reps ? (reps * 99) / 100 : reps - 1];
    free(t);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: %s MODEL.gguf HOST:PORT[,HOST:PORT...] [--reps N] [--bf16]\n",
                argv[0]);
        return 2;
    }
    int reps = 200, bf16 = 0, threads = 1;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bf16"))
            bf16 = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
    }
    if (reps < 10) reps = 10;
    moe_model *m;
    moe_err err;
    if (moe_model_load(&m, argv[1], &err) < 0) return fprintf(stderr, "%s\n", err.msg), 1;
    char *list = strdup(argv[2]);
    const char *addrs[64];
    int n = 0;
    for (char *tok = strtok(list, ","); tok && n < 64; tok = strtok(NULL, ",")) addrs[n++] = tok;
    moe_remote_params rp = moe_remote_default_params();
    rp.wire_bf16 = bf16;
    moe_expert_backend *remote, *local;
    moe_pool *pool;
    if (threads < 1 || threads > 256) threads = 1;
    moe_pool_create(&pool, threads);
    if (moe_expert_backend_remote_create(&remote, m, addrs, n, &rp, &err) < 0 ||
        moe_expert_backend_local_create(&local, m, pool, 4096, &err) < 0)
        return fprintf(stderr, "%s\n", err.msg), 1;
    const moe_hparams *hp = &m->hp;
    const int E = hp->n_embd, X = hp->n_expert, K = hp->n_expert_used;
    const int layer = hp->n_layer_dense_lead; /* the first MoE layer */
    const int rows_of[] = {1, 8, 64};
    for (int ti = 0; ti < 3; ti++) {
        /* R rows spread over the experts as routing would spread them */
        const int R = rows_of[ti];
        int32_t expert[1024], row_start[1025];
        int ng = 0, row = 0;
        for (int e = 0; e < X && row < R; e++) {
            int cnt = R / X + (e < R % X ? 1 : 0);
            if (R < X) cnt = e < R ? 1 : 0;
            if (!cnt) continue;
            expert[ng] = e, row_start[ng] = row, ng++;
            row += cnt;
        }
        row_start[ng] = row;
        float *x = malloc((size_t)row * E * sizeof *x), *y = malloc((size_t)row * E * sizeof *y);
        uint64_t s = 7;
        for (size_t i = 0; i < (size_t)row * E; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            x[i] = (float)((double)(s >> 40) / 16777216.0 - 0.5);
        }
        moe_expert_work w = {layer, ng, expert, row_start, E, x, y, NULL, 0, 0};
        double r50, r99, l50, l99;
        const moe_remote_stats s0 = moe_remote_get_stats(remote);
        if (time_layer(remote, &w, reps, &r50, &r99) < 0 ||
            time_layer(local, &w, reps, &l50, &l99) < 0)
            return 1;
        /* measured: the serialized bytes the remote backend put in (and read
         * from) gRPC byte buffers over the reps + 3 warm-up runs, per run */
        const moe_remote_stats s1 = moe_remote_get_stats(remote);
        const uint64_t runs = (uint64_t)reps + 3;
        const uint64_t sent = (s1.bytes_sent - s0.bytes_sent) / runs;
        const uint64_t recv = (s1.bytes_received - s0.bytes_received) / runs;
        printf("{\"bench\":\"moe_layer\",\"rows\":%d,\"workers\":%d,\"local_threads\":%d,\"wire\":"
               "\"%s\","
               "\"remote_p50_us\":%.1f,\"remote_p99_us\":%.1f,\"local_p50_us\":%.1f,"
               "\"local_p99_us\":%.1f,\"added_p50_us\":%.1f,\"wire_bytes\":%llu,"
               "\"bytes_sent\":%llu,\"bytes_received\":%llu,\"messages\":%.2f}\n",
               row, n, threads, bf16 ? "bf16" : "f32", r50, r99, l50, l99, r50 - l50,
               (unsigned long long)(sent + recv), (unsigned long long)sent,
               (unsigned long long)recv, (double)(s1.messages - s0.messages) / (double)runs);
        free(x), free(y);
    }
    /* bytes on the wire per decoded token, measured: one token's K rows
     * (experts 0, X/K, 2X/K, ...) through every MoE layer, counted by the
     * remote backend as serialized messages in gRPC byte buffers */
    const int moe_layers = hp->n_layer - hp->n_layer_dense_lead;
    {
        int32_t expert[64], row_start[65];
        const int k = K < 64 ? K : 64;
        for (int j = 0; j < k; j++) expert[j] = j * (X / k), row_start[j] = j;
        row_start[k] = k;
        float *x = calloc((size_t)k * E, sizeof *x), *y = malloc((size_t)k * E * sizeof *y);
        for (size_t i = 0; i < (size_t)k * E; i++) x[i] = (float)(i % 7) * 0.01f;
        const moe_remote_stats s0 = moe_remote_get_stats(remote);
        for (int l = hp->n_layer_dense_lead; l < hp->n_layer; l++) {
            moe_expert_work w = {l, k, expert, row_start, E, x, y, NULL, 0, 0};
            if (remote->submit(remote->ctx, &w, &err) < 0 || remote->wait(remote->ctx, &err) < 0)
                return fprintf(stderr, "bench-remote: %s\n", err.msg), 1;
        }
        const moe_remote_stats s1 = moe_remote_get_stats(remote);
        const uint64_t sent = s1.bytes_sent - s0.bytes_sent,
                       recv = s1.bytes_received - s0.bytes_received;
        printf("{\"bench\":\"wire_per_token\",\"bytes\":%llu,\"bytes_sent\":%llu,\"bytes_"
               "received\":%llu,"
               "\"messages\":%llu,\"payload_bytes\":%zu,\"moe_layers\":%d,\"k\":%d,\"hidden\":%d,"
               "\"wire\":\"%s\"}\n",
               (unsigned long long)(sent + recv), (unsigned long long)sent,
               (unsigned long long)recv, (unsigned long long)(s1.messages - s0.messages),
               (size_t)moe_layers * k * E * (bf16 ? 2 : 4) * 2, moe_layers, k, E,
               bf16 ? "bf16" : "f32");
        free(x), free(y);
    }
    moe_expert_backend_destroy(remote);
    moe_expert_backend_destroy(local);
    moe_pool_destroy(pool);
    moe_model_free(m);
    free(list);
    return 0;
}
