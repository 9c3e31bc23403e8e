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

# a gateway waiting for its first placement (nobody places under this
# prefix) stops at once on SIGTERM, with status 0
"$BIN/gateway" --model "$M" --redis "redis://127.0.0.1:$REDIS_PORT" --prefix none$$ --listen 127.0.0.1:0 \
    --log-format text 2>"$TMP/gwwait.err" &
GW0=$!
PIDS="$PIDS $GW0"
i=0
while [ $i -lt 100 ] && ! grep -q "connected" "$TMP/gwwait.err"; do sleep 0.1; i=$((i + 1)); done
kill -TERM $GW0
i=0
while [ $i -lt 30 ] && kill -0 $GW0 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 $GW0 2>/dev/null; then
    bad "a gateway waiting for its first placement still runs 3 s after SIGTERM"
else
    wait $GW0
    st=$?
    [ $st = 0 ] && grep -q "gateway: stopped" "$TMP/gwwait.err" &&
        ok "a gateway waiting for its first placement stopped on SIGTERM within $((i * 100)) ms, status 0" ||
        bad "gateway stopped while waiting: status $st: $(tail -2 "$TMP/gwwait.err")"
fi

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
# The first position where two generations' tokens differ, and a few around it.
first_diff() { node -e 'const [a, b] = process.argv.slice(1).map(f => JSON.parse(require("fs").readFileSync(f, "utf8")).tokens);
    let i = 0; while (i < a.length && i < b.length && a[i] === b[i]) i++;
    console.log("first difference at token " + i + " of " + a.length + "/" + b.length + ": want " + a.slice(i, i + 5).join(",") + ", got " + b.slice(i, i + 5).join(","));' "$1" "$2"; }
jfield() { node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(process.argv[2].split(".").reduce((o, k) => o[k], j))' "$1" "$2"; }
addr_of() { sed -n 's/^listening on //p' "$TMP/$1.out"; }
# A streamed generation through the cluster, to inject a fault into while it
# runs: gen_start NAME PREFIX starts `moectl generate --stream` (the text on
# $TMP/NAME.txt as it is generated, the JSON as the last line of
# $TMP/NAME.err) and waits (up to 60 s) until it has streamed 64 bytes of text;
# the caller injects its fault, then calls gen_at_fault NAME, which records
# the bytes streamed by then and that the generation was still running.
# gen_finish NAME waits for it (60 s) and checks it streamed more text after
# the fault (so the fault hit the middle of the generation, not before its
# first token nor after its last), that the tokens are the fault-free run's,
# and writes its JSON to $TMP/NAME.json. 0 or 1, with the reason in $WHY.
gen_start() {
    : >"$TMP/$1.txt" # exists before the child opens it: no race with wc below
    "$MOECTL" generate "$M" --tokens $PROMPT -n $NGEN --ignore-eos --stream --redis "$REDIS_URL" --prefix "$2" \
        >"$TMP/$1.txt" 2>"$TMP/$1.err" &
    G=$!
    PIDS="$PIDS $G"
    i=0
    while [ $i -lt 1200 ] && [ "$(wc -c <"$TMP/$1.txt")" -lt 64 ] && kill -0 $G 2>/dev/null; do
        sleep 0.05; i=$((i + 1))
    done
    GEN_WAIT_S=$((i / 20))
}
gen_at_fault() {
    AT_FAULT=$(wc -c <"$TMP/$1.txt")
    kill -0 $G 2>/dev/null && ALIVE_AT_FAULT=1 || ALIVE_AT_FAULT=0
}
gen_finish() {
    i=0
    while [ $i -lt 600 ] && kill -0 $G 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $G 2>/dev/null; then
        WHY="still running 60 s after the fault"; kill $G; return 1
    fi
    wait $G || { WHY="moectl failed: $(tail -3 "$TMP/$1.err")"; return 1; }
    grep '^{"tokens"' "$TMP/$1.err" | tail -1 >"$TMP/$1.json"
    total=$(wc -c <"$TMP/$1.txt")
    if [ "$ALIVE_AT_FAULT" != 1 ] || [ "$AT_FAULT" -lt 64 ] || [ "$total" -le "$AT_FAULT" ]; then
        WHY="the fault did not hit mid-generation: $AT_FAULT of $total text bytes streamed at the fault (after ${GEN_WAIT_S} s), running then: $ALIVE_AT_FAULT"
        return 1
    fi
    [ "$(tokens "$TMP/$1.json" 2>/dev/null)" = "$REF" ] || {
        # where they part, and the run's files kept for a look (build/test-logs)
        keep="$BIN/test-logs/router_cluster.$1.$$"
        mkdir -p "$keep" && cp "$TMP/$1.err" "$TMP/$1.txt" "$TMP/local_gen.json" "$TMP"/*.err "$keep/" 2>/dev/null
        WHY="tokens differ from the fault-free run: $(first_diff "$TMP/local_gen.json" "$TMP/$1.json"); $(grep -v '^{"tokens"' "$TMP/$1.err" | tail -2); files in $keep"
        return 1
    }
    WHY="fault after $AT_FAULT of $total text bytes"
    return 0
}
# left_placement PREFIX WORKER: the active placement document, read from
# Redis, places all 32 experts on workers that do not include WORKER's address
# (fails when no document is read, or WORKER has no address)
left_placement() {
    a=$(addr_of "$2")
    [ -n "$a" ] || { WHY="$2 has no address"; return 1; }
    e=$(active_epoch "$1")
    [ -n "$e" ] || { WHY="no active placement epoch in Redis"; return 1; }
    $RC get "$1:placement:$e" >"$TMP/doc.json"
    WHY=$(node -e 'const [f, a] = process.argv.slice(1); let d;
        try { d = JSON.parse(require("fs").readFileSync(f, "utf8")); } catch (e) { console.log("no placement document read: " + e.message); process.exit(1); }
        const w = Object.values(d.workers || {});
        if (!w.length || !Array.isArray(d.experts) || d.experts.length !== 32) { console.log("placement without workers or 32 experts"); process.exit(1); }
        if (w.includes(a)) { console.log(a + " is still one of " + w.join(",")); process.exit(1); }
        console.log(w.length + " workers: " + w.join(","));' "$TMP/doc.json" "$a") || return 1
    WHY="epoch $e, $WHY"
}

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
# (not the blank line node's console.log adds after the page)
series=$(grep -v '^#' "$TMP/metrics.txt" | grep -v '^$' | grep -vc '^moemesh_router_\(expert_tenant_rows\|tenant_load_\)')
tseries=$(grep -c '^moemesh_router_\(expert_tenant_rows\|tenant_load_\)' "$TMP/metrics.txt")
# the tenant breakdown (router_tenants.sh) has its own bound: 10 experts x 5 tenants, 7 more
[ "$series" -le 60 ] && [ "$tseries" -le 57 ] && ok "/metrics: $series series, $tseries of the tenant load (bounded, not one per expert)" ||
    bad "/metrics: $series series, $tseries of the tenant load"
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
gen_start g1 $A
kill -9 $A3
gen_at_fault g1
# required: the generation met the dead worker (worker_failures >= 1), sent
# its row groups again (retries >= 1) and finished on a newer placement
if gen_finish g1; then
    wf=$(jfield "$TMP/g1.json" remote.worker_failures) rt=$(jfield "$TMP/g1.json" remote.retries) ep=$(jfield "$TMP/g1.json" remote.epoch)
    if [ "$wf" -ge 1 ] && [ "$rt" -ge 1 ] && [ "$ep" -gt "$E1" ]; then
        ok "worker without replicas killed mid-generation ($WHY): $NGEN tokens identical; worker_failures $wf, retries $rt, epoch $E1 -> $ep"
    else
        bad "worker killed mid-generation: want worker_failures >= 1, retries >= 1, epoch > $E1; got $wf, $rt, $ep"
    fi
else
    bad "generation across a worker's death: $WHY"
fi
left_placement $A a3 && ok "the dead worker's experts moved to the survivors ($WHY): $(grep -c 'lease expired' "$TMP/ra.err") lease expiry, $(grep 'failover' "$TMP/ra.err" | head -1 | cut -c1-90)" ||
    bad "the dead worker left the placement: $WHY"

# Redis restarted mid-run: no request fails; the deployment rebuilds itself
E2=$(active_epoch $A)
gen_start g2 $A
redis_stop
gen_at_fault g2
sleep 3 # longer than a lease: nobody may be declared dead for it
redis_start >/dev/null || bad "redis did not restart"
# required: the generation's backend lost Redis (redis_failures >= 1) and no
# worker failed for it (worker_failures 0, retries 0)
if gen_finish g2; then
    wf=$(jfield "$TMP/g2.json" remote.worker_failures) rt=$(jfield "$TMP/g2.json" remote.retries) rf=$(jfield "$TMP/g2.json" remote.redis_failures)
    if [ "$rf" -ge 1 ] && [ "$wf" = 0 ] && [ "$rt" = 0 ]; then
        ok "Redis away 3 s mid-generation ($WHY): $NGEN tokens identical, redis_failures $rf, worker_failures 0, retries 0"
    else
        bad "Redis away mid-generation: want redis_failures >= 1, worker_failures 0, retries 0; got $rf, $wf, $rt"
    fi
else
    bad "generation across a Redis restart: $WHY"
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
E4=$(active_epoch $A)
gen_start g4 $A
kill -TERM $A2
gen_at_fault g4
i=0
while [ $i -lt 150 ] && kill -0 $A2 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -0 $A2 2>/dev/null && bad "a2 still running 15 s after SIGTERM"
grep -q "drained" "$TMP/a2.err" && ok "SIGTERM: a2 drained, then left ($(grep -c . "$TMP/a2.err") log lines)" ||
    bad "a2 did not drain: $(tail -3 "$TMP/a2.err")"
# required: no worker failure and nothing re-sent (the drain moved a2's
# experts first), and the generation followed the new placement (epoch > E4)
if gen_finish g4; then
    wf=$(jfield "$TMP/g4.json" remote.worker_failures) rt=$(jfield "$TMP/g4.json" remote.retries) ep=$(jfield "$TMP/g4.json" remote.epoch)
    if [ "$wf" = 0 ] && [ "$rt" = 0 ] && [ "$ep" -gt "$E4" ]; then
        ok "generation through a drain ($WHY): $NGEN tokens identical, worker_failures 0, retries 0, epoch $E4 -> $ep"
    else
        bad "generation through a drain: want worker_failures 0, retries 0, epoch > $E4; got $wf, $rt, $ep"
    fi
else
    bad "generation through a drain: $WHY"
fi
left_placement $A a2 && ok "the drained worker left the placement ($WHY)" || bad "the drained worker left the placement: $WHY"
kill $A1 $A4 $RA 2>/dev/null

# ==== The lock already ours: a router whose own SET NX reached Redis after a
# partition (a closed socket's bytes resent by the kernel) leads at once,
# not after the lock's TTL; a lock held by another id is left alone
L=l$$
$RC set "$L:leader" rl1 PX 20000 >/dev/null
$RC set "$L-o:leader" someone-else PX 20000 >/dev/null
router rl1 $L; RL1=$PID
router rl2 "$L-o"; RL2=$PID
leads_rl1() { grep -q "leading (rl1)" "$TMP/rl1.err"; }
if wait_for 5 leads_rl1; then
    ok "a router finding the lock already under its own id leads at once (TTL 20 s left): $($RC pttl "$L:leader") ms on the lock now"
else
    bad "a router finding its own id on the lock did not lead within 5 s: $(tail -2 "$TMP/rl1.err")"
fi
[ "$($RC get "$L-o:leader")" = someone-else ] && ! grep -q "leading" "$TMP/rl2.err" &&
    ok "a lock under another id is left alone (rl2 stands by)" || bad "rl2 took another's lock: $($RC get "$L-o:leader"), $(tail -2 "$TMP/rl2.err")"
kill $RL1 $RL2 2>/dev/null

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

gen_start g3 $B
kill -9 $B2
gen_at_fault g3
# required: the generation met the dead worker (worker_failures >= 1) and
# sent its row groups to the replicas (retries >= 1)
if gen_finish g3; then
    wf=$(jfield "$TMP/g3.json" remote.worker_failures) rt=$(jfield "$TMP/g3.json" remote.retries)
    if [ "$wf" -ge 1 ] && [ "$rt" -ge 1 ]; then
        ok "B: kill -9 of a worker with replicas mid-generation ($WHY): $NGEN tokens identical, worker_failures $wf, $rt row group(s) re-sent to replicas"
    else
        bad "B: worker killed mid-generation: want worker_failures >= 1, retries >= 1; got $wf, $rt"
    fi
else
    bad "B: generation across a worker's death: $WHY"
fi
# the leader dies: the standby takes over and restores 2 replicas on the survivors
kill -9 $RB1
lead2() { http rb2 /metrics | grep -q '^moemesh_router_leader 1'; }
wait_for 15 lead2 && ok "B: the standby router-svc leads after the leader's kill -9" ||
    bad "B: rb2 did not take over: $(tail -3 "$TMP/rb2.err")"
kept() { doc $B | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); process.exit(Object.keys(d.workers).length == 2 && d.experts.every(x => x[2].length == 2) ? 0 : 1)'; }
wait_for 20 kept && ok "B: the dead worker's replicas re-created on the 2 survivors (epoch $(active_epoch $B))" ||
    bad "B: placement after failover: $(doc $B | head -c 300)"
# the gateway over the cluster: 4 greedy streams through router-svc's
# placement; kill -9 of a worker with replicas mid-stream; every stream
# completes with the fault-free tokens and no error
"$BIN/gateway" --model "$M" --served-model-name m --listen 127.0.0.1:0 --redis "$REDIS_URL" --prefix $B \
    --threads 2 --log-format text 2>"$TMP/gw.err" &
GWP=$!
PIDS="$PIDS $GWP"
gw_up() { grep -q "serving " "$TMP/gw.err"; }
if wait_for 30 gw_up; then
    GW="http://$(sed -n 's/.* on http:\/\/\([^ ]*\) .*/\1/p' "$TMP/gw.err" | head -1)"
    SP=""
    for k in 1 2 3 4; do
        curl -sN -m 120 -H 'Content-Type: application/json' -d "{\"model\":\"m\",\"prompt\":[$PROMPT],\"max_tokens\":$NGEN,\"temperature\":0,\"ignore_eos\":true,\"return_token_ids\":true,\"stream\":true}" \
            "$GW/v1/completions" >"$TMP/s$k.out" 2>/dev/null &
        SP="$SP $!"
    done
    streaming() { for k in 1 2 3 4; do [ "$(grep -c '^data: {' "$TMP/s$k.out")" -ge 20 ] || return 1; done; }
    wait_for 60 streaming || bad "gateway: the streams did not start: $(tail -3 "$TMP/gw.err")"
    at=$(cat "$TMP"/s?.out | grep -c '^data: {')
    victim=$(doc $B | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(Object.values(d.workers)[0])')
    for p in $B1 $B3; do [ "$(addr_of "b$([ $p = $B1 ] && echo 1 || echo 3)")" = "$victim" ] && VP=$p; done
    kill -9 ${VP:-$B1}
    for p in $SP; do wait $p; done
    rz=$(curl -s -m 10 -w ' %{http_code}' "$GW/readyz")
    case "$rz" in *200) ok "gateway /readyz after the kill: replicas hold every expert ($rz)" ;;
    *) bad "gateway /readyz after the kill: $rz" ;; esac
    total=$(cat "$TMP"/s?.out | grep -c '^data: {')
    good=0
    for k in 1 2 3 4; do
        ids=$(node -e 'const t = require("fs").readFileSync(process.argv[1], "utf8"); const ids = [];
            for (const ev of t.split("\n\n")) if (ev.startsWith("data: {")) { const c = JSON.parse(ev.slice(6)); if (c.error) { console.log("error " + JSON.stringify(c.error)); process.exit(0); } for (const ch of c.choices) ids.push(...(ch.token_ids || [])); }
            console.log(t.trimEnd().endsWith("data: [DONE]") ? ids.join(",") : "no [DONE]");' "$TMP/s$k.out")
        [ "$ids" = "$REF" ] && good=$((good + 1)) || echo "stream $k: $(echo "$ids" | head -c 200)"
    done
    [ $good = 4 ] && [ "$total" -gt "$at" ] &&
        ok "gateway: kill -9 of a worker with replicas mid-stream ($at of $total chunks sent at the fault): 4 of 4 streams complete, $NGEN tokens each, identical to the fault-free run" ||
        bad "gateway over the cluster: $good of 4 streams complete and identical ($at of $total chunks at the fault): $(tail -3 "$TMP/gw.err")"
else
    bad "gateway --redis did not start: $(tail -3 "$TMP/gw.err")"
fi
kill $GWP 2>/dev/null
# a password in the Redis URL never reaches a log line (the URL is shown redacted)
$RC CONFIG SET requirepass hunter2 >/dev/null
REDIS_URL="redis://:hunter2@127.0.0.1:$REDIS_PORT"
worker wp C 64M zp
router rp C
joined() { grep -q joined "$TMP/wp.err" && grep -q "prefix '" "$TMP/rp.err"; }
wait_for 10 joined || bad "with a password: no 'joined' line: $(tail -3 "$TMP/wp.err")"
if grep -q hunter2 "$TMP/wp.err" "$TMP/rp.err" "$TMP/wp.out" "$TMP/rp.out"; then
    bad "the Redis password is logged: $(grep -h hunter2 "$TMP/wp.err" "$TMP/rp.err" | head -2)"
elif grep -q 'redis://\*\*\*@127' "$TMP/wp.err" && grep -q 'redis://\*\*\*@127' "$TMP/rp.err"; then
    ok "a Redis URL with a password is logged redacted (redis://***@...)"
else
    bad "no redacted URL in the logs: $(head -c 300 "$TMP/rp.err")"
fi
exit $fail
