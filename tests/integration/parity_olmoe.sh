#!/bin/sh
# Parity with llama.cpp: olmoe architecture, every dtype (see tests/lib/parity.sh).
exec sh tests/lib/parity.sh olmoe
