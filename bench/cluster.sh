#!/bin/sh
# bench/cluster.sh - the control plane on loopback (called by bench/run.sh):
# a private redis-server, router-svc, 3 expert-workers and moectl as the
# gateway, on a generated Mixtral-architecture model (hidden 256, 4 layers,
# 8 experts top-2, ff 512, f32: 48 MiB of experts). Prints:
#   1. failover: from a worker's death (kill -9) to the batch that needed it
#      served by a replacement, with replicas (min 2) and without (min 1:
#      the lease expires, router-svc reassigns, the survivors load), against
#      the steady time per token;
#   2. rebalance: from a load shift (injected counts for one expert) to the
#      epoch that gives it more replicas being active;
#   3. throughput while router-svc switches epochs continuously against the
#      steady state (same run, same prompt).
# Env: BUILD, CLUSTER_GEN (tokens per generation, default 1500).
set -u
BUILD=${BUILD:-build}
MOECTL="$BUILD/moectl"
NGEN=${CLUSTER_GEN:-1500}
CT=$(mktemp -d)
CPIDS=""
. tests/lib/redis.sh
trap 'for p in $CPIDS; do kill -9 "$p" 2>/dev/null; done; redis_stop; rm -rf "$CT" "$REDIS_DIR"' EXIT
redis_start >/dev/null || { echo "cluster: redis-server unavailable: skipped"; exit 0; }
RC="redis-cli -p $REDIS_PORT"
M="$BUILD/bench-cluster.gguf"
[ -f "$M" ] || "$MOECTL" mkmodel --arch llama --dtype f32 --seed 5 --n-embd 256 --n-layer 4 \
    --n-ff 512 --n-expert 8 --n-ctx 8192 -o "$M" >/dev/null || exit 1

num() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
now_ms() { date +%s%3N; }
worker() { # NAME PREFIX CAPACITY DOMAIN
    "$BUILD/expert-worker" --model "$M" --listen 127.0.0.1:0 --redis "$REDIS_URL" --prefix "$2" \
        --capacity "$3" --failure-domain "$4" --lease-ms 1500 --grace-ms 2000 --drain-ms 0 \
        >"$CT/$1.out" 2>"$CT/$1.err" &
    PID=$!
    CPIDS="$CPIDS $PID"
}
router() { # NAME PREFIX ARGS...
    n=$1 p=$2; shift 2
    "$BUILD/router-svc" --redis "$REDIS_URL" --prefix "$p" --listen 127.0.0.1:0 --settle-ms 300 \
        --id "$n" "$@" >"$CT/$n.out" 2>"$CT/$n.err" &
    PID=$!
    CPIDS="$CPIDS $PID"
}
wait_active() { i=0; while [ $i -lt 100 ] && [ -z "$($RC get "$1:placement:active")" ]; do sleep 0.1; i=$((i + 1)); done; }
gen() { # PREFIX OUT [N]: tokens/s
    n=${3:-$NGEN}
    t0=$(now_ms)
    "$MOECTL" generate "$M" --tokens 1,2,3 -n "$n" --ignore-eos --redis "$REDIS_URL" --prefix "$1" >"$2" 2>"$2.err" || return 1
    t1=$(now_ms)
    awk -v n="$n" -v ms=$((t1 - t0)) 'BEGIN { printf "%.1f", n * 1000 / ms }'
}

echo "== control plane: failover, rebalance, throughput during a rebalance (3 workers, loopback)"
# ---- failover -----------------------------------------------------------------
printf '%-34s %12s %14s %9s\n' case "stall ms" "ms per token" ratio
for minr in 2 1; do
    P=f$minr$$
    worker w1 $P 60M z1; worker w2 $P 60M z2; worker w3 $P 60M z3; K=$PID
    router r $P --min-replicas $minr --target-load 1000000; R=$PID
    wait_active $P
    steady=$(gen $P "$CT/s.json") || { echo "cluster: generation failed: $(tail -2 "$CT/s.json.err")"; break; }
    "$MOECTL" generate "$M" --tokens 1,2,3 -n "$NGEN" --ignore-eos --redis "$REDIS_URL" --prefix $P >"$CT/f.json" 2>"$CT/f.err" &
    G=$!
    sleep 1
    kill -9 $K
    wait $G
    stall=$(num failover_stall_ms_max <"$CT/f.json")
    pertok=$(awk -v t="$steady" 'BEGIN { printf "%.2f", 1000 / t }')
    label=$([ $minr = 2 ] && echo "kill -9, 2 replicas per expert" || echo "kill -9, no replicas (lease 1.5 s)")
    printf '%-34s %12s %14s %9s\n' "$label" "${stall:-n/a}" "$pertok" "$(ratio "${stall:-0}" "$pertok")"
    for p in $CPIDS; do kill -9 "$p" 2>/dev/null; done
    CPIDS=""
done
echo "(ratio: the stall in tokens' worth of steady decoding; without replicas it is bounded by the lease)"

# ---- rebalance and throughput during it ------------------------------------------
P=r$$
worker w1 $P 60M z1; worker w2 $P 60M z2; worker w3 $P 60M z3
router r $P --min-replicas 1 --target-load 2000 --rebalance-ms 500 --halflife-ms 500
wait_active $P
# throughput while the hot expert moves every 1.5 s, against the same load
# injection aimed at a key nobody reads (the same redis-cli traffic and CPU)
inject_loop() { # KEY_PREFIX
    j=0
    while [ $j -lt 300 ]; do
        e=$(( (j / 15) % 8 ))
        $RC hincrby "$1:load:$(($(date +%s) / 10))" 2:$e 3000 >/dev/null 2>&1
        sleep 0.1; j=$((j + 1))
    done
}
inject_loop "idle$$" &
INJ=$!
CPIDS="$CPIDS $INJ"
steady=$(gen $P "$CT/s2.json" 6000)
kill $INJ 2>/dev/null
inject_loop "$P" &
INJ=$!
CPIDS="$CPIDS $INJ"
r0=$(sed -n 's/.*epoch \([0-9]*\) active.*/\1/p' "$CT/r.err" | tail -1)
during=$(gen $P "$CT/d.json" 6000)
r1=$(sed -n 's/.*epoch \([0-9]*\) active.*/\1/p' "$CT/r.err" | tail -1)
kill $INJ 2>/dev/null
printf '%-34s %12s %14s %9s\n' throughput "tok/s" "steady tok/s" ratio
printf '%-34s %12s %14s %9s\n' "during $((r1 - r0)) epoch switches" "$during" "$steady" "$(ratio "$during" "$steady")"
# a load shift: layer 1 expert 6 becomes hot (after the experts the loop
# heated have cooled)
sleep 3
replicas() { $RC get "$P:placement:$($RC get "$P:placement:active")" | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(d.experts.find(x => x[0] == 1 && x[1] == 6)[2].length)'; }
t0=$(now_ms)
i=0
while [ $i -lt 100 ]; do
    $RC hincrby "$P:load:$(($(date +%s) / 10))" 1:6 5000 >/dev/null
    [ "$(replicas)" -ge 2 ] && break
    sleep 0.1; i=$((i + 1))
done
t1=$(now_ms)
sw=$(sed -n 's/.*epoch [0-9]* active after \([0-9]*\) ms.*/\1/p' "$CT/r.err" | tail -1)
echo "rebalance: load shift to 1 expert -> $(replicas) replicas active in $((t1 - t0)) ms (pending -> active: ${sw:-?} ms; router samples load every 1 s, half-life 0.5 s)"
