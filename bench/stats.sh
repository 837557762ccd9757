# stats.sh — the arithmetic of ledge's benchmark reports (medians, spread, ratios) over the JSON
# lines bench/*/run record. Pure shell + jq + awk; sourced by bench/lib.sh and the report scripts.

# stats: numbers on stdin -> "median min max n" (median of an even count: mean of the middle two)
stats() {
  sort -g | awk 'NF {v[++n]=$1} END {
    if (n == 0) { print "nan nan nan 0"; exit }
    m = (n % 2) ? v[(n+1)/2] : (v[n/2] + v[n/2+1]) / 2
    printf "%.6g %.6g %.6g %d\n", m, v[1], v[n], n }'
}

med() { cut -d' ' -f1 <<<"$1"; }

# fmt_stat "median min max n" [DECIMALS] -> "median (min–max)", or the value alone for one run
fmt_stat() {
  awk -v d="${2:-0}" '{
    if ($4 == 0) { print "n/a"; exit }
    if ($4 == 1 || $2 == $3) { printf "%.*f\n", d, $1; exit }
    printf "%.*f (%.*f–%.*f)\n", d, $1, d, $2, d, $3 }' <<<"$1"
}

# ratio A B -> A/B with two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "nan" || b == "nan" || a == "" || b == "") print "n/a"; else printf "%.2f\n", a / b }'; }

# vals FILE JQ_SELECT JQ_VALUE -> one number per matching line
vals() { jq -r "select($2) | ($3) // empty" "$1"; }

# round_ratios FILE SELECT_A SELECT_B VALUE -> "median min max n" of A/B per round
round_ratios() {
  local f="$1" a="$2" b="$3" v="$4"
  jq -rs --argjson dummy 0 "
    (map(select($a)) | map({key: (.round|tostring), value: ($v)}) | from_entries) as \$A |
    (map(select($b)) | map({key: (.round|tostring), value: ($v)}) | from_entries) as \$B |
    \$A | keys[] | select(\$A[.] != null and \$B[.] != null and \$B[.] != 0) | \$A[.] / \$B[.]" "$f" | stats
}
