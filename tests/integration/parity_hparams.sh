#!/bin/sh
# Parity with llama.cpp on models whose hyperparameters are not the defaults
# the engine falls back to (libmoe/src/model.c load_hparams): an engine that
# ignored one of these keys would pass every other parity test.
#   rope.freq_base                  default 10000   (Qwen3: 1e6)
#   rope.dimension_count            default the head dim; partial rotary
#                                   only where llama.cpp has it: its loader
#                                   reads the key for every architecture, but
#                                   the llama, qwen2moe, qwen3moe, olmoe and
#                                   deepseek graphs assert n_rot == head dim
#                                   (node-llama-cpp v0.5.0), so the partial
#                                   case is deepseek2's decoupled MLA RoPE
#                                   (16 of 48 q/k dims instead of 32 of 64)
#   attention.layer_norm_rms_epsilon (the presets write 1e-5)
#   expert_weights_scale            default 1 (deepseek2; tiny-v2 writes 1)
# (attention.head_count_kv < head_count is in every tiny preset but olmoe's;
# the deepseek2 routing keys - gating function, weight norm, groups, YaRN -
# are in parity_deepseek2_v2/_v3.) Each case first checks that its key
# matters: the model with the key at its default gives logits that differ
# from the case's by more than 100x the tolerance; then tests/lib/parity.sh
# compares with llama.cpp (f32 and q8_0; deepseek2: also bf16).
# Exit 0 pass, 77 skip (no reference engine), 1 fail.
set -u
. tests/lib/parity_env.sh

# case ARCH PRESET SEED DTYPES "CASE ARGS" "DEFAULT ARGS"
case_() {
    arch=$1 preset=$2 seed=$3 dtypes=$4 args=$5 dflt=$6
    label="$arch[$args]"
    # shellcheck disable=SC2086 # the args are lists of options
    "$MOECTL" mkmodel --arch "$arch" --preset "$preset" --seed "$seed" $args -o "$TMP/a.gguf" >/dev/null &&
        "$MOECTL" mkmodel --arch "$arch" --preset "$preset" --seed "$seed" $dflt -o "$TMP/b.gguf" >/dev/null &&
        "$MOECTL" logits "$TMP/a.gguf" --tokens "$TOKENS" >"$TMP/a.json" &&
        "$MOECTL" logits "$TMP/b.gguf" --tokens "$TOKENS" >"$TMP/b.json" ||
        { echo "FAIL: $label: mkmodel or logits failed"; fail=1; return; }
    # the key must matter: max |diff| over all positions above 100 x 5e-5
    d=$(node -e 'const fs = require("fs"), [a, b] = process.argv.slice(1).map((f) => JSON.parse(fs.readFileSync(f, "utf8")));
        let d = 0;
        a.positions.forEach((p, k) => p.logits.forEach((v, i) => { d = Math.max(d, Math.abs(v - b.positions[k].logits[i])); }));
        console.log(d);' "$TMP/a.json" "$TMP/b.json")
    if node -e 'process.exit(Number(process.argv[1]) > 5e-3 ? 0 : 1)' "$d"; then
        echo "ok: $label: differs from [$dflt] by $d (the key matters)"
    else
        echo "FAIL: $label: logits differ from [$dflt] by only $d: the case tests nothing"; fail=1
    fi
    PARITY_DTYPES=$dtypes PARITY_MKMODEL_ARGS=$args PARITY_LABEL=$label PARITY_KV16=0 \
        sh tests/lib/parity.sh "$arch" "$preset" "$seed" || fail=1
}

case_ qwen3moe tiny 7 "f32 q8_0" "--rope-base 1000000" "--rope-base 10000"
case_ qwen2moe tiny 3 "f32 q8_0" "--rope-base 500000" ""
case_ deepseek tiny 7 "f32 q8_0" "--rope-base 50000" ""
case_ olmoe tiny 3 "f32 q8_0" "--rms-eps 0.05" ""
case_ llama tiny 3 "f32 q8_0" "--rms-eps 0.05" ""
case_ deepseek2 tiny-v2 7 "f32 bf16 q8_0" "--expert-scale 1.7" ""
case_ deepseek2 tiny-v2 7 "f32 bf16 q8_0" "--rope-dim 16" ""
exit $fail
