# tests/lib/clean_env.sh - sourced by tests/run.sh and the benchmarks: the
# services' and moectl's flags read MOE_* environment twins, and none may
# leak in from the caller's shell (MOE_REDIS would turn a single-process
# reference run into a cluster run). Kept on purpose: MOE_CPU (the SIMD
# table), MOE_SAN and MOE_REF_ENV (the test harness's own).
for v in $(env | sed -n 's/^\(MOE_[A-Z0-9_]*\)=.*/\1/p'); do
    case $v in MOE_CPU | MOE_SAN | MOE_REF_ENV) ;; *) unset "$v" ;; esac
done
