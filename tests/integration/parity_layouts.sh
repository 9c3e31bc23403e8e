#!/bin/sh
# Parity with llama.cpp on the GGUF layouts real files use (moemesh alone:
# layouts.sh). For each dtype (tolerances and seed as tests/lib/parity.sh
# sets them for llama: seed 3):
#   split models (gguf-split's -0000K-of-0000N.gguf): moectl logits on the
#   first part agree with llama.cpp's on the same files, and equal
#   moemesh's logits on the single merged file bit for bit;
#   the per-expert layout (pre-2024 Mixtral, blk.N.ffn_gate.E.weight):
#   moemesh's logits equal its merged-file logits bit for bit, which agree
#   with llama.cpp; the pinned llama.cpp itself no longer loads that layout
#   (its llama loader asks for blk.N.ffn_down_exps.weight; the per-expert
#   fallback was removed upstream), which this asserts, so a llama.cpp that
#   loads it again is noticed and compared directly.
# Both engines with an f32 KV cache (what the layouts change is the weights;
# the f16 cache's own comparison: tests/lib/parity.sh).
# Exit 0 pass, 77 skip (no reference engine), 1 fail.
set -u
. tests/lib/parity_env.sh
REF="node tests/ref/llama.mjs"
CMP="node tests/ref/compare.mjs"
SEED=3
for DT in ${PARITY_DTYPES:-f32 f16 bf16 q8_0}; do
    parity_tol "$DT" || { echo "unknown dtype $DT"; exit 1; }
    d="$TMP/$DT"
    mkdir -p "$d"
    mk() { "$MOECTL" mkmodel --arch llama --dtype "$DT" --seed $SEED "$@" >/dev/null || { echo "mkmodel $DT $* failed"; fail=1; }; }
    mk -o "$d/merged.gguf"
    mk --split 3 -o "$d/sp.gguf"
    mk --expert-layout per-expert -o "$d/pe.gguf"
    mk --expert-layout per-expert --split-max-tensors 16 -o "$d/pesp.gguf"
    logits() { "$MOECTL" logits "$1" --tokens "$TOKENS" --threads 1 --gate-margins --exact --cache-type f32; }
    logits "$d/merged.gguf" >"$d/merged.json" || { echo "moectl logits failed ($DT)"; fail=1; continue; }

    # split: llama.cpp opens the same parts
    SP="$d/sp-00001-of-00003.gguf"
    logits "$SP" >"$d/sp.json" || { echo "moectl logits on split failed ($DT)"; fail=1; continue; }
    $REF logits "$SP" --tokens "$TOKENS" --threads 1 --cache-type f32 >"$d/ref-sp.json" || { echo "reference logits on split failed ($DT)"; fail=1; continue; }
    printf 'split %-5s vs llama.cpp on the same 3 parts: ' "$DT"
    $CMP "$d/sp.json" "$d/ref-sp.json" $TOL || fail=1
    cmp -s "$d/sp.json" "$d/merged.json" && echo "split $DT: bit-identical to the merged single file" ||
        { echo "split $DT: differs from the merged single file"; fail=1; }

    # per-expert (and per-expert split): bit for bit the merged file, whose
    # logits agree with llama.cpp
    $REF logits "$d/merged.gguf" --tokens "$TOKENS" --threads 1 --cache-type f32 >"$d/ref.json" || { echo "reference logits failed ($DT)"; fail=1; continue; }
    for f in pe.gguf "$(cd "$d" && ls pesp-00001-of-*.gguf)"; do
        logits "$d/$f" >"$d/pe.json" || { echo "moectl logits on $f failed"; fail=1; continue; }
        cmp -s "$d/pe.json" "$d/merged.json" && echo "per-expert $DT $f: bit-identical to the merged file" ||
            { echo "per-expert $DT $f: differs from the merged file"; fail=1; }
        printf 'per-expert %-5s %s vs llama.cpp on the merged file: ' "$DT" "$f"
        $CMP "$d/pe.json" "$d/ref.json" $TOL || fail=1
    done
    if $REF logits "$d/pe.gguf" --tokens "$TOKENS" --threads 1 --cache-type f32 >"$d/ref-pe.json" 2>"$d/ref-pe.err"; then
        printf 'per-expert %-5s: this llama.cpp loads it; vs moemesh: ' "$DT"
        $CMP "$d/pe.json" "$d/ref-pe.json" $TOL || fail=1
    elif grep -q "missing tensor 'blk.0.ffn_down_exps.weight'" "$d/ref-pe.err"; then
        echo "per-expert $DT: the pinned llama.cpp refuses it (missing tensor 'blk.0.ffn_down_exps.weight'), as expected"
    else
        echo "per-expert $DT: llama.cpp failed otherwise: $(tail -n 3 "$d/ref-pe.err")"; fail=1
    fi
done
exit $fail
