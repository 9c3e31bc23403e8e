// tests/fuzz/make_wire_corpus.mjs - writes fuzz_wire's seed corpus
// (tests/fuzz/corpus/fuzz_wire/, checked in): ForwardRequests for the shape
// fuzz_wire checks against (4 layers, 8 experts, hidden 16, 64 rows), packed
// by protobufjs (@grpc/proto-loader, as the Node client sends them): valid
// ones of each dtype up to the limits, and some just past a check each, so
// the fuzzer starts beyond protobuf-c's unpack and the raw scan.
//   . tests/ref/env.sh && node tests/fuzz/make_wire_corpus.mjs
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "ref", "package.json"));
const protoLoader = require("@grpc/proto-loader");
const def = protoLoader.loadSync(["moe/v1/expert.proto"], {
    keepCase: true, longs: Number, enums: Number, defaults: true, includeDirs: [path.join(here, "..", "..", "proto")] });
const ser = def["moe.v1.ExpertService"].Forward.requestSerialize;
const HIDDEN = 16;

// rows of deterministic activations in dtype 0 (f32) or 1 (bf16)
const act = (rows, dtype) => {
    const n = rows * HIDDEN, b = Buffer.alloc(n * (dtype ? 2 : 4));
    for (let i = 0; i < n; i++) {
        const v = Math.sin(i) * 4;
        if (dtype) b.writeUInt16LE(new Uint16Array(new Float32Array([v]).buffer)[1], 2 * i);
        else b.writeFloatLE(v, 4 * i);
    }
    return b;
};
// groups for experts with row counts, contiguous from row 0
const groups = (spec) => { let r = 0; return spec.map(([expert, n]) => { const g = { expert, first_row: r, row_count: n }; r += n; return g; }); };
const req = (o) => {
    const g = groups(o.spec), rows = g.reduce((a, x) => a + x.row_count, 0);
    return ser({ id: o.id ?? 1, layer: o.layer ?? 0, placement_epoch: o.epoch ?? 0, dtype: o.dtype ?? 0, hidden: o.hidden ?? HIDDEN,
                 groups: g, activations: o.act ?? act(rows, o.dtype ?? 0), exact: o.exact ?? false });
};
const seeds = {
    "valid-f32-1row": req({ spec: [[0, 1]] }),
    "valid-bf16-2groups": req({ id: 2 ** 40, layer: 3, epoch: 9, dtype: 1, exact: true, spec: [[2, 2], [5, 1]] }),
    "valid-f32-8groups": req({ layer: 1, spec: [[0, 1], [1, 1], [2, 1], [3, 1], [4, 1], [5, 1], [6, 1], [7, 1]] }),
    "valid-bf16-64rows": req({ layer: 2, dtype: 1, spec: [[7, 40], [1, 24]] }),
    "valid-unknown-field": Buffer.concat([req({ spec: [[4, 2]] }), Buffer.from([0xa0, 0x06, 0x01])]),
    "bad-9groups": Buffer.concat([req({ spec: [[0, 1]] }), Buffer.alloc(16, Buffer.from([0x32, 0x00]))]),
    "bad-hidden": req({ hidden: 17, spec: [[0, 1]], act: Buffer.alloc(68) }),
    "bad-gap": Buffer.concat([req({ spec: [[0, 1]] }), ser({ groups: [{ expert: 1, first_row: 2, row_count: 1 }] })]),
    "bad-65rows": req({ dtype: 1, spec: [[0, 65]] }),
};
const dir = path.join(here, "corpus", "fuzz_wire");
fs.mkdirSync(dir, { recursive: true });
for (const [name, b] of Object.entries(seeds)) fs.writeFileSync(path.join(dir, name), b);
console.log(`${Object.keys(seeds).length} seeds in ${dir}`);
