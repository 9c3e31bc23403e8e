#!/bin/sh
# Expert accounting in the gateway (issue 15): the rows it reports per
# (layer, expert) on /metrics equal an independent count, moectl logits
# --routes over the same prompt tokens in one process (an f32 model, so the
# routing does not depend on how the gateway batches the rows). Two prompts
# with different first tokens (no cached prefix), max_tokens 1 (the prompt
# rows only). Then two tenants, each reading its own GET /v1/usage. Only
# processes started here are signalled; waits are bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
M="$TMP/m.gguf"
"$BUILD/moectl" mkmodel --arch qwen2moe --dtype f32 --seed 4 -o "$M" >/dev/null || { bad "mkmodel"; exit 1; }
P1=5,17,300,42,99,7,256,5,64,128,255,3,9,100,12,77
P2=11,2,3,4,500,6,7,8,9,10,444,12
gateway gw --model "$M" || exit 1
for p in $P1 $P2; do
    code=$(curl -s -m 30 -o "$TMP/c.json" -w '%{http_code}' "$GW/v1/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"m\",\"prompt\":[$p],\"max_tokens\":1}")
    [ "$code" = 200 ] || bad "completion: $code $(head -c 200 "$TMP/c.json")"
done
curl -s -m 10 "$GW/metrics" >"$TMP/metrics"
"$BUILD/moectl" logits "$M" --tokens "$P1" --routes >"$TMP/r1.json" &&
    "$BUILD/moectl" logits "$M" --tokens "$P2" --routes >"$TMP/r2.json" || bad "moectl logits --routes"
OUT=$(node -e '
    const fs = require("fs");
    const want = new Map();
    for (const f of process.argv.slice(1, 3))
        for (const [l, e, r] of JSON.parse(fs.readFileSync(f, "utf8")).routes)
            want.set(`${l},${e}`, (want.get(`${l},${e}`) || 0) + r);
    const m = fs.readFileSync(process.argv[3], "utf8");
    const total = Number((m.match(/^moemesh_gateway_tenant_expert_rows_total\{tenant="\(none\)"\} (\d+)/m) || [])[1]);
    const top = [...m.matchAll(/^moemesh_gateway_tenant_top_expert_rows_total\{tenant="\(none\)",layer="(\d+)",expert="(\d+)"\} (\d+)/gm)];
    let sum = 0;
    for (const v of want.values()) sum += v;
    const bad = top.filter(([, l, e, r]) => want.get(`${l},${e}`) !== Number(r));
    const best = [...want.entries()].sort((a, b) => b[1] - a[1])[0];
    console.log(JSON.stringify({ total, expected_total: sum, top: top.length, top_mismatches: bad.length,
        busiest_expected: best, busiest_reported: top.length ? [`${top[0][1]},${top[0][2]}`, Number(top[0][3])] : null }));
' "$TMP/r1.json" "$TMP/r2.json" "$TMP/metrics")
echo "$OUT"
case $OUT in
*'"top_mismatches":0'*) ;;
*) bad "per-expert rows differ from moectl's count: $OUT" ;;
esac
t=$(printf '%s' "$OUT" | node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(j.total === j.expected_total && j.top === 5 ? "yes" : "no")')
[ "$t" = yes ] && ok "expert rows per tenant equal moectl's routing count: $OUT" || bad "totals: $OUT"
stop $GPID

# Two tenants (API keys from a tenants file): each GET /v1/usage shows its own
# rows, every (layer, expert) equal to moectl's count of its own prompts,
# nothing of the other's; without a key it is a 401.
KA=moe-acmeacmeacmeacmeacmeacmeacmeacmeacmeacmeacm
KB=moe-betabetabetabetabetabetabetabetabetabetabe
printf '{"tenants": [{"name": "acme", "keys": ["%s"]}, {"name": "beta", "keys": ["%s"], "weight": 2}]}\n' "$KA" "$KB" >"$TMP/tenants.json"
gateway gw2 --model "$M" --tenants "$TMP/tenants.json" || exit 1
P3=30,31,32,33,34,35,36,37,38,39
send() { # key prompt
    code=$(curl -s -m 30 -o "$TMP/c.json" -w '%{http_code}' "$GW/v1/completions" -H "Authorization: Bearer $1" \
        -H 'content-type: application/json' -d "{\"model\":\"m\",\"prompt\":[$2],\"max_tokens\":1}")
    [ "$code" = 200 ] || bad "completion as $1: $code $(head -c 200 "$TMP/c.json")"
}
send "$KA" "$P1"
send "$KB" "$P2"
send "$KB" "$P3"
"$BUILD/moectl" logits "$M" --tokens "$P3" --routes >"$TMP/r3.json" || bad "moectl logits --routes"
curl -s -m 10 -H "Authorization: Bearer $KA" "$GW/v1/usage" >"$TMP/ua.json"
curl -s -m 10 -H "api-key: $KB" "$GW/v1/usage" >"$TMP/ub.json"
code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$GW/v1/usage")
[ "$code" = 401 ] && ok "GET /v1/usage without a key: 401" || bad "GET /v1/usage without a key: $code"
for t in "acme ua r1" "beta ub r2,r3"; do
    set -- $t
    OUT=$(node -e '
        const fs = require("fs");
        const [u, files, tmp, name] = process.argv.slice(1);
        const want = new Map();
        for (const f of files.split(","))
            for (const [l, e, r] of JSON.parse(fs.readFileSync(`${tmp}/${f}.json`, "utf8")).routes)
                want.set(`${l},${e}`, (want.get(`${l},${e}`) || 0) + r);
        const got = JSON.parse(fs.readFileSync(u, "utf8"));
        const have = new Map(got.experts.map(([l, e, r]) => [`${l},${e}`, r]));
        const keys = new Set([...want.keys(), ...have.keys()]);
        const diff = [...keys].filter((k) => want.get(k) !== have.get(k));
        console.log(JSON.stringify({ tenant: got.tenant, requests: got.requests, prompt_tokens: got.prompt_tokens,
            expert_rows: got.expert_rows, pairs: have.size, pairs_expected: want.size, differing: diff.length, name_ok: got.tenant === name }));
    ' "$TMP/$2.json" "$3" "$TMP" "$1")
    case $OUT in
    *'"differing":0'*'"name_ok":true'*) ok "$1's /v1/usage: every (layer, expert) row count equals moectl's for its own prompts: $OUT" ;;
    *) bad "$1's /v1/usage: $OUT ($(head -c 300 "$TMP/$2.json"))" ;;
    esac
done
stop $GPID

# The per-tenant load in Redis (P:load:<b>:tenants, field "tenant|L:E"): a
# tenant made with moectl tenant add, its rows equal moectl's count again.
. tests/lib/redis.sh
trap 'procs_cleanup; redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT
if redis_start >/dev/null; then
    KEY=$("$BUILD/moectl" tenant add gamma --redis "$REDIS_URL" --prefix ul | sed -n 's/.*"key": "\([^"]*\)".*/\1/p')
    gateway gw3 --model "$M" --tenants-redis "$REDIS_URL" --prefix ul || exit 1
    i=0
    while [ $i -lt 50 ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/readyz")" != 200 ]; do sleep 0.1; i=$((i + 1)); done
    send "$KEY" "$P1"
    stop $GPID # the last report goes out at the stop
    redis-cli -p "$REDIS_PORT" --scan --pattern 'ul:load:*:tenants' >"$TMP/keys"
    : >"$TMP/fields"
    while read -r k; do redis-cli -p "$REDIS_PORT" HGETALL "$k" >>"$TMP/fields"; done <"$TMP/keys"
    OUT=$(node -e '
        const fs = require("fs");
        const want = new Map();
        for (const [l, e, r] of JSON.parse(fs.readFileSync(process.argv[1], "utf8")).routes) want.set(`${l}:${e}`, r);
        const lines = fs.readFileSync(process.argv[2], "utf8").split("\n").filter((x) => x);
        const have = new Map();
        for (let i = 0; i + 1 < lines.length; i += 2) {
            const [t, le] = lines[i].split("|");
            if (t === "gamma") have.set(le, (have.get(le) || 0) + Number(lines[i + 1]));
        }
        const keys = new Set([...want.keys(), ...have.keys()]);
        console.log(JSON.stringify({ pairs: have.size, differing: [...keys].filter((k) => want.get(k) !== have.get(k)).length }));
    ' "$TMP/r1.json" "$TMP/fields")
    case $OUT in
    *'"differing":0'*) ok "gamma's load in Redis ($(wc -l <"$TMP/keys") bucket key(s)): every (layer, expert) equals moectl's count: $OUT" ;;
    *) bad "per-tenant load in Redis: $OUT ($(head -c 300 "$TMP/fields"))" ;;
    esac
else
    bad "redis-server did not start"
fi
exit $fail
