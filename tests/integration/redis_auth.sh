#!/bin/sh
# Redis credentials (issue 14): a password read from --redis-password-file
# (MOE_REDIS_PASSWORD_FILE) reaches Redis as AUTH user password and shows in
# neither the process list (/proc/PID/cmdline) nor any log line; a password
# in the URL still works, with a warning that says how to move it, and is
# redacted in the logs; a wrong password is a clear AUTH error without the
# password; a password in both places is refused. Real redis-server with an
# ACL user and the default user off; real router-svc and expert-worker.
# Only processes started here are signalled, by PID; every wait is bounded.
set -u
. tests/lib/procs.sh
. tests/ref/env.sh
. tests/lib/redis.sh
trap 'procs_cleanup; redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT
PW=s3cret-pw-4f1e
printf 'user default off\nuser moe on >%s ~* &* +@all\n' "$PW" >"$TMP/users.acl"
REDIS_ARGS="--aclfile $TMP/users.acl" redis_start || { echo "skip: no redis-server"; exit 77; }
printf '%s\n' "$PW" >"$TMP/pw"
printf 'wrong-password\n' >"$TMP/bad"
HP="127.0.0.1:$REDIS_PORT"
no_password() { # label file...
    label=$1; shift
    if grep -q "$PW" "$@" 2>/dev/null; then bad "$label: the password appears"; else ok "$label: no password"; fi
}
router() { # name args... : starts router-svc, sets RPID
    name=$1; shift
    "$BUILD/router-svc" --listen 127.0.0.1:0 --prefix "auth-$name" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    RPID=$!; PIDS="$PIDS $RPID"
}

# 1. password from a file, user in the URL
router file --redis "redis://moe@$HP" --redis-password-file "$TMP/pw"
wait_log "$TMP/file.err" "connected" && ok "router-svc with --redis-password-file: $(grep -m1 connected "$TMP/file.err")" ||
    bad "router-svc with --redis-password-file did not connect: $(tail -3 "$TMP/file.err")"
tr '\0' ' ' </proc/$RPID/cmdline >"$TMP/file.cmdline"
no_password "router-svc's command line" "$TMP/file.cmdline"
# and the same through the environment twin, for an expert worker
M="$TMP/m.gguf"
"$BUILD/moectl" mkmodel --arch llama --dtype f32 --seed 1 -o "$M" >/dev/null || bad "mkmodel"
MOE_REDIS_PASSWORD_FILE="$TMP/pw" "$BUILD/expert-worker" --model "$M" --listen 127.0.0.1:0 \
    --redis "redis://moe@$HP" --prefix auth-file >"$TMP/w.out" 2>"$TMP/w.err" &
WPID=$!; PIDS="$PIDS $WPID"
wait_log "$TMP/w.err" "connected" && ok "expert-worker with MOE_REDIS_PASSWORD_FILE: connected" ||
    bad "expert-worker did not connect: $(tail -3 "$TMP/w.err")"
stop $WPID; stop $RPID

# 2. password in the URL: works, warns, redacted
router url --redis "redis://moe:$PW@$HP"
wait_log "$TMP/url.err" "connected" && ok "router-svc with the password in the URL connects" ||
    bad "router-svc (URL password) did not connect: $(tail -3 "$TMP/url.err")"
grep -q "redis-password-file" "$TMP/url.err" && ok "it warns: $(grep -m1 'process list' "$TMP/url.err" | cut -c1-160)" ||
    bad "no warning about the password in the URL"
stop $RPID

# 3. a wrong password: an AUTH error, no password in it
router bad --redis "redis://moe@$HP" --redis-password-file "$TMP/bad"
wait_log "$TMP/bad.err" "AUTH" && ok "wrong password: $(grep -m1 AUTH "$TMP/bad.err" | cut -c1-160)" ||
    bad "wrong password: no AUTH error: $(tail -3 "$TMP/bad.err")"
stop $RPID
grep -q "wrong-password" "$TMP/bad.err" && bad "the wrong password appears in the log" || ok "the wrong password is not logged"

# 4. both places: refused
router both --redis "redis://moe:$PW@$HP" --redis-password-file "$TMP/pw"
i=0; while [ $i -lt 100 ] && kill -0 $RPID 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
if kill -0 $RPID 2>/dev/null; then
    bad "a password in the URL and in a file: still running"; stop $RPID
else
    wait $RPID; rc=$?
    grep -q "give it in the file only" "$TMP/both.err" && [ $rc -ne 0 ] &&
        ok "a password in the URL and in a file: exit $rc, $(grep -m1 'file only' "$TMP/both.err" | cut -c1-140)" ||
        bad "URL and file: exit $rc, $(tail -2 "$TMP/both.err")"
fi
# an empty or missing file
: >"$TMP/empty"
for f in "$TMP/empty" "$TMP/missing"; do
    "$BUILD/router-svc" --listen 127.0.0.1:0 --redis "redis://moe@$HP" --redis-password-file "$f" >/dev/null 2>"$TMP/e.err"
    rc=$?
    [ $rc -eq 2 ] && grep -q "redis-password-file" "$TMP/e.err" && ok "--redis-password-file $(basename "$f"): exit 2, $(head -c 120 "$TMP/e.err")" ||
        bad "--redis-password-file $(basename "$f"): exit $rc, $(cat "$TMP/e.err")"
done
no_password "every log" "$TMP"/*.err "$TMP"/*.out
exit $fail
