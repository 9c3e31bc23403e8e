// tests/ref/hostile_grpc.mjs - hostile gRPC peers of an expert worker, for
// tests/integration/hostile_worker.sh: HTTP/2 written by hand (node:http2, or
// frames on a raw socket) so every byte an attacker controls is ours.
// Loopback only; every wait is bounded.
//
//   node tests/ref/hostile_grpc.mjs gzip ADDR [--inflate-mb N] [--encoding gzip|identity]
//       one Forward message with the compressed flag set: a gzip bomb that
//       inflates to N MiB of zeros (default 1024; ~1 KiB on the wire per MiB)
//   node tests/ref/hostile_grpc.mjs unknown ADDR [--calls N]
//       N calls (default 2000) to methods the worker does not serve, all in
//       flight at once on one connection; each must end with a status
//   node tests/ref/hostile_grpc.mjs groups ADDR [--mb N]
//       one ForwardRequest of N MiB (default 3) of empty RowGroups (2 bytes each)
//   node tests/ref/hostile_grpc.mjs fields ADDR [--mb N]
//       one ForwardRequest of N MiB of unknown fields (3 bytes each)
//   node tests/ref/hostile_grpc.mjs reset ADDR [--streams N]
//       HTTP/2 rapid reset: N streams (default 20000) each opened with HEADERS
//       and cancelled at once with RST_STREAM, written back to back on one raw
//       socket, then a PING whose ACK says the worker read them all
//   node tests/ref/hostile_grpc.mjs conn ADDR [--stream] [--wait-ms MS]
//       a raw connection that sends nothing more (with --stream: after opening
//       one Forward stream); how long until the worker's GOAWAY and close
//   node tests/ref/hostile_grpc.mjs pings ADDR [--n N]
//       N PING frames 20 ms apart with no data (keepalive abuse); the GOAWAY
//   node tests/ref/hostile_grpc.mjs conns ADDR [--n N] [--ms MS]
//       a connection flood: N raw TCP connections (default 1000) that send
//       nothing, held MS ms (default 3000) while the probe (connected first)
//       goes on; how many the worker closed and how many stayed open
//   node tests/ref/hostile_grpc.mjs forward ADDR
//       one normal Forward (one row through the first held expert) with grpc-js
//
// Every attack runs a probe beside it: a second client (grpc-js, its own
// connection) calling Health/Check back to back; the JSON summary carries the
// probe's calls and its slowest answer (probe_max_ms), which is how long other
// clients waited. Prints one JSON line; exit 0 once the attack ran (the shell
// test judges the numbers), 1 when it could not run.
import http2 from "node:http2";
import net from "node:net";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const def = protoLoader.loadSync(["moe/v1/expert.proto", "grpc/health/v1/health.proto"], {
    keepCase: true, longs: Number, enums: Number, defaults: true,
    includeDirs: [path.join(here, "..", "..", "proto")] });
const pkg = grpc.loadPackageDefinition(def);
const fwd = def["moe.v1.ExpertService"].Forward;
const fail = (msg) => { process.stderr.write(`hostile_grpc: ${msg}\n`); process.exit(1); };
const now = () => Number(process.hrtime.bigint()) / 1e6;
const FORWARD = "/moe.v1.ExpertService/Forward";

// ---- the probe: Health/Check back to back on its own connection ----
function startProbe(addr) {
    const hc = new pkg.grpc.health.v1.Health(addr, grpc.credentials.createInsecure());
    const st = { calls: 0, errors: 0, max_ms: 0, stop: false };
    const loop = (async () => {
        while (!st.stop) {
            const t0 = now();
            await new Promise((res) => hc.Check({ service: "" }, { deadline: Date.now() + 30000 }, (e) => {
                if (e) st.errors++;
                res();
            }));
            st.max_ms = Math.max(st.max_ms, now() - t0);
            st.calls++;
            await new Promise((res) => setTimeout(res, 5));
        }
    })();
    return { st, async stop() { st.stop = true; await loop; hc.close(); return { probe_calls: st.calls, probe_errors: st.errors, probe_max_ms: Math.round(st.max_ms) }; } };
}

// ---- gRPC over node:http2 ----
const frame = (payload, compressed) => {
    const h = Buffer.alloc(5);
    h[0] = compressed ? 1 : 0;
    h.writeUInt32BE(payload.length, 1);
    return Buffer.concat([h, payload]);
};
function connect(addr) {
    return new Promise((res, rej) => {
        const s = http2.connect(`http://${addr}`, { maxSessionMemory: 256 });
        s.once("connect", () => res(s));
        s.once("error", rej);
    });
}
// One call: sends body (already framed) and half-closes; resolves with the
// grpc status (a number, or "timeout" when none came within ms), its message
// and the reply messages' bytes.
function rawCall(session, pth, body, { headers = {}, ms = 10000 } = {}) {
    return new Promise((resolve) => {
        const t0 = now();
        const req = session.request({ ":method": "POST", ":path": pth, "content-type": "application/grpc", te: "trailers", ...headers });
        let status = null, message = "", done = false;
        const chunks = [];
        const finish = (st) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            resolve({ status: st, message, ms: now() - t0, data: Buffer.concat(chunks) });
        };
        const timer = setTimeout(() => { req.close(http2.constants.NGHTTP2_CANCEL); finish("timeout"); }, ms);
        const take = (h) => {
            if (h["grpc-status"] !== undefined) status = Number(h["grpc-status"]);
            if (h["grpc-message"] !== undefined) message = decodeURIComponent(h["grpc-message"]);
        };
        req.on("response", take);
        req.on("trailers", take);
        req.on("data", (d) => chunks.push(d));
        req.on("error", () => {});
        req.on("close", () => finish(status === null ? `closed (rst ${req.rstCode})` : status));
        req.end(body);
    });
}
// The ForwardResults in a reply's bytes.
function results(data) {
    const out = [];
    for (let p = 0; p + 5 <= data.length;) {
        const n = data.readUInt32BE(p + 1);
        out.push(fwd.responseDeserialize(data.subarray(p + 5, p + 5 + n)));
        p += 5 + n;
    }
    return out;
}
// A Forward call's outcome: the call's status, and the first result's status
// and error (a refused message may be answered either way).
async function forwardOnce(addr, body, headers) {
    const s = await connect(addr);
    const r = await rawCall(s, FORWARD, body, { headers, ms: 30000 });
    s.close();
    let res = [];
    try { res = results(r.data); } catch (e) { res = [{ status: -1, error: `undecodable reply: ${e}` }]; }
    return { grpc_status: r.status, grpc_message: r.message, ms: Math.round(r.ms),
             result_status: res.length ? res[0].status : null, result_error: res.length ? res[0].error : null };
}

// A gzip member that inflates to mb MiB of zeros: a 1 MiB block of zeros,
// deflated with a full flush (byte aligned, no back references across it),
// repeated mb times, then a final empty block, CRC-32 and size.
function gzipBomb(mb) {
    const zeros = Buffer.alloc(1 << 20);
    const block = zlib.deflateRawSync(zeros, { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH });
    let crc = 0;
    for (let i = 0; i < mb; i++) crc = zlib.crc32(zeros, crc);
    const tail = Buffer.alloc(8);
    tail.writeUInt32LE(crc >>> 0, 0);
    tail.writeUInt32LE((mb * (1 << 20)) >>> 0, 4);
    const head = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    return Buffer.concat([head, ...Array(mb).fill(block), Buffer.from([3, 0]), tail]);
}

async function gzip(addr, mb, encoding) {
    const bomb = gzipBomb(mb);
    const probe = startProbe(addr);
    await new Promise((res) => setTimeout(res, 200));
    const r = await forwardOnce(addr, frame(bomb, true), { "grpc-encoding": encoding, "grpc-accept-encoding": "identity" });
    return { attack: "gzip", encoding, compressed_bytes: bomb.length, inflates_to_mb: mb, ...r, ...(await probe.stop()) };
}

async function unknown(addr, calls) {
    const s = await connect(addr);
    const probe = startProbe(addr);
    const t0 = now();
    // methods of served and unknown services, with and without a message
    const paths = ["/moe.v1.ExpertService/Nope", "/grpc.health.v1.Health/Watch", "/no.Such/Method", "/x"];
    const body = frame(Buffer.from([0x0a, 0x01, 0x41]), false);
    const all = await Promise.all(Array.from({ length: calls }, (_, i) =>
        rawCall(s, paths[i % paths.length], i % 2 ? body : Buffer.alloc(0), { ms: 20000 })));
    const ms = now() - t0;
    s.close();
    const count = {};
    for (const r of all) count[r.status] = (count[r.status] || 0) + 1;
    return { attack: "unknown", calls, ms: Math.round(ms), unimplemented: count[12] || 0, statuses: count, ...(await probe.stop()) };
}

// A ForwardRequest's bytes: a valid header (layer 0, f32, hidden) and then
// `filler` repeated to about mb MiB.
function bulkRequest(hidden, mb, filler) {
    const head = fwd.requestSerialize({ id: 7, layer: 0, placement_epoch: 0, dtype: 0, hidden, groups: [], activations: Buffer.alloc(0) });
    const n = Math.floor((mb * (1 << 20) - head.length) / filler.length);
    return Buffer.concat([head, Buffer.alloc(n * filler.length, filler)]);
}
async function info(addr) {
    const c = new pkg.moe.v1.ExpertService(addr, grpc.credentials.createInsecure());
    const r = await new Promise((res, rej) => c.Info({}, { deadline: Date.now() + 10000 }, (e, v) => e ? rej(e) : res(v)));
    c.close();
    return r;
}
async function bulk(addr, mb, kind) {
    const inf = await info(addr);
    // empty RowGroup: field 6, length 0; unknown field: number 100, varint 1
    const msg = bulkRequest(inf.hidden, mb, kind === "groups" ? Buffer.from([0x32, 0x00]) : Buffer.from([0xa0, 0x06, 0x01]));
    const probe = startProbe(addr);
    await new Promise((res) => setTimeout(res, 200));
    const r = await forwardOnce(addr, frame(msg, false));
    return { attack: kind, message_bytes: msg.length, ...r, ...(await probe.stop()) };
}

// ---- rapid reset on a raw socket ----
const h2frame = (type, flags, id, payload = Buffer.alloc(0)) => {
    const h = Buffer.alloc(9);
    h.writeUIntBE(payload.length, 0, 3);
    h[3] = type;
    h[4] = flags;
    h.writeUInt32BE(id, 5);
    return Buffer.concat([h, payload]);
};
const hstr = (s) => { const b = Buffer.from(s); return Buffer.concat([Buffer.from([b.length]), b]); };
// HPACK without the dynamic table: :method POST (static 3), :scheme http
// (static 6), :path and :authority as literals with indexed names, the rest
// as literals with literal names
const hpack = (authority, p) => Buffer.concat([Buffer.from([0x83, 0x86, 0x04]), hstr(p), Buffer.from([0x01]), hstr(authority),
    Buffer.from([0x00]), hstr("content-type"), hstr("application/grpc"), Buffer.from([0x00]), hstr("te"), hstr("trailers")]);

async function reset(addr, streams) {
    const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
    const sock = net.connect(port, host);
    await new Promise((res, rej) => { sock.once("connect", res); sock.once("error", rej); });
    const probe = startProbe(addr);
    let goaway = null, pingAck = null, inbuf = Buffer.alloc(0), serverMaxStreams = null, rstFromServer = 0;
    sock.on("data", (d) => {
        inbuf = Buffer.concat([inbuf, d]);
        while (inbuf.length >= 9) {
            const len = inbuf.readUIntBE(0, 3), type = inbuf[3], flags = inbuf[4];
            if (inbuf.length < 9 + len) break;
            const pl = inbuf.subarray(9, 9 + len);
            if (type === 4 && !(flags & 1)) { // SETTINGS: note MAX_CONCURRENT_STREAMS, ack
                for (let i = 0; i + 6 <= pl.length; i += 6) if (pl.readUInt16BE(i) === 3) serverMaxStreams = pl.readUInt32BE(i + 2);
                sock.write(h2frame(4, 1, 0));
            }
            if (type === 6 && (flags & 1) && pl.toString() === "hostile!") pingAck = now();
            if (type === 6 && !(flags & 1)) sock.write(h2frame(6, 1, 0, pl));
            if (type === 7) goaway = { last_stream: pl.readUInt32BE(0) & 0x7fffffff, code: pl.readUInt32BE(4) };
            if (type === 3) rstFromServer++;
            inbuf = inbuf.subarray(9 + len);
        }
    });
    sock.on("error", () => {});
    const closed = new Promise((res) => sock.on("close", res));
    // resolves once written out, or when the socket is gone (no drain comes then)
    const write = (b) => new Promise((res) => {
        if (sock.destroyed || sock.write(b)) return res();
        const done = () => { sock.off("drain", done); sock.off("close", done); res(); };
        sock.once("drain", done);
        sock.once("close", done);
    });
    await write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2frame(4, 0, 0)]));
    const block = hpack(addr, FORWARD);
    const cancel = Buffer.from([0, 0, 0, 8]);
    const t0 = now();
    let sent = 0;
    for (let id = 1; sent < streams && !sock.destroyed && !goaway; sent += 500) {
        const batch = [];
        for (let k = 0; k < 500 && sent + k < streams; k++, id += 2)
            batch.push(h2frame(1, 4, id, block), h2frame(3, 0, id, cancel)); // HEADERS (END_HEADERS), RST_STREAM
        await write(Buffer.concat(batch));
    }
    const sendMs = now() - t0;
    // the PING's ACK comes once the worker has read everything before it
    if (!sock.destroyed) await write(h2frame(6, 0, 0, Buffer.from("hostile!")));
    for (let i = 0; i < 600 && pingAck === null && !sock.destroyed; i++) await new Promise((res) => setTimeout(res, 50));
    sock.end(h2frame(7, 0, 0, Buffer.from([0, 0, 0, 0, 0, 0, 0, 0])));
    await Promise.race([closed, new Promise((res) => setTimeout(res, 2000))]);
    sock.destroy();
    return { attack: "reset", streams: Math.min(sent, streams), send_ms: Math.round(sendMs),
             read_ms: pingAck === null ? null : Math.round(pingAck - t0), server_max_streams: serverMaxStreams,
             rst_from_server: rstFromServer, goaway, ...(await probe.stop()) };
}

// A raw connection (preface, SETTINGS, acks) and what the worker does to it.
async function rawConn(addr) {
    const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
    const sock = net.connect(port, host);
    await new Promise((res, rej) => { sock.once("connect", res); sock.once("error", rej); });
    const c = { sock, t0: now(), goaway: null, goawayMs: null, closedMs: null, pongs: 0 };
    let inbuf = Buffer.alloc(0);
    sock.on("data", (d) => {
        inbuf = Buffer.concat([inbuf, d]);
        while (inbuf.length >= 9) {
            const len = inbuf.readUIntBE(0, 3), type = inbuf[3], flags = inbuf[4];
            if (inbuf.length < 9 + len) break;
            const pl = inbuf.subarray(9, 9 + len);
            if (type === 4 && !(flags & 1)) sock.write(h2frame(4, 1, 0));
            if (type === 6 && (flags & 1)) c.pongs++;
            if (type === 7 && !c.goaway) {
                c.goaway = { code: pl.readUInt32BE(4), debug: pl.subarray(8).toString() };
                c.goawayMs = Math.round(now() - c.t0);
            }
            inbuf = inbuf.subarray(9 + len);
        }
    });
    sock.on("error", () => {});
    sock.on("close", () => { c.closedMs = Math.round(now() - c.t0); });
    sock.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2frame(4, 0, 0)]));
    return c;
}
const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

// conn: a connection that stays (--stream: with one Forward stream open,
// sending nothing); waits up to --wait-ms for the worker's GOAWAY and close.
async function conn(addr, stream, waitMs) {
    const c = await rawConn(addr);
    if (stream) c.sock.write(h2frame(1, 4, 1, hpack(addr, FORWARD)));
    while (now() - c.t0 < waitMs && c.closedMs === null) await sleep(20);
    c.sock.destroy();
    return { attack: "conn", stream, goaway: c.goaway, goaway_ms: c.goawayMs, closed_ms: c.closedMs };
}

// pings: PING frames back to back with no data, as a keepalive abuser.
async function pings(addr, n) {
    const c = await rawConn(addr);
    for (let i = 0; i < n && c.closedMs === null && !c.goaway; i++) {
        c.sock.write(h2frame(6, 0, 0, Buffer.from("pingping")));
        await sleep(20);
    }
    for (let i = 0; i < 50 && !c.goaway && c.closedMs === null; i++) await sleep(20);
    c.sock.destroy();
    return { attack: "pings", sent: n, pongs: c.pongs, goaway: c.goaway, goaway_ms: c.goawayMs };
}

// ---- one normal Forward (grpc-js) ----
async function forward(addr) {
    const inf = await info(addr);
    const le = inf.held[0];
    const c = new pkg.moe.v1.ExpertService(addr, grpc.credentials.createInsecure());
    const t0 = now();
    const stream = c.Forward({ deadline: Date.now() + 10000 });
    const got = new Promise((res, rej) => { stream.on("data", res); stream.on("error", rej); });
    const x = Buffer.from(new Float32Array(inf.hidden).fill(0.01).buffer);
    stream.write({ id: 1, layer: le.layer, placement_epoch: 0, dtype: 0, hidden: inf.hidden, groups: [{ expert: le.experts[0], first_row: 0, row_count: 1 }], activations: x });
    stream.end();
    const r = await got;
    c.close();
    return { status: r.status, error: r.error, outputs: r.outputs.length, ms: Math.round(now() - t0) };
}

// ---- a connection flood ----
async function conns(addr, n, ms) {
    const i = addr.lastIndexOf(":");
    const host = addr.slice(0, i), port = Number(addr.slice(i + 1));
    const probe = startProbe(addr);
    for (let k = 0; k < 200 && probe.st.calls < 1; k++) await new Promise((res) => setTimeout(res, 10));
    // the worker's cap tells old from new by the pass (every 100 ms) that
    // first saw a connection: a probe whose connection the flood joins in
    // the same pass is as new as the flood and may be cut (it was, once, in
    // a CI run), so the flood starts 3 passes after the probe's first answer
    await new Promise((res) => setTimeout(res, 300));
    const socks = new Set();
    let closed = 0, errors = 0;
    for (let k = 0; k < n; k++) {
        const s = net.connect(port, host);
        s.resume(); // read, so a close by the worker is seen
        s.on("error", () => errors++);
        s.on("close", () => { if (socks.delete(s)) closed++; });
        socks.add(s);
    }
    const t0 = now(), open_each_500ms = [];
    while (now() - t0 < ms) {
        await new Promise((res) => setTimeout(res, 500));
        open_each_500ms.push(socks.size);
    }
    const open_at_end = socks.size;
    for (const s of [...socks]) { socks.delete(s); s.destroy(); }
    return { attack: "conns", connections: n, closed_by_server: closed, socket_errors: errors, open_at_end, open_each_500ms, ...(await probe.stop()) };
}

const [cmd, addr, ...rest] = process.argv.slice(2);
const opt = (k, d) => { const i = rest.indexOf(k); return i >= 0 ? rest[i + 1] : d; };
try {
    let r;
    if (!addr) r = null;
    else if (cmd === "gzip") r = await gzip(addr, Number(opt("--inflate-mb", "1024")), opt("--encoding", "gzip"));
    else if (cmd === "unknown") r = await unknown(addr, Number(opt("--calls", "2000")));
    else if (cmd === "groups" || cmd === "fields") r = await bulk(addr, Number(opt("--mb", "3")), cmd);
    else if (cmd === "reset") r = await reset(addr, Number(opt("--streams", "20000")));
    else if (cmd === "forward") r = await forward(addr);
    else if (cmd === "conns") r = await conns(addr, Number(opt("--n", "1000")), Number(opt("--ms", "3000")));
    else if (cmd === "conn") r = await conn(addr, rest.includes("--stream"), Number(opt("--wait-ms", "5000")));
    else if (cmd === "pings") r = await pings(addr, Number(opt("--n", "10")));
    if (!r) { process.stderr.write("usage: node tests/ref/hostile_grpc.mjs gzip|unknown|groups|fields|reset|conn|conns|pings|forward ADDR [options]\n"); process.exit(2); }
    console.log(JSON.stringify(r));
    process.exit(0);
} catch (e) { fail(e.stack || String(e)); }
