# tests/lib/parity_env.sh - sourced (`. tests/lib/parity_env.sh`) by the
# scripts that compare moemesh with llama.cpp on `moectl mkmodel` models
# (tests/lib/parity.sh, parity_hparams.sh): exits 77 unless the reference is
# installed, then sets MOECTL (default build/moectl), TMP (a temporary folder
# removed on exit), TOKENS (the 24 prompt tokens every case uses) and fail=0.
MOECTL=${MOECTL:-build/moectl}
if [ ! -d tests/ref/node_modules/node-llama-cpp ]; then
    echo "llama.cpp reference not installed (make ref)"; exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
TOKENS="1,17,300,42,99,7,256,5,64,128,255,3,77,410,12,8,200,33,90,150,11,60,480,2"
fail=0
