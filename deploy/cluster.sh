#!/bin/sh
# deploy/cluster.sh - `make run`: the whole cluster on loopback, secure by
# default. Makes the demo model if MODEL is not given, then starts
#   redis-server   its own port, ACL users per role (moectl redis-acl), the
#                  default user off, no persistence
#   router-svc     the placement (user moemesh-router)
#   expert-worker  w1 (zone-a) and w2 (zone-b): mutual TLS, user moemesh-worker;
#                  every expert on both (--min-replicas 2), so either can fail
#   gateway        http://127.0.0.1:PORT, experts where router-svc places them,
#                  API keys from Redis (--tenants redis), mutual TLS to workers
# and prints a demo tenant's API key with a curl and an openai example.
# Ctrl-C (SIGINT) or SIGTERM stops everything it started, by PID: the gateway
# first (it finishes running requests), then the workers, router-svc, Redis.
#
# State (RUN_DIR, default build/run; never tracked): certs/ (a throwaway CA
# and a certificate per service, openssl, EC P-256, 30 days, made again when
# missing or within a day of expiry), redis/ (the ACL file, each user's
# password, mode 0600), api-key (the demo tenant's key, 0600), logs/ (one
# file per service), pids. Everything is reused by the next run.
#
# Env: MODE (cluster; single: deploy/demo.sh, the gateway alone), PORT (8080),
# MODEL, RUN_DIR, REDIS_PORT (default 6390, or a free one), THREADS,
# READY_TIMEOUT (seconds, 180), INSECURE=1 (plaintext gRPC between gateway
# and workers: development only). `sh deploy/cluster.sh stop` stops a cluster
# left running from RUN_DIR (its launcher killed with SIGKILL).
set -u
BUILD=${BUILD:-build}
MODE=${MODE:-cluster}
PORT=${PORT:-8080}
case "$MODE" in
single) exec env LISTEN="127.0.0.1:$PORT" sh "$(dirname "$0")/demo.sh" ;;
cluster) ;;
*) echo "cluster.sh: MODE must be cluster or single, not '$MODE'" >&2; exit 2 ;;
esac
MODEL=${MODEL:-}
RUN_DIR=${RUN_DIR:-$BUILD/run}
THREADS=${THREADS:-$(nproc)}
READY_TIMEOUT=${READY_TIMEOUT:-180}
INSECURE=${INSECURE:-0}
P=moemesh
mkdir -p "$RUN_DIR" && RUN_DIR=$(cd "$RUN_DIR" && pwd) || exit 1
BIN=$(cd "$BUILD" 2>/dev/null && pwd) || { echo "cluster.sh: no $BUILD: run make first" >&2; exit 1; }
LOGS=$RUN_DIR/logs CERTS=$RUN_DIR/certs RDIR=$RUN_DIR/redis PIDFILE=$RUN_DIR/pids
say() { echo "== $*"; }
# (defined again below, once there is something to stop)
die() { echo "cluster.sh: error: $*" >&2; exit 1; }

# ==== Processes: started in their own session (a Ctrl-C in the terminal
# reaches only this script, which stops them in order), recorded by PID =====
STARTED="" # "name:pid ..." in start order
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) [ZX]' "/proc/$1/stat" 2>/dev/null; }
# ours PID: alive and started from this RUN_DIR (its command line names it;
# redis-server rewrites its own, but works in RUN_DIR/redis/data)
ours() {
    alive "$1" && { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$RUN_DIR" ||
        readlink "/proc/$1/cwd" 2>/dev/null | grep -qF "$RUN_DIR"; }
}
spawn() { # name log cmd... -> SPID
    n=$1 log=$2; shift 2
    : >"$log"
    setsid "$@" >>"$log" 2>&1 </dev/null &
    SPID=$!
    STARTED="$STARTED $n:$SPID"
    echo "$n $SPID" >>"$PIDFILE"
}
pid_of() { for e in $STARTED; do [ "${e%%:*}" = "$1" ] && echo "${e#*:}"; done; }
# stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS; reaped
stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while alive "$1" && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
    alive "$1" && { echo "   $1 still running after $2 s: SIGKILL"; kill -KILL "$1" 2>/dev/null; }
    wait "$1" 2>/dev/null
    return 0
}
STOPPING=0
shutdown() { # exit code
    [ $STOPPING = 1 ] && return
    STOPPING=1
    trap '' INT TERM HUP
    [ -n "${MKPID:-}" ] && stop_pid "$MKPID" 5 && rm -f "$MODEL.tmp"
    if [ -n "$STARTED" ]; then
        say "stopping (gateway first: its running requests finish)"
        for n in gateway w1 w2 router-svc redis; do
            p=$(pid_of $n)
            [ -n "$p" ] || continue
            case $n in gateway) t=35 ;; *) t=10 ;; esac
            stop_pid "$p" $t
            echo "   $n ($p) stopped"
        done
    fi
    rm -f "$PIDFILE" "$RUN_DIR/launcher.pid"
    exit "$1"
}
on_signal() { echo; shutdown 0; }
trap on_signal INT TERM HUP

# stop: a cluster whose launcher is gone (its pids file is left)
if [ "${1:-}" = stop ]; then
    [ -f "$PIDFILE" ] || { echo "nothing to stop in $RUN_DIR"; exit 0; }
    while read -r n p; do ours "$p" && STARTED="$STARTED $n:$p"; done <"$PIDFILE"
    L=$(cat "$RUN_DIR/launcher.pid" 2>/dev/null)
    if [ -n "$L" ] && alive "$L" && tr '\0' ' ' <"/proc/$L/cmdline" | grep -q "cluster\.sh"; then
        kill -TERM "$L" && echo "signalled the launcher ($L): it stops the cluster"
        exit 0
    fi
    shutdown 0 # the same order, by the PIDs of the file that are still ours
fi
# a pids file from an earlier run: still running (refuse) or stale (dropped)
if [ -f "$PIDFILE" ]; then
    left=""
    while read -r n p; do ours "$p" && left="$left $n:$p"; done <"$PIDFILE"
    [ -n "$left" ] && die "a cluster from $RUN_DIR is still running ($left): stop it with Ctrl-C in its terminal, or: RUN_DIR=$RUN_DIR sh deploy/cluster.sh stop"
    rm -f "$PIDFILE"
fi
echo $$ >"$RUN_DIR/launcher.pid"
die() { echo "cluster.sh: error: $*" >&2; shutdown 1; }
mkdir -p "$LOGS" "$CERTS" "$RDIR/data"

# ==== The model =============================================================
if [ -z "$MODEL" ]; then
    MODEL=models/demo-mixtral-q8_0.gguf
    if [ ! -f "$MODEL" ]; then
        mkdir -p models
        say "making the demo model $MODEL (random weights, q8_0; the bench preset, ~620 MB)"
        "$BIN/moectl" mkmodel --arch llama --dtype q8_0 --seed 42 --preset bench -o "$MODEL.tmp" >/dev/null &
        MKPID=$!
        wait $MKPID || { rm -f "$MODEL.tmp"; die "moectl mkmodel failed"; }
        MKPID=
        mv "$MODEL.tmp" "$MODEL"
    fi
fi
[ -f "$MODEL" ] || die "no model at $MODEL"
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
NAME=$(basename "$MODEL" .gguf)
say "model $MODEL"
"$BIN/moectl" info "$MODEL" | sed -n '1,9p'

# ==== The cluster, put together as the multi-host tests do (cluster-lib.sh)
# shellcheck source=deploy/cluster-lib.sh
. "$(dirname "$0")/cluster-lib.sh"
CL_BIN=$BIN CL_MODEL=$MODEL CL_CERTS=$CERTS CL_RDIR=$RDIR CL_P=$P CL_DAYS=30 CL_RUN=""
CL_SPAWN=cl_spawn
cl_spawn() { n=$1; shift; spawn "$n" "$LOGS/$n.log" "$@"; }
command -v openssl >/dev/null 2>&1 || die "openssl is missing (make deps)"
if [ "$INSECURE" = 1 ]; then
    echo "WARNING: INSECURE=1: gateway <-> expert-worker gRPC is plaintext, without mutual TLS (development only)" >&2
    CL_TLS=0
else
    say "certificates in $CERTS"
    CL_TLS=1
    cl_certs w1 w2 gateway || die "openssl could not make the certificates in $CERTS"
fi

# ==== Redis: ACL users per role, passwords in files ==========================
command -v redis-server >/dev/null 2>&1 || die "redis-server is missing (make deps)"
say "Redis ACL users in $RDIR (moectl redis-acl; passwords in $RDIR/passwords)"
cl_redis_acl || die "moectl redis-acl failed"
randport() { echo $((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000)); }
RP=""
for port in ${REDIS_PORT:-6390 $(randport) $(randport) $(randport)}; do
    cl_start_redis redis "$port" 127.0.0.1 --logfile "" --protected-mode yes
    i=0
    while alive $SPID && ! grep -q "Ready to accept connections" "$LOGS/redis.log" && [ $i -lt 100 ]; do
        sleep 0.1; i=$((i + 1))
    done
    if alive $SPID && grep -q "Ready to accept connections" "$LOGS/redis.log"; then RP=$port; break; fi
    echo "   redis-server could not use port $port: $(grep -m1 -i 'error\|could not\|in use' "$LOGS/redis.log")"
    stop_pid $SPID 2
    STARTED=$(echo "$STARTED" | sed "s/ redis:$SPID//")
done
[ -n "$RP" ] || { tail -5 "$LOGS/redis.log" >&2; shutdown 1; }
say "redis-server on 127.0.0.1:$RP (pid $SPID; default user off)"
CL_REDIS=127.0.0.1:$RP

# ==== The demo tenant: made once, its key kept; this Redis keeps nothing, so
# later runs add the kept key again (moectl reads it from stdin, never argv)
KEYFILE=$RUN_DIR/api-key
kept=0
[ -s "$KEYFILE" ] && kept=1
KEY=$(cl_tenant_add demo "$KEYFILE" 2>"$RUN_DIR/tenant.err") || die "moectl tenant add demo: $(cat "$RUN_DIR/tenant.err")"
rm -f "$RUN_DIR/tenant.err"
if [ $kept = 1 ]; then say "the demo tenant's key: $KEYFILE (kept from an earlier run)"
else say "made the demo tenant; its key: $KEYFILE (mode 0600)"; fi

# ==== router-svc, two workers in two zones, the gateway =====================
cl_start_router router-svc 127.0.0.1:0
say "router-svc started (pid $SPID)"
for wz in w1:zone-a w2:zone-b; do
    cl_start_worker "${wz%%:*}" "${wz#*:}" 127.0.0.1:0
    say "expert-worker ${wz%%:*} in ${wz#*:} started (pid $SPID)"
done
cl_start_gateway gateway "127.0.0.1:$PORT" --threads "$THREADS"
GPID=$SPID
say "gateway started (pid $GPID); logs in $LOGS/"

# ==== Ready: /readyz, bounded ================================================
BASE=http://127.0.0.1:$PORT
t0=$(date +%s) next=5
while :; do
    for e in $STARTED; do
        alive "${e#*:}" && continue
        echo "cluster.sh: error: ${e%%:*} (pid ${e#*:}) exited; the end of $LOGS/${e%%:*}.log:" >&2
        tail -n 15 "$LOGS/${e%%:*}.log" >&2
        shutdown 1
    done
    code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$BASE/readyz" 2>/dev/null)
    [ "$code" = 200 ] && break
    el=$(($(date +%s) - t0))
    if [ $el -ge "$READY_TIMEOUT" ]; then
        echo "cluster.sh: error: the gateway is not ready after $READY_TIMEOUT s (/readyz: $code)" >&2
        for n in gateway router-svc w1 w2; do echo "-- $LOGS/$n.log" >&2; tail -n 8 "$LOGS/$n.log" >&2; done
        shutdown 1
    fi
    [ $el -ge $next ] && { say "waiting for $BASE/readyz ($el s, answer ${code:-none})"; next=$((next + 5)); }
    sleep 0.2
done
say "ready in $(($(date +%s) - t0)) s: $(tr '\n' ' ' <"$PIDFILE")(pids in $PIDFILE)"
SEC="mutual TLS between the gateway and the workers, Redis ACL users, API keys"
[ "$INSECURE" = 1 ] && SEC="PLAINTEXT gRPC (INSECURE=1), Redis ACL users, API keys"
cat <<MSG

moemesh is serving '$NAME' on $BASE ($SEC).
API key: $KEY
A streamed chat completion:
  curl -N $BASE/v1/chat/completions -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d '{"model": "$NAME", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32, "stream": true}'
With the openai client for Python (pip install openai):
python3 -c 'from openai import OpenAI
client = OpenAI(base_url="$BASE/v1", api_key="$KEY")
stream = client.chat.completions.create(model="$NAME", messages=[{"role": "user", "content": "Hello"}], max_tokens=32, stream=True)
for chunk in stream: print(chunk.choices[0].delta.content or "", end="", flush=True)'
With the openai client for Node.js (npm install openai):
  node --input-type=module -e 'import OpenAI from "openai";
  const client = new OpenAI({ baseURL: "$BASE/v1", apiKey: "$KEY" });
  const stream = await client.chat.completions.create({ model: "$NAME", messages: [{ role: "user", content: "Hello" }], max_tokens: 32, stream: true });
  for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");'
Logs: $LOGS/{gateway,router-svc,w1,w2,redis}.log   State: $RUN_DIR
Ctrl-C stops the cluster.
MSG
[ "$INSECURE" = 1 ] && echo "WARNING: INSECURE=1: plaintext gRPC between the gateway and the workers" >&2
# wait returns on a signal (the trap stops everything) or the gateway's exit
wait "$GPID"
rc=$?
[ $STOPPING = 1 ] && exit 0
echo "cluster.sh: error: the gateway exited ($rc); the end of $LOGS/gateway.log:" >&2
tail -n 15 "$LOGS/gateway.log" >&2
shutdown 1
