#!/bin/sh
# deploy/images.sh - `make images`: builds moemesh/gateway, moemesh/expert-worker,
# moemesh/router-svc and moemesh/moectl (tag TAG, default dev: k8s/overlays/dev)
# with podman from deploy/images/*.Dockerfile, prints their sizes, then
# smoke-runs each with the k8s pod's restrictions (uid 10001, read-only root
# filesystem, no capabilities): --help exits 0; the worker, with a tiny model
# mounted read-only at /models, answers a gRPC health check and its admin
# /healthz; the gateway (experts in process, the same model) answers /healthz.
# Nothing is pulled: the base image is made locally (deploy/images/base.sh) and
# the podman configuration (a private dir, not /etc) has no search registries.
# Needs root (debootstrap, podman's storage). Env: TAG, IMAGES_DIR (default
# $BUILD/images), BUILD (default build), SMOKE=0 (build only), WAIT (seconds, 60).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TAG=${TAG:-dev}
IMAGES_DIR=${IMAGES_DIR:-$BUILD/images}
WAIT=${WAIT:-60}
SERVICES="gateway expert-worker router-svc moectl"
BASE=localhost/moemesh-base:bookworm
BUILDER=localhost/moemesh-build:bookworm

[ "$(id -u)" = 0 ] || { echo "images: error: run as root (debootstrap, podman storage)" >&2; exit 1; }
sh deploy/deps.sh images

# ---- podman configuration, private to this build (never the machine's /etc)
mkdir -p "$IMAGES_DIR"
IMAGES_DIR=$(cd "$IMAGES_DIR" && pwd)
cat >"$IMAGES_DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
# Nothing is ever pulled: every image is made here. No search registries, and
# the registries that /etc/containers/registries.conf.d's short-name aliases
# point at (debian -> docker.io/library/debian: the drop-in directory is still
# read with CONTAINERS_REGISTRIES_CONF set) are blocked.
{
    printf 'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n'
    for r in docker.io quay.io registry.access.redhat.com registry.redhat.io \
        registry.fedoraproject.org registry.opensuse.org registry.suse.com \
        container-registry.oracle.com ghcr.io gcr.io registry.k8s.io public.ecr.aws; do
        printf '\n[[registry]]\nlocation = "%s"\nblocked = true\n' "$r"
    done
} >"$IMAGES_DIR/registries.conf"
export CONTAINERS_CONF="$IMAGES_DIR/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$IMAGES_DIR/registries.conf"

# ---- images
sh deploy/images/base.sh "$BASE"
echo "images: $BUILDER (apt inside, --network host)"
podman build -q --network host --pull=never -t "$BUILDER" -f deploy/images/build.Dockerfile deploy/images >/dev/null
for s in $SERVICES; do
    echo "images: moemesh/$s:$TAG"
    podman build -q --network host --pull=never -t "moemesh/$s:$TAG" -f "deploy/images/$s.Dockerfile" . >"$IMAGES_DIR/build-$s.log" 2>&1 || {
        tail -30 "$IMAGES_DIR/build-$s.log" >&2
        echo "images: error: building moemesh/$s failed (log: $IMAGES_DIR/build-$s.log)" >&2
        exit 1
    }
done
echo "images: sizes"
for img in $BASE $BUILDER; do
    printf '  %-36s %s\n' "$img" "$(podman image inspect --format '{{.Size}}' "$img" | awk '{printf "%.1f MB", $1/1e6}')"
done
for s in $SERVICES; do
    printf '  %-36s %s\n' "moemesh/$s:$TAG" "$(podman image inspect --format '{{.Size}}' "moemesh/$s:$TAG" | awk '{printf "%.1f MB", $1/1e6}')"
done
[ "${SMOKE:-1}" = 0 ] && exit 0

# ---- smoke runs: as k8s runs them (uid 10001, read-only root filesystem with
# no tmpfs but the gateway's /tmp, like its emptyDir; no capabilities)
RUN="podman run --pull=never --read-only --read-only-tmpfs=false --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges"
fail=0
for s in $SERVICES; do
    if $RUN --rm "moemesh/$s:$TAG" --help >/dev/null 2>&1; then
        echo "smoke: moemesh/$s --help: ok"
    else
        echo "smoke: FAIL: moemesh/$s --help exited non-zero"; fail=1
    fi
done

# the model: tiny, random weights, made on the host, mounted read-only
[ -x "$BUILD/moectl" ] || make --no-print-directory "$BUILD/moectl"
mkdir -p "$IMAGES_DIR/model"
[ -f "$IMAGES_DIR/model/model.gguf" ] ||
    "$BUILD/moectl" mkmodel --arch llama --dtype q8_0 --seed 1 -o "$IMAGES_DIR/model/model.gguf" >/dev/null
chmod 0755 "$IMAGES_DIR/model" && chmod 0644 "$IMAGES_DIR/model/model.gguf"
# the gRPC health client: tests/ref's @grpc/grpc-js
[ -d tests/ref/node_modules/@grpc/grpc-js ] || sh tests/ref/install.sh
free_port() {
    node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
started=""
redis_pid=""
stop_all() {
    for c in $started; do podman rm -f -t 5 "$c" >/dev/null 2>&1 || true; done
    started=""
    [ -z "$redis_pid" ] || { kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; }
    redis_pid=""
}
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM
# wait_for NAME CONTAINER CMD...: runs CMD every half second until it succeeds,
# the container exits or WAIT seconds pass
wait_for() {
    what=$1 c=$2
    shift 2
    i=0
    while [ $i -lt $((WAIT * 2)) ]; do
        if "$@" >/dev/null 2>&1; then echo "smoke: $what: ok"; return 0; fi
        [ "$(podman inspect --format '{{.State.Running}}' "$c" 2>/dev/null)" = true ] || break
        sleep 0.5
        i=$((i + 1))
    done
    echo "smoke: FAIL: $what (container $c; its log:)"
    podman logs --tail 20 "$c" 2>&1 | sed 's/^/  | /'
    return 1
}

gp=$(free_port) mp=$(free_port)
c=moemesh-smoke-worker-$$
$RUN -d --name "$c" --network host -v "$IMAGES_DIR/model:/models:ro" \
    -e MOE_LISTEN="127.0.0.1:$gp" -e MOE_METRICS="127.0.0.1:$mp" -e MOE_DRAIN_MS=0 \
    "moemesh/expert-worker:$TAG" >/dev/null
started="$started $c"
wait_for "expert-worker gRPC health (127.0.0.1:$gp)" "$c" node deploy/images/grpc_health.mjs "127.0.0.1:$gp" || fail=1
wait_for "expert-worker admin /healthz (127.0.0.1:$mp)" "$c" curl -fsS -m 3 "http://127.0.0.1:$mp/healthz" || fail=1
stop_all

hp=$(free_port)
c=moemesh-smoke-gateway-$$
$RUN -d --name "$c" --network host -v "$IMAGES_DIR/model:/models:ro" \
    --tmpfs /tmp:size=64m -e MOE_LISTEN="127.0.0.1:$hp" -e MOE_THREADS=1 "moemesh/gateway:$TAG" >/dev/null
started="$started $c"
wait_for "gateway /healthz (127.0.0.1:$hp)" "$c" curl -fsS -m 3 "http://127.0.0.1:$hp/healthz" || fail=1
stop_all

# router-svc against a throwaway redis-server on loopback (no password: only
# this smoke run reaches it); its /healthz
rp=$(free_port) hp=$(free_port)
redis-server --bind 127.0.0.1 --port "$rp" --save '' --appendonly no --dir "$IMAGES_DIR" \
    --logfile "$IMAGES_DIR/redis.log" &
redis_pid=$!
c=moemesh-smoke-router-$$
$RUN -d --name "$c" --network host -e MOE_REDIS="redis://127.0.0.1:$rp" \
    -e MOE_LISTEN="127.0.0.1:$hp" "moemesh/router-svc:$TAG" >/dev/null
started="$started $c"
wait_for "router-svc /healthz (127.0.0.1:$hp, redis 127.0.0.1:$rp)" "$c" curl -fsS -m 3 "http://127.0.0.1:$hp/healthz" || fail=1
stop_all

[ $fail = 0 ] && echo "images: all smoke runs passed" || echo "images: FAIL"
exit $fail
