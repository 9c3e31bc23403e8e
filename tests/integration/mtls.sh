#!/bin/sh
# Mutual TLS between the engine (moectl, the gateway) and expert-workers
# (issue 14). Certificates made here with openssl: a CA, workers "w1" and
# "rogue" and a client, and a client from another CA. Shown:
# - logits over mTLS bit-identical to the local engine (worker named w1@);
# - the worker refuses a client with no certificate (moectl in plaintext and
#   openssl s_client) and one from another CA;
# - the client refuses a worker whose certificate does not name the id it
#   was given, with a fixed list (w1@ the rogue's address) and through a
#   placement in Redis that names w1 at the rogue's address;
# - a certificate replaced on disk is served to new connections (refresh 1 s);
# - plaintext beyond loopback is refused on both sides without --insecure
#   (nothing is sent: the check comes first), and a worker with --insecure
#   warns; bad certificate files are clear startup errors.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
command -v openssl >/dev/null || { echo "skip: no openssl"; exit 77; }
C="$TMP/certs"
mkdir -p "$C"
# ca NAME ; cert NAME SAN CA
ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$1.key" \
        -subj "/CN=$1" -days 2 -out "$C/$1.pem" 2>/dev/null
}
cert() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$C/$1.key" \
        -subj "/CN=$1" -out "$C/$1.csr" 2>/dev/null &&
        printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" >"$C/$1.ext" &&
        openssl x509 -req -in "$C/$1.csr" -CA "$C/$3.pem" -CAkey "$C/$3.key" -CAcreateserial \
            -days 2 -extfile "$C/$1.ext" -out "$C/$1.pem" 2>/dev/null
}
ca ca && ca otherca && cert w1 DNS:w1 ca && cert rogue DNS:rogue ca && cert client DNS:gateway ca &&
    cert stranger DNS:gateway otherca || { bad "openssl could not make the test certificates"; exit 1; }
tls() { echo "--tls-cert $C/$1.pem --tls-key $C/$1.key --tls-ca $C/${2:-ca}.pem"; }

M="$TMP/m.gguf"
"$BUILD/moectl" mkmodel --arch llama --dtype f32 --seed 3 -o "$M" >/dev/null || bad "mkmodel"
T=1,17,300,42,99,7
# tlsworker NAME CERT [flags] -> ADDR, WPID
tlsworker() {
    name=$1 crt=$2; shift 2
    "$BUILD/expert-worker" --model "$M" --listen 127.0.0.1:0 $(tls "$crt") --tls-refresh-s 1 "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    WPID=$!; PIDS="$PIDS $WPID"
    wait_log "$TMP/$name.out" "listening on" || bad "$name did not start: $(cat "$TMP/$name.err")"
    ADDR=$(sed -n 's/^listening on //p' "$TMP/$name.out")
}
logits() { "$BUILD/moectl" logits "$M" --tokens $T --deadline-ms 3000 "$@"; }

# 1. mTLS: bit-identical to local
tlsworker w1 w1 --worker-id w1; W1=$ADDR; P1=$WPID
logits >"$TMP/local.json" || bad "local logits"
if logits --workers "w1@$W1" $(tls client) >"$TMP/tls.json" 2>"$TMP/tls.err"; then
    cmp -s "$TMP/local.json" "$TMP/tls.json" && ok "logits over mTLS (w1@$W1) bit-identical to the local engine" ||
        bad "logits over mTLS differ from local"
else
    bad "logits over mTLS failed: $(tail -2 "$TMP/tls.err")"
fi
# the env twins
MOE_TLS_CERT=$C/client.pem MOE_TLS_KEY=$C/client.key MOE_TLS_CA=$C/ca.pem MOE_WORKERS="w1@$W1" \
    logits >"$TMP/env.json" 2>"$TMP/env.err" && cmp -s "$TMP/local.json" "$TMP/env.json" &&
    ok "the same with MOE_TLS_CERT/KEY/CA" || bad "MOE_TLS_* twins: $(tail -2 "$TMP/env.err")"

# 2. the worker refuses peers without a valid certificate
refused() { # label expect-in-stderr args...
    label=$1 want=$2; shift 2
    if logits "$@" >/dev/null 2>"$TMP/r.err"; then
        bad "$label: it was served"
    elif grep -q "$want" "$TMP/r.err"; then
        ok "$label: refused ($(grep -m1 "$want" "$TMP/r.err" | cut -c1-150))"
    else
        bad "$label: failed without '$want': $(tail -2 "$TMP/r.err")"
    fi
}
refused "a plaintext client" "w1\|$W1" --workers "$W1"
refused "a client certificate from another CA" "w1\|$W1" --workers "w1@$W1" $(tls stranger otherca)
refused "a client with no certificate of its own" "go together" --workers "w1@$W1" --tls-ca "$C/ca.pem"
# (TLS 1.3: the client finishes its side first; the worker then closes the
# connection instead of reading a byte, which s_client sees within the second)
sclient() { (sleep 1) | openssl s_client -connect "$W1" -CAfile "$C/ca.pem" -servername w1 -alpn h2 "$@" 2>&1 |
    grep -a -i "unexpected eof\|alert\|certificate required\|Verify return code\|subject=" | head -5; }
out=$(sclient)
printf '%s' "$out" | grep -qi "unexpected eof\|alert\|certificate required" &&
    ok "openssl s_client without a client certificate: dropped ($(printf '%s' "$out" | grep -i -m1 'eof\|alert\|required' | cut -c1-90))" ||
    bad "openssl s_client without a client certificate was not refused: $out"
out=$(sclient -cert "$C/client.pem" -key "$C/client.key")
printf '%s' "$out" | grep -q "Verify return code: 0" && ! printf '%s' "$out" | grep -qi "unexpected eof\|alert" &&
    printf '%s' "$out" | grep -q "CN = w1\|CN=w1" &&
    ok "openssl s_client with the client certificate: kept, the worker verified as w1" ||
    bad "openssl s_client with a client certificate: $out"

# 3. a worker whose certificate does not name the id the client was given
tlsworker rogue rogue; R=$ADDR; PR=$WPID
refused "w1@ the rogue's address (its certificate names 'rogue')" "w1\|$R" --workers "w1@$R" $(tls client)
logits --workers "rogue@$R" $(tls client) >"$TMP/rogue.json" 2>"$TMP/rogue.err" &&
    ok "the same worker under its own name is served (the check is the name, not the process)" ||
    bad "rogue@ its own address: $(tail -2 "$TMP/rogue.err")"
# the gateway: serves a chat completion over mTLS from w1, and will not
# start on w1@ the rogue's address
gateway gw --model "$M" --workers "w1@$W1" $(tls client)
if [ -n "$GW" ]; then
    code=$(curl -s -m 30 -o "$TMP/chat.json" -w '%{http_code}' "$GW/v1/chat/completions" \
        -H 'content-type: application/json' \
        -d '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4}')
    [ "$code" = 200 ] && grep -q '"completion_tokens":4' "$TMP/chat.json" &&
        ok "the gateway over mTLS to w1: chat completion 200, 4 tokens" || bad "gateway over mTLS: $code $(head -c 200 "$TMP/chat.json")"
    stop $GPID
fi
"$BUILD/gateway" --listen 127.0.0.1:0 --model "$M" --workers "w1@$R" $(tls client) 2>"$TMP/gwr.log" &
GR=$!; PIDS="$PIDS $GR"
i=0; while [ $i -lt 100 ] && kill -0 $GR 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 $GR 2>/dev/null; then
    bad "a gateway given w1@ the rogue's address is still running"; stop $GR
else
    grep -q "must name 'w1'" "$TMP/gwr.log" && ok "a gateway given w1@ the rogue's address exits: $(grep -o "Hostname[^\"]*must name 'w1'" "$TMP/gwr.log" | head -1)" ||
        bad "gateway w1@ rogue: $(tail -2 "$TMP/gwr.log")"
fi

# ... and through Redis: a placement naming w1 at the rogue's address
. tests/lib/redis.sh
trap 'procs_cleanup; redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT
if redis_start >/dev/null; then
    doc() { # addr -> a placement document giving every expert of every layer to w1 at addr
        node -e '
            const [addr, nl, ne] = process.argv.slice(1);
            const ex = [];
            for (let l = 0; l < +nl; l++) for (let e = 0; e < +ne; e++) ex.push([l, e, ["w1"]]);
            console.log(JSON.stringify({epoch: 7, model: "", workers: {w1: addr}, experts: ex}));' "$1" "$NL" "$NE"
    }
    J=$("$BUILD/moectl" info "$M" --json)
    NL=$(printf '%s' "$J" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).hparams.n_layer)')
    NE=$(printf '%s' "$J" | node -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).hparams.n_expert)')
    rc() { redis-cli -p "$REDIS_PORT" "$@" >/dev/null; }
    rc SET mt:placement:7 "$(doc "$W1")" && rc SET mt:placement:active 7
    logits --redis "$REDIS_URL" --prefix mt $(tls client) >"$TMP/r1.json" 2>"$TMP/r1.err" &&
        cmp -s "$TMP/local.json" "$TMP/r1.json" && ok "through a Redis placement naming w1 at its address: bit-identical" ||
        bad "Redis placement, w1 at its address: $(tail -2 "$TMP/r1.err")"
    rc SET mt:placement:7 "$(doc "$R")"
    refused "a Redis placement naming w1 at the rogue's address" "w1\|$R" --redis "$REDIS_URL" --prefix mt $(tls client)
else
    bad "redis-server did not start"
fi

# 4. reload: the worker's files replaced by a certificate that names w1
cp "$C/rogue.pem" "$C/swap.pem" && cp "$C/rogue.key" "$C/swap.key"
tlsworker swap swap; S=$ADDR
refused "before the renewal, w1@ a worker showing 'rogue'" "w1\|$S" --workers "w1@$S" $(tls client)
cp "$C/w1.key" "$C/swap.key.new" && cp "$C/w1.pem" "$C/swap.pem.new" &&
    mv "$C/swap.key.new" "$C/swap.key" && mv "$C/swap.pem.new" "$C/swap.pem"
i=0; okr=0
while [ $i -lt 20 ]; do # up to ~10 s: the refresh is 1 s
    sleep 0.5
    if logits --workers "w1@$S" $(tls client) >"$TMP/sw.json" 2>/dev/null; then okr=1; break; fi
    i=$((i + 1))
done
[ $okr = 1 ] && cmp -s "$TMP/local.json" "$TMP/sw.json" &&
    ok "after the files were replaced, the same worker process serves w1@ (within $(((i + 1) * 5 / 10)) s)" ||
    bad "the replaced certificate was not picked up"

# 5. plaintext beyond loopback, and bad files
"$BUILD/expert-worker" --model "$M" --listen 0.0.0.0:0 >/dev/null 2>"$TMP/open.err"
r=$?
[ $r = 2 ] && grep -q "insecure" "$TMP/open.err" && ok "a plaintext worker on 0.0.0.0: exit 2, $(cut -c1-150 "$TMP/open.err")" ||
    bad "a plaintext worker on 0.0.0.0: exit $r, $(cat "$TMP/open.err")"
"$BUILD/expert-worker" --model "$M" --listen 0.0.0.0:0 --insecure >"$TMP/ins.out" 2>"$TMP/ins.err" &
PI=$!; PIDS="$PIDS $PI"
wait_log "$TMP/ins.out" "listening on" && grep -qi "warn.*plaintext" "$TMP/ins.err" &&
    ok "with --insecure it serves and warns: $(grep -i -m1 plaintext "$TMP/ins.err" | cut -c1-120)" ||
    bad "--insecure worker: $(cat "$TMP/ins.err")"
stop $PI
refused "a client to a non-loopback worker without TLS (192.0.2.1, never dialled)" "insecure" --workers 192.0.2.1:50051
: >"$C/empty.pem"
for what in "--tls-cert $C/empty.pem --tls-key $C/w1.key --tls-ca $C/ca.pem:no PEM certificate" \
    "--tls-cert $C/w1.pem --tls-key $C/rogue.key --tls-ca $C/ca.pem:is not the key" \
    "--tls-cert $C/stranger.pem --tls-key $C/stranger.key --tls-ca $C/ca.pem:does not verify" \
    "--tls-cert $C/rogue.pem --tls-key $C/rogue.key --tls-ca $C/ca.pem --worker-id w1:does not name" \
    "--tls-cert $C/w1.pem --tls-ca $C/ca.pem:go together"; do
    args=${what%%:*} want=${what#*:}
    "$BUILD/expert-worker" --model "$M" --listen 127.0.0.1:0 $args >/dev/null 2>"$TMP/bad.err"
    r=$?
    [ $r = 2 ] && grep -q "$want" "$TMP/bad.err" && ok "worker $(echo "$args" | sed "s|$C/||g"): exit 2, $(cut -c1-110 "$TMP/bad.err")" ||
        bad "worker $args: exit $r, $(cat "$TMP/bad.err")"
done
exit $fail
