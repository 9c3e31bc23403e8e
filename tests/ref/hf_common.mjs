// tests/ref/hf_common.mjs - what the Hugging Face reference scripts
// (chat_ref.mjs, hf_tokenize.mjs) share: usage errors, loading a
// transformers.js tokenizer through @lenml/tokenizers, and the command-line
// wrapper (exit 0 ok, 1 runtime error, 2 usage error).
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

// An Error that makes runCli print the usage and exit 2.
export function usageError(msg) {
    return Object.assign(new Error(msg), { usage: true });
}

// A @lenml/tokenizers tokenizer from the tokenizer.json at tjson and a parsed
// tokenizer_config.json (config).
export function lenmlTokenizer(tjson, config) {
    let TokenizerLoader;
    try {
        ({ TokenizerLoader } = require("@lenml/tokenizers"));
    } catch (e) {
        throw new Error(`cannot load @lenml/tokenizers (run tests/ref/install.sh first): ${e.message}`);
    }
    return TokenizerLoader.fromPreTrained({
        tokenizerJSON: JSON.parse(fs.readFileSync(tjson, "utf8")),
        tokenizerConfig: config,
    });
}

// Runs main(argv) and sets the exit status; an error is printed as
// "PROG: message" (followed by the usage for a usageError).
export function runCli(prog, usage, main) {
    try {
        process.exitCode = main(process.argv.slice(2));
    } catch (e) {
        process.stderr.write(`${prog}: ${e.message}\n`);
        if (e.usage) process.stderr.write(usage + "\n");
        process.exitCode = e.usage ? 2 : 1;
    }
}
