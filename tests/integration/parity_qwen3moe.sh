#!/bin/sh
# Parity with llama.cpp: qwen3moe architecture, every dtype (see tests/lib/parity.sh).
PARITY_KV16_SEED=2 exec sh tests/lib/parity.sh qwen3moe
