#!/bin/sh
# The gateway as clients use it: the official openai client (chat,
# completions, streams, include_usage, logprobs, n, seeds, stop strings,
# errors; 64 concurrent streams), then every error status provoked with curl,
# a client that disconnects mid-stream (its slot is freed: the metrics show
# it), a full queue, a deadline, experts that become unavailable, the
# loopback-only rule, and a graceful stop that finishes a running stream.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
MOECTL=$BUILD/moectl GATEWAY=$BUILD/gateway
. tests/ref/env.sh
[ -d tests/ref/node_modules/openai ] || { echo "skip: the openai client is not installed (make ref)"; exit 77; }
# status LABEL WANT CURL-ARGS...: the HTTP status and an OpenAI error object
status() {
    label=$1 want=$2; shift 2
    code=$(curl -s -m 30 -o "$TMP/body" -w '%{http_code}' "$@")
    if [ "$code" = "$want" ] && { [ "$want" = 200 ] || [ "${PLAIN:-0}" = 1 ] || grep -q '"error":{"message":"' "$TMP/body"; }; then
        ok "$label: $code $(head -c 150 "$TMP/body")"
    else
        bad "$label: want $want, got $code: $(head -c 300 "$TMP/body")"
    fi
}
metric() { curl -s -m 10 "$GW/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
# wait_freed N: up to 5 s for no KV slot in use and more than N cancelled
# requests; sets USED, ENDED and i (tenths of a second waited)
wait_freed() {
    i=0
    while [ $i -lt 50 ]; do
        USED=$(metric moemesh_gateway_kv_slots_used)
        ENDED=$(metric 'moemesh_gateway_requests_ended_total{reason="cancelled"}')
        [ "$USED" = 0 ] && [ "${ENDED:-0}" -gt "$1" ] && return 0
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 3 --n-ctx 16384 -o "$M" >/dev/null || { bad mkmodel; exit 1; }
gateway main --model "$M" --served-model-name tiny --max-seqs 64 --ctx 16384 --max-body 64K || exit 1

# ---- the official client
node tests/ref/openai_check.mjs api --base "$GW/v1" --model tiny || fail=1
node tests/ref/openai_check.mjs streams --base "$GW/v1" --model tiny --n 64 --tokens 16 || fail=1

# ---- every status, with curl
J='Content-Type: application/json'
status "GET /healthz" 200 "$GW/healthz"
status "GET /readyz" 200 "$GW/readyz"
code=$(curl -s -m 10 -I -o "$TMP/head" -w '%{http_code}' "$GW/v1/models")
[ "$code" = 200 ] && grep -qi '^Content-Length: [1-9]' "$TMP/head" && ok "HEAD /v1/models: 200, the GET's headers" || bad "HEAD: $code"
status "unknown route" 404 "$GW/v2/chat"
status "unknown model" 404 -H "$J" -d '{"model":"gpt-4","prompt":"x"}' "$GW/v1/completions"
status "GET on a POST route" 405 "$GW/v1/chat/completions"
grep -q . "$TMP/body" && curl -s -m 10 -D - -o /dev/null "$GW/v1/chat/completions" | grep -qi '^Allow: POST' &&
    ok "405 names the allowed method" || bad "405 without Allow"
status "POST on a GET route" 405 -d '{}' "$GW/v1/models"
status "malformed JSON" 400 -H "$J" -d '{"model":"tiny","prompt":' "$GW/v1/completions"
status "not an object" 400 -H "$J" -d '[1,2]' "$GW/v1/completions"
status "missing prompt" 400 -H "$J" -d '{"model":"tiny"}' "$GW/v1/completions"
status "token id out of range" 400 -H "$J" -d '{"model":"tiny","prompt":[1,2,999999]}' "$GW/v1/completions"
status "max_tokens -1" 400 -H "$J" -d '{"model":"tiny","prompt":"x","max_tokens":-1}' "$GW/v1/completions"
status "top_p 0" 400 -H "$J" -d '{"model":"tiny","prompt":"x","top_p":0}' "$GW/v1/completions"
status "stream not a bool" 400 -H "$J" -d '{"model":"tiny","prompt":"x","stream":"yes"}' "$GW/v1/completions"
status "echo with logprobs" 400 -H "$J" -d '{"model":"tiny","prompt":"x","echo":true,"logprobs":1}' "$GW/v1/completions"
head -c 70000 /dev/zero | tr '\0' 'a' | sed 's/^/{"model":"tiny","prompt":"/; s/$/"}/' >"$TMP/big.json"
status "body over --max-body" 413 -H "$J" --data-binary @"$TMP/big.json" "$GW/v1/completions"
printf '{"model":"tiny","prompt":[%s1]}' "$(yes 5, | head -16400 | tr -d '\n')" >"$TMP/long.json"
status "prompt longer than the context" 413 -H "$J" --data-binary @"$TMP/long.json" "$GW/v1/completions"
status "n x prompts over --max-seqs" 400 -H "$J" -d "{\"model\":\"tiny\",\"prompt\":[$(yes '"a",' | head -9 | tr -d '\n')\"a\"],\"n\":8}" "$GW/v1/completions"
status "tokenize" 200 -H "$J" -d '{"model":"tiny","prompt":"hello"}' "$GW/tokenize"
status "detokenize a bad id" 400 -H "$J" -d '{"tokens":[-1]}' "$GW/detokenize"

# ---- a client that disconnects mid-stream frees its slot
ended0=$(metric 'moemesh_gateway_requests_ended_total{reason="cancelled"}'); ended0=${ended0:-0}
curl -sN -m 60 -H "$J" -d '{"model":"tiny","prompt":"go on","max_tokens":15000,"ignore_eos":true,"stream":true}' \
    "$GW/v1/completions" 2>/dev/null | head -c 3000 >/dev/null
wait_freed "$ended0"; used=$USED ended=$ENDED
gen=$(metric moemesh_gateway_generation_tokens_total)
[ "$used" = 0 ] && [ "${ended:-0}" -gt "$ended0" ] &&
    ok "a disconnected stream is cancelled and its slot freed within $((i * 100)) ms (kv_slots_used 0, ended{cancelled} $ended, tokens generated in all: $gen)" ||
    bad "after a disconnect: kv_slots_used $used, ended{cancelled} $ended"
# ... and so does one that waits for a whole (not streamed) response
curl -s -m 1 -H "$J" -d '{"model":"tiny","prompt":"go on","max_tokens":15000,"ignore_eos":true}' \
    "$GW/v1/completions" >/dev/null 2>&1
wait_freed "$ended"; used=$USED ended1=$ENDED
[ "$used" = 0 ] && [ "${ended1:-0}" -gt "$ended" ] &&
    ok "a client that gives up on a non-streamed request: cancelled, slot freed within $((i * 100)) ms of its hang-up" ||
    bad "after a non-streamed hang-up: kv_slots_used $used, ended{cancelled} $ended1"
stop $GPID

# ---- a full queue: 503 at once; a deadline: 504
gateway small --model "$M" --served-model-name tiny --max-seqs 1 --max-queue 1 --ctx 16384 --request-timeout 3s || exit 1
LONG='{"model":"tiny","prompt":"a","max_tokens":15000,"ignore_eos":true}'
curl -s -m 30 -o "$TMP/a.out" -w '%{http_code}' -H "$J" -d "$LONG" "$GW/v1/completions" >"$TMP/a.code" &
A=$!
i=0; while [ $i -lt 50 ] && [ "$(metric moemesh_gateway_running_sequences)" != 1 ]; do sleep 0.1; i=$((i + 1)); done
curl -s -m 30 -o "$TMP/b.out" -w '%{http_code}' -H "$J" -d "$LONG" "$GW/v1/completions" >"$TMP/b.code" &
B=$!
i=0; while [ $i -lt 50 ] && [ "$(metric moemesh_gateway_queue_depth)" != 1 ]; do sleep 0.1; i=$((i + 1)); done
status "queue full" 503 -H "$J" -d "$LONG" "$GW/v1/completions"
wait $A; wait $B
[ "$(cat "$TMP/a.code")" = 504 ] && grep -q deadline "$TMP/a.out" &&
    ok "a request past --request-timeout: 504 $(head -c 150 "$TMP/a.out")" || bad "deadline: $(cat "$TMP/a.code") $(head -c 200 "$TMP/a.out")"
code=$(cat "$TMP/b.code")
{ [ "$code" = 503 ] || [ "$code" = 504 ]; } && ok "the queued request passed its deadline too: $code" || bad "queued request: $code"
stop $GPID

# ---- experts that become unavailable: 503 with the reason, /readyz says so
worker w "$M" all; WP=$WPID
gateway remote --model "$M" --served-model-name tiny --workers "$ADDR" --deadline-ms 2s --ctx 256 || exit 1
# a text that cannot fit the context is refused by its size, before the tokenizer runs
head -c 60000 /dev/zero | tr '\0' 'a' | sed 's/^/{"model":"tiny","prompt":"/; s/$/"}/' >"$TMP/text.json"
status "a 60 kB text prompt for a 256-position context" 413 -H "$J" --data-binary @"$TMP/text.json" "$GW/v1/completions"
grep -q '"the prompt is 60000 bytes' "$TMP/body" && ok "... refused by its size, untokenized" || bad "text size check: $(head -c 200 "$TMP/body")"
status "completion with experts on a worker" 200 -H "$J" -d '{"model":"tiny","prompt":"x","max_tokens":4}' "$GW/v1/completions"
stop $WP
status "the only worker is gone" 503 -H "$J" -d '{"model":"tiny","prompt":"x","max_tokens":4}' "$GW/v1/completions"
PLAIN=1 status "/readyz after a failed step" 503 "$GW/readyz"
stop $GPID

# ---- loopback only without API keys
"$GATEWAY" --model "$M" --listen 0.0.0.0:0 2>"$TMP/open.err" >/dev/null
rc=$?
[ $rc = 2 ] && grep -q insecure-no-auth "$TMP/open.err" && ok "a non-loopback --listen is refused without --insecure-no-auth" ||
    bad "non-loopback listen: rc $rc $(cat "$TMP/open.err")"

# ---- SIGTERM: the running stream finishes, new requests get 503, exit 0
gateway drain --model "$M" --served-model-name tiny --ctx 16384 || exit 1
curl -sN -m 60 -H "$J" -d '{"model":"tiny","prompt":"a","max_tokens":3000,"ignore_eos":true,"stream":true}' \
    "$GW/v1/completions" >"$TMP/drain.out" 2>/dev/null &
C=$!
i=0; while [ $i -lt 50 ] && [ "$(metric moemesh_gateway_running_sequences)" != 1 ]; do sleep 0.1; i=$((i + 1)); done
kill -TERM $GPID
sleep 0.2
status "a request while draining" 503 -H "$J" -d '{"model":"tiny","prompt":"x","max_tokens":2}' "$GW/v1/completions"
wait $C
i=0; while [ $i -lt 100 ] && kill -0 $GPID 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
wait $GPID; rc=$?
tail -c 20 "$TMP/drain.out" | grep -q 'data: \[DONE\]' && [ $rc = 0 ] &&
    ok "SIGTERM: the running stream finished ($(grep -c '^data: {' "$TMP/drain.out") chunks), exit 0" ||
    bad "drain: rc $rc, stream end: $(tail -c 100 "$TMP/drain.out")"
exit $fail
