#!/bin/sh
# tests/fuzz/run.sh - `make fuzz`: builds libmoe with clang's libFuzzer
# instrumentation plus ASan/UBSan (in build-fuzz/) and runs each fuzz target
# for FUZZ_SECONDS (default 30) from its seed corpus. Bounded in time; a crash
# leaves its input in build-fuzz/ and fails. FUZZ_TARGETS (names, e.g.
# "fuzz_api fuzz_nfc"; default all of tests/fuzz/fuzz_*.c) picks which run.
# fuzz_api also compiles the gateway's gateway/api.c into its binary;
# fuzz_httpd reaches libsvc's private httpd_parse.h (-Ilibsvc/src).
set -u
S=${FUZZ_SECONDS:-30}
B=build-fuzz
command -v clang >/dev/null || { echo "fuzz: clang is needed (make deps)"; exit 1; }
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
make --no-print-directory BUILD=$B CC=clang OPT=-O1 \
    EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $SAN -Wno-unused-command-line-argument" \
    EXTRA_LDFLAGS="$SAN" $B/libmoe.a $B/libsvc.a $B/libmesh.a $B/libtestmodel.a || exit 1
RPC_CFLAGS="$(pkg-config --cflags grpc libprotobuf-c hiredis) -I$B/gen"
RPC_LIBS="$(pkg-config --libs grpc libprotobuf-c hiredis libcrypto) $(pkg-config --libs libcjson 2>/dev/null)"
CJSON_CFLAGS="$(pkg-config --cflags libcjson 2>/dev/null)"
fail=0
for src in tests/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    case " ${FUZZ_TARGETS:-$name} " in *" $name "*) ;; *) continue ;; esac
    # sources a target needs beyond the libraries
    case $name in
    fuzz_api) extra="-Igateway $CJSON_CFLAGS gateway/api.c" ;;
    *) extra= ;;
    esac
    clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer $SAN -Ilibmoe/include -Ilibmoe/src -Ilibmesh/include -Ilibmesh/src -Ilibsvc/include -Ilibsvc/src -Itools/testmodel $RPC_CFLAGS \
        "$src" $extra $B/libtestmodel.a $B/libmesh.a $B/libsvc.a $B/libmoe.a $RPC_LIBS -lm -pthread -o "$B/$name" || { fail=1; continue; }
    mkdir -p "$B/corpus-$name"
    [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$B/corpus-$name/" 2>/dev/null
    # the GGUF reader starts from a small valid model (made by the regular build)
    [ "$name" = fuzz_gguf ] && [ -x build/moectl ] && build/moectl mkmodel --arch llama --n-vocab 300 \
        --n-embd 32 --n-ff 32 --n-layer 1 --n-head 1 --n-head-kv 1 --n-expert 2 --n-expert-used 1 \
        -o "$B/corpus-$name/seed.gguf" >/dev/null
    echo "== $name: ${S}s"
    if (cd $B && "./$name" -max_total_time="$S" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 "corpus-$name" 2>"$name.log"); then
        grep -E "stat::number_of_executed_units|cov:" "$B/$name.log" | tail -2
    else
        echo "FAIL: $name found a crash:"; tail -30 "$B/$name.log"; fail=1
    fi
done
exit $fail
