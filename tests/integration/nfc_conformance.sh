#!/bin/sh
# NFC (libmoe/src/text/unicode_norm.c) against Node's
# String.prototype.normalize("NFC"): the strings of
# tests/data/tokenizer_corpus.json, every code point alone, and seeded random
# strings of letters, combining marks and Hangul jamo. Node writes the pairs;
# the unit test ext_nfc_node_pairs compares (it skips inputs with code points our
# Unicode tables do not assign, as Node's ICU may be a newer version). The
# Unicode conformance file itself is checked by the unit test nfc_conformance.
set -u
BUILD=${BUILD:-build}
[ -x "$BUILD/unit-tests" ] || { echo "$BUILD/unit-tests missing (make)"; exit 77; }
command -v node >/dev/null 2>&1 || { echo "node not installed"; exit 77; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
node -e '
const fs = require("fs");
const hex = (s) => Buffer.from(s, "utf8").toString("hex");
const out = [];
const put = (s) => out.push(hex(s) + " " + hex(s.normalize("NFC")));
for (const s of JSON.parse(fs.readFileSync(process.argv[1], "utf8"))) put(s);
const pool = ["a", "e", "A", " "];
for (let cp = 0; cp <= 0x10ffff; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const s = String.fromCodePoint(cp);
    put(s);
    if (s.normalize("NFD") !== s || /\p{M}/u.test(s) || (cp >= 0x1100 && cp <= 0x11ff))
        pool.push(s);
}
let seed = 12345; /* a small LCG: the same strings on every run */
const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
for (let i = 0; i < 50000; i++) {
    let s = "";
    for (let k = 1 + rnd(10); k > 0; k--) s += pool[rnd(pool.length)];
    put(s);
}
fs.writeFileSync(process.argv[2], out.join("\n") + "\n");
' tests/data/tokenizer_corpus.json "$TMP/pairs.txt" || { echo "FAIL: node"; exit 1; }
MOE_NFC_PAIRS="$TMP/pairs.txt" "$BUILD/unit-tests" ext_nfc_node_pairs
