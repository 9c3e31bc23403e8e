#!/bin/sh
# tests/k8s/install.sh — installs what tests/k8s renders and validates with:
#   - node_modules: kubernetes-models, @kubernetes-models/keda,
#     @kubernetes-models/cert-manager, typescript, yaml, pinned by
#     package-lock.json (`npm ci`);
#   - tools/kubectl: kubectl 1.20 (its built-in kustomize v2.0.3) from Debian
#     12's kubernetes-client package, fetched with `apt-get download` and
#     unpacked here (nothing installed system-wide; the machine's own
#     /usr/bin/kubectl is never used).
# Idempotent: a stamp holds the sha256 of package.json + package-lock.json.
# Exit 0: ready; 77: cannot install (no network, nothing cached); 1: error.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
cd "$here"

skip() {
    echo "tests/k8s/install.sh: cannot install: $*" >&2
    exit 77
}
die() {
    echo "tests/k8s/install.sh: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || skip "node not found (deploy/deps.sh installs Node.js and npm)"
command -v npm >/dev/null 2>&1 || skip "npm not found (deploy/deps.sh installs Node.js and npm)"

# ---- node_modules from the lockfile ----
want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
stamp=node_modules/.moemesh-k8s-install.sha256
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
    [ -f node_modules/typescript/bin/tsc ] && [ -d node_modules/kubernetes-models ]; then
    :
else
    echo "tests/k8s: npm ci (npm $(npm --version), node $(node --version)) ..."
    npm ci --prefer-offline --no-audit --no-fund --ignore-scripts >npm-ci.log 2>&1 || {
        tail -n 5 npm-ci.log >&2
        grep -q -E "ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|network" npm-ci.log &&
            skip "npm ci could not reach the registry (see tests/k8s/npm-ci.log)"
        die "npm ci failed (tests/k8s/npm-ci.log)"
    }
    rm -f npm-ci.log
    printf '%s\n' "$want" >"$stamp"
fi

# ---- kubectl 1.20 (kustomize v2.0.3) from Debian's kubernetes-client ----
kubectl=tools/usr/bin/kubectl
if ! [ -x "$kubectl" ] || ! "$kubectl" version --client 2>/dev/null | grep -q 'GitVersion:"v1\.20\.'; then
    command -v apt-get >/dev/null 2>&1 || skip "no apt-get to fetch Debian's kubernetes-client"
    rm -rf tools dl && mkdir -p dl
    # apt-get download runs as the _apt user when root: let it write here
    chmod 777 dl 2>/dev/null || true
    (cd dl && apt-get download kubernetes-client >apt.log 2>&1) || {
        tail -n 3 dl/apt.log >&2
        skip "apt-get download kubernetes-client failed (no network or no apt lists: apt-get update)"
    }
    deb=""
    for f in dl/kubernetes-client_*.deb; do [ -f "$f" ] && deb=$f; done
    [ -n "$deb" ] || skip "apt-get download left no kubernetes-client .deb"
    mkdir -p tools || die "cannot make tests/k8s/tools"
    dpkg-deb -x "$deb" tools || die "cannot unpack $deb"
    rm -rf dl
    [ -x "$kubectl" ] || die "$kubectl missing after unpacking $deb"
    "$kubectl" version --client 2>/dev/null | grep -q 'GitVersion:"v1\.20\.' ||
        die "$kubectl is not kubectl 1.20 (k8s/ keeps to its kustomize v2.0.3): $("$kubectl" version --client 2>&1 | head -n 1)"
fi
echo "tests/k8s: ready (kubectl $("$kubectl" version --client -o json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).clientVersion.gitVersion))'), kubernetes-models $(node -p 'require("./node_modules/kubernetes-models/package.json").version'))"
