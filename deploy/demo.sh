#!/bin/sh
# deploy/demo.sh - `make run MODE=single`: serves a demo model over the OpenAI
# API from the gateway alone (no Redis, no workers, no API keys: loopback only;
# `make run` starts the whole cluster instead: deploy/cluster.sh).
# Makes the demo model if it is missing (a Mixtral-style MoE with random
# weights, q8_0: it produces gibberish, quickly), then runs the gateway in the
# foreground on LISTEN (default 127.0.0.1:PORT, PORT 8080) with the experts in process.
# Ctrl-C (SIGINT) or SIGTERM stops it after the running requests finish.
# Env: MODEL, LISTEN (or PORT), THREADS, and any gateway flag's MOE_* twin.
set -e
BUILD=${BUILD:-build}
MOECTL="$BUILD/moectl"
MODEL=${MODEL:-models/demo-mixtral-q8_0.gguf}
LISTEN=${LISTEN:-127.0.0.1:${PORT:-8080}}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$(dirname "$MODEL")"
if [ ! -f "$MODEL" ]; then
    echo "== making the demo model $MODEL (random weights, q8_0; the bench preset, ~620 MB)"
    "$MOECTL" mkmodel --arch llama --dtype q8_0 --seed 42 --preset bench -o "$MODEL"
fi
NAME=$(basename "$MODEL" .gguf)
echo "== moectl info $MODEL"
"$MOECTL" info "$MODEL" | sed -n '1,9p'
cat <<MSG
== serving '$NAME' on http://$LISTEN (Ctrl-C stops). From another shell:
   curl -N http://$LISTEN/v1/chat/completions -H 'Content-Type: application/json' \\
     -d '{"model": "$NAME", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32, "stream": true}'
   curl http://$LISTEN/v1/models;  curl http://$LISTEN/metrics
MSG
exec "$BUILD/gateway" --model "$MODEL" --listen "$LISTEN" --threads "$THREADS" --log-format text
