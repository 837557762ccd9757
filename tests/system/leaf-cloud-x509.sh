#!/usr/bin/env bash
# X.509 leaf devices' cloud half (docs/gateway.md "X.509 leaf devices: on behalf of the edge"),
# against the IoT Hub stand-in (tests/iothub): the edge holds no key of an X.509 leaf, so the hub
# opens the leaf's upstream session on behalf of the edge device, as edgeHub does — client id and
# user name the leaf's, a SAS token for <hub>/devices/<edge>/modules/$edgeHub signed with
# $edgeHub's key — and the stand-in takes it only for a device whose parent (deviceScope) is the
# edge. The unmodified Azure IoT Node SDK (tests/node/leaf-device.js) as leafx, a CA-signed device
# (`ledge device add --x509-ca`, `ledge device cert`) registered in the cloud with the edge as its
# parent: the cloud's desired properties reach it (written before it connected, and a patch), its
# reported properties reach the cloud, a cloud method is answered, a C2D message arrives and is
# completed in IoT Hub, its telemetry arrives as leafx's own. Then leaft, a thumbprint device
# whose parent in the cloud is not the edge: IoT Hub refuses the session ("not in the scope"),
# `ledge hub status` says why, its telemetry goes up as the edge device's; once its parent is set
# to the edge its session comes up.
HUB_TLS_PORT=8883 # the SDK's Mqtt connects to 8883 only
source "$(dirname "$0")/lib.sh"
need "! ss -Htln 'sport = :8883' | grep -q ." "port 8883 is taken (the SDK connects to 8883 only)"
source "$(dirname "$0")/hub-lib.sh"
source "$(dirname "$0")/iothub-lib.sh"
need_iothub
"$SRC_ROOT/tests/node/install" >/dev/null || fail "cannot install tests/node's packages (npm ci)"
LEAF=(node "$SRC_ROOT/tests/node/leaf-device.js")

start_iothub
iothub_edge_device '$edgeAgent' '$edgeHub'
SCOPE=$(iothub GET "/devices/$DEVICE" | jq -r .deviceScope)
case "$SCOPE" in "ms-azure-iot-edge://$DEVICE-"*) ;; *) fail "the edge device's scope: $SCOPE";; esac
iothub PUT /devices/leafx "{\"authentication\": {\"type\": \"certificateAuthority\"}, \"deviceScope\": \"$SCOPE\"}" >/dev/null ||
  fail "cannot register leafx in the stand-in"
iothub GET /devices/leafx | jq_true --arg s "$SCOPE" '.parentScopes == [$s]' || fail "leafx's parent: $(iothub GET /devices/leafx)"
iothub PATCH /twins/leafx '{"properties": {"desired": {"fromCloud": "early"}}}' >/dev/null

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

ledge device add leafx --x509-ca --json > "$T/leafx.json" || fail "device add: $(cat "$T/leafx.json")"
ledge device cert leafx --cert "$T/leafx.crt" --key "$T/leafx.key" >/dev/null || fail "device cert"
ledge device trust-bundle --out "$T/bundle.pem" || fail "trust-bundle"
# The Node SDK connects an x509=true client to HostName (GatewayHostName unused): the gateway.
CSX="HostName=localhost;DeviceId=leafx;x509=true"

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
sessions() { iothub GET "/connections?deviceId=$1"; }
upstream_session() { sessions "$1" | jq_true '.connections | length == 1'; }
cloud_twin_is() { iothub GET /twins/leafx | jq_true ".properties | $1"; }
c2d_state_is() { # c2d_state_is MESSAGE_ID STATE
  iothub GET /devices/leafx/messages/devicebound | jq_true --arg m "$1" --arg s "$2" '[.messages[] | select(.messageId == $m) | .state] == [$s]'
}

log "the X.509 leaf connects: the hub opens its session upstream on behalf of the edge"
"${LEAF[@]}" "$CSX" "$T/bundle.pem" 2 "$T/leafx.crt" "$T/leafx.key" > "$T/leafx.out" 2> "$T/leafx.err" &
LEAF_PID=$!
wait_event 30 leafx '.event == "open"'
wait_for 30 "leafx's session at the stand-in" upstream_session leafx
sessions leafx | jq_true --arg e "$DEVICE" '.connections[0] | .auth == "sas" and .onBehalfOf == $e and .clientId == "leafx" and .moduleId == null' ||
  fail "the leaf's upstream connection: $(sessions leafx)"
iothub GET "/events?type=connect&deviceId=leafx" | jq_true --arg e "$DEVICE" '[.events[] | select(.onBehalfOf == $e)] | length >= 1' ||
  fail "connect events: $(iothub GET "/events?type=connect&deviceId=leafx")"
hub_status | jq_true '[.cloud.sessions[] | select(.device == "leafx" and .connected and .onBehalfOf)] | length == 1' ||
  fail "hub status cloud: $(hub_status | jq -c .cloud)"

log "desired properties from the cloud reach the leaf"
wait_event 30 leafx '(.event == "twin" and .desired.fromCloud == "early") or (.event == "desired" and .delta.fromCloud == "early")'
iothub PATCH /twins/leafx '{"properties": {"desired": {"interval": 7}}}' >/dev/null
wait_event 30 leafx '.event == "desired" and .delta.interval == 7'

log "its reported properties reach the cloud"
wait_event 20 leafx '.event == "reported" and .ok'
wait_for 30 "reported fw in the cloud" cloud_twin_is '.reported.fw == "1.0.0"'

log "a direct method from the cloud reaches the leaf; its answer comes back"
iothub POST /twins/leafx/methods '{"methodName": "echo", "payload": {"x509": true}, "responseTimeoutInSeconds": 20}' > "$T/method.json" ||
  fail "the cloud's method call: $(cat "$T/method.json")"
jq_true '.status == 200 and .payload.echo.x509 == true' "$T/method.json" || fail "the method's answer: $(cat "$T/method.json")"

log "a cloud-to-device message reaches the leaf and is completed in IoT Hub"
iothub POST /devices/leafx/messages/devicebound '{"body": "hello x509", "messageId": "x-1", "properties": {"color": "blue"}}' >/dev/null
wait_event 30 leafx '.event == "c2d" and .messageId == "x-1" and .body == "hello x509" and .properties.color == "blue"'
wait_for 20 "x-1 completed in IoT Hub" c2d_state_is x-1 completed

log "its telemetry reaches IoT Hub as the leaf's own"
readings() { iothub GET "/telemetry?deviceId=$1&moduleId=" | jq -c '[.messages[] | select(.properties.kind == "reading")]'; }
wait_for 30 "2 readings in IoT Hub from leafx" eval 'readings leafx | jq_true "length >= 2"'
readings leafx | jq_true 'map(.annotations["iothub-connection-device-id"] == "leafx" and .systemProperties.connectionDeviceId == null and (.systemProperties.messageId | startswith("leaf-"))) | all' ||
  fail "leafx's telemetry upstream: $(readings leafx)"
readings "$DEVICE" | jq_true 'length == 0' || fail "leaf telemetry came from the edge device: $(readings "$DEVICE")"
grep -h '"event":"error"' "$T/leafx.out" && fail "the SDK reported errors"

log "a thumbprint leaf whose parent in IoT Hub is not this edge: its session is refused"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=leaft" \
  -keyout "$T/leaft.key" -out "$T/leaft.crt" 2>/dev/null || fail "openssl: leaft"
TP=$(openssl x509 -in "$T/leaft.crt" -noout -fingerprint -sha256 | cut -d= -f2)
ledge device add leaft --x509-thumbprint "$TP" >/dev/null || fail "device add leaft"
iothub PUT /devices/leaft "{\"authentication\": {\"type\": \"selfSigned\", \"x509Thumbprint\": {\"primaryThumbprint\": \"$(printf %s "$TP" | tr -d : | tr A-F a-f)\"}}}" >/dev/null ||
  fail "cannot register leaft"
"${LEAF[@]}" "HostName=localhost;DeviceId=leaft;x509=true" "$T/bundle.pem" 1 "$T/leaft.crt" "$T/leaft.key" > "$T/leaft.out" 2> "$T/leaft.err" &
LEAFT_PID=$!
wait_event 30 leaft '.event == "open"'
refused() { iothub GET "/events?type=refused&deviceId=leaft" | jq_true --arg e "$DEVICE" '[.events[] | select(.reason | contains("not in the scope of " + $e))] | length >= 1'; }
wait_for 30 "the stand-in refused leaft's session (not in the edge's scope)" refused
upstream_session leaft && fail "leaft has a session upstream: $(sessions leaft)"
wait_for 10 "the refusal in ledge hub status" eval "hub_status | jq_true '[.cloud.sessions[] | select(.device == \"leaft\" and (.connected | not) and .onBehalfOf and (.lastError | contains(\"parent\")))] | length == 1'"
log "its parent set to the edge: the session comes up"
iothub PUT /devices/leaft "{\"deviceScope\": \"$SCOPE\"}" >/dev/null || fail "cannot set leaft's parent"
wait_for 70 "leaft's session at the stand-in" upstream_session leaft
sessions leaft | jq_true --arg e "$DEVICE" '.connections[0].onBehalfOf == $e' || fail "leaft upstream: $(sessions leaft)"
# its reading sent while it had no session went up as the edge device's, naming it
readings "$DEVICE" | jq_true 'map(select(.systemProperties.connectionDeviceId == "leaft")) | length >= 1' ||
  fail "leaft's reading without a session: $(readings "$DEVICE")"

kill "$LEAF_PID" "$LEAFT_PID" 2>/dev/null || true; wait "$LEAF_PID" "$LEAFT_PID" 2>/dev/null || true
grep -q "ERROR: AddressSanitizer\|runtime error:" "$HUB_LOG" && fail "sanitizer report in the hub's log"
log "ok"
