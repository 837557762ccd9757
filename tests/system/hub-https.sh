#!/usr/bin/env bash
# The edgeHub HTTPS API (docs/hub.md "The HTTPS API") with the unmodified Azure IoT Node SDK:
# ModuleClient.invokeMethod is an HTTPS call to GatewayHostName:443 (the SDK takes no other port),
# so the hub's WebSocket listener is on 443 here, as in hub-ws, and the clients use MqttWs (the
# SDK's Mqtt takes 8883 only; one port is enough):
# - two modules (tests/node/sdk-module.js over MqttWs in the ledge-node-module image, configured only
#   by the environment ledged injects): `ledge invoke nodeA invoke` makes nodeA call
#   client.invokeMethod(deviceId, "nodeB", {methodName: "echo", ...}) and answer with what it got:
#   nodeB's status and payload; a module that is not deployed (404), one that does not answer in
#   time (504);
# - a leaf device on the host (tests/node/leaf-device.js, MqttWs): nodeA's
#   client.invokeMethod(leafId, {methodName: "echo"}) goes to /twins/{leafId}/methods;
# - curl with nodeA's own SAS token (signed by the workload API): accepted as nodeA, refused (401)
#   as nodeB (impersonation), with a forged signature, without x-ms-edge-moduleId or the token;
#   a leaf device's authentic token is refused 403; GET 405, text/plain 415, a bad body 400;
#   connectTimeoutInSeconds: with leaf1 away, 404 only after it, and a call made while leaf1 is
#   away reaches it once it connects again (200 with its answer).
HUB_WS_PORT=443 # the SDK's invokeMethod connects to 443 only
source "$(dirname "$0")/lib.sh"
need "! ss -Htln 'sport = :443' | grep -q ." "port 443 is taken (the SDK's invokeMethod connects to 443 only)"
source "$(dirname "$0")/hub-lib.sh"
need_docker
need "command -v jq" "no jq"
need "command -v curl" "no curl"
"$SRC_ROOT/scripts/build-images" node-module >/dev/null || fail "cannot build ledge-node-module"
docker network inspect ledge >/dev/null 2>&1 || docker network create ledge >/dev/null
"$SRC_ROOT/tests/node/install" >/dev/null || fail "cannot install tests/node's packages (npm ci)"

jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }

USE_DOCKER=1 hub_config
start_hub_ledged
node_mod() {
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-node-module:latest"}, "env": {"NODE_MODULE_SCRIPT": {"value": "sdk-module.js"}, "NODE_SDK_TRANSPORT": {"value": "MqttWs"}}}' "$1"
}
hub_manifest "$(node_mod nodeA), $(node_mod nodeB)" '{}' > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy"; }
for m in edgeHub nodeA nodeB; do wait_for 60 "$m running" status_is $m running; done

mod_events() { docker logs "$1" 2>/dev/null | grep '^{' || true; }
count() { mod_events "$1" | jq -c --slurp "map(select($2)) | length"; }
at_least() { [ "$(count "$1" "$2")" -ge "$3" ]; }
wait_for 60 "nodeA connected" at_least nodeA '.event == "open"' 1
wait_for 60 "nodeB connected" at_least nodeB '.event == "open"' 1

# via_a PAYLOAD_JSON: nodeA's invokeMethod with these parameters; its answer in $T/via.out
via_a() {
  ledge invoke nodeA invoke --payload "$1" --timeout 30 > "$T/via.out" 2>&1 || fail "ledge invoke nodeA invoke $1: $(cat "$T/via.out")"
}

log "module to module: nodeA's invokeMethod on nodeB gets nodeB's status and payload"
via_a '{"module": "nodeB", "method": "echo", "payload": {"a": [1, 2], "s": "x"}, "timeout": 10}'
jq_true '.status == 200 and .payload.result.status == 200 and .payload.result.payload.echo == {"a": [1, 2], "s": "x"}' "$T/via.out" ||
  fail "invokeMethod nodeB echo: $(cat "$T/via.out")"
at_least nodeB '.event == "method" and .name == "echo" and .payload.a == [1, 2]' 1 || fail "no echo at nodeB: $(mod_events nodeB | tail -3)"

log "a module that is not deployed: 404; one that does not answer in time: 504"
via_a '{"module": "nodeC", "method": "echo", "payload": 1}'
jq_true '.payload.error.statusCode == 404 and (.payload.error.message | test("no module nodeC"))' "$T/via.out" ||
  fail "invokeMethod nodeC: $(cat "$T/via.out")"
start=$(date +%s)
via_a '{"module": "nodeB", "method": "silent", "payload": {"q": 1}, "timeout": 2}'
jq_true '.payload.error.statusCode == 504 and (.payload.error.message | test("did not answer method silent within 2 s"))' "$T/via.out" ||
  fail "invokeMethod silent: $(cat "$T/via.out")"
[ $(( $(date +%s) - start )) -ge 2 ] || fail "504 before the 2 s timeout"
at_least nodeB '.event == "silent" and .payload.q == 1' 1 || fail "the silent call did not reach nodeB"
# and a module that is deployed but went away
docker stop -t 1 nodeB >/dev/null
b_gone() { hub_status | jq_true '[.sessions[] | select(.connected and (.clientId | endswith("/nodeB")))] | length == 0'; }
wait_for 30 "nodeB's session gone" b_gone
via_a '{"module": "nodeB", "method": "echo", "payload": 1}'
jq_true '.payload.error.statusCode == 404 and (.payload.error.message | test("nodeB is not connected"))' "$T/via.out" ||
  fail "invokeMethod on a stopped nodeB: $(cat "$T/via.out")"
wait_for 60 "nodeB running again" status_is nodeB running
wait_for 60 "nodeB reconnected" at_least nodeB '.event == "open"' 2

log "module to leaf device: nodeA's invokeMethod(leaf1, ...) goes to /twins/leaf1/methods"
ledge device add leaf1 --json > "$T/leaf1.json" || fail "device add: $(cat "$T/leaf1.json")"
CS=$(jq -r .connectionString "$T/leaf1.json")
ledge device trust-bundle --out "$T/bundle.pem" || fail "trust-bundle"
CS=${CS/GatewayHostName=ledge-gw.local/GatewayHostName=localhost}
leaf_events() { grep '^{' "$T/leaf1.out" 2>/dev/null || true; }
leaf_has() { leaf_events | jq_true --slurp "map(select($1)) | length >= ${2:-1}"; }
LEAF_TRANSPORT=MqttWs node "$SRC_ROOT/tests/node/leaf-device.js" "$CS" "$T/bundle.pem" 0 > "$T/leaf1.out" 2> "$T/leaf1.err" &
LEAF1=$!
wait_for 30 "leaf1 connected" leaf_has '.event == "open"'
wait_for 20 "leaf1 listens for methods" leaf_has '.event == "twin"'
via_a '{"device": "leaf1", "method": "echo", "payload": {"b": true}}'
jq_true '.payload.result.status == 200 and .payload.result.payload.echo.b == true' "$T/via.out" ||
  fail "invokeMethod leaf1: $(cat "$T/via.out")"
leaf_has '.event == "method" and .name == "echo" and .payload.b == true' || fail "no method event at leaf1"
kill "$LEAF1" 2>/dev/null || true
wait "$LEAF1" 2>/dev/null || true

log "curl with nodeA's own token (signed by the workload API): accepted as nodeA only"
HOSTNAME_=$(docker exec nodeA node -p process.env.IOTEDGE_IOTHUBHOSTNAME) || fail "nodeA's environment"
DEV=$(docker exec nodeA node -p process.env.IOTEDGE_DEVICEID)
SR=$(jq -rn --arg s "$HOSTNAME_/devices/$DEV/modules/nodeA" '$s | @uri')
SE=$(( $(date +%s) + 3000 ))
DATA=$(printf '%s\n%s' "$SR" "$SE" | base64 -w0)
docker exec nodeA node /app/workload-call.js POST '/modules/{m}/genid/{g}/sign?api-version=2019-01-30' \
  "{\"keyId\": \"primary\", \"algo\": \"HMACSHA256\", \"data\": \"$DATA\"}" > "$T/sign.out" || fail "workload sign: $(cat "$T/sign.out")"
SIG=$(jq -r '.body.digest' "$T/sign.out")
[ -n "$SIG" ] && [ "$SIG" != null ] || fail "no digest: $(cat "$T/sign.out")"
TOKEN="SharedAccessSignature sr=$SR&sig=$(jq -rn --arg s "$SIG" '$s | @uri')&se=$SE"
URL="https://127.0.0.1:$HUB_WS_PORT/twins/$DEV/modules/nodeB/methods?api-version=2021-04-12"
BODY='{"methodName": "echo", "payload": {"c": 3}, "responseTimeoutInSeconds": 5}'
api() { # api [curl args...]: the HTTP status, the body in $T/api.body
  curl -sS --http1.1 --cacert "$CA" --max-time 15 -o "$T/api.body" -w '%{http_code}' "$@"
}
refused() { # refused STATUS WORDS [curl args...]
  local want="$1" words="$2"; shift 2
  local got
  got=$(api "$@") || true
  assert_eq "$got" "$want" "status for curl $*"
  jq -e --arg w "$words" '(.message | test($w)) and (.Message | startswith("ErrorCode:"))' "$T/api.body" >/dev/null ||
    fail "answer to curl $* lacks '$words': $(cat "$T/api.body")"
}
auth_before=$(hub_counter authFailures)
got=$(api -X POST -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" -H 'Content-Type: application/json' -d "$BODY" "$URL")
assert_eq "$got" 200 "nodeA's own call"
jq_true '.status == 200 and .payload.echo.c == 3' "$T/api.body" || fail "curl as nodeA: $(cat "$T/api.body")"
JSON=(-X POST -H 'Content-Type: application/json' -d "$BODY")
refused 401 "module nodeB" "${JSON[@]}" -H "x-ms-edge-moduleId: $DEV/nodeB" -H "Authorization: $TOKEN" "$URL"
refused 401 "module nodeA" "${JSON[@]}" -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: ${TOKEN/sig=/sig=AAAA}" "$URL"
refused 401 "x-ms-edge-moduleId" "${JSON[@]}" -H "Authorization: $TOKEN" "$URL"
refused 401 "Authorization" "${JSON[@]}" -H "x-ms-edge-moduleId: $DEV/nodeA" "$URL"
KEY=$(jq -r .connectionString "$T/leaf1.json" | sed 's/.*SharedAccessKey=\([^;]*\).*/\1/')
LEAF_TOKEN=$(node "$SRC_ROOT/tests/node/leaf-device.js" token "$HOSTNAME_" leaf1 "$KEY")
refused 401 "module nodeA" "${JSON[@]}" -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $LEAF_TOKEN" "$URL"
refused 403 "only modules" "${JSON[@]}" -H "x-ms-edge-moduleId: leaf1" -H "Authorization: $LEAF_TOKEN" "$URL"
assert_eq "$(hub_counter authFailures)" "$((auth_before + 5))" "authFailures after 5 refused callers"
refused 405 "POST only" -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" "$URL"
refused 415 "application/json" -X POST -H 'Content-Type: text/plain' -d "$BODY" -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" "$URL"
refused 400 "methodName" -X POST -H 'Content-Type: application/json' -d '{"payload": 1}' -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" "$URL"
refused 404 "no such resource" "${JSON[@]}" -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" "https://127.0.0.1:$HUB_WS_PORT/twins/$DEV/modules/nodeB"
refused 404 "not this edge device" "${JSON[@]}" -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" "https://127.0.0.1:$HUB_WS_PORT/twins/other/modules/nodeB/methods"
[ "$(count nodeB '.event == "method" and .payload.c == 3')" = 1 ] || fail "a refused call reached nodeB: $(mod_events nodeB | grep '"c":3')"
grep -q "HTTPS API: .*refused (401)" "$HUB_LOG" || fail "the hub's log does not name the refusal"

log "connectTimeoutInSeconds: a target that is away is waited for, 404 only when the time is up"
# leaf1 (its SDK went above) is a known device that is not connected
LEAF_URL="https://127.0.0.1:$HUB_WS_PORT/twins/leaf1/methods"
start=$(date +%s)
refused 404 "connectTimeoutInSeconds" -X POST -H 'Content-Type: application/json' \
  -d '{"methodName": "echo", "payload": 1, "connectTimeoutInSeconds": 2}' -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" "$LEAF_URL"
[ $(( $(date +%s) - start )) -ge 2 ] || fail "404 before the 2 s connect timeout"
# a call made while leaf1 is away reaches it once it connects
curl -sS --http1.1 --cacert "$CA" --max-time 90 -o "$T/wait.body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"methodName": "echo", "payload": {"late": 1}, "connectTimeoutInSeconds": 60, "responseTimeoutInSeconds": 10}' \
  -H "x-ms-edge-moduleId: $DEV/nodeA" -H "Authorization: $TOKEN" "$LEAF_URL" > "$T/wait.code" 2>&1 &
WAITER=$!
sleep 2
kill -0 "$WAITER" 2>/dev/null || fail "the call did not wait: $(cat "$T/wait.code") $(cat "$T/wait.body")"
LEAF_TRANSPORT=MqttWs node "$SRC_ROOT/tests/node/leaf-device.js" "$CS" "$T/bundle.pem" 0 > "$T/leaf1b.out" 2> "$T/leaf1b.err" &
LEAF1=$!
wait "$WAITER" || fail "the waiting call: $(cat "$T/wait.code")"
assert_eq "$(cat "$T/wait.code")" 200 "the call that waited for leaf1"
jq_true '.status == 200 and .payload.echo.late == 1' "$T/wait.body" || fail "the call that waited: $(cat "$T/wait.body")"
grep -q '"event":"method".*"late":1' "$T/leaf1b.out" || fail "no late method event at leaf1: $(cat "$T/leaf1b.out")"
kill "$LEAF1" 2>/dev/null || true
wait "$LEAF1" 2>/dev/null || true

log "the WebSocket upgrade on the same port is unchanged: no Upgrade on its path is still 426"
got=$(api -H 'Sec-WebSocket-Protocol: mqtt' "https://127.0.0.1:$HUB_WS_PORT/\$iothub/websocket") || true
assert_eq "$got" 426 "a GET of /\$iothub/websocket without Upgrade"

assert_eq "$(count nodeA '.event == "error"')$(count nodeB '.event == "error"')" 00 "SDK errors"
log "ok"
