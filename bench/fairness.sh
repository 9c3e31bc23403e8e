#!/bin/sh
# bench/fairness.sh - fair share between tenants (issue 15), in `make bench`:
# a quiet tenant sending one streaming request at a time with a pause of
# BENCH_FAIR_GAP_MS after each, next to a tenant flooding BENCH_FAIR_FLOOD
# concurrent streams, on a gateway with BENCH_FAIR_SEQS sequence slots (fewer
# than the flood's streams, so requests queue). Printed: the quiet tenant's
# TTFT p50/p99 alone, beside the flood first come first served (--schedule
# fifo), and with fair share (--schedule fair); the flood's tokens/s, and
# the total (both tenants' tokens generated while the flood ran, from the
# gateway's moemesh_gateway_generation_tokens_total, over the flood's wall
# time), whose fair / fifo ratio says what fairness costs in throughput.
# Targets (issue 15): with fair share the quiet p99 within 2x of alone; total
# throughput within 5% of FCFS.
set -u
. tests/lib/clean_env.sh
BUILD=${BUILD:-build}
GATEWAY="$BUILD/gateway"
LOAD="$BUILD/bench-gwload"
MODEL=${BENCH_MODEL:-models/bench-mixtral-q8_0.gguf}
T=${BENCH_GW_THREADS:-2}
SEQS=${BENCH_FAIR_SEQS:-16}
FLOOD=${BENCH_FAIR_FLOOD:-20}
FLOOD_R=${BENCH_FAIR_FLOOD_REQUESTS:-6}
QUIET_R=${BENCH_FAIR_QUIET_REQUESTS:-16}
GAP=${BENCH_FAIR_GAP_MS:-500}
Q_fifo="" Q_fair="" F_fifo="" F_fair="" T_fifo="" T_fair=""
P=${BENCH_FAIR_PROMPT:-128}
G=${BENCH_FAIR_GEN:-64}
QG=${BENCH_FAIR_QUIET_GEN:-16}
[ -f "$MODEL" ] || { echo "fairness bench: $MODEL missing (make bench makes it)"; exit 1; }
FT=$(mktemp -d)
GWPID="" FLPID="" QPID=""
stop_pid() { # PID: SIGTERM, up to 10 s, then SIGKILL
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null
    i=0
    while [ $i -lt 100 ] && kill -0 "$1" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
trap 'stop_pid "$QPID"; stop_pid "$FLPID"; stop_pid "$GWPID"; [ -n "${BENCH_FAIR_KEEP:-}" ] && cp "$FT"/gw-*.log /tmp/; rm -rf "$FT"' EXIT
trap 'exit 130' INT TERM
num() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

KF=moe-floodfloodfloodfloodfloodfloodfloodflood
KQ=moe-quietquietquietquietquietquietquietquiet
printf '{"tenants": [{"name": "flood", "keys": ["%s"]}, {"name": "quiet", "keys": ["%s"]}]}\n' \
    "$KF" "$KQ" >"$FT/tenants.json"

start_gw() { # SCHEDULE -> GWPID, PORT
    "$GATEWAY" --model "$MODEL" --served-model-name bench --listen 127.0.0.1:0 --threads "$T" \
        --max-seqs "$SEQS" --ctx 512 --tenants "$FT/tenants.json" --schedule "$1" \
        --drain-timeout 5s --log-format text >"$FT/gw-$1.log" 2>&1 &
    GWPID=$!
    PORT="" i=0
    while [ $i -lt 600 ] && [ -z "$PORT" ] && kill -0 "$GWPID" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
        PORT=$(sed -n 's|.*serving .* on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$FT/gw-$1.log" | head -1)
    done
    [ -n "$PORT" ] || { echo "gateway did not start: $(tail -3 "$FT/gw-$1.log")"; return 1; }
}
warm() { # one request first: the measured ones do not pay for a cold start
    "$LOAD" --addr "127.0.0.1:$PORT" --model bench --clients 1 --requests 1 --prompt-tokens "$P" \
        --gen 4 --seed 11 --key "$KQ" --quiet --timeout-ms 600000 >/dev/null
}
quiet() { # -> the quiet tenant's JSON line
    "$LOAD" --addr "127.0.0.1:$PORT" --model bench --clients 1 --requests "$QUIET_R" --gap-ms "$GAP" \
        --prompt-tokens "$P" --gen "$QG" --seed 7 --key "$KQ" --quiet --timeout-ms 600000
}
gen_total() { # the gateway's generated tokens so far
    curl -s "http://127.0.0.1:$PORT/metrics" |
        awk '$1 == "moemesh_gateway_generation_tokens_total" { print $2 }'
}
flood_start() {
    "$LOAD" --addr "127.0.0.1:$PORT" --model bench --clients "$FLOOD" --requests "$FLOOD_R" \
        --prompt-tokens "$P" --gen "$G" --seed 3 --key "$KF" --quiet --timeout-ms 600000 >"$FT/flood.json" &
    FLPID=$!
    sleep 2 # the flood fills the slots and the queue
}

echo "== fair share: a quiet tenant (1 stream, ${GAP} ms between requests) next to a flood of $FLOOD streams, $SEQS slots"
start_gw fair || exit 1
warm
ALONE=$(quiet)
stop_pid "$GWPID"
printf '%-22s %14s %14s %14s %14s\n' mode "quiet TTFT p50" "quiet TTFT p99" "flood tok/s" "total tok/s"
printf '%-22s %14s %14s %14s %14s\n' "quiet alone" "$(echo "$ALONE" | num ttft_p50_ms)" "$(echo "$ALONE" | num ttft_p99_ms)" "-" "-"
for mode in ${BENCH_FAIR_MODES:-fifo fair}; do
    start_gw $mode || exit 1
    warm
    G0=$(gen_total)
    flood_start
    quiet >"$FT/quiet.json" &
    QPID=$!
    wait "$FLPID"
    FLPID=""
    G1=$(gen_total)
    wait "$QPID"
    QPID=""
    stop_pid "$GWPID"
    F=$(cat "$FT/flood.json") Q=$(cat "$FT/quiet.json")
    TOT=$(awk -v a="$G0" -v b="$G1" -v w="$(echo "$F" | num wall_s)" \
        'BEGIN { if (a != "" && b != "" && w > 0) printf "%.1f", (b - a) / w; else print "" }')
    eval "Q_$mode=\$(echo \"\$Q\" | num ttft_p99_ms)"
    eval "F_$mode=\$(echo \"\$F\" | num tok_s)"
    eval "T_$mode=\$TOT"
    printf '%-22s %14s %14s %14s %14s\n' "with the flood, $mode" "$(echo "$Q" | num ttft_p50_ms)" \
        "$(echo "$Q" | num ttft_p99_ms)" "$(echo "$F" | num tok_s)" "$TOT"
done
echo "quiet p99, fair / alone: $(ratio "$Q_fair" "$(echo "$ALONE" | num ttft_p99_ms)") (target <= 2); fifo / alone: $(ratio "$Q_fifo" "$(echo "$ALONE" | num ttft_p99_ms)")"
echo "total tok/s, fair / fifo: $(ratio "$T_fair" "$T_fifo") (target >= 0.95); the flood's alone: $(ratio "$F_fair" "$F_fifo")"
