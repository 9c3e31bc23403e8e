#!/usr/bin/env node
// limits_check.mjs — a tenant's limits on the gateway (issue 15) as OpenAI's official Node
// client sees them: 429 RateLimitError with Retry-After, x-ratelimit-* headers. The key
// comes from the environment (MOE_TEST_KEY), never argv. Nothing retries (maxRetries 0).
//
//   node limits_check.mjs rpm  --bases U1/v1,U2/v1 --model M --rpm N --window S
//        waits for a window's start, N requests alternating replicas (200, remaining
//        N-1..0), then the N+1th: 429 (type requests, Retry-After, headers); then, after
//        Retry-After, allowed again
//   node limits_check.mjs one  --base U/v1 --model M --expect 200|429|400 [--max-tokens K]
//        [--type requests|tokens] [--code C] [--want TEXT] [--label L]
//   node limits_check.mjs conc --bases U1/v1,U2/v1 --model M --n N --max-tokens K --refused R
//        N requests at once across the replicas: exactly R of them 429 (concurrency)
//   node limits_check.mjs align --window S        waits until a window has just begun
//
// Prints "ok: ..." / "FAIL: ..." lines; exit 0 when every check passed, 1 otherwise.
import OpenAI from "openai";

const args = process.argv.slice(2);
const cmd = args[0];
const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : def;
};
const key = process.env.MOE_TEST_KEY || "";
let failed = 0;
const ok = (m) => console.log(`ok: ${m}`);
const bad = (m) => {
    console.log(`FAIL: ${m}`);
    failed++;
};
const check = (cond, m, detail = "") => (cond ? ok(m) : bad(`${m}${detail ? ": " + detail : ""}`));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const client = (base) => new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0, timeout: 60000 });
const hget = (h, k) => (h && typeof h.get === "function" ? h.get(k) : h ? h[k] : undefined);
const model = opt("--model", "tiny");

// One chat request: {status, headers, err, data}.
async function ask(base, maxTokens = 4, content = "Hi.", extra = {}) {
    try {
        const { data, response } = await client(base)
            .chat.completions.create({ model, max_tokens: maxTokens, messages: [{ role: "user", content }], ...extra })
            .withResponse();
        return { status: response.status, headers: response.headers, data };
    } catch (e) {
        if (e instanceof OpenAI.APIError && e.status) return { status: e.status, headers: e.headers, err: e };
        throw e;
    }
}

const rl = (h) =>
    ["limit-requests", "remaining-requests", "reset-requests", "limit-tokens", "remaining-tokens", "reset-tokens"]
        .map((k) => `${k}=${hget(h, "x-ratelimit-" + k) ?? "-"}`)
        .join(" ");

async function align(windowS) {
    const w = windowS * 1000;
    for (;;) { // a window that has just begun (the gateways count on Redis' clock: this host's)
        const into = Date.now() % w;
        if (into < 150) return;
        await sleep(Math.min(w - into + 20, 1000));
    }
}

// Checks a 429 against what OpenAI sends.
function check429(r, type, label, want) {
    const ra = hget(r.headers, "retry-after");
    check(r.status === 429 && r.err instanceof OpenAI.RateLimitError, `${label}: 429 RateLimitError`, `${r.status}`);
    check(r.err?.code === "rate_limit_exceeded" && r.err?.type === type,
        `${label}: code rate_limit_exceeded, type ${type}`, `${r.err?.code} ${r.err?.type}`);
    check(/^[1-9][0-9]*$/.test(ra ?? ""), `${label}: Retry-After ${ra}`);
    if (want) check((r.err?.message ?? "").includes(want), `${label}: "${(r.err?.message ?? "").slice(0, 150)}"`, `wanted ${want}`);
    return Number(ra);
}

async function rpm() {
    const bases = opt("--bases").split(","), n = Number(opt("--rpm")), win = Number(opt("--window"));
    await align(win);
    for (let i = 0; i < n; i++) {
        const r = await ask(bases[i % bases.length]);
        const rem = hget(r.headers, "x-ratelimit-remaining-requests");
        check(r.status === 200 && hget(r.headers, "x-ratelimit-limit-requests") === String(n) && rem === String(n - 1 - i),
            `request ${i + 1} on replica ${(i % bases.length) + 1}: 200, ${rl(r.headers)}`, `${r.status}`);
    }
    const r = await ask(bases[n % bases.length]);
    const ra = check429(r, "requests", `request ${n + 1}`, `requests per min (RPM)`);
    check(hget(r.headers, "x-ratelimit-remaining-requests") === "0", `request ${n + 1}: ${rl(r.headers)}`);
    await sleep(ra * 1000 + 100);
    const again = await ask(bases[(n + 1) % bases.length]);
    check(again.status === 200, `after Retry-After (${ra} s): allowed again, ${rl(again.headers)}`, `${again.status}`);
}

async function one() {
    const base = opt("--base"), expect = Number(opt("--expect")), label = opt("--label", "request");
    const r = await ask(base, Number(opt("--max-tokens", "4")), opt("--content", "Hi."));
    if (expect === 429) check429(r, opt("--type", "requests"), label, opt("--want"));
    else if (expect === 200)
        check(r.status === 200, `${label}: 200 (${r.data?.usage?.prompt_tokens}+${r.data?.usage?.completion_tokens} tokens), ${rl(r.headers)}`, `${r.status} ${r.err?.message}`);
    else
        check(r.status === expect && (!opt("--code") || r.err?.code === opt("--code")),
            `${label}: ${r.status} ${r.err?.code}: "${(r.err?.message ?? "").slice(0, 140)}"`, `${r.err?.message}`);
}

async function conc() {
    const bases = opt("--bases").split(","), n = Number(opt("--n")), refused = Number(opt("--refused"));
    const mt = Number(opt("--max-tokens", "300"));
    const t0 = Date.now();
    // greedy: the same (long) completion every run, so the requests overlap
    const rs = await Promise.all([...Array(n).keys()].map((i) => ask(bases[i % bases.length], mt, "Hi.", { temperature: 0 })));
    const n429 = rs.filter((r) => r.status === 429).length, n200 = rs.filter((r) => r.status === 200).length;
    const gen = rs.filter((r) => r.status === 200).map((r) => r.data.usage.completion_tokens).join(", ");
    check(n429 === refused && n200 === n - refused, `${n} requests at once across the replicas: ${n200} answered (${gen} tokens), ${n429} refused (${Date.now() - t0} ms)`);
    const r = rs.find((x) => x.status === 429);
    if (r) check429(r, "requests", "the refused one", "concurrent requests");
    const after = await ask(bases[0]);
    check(after.status === 200, "a slot freed: allowed again", `${after.status}`);
}

try {
    if (cmd === "rpm") await rpm();
    else if (cmd === "one") await one();
    else if (cmd === "conc") await conc();
    else if (cmd === "align") await align(Number(opt("--window")));
    else bad(`unknown command ${cmd}`);
} catch (e) {
    bad(`${cmd}: ${e.stack || e}`);
}
process.exit(failed ? 1 : 0);
