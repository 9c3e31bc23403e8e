#!/bin/sh
# tests/cluster/faults.sh - the multi-host fault tests (`make test-cluster`;
# a short version, FAULTS="link leader", runs in `make test` through
# tests/integration/cluster_netns.sh). Every service on its own host (a
# network namespace, tests/cluster/lib.sh): redis, router-a and router-b
# (leader election), w1 (zone-a) and w2 (zone-b) holding every expert
# (--min-replicas 2), the gateway (API keys from Redis; mutual TLS to the
# workers, MH_TLS=0: plaintext), a client; every service logs in to Redis as
# its ACL role. While K streams (bench-gwload) generate through the
# gateway, each fault in $FAULTS:
#   link      w1's link down for FAULT_S s (ip link set down), then up again.
#             Must: every stream completes (on w2). Recovery: link up -> the
#             placement has every expert on both workers again.
#   slow      w2's link throttled (tc tbf, RATE) for the run. Reported: ITL and
#             how much of the work each worker served (worker /metrics),
#             against a fault-free run. Must: every stream completes.
#   redis     Redis partitioned away (nftables drops port 6379 in Redis'
#             namespace) for FAULT_S s. Must: every stream completes.
#             Recovery: rules gone -> placement with both workers, a leader.
#   leader    kill -9 of the leading router-svc. Must: every stream completes,
#             the standby leads. Recovery: kill -> the standby holds the lock.
# Prints the fault table: fault, streams completed / started, ITL p50/p99
# during the fault against before, time to recover. Env: K (streams, 4),
# GEN (tokens each, baseline, 300), FAULT_S (6), RATE (tbf rate, 1mbit),
# GEN_SLOW (tokens each under tbf, 60), GEN_FAULT (the other faults' tokens
# each; default: enough to outlast the fault), FAULTS.
# Exit 0 pass, 1 fail, 77 skip (not root, no ip netns).
# shellcheck disable=SC2015,SC2317 # (A && ok || bad; functions run by wait_for)
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/cluster/lib.sh
mh_require
K=${K:-4}
GEN=${GEN:-300}
FAULT_S=${FAULT_S:-6}
RATE=${RATE:-1mbit}
GEN_SLOW=${GEN_SLOW:-60}
FAULTS=${FAULTS:-link slow redis leader}
command -v node >/dev/null 2>&1 || { echo "skip: node is needed to read JSON (make deps)"; exit 77; }
[ -x "$BIN/bench-gwload" ] || { echo "skip: build/bench-gwload missing (make)"; exit 77; }
case " $FAULTS " in *" redis "*) command -v nft >/dev/null 2>&1 || {
    note "nft (nftables) is not installed: the Redis partition is skipped"; FAULTS=$(echo "$FAULTS" | sed 's/redis//'); } ;; esac

MODEL=$TMP/m.gguf
"$BIN/moectl" mkmodel --arch llama --dtype f32 --seed 5 --n-embd 256 --n-layer 4 --n-ff 512 \
    --n-expert 8 --n-vocab 512 --n-ctx 4096 -o "$MODEL" >/dev/null || { echo "FAIL: mkmodel"; exit 1; }
mh_up
mh_cluster || exit 1
# the client host reaches the gateway across the bridge
mh_in client curl -sN -m 30 -H 'Content-Type: application/json' -H "Authorization: Bearer $MH_KEY" \
    -d '{"model":"m","prompt":[1,2,3],"max_tokens":8,"temperature":0,"stream":true}' \
    "http://$(addr gateway):8080/v1/completions" >"$TMP/curl.out" 2>&1
grep -q '^data: \[DONE\]' "$TMP/curl.out" && ok "a stream from the client host across the bridge completes" ||
    bad "stream from the client host: $(tail -c 300 "$TMP/curl.out")"
code=$(mh_in client curl -s -m 10 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    -d '{"model":"m","prompt":[1],"max_tokens":1}' "http://$(addr gateway):8080/v1/completions")
[ "$code" = 401 ] && ok "without the API key: 401" || bad "without the API key: HTTP $code"

# load NAME [GEN]: K streams of GEN tokens from the gateway's host
# (bench-gwload: ITL p50/p99), and one more from the client host across the
# bridge (stream_gap.js: the longest stall), in the background
load() {
    mh_in gateway "$BIN/bench-gwload" --addr 127.0.0.1:8080 --key "$MH_KEY" --model m --clients "$K" --gen "${2:-$GEN}" \
        --prompt-tokens 16 --vocab 512 --timeout-ms 120000 --quiet >"$TMP/$1.json" 2>"$TMP/$1.err" &
    LPID=$!
    mh_in client node tests/cluster/stream_gap.js "http://$(addr gateway):8080" "${2:-$GEN}" >"$TMP/$1.gap" 2>&1 &
    CPID=$!
    PIDS="$PIDS $LPID $CPID"
}
# load_wait: for both (bounded by their own timeouts, and 150 s here)
load_wait() {
    i=0
    while { kill -0 "$LPID" 2>/dev/null || kill -0 "$CPID" 2>/dev/null; } && [ $i -lt 1500 ]; do sleep 0.1; i=$((i + 1)); done
    for p in $LPID $CPID; do
        kill -0 "$p" 2>/dev/null && { kill -KILL "$p"; bad "a load process still running after 150 s"; }
        wait "$p" 2>/dev/null
    done
}
jf() { node -e 'try { const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").pop()); const v = j[process.argv[2]]; console.log(v === undefined || v === null ? "-" : v); } catch (e) { console.log("-"); }' "$1" "$2"; }
# streams NAME: "completed/started" (bench-gwload's K and the client's one)
cdone() { [ "$(jf "$TMP/$1.gap" "done")" = true ]; }
streams() {
    r=$(jf "$TMP/$1.json" requests) e=$(jf "$TMP/$1.json" errors)
    [ "$r" = - ] && r=0
    cdone "$1" && r=$((r + 1))
    echo "$r/$((K + 1))$( [ "$e" != 0 ] && echo " (gwload errors $e)")"
}
all_done() { [ "$(jf "$TMP/$1.json" requests)" = "$K" ] && [ "$(jf "$TMP/$1.json" errors)" = 0 ] && cdone "$1"; }
stall() { echo "$(jf "$TMP/$1.gap" max_gap_ms) ms"; }
# settle: 1.5 s after the start (the streams run by then)
settle() { sleep 1.5; }
# running NAME: the fault ended while the load still ran (it hit mid-stream)
running() { kill -0 "$LPID" 2>/dev/null || bad "$1: the streams ended before the fault did (raise GEN_FAULT)"; }
# worker_rows W: rows the worker computed so far (its /metrics)
worker_rows() { mh_in "$1" curl -s -m 2 "http://$(addr "$1"):9101/metrics" 2>/dev/null | sed -n 's/^moemesh_worker_rows_total //p' | head -1; }
ROWS_METRIC=1
[ -n "$(worker_rows w1)" ] || ROWS_METRIC=0

TABLE="$TMP/table"
: >"$TABLE"
row() { printf '%-30s %-9s %-20s %-20s %-10s %s\n' "$1" "$2" "$3" "$4" "$5" "$6" >>"$TABLE"; }
itl() { echo "$(jf "$TMP/$1.json" itl_p50_ms)/$(jf "$TMP/$1.json" itl_p99_ms) ms"; }

# ==== the baseline: no fault ===============================================
[ "$ROWS_METRIC" = 1 ] && { r10=$(worker_rows w1); r20=$(worker_rows w2); }
load base
load_wait
all_done base && ok "baseline: $(streams base) streams, ITL p50/p99 $(itl base), $(jf "$TMP/base.json" tok_s) tok/s" ||
    bad "baseline: $(streams base): $(tail -3 "$TMP/base.err")"
if [ "$ROWS_METRIC" = 1 ]; then
    r11=$(worker_rows w1); r21=$(worker_rows w2)
    BASE_SHARE="w1 $((r11 - r10)) rows, w2 $((r21 - r20)) rows"
fi
# the fault runs' streams last the settle time, the fault (at least 6 s: the
# leader lock's 5 s TTL runs out in the leader kill) and 5 s more at the
# baseline's rate (GEN_FAULT overrides; at most 3500: the model's context)
if [ -z "${GEN_FAULT:-}" ]; then
    GEN_FAULT=$(node -e 'const r = +process.argv[1] / +process.argv[2]; console.log(Math.min(3500, Math.max(+process.argv[4], Math.ceil(r * (Math.max(+process.argv[3], 6) + 6.5)))))' \
        "$(jf "$TMP/base.json" tok_s)" "$K" "$FAULT_S" "$GEN" 2>/dev/null)
    [ -n "$GEN_FAULT" ] && [ "$GEN_FAULT" -gt 0 ] 2>/dev/null || GEN_FAULT=2000
fi
note "fault runs: $K streams x $GEN_FAULT tokens (the baseline's rate over max(${FAULT_S}, 6) s of fault and 6.5 s more: a fault may speed the rest up)"
row "fault" "streams" "ITL p50/p99 during" "ITL p50/p99 before" "max stall" "time to recover"
row "(none: baseline)" "$(streams base)" "$(itl base)" "-" "$(stall base)" "-"

for f in $FAULTS; do
    case $f in
    link) # ==== w1's link cut mid-stream, then restored ======================
        s0=$(gw_metric moemesh_gateway_expert_worker_suspects_total)
        load link "$GEN_FAULT"
        settle
        t0=$(now_ms)
        mh_in w1 ip link set eth0 down
        sleep "$FAULT_S"
        mh_in w1 ip link set eth0 up
        t1=$(now_ms)
        running link
        # recovery is timed while the streams still run (not after them)
        rec="-"
        if wait_for 30 placement_both; then rec="$(($(now_ms) - t1)) ms (w1 back in the placement)"; else bad "link: w1 not back in the placement 30 s after its link came up"; fi
        load_wait
        fail_ms=$(grep -c 'w1\|21:7000' "$TMP/gateway.log")
        all_done link && ok "link: w1's link down ${FAULT_S} s mid-stream: $(streams link) streams complete (on w2); ITL p50/p99 $(itl link) vs $(itl base)" ||
            bad "link: w1's link down: streams $(streams link): $(tail -3 "$TMP/link.err")"
        row "w1 link down ${FAULT_S}s" "$(streams link)" "$(itl link)" "$(itl base)" "$(stall link)" "$rec"
        # a silent w1 is given up on before the deadline (--suspect-ms), not
        # after it: its rows went to w2 while the 10 s deadline still ran
        s1=$(gw_metric moemesh_gateway_expert_worker_suspects_total)
        [ -n "$s1" ] && [ "${s1%.*}" -gt "${s0%.*}" ] 2>/dev/null &&
            ok "link: the silent w1 was given up on before the ${DEADLINE_MS:-10000} ms deadline (suspects_total ${s0} -> ${s1}); failover stall max $(gw_metric moemesh_gateway_expert_failover_stall_max_seconds) s" ||
            bad "link: no early failover: suspects_total ${s0:-none} -> ${s1:-none}"
        [ "$fail_ms" -gt 0 ] && note "gateway log lines naming w1 during the run: $fail_ms (last: $(grep 'w1\|21:7000' "$TMP/gateway.log" | tail -1 | cut -c1-160))"
        wait_for 10 gw_ready || bad "link: the gateway not ready after w1 came back"
        ;;
    slow) # ==== w2's bandwidth throttled for a whole run ======================
        [ "$ROWS_METRIC" = 1 ] && { a0=$(worker_rows w1); b0=$(worker_rows w2); }
        mh_in w2 tc qdisc add dev eth0 root tbf rate "$RATE" burst 16kbit latency 400ms ||
            bad "slow: tc qdisc add tbf failed"
        load slow "$GEN_SLOW"
        load_wait
        mh_in w2 tc qdisc del dev eth0 root
        share="-"
        if [ "$ROWS_METRIC" = 1 ]; then
            a1=$(worker_rows w1); b1=$(worker_rows w2)
            share="w1 $((a1 - a0)) rows, w2 $((b1 - b0)) rows (baseline: $BASE_SHARE)"
            # the gateway gives a row group to the replica that would finish it
            # first by its measured time per row (libmesh/src/remote.c
            # assign()): the throttled replica gets little of the work
            pc=$(( (b1 - b0) * 100 / ((a1 - a0) + (b1 - b0) + 1) ))
            if [ "$pc" -ge 25 ]; then
                bad "slow: traffic did not shift to the faster replica: the throttled w2 served ${pc}% of the rows"
            else
                ok "slow: traffic shifted to the faster replica: the throttled w2 served ${pc}% of the rows"
            fi
        fi
        all_done slow && ok "slow: w2 throttled to $RATE: $(streams slow) streams complete; ITL p50/p99 $(itl slow) vs $(itl base); work served: $share" ||
            bad "slow: w2 throttled: streams $(streams slow): $(tail -3 "$TMP/slow.err")"
        row "w2 egress tbf $RATE ($GEN_SLOW tok)" "$(streams slow)" "$(itl slow)" "$(itl base)" "$(stall slow)" "- (tbf removed: at once)"
        SLOW_SHARE=$share
        ;;
    redis) # ==== Redis partitioned away ======================================
        load redis "$GEN_FAULT"
        settle
        e0=$(active_epoch)
        mh_in redis nft -f - <<EOF || bad "redis: nft rules failed"
table inet mhfault {
    chain in { type filter hook input priority 0; tcp dport 6379 drop; }
    chain out { type filter hook output priority 0; tcp sport 6379 drop; }
}
EOF
        sleep "$FAULT_S"
        mh_in redis nft delete table inet mhfault
        t1=$(now_ms)
        running redis
        rec="-"
        # recovered: a leader, both workers' leases, the placement on both
        # (each condition timed from the end of the partition, while the
        # streams still run)
        two_leases() { [ "$(RC exists "$P:worker:w1" "$P:worker:w2")" = 2 ]; }
        wait_for 30 has_leader; tl=$(($(now_ms) - t1))
        wait_for 30 two_leases; tw=$(($(now_ms) - t1))
        if wait_for 30 placement_both; then
            rec="$(($(now_ms) - t1)) ms (leader ${tl} ms, leases ${tw} ms)"
        else
            bad "redis: no placement with both workers 30 s after the partition ended: $(doc | head -c 300)"
        fi
        load_wait
        all_done redis && ok "redis: Redis partitioned away ${FAULT_S} s mid-stream: $(streams redis) streams complete; ITL p50/p99 $(itl redis) vs $(itl base); epoch $e0 -> $(active_epoch)" ||
            bad "redis: Redis partitioned away: streams $(streams redis): $(tail -3 "$TMP/redis.err")"
        row "Redis partitioned ${FAULT_S}s" "$(streams redis)" "$(itl redis)" "$(itl base)" "$(stall redis)" "$rec"
        wait_for 10 gw_ready || bad "redis: the gateway not ready after the partition"
        ;;
    leader) # ==== the leading router-svc killed ==============================
        L=$(leader)
        case $L in router-a) LP=$PID_router_a S=router-b ;; router-b) LP=$PID_router_b S=router-a ;;
        *) bad "leader: no leader in Redis ('$L')"; continue ;; esac
        load leader "$GEN_FAULT"
        settle
        t0=$(now_ms)
        kill -KILL "$LP"
        wait "$LP" 2>/dev/null
        rec="-"
        standby() { [ "$(leader)" = "$S" ]; }
        if wait_for 15 standby; then
            tl=$(($(now_ms) - t0))
            rec="$tl ms ($S leads)"
            ok "leader: $L killed (kill -9); $S leads after $tl ms (the lock's TTL is 5000 ms)"
        else
            bad "leader: $S does not lead 15 s after $L's kill: $(tail -3 "$TMP/$S.log")"
        fi
        running leader
        load_wait
        all_done leader && ok "leader: $(streams leader) streams complete across the kill; ITL p50/p99 $(itl leader) vs $(itl base)" ||
            bad "leader: streams $(streams leader): $(tail -3 "$TMP/leader.err")"
        row "leading router-svc kill -9" "$(streams leader)" "$(itl leader)" "$(itl base)" "$(stall leader)" "$rec"
        ;;
    *) bad "unknown fault '$f'" ;;
    esac
done

echo
echo "== multi-host fault table ($K bench-gwload streams from the gateway host + 1 from the client host; baseline $GEN tokens each, faults $GEN_FAULT; $( [ "$MH_TLS" = 1 ] && echo "mutual TLS" || echo plaintext), Redis ACL users, API keys)"
echo "   ITL: bench-gwload p50/p99 over the run that carried the fault; max stall: the client stream's longest gap between tokens"
cat "$TABLE"
[ -n "${SLOW_SHARE:-}" ] && echo "slow: work served during the throttled run: $SLOW_SHARE"
for h in gateway w1 w2 router-a router-b; do
    [ -s "$TMP/$h.log" ] && [ "${VERBOSE:-0}" = 1 ] && { echo "-- $h"; tail -n 5 "$TMP/$h.log"; }
done
exit $fail
