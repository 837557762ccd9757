#!/usr/bin/env bash
# Every route of every real IoT Edge manifest in ../shared/fixtures/iotedge (placeholders
# substituted): the whole manifest passes ledged's validation (`ledge deploy --dry-run`), its
# $edgeHub section deploys to the running hub (reloaded, not restarted, each time), and one
# representative message per route lands in the route's endpoint — and in no other. A route
# that does not parse rejects the deployment with the route's name, the column and the reason.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"

FIXTURES="${LEDGE_FIXTURES:-$SRC_ROOT/../shared/fixtures/iotedge}"
[ -d "$FIXTURES" ] || FIXTURES="$SRC_ROOT/tests/fixtures/iotedge"
need "ls $FIXTURES/*.json" "no fixtures in $FIXTURES (set LEDGE_FIXTURES)"

hub_config
start_hub_ledged
hub_deploy "$(idle probe)" '{}'
wait_hub
pid=$(hub_pid)

substitute() {
  sed -e 's/<Container_Registry>/registry.example.com/g; s/<Architecture>/amd64/g' \
      -e 's/<Build\.BuildNumber>/1.4.0/g; s/<EdgeRuntime\.BuildNumber>/1.4.0/g' \
      -e 's/<[A-Za-z_.]*>/x/g' "$1"
}
depth_of() { hub_status | jq -r --arg e "$1" '[.endpoints[] | select(.endpoint == $e) | .depth] | add // 0'; }
all_depths() { hub_status | jq -c '[.endpoints[] | {(.endpoint): .depth}] | add // {}'; }

n_routes=0
for f in "$FIXTURES"/*.json; do
  name=$(basename "$f" .json)
  substitute "$f" > "$T/fixture.json"
  if grep -q '\$upstream:' "$T/fixture.json"; then
    # a nested-edge manifest: its images come through the parent ($upstream), which this device
    # (no upstream.parent) does not have — refused naming the module; with the parent's registry
    # spelled out the rest of it validates
    ! ledge deploy --dry-run "$T/fixture.json" > "$T/dry.out" 2>&1 || fail "$name: \$upstream images accepted without upstream.parent"
    grep -q 'settings.image: $upstream:[0-9]*/.*names the parent device.s registry ($upstream) and upstream.parent is not set' "$T/dry.out" ||
      fail "$name: the refusal of \$upstream: $(cat "$T/dry.out")"
    sed -i 's/\$upstream:/parent.example.com:/g' "$T/fixture.json"
  fi
  ledge deploy --dry-run "$T/fixture.json" > "$T/dry.out" 2>&1 || fail "$name: dry run: $(cat "$T/dry.out")"
  desired=$(jq -c '.modulesContent["$edgeHub"]["properties.desired"]' "$T/fixture.json")
  routes=$(jq -c '.routes' <<< "$desired")
  saf=$(jq -c '.storeAndForwardConfiguration // {}' <<< "$desired")
  schema=$(jq -r '.schemaVersion' <<< "$desired")
  # the modules the routes name, as idle process modules (their identities are what matters)
  mapfile -t mods < <(jq -r '.[] | if type == "object" then .route else . end' <<< "$routes" |
    grep -o '/modules/[A-Za-z0-9_.-]*' | sed 's|/modules/||' | sort -u)
  modules="$(idle probe)"
  for m in "${mods[@]}"; do modules="$modules, $(idle "$m")"; done
  hub_deploy "$modules" "$routes" "$saf" "$schema"
  # the hub reloads on ledged's SIGHUP: wait until every sink is an endpoint in use
  sinks=$(jq -c '[.[] | if type == "object" then .route else . end |
    if test("INTO *\\$upstream") then "$upstream" else capture("BrokeredEndpoint\\(\"(?<e>[^\"]+)\"\\)").e end] | unique' <<< "$routes")
  loaded() {
    hub_status | jq -e --argjson want "$sinks" '[.endpoints[] | select(.inUse) | .endpoint] as $have | $want - $have == []' >/dev/null
  }
  wait_for 10 "$name: routes loaded" loaded
  while IFS=$'\t' read -r rname rtext; do
    n_routes=$((n_routes + 1))
    src=$(sed -E 's/^.*FROM +([^ ]+).*$/\1/I' <<< "$rtext")
    if [[ "$rtext" =~ INTO\ +\$upstream ]]; then
      sink='$upstream'
    else
      sink=$(sed -E 's/^.*BrokeredEndpoint\("([^"]+)"\).*$/\1/' <<< "$rtext")
    fi
    if [[ "$src" =~ ^/messages/modules/([^/]+)/outputs/(.+)$ ]]; then
      from=${BASH_REMATCH[1]}; out=${BASH_REMATCH[2]}
      [ "$out" = "*" ] && out=anyOutput
    else
      from=probe; out=probeOutput   # "/*", "/messages/*": any module's output
    fi
    before=$(all_depths)
    mpub "$from" -q 1 -t "$(events "$from" "%24.on=$out&fixture=$name")" -m "{\"route\":\"$rname\"}" \
      || fail "$name/$rname: publish as $from"
    after=$(all_depths)
    # exactly one more message in the sink, nothing elsewhere (unless another route also matches)
    d_sink=$(jq -n --argjson a "$before" --argjson b "$after" --arg s "$sink" '($b[$s] // 0) - ($a[$s] // 0)')
    [ "$d_sink" = 1 ] || fail "$name/$rname ($rtext): $from/$out did not reach $sink: $before -> $after"
    d_all=$(jq -n --argjson a "$before" --argjson b "$after" '([$b[]] | add // 0) - ([$a[]] | add // 0)')
    [ "$d_all" = 1 ] || fail "$name/$rname: $from/$out reached other endpoints too: $before -> $after"
    log "$name/$rname: $from/$out -> $sink"
  done < <(jq -r 'to_entries[] | [.key, (.value | if type == "object" then .route else . end)] | @tsv' <<< "$routes")
done
log "$n_routes routes of $(ls "$FIXTURES"/*.json | wc -l) fixtures routed as written"
assert_eq "$(hub_pid)" "$pid" "the hub's pid across deployments"

log "a route that does not parse rejects the deployment: route name, column, reason"
hub_manifest "$(idle probe)" '{"good": "FROM /* INTO $upstream", "broken": "FROM /messages/* WHERE a = INTO $upstream"}' > "$T/bad.json"
if ledge deploy "$T/bad.json" > "$T/bad.out" 2>&1; then fail "a broken route was deployed"; fi
cat "$T/bad.out" >&2
grep -q 'routes.broken: column [0-9]*: ' "$T/bad.out" || fail "the refusal does not name the route and column"
log "PASS"
