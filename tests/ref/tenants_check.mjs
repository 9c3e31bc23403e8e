#!/usr/bin/env node
// tenants_check.mjs — API keys on the gateway (issue 15) as OpenAI's official Node client
// (npm `openai`, pinned in package-lock.json) sees them. The key comes from the environment
// (MOE_TEST_KEY), never argv.
//
//   node tenants_check.mjs chat    --base URL/v1 --model NAME          # the key works: chat, stream
//   node tenants_check.mjs refused --base URL/v1 --model NAME [--none]  # 401 AuthenticationError,
//                                                                      # code invalid_api_key
//   node tenants_check.mjs watch   --bases URL/v1,URL/v1 --expect 200|401 [--limit-ms 1000]
//                                  [--key-from-output] [--out FILE] [--label TEXT] -- CMD ARGS...
//        runs CMD, then polls GET /models on every base with the key until each answers
//        --expect; prints how long after CMD started (the time a change takes to go live)
//   node tenants_check.mjs flood   --base URL/v1 --model NAME --n 2000 [--conc 32] [--keys-out F]
//        N requests with N different invalid keys (all must be 401) while the key's own
//        requests keep being answered
//
// Prints "ok: ..." / "FAIL: ..." lines; exit 0 when every check passed, 1 otherwise.
// Every request has a timeout; nothing retries (maxRetries 0).
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import OpenAI from "openai";

const argv = process.argv.slice(2);
const dash = argv.indexOf("--");
const args = dash >= 0 ? argv.slice(0, dash) : argv;
const cmdline = dash >= 0 ? argv.slice(dash + 1) : [];
const cmd = args[0];
const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : def;
};
const flag = (name) => args.includes(name);
let key = process.env.MOE_TEST_KEY || "";
let failed = 0;
const ok = (m) => console.log(`ok: ${m}`);
const bad = (m) => {
    console.log(`FAIL: ${m}`);
    failed++;
};
const check = (cond, m, detail = "") => (cond ? ok(m) : bad(`${m}${detail ? ": " + detail : ""}`));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const client = (base, k, extra = {}) =>
    new OpenAI({ baseURL: base, apiKey: k || "unused", maxRetries: 0, timeout: 60000, ...extra });
const randomKey = () => "moe-" + randomBytes(32).toString("base64url");

async function chat() {
    const base = opt("--base"), model = opt("--model");
    const c = client(base, key);
    const msgs = [{ role: "user", content: "Say something." }];
    const r = await c.chat.completions.create({ model, messages: msgs, max_tokens: 6, temperature: 0, ignore_eos: true });
    check(r.object === "chat.completion" && r.usage.completion_tokens === 6,
        `${base}: chat completion with the tenant's key (${JSON.stringify(r.choices[0].message.content)})`);
    let text = "";
    const s = await c.chat.completions.create({ model, messages: msgs, max_tokens: 6, temperature: 0, ignore_eos: true, stream: true });
    for await (const ch of s) text += ch.choices[0]?.delta?.content ?? "";
    check(text === r.choices[0].message.content, `${base}: the same, streamed`);
    const m = await c.models.list();
    check(m.data.some((x) => x.id === model), `${base}: models.list`);
}

async function refused() {
    const base = opt("--base"), model = opt("--model");
    const none = flag("--none");
    const shown = none ? "no key" : key ? "the key" : "a wrong key";
    const k = none ? "" : key || randomKey();
    // no key at all: the client is told to send no Authorization header
    const c = none ? client(base, "", { defaultHeaders: { Authorization: null } }) : client(base, k);
    for (const [what, fn] of [
        ["chat.completions.create", () => c.chat.completions.create({ model, messages: [{ role: "user", content: "x" }], max_tokens: 2 })],
        ["models.list", () => c.models.list()],
    ]) {
        try {
            await fn();
            bad(`${base} ${what} with ${shown}: no error`);
        } catch (e) {
            const good = e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === "invalid_api_key" &&
                e.type === "invalid_request_error" && e.param === null;
            const leaks = k && String(e.message).includes(k);
            check(good && !leaks, `${base} ${what} with ${shown}: ${e.constructor.name} ${e.status} code=${e.code}: ${String(e.message).slice(0, 110)}`,
                leaks ? "the message shows the whole key" : `type=${e.type} param=${e.param}`);
        }
    }
}

// GET /models with the key: its status, or 0 when the connection failed.
async function status(base, k) {
    try {
        const r = await fetch(`${base}/models`, { headers: { Authorization: `Bearer ${k}` }, signal: AbortSignal.timeout(5000) });
        await r.arrayBuffer();
        return r.status;
    } catch {
        return 0;
    }
}

async function watch() {
    const bases = opt("--bases").split(","), want = Number(opt("--expect")), limit = Number(opt("--limit-ms", "1000"));
    const t0 = performance.now();
    const run = spawnSync(cmdline[0], cmdline.slice(1), { encoding: "utf8", timeout: 30000 });
    const tcmd = performance.now() - t0;
    if (opt("--out")) writeFileSync(opt("--out"), run.stdout || "");
    if (run.status !== 0) {
        bad(`${cmdline.slice(0, 3).join(" ")}: exit ${run.status}: ${(run.stderr || "").slice(0, 200)}`);
        return;
    }
    if (flag("--key-from-output")) key = JSON.parse(run.stdout).key;
    const left = new Map(bases.map((b) => [b, null]));
    while ([...left.values()].some((v) => v === null) && performance.now() - t0 < 3 * limit + 2000) {
        await Promise.all(bases.filter((b) => left.get(b) === null).map(async (b) => {
            if (await status(b, key) === want) left.set(b, performance.now() - t0);
        }));
        await sleep(10);
    }
    const what = opt("--label", `${cmdline.slice(1, 3).join(" ")} -> ${want}`);
    for (const [b, t] of left)
        check(t !== null && t <= limit, `${what} on ${b} ${t === null ? "never" : (t / 1000).toFixed(3) + " s"} after the command started (it ran ${(tcmd / 1000).toFixed(3)} s; limit ${limit / 1000} s)`);
}

async function flood() {
    const base = opt("--base"), model = opt("--model"), n = Number(opt("--n", "2000")), conc = Number(opt("--conc", "32"));
    const keys = Array.from({ length: n }, randomKey);
    if (opt("--keys-out")) writeFileSync(opt("--keys-out"), keys.slice(0, 20).join("\n") + "\n");
    const body = JSON.stringify({ model, messages: [{ role: "user", content: "x" }], max_tokens: 2 });
    const codes = new Map();
    let next = 0, good = 0, goodMax = 0;
    const t0 = performance.now();
    let flooding = true;
    const worker = async () => {
        while (next < n) {
            const k = keys[next++];
            let code = 0;
            try {
                const r = await fetch(`${base}/chat/completions`, {
                    method: "POST", body, signal: AbortSignal.timeout(10000),
                    headers: { Authorization: `Bearer ${k}`, "Content-Type": "application/json" } });
                await r.arrayBuffer();
                code = r.status;
            } catch {}
            codes.set(code, (codes.get(code) || 0) + 1);
        }
    };
    // the tenant's own requests, one after another, while the flood runs
    const c = client(base, key);
    const legit = (async () => {
        while (flooding) {
            const t = performance.now();
            await c.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
            good++;
            goodMax = Math.max(goodMax, performance.now() - t);
        }
    })().catch((e) => bad(`the tenant's request during the flood: ${e.message}`));
    await Promise.all(Array.from({ length: conc }, worker));
    const secs = (performance.now() - t0) / 1000;
    flooding = false;
    await legit;
    const got = [...codes].map(([k, v]) => `${v}x${k}`).join(" ");
    check(codes.get(401) === n, `${n} requests with ${n} different invalid keys: ${got} in ${secs.toFixed(2)} s (${(n / secs).toFixed(0)}/s, ${conc} at a time)`);
    check(good > 0, `meanwhile the tenant's own chat completions were answered: ${good}, the slowest in ${goodMax.toFixed(0)} ms`);
}

const cmds = { chat, refused, watch, flood };
if (!cmds[cmd]) {
    console.error("usage: tenants_check.mjs chat|refused|watch|flood ... (see the top of the file)");
    process.exit(2);
}
await cmds[cmd]().catch((e) => bad(`${cmd}: ${e.stack || e}`));
process.exit(failed ? 1 : 0);
