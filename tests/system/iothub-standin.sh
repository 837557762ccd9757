#!/usr/bin/env bash
# The IoT Hub stand-in (tests/iothub) validated against the unmodified Azure IoT Node SDK, so
# that ledge's cloud half is tested against IoT Hub's device protocol as the SDKs speak it:
# tests/iothub/sdk-check.js drives `Client` and `ModuleClient.fromConnectionString` over `Mqtt`
# with SAS connection strings (and `Client` with X.509 certificates) through sendEvent,
# sendOutputEvent, getTwin, reported updates, 'properties.desired', onDeviceMethod/onMethod and
# C2D on('message') + complete, offline and back, while playing the cloud through the control
# API; tests/iothub/raw-check.js checks with plain MQTT clients what the SDK does not reach
# (CONNACK codes, token expiry, refused topics, Will, C2D redelivery with DUP, keep-alive).
# Then the control API's refusals, and a restart of the stand-in on its state file.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/iothub-lib.sh"
need_iothub

log "the stand-in's parts (node --test tests/iothub/test)"
node --test "$IOTHUB_DIR/test/" > "$T/node-test.out" 2>&1 || { cat "$T/node-test.out" >&2; fail "node --test"; }
grep -q '^# fail 0$' "$T/node-test.out" || { cat "$T/node-test.out" >&2; fail "node --test: failures"; }

# The PKI sdk-check.js authenticates X.509 devices with: a self-signed certificate (registered by
# thumbprint) and one issued by a device CA (registered as a CA certificate).
mkdir -p "$IOTHUB_PKI"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=x509-self" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$IOTHUB_PKI/x509-self.key" -out "$IOTHUB_PKI/x509-self.pem" 2>/dev/null || fail "openssl: x509-self"
iothub_ca devca
iothub_cert x509-ca devca x509-ca
start_iothub --state-file "$T/iothub.state"
log "stand-in: mqtts $IOTHUB_MQTTS_PORT, mqtt $IOTHUB_MQTT_PORT, control $IOTHUB_CONTROL"

run_check() { # run_check SCRIPT — every step ran and was ok
  node "$IOTHUB_DIR/$1" > "$T/$1.out" 2>"$T/$1.err" || true
  jq -r '"  \(if .ok then "ok" else "FAILED" end) \(.step)"' "$T/$1.out" >&2 || cat "$T/$1.out" >&2
  if [ "$(jq -s 'length > 0 and all(.ok)' "$T/$1.out" 2>/dev/null)" != true ]; then
    jq -r 'select(.ok | not) | .error' "$T/$1.out" >&2
    tail -20 "$T/$1.err" >&2
    fail "$1"
  fi
  [ "$(grep -c . "$T/$1.out")" = "$(grep -c '^step(' "$IOTHUB_DIR/$1")" ] || fail "$1: not every step ran"
}

log "the Azure IoT Node SDK against the stand-in (sdk-check.js)"
run_check sdk-check.js
log "plain MQTT against the stand-in (raw-check.js)"
run_check raw-check.js

log "the control API refuses bad input, naming what is wrong"
refused() { # refused STATUS PATTERN METHOD PATH [JSON [CURL ARGS...]]
  local status=$1 pat=$2 m=$3 p=$4 out code; shift 4
  local args=(-sS -X "$m" "$IOTHUB_CONTROL$p" -w '\n%{http_code}')
  [ $# -ge 1 ] && { args+=(-H 'Content-Type: application/json' --data-binary "$1"); shift; }
  out=$(curl "${args[@]}" "$@") || fail "$m $p: curl failed"
  code=${out##*$'\n'}
  [ "$code" = "$status" ] || fail "$m $p: HTTP $code, not $status: $out"
  grep -q -- "$pat" <<<"${out%$'\n'*}" || fail "$m $p: the answer does not say \"$pat\": $out"
}
refused 400 'deviceId .*bad id' PUT '/devices/bad%20id' '{}'
refused 400 'authentication.symmetricKey.primaryKey' PUT /devices/k '{"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "c2hvcnQ="}}}'
refused 400 'authentication.type' PUT /devices/k '{"authentication": {"type": "password"}}'
refused 404 '404001' GET /twins/nobody
refused 404 '404010' GET /twins/sdk-device/modules/nobody
refused 400 'properties.desired.a.b' PATCH /twins/sdk-device '{"properties": {"desired": {"a.b": 1}}}'
refused 400 'only the device writes reported' PATCH /twins/sdk-device '{"properties": {"reported": {"x": 1}}}'
refused 400 'methodName' POST /twins/sdk-device/methods '{"methodName": "a/b"}'
refused 400 'responseTimeoutInSeconds' POST /twins/sdk-device/methods '{"methodName": "m", "responseTimeoutInSeconds": 0}'
refused 400 'ttlSeconds' POST /devices/sdk-device/messages/devicebound '{"body": "x", "ttlSeconds": -1}'
refused 400 'not JSON' PUT /devices/k '{'
refused 404 'no such endpoint' GET /nowhere
refused 405 'not allowed' POST /telemetry
etag=$(iothub GET /twins/sdk-device | jq -r .etag)
refused 412 'If-Match' PATCH /twins/sdk-device '{"tags": {"t": 1}}' -H 'If-Match: "AAAAAAAAAAA="'
refused 200 '"t":1' PATCH /twins/sdk-device '{"tags": {"t": 1}}' -H "If-Match: \"$etag\""

log "the state file: registry, twins and the C2D queue survive a restart of the stand-in"
iothub POST /devices/sdk-device/messages/devicebound '{"body": "kept", "messageId": "kept-1"}' >/dev/null
before=$(iothub GET /twins/sdk-device | jq -c '{v: .version, d: .properties.desired, r: .properties.reported}')
key=$(iothub GET /devices/sdk-device | jq -r .authentication.symmetricKey.primaryKey)
stop_iothub
start_iothub --state-file "$T/iothub.state"
after=$(iothub GET /twins/sdk-device | jq -c '{v: .version, d: .properties.desired, r: .properties.reported}')
assert_eq "$after" "$before" "the twin after a restart"
assert_eq "$(iothub GET /devices/sdk-device | jq -r .authentication.symmetricKey.primaryKey)" "$key" "the key after a restart"
iothub GET '/devices/sdk-device/messages/devicebound?state=enqueued' | jq_true '[.messages[].messageId] == ["kept-1"]' ||
  fail "the queued C2D message after a restart: $(iothub GET /devices/sdk-device/messages/devicebound)"
iothub GET /devices/sdk-edge/modules | jq_true '[.[].moduleId] | sort == ["$edgeAgent", "$edgeHub"]' ||
  fail "the edge device's modules after a restart"
stop_iothub
log "ok"
