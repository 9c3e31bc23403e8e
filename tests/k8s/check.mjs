#!/usr/bin/env node
// tests/k8s/check.mjs — validates rendered Kubernetes manifests (one overlay's
// `kubectl kustomize` output).
//
//   node check.mjs --name OVERLAY --rendered FILE.yaml --build BUILD_DIR
//
// 1. Schema, strict: every object becomes a typed object literal
//    (`const o: IDeployment = {...}`) in a generated TypeScript file checked by
//    `tsc --strict --noEmit` against kubernetes-models (Kubernetes 1.2x),
//    @kubernetes-models/keda (KEDA 2.10) and @kubernetes-models/cert-manager.
//    An object literal may carry no property its type lacks (TypeScript's
//    excess-property check, at every depth), so a misspelled field fails, as
//    does a wrong type or a missing required field. A kind with no model fails.
// 2. Policy (JavaScript): selectors match pod labels; every scaler (HPA, KEDA
//    ScaledObject) targets an existing object and no target has two; KEDA
//    triggers carry only their scaler's metadata keys (required ones present,
//    numbers as numbers) and point at what exists (a metrics-api URL at a
//    Service, port, route and JSON field of this overlay's binaries, a
//    Prometheus query at metrics a moemesh binary exports); probes and
//    Services name real container ports; every MOE_* env var and --flag given
//    to a moemesh container exists in its binary's --help; env $(VAR)
//    references are defined before use; pods are non-root with a read-only root
//    filesystem, no privilege escalation, all capabilities dropped and the
//    RuntimeDefault seccomp profile; every container has requests and limits;
//    moemesh images carry a tag.
// Prints one line per problem ("OVERLAY: Kind/name: message") and exits 1 if
// there is any, else prints "OVERLAY: N objects ok" and exits 0.
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { execFileSync, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
if (!args.rendered || !args.build) {
    console.error("usage: check.mjs --name OVERLAY --rendered FILE.yaml --build BUILD_DIR");
    process.exit(2);
}
const name = args.name || path.basename(args.rendered);
const problems = [];
const report = (o, msg) => problems.push(`${name}: ${o ? `${o.kind}/${o.metadata?.name}` : "-"}: ${msg}`);

const objs = YAML.parseAllDocuments(fs.readFileSync(args.rendered, "utf8"))
    .map((d) => {
        if (d.errors.length) throw new Error(`${args.rendered}: ${d.errors[0].message}`);
        return d.toJS();
    })
    .filter((o) => o);

// ---- 1. typed literals under tsc --strict -----------------------------------
function modelOf(apiVersion, kind) {
    const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
    if (group === "keda.sh") return `@kubernetes-models/keda/keda.sh/${version}`;
    if (group === "cert-manager.io") return `@kubernetes-models/cert-manager/cert-manager.io/${version}`;
    if (group.endsWith("cert-manager.io") || group.endsWith(".keda.sh")) return null;
    const dir = group ? `${group}/${version}` : version;
    if (!/^[a-z0-9.]+\/?[a-z0-9]*$/.test(dir)) return null;
    if (!fs.existsSync(path.join(here, "node_modules/kubernetes-models", dir, `${kind}.d.ts`))) return null;
    return `kubernetes-models/${dir}`;
}

function typecheck() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moemesh-k8s-"));
    const lines = [];
    const ranges = []; // [firstLine, lastLine, obj]
    const imports = new Map();
    const body = [];
    objs.forEach((o, i) => {
        if (typeof o.apiVersion !== "string" || typeof o.kind !== "string") {
            report(o, "no apiVersion or kind");
            return;
        }
        const mod = modelOf(o.apiVersion, o.kind);
        const iface = `I${o.kind}`;
        if (!mod) {
            report(o, `no schema for ${o.apiVersion} ${o.kind}: unknown or misspelled kind or apiVersion`);
            return;
        }
        const alias = `T${imports.size}`;
        const key = `${mod}#${iface}`;
        if (!imports.has(key)) imports.set(key, { mod, iface, alias });
        const text = `const o${i}: ${imports.get(key).alias} = ${JSON.stringify(o, null, 2)};`.split("\n");
        body.push({ text, obj: o });
    });
    for (const { mod, iface, alias } of imports.values()) lines.push(`import type { ${iface} as ${alias} } from "${mod}";`);
    for (const { text, obj } of body) {
        const first = lines.length + 1;
        lines.push(...text);
        ranges.push([first, lines.length, obj]);
    }
    lines.push("export {};");
    const file = path.join(dir, "manifests.mts");
    fs.writeFileSync(file, lines.join("\n") + "\n");
    // node_modules for the imports: the generated file resolves them from here
    fs.symlinkSync(path.join(here, "node_modules"), path.join(dir, "node_modules"));
    const tsc = path.join(here, "node_modules/typescript/bin/tsc");
    const r = spawnSync(process.execPath, [tsc, "--strict", "--noEmit", "--skipLibCheck", "--pretty", "false",
        "--module", "node16", "--moduleResolution", "node16", "--target", "es2022", file],
        { encoding: "utf8" });
    const out = (r.stdout || "") + (r.stderr || "");
    let n = 0;
    for (const l of out.split("\n")) {
        const m = l.match(/^.*manifests\.mts\((\d+),(\d+)\): error (TS\d+): (.*)$/);
        if (m) {
            const line = +m[1];
            const hit = ranges.find(([a, b]) => line >= a && line <= b);
            const src = lines[line - 1].trim();
            // a long inline type is cut: the field and the line say enough
            const msg = m[4].replace(/(in type ')(.{60}).{40,}'/, "$1$2...'");
            report(hit ? hit[2] : null, `schema: ${msg} (at: ${src.slice(0, 100)})`);
            n++;
        } else if (/error TS/.test(l)) {
            report(null, `schema: ${l}`);
            n++;
        }
    }
    if (r.status !== 0 && n === 0) report(null, `tsc failed: ${out.slice(0, 2000)}`);
    if (!process.env.MOE_K8S_KEEP) fs.rmSync(dir, { recursive: true, force: true });
    else console.error(`kept ${file}`);
}

// ---- 2. policy ------------------------------------------------------------------
const workloadKinds = new Set(["Deployment", "StatefulSet", "DaemonSet"]);
const workloads = objs.filter((o) => workloadKinds.has(o.kind));
const ns = (o) => o.metadata?.namespace || "";
const matches = (sel, labels) => sel && Object.entries(sel).every(([k, v]) => labels?.[k] === v);
const podsMatching = (o, sel) => workloads.filter((w) => ns(w) === ns(o) && matches(sel, w.spec?.template?.metadata?.labels));
const containersOf = (w) => [...(w.spec?.template?.spec?.initContainers || []), ...(w.spec?.template?.spec?.containers || [])];
const portsOf = (ws) => ws.flatMap((w) => containersOf(w).flatMap((c) => c.ports || []));

const helpCache = new Map();
helpOf.text = new Map();
function helpOf(image) {
    const m = /^moemesh\/([a-z-]+)(:|@|$)/.exec(image || "");
    if (!m) return null;
    if (!helpCache.has(m[1])) {
        const bin = path.join(args.build, m[1]);
        let text;
        try {
            text = execFileSync(bin, ["--help"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
        } catch (e) {
            text = (e.stdout || "") + (e.stderr || "");
            if (!text) throw new Error(`cannot run ${bin} --help: build it first (make)`);
        }
        helpOf.text.set(m[1], text);
        helpCache.set(m[1], {
            env: new Set(text.match(/\bMOE_[A-Z0-9_]+/g) || []),
            flags: new Set(text.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) || []),
        });
    }
    return helpCache.get(m[1]);
}

function checkProbePort(o, c, probeName, probe) {
    const handlers = ["httpGet", "tcpSocket", "grpc", "exec"].filter((h) => probe[h] != null);
    if (handlers.length !== 1) {
        report(o, `container ${c.name}: ${probeName} has ${handlers.length} handlers (${handlers.join(", ") || "none"}); exactly one is allowed`);
        return;
    }
    const h = handlers[0];
    if (h === "exec") return;
    const port = probe[h].port;
    const ports = c.ports || [];
    if (typeof port === "string") {
        if (!ports.some((p) => p.name === port))
            report(o, `container ${c.name}: ${probeName} names port "${port}", which the container does not declare (ports: ${ports.map((p) => p.name || p.containerPort).join(", ") || "none"})`);
    } else if (!ports.some((p) => p.containerPort === port)) {
        report(o, `container ${c.name}: ${probeName} uses port ${port}, which is no containerPort of the container`);
    }
}

function policy() {
    const byKindName = new Map(objs.map((o) => [`${ns(o)}/${o.kind}/${o.metadata?.name}`, o]));
    for (const w of workloads) {
        const sel = w.spec?.selector?.matchLabels;
        const labels = w.spec?.template?.metadata?.labels;
        if (!sel || !matches(sel, labels))
            report(w, `spec.selector.matchLabels ${JSON.stringify(sel)} does not match the pod template's labels ${JSON.stringify(labels)}`);
        const pod = w.spec?.template?.spec || {};
        const volumes = new Set((pod.volumes || []).map((v) => v.name));
        for (const t of w.spec?.volumeClaimTemplates || []) volumes.add(t.metadata?.name);
        for (const c of containersOf(w)) {
            const sc = c.securityContext || {};
            const psc = pod.securityContext || {};
            if ((sc.runAsNonRoot ?? psc.runAsNonRoot) !== true) report(w, `container ${c.name}: runAsNonRoot is not true`);
            if ((sc.runAsUser ?? psc.runAsUser) === 0) report(w, `container ${c.name}: runs as user 0`);
            if (sc.readOnlyRootFilesystem !== true) report(w, `container ${c.name}: readOnlyRootFilesystem is not true`);
            if (sc.allowPrivilegeEscalation !== false) report(w, `container ${c.name}: allowPrivilegeEscalation is not false`);
            if (!(sc.capabilities?.drop || []).includes("ALL")) report(w, `container ${c.name}: capabilities.drop lacks ALL`);
            if (sc.capabilities?.add?.length) report(w, `container ${c.name}: adds capabilities ${sc.capabilities.add}`);
            if ((sc.seccompProfile?.type ?? psc.seccompProfile?.type) !== "RuntimeDefault")
                report(w, `container ${c.name}: seccompProfile is not RuntimeDefault`);
            for (const k of ["requests", "limits"])
                if (!c.resources?.[k]?.cpu || !c.resources?.[k]?.memory) report(w, `container ${c.name}: no cpu and memory ${k}`);
            for (const vm of c.volumeMounts || [])
                if (!volumes.has(vm.name)) report(w, `container ${c.name}: volumeMount "${vm.name}" names no volume of the pod`);
            if (/^moemesh\//.test(c.image || "") && !/:[^/]+$/.test(c.image)) report(w, `container ${c.name}: image ${c.image} has no tag (the overlay sets it)`);
            for (const p of ["startupProbe", "livenessProbe", "readinessProbe"]) if (c[p]) checkProbePort(w, c, p, c[p]);
            const defined = new Set();
            for (const e of c.env || []) {
                for (const [, ref] of String(e.value ?? "").matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g))
                    if (!defined.has(ref)) report(w, `container ${c.name}: env ${e.name} refers to $(${ref}), not defined before it`);
                defined.add(e.name);
            }
            const help = helpOf(c.image);
            if (help) {
                for (const e of c.env || [])
                    if (/^MOE_/.test(e.name) && !help.env.has(e.name))
                        report(w, `container ${c.name}: env ${e.name} is no flag's twin in ${c.image.split(":")[0]} --help (unknown flag)`);
                for (const a of [...(c.command || []).slice(1), ...(c.args || [])]) {
                    const f = /^(--[a-z][a-z0-9-]*)/.exec(a)?.[1];
                    if (f && !help.flags.has(f)) report(w, `container ${c.name}: argument ${f} is no flag in ${c.image.split(":")[0]} --help (unknown flag)`);
                }
            }
        }
    }
    for (const s of objs.filter((o) => o.kind === "Service")) {
        if (s.spec?.type === "ExternalName") continue;
        const sel = s.spec?.selector;
        const pods = podsMatching(s, sel);
        if (!sel || pods.length === 0) {
            report(s, `selector ${JSON.stringify(sel)} matches no pod template in ${ns(s) || "the namespace"}`);
            continue;
        }
        const ports = portsOf(pods);
        for (const p of s.spec.ports || []) {
            const t = p.targetPort ?? p.port;
            if (typeof t === "string" ? !ports.some((q) => q.name === t) : !ports.some((q) => q.containerPort === t))
                report(s, `port ${p.name || p.port}: targetPort ${JSON.stringify(t)} is no port of the selected pods`);
        }
    }
    for (const o of objs.filter((o) => o.kind === "PodDisruptionBudget" || o.kind === "NetworkPolicy")) {
        const sel = o.kind === "NetworkPolicy" ? o.spec?.podSelector : o.spec?.selector;
        if (!sel || (o.kind === "NetworkPolicy" && !Object.keys(sel).length)) continue; // {}: every pod
        if (sel.matchExpressions) continue;
        const pods = podsMatching(o, sel.matchLabels || {});
        if (!sel.matchLabels || pods.length === 0) {
            report(o, `selector ${JSON.stringify(sel.matchLabels)} matches no pod template`);
            continue;
        }
        if (o.kind === "NetworkPolicy") {
            const ports = portsOf(pods);
            for (const rule of o.spec.ingress || [])
                for (const p of rule.ports || [])
                    if (typeof p.port === "string" && !ports.some((q) => q.name === p.port))
                        report(o, `ingress port "${p.port}" is no named port of the selected pods`);
            for (const rule of o.spec.ingress || [])
                for (const f of rule.from || [])
                    if (f.podSelector?.matchLabels && !f.namespaceSelector && podsMatching(o, f.podSelector.matchLabels).length === 0)
                        report(o, `ingress from podSelector ${JSON.stringify(f.podSelector.matchLabels)} matches no pod template`);
        }
    }
    // scalers: HPA and KEDA ScaledObject (which makes an HPA of its own)
    const scaled = new Map();
    for (const o of objs.filter((o) => o.kind === "HorizontalPodAutoscaler" || o.kind === "ScaledObject")) {
        const ref = o.spec?.scaleTargetRef || {};
        const kind = ref.kind || "Deployment";
        const target = byKindName.get(`${ns(o)}/${kind}/${ref.name}`);
        if (!target) {
            report(o, `scaleTargetRef ${kind}/${ref.name} is no object of this overlay`);
            continue;
        }
        const key = `${ns(o)}/${kind}/${ref.name}`;
        if (scaled.has(key))
            report(o, `scaleTargetRef ${kind}/${ref.name} already has a scaler (${scaled.get(key)}): two scalers on one target`);
        else scaled.set(key, `${o.kind}/${o.metadata?.name}`);
        if (o.kind === "ScaledObject") for (const t of o.spec?.triggers || []) checkTrigger(o, t);
    }
}

// KEDA triggers: the schema types `metadata` as a string map, so a misspelled
// key or a wrong address would pass it. Each scaler type used here has its
// keys (KEDA 2.10's scaler docs): the required ones present, no other key,
// numbers as decimal strings; and what they point at must exist: a
// metrics-api URL names a Service and port of this overlay and a path and
// field router-svc serves, a Prometheus query names metrics some moemesh
// binary exports.
const triggerKeys = {
    prometheus: {
        required: ["serverAddress", "query", "threshold"],
        optional: ["activationThreshold", "namespace", "customHeaders", "ignoreNullValues", "unsafeSsl", "queryParameters", "authModes", "cortexOrgID"],
        numbers: ["threshold", "activationThreshold"],
    },
    "metrics-api": {
        required: ["url", "valueLocation", "targetValue"],
        optional: ["activationTargetValue", "format", "authMode", "unsafeSsl"],
        numbers: ["targetValue", "activationTargetValue"],
    },
    cpu: { required: ["value"], optional: ["type", "containerName"], numbers: ["value"] },
    memory: { required: ["value"], optional: ["type", "containerName"], numbers: ["value"] },
};
const binCache = new Map();
function binaryText(bin) {
    if (!binCache.has(bin)) {
        let t = "";
        try {
            t = fs.readFileSync(path.join(args.build, bin), "latin1");
        } catch {
            throw new Error(`cannot read ${path.join(args.build, bin)}: build it first (make)`);
        }
        binCache.set(bin, t);
    }
    return binCache.get(bin);
}
function checkTrigger(o, t) {
    const spec = triggerKeys[t.type];
    const md = t.metadata || {};
    if (!spec) {
        report(o, `trigger type "${t.type}" has no key table in tests/k8s/check.mjs (add one from KEDA's docs)`);
        return;
    }
    for (const k of spec.required) if (md[k] === undefined) report(o, `trigger ${t.type}: metadata.${k} is required`);
    for (const k of Object.keys(md))
        if (!spec.required.includes(k) && !spec.optional.includes(k))
            report(o, `trigger ${t.type}: metadata.${k} is no key of this scaler (${[...spec.required, ...spec.optional].join(", ")})`);
    for (const k of spec.numbers)
        if (md[k] !== undefined && !/^[0-9]+(\.[0-9]+)?$/.test(String(md[k])))
            report(o, `trigger ${t.type}: metadata.${k} "${md[k]}" is not a decimal number`);
    if (t.type === "metrics-api" && md.url) {
        let u;
        try {
            u = new URL(md.url);
        } catch {
            report(o, `trigger metrics-api: url "${md.url}" does not parse`);
            return;
        }
        // SERVICE[.NAMESPACE[.svc[.cluster.local]]]
        const [svc, sns = ns(o)] = u.hostname.split(".");
        const s = objs.find((x) => x.kind === "Service" && x.metadata?.name === svc && ns(x) === sns);
        const port = Number(u.port || (u.protocol === "https:" ? 443 : 80));
        if (!s) report(o, `trigger metrics-api: url host ${u.hostname} names no Service of this overlay (Service ${svc} in namespace ${sns || "(none)"})`);
        else if (!(s.spec?.ports || []).some((p) => p.port === port))
            report(o, `trigger metrics-api: url port ${port} is no port of Service ${svc}`);
        // the binary behind the Service: its pods' moemesh image
        const image = s ? podsMatching(s, s.spec?.selector).flatMap(containersOf).map((c) => c.image).find((i) => /^moemesh\//.test(i || "")) : null;
        const bin = image ? /^moemesh\/([a-z-]+)/.exec(image)[1] : null;
        if (bin) {
            const help = helpOf(image);
            if (help && !helpOf.text?.get(bin)?.includes(u.pathname))
                report(o, `trigger metrics-api: url path ${u.pathname} is no route in ${bin} --help`);
            if (help && md.valueLocation && !binaryText(bin).includes(`"${md.valueLocation.split(".")[0]}"`))
                report(o, `trigger metrics-api: valueLocation ${md.valueLocation} is no field ${bin} writes`);
        }
    }
    if (t.type === "prometheus" && md.query) {
        for (const m of String(md.query).match(/\bmoemesh_[a-z0-9_]+/g) || [])
            if (!["router-svc", "gateway", "expert-worker"].some((b) => binaryText(b).includes(m)))
                report(o, `trigger prometheus: query names ${m}, which no moemesh binary exports`);
    }
}

try {
    typecheck();
    policy();
} catch (e) {
    console.error(`${name}: error: ${e.message}`);
    process.exit(2);
}
for (const p of problems) console.log(p);
if (problems.length) {
    console.log(`${name}: ${problems.length} problem(s)`);
    process.exit(1);
}
console.log(`${name}: ${objs.length} objects ok (schemas: tsc --strict; policy checks)`);
