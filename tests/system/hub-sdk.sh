#!/usr/bin/env bash
# Module to module with the unmodified Azure IoT Node SDK on both ends: two containers of the
# ledge-node-module image run tests/node/sdk-module.js (ModuleClient.fromEnvironment(Mqtt),
# configured only by the environment ledged injects). nodeA's sendOutputEvent("ticks") reaches
# nodeB's input "fromA" through a route with its message id and properties; nodeB forwards each
# to its output "forwarded", routed back to nodeA's input "back". With LEDGE_ENGINE=oci
# (system-hub-sdk-oci) the modules are the oci engine's containers, reaching the hub through the
# bridge's address (device.gateway_hostname in their /etc/hosts), with no dockerd for ledged.
# Then (sdk_burst_across_restart, hub-lib.sh) nodeA over Mqtt sends 40 JSON messages routed by a WHERE
# on $body back to its own input across a kill -9 of the hub: every acknowledged one arrives. (docker only)
source "$(dirname "$0")/lib.sh"
HUB_TLS_PORT=8883 # the SDK connects to 8883 only
source "$(dirname "$0")/hub-lib.sh"
need_engine
need "command -v npm" "no npm (scripts/deps --test)"
need "! ss -Htln 'sport = :8883' | grep -q ." "port 8883 is taken (the SDK connects to 8883 only)"
DOCKER_HOST="$MOBY_HOST" "$SRC_ROOT/scripts/build-images" node-module >/dev/null || fail "cannot build ledge-node-module"
need_image ledge-node-module:latest
[ "$ENGINE" = oci ] || docker network inspect ledge >/dev/null 2>&1 || docker network create ledge >/dev/null

USE_DOCKER=1 hub_config
start_hub_ledged
node_mod() {
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-node-module:latest"}, "env": {"NODE_MODULE_SCRIPT": {"value": "sdk-module.js"}}}' "$1"
}
hub_deploy "$(node_mod nodeA), $(node_mod nodeB)" '{
  "aToB": "FROM /messages/modules/nodeA/outputs/ticks INTO BrokeredEndpoint(\"/modules/nodeB/inputs/fromA\")",
  "burstBack": "FROM /messages/modules/nodeA/outputs/burst WHERE $body.seq >= 0 AND $body.prefix = '"'r1'"' INTO BrokeredEndpoint(\"/modules/nodeA/inputs/self\")",
  "bToA": "FROM /messages/modules/nodeB/outputs/forwarded INTO BrokeredEndpoint(\"/modules/nodeA/inputs/back\")"}'
for m in edgeHub nodeA nodeB; do wait_for 60 "$m running" status_is $m running; done

events() { container_logs "$1" 2>/dev/null | grep '^{' || true; }
count() { events "$1" | jq -c --slurp "map(select($2)) | length"; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; }

log "nodeA's ticks arrive on nodeB's input fromA, with message id and properties"
wait_for 60 "5 inputs at nodeB" at_least nodeB '.event == "input" and .input == "fromA"' 5
for seq in 0 1 2 3 4; do
  [ "$(count nodeB ".event == \"input\" and .input == \"fromA\" and .messageId == \"tick-$seq\" and .props.seq == \"$seq\" and .props[\"\$.cmid\"] == \"nodeA\" and (.body | fromjson | .seq) == $seq")" -ge 1 ] ||
    fail "tick $seq at nodeB: $(events nodeB | grep '"input"' | head -3)"
done
log "nodeB's forwards come back to nodeA's input back"
wait_for 30 "5 inputs back at nodeA" at_least nodeA '.event == "input" and .input == "back" and .props.via == "node"' 5
assert_eq "$(count nodeA '.event == "error"')$(count nodeB '.event == "error"')" 00 "SDK errors"
hub_status | jq -e '.counters.authFailures == 0 and .counters.unauthorized == 0 and .counters.routed >= 10' >/dev/null ||
  fail "hub counters: $(hub_status | jq -c .counters)"
if [ "$ENGINE" = docker ]; then # the SDK's reconnect is the same on every engine: once is enough
  log "nodeA over Mqtt across a kill -9 of the hub: 40 messages routed by a WHERE on \$body back to its own input, every acknowledged one arrives"
  jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }
  sdk_burst_across_restart nodeA self r1
fi
log "PASS"
