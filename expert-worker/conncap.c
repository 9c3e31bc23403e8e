/* conncap.c - the connection cap on the gRPC port (see conncap.h). */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

typedef struct inodes {
    unsigned long *v;
    int n, cap;
} inodes;

static int push(inodes *s, unsigned long ino) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 256;
        unsigned long *nv = realloc(s->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        s->v = nv, s->cap = nc;
    }
    s->v[s->n++] = ino;
    return 0;
}

/* The inodes of the established sockets whose local port is port, from one
 * /proc/net/tcp{,6} table (its lines: "sl local:port remote:port st ...
 * uid timeout inode"). */
static void scan_table(const char *path, int port, inodes *out) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    if (!fgets(line, sizeof line, f)) goto done; /* the header */
    while (fgets(line, sizeof line, f)) {
        unsigned lport, st;
        unsigned long ino;
        if (sscanf(line,
                   " %*d: %*[0-9A-Fa-f]:%X %*[0-9A-Fa-f]:%*X %X %*X:%*X %*X:%*X %*X %*u %*u %lu",
                   &lport, &st, &ino) != 3)
            continue;
        if ((int)lport == port && st == 0x01 && ino) push(out, ino);
    }
done:
    fclose(f);
}

static int cmp_desc(const void *a, const void *b) {
    const unsigned long x = *(const unsigned long *)a, y = *(const unsigned long *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* This process's fd holding socket inode ino (-1: none). */
static int fd_of(DIR *d, unsigned long ino) {
    char want[48], link[64], path[300];
    snprintf(want, sizeof want, "socket:[%lu]", ino);
    rewinddir(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        const ssize_t n = readlink(path, link, sizeof link - 1);
        if (n <= 0) continue;
        link[n] = 0;
        if (!strcmp(link, want)) return atoi(e->d_name);
    }
    return -1;
}

int ew_conncap_pass(int port, int max, int *n_cut) {
    inodes s = {0};
    scan_table("/proc/net/tcp", port, &s);
    scan_table("/proc/net/tcp6", port, &s);
    const int n = s.n;
    *n_cut = 0;
    if (max > 0 && n > max) {
        qsort(s.v, (size_t)n, sizeof *s.v, cmp_desc); /* newest first */
        DIR *d = opendir("/proc/self/fd");
        for (int i = 0; d && i < n - max; i++) {
            const int fd = fd_of(d, s.v[i]);
            /* shutdown, not close: gRPC owns the fd and frees it on the EOF */
            if (fd >= 0 && shutdown(fd, SHUT_RDWR) == 0) (*n_cut)++;
        }
        if (d) closedir(d);
    }
    free(s.v);
    return n;
}

static void *cap_main(void *arg) {
    ew_conncap *c = arg;
    int64_t last_log = 0;
    uint64_t cut_since_log = 0;
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        int cut;
        const int n = ew_conncap_pass(c->port, c->max, &cut);
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
