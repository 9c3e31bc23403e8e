#!/bin/sh
# Fair share with preemption (issue 15): on a gateway with 2 sequence slots,
# tenant "flood" runs 2 long greedy requests; tenant "quiet" arrives and,
# being below its share, takes a slot from one of them at once (the
# preemptions counter says so) instead of waiting for a flood request to end.
# The preempted request later goes on: its text equals that of the same
# request run alone (an f32 model: the routing and logits do not depend on
# how rows are batched). Run twice: with --spare-slots 0 the quiet request
# overwrites the preempted one's cache and it prefills its tokens again
# (moemesh_gateway_preempted_tokens_recomputed_total > 0); with the default
# spare slot its cache is kept and nothing is computed again. Only processes
# started here are signalled; waits are bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
M="$TMP/m.gguf"
"$BUILD/moectl" mkmodel --arch llama --dtype f32 --seed 6 --n-embd 512 --n-ff 1024 --n-layer 4 --n-ctx 4096 -o "$M" >/dev/null || { bad "mkmodel"; exit 1; }
KF=moe-floodfloodfloodfloodfloodfloodfloodflood
KQ=moe-quietquietquietquietquietquietquietquiet
printf '{"tenants": [{"name": "flood", "keys": ["%s"]}, {"name": "quiet", "keys": ["%s"]}]}\n' "$KF" "$KQ" >"$TMP/t.json"
req() { # key prompt max_tokens out
    curl -s -m 120 -o "$4" -w '%{http_code}' "$GW/v1/completions" -H "Authorization: Bearer $1" \
        -H 'content-type: application/json' \
        -d "{\"model\":\"m\",\"prompt\":[$2],\"max_tokens\":$3,\"temperature\":0,\"ignore_eos\":true}"
}
txt() { node -e 'console.log(JSON.stringify(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).choices[0].text))' "$1"; }
metric() { curl -s -m 10 "$GW/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
A=5,17,300,42,99,7
B=11,2,3,4,500,6,7
Q=30,31,32,33
Q2=40,41,42,43
for spare in 0 1; do
    echo "# --spare-slots $spare"
    gateway gw --model "$M" --tenants "$TMP/t.json" --max-seqs 2 --schedule fair --threads 1 --spare-slots $spare || exit 1
    # a long quiet request alone first: its slot then holds the longest cache,
    # longer than the flood request preempted below has by then (a quiet
    # request that took the free slot with the least cached would overwrite
    # the preempted one's instead of the spare's)
    req "$KQ" "$Q" 400 "$TMP/q0.json" >/dev/null
    req "$KF" "$A" 600 "$TMP/a.json" >"$TMP/a.code" &
    PA=$!
    req "$KF" "$B" 600 "$TMP/b.json" >"$TMP/b.code" &
    PB=$!
    sleep 0.3 # both flood requests hold the 2 slots
    t0=$(date +%s%N)
    code=$(req "$KQ" "$Q2" 4 "$TMP/q.json")
    t1=$(date +%s%N)
    wait $PA; wait $PB
    pre=$(metric moemesh_gateway_preemptions_total)
    rec=$(metric moemesh_gateway_preempted_tokens_recomputed_total)
    fa=$(grep -c '"finish_reason":"length"' "$TMP/a.json") fb=$(grep -c '"finish_reason":"length"' "$TMP/b.json")
    [ "$code" = 200 ] && [ "${pre:-0}" -ge 1 ] &&
        ok "quiet served in $(((t1 - t0) / 1000000)) ms while the flood held both slots (preemptions_total $pre)" ||
        bad "quiet: $code, preemptions '$pre' ($(head -c 200 "$TMP/q.json"))"
    [ "$(cat "$TMP/a.code")" = 200 ] && [ "$(cat "$TMP/b.code")" = 200 ] && [ "$fa$fb" = 11 ] ||
        bad "flood requests: $(cat "$TMP/a.code") $(cat "$TMP/b.code") $(head -c 200 "$TMP/a.json")"
    # the same flood requests alone, one at a time: the same text
    req "$KF" "$A" 600 "$TMP/a1.json" >/dev/null
    req "$KF" "$B" 600 "$TMP/b1.json" >/dev/null
    if [ "$(txt "$TMP/a.json")" = "$(txt "$TMP/a1.json")" ] && [ "$(txt "$TMP/b.json")" = "$(txt "$TMP/b1.json")" ]; then
        ok "the preempted flood request's 600 tokens equal those of the same request run alone (both requests)"
    else
        bad "texts differ after a preemption: $(txt "$TMP/a.json" | head -c 80) vs $(txt "$TMP/a1.json" | head -c 80)"
    fi
    if [ "$spare" = 0 ]; then
        [ "${rec:-0}" -gt 0 ] && ok "spare 0: the preempted request prefilled $rec tokens again" ||
            bad "spare 0: no tokens recomputed ('$rec') after a preemption"
    else
        [ "${rec:-x}" = 0 ] && ok "spare 1: the preempted request went on from its kept cache (0 tokens recomputed)" ||
            bad "spare 1: $rec tokens recomputed (the kept cache was overwritten)"
    fi
    stop $GPID
done
exit $fail
