#!/bin/sh
# Parity with llama.cpp: qwen2moe architecture, every dtype (see tests/lib/parity.sh).
exec sh tests/lib/parity.sh qwen2moe
