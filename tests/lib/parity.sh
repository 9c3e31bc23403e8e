#!/bin/sh
# tests/lib/parity.sh ARCH [PRESET] - moemesh against llama.cpp on `moectl
# mkmodel` models of one architecture (and mkmodel preset), for each dtype:
#   teacher-forced logits at every position within a per-dtype tolerance
#   (positions whose reference top-2 margin is tiny are skipped for the
#   quantised dtypes, where a near-tied expert or token can flip), and for
#   f32 the 16-token greedy continuation identical.
# Tolerances (max abs logit difference; logits have std ~2):
#   f32 1e-4 at every position; f16 1e-2, bf16 5e-2, q8_0 1e-1 at positions
#   whose reference top-2 margin is >= 0.05. Why not tighter: both engines
#   round activations to the weight type before each product, so a 1e-7
#   difference in summation order upstream can flip one activation's rounding
#   (an f16 ulp is 2^-11, a bf16 ulp 2^-8 relative), which moves logits by
#   ~1e-3 (f16) to ~1e-2 (bf16). Q8_0 products are integer-exact and agree to
#   ~1e-6 when no quantisation step flips; one flipped Q8_0 step (1/127 of a
#   block's range) moves these models' logits by up to ~0.07. Where a flipped step meets a
#   nearly tied expert choice, that token (and later ones attending to it)
#   takes another expert and differs by O(0.1-1): for the quantised dtypes at
#   least 75% of compared positions must be within tolerance, and every
#   outlier is printed. f32 has no such amplification and must hold at every
#   position.
# Exit 0 pass, 77 skip (no reference engine), 1 fail.
set -u
ARCH=$1
PRESET=${2:-tiny}
MOECTL=${MOECTL:-build/moectl}
REF="node tests/ref/llama.mjs"
CMP="node tests/ref/compare.mjs"
if [ ! -d tests/ref/node_modules/node-llama-cpp ]; then
    echo "llama.cpp reference not installed (make ref)"; exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
TOKENS="1,17,300,42,99,7,256,5,64,128,255,3,77,410,12,8,200,33,90,150,11,60,480,2"
fail=0
for DT in ${PARITY_DTYPES:-f32 f16 bf16 q8_0}; do
    case $DT in
        f32)  TOL="--atol 1e-4" ;;
        f16)  TOL="--atol 1e-2 --margin 0.05 --min-frac 0.75" ;;
        bf16) TOL="--atol 5e-2 --margin 0.05 --min-frac 0.75" ;;
        q8_0) TOL="--atol 1e-1 --margin 0.05 --min-frac 0.75" ;;
    esac
    M="$TMP/$ARCH-$DT.gguf"
    "$MOECTL" mkmodel --arch "$ARCH" --preset "$PRESET" --dtype "$DT" --seed 7 -o "$M" >/dev/null || { echo "mkmodel failed"; exit 1; }
    "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 1 >"$TMP/ours.json" || { echo "moectl logits failed ($DT)"; fail=1; continue; }
    $REF logits "$M" --tokens "$TOKENS" --threads 1 >"$TMP/ref.json" || { echo "reference logits failed ($DT)"; fail=1; continue; }
    printf '%s %-5s logits: ' "$ARCH" "$DT"
    $CMP "$TMP/ours.json" "$TMP/ref.json" $TOL || fail=1
    if [ "$DT" = f32 ]; then
        ours=$("$MOECTL" generate "$M" --tokens "$TOKENS" -n 16 --ignore-eos --threads 1) || { echo "moectl generate failed"; fail=1; continue; }
        ref=$($REF generate "$M" --tokens "$TOKENS" -n 16 --threads 1) || { echo "reference generate failed"; fail=1; continue; }
        if node -e 'const [a, b] = process.argv.slice(1).map((s) => JSON.parse(s).tokens);
                    process.exit(JSON.stringify(a) === JSON.stringify(b) ? 0 : 1)' "$ours" "$ref"; then
            echo "$ARCH f32   greedy 16: identical $ours"
        else
            echo "$ARCH f32   greedy 16 differ: ours $ours, llama.cpp $ref"; fail=1
        fi
        # two threads give the same logits within f32 tolerance
        "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 2 >"$TMP/ours2.json" || { fail=1; continue; }
        printf '%s f32   2 threads vs llama.cpp: ' "$ARCH"
        $CMP "$TMP/ours2.json" "$TMP/ref.json" --atol 1e-4 || fail=1
    fi
done
exit $fail
