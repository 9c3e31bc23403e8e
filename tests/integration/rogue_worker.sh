#!/bin/sh
# A rogue worker through Redis (issue 14): real redis-server with the ACL
# users of `moectl redis-acl` (default user off), real router-svc and two real
# expert-workers on loopback, each with its role's password file; fake leases
# written with the worker role's password through redis-cli.
#   - the ACL: password files 0600, only their SHA-256 in the ACL; every
#     command each role sends is allowed (ACL DRYRUN), writes outside its
#     role refused; the services run a whole test with no NOPERM;
#   - (a) the worker role cannot SADD P:drain (NOPERM): the real worker keeps
#     its experts;
#   - (c) leases that fail a check (a bad field, addr, no TTL, lease_ms,
#     started_ms in the future, an epoch never issued, another shape, experts
#     held at epoch 0) never get experts, and each is logged once and counted
#     by reason in moemesh_router_leases_rejected_total;
#   - (b) the finding: the last real workers drained (by the admin role, the
#     only one that can now) move every expert to a fake lease that
#     acknowledges; when the fake stops, router-svc places every expert on
#     the real workers again within lease TTL + a round (it stayed blocked:
#     the drained workers were the only ones left);
#   - a fake that acknowledges in P:ack:<e> without its lease showing epoch
#     e is never counted: the round is abandoned after --ack-timeout-ms and
#     the next one completes without it, within ack timeout + a round.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
. tests/lib/redis.sh
trap '[ -n "${KEEP:-}" ] && cp "$TMP/r.err" "$KEEP"; procs_cleanup; redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT

P=rogue$$
PW=$TMP/pw
LEASE_MS=1500   # the workers' and the fakes' lease
ACK_MS=3000     # router-svc --ack-timeout-ms
ROUND_MS=5000   # a round: compute, the workers load a few experts, acknowledge, activate

# ==== The ACL users ==========================================================
"$BUILD/moectl" redis-acl --prefix $P --aclfile --password-dir "$PW" >"$TMP/users.acl" 2>"$TMP/acl.err" ||
    { echo "FAIL: moectl redis-acl: $(cat "$TMP/acl.err")"; exit 1; }
"$BUILD/moectl" redis-acl --prefix $P --aclfile --password-dir "$PW" >"$TMP/again.acl" 2>/dev/null
cmp -s "$TMP/users.acl" "$TMP/again.acl" && ok "moectl redis-acl again: the same passwords (read back, not made anew)" ||
    bad "moectl redis-acl twice: different output"
for role in router worker gateway admin; do
    f="$PW/$P-$role"
    pw=$(head -1 "$f" 2>/dev/null)
    h=$(printf %s "$pw" | sha256sum | cut -d' ' -f1)
    if [ "$(stat -c %a "$f" 2>/dev/null)" = 600 ] && echo "$pw" | grep -Eq '^[0-9a-f]{64}$' &&
        grep -q "^user $P-$role reset on #$h resetkeys resetchannels -@all " "$TMP/users.acl" &&
        ! grep -q "$pw" "$TMP/users.acl"; then
        ok "$P-$role: password file mode 600, 64 hex digits; the ACL holds its SHA-256 only"
    else
        bad "$P-$role: $(stat -c %a "$f" 2>/dev/null) '$(echo "$pw" | head -c 8)...' $(grep "$P-$role" "$TMP/users.acl" | head -c 120)"
    fi
done
ROOTPW=root-$$-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "user root on >$ROOTPW ~* &* +@all" >>"$TMP/users.acl"
REDIS_ARGS="--aclfile $TMP/users.acl" redis_start || { echo "skip: no redis-server"; exit 77; }
HP=127.0.0.1:$REDIS_PORT
as() { # ROLE redis-cli args...: as that role's user (root: the test's own)
    role=$1; shift
    if [ "$role" = root ]; then
        REDISCLI_AUTH=$ROOTPW redis-cli --no-auth-warning -p "$REDIS_PORT" --user root "$@"
    else
        REDISCLI_AUTH=$(cat "$PW/$P-$role") redis-cli --no-auth-warning -p "$REDIS_PORT" --user "$P-$role" "$@"
    fi
}
[ "$(redis-cli -p "$REDIS_PORT" get $P:placement:active 2>&1 | grep -c NOAUTH)" = 1 ] &&
    ok "the default user is off (NOAUTH)" || bad "the default user answers"

# every command each role's code sends is allowed; writes outside its role are not
set -f # "keys *" is a command, not a glob
n_ok=0 n_no=0
may() { r=$(as root acl dryrun "$P-$@" 2>&1); [ "$r" = OK ] && n_ok=$((n_ok + 1)) || bad "$P-$*: refused: $r"; }
mayn() { r=$(as root acl dryrun "$P-$@" 2>&1); [ "$r" != OK ] && n_no=$((n_no + 1)) || bad "$P-$*: allowed"; }
for c in "set $P:leader r NX PX 5000" "eval x 1 $P:leader" "zrange $P:workers 0 -1" "zrem $P:workers w" \
    "hgetall $P:worker:w" "pttl $P:worker:w" "smembers $P:drain" "srem $P:drain w" "hgetall $P:load:1" \
    "get $P:placement:active" "set $P:placement:7 x" "del $P:placement:pending" "expire $P:placement:7 3600" \
    "del $P:ack:7" "smembers $P:ack:7" "set $P:scale:workers_wanted 3" "publish $P:events x"; do
    may router $c
done
for c in "multi" "exec" "hset $P:worker:w addr a" "pexpire $P:worker:w 1500" "del $P:worker:w" \
    "zadd $P:workers 1 w" "zrem $P:workers w" "get $P:placement:7" "sismember $P:drain w" \
    "sadd $P:ack:7 w" "expire $P:ack:7 3600" "subscribe $P:events"; do
    may worker $c
done
for c in "get $P:placement:active" "hincrby $P:load:1 0:1 5" "expire $P:load:1 600" "subscribe $P:events"; do
    may gateway $c
done
for c in "sadd $P:drain w" "srem $P:drain w" "smembers $P:drain" "hgetall $P:worker:w" "get $P:placement:7" \
    "zrange $P:workers 0 -1" "pttl $P:worker:w" "ping"; do
    may admin $c
done
for c in "sadd $P:drain w" "srem $P:drain w" "del $P:drain" "set $P:placement:active 9" "set $P:placement:9 x" \
    "del $P:placement:active" "set $P:leader x" "pexpire $P:leader 1" "set $P:scale:workers_wanted 99" \
    "hincrby $P:load:1 0:1 5" "publish $P:events x" "hset other:worker:w a b" "keys *" "flushall" \
    "config set appendonly yes" "del $P:ack:7"; do
    mayn worker $c
done
for c in "set $P:placement:active 9" "hset $P:worker:w a b" "sadd $P:ack:1 w" "sadd $P:drain w" \
    "publish $P:events x" "del $P:load:1"; do
    mayn gateway $c
done
for c in "hset $P:worker:w a b" "sadd $P:drain w" "sadd $P:ack:1 w" "hincrby $P:load:1 0:1 5" \
    "get other:placement:active" "flushall"; do
    mayn router $c
done
for c in "set $P:placement:active 9" "hset $P:worker:w a b" "del $P:leader" "sadd $P:ack:1 w" "flushall"; do
    mayn admin $c
done
set +f
ok "ACL DRYRUN: $n_ok commands the roles send allowed, $n_no others refused"

# ==== The deployment: two real workers, router-svc ===========================
M="$TMP/m.gguf"
"$BUILD/moectl" mkmodel --arch llama --dtype f32 --seed 7 --n-embd 64 --n-layer 3 --n-ff 128 \
    --n-expert 8 -o "$M" >/dev/null || { echo "FAIL: mkmodel"; exit 1; }
wk() { # ID: a real worker, with the worker role's password file
    "$BUILD/expert-worker" --model "$M" --listen 127.0.0.1:0 --redis "redis://$P-worker@$HP" \
        --redis-password-file "$PW/$P-worker" --prefix $P --worker-id "$1" --failure-domain "$1" \
        --capacity 64M --lease-ms $LEASE_MS --grace-ms 1000 --drain-ms 5000 >"$TMP/$1.out" 2>"$TMP/$1.err" &
    PIDS="$PIDS $!"
}
wk w1
W1=$!
wk w2
"$BUILD/router-svc" --redis "redis://$P-router@$HP" --redis-password-file "$PW/$P-router" --prefix $P \
    --listen 127.0.0.1:0 --settle-ms 300 --rebalance-ms 1000 --ack-timeout-ms $ACK_MS --id r1 \
    >"$TMP/r.out" 2>"$TMP/r.err" &
RPID=$!; PIDS="$PIDS $RPID"
wait_log "$TMP/r.out" "listening on" || bad "router-svc did not start: $(tail -3 "$TMP/r.err")"
RPORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/r.out" | head -1)
metric() { curl -s -m 5 "http://127.0.0.1:$RPORT/metrics" | sed -n "s/^$1 //p"; }

active() { as admin get $P:placement:active; }
# the workers of the active placement (or of epoch $1), sorted, comma-separated
doc_workers() {
    e=${1:-$(active)}
    [ -n "$e" ] || return 0
    as admin get "$P:placement:$e" | node -e 'let d; try { d = JSON.parse(require("fs").readFileSync(0, "utf8")); } catch (e) { process.exit(0); }
        console.log(Object.keys(d.workers).sort().join(",") + (d.experts.length == 24 && d.experts.every(x => x[2].length) ? "" : " (not every expert placed)"))'
}
# wait_workers SECONDS WANT: until the active placement names exactly WANT; sets SECS (ms)
wait_workers() {
    t0=$(date +%s%3N) i=0
    while [ $i -lt $(($1 * 10)) ]; do
        [ "$(doc_workers)" = "$2" ] && { SECS=$(($(date +%s%3N) - t0)); return 0; }
        sleep 0.1; i=$((i + 1))
    done
    SECS=$(($(date +%s%3N) - t0)); return 1
}
wait_workers 20 w1,w2 && ok "placement over w1,w2 (epoch $(active)), the services on their ACL users" ||
    bad "no placement over w1,w2: '$(doc_workers)': $(tail -3 "$TMP/r.err")"

# what a worker writes, for the fakes to copy
hget() { as admin hget $P:worker:w1 "$1"; }
MODEL=$(hget model) NL=$(hget n_layer) NE=$(hget n_expert) EB=$(hget expert_bytes) CAP=$(hget capacity_bytes)
DEAD=127.0.0.1:$(redis_free_port) # nothing listens there
# lease ID TTL_MS|none [FIELD VALUE]...: a lease like a worker's, written in one
# MULTI with the worker role's password; the pairs given override its fields
lease() {
    id=$1 ttl=$2; shift 2
    now=$(date +%s%3N)
    {
        echo MULTI
        echo "HSET $P:worker:$id addr $DEAD capacity_bytes $CAP device cpu domain z-$id state ready held \"\" epoch $EPOCH0 model $MODEL pid 1 started_ms ${STARTED:-$now} n_layer $NL n_expert $NE expert_bytes $EB lease_ms $LEASE_MS $*"
        [ "$ttl" = none ] || echo "PEXPIRE $P:worker:$id $ttl"
        echo "ZADD $P:workers $now $id"
        echo EXEC
    } | as worker >"$TMP/lease.$id.out" 2>&1
    grep -Eq 'ERR|NOPERM' "$TMP/lease.$id.out" && bad "writing lease $id: $(cat "$TMP/lease.$id.out")"
    return 0
}
EPOCH0=$(active)

# ==== (c) leases that fail a check ===========================================
B=60000 # their TTL, = their lease_ms: alive for the whole test
lease bad-fields $B lease_ms $B n_expert eight
lease bad-addr $B lease_ms $B addr nohost
lease bad-ttl none lease_ms $B
lease bad-lease $B lease_ms 999999
lease bad-started $B lease_ms $B started_ms $(($(date +%s%3N) + 3600000))
lease bad-epoch $B lease_ms $B epoch 1152921504606846976
lease bad-shape $B lease_ms $B expert_bytes "0:1,1:1,2:1"
lease bad-held $B lease_ms $B epoch 0 held "0:0-1"
REASONS="fields addr ttl lease_ms started epoch shape held"
rejected() { for r in $REASONS; do printf '%s ' "$(metric "moemesh_router_leases_rejected_total{reason=\"$r\"}")"; done; }
i=0; while [ $i -lt 50 ] && [ "$(rejected)" != "1 1 1 1 1 1 1 1 " ]; do sleep 0.1; i=$((i + 1)); done
[ "$(rejected)" = "1 1 1 1 1 1 1 1 " ] &&
    ok "8 bad leases refused, each counted once: moemesh_router_leases_rejected_total{reason} for $REASONS" ||
    bad "rejected counts for $REASONS: $(rejected)"

# ==== (a) the worker role cannot drain a real worker ==========================
E=$(active)
r=$(as worker sadd $P:drain w1 2>&1)
case "$r" in *NOPERM*) ok "worker role: SADD $P:drain w1 -> $r" ;; *) bad "worker role: SADD $P:drain w1 -> '$r'" ;; esac
r=$(as worker set $P:placement:active 1 2>&1)
case "$r" in *NOPERM*) ok "worker role: SET $P:placement:active -> NOPERM" ;; *) bad "worker role: SET active -> '$r'" ;; esac
sleep 1 # four router ticks
[ "$(active)" = "$E" ] && [ "$(doc_workers)" = w1,w2 ] && [ "$(as admin scard $P:drain)" = 0 ] &&
    ok "w1 keeps its experts: epoch $E, placement over w1,w2, $P:drain empty" ||
    bad "after the refused drain: epoch $(active) (was $E), workers '$(doc_workers)', drain $(as admin smembers $P:drain)"

# ==== (b) the finding: every expert on a fake, then the fake stops ===========
# fake ID backed|unbacked: keeps a lease alive (every 0.3 s, TTL LEASE_MS) and
# acknowledges every pending epoch; backed: its lease then says that epoch
fake() {
    id=$1 mode=$2 ep=$EPOCH0 STARTED=$(date +%s%3N)
    while :; do
        e=$(as worker get $P:placement:pending 2>/dev/null)
        if [ -n "$e" ]; then
            as worker sadd "$P:ack:$e" "$id" >/dev/null 2>&1
            [ "$mode" = backed ] && ep=$e
        fi
        lease "$id" $LEASE_MS epoch "$ep"
        sleep 0.3
    done
}
fake fake1 backed &
F1=$!; PIDS="$PIDS $F1"
sleep 1
as admin sadd $P:drain w1 w2 >/dev/null # the drain the finding's rogue worker sent; now only an operator can
wait_workers 10 fake1 && ok "(b) w1, w2 drained: every expert moved to the fake (epoch $(active), ${SECS} ms): a fake that passes every check gets experts (mTLS keeps traffic from it)" ||
    bad "(b) the drain did not move the experts to fake1: '$(doc_workers)': $(tail -3 "$TMP/r.err")"
kill $F1
T0=$(date +%s%3N)
BOUND=$((LEASE_MS + ROUND_MS))
if wait_workers 15 w1,w2; then
    el=$(($(date +%s%3N) - T0))
    [ $el -le $BOUND ] && ok "(b) the fake stopped: every expert back on the (still drained) w1,w2 after $el ms (bound: lease $LEASE_MS + a round $ROUND_MS ms), epoch $(active); $(grep -m1 'keep experts' "$TMP/r.err" | sed 's/.*"msg":"//' | cut -c1-70)" ||
        bad "(b) the fake stopped: placement back after $el ms, above the bound $BOUND ms"
else
    bad "(b) placement stayed blocked on the dead fake: '$(doc_workers)' $(tail -2 "$TMP/r.err")"
fi
grep -q "draining (an operator's request" "$TMP/w1.err" && [ "$(as admin hget $P:worker:w1 state)" = ready ] &&
    ok "w1 read the operator's drain (logged it); its lease's state stays ready (state=draining: leaving)" ||
    bad "w1 and the operator's drain: state '$(as admin hget $P:worker:w1 state)', $(grep -c "operator" "$TMP/w1.err") log lines"
as admin srem $P:drain w1 w2 >/dev/null

# ==== (b) a fake whose acknowledgements its lease does not back ==============
fake fake2 unbacked &
F2=$!; PIDS="$PIDS $F2"
sleep 1
E=$(active)
as admin sadd $P:drain w1 >/dev/null # w1's experts must move: to w2 and fake2
T0=$(date +%s%3N)
BOUND=$((ACK_MS + ROUND_MS))
if wait_workers 15 w2; then
    el=$(($(date +%s%3N) - T0))
    ab=$(sed -n 's/.*"epoch \([0-9]*\) abandoned: not every worker.*/\1/p' "$TMP/r.err" | tail -1)
    case "$(doc_workers "$ab")" in
    *fake2*) [ $el -le $BOUND ] && [ "$ab" -gt "$E" ] && [ "$(active)" -gt "$ab" ] &&
        ok "(b) fake2 acknowledged in $P:ack without its lease: epoch $ab (which gave it experts) abandoned, placement over w2 alone after $el ms (bound: ack timeout $ACK_MS + a round $ROUND_MS ms)" ||
        bad "(b) fake2: placement without it after $el ms (bound $BOUND ms); epochs: before $E, abandoned $ab, active $(active)" ;;
    *) bad "(b) fake2 was never given experts (abandoned epoch '$ab': '$(doc_workers "$ab")')" ;;
    esac
else
    bad "(b) placement never moved on without fake2: '$(doc_workers)': $(tail -3 "$TMP/r.err")"
fi
grep -q 'worker fake2: in .* but its lease says epoch .*: not counted' "$TMP/r.err" &&
    ok "its acknowledgement was not counted: $(grep -m1 'worker fake2: in' "$TMP/r.err" | sed 's/.*"msg":"//; s/".*//')" ||
    bad "no 'not counted' line for fake2"
na=$(metric 'moemesh_router_leases_rejected_total{reason="no_ack"}')
[ "${na:-0}" -ge 1 ] && ok "moemesh_router_leases_rejected_total{reason=\"no_ack\"} $na" || bad "no_ack count '${na}'"
# it gets nothing more while it keeps failing: the next change leaves it out at once
as admin srem $P:drain w1 >/dev/null
as admin sadd $P:drain w2 >/dev/null
wait_workers 10 w1 && ok "the next change (w2 drained) completes without fake2 in ${SECS} ms" ||
    bad "after w2's drain: '$(doc_workers)'"
as admin srem $P:drain w2 >/dev/null
kill $F2

# ==== What stayed true throughout ============================================
hit=""
for e in $(seq "$EPOCH0" "$(active)"); do
    case "$(doc_workers "$e")" in *bad-*) hit="$hit $e" ;; esac
done
[ -z "$hit" ] && ok "no epoch $EPOCH0..$(active) gave experts to a refused lease" || bad "refused leases in epochs:$hit"
n1=$(grep -c 'worker bad-addr: lease refused' "$TMP/r.err")
[ "$n1" = 1 ] && ok "a refused lease is logged once ($(grep -m1 'worker bad-ttl: lease refused' "$TMP/r.err" | sed 's/.*"msg":"//; s/".*//'))" ||
    bad "bad-addr logged $n1 times"
[ "$(metric 'moemesh_router_workers{state="rejected"}')" -ge 8 ] 2>/dev/null &&
    ok "moemesh_router_workers{state=\"rejected\"} $(metric 'moemesh_router_workers{state="rejected"}')" ||
    bad "workers{rejected}: $(metric 'moemesh_router_workers{state="rejected"}')"
if grep -l NOPERM "$TMP"/w1.err "$TMP"/w2.err "$TMP"/r.err >/dev/null 2>&1; then
    bad "a service was refused a command: $(grep -h NOPERM "$TMP"/w1.err "$TMP"/w2.err "$TMP"/r.err | head -2)"
else
    ok "router-svc and both workers ran on their ACL users without one NOPERM"
fi
# a worker's own drain (SIGTERM) is its lease's state, not P:drain
kill -TERM $W1
i=0; while [ $i -lt 30 ] && [ "$(as admin hget $P:worker:w1 state)" != draining ]; do sleep 0.1; i=$((i + 1)); done
[ "$(as admin hget $P:worker:w1 state)" = draining ] && [ "$(as admin scard $P:drain)" = 0 ] &&
    ok "SIGTERM: w1's lease says state=draining; $P:drain stays empty" ||
    bad "SIGTERM: state '$(as admin hget $P:worker:w1 state)', drain $(as admin smembers $P:drain)"
wait_workers 10 w2 && ok "w1 drained away: placement over w2 (${SECS} ms)" || bad "after w1's SIGTERM: '$(doc_workers)'"
exit $fail
