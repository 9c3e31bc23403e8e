#!/bin/sh
# Parity with llama.cpp: llama architecture, every dtype, seed 3 (no rounding flip: see tests/lib/parity.sh).
PARITY_KV16_SEED=5 exec sh tests/lib/parity.sh llama tiny 3
