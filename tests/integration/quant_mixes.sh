#!/bin/sh
# mkmodel's llama-quantize mixes (--dtype q2_k, q3_k_m, q4_k_m, q5_k_m; with
# --pure) against llama-quantize itself: for each case mkmodel writes the
# model in f32, the reference llama.cpp quantises it to the mix
# (tests/ref/quantize.c: llama_model_quantize from node-llama-cpp's
# libllama, the pinned release), and mkmodel --dtype MIX must write the same
# tensors (tests/lib/gguf_diff.py): each of the same type (the mix's rules
# in testmodel.c mix_type, the fallback for rows a type does not fit) and
# the same bytes (moemesh's quantisers are ggml's). The cases reach every
# rule for the tensors these models have: 8 experts or not, GQA 4, 16 and
# 80 layers (Q3_K_M's first n_layer/16 ffn_down, llama.cpp's 70B), one
# expert (ffn_down by counter), rows of 128 (fallbacks), deepseek2's MLA and
# legacy attn_kv_b, per-expert tensors. Exit 0 pass, 77 skip, 1 fail.
set -u
. tests/lib/parity_env.sh
LIB="$PWD/tests/ref/node_modules/node-llama-cpp/bins/linux-x64"
if [ ! -f "$LIB/libllama.v0.5.0.so" ]; then echo "no libllama.v0.5.0.so in the reference"; exit 77; fi
command -v python3 >/dev/null || { echo "python3 not installed"; exit 77; }
CC=${CC:-cc}
$CC -O1 -o "$TMP/quantize" tests/ref/quantize.c "$LIB/libllama.v0.5.0.so" -Wl,-rpath,"$LIB" ||
    { echo "cannot build tests/ref/quantize.c"; exit 1; }
K256="--n-embd 256 --n-ff 256"
# job LABEL MIXES MKMODEL-ARGS...: one model, written once in f32, then for
# each of MIXES ("ftype:dtype:pure" words) quantised by llama.cpp and by
# mkmodel and compared. Prints its rows; its exit status is 1 on a mismatch.
# Jobs run two at a time (they are independent), each in its own folder.
job() {
    label=$1 mixes=$2
    shift 2
    d="$TMP/$label.$$"
    mkdir -p "$d"
    "$MOECTL" mkmodel "$@" --dtype f32 -o "$d/f32.gguf" >/dev/null ||
        { echo "$label: mkmodel --dtype f32 failed"; return 1; }
    rc=0
    for m in $mixes; do
        ft=${m%%:*} dt=${m#*:} pure=${m##*:}
        dt=${dt%%:*}
        p=""
        [ "$pure" = 1 ] && p=--pure
        # shellcheck disable=SC2086 # $p: an option or none
        if ! "$TMP/quantize" "$d/f32.gguf" "$d/ref.gguf" "$ft" $p >"$d/quantize.log" 2>&1 ||
            ! "$MOECTL" mkmodel "$@" --dtype "$dt" $p -o "$d/ours.gguf" >/dev/null; then
            echo "$label $dt $p: mkmodel or llama_model_quantize failed"
            tail -n 5 "$d/quantize.log"
            rc=1
            continue
        fi
        printf '%-22s %-6s %-6s ' "$label" "$dt" "$p"
        python3 tests/lib/gguf_diff.py "$d/ours.gguf" "$d/ref.gguf" || rc=1
    done
    rm -rf "$d"
    return $rc
}
MIXES="10:q2_k:0 12:q3_k_m:0 15:q4_k_m:0 17:q5_k_m:0"
PURE="10:q2_k:1 12:q3_k_m:1 15:q4_k_m:1"
n=0
: >"$TMP/labels"
# the cases, then the --pure ones (for llama and deepseek2)
while read -r label args; do
    mixes=$MIXES
    case $label in *-pure) mixes=$PURE ;; esac
    # shellcheck disable=SC2086 # $args: mkmodel options
    { job "$label" "$mixes" $args >"$TMP/$label.out" 2>&1 || echo FAIL >"$TMP/$label.fail"; } &
    n=$((n + 1))
    [ $((n % 2)) -eq 0 ] && wait
    echo "$label" >>"$TMP/labels"
done <<EOF_CASES
llama-256 --arch llama $K256
llama-e4-gqa4 --arch llama $K256 --n-expert 4 --n-head 8 --n-head-kv 2 --head-dim 32 --n-layer 3
llama-e4-16l --arch llama $K256 --n-expert 4 --n-layer 16
llama-e2-80l --arch llama --n-embd 256 --n-ff 32 --n-expert 2 --n-expert-used 1 --n-layer 80 --n-vocab 300
llama-128 --arch llama
llama-per-expert --arch llama $K256 --expert-layout per-expert
qwen2moe-256 --arch qwen2moe $K256
qwen2moe-e1-16l --arch qwen2moe $K256 --n-expert 1 --n-expert-used 1 --n-layer 16 --n-ff-shexp 256
qwen3moe-e6 --arch qwen3moe $K256 --n-expert 6
olmoe-256 --arch olmoe $K256
deepseek-256 --arch deepseek $K256
deepseek2-16l --arch deepseek2 $K256 --n-layer 16
deepseek2-v2 --arch deepseek2 --preset tiny-v2 $K256
deepseek2-kv-b --arch deepseek2 $K256 --kv-b
deepseek2-kv-b-e8 --arch deepseek2 $K256 --kv-b --n-expert 8 --n-expert-used 2
deepseek2-128 --arch deepseek2
llama-256-pure --arch llama $K256
deepseek2-256-pure --arch deepseek2 $K256
EOF_CASES
wait
rows=0
while read -r label; do
    cat "$TMP/$label.out"
    [ -e "$TMP/$label.fail" ] && fail=1
    rows=$((rows + $(grep -c ' same: ' "$TMP/$label.out")))
done <"$TMP/labels"
echo "quant_mixes: $rows of 70 cases the same"
[ "$rows" -eq 70 ] || fail=1
exit "$fail"
