#!/bin/sh
# Hostile peers on the HTTP ports (issue 14): a slowloris against the admin
# HTTP server (libsvc/src/httpd.c) of a real expert-worker (--metrics) and of
# router-svc (with a private redis-server), and against the gateway's OpenAI
# port (libmicrohttpd). Each attack holds N connections from 127.0.0.2 for
# 10 s (tests/lib/idle_conns.py), reconnecting whatever the server closes:
#   idle     N connections that never send a byte
#   partial  N connections, every other one sends half a request line
#   once     as partial, but no reconnects: the server must have closed all N
#            by the end (the first-byte and header timeouts)
# N is 400 for the admin servers (their table holds 256) and 1100 for the
# gateway (its --max-connections default is 1024). While it lasts, /healthz
# is asked from 127.0.0.1 (curl, 2 s timeout each, 0.5 s apart, for 7 s: 5
# to 10 times) and must answer 200 every time; the server's RSS (/proc/PID/status) 2 s after
# the attack must be within 8 MiB of before (not checked under the sanitizers,
# MOE_SAN=1). A keep-alive client that waits
# 3 s between two requests (longer than the new-connection timeout) is still
# served on the same connection, and a gateway stream begun before an attack
# (so the connection that has waited longest, but busy) runs through it to
# its end. Prints a table row per attack. Only processes started here are
# signalled, by PID; every loop is bounded.
set -u
. tests/lib/procs.sh
. tests/lib/redis.sh
trap 'for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; redis_stop; rm -rf "$TMP" ${REDIS_DIR:+"$REDIS_DIR"}' EXIT
MOECTL=$BUILD/moectl
command -v python3 >/dev/null || { echo "skip: python3 is needed"; exit 77; }
command -v curl >/dev/null || { echo "skip: curl is needed"; exit 77; }
RSS_SLACK_KB=8192
HOLD_S=10

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
healthz() { curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz"; }

# keepalive_gap PORT: one connection, GET /healthz, 3 s of silence, GET
# /healthz again: both answered 200
keepalive_gap() {
    python3 - "$1" <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
def ask():
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(4096)
        if not b:
            sys.exit("closed before an answer")
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(rest) < n:
        b = s.recv(4096)
        if not b:
            sys.exit("closed mid-answer")
        rest += b
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("status: %r" % head[:40])
ask()
time.sleep(3)
ask()
print("two requests 3 s apart on one connection: 200, 200")
EOF
}

# attack NAME PORT PID N MODE: runs one attack, checks /healthz during it and
# the RSS after it, and prints a row of the table
attack() {
    name=$1 port=$2 pid=$3 n=$4 mode=$5
    for k in 1 2 3; do healthz "$port" >/dev/null; done
    rss0=$(rss_kb "$pid")
    case $mode in
    idle) extra="--reconnect" ;;
    partial) extra="--reconnect --partial" ;;
    once) extra="--partial" ;;
    esac
    # (the gateway) a stream started before the attack, so its connection is
    # the one that has waited longest, but busy: it must run to its end
    if [ -n "${STREAM:-}" ]; then
        : >"$TMP/stream.out"
        { curl -sN -m 60 "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
            -d '{"model":"tiny","prompt":"hello","max_tokens":4000,"stream":true,"ignore_eos":true}' \
            >"$TMP/stream.out" 2>&1; date +%s%N >"$TMP/stream.end"; } &
        spid=$!
        PIDS="$PIDS $spid"
        i=0
        while [ $i -lt 100 ] && ! grep -q '^data: {' "$TMP/stream.out"; do sleep 0.05; i=$((i + 1)); done
    fi
    # shellcheck disable=SC2086 # extra is two words or one
    python3 tests/lib/idle_conns.py 127.0.0.1 "$port" "$n" "$HOLD_S" --src 127.0.0.2 $extra >"$TMP/atk.out" 2>&1 &
    apid=$!
    PIDS="$PIDS $apid"
    i=0
    while [ $i -lt 100 ] && ! grep -q '^open' "$TMP/atk.out"; do sleep 0.1; i=$((i + 1)); done
    T_OPEN=$(date +%s%N)
    sleep 0.5
    # probes while the attack surely lasts: at most 10, none starting later
    # than HOLD_S - 3 s after it began (a probe takes up to 2 s)
    good=0 asked=0 codes="" t_end=$(($(date +%s) + HOLD_S - 3))
    while [ $asked -lt 10 ] && [ "$(date +%s)" -lt $t_end ]; do
        c=$(healthz "$port")
        codes="$codes $c" asked=$((asked + 1))
        [ "$c" = 200 ] && good=$((good + 1))
        sleep 0.5
    done
    rss1=$(rss_kb "$pid")
    i=0
    while [ $i -lt 150 ] && kill -0 $apid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    kill $apid 2>/dev/null
    wait $apid 2>/dev/null
    sleep 2
    healthz "$port" >/dev/null
    rss2=$(rss_kb "$pid")
    echo "$name $mode x$n: /healthz $good/$asked ok (codes$codes); RSS before ${rss0} kB, during ${rss1} kB, after ${rss2} kB; attacker: $(tail -1 "$TMP/atk.out")"
    out_at=$(sed -n 's/.* budget_out_at \([^ ]*\) .*/\1/p' "$TMP/atk.out")
    case $out_at in
    never | "") ;;
    *) [ "${out_at%.*}" -ge $((HOLD_S - 1)) ] || bad "$name: $mode x$n: the attacker ran out of reconnects after $out_at s: the probes did not all run under attack" ;;
    esac
    [ "$good" = "$asked" ] && [ "$asked" -ge 5 ] && ok "$name: $mode x$n: /healthz answered $good/$asked during the attack" ||
        bad "$name: $mode x$n: /healthz answered $good/$asked during the attack (codes$codes)"
    # (under the sanitizers, ASan's quarantine keeps freed memory: no bound)
    { [ "${MOE_SAN:-0}" = 1 ] || { [ -n "$rss0" ] && [ -n "$rss2" ] && [ "$rss2" -le $((rss0 + RSS_SLACK_KB)) ]; }; } &&
        ok "$name: $mode x$n: RSS after ${rss2} kB, before ${rss0} kB" ||
        bad "$name: $mode x$n: RSS after '${rss2}' kB is more than ${RSS_SLACK_KB} kB above before '${rss0}' kB"
    if [ "$mode" = once ]; then
        closed=$(sed -n 's/.* closed_by_server \([0-9]*\) .*/\1/p' "$TMP/atk.out")
        [ "$closed" = "$n" ] && ok "$name: once x$n: the server closed all $n within ${HOLD_S} s (open each second: $(sed -n 's/.* open_each_s //p' "$TMP/atk.out"))" ||
            bad "$name: once x$n: the server closed '$closed' of $n connections within ${HOLD_S} s"
    fi
    kill -0 "$pid" 2>/dev/null || bad "$name died during the attack"
}

M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 3 --n-embd 64 --n-layer 2 --n-ff 128 \
    --n-expert 4 --n-ctx 4096 -o "$M" >/dev/null || { bad mkmodel; exit 1; }

# ---- expert-worker's admin port
"$BUILD/expert-worker" --model "$M" --listen 127.0.0.1:0 --experts 0-3 --metrics 127.0.0.1:0 \
    >"$TMP/w.out" 2>"$TMP/w.err" &
WPID=$!
PIDS="$PIDS $WPID"
wait_log "$TMP/w.err" "metrics on" || bad "expert-worker did not start: $(tail -3 "$TMP/w.err")"
wport=$(sed -n 's/.*metrics on .*(port \([0-9]*\)).*/\1/p' "$TMP/w.err")
if [ -n "$wport" ]; then
    attack expert-worker "$wport" $WPID 400 idle
    attack expert-worker "$wport" $WPID 400 partial
    attack expert-worker "$wport" $WPID 400 once
    out=$(keepalive_gap "$wport" 2>&1) && ok "expert-worker: $out" || bad "expert-worker keep-alive: $out"
    m=$(curl -s -m 5 "http://127.0.0.1:$wport/metrics" | awk '$1 ~ /^moemesh_worker_http_connections_(evicted|timed_out)_total$/ { printf "%s %s ", $1, $2 }')
    echo "$m" | grep -Eq 'evicted_total [1-9]' && ok "expert-worker: /metrics: $m" ||
        bad "expert-worker: /metrics counts no evicted connection: '$m'"
fi
stop $WPID

# ---- router-svc's HTTP port (needs Redis)
if redis_start >"$TMP/redis.msg" 2>&1; then
    "$BUILD/router-svc" --redis "$REDIS_URL" --prefix hostile$$ --listen 127.0.0.1:0 \
        >"$TMP/r.out" 2>"$TMP/r.err" &
    RPID=$!
    PIDS="$PIDS $RPID"
    wait_log "$TMP/r.out" "listening on" || bad "router-svc did not start: $(tail -3 "$TMP/r.err")"
    rport=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/r.out")
    if [ -n "$rport" ]; then
        attack router-svc "$rport" $RPID 400 idle # (the same server as the worker's)
        out=$(keepalive_gap "$rport" 2>&1) && ok "router-svc: $out" || bad "router-svc keep-alive: $out"
    fi
    stop $RPID
else
    echo "note: router-svc not attacked: $(tail -1 "$TMP/redis.msg")"
fi

# ---- the gateway's OpenAI port, default connection limits
gateway gw --model "$M" --served-model-name tiny --max-seqs 4 --ctx 4096
if [ -n "$GW" ]; then
    gport=${GW##*:}
    # the stream below touches KV-cache pages: touch them before the RSS figures
    curl -sN -m 60 "$GW/v1/completions" -H 'Content-Type: application/json' \
        -d '{"model":"tiny","prompt":"hello","max_tokens":4000,"stream":true,"ignore_eos":true}' >/dev/null
    attack gateway "$gport" $GPID 1100 idle
    attack gateway "$gport" $GPID 1100 once
    STREAM=1 attack gateway "$gport" $GPID 1100 partial
    i=0
    while [ $i -lt 300 ] && kill -0 $spid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    ms=$(( ($(cat "$TMP/stream.end" 2>/dev/null || echo 0) - T_OPEN) / 1000000 ))
    grep -q '^data: \[DONE\]' "$TMP/stream.out" &&
        ok "gateway: a stream begun before the attack ran to [DONE], $ms ms after the attack's connections were open ($(grep -c '^data: {' "$TMP/stream.out") events)" ||
        bad "gateway: the stream under the attack did not end with [DONE]: $(tail -c 200 "$TMP/stream.out")"
    [ $ms -gt 500 ] || echo "note: the stream ended $ms ms after the attack was open: it was barely under attack"
    out=$(keepalive_gap "$gport" 2>&1) && ok "gateway: $out" || bad "gateway keep-alive: $out"
    ev=$(curl -s -m 5 "$GW/metrics" | awk '$1 == "moemesh_gateway_http_connections_evicted_total" { print $2 }')
    [ "${ev:-0}" -gt 0 ] && ok "gateway: /metrics counts $ev evicted connections" ||
        bad "gateway: /metrics counts no evicted connection ('$ev')"
fi
exit $fail
