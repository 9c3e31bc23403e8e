/* signal.c - graceful stop on SIGTERM/SIGINT (see svc/signal.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "svc/signal.h"

static volatile sig_atomic_t g_stop;
static int g_signals; /* stop signals received (atomic, lock-free: signal-safe) */
static int g_pipe[2] = {-1, -1};

void moe_stop_request(void) {
    g_stop = 1;
    const int saved = errno;
    if (g_pipe[1] >= 0) {
        const char c = 1;
        ssize_t w = write(g_pipe[1], &c, 1); /* a full pipe is already readable */
        (void)w;
    }
    errno = saved;
}

static void on_signal(int sig) {
    /* the second signal - not a stop the service requested itself: stop now */
    if (__atomic_add_fetch(&g_signals, 1, __ATOMIC_SEQ_CST) > 1) _exit(128 + sig);
    moe_stop_request();
}

int moe_stop_install(moe_err *err) {
    if (g_pipe[0] < 0) {
        if (pipe2(g_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
            char buf[128];
            g_pipe[0] = g_pipe[1] = -1;
            return moe_err_set(err, MOE_EIO, "stop signals: pipe: %s",
                               moe_errno_str(errno, buf, sizeof buf));
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        sigaction(SIGPIPE, &ign, NULL) != 0) {
        char buf[128];
        return moe_err_set(err, MOE_EIO, "stop signals: sigaction: %s",
                           moe_errno_str(errno, buf, sizeof buf));
    }
    return 0;
}

volatile sig_atomic_t *moe_stop_flag(void) {
    return &g_stop;
}

int moe_stop_fd(void) {
    return g_pipe[0];
}

int moe_stop_wait(int timeout_ms) {
    if (g_stop) return 1;
    if (g_pipe[0] < 0) return 0;
    struct pollfd p = {.fd = g_pipe[0], .events = POLLIN};
    int rc;
    do rc = poll(&p, 1, timeout_ms);
    while (rc < 0 && errno == EINTR && !g_stop);
    return g_stop ? 1 : 0;
}
