#!/bin/sh
# API keys and tenants (issue 15, part 1), with a real redis-server whose
# users come from `moectl redis-acl` (moectl tenant runs as P-admin, the
# gateways as P-gateway) and two gateway replicas (experts in process,
# tenants from --tenants-redis):
#   - the ACL: the gateway user may read the tenant keys, not write them; a
#     worker may not read them (ACL DRYRUN);
#   - moectl tenant add prints the key once (Redis and `list` hold only its
#     SHA-256); the new tenant's key works on both replicas within 1 s, with
#     the official openai client (chat, a stream, models.list);
#   - no key, a wrong key: 401 AuthenticationError, code invalid_api_key, the
#     key never shown whole; the probes need none;
#   - 2000 requests with 2000 invalid keys: all 401, no Redis command but the
#     replicas' version polls (INFO commandstats), the tenant's own requests
#     answered meanwhile (their limits script: gateway/limiter.c), refusals
#     logged at most once a second;
#   - a rotated key (add --new-key, revoke --key-prefix), changed limits, a
#     revoked tenant: refused by both replicas within 1 s (measured);
#   - Redis away: the last set keeps serving; Redis back empty: followed;
#   - a tenants file without Redis (hashes from `moectl tenant hash`, and a
#     key in clear), read again when it changes; a malformed or missing file
#     is exit 2 naming the field; keys lift the loopback-only rule;
#   - no key appears in any log.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
. tests/lib/redis.sh
trap 'procs_cleanup; redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT
[ -d tests/ref/node_modules/openai ] || { echo "skip: the openai client is not installed (make ref)"; exit 77; }
MOECTL=$BUILD/moectl
CHECK=tests/ref/tenants_check.mjs
J='Content-Type: application/json'

# ==== Redis with the deployment's ACL users ==================================
P=ten$$
PW=$TMP/pw
"$MOECTL" redis-acl --prefix $P --aclfile --password-dir "$PW" >"$TMP/users.acl" 2>/dev/null ||
    { echo "FAIL: moectl redis-acl"; exit 1; }
ROOTPW=root-$$-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "user root on >$ROOTPW ~* &* +@all" >>"$TMP/users.acl"
REDIS_ARGS="--aclfile $TMP/users.acl" redis_start || { echo "skip: no redis-server"; exit 77; }
HP=127.0.0.1:$REDIS_PORT
root() { REDISCLI_AUTH=$ROOTPW redis-cli --no-auth-warning -p "$REDIS_PORT" --user root "$@"; }
set -f
n_ok=0 n_no=0
may() { r=$(root acl dryrun "$P-$@" 2>&1); [ "$r" = OK ] && n_ok=$((n_ok + 1)) || bad "$P-$*: refused: $r"; }
mayn() { r=$(root acl dryrun "$P-$@" 2>&1); [ "$r" != OK ] && n_no=$((n_no + 1)) || bad "$P-$*: allowed"; }
for c in "get $P:tenants:version" "smembers $P:tenants" "hgetall $P:tenant:acme"; do may gateway $c; done
for c in "watch $P:tenant:acme" "exists $P:tenant:acme" "multi" "hset $P:tenant:acme rpm 1" \
    "hdel $P:tenant:acme rpm" "del $P:tenant:acme" "sadd $P:tenants acme" "srem $P:tenants acme" \
    "incr $P:tenants:version" "exec" "discard" "unwatch" "publish $P:events x" \
    "hgetall $P:tenant:acme" "smembers $P:tenants" "get $P:tenants:version"; do
    may admin $c
done
for c in "hset $P:tenant:acme rpm 1" "del $P:tenant:acme" "sadd $P:tenants x" "incr $P:tenants:version" \
    "hgetall other:tenant:acme"; do
    mayn gateway $c
done
for c in "hgetall $P:tenant:acme" "smembers $P:tenants" "get $P:tenants:version"; do mayn worker $c; done
for c in "hset $P:tenants:version a b" "incr $P:tenant:acme" "hset other:tenant:x a b"; do mayn admin $c; done
set +f
ok "ACL DRYRUN: $n_ok tenant commands of the gateway and admin roles allowed, $n_no others refused"

ADMIN="--redis redis://$P-admin@$HP --redis-password-file $PW/$P-admin --prefix $P"
TENANTS="--tenants-redis redis://$P-gateway@$HP --redis-password-file $PW/$P-gateway --prefix $P"
M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 1 -o "$M" >/dev/null || { bad mkmodel; exit 1; }
# shellcheck disable=SC2086
gateway g1 --model "$M" --served-model-name tiny $TENANTS || exit 1
G1=$GW GP1=$GPID
# shellcheck disable=SC2086
gateway g2 --model "$M" --served-model-name tiny $TENANTS || exit 1
G2=$GW GP2=$GPID
metric() { curl -s -m 10 "$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }
for g in "$G1" "$G2"; do
    code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$g/readyz")
    [ "$code" = 200 ] && [ "$(metric "$g" moemesh_gateway_tenants)" = 0 ] &&
        ok "$g: ready with the tenants of an empty Redis (0)" || bad "$g: readyz $code"
done

# ==== A new tenant: its key, once, live on both replicas within 1 s ===========
# shellcheck disable=SC2086
node $CHECK watch --bases "$G1/v1,$G2/v1" --expect 200 --key-from-output --out "$TMP/add.json" \
    -- "$MOECTL" tenant add acme $ADMIN --rpm 600 --weight 2 || fail=1
KEY=$(sed -n 's/.*"key": "\(moe-[A-Za-z0-9_-]*\)".*/\1/p' "$TMP/add.json")
echo "$KEY" | grep -Eq '^moe-[A-Za-z0-9_-]{43}$' && ok "moectl tenant add printed {\"tenant\": \"acme\", \"key\": \"moe-...\"} (47 characters)" ||
    bad "moectl tenant add printed: $(cat "$TMP/add.json")"
HASH=$(printf '%s\n' "$KEY" | "$MOECTL" tenant hash | sed -n 's/.*"key_sha256": "\([0-9a-f]*\)".*/\1/p')
# shellcheck disable=SC2086
"$MOECTL" tenant list $ADMIN >"$TMP/list.json" 2>"$TMP/moectl.err"
root --scan --pattern "$P:*" >"$TMP/keys.txt"
{ while read -r k; do root type "$k"; root hgetall "$k" 2>/dev/null; root smembers "$k" 2>/dev/null; root get "$k" 2>/dev/null; done <"$TMP/keys.txt"; } >"$TMP/dump.txt" 2>&1
if ! grep -q -- "$KEY" "$TMP/list.json" "$TMP/dump.txt" && grep -q "key:$HASH" "$TMP/dump.txt" &&
    grep -q "\"key_sha256_prefixes\": \[\"$(echo "$HASH" | cut -c1-12)\"\]" "$TMP/list.json"; then
    ok "Redis and moectl tenant list hold the key's SHA-256 only ($(echo "$HASH" | cut -c1-12)...; keys: $(tr '\n' ' ' <"$TMP/keys.txt"))"
else
    bad "where the key is kept: $(head -c 300 "$TMP/list.json")"
fi
export MOE_TEST_KEY="$KEY"
node $CHECK chat --base "$G1/v1" --model tiny || fail=1
node $CHECK chat --base "$G2/v1" --model tiny || fail=1
grep "request ended" "$TMP/g1.log" | grep -q "tenant=acme" &&
    ok "g1's log: $(grep 'request ended' "$TMP/g1.log" | head -1 | sed 's/^[^ ]* //' | cut -c1-110)..." ||
    bad "no tenant in g1's request lines: $(grep 'request ended' "$TMP/g1.log" | head -1)"

# ==== No key, a wrong key; probes need none ===================================
MOE_TEST_KEY= node $CHECK refused --base "$G1/v1" --model tiny --none || fail=1
MOE_TEST_KEY= node $CHECK refused --base "$G2/v1" --model tiny || fail=1
code=$(curl -s -m 10 -o "$TMP/body" -w '%{http_code}' -H "api-key: $KEY" "$G2/v1/models")
[ "$code" = 200 ] && ok "api-key: KEY works too" || bad "api-key header: $code $(head -c 200 "$TMP/body")"
code=$(curl -s -m 10 -D "$TMP/hdr" -o "$TMP/body" -w '%{http_code}' -H "$J" -d '{"prompt":"x"}' "$G1/tokenize")
[ "$code" = 401 ] && grep -qi '^WWW-Authenticate: Bearer' "$TMP/hdr" && ok "/tokenize without a key: 401 with WWW-Authenticate: Bearer" ||
    bad "/tokenize without a key: $code"
for p in healthz readyz metrics; do
    code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$G1/$p")
    [ "$code" = 200 ] && ok "/$p needs no key" || bad "/$p without a key: $code"
done

# ==== 2000 invalid keys: no Redis command, the tenant still served ============
stats() { root info commandstats | tr -d '\r' | sed -n 's/^cmdstat_\([a-z|]*\):calls=\([0-9]*\),.*/\1 \2/p' | grep -Ev '^(info|auth|hello) ' | sort; } # not the test's own redis-cli
stats >"$TMP/before"
t0=$(date +%s%N)
node $CHECK flood --base "$G1/v1" --model tiny --n 2000 --conc 32 --keys-out "$TMP/flood-keys" || fail=1
t1=$(date +%s%N)
stats >"$TMP/after"
ms=$(( (t1 - t0) / 1000000 ))
delta=$(join -a 2 -e 0 -o 0,1.2,2.2 "$TMP/before" "$TMP/after" | awk '$3 != $2 { printf "%s+%d ", $1, $3 - $2 }')
gets=$(join -a 2 -e 0 -o 0,1.2,2.2 "$TMP/before" "$TMP/after" | awk '$1 == "get" { print $3 - $2 }')
# the tenant's own requests run the limits script (gateway/limiter.c: EVALSHA or EVAL, and
# the commands inside it, 3 GETs per admission) and the replicas report the
# tenant load (HINCRBY + EXPIRE of P:load:<b>:tenants every 2 s); nothing else
# but the version polls
script='^(eval|evalsha|time|incr|incrby|pexpire|zadd|zrem|zcard|zremrangebyscore|hincrby|expire)$'
other=$(join -a 2 -e 0 -o 0,1.2,2.2 "$TMP/before" "$TMP/after" | awk -v s="$script" '$1 != "get" && $1 !~ s && $3 != $2' | wc -l)
evals=$(join -a 2 -e 0 -o 0,1.2,2.2 "$TMP/before" "$TMP/after" | awk '$1 == "eval" || $1 == "evalsha" { n += $3 - $2 } END { print n + 0 }')
exp=$(join -a 2 -e 0 -o 0,1.2,2.2 "$TMP/before" "$TMP/after" | awk '$1 == "expire" { print $3 - $2 }')
polls=$(( 2 * (ms / 250 + 2) )) # two replicas, one GET of the version every 250 ms
[ "${exp:-0}" -le $(( 2 * (ms / 2000 + 2) )) ] || other=$((other + 1))
[ "$other" = 0 ] && [ "${gets:-0}" -le $(( polls + 3 * evals )) ] && [ "$evals" -lt 500 ] &&
    ok "during the flood ($ms ms) Redis ran: ${delta:-nothing} (the 2 replicas' version polls, at most $polls, the tenant's own admissions: $evals scripts, and load reports): none for the 2000 keys" ||
    bad "Redis commands during the flood: $delta (polls allow get+$polls, $evals scripts)"
inv=$(metric "$G1" 'moemesh_gateway_auth_failures_total{reason="invalid"}')
lines=$(grep -c 'API key refused' "$TMP/g1.log")
[ "${inv:-0}" -ge 2000 ] && [ "$lines" -le $(( ms / 1000 + 4 )) ] &&
    ok "g1: auth_failures_total{reason=\"invalid\"} $inv; $lines log lines about refusals (at most one a second)" ||
    bad "g1: invalid $inv, $lines refusal lines in $ms ms"
code=$(curl -s -m 5 -o /dev/null -w '%{http_code} %{time_total}' "$G1/healthz")
ok "after the flood: /healthz $code s"
if command -v promtool >/dev/null 2>&1; then
    curl -s -m 10 "$G1/metrics" >"$TMP/metrics.txt"
    promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1 &&
        ok "g1's /metrics with API keys passes promtool check metrics ($(grep -c '^moemesh_gateway_\(tenant\|auth\)' "$TMP/metrics.txt") tenant and auth series)" ||
        bad "promtool: $(head -5 "$TMP/promtool.out")"
fi

# ==== Rotation, limits, revocation: on both replicas within 1 s ===============
# shellcheck disable=SC2086
node $CHECK watch --bases "$G1/v1,$G2/v1" --expect 200 --key-from-output --out "$TMP/add2.json" \
    -- "$MOECTL" tenant add acme $ADMIN --new-key || fail=1
KEY2=$(sed -n 's/.*"key": "\(moe-[^"]*\)".*/\1/p' "$TMP/add2.json")
# shellcheck disable=SC2086
"$MOECTL" tenant set-limits acme $ADMIN --tpm 5000 >/dev/null || bad "set-limits"
# shellcheck disable=SC2086
"$MOECTL" tenant list $ADMIN | grep -q '"tenant": "acme", "rpm": 600, "tpm": 5000, .*"weight": 2, .*"keys": 2' &&
    ok "set-limits: list shows rpm 600, tpm 5000, weight 2 and two keys" || bad "list after set-limits: $("$MOECTL" tenant list $ADMIN 2>&1 | head -c 300)"
# shellcheck disable=SC2086
node $CHECK watch --bases "$G1/v1,$G2/v1" --expect 401 -- "$MOECTL" tenant revoke acme $ADMIN --key-prefix "$(echo "$HASH" | cut -c1-12)" || fail=1
c1=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY2" "$G1/v1/models")
c2=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY2" "$G2/v1/models")
[ "$c1$c2" = 200200 ] && ok "the rotated-in key still works on both after the old one is revoked" || bad "the second key: $c1 $c2"
# shellcheck disable=SC2086
MOE_TEST_KEY=$KEY2 node $CHECK watch --bases "$G1/v1,$G2/v1" --expect 401 -- "$MOECTL" tenant revoke acme $ADMIN || fail=1
MOE_TEST_KEY=$KEY2 node $CHECK refused --base "$G2/v1" --model tiny || fail=1

# ==== Redis away: the last set serves; back empty: followed ===================
# shellcheck disable=SC2086
KEY3=$("$MOECTL" tenant add beta $ADMIN 2>/dev/null | sed -n 's/.*"key": "\(moe-[^"]*\)".*/\1/p')
MOE_TEST_KEY=$KEY3 node $CHECK watch --bases "$G1/v1,$G2/v1" --expect 200 --label "beta's key (added just before) -> 200" -- true || fail=1
# a tenant written by hand, malformed: left out (logged, counted); the others go on
BKEY=moe-hand-written-key-$$-xxxxxxxxxx
BHASH=$(printf '%s\n' "$BKEY" | "$MOECTL" tenant hash | sed -n 's/.*"key_sha256": "\([0-9a-f]*\)".*/\1/p')
root hset $P:tenant:broken rpm lots "key:$BHASH" 1 >/dev/null
root sadd $P:tenants broken >/dev/null
root incr $P:tenants:version >/dev/null
if wait_log "$TMP/g2.log" "tenant broken in Redis skipped"; then
    c1=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY3" "$G2/v1/models")
    c2=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BKEY" "$G2/v1/models")
    [ "$c1$c2" = 200401 ] && [ "$(metric "$G2" moemesh_gateway_tenant_invalid_total)" -ge 1 ] &&
        ok "a malformed tenant in Redis is left out ($(grep -m1 'broken in Redis' "$TMP/g2.log" | sed 's/^[^ ]* [^ ]* [^:]*: //' | cut -c1-100)); beta's key still works" ||
        bad "malformed tenant: beta $c1, its key $c2"
else
    bad "the malformed tenant was not reported"
fi
redis_stop
sleep 1
c1=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY3" "$G1/v1/models")
c2=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY3" "$G2/v1/models")
f=$(metric "$G1" moemesh_gateway_tenant_source_failures_total)
n=$(grep -c "cannot read the tenants from Redis" "$TMP/g1.log")
[ "$c1$c2" = 200200 ] && [ "${f:-0}" -gt 0 ] && [ "$n" = 1 ] &&
    ok "Redis away: beta's key still works on both (the last set); source_failures_total $f, logged once" ||
    bad "Redis away: $c1 $c2, failures $f, $n log lines"
REDIS_ARGS="--aclfile $TMP/users.acl" redis_start || bad "redis did not start again"
MOE_TEST_KEY=$KEY3 node $CHECK watch --bases "$G1/v1,$G2/v1" --expect 401 --limit-ms 3000 \
    --label "redis-server back, empty (the link's backoff included) -> 401" -- true || fail=1
grep -q "went back" "$TMP/g1.log" && ok "Redis back empty: the replicas follow it (logged: $(grep -m1 'went back' "$TMP/g1.log" | sed 's/^[^ ]* [^ ]* [^:]*: //' | cut -c1-90))" ||
    bad "no warning about the version going back"
stop "$GP1"; stop "$GP2"

# ==== A tenants file, without Redis ===========================================
FKEY=$("$MOECTL" tenant add x --redis redis://127.0.0.1:1 2>/dev/null) # Redis away: no key made
[ -z "$FKEY" ] && ok "moectl tenant add with Redis away prints no key" || bad "printed: $FKEY"
FKEY=moe-$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-43)
FHASH=$(printf '%s\n' "$FKEY" | "$MOECTL" tenant hash | sed -n 's/.*"key_sha256": "\([0-9a-f]*\)".*/\1/p')
DEVKEY=moe-dev-key-in-clear-$$
cat >"$TMP/tenants.json" <<EOF
{"tenants": [{"name": "filed", "key_sha256": ["$FHASH"], "rpm": 60, "priority": "low"},
             {"name": "dev", "keys": ["$DEVKEY"]}]}
EOF
gateway g3 --model "$M" --served-model-name tiny --tenants "$TMP/tenants.json" || exit 1
MOE_TEST_KEY=$FKEY node $CHECK chat --base "$GW/v1" --model tiny || fail=1
MOE_TEST_KEY=$DEVKEY node $CHECK chat --base "$GW/v1" --model tiny || fail=1
MOE_TEST_KEY= node $CHECK refused --base "$GW/v1" --model tiny || fail=1
printf '{"tenants": [{"name": "dev", "keys": ["%s"]}]}\n' "$DEVKEY" >"$TMP/t2.json"
# shellcheck disable=SC2086
MOE_TEST_KEY=$FKEY node $CHECK watch --bases "$GW/v1" --expect 401 --limit-ms 1000 \
    --label "the tenants file replaced (mv) without tenant filed -> 401" -- mv "$TMP/t2.json" "$TMP/tenants.json" || fail=1
stop "$GPID"
err_case() { # LABEL WANT FLAGS...: the gateway exits 2 with WANT on stderr
    label=$1 want=$2; shift 2
    "$BUILD/gateway" --model "$M" --listen 127.0.0.1:0 --log-format text "$@" >/dev/null 2>"$TMP/e.err"
    rc=$?
    [ $rc = 2 ] && grep -q -- "$want" "$TMP/e.err" && ok "$label: exit 2, $(grep -m1 -- "$want" "$TMP/e.err" | sed 's/^[^ ]* [^ ]* //' | cut -c1-140)" ||
        bad "$label: exit $rc: $(cat "$TMP/e.err")"
}
printf '{"tenants": [{"name": "acme", "key_sha256": ["%s"], "rpm": -1}]}\n' "$FHASH" >"$TMP/bad.json"
err_case "a malformed tenants file" 'tenants\[0\] (acme): "rpm" must be an integer' --tenants "$TMP/bad.json"
printf '{"tenants": [{"name": "acme", "key_sha256": ["%s"], "rmp": 5}]}\n' "$FHASH" >"$TMP/bad.json"
err_case "a misspelt limit" 'unknown field "rmp"' --tenants "$TMP/bad.json"
err_case "a missing tenants file" "missing.json: No such file" --tenants "$TMP/missing.json"
err_case "--tenants redis without a Redis" "which Redis" --tenants redis
"$BUILD/gateway" --model "$M" --listen 192.0.2.1:0 --log-format text --tenants "$TMP/tenants.json" >/dev/null 2>"$TMP/nl.err"
rc=$?
! grep -q insecure-no-auth "$TMP/nl.err" && grep -q "192.0.2.1" "$TMP/nl.err" &&
    ok "with API keys a non-loopback --listen passes the loopback rule (exit $rc: $(grep -m1 192.0.2.1 "$TMP/nl.err" | sed 's/.*gateway: //' | cut -c1-80))" ||
    bad "non-loopback with keys: exit $rc $(cat "$TMP/nl.err")"

# ==== No key in any log ========================================================
found=""
for k in "$KEY" "$KEY2" "$KEY3" "$FKEY" "$DEVKEY" $(cat "$TMP/flood-keys"); do
    grep -l -- "$k" "$TMP"/*.log "$TMP"/*.err >/dev/null 2>&1 && found="$found $(echo "$k" | cut -c1-8)..."
done
[ -z "$found" ] && ok "no key in any log ($(ls "$TMP"/*.log "$TMP"/*.err | wc -l) files; 5 keys and 20 of the flood's)" ||
    bad "keys in the logs:$found"
exit $fail
