#!/bin/sh
# expert-worker as a real process on loopback, driven by the official Node
# gRPC client (tests/ref/expert_client.mjs): Info, Health, pipelined Forward
# batches equal to expert FFNs computed in float64 from the GGUF (f32 wire
# exact to 1e-4 relative, bf16 to 2e-2), FAILED_PRECONDITION for an expert it
# does not hold, INVALID_ARGUMENT for bad messages, a clean exit on SIGTERM,
# and clear errors for bad flags. Only processes this script started are
# signalled, by PID; every wait is bounded.
set -u
MOECTL=${MOECTL:-build/moectl}
WORKER=${WORKER:-$(dirname "$MOECTL")/expert-worker}
[ -d tests/ref/node_modules/@grpc/grpc-js ] || { echo "@grpc/grpc-js not installed (make ref)"; exit 77; }
TMP=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap cleanup EXIT
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }

# start_worker NAME MODEL EXPERTS: starts a worker on a free port, sets ADDR
start_worker() {
    "$WORKER" --model "$2" --listen 127.0.0.1:0 --experts "$3" --threads 2 >"$TMP/$1.out" 2>"$TMP/$1.err" &
    pid=$!
    PIDS="$PIDS $pid"
    eval "PID_$1=$pid"
    i=0
    while [ $i -lt 100 ] && ! grep -q "listening on" "$TMP/$1.out"; do sleep 0.1; i=$((i + 1)); done
    ADDR=$(sed -n 's/^listening on //p' "$TMP/$1.out")
    [ -n "$ADDR" ] || { bad "$1 did not start: $(cat "$TMP/$1.err")"; return 1; }
}

# stop_worker NAME: SIGTERM, wait (bounded) for exit 0
stop_worker() {
    eval "pid=\$PID_$1"
    kill -TERM "$pid"
    i=0
    while [ $i -lt 100 ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$pid" 2>/dev/null; then bad "$1 still running 10 s after SIGTERM"; kill -KILL "$pid"; return; fi
    wait "$pid"; rc=$?
    [ $rc -eq 0 ] && grep -q "stopped after" "$TMP/$1.err" && ok "$1 exits 0 on SIGTERM" || bad "$1 exit $rc on SIGTERM: $(tail -2 "$TMP/$1.err")"
}

for arch in llama qwen2moe deepseek2; do
    M="$TMP/$arch.gguf"
    "$MOECTL" mkmodel --arch "$arch" --dtype f32 --seed 5 -o "$M" >/dev/null || { bad "mkmodel $arch"; continue; }
    start_worker "$arch" "$M" "0-4,6" || continue
    for dt in f32 bf16; do
        out=$(node tests/ref/expert_client.mjs check "$ADDR" "$M" --dtype "$dt" --seed 3 2>&1) &&
            ok "$arch $dt: $out" || bad "$arch $dt: $out"
    done
    stop_worker "$arch"
done

# a per-layer slice: Info reports exactly it (deepseek2's layer 0 is dense)
M="$TMP/deepseek2.gguf"
start_worker slice "$M" "L1:0-3;L2:8,9" && {
    held=$(node tests/ref/expert_client.mjs info "$ADDR" | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8")); console.log(j.held.map(h => h.layer + ":" + h.experts.join(",")).join(" "))')
    [ "$held" = "1:0,1,2,3 2:8,9" ] && ok "Info reports the slice: $held" || bad "Info slice: '$held'"
    stop_worker slice
}

# bad flags and inputs: a clear message and a non-zero exit, no crash
check_err() { # expected-substring args...
    want=$1; shift
    "$WORKER" "$@" >"$TMP/e.out" 2>"$TMP/e.err"; rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "$want" "$TMP/e.err" && ok "error: $want" || bad "error '$want' (rc $rc): $(cat "$TMP/e.err")"
}
check_err "no model" --listen 127.0.0.1:0
check_err "No such file" --model "$TMP/none.gguf"
check_err "layer at 'L0:1' is not a MoE layer" --model "$M" --experts "L0:1"
check_err "out of range" --model "$M" --experts "0-99"
check_err "not an integer" --model "$M" --threads two
check_err "unknown option" --model "$M" --frobnicate 1
check_err "cannot listen" --model "$M" --listen 256.1.1.1:1
"$WORKER" --help | grep -q "usage: expert-worker" && ok "--help" || bad "--help"
exit $fail
