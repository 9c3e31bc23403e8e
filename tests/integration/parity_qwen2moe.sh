#!/bin/sh
# Parity with llama.cpp: qwen2moe architecture, every dtype, seed 3 (no rounding flip: see tests/lib/parity.sh).
exec sh tests/lib/parity.sh qwen2moe tiny 3
