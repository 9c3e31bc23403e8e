#!/bin/sh
# Parity with llama.cpp: qwen3moe architecture, every dtype (see tests/lib/parity.sh).
exec sh tests/lib/parity.sh qwen3moe
