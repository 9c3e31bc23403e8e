#!/bin/sh
# bench/run.sh - `make bench`: moemesh against its peers, measured in the same
# run on the same input, printed as ratios.
#   1. each matrix x vector kernel's bytes/s against a plain memory-read loop
#      (build/bench-kernels);
#   2. decode and prefill tokens/s of moectl against llama.cpp (node-llama-cpp,
#      prebuilt) on the same GGUF: a Mixtral-architecture Q8_0 model (hidden
#      1024, 8 layers, 8 experts top-2, ff 2816, vocab 4096, ~620 MB) made by
#      moectl mkmodel, at 1 and 2 threads, and the best of each engine;
#   2b. the same on the bench preset quantised as Q4_K_M and IQ4_XS
#      (models/bench-mixtral-{q4_k_m,iq4_xs}.gguf, made on first use), with
#      decode's weight bandwidth (active bytes per token x tok/s) against the
#      read loop's, which moectl bench measures in the same run;
#   3. the gateway (bench/gateway.sh): N concurrent streaming clients against
#      moectl bench --batch N and llama.cpp serving N sequences, then running
#      streams' inter-token latency while long prompts arrive, chunked prefill
#      on and off;
#   4. experts over gRPC, the tokenizer, and the control plane (bench/cluster.sh:
#      failover stall, rebalance time, throughput during epoch switches).
# Env: BENCH_THREADS="1 2", BENCH_PROMPT=128, BENCH_GEN=64, BENCH_REPS=3,
#      BENCH_MODEL=models/bench-mixtral-q8_0.gguf, BENCH_QUANT="q4_k_m iq4_xs"
#      (2b's types; empty skips 2b), BENCH_ENGINE_ONLY=1 (1, 2 and 2b only),
#      BENCH_KERNELS_ARGS (bench-kernels options for 1, e.g. --matvec q4_K),
#      BENCH_GW=0 (skip 3; its
#      BENCH_GW_* and BENCH_CLIENTS knobs: bench/gateway.sh)
set -u
# no MOE_* twin leaks in from the caller's shell
. tests/lib/clean_env.sh
BUILD=${BUILD:-build}
MOECTL="$BUILD/moectl"
THREADS=${BENCH_THREADS:-"1 2"}
P=${BENCH_PROMPT:-128}
G=${BENCH_GEN:-64}
R=${BENCH_REPS:-3}
MODEL=${BENCH_MODEL:-models/bench-mixtral-q8_0.gguf}
. tests/ref/env.sh

echo "== kernels: matrix x vector bytes/s vs a plain memory-read loop (ratio = kernel / read)"
# shellcheck disable=SC2086 # BENCH_KERNELS_ARGS: bench-kernels options, e.g. --matvec q4_K,q6_K
"$BUILD/bench-kernels" ${BENCH_KERNELS_ARGS:-} || echo "bench-kernels failed"

have_ref=1
[ -d tests/ref/node_modules/node-llama-cpp ] || { have_ref=0; echo "llama.cpp reference not installed (make ref): ratios skipped"; }
num() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p"; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a > b) ? a : b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
gbs() { awk -v t="$1" -v b="$2" 'BEGIN { printf "%.2f", t * b / 1e9 }'; }

# mkmodel_if_missing PATH DTYPE: the bench preset (Mixtral-shaped) in DTYPE, seed 42
mkmodel_if_missing() {
    [ -f "$1" ] && return 0
    echo "== making $1 (moectl mkmodel --preset bench --dtype $2 --seed 42)"
    mkdir -p "$(dirname "$1")"
    "$MOECTL" mkmodel --arch llama --dtype "$2" --seed 42 --preset bench -o "$1"
}

# engine_bench MODEL: decode and prefill tok/s of moectl and llama.cpp at each
# thread count and the best of each; decode's weight bandwidth (active bytes
# per token x tok/s) and its fraction of the machine's read bandwidth at that
# thread count, which moectl bench measures after its runs (a plain summing
# loop, libmoe's moe_read_bandwidth, the one bench-kernels prints).
engine_bench() {
    M=$1
    echo "== engine: $M, prompt $P, gen $G, best of $R"
    best_ours_pf=0; best_ours_dec=0; best_ref_pf=0; best_ref_dec=0; AB=0; rbbest=0
    printf '%-8s %-8s %14s %14s %9s %12s %12s %10s %9s\n' threads phase "moectl tok/s" "llama.cpp" ratio \
        "moectl GB/s" "llama GB/s" "read GB/s" "of read"
    for t in $THREADS; do
        ours=$("$MOECTL" bench "$M" --prompt "$P" --gen "$G" --threads "$t" --reps "$R") || { echo "moectl bench failed"; return 1; }
        echo "moectl:    $ours" >&2
        o_pf=$(echo "$ours" | num prefill_tok_s); o_dec=$(echo "$ours" | num decode_tok_s)
        AB=$(echo "$ours" | num active_bytes_per_token)
        r_pf=0; r_dec=0
        if [ $have_ref = 1 ]; then
            ref=$(node tests/ref/llama.mjs bench "$M" --prompt "$P" --gen "$G" --threads "$t" --reps "$R" 2>/dev/null) || ref=""
            echo "llama.cpp: $ref" >&2
            r_pf=$(echo "$ref" | num prefill_tok_s); r_dec=$(echo "$ref" | num decode_tok_s)
            r_pf=${r_pf:-0}; r_dec=${r_dec:-0}
        fi
        rb=$(echo "$ours" | num read_gb_s); rb=${rb:-0}
        pg=$(echo "$ours" | num prefill_gops); pk=$(echo "$ours" | num int8_peak_gops)
        pu=$(echo "$ours" | sed -n 's/.*"int8_unit": "\([a-z0-9]*\)".*/\1/p')
        printf '%-8s %-8s %14.1f %14.1f %9s   %s GOPS, %s of the %s int8 peak (%s GOPS)\n' "$t" prefill "$o_pf" "$r_pf" \
            "$(ratio "$o_pf" "$r_pf")" "${pg:-?}" "$(ratio "${pg:-0}" "${pk:-0}")" "${pu:-?}" "${pk:-?}"
        printf '%-8s %-8s %14.1f %14.1f %9s %12s %12s %10s %9s\n' "$t" decode "$o_dec" "$r_dec" "$(ratio "$o_dec" "$r_dec")" \
            "$(gbs "$o_dec" "$AB")" "$(gbs "$r_dec" "$AB")" "$rb" "$(ratio "$(gbs "$o_dec" "$AB")" "$rb")"
        best_ours_pf=$(max "$best_ours_pf" "$o_pf")
        if [ "$(max "$best_ours_dec" "$o_dec")" != "$best_ours_dec" ]; then best_ours_dec=$o_dec; rbbest=$rb; fi
        best_ref_pf=$(max "$best_ref_pf" "$r_pf"); best_ref_dec=$(max "$best_ref_dec" "$r_dec")
    done
    printf '%-8s %-8s %14.1f %14.1f %9s\n' best prefill "$best_ours_pf" "$best_ref_pf" "$(ratio "$best_ours_pf" "$best_ref_pf")"
    printf '%-8s %-8s %14.1f %14.1f %9s %12s %12s %10s %9s\n' best decode "$best_ours_dec" "$best_ref_dec" "$(ratio "$best_ours_dec" "$best_ref_dec")" \
        "$(gbs "$best_ours_dec" "$AB")" "$(gbs "$best_ref_dec" "$AB")" "$rbbest" "$(ratio "$(gbs "$best_ours_dec" "$AB")" "$rbbest")"
    # 32 sequences decoding together: the batched tiles (each type's fast numerics)
    tmax=$(echo "$THREADS" | tr ' ' '\n' | sort -n | tail -1)
    b32=$("$MOECTL" bench "$M" --prompt 16 --gen 32 --batch 32 --threads "$tmax" --reps 2) || echo "moectl bench --batch 32 failed"
    d32=$(echo "$b32" | num decode_tok_s)
    printf '%-8s %-8s %14.1f %14s %9s   %s GOPS, %s of the %s int8 peak; %sx moectl batch 1\n' "$tmax" "32 seqs" \
        "${d32:-0}" "-" "-" "$(echo "$b32" | num decode_gops)" "$(echo "$b32" | num decode_compute_fraction)" \
        "$(echo "$b32" | sed -n 's/.*"int8_unit": "\([a-z0-9]*\)".*/\1/p')" "$(ratio "${d32:-0}" "$best_ours_dec")"
    echo "weights read per decoded token: $AB bytes (moectl's active_bytes_per_token); 'read GB/s': the read loop moectl bench runs after its runs, same threads; 'of read': moectl's GB/s over it (best: at moectl's best); prefill GOPS: 2 x active parameters x tok/s against the int8 unit's peak (moectl bench, same threads)"
}

mkmodel_if_missing "$MODEL" q8_0 || exit 1
engine_bench "$MODEL" || exit 1
echo "targets: decode >= 1.0x and prefill >= 0.8x llama.cpp's best thread count"

# ---- quantised models (issue 17): the bench preset in llama-quantize's Q4_K_M
# mix and in IQ4_XS; BENCH_QUANT="" skips them
for q in ${BENCH_QUANT-q4_k_m iq4_xs}; do
    QM=models/bench-mixtral-$q.gguf
    mkmodel_if_missing "$QM" "$q" || exit 1
    engine_bench "$QM" || exit 1
done
[ -n "${BENCH_QUANT-q4_k_m iq4_xs}" ] &&
    echo "targets (quantised): decode >= 2x llama.cpp's best thread count, at >= 0.8 of the read loop's bandwidth"
[ "${BENCH_ENGINE_ONLY:-0}" = 1 ] && exit 0

# ---- the gateway: N concurrent streams, and prefill interference -------------------
# bench/gateway.sh: build/gateway under build/bench-gwload's streaming clients beside
# moectl bench --batch N (the engine's ceiling) and llama.cpp serving the same load;
# its BENCH_GW_* knobs are listed there. BENCH_GW=0 skips it.
if [ "${BENCH_GW:-1}" != 0 ]; then
    BUILD=$BUILD BENCH_MODEL=$MODEL sh bench/gateway.sh || echo "gateway bench failed"
    BUILD=$BUILD BENCH_MODEL=$MODEL sh bench/fairness.sh || echo "fairness bench failed"
fi

# ---- tokenizer throughput ----------------------------------------------------------
if [ -d tests/ref/node_modules/@lenml/tokenizers ]; then
    echo "== tokenizer: MB/s on tests/data/tokenizer_corpus.json x 20 (best of 3), moectl vs the HF JS tokenizer"
    printf '%-14s %10s %10s %9s\n' vocabulary moectl "HF JS" ratio
    for name in llama3 qwen3 deepseek_v3 llama2; do
        J=$(node tests/ref/hf_tokenize.mjs "@lenml/tokenizer-$name" --path) ||
            { echo "hf_tokenize.mjs --path failed ($name)"; exit 1; }
        TM="$BUILD/bench-tok-$name.gguf"
        "$MOECTL" mkmodel --arch llama --dtype q8_0 --tokenizer "$J" -o "$TM" >/dev/null ||
            { echo "moectl mkmodel --tokenizer failed ($name)"; exit 1; }
        # a tokenize error (either side) fails the benchmark: no rate is printed for it
        o=$("$MOECTL" tokenize "$TM" --texts tests/data/tokenizer_corpus.json --bench 20) ||
            { echo "moectl tokenize --bench failed ($name)"; exit 1; }
        h=$(node tests/ref/hf_tokenize.mjs "@lenml/tokenizer-$name" --texts tests/data/tokenizer_corpus.json --bench 20) ||
            { echo "hf_tokenize.mjs --bench failed ($name)"; exit 1; }
        o=$(echo "$o" | num mb_s); h=$(echo "$h" | sed -n 's/.*"mb_s":\([0-9.]*\).*/\1/p')
        [ -n "$o" ] && [ -n "$h" ] || { echo "tokenizer bench ($name): no rate (moectl '$o', HF JS '$h')"; exit 1; }
        printf '%-14s %10.2f %10.2f %9s\n' "$name" "$o" "$h" "$(ratio "$o" "$h")"
    done
fi

# ---- experts over gRPC (loopback) ----------------------------------------------
echo "== experts on 2 expert-worker processes (loopback, 1 thread each) vs the single-process engine (2 threads)"
WORKER="$BUILD/expert-worker"
WTMP=$(mktemp -d)
WPIDS=""
trap 'for p in $WPIDS; do kill "$p" 2>/dev/null; done; rm -rf "$WTMP"' EXIT
# started in this shell (not in $(...)), so the EXIT trap knows every PID
start_w() {
    "$WORKER" --model "$MODEL" --listen 127.0.0.1:0 --experts "$2" --threads 1 >"$WTMP/$1.out" 2>"$WTMP/$1.err" &
    WPIDS="$WPIDS $!"
    i=0
    while [ $i -lt 100 ] && ! grep -q "listening on" "$WTMP/$1.out"; do sleep 0.1; i=$((i + 1)); done
}
start_w a 0-3
start_w b 4-7
WA=$(sed -n 's/^listening on //p' "$WTMP/a.out")
WB=$(sed -n 's/^listening on //p' "$WTMP/b.out")
if [ -z "$WA" ] || [ -z "$WB" ]; then
    echo "expert workers did not start"
else
    echo "-- one MoE layer, dispatch + combine (remote: 2 workers; local: 1 thread, then 2)"
    "$BUILD/bench-remote" "$MODEL" "$WA,$WB" --reps 200 --threads 1 | tee "$WTMP/layer.json"
    l1=$(grep '"rows":1,' "$WTMP/layer.json")
    echo "added per MoE layer at batch 1 (remote - local, 1 thread): p50 $(awk -v a="$(echo "$l1" | sed -n 's/.*"remote_p50_us":\([0-9.]*\).*/\1/p')" -v b="$(echo "$l1" | sed -n 's/.*"local_p50_us":\([0-9.]*\).*/\1/p')" 'BEGIN { printf "%.0f", a - b }') us, p99 $(awk -v a="$(echo "$l1" | sed -n 's/.*"remote_p99_us":\([0-9.]*\).*/\1/p')" -v b="$(echo "$l1" | sed -n 's/.*"local_p99_us":\([0-9.]*\).*/\1/p')" 'BEGIN { printf "%.0f", a - b }') us"
    "$BUILD/bench-remote" "$MODEL" "$WA,$WB" --reps 200 --threads 2 | grep moe_layer
    "$BUILD/bench-remote" "$MODEL" "$WA,$WB" --reps 200 --threads 1 --bf16 | grep -v '"rows":64'
    # --overlap: auto (the default) picks per batch size whichever of the
    # next two has been faster; on: every batch of 6+ as two overlapped
    # halves; off: one work per layer
    printf '%-8s %16s %12s %12s %16s %9s\n' batch "2 workers tok/s" "overlap on" "overlap off" "1 process tok/s" ratio
    for B in 1 8 32; do
        P2=$([ $B = 1 ] && echo 128 || echo 16)
        r=$("$MOECTL" bench "$MODEL" --prompt $P2 --gen 32 --batch $B --threads 2 --reps 2 --workers "$WA,$WB" | num decode_tok_s)
        on=$("$MOECTL" bench "$MODEL" --prompt $P2 --gen 32 --batch $B --threads 2 --reps 2 --workers "$WA,$WB" --overlap on | num decode_tok_s)
        off=$("$MOECTL" bench "$MODEL" --prompt $P2 --gen 32 --batch $B --threads 2 --reps 2 --workers "$WA,$WB" --overlap off | num decode_tok_s)
        l=$("$MOECTL" bench "$MODEL" --prompt $P2 --gen 32 --batch $B --threads 2 --reps 2 | num decode_tok_s)
        printf '%-8s %16.1f %12.1f %12.1f %16.1f %9s\n' "$B" "$r" "$on" "$off" "$l" "$(ratio "$r" "$l")"
    done
    echo "targets: a MoE layer at batch 1 adds <= 150 us p50; on 2 workers >= 0.9x the single process at 8 sequences, >= 0.95x at 32 (issue 18)"
    # the same two slices behind mutual TLS (certificates made here with openssl)
    C="$WTMP/certs"
    mkdir -p "$C"
    mk() { openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$1.key" -subj "/CN=$1" -out "$C/$1.csr" 2>/dev/null &&
        printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$1" >"$C/$1.ext" &&
        openssl x509 -req -in "$C/$1.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 1 -extfile "$C/$1.ext" -out "$C/$1.pem" 2>/dev/null; }
    if command -v openssl >/dev/null &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/ca.key" -subj /CN=ca -days 1 -out "$C/ca.pem" 2>/dev/null &&
        mk ta && mk tb && mk gw; then
        for n in ta tb; do
            "$WORKER" --model "$MODEL" --listen 127.0.0.1:0 --experts "$([ $n = ta ] && echo 0-3 || echo 4-7)" --threads 1 \
                --tls-cert "$C/$n.pem" --tls-key "$C/$n.key" --tls-ca "$C/ca.pem" >"$WTMP/$n.out" 2>"$WTMP/$n.err" &
            WPIDS="$WPIDS $!"
        done
        i=0
        while [ $i -lt 100 ] && ! { grep -qs "listening on" "$WTMP/ta.out" && grep -qs "listening on" "$WTMP/tb.out"; }; do sleep 0.1; i=$((i + 1)); done
        TA=$(sed -n 's/^listening on //p' "$WTMP/ta.out")
        TB=$(sed -n 's/^listening on //p' "$WTMP/tb.out")
        TLS="--tls-cert $C/gw.pem --tls-key $C/gw.key --tls-ca $C/ca.pem"
        printf '%-8s %16s %16s %9s\n' batch "mTLS tok/s" "plaintext tok/s" ratio
        for B in 1 32; do
            P2=$([ $B = 1 ] && echo 128 || echo 16)
            t=$("$MOECTL" bench "$MODEL" --prompt $P2 --gen 32 --batch $B --threads 2 --reps 2 --workers "ta@$TA,tb@$TB" $TLS | num decode_tok_s)
            r=$("$MOECTL" bench "$MODEL" --prompt $P2 --gen 32 --batch $B --threads 2 --reps 2 --workers "$WA,$WB" | num decode_tok_s)
            printf '%-8s %16.1f %16.1f %9s\n' "$B" "$t" "$r" "$(ratio "$t" "$r")"
        done
    fi
fi

# ---- the control plane (router-svc + Redis) ---------------------------------------
BUILD=$BUILD sh bench/cluster.sh
