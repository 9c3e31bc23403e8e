#!/usr/bin/env node
// llama.mjs — CLI over llama.cpp (npm node-llama-cpp, prebuilt CPU binaries) with the same JSON
// outputs as moectl, used as the independent numerical reference and speed peer.
// stdout carries exactly one JSON document; all llama.cpp / node-llama-cpp logging goes to stderr.
// Nothing is downloaded or compiled at run time (build: "never", skipDownload).

const USAGE = `usage:
  node tests/ref/llama.mjs logits   MODEL.gguf --tokens 1,2,3 [--threads N]
      -> {"n_vocab": V, "positions": [{"pos": 0, "token": 1, "logits": [V numbers]}, ...]}
         (teacher forced: logits after each prompt position, one batch)
  node tests/ref/llama.mjs generate MODEL.gguf --tokens 1,2,3 -n 16 [--threads N]
      -> {"tokens": [...]}   (greedy, exactly n generated ids, never stops at EOS/EOG)
     --tokens 1,2;3,4,5 (several prompts, each in a fresh context, one model load)
      -> {"results": [[...], [...]]}
  node tests/ref/llama.mjs tokenize MODEL.gguf --texts FILE.json [--special]
      -> {"results": [{"tokens": [...]}, ...]}  (FILE.json: an array of strings; llama.cpp's
         tokenizer with the model's pre-tokenizer; --special parses special-token text; no
         BOS is added)
  node tests/ref/llama.mjs bench    MODEL.gguf [--prompt 128] [--gen 64] [--threads N] [--reps R]
      -> {"prefill_tok_s": x, "decode_tok_s": y, "threads": N, "prompt": P, "gen": G}
         (prefill: one batch of P tokens into a fresh sequence; decode: G single-token steps
          after it; token ids i*7 % n_vocab skipping special tokens; best of R reps, default 3)
  node tests/ref/llama.mjs serve    MODEL.gguf --sequences N [--prompt 128] [--gen 64] [--threads N]
                                   [--vocab 4000] [--seed 1]
      -> {"sequences": N, "tok_s": x, "decode_tok_s": y, "ttft_p50_ms": ..., "itl_p99_ms": ...}
         llama.cpp serving N streams at once (what llama-server --parallel N does): one
         context with N sequences, N prompts of P random ids in [1, min(V, n_vocab)) (special
         tokens skipped) prefilled together, then G-1 steps in which every sequence's
         controlledEvaluate of its last token is awaited together (node-llama-cpp puts them
         in one batch): G tokens per sequence, the first sampled after the prompt.
         tok_s = N*G / (prompts + decode); TTFT = start -> a sequence's first token;
         ITL = gaps between a sequence's consecutive tokens. One timed run, after an untimed
         warm-up of the same shapes (other prompts, 2 steps).

options:
  --threads N   threads for both batch and decode (default 1; 1 is deterministic)
  --cache-type f16|f32
                the KV cache's type, K and V (default f16, llama.cpp's default)
  --verbose     llama.cpp log level "info" instead of "warn" (always on stderr)
  -h, --help    this text

Settings: CPU only, KV cache --cache-type (K and V), flash attention off, mmap on, batch = ubatch >= prompt
(serve: max(P, min(N*P, 512))), context = tokens (+ generated) rounded up to 256 (serve: per
sequence), greedy sampling with a fixed seed.
Exit status: 0 ok, 1 runtime error, 2 usage error. Errors go to stderr.`;

class UsageError extends Error {}

// the KV cache's type for every context (--cache-type)
let cacheType = "F16";

// Route any console.log/info/debug from libraries to stderr; stdout is reserved for the JSON result.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

function parseArgs(argv) {
    const o = { cmd: null, model: null, tokens: null, n: null, threads: 1, prompt: 128, gen: 64, reps: 3, verbose: false,
                sequences: null, vocab: 4000, seed: 1 };
    const pos = [];
    const num = (flag, v, min) => {
        if (v === undefined) throw new UsageError(`${flag} needs a value`);
        if (!/^\d+$/.test(v)) throw new UsageError(`${flag}: not a non-negative integer: ${v}`);
        const x = Number(v);
        if (x < min) throw new UsageError(`${flag} must be >= ${min}`);
        return x;
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        switch (a) {
            case "-h": case "--help": o.help = true; break;
            case "--tokens": {
                const v = argv[++i];
                if (v === undefined) throw new UsageError("--tokens needs a value");
                o.prompts = v.split(";").map(p => {
                    const parts = p.split(",").map(s => s.trim()).filter(s => s !== "");
                    if (parts.length === 0) throw new UsageError("--tokens: empty token list");
                    return parts.map(s => {
                        if (!/^\d+$/.test(s)) throw new UsageError(`--tokens: not a token id: ${s}`);
                        return Number(s);
                    });
                });
                o.tokens = o.prompts[0];
                break;
            }
            case "-n": case "--n": o.n = num(a, argv[++i], 0); break;
            case "--threads": o.threads = num(a, argv[++i], 1); break;
            case "--prompt": o.prompt = num(a, argv[++i], 1); break;
            case "--gen": o.gen = num(a, argv[++i], 0); break;
            case "--reps": o.reps = num(a, argv[++i], 1); break;
            case "--sequences": o.sequences = num(a, argv[++i], 1); break;
            case "--vocab": o.vocab = num(a, argv[++i], 2); break;
            case "--seed": o.seed = num(a, argv[++i], 0); break;
            case "--verbose": o.verbose = true; break;
            case "--cache-type": {
                const t = argv[++i];
                if (t !== "f16" && t !== "f32") throw new UsageError(`--cache-type: f16 or f32, not ${t}`);
                cacheType = t.toUpperCase();
                break;
            }
            case "--texts": o.texts = argv[++i]; break;
            case "--special": o.special = true; break;
            default:
                if (a.startsWith("-")) throw new UsageError(`unknown option: ${a}`);
                pos.push(a);
        }
    }
    if (o.help) return o;
    if (pos.length < 1) throw new UsageError("missing command (logits | generate | bench | tokenize | serve)");
    if (pos.length < 2) throw new UsageError("missing MODEL.gguf");
    if (pos.length > 2) throw new UsageError(`unexpected argument: ${pos[2]}`);
    [o.cmd, o.model] = pos;
    if (!["logits", "generate", "bench", "tokenize", "serve"].includes(o.cmd)) throw new UsageError(`unknown command: ${o.cmd}`);
    if (o.cmd === "serve" && !o.sequences) throw new UsageError("serve needs --sequences N");
    if (o.cmd === "serve" && o.gen < 1) throw new UsageError("serve needs --gen >= 1");
    if (o.sequences !== null && o.sequences > 1024) throw new UsageError("--sequences must be <= 1024");
    if (o.cmd === "tokenize" && !o.texts) throw new UsageError("tokenize needs --texts FILE.json");
    if ((o.cmd === "logits" || o.cmd === "generate") && !o.tokens) throw new UsageError(`${o.cmd} needs --tokens`);
    if (o.cmd === "generate" && o.n === null) throw new UsageError("generate needs -n");
    if (o.cmd !== "generate" && o.prompts && o.prompts.length > 1)
        throw new UsageError("--tokens: several prompts (A;B) only for generate");
    return o;
}

const roundUp = (x, m) => Math.ceil(Math.max(1, x) / m) * m;

async function openModel(o) {
    const fs = await import("node:fs");
    if (!fs.existsSync(o.model)) throw new Error(`model not found: ${o.model}`);
    let nlc;
    try {
        nlc = await import("node-llama-cpp");
    } catch (e) {
        throw new Error(`cannot load node-llama-cpp (run tests/ref/install.sh first): ${e.message}`);
    }
    const { getLlama, LlamaLogLevel } = nlc;
    const llama = await getLlama({
        gpu: false,
        build: "never",            // prebuilt binary only: never compile
        usePrebuiltBinaries: true,
        skipDownload: true,        // never fetch llama.cpp sources
        progressLogs: false,
        maxThreads: 0,             // no thread-splitter cap: the context uses exactly --threads
        logLevel: o.verbose ? LlamaLogLevel.info : LlamaLogLevel.warn,
        logger: (level, message) => process.stderr.write(`[llama.cpp ${level}] ${message}${message.endsWith("\n") ? "" : "\n"}`),
    });
    const model = await llama.loadModel({
        modelPath: o.model,
        gpuLayers: 0,
        useMmap: true,
        useDirectIo: false,
        useMlock: false,
        defaultContextFlashAttention: false,
    });
    const md = model.fileInfo.metadata;
    const arch = md.general?.architecture;
    const nVocab = md[arch]?.vocab_size ?? md.tokenizer?.ggml?.tokens?.length;
    return { llama, model, nVocab };
}

async function makeContext(model, nTokens, batch, threads) {
    const context = await model.createContext({
        contextSize: roundUp(nTokens, 256),
        batchSize: Math.max(1, batch),
        sequences: 1,
        threads,
        flashAttention: false,
        experimentalKvCacheKeyType: cacheType,
        experimentalKvCacheValueType: cacheType,
        swaFullCache: true,
        failedCreationRemedy: false,
        ignoreMemorySafetyChecks: true,
    });
    return context;
}

const SAMPLE = { temperature: 0, seed: 1234 };   // greedy; seed fixed anyway

function checkTokens(tokens, nVocab) {
    if (nVocab == null) return;
    for (const t of tokens)
        if (t >= nVocab) throw new UsageError(`token id ${t} out of range (n_vocab ${nVocab})`);
}

async function cmdLogits(o) {
    const { model, nVocab } = await openModel(o);
    checkTokens(o.tokens, nVocab);
    const ctx = await makeContext(model, o.tokens.length, o.tokens.length, o.threads);
    const seq = ctx.getSequence();
    const res = await seq.controlledEvaluate(
        o.tokens.map(t => [t, { generateNext: { logits: true, options: SAMPLE } }]));
    const positions = [];
    let V = null;
    for (let i = 0; i < o.tokens.length; i++) {
        const m = res[i]?.next?.logits;
        if (!m) throw new Error(`no logits returned for position ${i}`);
        if (V === null) V = m.size;
        if (m.size !== V || (nVocab != null && m.size !== nVocab))
            throw new Error(`position ${i}: got ${m.size} logits, expected ${nVocab ?? V}`);
        // values arrive as doubles converted from the float32 logits: a Float32Array holds them exactly
        const row = new Float32Array(V).fill(NaN);
        for (const [tok, val] of m) row[tok] = val;
        for (let j = 0; j < V; j++)
            if (!Number.isFinite(row[j])) throw new Error(`position ${i}: logit ${j} is ${row[j]}`);
        positions.push({ pos: i, token: o.tokens[i], logits: row });
    }
    await ctx.dispose();
    return { n_vocab: V, positions };
}

// Evaluates prompt, then greedily n tokens one at a time; never stops at EOG.
async function greedy(seq, prompt, n, onStep) {
    const out = [];
    if (n === 0) {
        await seq.controlledEvaluate(prompt);
        return out;
    }
    const first = await seq.controlledEvaluate(
        prompt.map((t, i) => i === prompt.length - 1 ? [t, { generateNext: { token: true, options: SAMPLE } }] : t));
    let tok = first[prompt.length - 1]?.next?.token;
    if (tok == null) throw new Error("no token sampled after prompt");
    out.push(tok);
    onStep?.(0);
    while (out.length < n) {
        const r = await seq.controlledEvaluate([[tok, { generateNext: { token: true, options: SAMPLE } }]]);
        tok = r[0]?.next?.token;
        if (tok == null) throw new Error(`no token sampled at step ${out.length}`);
        out.push(tok);
    }
    return out;
}

async function cmdGenerate(o) {
    const { model, nVocab } = await openModel(o);
    const results = [];
    // one model load; each prompt in a fresh context of its own size, as one
    // call per prompt would make it
    for (const prompt of o.prompts) {
        checkTokens(prompt, nVocab);
        const ctx = await makeContext(model, prompt.length + o.n, prompt.length, o.threads);
        const seq = ctx.getSequence();
        const tokens = await greedy(seq, prompt, o.n);
        if (tokens.length !== o.n) throw new Error(`generated ${tokens.length} tokens, wanted ${o.n}`);
        await ctx.dispose();
        results.push(tokens);
    }
    return o.prompts.length === 1 ? { tokens: results[0] } : { results };
}

async function cmdBench(o) {
    const { model, nVocab } = await openModel(o);
    if (!nVocab) throw new Error("cannot determine n_vocab from the GGUF metadata");
    const prompt = [];
    for (let i = 0; prompt.length < o.prompt; i++) {
        if (i > o.prompt + nVocab) throw new Error("not enough non-special tokens for the bench prompt");
        const t = (i * 7) % nVocab;
        if (model.isSpecialToken(t) || model.isEogToken(t)) continue;
        prompt.push(t);
    }
    const ctx = await makeContext(model, o.prompt + o.gen, o.prompt, o.threads);
    const seq = ctx.getSequence();
    let bestPrefill = 0, bestDecode = 0;
    for (let r = 0; r < o.reps; r++) {
        await seq.clearHistory();
        const t0 = process.hrtime.bigint();
        const res = await seq.controlledEvaluate(
            prompt.map((t, i) => i === prompt.length - 1 ? [t, { generateNext: { token: true, options: SAMPLE } }] : t));
        const t1 = process.hrtime.bigint();
        let tok = res[prompt.length - 1]?.next?.token;
        if (tok == null) throw new Error("no token sampled after prompt");
        const t2 = process.hrtime.bigint();
        for (let g = 0; g < o.gen; g++) {
            const rr = await seq.controlledEvaluate([[tok, { generateNext: { token: true, options: SAMPLE } }]]);
            tok = rr[0]?.next?.token;
            if (tok == null) throw new Error(`no token sampled at decode step ${g}`);
        }
        const t3 = process.hrtime.bigint();
        const prefill = o.prompt / (Number(t1 - t0) / 1e9);
        bestPrefill = Math.max(bestPrefill, prefill);
        if (o.gen > 0) bestDecode = Math.max(bestDecode, o.gen / (Number(t3 - t2) / 1e9));
        process.stderr.write(`[bench] rep ${r + 1}/${o.reps}: prefill ${prefill.toFixed(1)} tok/s` +
            (o.gen > 0 ? `, decode ${(o.gen / (Number(t3 - t2) / 1e9)).toFixed(1)} tok/s` : "") +
            ` (threads ${ctx.currentThreads})\n`);
    }
    await ctx.dispose();
    const r3 = x => Math.round(x * 1000) / 1000;
    return { prefill_tok_s: r3(bestPrefill), decode_tok_s: o.gen > 0 ? r3(bestDecode) : null, threads: o.threads, prompt: o.prompt, gen: o.gen };
}

// Nearest-rank percentile of a sorted array (null when empty).
function pct(sorted, q) {
    if (!sorted.length) return null;
    const i = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
    return sorted[i - 1];
}

async function cmdServe(o) {
    const { model, nVocab } = await openModel(o);
    if (!nVocab) throw new Error("cannot determine n_vocab from the GGUF metadata");
    const N = o.sequences, P = o.prompt, G = o.gen;
    const hi = Math.min(o.vocab, nVocab);
    // one PRNG stream per sequence (mulberry32): different prompts, no shared prefixes
    const rng = (seed) => () => {
        seed = (seed + 0x6d2b79f5) | 0;
        let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const prompts = [];
    for (let s = 0; s < N; s++) {
        const r = rng(o.seed * 100003 + s + 1), p = [];
        for (let guard = 0; p.length < P; guard++) {
            if (guard > 100 * P + 1000) throw new Error("not enough non-special tokens for the prompts");
            const t = 1 + Math.floor(r() * (hi - 1));
            if (model.isSpecialToken(t) || model.isEogToken(t)) continue;
            p.push(t);
        }
        prompts.push(p);
    }
    const batch = Math.max(P, Math.min(N * P, 512));
    const ctx = await model.createContext({
        contextSize: roundUp(P + G, 256),   // per sequence
        batchSize: batch,
        sequences: N,
        threads: o.threads,
        flashAttention: false,
        experimentalKvCacheKeyType: cacheType,
        experimentalKvCacheValueType: cacheType,
        swaFullCache: true,
        failedCreationRemedy: false,
        ignoreMemorySafetyChecks: true,
    });
    const seqs = [];
    for (let s = 0; s < N; s++) seqs.push(ctx.getSequence());
    const now = () => Number(process.hrtime.bigint()) / 1e6;   // ms
    const gen1 = [{ generateNext: { token: true, options: SAMPLE } }];
    // warm-up, not timed: the same shapes once (prompts shifted by one id, 2 steps), so the first
    // batches' buffer allocations are not measured; then every sequence is emptied
    await Promise.all(seqs.map((seq, s) => seq.controlledEvaluate(
        prompts[s].map((t, i) => i === P - 1 ? [1 + (t % (hi - 1)), ...gen1] : 1 + (t % (hi - 1))))));
    for (let w = 0; w < 2; w++) await Promise.all(seqs.map((seq, s) => seq.controlledEvaluate([[prompts[s][w % P], ...gen1]])));
    for (const seq of seqs) await seq.clearHistory();
    const last = new Array(N), tok = new Array(N), ttft = [], itl = [];
    const t0 = now();
    // prompts: all N evaluations queued in the same tick, batched together by node-llama-cpp
    await Promise.all(seqs.map((seq, s) => seq.controlledEvaluate(
        prompts[s].map((t, i) => i === P - 1 ? [t, { generateNext: { token: true, options: SAMPLE } }] : t))
        .then((res) => {
            const t = now();
            tok[s] = res[P - 1]?.next?.token;
            if (tok[s] == null) throw new Error(`sequence ${s}: no token sampled after the prompt`);
            ttft.push(t - t0);
            last[s] = t;
        })));
    const t1 = now();
    for (let g = 1; g < G; g++) {
        await Promise.all(seqs.map((seq, s) => seq.controlledEvaluate(
            [[tok[s], { generateNext: { token: true, options: SAMPLE } }]])
            .then((res) => {
                const t = now();
                tok[s] = res[0]?.next?.token;
                if (tok[s] == null) throw new Error(`sequence ${s}: no token sampled at step ${g}`);
                itl.push(t - last[s]);
                last[s] = t;
            })));
    }
    const t2 = now();
    const threads = ctx.currentThreads;
    await ctx.dispose();
    ttft.sort((a, b) => a - b);
    itl.sort((a, b) => a - b);
    const r3 = x => x == null ? null : Math.round(x * 1000) / 1000;
    return {
        sequences: N, prompt: P, gen: G, threads, kv: cacheType.toLowerCase(), batch,
        tokens: N * G,
        wall_s: r3((t2 - t0) / 1000),
        tok_s: r3(N * G / ((t2 - t0) / 1000)),
        prefill_tok_s: r3(N * P / ((t1 - t0) / 1000)),
        decode_tok_s: G > 1 ? r3(N * (G - 1) / ((t2 - t1) / 1000)) : null,
        ttft_p50_ms: r3(pct(ttft, 0.5)), ttft_p99_ms: r3(pct(ttft, 0.99)),
        itl_p50_ms: r3(pct(itl, 0.5)), itl_p99_ms: r3(pct(itl, 0.99)),
    };
}

async function cmdTokenize(o) {
    const fs = await import("node:fs");
    const texts = JSON.parse(fs.readFileSync(o.texts, "utf8"));
    if (!Array.isArray(texts) || texts.some((t) => typeof t !== "string"))
        throw new UsageError("--texts must hold a JSON array of strings");
    const { model } = await openModel(o);
    return { results: texts.map((t) => ({ tokens: Array.from(model.tokenize(t, !!o.special)) })) };
}

async function main() {
    let o;
    try {
        o = parseArgs(process.argv.slice(2));
    } catch (e) {
        if (e instanceof UsageError) {
            process.stderr.write(`llama.mjs: ${e.message}\n(run with --help for usage)\n`);
            process.exit(2);
        }
        throw e;
    }
    if (o.help) {
        process.stdout.write(USAGE + "\n");
        return;
    }
    let result;
    try {
        if (o.cmd === "logits") result = await cmdLogits(o);
        else if (o.cmd === "generate") result = await cmdGenerate(o);
        else if (o.cmd === "tokenize") result = await cmdTokenize(o);
        else if (o.cmd === "serve") result = await cmdServe(o);
        else result = await cmdBench(o);
    } catch (e) {
        process.stderr.write(`llama.mjs ${o.cmd}: ${e instanceof UsageError ? "" : "error: "}${e?.message ?? e}\n`);
        process.exit(e instanceof UsageError ? 2 : 1);
    }
    await writeResult(result);
    process.exit(0);
}

// Number -> string gives the shortest decimal that round-trips the double; float32 values are exact
// doubles, so logits are printed with full float32 precision. Logits files are streamed position by
// position (a single JSON.stringify of a big-vocab run could exceed V8's maximum string length).
async function writeResult(result) {
    const { once } = await import("node:events");
    const put = async (s) => {
        if (!process.stdout.write(s)) await once(process.stdout, "drain");
    };
    if (result.positions) {
        await put(`{"n_vocab":${result.n_vocab},"positions":[`);
        for (let i = 0; i < result.positions.length; i++) {
            const p = result.positions[i];
            await put(`${i ? "," : ""}{"pos":${p.pos},"token":${p.token},"logits":[${Array.prototype.join.call(p.logits, ",")}]}`);
        }
        await put("]}\n");
    } else {
        await put(JSON.stringify(result) + "\n");
    }
    // wait until everything written so far is flushed before the caller exits
    await new Promise((resolve, reject) => process.stdout.write("", (err) => err ? reject(err) : resolve()));
}

main().catch(e => {
    process.stderr.write(`llama.mjs: error: ${e?.stack ?? e}\n`);
    process.exit(1);
});
