#!/bin/sh
# deploy/deps.sh - installs the Debian packages moemesh needs to build and
# test, if any are missing. Idempotent; needs root (or sudo) only when
# something is missing.
set -e
PKGS="gcc make pkg-config libc6-dev ca-certificates libgrpc-dev libprotobuf-c-dev protobuf-c-compiler unicode-data bzip2 clang-format libcjson-dev libhiredis-dev libmicrohttpd-dev redis-server prometheus openssl curl util-linux iproute2 nftables"
# test tooling: python3 (tests/lib/*.py: GGUF comparison, raw-socket attackers)
PKGS="$PKGS python3"
# `deps.sh fuzz` also installs clang and libFuzzer for `make fuzz`
[ "${1:-}" = fuzz ] && PKGS="$PKGS clang libclang-rt-14-dev"
# `deps.sh images` also installs podman, buildah and debootstrap for `make images`
[ "${1:-}" = images ] && PKGS="$PKGS podman buildah runc debootstrap"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Node.js and npm run the test tooling (llama.cpp reference, real clients).
# An installed node is kept; else Debian's (18), and tests/ref/install.sh then
# bootstraps Node 22 from npm, which node-llama-cpp and the openai client need.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "deps: error: need root to install:$missing" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
# prometheus is here for promtool only (the metrics tests): its server must
# not be left listening on :9090 where systemd started it on install
case " $missing " in
*" prometheus "*)
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now prometheus >/dev/null 2>&1 &&
            echo "deps: prometheus installed for promtool; its service is stopped and disabled"
    fi
    ;;
esac
