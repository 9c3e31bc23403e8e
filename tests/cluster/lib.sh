# tests/cluster/lib.sh - the multi-host harness (sourced): every service on
# its own "host", a network namespace with one veth into a bridge that lives
# in a namespace of its own. Nothing is ever addressed from the root
# namespace: every command that talks to a test host runs through
# `ip netns exec`, and a blackhole route for the test subnet in the root
# namespace (added first, removed last) keeps a stray packet from leaving the
# machine through the default route (docs: stack-notes.md, "Kubernetes,
# containers, multi-host tests").
#
#   . tests/cluster/lib.sh
#   mh_require                 exit 77 (with the reason) unless root with ip netns
#   mh_up                      subnet, blackhole route, bridge, the hosts below
#   mh_certs                   a CA and certificates for w1, w2, gateway
#   mh_start_redis / mh_start_router NAME / mh_start_worker NAME ZONE / mh_start_gateway
#                              the services as `make run` starts them (the
#                              recipe is deploy/cluster-lib.sh's), each on its host
#   mh_in HOST CMD...          runs CMD in HOST's namespace
#   mh_cleanup                 kills what was started here (by PID), deletes the
#                              namespaces (their veths and the bridge go with them)
#                              and the blackhole route; idempotent, run on EXIT INT TERM
#
# Hosts and addresses (SUBNET=10.213.N.0/24, the first N in 70..89 whose
# blackhole route could be added: the route is also the lock against a
# concurrent run): redis .10, router-a .11, router-b .12, w1 .21 (zone-a),
# w2 .22 (zone-b), gateway .30, client .40. Namespaces are named mh<pid>-HOST.
# Needs BUILD (default build), MODEL (a GGUF file); sets TMP, PIDS, fail,
# PID_router_a, PID_router_b, PID_w1, PID_w2, PID_gateway, REDIS_PID.
# shellcheck disable=SC2015,SC2034,SC2317 # (A && B || C; set for the caller; run by wait_for)
BUILD=${BUILD:-build}
BIN=$(cd "$BUILD" 2>/dev/null && pwd)
MH_TAG=mh$$
MH_HOSTS="redis router-a router-b w1 w2 gateway client"
MH_NETS=""      # namespaces made here
MH_ROUTE=""     # the blackhole route added here
MH_NET=""       # 10.213.N
PIDS=""
fail=0
TMP=$(mktemp -d)
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
note() { echo "note: $*"; }

mh_require() {
    [ "$(id -u)" = 0 ] || { echo "skip: multi-host tests need root (network namespaces)"; exit 77; }
    command -v ip >/dev/null 2>&1 || { echo "skip: no ip (iproute2)"; exit 77; }
    ip netns add "${MH_TAG}-probe" 2>/dev/null || { echo "skip: ip netns add fails here (no network namespaces)"; exit 77; }
    ip netns del "${MH_TAG}-probe"
    command -v redis-server >/dev/null 2>&1 || { echo "skip: redis-server not installed (make deps)"; exit 77; }
    [ -x "$BIN/gateway" ] && [ -x "$BIN/expert-worker" ] && [ -x "$BIN/router-svc" ] ||
        { echo "skip: build the services first (make)"; exit 77; }
}

ns() { echo "${MH_TAG}-$1"; }
mh_in() { h=$1; shift; ip netns exec "$(ns "$h")" "$@"; }
addr() {
    case $1 in
    redis) echo "$MH_NET.10" ;; router-a) echo "$MH_NET.11" ;; router-b) echo "$MH_NET.12" ;;
    w1) echo "$MH_NET.21" ;; w2) echo "$MH_NET.22" ;; gateway) echo "$MH_NET.30" ;; client) echo "$MH_NET.40" ;;
    esac
}

# bounded: a process started here, SIGTERM then SIGKILL after 3 s
mh_kill() {
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}
MH_CLEANED=0
mh_cleanup() {
    [ $MH_CLEANED = 1 ] && return
    MH_CLEANED=1
    trap '' INT TERM
    for p in $PIDS; do kill -KILL "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    for n in $MH_NETS; do ip netns del "$n" 2>/dev/null; done
    [ -n "$MH_ROUTE" ] && ip route del blackhole "$MH_ROUTE" 2>/dev/null
    left=$(ip netns list 2>/dev/null | grep -c "^${MH_TAG}-")
    [ "$left" = 0 ] || echo "FAIL: $left namespaces of this run left: $(ip netns list | grep "^${MH_TAG}-" | tr '\n' ' ')"
    if [ "${KEEP_TMP:-0}" = 1 ]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
mh_trap() {
    trap 'mh_cleanup' EXIT
    trap 'mh_cleanup; exit 130' INT
    trap 'mh_cleanup; exit 143' TERM
}

mh_up() {
    for n in $(seq 70 89); do
        ip route show | grep -q "^\(blackhole \)\?10\.213\.$n\." && continue
        if ip route add blackhole "10.213.$n.0/24" 2>/dev/null; then
            MH_ROUTE="10.213.$n.0/24"; MH_NET="10.213.$n"; break
        fi
    done
    [ -n "$MH_ROUTE" ] || { echo "FAIL: no free 10.213.70-89.0/24 subnet for the test"; exit 1; }
    br=$(ns bridge)
    ip netns add "$br" || exit 1
    MH_NETS="$br"
    ip -n "$br" link add br0 type bridge && ip -n "$br" link set br0 up || exit 1
    for h in $MH_HOSTS; do
        n=$(ns "$h")
        ip netns add "$n" || exit 1
        MH_NETS="$MH_NETS $n"
        ip -n "$n" link set lo up
        # created straight in the two namespaces: nothing appears in the root one
        ip link add eth0 netns "$n" type veth peer name "v-$h" netns "$br" || exit 1
        ip -n "$br" link set "v-$h" master br0 up
        ip -n "$n" addr add "$(addr "$h")/24" dev eth0
        ip -n "$n" link set eth0 up
    done
    echo "hosts up: $MH_HOSTS in $MH_ROUTE (bridge $br; blackhole route $MH_ROUTE in the root namespace)"
}

# ==== The cluster's recipe: deploy/cluster-lib.sh, as `make run` uses it ====
# shellcheck source=deploy/cluster-lib.sh
. deploy/cluster-lib.sh # (tests run from the repository root)
MH_TLS=${MH_TLS:-1}
P=mh
CL_BIN=$BIN CL_CERTS=$TMP/certs CL_RDIR=$TMP/redis CL_P=$P CL_TLS=$MH_TLS CL_DAYS=1
CL_SPAWN=mh_spawn CL_RUN="mh_in redis"
# mh_spawn NAME CMD...: a service on the host of the same name (-> PID)
mh_spawn() { h=$1; shift; start "$h" "$h" "$@"; }
mh_certs() {
    [ "$MH_TLS" = 1 ] || return 0
    cl_certs w1 w2 gateway >/dev/null
}

# wait_for SECONDS CMD...: until CMD succeeds (every 0.2 s); 0 or 1
wait_for() {
    n=$(($1 * 5)); shift
    i=0
    while [ $i -lt $n ]; do "$@" && return 0; sleep 0.2; i=$((i + 1)); done
    return 1
}
# start HOST LOGNAME CMD...: in HOST's namespace, in the background -> PID
start() {
    h=$1 log=$2; shift 2
    ip netns exec "$(ns "$h")" "$@" >"$TMP/$log.log" 2>&1 </dev/null &
    PID=$!
    PIDS="$PIDS $PID"
}

# ==== Services ==============================================================
# As in production (deploy/cluster-lib.sh): Redis with an ACL user per role
# and the default user off; each service logs in as its role with a password
# file. The harness reads with a user of its own that may only read the
# deployment's keys ($P-test).
RC() { mh_in redis env REDISCLI_AUTH="$TESTPW" redis-cli --no-auth-warning --user "$P-test" -h "$(addr redis)" "$@"; }
mh_start_redis() {
    CL_MODEL=$MODEL CL_REDIS=$(addr redis):6379
    cl_redis_acl 2>"$TMP/acl.err" || { bad "moectl redis-acl: $(cat "$TMP/acl.err")"; return 1; }
    TESTPW=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    echo "user $P-test on >$TESTPW resetkeys ~$P:* -@all +@read +ping" >>"$CL_RDIR/users.acl"
    cl_start_redis redis 6379 "$(addr redis)" --protected-mode no
    REDIS_PID=$PID
    pong() { RC ping 2>/dev/null | grep -q PONG; }
    wait_for 10 pong || { bad "redis did not start: $(tail -3 "$TMP/redis.log")"; return 1; }
}
# LEASE_MS (workers, default 1500), DEADLINE_MS (gateway, default 10000: its own default)
mh_start_router() {
    cl_start_router "$1" "$(addr "$1"):9100" --id "$1"
    case $1 in router-a) PID_router_a=$PID ;; router-b) PID_router_b=$PID ;; esac
}
mh_start_worker() {
    cl_start_worker "$1" "$2" "$(addr "$1"):7000" --advertise "$(addr "$1"):7000" \
        --lease-ms "${LEASE_MS:-1500}" --grace-ms 2000 --metrics "$(addr "$1"):9101"
    case $1 in w1) PID_w1=$PID ;; w2) PID_w2=$PID ;; esac
}
mh_start_gateway() {
    # its API on the namespace's every address (port 8080): the clients run in
    # the client namespace (curl) and in the gateway's own (bench-gwload
    # accepts only a loopback address); a tenant made here, its key in
    # $MH_KEY for the clients
    MH_KEY=$(cl_tenant_add load 2>"$TMP/tenant.err") || { bad "moectl tenant add: $(cat "$TMP/tenant.err")"; return 1; }
    export MH_KEY
    cl_start_gateway gateway 0.0.0.0:8080 --served-model-name m --deadline-ms "${DEADLINE_MS:-10000}" --threads 2
    PID_gateway=$PID
}
active_epoch() { RC get "$P:placement:active" 2>/dev/null; }
doc() { RC get "$P:placement:$(active_epoch)" 2>/dev/null; }
# placement_both: the active placement names w1 and w2, every expert on both
placement_both() {
    d=$(doc)
    case "$d" in *'"w1"'*'"w2"'* | *'"w2"'*'"w1"'*) ;; *) return 1 ;; esac
    echo "$d" | node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); process.exit(d.experts.length && d.experts.every(x => x[2].length == 2) ? 0 : 1)' 2>/dev/null
}
# gw_metric NAME: the gateway's value of a metric without labels (empty: none)
gw_metric() { mh_in client curl -s -m 2 "http://$(addr gateway):8080/metrics" 2>/dev/null | sed -n "s/^$1 //p" | head -1; }
gw_ready() { [ "$(mh_in client curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$(addr gateway):8080/readyz")" = 200 ]; }
leader() { RC get "$P:leader" 2>/dev/null; }
has_leader() { [ -n "$(leader)" ]; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# mh_cluster: redis, two router-svc replicas (router-a first: it leads), w1
# and w2, the gateway; waits until every expert is on both workers and the
# gateway is ready (bounded)
mh_cluster() {
    mh_certs || { bad "openssl could not make the certificates"; return 1; }
    mh_start_redis || return 1
    mh_start_router router-a
    wait_for 10 has_leader ||
        { bad "router-a does not lead: $(tail -3 "$TMP/router-a.log")"; return 1; }
    mh_start_router router-b
    mh_start_worker w1 zone-a
    mh_start_worker w2 zone-b
    wait_for 30 placement_both || { bad "no placement with every expert on w1 and w2: $(tail -3 "$TMP/router-a.log")"; return 1; }
    mh_start_gateway
    wait_for 60 gw_ready || { bad "gateway not ready: $(tail -5 "$TMP/gateway.log")"; return 1; }
    ok "cluster up: redis, router-a (leader: $(leader)), router-b, w1 (zone-a), w2 (zone-b), gateway; placement epoch $(active_epoch), every expert on both workers; $( [ "$MH_TLS" = 1 ] && echo "mutual TLS" || echo "PLAINTEXT gRPC") between gateway and workers, Redis ACL users, API keys"
}
# from the start: a skip or an early failure removes TMP too
mh_trap
