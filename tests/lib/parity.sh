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
#
# KV cache: every dtype runs with an f32 cache on both sides, and the
# non-float dtypes again with an f16 cache (both engines' default; the
# reference's --cache-type f16, flash attention off: q and the attention
# probabilities are rounded to f16 too, as ggml's mul_mat converts its f32
# operand). With an f16 cache every cached K/V value, q and probability is
# rounded to f16, so the engines agree to the bit only where those values
# are the same bits on both sides: the quantised dtypes (integer-exact
# products; q8_0 --exact) agree to 5e-9 on most seeds. Float weights differ
# upstream by ~1e-7, which moves f16 roundings by an ulp and the logits by
# up to 2.3e-3 (seen: f32 weights 2.8e-5..2.3e-3 over the 8 parity models),
# about what not rounding at all would give (5.5e-3 on llama): no useful
# tolerance, so f32/f16/bf16 weights are compared with the f32 cache only.
# The f16 cache has its own flips (a q8_0 activation or an f16 value on a
# rounding boundary): about 3 in 8 seeds per architecture at q8_0 --exact (llama
# 3, 4; qwen3moe 3, 7; deepseek2 tiny-v2 3, 7), so $PARITY_KV16_SEED picks
# another seed for the f16 cache where the f32 cache's has one. These
# flips are not all the f16 rounding's own: for a batch of 2+ tokens
# llama.cpp computes attention over an f16 cache with llamafile's tinyBLAS
# (one 16-lane fma chain per dot), moemesh in ggml_vec_dot_f16's order (4
# chains), the same sums in another order. Mimicking tinyBLAS's order (a
# measurement, not kept) fixed 2 of the 4 q8_0 cases above and left 12 of
# parity_quant's 38 f16-cache cases flipping (16 without it), so the
# quantised types' suite (parity_quant.sh: PARITY_KV16=0) stays on the f32
# cache.
# Exit 0 pass, 77 skip (no reference engine), 1 fail.
set -u
ARCH=$1
PRESET=${2:-tiny}
SEED=${3:-7}
LABEL=${PARITY_LABEL:-$ARCH}
REF="node tests/ref/llama.mjs"
CMP="node tests/ref/compare.mjs"
. tests/lib/parity_env.sh
# case DT KV SEED: dtype DT's model at SEED, with a KV cache of type KV on
# both sides
case_run() {
    DT=$1 KV=$2 S=$3
    parity_tol "$DT" || { echo "unknown dtype $DT"; exit 1; }
    M="$TMP/$ARCH-$DT-$S.gguf"
    # shellcheck disable=SC2086 # PARITY_MKMODEL_ARGS is a list of options
    [ -f "$M" ] || "$MOECTL" mkmodel --arch "$ARCH" --preset "$PRESET" --dtype "$DT" --seed "$S" ${PARITY_MKMODEL_ARGS:-} -o "$M" >/dev/null || { echo "mkmodel failed"; exit 1; }
    "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 1 --gate-margins --exact --cache-type "$KV" >"$TMP/ours.json" || { echo "moectl logits failed ($DT, $KV KV)"; fail=1; return; }
    $REF logits "$M" --tokens "$TOKENS" --threads 1 --cache-type "$KV" >"$TMP/ref.json" || { echo "reference logits failed ($DT, $KV KV)"; fail=1; return; }
    tag=$(printf '%-5s %s KV' "$DT" "$KV")
    [ "$S" = "$SEED" ] || tag="$tag seed $S"
    printf '%s %s logits: ' "$LABEL" "$tag"
    $CMP "$TMP/ours.json" "$TMP/ref.json" $TOL || fail=1
    # the fast tile's float rounding differs from llama.cpp's by ~1e-7, as
    # float weights do: compared with the f32 cache only
    if [ "$DT" = q8_0 ] && [ "$KV" = f32 ]; then
        "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 2 --gate-margins --cache-type "$KV" >"$TMP/fast.json" || { echo "moectl logits (fast) failed"; fail=1; return; }
        printf '%s %s fast int8 tile, 2 threads: ' "$LABEL" "$tag"
        $CMP "$TMP/fast.json" "$TMP/ref.json" $TOL || fail=1
    fi
    if [ "$DT" = f32 ]; then
        ours=$("$MOECTL" generate "$M" --tokens "$TOKENS" -n 16 --ignore-eos --threads 1 --exact --cache-type "$KV") || { echo "moectl generate failed"; fail=1; return; }
        ref=$($REF generate "$M" --tokens "$TOKENS" -n 16 --threads 1 --cache-type "$KV") || { echo "reference generate failed"; fail=1; return; }
        if node -e 'const [a, b] = process.argv.slice(1).map((s) => JSON.parse(s).tokens);
                    process.exit(JSON.stringify(a) === JSON.stringify(b) ? 0 : 1)' "$ours" "$ref"; then
            echo "$LABEL $tag greedy 16: identical $ours"
        else
            echo "$LABEL $tag greedy 16 differ: ours $ours, llama.cpp $ref"; fail=1
        fi
        # two threads give the same logits within f32 tolerance
        "$MOECTL" logits "$M" --tokens "$TOKENS" --threads 2 --gate-margins --exact --cache-type "$KV" >"$TMP/ours2.json" || { fail=1; return; }
        printf '%s %s 2 threads vs llama.cpp: ' "$LABEL" "$tag"
        $CMP "$TMP/ours2.json" "$TMP/ref.json" $TOL || fail=1
    fi
}
for DT in ${PARITY_DTYPES:-f32 f16 bf16 q8_0}; do
    case_run "$DT" f32 "$SEED"
    # the f16 cache (the default of both engines) where the values cached
    # are the same bits on both sides: not f32/f16/bf16 weights (see above)
    case $DT in
        f32|f16|bf16) ;;
        *) [ "${PARITY_KV16:-1}" = 1 ] && case_run "$DT" f16 "${PARITY_KV16_SEED:-$SEED}" ;;
    esac
done
exit $fail
