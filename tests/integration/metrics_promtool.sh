#!/bin/sh
# The services' real /metrics pages pass `promtool check metrics` (Prometheus'
# own parser and linter): an expert-worker and a router-svc on loopback with a
# private redis-server, after a placement is active and a request went through
# the cluster (so histograms and top-N series have values). A page with a
# planted fault is refused, so the check can fail. Skips (77) only where
# promtool or redis-server is missing after `make deps`. Only processes started
# here are signalled, by PID; every wait is bounded.
set -u
MOECTL=${MOECTL:-build/moectl}
BIN=$(dirname "$MOECTL") TMP=$(mktemp -d) PIDS="" fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
. tests/lib/redis.sh
# processes started here, by PID; then Redis and the files
trap 'for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; redis_stop; rm -rf "$TMP" ${REDIS_DIR:+"$REDIS_DIR"}' EXIT
command -v promtool >/dev/null 2>&1 || { echo "skip: promtool not installed (make deps: prometheus)"; exit 77; }
redis_start || { echo "skip: $(redis_start 2>&1 | tail -1)"; exit 77; }

M="$TMP/m.gguf"
"$MOECTL" mkmodel --arch llama --dtype f32 --seed 3 --n-embd 64 --n-layer 2 --n-ff 128 \
    --n-expert 4 -o "$M" >/dev/null || { echo "FAIL: mkmodel"; exit 1; }
P=prom$$
"$BIN/expert-worker" --model "$M" --listen 127.0.0.1:0 --redis "$REDIS_URL" --prefix $P \
    --capacity 4M --lease-ms 1500 --metrics 127.0.0.1:0 >"$TMP/w.out" 2>"$TMP/w.err" &
PIDS="$PIDS $!"
MOE_LOG_FORMAT=text "$BIN/router-svc" --redis "$REDIS_URL" --prefix $P --listen 127.0.0.1:0 \
    --settle-ms 300 >"$TMP/r.out" 2>"$TMP/r.err" &
PIDS="$PIDS $!"
i=0
while [ $i -lt 100 ] && ! [ -n "$(redis-cli -p "$REDIS_PORT" get "$P:placement:active" 2>/dev/null)" ]; do
    sleep 0.2; i=$((i + 1))
done
[ $i -lt 100 ] || { bad "no active placement within 20 s: $(tail -3 "$TMP/r.err")"; exit 1; }
"$MOECTL" logits "$M" --tokens 1,2,3,4 --redis "$REDIS_URL" --prefix $P >/dev/null 2>"$TMP/l.err" ||
    bad "logits through the cluster: $(tail -2 "$TMP/l.err")"

wport=$(sed -n 's/.*metrics on .*(port \([0-9]*\)).*/\1/p' "$TMP/w.err")
rport=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$TMP/r.out")
[ -n "$wport" ] && [ -n "$rport" ] || { bad "ports: worker '$wport' router '$rport': $(cat "$TMP/w.err")"; exit 1; }
curl -sf "http://127.0.0.1:$wport/metrics" >"$TMP/worker.prom" || bad "worker /metrics"
# the router's top-N series appear once it has read the load the request reported
i=0
while [ $i -lt 50 ]; do
    curl -sf "http://127.0.0.1:$rport/metrics" >"$TMP/router.prom" || { bad "router /metrics"; break; }
    grep -q '^moemesh_router_hot_expert_load_rows{' "$TMP/router.prom" && break
    sleep 0.2; i=$((i + 1))
done

check() { # NAME FILE FAMILIES...: promtool accepts it and every family is there
    name=$1 f=$2; shift 2
    if out=$(promtool check metrics <"$f" 2>&1); then ok "$name /metrics passes promtool check metrics ($(grep -vc '^#' "$f") series)"
    else bad "$name /metrics: promtool: $out"; fi
    for fam in "$@"; do
        grep -q "^# TYPE $fam " "$f" && grep -Eq "^$fam(_bucket|_sum|_count)?[{ ]" "$f" || bad "$name /metrics lacks $fam"
    done
}
check worker "$TMP/worker.prom" moemesh_worker_batches_total moemesh_worker_rows_total \
    moemesh_worker_refused_total moemesh_worker_errors_total moemesh_worker_experts_held \
    moemesh_worker_expert_bytes_held moemesh_worker_epoch moemesh_worker_expert_changes_total \
    moemesh_worker_redis_up moemesh_worker_expert_rows moemesh_worker_hot_expert_rows \
    moemesh_worker_http_connections moemesh_worker_http_connections_accepted_total \
    moemesh_worker_http_connections_evicted_total moemesh_worker_http_connections_timed_out_total
check router "$TMP/router.prom" moemesh_router_leader moemesh_router_redis_up \
    moemesh_router_redis_failures_total moemesh_router_workers moemesh_router_workers_wanted \
    moemesh_router_epoch moemesh_router_pending_epoch moemesh_router_assignments \
    moemesh_router_replicas_short moemesh_router_rounds_total moemesh_router_rounds_abandoned_total \
    moemesh_router_failovers_total moemesh_router_moves_total moemesh_router_switch_seconds \
    moemesh_router_expert_replicas moemesh_router_expert_load_rows moemesh_router_hot_expert_load_rows \
    moemesh_router_http_connections moemesh_router_http_connections_accepted_total \
    moemesh_router_http_connections_evicted_total moemesh_router_http_connections_timed_out_total
# the gateway, over the same cluster, after a streamed and a plain request
"$BIN/gateway" --model "$M" --served-model-name m --listen 127.0.0.1:0 --redis "$REDIS_URL" --prefix $P \
    --log-format text 2>"$TMP/g.err" &
PIDS="$PIDS $!"
i=0
while [ $i -lt 100 ] && ! grep -q "serving " "$TMP/g.err"; do sleep 0.2; i=$((i + 1)); done
GW="http://$(sed -n 's/.* on http:\/\/\([^ ]*\) .*/\1/p' "$TMP/g.err" | head -1)"
curl -sf -m 30 -H 'Content-Type: application/json' -d '{"model":"m","prompt":[1,2,3],"max_tokens":5,"ignore_eos":true,"stream":true}' \
    "$GW/v1/completions" >/dev/null || bad "gateway stream: $(tail -3 "$TMP/g.err")"
curl -s -m 30 -d '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3}' "$GW/v1/chat/completions" >/dev/null
curl -s -m 30 -d '{"model":"nope","prompt":"x"}' "$GW/v1/completions" >/dev/null
curl -sf -m 10 "$GW/metrics" >"$TMP/gateway.prom" || bad "gateway /metrics"
check gateway "$TMP/gateway.prom" moemesh_gateway_requests_total moemesh_gateway_time_to_first_token_seconds \
    moemesh_gateway_inter_token_seconds moemesh_gateway_request_seconds moemesh_gateway_prompt_tokens_total \
    moemesh_gateway_generation_tokens_total moemesh_gateway_queue_depth moemesh_gateway_running_sequences \
    moemesh_gateway_kv_slots_used moemesh_gateway_kv_slots moemesh_gateway_batch_rows \
    moemesh_gateway_step_seconds moemesh_gateway_requests_ended_total \
    moemesh_gateway_expert_rtt_seconds moemesh_gateway_experts_uncovered moemesh_gateway_expert_workers_live \
    moemesh_gateway_http_connections moemesh_gateway_http_connections_evicted_total
grep -q '^moemesh_gateway_requests_total{route="completions",status="404"} 1$' "$TMP/gateway.prom" &&
    grep -q '^moemesh_gateway_generation_tokens_total 8$' "$TMP/gateway.prom" &&
    grep -q '^moemesh_gateway_time_to_first_token_seconds_count 2$' "$TMP/gateway.prom" &&
    ok "gateway: requests by status, 8 tokens generated, 2 first tokens timed" ||
    bad "gateway counts: $(grep -E 'requests_total|generation_tokens_total |first_token_seconds_count' "$TMP/gateway.prom")"
# what the pages say is what happened: 4 tokens x top-2 x 2 layers = 16 rows on the one worker
grep -q '^moemesh_worker_rows_total 16$' "$TMP/worker.prom" && ok "worker rows_total 16" ||
    bad "worker rows: $(grep rows_total "$TMP/worker.prom")"
grep -q '^moemesh_router_expert_replicas_count 8$' "$TMP/router.prom" && ok "router: replica histogram over 8 experts" ||
    bad "router replicas: $(grep expert_replicas_count "$TMP/router.prom")"

# the check can fail: a label value with an unescaped quote, and a counter without _total
{ cat "$TMP/worker.prom"; echo 'moemesh_worker_epoch{kind="a"b"} 1'; } >"$TMP/bad1.prom"
{ cat "$TMP/router.prom"; printf '# HELP moemesh_x Planted.\n# TYPE moemesh_x counter\nmoemesh_x 1\n'; } >"$TMP/bad2.prom"
for b in bad1 bad2; do
    promtool check metrics <"$TMP/$b.prom" >/dev/null 2>&1 && bad "promtool accepted a planted fault ($b)" ||
        ok "promtool refuses a planted fault ($b)"
done

# the logs: the worker's are JSON lines, the router's text (MOE_LOG_FORMAT=text)
node -e 'for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean)) {
    const j = JSON.parse(l); if (!j.ts || !j.level || !j.component || j.msg === undefined) throw new Error(l) }' "$TMP/w.err" &&
    ok "worker log: $(wc -l <"$TMP/w.err") JSON lines" || bad "worker log not JSON lines: $(head -3 "$TMP/w.err")"
grep -q ' info router-svc: leading' "$TMP/r.err" && ok "router log in text" || bad "router log: $(head -3 "$TMP/r.err")"
exit $fail
