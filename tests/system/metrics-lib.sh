# metrics-lib.sh — scraping ledged's Prometheus endpoint in the metrics tests: set URL, then
# scrape; metric and expect read one sample of the last scrape; prom_check runs promtool.
# Sourced after lib.sh.

scrape() { curl -sf --max-time 10 "$URL" > "$T/scrape.txt" || fail "GET $URL failed"; }
# metric NAME LABEL_MATCHERS...: the value of the one sample of NAME whose labels include every
# given label="value" (the common labels included), or "absent"
metric() {
  local name="$1"; shift
  awk -v name="$name" -v want="$*" '
    BEGIN { n = split(want, w, " ") }
    $0 ~ "^" name "[{ ]" {
      ok = 1
      for (i = 1; i <= n; i++) if (index($0, w[i]) == 0) ok = 0
      if (ok) { print $NF; found++ }
    }
    END { if (!found) print "absent" }' "$T/scrape.txt" | tail -1
}
expect() { # expect NAME VALUE LABELS...
  local name="$1" want="$2"; shift 2
  local got; got=$(metric "$name" "$@")
  [ "$got" = "$want" ] || { grep "^$name" "$T/scrape.txt" | head -20 >&2; fail "$name{$*}: expected $want, got $got"; }
}
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 > b + 0) }'; } # gt A B: A > B as numbers
# promtool check metrics: the text must parse (exit 1 otherwise); of its lint findings (exit 3)
# only those IoT Edge's own names make are accepted: edgeAgent_* is camelCase,
# edgeAgent_created_pids_total is a gauge (pids.current goes down) under a counter's suffix, and
# edgeAgent_deployment_time_seconds a counter without one.
prom_check() {
  local out rc=0
  out=$(promtool check metrics < "$T/scrape.txt" 2>&1) || rc=$?
  [ "$rc" = 0 ] && return 0
  [ "$rc" = 3 ] || { echo "$out" >&2; return 1; }
  if grep -v -e "^edgeAgent_[a-z_]* metric names should be written in 'snake_case' not 'camelCase'\$" \
       -e '^edgeAgent_created_pids_total non-counter metrics should not have "_total" suffix$' \
       -e '^edgeAgent_deployment_time_seconds counter metrics should have "_total" suffix$' <<<"$out" | grep -q .; then
    echo "$out" >&2
    return 1
  fi
}
