#!/usr/bin/env bash
# MQTT over WebSockets (hub.websocket_port, docs/hub.md) with the unmodified Azure IoT Node SDK's
# MqttWs transport, which connects to wss://<GatewayHostName>:443/$iothub/websocket only:
# - two modules (tests/node/sdk-module.js with NODE_SDK_TRANSPORT=MqttWs in the ledge-node-module
#   image, configured only by the environment ledged injects): nodeA's outputs routed to nodeB's
#   input and nodeB's forwards back to nodeA's input, with message ids and properties; getTwin
#   with the deployment's desired properties, a reported patch, a desired update from
#   `ledge twin set`, a direct method from `ledge invoke`;
# - a leaf device on the host (tests/node/leaf-device.js with LEAF_TRANSPORT=MqttWs: the connection
#   string from `ledge device add`, the trust bundle from `ledge device trust-bundle`): telemetry
#   routed by $connectionDeviceId to nodeB's input, its twin (get, reported patch, desired from
#   `ledge twin set --device`), a direct method from `ledge invoke --device`;
# - refusals answered with an HTTP error naming the reason: a wrong path (404), no subprotocol
#   (400), a subprotocol it does not serve (400), no Upgrade (426), each counted malformed.
# Then (sdk_burst_across_restart, hub-lib.sh) nodeA over MqttWs sends 40 JSON messages routed by a WHERE
# on $body back to its own input across a kill -9 of the hub: every acknowledged one arrives.
HUB_WS_PORT=443 # the SDK's MqttWs connects to 443 only
source "$(dirname "$0")/lib.sh"
need "! ss -Htln 'sport = :443' | grep -q ." "port 443 is taken (the SDK's MqttWs connects to 443 only)"
source "$(dirname "$0")/hub-lib.sh"
need_docker
need "command -v jq" "no jq"
need "command -v curl" "no curl"
"$SRC_ROOT/scripts/build-images" node-module >/dev/null || fail "cannot build ledge-node-module"
docker network inspect ledge >/dev/null 2>&1 || docker network create ledge >/dev/null
"$SRC_ROOT/tests/node/install" >/dev/null || fail "cannot install tests/node's packages (npm ci)"
LEAF=(env LEAF_TRANSPORT=MqttWs node "$SRC_ROOT/tests/node/leaf-device.js")

jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }

USE_DOCKER=1 hub_config
start_hub_ledged
node_mod() {
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-node-module:latest"}, "env": {"NODE_MODULE_SCRIPT": {"value": "sdk-module.js"}, "NODE_SDK_TRANSPORT": {"value": "MqttWs"}}}' "$1"
}
ROUTES='{
  "aToB": "FROM /messages/modules/nodeA/outputs/ticks INTO BrokeredEndpoint(\"/modules/nodeB/inputs/fromA\")",
  "burstBack": "FROM /messages/modules/nodeA/outputs/burst WHERE $body.seq >= 0 AND $body.prefix = '"'r1'"' INTO BrokeredEndpoint(\"/modules/nodeA/inputs/self\")",
  "bToA": "FROM /messages/modules/nodeB/outputs/forwarded INTO BrokeredEndpoint(\"/modules/nodeA/inputs/back\")",
  "fromLeaf": "FROM /messages/* WHERE $connectionDeviceId = '"'leaf1'"' AND kind = '"'reading'"' INTO BrokeredEndpoint(\"/modules/nodeB/inputs/fromLeaf\")"
}'
hub_manifest "$(node_mod nodeA), $(node_mod nodeB)" "$ROUTES" |
  jq '.modulesContent.nodeA = {"properties.desired": {"greeting": "hello"}}' > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy"; }
for m in edgeHub nodeA nodeB; do wait_for 60 "$m running" status_is $m running; done

mod_events() { docker logs "$1" 2>/dev/null | grep '^{' || true; }
count() { mod_events "$1" | jq -c --slurp "map(select($2)) | length"; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; }
twin_is() { ledge twin get "$1" 2>/dev/null | jq_true "$2"; }

log "modules over MqttWs: open, getTwin (desired from the deployment), reported properties"
wait_for 60 "nodeA connected" at_least nodeA '.event == "open" and .transport == "MqttWs"' 1
wait_for 60 "nodeB connected" at_least nodeB '.event == "open" and .transport == "MqttWs"' 1
hub_status | jq_true '[.sessions[] | select(.connected)] | length >= 2' || fail "sessions: $(hub_status | jq -c .sessions)"
wait_for 20 "getTwin" at_least nodeA '.event == "twin" and .desired.greeting == "hello" and (.desired["$version"] | type) == "number"' 1
wait_for 20 "reported update" at_least nodeA '.event == "reported" and .ok' 1
wait_for 10 "reported in the twin" twin_is nodeA '.reported.nodeSdk.ok == true'

log "nodeA's ticks arrive on nodeB's input fromA, with message id and properties"
wait_for 60 "5 inputs at nodeB" at_least nodeB '.event == "input" and .input == "fromA"' 5
for seq in 0 1 2 3 4; do
  [ "$(count nodeB ".event == \"input\" and .input == \"fromA\" and .messageId == \"tick-$seq\" and .props.seq == \"$seq\" and .props[\"\$.cmid\"] == \"nodeA\" and (.body | fromjson | .seq) == $seq")" -ge 1 ] ||
    fail "tick $seq at nodeB: $(mod_events nodeB | grep '"input"' | head -3)"
done
log "nodeB's forwards come back to nodeA's input back"
wait_for 30 "5 inputs back at nodeA" at_least nodeA '.event == "input" and .input == "back" and .props.via == "node"' 5

log "a desired-property update from ledge twin set, a direct method from ledge invoke"
ledge twin set nodeA '{"color": "blue"}' >/dev/null
wait_for 20 "desired update" at_least nodeA '.event == "desired" and .delta.color == "blue" and (.delta["$version"] | type) == "number"' 1
ledge invoke nodeA echo --payload '{"a": [1, 2]}' --timeout 10 > "$T/inv.out" || fail "invoke: $(cat "$T/inv.out")"
jq_true '.status == 200 and .payload.echo.a == [1, 2]' "$T/inv.out" || fail "invoke reply: $(cat "$T/inv.out")"
at_least nodeA '.event == "method" and .name == "echo" and .payload.a == [1, 2]' 1 || fail "no method event at nodeA"

log "a leaf device over MqttWs: telemetry routed by \$connectionDeviceId, twin, method"
ledge device add leaf1 --json > "$T/leaf1.json" || fail "device add: $(cat "$T/leaf1.json")"
CS=$(jq -r .connectionString "$T/leaf1.json")
case "$CS" in *";DeviceId=leaf1;SharedAccessKey="*";GatewayHostName=ledge-gw.local") ;; *) fail "connection string: $CS";; esac
ledge device trust-bundle --out "$T/bundle.pem" || fail "trust-bundle"
# The modules resolve the gateway's name (the engine maps it); on the host it is localhost, which
# the hub's certificate names too.
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
leaf_has '.event == "method" and .name == "echo" and .payload.b == true' || fail "no method event at leaf1"
! leaf_events | grep -q '"event":"error"' || fail "leaf1: the SDK reported errors: $(leaf_events | grep '"error"')"
kill "$LEAF1" 2>/dev/null || true
wait "$LEAF1" 2>/dev/null || true

log "refusals: an HTTP error naming the reason, counted malformed"
malformed=$(hub_counter malformed)
upgrade() { # upgrade PATH [curl -H args...]: the HTTP status of an upgrade request, the body in $T/up.body
  local path="$1"; shift
  curl -sS --http1.1 --cacert "$CA" --max-time 10 -o "$T/up.body" -w '%{http_code}' \
    -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Sec-WebSocket-Version: 13' "$@" \
    "https://127.0.0.1:$HUB_WS_PORT$path"
}
UPG=(-H 'Connection: Upgrade' -H 'Upgrade: websocket')
check_refusal() { # check_refusal STATUS WORDS PATH [curl args...]
  local want="$1" words="$2"; shift 2
  local got
  got=$(upgrade "$@") || true
  assert_eq "$got" "$want" "status for $*"
  grep -qi -- "$words" "$T/up.body" || fail "answer to $* lacks '$words': $(cat "$T/up.body")"
}
check_refusal 404 "no such path" /wrong/path "${UPG[@]}" -H 'Sec-WebSocket-Protocol: mqtt'
check_refusal 400 "Sec-WebSocket-Protocol must offer" '/$iothub/websocket' "${UPG[@]}"
check_refusal 400 "Sec-WebSocket-Protocol must offer" '/$iothub/websocket' "${UPG[@]}" -H 'Sec-WebSocket-Protocol: stomp'
check_refusal 426 "needs Upgrade: websocket" '/$iothub/websocket' -H 'Sec-WebSocket-Protocol: mqtt'
assert_eq "$(hub_counter malformed)" "$((malformed + 4))" "malformed after 4 refusals"
grep -q "WebSocket upgrade refused (404)" "$HUB_LOG" || fail "the hub's log does not name the refusal"
# the modules' connections were not disturbed
hub_status | jq_true '[.sessions[] | select(.connected and (.clientId | endswith("/nodeA") or endswith("/nodeB")))] | length == 2' ||
  fail "sessions after the refusals: $(hub_status | jq -c .sessions)"

assert_eq "$(count nodeA '.event == "error"')$(count nodeB '.event == "error"')" 00 "SDK errors"
hub_status | jq_true '.counters.authFailures == 0 and .counters.unauthorized == 0 and .counters.routed >= 16' ||
  fail "hub counters: $(hub_status | jq -c .counters)"

log "nodeA over MqttWs across a kill -9 of the hub: 40 messages routed by a WHERE on \$body back to its own input, every acknowledged one arrives"
sdk_burst_across_restart nodeA self r1
log "ok"
