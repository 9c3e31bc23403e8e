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
# bf16: both engines round activations to bf16 before each product, and the
# summation order then decides whether an activation sitting on a rounding
# boundary flips. With native BF16 on both sides (this CPU has avx512_bf16:
# llama.cpp loads a BF16 build, moemesh its AVX-512 BF16 kernel) they agree
# to ~1e-6 on the chosen seeds, so the tolerance is 2e-5. Elsewhere (AVX2,
# AVX-512 without BF16, MOE_CPU forcing another table) llama.cpp's non-BF16
# builds sum in another order and a flip moves logits by up to ~3e-2 (seen
# with its haswell and skylakex builds): 5e-2 there, and the script says so.
if [ -z "${MOE_CPU:-}" ] && grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null; then
    BF16_ATOL=2e-5
else
    BF16_ATOL=5e-2
    echo "note: no native BF16 here (or MOE_CPU set): bf16 compared at $BF16_ATOL, not 2e-5"
fi
# parity_tol DT: sets TOL, compare.mjs's tolerance options for weight type
# (or llama-quantize mix) DT; returns 1 for a type it does not know
parity_tol() {
    case $1 in
        f32)  TOL="--atol 5e-5 --gate-tie 1e-6" ;;
        f16)  TOL="--atol 1e-2 --gate-tie 1e-4" ;;
        bf16) TOL="--atol $BF16_ATOL --gate-tie 1e-5" ;;
        q8_0) TOL="--atol 1e-5 --gate-tie 1e-5" ;;
        q4_0|q4_1|q5_0|q5_1|iq4_nl) TOL="--atol 1e-7 --gate-tie 1e-5" ;;
        q4_k|q5_k|q6_k|iq4_xs|q2_k|q3_k|q4_k_m|q5_k_m|q3_k_m) TOL="--atol 5e-5 --gate-tie 1e-5" ;;
        *) return 1 ;;
    esac
}
