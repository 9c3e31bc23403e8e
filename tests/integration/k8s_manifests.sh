#!/bin/sh
# shellcheck disable=SC2016  # the single-quoted substitutions are perl's, not the shell's
# k8s_manifests: every k8s/ overlay renders with kustomize (kubectl 1.20 from
# Debian's kubernetes-client, unpacked by tests/k8s/install.sh; never the
# machine's own kubectl) and passes tests/k8s/check.mjs (typed literals under
# tsc --strict against the Kubernetes, KEDA and cert-manager models; policy
# checks). Then copies of k8s/ with one planted error each must fail with the
# expected message. Skips (77) only when the tools cannot be installed.
set -u
BUILD=${BUILD:-build}
root=$(pwd)
for b in gateway expert-worker router-svc; do
    [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b missing: run make first"; exit 1; }
done
sh tests/k8s/install.sh
rc=$?
[ $rc -eq 77 ] && { echo "skip: tests/k8s tools cannot be installed (no network, nothing cached)"; exit 77; }
[ $rc -eq 0 ] || { echo "FAIL: tests/k8s/install.sh exited $rc"; exit 1; }
KUBECTL="$root/tests/k8s/tools/usr/bin/kubectl"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
fail=0

# check K8S_DIR OVERLAY OUT: render and validate; check.mjs's output in OUT
check() {
    if ! "$KUBECTL" kustomize "$1/overlays/$2" >"$TMP/rendered.yaml" 2>"$3"; then
        echo "kustomize failed" >>"$3"
        return 1
    fi
    node tests/k8s/check.mjs --name "$2" --rendered "$TMP/rendered.yaml" --build "$BUILD" >>"$3" 2>&1
}

for o in dev cpu gpu; do
    if check k8s "$o" "$TMP/out"; then
        cat "$TMP/out"
    else
        echo "FAIL: overlay $o:"
        sed 's/^/  | /' "$TMP/out"
        fail=1
    fi
done

# plant OVERLAY FILE PERL-SUBSTITUTION EXPECTED-REGEX DESCRIPTION
# (a fresh copy of k8s/ with FILE edited by perl -0pi -e SUBST; the edit must
# change the file, and check must fail with a line matching EXPECTED)
plant() {
    rm -rf "$TMP/k8s" && cp -r k8s "$TMP/k8s"
    cp "$TMP/k8s/$2" "$TMP/before"
    perl -0pi -e "$3" "$TMP/k8s/$2"
    if cmp -s "$TMP/before" "$TMP/k8s/$2"; then
        echo "FAIL: planted error '$5' did not change $2 (the substitution no longer matches)"
        fail=1
        return
    fi
    if check "$TMP/k8s" "$1" "$TMP/out"; then
        echo "FAIL: planted error '$5' ($1, $2) was not caught:"
        sed 's/^/  | /' "$TMP/out"
        fail=1
    elif grep -Eq -- "$4" "$TMP/out"; then
        echo "ok: caught $5: $(grep -E -- "$4" "$TMP/out" | head -n 1)"
    else
        echo "FAIL: planted error '$5' failed without the expected message /$4/:"
        sed 's/^/  | /' "$TMP/out"
        fail=1
    fi
}

plant dev base/router-svc.yaml 's/^  replicas: 2$/  replcas: 2/m' \
    "Deployment/router-svc: schema: .*'\"replcas\"' does not exist" "a misspelled field (Deployment)"
plant cpu prod/certificates.yaml 's/renewBefore:/renewBfore:/' \
    "Certificate/gateway: schema: .*'\"renewBfore\"' does not exist" "a misspelled field (cert-manager Certificate)"
plant cpu overlays/cpu/scaledobject.yaml 's/cooldownPeriod:/cooldownPeriode:/' \
    "ScaledObject/expert-worker: schema: .*'\"cooldownPeriode\"' does not exist" "a misspelled field (KEDA ScaledObject)"
plant dev base/gateway.yaml 's/failureThreshold: 60/failureThreshold: sixty/' \
    "Deployment/gateway: schema: Type 'string' is not assignable to type 'number'.*failureThreshold" "a wrong type"
plant dev base/router-svc.yaml 's/(  selector:\n    app.kubernetes.io\/name: )router-svc/${1}router/' \
    "Service/router-svc: selector .* matches no pod template" "a Service selector matching no pods"
plant dev base/expert-worker.yaml 's/(kind: PodDisruptionBudget.*?app.kubernetes.io\/name: )expert-worker/${1}expert-wrker/s' \
    "PodDisruptionBudget/expert-worker: selector .* matches no pod template" "a PodDisruptionBudget selector matching no pods"
plant dev base/gateway.yaml 's/(    matchLabels:\n      app.kubernetes.io\/name: )gateway/${1}gw/' \
    "Deployment/gateway: spec.selector.matchLabels .* does not match the pod template" "a Deployment selector not matching its pods"
plant dev overlays/dev/scaledobject.yaml 's/(scaleTargetRef:\n    name: )expert-worker/${1}expert-workers/' \
    "ScaledObject/expert-worker: scaleTargetRef Deployment/expert-workers is no object" "a scaler on a missing target"
plant dev overlays/dev/scaledobject.yaml 's/\z/---\napiVersion: autoscaling\/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: expert-worker-cpu\nspec:\n  scaleTargetRef:\n    apiVersion: apps\/v1\n    kind: Deployment\n    name: expert-worker\n  maxReplicas: 4\n/' \
    "scaleTargetRef Deployment/expert-worker already has a scaler" "two scalers on one target"
plant dev base/gateway.yaml 's/(path: \/readyz\n\s+port: )http/${1}api/' \
    "Deployment/gateway: container gateway: readinessProbe names port \"api\", which the container does not declare" "a probe on an unnamed port"
plant dev base/router-svc.yaml 's/(    - name: http\n      port: 9400\n      targetPort: )http/${1}metrics/' \
    "Service/router-svc: port http: targetPort \"metrics\" is no port" "a Service on an unnamed port"
plant dev base/gateway.yaml 's/MOE_DRAIN_TIMEOUT/MOE_DRAIN_TIMEOUT_S/' \
    "container gateway: env MOE_DRAIN_TIMEOUT_S is no flag's twin in moemesh/gateway --help" "an unknown flag (env twin)"
plant dev base/router-svc.yaml 's/(          image: moemesh\/router-svc\n)/${1}          args: ["--min-replica", "2"]\n/' \
    "container router-svc: argument --min-replica is no flag in moemesh/router-svc --help" "an unknown flag (argument)"
plant dev base/expert-worker.yaml 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' \
    "container expert-worker: readOnlyRootFilesystem is not true" "a writable root filesystem"
plant cpu prod/tls.yaml 's/(          startupProbe:\n)            grpc: null\n/$1/' \
    "container expert-worker: startupProbe has 2 handlers \(httpGet, grpc\)" "a probe with two handlers (patch without grpc: null)"
plant cpu overlays/cpu/scaledobject.yaml 's/threshold: "1"/treshold: "1"/' \
    "ScaledObject/expert-worker: trigger prometheus: metadata.treshold is no key of this scaler" "a misspelled KEDA trigger key"
plant cpu overlays/cpu/scaledobject.yaml 's/moemesh_router_workers_wanted/moemesh_router_worker_wanted/g' \
    "trigger prometheus: query names moemesh_router_worker_wanted, which no moemesh binary exports" "a Prometheus trigger on a metric nothing exports"
plant dev overlays/dev/scaledobject.yaml 's/router-svc.moemesh-dev.svc:9400/router.moemesh-dev.svc:9400/' \
    "trigger metrics-api: url host router.moemesh-dev.svc names no Service" "a metrics-api trigger on a missing Service"
plant dev overlays/dev/scaledobject.yaml 's/svc:9400\/v1\/scale/svc:9401\/v1\/scale/' \
    "trigger metrics-api: url port 9401 is no port of Service router-svc" "a metrics-api trigger on a wrong port"
plant dev overlays/dev/scaledobject.yaml 's/9400\/v1\/scale/9400\/v1\/scales/' \
    "trigger metrics-api: url path /v1/scales is no route in router-svc --help" "a metrics-api trigger on a missing route"
plant dev overlays/dev/scaledobject.yaml 's/valueLocation: workers_wanted/valueLocation: worker_wanted/' \
    "trigger metrics-api: valueLocation worker_wanted is no field router-svc writes" "a metrics-api trigger reading a missing field"
plant dev overlays/dev/scaledobject.yaml 's/targetValue: "1"/targetValue: "one"/' \
    "trigger metrics-api: metadata.targetValue \"one\" is not a decimal number" "a KEDA trigger threshold that is no number"

[ $fail -eq 0 ] || { echo "FAIL"; exit 1; }
echo "all overlays pass; every planted error caught"
