#!/usr/bin/env bash
# Nested edge, two layers on this machine (docs/nested.md): a parent ledge with no IoT Hub (the
# top of an air-gapped hierarchy, its upstream a plain mosquitto) and a child ledge whose
# upstream is the parent (upstream.parent, TLS checked against the parent's trust bundle). The
# child is registered on the parent as a leaf device; its ledged logs in to the parent's hub as
# child1/$edgeAgent and child1/$edgeHub, its hub as child1 and as child1/<module>. A deployment
# given at the parent (`ledge --device child1 deploy`) runs at the child on the process engine
# and is reported back (`ledge --device child1 list`); the child's module twin and methods work
# from the parent (`twin get|set`, `invoke`); an invalid deployment is refused at the parent;
# the child's telemetry reaches the parent's upstream; a wrong key is refused.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nested-lib.sh"
need "[ -x '$SENSOR' ] && [ -x '$FILTER' ]" "the sample modules are not built"

CHILD_KEY=$(openssl rand -base64 32)
TOP_HOST=top.local.ledge # the parent's device.iothub_hostname (generated identity "top")

layer_config parent "  id: top
  gateway_hostname: ledge-gw.local" "  enabled: true
  host: 127.0.0.1
  port: $MOSQ_PORT
  tls: false"
start_mosquitto
layer_start parent

log "the parent's hub: routes the child's telemetry to its upstream"
manifest "" '{"up": "FROM /messages/* WHERE $connectionDeviceId = '"'child1'"' INTO $upstream"}' > "$T/parent.json"
lcli parent deploy "$T/parent.json" >/dev/null || fail "the parent's deployment failed"
lcli parent device add child1 --key "$CHILD_KEY" > "$T/add.out" || fail "device add: $(cat "$T/add.out")"
grep -q "HostName=$TOP_HOST;DeviceId=child1;SharedAccessKey=" "$T/add.out" || fail "connection string: $(cat "$T/add.out")"

layer_config child "  connection_string: \"HostName=$TOP_HOST;DeviceId=child1;SharedAccessKey=$CHILD_KEY\"
  gateway_hostname: child-gw.local" "  parent: 127.0.0.1
  port: ${LAYER_TLS[parent]}
  ca_file: $T/parent/state/certs/trust-bundle.pem
  token_lifetime: 1h"
layer_start child

agent_twin() { lcli parent --device child1 list --json 2>/dev/null; }
status_is_child() { agent_twin | jq_true "$1"; }
lstatus() { curl -s --unix-socket "$T/$1/run/mgmt.sock" http://l/status; }
cloud_up() { lstatus child | jq_true '.cloud.edgeAgent.connected and .cloud.edgeHub.connected'; }
log "the child's \$edgeAgent and \$edgeHub log in to the parent; no deployment yet: 417"
wait_for 30 "the child's cloud sessions up" cloud_up
wait_for 30 "417 reported at the parent" status_is_child '.lastDesiredStatus.code == 417'

log "a deployment for the child, given at the parent"
ROUTES='{"toFilter": "FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
  "up": "FROM /messages/modules/sensor/outputs/* INTO $upstream"}'
manifest "$(proc_module sensor "$SENSOR" child '"SendInterval": {"value": "0.2"}'), $(proc_module filter "$FILTER" child)" "$ROUTES" |
  jq '.modulesContent.filter = {"properties.desired": {"TemperatureThreshold": 25}}' > "$T/child.json"
lcli parent --device child1 deploy "$T/child.json" --timeout 90s > "$T/deploy.out" 2>&1 ||
  fail "ledge --device child1 deploy: $(cat "$T/deploy.out")"
grep -q "^sensor .*running" "$T/deploy.out" || fail "the deploy's listing: $(cat "$T/deploy.out")"
child_running() { lcli child list --json | jq_true '[.[] | select(.name == "sensor" or .name == "filter") | .runtimeStatus == "running"] | length == 2 and all'; }
wait_for 30 "sensor and filter running at the child" child_running
wait_for 30 "the parent sees them running" status_is_child \
  '.lastDesiredStatus.code == 200 and .modules.sensor.runtimeStatus == "running" and .modules.filter.runtimeStatus == "running" and .systemModules.edgeHub.runtimeStatus == "running"'
lcli parent --device child1 list > "$T/list.out" || fail "ledge --device child1 list failed"
grep -q "^filter .*running" "$T/list.out" || fail "list: $(cat "$T/list.out")"

log "the child's module twin from the parent: desired from the deployment, reported back"
ftwin() { lcli parent --device child1 twin get filter 2>/dev/null | jq_true "$1"; }
wait_for 30 "filter reports threshold 25" ftwin '.reported.TemperatureThreshold == 25'
lcli parent --device child1 twin set filter '{"TemperatureThreshold": 33}' >/dev/null || fail "twin set"
wait_for 30 "filter reports threshold 33" ftwin '.reported.TemperatureThreshold == 33'

log "a direct method on the child's module, from the parent"
lcli parent --device child1 invoke filter SetThreshold --payload '{"threshold": 36}' --timeout 10 > "$T/inv.out" ||
  fail "invoke: $(cat "$T/inv.out")"
jq_true '.status == 200' "$T/inv.out" || fail "invoke answer: $(cat "$T/inv.out")"
wait_for 30 "filter reports threshold 36" ftwin '.reported.TemperatureThreshold == 36'
lcli parent --device child1 invoke nosuch ping --timeout 5 > "$T/inv404.out" 2>&1 && fail "a method on a module that is not there succeeded"
grep -q "not connected" "$T/inv404.out" || fail "404 message: $(cat "$T/inv404.out")"

log "the child's telemetry reaches the parent's upstream"
up_readings() { [ "$(up_count '"machine"')" -ge 10 ]; }
wait_for 30 "readings from the child at the parent's upstream" up_readings
grep -m1 '"machine"' "$T/up.log" | grep -q '^devices/top/messages/events/.*%24.cdid=child1&%24.cmid=sensor' ||
  fail "upstream topic: $(grep -m1 machine "$T/up.log")"

log "refusals: an invalid deployment, an unknown device, a wrong key"
echo '{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {"bad": {"type": "docker", "settings": {"image": 5}}}}}}}' > "$T/bad.json"
lcli parent --device child1 deploy "$T/bad.json" > "$T/bad.out" 2>&1 && fail "an invalid deployment was accepted"
grep -q "modules.bad" "$T/bad.out" || fail "the refusal does not name the path: $(cat "$T/bad.out")"
lcli parent --device nosuch deploy "$T/child.json" > "$T/nodev.out" 2>&1 && fail "a deployment for an unknown device was accepted"
grep -q 'no leaf device "nosuch"' "$T/nodev.out" || fail "unknown device: $(cat "$T/nodev.out")"
lcli parent device add xdev --x509-thumbprint "$(printf '%040d' 7)" >/dev/null || fail "device add xdev"
lcli parent --device xdev deploy "$T/child.json" > "$T/x509.out" 2>&1 && fail "a deployment for an X.509 device was accepted"
grep -q "X.509 device: a child edge device needs a SAS identity" "$T/x509.out" || fail "X.509 device: $(cat "$T/x509.out")"
lcli parent --device child1 logs sensor > "$T/verb.out" 2>&1 && fail "--device with logs"
grep -q "works with deploy, list, twin and invoke" "$T/verb.out" || fail "--device logs: $(cat "$T/verb.out")"
lcli parent device key child1 --rotate primary >/dev/null || fail "rotate"
cut_off() { lstatus child | jq_true '.cloud.edgeAgent.connected | not'; }
wait_for 30 "the child's old key refused" cut_off
refused_logged() { grep -q 'connection refused (CONNACK 5): .*child1' "$T/parent/state/process/edgeHub.log"; }
wait_for 10 "the parent's hub logs the refusal" refused_logged
log "ok"
