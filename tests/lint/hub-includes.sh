#!/usr/bin/env bash
# Fails when src/hub's units include each other in a circle. A unit is X.c with its header X.h
# (main.c, test-*.c and fuzz-*.c are not units). Two rules, so that the includes show the calls:
#  1. every function a unit's .c exports is declared in its own .h (not in a shared header that
#     would hide who calls whom);
#  2. the graph "X includes Y.h" among the units has no circle (tsort finds it).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=src/hub
bad=0

units=()
for f in "$dir"/*.c "$dir"/*.h; do
  u=$(basename "$f"); u=${u%.*}
  case "$u" in main | test-* | fuzz-*) continue ;; esac
  [[ " ${units[*]} " == *" $u "* ]] || units+=("$u")
done

# 1. Exported definitions: a line at column 0 that is not static, ends in ")" and is followed by
# a line "{" (the project's format), its name the word before the first "(".
for u in "${units[@]}"; do
  c="$dir/$u.c"
  [ -f "$c" ] || continue
  while IFS= read -r name; do
    if [ ! -f "$dir/$u.h" ] || ! grep -Eq "(^|[^A-Za-z0-9_])$name\(" "$dir/$u.h"; then
      echo "hub-includes: $c: $name() is not declared in $dir/$u.h"
      bad=1
    fi
  done < <(awk 'prev ~ /^[A-Za-z].*\)$/ && prev !~ /^static / && prev !~ /^(typedef|struct [a-z_]+ \{)/ && $0 == "{" {
                  line = prev; sub(/\(.*/, "", line); n = split(line, w, /[ *]+/); print w[n] }
                { prev = $0 }' "$c")
done

# 2. The include graph, as "includer included" pairs for tsort (a unit's own header is no edge).
edges=$(for u in "${units[@]}"; do
  echo "$u $u"
  for f in "$dir/$u.c" "$dir/$u.h"; do
    [ -f "$f" ] || continue
    sed -n 's|^#include "\([a-z_]*\)\.h".*|\1|p' "$f" | while read -r v; do
      [ "$v" = "$u" ] || echo "$u $v"
    done
  done
done)
if ! out=$(tsort <<<"$edges" 2>&1 >/dev/null) || [ -n "$out" ]; then
  echo "hub-includes: the units of $dir include each other in a circle:"
  sed -n 's/^tsort: //p' <<<"$out" | grep -v 'input contains a loop' | sed 's/^/  /'
  bad=1
fi

[ $bad = 0 ] && echo "hub-includes: ${#units[@]} units in $dir, every export in its own header, no include circle"
exit $bad
