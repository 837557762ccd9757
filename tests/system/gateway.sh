#!/usr/bin/env bash
# ledge as a transparent gateway (docs/gateway.md): the unmodified Azure IoT Node SDK as leaf
# devices on the host (tests/node/leaf-device.js: Client.fromConnectionString over Mqtt, with the
# connection string from `ledge device add`/`key` carrying GatewayHostName and the trust bundle
# from `ledge device trust-bundle` as its CA), against ledge-hub on 8883: telemetry with
# properties routed by a $connectionDeviceId condition to a module input (a mosquitto client as
# that module) and into $upstream (store-and-forward: no link here, it waits in the store), the
# device twin (get, reported patch, desired notification from `ledge twin set --device`), a direct
# method from `ledge invoke --device`, a CA-signed X.509 device with a certificate from
# `ledge device cert`; refused impersonation (a device on another device's or a module's topic, a
# module's key logging in as a device or as the edge device, a device's key as a module); a
# rotated key and a removed device cut their live connections.
HUB_TLS_PORT=8883 # the SDK connects to GatewayHostName:8883 only
source "$(dirname "$0")/lib.sh"
need "! ss -Htln 'sport = :8883' | grep -q ." "port 8883 is taken (the SDK connects to 8883 only)"
source "$(dirname "$0")/hub-lib.sh"
need "command -v jq" "no jq"
"$SRC_ROOT/tests/node/install" >/dev/null || fail "cannot install tests/node's packages (npm ci)"
LEAF=(node "$SRC_ROOT/tests/node/leaf-device.js")

jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }

ROUTES='{
  "fromLeaf": "FROM /messages/* WHERE $connectionDeviceId = '"'leaf1'"' AND kind = '"'reading'"' INTO BrokeredEndpoint(\"/modules/receiver/inputs/fromLeaf\")",
  "notModules": "FROM /messages/modules/* WHERE $connectionDeviceId = '"'leaf1'"' INTO BrokeredEndpoint(\"/modules/receiver/inputs/wrong\")",
  "leavesUp": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream"
}'

hub_config
# GatewayHostName in the connection string: a name the hub's certificate carries and this host
# resolves (the edge CA issues it for device.gateway_hostname and localhost)
sed -i 's/gateway_hostname: ledge-gw.local/gateway_hostname: localhost/' "$T/config.yaml"
start_hub_ledged
hub_deploy "$(idle receiver), $(idle sender)" "$ROUTES"
wait_hub
HOST="$DEVICE.local.ledge"

ledge device add leaf1 --json > "$T/leaf1.json" || fail "device add: $(cat "$T/leaf1.json")"
CS=$(jq -r .connectionString "$T/leaf1.json")
case "$CS" in "HostName=$HOST;DeviceId=leaf1;SharedAccessKey="*";GatewayHostName=localhost") ;;
  *) fail "connection string: $CS";; esac
ledge device show leaf1 | jq_true '.deviceId == "leaf1" and .auth == "sas"' || fail "device show"
ledge device add leaf2 >/dev/null
ledge device trust-bundle --out "$T/bundle.pem" || fail "trust-bundle"
grep -q "BEGIN CERTIFICATE" "$T/bundle.pem" || fail "trust bundle: $(head -3 "$T/bundle.pem")"

subscribed() { # subscribed CLIENT_ID: connected with at least one subscription
  hub_status | jq -e --arg c "$1" '.sessions[] | select(.clientId == $c and .connected and .subscriptions > 0)' >/dev/null
}
events_of() { grep '^{' "$T/$1.out" 2>/dev/null || true; }
has_event() { events_of "$1" | jq_true --slurp "map(select($2)) | length >= ${3:-1}"; }
# wait_event SECONDS NAME FILTER [N]: like wait_for, and the device's output when it times out
wait_event() {
  local secs="$1" name="$2"; shift 2
  local end=$(( $(date +%s) + secs ))
  until has_event "$name" "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { cat "$T/$name.out" "$T/$name.err" >&2 2>/dev/null; fail "$name: no event $1 within ${secs}s"; }
    sleep 0.2
  done
}
no_errors() { ! events_of "$1" | grep -q '"event":"error"' || fail "$1: the SDK reported errors: $(events_of "$1" | grep '"error"')"; }

log "telemetry with properties: routed by \$connectionDeviceId to a module input, and upstream"
msub receiver -q 1 -v -t "$(inputs receiver)" -C 3 -W 60 > "$T/in.log" &
sub=$!
wait_for 10 "receiver subscribed" subscribed "$DEVICE/receiver"
"${LEAF[@]}" "$CS" "$T/bundle.pem" 3 > "$T/leaf1.out" 2> "$T/leaf1.err" &
LEAF1=$!
wait_event 30 leaf1 '.event == "open"'
wait_event 20 leaf1 '.event == "sent" and .ok' 3
wait $sub || fail "receiver got $(wc -l < "$T/in.log") of 3: $(cat "$T/in.log")"
for seq in 0 1 2; do
  line=$(grep "%24.mid=leaf-$seq&" "$T/in.log") || fail "message leaf-$seq not delivered: $(cat "$T/in.log")"
  topic=${line%% *}
  case "$topic" in "devices/$DEVICE/modules/receiver/inputs/fromLeaf/"*) ;; *) fail "topic: $topic";; esac
  for want in '%24.cdid=leaf1' "seq=$seq" 'kind=reading' '%24.ct=application%2Fjson'; do
    grep -qF -- "$want" <<< "$topic" || fail "delivered topic lacks $want: $topic"
  done
  ! grep -q '%24.cmid' <<< "$topic" || fail "a device's message carries a module id: $topic"
  jq_true ".seq == $seq" <<< "${line#* }" || fail "body: ${line#* }"
done
[ "$(endpoint_depth '/modules/receiver/inputs/wrong')" = 0 ] || fail "a device's message matched FROM /messages/modules/*"
[ "$(endpoint_depth '$upstream')" -ge 3 ] || fail "upstream depth: $(endpoint_depth '$upstream')"

log "the device twin: get, reported patch, desired from ledge twin set --device"
wait_for 20 "getTwin" has_event leaf1 '.event == "twin"'
wait_for 20 "reported" has_event leaf1 '.event == "reported" and .ok'
ledge twin get --device leaf1 | jq_true '.reported.fw == "1.0.0" and (.reported["$version"] | type) == "number"' ||
  fail "twin: $(ledge twin get --device leaf1)"
ledge twin get --device LEAF1 | jq_true '.reported.fw == "1.0.0"' || fail "twin by another case"
ledge twin set --device leaf1 '{"interval": 5}' | jq_true '.desired.interval == 5' || fail "twin set"
wait_for 20 "desired update" has_event leaf1 '.event == "desired" and .delta.interval == 5 and (.delta["$version"] | type) == "number"'
# a module's twin is another document
ledge twin get receiver | jq_true '.reported.fw == null' || fail "the module's twin has the device's"
ledge twin get --device ghost > "$T/ghost.out" 2>&1 && fail "twin of an unknown device"
grep -qi "no leaf device" "$T/ghost.out" || fail "unknown device: $(cat "$T/ghost.out")"

log "a direct method from ledge invoke --device"
ledge invoke --device leaf1 echo --payload '{"a": [1, 2]}' --timeout 10 > "$T/inv.out" || fail "invoke: $(cat "$T/inv.out")"
jq_true '.status == 200 and .payload.echo.a == [1, 2]' "$T/inv.out" || fail "invoke reply: $(cat "$T/inv.out")"
has_event leaf1 '.event == "method" and .name == "echo" and .payload.a == [1, 2]' || fail "no method event"
ledge invoke --device leaf2 echo --timeout 5 > "$T/inv2.out" 2>&1 && fail "invoke of a device not connected"
grep -q "not connected" "$T/inv2.out" || fail "not connected: $(cat "$T/inv2.out")"
no_errors leaf1

log "impersonation refused"
# as leaf2 (no SDK runs for it: a raw client with leaf1's id would take the SDK's connection over)
ledge device key leaf2 --json > "$T/leaf2.keys"
key2=$(jq -r .primaryKey "$T/leaf2.keys")
tok2=$("${LEAF[@]}" token "$HOST" leaf2 "$key2")
dpub() { # dpub DEVICE TOKEN [mosquitto_pub args...]: as a device over TLS
  local d="$1" tok="$2"; shift 2
  mosquitto_pub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$d" -u "$HOST/$d/?api-version=2021-04-12" -P "$tok" "$@"
}
# its own topic works with the same client and token
dpub leaf2 "$tok2" -q 1 -t "devices/leaf2/messages/events/kind=raw" -m own || fail "own topic refused"
unauth=$(hub_counter unauthorized)
dpub leaf2 "$tok2" -q 1 -t "devices/leaf1/messages/events/kind=reading" -m spoof 2>/dev/null || true
dpub leaf2 "$tok2" -q 1 -t "$(events sender '%24.on=out1')" -m spoof 2>/dev/null || true
wait_for 10 "two refused publishes" eval '[ "$(hub_counter unauthorized)" -ge $((unauth + 2)) ]'
failures=$(hub_counter authFailures)
dpub leaf2 "$(token sender)" -t "devices/leaf2/messages/events/" -m x 2>"$T/modkey.err" &&
  fail "a module's token logged in as a device"
dpub "$DEVICE" "$(token sender)" -t "devices/$DEVICE/messages/events/" -m x 2>/dev/null &&
  fail "a module's token logged in as the edge device"
mosquitto_pub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$DEVICE/sender" -u "$(user_of sender)" \
  -P "$tok2" -t "$(events sender '')" -m x 2>/dev/null && fail "a device's token logged in as a module"
assert_eq "$(hub_counter authFailures)" "$((failures + 3))" "authFailures"
grep -q "not authori" "$T/modkey.err" || fail "refusal: $(cat "$T/modkey.err")"

log "a CA-signed X.509 device, its certificate from ledge device cert"
ledge device add leafca --x509-ca --json > "$T/leafca.json" || fail "add x509: $(cat "$T/leafca.json")"
CSX=$(jq -r .connectionString "$T/leafca.json")
case "$CSX" in *"DeviceId=leafca;x509=true;GatewayHostName=localhost"*) ;; *) fail "x509 connection string: $CSX";; esac
ledge device cert leafca --cert "$T/leafca.crt" --key "$T/leafca.key" >/dev/null || fail "device cert"
# The Node SDK (azure-iot-device 1.18.4) connects an x509=true client to HostName and ignores
# GatewayHostName, so this device is given the gateway as its HostName (the hub does not check
# the host in the user name; a token is not involved).
CSX="HostName=localhost;DeviceId=leafca;x509=true"
up=$(endpoint_depth '$upstream')
"${LEAF[@]}" "$CSX" "$T/bundle.pem" 2 "$T/leafca.crt" "$T/leafca.key" > "$T/leafca.out" 2> "$T/leafca.err" &
LEAFCA=$!
wait_event 30 leafca '.event == "open"'
wait_event 20 leafca '.event == "sent" and .ok' 2
wait_for 10 "upstream" eval '[ "$(endpoint_depth "\$upstream")" -ge $((up + 2)) ]'
wait_event 20 leafca '.event == "reported" and .ok'
no_errors leafca
# another device's certificate does not open it
ledge device add leafca2 --x509-ca >/dev/null
failures=$(hub_counter authFailures)
"${LEAF[@]}" "${CSX/leafca/leafca2}" "$T/bundle.pem" 1 "$T/leafca.crt" "$T/leafca.key" > "$T/wrongcert.out" 2>&1 &
wrong=$!
wait_for 20 "the wrong certificate refused" eval '[ "$(hub_counter authFailures)" -gt $failures ]'
kill "$wrong" 2>/dev/null || true; wait "$wrong" 2>/dev/null || true
has_event wrongcert '.event == "open"' && fail "leafca2 connected with leafca's certificate"

log "a rotated key and a removed device cut their live connections"
ledge device key leaf1 --rotate primary >/dev/null || fail "rotate"
wait_for 10 "the rotated key's connection closed" grep -q "leaf device leaf1: its primary key was replaced: 1 connection closed" "$HUB_LOG"
ledge device remove leafca 2>/dev/null || fail "remove"
wait_for 10 "the removed device's connection closed" grep -q "leaf device leafca: it was removed: 1 connection closed" "$HUB_LOG"
kill "$LEAF1" "$LEAFCA" 2>/dev/null || true
wait "$LEAF1" "$LEAFCA" 2>/dev/null || true
hub_status | jq_true '.counters.malformed == 0' || fail "hub counters: $(hub_status | jq -c .counters)"
log "ok"
