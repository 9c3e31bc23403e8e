#!/bin/sh
# Request ids and the tenants' request endpoints (gateway/requests.h), through
# the official openai client (tests/ref/requests_check.mjs), with a tenants
# file (keys in clear; no Redis) holding tenants a, b and slow (rpm 1):
#   - x-request-id (req_ + 32 hex) on a chat, a completion, a stream, /models,
#     /usage, 401, 404, 405 and 429, all different; X-Client-Request-Id echoed
#     when at most 128 printable characters; each generation request's id is
#     in its "request ended" log line (request_id=...);
#   - tenant a's long stream: a's GET says running with tokens so far (by the
#     x-request-id or the completion id); b's GET, DELETE and POST .../cancel
#     on a's ids answer byte-for-byte the 404 of random ids, and a's stream
#     goes on; a's DELETE ends it cleanly (finish_reason "cancelled", the
#     usage chunk, [DONE]) and GET then says cancelled with the usage's counts;
#     POST /v1/requests/{id}/cancel does the same;
#   - finished requests: completed, token counts equal to the usage objects;
#   - malformed ids (too long, NUL, high bytes, ../, CR LF): 404, no crash;
#   - without API keys everyone is one tenant.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
[ -d tests/ref/node_modules/openai ] || { echo "skip: the openai client is not installed (make ref)"; exit 77; }
MOECTL=$BUILD/moectl
CHECK=tests/ref/requests_check.mjs

M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 3 --n-ctx 16384 -o "$M" >/dev/null || { bad mkmodel; exit 1; }
MOE_KEY_A=moe-a-$$-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
MOE_KEY_B=moe-b-$$-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
MOE_KEY_SLOW=moe-s-$$-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export MOE_KEY_A MOE_KEY_B MOE_KEY_SLOW
cat >"$TMP/tenants.json" <<EOF
{"tenants": [{"name": "a", "keys": ["$MOE_KEY_A"]}, {"name": "b", "keys": ["$MOE_KEY_B"]},
             {"name": "slow", "keys": ["$MOE_KEY_SLOW"], "rpm": 1}]}
EOF
gateway g --model "$M" --served-model-name tiny --ctx 16384 --tenants "$TMP/tenants.json" || exit 1

node $CHECK ids --base "$GW/v1" --model tiny --ids-out "$TMP/ids" || fail=1
n=0 logged=0
while read -r id; do
    n=$((n + 1))
    grep "request ended" "$TMP/g.log" | grep -q "request_id=$id" && logged=$((logged + 1))
done <"$TMP/ids"
[ "$n" -gt 0 ] && [ "$logged" = "$n" ] &&
    ok "the log carries each generation request's x-request-id ($logged of $n; $(grep -m1 'request ended' "$TMP/g.log" | sed 's/^[^ ]* [^ ]* //' | grep -o 'tenant=[^ ]*\|request_id=[^ ]*' | tr '\n' ' '))" ||
    bad "$logged of $n request ids in the log: $(grep 'request ended' "$TMP/g.log" | head -2)"

node $CHECK isolation --base "$GW/v1" --model tiny || fail=1
node $CHECK finished --base "$GW/v1" --model tiny || fail=1
node $CHECK badids --base "$GW/v1" || fail=1
grep -q "request ended.*end=cancelled.*request_id=req_" "$TMP/g.log" &&
    ok "the cancelled stream's log line: $(grep -m1 'end=cancelled' "$TMP/g.log" | grep -o 'end=[^ ]*\|completion_tokens=[^ ]*\|request_id=[^ ]*' | tr '\n' ' ')" ||
    bad "no cancelled request in the log"
kill -0 "$GPID" 2>/dev/null && ok "the gateway is still up" || bad "the gateway died: $(tail -5 "$TMP/g.log")"
stop "$GPID"
grep -q "ERROR: AddressSanitizer\|runtime error:" "$TMP/g.log" && bad "sanitizer: $(grep -m3 'AddressSanitizer\|runtime error' "$TMP/g.log")"

# ==== Without API keys: one tenant ==============================================
gateway plain --model "$M" --served-model-name tiny || exit 1
node $CHECK notenant --base "$GW/v1" --model tiny || fail=1
stop "$GPID"
grep -q "ERROR: AddressSanitizer\|runtime error:" "$TMP/plain.log" && bad "sanitizer: $(grep -m3 'AddressSanitizer\|runtime error' "$TMP/plain.log")"

# ==== Prompt text in the log only with --log-prompts ==============================
MARK="quokka marmot 7741 zebra"
for lp in off on; do
    gateway "lp$lp" --model "$M" --served-model-name tiny $([ $lp = on ] && echo --log-prompts) || exit 1
    code=$(curl -s -m 60 -o "$TMP/lp.json" -w '%{http_code}' "$GW/v1/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"tiny\",\"prompt\":\"$MARK\",\"max_tokens\":3}")
    stop "$GPID"
    n=$(grep -c "$MARK" "$TMP/lp$lp.log")
    if [ $lp = off ]; then
        [ "$code" = 200 ] && [ "$n" = 0 ] && grep -q "request ended" "$TMP/lp$lp.log" &&
            ok "without --log-prompts the log has no prompt text" || bad "log-prompts off: $code, $n lines with the prompt"
    else
        [ "$code" = 200 ] && grep "request ended" "$TMP/lp$lp.log" | grep -q "$MARK" &&
            grep -q "warn.*--log-prompts" "$TMP/lp$lp.log" &&
            ok "with --log-prompts the request-ended line shows the prompt, and a warning says so" ||
            bad "log-prompts on: $code: $(grep 'request ended\|log-prompts' "$TMP/lp$lp.log" | head -3)"
    fi
done
exit $fail
