#!/bin/sh
# Limits per tenant (issue 15, part 2), with a real redis-server whose users
# come from `moectl redis-acl` (the gateways run the limits script as
# P-gateway) and two gateway replicas sharing it, through the official openai
# client (tests/ref/limits_check.mjs; maxRetries 0 to see the 429s), and a
# third replica (g4: the deployment's 60 s window, a slow model so that a
# request holds its concurrency slot for seconds):
#   - rpm: N requests alternating replicas, then the N+1th: 429 RateLimitError
#     with Retry-After and x-ratelimit-* headers; allowed again after it
#     (--limits-window-s 5: a test-only window, the deployment's is 60 s);
#   - concurrency: N+1 requests at once across both replicas, one refused;
#     a slot freed, allowed again;
#   - tpm and daily tokens: spent by a request's completion (counted as it is
#     generated), then the next one refused (type tokens);
#   - max_context: refused at once (400 context_length_exceeded);
#   - a tenant's counter of the wrong type (WRONGTYPE in the script): its
#     requests are limited by the replica's share, logged with the error,
#     moemesh_gateway_limits_script_errors_total{reason}; with
#     --limits-fail-closed a 503; NOSCRIPT (SCRIPT FLUSH) still runs in Redis;
#   - Redis stopped (its data saved first, as a deployment's must be for its
#     tenants): serving goes on with local limits (each replica 1/3 of
#     the rpm; logged, moemesh_gateway_limits_degraded 1); Redis back: shared
#     counting resumes (the counters reappear in Redis, degraded 0), and what
#     g4 admitted alone is in them: its requests and tokens, the slot of a
#     request still running (freed at its end), so the rpm is reached sooner;
#   - every key in Redis is P:limit:{tenant}...: one cluster slot a tenant
#     (CLUSTER KEYSLOT of a cluster-enabled redis-server);
#   - --limits-fail-closed: 503 while Redis is away (a tenant without limits
#     still served);
#   - moemesh_gateway_rate_limited_total{limit} counts every refusal.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
. tests/lib/redis.sh
trap 'procs_cleanup; redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT
[ -d tests/ref/node_modules/openai ] || { echo "skip: the openai client is not installed (make ref)"; exit 77; }
MOECTL=$BUILD/moectl
CHECK=tests/ref/limits_check.mjs
WIN=5

# ==== Redis with the deployment's ACL users, the tenants =======================
P=lim$$
PW=$TMP/pw
"$MOECTL" redis-acl --prefix $P --aclfile --password-dir "$PW" >"$TMP/users.acl" 2>/dev/null ||
    { echo "FAIL: moectl redis-acl"; exit 1; }
ROOTPW=root-$$-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "user root on >$ROOTPW ~* &* +@all" >>"$TMP/users.acl"
export REDIS_ARGS="--aclfile $TMP/users.acl"
redis_start || { echo "skip: no redis-server"; exit 77; }
HP=127.0.0.1:$REDIS_PORT
root() { REDISCLI_AUTH=$ROOTPW redis-cli --no-auth-warning -p "$REDIS_PORT" --user root "$@"; }
ADMIN="--redis redis://$P-admin@$HP --redis-password-file $PW/$P-admin --prefix $P"
add() { # NAME LIMITS... -> the key in $TMP/NAME.key
    n=$1; shift
    # shellcheck disable=SC2086
    "$MOECTL" tenant add "$n" $ADMIN "$@" 2>/dev/null | sed -n 's/.*"key": "\(moe-[A-Za-z0-9_-]*\)".*/\1/p' >"$TMP/$n.key"
    [ -s "$TMP/$n.key" ] || bad "moectl tenant add $n $*"
}
add r --rpm 6
add w --rpm 6 --concurrency 8
add k --rpm 6 --concurrency 6
add c --concurrency 2
add t --tpm 100
add d --daily-tokens 100
add x --max-context 80
add s --rpm 100 --tpm 100000
add free
M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 1 -o "$M" >/dev/null || { bad mkmodel; exit 1; }
TENANTS="--tenants-redis redis://$P-gateway@$HP --redis-password-file $PW/$P-gateway --prefix $P"
# shellcheck disable=SC2086
gateway g1 --model "$M" --served-model-name tiny --max-seqs 4 $TENANTS --limits-window-s $WIN || exit 1
G1=$GW
# shellcheck disable=SC2086
gateway g2 --model "$M" --served-model-name tiny --max-seqs 4 $TENANTS --limits-window-s $WIN || exit 1
G2=$GW
# g4: 60 s windows, a model slow enough (120 layers) that a request of 3000 tokens runs for
# longer than any check below needs (about 30 s here; it is cancelled once checked)
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 1 --n-layer 120 --n-ctx 4096 -o "$TMP/slow.gguf" >/dev/null || { bad mkmodel; exit 1; }
# shellcheck disable=SC2086
gateway g4 --model "$TMP/slow.gguf" --served-model-name tiny --max-seqs 4 --threads 1 $TENANTS || exit 1
G4=$GW
metric() { curl -s -m 10 "$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }
as() { MOE_TEST_KEY=$(cat "$TMP/$1.key"); export MOE_TEST_KEY; }

# ==== Each limit through the openai client =====================================
as r
node $CHECK rpm --bases "$G1/v1,$G2/v1" --rpm 6 --window $WIN || fail=1
as c
node $CHECK conc --bases "$G1/v1,$G2/v1" --n 3 --refused 1 --max-tokens 400 || fail=1
as t
node $CHECK align --window $WIN
node $CHECK one --base "$G1/v1" --expect 200 --max-tokens 60 --label "tpm 100: a request of 50 + 60 tokens" || fail=1
sleep 0.6 # the completion tokens are charged every 250 ms
node $CHECK one --base "$G2/v1" --expect 429 --type tokens --want "tokens per min (TPM)" --label "tpm: the next one, other replica" || fail=1
as d
node $CHECK one --base "$G2/v1" --expect 200 --max-tokens 60 --label "daily 100: a request of 50 + 60 tokens" || fail=1
sleep 0.6
node $CHECK one --base "$G1/v1" --expect 429 --type tokens --want "tokens per day (TPD)" --label "daily: the next one" || fail=1
as x
node $CHECK one --base "$G1/v1" --expect 400 --code context_length_exceeded --max-tokens 100 --label "max_context 80, max_tokens 100" || fail=1
node $CHECK one --base "$G1/v1" --expect 200 --max-tokens 8 --label "max_context 80, max_tokens 8" || fail=1
as s
code=$(curl -s -m 30 -N -D "$TMP/hdr" -o "$TMP/sse" -w '%{http_code}' -H "Authorization: Bearer $MOE_TEST_KEY" -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":4,"stream":true,"messages":[{"role":"user","content":"Hi."}]}' "$G2/v1/chat/completions")
[ "$code" = 200 ] && grep -qi '^x-ratelimit-remaining-requests: 99' "$TMP/hdr" && grep -qi '^x-ratelimit-limit-tokens: 100000' "$TMP/hdr" &&
    grep -q '^data: \[DONE\]' "$TMP/sse" && ok "a stream carries the x-ratelimit-* headers: $(grep -i '^x-ratelimit' "$TMP/hdr" | tr -d '\r' | tr '\n' ' ')" ||
    bad "stream: $code $(grep -i ratelimit "$TMP/hdr")"
as free
code=$(curl -s -m 10 -D "$TMP/hdr" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $MOE_TEST_KEY" "$G1/v1/models")
[ "$code" = 200 ] && ! grep -qi '^x-ratelimit' "$TMP/hdr" && ok "a tenant without limits: no x-ratelimit headers" ||
    bad "a tenant without limits: $code $(grep -i ratelimit "$TMP/hdr")"
keys=$(root --scan --pattern "$P:limit:*" | sort | tr '\n' ' ')
echo "$keys" | grep -q "$P:limit:{r}:r:" && echo "$keys" | grep -q "$P:limit:{c}:r:" && echo "$keys" | grep -q "$P:limit:{t}:t:" &&
    ok "the counters in Redis: $(echo "$keys" | cut -c1-200)" || bad "counters in Redis: $keys"

# ==== A counter of the wrong type: the script fails, the replica's share holds ====
root set "$P:limit:{w}:c" not-a-sorted-set >/dev/null
as w
node $CHECK align --window $WIN
node $CHECK one --base "$G1/v1" --expect 200 --label "WRONGTYPE: g1, 1st" || fail=1
node $CHECK one --base "$G1/v1" --expect 200 --label "WRONGTYPE: g1, 2nd" || fail=1
node $CHECK one --base "$G1/v1" --expect 429 --want "Limit 2" --label "WRONGTYPE: g1, 3rd (its share: 6/3)" || fail=1
e=$(curl -s -m 10 "$G1/metrics" | grep '^moemesh_gateway_limits_script_errors_total{reason="wrongtype"}' | awk '{ print $2 }')
[ "${e:-0}" -ge 3 ] && grep -q "limits: the script failed for tenant w: WRONGTYPE" "$TMP/g1.log" &&
    ok "g1: script_errors_total{reason=wrongtype} $e; logged: $(grep -m1 'the script failed for tenant w' "$TMP/g1.log" | sed 's/^[^ ]* //' | cut -c1-200)" ||
    bad "script errors: metric ${e:-none}; log: $(grep 'limits:' "$TMP/g1.log" | tail -3)"
n=$(grep -c "the script failed for tenant" "$TMP/g1.log")
[ "$n" = 1 ] && ok "the script's failures logged once in 10 s" || bad "the script's failures logged $n times"
root del "$P:limit:{w}:c" >/dev/null
# NOSCRIPT: the script is loaded again and Redis decides (its limit, not the share)
as s
root script flush >/dev/null
code=$(curl -s -m 30 -D "$TMP/hdr" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $MOE_TEST_KEY" -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":4,"messages":[{"role":"user","content":"Hi."}]}' "$G2/v1/chat/completions")
[ "$code" = 200 ] && grep -qi '^x-ratelimit-limit-requests: 100' "$TMP/hdr" &&
    [ -z "$(curl -s -m 10 "$G2/metrics" | grep '^moemesh_gateway_limits_script_errors_total')" ] &&
    ok "after SCRIPT FLUSH: decided by Redis (limit 100, no script error)" || bad "after SCRIPT FLUSH: $code $(grep -i ratelimit-limit "$TMP/hdr")"

# ==== Redis away: local limits (a replica's share), then shared again ==========
# g4's window (60 s) must outlast the checks below (they take about 15 s)
while [ $(( $(date +%s) % 60 )) -gt 30 ]; do sleep 1; done
root save >/dev/null # the tenants outlive the restart (a deployment persists its Redis)
redis_stop
as r
node $CHECK align --window $WIN
node $CHECK one --base "$G1/v1" --expect 200 --label "Redis away: g1, 1st" || fail=1
node $CHECK one --base "$G1/v1" --expect 200 --label "Redis away: g1, 2nd" || fail=1
node $CHECK one --base "$G1/v1" --expect 429 --want "Limit 2" --label "Redis away: g1, 3rd (its share: 6/3)" || fail=1
node $CHECK one --base "$G2/v1" --expect 200 --label "Redis away: g2, 1st" || fail=1
[ "$(metric "$G1" moemesh_gateway_limits_degraded)" = 1 ] && grep -q "enforcing limits locally" "$TMP/g1.log" &&
    ok "g1: degraded 1; logged: $(grep -m1 'enforcing limits locally' "$TMP/g1.log" | sed 's/^[^ ]* //' | cut -c1-120)" ||
    bad "g1 degraded: $(metric "$G1" moemesh_gateway_limits_degraded)"
# g4 admits alone: a request, then one that runs for seconds (its slot held), then its share is spent
as k
node $CHECK one --base "$G4/v1" --expect 200 --label "Redis away: g4, 1st" || fail=1
curl -s -m 60 -N -o "$TMP/long.sse" -H "Authorization: Bearer $MOE_TEST_KEY" -H 'Content-Type: application/json' \
    -d '{"model":"tiny","max_tokens":3000,"ignore_eos":true,"temperature":0,"stream":true,"prompt":"Hi."}' "$G4/v1/completions" &
LONG=$!
sleep 0.3
node $CHECK one --base "$G4/v1" --expect 429 --want "requests per min (RPM) on tenant k: Limit 2" --label "Redis away: g4, 3rd (its share: 6/3)" || fail=1
redis_start || { bad "redis did not restart"; exit 1; }
i=0
while [ $i -lt 50 ] && { [ "$(metric "$G1" moemesh_gateway_limits_degraded)" != 0 ] || [ "$(metric "$G4" moemesh_gateway_limits_degraded)" != 0 ]; }; do sleep 0.1; i=$((i + 1)); done
[ "$(metric "$G1" moemesh_gateway_limits_degraded)" = 0 ] && grep -q "limits are shared again" "$TMP/g1.log" &&
    ok "Redis back: degraded 0 within $((i * 100)) ms" || bad "still degraded"
# what g4 admitted alone is in Redis: 2 requests, 2 prompts, the running request's slot
kr=$(root --scan --pattern "$P:limit:{k}:r:*")
c=$(root zcard "$P:limit:{k}:c")
kill -0 $LONG 2>/dev/null && running=1 || running=0
[ "$(root get "$kr")" = 2 ] && [ "$(root get "$(root --scan --pattern "$P:limit:{k}:t:*")")" -ge 50 ] &&
    [ "$(root get "$(root --scan --pattern "$P:limit:{k}:d:*")")" -ge 50 ] &&
    ok "Redis back: the requests g4 admitted alone are counted: $kr = $(root get "$kr"), tokens $(root get "$(root --scan --pattern "$P:limit:{k}:t:*")")" ||
    bad "Redis back: tenant k's counters: $(root --scan --pattern "$P:limit:{k}:*" | tr '\n' ' ') $kr=$(root get "$kr")"
grep -q "limits: Redis is back; added 2 requests, [0-9]* tokens admitted locally for 1 tenants" "$TMP/g4.log" &&
    [ "$(metric "$G4" 'moemesh_gateway_limits_reconciled_total{what="requests"}')" = 2 ] &&
    ok "g4: reconciled_total{requests} 2; logged: $(grep -m1 'Redis is back' "$TMP/g4.log" | sed 's/^[^ ]* //')" ||
    bad "g4: reconciled: $(grep 'Redis is back' "$TMP/g4.log") $(curl -s "$G4/metrics" | grep reconciled)"
if [ $running = 1 ]; then
    [ "$c" = 1 ] && ok "Redis back: the slot of the request still running is in Redis (zcard 1)" || bad "Redis back: zcard $c with a request running"
else
    bad "the long request ended before Redis was back: its slot was not checked"
fi
grep -q '"text"' "$TMP/long.sse" || bad "the long request: $(tail -c 200 "$TMP/long.sse")"
kill $LONG 2>/dev/null # the client goes: the gateway cancels the request and frees its slot
wait $LONG 2>/dev/null
i=0
while [ $i -lt 20 ] && [ "$(root zcard "$P:limit:{k}:c")" != 0 ]; do sleep 0.1; i=$((i + 1)); done
[ "$(root zcard "$P:limit:{k}:c")" = 0 ] && ok "its end (the client went away) freed the slot (zcard 0)" || bad "zcard after the end: $(root zcard "$P:limit:{k}:c")"
for n in 3 4 5 6; do
    node $CHECK one --base "$G4/v1" --expect 200 --label "Redis back: g4, request $n of 6" || fail=1
done
node $CHECK one --base "$G4/v1" --expect 429 --want "Limit 6, Used 6" --label "Redis back: g4, the 7th (2 of them admitted alone)" || fail=1
as r
node $CHECK rpm --bases "$G2/v1,$G1/v1" --rpm 6 --window $WIN || fail=1
n=$(root --scan --pattern "$P:limit:{r}:r:*" | wc -l)
[ "$n" -ge 1 ] && ok "shared counting resumed: $n request counters in the restarted Redis" || bad "no counters after Redis came back"

# ==== Every key a tenant's: P:limit:{tenant}..., one cluster slot ==============
root --scan --pattern "$P:limit:*" >"$TMP/keys"
grep -v "^$P:limit:{[A-Za-z0-9._-]*}:" "$TMP/keys" >"$TMP/untagged"
KS=$TMP/ks.sock
redis-server --port 0 --unixsocket "$KS" --save "" --appendonly no --cluster-enabled yes \
    --cluster-config-file "$TMP/nodes.conf" --dir "$TMP" --logfile "$TMP/ks.log" &
PIDS="$PIDS $!"
i=0
while [ $i -lt 50 ] && ! redis-cli -s "$KS" ping >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
while read -r key; do
    echo "$(echo "$key" | sed 's/^[^{]*{\([^}]*\)}.*/\1/') $(redis-cli -s "$KS" cluster keyslot "$key")"
done <"$TMP/keys" | sort -u >"$TMP/slots"
[ -s "$TMP/keys" ] && [ ! -s "$TMP/untagged" ] && [ "$(wc -l <"$TMP/slots")" = "$(cut -d' ' -f1 "$TMP/slots" | sort -u | wc -l)" ] &&
    ok "$(wc -l <"$TMP/keys") keys, all P:limit:{tenant}:...; one slot a tenant: $(tr '\n' ' ' <"$TMP/slots")" ||
    bad "keys without the tag: $(cat "$TMP/untagged"); tenant slots: $(tr '\n' ' ' <"$TMP/slots")"

# ==== --limits-fail-closed: 503 while Redis is away ===========================
# shellcheck disable=SC2086
gateway g3 --model "$M" --served-model-name tiny $TENANTS --limits-window-s $WIN --limits-fail-closed || exit 1
G3=$GW
root set "$P:limit:{w}:c" not-a-sorted-set >/dev/null
as w
node $CHECK one --base "$G3/v1" --expect 503 --label "--limits-fail-closed, the script fails (WRONGTYPE)" || fail=1
root del "$P:limit:{w}:c" >/dev/null
root save >/dev/null
redis_stop
node $CHECK one --base "$G3/v1" --expect 503 --label "--limits-fail-closed, Redis away" || fail=1
as free
node $CHECK one --base "$G3/v1" --expect 200 --label "--limits-fail-closed, Redis away, a tenant without limits" || fail=1

# ==== Metrics ==================================================================
for g in "$G1" "$G2" "$G3" "$G4"; do
    curl -s -m 10 "$g/metrics" | grep '^moemesh_gateway_rate_limited_total' | tr '\n' ' ' >"$TMP/rl"
    grep -q 'limit=' "$TMP/rl" && ok "$g: $(cat "$TMP/rl")" || bad "$g: rate_limited_total: $(cat "$TMP/rl")"
done
exit $fail
