#!/usr/bin/env bash
# Fails when a tracked C source or header does not match .clang-format (fix: clang-format -i FILE).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v clang-format >/dev/null || { echo "format: clang-format missing (scripts/deps --test)"; exit 1; }
bad=0
while IFS= read -r f; do
  if ! clang-format "$f" | cmp -s - "$f"; then
    echo "format: $f does not match .clang-format (clang-format -i $f)"
    bad=1
  fi
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find src tests modules bench fuzz -name '*.[ch]')
[ $bad = 0 ] && echo "format: $(clang-format --version | head -1): all files match"
exit $bad
