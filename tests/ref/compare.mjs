#!/usr/bin/env node
// compare.mjs — compare two logits JSON files ({"n_vocab": V, "positions": [{"pos", "token", "logits"}]})
// as written by `moectl logits` (OURS) and `node tests/ref/llama.mjs logits` (REF).
//
//   node tests/ref/compare.mjs OURS.json REF.json --atol A [--rtol R] [--gate-tie T [--max-skipped N]]
//
// Per position: max |ours - ref| over the vocab; every compared position must be within
// atol + rtol * max|ref|. With --gate-tie T, OURS must come from `moectl logits --gate-margins`
// (a "gate_margin" per position: the smallest gap, over the MoE layers, between the last chosen
// expert's selection score and the best unchosen one's): positions whose gate_margin is < T are
// skipped, as a near tie in an expert choice that another engine's rounding may break the other
// way. That is the only reason a position is skipped; more than --max-skipped N (default 2)
// skipped positions fail the run (a broken margin must not skip everything), and a missing or
// non-numeric gate_margin fails it. Structural mismatches (n_vocab, number of positions,
// pos/token lists, row lengths, non-finite values) always fail. Prints one JSON summary line on
// stdout; failure details go to stderr. Exit: 0 pass, 1 mismatch, 2 usage / unreadable input.

import fs from "node:fs";

const USAGE = "usage: node tests/ref/compare.mjs OURS.json REF.json --atol A [--rtol R] [--gate-tie T [--max-skipped N]]";

function die(code, msg) {
    process.stderr.write(`compare.mjs: ${msg}\n`);
    process.exit(code);
}

function parseArgs(argv) {
    const o = { files: [], atol: null, rtol: 0, gateTie: null, maxSkipped: 2 };
    const num = (flag, v) => {
        const x = Number(v);
        if (v === undefined || v === "" || !Number.isFinite(x) || x < 0) die(2, `${flag} needs a non-negative number\n${USAGE}`);
        return x;
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === "-h" || a === "--help") { process.stdout.write(USAGE + "\n"); process.exit(0); }
        else if (a === "--atol") o.atol = num(a, argv[++i]);
        else if (a === "--rtol") o.rtol = num(a, argv[++i]);
        else if (a === "--gate-tie") o.gateTie = num(a, argv[++i]);
        else if (a === "--max-skipped") o.maxSkipped = num(a, argv[++i]);
        else if (a.startsWith("-")) die(2, `unknown option: ${a}\n${USAGE}`);
        else o.files.push(a);
    }
    if (o.files.length !== 2) die(2, `need exactly two files\n${USAGE}`);
    if (o.atol === null) die(2, `--atol is required\n${USAGE}`);
    return o;
}

function load(path, label) {
    let j;
    try {
        j = JSON.parse(fs.readFileSync(path, "utf8"));
    } catch (e) {
        die(2, `${label} ${path}: ${e.message}`);
    }
    if (!j || !Array.isArray(j.positions) || !Number.isInteger(j.n_vocab))
        die(2, `${label} ${path}: not a logits file (need n_vocab and positions)`);
    return j;
}

// top-1 index (lowest id on ties) and top-2 margin
function top2(row) {
    let i1 = -1, v1 = -Infinity, v2 = -Infinity;
    for (let i = 0; i < row.length; i++) {
        const v = row[i];
        if (v > v1) { v2 = v1; v1 = v; i1 = i; }
        else if (v > v2) v2 = v;
    }
    return { argmax: i1, margin: v1 - v2 };
}

const o = parseArgs(process.argv.slice(2));
const ours = load(o.files[0], "OURS");
const ref = load(o.files[1], "REF");

const summary = { positions: ref.positions.length, compared: 0, skipped: 0, max_abs_diff: 0, worst_pos: null, argmax_agree: 0, within_tol: 0, min_gate_margin: null };
const failures = [];   // structural or outside tolerance: always fail
const skippedPos = [];
const finish = () => {
    if (o.gateTie !== null && summary.skipped > o.maxSkipped)
        failures.push(`${summary.skipped} positions skipped for a gate near tie (< ${o.gateTie}): ${skippedPos.join(",")}; at most ${o.maxSkipped} allowed`);
    process.stdout.write(JSON.stringify(summary) + "\n");
    if (failures.length) {
        for (const f of failures.slice(0, 20)) process.stderr.write(`FAIL: ${f}\n`);
        if (failures.length > 20) process.stderr.write(`FAIL: ... and ${failures.length - 20} more\n`);
        process.exit(1);
    }
    if (skippedPos.length) process.stderr.write(`skipped positions (gate margin < ${o.gateTie}): ${skippedPos.join(",")}\n`);
    process.exit(0);
};

if (ours.n_vocab !== ref.n_vocab) {
    failures.push(`n_vocab differs: ours ${ours.n_vocab}, ref ${ref.n_vocab}`);
    finish();
}
if (ours.positions.length !== ref.positions.length) {
    failures.push(`number of positions differs: ours ${ours.positions.length}, ref ${ref.positions.length}`);
    finish();
}
const V = ref.n_vocab;
for (let k = 0; k < ref.positions.length; k++) {
    const a = ours.positions[k], b = ref.positions[k];
    if (a.pos !== b.pos || a.token !== b.token) {
        failures.push(`entry ${k}: position/token differ: ours pos ${a.pos} token ${a.token}, ref pos ${b.pos} token ${b.token}`);
        continue;
    }
    const p = b.pos;
    if (!Array.isArray(a.logits) || a.logits.length !== V || !Array.isArray(b.logits) || b.logits.length !== V) {
        failures.push(`position ${p}: logits length ours ${a.logits?.length}, ref ${b.logits?.length}, n_vocab ${V}`);
        continue;
    }
    let bad = -1;
    for (let i = 0; i < V; i++)
        if (typeof a.logits[i] !== "number" || !Number.isFinite(a.logits[i]) ||
            typeof b.logits[i] !== "number" || !Number.isFinite(b.logits[i])) { bad = i; break; }
    if (bad >= 0) {
        failures.push(`position ${p}: non-finite/non-numeric logit at token ${bad} (ours ${a.logits[bad]}, ref ${b.logits[bad]})`);
        continue;
    }
    const tr = top2(b.logits), to = top2(a.logits);
    if (o.gateTie !== null) {
        const g = a.gate_margin;
        if (g !== null && (typeof g !== "number" || !Number.isFinite(g) || g < 0)) {
            failures.push(`position ${p}: OURS has no gate_margin (${JSON.stringify(g)}): run moectl logits --gate-margins`);
            continue;
        }
        if (g !== null && (summary.min_gate_margin === null || g < summary.min_gate_margin)) summary.min_gate_margin = g;
        if (g !== null && g < o.gateTie) {
            summary.skipped++;
            skippedPos.push(p);
            continue;
        }
    }
    summary.compared++;
    if (tr.argmax === to.argmax) summary.argmax_agree++;
    let d = 0, at = 0, refMax = 0;
    for (let i = 0; i < V; i++) {
        const x = Math.abs(a.logits[i] - b.logits[i]);
        if (x > d) { d = x; at = i; }
        refMax = Math.max(refMax, Math.abs(b.logits[i]));
    }
    if (summary.worst_pos === null || d > summary.max_abs_diff) {
        summary.max_abs_diff = d;
        summary.worst_pos = p;
    }
    const tol = o.atol + o.rtol * refMax;
    if (d <= tol) summary.within_tol++;
    else
        failures.push(`position ${p} (token ${b.token}): max abs diff ${d} at vocab id ${at} ` +
            `(ours ${a.logits[at]}, ref ${b.logits[at]}) > tolerance ${tol} (atol ${o.atol} + rtol ${o.rtol} * max|ref| ${refMax}); ` +
            `argmax ours ${to.argmax} ref ${tr.argmax}` + (o.gateTie !== null ? `, gate margin ${a.gate_margin}` : ""));
}
finish();
