#!/usr/bin/env node
// gw_greedy.mjs — greedy completions from token-id prompts, sent to the gateway all at once
// (so that they share engine steps), half of them streamed:
//   node tests/ref/gw_greedy.mjs --base http://127.0.0.1:PORT --model NAME --prompts "1,2,3;4,5" -n 16
// -> {"results": [[ids...], ...]} (the generated ids of each prompt, in order; vLLM's
// return_token_ids extension; ignore_eos so that exactly n are generated). Exit 1 on an error.
const args = process.argv.slice(2);
const opt = (k, d) => (args.indexOf(k) >= 0 ? args[args.indexOf(k) + 1] : d);
const base = opt("--base"), model = opt("--model"), n = Number(opt("-n", "16"));
const prompts = opt("--prompts").split(";").map((p) => p.split(",").map(Number));
async function one(prompt, stream) {
    const body = { model, prompt, max_tokens: n, temperature: 0, ignore_eos: true, return_token_ids: true, stream };
    const r = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body), signal: AbortSignal.timeout(120000) });
    const text = await r.text();
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${text}`);
    if (!stream) return JSON.parse(text).choices[0].token_ids;
    const ids = [];
    for (const ev of text.split("\n\n")) {
        if (!ev.startsWith("data: {")) continue;
        const c = JSON.parse(ev.slice(6));
        if (c.error) throw new Error(JSON.stringify(c.error));
        for (const ch of c.choices) ids.push(...(ch.token_ids ?? []));
    }
    if (!text.trimEnd().endsWith("data: [DONE]")) throw new Error("stream without [DONE]");
    return ids;
}
try {
    const results = await Promise.all(prompts.map((p, i) => one(p, i % 2 === 1)));
    process.stdout.write(JSON.stringify({ results }) + "\n");
} catch (e) {
    console.error(`gw_greedy: ${e.message}`);
    process.exit(1);
}
