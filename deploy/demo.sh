#!/bin/sh
# deploy/demo.sh - `make run`: the most complete thing moemesh does today.
# Makes a demo model (a Mixtral-style MoE with random weights, q8_0), shows
# what it holds, generates a continuation, and benchmarks it.
set -e
BUILD=${BUILD:-build}
MOECTL="$BUILD/moectl"
MODEL=${MODEL:-models/demo-mixtral-q8_0.gguf}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$(dirname "$MODEL")"
if [ ! -f "$MODEL" ]; then
    echo "== making the demo model $MODEL (random weights, q8_0; the bench preset)"
    "$MOECTL" mkmodel --arch llama --dtype q8_0 --seed 42 --preset bench -o "$MODEL"
fi
echo "== moectl info $MODEL"
"$MOECTL" info "$MODEL" | sed -n '1,9p'
echo "== moectl generate: 32 tokens after a text prompt (greedy, $THREADS threads)"
"$MOECTL" generate "$MODEL" --prompt "the demo model has random weights" -n 32 --ignore-eos --threads "$THREADS"
echo "== moectl bench: prompt 128, 64 decode steps, batch 1 and 8"
"$MOECTL" bench "$MODEL" --prompt 128 --gen 64 --threads "$THREADS"
"$MOECTL" bench "$MODEL" --prompt 32 --gen 32 --batch 8 --threads "$THREADS"
