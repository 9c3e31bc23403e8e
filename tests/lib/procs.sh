# tests/lib/procs.sh - what the integration scripts that start services
# share (sourced): a scratch dir, ok/bad lines, processes started here and
# stopped by PID on exit, bounded waits, and starters for an expert-worker
# and a gateway on free loopback ports.
#   . tests/lib/procs.sh
#   gateway NAME --model M [flags]  -> GW (http://addr), GPID  (log: $TMP/NAME.log)
#   worker NAME MODEL EXPERTS       -> ADDR, WPID              (out: $TMP/NAME.out)
#   stop PID                        -> SIGTERM, then up to 10 s for it to end
# Needs BUILD (default build). Sets fail=1 on any bad.
BUILD=${BUILD:-build}
TMP=$(mktemp -d)
PIDS=""
fail=0
procs_cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; rm -rf "$TMP"; }
trap procs_cleanup EXIT
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
# wait_log FILE PATTERN: up to 30 s for PATTERN to appear in FILE
wait_log() { i=0; while [ $i -lt 300 ] && ! grep -q "$2" "$1" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done; grep -q "$2" "$1"; }
stop() { kill "$1" 2>/dev/null; i=0; while [ $i -lt 100 ] && kill -0 "$1" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done; }
gateway() {
    name=$1; shift
    "$BUILD/gateway" --listen 127.0.0.1:0 --threads 2 --log-format text "$@" 2>"$TMP/$name.log" &
    GPID=$!; PIDS="$PIDS $GPID"
    wait_log "$TMP/$name.log" "serving " || { bad "$name did not start: $(tail -3 "$TMP/$name.log")"; GW=""; return 1; }
    GW="http://$(sed -n 's/.* on http:\/\/\([^ ]*\) .*/\1/p' "$TMP/$name.log" | head -1)"
}
worker() {
    "$BUILD/expert-worker" --model "$2" --listen 127.0.0.1:0 --experts "$3" >"$TMP/$1.out" 2>"$TMP/$1.err" &
    WPID=$!; PIDS="$PIDS $WPID"
    wait_log "$TMP/$1.out" "listening on" || bad "$1 did not start: $(cat "$TMP/$1.err")"
    ADDR=$(sed -n 's/^listening on //p' "$TMP/$1.out")
}
