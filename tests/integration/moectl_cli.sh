#!/bin/sh
# moectl as a user meets it: --help everywhere, JSON on stdout, clear errors
# on stderr with a non-zero exit, mkmodel deterministic.
set -u
MOECTL=${MOECTL:-build/moectl}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
json_ok() { node -e 'JSON.parse(require("fs").readFileSync(0, "utf8"))' 2>/dev/null; }

for c in info logits generate bench mkmodel tokenize detokenize expert chat-template; do
    out=$("$MOECTL" $c --help) && echo "$out" | grep -q "usage: moectl $c" && ok "$c --help" || bad "$c --help"
    # every flag --help lists is one the command takes (each alone: a bad or
    # missing value, or a missing argument, but never an unknown option)
    for f in $(echo "$out" | sed -n 's/^  \(-[-a-z]*\)\(, \(-[-a-z]*\)\)\{0,1\}.*/\1 \3/p'); do
        "$MOECTL" $c "$f" </dev/null >/dev/null 2>"$TMP/e"
        grep -q "unknown option" "$TMP/e" && bad "$c --help lists $f, which $c does not take"
    done
done
# the flags the scripts use appear in the --help of their command
for cf in "generate -n" "generate --ignore-eos" "generate --chat" "logits --workers" "bench --redis" \
    "bench --prefix" "generate --deadline-ms" "bench -t" "mkmodel -o" "mkmodel --n-layer" \
    "mkmodel --rms-eps" "expert --layer" "tokenize --texts" "detokenize --results" "chat-template --chat-template"; do
    set -- $cf
    "$MOECTL" $1 --help | grep -q -- "^  \(-[-a-z]*, \)\{0,1\}$2[ ,]" && ok "$1 --help lists $2" || bad "$1 --help lacks $2"
done
"$MOECTL" --help | grep -q "commands:" && ok "moectl --help" || bad "moectl --help"
"$MOECTL" frobnicate >/dev/null 2>"$TMP/e"; [ $? -eq 2 ] && grep -q "unknown command 'frobnicate'" "$TMP/e" && ok "unknown command" || bad "unknown command"

M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --pre no-such-pre -o "$TMP/bad-pre.gguf" >/dev/null
"$MOECTL" mkmodel --arch qwen2moe --dtype q8_0 --seed 3 -o "$M" | json_ok && ok "mkmodel prints JSON" || bad "mkmodel JSON"
# a model file for the comparisons below: mkmodel succeeded and wrote a GGUF
# (two missing files must not compare equal, nor a missing one differ)
gguf_ok() { [ -s "$1" ] && [ "$(head -c 4 "$1")" = GGUF ]; }
"$MOECTL" mkmodel --arch qwen2moe --dtype q8_0 --seed 3 -o "$TMP/m2.gguf" >/dev/null &&
    gguf_ok "$M" && gguf_ok "$TMP/m2.gguf" && cmp -s "$M" "$TMP/m2.gguf" &&
    ok "mkmodel: same arguments, same bytes" || bad "mkmodel not deterministic (or wrote no model)"
"$MOECTL" mkmodel --arch qwen2moe --dtype q8_0 --seed 4 -o "$TMP/m3.gguf" >/dev/null &&
    gguf_ok "$M" && gguf_ok "$TMP/m3.gguf" && ! cmp -s "$M" "$TMP/m3.gguf" &&
    ok "mkmodel: seed changes the weights" || bad "mkmodel: different seed: same bytes, or no model written"
"$MOECTL" mkmodel --arch gpt9 -o "$TMP/x.gguf" 2>"$TMP/e" >/dev/null; [ $? -ne 0 ] && grep -q "unknown --arch 'gpt9'" "$TMP/e" && ok "mkmodel bad arch" || bad "mkmodel bad arch"
"$MOECTL" mkmodel --arch llama --n-embd 100 -o "$TMP/x.gguf" 2>"$TMP/e" >/dev/null; [ $? -ne 0 ] && grep -q "multiples of 32" "$TMP/e" && ok "mkmodel bad dims" || bad "mkmodel bad dims"

"$MOECTL" info "$M" --json | json_ok && ok "info --json is JSON" || bad "info --json"
"$MOECTL" info "$M" --json | grep -q '"architecture": "qwen2moe"' && ok "info names the architecture" || bad "info architecture"
"$MOECTL" info "$M" | grep -q "sigmoid-gated shared expert" && ok "info describes routing" || bad "info routing"
"$MOECTL" logits "$M" --tokens 1,2,3 | json_ok && ok "logits JSON" || bad "logits JSON"
n=$("$MOECTL" logits "$M" --tokens 1,2,3 | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8")); console.log(j.positions.length + " " + j.positions[2].logits.length + " " + j.n_vocab)')
[ "$n" = "3 512 512" ] && ok "logits: 3 positions of 512" || bad "logits shape: $n"
"$MOECTL" generate "$M" --tokens 1,2,3 -n 5 --ignore-eos | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8")); process.exit(j.tokens.length===5?0:1)' && ok "generate 5 tokens" || bad "generate count"
# both runs must succeed with 8 tokens each (two failed runs print nothing)
# before their outputs are compared
eight() { echo "$1" | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8")); process.exit(Array.isArray(j.tokens) && j.tokens.length===8 && j.tokens.every(Number.isInteger) ? 0 : 1)'; }
a=$("$MOECTL" generate "$M" --tokens 1,2,3 -n 8 --ignore-eos --temp 0.8 --seed 9) && eight "$a" &&
    b=$("$MOECTL" generate "$M" --tokens 1,2,3 -n 8 --ignore-eos --temp 0.8 --seed 9) && eight "$b" &&
    [ "$a" = "$b" ] && ok "sampling is seeded" || bad "sampling not reproducible (or a run failed): '$a' '${b:-}'"
# text in, text out, sampling options, logprobs
out=$("$MOECTL" generate "$M" --prompt "hello world" -n 6 --ignore-eos --temp 0.7 --top-k 20 --top-p 0.9 --min-p 0.01 --repeat-penalty 1.1 --seed 5 --logprobs 3) &&
    echo "$out" | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8")); process.exit(j.tokens.length===6 && typeof j.text==="string" && j.prompt_tokens>0 && j.logprobs.length===6 && j.logprobs[0].top.length===3 ? 0 : 1)' &&
    ok "generate --prompt with sampling and logprobs" || bad "generate --prompt: $out"
# a stop string found across token boundaries ends the text just before it
full=$("$MOECTL" generate "$M" --prompt "hello" -n 24 --ignore-eos | node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(0,"utf8")).text)')
[ ${#full} -ge 8 ] || bad "generate --prompt hello -n 24: no text to compare against ('$full')"
stop=$(printf '%s' "$full" | node -e 'const t=require("fs").readFileSync(0,"utf8"); const m=t.slice(4).match(/[a-z]{3}/); console.log(m ? m[0] : "zzzz")')
out=$("$MOECTL" generate "$M" --prompt "hello" -n 24 --ignore-eos --stop "$stop")
echo "$out" | node -e '
    const j = JSON.parse(require("fs").readFileSync(0, "utf8")), [full, stop] = process.argv.slice(1);
    const at = full.indexOf(stop);
    process.exit(j.finish_reason === "stop" && at >= 0 && j.text === full.slice(0, at) ? 0 : 1);' "$full" "$stop" &&
    ok "--stop across tokens: text ends before '$stop'" || bad "--stop: $out (full '$full', stop '$stop')"
# --stream: the text on stdout as generated (JSON on stderr); the same text
# with and without a stop string, held back while a stop string may match
for st in "" "$stop"; do
    "$MOECTL" generate "$M" --prompt "hello" -n 24 --ignore-eos --stream ${st:+--stop "$st"} >"$TMP/so" 2>"$TMP/se" &&
        node -e '
            const fs = require("fs"), [so, se, full, stop] = process.argv.slice(1);
            const j = JSON.parse(fs.readFileSync(se, "utf8")), raw = fs.readFileSync(so, "utf8");
            const want = stop ? full.slice(0, full.indexOf(stop)) : full, strip = (s) => s.replace(/\ufffd/g, "");
            process.exit(raw.endsWith("\n") && strip(raw.slice(0, -1)) === strip(want) && strip(j.text) === strip(want) ? 0 : 1);' \
            "$TMP/so" "$TMP/se" "$full" "$st" && ok "generate --stream${st:+ --stop '$st'}: stdout is the text" ||
        bad "generate --stream${st:+ --stop}: $(cat "$TMP/so") / $(cat "$TMP/se")"
done
# SentencePiece: the generated vocabulary, a text round trip and generation
"$MOECTL" mkmodel --arch llama --spm -o "$TMP/spm.gguf" >/dev/null &&
    t=$("$MOECTL" tokenize "$TMP/spm.gguf" --text " the  test ü" --bos) &&
    d=$("$MOECTL" detokenize "$TMP/spm.gguf" --skip-special --tokens "$(echo "$t" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).tokens.join(","))')") &&
    [ "$d" = '{"text": "  the  test ü"}' ] && "$MOECTL" generate "$TMP/spm.gguf" --prompt "the" -n 4 | json_ok &&
    ok "SentencePiece vocabulary: tokenize --bos, detokenize --skip-special, generate" || bad "SentencePiece: $t $d"
t=$("$MOECTL" tokenize "$M" --text "hello world") && d=$("$MOECTL" detokenize "$M" --tokens "$(echo "$t" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).tokens.join(","))')") &&
    [ "$d" = '{"text": "hello world"}' ] && ok "tokenize/detokenize round trip" || bad "tokenize/detokenize: $t $d"
"$MOECTL" bench "$M" --prompt 8 --gen 4 --reps 1 --batch 3 >"$TMP/b3" && grep -q '"decode_tok_s"' "$TMP/b3" &&
    ! grep -q '"read_gb_s"' "$TMP/b3" && ok "bench JSON" || bad "bench: $(cat "$TMP/b3")"
# batch 1: the weight bandwidth beside the read loop's, measured in the same run
r=$("$MOECTL" bench "$M" --prompt 8 --gen 4 --reps 1 --read-mb 32 | node -e '
    const j = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const f = j.decode_weight_gb_s / j.read_gb_s;
    console.log(j.read_gb_s > 0 && Math.abs(f - j.read_fraction) < 0.002 ? "ok" : JSON.stringify(j));') &&
    [ "$r" = ok ] && ok "bench at batch 1: read_gb_s, read_fraction" || bad "bench read fraction: $r"
# batches against the int8 peak: ops = 2 x active params x tok/s, fraction = ops / peak
P=$("$MOECTL" info "$M" --json | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).n_params)')
r=$(node -e '
    const j = JSON.parse(process.argv[1]);
    const f = j.decode_gops / j.int8_peak_gops, ok = ["amx", "vnni", "avx2"].includes(j.int8_unit) &&
        j.int8_peak_gops > 0 && j.decode_gops > 0 && j.decode_gops < j.int8_peak_gops &&
        Math.abs(f - j.decode_compute_fraction) < 0.002 && j.prefill_compute_fraction > 0 &&
        j.prefill_gops / j.prefill_tok_s < 2 * Number(process.argv[2]) / 1e9;
    console.log(ok ? "ok" : JSON.stringify(j));' "$(cat "$TMP/b3")" "$P") &&
    [ "$r" = ok ] && ok "bench at batch 3: int8_unit, int8_peak_gops, compute fractions" ||
    bad "bench compute fraction: $r"

# errors: stderr, non-zero exit, nothing on stdout
check_err() { # expected-substring cmd...
    want=$1; shift
    "$@" >"$TMP/o" 2>"$TMP/e"; rc=$?
    if [ $rc -ne 0 ] && [ ! -s "$TMP/o" ] && grep -q "$want" "$TMP/e"; then ok "error: $want"; else bad "error '$want' (rc $rc): $(cat "$TMP/e")"; fi
}
check_err "token id 600 out of range" "$MOECTL" logits "$M" --tokens 1,600
check_err "bad token id" "$MOECTL" logits "$M" --tokens 1,x
check_err "No such file" "$MOECTL" info "$TMP/none.gguf"
check_err "threads '0' is not an integer in \[1," "$MOECTL" generate "$M" --tokens 1 --threads 0
check_err "unknown option '--frobnicate'" "$MOECTL" generate "$M" --tokens 1 --frobnicate
check_err "wire 'f16': must be f32 or bf16" "$MOECTL" logits "$M" --tokens 1 --wire f16
check_err "batch '2000' is not an integer in \[1, 1024\]" "$MOECTL" bench "$M" --batch 2000
check_err "stop '': needs a non-empty string" "$MOECTL" generate "$M" --tokens 1 --stop ""
check_err "given more than 8 times" "$MOECTL" generate "$M" --tokens 1 --stop a --stop b --stop c --stop d --stop e --stop f --stop g --stop h --stop i
check_err "unexpected argument" "$MOECTL" info "$M" "$M"
# environment twins: MOE_THREADS sets the threads, the flag wins over it, a bad
# value names the variable; none of them for the per-invocation flags
t=$(MOE_THREADS=2 "$MOECTL" bench "$M" --prompt 4 --gen 2 --reps 1 --read-mb 0 | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).threads)')
u=$(MOE_THREADS=2 "$MOECTL" bench "$M" --prompt 4 --gen 2 --reps 1 -t 3 --read-mb 0 | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).threads)')
[ "$t $u" = "2 3" ] && ok "MOE_THREADS twin, -t wins" || bad "MOE_THREADS: $t $u"
# (each in a subshell: an assignment before a shell function may outlive it)
(export MOE_WIRE=f16; check_err "MOE_WIRE 'f16': must be f32 or bf16" "$MOECTL" logits "$M" --tokens 1; [ $fail = 0 ]) || fail=1
(export MOE_WORKERS=127.0.0.1:1 MOE_REDIS=redis://127.0.0.1:1; check_err "exclude each other" "$MOECTL" logits "$M" --tokens 1; [ $fail = 0 ]) || fail=1
check_err "top_p" "$MOECTL" generate "$M" --tokens 1 --temp 1 --top-p 1.5
check_err "pre-tokenizer" "$MOECTL" tokenize "$TMP/bad-pre.gguf" --text hi
check_err "needs a value" "$MOECTL" logits "$M" --tokens
head -c 1000 "$M" >"$TMP/trunc.gguf"
check_err "offset" "$MOECTL" info "$TMP/trunc.gguf"
printf 'NOPE' >"$TMP/bad.gguf"
check_err "offset" "$MOECTL" logits "$TMP/bad.gguf" --tokens 1
# a kept key given to `tenant add --key-stdin` must be long enough to be a secret
# (refused before any Redis is asked: none listens on port 1)
echo short-key | check_err "a key needs at least 32" "$MOECTL" tenant add t --redis redis://127.0.0.1:1 --key-stdin
exit $fail
