#!/usr/bin/env node
// openai_check.mjs — the gateway as OpenAI's official Node client (npm `openai`, pinned in
// package-lock.json) sees it: chat and completions, streamed and not, include_usage, logprobs,
// n, seeds, stop strings, errors, and N concurrent streams.
//
//   node tests/ref/openai_check.mjs api     --base http://127.0.0.1:PORT/v1 --model NAME
//   node tests/ref/openai_check.mjs streams --base ... --model NAME --n 64 --tokens 16
//
// Prints "ok: ..." / "FAIL: ..." lines; exit 0 when every check passed, 1 otherwise.
// Every request has a timeout; nothing retries (maxRetries 0).
import OpenAI from "openai";

const args = process.argv.slice(2);
const cmd = args[0];
const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : def;
};
const base = opt("--base");
const model = opt("--model");
if (!cmd || !base || !model) {
    console.error("usage: openai_check.mjs api|streams --base URL --model NAME [--n N --tokens T]");
    process.exit(2);
}
const client = new OpenAI({ baseURL: base, apiKey: "not-needed", maxRetries: 0, timeout: 120000 });
let failed = 0;
const ok = (m) => console.log(`ok: ${m}`);
const bad = (m) => {
    console.log(`FAIL: ${m}`);
    failed++;
};
const check = (cond, m, detail = "") => (cond ? ok(m) : bad(`${m}${detail ? ": " + detail : ""}`));
const J = (x) => JSON.stringify(x);

async function collect(stream) {
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    return chunks;
}

async function expectError(label, status, param, fn) {
    try {
        await fn();
        bad(`${label}: no error`);
    } catch (e) {
        const good = e instanceof OpenAI.APIError && e.status === status && (param === undefined || e.param === param);
        check(good, `${label}: ${e.constructor.name} ${e.status} param=${e.param}: ${String(e.message).slice(0, 120)}`,
            `want ${status} param=${param}`);
    }
}

async function api() {
    const msgs = [{ role: "system", content: "You are terse." }, { role: "user", content: "Say something." }];
    // ---- models
    const models = await client.models.list();
    check(models.data.some((m) => m.id === model), `models.list has ${model}`, J(models.data));
    const m = await client.models.retrieve(model);
    check(m.id === model && m.object === "model", "models.retrieve");

    // ---- chat, not streamed: greedy, ignore_eos -> exactly max_tokens
    const c1 = await client.chat.completions.create({ model, messages: msgs, max_tokens: 12, temperature: 0, ignore_eos: true });
    const ch = c1.choices[0];
    check(c1.object === "chat.completion" && ch.message.role === "assistant" && typeof ch.message.content === "string",
        "chat: an assistant message", J(c1));
    check(c1.usage.completion_tokens === 12 && ch.finish_reason === "length", `chat: 12 tokens, finish length (${J(c1.usage)})`);
    check(c1.usage.total_tokens === c1.usage.prompt_tokens + 12 && typeof c1.usage.prompt_tokens_details?.cached_tokens === "number",
        "chat: usage totals and prompt_tokens_details.cached_tokens");
    const c1b = await client.chat.completions.create({ model, messages: msgs, max_completion_tokens: 12, temperature: 0, ignore_eos: true });
    check(c1b.choices[0].message.content === ch.message.content, "chat: greedy is repeatable (max_completion_tokens too)");
    check(c1b.usage.prompt_tokens_details.cached_tokens >= c1b.usage.prompt_tokens - 1,
        `chat: the repeated prompt is served from the cache (${c1b.usage.prompt_tokens_details.cached_tokens} of ${c1b.usage.prompt_tokens})`);

    // ---- chat, streamed, include_usage
    const chunks = await collect(await client.chat.completions.create({
        model, messages: msgs, max_tokens: 12, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }));
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    check(chunks[0].choices[0].delta.role === "assistant", "chat stream: the first chunk has the role");
    check(text === ch.message.content, "chat stream: the deltas join to the non-streamed content", `${J(text)} vs ${J(ch.message.content)}`);
    const fin = chunks.filter((c) => c.choices[0]?.finish_reason);
    check(fin.length === 1 && fin[0].choices[0].finish_reason === "length", "chat stream: one finish chunk");
    const last = chunks[chunks.length - 1];
    check(last.choices.length === 0 && last.usage?.completion_tokens === 12, "chat stream: a last chunk with usage", J(last));
    check(chunks.slice(0, -1).every((c) => c.usage === null), "chat stream: usage null before the last chunk");
    check(chunks.every((c) => c.id === chunks[0].id && c.object === "chat.completion.chunk"), "chat stream: one id, chunk objects");
    const noUsage = await collect(await client.chat.completions.create({ model, messages: msgs, max_tokens: 3, stream: true }));
    check(noUsage.every((c) => c.usage === undefined && c.choices.length === 1), "chat stream without include_usage: no usage field");

    // ---- logprobs (chat)
    const lp = await client.chat.completions.create({ model, messages: msgs, max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 3 });
    const items = lp.choices[0].logprobs?.content ?? [];
    check(items.length === 6, `chat logprobs: one entry per token (${items.length})`);
    check(items.every((it) => it.logprob <= 0 && it.top_logprobs.length === 3 && Array.isArray(it.bytes)),
        "chat logprobs: logprob <= 0, 3 alternatives, bytes");
    check(items.every((it) => Math.abs(it.top_logprobs[0].logprob - it.logprob) < 1e-6 &&
        it.top_logprobs.every((t, i, a) => i === 0 || a[i - 1].logprob >= t.logprob)),
        "chat logprobs: greedy picks the best alternative; alternatives sorted");
    check(items.map((it) => it.token).join("") === lp.choices[0].message.content,
        "chat logprobs: the tokens join to the content");
    const lps = await collect(await client.chat.completions.create({ model, messages: msgs, max_tokens: 6, temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 2, stream: true }));
    const sItems = lps.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    check(sItems.length === 6 && sItems.every((it, i) => it.token === items[i].token && Math.abs(it.logprob - items[i].logprob) < 1e-6),
        "chat stream logprobs: the same tokens and logprobs");

    // ---- sampling: seeds, n
    const samp = { model, messages: msgs, max_tokens: 10, temperature: 1, top_p: 0.95, top_k: 40, min_p: 0.01, ignore_eos: true, seed: 42 };
    const s1 = await client.chat.completions.create({ ...samp, n: 3 });
    const s2 = await client.chat.completions.create({ ...samp, n: 3 });
    check(s1.choices.length === 3 && s1.choices.map((c) => c.index).join() === "0,1,2", "chat n=3: three choices, indices 0..2");
    check(J(s1.choices.map((c) => c.message.content)) === J(s2.choices.map((c) => c.message.content)), "chat n=3 seed 42: repeatable");
    check(new Set(s1.choices.map((c) => c.message.content)).size > 1, "chat n=3 at temperature 1: the choices differ");
    check(s1.usage.completion_tokens === 30, `chat n=3: usage counts every choice (${s1.usage.completion_tokens})`);
    const pen = await client.chat.completions.create({ ...samp, presence_penalty: 1.5, frequency_penalty: 1.0, user: "u1" });
    check(pen.choices[0].message.content.length > 0, "chat: presence/frequency penalties and user accepted");

    // ---- completions: text, ids, list, echo, stream, logprobs
    const p = "The quick brown fox";
    const k1 = await client.completions.create({ model, prompt: p, max_tokens: 8, temperature: 0, ignore_eos: true });
    check(k1.object === "text_completion" && k1.choices[0].finish_reason === "length" && k1.usage.completion_tokens === 8,
        "completions: text prompt", J(k1));
    const tok = await (await fetch(base.replace(/\/v1$/, "") + "/tokenize", { method: "POST", body: J({ model, prompt: p }) })).json();
    check(tok.count === k1.usage.prompt_tokens, `tokenize: ${tok.count} tokens, as usage counted`);
    const k2 = await client.completions.create({ model, prompt: tok.tokens, max_tokens: 8, temperature: 0, ignore_eos: true });
    check(k2.choices[0].text === k1.choices[0].text, "completions: token-id prompt == its text");
    const det = await (await fetch(base.replace(/\/v1$/, "") + "/detokenize", { method: "POST", body: J({ model, tokens: tok.tokens }) })).json();
    check(typeof det.prompt === "string" && det.prompt.includes("quick"), `detokenize: ${J(det.prompt)}`);
    const kl = await client.completions.create({ model, prompt: [p, tok.tokens], n: 2, max_tokens: 8, temperature: 0, ignore_eos: true });
    check(kl.choices.length === 4 && kl.choices.map((c) => c.index).join() === "0,1,2,3" &&
        kl.choices.every((c) => c.text === k1.choices[0].text), "completions: 2 prompts x n=2, greedy, all equal");
    check(kl.usage.prompt_tokens === 2 * k1.usage.prompt_tokens && kl.usage.completion_tokens === 32, "completions: list usage");
    const ke = await client.completions.create({ model, prompt: p, max_tokens: 8, temperature: 0, ignore_eos: true, echo: true });
    check(ke.choices[0].text === p + k1.choices[0].text, "completions: echo puts the prompt first");
    const ks = await collect(await client.completions.create({ model, prompt: p, max_tokens: 8, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }));
    check(ks.map((c) => c.choices[0]?.text ?? "").join("") === k1.choices[0].text && ks[ks.length - 1].usage?.completion_tokens === 8,
        "completions stream: pieces join to the text; usage last");
    const klp = await client.completions.create({ model, prompt: p, max_tokens: 5, temperature: 0, ignore_eos: true, logprobs: 2 });
    const L = klp.choices[0].logprobs;
    check(L && L.tokens.length === 5 && L.token_logprobs.length === 5 && L.top_logprobs.length === 5 && L.text_offset.length === 5 &&
        L.top_logprobs.every((o) => Object.keys(o).length >= 1 && Object.keys(o).length <= 2) && L.tokens.join("") === klp.choices[0].text,
        "completions logprobs: tokens, token_logprobs, top_logprobs, text_offset", J(L));

    // ---- stop strings (checked against the greedy text without them)
    const full = (await client.completions.create({ model, prompt: p, max_tokens: 16, temperature: 0, ignore_eos: true })).choices[0].text;
    const cut = Math.floor(full.length / 2);
    const stop = full.slice(cut, cut + 2);
    const want = full.slice(0, full.indexOf(stop));
    const ss = await client.completions.create({ model, prompt: p, max_tokens: 16, temperature: 0, ignore_eos: true, stop: [stop, "\u0000never"] });
    check(ss.choices[0].text === want && ss.choices[0].finish_reason === "stop", `stop ${J(stop)}: text cut before it, finish stop`,
        `${J(ss.choices[0].text)} vs ${J(want)}`);
    const sst = await collect(await client.chat.completions.create({ model, messages: msgs, max_tokens: 12, temperature: 0, ignore_eos: true, stream: true, stop: ch.message.content.slice(4, 6) }));
    const stext = sst.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    const swant = ch.message.content.slice(0, ch.message.content.indexOf(ch.message.content.slice(4, 6)));
    check(stext === swant && sst.some((c) => c.choices[0]?.finish_reason === "stop"), "chat stream stop string", `${J(stext)} vs ${J(swant)}`);

    // ---- errors, as the client raises them
    await expectError("unknown model", 404, "model", () => client.chat.completions.create({ model: "nope", messages: msgs }));
    await expectError("temperature 3", 400, "temperature", () => client.chat.completions.create({ model, messages: msgs, temperature: 3 }));
    await expectError("tools", 400, "tools", () => client.chat.completions.create({ model, messages: msgs, tools: [{ type: "function", function: { name: "f", parameters: {} } }] }));
    await expectError("response_format json_object", 400, "response_format", () => client.chat.completions.create({ model, messages: msgs, response_format: { type: "json_object" } }));
    await expectError("suffix", 400, "suffix", () => client.completions.create({ model, prompt: p, suffix: "x" }));
    await expectError("n 9", 400, "n", () => client.completions.create({ model, prompt: p, n: 9 }));
    await expectError("empty messages", 400, "messages", () => client.chat.completions.create({ model, messages: [] }));
    await expectError("role tool", 400, "messages[0].role", () => client.chat.completions.create({ model, messages: [{ role: "tool", content: "x", tool_call_id: "1" }] }));
    await expectError("image part", 400, "messages[0].content[0]", () => client.chat.completions.create({ model, messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:," } }] }] }));
    await expectError("unknown model (retrieve)", 404, "model", () => client.models.retrieve("nope"));
    const unk = await client.chat.completions.create({ model, messages: msgs, max_tokens: 2, some_future_field: { a: 1 } });
    check(unk.choices.length === 1, "unknown fields are ignored");
}

async function streams() {
    const n = Number(opt("--n", "64")), T = Number(opt("--tokens", "16"));
    const t0 = Date.now();
    const res = await Promise.all(Array.from({ length: n }, async (_, i) => {
        const kind = i % 2 ? "chat" : "completions";
        const s = kind === "chat"
            ? await client.chat.completions.create({ model, messages: [{ role: "user", content: `stream ${i}` }], max_tokens: T,
                temperature: 0.8, seed: i, ignore_eos: true, stream: true, stream_options: { include_usage: true } })
            : await client.completions.create({ model, prompt: `stream ${i}`, max_tokens: T, temperature: 0.8, seed: i,
                ignore_eos: true, stream: true, stream_options: { include_usage: true } });
        const chunks = await collect(s);
        const usage = chunks[chunks.length - 1].usage;
        const fin = chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason;
        return { i, tokens: usage?.completion_tokens, fin };
    }));
    const good = res.filter((r) => r.tokens === T && r.fin === "length").length;
    check(good === n, `${n} concurrent streams: ${good} completed with ${T} tokens each in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
        J(res.filter((r) => r.tokens !== T || r.fin !== "length").slice(0, 5)));
}

try {
    if (cmd === "api") await api();
    else if (cmd === "streams") await streams();
    else {
        console.error(`unknown command ${cmd}`);
        process.exit(2);
    }
} catch (e) {
    bad(`unexpected ${e.constructor.name}: ${e.status ?? ""} ${e.message}`);
}
process.exit(failed ? 1 : 0);
