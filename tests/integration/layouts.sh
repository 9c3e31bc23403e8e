#!/bin/sh
# The GGUF layouts real files use, in moemesh alone (llama.cpp's side is
# parity_layouts.sh): the same weights stored per expert (the pre-2024
# Mixtral layout, blk.N.ffn_gate.E.weight), split in parts as gguf-split
# writes them (-0000K-of-0000N.gguf), or both, give logits bit-identical to
# the merged single file, for each dtype and for architectures with and
# without leading dense layers; expert-workers serving the per-expert split
# files give the local engine's logits bit for bit; `moectl info` reports
# the layout and the type mix; a split model with a part missing, a part of
# another count or of another model, a part opened first, or a first part
# whose name has been changed gets a clear error. Processes stopped by PID.
set -u
. tests/lib/procs.sh
MOECTL=${MOECTL:-$BUILD/moectl}
T=1,17,300,42,99,7,256,5,64,128,255,3

logits() { # model out [args]
    m=$1 o=$2; shift 2
    "$MOECTL" logits "$m" --tokens $T --threads 1 --exact "$@" >"$o" 2>"$o.err" || { bad "logits $m: $(cat "$o.err")"; return 1; }
}

# ---- the same model in every layout: logits bit for bit ---------------------
for case in "llama f32" "llama f16" "llama bf16" "llama q8_0" "deepseek f32" "deepseek2 q8_0" "qwen2moe f32"; do
    set -- $case
    arch=$1 dt=$2 d="$TMP/$arch-$dt"
    mkdir -p "$d"
    mk() { "$MOECTL" mkmodel --arch "$arch" --dtype "$dt" --seed 5 "$@" >/dev/null || bad "mkmodel $arch $dt $*"; }
    mk -o "$d/merged.gguf"
    mk --expert-layout per-expert -o "$d/pe.gguf"
    mk --split 3 -o "$d/sp.gguf"
    mk --expert-layout per-expert --split-max-tensors 7 -o "$d/pesp.gguf"
    logits "$d/merged.gguf" "$d/merged.json" || continue
    for f in pe.gguf sp-00001-of-00003.gguf "$(cd "$d" && ls pesp-00001-of-*.gguf)"; do
        logits "$d/$f" "$d/other.json" || continue
        cmp -s "$d/merged.json" "$d/other.json" &&
            ok "$arch $dt $f: logits bit-identical to the merged single file" ||
            bad "$arch $dt $f: logits differ from the merged single file"
    done
    # the fast int8 tile and two threads read the experts through the same table
    if [ "$dt" = q8_0 ]; then
        "$MOECTL" logits "$d/merged.gguf" --tokens $T --threads 2 >"$d/m2.json" &&
            "$MOECTL" logits "$d/pesp-00001-of-"*.gguf --tokens $T --threads 2 >"$d/p2.json" &&
            cmp -s "$d/m2.json" "$d/p2.json" && ok "$arch $dt per-expert split, fast tile, 2 threads: bit-identical" ||
            bad "$arch $dt per-expert split, fast tile, 2 threads differs"
    fi
done

# ---- deepseek2's legacy attn_kv_b: the same weights, computed as llama.cpp
# computes that layout (multi-head over a per-head cache, not absorbed), so
# within f32 rounding of the MLA layout rather than bit for bit; per expert
# and split on top of it, bit for bit the single kv_b file
for preset in tiny tiny-v2; do
    d="$TMP/kvb-$preset"
    mkdir -p "$d"
    mk() { "$MOECTL" mkmodel --arch deepseek2 --preset $preset --seed 5 "$@" >/dev/null || bad "mkmodel deepseek2 $preset $*"; }
    mk -o "$d/mla.gguf"
    mk --kv-b -o "$d/kvb.gguf"
    mk --kv-b --expert-layout per-expert --split 2 -o "$d/kvbsp.gguf"
    # an f32 cache: the two layouts cache different values (the latent, the
    # expanded heads), whose f16 roundings differ
    logits "$d/mla.gguf" "$d/mla.json" --cache-type f32 && logits "$d/kvb.gguf" "$d/kvb.json" --cache-type f32 &&
        logits "$d/kvbsp-00001-of-00002.gguf" "$d/kvbsp.json" --cache-type f32 || continue
    out=$(node tests/ref/compare.mjs "$d/kvb.json" "$d/mla.json" --atol 5e-5) &&
        ok "deepseek2 $preset attn_kv_b vs MLA layout (f32 weights and cache, same weights): $out" ||
        bad "deepseek2 $preset attn_kv_b vs MLA layout: $out"
    cmp -s "$d/kvb.json" "$d/kvbsp.json" && ok "deepseek2 $preset attn_kv_b per-expert split: bit-identical" ||
        bad "deepseek2 $preset attn_kv_b per-expert split differs"
    "$MOECTL" info --json "$d/kvb.gguf" | grep -q '"attn_kv_b": true' || bad "info --json: attn_kv_b not reported"
done

# ---- moectl info: layout and type mix ----------------------------------------
d="$TMP/llama-q8_0"
info=$("$MOECTL" info --json "$d/pesp-00001-of-"*.gguf) || bad "info on a split per-expert model"
echo "$info" | node -e '
    const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const parts = j.layout.parts, types = j.types;
    const n = parts.reduce((a, p) => a + p.tensors, 0);
    if (j.layout.experts !== "per-expert" || parts.length < 2 || n !== j.tensors.length) process.exit(1);
    if (types.reduce((a, t) => a + t.tensors, 0) !== n) process.exit(1);
    const q8 = types.find((t) => t.type === "q8_0"), f32 = types.find((t) => t.type === "f32");
    if (!q8 || !f32 || !(q8.share > 0.5 && q8.share < 1)) process.exit(1);
    console.log(`${j.layout.experts}, ${parts.length} parts, ` + types.map((t) => `${t.type} ${t.tensors} tensors ${(100 * t.share).toFixed(1)}%`).join(", "));
' >"$TMP/info.txt" && ok "info --json: $(cat "$TMP/info.txt")" || bad "info --json layout/types: $info"
"$MOECTL" info "$d/sp-00001-of-00003.gguf" | grep -q "^layout .*merged.*split in 3 parts" &&
    "$MOECTL" info "$d/sp-00001-of-00003.gguf" | grep -q "^types .*q8_0 .* tensors .*% of the file" &&
    ok "info text: layout and types lines" || bad "info text: $("$MOECTL" info "$d/sp-00001-of-00003.gguf" | grep -E '^(layout|types)')"

# ---- split errors -------------------------------------------------------------
expect_err() { # label pattern model
    if out=$("$MOECTL" info "$3" 2>&1); then
        bad "$1: loaded"
    elif echo "$out" | grep -q "$2"; then
        ok "$1: $out"
    else
        bad "$1: unexpected message: $out"
    fi
}
e="$TMP/err"
mkdir -p "$e"
src="$TMP/llama-f32"
cp "$src"/sp-0000*.gguf "$e/" && rm "$e/sp-00002-of-00003.gguf"
expect_err "missing part" "split part 2 of 3: .*sp-00002-of-00003.gguf: open: No such file" "$e/sp-00001-of-00003.gguf"
"$MOECTL" mkmodel --arch llama --seed 5 --split 4 -o "$e/four.gguf" >/dev/null
cp "$e/four-00002-of-00004.gguf" "$e/sp-00002-of-00003.gguf"
expect_err "a part of another count" "split.count is 4, the first part says 3" "$e/sp-00001-of-00003.gguf"
"$MOECTL" mkmodel --arch llama --seed 5 --n-layer 3 --split 3 -o "$e/other.gguf" >/dev/null
cp "$e/other-00002-of-00003.gguf" "$e/sp-00002-of-00003.gguf"
expect_err "a part of another model" "split.tensors.count is .*, the first part says" "$e/sp-00001-of-00003.gguf"
cp "$src/sp-00002-of-00003.gguf" "$e/sp-00002-of-00003.gguf"
expect_err "the second part opened" "this is part 2 of a split model of 3 parts: open the first part" "$e/sp-00002-of-00003.gguf"
cp "$src/sp-00001-of-00003.gguf" "$e/renamed.gguf"
expect_err "a first part renamed" "does not end in -00001-of-00003.gguf" "$e/renamed.gguf"
cp "$src/sp-00001-of-00003.gguf" "$e/x-00001-of-00002.gguf"
expect_err "a first part renamed to another count" "does not end in -00001-of-00003.gguf" "$e/x-00001-of-00002.gguf"
# ---- expert-workers on the per-expert split files: bit-identical to local ----
for dt in f32 q8_0; do
    d="$TMP/llama-$dt"
    pesp=$(ls "$d"/pesp-00001-of-*.gguf)
    worker "w$dt-a" "$pesp" 0-3; A=$ADDR PA=$WPID
    worker "w$dt-b" "$pesp" 4-7; B=$ADDR PB=$WPID
    "$MOECTL" logits "$d/merged.gguf" --tokens $T --threads 2 >"$TMP/local.json" &&
        "$MOECTL" logits "$d/merged.gguf" --tokens $T --threads 2 --workers "$A,$B" >"$TMP/remote.json" 2>"$TMP/remote.err" &&
        cmp -s "$TMP/local.json" "$TMP/remote.json" &&
        ok "llama $dt: 2 workers on the per-expert split files, bit-identical to the local merged file" ||
        bad "llama $dt: workers on per-expert split files: $(cat "$TMP/remote.err")"
    stop "$PA"; stop "$PB"
done
exit $fail
