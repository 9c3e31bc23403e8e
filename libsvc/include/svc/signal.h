/*
 * svc/signal.h - graceful stop on SIGTERM and SIGINT, for a service's main.
 *
 * The first SIGTERM or SIGINT sets a flag the service's loops poll and wakes
 * whoever waits in moe_stop_wait (or polls moe_stop_fd); a second one ends
 * the process at once with status 128 + the signal (someone insists). SIGPIPE
 * is ignored (a peer that hangs up is an error return, not a death).
 *
 *     if (moe_stop_install(&err) < 0) ... err.msg ...
 *     cfg.stop = moe_stop_flag();          // loops test *cfg.stop
 *     while (!*moe_stop_flag()) { ... serve ...; }
 *     // or: moe_stop_wait(-1);           // blocks until the signal
 *
 * One per process: the handlers and the flag are process-wide.
 */
#ifndef MOE_SVC_SIGNAL_H
#define MOE_SVC_SIGNAL_H

#include <signal.h>

#include "moe/error.h"

/* Installs the SIGTERM/SIGINT handlers and ignores SIGPIPE. Returns 0, or
 * MOE_EIO (the wake-up pipe or sigaction failed, named in err). Calling it
 * again is harmless. */
int moe_stop_install(moe_err *err);

/* The flag the handlers set (1 once a stop signal came); never NULL. */
volatile sig_atomic_t *moe_stop_flag(void);

/* Waits up to timeout_ms (-1: without limit) for a stop signal; returns 1
 * once one came, 0 on timeout. */
int moe_stop_wait(int timeout_ms);

/* A file descriptor that becomes readable when a stop signal comes (for a
 * poll() loop), or -1 before moe_stop_install. Do not read or close it. */
int moe_stop_fd(void);

/* Sets the flag and wakes waiters as a signal would (for tests and for a
 * service that decides to stop itself); async-signal-safe. It is not a
 * signal: the first SIGTERM after it still stops gracefully, only a second
 * signal ends the process at once. */
void moe_stop_request(void);

#endif
