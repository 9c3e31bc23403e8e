#!/usr/bin/env python3
"""tests/lib/idle_conns.py - a slowloris for tests: holds N TCP connections to
HOST:PORT that send nothing (or, with --partial, every other one the start of
a request line and then nothing), for at most SECONDS.

    idle_conns.py HOST PORT N SECONDS [--src IP] [--partial] [--reconnect]

--src binds the sockets to a source address (127.0.0.2: another "client" on
loopback); --reconnect replaces a connection the server closes (the attack
that outlasts a short timeout), at up to N reconnects a second (so N x
(SECONDS + 1) at most: a faster loop would only evict its own connections
and spend its budget). Prints "open K" once
the connects are done (or after 5 s), then at the end one line of figures:
"held ... closed_by_server ... reconnects ... max_open ... budget_out_at ...
open_each_s ..." (when the reconnects ran out, if they did, and how many
connections were open at each second). Ends early, with
the same line, on SIGTERM or SIGINT. Loopback only; bounded in count and time.
"""
import errno
import selectors
import signal
import socket
import sys
import time


def main():
    args = sys.argv[1:]
    opts = {"--src": None}
    flags = set()
    pos = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--src":
            opts["--src"] = args[i + 1]
            i += 2
            continue
        if a.startswith("--"):
            flags.add(a)
        else:
            pos.append(a)
        i += 1
    host, port, n, seconds = pos[0], int(pos[1]), int(pos[2]), float(pos[3])
    if not host.startswith("127.") or n > 5000 or seconds > 60:
        sys.exit("idle_conns: loopback only, at most 5000 connections and 60 s")
    partial = "--partial" in flags
    reconnect = "--reconnect" in flags
    stop = [False]

    def on_signal(signum, frame):
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sel = selectors.DefaultSelector()
    state = {"open": 0, "closed": 0, "reconnects": 0, "max_open": 0, "failed": 0,
             "budget_out_at": None}
    samples = []
    pending = [0]  # closed by the server, not reconnected yet
    tokens = [0.0, time.monotonic()]  # reconnects allowed now, when last refilled
    counter = [0]

    def connect_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if opts["--src"]:
            s.bind((opts["--src"], 0))
        rc = s.connect_ex((host, port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            state["failed"] += 1
            return
        counter[0] += 1
        sel.register(s, selectors.EVENT_WRITE, {"connected": False, "k": counter[0]})

    def drop(s):
        sel.unregister(s)
        s.close()

    for _ in range(n):
        connect_one()
    t0 = time.monotonic()
    announced = False
    end = t0 + seconds
    while not stop[0] and time.monotonic() < end:
        for key, ev in sel.select(timeout=0.05):
            s, d = key.fileobj, key.data
            if not d["connected"]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    drop(s)
                    state["failed"] += 1
                    continue
                d["connected"] = True
                state["open"] += 1
                if partial and d["k"] % 2 == 0:
                    try:
                        s.send(b"GET /healthz HTTP/1.1\r\nX-a: ")
                    except OSError:
                        pass
                sel.modify(s, selectors.EVENT_READ, d)
                continue
            try:
                b = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                b = b""
            if b:
                continue  # an answer (a 408, say): read on until it closes
            drop(s)
            state["open"] -= 1
            state["closed"] += 1
            if reconnect:
                pending[0] += 1
        if reconnect:  # a token bucket: n reconnects a second, n at once at most
            now = time.monotonic()
            tokens[0] = min(n, tokens[0] + n * (now - tokens[1]))
            tokens[1] = now
            while pending[0] > 0 and tokens[0] >= 1 and now < end:
                if state["reconnects"] >= n * (int(seconds) + 1):
                    if state["budget_out_at"] is None:
                        state["budget_out_at"] = now - t0
                    break
                tokens[0] -= 1
                pending[0] -= 1
                state["reconnects"] += 1
                connect_one()
        state["max_open"] = max(state["max_open"], state["open"])
        if time.monotonic() - t0 >= len(samples) + 1:
            samples.append(state["open"])
        if not announced and (state["open"] + state["failed"] >= n or time.monotonic() - t0 > 5):
            print("open %d" % state["open"], flush=True)
            announced = True
    if not announced:
        print("open %d" % state["open"], flush=True)
    print(
        "held %.1f s: open %d closed_by_server %d reconnects %d max_open %d failed %d "
        "budget_out_at %s open_each_s %s"
        % (time.monotonic() - t0, state["open"], state["closed"], state["reconnects"],
           state["max_open"], state["failed"],
           "never" if state["budget_out_at"] is None else "%.1f" % state["budget_out_at"],
           ",".join(str(x) for x in samples)),
        flush=True)
    for key in list(sel.get_map().values()):
        key.fileobj.close()


if __name__ == "__main__":
    main()
