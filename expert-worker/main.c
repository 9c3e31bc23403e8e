/*
 * expert-worker - a stateless gRPC server hosting a slice of a MoE model's
 * (layer, expert) FFNs (moe.v1.ExpertService; grpc.health.v1.Health).
 * Every flag has an environment twin, so a container needs no config file.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/model.h"
#include "server.h"
#include "slice.h"

static const char usage[] =
    "usage: expert-worker --model MODEL.gguf [options]\n"
    "Serves moe.v1.ExpertService (Forward, Info) and grpc.health.v1.Health.\n"
    "  --model PATH      GGUF model (MOE_MODEL)\n"
    "  --listen ADDR     host:port to listen on; port 0 picks a free one and is\n"
    "                    printed (MOE_LISTEN, default 127.0.0.1:50051)\n"
    "  --experts SPEC    which experts to host: all | 0-3,6 (every layer) |\n"
    "                    L1:0-7;L2:0-3 (MOE_EXPERTS, default all)\n"
    "  --threads N       compute threads (MOE_THREADS, default 1)\n"
    "  --max-rows N      rows one request may carry (MOE_MAX_ROWS, default 4096)\n"
    "Only the hosted experts' weights are read from the file (it is mapped, so\n"
    "resident memory grows with the slice). SIGTERM/SIGINT: finish the batch in\n"
    "hand, end the streams, exit 0.\n";

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int parse_int(const char *name, const char *v, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "expert-worker: error: %s '%s' is not an integer in [%d, %d]\n", name, v,
                lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int main(int argc, char **argv) {
    const char *model = getenv("MOE_MODEL"), *listen = getenv("MOE_LISTEN"),
               *experts = getenv("MOE_EXPERTS"), *threads_s = getenv("MOE_THREADS"),
               *rows_s = getenv("MOE_MAX_ROWS");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return fputs(usage, stdout), 0;
        const char **dst = !strcmp(a, "--model")     ? &model
                           : !strcmp(a, "--listen")  ? &listen
                           : !strcmp(a, "--experts") ? &experts
                           : !strcmp(a, "--threads") ? &threads_s
                           : !strcmp(a, "--max-rows") ? &rows_s
                                                      : NULL;
        if (!dst) {
            fprintf(stderr, "expert-worker: error: unknown option '%s'\n\n%s", a, usage);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "expert-worker: error: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!model || !*model) {
        fprintf(stderr, "expert-worker: error: no model (--model or MOE_MODEL)\n\n%s", usage);
        return 2;
    }
    int n_threads = 1, max_rows = 4096;
    if (threads_s && parse_int("--threads", threads_s, 1, 256, &n_threads) < 0) return 2;
    if (rows_s && parse_int("--max-rows", rows_s, 1, 1 << 20, &max_rows) < 0) return 2;

    moe_model *m;
    moe_err err;
    if (moe_model_load(&m, model, &err) < 0) {
        fprintf(stderr, "expert-worker: error: %s\n", err.msg);
        return 1;
    }
    uint8_t *moe_ok = calloc((size_t)m->hp.n_layer, 1);
    for (int l = 0; l < m->hp.n_layer; l++) moe_ok[l] = (uint8_t)moe_model_layer_is_moe(m, l);
    ew_slice slice;
    if (ew_slice_parse(&slice, experts && *experts ? experts : "all", m->hp.n_layer,
                       m->hp.n_expert, moe_ok, &err) < 0) {
        fprintf(stderr, "expert-worker: error: %s\n", err.msg);
        free(moe_ok);
        moe_model_free(m);
        return 2;
    }
    free(moe_ok);
    fprintf(stderr, "expert-worker: %s (%s), hosting %d of %d (layer, expert) pairs, %d threads\n",
            model, moe_arch_name(m->hp.arch), ew_slice_count(&slice),
            m->hp.n_expert * (m->hp.n_layer - m->hp.n_layer_dense_lead), n_threads);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *name = strrchr(model, '/');
    ew_config cfg = {.model = m, .model_name = name ? name + 1 : model, .slice = &slice,
                     .listen = listen && *listen ? listen : "127.0.0.1:50051",
                     .n_threads = n_threads, .max_rows = max_rows, .stop = &g_stop};
    int rc = ew_server_run(&cfg, &err);
    if (rc < 0) fprintf(stderr, "expert-worker: error: %s\n", err.msg);
    ew_slice_free(&slice);
    moe_model_free(m);
    return rc < 0 ? 1 : 0;
}
