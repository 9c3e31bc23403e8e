#!/bin/sh
# images_static: deploy/images/*.Dockerfile agree with k8s/base and the tree,
# without building anything (make images builds and smoke-runs them; too slow
# and root-only for make test). For gateway, expert-worker and router-svc:
# every FROM is a local image (nothing pulled); the build stage is the same text
# in every Dockerfile (one compile through the layer cache) and copies only
# paths that exist; the final stage copies the service's own build output,
# runs as the uid:gid k8s/base names (runAsUser/runAsGroup), EXPOSEs exactly
# the container ports k8s/base declares, sets MOE_MODEL to k8s's value and
# has the binary as ENTRYPOINT. Then planted errors in copies must be caught.
set -u
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
fail=0

# build_stage FILE: the lines from the first FROM up to the second FROM
build_stage() { awk '/^FROM /{n++} n==1' "$1"; }

# check_one DOCKERFILE K8S_YAML SERVICE: prints each problem, returns 1 if any
check_one() {
    df=$1 yaml=$2 s=$3 bad=0
    [ -f "$df" ] || { echo "$df: missing"; return 1; }
    # shellcheck disable=SC2013  # FROM names have no spaces
    for f in $(awk '/^FROM /{print $2}' "$df"); do
        case $f in localhost/*) ;; *) echo "$df: FROM $f is not a local image"; bad=1 ;; esac
    done
    [ "$(grep -c '^FROM ' "$df")" = 2 ] || { echo "$df: not two stages"; bad=1; }
    build_stage deploy/images/gateway.Dockerfile >"$TMP/ref"
    build_stage "$df" | cmp -s - "$TMP/ref" || { echo "$df: build stage differs from gateway.Dockerfile's"; bad=1; }
    for p in $(build_stage "$df" | awk '/^COPY /{for (i = 2; i < NF; i++) print $i}'); do
        [ -e "$p" ] || { echo "$df: COPY $p: no such path"; bad=1; }
    done
    build_stage "$df" | grep -q "^RUN make .*build/$s\( \|\$\)" || { echo "$df: the build stage does not make build/$s"; bad=1; }
    grep -q "^COPY --from=build /src/build/$s /usr/local/bin/$s\$" "$df" || { echo "$df: no COPY of build/$s"; bad=1; }
    uid=$(awk '/runAsUser:/{print $2; exit}' "$yaml") gid=$(awk '/runAsGroup:/{print $2; exit}' "$yaml")
    grep -q "^USER $uid:$gid\$" "$df" || { echo "$df: USER is not $uid:$gid (k8s runAsUser:runAsGroup)"; bad=1; }
    grep -q "useradd -u $uid -g $gid " "$df" || { echo "$df: no user with uid $uid"; bad=1; }
    want=$(awk '/containerPort:/{print $2}' "$yaml" | sort -n | tr '\n' ' ')
    got=$(awk '/^EXPOSE /{for (i = 2; i <= NF; i++) print $i}' "$df" | sort -n | tr '\n' ' ')
    [ "$want" = "$got" ] || { echo "$df: EXPOSE [$got] but k8s containerPort [$want]"; bad=1; }
    model=$(awk '/name: MOE_MODEL$/{getline; print $2; exit}' "$yaml")
    if [ -n "$model" ]; then
        grep -q "^ENV .*MOE_MODEL=$model\( \|\$\)" "$df" || { echo "$df: MOE_MODEL is not $model (k8s)"; bad=1; }
    fi
    grep -q "^ENTRYPOINT \[\"/usr/local/bin/$s\"\]\$" "$df" || { echo "$df: ENTRYPOINT is not /usr/local/bin/$s"; bad=1; }
    return $bad
}

for s in gateway expert-worker router-svc; do
    if check_one "deploy/images/$s.Dockerfile" "k8s/base/$s.yaml" "$s" >"$TMP/out"; then
        echo "ok: deploy/images/$s.Dockerfile"
    else
        echo "FAIL:"; sed 's/^/  | /' "$TMP/out"; fail=1
    fi
done
[ -f deploy/images/moectl.Dockerfile ] && { build_stage deploy/images/moectl.Dockerfile | cmp -s - "$TMP/ref" ||
    { echo "FAIL: moectl.Dockerfile's build stage differs"; fail=1; }; }

# planted errors: each copy must fail with the expected message
plant() { # NAME SERVICE SED EXPECTED
    cp "deploy/images/$2.Dockerfile" "$TMP/p.Dockerfile"
    sed -i "$3" "$TMP/p.Dockerfile"
    if check_one "$TMP/p.Dockerfile" "k8s/base/$2.yaml" "$2" >"$TMP/out"; then
        echo "FAIL: planted $1 not caught"; fail=1
    elif grep -q "$4" "$TMP/out"; then
        echo "ok: planted $1 caught"
    else
        echo "FAIL: planted $1: wrong message:"; sed 's/^/  | /' "$TMP/out"; fail=1
    fi
}
plant port expert-worker 's/^EXPOSE .*/EXPOSE 50051/' "EXPOSE"
plant uid gateway 's/^USER .*/USER 1000:1000/' "USER is not"
plant pull router-svc 's/^FROM localhost\/moemesh-base:bookworm$/FROM debian:bookworm/' "not a local image"
plant copy gateway 's/^COPY tools tools\//COPY toolz toolz\//' "no such path"
plant model gateway 's/MOE_MODEL=[^ ]*/MOE_MODEL=\/model.gguf/' "MOE_MODEL"
exit $fail
