#!/bin/sh
# router-svc, expert-workers and a gateway (moectl --redis) on loopback with a
# real redis-server: workers register with no experts and take what
# router-svc assigns; the cluster's logits are bit-identical to the
# single-process engine; gateways report load in batches; an injected load
# skew gives the hot expert more replicas within 10 s; kill -9 of a worker
# mid-generation changes no token (with replicas: at once; without: after the
# lease expires and its experts are reassigned); a Redis restart mid-run fails
# no request and the deployment rebuilds itself; a worker stopped with SIGTERM
# drains first (a generation through it sees no failure);
# a standby router-svc takes over when the leader dies. Only processes started
# here are signalled, by PID; every wait is bounded.
set -u
MOECTL=${MOECTL:-build/moectl}
BIN=$(dirname "$MOECTL")
TMP=$(mktemp -d)
PIDS=""
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
. tests/lib/redis.sh
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    redis_stop
    [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"
    rm -rf "$TMP"
}
trap cleanup EXIT
redis_start || { echo "skip: $(redis_start 2>&1 | tail -1)"; exit 77; }
RC="redis-cli -p $REDIS_PORT"

M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 5 --n-embd 256 --n-layer 4 --n-ff 512 \
    --n-expert 8 --n-ctx 8192 -o "$M" >/dev/null || { echo "FAIL: mkmodel"; exit 1; }
# one expert: 256 x 512 x 3 matrices of f32 = 1.5 MiB; 32 experts = 48 MiB
T=1,17,300,42,99,7,256,5,64,128,255,3
PROMPT=1,2,3
NGEN=2500

# worker NAME PREFIX CAPACITY DOMAIN -> PID (its address is in $TMP/NAME.out)
worker() {
    "$BIN/expert-worker" --model "$M" --listen 127.0.0.1:0 --redis "$REDIS_URL" --prefix "$2" \
        --capacity "$3" --failure-domain "$4" --lease-ms 1500 --grace-ms 2000 --drain-ms 8000 \
        --metrics 127.0.0.1:0 \
        >"$TMP/$1.out" 2>"$TMP/$1.err" &
    PID=$!
    PIDS="$PIDS $PID"
}
# router NAME PREFIX ARGS... -> PID; its HTTP port in $TMP/NAME.port
router() {
    name=$1 prefix=$2; shift 2
    "$BIN/router-svc" --redis "$REDIS_URL" --prefix "$prefix" --listen 127.0.0.1:0 \
        --settle-ms 300 --rebalance-ms 1000 --halflife-ms 1000 --id "$name" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PID=$!
    PIDS="$PIDS $PID"
    i=0
    while [ $i -lt 50 ] && ! grep -q listening "$TMP/$name.out"; do sleep 0.1; i=$((i + 1)); done
    sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/$name.out" >"$TMP/$name.port"
}
http() { # NAME PATH
    node -e 'require("http").get({host: "127.0.0.1", port: +process.argv[1], path: process.argv[2]},
        r => { let b = ""; r.on("data", d => b += d); r.on("end", () => console.log(b)); })
        .on("error", e => { console.log("ERROR " + e.message); })' "$(cat "$TMP/$1.port")" "$2"
}
# wait_for SECONDS CMD...: until CMD succeeds (every 0.2 s); 0 or 1
wait_for() {
    n=$(($1 * 5)); shift
    i=0
    while [ $i -lt $n ]; do "$@" && return 0; sleep 0.2; i=$((i + 1)); done
    return 1
}
active_epoch() { $RC get "$1:placement:active" 2>/dev/null; }
has_active() { [ -n "$(active_epoch "$1")" ]; }
epoch_above() { e=$(active_epoch "$1"); [ -n "$e" ] && [ "$e" -gt "$2" ]; }
doc() { $RC get "$1:placement:$(active_epoch "$1")"; }
tokens() { node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).tokens.join(","))' "$1"; }
jfield() { node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(process.argv[2].split(".").reduce((o, k) => o[k], j))' "$1" "$2"; }
addr_of() { sed -n 's/^listening on //p' "$TMP/$1.out"; }

# the reference: the single-process engine
"$MOECTL" logits "$M" --tokens $T >"$TMP/local_logits.json" || bad "local logits"
"$MOECTL" generate "$M" --tokens $PROMPT -n $NGEN --ignore-eos >"$TMP/local_gen.json" || bad "local generate"
REF=$(tokens "$TMP/local_gen.json")

# ==== A: min 1 replica, 3 workers with room for a survivor's share =========
A=a$$
worker a1 $A 40M z1; A1=$PID
worker a2 $A 40M z2; A2=$PID
worker a3 $A 40M z3; A3=$PID
router ra $A --min-replicas 1 --target-load 1000000; RA=$PID
if wait_for 20 has_active $A; then
    n=$(doc $A | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(Object.keys(d.workers).length + " " + d.experts.length)')
    [ "$n" = "3 32" ] && ok "3 workers registered; every one of 32 experts placed on them (epoch $(active_epoch $A))" ||
        bad "placement: workers/experts '$n'"
else
    bad "no active placement within 20 s: $(tail -5 "$TMP/ra.err")"
fi
for w in a1 a2 a3; do
    grep -q "acknowledged" "$TMP/$w.err" || bad "$w did not acknowledge: $(tail -3 "$TMP/$w.err")"
done

# the cluster serves the single process's logits, bit for bit
"$MOECTL" logits "$M" --tokens $T --redis "$REDIS_URL" --prefix $A >"$TMP/cl.json" 2>"$TMP/cl.err" &&
    cmp -s "$TMP/local_logits.json" "$TMP/cl.json" &&
    ok "cluster logits bit-identical to the single-process engine" ||
    bad "cluster logits differ: $(tail -3 "$TMP/cl.err")"
# load reports: 12 tokens x top-2 x 4 layers = 96 rows, in batched HINCRBYs
rows() { for k in $($RC keys "$1:load:*"); do $RC hvals "$k"; done | awk '{s += $1} END {print s + 0}'; }
r=$(rows $A)
[ "$r" = 96 ] && ok "load reported: 96 rows (12 tokens x 2 experts x 4 layers)" || bad "load rows $r, want 96"

# a worker's own metrics: what it served, bounded per-expert series
sed -n 's/.*metrics on .*(port \([0-9]*\)).*/\1/p' "$TMP/a1.err" >"$TMP/a1.port"
http a1 /metrics >"$TMP/wm.txt"
wb=$(sed -n 's/^moemesh_worker_batches_total //p' "$TMP/wm.txt")
wh=$(sed -n 's/^moemesh_worker_experts_held //p' "$TMP/wm.txt")
ws=$(grep -vc '^#' "$TMP/wm.txt")
[ "${wb:-0}" -gt 0 ] && [ "${wh:-0}" -gt 0 ] && [ "$ws" -le 40 ] &&
    ok "worker /metrics: $wb batches, $wh experts held, $ws series" || bad "worker /metrics: $(head -c 400 "$TMP/wm.txt")"

# metrics and the autoscaling signal
http ra /metrics >"$TMP/metrics.txt"
grep -q '^moemesh_router_workers_wanted [0-9]' "$TMP/metrics.txt" &&
    grep -q '^moemesh_router_leader 1' "$TMP/metrics.txt" &&
    grep -q '^moemesh_router_expert_replicas_count 32' "$TMP/metrics.txt" &&
    ok "/metrics: leader, workers_wanted, replica histogram over 32 experts" ||
    bad "/metrics: $(head -c 600 "$TMP/metrics.txt")"
series=$(grep -vc '^#' "$TMP/metrics.txt")
[ "$series" -le 60 ] && ok "/metrics: $series series (bounded, not one per expert)" || bad "/metrics: $series series"
http ra /v1/scale >"$TMP/scale.json"
ww=$(jfield "$TMP/scale.json" workers_wanted 2>/dev/null)
rw=$($RC get "$A:scale:workers_wanted")
[ -n "$ww" ] && [ "$ww" = "$rw" ] && [ "$ww" -ge 2 ] &&
    ok "workers_wanted $ww on /v1/scale and in Redis (48 MiB of experts, 36 MiB usable per worker)" ||
    bad "workers_wanted: http '$ww', redis '$rw'"

# skewed load: inject 20000 rows/s for layer 2 expert 5 -> more replicas
E0=$(active_epoch $A)
inject() { b=$(($(date +%s) / 10)); $RC hincrby "$A:load:$b" 2:5 20000 >/dev/null; }
hot_replicas() { doc $A | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); const e = d.experts.find(x => x[0] == 2 && x[1] == 5); const cold = d.experts.filter(x => x[2].length > 1).length; console.log(e[2].length + " " + cold)'; }
hot_ok() { inject; set -- $(hot_replicas); [ "$1" -ge 3 ]; }
# (target 1e6 rows/s: no expert is hot yet; restart the router with target 5000)
kill $RA; wait $RA 2>/dev/null
router ra $A --min-replicas 1 --target-load 5000; RA=$PID
t0=$(date +%s)
if wait_for 15 hot_ok; then
    set -- $(hot_replicas)
    ok "hot expert (layer 2, expert 5) got $1 replicas $(($(date +%s) - t0)) s after the load began; experts with >1 replica: $2"
    [ "$2" = 1 ] || bad "cold experts were replicated too ($2 with >1 replica)"
else
    bad "hot expert not replicated within 15 s: $(hot_replicas); $(tail -3 "$TMP/ra.err")"
fi

# a worker without replicas dies mid-generation: its experts are reassigned,
# the generation completes with the tokens of a run without the fault
kill $RA; wait $RA 2>/dev/null
$RC del "$A:placement:pending" >/dev/null
router ra $A --min-replicas 1 --target-load 1000000; RA=$PID
sleep 3 # the load average decays; replicas return to one per expert
E1=$(active_epoch $A)
"$MOECTL" generate "$M" --tokens $PROMPT -n $NGEN --ignore-eos --redis "$REDIS_URL" --prefix $A \
    >"$TMP/g1.json" 2>"$TMP/g1.err" &
G=$!
sleep 1
kill -9 $A3
i=0
while [ $i -lt 600 ] && kill -0 $G 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 $G 2>/dev/null; then
    bad "generation still running 60 s after the kill"; kill $G
elif wait $G && [ "$(tokens "$TMP/g1.json")" = "$REF" ]; then
    ok "worker without replicas killed mid-generation: $NGEN tokens identical; failures seen $(jfield "$TMP/g1.json" remote.worker_failures), epoch $E1 -> $(jfield "$TMP/g1.json" remote.epoch)"
else
    bad "generation across a worker's death: $(tail -3 "$TMP/g1.err")"
fi
doc $A | grep -q "$(addr_of a3)" && bad "the dead worker is still in the active placement" ||
    ok "the dead worker's experts moved to the survivors: $(grep -c 'lease expired' "$TMP/ra.err") lease expiry, $(grep 'failover' "$TMP/ra.err" | head -1 | cut -c1-90)"

# Redis restarted mid-run: no request fails; the deployment rebuilds itself
E2=$(active_epoch $A)
"$MOECTL" generate "$M" --tokens $PROMPT -n $NGEN --ignore-eos --redis "$REDIS_URL" --prefix $A \
    >"$TMP/g2.json" 2>"$TMP/g2.err" &
G=$!
sleep 1
redis_stop
sleep 3 # longer than a lease: nobody may be declared dead for it
redis_start >/dev/null || bad "redis did not restart"
i=0
while [ $i -lt 600 ] && kill -0 $G 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 $G 2>/dev/null; then
    bad "generation still running 60 s after the Redis restart"; kill $G
elif wait $G && [ "$(tokens "$TMP/g2.json")" = "$REF" ]; then
    ok "Redis away 3 s mid-generation: $NGEN tokens identical, no error"
else
    bad "generation across a Redis restart: $(tail -3 "$TMP/g2.err")"
fi
nf=$(grep -c 'pending (failover' "$TMP/ra.err")
[ "$nf" = 1 ] && ok "Redis away longer than a lease: no worker declared dead (failover rounds: only the kill's)" ||
    bad "Redis away: $nf failover rounds: $(grep 'failover' "$TMP/ra.err" | tail -2)"
wait_for 15 has_active $A && ok "after the restart: placement republished (epoch $(active_epoch $A), was $E2), $($RC zcard $A:workers) workers re-registered" ||
    bad "no placement after the Redis restart: $(tail -3 "$TMP/ra.err")"
"$MOECTL" logits "$M" --tokens $T --redis "$REDIS_URL" --prefix $A >"$TMP/cl2.json" 2>"$TMP/cl2.err" &&
    cmp -s "$TMP/local_logits.json" "$TMP/cl2.json" || bad "logits after the restart: $(tail -3 "$TMP/cl2.err")"
r=$(rows $A)
[ "$r" -ge 96 ] && ok "load counts resume after the restart ($r rows)" || bad "load rows after restart: $r"

# scale-up, then scale-down: a new worker joins; a worker told to stop
# (SIGTERM, as Kubernetes does) drains first, so a generation running through
# it sees no failure at all
worker a4 $A 40M z4; A4=$PID
four() { doc $A >/dev/null && [ "$($RC zcard $A:workers)" = 3 ]; }
wait_for 10 four || bad "a4 did not register"
"$MOECTL" generate "$M" --tokens $PROMPT -n $NGEN --ignore-eos --redis "$REDIS_URL" --prefix $A \
    >"$TMP/g4.json" 2>"$TMP/g4.err" &
G=$!
sleep 1
kill -TERM $A2
i=0
while [ $i -lt 150 ] && kill -0 $A2 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -0 $A2 2>/dev/null && bad "a2 still running 15 s after SIGTERM"
grep -q "drained" "$TMP/a2.err" && ok "SIGTERM: a2 drained, then left ($(grep -c . "$TMP/a2.err") log lines; epoch $(active_epoch $A) places nothing on it)" ||
    bad "a2 did not drain: $(tail -3 "$TMP/a2.err")"
i=0
while [ $i -lt 600 ] && kill -0 $G 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 $G 2>/dev/null; then
    bad "generation still running 60 s after the drain"; kill $G
elif wait $G && [ "$(tokens "$TMP/g4.json")" = "$REF" ] &&
    [ "$(jfield "$TMP/g4.json" remote.worker_failures)" = 0 ]; then
    ok "generation through a drain: $NGEN tokens identical, 0 worker failures"
else
    bad "generation through a drain: failures $(jfield "$TMP/g4.json" remote.worker_failures 2>&1) $(tail -3 "$TMP/g4.err")"
fi
doc $A | grep -q "$(addr_of a2)" && bad "the drained worker is still in the active placement"
kill $A1 $A4 $RA 2>/dev/null

# ==== B: 2 replicas per expert, 3 workers in 3 domains; two routers ===========
B=b$$
worker b1 $B 60M z1; B1=$PID
worker b2 $B 60M z2; B2=$PID
worker b3 $B 60M z3; B3=$PID
router rb1 $B --min-replicas 2 --target-load 1000000; RB1=$PID
sleep 0.5
router rb2 $B --min-replicas 2 --target-load 1000000; RB2=$PID
wait_for 20 has_active $B || bad "B: no active placement: $(tail -3 "$TMP/rb1.err")"
two=$(doc $B | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(d.experts.every(x => x[2].length == 2) ? "yes" : "no")')
[ "$two" = yes ] && ok "B: every expert has 2 replicas" || bad "B: replicas: $(doc $B | head -c 300)"
grep -q '^moemesh_router_leader 0' "$(http rb2 /metrics >"$TMP/m2.txt"; echo "$TMP/m2.txt")" &&
    ok "B: the second router-svc stands by" || bad "B: rb2 metrics: $(grep leader "$TMP/m2.txt")"

"$MOECTL" generate "$M" --tokens $PROMPT -n $NGEN --ignore-eos --redis "$REDIS_URL" --prefix $B \
    >"$TMP/g3.json" 2>"$TMP/g3.err" &
G=$!
sleep 1
kill -9 $B2
t0=$(date +%s)
i=0
while [ $i -lt 600 ] && kill -0 $G 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 $G 2>/dev/null; then
    bad "B: generation still running 60 s after the kill"; kill $G
elif wait $G && [ "$(tokens "$TMP/g3.json")" = "$REF" ]; then
    ok "B: kill -9 of a worker with replicas mid-generation: $NGEN tokens identical, $(jfield "$TMP/g3.json" remote.retries) row group(s) re-sent to replicas"
else
    bad "B: generation across a worker's death: $(tail -3 "$TMP/g3.err")"
fi
# the leader dies: the standby takes over and restores 2 replicas on the survivors
kill -9 $RB1
lead2() { http rb2 /metrics | grep -q '^moemesh_router_leader 1'; }
wait_for 15 lead2 && ok "B: the standby router-svc leads after the leader's kill -9" ||
    bad "B: rb2 did not take over: $(tail -3 "$TMP/rb2.err")"
kept() { doc $B | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); process.exit(Object.keys(d.workers).length == 2 && d.experts.every(x => x[2].length == 2) ? 0 : 1)'; }
wait_for 20 kept && ok "B: the dead worker's replicas re-created on the 2 survivors (epoch $(active_epoch $B))" ||
    bad "B: placement after failover: $(doc $B | head -c 300)"
exit $fail
