/*
 * conncap.h - a cap on the TCP connections to the worker's gRPC port.
 *
 * gRPC core 1.51 accepts every connection and offers no limit (its
 * connection quota came in 2024; grpc_server_add_channel_from_fd, which
 * would let us accept connections ourselves, takes plaintext only). So a
 * thread counts the port's established connections every 100 ms (the
 * socket fds in /proc/self/fd whose local port is ours, getsockname, and
 * whose state is ESTABLISHED, TCP_INFO: the process's own fds, not the
 * system-wide /proc/net/tcp, whose every read walks the kernel's whole TCP
 * hash) and, when there are more than max, shuts down the newest ones (first
 * seen in the latest pass: socket inodes come from per-CPU batches, so their
 * order does not say) with shutdown(2). gRPC then sees the
 * connection end and frees it itself: nothing is closed behind its back.
 * The oldest connections - the gateways' long-lived Forward streams - are
 * kept, so a flood of new connections cannot push a gateway out.
 */
#ifndef EW_CONNCAP_H
#define EW_CONNCAP_H

#include <stdint.h>

typedef struct ew_conncap ew_conncap;

/* Starts the thread for the port (max >= 1). open and cut (borrowed; may be
 * NULL) receive the connections seen at the last count and the total cut
 * (atomic stores). Returns 0, or -1 when the thread cannot start. */
int ew_conncap_start(ew_conncap **out, int port, int max, uint64_t *open, uint64_t *cut);
void ew_conncap_stop(ew_conncap *c); /* NULL: no-op */

/* One pass, for tests and the thread: counts the established connections
 * whose local port is port and shuts down the newest beyond max (max <= 0:
 * none). Returns the number counted (before any cut), *n_cut the cut. */
int ew_conncap_pass(int port, int max, int *n_cut);

#endif
