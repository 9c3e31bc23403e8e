#!/bin/sh
# The gateway's greedy completions equal llama.cpp's greedy tokens, for every
# architecture, with the experts in the gateway's process and on two
# expert-workers. The prompts are token ids, sent at once (they share engine
# steps: continuous batching must not change a sequence's numbers), half of
# them streamed. Models: moectl mkmodel, f32 (the dtype whose greedy tokens
# llama.cpp matches exactly; see tests/lib/parity.sh). Only processes started
# here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
MOECTL=$BUILD/moectl
. tests/ref/env.sh
[ -d tests/ref/node_modules/node-llama-cpp ] || { echo "skip: llama.cpp reference not installed (make ref)"; exit 77; }
N=12
PROMPTS="1,17,300,42,99,7;5,6,7,8;250,3,3,3,3,3,3,3,3,3,3,2;11;400,401,402,403,404,405,406,407,408,409,410,411,412,413,414,415,416,417,418,419,420,421,422,423,424,425,426,427,428,429,430,431,432,433"

for arch in llama qwen2moe qwen3moe olmoe deepseek deepseek2; do
    M="$TMP/$arch.gguf"
    "$MOECTL" mkmodel --arch "$arch" --dtype f32 --seed 7 -o "$M" >/dev/null || { bad "mkmodel $arch"; continue; }
    # llama.cpp's greedy tokens, one prompt at a time
    ref=""
    old_ifs=$IFS; IFS=';'; set -- $PROMPTS; IFS=$old_ifs
    for p in "$@"; do
        r=$(node tests/ref/llama.mjs generate "$M" --tokens "$p" -n $N 2>"$TMP/ref.err" | node -e \
            'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).tokens.join(","))') ||
            { bad "$arch: llama.cpp generate: $(tail -2 "$TMP/ref.err")"; continue 2; }
        ref="$ref${ref:+;}$r"
    done
    n=$("$MOECTL" info "$M" --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).hparams.n_expert)')
    worker "$arch-a" "$M" "0-$((n / 2 - 1))"; A=$ADDR; PA=$WPID
    worker "$arch-b" "$M" "$((n / 2))-$((n - 1))"; B=$ADDR; PB=$WPID
    for where in local workers; do
        if [ $where = local ]; then gateway "$arch-$where" --model "$M" || continue
        else gateway "$arch-$where" --model "$M" --workers "$A,$B" || continue; fi
        out=$(node tests/ref/gw_greedy.mjs --base "$GW" --model "$arch" --prompts "$PROMPTS" -n $N 2>&1 | node -e \
            'try { console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).results.map(r => r.join(",")).join(";")) } catch (e) { console.log("error") }')
        if [ "$out" = "$ref" ]; then
            ok "$arch, experts $where: 5 concurrent greedy completions ($N tokens) equal llama.cpp's"
        else
            bad "$arch, experts $where: gateway $out; llama.cpp $ref"
        fi
        stop $GPID
    done
    stop $PA; stop $PB
done
exit $fail
