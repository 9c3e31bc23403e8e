#!/bin/sh
# Parity with llama.cpp: deepseek (DeepSeekMoE v1) architecture, every dtype (see tests/lib/parity.sh).
exec sh tests/lib/parity.sh deepseek
