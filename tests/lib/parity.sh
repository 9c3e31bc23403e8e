#!/bin/sh
# tests/lib/parity.sh ARCH [PRESET [SEED]] - moemesh against llama.cpp on
# `moectl mkmodel` models of one architecture (and mkmodel preset), for each
# dtype: teacher-forced logits at every position within a per-dtype
# tolerance, and for f32 the 16-token greedy continuation identical.
# moectl runs with --exact (llama.cpp's per-block Q8_0 arithmetic in
# batches too); for q8_0 the default fast int8 tile (moe/ops.h:
# moe_cpu_kernels_fast) is compared as well, within the same tolerance.
# Extra mkmodel options (non-default hyperparameters) come from
# $PARITY_MKMODEL_ARGS; $PARITY_LABEL names the case in the output.
#
# Tolerances (max abs logit difference over the vocab; logits have std ~2),
# at EVERY position, set ~10x above what was observed. Observed (this
# script's 24 tokens; llama, qwen2moe, qwen3moe, olmoe, deepseek, deepseek2
# tiny and tiny-v2; seeds 1, 2, 3, 7; llama.cpp node-llama-cpp v0.5.0 CPU;
# the figures below were taken with its AMX build, which tests/ref/install.sh
# now sets aside: with the AVX-512 build the worst were f32 5.8e-6, f16
# 4.4e-3, bf16 1.4e-6, q8_0 5e-9 on the chosen seeds):
#   f32   worst 6.4e-6                               -> 5e-5
#   f16   worst 8.5e-3, at every position (both engines round activations to
#         f16 before each product; a 1e-7 difference upstream moves the
#         rounding by an f16 ulp, 2^-11 relative)    -> 1e-2 (not 10x: f16
#         differs everywhere by this much, 10x would hide a real error)
#   bf16  worst 1.4e-6 (llama), 5e-9 elsewhere        -> 2e-5
#   q8_0  worst 9.6e-7 (integer-exact products)       -> 1e-5
#   q4_0, q4_1, q5_0, q5_1, iq4_nl  worst 5e-9 (the output's printed
#         precision: the same integer sums and float order as llama.cpp's
#         kernels, its vec_dot's x86 lanes, or for q4_0/iq4_nl its repacked
#         8-row kernels)                              -> 1e-7
#   q4_k, q5_k, q6_k, iq4_xs, q2_k, q3_k  worst 3.8e-6 (q2_k --pure; the
#         others 1.4e-6..3.3e-6; their cases have n_embd 256, where f32
#         itself differs by 3.3e-6)                  -> 5e-5
#   q4_k_m, q5_k_m, q2_k, q3_k_m (llama-quantize's mixes of K types,
#         q4_0/q5_0/q5_1/q8_0)  worst 3.3e-6         -> 5e-5
# (the quantised types: llama, qwen2moe, olmoe, deepseek2 tiny and tiny-v2,
# seeds 1-5 and 7, AVX-512 and MOE_CPU=avx2; parity_quant.sh's cases)
# except where a rounding step flips: a bf16 or q8_0 activation whose value
# sits on a rounding boundary can round the other way after a 1e-7 summation
# difference; that moves the position's K/V, so from that position on every
# logit differs by 1e-2..9e-2 (seen for 9 of 52 bf16/q8_0 model x seed runs,
# never at a gate near tie). Each architecture's SEED is therefore one where
# no flip occurs in any dtype, for the exact and the fast Q8_0 arithmetic, at
# the AVX-512 and the AVX2 level (llama, qwen2moe, olmoe: 3; deepseek2 V3: 1;
# others: 7); a
# change of summation order in the engine can create one, and this test
# then fails: check with another seed before loosening anything.
# The only positions skipped are expert-selection near ties (moectl logits
# --gate-margins: the smallest gap over layers between the last chosen and
# the best unchosen expert's score below 1e-6 f32, 1e-4 f16, 1e-5 bf16/q8_0),
# at most 2 per run; none of the chosen runs has one.
# Exit 0 pass, 77 skip (no reference engine), 1 fail.
set -u
ARCH=$1
PRESET=${2:-tiny}
SEED=${3:-7}
LABEL=${PARITY_LABEL:-$ARCH}
REF="node tests/ref/llama.mjs"
CMP="node tests/ref/compare.mjs"
. tests/lib/parity_env.sh
for DT in ${PARITY_DTYPES:-f32 f16 bf16 q8_0}; do
    parity_tol "$DT" || { echo "unknown dtype $DT"; exit 1; }
    M="$TMP/$ARCH-$DT.gguf"
    # shellcheck disable=SC2086 # PARITY_MKMODEL_ARGS is a list of options
    "$MOECTL" mkmodel --arch "$ARCH" --preset "$PRESET" --dtype "$DT" --seed "$SEED" ${PARITY_MKMODEL_ARGS:-} -o "$M" >/dev/null || { echo "mkmodel failed"; exit 1; }
    "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 1 --gate-margins --exact >"$TMP/ours.json" || { echo "moectl logits failed ($DT)"; fail=1; continue; }
    $REF logits "$M" --tokens "$TOKENS" --threads 1 >"$TMP/ref.json" || { echo "reference logits failed ($DT)"; fail=1; continue; }
    printf '%s %-5s logits: ' "$LABEL" "$DT"
    $CMP "$TMP/ours.json" "$TMP/ref.json" $TOL || fail=1
    if [ "$DT" = q8_0 ]; then
        "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 2 --gate-margins >"$TMP/fast.json" || { echo "moectl logits (fast) failed"; fail=1; continue; }
        printf '%s %-5s fast int8 tile, 2 threads: ' "$LABEL" "$DT"
        $CMP "$TMP/fast.json" "$TMP/ref.json" $TOL || fail=1
    fi
    if [ "$DT" = f32 ]; then
        ours=$("$MOECTL" generate "$M" --tokens "$TOKENS" -n 16 --ignore-eos --threads 1 --exact) || { echo "moectl generate failed"; fail=1; continue; }
        ref=$($REF generate "$M" --tokens "$TOKENS" -n 16 --threads 1) || { echo "reference generate failed"; fail=1; continue; }
        if node -e 'const [a, b] = process.argv.slice(1).map((s) => JSON.parse(s).tokens);
                    process.exit(JSON.stringify(a) === JSON.stringify(b) ? 0 : 1)' "$ours" "$ref"; then
            echo "$LABEL f32   greedy 16: identical $ours"
        else
            echo "$LABEL f32   greedy 16 differ: ours $ours, llama.cpp $ref"; fail=1
        fi
        # two threads give the same logits within f32 tolerance
        "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 2 --gate-margins --exact >"$TMP/ours2.json" || { fail=1; continue; }
        printf '%s f32   2 threads vs llama.cpp: ' "$LABEL"
        $CMP "$TMP/ours2.json" "$TMP/ref.json" $TOL || fail=1
    fi
done
exit $fail
