#!/bin/sh
# Parity with llama.cpp: llama architecture, every dtype (see tests/lib/parity.sh).
exec sh tests/lib/parity.sh llama
