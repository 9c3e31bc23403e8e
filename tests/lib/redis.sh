# tests/lib/redis.sh - sourced by tests that need a real Redis: starts a
# private redis-server on a free loopback port (no persistence, its own
# directory), and stops it - by its PID only - when the test exits.
#
#     . tests/lib/redis.sh
#     redis_start || exit 77          # skipped where redis-server is missing
#     REDIS_ARGS="--aclfile F" redis_start   # more redis-server options (ready on
#                                            # PONG or NOAUTH)
#     ... "$REDIS_URL" (redis://127.0.0.1:PORT), $REDIS_PORT, $REDIS_PID ...
#     redis_restart                    # the same port, empty again (a Redis restart)
#     redis_stop
REDIS_PID= REDIS_PORT= REDIS_URL= REDIS_DIR=

# A TCP port nothing listens on now (the kernel's choice, via node).
redis_free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# Starts redis-server on REDIS_PORT (chosen if empty); waits until it answers.
redis_start() {
    command -v redis-server >/dev/null 2>&1 || { echo "redis-server not installed (make deps)"; return 1; }
    [ -n "$REDIS_DIR" ] || REDIS_DIR=$(mktemp -d)
    [ -n "$REDIS_PORT" ] || REDIS_PORT=$(redis_free_port) || return 1
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" --daemonize no ${REDIS_ARGS:-} &
    REDIS_PID=$!
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    i=0
    while [ $i -lt 100 ]; do # up to 5 s
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -Eq 'PONG|NOAUTH' && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.05
        i=$((i + 1))
    done
    echo "redis-server did not start on port $REDIS_PORT: $(tail -3 "$REDIS_DIR/redis.log" 2>/dev/null)"
    return 1
}

redis_stop() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
        REDIS_PID=
    fi
}

# A Redis restart: the same port, all data gone.
redis_restart() {
    redis_stop
    redis_start
}

trap 'redis_stop; [ -n "$REDIS_DIR" ] && rm -rf "$REDIS_DIR"' EXIT
