#!/usr/bin/env bash
# The cloud half of a leaf device (docs/gateway.md "The leaf device in the cloud"), against the IoT
# Hub stand-in (tests/iothub): the unmodified Azure IoT Node SDK as a leaf device on the host
# (tests/node/leaf-device.js, a connection string with GatewayHostName) connects to ledge-hub,
# and the hub opens the leaf's own session upstream with the leaf's key (the one the device has
# in IoT Hub, registered on the edge with `ledge device add --key`). Checked: the cloud twin's
# desired properties (written before the leaf connected, and a later patch) reach the leaf; its
# reported properties reach the cloud; a direct method from the cloud reaches it and its answer
# comes back; its telemetry routed to $upstream reaches IoT Hub as the leaf's own (not the edge
# device's) with its properties; cloud-to-device messages sent while it is connected arrive with their properties
# and are completed in IoT Hub; one sent after the leaf went (its session still open) is stored
# on the edge, completed in IoT Hub, survives a kill -9 of the hub and arrives when the leaf
# reconnects; one sent while the leaf has no session at all waits in IoT Hub and arrives then
# too; with the leaf gone, the cloud's method gets 404. Then the leaf over Amqp
# (LEAF_TRANSPORT=Amqp): its cloud-to-device messages on the devicebound receiver link with their
# properties, settled = acknowledged on the edge (complete; abandon delivers it again; reject
# drops it), one it holds unsettled across a kill -9 of the hub comes again on the next
# connection.
HUB_TLS_PORT=8883  # the SDK's Mqtt connects to GatewayHostName:8883 only
HUB_AMQP_PORT=5671 # and its Amqp to 5671
source "$(dirname "$0")/lib.sh"
need "! ss -Htln 'sport = :8883' | grep -q ." "port 8883 is taken (the SDK connects to 8883 only)"
need "! ss -Htln 'sport = :5671' | grep -q ." "port 5671 is taken (the SDK's Amqp connects to 5671 only)"
source "$(dirname "$0")/hub-lib.sh"
source "$(dirname "$0")/iothub-lib.sh"
need_iothub
"$SRC_ROOT/tests/node/install" >/dev/null || fail "cannot install tests/node's packages (npm ci)"
LEAF=(node "$SRC_ROOT/tests/node/leaf-device.js")

start_iothub
iothub_edge_device '$edgeAgent' '$edgeHub'
LEAF_KEY=$(head -c 32 /dev/urandom | base64)
iothub PUT /devices/leaf1 "{\"authentication\": {\"type\": \"sas\", \"symmetricKey\": {\"primaryKey\": \"$LEAF_KEY\"}}}" >/dev/null ||
  fail "cannot register leaf1 in the stand-in"
log "the cloud twin of leaf1 has desired properties before the leaf ever connects"
iothub PATCH /twins/leaf1 '{"properties": {"desired": {"fromCloud": "early"}}}' >/dev/null

TOP_EXTRA="upstream:
  enabled: true
  host: 127.0.0.1
  port: $IOTHUB_MQTTS_PORT
  tls: true
  ca_file: $IOTHUB_CA
  iothub: true
  max_device_sessions: 10"
hub_config
sed -i "s/gateway_hostname: ledge-gw.local/gateway_hostname: localhost\n  iothub_hostname: $IOTHUB_NAME\n  key: ${KEY//\//\\/}/" "$T/config.yaml"
start_hub_ledged
hub_deploy "$(idle receiver)" '{"leavesUp": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream"}'
wait_hub

ledge device add leaf1 --key "$LEAF_KEY" --json > "$T/leaf1.json" || fail "device add: $(cat "$T/leaf1.json")"
CS=$(jq -r .connectionString "$T/leaf1.json")
case "$CS" in "HostName=$IOTHUB_NAME;DeviceId=leaf1;SharedAccessKey=$LEAF_KEY;GatewayHostName=localhost") ;;
  *) fail "connection string: $CS";; esac
ledge device trust-bundle --out "$T/bundle.pem" || fail "trust-bundle"

events_of() { grep '^{' "$T/$1.out" 2>/dev/null || true; }
has_event() { events_of "$1" | jq_true --slurp "map(select($2)) | length >= ${3:-1}"; }
wait_event() { # wait_event SECONDS NAME FILTER [N]
  local secs="$1" name="$2"; shift 2
  local end=$(( $(date +%s) + secs ))
  until has_event "$name" "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { cat "$T/$name.out" "$T/$name.err" >&2 2>/dev/null; fail "$name: no event $1 within ${secs}s"; }
    sleep 0.2
  done
}
sessions() { iothub GET "/connections?deviceId=leaf1"; }
upstream_session() { sessions | jq_true '.connections | length == 1'; }
no_upstream_session() { sessions | jq_true '.connections | length == 0'; }
cloud_twin_is() { iothub GET /twins/leaf1 | jq_true ".properties | $1"; }
c2d() { iothub POST /devices/leaf1/messages/devicebound "$1" | jq -r .messageId; }
c2d_state_is() { # c2d_state_is MESSAGE_ID STATE
  iothub GET /devices/leaf1/messages/devicebound | jq_true --arg m "$1" --arg s "$2" '[.messages[] | select(.messageId == $m) | .state] == [$s]'
}
start_leaf() { # start_leaf NAME [ENV...]: the SDK as leaf1, its events in $T/NAME.out
  local name="$1"; shift
  env "$@" "${LEAF[@]}" "$CS" "$T/bundle.pem" 2 > "$T/$name.out" 2> "$T/$name.err" &
  LEAF_PID=$!
}

log "the leaf connects: the hub opens its own session upstream, as leaf1"
start_leaf leaf1
wait_event 30 leaf1 '.event == "open"'
wait_for 30 "leaf1's own session at the stand-in" upstream_session
sessions | jq_true '.connections[0] | .auth == "sas" and .clientId == "leaf1" and .moduleId == null' ||
  fail "the leaf's upstream connection: $(sessions)"
iothub GET "/connections?deviceId=$DEVICE&moduleId=" | jq_true '[.connections[] | select(.clientId == "leaf1")] | length == 0' ||
  fail "the edge device's connection speaks for the leaf"

log "desired properties from the cloud reach the leaf"
wait_for 30 "the cloud's desired in the edge's twin of leaf1" eval 'ledge twin get --device leaf1 | jq_true ".desired.fromCloud == \"early\""'
wait_event 30 leaf1 '(.event == "twin" and .desired.fromCloud == "early") or (.event == "desired" and .delta.fromCloud == "early")'
iothub PATCH /twins/leaf1 '{"properties": {"desired": {"interval": 7}}}' >/dev/null
wait_event 30 leaf1 '.event == "desired" and .delta.interval == 7 and (.delta["$version"] | type) == "number"'

log "the leaf's reported properties reach the cloud"
wait_event 20 leaf1 '.event == "reported" and .ok'
wait_for 30 "reported fw in the cloud" cloud_twin_is '.reported.fw == "1.0.0"'

log "a direct method from the cloud reaches the leaf; its answer comes back"
iothub POST /twins/leaf1/methods '{"methodName": "echo", "payload": {"a": [1, 2]}, "responseTimeoutInSeconds": 20}' > "$T/method.json" ||
  fail "the cloud's method call: $(cat "$T/method.json")"
jq_true '.status == 200 and .payload.echo.a == [1, 2]' "$T/method.json" || fail "the method's answer: $(cat "$T/method.json")"
has_event leaf1 '.event == "method" and .name == "echo" and .payload.a == [1, 2]' || fail "the leaf did not see the call"

log "the leaf's telemetry (routed to \$upstream) reaches IoT Hub from the leaf itself"
readings() { iothub GET "/telemetry?deviceId=$1&moduleId=" | jq -c '[.messages[] | select(.properties.kind == "reading")]'; }
wait_for 30 "2 readings in IoT Hub from leaf1" eval 'readings leaf1 | jq_true "length >= 2"'
readings leaf1 | jq_true 'map(.annotations["iothub-connection-device-id"] == "leaf1" and .systemProperties.connectionDeviceId == null and (.systemProperties.messageId | startswith("leaf-")) and .systemProperties.contentType == "application/json" and .properties.seq != null) | all' ||
  fail "leaf1's telemetry upstream: $(readings leaf1)"
readings "$DEVICE" | jq_true 'length == 0' || fail "leaf telemetry came from the edge device: $(readings "$DEVICE")"
hub_status | jq_true '.upstream.leafSessions.acked >= 2' || fail "hub status upstream: $(hub_status | jq -c .upstream)"

log "cloud-to-device messages while the leaf is connected: with their properties, completed in IoT Hub"
m1=$(c2d '{"body": "hello leaf", "messageId": "c2d-1", "correlationId": "corr-1", "properties": {"color": "red", "n": "1"}}')
wait_event 30 leaf1 '.event == "c2d" and .messageId == "c2d-1" and .body == "hello leaf" and .properties.color == "red" and .properties.n == "1"'
wait_for 20 "c2d-1 completed in IoT Hub" c2d_state_is "$m1" completed
c2d '{"body": "second", "messageId": "c2d-2"}' >/dev/null
wait_event 30 leaf1 '.event == "c2d" and .messageId == "c2d-2"'
hub_status | jq_true '.cloud.c2d.stored >= 2 and ([.cloud.sessions[] | select(.device == "leaf1" and .connected)] | length == 1)' ||
  fail "hub status cloud: $(hub_status | jq -c .cloud)"

log "the leaf goes; a message sent while its session is still open is stored on the edge and completed"
kill "$LEAF_PID"; wait "$LEAF_PID" 2>/dev/null || true
c2d '{"body": "while away", "messageId": "c2d-3", "properties": {"k": "v"}}' >/dev/null
wait_for 4 "c2d-3 completed in IoT Hub (stored on the edge)" c2d_state_is c2d-3 completed
[ "$(endpoint_depth /devices/leaf1/messages/devicebound)" = 1 ] || fail "the edge's C2D queue: $(hub_status | jq -c .endpoints)"

log "kill -9 of the hub: the stored message survives"
pid=$(hub_pid)
kill -9 "$pid"
restarted() { local p; p=$(hub_pid); [ -n "$p" ] && [ "$p" != "$pid" ] && hub_ready; }
wait_for 30 "the hub restarted by the process engine" restarted
# at least once: a delivery acknowledged by the leaf less than a checkpoint interval before the
# kill (c2d-2) may come again; c2d-3 must
[ "$(endpoint_depth /devices/leaf1/messages/devicebound)" -ge 1 ] || fail "after the restart: $(hub_status | jq -c .endpoints)"

log "no session at all: a method gets 404 and a message waits in IoT Hub"
wait_for 30 "no session upstream for leaf1" no_upstream_session
code=$(curl -s -o "$T/m404.json" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data-binary '{"methodName": "echo", "responseTimeoutInSeconds": 5}' "$IOTHUB_CONTROL/twins/leaf1/methods")
[ "$code" = 404 ] || fail "a method for a leaf that is gone: HTTP $code $(cat "$T/m404.json")"
c2d '{"body": "while offline", "messageId": "c2d-4"}' >/dev/null
sleep 1
c2d_state_is c2d-4 enqueued || fail "c2d-4: $(iothub GET /devices/leaf1/messages/devicebound)"

log "the leaf reconnects: both arrive, in order"
start_leaf leaf1b
wait_event 30 leaf1b '.event == "open"'
wait_for 30 "4 readings in IoT Hub from leaf1" eval 'readings leaf1 | jq_true "length >= 4"'
wait_event 30 leaf1b '.event == "c2d" and .messageId == "c2d-3" and .body == "while away" and .properties.k == "v"'
wait_event 30 leaf1b '.event == "c2d" and .messageId == "c2d-4" and .body == "while offline"'
events_of leaf1b | jq -s -e '[.[] | select(.event == "c2d") | .messageId] | index("c2d-3") < index("c2d-4")' >/dev/null ||
  fail "order: $(events_of leaf1b | grep c2d)"
wait_for 20 "c2d-4 completed in IoT Hub" c2d_state_is c2d-4 completed
wait_for 10 "the edge's C2D queue empty" eval '[ "$(endpoint_depth /devices/leaf1/messages/devicebound)" = 0 ]'
grep -h '"event":"error"' "$T/leaf1.out" "$T/leaf1b.out" && fail "the SDK reported errors"
kill "$LEAF_PID" 2>/dev/null || true; wait "$LEAF_PID" 2>/dev/null || true

log "the leaf over AMQP: cloud-to-device messages on its devicebound link, completed"
c2d_events() { events_of "$1" | jq -c --arg m "$2" 'select(.event == "c2d" and .messageId == $m)'; }
start_leaf leafa LEAF_TRANSPORT=Amqp 'LEAF_C2D={"c2d-6": "abandon", "c2d-7": "reject", "c2d-8": "hold"}'
wait_event 30 leafa '.event == "open"'
wait_for 30 "leaf1's session at the stand-in" upstream_session
c2d '{"body": "over amqp", "messageId": "c2d-5", "correlationId": "corr-5", "properties": {"via": "amqp"}}' >/dev/null
wait_event 30 leafa '.event == "c2d" and .messageId == "c2d-5" and .body == "over amqp" and .properties.via == "amqp" and .action == "complete"'
wait_for 20 "c2d-5 completed in IoT Hub" c2d_state_is c2d-5 completed
wait_for 10 "the edge's C2D queue empty after the complete" eval '[ "$(endpoint_depth /devices/leaf1/messages/devicebound)" = 0 ]'
log "abandon delivers it again; reject drops it"
c2d '{"body": "abandon me once", "messageId": "c2d-6"}' >/dev/null
wait_event 30 leafa '.event == "c2d" and .messageId == "c2d-6"' 2
[ "$(c2d_events leafa c2d-6 | jq -s -c 'map(.action)')" = '["abandon","complete"]' ] ||
  fail "c2d-6: $(c2d_events leafa c2d-6)"
c2d '{"body": "reject me", "messageId": "c2d-7"}' >/dev/null
wait_event 30 leafa '.event == "c2d" and .messageId == "c2d-7" and .action == "reject"'
wait_for 10 "the edge's C2D queue empty after the reject" eval '[ "$(endpoint_depth /devices/leaf1/messages/devicebound)" = 0 ]'
log "a message the leaf holds unsettled stays queued, survives a kill -9 of the hub and comes again"
c2d '{"body": "held", "messageId": "c2d-8", "properties": {"k": "held"}}' >/dev/null
wait_event 30 leafa '.event == "c2d" and .messageId == "c2d-8" and .action == "hold"'
sleep 1
[ "$(endpoint_depth /devices/leaf1/messages/devicebound)" = 1 ] || fail "c2d-8 unsettled: $(hub_status | jq -c .endpoints)"
[ "$(c2d_events leafa c2d-7 | wc -l)" = 1 ] || fail "c2d-7 came again after its reject: $(c2d_events leafa c2d-7)"
pid=$(hub_pid)
kill -9 "$pid"
kill "$LEAF_PID" 2>/dev/null || true; wait "$LEAF_PID" 2>/dev/null || true
wait_for 30 "the hub restarted by the process engine" restarted
start_leaf leafb LEAF_TRANSPORT=Amqp
wait_event 30 leafb '.event == "open"'
wait_event 30 leafb '.event == "c2d" and .messageId == "c2d-8" and .body == "held" and .properties.k == "held" and .action == "complete"'
wait_for 10 "the edge's C2D queue empty" eval '[ "$(endpoint_depth /devices/leaf1/messages/devicebound)" = 0 ]'
grep -h '"event":"error"' "$T/leafa.out" "$T/leafb.out" && fail "the SDK reported errors over AMQP"
kill "$LEAF_PID" 2>/dev/null || true; wait "$LEAF_PID" 2>/dev/null || true
grep -q "ERROR: AddressSanitizer\|runtime error:" "$HUB_LOG" && fail "sanitizer report in the hub's log"
log "ok"
