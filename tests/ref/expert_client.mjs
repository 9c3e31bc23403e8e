// tests/ref/expert_client.mjs - the official Node gRPC client (@grpc/grpc-js)
// against an expert worker, checked against expert FFNs computed here in
// float64 straight from the GGUF (f32 models), independently of moemesh.
//
//   node tests/ref/expert_client.mjs check ADDR MODEL.gguf [--dtype f32|bf16] [--seed S]
//   node tests/ref/expert_client.mjs info ADDR
//   node tests/ref/expert_client.mjs touch ADDR   (one row through every held expert)
//   node tests/ref/expert_client.mjs dump ADDR LAYER INPUT_FILE [--seed S]
//       sends one batch of seeded rows (two groups of the first held experts
//       of LAYER), writes them to INPUT_FILE in `moectl expert --input`'s
//       format and prints {"outputs": [[...]]} as received
//
// check: Info and Health answer; pipelined Forward batches over held experts
// match the float64 reference (f32: 1e-4 relative, bf16: 2e-2); a batch
// naming an expert not held gets FAILED_PRECONDITION naming it; bytes that
// are not a ForwardRequest and an inconsistent request get INVALID_ARGUMENT;
// the stream stays usable after each. Prints a JSON summary; exit 0 or 1.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = path.join(here, "..", "..", "proto");
const def = protoLoader.loadSync(["moe/v1/expert.proto", "grpc/health/v1/health.proto"],
    { keepCase: true, longs: Number, enums: Number, defaults: true, includeDirs: [protoDir] });
const pkg = grpc.loadPackageDefinition(def);
const fail = (msg) => { process.stderr.write(`expert_client: ${msg}\n`); process.exit(1); };

// ---- float64 reference from the GGUF (f32 tensors) ----
function loadGGUF(file) {
    const buf = fs.readFileSync(file);
    let p = 0;
    const u32 = () => { const v = buf.readUInt32LE(p); p += 4; return v; };
    const u64 = () => { const v = Number(buf.readBigUInt64LE(p)); p += 8; return v; };
    const str = () => { const n = u64(); const s = buf.toString("utf8", p, p + n); p += n; return s; };
    const val = (t) => {
        switch (t) {
            case 0: case 1: case 7: return buf[p++];
            case 2: case 3: { const v = buf.readUInt16LE(p); p += 2; return v; }
            case 4: return u32();
            case 5: { const v = buf.readInt32LE(p); p += 4; return v; }
            case 6: { const v = buf.readFloatLE(p); p += 4; return v; }
            case 8: return str();
            case 10: case 11: return u64();
            case 12: { const v = buf.readDoubleLE(p); p += 8; return v; }
            case 9: { const et = u32(), n = u64(); const a = new Array(n); for (let i = 0; i < n; i++) a[i] = val(et); return a; }
            default: throw new Error(`gguf value type ${t}`);
        }
    };
    if (buf.toString("ascii", 0, 4) !== "GGUF") throw new Error(`${file}: not GGUF`);
    p = 8;
    const nT = u64(), nKV = u64(), kv = {}, tinfo = {};
    for (let i = 0; i < nKV; i++) { const k = str(); kv[k] = val(u32()); }
    for (let i = 0; i < nT; i++) {
        const name = str(), nd = u32(), ne = [];
        for (let j = 0; j < nd; j++) ne.push(u64());
        tinfo[name] = { ne, type: u32(), off: u64() };
    }
    const align = kv["general.alignment"] ?? 32, data = Math.ceil(p / align) * align;
    const tensor = (name) => {
        const t = tinfo[name];
        if (!t) throw new Error(`no tensor ${name}`);
        if (t.type !== 0) throw new Error(`${name}: the reference reads f32 tensors only`);
        const n = t.ne.reduce((a, b) => a * b, 1);
        return { ne: t.ne, v: new Float32Array(buf.buffer, buf.byteOffset + data + t.off, n) };
    };
    return { kv, tensor };
}

// y = down(silu(gate x) * up x) for expert e of layer l, in float64
function expertRef(g, l, e, x) {
    const gate = g.tensor(`blk.${l}.ffn_gate_exps.weight`), up = g.tensor(`blk.${l}.ffn_up_exps.weight`);
    const down = g.tensor(`blk.${l}.ffn_down_exps.weight`);
    const E = gate.ne[0], F = gate.ne[1];
    const h = new Float64Array(F);
    for (let f = 0; f < F; f++) {
        let a = 0, b = 0;
        const o = (e * F + f) * E;
        for (let i = 0; i < E; i++) { a += gate.v[o + i] * x[i]; b += up.v[o + i] * x[i]; }
        h[f] = a / (1 + Math.exp(-a)) * b;
    }
    const y = new Float64Array(E);
    for (let j = 0; j < E; j++) {
        let s = 0;
        const o = (e * E + j) * F;
        for (let f = 0; f < F; f++) s += down.v[o + f] * h[f];
        y[j] = s;
    }
    return y;
}

// ---- helpers ----
function rng(seed) { let s = BigInt(seed) || 1n; return () => { s ^= s << 13n; s &= (1n << 64n) - 1n; s ^= s >> 7n; s ^= s << 17n; s &= (1n << 64n) - 1n; return Number(s % 2000001n) / 1000000 - 1; }; }
const toBf16 = (f) => { const b = new Float32Array([f]); const u = new Uint32Array(b.buffer)[0]; return (u + 0x7fff + ((u >> 16) & 1)) >>> 16; };
function pack(rows, dtype) {
    const n = rows.reduce((a, r) => a + r.length, 0);
    if (dtype === 0) { const a = new Float32Array(n); let k = 0; for (const r of rows) for (const v of r) a[k++] = v; return Buffer.from(a.buffer); }
    const a = new Uint16Array(n); let k = 0; for (const r of rows) for (const v of r) a[k++] = toBf16(v); return Buffer.from(a.buffer);
}
function unpack(buf, dtype) {
    if (dtype === 0) return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    const u = new Uint16Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    const f = new Float32Array(u.length), w = new Uint32Array(f.buffer);
    for (let i = 0; i < u.length; i++) w[i] = u[i] << 16;
    return f;
}
const call = (fn, req) => new Promise((res, rej) => fn(req, { deadline: Date.now() + 10000 }, (e, r) => e ? rej(e) : res(r)));

async function info(addr) {
    const c = new pkg.moe.v1.ExpertService(addr, grpc.credentials.createInsecure());
    const r = await call(c.Info.bind(c), {});
    c.close();
    return r;
}

async function check(addr, model, dtypeName, seed) {
    const dtype = dtypeName === "bf16" ? 1 : 0, tol = dtype ? 2e-2 : 1e-4;
    const g = loadGGUF(model);
    const arch = g.kv["general.architecture"], hidden = g.kv[`${arch}.embedding_length`];
    const c = new pkg.moe.v1.ExpertService(addr, grpc.credentials.createInsecure());
    const hc = new pkg.grpc.health.v1.Health(addr, grpc.credentials.createInsecure());
    const inf = await call(c.Info.bind(c), {});
    const health = await call(hc.Check.bind(hc), { service: "" });
    if (health.status !== 1) fail(`health status ${health.status}, want SERVING (1)`);
    if (inf.hidden !== hidden) fail(`Info hidden ${inf.hidden}, model ${hidden}`);
    if (!inf.held.length) fail("Info: the worker holds no experts");
    const rand = rng(seed);
    // requests: for up to 4 held layers, two groups of held experts
    const reqs = [];
    let id = 1;
    for (const le of inf.held.slice(0, 4)) {
        const ex = le.experts.slice(0, 2), groups = [], rows = [];
        for (const e of ex) {
            const n = 1 + (id % 3);
            groups.push({ expert: e, first_row: rows.length, row_count: n });
            for (let i = 0; i < n; i++) rows.push(Array.from({ length: hidden }, () => rand()));
        }
        reqs.push({ id: id++, layer: le.layer, placement_epoch: 1, dtype, hidden, groups, rows });
    }
    // one persistent stream, all batches in flight at once, then the error cases
    const stream = c.Forward({ deadline: Date.now() + 30000 });
    const results = new Map();
    const done = new Promise((res, rej) => { stream.on("data", (r) => results.set(r.id, r)); stream.on("end", res); stream.on("error", rej); });
    for (const r of reqs) stream.write({ ...r, activations: pack(r.rows, dtype) });
    // an expert the worker does not hold (if any), and an inconsistent request
    const le0 = inf.held[0];
    const missing = [...Array(inf.n_expert).keys()].find((e) => !le0.experts.includes(e));
    if (missing !== undefined)
        stream.write({ id: 900, layer: le0.layer, placement_epoch: 1, dtype, hidden, groups: [{ expert: missing, first_row: 0, row_count: 1 }], activations: pack([new Array(hidden).fill(0.5)], dtype) });
    stream.write({ id: 901, layer: le0.layer, placement_epoch: 1, dtype, hidden: hidden + 1, groups: [{ expert: le0.experts[0], first_row: 0, row_count: 1 }], activations: Buffer.alloc(4) });
    stream.end();
    await done;
    // raw bytes that are not a ForwardRequest, on a stream of their own
    const fwd = def["moe.v1.ExpertService"].Forward;
    const raw = c.makeBidiStreamRequest("/moe.v1.ExpertService/Forward", (b) => b, fwd.responseDeserialize, null, { deadline: Date.now() + 10000 });
    const rawRes = [];
    const rawDone = new Promise((res, rej) => { raw.on("data", (r) => rawRes.push(r)); raw.on("end", res); raw.on("error", rej); });
    raw.write(Buffer.from([0xff, 0xff, 0xff, 0x0f, 0x42]));
    raw.end();
    await rawDone;
    c.close(); hc.close();

    let maxRel = 0;
    for (const r of reqs) {
        const got = results.get(r.id);
        if (!got) fail(`no result for batch ${r.id}`);
        if (got.status !== 0) fail(`batch ${r.id}: status ${got.status}: ${got.error}`);
        if (got.expert_us.length !== r.groups.length) fail(`batch ${r.id}: ${got.expert_us.length} expert times for ${r.groups.length} groups`);
        const y = unpack(got.outputs, dtype);
        if (y.length !== r.rows.length * hidden) fail(`batch ${r.id}: ${y.length} outputs, want ${r.rows.length * hidden}`);
        for (const grp of r.groups) for (let i = 0; i < grp.row_count; i++) {
            const row = grp.first_row + i;
            const xin = dtype ? unpack(pack([r.rows[row]], 1), 1) : Float64Array.from(new Float32Array(r.rows[row]));
            const ref = expertRef(g, r.layer, grp.expert, xin);
            let scale = 0; for (const v of ref) scale = Math.max(scale, Math.abs(v));
            for (let j = 0; j < hidden; j++) maxRel = Math.max(maxRel, Math.abs(y[row * hidden + j] - ref[j]) / Math.max(scale, 1e-6));
        }
    }
    if (!(maxRel <= tol)) fail(`outputs differ from the float64 reference by ${maxRel} (relative) > ${tol}`);
    if (missing !== undefined) {
        const m = results.get(900);
        if (!m || m.status !== 9 || !m.error.includes(`expert ${missing}`)) fail(`unheld expert: got ${JSON.stringify(m && { status: m.status, error: m.error })}, want FAILED_PRECONDITION (9) naming expert ${missing}`);
    }
    const bad = results.get(901);
    if (!bad || bad.status !== 3 || !bad.error.includes("hidden")) fail(`inconsistent request: got ${JSON.stringify(bad && { status: bad.status, error: bad.error })}, want INVALID_ARGUMENT (3)`);
    if (rawRes.length !== 1 || rawRes[0].status !== 3) fail(`raw garbage: got ${JSON.stringify(rawRes.map((r) => [r.status, r.error]))}, want one INVALID_ARGUMENT`);
    return { batches: reqs.length, max_rel_diff: maxRel, tol, unheld_checked: missing !== undefined, held_layers: inf.held.length, device: inf.device, capacity_bytes: inf.capacity_bytes };
}

// One row through every expert the worker holds (any dtype of model).
async function touch(addr) {
    const c = new pkg.moe.v1.ExpertService(addr, grpc.credentials.createInsecure());
    const inf = await call(c.Info.bind(c), {});
    const stream = c.Forward({ deadline: Date.now() + 60000 });
    let n = 0, bad = null;
    const done = new Promise((res, rej) => { stream.on("data", (r) => { if (r.status) bad = r.error; n++; }); stream.on("end", res); stream.on("error", rej); });
    let id = 1;
    for (const le of inf.held) {
        const rows = le.experts.map(() => new Array(inf.hidden).fill(0.01));
        const groups = le.experts.map((e, i) => ({ expert: e, first_row: i, row_count: 1 }));
        stream.write({ id: id++, layer: le.layer, placement_epoch: 0, dtype: 0, hidden: inf.hidden, groups, activations: pack(rows, 0) });
    }
    stream.end();
    await done;
    c.close();
    if (bad) fail(`touch: ${bad}`);
    return { batches: n, experts: inf.held.reduce((a, l) => a + l.experts.length, 0), capacity_bytes: inf.capacity_bytes };
}

async function dump(addr, layer, file, seed) {
    const c = new pkg.moe.v1.ExpertService(addr, grpc.credentials.createInsecure());
    const inf = await call(c.Info.bind(c), {});
    const le = inf.held.find((h) => h.layer === layer);
    if (!le) fail(`the worker holds nothing in layer ${layer}`);
    const rand = rng(seed), ex = le.experts.slice(0, 2), groups = [], rows = [];
    for (const e of ex) {
        groups.push({ expert: e, first_row: rows.length, row_count: 2 });
        for (let i = 0; i < 2; i++) rows.push(Array.from({ length: inf.hidden }, () => Math.fround(rand())));
    }
    const stream = c.Forward({ deadline: Date.now() + 10000 });
    const got = new Promise((res, rej) => { stream.on("data", res); stream.on("error", rej); });
    stream.write({ id: 1, layer, placement_epoch: 0, dtype: 0, hidden: inf.hidden, groups, activations: pack(rows, 0) });
    stream.end();
    const r = await got;
    c.close();
    if (r.status) fail(`status ${r.status}: ${r.error}`);
    // floats as shortest round-trip decimals: parsed back, they are the same f32 values
    fs.writeFileSync(file, `${groups.length} ${groups.map((g) => `${g.expert} ${g.row_count}`).join(" ")}\n` + rows.map((row) => row.join(" ")).join("\n") + "\n");
    const y = unpack(r.outputs, 0), out = [];
    for (let i = 0; i < rows.length; i++) out.push(Array.from(y.subarray(i * inf.hidden, (i + 1) * inf.hidden)));
    return { outputs: out };
}

const [cmd, addr, model, ...rest] = process.argv.slice(2);
const opt = (k, d) => { const i = rest.indexOf(k); return i >= 0 ? rest[i + 1] : d; };
try {
    if (cmd === "info" && addr) console.log(JSON.stringify(await info(addr)));
    else if (cmd === "touch" && addr) console.log(JSON.stringify(await touch(addr)));
    else if (cmd === "dump" && addr && model && rest[0]) console.log(JSON.stringify(await dump(addr, Number(model), rest[0], Number(opt("--seed", "1")))));
    else if (cmd === "check" && addr && model) console.log(JSON.stringify(await check(addr, model, opt("--dtype", "f32"), Number(opt("--seed", "1")))));
    else { process.stderr.write("usage: node tests/ref/expert_client.mjs check ADDR MODEL.gguf [--dtype f32|bf16] [--seed S] | info ADDR\n"); process.exit(2); }
} catch (e) { fail(e.stack || String(e)); }
