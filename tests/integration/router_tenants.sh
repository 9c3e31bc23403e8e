#!/bin/sh
# router-svc reads which tenants heat which experts (P:load:<b>:tenants,
# router-svc/router_tload.c) with a real redis-server:
#   A. a real gateway with two tenants (acme, beta: moectl tenant add) writes
#      the tenant load; router-svc's moemesh_router_expert_tenant_rows series
#      equal the rows in the two buckets it read (HGETALL here), and those
#      equal moectl's routing count of each tenant's prompts; /v1/tenant-load
#      shows the experts with the most rows, each with its tenants by rows.
#   B. fields written by hand beside malformed ones (no '|', a bad name, an
#      expert outside the model, values that are no count, a key that is not
#      a hash): the valid rows exactly, the rest skipped and counted by
#      reason; a hot expert's replication names its tenants with their share.
#   C. a bucket of 70000 fields of 4375 tenants: read up to the caps (65536
#      fields by HSCAN, 1024 tenants), the rest skipped, counted and logged.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
. tests/lib/redis.sh
trap 'procs_cleanup; redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT
redis_start >/dev/null || { echo "skip: redis-server did not start"; exit 77; }
OUT=""
RC="redis-cli -p $REDIS_PORT"
M="$TMP/m.gguf"
"$BUILD/moectl" mkmodel --arch qwen2moe --dtype f32 --seed 4 -o "$M" >/dev/null || { bad "mkmodel"; exit 1; }

# rworker NAME PREFIX: an expert-worker that registers in Redis
rworker() {
    "$BUILD/expert-worker" --model "$M" --listen 127.0.0.1:0 --redis "$REDIS_URL" --prefix "$2" \
        --capacity 1G --lease-ms 1500 >"$TMP/$1.out" 2>"$TMP/$1.err" &
    PIDS="$PIDS $!"
}
# router NAME PREFIX ARGS... -> RPORT (its HTTP port), RPID; log: $TMP/NAME.err
router() {
    name=$1 prefix=$2; shift 2
    "$BUILD/router-svc" --redis "$REDIS_URL" --prefix "$prefix" --listen 127.0.0.1:0 \
        --settle-ms 300 --rebalance-ms 1000 --halflife-ms 1000 --id "$name" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    RPID=$!; PIDS="$PIDS $RPID"
    wait_log "$TMP/$name.out" listening || bad "$name did not start: $(tail -3 "$TMP/$name.err")"
    RPORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/$name.out")
}
has_active() { [ -n "$($RC get "$1:placement:active")" ]; }
wait_for() { # SECONDS CMD...: until CMD succeeds (every 0.2 s)
    n=$(($1 * 5)); shift; i=0
    while [ $i -lt $n ]; do "$@" && return 0; sleep 0.2; i=$((i + 1)); done
    return 1
}
# snap PREFIX: /v1/tenant-load, /metrics, /v1/tenant-load again, and the
# tenant load hashes of the buckets read ($TMP/snap.json, metrics, redis.txt);
# fails when the buckets moved between the two reads
snap() {
    curl -s -m 5 "http://127.0.0.1:$RPORT/v1/tenant-load" >"$TMP/snap.json"
    curl -s -m 5 "http://127.0.0.1:$RPORT/metrics" >"$TMP/metrics"
    curl -s -m 5 "http://127.0.0.1:$RPORT/v1/tenant-load" >"$TMP/snap2.json"
    b=$(node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(j.buckets.join(" "))' "$TMP/snap.json" 2>/dev/null) || return 1
    b2=$(node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(j.buckets.join(" "))' "$TMP/snap2.json" 2>/dev/null) || return 1
    [ "$b" = "$b2" ] || return 1
    : >"$TMP/redis.txt"
    for k in $b; do [ "$($RC type "$1:load:$k:tenants")" = hash ] && $RC hgetall "$1:load:$k:tenants" >>"$TMP/redis.txt"; done
    return 0
}
# check_rows ROUTES: the metric series against the rows in Redis (and, with
# ROUTES "tenant=file,file;...", against moectl's count); prints a JSON verdict
check_rows() {
    node -e '
        const fs = require("fs");
        const [tmp, routes] = process.argv.slice(1);
        const lines = fs.readFileSync(`${tmp}/redis.txt`, "utf8").split("\n").filter((x) => x);
        const red = new Map(); // "tenant|L:E" -> rows in the two buckets (the model: 2 x 8 experts)
        for (let i = 0; i + 1 < lines.length; i += 2)
            if (/^([A-Za-z0-9][A-Za-z0-9._-]*|\(none\)|\(other\))\|[01]:[0-7]$/.test(lines[i]) && /^\d{1,16}$/.test(lines[i + 1]) && Number(lines[i + 1]) <= 1e15)
                red.set(lines[i], (red.get(lines[i]) || 0) + Number(lines[i + 1]));
        const m = fs.readFileSync(`${tmp}/metrics`, "utf8");
        const series = [...m.matchAll(/^moemesh_router_expert_tenant_rows\{layer="(\d+)",expert="(\d+)",tenant="([^"]*)"\} (\d+)/gm)];
        const off = series.filter(([, l, e, t, v]) => red.get(`${t}|${l}:${e}`) !== Number(v));
        const tot = new Map(); // expert -> all tenants rows
        for (const [k, v] of red) { const le = k.split("|")[1]; tot.set(le, (tot.get(le) || 0) + v); }
        const j = JSON.parse(fs.readFileSync(`${tmp}/snap.json`, "utf8"));
        const shown = new Set(j.experts.map((x) => `${x.layer}:${x.expert}`));
        const minShown = Math.min(...j.experts.map((x) => x.rows));
        const hidden = [...tot].filter(([le, v]) => !shown.has(le) && (j.experts.length < 10 || v > minShown));
        const wrongTotal = j.experts.filter((x) => tot.get(`${x.layer}:${x.expert}`) !== x.rows);
        const unsorted = j.experts.filter((x) => x.tenants.some(([, r], i) => i && r > x.tenants[i - 1][1]));
        let moectl = null;
        if (routes) {
            const want = new Map();
            for (const part of routes.split(";")) {
                const [t, files] = part.split("=");
                for (const f of files.split(","))
                    for (const [l, e, r] of JSON.parse(fs.readFileSync(`${tmp}/${f}.json`, "utf8")).routes)
                        want.set(`${t}|${l}:${e}`, (want.get(`${t}|${l}:${e}`) || 0) + r);
            }
            const keys = new Set([...want.keys(), ...red.keys()]);
            moectl = [...keys].filter((k) => want.get(k) !== red.get(k)).length;
        }
        console.log(JSON.stringify({ series: series.length, off: off.length, experts: j.experts.length,
            hidden_busier: hidden.length, wrong_totals: wrongTotal.length, unsorted: unsorted.length,
            redis_fields: red.size, moectl_differs: moectl, tenants: j.tenants, skipped: j.skipped,
            top: j.experts[0] }));
    ' "$TMP" "${1:-}"
}

# ==== A: a real gateway, two tenants =========================================
A=ta$$
rworker a1 $A
router ra $A --min-replicas 1 --target-load 1000000
RA=$RPID
wait_for 20 has_active $A || bad "A: no placement: $(tail -3 "$TMP/ra.err")"
KA=$("$BUILD/moectl" tenant add acme --redis "$REDIS_URL" --prefix $A | sed -n 's/.*"key": "\([^"]*\)".*/\1/p')
KB=$("$BUILD/moectl" tenant add beta --redis "$REDIS_URL" --prefix $A | sed -n 's/.*"key": "\([^"]*\)".*/\1/p')
[ -n "$KA" ] && [ -n "$KB" ] || bad "moectl tenant add"
P1=5,17,300,42,99,7,256,5,64,128,255,3,9,100,12,77
P2=11,2,3,4,500,6,7,8,9,10,444,12
P3=30,31,32,33,34,35,36,37,38,39
for p in $P1 $P2 $P3; do "$BUILD/moectl" logits "$M" --tokens "$p" --routes >"$TMP/r$p.json" || bad "moectl logits --routes"; done
mv "$TMP/r$P1.json" "$TMP/r1.json"; mv "$TMP/r$P2.json" "$TMP/r2.json"; mv "$TMP/r$P3.json" "$TMP/r3.json"
# start at least 3 s before a bucket ends: everything lands in one or two buckets
while [ $(($(date +%s) % 10)) -ge 6 ]; do sleep 0.5; done
gateway gw --model "$M" --tenants-redis "$REDIS_URL" --prefix $A || exit 1
i=0
while [ $i -lt 50 ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/readyz")" != 200 ]; do sleep 0.1; i=$((i + 1)); done
send() { # key prompt
    code=$(curl -s -m 30 -o "$TMP/c.json" -w '%{http_code}' "$GW/v1/completions" -H "Authorization: Bearer $1" \
        -H 'content-type: application/json' -d "{\"model\":\"m\",\"prompt\":[$2],\"max_tokens\":1}")
    [ "$code" = 200 ] || bad "completion: $code $(head -c 200 "$TMP/c.json")"
}
send "$KA" "$P1"
send "$KB" "$P2"
send "$KB" "$P3"
stop $GPID # its last report goes out at the stop
t0=$(date +%s)
rows_ok() { snap $A && OUT=$(check_rows "acme=r1;beta=r2,r3") && case $OUT in *'"off":0,'*'"hidden_busier":0,"wrong_totals":0,"unsorted":0,'*'"moectl_differs":0,'*) ;; *) false ;; esac; }
if wait_for 8 rows_ok; then
    ok "A: router-svc's tenant rows equal Redis' and moectl's count ($(($(date +%s) - t0)) s after the gateway stopped): $OUT"
else
    bad "A: tenant rows: ${OUT:-no snapshot} $(head -c 300 "$TMP/snap.json")"
fi
case $OUT in
*'"series":0,'*) bad "A: no series" ;;
*'"tenants":2,'*) ok "A: two tenants seen" ;;
*) bad "A: tenants: $OUT" ;;
esac

# ==== B: hand-written fields, malformed ones, a hot expert ====================
B=tb$$
rworker b1 $B
rworker b2 $B
router rb $B --min-replicas 1 --target-load 5000
wait_for 20 has_active $B || bad "B: no placement: $(tail -3 "$TMP/rb.err")"
while [ $(($(date +%s) % 10)) -ge 5 ]; do sleep 0.5; done
b=$(($(date +%s) / 10))
K="$B:load:$b:tenants"
$RC hset "$K" "acme|1:5" 16000 "beta|1:5" 4000 "acme|0:0" 7 "(none)|0:3" 12 >/dev/null
$RC hset "$K" "nobar" 5 "bad name|0:1" 5 "acme|2:1" 5 "acme|0:1" abc "acme|0:2" -3 "acme|0:4" 99999999999999999999 >/dev/null
# a key that is not a hash in the buckets before and after: one in any window read
$RC set "$B:load:$((b - 1)):tenants" oops >/dev/null
$RC set "$B:load:$((b + 1)):tenants" oops >/dev/null
skips_ok() { snap $B && OUT=$(check_rows) && case $OUT in *'"off":0,'*'"skipped":{"field":2,"expert":1,"value":3,"type":1,"cap":0,"tenants":0}'*) ;; *) false ;; esac; }
if wait_for 5 skips_ok; then
    ok "B: valid rows exact, malformed fields skipped and counted: $OUT"
else
    bad "B: ${OUT:-no snapshot}"
fi
grep -q '^moemesh_router_expert_tenant_rows{layer="1",expert="5",tenant="acme"} 16000$' "$TMP/metrics" &&
    grep -q '^moemesh_router_expert_tenant_rows{layer="1",expert="5",tenant="beta"} 4000$' "$TMP/metrics" &&
    grep -q '^moemesh_router_tenant_load_skipped{reason="value"} 3$' "$TMP/metrics" &&
    ok "B: the metric lines" || bad "B: metric lines: $(grep -E 'tenant_rows|tenant_load' "$TMP/metrics")"
# the per-expert load makes 1:5 hot (20000 rows per 0.2 s against 5000 rows/s per replica)
inject() { $RC hincrby "$B:load:$(($(date +%s) / 10))" 1:5 20000 >/dev/null; }
hot_logged() { inject; grep -q 'expert 1:5 hot: .* replicas; tenants: acme 80%, beta 20%' "$TMP/rb.err"; }
if wait_for 8 hot_logged; then
    ok "B: $(grep -o 'expert 1:5 hot: [^"]*' "$TMP/rb.err" | head -1)"
else
    bad "B: no hot line naming the tenants: $(grep -E 'hot|pending' "$TMP/rb.err" | tail -3)"
fi
kill -0 $RPID 2>/dev/null && ok "B: router-svc still running" || bad "B: router-svc died: $(tail -3 "$TMP/rb.err")"

# ==== C: a bucket beyond the bounds (A's router): 70000 fields of 4375 tenants
RPORT=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/ra.out")
$RC eval "for i = 0, 69999 do redis.call('hset', KEYS[1], 't' .. math.floor(i / 16) .. '|' .. (i % 16 >= 8 and 1 or 0) .. ':' .. (i % 8), 1) end" \
    1 "$A:load:$(($(date +%s) / 10)):tenants" >/dev/null
big_ok() {
    curl -s -m 5 "http://127.0.0.1:$RPORT/v1/tenant-load" >"$TMP/big.json"
    OUT=$(node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(JSON.stringify({tenants: j.tenants, fields: j.fields, skipped: j.skipped}))' "$TMP/big.json" 2>/dev/null)
    node -e 'const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); process.exit(j.skipped.cap > 0 && j.skipped.tenants > 0 && j.tenants === 1024 ? 0 : 1)' "$TMP/big.json" 2>/dev/null
}
if wait_for 5 big_ok && grep -q 'above the cap of 65536' "$TMP/ra.err"; then
    ok "C: fields beyond the cap and tenants beyond 1024 skipped, counted and logged: $OUT"
else
    bad "C: ${OUT:-no answer} $(grep -c 'above the cap' "$TMP/ra.err") log line(s)"
fi
kill -0 $RA 2>/dev/null && ok "C: router-svc still running" || bad "C: router-svc died: $(tail -3 "$TMP/ra.err")"
exit $fail
