#!/usr/bin/env bash
# Support bundles and module log rotation: a ledged whose device is SAS-keyed (a connection
# string), with a deployment that carries registry credentials, a connection string and a token
# in module environments (one module prints them to its log), the hub, a container and a process
# module. `ledge support-bundle` (and GET /systeminfo/supportbundle) must hold the logs, the
# deployment, the checks, the hub's status and the engine, honour --since, and contain none of
# the keys and tokens the test knows: the device key, the master secret, every module's key, the
# registry password, the keys in the environments, a SAS token minted with `ledge token`. Then
# the same with ledged stopped. Container modules get a rotating LogConfig by default.
source "$(dirname "$0")/lib.sh"
need_docker
USE_DOCKER=1
source "$(dirname "$0")/hub-lib.sh"
SAS_VERIFY="$LEDGE_BUILD/tests/sas-verify"
[ -x "$SAS_VERIFY" ] || fail "$SAS_VERIFY not built"
docker image inspect ledge-testmod:latest >/dev/null 2>&1 || fail "ledge-testmod:latest missing (scripts/build-images)"

rand_b64() { head -c "$1" /dev/urandom | base64 -w0; }
DEVICE_KEY="$(rand_b64 32)"
ENV_CS_KEY="$(rand_b64 32)"
REG_PASSWORD="RegPw-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
API_TOKEN="tok-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
HUBHOST="sb-hub.azure-devices.net"
cat > "$T/config.yaml" <<YAML
state_dir: $T/state
run_dir: $T/run
log_level: debug
device:
  connection_string: "HostName=$HUBHOST;DeviceId=$DEVICE;SharedAccessKey=$DEVICE_KEY"
  gateway_hostname: ledge-gw.local
engine:
  stop_timeout: 2s
agent:
  backoff_base: 200ms
  backoff_max: 1s
hub:
  tls_port: $HUB_TLS_PORT
  plain_port: $HUB_PLAIN_PORT
  websocket_port: 0
  amqp_port: 0
YAML

# leaky: a process module that prints its secrets, then a timestamped tick every 200 ms.
mkdir -p "$T/bin"
cat > "$T/bin/leaky" <<'SH'
#!/bin/sh
echo "leaky starting: connection $IOTHUB_CS password $REG_PW token $API_TOKEN"
i=0
while :; do echo "$(date -u +%Y-%m-%dT%H:%M:%S.000Z) leaky tick $i"; i=$((i+1)); sleep 0.2; done
SH
chmod 755 "$T/bin/leaky"
ENV_CS="HostName=other.azure-devices.net;DeviceId=peer;SharedAccessKey=$ENV_CS_KEY"
cat > "$T/deploy.json" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25",
      "registryCredentials": {"acr": {"username": "sbuser", "password": "$REG_PASSWORD",
                                      "address": "sbregistry.example.com"}}}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4"}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                  "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.4"}}},
    "modules": {
      "sensor": {"type": "docker", "status": "running", "restartPolicy": "always",
        "imagePullPolicy": "never",
        "settings": {"image": "ledge-testmod:latest",
          "createOptions": "{\"Env\": [\"API_TOKEN=$API_TOKEN\", \"LEVEL=3\"]}"},
        "env": {"TESTMOD_MARK": {"value": "sensor"}, "TESTMOD_PRINT_MS": {"value": "200"},
                "IOTHUB_CS": {"value": "$ENV_CS"}}},
      "leaky": {"type": "process", "status": "running", "restartPolicy": "always",
        "settings": {"path": "$T/bin/leaky"},
        "env": {"IOTHUB_CS": {"value": "$ENV_CS"}, "REG_PW": {"value": "$REG_PASSWORD"},
                "API_TOKEN": {"value": "$API_TOKEN"}}}}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
    "routes": {"all": "FROM /messages/* INTO \$upstream"},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}
}}
JSON

start_ledged
ledge deploy "$T/deploy.json" >/dev/null || fail "deploy failed"
wait_for 60 "sensor running" status_is sensor running
wait_for 30 "leaky running" status_is leaky running
wait_hub 30
wait_for 20 "leaky's ticks" grep -q "leaky tick 3" "$T/state/process/leaky.log"
# The test's secrets really are in the raw material the bundle is made from.
grep -qF "$ENV_CS_KEY" "$T/state/process/leaky.log" || fail "leaky did not print its secrets"

TOKEN="$(ledge token sensor --json | jq -r .token)"
[[ "$TOKEN" == SharedAccessSignature* ]] || fail "ledge token: $TOKEN"
SIG_ENC="$(sed -E 's/.*sig=([^&]*).*/\1/' <<<"$TOKEN")"
SIG="$(printf '%b' "${SIG_ENC//%/\\x}")"
MASTER_B64="$(base64 -w0 "$T/state/identity/master.key")"
MASTER_HEX="$(od -An -tx1 "$T/state/identity/master.key" | tr -d ' \n')"
SECRETS=("$DEVICE_KEY" "$ENV_CS_KEY" "$REG_PASSWORD" "$API_TOKEN" "$TOKEN" "$SIG_ENC" "$SIG"
         "$MASTER_B64" "$MASTER_HEX")
for m in sensor leaky edgeHub; do
  gen="$(module_field "$m" generationId)"
  [ -n "$gen" ] && [ "$gen" != null ] || continue
  SECRETS+=("$("$SAS_VERIFY" --print-key "$T/state" "$DEVICE" "$m" "$gen")")
done
log "${#SECRETS[@]} secrets to look for"

# check_bundle ARCHIVE DIR: extract and search for every secret.
check_bundle() {
  local archive="$1" dir="$2"
  mkdir -p "$dir"
  tar -xzf "$archive" -C "$dir" || fail "$archive is not a tar.gz"
  local top
  top="$(ls "$dir")"
  [ "$(echo "$top" | wc -l)" = 1 ] || fail "the bundle has more than one top directory: $top"
  [[ "$top" == ledge-support-$DEVICE-* ]] || fail "bundle directory: $top"
  B="$dir/$top"
  local s
  for s in "${SECRETS[@]}"; do
    [ -n "$s" ] || continue
    if grep -rlF -- "$s" "$dir" >/dev/null; then
      fail "a secret is in the bundle ($(grep -rlF -- "$s" "$dir" | tr '\n' ' ')): ${s:0:6}..."
    fi
  done
  jq -e . "$B/index.json" >/dev/null || fail "index.json is not JSON"
}

log "ledge support-bundle with ledged answering"
t0=$(date +%s%N)
ledge support-bundle -o "$T/b1.tar.gz" > "$T/b1.out" 2> "$T/b1.err" || { cat "$T/b1.err" >&2; fail "support-bundle failed"; }
t1=$(date +%s%N)
log "made in $(( (t1 - t0) / 1000000 )) ms: $(cat "$T/b1.err" | head -3)"
[ -f "$T/b1.tar.gz" ] && [ "$(stat -c %a "$T/b1.tar.gz")" = 600 ] || fail "the bundle is not a 0600 file"
check_bundle "$T/b1.tar.gz" "$T/x1"
assert_eq "$(jq -r .ledged "$B/index.json")" answered "index.json ledged"
for f in ledged.log modules/sensor.log modules/leaky.log modules/edgeHub.log deployment.json \
         modules.json check.json hub-status.json engine.json status.json systeminfo.json \
         config.json host.json; do
  [ -s "$B/$f" ] || fail "the bundle lacks $f (missing: $(jq -c .missing "$B/index.json"))"
done
grep -q "testmod starting sensor" "$B/modules/sensor.log" || fail "sensor.log: $(head -3 "$B/modules/sensor.log")"
grep -q "leaky tick" "$B/modules/leaky.log" || fail "leaky.log has no ticks"
grep -q "leaky starting: connection <redacted> password <redacted> token <redacted>" \
  "$B/modules/leaky.log" || fail "leaky's secrets not redacted as expected: $(grep 'leaky starting' "$B/modules/leaky.log")"
grep -q "ledge-hub" "$B/modules/edgeHub.log" || fail "the hub's log is empty"
grep -q "mgmt\|agent" "$B/ledged.log" || fail "ledged.log: $(head -3 "$B/ledged.log")"
dep="$B/deployment.json"
assert_eq "$(jq -r '.modulesContent["$edgeAgent"]["properties.desired"].runtime.settings.registryCredentials.acr.password' "$dep")" "<redacted>" "registry password"
assert_eq "$(jq -r '.modulesContent["$edgeAgent"]["properties.desired"].runtime.settings.registryCredentials.acr.username' "$dep")" "sbuser" "registry user name (kept)"
assert_eq "$(jq -r '.modulesContent["$edgeAgent"]["properties.desired"].modules.sensor.env.TESTMOD_MARK.value' "$dep")" "sensor" "a plain env value (kept)"
jq -r '.modulesContent["$edgeAgent"]["properties.desired"].modules.sensor.settings.createOptions' "$dep" |
  jq -e '.Env == ["API_TOKEN=<redacted>", "LEVEL=3"]' >/dev/null || fail "createOptions Env: $(jq -r '.modulesContent["$edgeAgent"]["properties.desired"].modules.sensor.settings.createOptions' "$dep")"
[ "$(jq '.checks | length' "$B/check.json")" -gt 10 ] || fail "check.json has no checks"
jq -e '.product' "$B/engine.json" >/dev/null || fail "engine.json: $(cat "$B/engine.json")"
jq -e '.connections // .counters' "$B/hub-status.json" >/dev/null || fail "hub-status.json: $(head -c 300 "$B/hub-status.json")"
assert_eq "$(jq -r .device.id "$B/config.json")" "$DEVICE" "config.json device.id"
assert_eq "$(jq -r .device.identity "$B/config.json")" connection_string "config.json device.identity"
[ "$(jq -r .redactions "$B/index.json")" -gt 5 ] || fail "index.json counts $(jq -r .redactions "$B/index.json") redactions"

log "--since: only what was logged after it"
sleep 1
SPLIT="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
split_s=$(date -d "$SPLIT" +%s)
sleep 2
ledge support-bundle --since "$SPLIT" -o "$T/b2.tar.gz" 2>/dev/null || fail "support-bundle --since failed"
check_bundle "$T/b2.tar.gz" "$T/x2"
assert_eq "$(jq -r .since "$B/index.json" | cut -c1-19)" "${SPLIT:0:19}" "index.json since"
! grep -q "testmod starting" "$B/modules/sensor.log" || fail "--since kept the sensor's first line"
grep -q "tick" "$B/modules/sensor.log" || fail "--since: no sensor ticks after $SPLIT"
first_ts="$(head -1 "$B/modules/sensor.log" | cut -d' ' -f1)"
[ "$(date -d "$first_ts" +%s)" -ge "$split_s" ] || fail "sensor.log starts at $first_ts, before $SPLIT"
first_ts="$(head -1 "$B/modules/leaky.log" | cut -d' ' -f1)"
[ "$(date -d "$first_ts" +%s)" -ge "$split_s" ] || fail "leaky.log starts at $first_ts, before $SPLIT"
! grep -q "leaky starting" "$B/modules/leaky.log" || fail "--since kept leaky's first line"

log "GET /systeminfo/supportbundle"
code="$(api GET "/systeminfo/supportbundle?since=10m" -o "$T/b3.tar.gz" -w '%{http_code}' -D "$T/b3.headers")"
assert_eq "$code" 200 "HTTP status"
grep -qi '^content-type: application/gzip' "$T/b3.headers" || fail "content type: $(cat "$T/b3.headers")"
grep -qi '^content-disposition: attachment; filename="ledge-support-' "$T/b3.headers" || fail "no file name"
check_bundle "$T/b3.tar.gz" "$T/x3"
for f in ledged.log modules/sensor.log modules/leaky.log deployment.json check.json hub-status.json; do
  [ -s "$B/$f" ] || fail "the API's bundle lacks $f (missing: $(jq -c .missing "$B/index.json"))"
done
grep -q "mgmt\|agent" "$B/ledged.log" || fail "the API's ledged.log (ledged's own stderr): $(head -3 "$B/ledged.log")"
code="$(api GET "/systeminfo/supportbundle?since=yesterday-ish" -o /dev/null -w '%{http_code}')"
assert_eq "$code" 400 "a bad since"

log "container modules rotate their logs by default"
lc="$(docker inspect -f '{{json .HostConfig.LogConfig}}' "$(container_id sensor)")"
assert_eq "$(jq -r .Type <<<"$lc")" json-file "LogConfig type"
assert_eq "$(jq -r '.Config["max-size"]' <<<"$lc")" 10485760 "LogConfig max-size"
assert_eq "$(jq -r '.Config["max-file"]' <<<"$lc")" 3 "LogConfig max-file"

log "with ledged stopped"
stop_ledged
ledge support-bundle --config "$T/config.yaml" -o "$T/b4.tar.gz" 2> "$T/b4.err" || { cat "$T/b4.err" >&2; fail "support-bundle without ledged failed"; }
check_bundle "$T/b4.tar.gz" "$T/x4"
jq -r .ledged "$B/index.json" | grep -q "^not answering" || fail "index.json: $(jq -r .ledged "$B/index.json")"
grep -q "tick" "$B/modules/sensor.log" || fail "no sensor log from the engine without ledged"
grep -q "leaky tick" "$B/modules/leaky.log" || fail "no leaky log from its files without ledged"
grep -q "ledge-hub" "$B/modules/edgeHub.log" || fail "no hub log without ledged"
[ "$(jq '.checks | length' "$B/check.json")" -gt 10 ] || fail "no local check run"
assert_eq "$(jq -r '.modulesContent["$edgeAgent"]["properties.desired"].runtime.settings.registryCredentials.acr.password' "$B/deployment.json")" "<redacted>" "offline deployment.json"
grep -q "not included: status.json" "$T/b4.err" || fail "the CLI does not say what is missing: $(cat "$T/b4.err")"
log "ok"
