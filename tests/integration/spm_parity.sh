#!/bin/sh
# SentencePiece-style vocabularies (tokenizer.ggml.model "llama": Llama 2,
# Mistral, Mixtral): moemesh's tokenizer against llama.cpp's (node-llama-cpp)
# on generated vocabularies (`moectl mkmodel --spm`: scores that tie, byte
# fallback for most of Unicode, <unk>/<s>/</s>), over the corpus in
# tests/data/tokenizer_corpus.json: identical ids with and without
# special-token parsing (the leading-space rule after special tokens), and
# detokenize(tokenize(s)) == s, except where s holds U+2581 itself (the
# escaped space: SentencePiece cannot tell them apart).
set -u
MOECTL=${MOECTL:-build/moectl}
[ -d tests/ref/node_modules/node-llama-cpp ] || { echo "llama.cpp reference not installed (make ref)"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# the shared corpus plus this vocabulary's special tokens in context
C="$TMP/corpus.json"
node -e 'const fs = require("fs"), c = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    c.push("<s>hello</s> there", "a<unk>b", "  <s>  the test", "</s>", "<s><s>", "it is <s>", "<0x41> is not a byte token in text");
    fs.writeFileSync(process.argv[2], JSON.stringify(c));' tests/data/tokenizer_corpus.json "$C"
fail=0
for spec in 1:512 2:512 3:2048; do
    seed=${spec%%:*} nv=${spec#*:}
    M="$TMP/spm-$seed.gguf"
    "$MOECTL" mkmodel --arch llama --spm --seed "$seed" --n-vocab "$nv" -o "$M" >/dev/null || { echo "FAIL: mkmodel --spm"; exit 1; }
    for sp in "" --special; do
        "$MOECTL" tokenize "$M" --texts "$C" $sp >"$TMP/ours.json" || { echo "FAIL: moectl tokenize (seed $seed $sp)"; fail=1; continue; }
        node tests/ref/llama.mjs tokenize "$M" --texts "$C" $sp >"$TMP/ref.json" 2>"$TMP/ref.err" ||
            { echo "FAIL: llama.cpp tokenize: $(tail -2 "$TMP/ref.err")"; fail=1; continue; }
        node -e '
            const fs = require("fs");
            const corpus = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
            const a = JSON.parse(fs.readFileSync(process.argv[2], "utf8")).results;
            const b = JSON.parse(fs.readFileSync(process.argv[3], "utf8")).results;
            let bad = 0, tokens = 0, bytes = 0;
            for (let i = 0; i < corpus.length; i++) {
                tokens += b[i].tokens.length;
                bytes += b[i].tokens.filter((t) => t >= 3 && t < 259).length;
                if (JSON.stringify(a[i].tokens) !== JSON.stringify(b[i].tokens) && bad++ < 5)
                    console.log(`  differ on ${JSON.stringify(corpus[i])}: ours ${JSON.stringify(a[i].tokens)} llama.cpp ${JSON.stringify(b[i].tokens)}`);
            }
            console.log(`${bad ? "FAIL" : "ok"}: ${process.argv[4]}: ${corpus.length - bad}/${corpus.length} strings identical (${tokens} tokens, ${bytes} by byte fallback)`);
            process.exit(bad ? 1 : 0);' "$C" "$TMP/ours.json" "$TMP/ref.json" "spm seed $seed vocab $nv ${sp:-plain}" || fail=1
    done
    # round trip (ours.json is the --special run: special-token text comes back as text)
    "$MOECTL" detokenize "$M" --results "$TMP/ours.json" >"$TMP/back.json" || { echo "FAIL: moectl detokenize"; fail=1; continue; }
    node -e '
        const fs = require("fs"), [c, b, label] = process.argv.slice(1);
        const corpus = JSON.parse(fs.readFileSync(c, "utf8")), back = JSON.parse(fs.readFileSync(b, "utf8")).results;
        let bad = 0, skipped = 0;
        for (let i = 0; i < corpus.length; i++) {
            if (corpus[i].includes("\u2581")) { skipped++; continue; }
            /* after a special token the tokenizer adds a space that stays */
            if (back[i].text !== corpus[i] && back[i].text.replace(/(<\/?s>|<unk>) /g, "$1") !== corpus[i] && bad++ < 3)
                console.log(`  round trip: ${JSON.stringify(corpus[i])} -> ${JSON.stringify(back[i].text)}`);
        }
        console.log(`${bad ? "FAIL" : "ok"}: ${label}: detokenize(tokenize(s)) == s for ${corpus.length - skipped - bad}/${corpus.length - skipped} strings`);
        process.exit(bad ? 1 : 0);' "$C" "$TMP/back.json" "spm seed $seed" || fail=1
done
exit $fail
