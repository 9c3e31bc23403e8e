#!/bin/sh
# `make run`'s launcher, deploy/cluster.sh (issue 16), with a tiny model, a
# free PORT and REDIS_PORT and a RUN_DIR of its own:
#   - it prints "API key: ..." (bounded wait), a curl command that streams a
#     chat completion with that key (run as printed), and the printed openai
#     snippets: Node.js's run as printed (it streams), Python's run where
#     python3 has openai, else parsed; no key: 401; the key file is mode 0600;
#   - every service runs secured: a worker refuses a plaintext gRPC client
#     and an openssl s_client without a client certificate; Redis refuses
#     the default user (NOAUTH);
#   - SIGINT: the launcher exits 0 and every process it started (its pids
#     file) is gone; a stale pids file does not stop the next run, which
#     comes up on the same port with the same key (only a certificate due
#     within a day is made again), refuses a second launcher on its RUN_DIR
#     and stops on SIGTERM; after a launcher killed with SIGKILL,
#     `cluster.sh stop` ends the services it left.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
for c in redis-server redis-cli openssl setsid curl; do
    command -v $c >/dev/null 2>&1 || { echo "skip: no $c (make deps)"; exit 77; }
done
# freeports: two distinct free ports, "A B" (both held open until both are
# known: two separate calls once returned the same port for the gateway and
# Redis)
freeports() {
    node -e 'const net = require("net"), a = net.createServer(), b = net.createServer();
        a.listen(0, "127.0.0.1", () => b.listen(0, "127.0.0.1", () => {
            console.log(a.address().port + " " + b.address().port); a.close(); b.close(); }));'
}
RUN=$TMP/run
M=$TMP/tiny.gguf
"$BUILD/moectl" mkmodel --arch llama --dtype f32 --seed 7 -o "$M" >/dev/null || { bad "mkmodel"; exit 1; }
ports=$(freeports)
PORT=${ports% *} RP=${ports#* }
[ -n "$PORT" ] && [ -n "$RP" ] && [ "$PORT" != "$RP" ] || { bad "no free ports ('$ports')"; exit 1; }
BASE=http://127.0.0.1:$PORT
export BUILD

# launch NAME: starts the launcher (SIGINT at its default: a background job
# of a script would ignore it) -> LPID; waits up to 60 s for "API key:"
launch() {
    : >"$TMP/$1.out"
    env --default-signal=INT MODEL="$M" PORT="$PORT" REDIS_PORT="$RP" RUN_DIR="$RUN" THREADS=1 READY_TIMEOUT=50 \
        sh deploy/cluster.sh >"$TMP/$1.out" 2>&1 &
    LPID=$!; PIDS="$PIDS $LPID"
    i=0
    while [ $i -lt 600 ] && kill -0 $LPID 2>/dev/null && ! grep -q "^API key: " "$TMP/$1.out"; do
        sleep 0.1; i=$((i + 1))
    done
    if ! grep -q "^API key: " "$TMP/$1.out"; then
        bad "$1: no 'API key:' line within 60 s: $(tail -n 20 "$TMP/$1.out")"
        return 1
    fi
    ok "$1: 'API key:' printed after $((i / 10)).$((i % 10)) s ($(grep -m1 '^== ready' "$TMP/$1.out"))"
    KEY=$(sed -n 's/^API key: //p' "$TMP/$1.out")
    # the services' pids, for the checks and for cleanup if this test fails
    SVC=$(awk '{ print $2 }' "$RUN/pids")
    PIDS="$PIDS $SVC"
}
# streamed NAME: runs the printed curl command; a streamed completion arrives
streamed() {
    line=$(grep -m1 '^ *curl -N ' "$TMP/$1.out")
    [ -n "$line" ] || { bad "$1: no curl command printed"; return; }
    sh -c "$line -s -m 30" >"$TMP/$1.sse" 2>&1
    n=$(grep -c '^data: {.*"delta":{"content"' "$TMP/$1.sse")
    [ "$n" -ge 1 ] && grep -q '^data: \[DONE\]' "$TMP/$1.sse" &&
        ok "$1: the printed curl command streamed $n content chunks and [DONE]" ||
        bad "$1: the printed curl command: $(head -c 300 "$TMP/$1.sse")"
}
# stopped NAME SIGNAL: the launcher exits 0 within 45 s, no service is left
stopped() {
    kill -"$2" $LPID
    i=0
    while [ $i -lt 450 ] && kill -0 $LPID 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $LPID 2>/dev/null; then bad "$1: the launcher still runs 45 s after SIG$2"; return; fi
    wait $LPID; rc=$?
    left=""
    for p in $SVC; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
    [ $rc = 0 ] && [ -z "$left" ] && [ ! -e "$RUN/pids" ] &&
        ok "$1: SIG$2: the launcher exited 0 in $((i / 10)).$((i % 10)) s; all of its processes are gone ($(echo $SVC)); pids file removed" ||
        bad "$1: SIG$2: exit $rc, still running:$left, $(tail -n 8 "$TMP/$1.out")"
}

# ==== First run ===============================================================
launch run1 || exit 1
streamed run1
# the printed openai snippets, run as printed: Node.js with tests/ref's
# openai package; Python where python3 has the openai package, else parsed
snippet() {
    awk -v s="$2" -v q="'" 'index($0, s) == 1 || index($0, "  " s) == 1 { on = 1; n = 0 }
        on { print; n++ } on && n > 1 && substr($0, length($0)) == q { exit }' "$TMP/$1.out"
}
if [ -d tests/ref/node_modules/openai ]; then
    snippet run1 "node --input-type=module -e '" >"$TMP/snippet.sh"
    (cd tests/ref && timeout 60 sh "$TMP/snippet.sh") >"$TMP/openai.out" 2>"$TMP/openai.err"
    rc=$? n=$(wc -c <"$TMP/openai.out")
    [ -s "$TMP/snippet.sh" ] && [ $rc = 0 ] && [ "$n" -ge 2 ] &&
        ok "the printed Node.js openai snippet streamed $n bytes of text: $(head -c 60 "$TMP/openai.out" | tr '\n' ' ')" ||
        bad "the printed Node.js openai snippet ($(wc -l <"$TMP/snippet.sh") lines, exit $rc): $(tail -3 "$TMP/openai.err")"
fi
snippet run1 "python3 -c '" >"$TMP/snippet.py.sh"
if ! command -v python3 >/dev/null 2>&1; then
    echo "note: no python3: the printed Python snippet is not checked"
elif python3 -c 'import openai' 2>/dev/null; then
    timeout 60 sh "$TMP/snippet.py.sh" >"$TMP/openai.py.out" 2>&1 && [ -s "$TMP/openai.py.out" ] &&
        ok "the printed Python openai snippet streamed: $(head -c 60 "$TMP/openai.py.out" | tr '\n' ' ')" ||
        bad "the printed Python openai snippet: $(tail -3 "$TMP/openai.py.out")"
else
    # the code between the quotes, with the shell's quoting undone
    sed "s/^python3 -c /printf '%s\\\\n' /" "$TMP/snippet.py.sh" | sh >"$TMP/snippet.py" 2>/dev/null
    python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' "$TMP/snippet.py" 2>"$TMP/ast.err" &&
        grep -q "^for chunk in stream" "$TMP/snippet.py" &&
        ok "the printed Python openai snippet parses ($(wc -l <"$TMP/snippet.py") lines; python3 has no openai package here to run it)" ||
        bad "the printed Python openai snippet does not parse: $(tail -2 "$TMP/ast.err")"
fi
code=$(curl -s -m 10 -o "$TMP/nokey" -w '%{http_code}' "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":2}')
[ "$code" = 401 ] && grep -q invalid_api_key "$TMP/nokey" && ok "no key: 401 invalid_api_key" || bad "no key: $code $(head -c 200 "$TMP/nokey")"
[ "$(stat -c %a "$RUN/api-key")" = 600 ] && [ "$(cat "$RUN/api-key")" = "$KEY" ] && ok "the key is kept in RUN_DIR/api-key, mode 0600" ||
    bad "api-key file: $(stat -c %a "$RUN/api-key")"
# TLS on the workers
W1=$(sed -n 's/^listening on //p' "$RUN/logs/w1.log" | head -1)
if [ -z "$W1" ]; then
    bad "no worker address in $RUN/logs/w1.log"
else
    if "$BUILD/moectl" logits "$M" --tokens 1,2,3 --workers "$W1" --deadline-ms 3000 >/dev/null 2>"$TMP/plain.err"; then
        bad "w1 ($W1) served a plaintext gRPC client"
    else
        ok "w1 ($W1) refuses a plaintext gRPC client: $(head -1 "$TMP/plain.err" | cut -c1-110)"
    fi
    out=$( (sleep 1) | openssl s_client -connect "$W1" -CAfile "$RUN/certs/ca.pem" -servername w1 -alpn h2 2>&1 |
        grep -a -i "unexpected eof\|alert\|certificate required" | head -1)
    [ -n "$out" ] && ok "openssl s_client without a client certificate: dropped ($(echo "$out" | cut -c1-80))" ||
        bad "openssl s_client without a client certificate was not refused"
    "$BUILD/moectl" logits "$M" --tokens 1,2,3 --workers "w1@$W1" --tls-cert "$RUN/certs/gateway.pem" \
        --tls-key "$RUN/certs/gateway.key" --tls-ca "$RUN/certs/ca.pem" --deadline-ms 3000 >/dev/null 2>"$TMP/tls.err" &&
        ok "with the gateway's certificate, w1 serves (the certificates are the launcher's)" || bad "mTLS to w1: $(tail -2 "$TMP/tls.err")"
fi
# Redis: the default user is off
out=$(redis-cli -p "$RP" get moemesh:placement:active 2>&1)
echo "$out" | grep -q "NOAUTH\|NOPERM\|WRONGPASS" && ok "Redis refuses the default user: $out" || bad "Redis without auth: $out"
grep -q "^user default off" "$RUN/redis/users.acl" && ok "the ACL file turns the default user off" || bad "users.acl: $(head -1 "$RUN/redis/users.acl")"
stopped run1 INT

# ==== Second run: a stale pids file, the same port, the same key ============
echo "gateway $$" >"$RUN/pids" # alive, but not the launcher's
# w2's certificate about to expire (within a day): made again, nothing else
C=$RUN/certs
openssl req -new -key "$C/w2.key" -subj /CN=w2 -out "$TMP/w2.csr" 2>/dev/null
printf 'subjectAltName=DNS:w2\n' >"$TMP/w2.ext"
openssl x509 -req -in "$TMP/w2.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 1 \
    -extfile "$TMP/w2.ext" -out "$C/w2.pem" 2>/dev/null || bad "openssl: a short-lived w2 certificate"
K1=$KEY
launch run2 || exit 1
[ "$KEY" = "$K1" ] && grep -q "kept from an earlier run" "$TMP/run2.out" && ok "run2: on the same port with the same key" ||
    bad "run2: key $KEY, was $K1"
new=$(grep "a new CA\|a certificate for\|wrote a new password" "$TMP/run2.out" | tr -s ' ' | tr '\n' ';')
[ "$new" = " a certificate for w2 (DNS:w2);" ] && openssl x509 -checkend 86400 -noout -in "$C/w2.pem" >/dev/null &&
    ok "run2: only w2's certificate, due within a day, was made again (the CA, others and passwords reused)" ||
    bad "run2 made: $new"
streamed run2
# a second launcher on the same RUN_DIR while this one runs: refused, harmless
MODEL="$M" PORT="$PORT" REDIS_PORT="$RP" RUN_DIR="$RUN" timeout 20 sh deploy/cluster.sh >"$TMP/dup.out" 2>&1
rc=$?
[ $rc = 1 ] && grep -q "still running" "$TMP/dup.out" && [ -s "$RUN/pids" ] &&
    curl -s -m 5 -o /dev/null -w '%{http_code}' "$BASE/readyz" | grep -q 200 &&
    ok "a second launcher on the same RUN_DIR: exit 1, $(cut -c1-90 "$TMP/dup.out")...; the first still serves" ||
    bad "a second launcher: exit $rc, $(cat "$TMP/dup.out")"
stopped run2 TERM

# ==== A launcher killed with SIGKILL: `cluster.sh stop` ends what it left ====
launch run3 || exit 1
kill -KILL $LPID; wait $LPID 2>/dev/null
left=""; for p in $SVC; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
RUN_DIR="$RUN" timeout 60 sh deploy/cluster.sh stop >"$TMP/stop.out" 2>&1
rc=$?
# (orphans now: init reaps them, a zombie is gone too)
running() { for p in $SVC; do [ -r /proc/$p/stat ] && ! grep -q '^[0-9]* ([^)]*) [ZX]' /proc/$p/stat && echo $p; done; }
i=0; while [ $i -lt 50 ] && [ -n "$(running)" ]; do sleep 0.1; i=$((i + 1)); done
[ -n "$left" ] && [ $rc = 0 ] && [ -z "$(running)" ] && [ ! -e "$RUN/pids" ] &&
    ok "after a SIGKILLed launcher, 'cluster.sh stop' stopped what it left ($(echo $left)) in order" ||
    bad "cluster.sh stop: exit $rc, left before:$left, after: $(running), $(cat "$TMP/stop.out")"
exit $fail
