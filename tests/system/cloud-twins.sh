#!/usr/bin/env bash
# Module twins and direct methods from the cloud, against the IoT Hub stand-in (tests/iothub):
# the unmodified Azure IoT Node SDK as a module (tests/node/sdk-module.js) connects to ledge-hub;
# the hub opens that module's own session upstream (its identity's key derived from the device
# key, registered in the stand-in). The cloud twin's desired properties, written before the
# module connected, reach the module with the cloud's $version; its reported patch reaches the
# cloud; a desired patch from the cloud reaches it; a direct method from the cloud reaches it and
# its answer comes back. Offline (the stand-in refusing connections) the module's new reported
# properties (a method makes it report) wait and the cloud's new desired properties wait; with the link back both sides
# catch up. A module that is gone: its session closes and the cloud's method gets 404.
source "$(dirname "$0")/lib.sh"
HUB_PORT=8883
source "$(dirname "$0")/upstream-lib.sh"
source "$(dirname "$0")/iothub-lib.sh"
need_docker
need_iothub
need "! ss -Htln 'sport = :8883' | grep -q ." "port 8883 is taken (the SDK connects to 8883 only)"
"$SRC_ROOT/scripts/build-images" node-module >/dev/null || fail "cannot build ledge-node-module"

start_iothub
iothub_edge_device '$edgeAgent' '$edgeHub' nodeMod
log "the cloud twin of nodeMod has desired properties before the module ever connects"
iothub PATCH "/twins/$DEVICE/modules/nodeMod" '{"properties": {"desired": {"fromCloud": "early"}}}' >/dev/null

write_hub_config
start_ledged

node_mod='"nodeMod": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-node-module:latest"}, "env": {"NODE_MODULE_SCRIPT": {"value": "sdk-module.js"}}}'
hub_manifest "$node_mod" '"up": "FROM /messages/modules/* INTO $upstream"' > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy"; }
for m in edgeHub nodeMod; do wait_for 60 "$m running" status_is $m running; done

events() { docker logs nodeMod 2>/dev/null | grep '^{' ; }
has_event() { events | jq_true --slurp "map(select($1)) | length >= ${2:-1}"; }
cloud_twin() { iothub GET "/twins/$DEVICE/modules/nodeMod"; }
cloud_twin_is() { cloud_twin | jq_true ".properties | $1"; }
upstream_session() { iothub GET "/connections?deviceId=$DEVICE&moduleId=nodeMod" | jq_true '.connections | length == 1'; }
no_upstream_session() { iothub GET "/connections?deviceId=$DEVICE&moduleId=nodeMod" | jq_true '.connections | length == 0'; }

log "the module connects: the hub opens its session upstream as the module"
wait_for 60 "the SDK connected" has_event '.event == "open"'
wait_for 30 "nodeMod's own session at the stand-in" upstream_session
iothub GET "/connections?deviceId=$DEVICE&moduleId=nodeMod" | jq_true '.connections[0] | .auth == "sas" and .clientId == "'"$DEVICE"'/nodeMod"' ||
  fail "the module's upstream connection: $(iothub GET "/connections?deviceId=$DEVICE&moduleId=nodeMod")"

log "the module's telemetry (routed to \$upstream) reaches IoT Hub from the module itself, as edgeHub sends it"
ticks() { iothub GET "/telemetry?deviceId=$DEVICE&moduleId=$1" | jq -c '[.messages[] | select(.properties.seq != null)]'; }
five_ticks() { ticks nodeMod | jq_true 'length >= 5'; }
wait_for 30 "the module's 5 ticks at the stand-in" five_ticks
ticks nodeMod | jq_true 'map(.properties.seq) | sort == ["0", "1", "2", "3", "4"]' || fail "nodeMod's telemetry upstream: $(ticks nodeMod)"
ticks "" | jq_true 'length == 0' || fail "module telemetry came from the edge device: $(ticks "")"
hub_status | jq_true '.upstream.moduleSessions.acked >= 5' || fail "hub status upstream: $(hub_status | jq -c .upstream)"

log "desired properties from the cloud win, with the cloud's \$version"
CV=$(cloud_twin | jq '.properties.desired["$version"]')
local_desired_is() { twin_is nodeMod ".desired | $1"; }
wait_for 30 "the cloud's desired in the local twin" local_desired_is ".fromCloud == \"early\" and .[\"\$version\"] == $CV"
wait_for 30 "the module saw fromCloud" has_event '(.event == "twin" and .desired.fromCloud == "early") or (.event == "desired" and .delta.fromCloud == "early")'

log "the module's reported properties reach the cloud"
wait_for 30 "reported nodeSdk in the cloud" cloud_twin_is '.reported.nodeSdk.ok == true'

log "a desired patch from the cloud reaches the module"
iothub PATCH "/twins/$DEVICE/modules/nodeMod" '{"properties": {"desired": {"color": "blue"}}}' >/dev/null
wait_for 30 "the module's desired update" has_event '.event == "desired" and .delta.color == "blue" and (.delta["$version"] | type) == "number"'

log "a direct method from the cloud reaches the module; its answer comes back"
iothub POST "/twins/$DEVICE/modules/nodeMod/methods" '{"methodName": "echo", "payload": {"a": [1, 2]}, "responseTimeoutInSeconds": 20}' > "$T/method.json" ||
  fail "the cloud's method call: $(cat "$T/method.json")"
jq_true '.status == 200 and .payload.echo.a == [1, 2]' "$T/method.json" || fail "the method's answer: $(cat "$T/method.json")"
has_event '.event == "method" and .name == "echo" and .payload.a == [1, 2]' || fail "the module did not see the call"

log "offline: the cloud refuses connections; the module reports again, the cloud writes desired"
iothub PATCH /settings '{"refuseConnections": 3}' >/dev/null
iothub POST /connections/drop-all '{}' >/dev/null
wait_for 30 "the module's session down" no_upstream_session
ledge invoke nodeMod report --payload '{"offline": {"n": 1}}' --timeout 10 > "$T/report.out" ||
  fail "the local report call: $(cat "$T/report.out")"
wait_for 20 "reported locally" twin_is nodeMod '.reported.offline.n == 1'
iothub PATCH "/twins/$DEVICE/modules/nodeMod" '{"properties": {"desired": {"color": "red"}}}' >/dev/null
sleep 2
cloud_twin_is '.reported.offline | not' || fail "reported reached the cloud while it refused connections"
local_desired_is '.color == "blue"' || fail "desired changed locally while offline: $(ledge twin get nodeMod)"

log "the link is back: reported goes up, desired comes down"
iothub PATCH /settings '{"refuseConnections": null}' >/dev/null
wait_for 90 "the reported patch made offline in the cloud" cloud_twin_is '.reported.offline.n == 1 and .reported.nodeSdk.ok'

wait_for 30 "red in the local twin" local_desired_is '.color == "red"'
wait_for 30 "the module got red" has_event '.event == "desired" and .delta.color == "red"'

log "the module goes: its session closes and the cloud's method call gets 404"
ledge stop nodeMod >/dev/null
wait_for 30 "nodeMod stopped" status_is nodeMod stopped
wait_for 30 "the module's session closed" no_upstream_session
code=$(curl -s -o "$T/m404.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary '{"methodName": "echo", "responseTimeoutInSeconds": 5}' "$IOTHUB_CONTROL/twins/$DEVICE/modules/nodeMod/methods")
[ "$code" = 404 ] || fail "a method for a module that is gone: HTTP $code $(cat "$T/m404.json")"
hub_status | jq_true '.cloud.enabled and (.cloud.sessions | length == 0)' || fail "hub status cloud: $(hub_status | jq -c .cloud)"
stop_ledged
log "ok"
