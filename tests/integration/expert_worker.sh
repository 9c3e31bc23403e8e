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
    if [ $arch = deepseek2 ]; then
        # the same batch from the Node client and from the C client (moectl
        # expert --workers, the engine's remote backend), and computed locally:
        # bit-identical outputs
        node tests/ref/expert_client.mjs dump "$ADDR" 1 "$TMP/in.txt" --seed 4 >"$TMP/node.json" &&
        "$MOECTL" expert "$M" --layer 1 --input "$TMP/in.txt" --workers "$ADDR" >"$TMP/c.json" &&
        "$MOECTL" expert "$M" --layer 1 --input "$TMP/in.txt" >"$TMP/local.json" &&
        res=$(node -e '
            const fs = require("fs"), rd = (f) => JSON.parse(fs.readFileSync(f)).outputs.flat();
            const hex = (x) => Buffer.from(new Float32Array(x).buffer).toString("hex");
            const [a, b, c] = [rd(process.argv[1]), rd(process.argv[2]), rd(process.argv[3])];
            console.log(a.length > 0 && hex(a) === hex(b) && hex(b) === hex(c) ? "same" : "differ");' \
            "$TMP/node.json" "$TMP/c.json" "$TMP/local.json") && [ "$res" = same ] &&
            ok "Node client, C client and local engine: bit-identical outputs" ||
            bad "Node vs C client outputs: ${res:-error}"
    fi
    stop_worker "$arch"
done

# a per-layer slice: Info reports exactly it (deepseek2's layer 0 is dense)
M="$TMP/deepseek2.gguf"
start_worker slice "$M" "L1:0-3;L2:8,9" && {
    held=$(node tests/ref/expert_client.mjs info "$ADDR" | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8")); console.log(j.held.map(h => h.layer + ":" + h.experts.join(",")).join(" "))')
    [ "$held" = "1:0,1,2,3 2:8,9" ] && ok "Info reports the slice: $held" || bad "Info slice: '$held'"
    stop_worker slice
}

# resident memory grows with the slice, not the model: the model is mapped and
# a worker only reads (and, where Q8_0 is packed for the int8 tiles, copies)
# the experts it hosts. RSS (smaps_rollup, exact) is read after one row went
# through every held expert, for a worker hosting everything and for one
# hosting one expert per layer (an eighth): the difference is at least 3/4
# of the other seven eighths of the hosted weight bytes (Info's
# capacity_bytes) and at most 1.5x them (AddressSanitizer's bookkeeping
# adds ~25% under make test-san; plain builds measured 1.0x).
MQ="$TMP/mid-q8.gguf"
"$MOECTL" mkmodel --arch llama --dtype q8_0 --seed 2 --n-embd 512 --n-ff 1536 --n-layer 4 --n-vocab 1024 -o "$MQ" >/dev/null
rss_kb() { sed -n 's/^Rss:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/smaps_rollup"; }
rss_after() { # NAME EXPERTS -> "rss_bytes capacity_bytes"
    "$WORKER" --model "$MQ" --listen 127.0.0.1:0 --experts "$2" --max-rows 64 >"$TMP/$1.out" 2>"$TMP/$1.err" &
    pid=$!
    PIDS="$PIDS $pid"
    i=0
    while [ $i -lt 100 ] && ! grep -q "listening on" "$TMP/$1.out"; do sleep 0.1; i=$((i + 1)); done
    a=$(sed -n 's/^listening on //p' "$TMP/$1.out")
    cap=$(node tests/ref/expert_client.mjs touch "$a" | sed -n 's/.*"capacity_bytes":\([0-9]*\).*/\1/p')
    r1=$(rss_kb $pid)
    kill "$pid"; wait "$pid" 2>/dev/null
    echo "$((r1 * 1024)) ${cap:-0}"
}
set -- $(rss_after all all); r_all=$1 cap_all=$2
set -- $(rss_after one 0); r_one=$1
d=$((r_all - r_one)) want=$((cap_all * 7 / 8))
if [ "$cap_all" -gt 0 ] && [ $d -gt $((want * 3 / 4)) ] && [ $d -lt $((want * 3 / 2)) ]; then
    ok "RSS grows with the slice: hosting all experts $((r_all >> 20)) MiB, one per layer $((r_one >> 20)) MiB (+$((d >> 20)) MiB for $((want >> 20)) MiB more weights)"
else
    bad "RSS growth: all $r_all bytes, one expert per layer $r_one, for $cap_all bytes hosted by all"
fi

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
check_err "cannot listen" --model "$M" --listen 256.1.1.1:1 --insecure
check_err "not a loopback address" --model "$M" --listen 0.0.0.0:0
"$WORKER" --help | grep -q "usage: expert-worker" && ok "--help" || bad "--help"
exit $fail
