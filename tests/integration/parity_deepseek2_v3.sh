#!/bin/sh
# Parity with llama.cpp: deepseek2 (MLA), V3-style routing (sigmoid, bias, groups, x2.5)
# with YaRN and q LoRA, every dtype (see tests/lib/parity.sh).
exec sh tests/lib/parity.sh deepseek2 tiny
