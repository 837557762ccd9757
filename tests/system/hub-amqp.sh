#!/usr/bin/env bash
# AMQP 1.0 (hub.amqp_port, docs/hub.md "AMQP") with the unmodified Azure IoT Node SDK's Amqp
# transport (azure-iot-device-amqp), which connects to amqps://<GatewayHostName>:5671 only:
# - two modules (tests/node/sdk-module.js in the ledge-node-module image, configured only by the
#   environment ledged injects): nodeA over Amqp, nodeB over Mqtt. nodeA's outputs reach nodeB's
#   MQTT input and nodeB's forwards come back to nodeA's AMQP input, with message ids and
#   properties; nodeA's getTwin with the deployment's desired properties, a reported patch, a
#   desired update from `ledge twin set`, a direct method from `ledge invoke`, all over AMQP;
# - a leaf device on the host (tests/node/leaf-device.js with LEAF_TRANSPORT=Amqp): telemetry
#   routed by $connectionDeviceId to nodeB's input, its twin, a direct method; a second one,
#   leaf2, over AmqpWs (AMQP in WebSocket frames, subprotocol AMQPWSB10, on hub.websocket_port);
#   leafx, a CA-signed X.509 device (`ledge device add --x509-ca`, `ledge device cert`) over Amqp
#   with its certificate as the TLS client certificate and no put-token: telemetry routed by
#   $connectionDeviceId with auth method X.509, its twin, a method; another device's certificate
#   opens nothing;
# - refusals (tests/node/amqp-raw.js, a bare rhea client): a token of the wrong key and another
#   module's token for nodeA's audience get 401; leaf1 authenticated with its own token gets its
#   own events link, and a link to nodeA's address detached with amqp:unauthorized-access; the
#   modules' connections are not disturbed.
# Then (sdk_burst_across_restart, hub-lib.sh) nodeA over Amqp sends 40 JSON messages routed by a WHERE
# on $body back to its own input across a kill -9 of the hub: every acknowledged one arrives.
HUB_AMQP_PORT=5671 # the SDK's Amqp connects to 5671 only
HUB_WS_PORT=443    # and AmqpWs to 443
HUB_TLS_PORT=8883  # nodeB's Mqtt to 8883
source "$(dirname "$0")/lib.sh"
need "! ss -Htln 'sport = :5671' | grep -q ." "port 5671 is taken (the SDK's Amqp connects to 5671 only)"
need "! ss -Htln 'sport = :443' | grep -q ." "port 443 is taken (the SDK's AmqpWs connects to 443 only)"
need "! ss -Htln 'sport = :8883' | grep -q ." "port 8883 is taken (the SDK's Mqtt connects to 8883 only)"
source "$(dirname "$0")/hub-lib.sh"
need_docker
need "command -v jq" "no jq"
"$SRC_ROOT/scripts/build-images" node-module >/dev/null || fail "cannot build ledge-node-module"
docker network inspect ledge >/dev/null 2>&1 || docker network create ledge >/dev/null
"$SRC_ROOT/tests/node/install" >/dev/null || fail "cannot install tests/node's packages (npm ci)"
LEAF=(env LEAF_TRANSPORT=Amqp node "$SRC_ROOT/tests/node/leaf-device.js")
ARAW=(node "$SRC_ROOT/tests/node/amqp-raw.js")

jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }

USE_DOCKER=1 hub_config
start_hub_ledged
node_mod() { # node_mod NAME TRANSPORT
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-node-module:latest"}, "env": {"NODE_MODULE_SCRIPT": {"value": "sdk-module.js"}, "NODE_SDK_TRANSPORT": {"value": "%s"}}}' "$1" "$2"
}
ROUTES='{
  "aToB": "FROM /messages/modules/nodeA/outputs/ticks INTO BrokeredEndpoint(\"/modules/nodeB/inputs/fromA\")",
  "burstBack": "FROM /messages/modules/nodeA/outputs/burst WHERE $body.seq >= 0 AND $body.prefix = '"'r1'"' INTO BrokeredEndpoint(\"/modules/nodeA/inputs/self\")",
  "bToA": "FROM /messages/modules/nodeB/outputs/forwarded INTO BrokeredEndpoint(\"/modules/nodeA/inputs/back\")",
  "fromLeaf": "FROM /messages/* WHERE $connectionDeviceId = '"'leaf1'"' AND kind = '"'reading'"' INTO BrokeredEndpoint(\"/modules/nodeB/inputs/fromLeaf\")",
  "fromLeaf2": "FROM /messages/* WHERE $connectionDeviceId = '"'leaf2'"' INTO BrokeredEndpoint(\"/modules/nodeB/inputs/fromLeaf2\")",
  "fromLeafX": "FROM /messages/* WHERE $connectionDeviceId = '"'leafx'"' INTO BrokeredEndpoint(\"/modules/nodeB/inputs/fromLeafX\")"
}'
hub_manifest "$(node_mod nodeA Amqp), $(node_mod nodeB Mqtt)" "$ROUTES" |
  jq '.modulesContent.nodeA = {"properties.desired": {"greeting": "hello"}}' > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy"; }
for m in edgeHub nodeA nodeB; do wait_for 60 "$m running" status_is $m running; done

mod_events() { docker logs "$1" 2>/dev/null | grep '^{' || true; }
count() { mod_events "$1" | jq -c --slurp "map(select($2)) | length"; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; }
twin_is() { ledge twin get "$1" 2>/dev/null | jq_true "$2"; }

log "nodeA over Amqp, nodeB over Mqtt: open, getTwin (desired from the deployment), reported"
wait_for 60 "nodeA connected" at_least nodeA '.event == "open" and .transport == "Amqp"' 1
wait_for 60 "nodeB connected" at_least nodeB '.event == "open" and .transport == "Mqtt"' 1
hub_status | jq_true '[.sessions[] | select(.transport == "amqp" and (.clientId | endswith("/nodeA")))] | length == 1' ||
  fail "sessions: $(hub_status | jq -c .sessions)"
wait_for 20 "getTwin" at_least nodeA '.event == "twin" and .desired.greeting == "hello" and (.desired["$version"] | type) == "number"' 1
wait_for 20 "reported update" at_least nodeA '.event == "reported" and .ok' 1
wait_for 10 "reported in the twin" twin_is nodeA '.reported.nodeSdk.ok == true'

log "nodeA's ticks (AMQP) arrive on nodeB's input fromA (MQTT), with message id and properties"
wait_for 60 "5 inputs at nodeB" at_least nodeB '.event == "input" and .input == "fromA"' 5
for seq in 0 1 2 3 4; do
  [ "$(count nodeB ".event == \"input\" and .input == \"fromA\" and .messageId == \"tick-$seq\" and .props.seq == \"$seq\" and .props[\"\$.cmid\"] == \"nodeA\" and (.body | fromjson | .seq) == $seq")" -ge 1 ] ||
    fail "tick $seq at nodeB: $(mod_events nodeB | grep '"input"' | head -3)"
done
at_least nodeA '.event == "sent" and .ok' 5 || fail "nodeA's sends were not all acknowledged"
log "nodeB's forwards (MQTT) come back to nodeA's input back (AMQP, x-opt-input-name)"
wait_for 30 "5 inputs back at nodeA" at_least nodeA '.event == "input" and .input == "back" and .props.via == "node"' 5
back_drained() { [ "$(endpoint_depth /modules/nodeA/inputs/back)" = 0 ]; }
wait_for 10 "nodeA's input queue drained (completed)" back_drained

log "a desired-property update from ledge twin set, a direct method from ledge invoke (AMQP)"
ledge twin set nodeA '{"color": "blue"}' >/dev/null
wait_for 20 "desired update" at_least nodeA '.event == "desired" and .delta.color == "blue" and (.delta["$version"] | type) == "number"' 1
ledge invoke nodeA echo --payload '{"a": [1, 2]}' --timeout 10 > "$T/inv.out" || fail "invoke: $(cat "$T/inv.out")"
jq_true '.status == 200 and .payload.echo.a == [1, 2]' "$T/inv.out" || fail "invoke reply: $(cat "$T/inv.out")"
at_least nodeA '.event == "method" and .name == "echo" and .payload.a == [1, 2]' 1 || fail "no method event at nodeA"
ledge invoke nodeA report --payload '{"viaMethod": 7}' --timeout 10 > "$T/inv2.out" || fail "invoke report: $(cat "$T/inv2.out")"
wait_for 10 "reported through the method" twin_is nodeA '.reported.viaMethod == 7'

log "a leaf device over Amqp: telemetry routed by \$connectionDeviceId, twin, method"
ledge device add leaf1 --json > "$T/leaf1.json" || fail "device add: $(cat "$T/leaf1.json")"
CS=$(jq -r .connectionString "$T/leaf1.json")
ledge device trust-bundle --out "$T/bundle.pem" || fail "trust-bundle"
CS=${CS/GatewayHostName=ledge-gw.local/GatewayHostName=localhost}
leaf_events() { grep '^{' "$T/leaf1.out" 2>/dev/null || true; }
leaf_has() { leaf_events | jq_true --slurp "map(select($1)) | length >= ${2:-1}"; }
"${LEAF[@]}" "$CS" "$T/bundle.pem" 3 > "$T/leaf1.out" 2> "$T/leaf1.err" &
LEAF1=$!
wait_for 30 "leaf1 connected" leaf_has '.event == "open"'
wait_for 20 "leaf1 sent 3" leaf_has '.event == "sent" and .ok' 3
wait_for 30 "3 leaf readings at nodeB" at_least nodeB '.event == "input" and .input == "fromLeaf"' 3
for seq in 0 1 2; do
  [ "$(count nodeB ".event == \"input\" and .input == \"fromLeaf\" and .messageId == \"leaf-$seq\" and .props.seq == \"$seq\" and .props.kind == \"reading\" and .props[\"\$.cdid\"] == \"leaf1\" and .props[\"\$.cmid\"] == null and (.body | fromjson | .seq) == $seq")" -ge 1 ] ||
    fail "leaf reading $seq at nodeB: $(mod_events nodeB | grep '"fromLeaf"' | head -3)"
done
wait_for 20 "leaf getTwin" leaf_has '.event == "twin"'
wait_for 20 "leaf reported" leaf_has '.event == "reported" and .ok'
ledge twin get --device leaf1 | jq_true '.reported.fw == "1.0.0"' || fail "device twin: $(ledge twin get --device leaf1)"
ledge twin set --device leaf1 '{"interval": 5}' >/dev/null || fail "twin set --device"
wait_for 20 "leaf desired update" leaf_has '.event == "desired" and .delta.interval == 5'
ledge invoke --device leaf1 echo --payload '{"b": true}' --timeout 10 > "$T/inv-leaf.out" || fail "invoke --device: $(cat "$T/inv-leaf.out")"
jq_true '.status == 200 and .payload.echo.b == true' "$T/inv-leaf.out" || fail "invoke --device reply: $(cat "$T/inv-leaf.out")"
! leaf_events | grep -q '"event":"error"' || fail "leaf1: the SDK reported errors: $(leaf_events | grep '"error"')"
kill "$LEAF1" 2>/dev/null || true
wait "$LEAF1" 2>/dev/null || true

log "a leaf device over AmqpWs (wss://localhost:443/\$iothub/websocket, AMQPWSB10)"
ledge device add leaf2 --json > "$T/leaf2.json" || fail "device add: $(cat "$T/leaf2.json")"
CS2=$(jq -r .connectionString "$T/leaf2.json")
CS2=${CS2/GatewayHostName=ledge-gw.local/GatewayHostName=localhost}
leaf2_has() { grep '^{' "$T/leaf2.out" 2>/dev/null | jq_true --slurp "map(select($1)) | length >= ${2:-1}"; }
env LEAF_TRANSPORT=AmqpWs node "$SRC_ROOT/tests/node/leaf-device.js" "$CS2" "$T/bundle.pem" 3 > "$T/leaf2.out" 2> "$T/leaf2.err" &
LEAF2=$!
wait_for 30 "leaf2 connected" leaf2_has '.event == "open"'
wait_for 20 "leaf2 sent 3" leaf2_has '.event == "sent" and .ok' 3
wait_for 30 "3 leaf2 readings at nodeB" at_least nodeB '.event == "input" and .input == "fromLeaf2" and .props["$.cdid"] == "leaf2"' 3
wait_for 20 "leaf2 reported" leaf2_has '.event == "reported" and .ok'
ledge invoke --device leaf2 echo --payload '{"ws": 1}' --timeout 10 > "$T/inv-leaf2.out" || fail "invoke leaf2: $(cat "$T/inv-leaf2.out")"
jq_true '.status == 200 and .payload.echo.ws == 1' "$T/inv-leaf2.out" || fail "invoke leaf2 reply: $(cat "$T/inv-leaf2.out")"
! grep -q '"event":"error"' "$T/leaf2.out" || fail "leaf2: the SDK reported errors: $(grep '"error"' "$T/leaf2.out")"
kill "$LEAF2" 2>/dev/null || true
wait "$LEAF2" 2>/dev/null || true

log "a CA-signed X.509 leaf over Amqp: the TLS client certificate, no put-token"
ledge device add leafx --x509-ca --json > "$T/leafx.json" || fail "add x509: $(cat "$T/leafx.json")"
ledge device cert leafx --cert "$T/leafx.crt" --key "$T/leafx.key" >/dev/null || fail "device cert"
# As in gateway.sh: the Node SDK connects an x509=true client to HostName (GatewayHostName unused).
CSX="HostName=localhost;DeviceId=leafx;x509=true"
leafx_has() { grep '^{' "$T/$1.out" 2>/dev/null | jq_true --slurp "map(select($2)) | length >= ${3:-1}"; }
"${LEAF[@]}" "$CSX" "$T/bundle.pem" 3 "$T/leafx.crt" "$T/leafx.key" > "$T/leafx.out" 2> "$T/leafx.err" &
LEAFX=$!
wait_for 30 "leafx connected" leafx_has leafx '.event == "open"'
wait_for 20 "leafx sent 3" leafx_has leafx '.event == "sent" and .ok' 3
wait_for 30 "3 leafx readings at nodeB" at_least nodeB '.event == "input" and .input == "fromLeafX" and .props["$.cdid"] == "leafx" and .props["$.cmid"] == null' 3
wait_for 20 "leafx getTwin" leafx_has leafx '.event == "twin"'
wait_for 20 "leafx reported" leafx_has leafx '.event == "reported" and .ok'
ledge twin get --device leafx | jq_true '.reported.fw == "1.0.0"' || fail "leafx's twin: $(ledge twin get --device leafx)"
ledge invoke --device leafx echo --payload '{"x509": true}' --timeout 10 > "$T/inv-leafx.out" || fail "invoke leafx: $(cat "$T/inv-leafx.out")"
jq_true '.status == 200 and .payload.echo.x509 == true' "$T/inv-leafx.out" || fail "invoke leafx reply: $(cat "$T/inv-leafx.out")"
grep -q "devices/leafx connected over AMQP (X.509)" "$HUB_LOG" || fail "the hub's log does not say leafx came with X.509"
! grep -q '"event":"error"' "$T/leafx.out" || fail "leafx: the SDK reported errors: $(grep '"error"' "$T/leafx.out")"
kill "$LEAFX" 2>/dev/null || true
wait "$LEAFX" 2>/dev/null || true
# another device's certificate does not open it
ledge device add leafx2 --x509-ca >/dev/null || fail "add leafx2"
failures=$(hub_counter authFailures)
"${LEAF[@]}" "${CSX/leafx/leafx2}" "$T/bundle.pem" 1 "$T/leafx.crt" "$T/leafx.key" > "$T/wrongx.out" 2>&1 &
WRONGX=$!
wait_for 20 "leafx's certificate refused for leafx2" eval '[ "$(hub_counter authFailures)" -gt $failures ]'
sleep 2
leafx_has wrongx '.event == "sent" and .ok' && fail "leafx2 sent with leafx's certificate"
kill "$WRONGX" 2>/dev/null || true
wait "$WRONGX" 2>/dev/null || true

log "refusals: a bad token, another identity's token, a link outside the identity"
failures=$(hub_counter authFailures)
HOST="$DEVICE.local.ledge" # the IoT hub name of a device without one (as gateway.sh)
AUD_A="$HOST/devices/$DEVICE/modules/nodeA"
raw() { "${ARAW[@]}" 127.0.0.1 "$HUB_AMQP_PORT" "$CA" "$@" > "$T/raw.out" 2>&1 || true; }
raw_has() { grep '^{' "$T/raw.out" | jq_true --slurp "map(select($1)) | length >= 1"; }
BAD=$("${ARAW[@]}" token "$AUD_A" "$(printf 'not-the-key-of-nodeA-0123456789ab' | base64)")
raw "$AUD_A" "$BAD"
raw_has '.event == "put-token" and .status == 401' || fail "a bad token: $(cat "$T/raw.out")"
raw "$AUD_A" "$(token nodeB)"
raw_has '.event == "put-token" and .status == 401' || fail "nodeB's token for nodeA: $(cat "$T/raw.out")"
# as leaf1 (its SDK is gone): its own token is taken, nodeA's address is not its own
key1=$(ledge device key leaf1 --json | jq -r .primaryKey)
raw "$HOST/devices/leaf1" "$("${ARAW[@]}" token "$HOST/devices/leaf1" "$key1")" "/devices/$DEVICE/modules/nodeA/messages/events"
raw_has '.event == "put-token" and .status == 200' || fail "leaf1's own token: $(cat "$T/raw.out")"
raw_has '.event == "link" and .attached == false and .error == "amqp:unauthorized-access"' ||
  fail "a link to nodeA's address as leaf1: $(cat "$T/raw.out")"
raw "$HOST/devices/leaf1" "$("${ARAW[@]}" token "$HOST/devices/leaf1" "$key1")" "/devices/leaf1/messages/events"
raw_has '.event == "link" and .attached == true' || fail "leaf1's own events link: $(cat "$T/raw.out")"
[ "$(hub_counter authFailures)" -ge "$((failures + 2))" ] || fail "auth failures not counted: $(hub_counter authFailures)"
grep -q "AMQP: authentication refused" "$HUB_LOG" || fail "the hub's log does not name the refusal"

log "the modules' connections were not disturbed"
hub_status | jq_true '[.sessions[] | select(.connected and (.clientId | endswith("/nodeA") or endswith("/nodeB")))] | length == 2' ||
  fail "sessions after the refusals: $(hub_status | jq -c .sessions)"
assert_eq "$(count nodeA '.event == "error"')" 0 "nodeA's SDK errors: $(mod_events nodeA | grep '"error"' | head -3)"
hub_status | jq_true '.counters.routed >= 13' || fail "hub counters: $(hub_status | jq -c .counters)"

log "nodeA over Amqp across a kill -9 of the hub: 40 messages routed by a WHERE on \$body back to its own input, every acknowledged one arrives"
sdk_burst_across_restart nodeA self r1
log "ok"
