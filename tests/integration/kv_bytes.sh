#!/bin/sh
# KV cache bytes per token equal llama.cpp's, for each cache type (f16, the
# default of both, and f32) and each cache shape: plain multi-head attention
# with GQA (llama), MLA's latent cache (deepseek2: K only, V is its latent
# part), and legacy MLA files' per-head cache (deepseek2 --kv-b: K rows of
# n_head x head_dim, V rows of n_head x head_dim_v). Ours: `moectl info
# --json` (kv_bytes_per_token, kv_bytes_per_token_f32); llama.cpp's: its
# log line "llama_kv_cache: size = X MiB (C cells, ...), K (t): A MiB, V (t):
# B MiB" for the same file. llama.cpp prints MiB with 2 decimals, so the
# models have 40 layers and wide heads (0.5-3 MiB over 256 cells), and ours
# is printed the same way. Also `moectl bench` and `moectl logits` run with
# each --cache-type and reject another type.
# Exit 0 pass, 77 skip (no reference engine), 1 fail.
set -u
. tests/lib/parity_env.sh
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
for spec in "llama" "deepseek2" "deepseek2 --kv-b"; do
    set -- $spec
    arch=$1 extra=${2:-}
    M="$TMP/$arch$extra.gguf"
    # shellcheck disable=SC2086 # extra: one option or none
    "$MOECTL" mkmodel --arch "$arch" --preset tiny --n-layer 40 --seed 1 $extra -o "$M" >/dev/null ||
        { bad "mkmodel $spec"; continue; }
    info=$("$MOECTL" info "$M" --json) || { bad "info $spec"; continue; }
    for kv in f16 f32; do
        key=kv_bytes_per_token
        [ $kv = f32 ] && key=kv_bytes_per_token_f32
        per=$(echo "$info" | node -e "console.log(JSON.parse(require('fs').readFileSync(0,'utf8')).$key)")
        line=$(node tests/ref/llama.mjs logits "$M" --tokens 1,2,3 --cache-type $kv --verbose 2>&1 >/dev/null |
            grep 'llama_kv_cache: size =') || { bad "$spec $kv: no llama_kv_cache size line from llama.cpp"; continue; }
        cells=$(echo "$line" | sed 's/.*( *\([0-9]*\) cells.*/\1/')
        theirs=$(echo "$line" | sed 's/.*size = *\([0-9.]*\) MiB.*/\1/')
        ours=$(node -e "console.log(($per * $cells / 1048576).toFixed(2))")
        if [ "$ours" = "$theirs" ] && echo "$line" | grep -q "K ($kv)"; then
            ok "$spec $kv: $per bytes/token, $ours MiB over $cells cells, as llama.cpp ($line)"
        else
            bad "$spec $kv: ours $per bytes/token = $ours MiB over $cells cells; llama.cpp: $line"
        fi
    done
done
# the flag, as users give it
M="$TMP/llama.gguf"
for kv in f16 f32; do
    out=$("$MOECTL" bench "$M" --prompt 8 --gen 4 --reps 1 --read-mb 0 --cache-type $kv) &&
        echo "$out" | grep -q "\"kv_type\": \"$kv\"" && ok "bench --cache-type $kv: $out" ||
        bad "bench --cache-type $kv: $out"
done
err=$("$MOECTL" logits "$M" --tokens 1,2 --cache-type q8_0 2>&1) && bad "--cache-type q8_0 accepted" ||
    { echo "$err" | grep -q "f16 or f32" && ok "--cache-type q8_0 refused: $err" || bad "--cache-type q8_0: $err"; }
a=$(MOE_CACHE_TYPE=f32 "$MOECTL" logits "$M" --tokens 1,2,3) && b=$("$MOECTL" logits "$M" --tokens 1,2,3 --cache-type f32) &&
    [ "$a" = "$b" ] && ok "MOE_CACHE_TYPE=f32 is --cache-type f32" || bad "MOE_CACHE_TYPE"
exit $fail
