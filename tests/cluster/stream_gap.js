// tests/cluster/stream_gap.js URL N - one streamed /v1/completions of N
// tokens (greedy, ignore_eos) from the client host; prints one JSON line:
// done (ended with [DONE], no error event), tokens (token events), max_gap_ms
// (the longest wait between two token events: the stall a fault caused),
// p99_gap_ms, and the time (ms since the start) the longest gap began.
// The API key, if any, in $MH_KEY. Run through `ip netns exec`
// (tests/cluster/faults.sh); needs only node.
"use strict";
const http = require("http");
const [url, n] = process.argv.slice(2);
const u = new URL(url);
const body = JSON.stringify({model: "m", prompt: [1, 2, 3], max_tokens: +n, temperature: 0,
    ignore_eos: true, stream: true});
const t0 = Date.now();
let last = 0, tokens = 0, maxGap = 0, maxAt = 0, buf = "", done = false, err = "";
const gaps = [];
const finish = () => {
    gaps.sort((a, b) => a - b);
    const p99 = gaps.length ? gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * 0.99))] : null;
    console.log(JSON.stringify({done: done && !err, tokens, max_gap_ms: maxGap, p99_gap_ms: p99,
        max_gap_at_ms: maxAt, error: err || undefined}));
};
const req = http.request({host: u.hostname, port: u.port, path: "/v1/completions", method: "POST",
    headers: {"Content-Type": "application/json",
        ...(process.env.MH_KEY ? {Authorization: "Bearer " + process.env.MH_KEY} : {})},
    timeout: 120000}, (res) => {
    if (res.statusCode !== 200) err = "HTTP " + res.statusCode;
    res.setEncoding("utf8");
    res.on("data", (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
            const ev = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (ev === "data: [DONE]") { done = true; continue; }
            if (!ev.startsWith("data: {")) continue;
            const c = JSON.parse(ev.slice(6));
            if (c.error) { err = JSON.stringify(c.error); continue; }
            if (!c.choices || !c.choices.length || c.choices[0].finish_reason) continue;
            const now = Date.now() - t0;
            if (tokens > 0) {
                const g = now - last;
                gaps.push(g);
                if (g > maxGap) { maxGap = g; maxAt = last; }
            }
            tokens++;
            last = now;
        }
    });
    res.on("end", finish);
});
req.on("timeout", () => { err = "timeout"; req.destroy(); });
req.on("error", (e) => { err = err || e.message; finish(); });
req.end(body);
