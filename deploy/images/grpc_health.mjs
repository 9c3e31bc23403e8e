// deploy/images/grpc_health.mjs - one grpc.health.v1.Health/Check against
// ADDR with @grpc/grpc-js (tests/ref's pinned node_modules; no
// grpc_health_probe here). Exit 0 when the answer is SERVING, 1 otherwise.
//   node deploy/images/grpc_health.mjs 127.0.0.1:50051 [SERVICE]
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(path.join(root, "tests", "ref", "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const [addr, service = ""] = process.argv.slice(2);
if (!addr) { process.stderr.write("usage: node deploy/images/grpc_health.mjs HOST:PORT [SERVICE]\n"); process.exit(2); }
const def = protoLoader.loadSync(["grpc/health/v1/health.proto"],
    { keepCase: true, enums: String, defaults: true, includeDirs: [path.join(root, "proto")] });
const pkg = grpc.loadPackageDefinition(def);
const c = new pkg.grpc.health.v1.Health(addr, grpc.credentials.createInsecure());
c.Check({ service }, { deadline: Date.now() + 3000 }, (err, r) => {
    c.close();
    if (err) { process.stderr.write(`grpc_health: ${addr}: ${err.message}\n`); process.exit(1); }
    console.log(`grpc_health: ${addr}: ${r.status}`);
    process.exit(r.status === "SERVING" ? 0 : 1);
});
