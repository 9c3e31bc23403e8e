#!/bin/sh
# Parity with llama.cpp: deepseek2 files in the legacy attn_kv_b layout (no
# *_mla keys; what DeepSeek-V2 conversions had before llama.cpp split
# attn_kv_b into attn_k_b/attn_v_b). The pinned llama.cpp still loads them
# and runs them as plain multi-head attention (deepseek2.cpp, !is_mla);
# moemesh does the same (context.c: attention_mla_kv_b). Every dtype, V2-style
# (seed 1) and V3-style (seed 8: q LoRA, sigmoid, groups, YaRN); seeds with
# no rounding flip in any dtype, exact or fast Q8_0, as tests/lib/parity.sh
# explains (V2: seed 7 flips q8_0; V3: seeds 1, 2, 4, 5, 6, 9, 10, 12 flip
# bf16 or the fast tile, 8 and 11 do not).
PARITY_MKMODEL_ARGS=--kv-b PARITY_LABEL=deepseek2-v2-kv_b sh tests/lib/parity.sh deepseek2 tiny-v2 1 || exit 1
PARITY_MKMODEL_ARGS=--kv-b PARITY_LABEL=deepseek2-v3-kv_b exec sh tests/lib/parity.sh deepseek2 tiny 8
