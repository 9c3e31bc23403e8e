#!/bin/sh
# Parity with llama.cpp: deepseek2 (MLA), V2-style (softmax, no q LoRA), every dtype.
PARITY_KV16_SEED=5 exec sh tests/lib/parity.sh deepseek2 tiny-v2
