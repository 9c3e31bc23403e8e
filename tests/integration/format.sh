#!/bin/sh
# tests/integration/format.sh - the C sources follow .clang-format: a drift
# fails here, with the command that fixes it (`make format`). Generated
# files (tools/gen_unicode.sh's tables) are left as generated.
command -v clang-format >/dev/null || { echo "clang-format not installed (make deps)"; exit 1; }
files=$(sh tools/format-files.sh) || exit 1
[ -n "$files" ] || { echo "format: no C files found"; exit 1; }
n=$(echo "$files" | wc -l)
# shellcheck disable=SC2086
out=$(clang-format --dry-run --Werror $files 2>&1)
if [ -n "$out" ]; then
    echo "$out" | grep -E '^[^ ]+:[0-9]+:[0-9]+: (error|warning)' | cut -d: -f1 | sort | uniq -c | sed 's/^/  drift: /'
    echo "format: the files above drift from .clang-format; fix with: make format"
    exit 1
fi
echo "format: $n files follow .clang-format"
