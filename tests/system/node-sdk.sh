#!/usr/bin/env bash
# Acceptance: the unmodified Azure IoT Node SDK (azure-iot-device, azure-iot-device-mqtt from
# npm) as a module ledge creates, configured only by the environment ledged injects
# (tests/node/sdk-module.js in the ledge-node-module image), against ledge-hub on port 8883 as
# the SDK requires: open, sendOutputEvent (routed upstream), receive on an input (routed from the
# tempSensor sample), getTwin with the deployment's desired properties, update reported
# properties, receive a desired-property update from `ledge twin set`, answer a direct method
# from `ledge invoke`. With LEDGE_ENGINE=oci (system-node-sdk-oci) the modules are the oci
# engine's containers and ledged has no dockerd.
source "$(dirname "$0")/lib.sh"
HUB_PORT=8883
source "$(dirname "$0")/upstream-lib.sh"
need_engine
need_mosquitto
need "command -v jq" "no jq"
need "command -v node && command -v npm" "no node/npm (scripts/deps --test)"
need "! ss -Htln 'sport = :8883' | grep -q ." "port 8883 is taken (the SDK connects to 8883 only)"
# (re)built when tests/node changed; a no-op otherwise
DOCKER_HOST="$MOBY_HOST" "$SRC_ROOT/scripts/build-images" node-module >/dev/null || fail "cannot build ledge-node-module"
need_image ledge-node-module:latest
need_images ledge-tempsensor:latest

UP_TOPIC='up/{module}/{properties}'
write_hub_config
start_mosquitto
start_sub
start_ledged

node_mod='"nodeMod": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-node-module:latest"}, "env": {"NODE_MODULE_SCRIPT": {"value": "sdk-module.js"}}}'
sensor=$(sample_module tempSensor ledge-tempsensor:latest '"SendInterval": {"value": "0.5"}, "MessageCount": {"value": "10"}')
ROUTES='"toNode": "FROM /messages/modules/tempSensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/nodeMod/inputs/fromSensor\")",
        "nodeUp": "FROM /messages/modules/nodeMod/outputs/* INTO $upstream"'
hub_manifest "$node_mod, $sensor" "$ROUTES" |
  jq '.modulesContent.nodeMod = {"properties.desired": {"greeting": "hello"}}' > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy"; }
for m in edgeHub nodeMod tempSensor; do wait_for 60 "$m running" status_is $m running; done

events() { container_logs nodeMod 2>/dev/null | grep '^{' ; }
has_event() { events | jq_true --slurp "map(select($1)) | length >= ${2:-1}"; }
check_event() { has_event "$1" "${2:-1}" || fail "no node event $1: $(events | tail -20)"; }
no_errors() { ! events | grep -q '"event":"error"' || fail "the SDK reported errors: $(events | grep '"error"')"; }

log "open, getTwin (desired from the deployment), reported properties"
wait_for 60 "the SDK connected" has_event '.event == "open"'
wait_for 20 "getTwin" has_event '.event == "twin"'
check_event '.event == "twin" and .desired.greeting == "hello" and (.desired["$version"] | type) == "number"'
wait_for 20 "reported update" has_event '.event == "reported" and .ok'
twin_has() { twin_is nodeMod "$1"; }
wait_for 10 "reported in the twin" twin_has '.reported.nodeSdk.ok == true'

log "sendOutputEvent: five ticks upstream, with the module's origin and properties"
wait_for 20 "ticks sent" has_event '.event == "sent" and .ok' 5
ticks_up() { [ "$(grep -c '^up/nodeMod/.*%24.on=ticks' "$T/up.log")" -ge 5 ]; }
wait_for 20 "ticks upstream" ticks_up
for seq in 0 1 2 3 4; do
  grep -q "^up/nodeMod/%24.mid=tick-$seq&.*%24.on=ticks.*seq=$seq {\"seq\":$seq}\$" "$T/up.log" ||
    fail "tick $seq upstream: $(grep "tick-$seq" "$T/up.log")"
done

log "receive on an input through a route (tempSensor → nodeMod/inputs/fromSensor), forward it"
wait_for 30 "inputs" has_event '.event == "input" and .input == "fromSensor"' 3
check_event '.event == "input" and (.body | fromjson | .machine.temperature | type) == "number" and .props.seq != null and (.messageId | startswith("tempsensor-"))' 3
wait_for 20 "forwarded" has_event '.event == "forwarded" and .ok' 3
fwd_up() { [ "$(grep -c '^up/nodeMod/.*%24.on=forwarded.*via=node' "$T/up.log")" -ge 3 ]; }
wait_for 20 "forwarded readings upstream" fwd_up

log "a desired-property update from ledge twin set"
ledge twin set nodeMod '{"color": "blue"}' >/dev/null
wait_for 20 "desired update" has_event '.event == "desired" and .delta.color == "blue" and (.delta["$version"] | type) == "number"'

log "a direct method from ledge invoke"
ledge invoke nodeMod echo --payload '{"a": [1, 2]}' --timeout 10 > "$T/inv.out" || fail "invoke: $(cat "$T/inv.out")"
jq_true '.status == 200 and .payload.echo.a == [1, 2]' "$T/inv.out" || fail "invoke reply: $(cat "$T/inv.out")"
check_event '.event == "method" and .name == "echo" and .payload.a == [1, 2]'

no_errors
hub_status | jq_true '.counters.authFailures == 0 and .counters.unauthorized == 0' ||
  fail "hub counters: $(hub_status | jq -c .counters)"
stop_ledged
log "ok"
