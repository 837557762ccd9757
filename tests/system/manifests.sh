#!/usr/bin/env bash
# Real IoT Edge manifests on the real dockerd, createOptions as IoT Edge reads them. Every manifest
# in ../shared/fixtures/iotedge (placeholders filled, every module's image swapped for the local
# ledge-testmod) comes up with each module running, and `docker inspect` shows what its
# createOptions asked for, read the way edgeAgent reads them ("Privileged": "true" is a boolean):
# Privileged, NetworkMode, port bindings (published), binds, exposed ports, user, log config, and
# the manifest's env. Privileged containers cannot start on this machine, so modules asking for
# it are deployed with status "stopped": ledge creates their containers and the test inspects
# those. Then createOptions written the loose way (memory limits and CPU shares as strings, a
# host port as a number, names in lower case, a field the model does not know), a value that
# cannot be coerced (refused with its JSON path; nothing changes), and IoT Edge's status
# semantics: a crashing module, an env change and a status-only change are not failed
# deployments when the deployment applied.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"
need_docker
docker image inspect ledge-testmod:latest >/dev/null 2>&1 || "$SRC_ROOT/scripts/build-images" testmod

FIXTURES="${LEDGE_FIXTURES:-$SRC_ROOT/../shared/fixtures/iotedge}"
[ -d "$FIXTURES" ] || FIXTURES="$SRC_ROOT/tests/fixtures/iotedge"
need "ls $FIXTURES/*.json" "no fixtures in $FIXTURES (set LEDGE_FIXTURES)"

USE_DOCKER=1 hub_config
start_hub_ledged
: > "$T/oidc.json"

substitute() {
  sed -e 's/<Container_Registry>/registry.example.com/g; s/<Architecture>/amd64/g' \
      -e 's/<Build\.BuildNumber>/1.4.0/g; s/<EdgeRuntime\.BuildNumber>/1.4.0/g' \
      -e "s|<AzureFederatedTokenFile>|$T/oidc.json|g" \
      -e 's/<[A-Za-z_.]*>/x/g' "$1"
}

# jq: a module's createOptions as given (chunks joined, the object form stringified), or null
JQ_DEFS='
def given_options: [to_entries[] | select(.key | test("^createOptions([0-9][0-9])?$"))]
  | sort_by(.key) | map(.value | if type == "string" then . else tojson end) | join("")
  | if test("^\\s*(null|NULL|Null)?\\s*$") then null else fromjson end;
def truthy: if type == "string" then ascii_downcase == "true" elif type == "number" then . != 0 else . == true end;
def privileged: (.HostConfig.Privileged // false) | truthy;'

# Every module's image becomes ledge-testmod (never pulled); privileged ones are created only.
swap_images() { # swap_images MANIFEST > OUT
  jq "$JQ_DEFS"'
    .modulesContent["$edgeAgent"]["properties.desired"].modules |= with_entries(
      (.value.settings | given_options) as $co
      | .value.settings.image = "ledge-testmod:latest" | .value.imagePullPolicy = "never"
      | if ($co // {}) | privileged then .value.status = "stopped" else . end)' "$1"
}

# What docker inspect shows that the module's createOptions (and env) did not get: one line each.
check_module() { # check_module MANIFEST NAME
  local inspect
  inspect=$(docker inspect "$2") || { echo "$2: no container"; return; }
  jq -r --arg name "$2" --argjson c "$inspect" "$JQ_DEFS"'
    .modulesContent["$edgeAgent"]["properties.desired"].modules[$name] as $m
    | ($m.settings | given_options // {}) as $co | $c[0] as $i
    | ($co.HostConfig // {}) as $h
    | [ (if ($co | privileged) != ($i.HostConfig.Privileged) then "Privileged \($i.HostConfig.Privileged)" else empty end),
        (($h.NetworkMode // "ledge") as $nm | if $i.HostConfig.NetworkMode != $nm then "NetworkMode \($i.HostConfig.NetworkMode), wanted \($nm)" else empty end),
        ($h.PortBindings // {} | to_entries[] | .key as $p | (.value[0].HostPort | tostring) as $hp
          | if ($i.HostConfig.PortBindings[$p][0].HostPort) != $hp then "PortBindings \($p)" else empty end,
            if ($i.Config.ExposedPorts // {} | has($p)) | not then "port \($p) not exposed" else empty end,
            if $i.State.Running and $i.HostConfig.NetworkMode != "host" and ($i.NetworkSettings.Ports[$p][0].HostPort) != $hp
            then "port \($p) not published on \($hp)" else empty end),
        ($h.Binds // [] | .[] | select(. as $b | $i.HostConfig.Binds | index($b) | not) | "bind \(.) missing"),
        ($co.ExposedPorts // {} | keys[] | select(. as $p | $i.Config.ExposedPorts // {} | has($p) | not) | "exposed \(.) missing"),
        (if $co.User and $i.Config.User != $co.User then "User \($i.Config.User)" else empty end),
        ($h.LogConfig // null | select(.) | if $i.HostConfig.LogConfig.Type != .Type or ((.Config // {} | map_values(tostring)) != ($i.HostConfig.LogConfig.Config // {})) then "LogConfig \($i.HostConfig.LogConfig)" else empty end),
        ($m.env // {} | to_entries[] | "\(.key)=\(.value.value // "" | tostring)" | select(. as $e | $i.Config.Env | index($e) | not) | "env \(.) missing")
      ] | .[] | "\($name): \(.)"' "$1"
}

n_modules=0 n_created_only=0
for f in "$FIXTURES"/*.json; do
  name=$(basename "$f" .json)
  substitute "$f" | tee "$T/raw.json" > /dev/null
  swap_images "$T/raw.json" > "$T/fixture.json"
  ledge deploy "$T/fixture.json" > "$T/out" 2>&1 || fail "$name: deploy failed: $(cat "$T/out")"
  mapfile -t mods < <(jq -r '.modulesContent["$edgeAgent"]["properties.desired"].modules | keys[]' "$T/fixture.json")
  for m in "${mods[@]}"; do
    if [ "$(jq -r --arg m "$m" '.modulesContent["$edgeAgent"]["properties.desired"].modules[$m].status' "$T/fixture.json")" = stopped ]; then
      # privileged: created (with the settings asked for) but not started on this machine
      wait_for 30 "$name/$m created" sh -c "docker inspect -f '{{.State.Status}}' '$m' | grep -qx created"
      n_created_only=$((n_created_only + 1))
    else
      wait_for 60 "$name/$m running" status_is "$m" running
    fi
    n_modules=$((n_modules + 1))
  done
  problems=$(for m in "${mods[@]}"; do check_module "$T/fixture.json" "$m"; done)
  [ -z "$problems" ] || fail "$name: docker inspect differs from the createOptions: $problems"
  log "$name: ${#mods[@]} modules as their createOptions ask"
done
log "$n_modules modules of $(ls "$FIXTURES"/*.json | wc -l) manifests ($n_created_only privileged: created and inspected, not started)"

log "the connectivity manifest's networkController: \"Privileged\": \"true\" is a boolean"
substitute "$FIXTURES/connectivity_deployment.template.json" > "$T/raw.json"
swap_images "$T/raw.json" > "$T/fixture.json"
ledge deploy "$T/fixture.json" > /dev/null
wait_for 30 "networkController created" sh -c "docker inspect networkController >/dev/null 2>&1"
assert_eq "$(docker inspect -f '{{.HostConfig.Privileged}} {{.HostConfig.NetworkMode}} {{.Config.User}}' networkController)" \
  "true host root" "networkController's Privileged, NetworkMode, User"

log "createOptions as operators write them: strings for numbers, a number for a port, lower case"
PORT=$(free_port)
mkdir -p "$T/data"
loose=$(jq -cn --arg data "$T/data" --arg port "$PORT" '{
  hostconfig: {memory: "67108864", MemorySwap: "134217728", cpushares: "512", PidsLimit: "100",
    PortBindings: {"7000/tcp": [{hostport: ($port | tonumber)}]}, Binds: ["\($data):/data:ro"],
    Ulimits: [{Name: "nofile", Soft: "1024", Hard: 2048}], FancyNewThing: {"a": 1},
    LogConfig: {Type: "json-file", Config: {"max-size": "1m", "max-file": 2}}},
  labels: {team: "edge", tier: 3}, Env: ["FROM_CREATE_OPTIONS=1"], StopTimeout: "5"}')
typed() { # typed CREATE_OPTIONS_STRING
  jq -cn --arg co "$1" '{typed: {type: "docker", status: "running", restartPolicy: "always",
    imagePullPolicy: "never", settings: {image: "ledge-testmod:latest", createOptions: $co}}}' | jq -c '.typed' |
    sed 's/^/"typed": /'
}
deploy "$(typed "$loose"), $(testmod steady running 1)" > "$T/out" 2>&1 || fail "loose createOptions refused: $(cat "$T/out")"
grep -q "warning: modules.typed.settings.createOptions.hostconfig.FancyNewThing: not a field of the Engine API's ContainerCreate body that ledge knows; passed to the engine as given" "$T/out" ||
  fail "no warning for the unknown field: $(cat "$T/out")"
wait_for 30 "typed running" status_is typed running
i=$(docker inspect typed)
chk() { [ "$(jq -r ".[0].$1" <<< "$i")" = "$2" ] || fail "typed: .$1 is $(jq -c ".[0].$1" <<< "$i"), wanted $2"; }
chk HostConfig.Memory 67108864
chk HostConfig.MemorySwap 134217728
chk HostConfig.CpuShares 512
chk HostConfig.PidsLimit 100
chk 'HostConfig.PortBindings["7000/tcp"][0].HostPort' "$PORT"
chk 'NetworkSettings.Ports["7000/tcp"][0].HostPort' "$PORT"
chk 'HostConfig.Binds | index("'"$T/data"':/data:ro") != null' true
chk 'HostConfig.Ulimits[0] | "\(.Name) \(.Soft) \(.Hard)"' "nofile 1024 2048"
chk 'HostConfig.LogConfig.Config["max-file"]' 2
chk 'Config.Labels.team' edge
chk 'Config.Labels.tier' 3
chk 'Config.Labels["dev.ledge.owner"]' ledge
chk 'Config.Env | index("FROM_CREATE_OPTIONS=1") != null' true
chk 'Config.Env | index("IOTEDGE_MODULEID=typed") != null' true
chk Config.StopTimeout 5

log "a value that cannot be coerced: refused with its path, nothing changes"
id=$(container_id typed)
bad=$(jq -cn '{HostConfig: {Memory: "lots", Privileged: "maybe"}}')
if deploy "$(typed "$bad"), $(testmod steady running 1)" > "$T/out" 2>&1; then fail "Memory \"lots\" was deployed"; fi
grep -q 'modules.typed.settings.createOptions.HostConfig.Memory: expected an integer, got "lots"' "$T/out" ||
  fail "the refusal does not name the path: $(cat "$T/out")"
grep -q 'modules.typed.settings.createOptions.HostConfig.Privileged: expected a boolean, got "maybe"' "$T/out" ||
  fail "the refusal does not list every problem: $(cat "$T/out")"
assert_eq "$(container_id typed)" "$id" "typed's container after the refusal"
ledge deploy --dry-run "$T/deploy.json" > "$T/out" 2>&1 && fail "dry run accepted it"
grep -q 'HostConfig.Memory: expected an integer' "$T/out" || fail "dry run: $(cat "$T/out")"

log "status semantics: a new crashing module rolls back; beside one already crashing, an env change and a status-only change apply"
crasher='"crasher": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-testmod:latest"}, "env": {"TESTMOD_EXIT_AFTER_MS": {"value": "300"}, "TESTMOD_EXIT_CODE": {"value": "3"}}}'
# Atomic deployments (docs/deployments.md): the deployment that brings the crasher fails as a
# whole; with --no-rollback it stays, and from then on the crasher is a module it does not change.
if deploy "$crasher, $(testmod steady running 1)" > "$T/out" 2>&1; then fail "a deployment whose new module crashes applied: $(cat "$T/out")"; fi
grep -q "rolled back.*module crasher: exited with code 3" "$T/out" || fail "not rolled back naming crasher: $(cat "$T/out")"
container_exists crasher && fail "the rolled back crasher still exists"
deploy "$crasher, $(testmod steady running 1)" --no-rollback > "$T/out" 2>&1 || fail "a deployment with a crashing module failed with --no-rollback: $(cat "$T/out")"
grep -q "Deployment applied" "$T/out" || fail "not applied: $(cat "$T/out")"
crashed() { [ "$(module_field crasher exitCode)" = 3 ] && [[ "$(module_field crasher runtimeStatus)" =~ ^(backoff|failed)$ ]]; }
wait_for 30 "crasher crashing" crashed
deploy "$crasher, $(testmod steady running 1 '"NEW": {"value": "1"}')" > "$T/out" 2>&1 ||
  fail "an env change beside a crashing module failed: $(cat "$T/out")"
grep -q "recreate  steady" "$T/out" || fail "expected a recreate of steady: $(cat "$T/out")"
wait_for 20 "steady running" status_is steady running
deploy "$crasher, $(testmod steady stopped 1 '"NEW": {"value": "1"}')" > "$T/out" 2>&1 ||
  fail "a status-only change beside a crashing module failed: $(cat "$T/out")"
wait_for 20 "steady stopped" status_is steady stopped
log "PASS"
