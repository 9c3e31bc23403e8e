#!/bin/sh
# Parity with llama.cpp: deepseek2 (MLA), V2-style (softmax, no q LoRA), every dtype.
exec sh tests/lib/parity.sh deepseek2 tiny-v2
