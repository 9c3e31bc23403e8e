/* conncap.c - the connection cap on the gRPC port (see conncap.h). */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conncap.h"
#include "moe/log.h"
#include "svc/clock.h"

struct ew_conncap {
    pthread_t th;
    int port, max, stop;
    uint64_t *open, *cut;
};

typedef struct sock {
    unsigned long ino;
    int fd;
    uint64_t first; /* the pass that first saw it: lower is older */
} sock;

typedef struct socks {
    sock *v;
    int n, cap;
} socks;

static int push(socks *s, unsigned long ino, int fd) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 256;
        sock *nv = realloc(s->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        s->v = nv, s->cap = nc;
    }
    s->v[s->n++] = (sock){ino, fd, 0};
    return 0;
}

static int by_ino(const void *a, const void *b) {
    const unsigned long x = ((const sock *)a)->ino, y = ((const sock *)b)->ino;
    return x < y ? -1 : x > y;
}

/* newest first: seen first in a later pass (socket inodes come from per-CPU
 * batches, so their order alone does not say which is newer) */
static int newest_first(const void *a, const void *b) {
    const sock *x = a, *y = b;
    if (x->first != y->first) return x->first > y->first ? -1 : 1;
    return x->ino > y->ino ? -1 : x->ino < y->ino;
}

/* 1 if fd is a TCP connection accepted on port: its local port is port
 * (getsockname) and it is ESTABLISHED (TCP_INFO; the listener is LISTEN). */
static int accepted_on(int fd, int port) {
    struct sockaddr_storage a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0) return 0;
    int p;
    if (a.ss_family == AF_INET)
        p = ntohs(((const struct sockaddr_in *)&a)->sin_port);
    else if (a.ss_family == AF_INET6)
        p = ntohs(((const struct sockaddr_in6 *)&a)->sin6_port);
    else
        return 0;
    if (p != port) return 0;
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state == TCP_ESTABLISHED;
}

/* This process's connections accepted on port, (inode, fd) sorted by inode:
 * one walk of /proc/self/fd (this process's fds only: the system-wide
 * /proc/net/tcp tables, read before, walk the kernel's whole TCP hash, every
 * network namespace's, on each read). */
static void port_conns(int port, socks *out) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    char link[64], path[300];
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        const ssize_t len = readlink(path, link, sizeof link - 1);
        unsigned long ino;
        if (len <= 0) continue;
        link[len] = 0;
        if (sscanf(link, "socket:[%lu]", &ino) != 1) continue;
        const int fd = atoi(e->d_name);
        if (accepted_on(fd, port) && push(out, ino, fd) < 0) break;
    }
    closedir(d);
    if (out->n > 1) qsort(out->v, (size_t)out->n, sizeof *out->v, by_ino);
}

/* One pass with memory: *seen (sorted by inode) holds what earlier passes
 * saw and is replaced by this pass's sockets with their first-seen pass. */
static int pass_with(socks *seen, uint64_t pass, int port, int max, int *n_cut) {
    socks s = {0};
    port_conns(port, &s);
    const int n = s.n;
    for (int i = 0, k = 0; i < n; i++) { /* merge: keep each known socket's first pass */
        while (k < seen->n && seen->v[k].ino < s.v[i].ino) k++;
        s.v[i].first = k < seen->n && seen->v[k].ino == s.v[i].ino ? seen->v[k].first : pass;
    }
    free(seen->v);
    *seen = s;
    *n_cut = 0;
    if (max > 0 && n > max) {
        sock *order = malloc((size_t)n * sizeof *order);
        if (order) {
            memcpy(order, s.v, (size_t)n * sizeof *order);
            qsort(order, (size_t)n, sizeof *order, newest_first);
            /* shutdown, not close: gRPC owns the fd and frees it on the EOF */
            for (int i = 0; i < n - max; i++)
                if (shutdown(order[i].fd, SHUT_RDWR) == 0) (*n_cut)++;
            free(order);
        }
    }
    return n;
}

int ew_conncap_pass(int port, int max, int *n_cut) {
    socks seen = {0};
    const int n = pass_with(&seen, 1, port, max, n_cut);
    free(seen.v);
    return n;
}

static void *cap_main(void *arg) {
    ew_conncap *c = arg;
    int64_t last_log = 0;
    uint64_t cut_since_log = 0, pass = 0;
    socks seen = {0};
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        int cut;
        const int n = pass_with(&seen, ++pass, c->port, c->max, &cut);
        if (c->open) __atomic_store_n(c->open, (uint64_t)n, __ATOMIC_RELAXED);
        if (cut) {
            if (c->cut) __atomic_fetch_add(c->cut, (uint64_t)cut, __ATOMIC_RELAXED);
            cut_since_log += (uint64_t)cut;
        }
        const int64_t now = moe_mono_ms();
        if (cut_since_log && now - last_log >= 10000) {
            moe_log(MOE_LOG_WARN, "expert-worker",
                    "%d connections to the gRPC port, more than --max-connections %d: cut the "
                    "newest %llu (in the last 10 s at most)",
                    n, c->max, (unsigned long long)cut_since_log);
            last_log = now, cut_since_log = 0;
        }
        nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    }
    free(seen.v);
    return NULL;
}

int ew_conncap_start(ew_conncap **out, int port, int max, uint64_t *open, uint64_t *cut) {
    *out = NULL;
    ew_conncap *c = calloc(1, sizeof *c);
    if (!c) return -1;
    *c = (ew_conncap){.port = port, .max = max, .open = open, .cut = cut};
    if (pthread_create(&c->th, NULL, cap_main, c) != 0) {
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void ew_conncap_stop(ew_conncap *c) {
    if (!c) return;
    __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
    pthread_join(c->th, NULL);
    free(c);
}
