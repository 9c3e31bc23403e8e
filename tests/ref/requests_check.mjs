#!/usr/bin/env node
// requests_check.mjs — request ids and the per-tenant request endpoints of the gateway
// (gateway/requests.h) as OpenAI's official Node client (npm `openai`) sees them: its generic
// client.get / client.delete / client.post, withResponse() for headers, and raw fetch where
// bytes are compared. Keys come from the environment (MOE_KEY_A, MOE_KEY_B, MOE_KEY_SLOW),
// never argv.
//
//   node requests_check.mjs ids       --base URL/v1 --model NAME --ids-out FILE
//        x-request-id on a chat, a completion, a stream, /models, /usage, 401, 404, 405, 429
//        (tenant slow: rpm 1), all unique; X-Client-Request-Id echoed (bounded); the
//        generation requests' ids written to FILE (the script greps the log for them)
//   node requests_check.mjs isolation --base URL/v1 --model NAME
//        A's long stream: A's GET (running, tokens > 0, by either id); B's GET and DELETE on
//        A's ids and random ids: byte-identical 404s; A's stream goes on; A's DELETE ends it
//        (finish_reason "cancelled", the usage chunk, [DONE]: no error) and GET says cancelled
//        with the usage's counts; POST /requests/{id}/cancel on a non-streamed request
//   node requests_check.mjs finished  --base URL/v1 --model NAME
//        finished requests: completed, token counts equal to the usage objects
//   node requests_check.mjs badids    --base URL/v1
//        too long, odd characters, wrong paths: clean 404/405, the server still answers
//   node requests_check.mjs notenant  --base URL/v1 --model NAME
//        without API keys: everyone is one tenant (a request is found by its id)
//
// Prints "ok: ..." / "FAIL: ..." lines; exit 0 when every check passed, 1 otherwise.
// Every request has a timeout; nothing retries (maxRetries 0).
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import OpenAI from "openai";

const args = process.argv.slice(2);
const cmd = args[0];
const opt = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : def;
};
const base = opt("--base"), model = opt("--model", "tiny");
const KA = process.env.MOE_KEY_A || "", KB = process.env.MOE_KEY_B || "", KS = process.env.MOE_KEY_SLOW || "";
let failed = 0;
const ok = (m) => console.log(`ok: ${m}`);
const bad = (m) => {
    console.log(`FAIL: ${m}`);
    failed++;
};
const check = (cond, m, detail = "") => (cond ? ok(m) : bad(`${m}${detail ? ": " + detail : ""}`));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const client = (k) => new OpenAI({ baseURL: base, apiKey: k || "unused", maxRetries: 0, timeout: 60000 });
const hget = (h, k) => (h && typeof h.get === "function" ? h.get(k) : h ? h[k] : undefined);
const RID = /^req_[0-9a-f]{32}$/;
const msgs = [{ role: "user", content: "Tell me a long story." }];

// {status, headers, data|err} of an API promise, errors included
async function call(p) {
    try {
        const { data, response } = await p.withResponse();
        return { status: response.status, headers: response.headers, data };
    } catch (e) {
        if (e instanceof OpenAI.APIError && e.status) return { status: e.status, headers: e.headers, err: e };
        throw e;
    }
}
// raw bytes: {status, body, rid}
async function raw(method, path, key) {
    const r = await fetch(base + path, {
        method,
        headers: key ? { Authorization: `Bearer ${key}` } : {},
        signal: AbortSignal.timeout(30000),
    });
    return { status: r.status, body: await r.text(), rid: r.headers.get("x-request-id") };
}

async function ids() {
    const a = client(KA), seen = [], gen = [];
    const note = (label, r, want) => {
        const id = hget(r.headers, "x-request-id");
        check(r.status === want && RID.test(id ?? ""), `${label}: ${r.status}, x-request-id ${id}`, `want ${want}`);
        seen.push(id);
        return id;
    };
    let r = await call(a.chat.completions.create({ model, messages: msgs, max_tokens: 4 }));
    gen.push(note("chat", r, 200));
    check(r.data?._request_id === hget(r.headers, "x-request-id"), `the client's _request_id is the header (${r.data?._request_id})`);
    r = await call(a.completions.create({ model, prompt: "Once", max_tokens: 3 }));
    gen.push(note("completion", r, 200));
    const st = await a.chat.completions.create({ model, messages: msgs, max_tokens: 5, stream: true }).withResponse();
    let n = 0;
    for await (const ch of st.data) n += ch.choices.length;
    gen.push(note(`stream (${n} chunks)`, { status: st.response.status, headers: st.response.headers }, 200));
    note("models.list", await call(a.models.list()), 200);
    note("GET /usage", await call(a.get("/usage")), 200);
    note("401 (a wrong key)", await call(client("moe-wrong-" + randomBytes(8).toString("hex")).models.list()), 401);
    note("404 (unknown model)", await call(a.chat.completions.create({ model: "nope", messages: msgs })), 404);
    note("404 (unknown request)", await call(a.get("/requests/req_" + randomBytes(16).toString("hex"))), 404);
    note("405", await call(a.put("/requests/abc")), 405);
    if (KS) {
        const s = client(KS);
        const r1 = await call(s.chat.completions.create({ model, messages: msgs, max_tokens: 2 }));
        const r2 = await call(s.chat.completions.create({ model, messages: msgs, max_tokens: 2 }));
        gen.push(note("rpm 1: the first", r1, 200));
        note("rpm 1: the second, 429", r2, 429);
    }
    check(new Set(seen).size === seen.length, `${seen.length} responses, ${seen.length} different x-request-ids`);
    // the client's own id: echoed when bounded, ignored otherwise
    const mine = "client-" + randomBytes(6).toString("hex") + " with spaces";
    r = await call(a.chat.completions.create({ model, messages: msgs, max_tokens: 2 }, { headers: { "X-Client-Request-Id": mine } }));
    gen.push(hget(r.headers, "x-request-id"));
    check(hget(r.headers, "x-client-request-id") === mine, `X-Client-Request-Id echoed as x-client-request-id (${mine})`);
    r = await call(a.models.list({ headers: { "X-Client-Request-Id": "x".repeat(129) } }));
    check(!hget(r.headers, "x-client-request-id") && RID.test(hget(r.headers, "x-request-id") ?? ""),
        "a 129-character X-Client-Request-Id is ignored (not echoed)");
    r = await call(a.get("/requests/nope", { headers: { "X-Client-Request-Id": "err-path-1" } }));
    check(r.status === 404 && hget(r.headers, "x-client-request-id") === "err-path-1", "echoed on an error too");
    writeFileSync(opt("--ids-out"), gen.join("\n") + "\n");
}

async function isolation() {
    const a = client(KA), b = client(KB);
    // completions: no chat end token can stop it before it is cancelled
    const { data: stream, response } = await a.completions
        .create({ model, prompt: "Once upon a time", max_tokens: 12000, ignore_eos: true, stream: true, stream_options: { include_usage: true } })
        .withResponse();
    const rid = response.headers.get("x-request-id");
    let cid = "", chunks = 0, last = null, usage = null, ended = false, streamErr = null;
    const reader = (async () => {
        try {
            for await (const ch of stream) {
                cid ||= ch.id;
                if (ch.usage) usage = ch.usage;
                if (ch.choices.length) {
                    chunks++;
                    last = ch.choices[0];
                }
            }
        } catch (e) {
            streamErr = e;
        }
        ended = true;
    })();
    for (let i = 0; i < 600 && chunks < 20; i++) await sleep(50);
    check(chunks >= 20 && RID.test(rid ?? ""), `A's stream runs (${chunks} chunks; ${rid}, ${cid})`);
    let g = await a.get(`/requests/${rid}`);
    check(g.object === "request" && g.id === rid && g.completion_id === cid && g.status === "running" &&
        g.completion_tokens > 0 && g.prompt_tokens > 0 && g.finish_reason === null && g.stream === true,
        `A's GET by x-request-id: ${JSON.stringify(g)}`);
    g = await a.get(`/requests/${cid}`);
    check(g.id === rid && g.status === "running", `A's GET by the completion id: ${g.status}, ${g.completion_tokens} tokens`);
    // B: A's ids, and ids that do not exist: the same bytes
    const randR = "req_" + randomBytes(16).toString("hex"), randC = "chatcmpl-" + randomBytes(12).toString("hex");
    const outs = [];
    for (const [m, p] of [["GET", `/requests/${rid}`], ["GET", `/requests/${cid}`], ["DELETE", `/requests/${rid}`],
        ["DELETE", `/requests/${cid}`], ["POST", `/requests/${rid}/cancel`], ["GET", `/requests/${randR}`],
        ["GET", `/requests/${randC}`], ["DELETE", `/requests/${randR}`], ["POST", `/requests/${randC}/cancel`]])
        outs.push({ m, p, ...(await raw(m, p, KB)) });
    const ref = outs[5];
    check(ref.status === 404 && /"type":"not_found_error"/.test(ref.body) && !ref.body.includes(randR),
        `a random id: 404 ${ref.body.trim()}`);
    check(outs.every((o) => o.status === 404 && o.body === ref.body && RID.test(o.rid ?? "")),
        `B's GET, DELETE and cancel on A's two ids: byte-identical to random ids' 404 (${outs.length} answers, ${ref.body.length} bytes each)`,
        outs.filter((o) => o.body !== ref.body).map((o) => `${o.m} ${o.p}: ${o.status} ${o.body}`).join("; "));
    const e = await call(b.delete(`/requests/${rid}`));
    check(e.status === 404 && e.err instanceof OpenAI.NotFoundError && e.err.code === "request_not_found",
        `the client sees NotFoundError, code ${e.err?.code}`);
    const before = chunks;
    await sleep(500);
    g = await a.get(`/requests/${rid}`);
    check(!ended && chunks > before && g.status === "running",
        `A's stream goes on after B's attempts (${before} -> ${chunks} chunks; ${g.status})`);
    // A cancels its own
    const d = await a.delete(`/requests/${rid}`);
    check(d.id === rid && d.status === "cancelled", `A's DELETE: ${JSON.stringify(d)}`);
    for (let i = 0; i < 200 && !ended; i++) await sleep(50);
    check(ended && !streamErr && last?.finish_reason === "cancelled" && usage,
        `A's stream ended cleanly: last finish_reason ${last?.finish_reason}, usage ${JSON.stringify(usage)}, ${chunks} chunks`,
        `ended ${ended}, error ${streamErr}`);
    await reader;
    g = await a.get(`/requests/${cid}`);
    check(g.status === "cancelled" && g.finish_reason === "cancelled" && usage &&
        g.completion_tokens === usage.completion_tokens && g.prompt_tokens === usage.prompt_tokens,
        `A's GET after: cancelled, ${g.completion_tokens} completion tokens (usage: ${usage?.completion_tokens})`);
    const d2 = await a.delete(`/requests/${rid}`);
    check(d2.status === "cancelled" && d2.completion_tokens === g.completion_tokens, "a second DELETE: the same object");
    const bb = await raw("GET", `/requests/${rid}`, KB);
    check(bb.status === 404 && bb.body === ref.body, "B's GET on A's finished request: the same 404");
    // POST /requests/{completion id}/cancel on a chat stream (greedy: its first tokens are no end token)
    const s2 = await a.chat.completions.create({ model, messages: msgs, max_tokens: 12000, seed: 7, temperature: 0, stream: true });
    let cid2 = "", n2 = 0, fin2 = null, err2 = null;
    try {
        for await (const ch of s2) {
            cid2 ||= ch.id;
            if (ch.choices[0]?.finish_reason) fin2 = ch.choices[0].finish_reason;
            if (++n2 === 6) {
                const c = await a.post(`/requests/${cid2}/cancel`);
                check(c.status === "cancelled" && c.completion_id === cid2, `POST /requests/${cid2}/cancel: ${c.status}`);
            }
        }
    } catch (x) {
        err2 = x;
    }
    check(!err2 && fin2 === "cancelled" && n2 >= 6, `that stream ended cleanly (${n2} chunks, finish_reason ${fin2})`, `${err2}`);
}

async function finished() {
    const a = client(KA);
    const r = await a.chat.completions.create({ model, messages: msgs, max_tokens: 7, ignore_eos: true }).withResponse();
    const rid = r.response.headers.get("x-request-id");
    const g = await a.get(`/requests/${rid}`);
    const u = r.data.usage;
    check(g.status === "completed" && g.completion_id === r.data.id && g.prompt_tokens === u.prompt_tokens &&
        g.completion_tokens === u.completion_tokens && g.finish_reason === r.data.choices[0].finish_reason && g.stream === false,
        `a finished chat: ${JSON.stringify(g)} (usage ${JSON.stringify({ p: u.prompt_tokens, c: u.completion_tokens })})`);
    const s = await a.completions.create({ model, prompt: "Once", max_tokens: 9, ignore_eos: true, stream: true, stream_options: { include_usage: true } });
    let cid = "", usage = null, fin = null;
    for await (const ch of s) {
        cid ||= ch.id;
        if (ch.usage) usage = ch.usage;
        if (ch.choices[0]?.finish_reason) fin = ch.choices[0].finish_reason;
    }
    const g2 = await a.get(`/requests/${cid}`);
    check(g2.status === "completed" && g2.completion_tokens === usage?.completion_tokens && g2.prompt_tokens === usage?.prompt_tokens &&
        g2.finish_reason === fin && g2.stream === true && RID.test(g2.id),
        `a finished stream, found by its completion id: ${JSON.stringify(g2)}`);
    const e = await call(client(KB).get(`/requests/${cid}`));
    check(e.status === 404, "... and not by another tenant");
}

async function badids() {
    const a = client(KA);
    const paths = ["/requests/" + "a".repeat(65), "/requests/req_" + "0".repeat(4000), "/requests/%00", "/requests/%ff%fe",
        "/requests/..%2F..%2Fmodels", "/requests/req_abc%20x", "/requests/%3Cscript%3E", "/requests/a/b",
        "/requests/a/cancel/x", "/requests/%", "/requests/req_%0d%0aX-Injected:%201"];
    const got = [];
    for (const p of paths) {
        const r = await raw("GET", p, KA);
        got.push(`${r.status}`);
        if (r.status !== 404 || !/"error":\{"message":"/.test(r.body) || !RID.test(r.rid ?? ""))
            bad(`GET ${p.slice(0, 60)}: ${r.status} ${r.body.slice(0, 120)}`);
    }
    check(got.every((s) => s === "404"), `${paths.length} malformed ids (too long, NUL, bytes > 0x7f, ../, spaces, <script>, CR LF, extra segments): 404 each`);
    let r = await raw("GET", "/requests/abc/cancel", KA);
    check(r.status === 405, `GET on .../cancel: ${r.status}`);
    r = await raw("POST", "/requests/abc", KA);
    check(r.status === 405, `POST on /requests/{id}: ${r.status}`);
    const m = await call(a.models.list());
    check(m.status === 200, "the gateway still answers");
}

async function notenant() {
    const a = client("");
    const r = await a.completions.create({ model, prompt: "Once", max_tokens: 3 }).withResponse();
    const rid = r.response.headers.get("x-request-id");
    const g = await a.get(`/requests/${rid}`);
    const g2 = await client("any-other-key").get(`/requests/${r.data.id}`);
    check(g.status === "completed" && g.completion_tokens === r.data.usage.completion_tokens && g2.id === rid,
        `without API keys, one tenant: ${g.status}, ${g.completion_tokens} tokens, found by both ids`);
}

const cmds = { ids, isolation, finished, badids, notenant };
if (!cmds[cmd]) {
    console.log(`usage: node requests_check.mjs ${Object.keys(cmds).join("|")} --base URL/v1 [...]`);
    process.exit(2);
}
try {
    await cmds[cmd]();
} catch (e) {
    bad(`${cmd}: ${e?.stack ?? e}`);
}
process.exit(failed ? 1 : 0);
