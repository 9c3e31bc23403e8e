#!/bin/sh
# bench/gateway.sh - the gateway under load (called by bench/run.sh; runs on
# its own too: sh bench/gateway.sh). Everything on loopback, every run bounded.
#   1. N concurrent streaming clients (build/bench-gwload) against
#      build/gateway, for N in BENCH_CLIENTS; beside it, in the same run on the
#      same model and threads: the engine's own batched throughput
#      (moectl bench --batch N, the ceiling) and llama.cpp serving the same
#      load (tests/ref/llama.mjs serve: one context, N sequences decoding
#      together). Every figure counts prefill + decode: N prompts of P random
#      ids, G tokens each.
#   2. prefill interference: BENCH_GW_BG_STREAMS streams decoding while
#      BENCH_GW_LONG-token prompts keep arriving, with --chunked-prefill on
#      and off: the running streams' inter-token p50, p99 and p99/p50.
# Env: BENCH_MODEL (default models/bench-mixtral-q8_0.gguf, made if missing),
#      BENCH_CLIENTS="1 8 32 64", BENCH_GW_THREADS=2, BENCH_GW_PROMPT=128,
#      BENCH_GW_GEN=64, BENCH_GW_REQUESTS=1 (per client), BENCH_GW_REPS=1
#      (moectl bench), BENCH_GW_SLO_TTFT_MS=10000, BENCH_GW_SLO_ITL_MS=250,
#      BENCH_GW_TIMEOUT_S=300 (each load run and each llama.cpp run),
#      BENCH_GW_BG_STREAMS=32, BENCH_GW_BG_PROMPT=32, BENCH_GW_BG_GEN=128,
#      BENCH_GW_LONG=512, BENCH_GW_LONG_EVERY_MS=250, BENCH_GW_CHUNKED="true false",
#      BENCH_GW_FLAGS (more gateway flags, e.g. "--max-batch-tokens 512"),
#      BENCH_GW_REF=0 (no llama.cpp), BENCH_GW_SCENARIOS="streams prefill".
set -u
. tests/lib/clean_env.sh
BUILD=${BUILD:-build}
MOECTL="$BUILD/moectl"
GATEWAY="$BUILD/gateway"
LOAD="$BUILD/bench-gwload"
MODEL=${BENCH_MODEL:-models/bench-mixtral-q8_0.gguf}
CLIENTS=${BENCH_CLIENTS:-"1 8 32 64"}
T=${BENCH_GW_THREADS:-2}
P=${BENCH_GW_PROMPT:-128}
G=${BENCH_GW_GEN:-64}
R=${BENCH_GW_REQUESTS:-1}
REPS=${BENCH_GW_REPS:-1}
SLO_TTFT=${BENCH_GW_SLO_TTFT_MS:-10000}
SLO_ITL=${BENCH_GW_SLO_ITL_MS:-250}
TO=${BENCH_GW_TIMEOUT_S:-300}
BG_N=${BENCH_GW_BG_STREAMS:-32}
BG_P=${BENCH_GW_BG_PROMPT:-32}
BG_G=${BENCH_GW_BG_GEN:-128}
LONG=${BENCH_GW_LONG:-512}
LONG_EVERY=${BENCH_GW_LONG_EVERY_MS:-250}
CHUNKED=${BENCH_GW_CHUNKED:-"true false"}
GW_FLAGS=${BENCH_GW_FLAGS:-}
SCEN=${BENCH_GW_SCENARIOS:-"streams prefill"}
. tests/ref/env.sh

for b in "$MOECTL" "$GATEWAY" "$LOAD"; do
    [ -x "$b" ] || { echo "gateway bench: $b missing (make)"; exit 1; }
done
if [ ! -f "$MODEL" ]; then
    echo "== making $MODEL (moectl mkmodel --preset bench --dtype q8_0 --seed 42)"
    mkdir -p "$(dirname "$MODEL")"
    "$MOECTL" mkmodel --arch llama --dtype q8_0 --seed 42 --preset bench -o "$MODEL" >/dev/null || exit 1
fi
have_ref=1
[ "${BENCH_GW_REF:-1}" != 0 ] || have_ref=0
[ $have_ref = 0 ] || [ -d tests/ref/node_modules/node-llama-cpp ] ||
    { have_ref=0; echo "llama.cpp reference not installed (make ref): its columns are n/a"; }

GT=$(mktemp -d)
GWPID=""
stop_gw() {
    [ -n "$GWPID" ] || return 0
    kill "$GWPID" 2>/dev/null
    i=0
    while [ $i -lt 100 ] && kill -0 "$GWPID" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$GWPID" 2>/dev/null
    wait "$GWPID" 2>/dev/null
    GWPID=""
}
trap 'stop_gw; rm -rf "$GT"' EXIT
trap 'exit 130' INT TERM

num() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
f1() { awk -v a="$1" 'BEGIN { if (a == "") print "n/a"; else printf "%.1f", a }'; }
f2() { awk -v a="$1" 'BEGIN { if (a == "") print "n/a"; else printf "%.2f", a }'; }

# prompt ids in [1, min(vocabulary, 4000)); positions per sequence for every run
V=$("$MOECTL" info "$MODEL" | sed -n 's/^layers.*vocabulary \([0-9]*\).*/\1/p')
[ -n "$V" ] || { echo "gateway bench: cannot read the vocabulary size of $MODEL"; exit 1; }
[ "$V" -gt 4000 ] && V=4000
CTX=$(awk -v a=$((P + G)) -v b=$((BG_P + BG_G)) -v c=$((LONG + 1)) \
    'BEGIN { m = a; if (b > m) m = b; if (c > m) m = c; print int((m + 63) / 64) * 64 }')

# start_gw NAME SEQS FLAGS...: the gateway on a free port; sets GWPID and PORT
start_gw() {
    name=$1 seqs=$2
    shift 2
    # shellcheck disable=SC2086
    "$GATEWAY" --model "$MODEL" --served-model-name bench --listen 127.0.0.1:0 --threads "$T" \
        --max-seqs "$seqs" --ctx "$CTX" --drain-timeout 5s --log-format text "$@" $GW_FLAGS \
        >"$GT/$name.log" 2>&1 &
    GWPID=$!
    PORT=""
    i=0
    while [ $i -lt 600 ] && [ -z "$PORT" ] && kill -0 "$GWPID" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
        PORT=$(sed -n 's|.*serving .* on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$GT/$name.log" | head -1)
    done
    if [ -z "$PORT" ]; then
        echo "gateway did not start ($name):"
        tail -5 "$GT/$name.log"
        stop_gw
        return 1
    fi
}
# gw_alive NAME: 0 if the gateway still runs; else its log's tail
gw_alive() {
    kill -0 "$GWPID" 2>/dev/null && return 0
    echo "gateway exited during the run ($1):"
    tail -5 "$GT/$1.log"
    wait "$GWPID" 2>/dev/null
    echo "  exit status $?"
    GWPID=""
    return 1
}

# ---- 1. N concurrent streams ------------------------------------------------------
case " $SCEN " in *" streams "*)
    echo "== gateway: N concurrent streams ($MODEL, $T threads, prompt $P, gen $G, $R request(s) per client)"
    echo "   tok/s: completion tokens / wall time, prompts included; engine: moectl bench --batch N"
    echo "   (N*G / (prefill + G-1 decode steps)); llama.cpp: one context, N sequences together;"
    echo "   goodput: requests/s with G tokens, TTFT <= ${SLO_TTFT} ms and mean ITL <= ${SLO_ITL} ms"
    printf '%-4s %9s %9s %7s %9s %7s %9s %9s %8s %8s %8s %10s %10s\n' N "gateway" engine "gw/eng" \
        "llama.cpp" "gw/llama" "TTFT p50" "TTFT p99" "ITL p50" "ITL p99" goodput "llama ITL" "llama p99"
    for N in $CLIENTS; do
        gw="" ttft50="" ttft99="" itl50="" itl99="" good=""
        if start_gw "streams-$N" "$N"; then
            # warm-up (untimed): the same shapes, 2 tokens each
            "$LOAD" --addr "127.0.0.1:$PORT" --model bench --clients "$N" --prompt-tokens "$P" \
                --gen 2 --seed 999 --vocab "$V" --timeout-ms "${TO}s" --quiet >/dev/null ||
                echo "warm-up load failed (N=$N)"
            out=$("$LOAD" --addr "127.0.0.1:$PORT" --model bench --clients "$N" --prompt-tokens "$P" \
                --gen "$G" --requests "$R" --seed 1 --vocab "$V" --timeout-ms "${TO}s" \
                --slo-ttft-ms "$SLO_TTFT" --slo-itl-ms "$SLO_ITL" --quiet) ||
                echo "bench-gwload failed (N=$N): see its errors above"
            echo "gateway:   $out" >&2
            gw_alive "streams-$N" || out=""
            stop_gw
            gw=$(echo "$out" | num tok_s)
            ttft50=$(echo "$out" | num ttft_p50_ms); ttft99=$(echo "$out" | num ttft_p99_ms)
            itl50=$(echo "$out" | num itl_p50_ms); itl99=$(echo "$out" | num itl_p99_ms)
            good=$(echo "$out" | num goodput)
        fi
        eng=""
        ours=$(timeout "$TO" "$MOECTL" bench "$MODEL" --prompt "$P" --gen "$G" --batch "$N" \
            --threads "$T" --reps "$REPS") || echo "moectl bench failed (N=$N)"
        echo "engine:    $ours" >&2
        pf=$(echo "$ours" | num prefill_tok_s); dec=$(echo "$ours" | num decode_tok_s)
        [ -n "$pf" ] && [ -n "$dec" ] &&
            eng=$(awk -v n="$N" -v p="$P" -v g="$G" -v pf="$pf" -v dec="$dec" \
                'BEGIN { printf "%.3f", n * g / (n * p / pf + n * (g - 1) / dec) }')
        ref="" ritl50="" ritl99=""
        if [ $have_ref = 1 ]; then
            r=$(timeout "$TO" node tests/ref/llama.mjs serve "$MODEL" --sequences "$N" --prompt "$P" \
                --gen "$G" --threads "$T" --vocab "$V" 2>"$GT/ref-$N.err") ||
                { echo "llama.mjs serve failed (N=$N):"; tail -3 "$GT/ref-$N.err"; }
            echo "llama.cpp: $r" >&2
            ref=$(echo "$r" | num tok_s)
            ritl50=$(echo "$r" | num itl_p50_ms); ritl99=$(echo "$r" | num itl_p99_ms)
        fi
        printf '%-4s %9s %9s %7s %9s %7s %9s %9s %8s %8s %8s %10s %10s\n' "$N" "$(f1 "$gw")" \
            "$(f1 "$eng")" "$(ratio "$gw" "$eng")" "$(f1 "$ref")" "$(ratio "$gw" "$ref")" \
            "$(f1 "$ttft50")" "$(f1 "$ttft99")" "$(f1 "$itl50")" "$(f1 "$itl99")" "$(f2 "$good")" \
            "$(f1 "$ritl50")" "$(f1 "$ritl99")"
    done
    echo "targets: at 32 streams gateway >= 0.9x the engine and >= 4x llama.cpp"
    ;;
esac

# ---- 2. prefill interference: long prompts arriving while streams decode ----------
case " $SCEN " in *" prefill "*)
    echo "== gateway: $BG_N streams decoding (prompt $BG_P, gen $BG_G) while $LONG-token prompts arrive"
    echo "   (one more connection, max_tokens 1, the next ${LONG_EVERY} ms after each answer);"
    echo "   ITL of the running streams only, from when all of them decode"
    printf '%-16s %9s %9s %8s %11s %12s %9s\n' "chunked prefill" "ITL p50" "ITL p99" "p99/p50" \
        "long done" "long p50 ms" "tok/s"
    for cp in $CHUNKED; do
        # a slot for the long prompt beside the streams
        start_gw "prefill-$cp" $((BG_N + 1)) --chunked-prefill="$cp" || continue
        "$LOAD" --addr "127.0.0.1:$PORT" --model bench --clients "$BG_N" --prompt-tokens "$BG_P" \
            --gen 2 --seed 999 --vocab "$V" --timeout-ms "${TO}s" --quiet >/dev/null ||
            echo "warm-up load failed (chunked prefill $cp)"
        out=$("$LOAD" --addr "127.0.0.1:$PORT" --model bench --clients "$BG_N" --prompt-tokens "$BG_P" \
            --gen "$BG_G" --seed 2 --vocab "$V" --long-prompt-tokens "$LONG" \
            --long-every-ms "$LONG_EVERY" --timeout-ms "${TO}s" --slo-ttft-ms "$SLO_TTFT" \
            --slo-itl-ms "$SLO_ITL" --quiet) ||
            echo "bench-gwload failed (chunked prefill $cp): see its errors above"
        echo "gateway:   $out" >&2
        gw_alive "prefill-$cp" || out=""
        stop_gw
        printf '%-16s %9s %9s %8s %11s %12s %9s\n' "$cp" "$(f1 "$(echo "$out" | num itl_p50_ms)")" \
            "$(f1 "$(echo "$out" | num itl_p99_ms)")" "$(f2 "$(echo "$out" | num itl_p99_over_p50)")" \
            "$(echo "$out" | num long_requests)" "$(f1 "$(echo "$out" | num long_latency_p50_ms)")" \
            "$(f1 "$(echo "$out" | num tok_s)")"
    done
    echo "target: with chunked prefill, the running streams' ITL p99 < 3x their p50"
    ;;
esac
