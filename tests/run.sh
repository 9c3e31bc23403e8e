#!/bin/sh
# tests/run.sh - runs every test, each in its own process with a timeout, and
# ends with "N passed, N failed, N skipped".
#   unit tests:        $BUILD/unit-tests --list, one process per test (except
#                      ext_*: run by an integration script that gives their input)
#   integration tests: tests/integration/*.sh (exit 0 pass, 77 skip, else fail)
# Filter with TESTS=pattern (a grep -E regex over test names).
BUILD=${BUILD:-build}
UNIT_TIMEOUT=${UNIT_TIMEOUT:-120}
INTEG_TIMEOUT=${INTEG_TIMEOUT:-900}
export BUILD
# no MOE_* twin leaks in from the caller's shell
. tests/lib/clean_env.sh
# under the sanitizers (make test-san): a use of a dead stack frame is an
# error too (ASan's check for it is off by default)
if [ "${MOE_SAN:-0}" = 1 ]; then
    ASAN_OPTIONS="detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export ASAN_OPTIONS
fi
# a Node.js >= 22 for the reference tooling (see tests/ref/env.sh)
. tests/ref/env.sh
export MOECTL="$PWD/$BUILD/moectl"
LOGDIR="$BUILD/test-logs"
mkdir -p "$LOGDIR"
pass=0; fail=0; skip=0; failed=""

run_one() { # name timeout cmd...
    name=$1; to=$2; shift 2
    log="$LOGDIR/$(echo "$name" | tr '/' '_').log"
    start=$(date +%s)
    timeout "$to" "$@" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1)); echo "ok    $name (${secs}s)"
    elif [ $rc -eq 77 ]; then
        skip=$((skip + 1)); echo "skip  $name: $(tail -n 1 "$log")"
    else
        fail=$((fail + 1)); failed="$failed $name"
        [ $rc -eq 124 ] && echo "FAIL  $name: timed out after ${to}s" || echo "FAIL  $name (exit $rc)"
        sed 's/^/      | /' "$log" | tail -n 30
    fi
}

matches() { [ -z "$TESTS" ] || echo "$1" | grep -Eq "$TESTS"; }

if [ ! -x "$BUILD/unit-tests" ]; then
    echo "error: $BUILD/unit-tests is missing; run 'make' first" >&2
    exit 2
fi
for t in $("$BUILD/unit-tests" --list | grep -v "^ext_"); do
    matches "unit/$t" || continue
    run_one "unit/$t" "$UNIT_TIMEOUT" "$BUILD/unit-tests" "$t"
done
for f in tests/integration/*.sh; do
    [ -e "$f" ] || continue
    name="integration/$(basename "$f" .sh)"
    matches "$name" || continue
    run_one "$name" "$INTEG_TIMEOUT" sh "$f"
done
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
