#!/usr/bin/env bash
# Deployments on the real engine (dockerd, the oci engine with LEDGE_ENGINE=oci, Podman with =podman): three modules come up in startupOrder; a status-only change
# keeps the container; a config change recreates only that module; removal; an invalid manifest
# is refused with every error and changes nothing; logs; API errors.
source "$(dirname "$0")/lib.sh"
need_engine
need_image ledge-testmod:latest
start_ledged

log "deploy three modules"
deploy "$(testmod one running 1), $(testmod two running 2), $(testmod three running 3)" > "$T/out"
grep -q "create    one" "$T/out" || fail "plan not printed: $(cat "$T/out")"
grep -q "Deployment applied" "$T/out" || fail "deploy did not finish: $(cat "$T/out")"
for m in one two three; do wait_for 20 "$m running" status_is $m running; done
# startupOrder: each group was started after the previous one
s1=$(container_started one); s2=$(container_started two); s3=$(container_started three)
[[ "$s1" < "$s2" && "$s2" < "$s3" ]] || fail "startupOrder not honoured: $s1 $s2 $s3"
# identity environment and ledge's labels, log rotation, network, host-gateway
container_env one | grep -qx "IOTEDGE_MODULEID=one" || fail "IOTEDGE_MODULEID missing"
assert_eq "$(container_label one dev.ledge.owner)" ledge "owner label"
if [ "$ENGINE" = oci ]; then
  rec=$(oci_record one)
  jq -e '.logFiles == 3 and .logMax == 10485760' "$rec" >/dev/null || fail "no log rotation: $(jq -c '{logFiles, logMax}' "$rec")"
  jq -e '.netmode == "bridge" and (.ip | startswith("10.88."))' "$rec" >/dev/null || fail "not on the ledge network: $(jq -c '{netmode, ip}' "$rec")"
  grep -qx "10.88.0.1	ledge-gw.local" "$(dirname "$rec")/hosts" || fail "the gateway host name does not lead to the host: $(cat "$(dirname "$rec")/hosts")"
  # module names resolve to the other modules' addresses (IoT Edge: modules reach each other by name)
  ip2=$(jq -r .ip "$(oci_record two)")
  grep -qx "$ip2	two" "$(dirname "$rec")/hosts" || fail "two is not in one's /etc/hosts: $(cat "$(dirname "$rec")/hosts")"
  ip link show lg-ledge >/dev/null || fail "no bridge lg-ledge"
elif [ "$ENGINE" = podman ]; then
  # Podman keeps one log file, cut at the size (10 MiB, which it prints in MB) (no max-file: docs/support.md); its compatible
  # inspect says NetworkMode "bridge" for a named network, its own says which one
  podman_inspect one | jq -e '.[0].HostConfig.LogConfig.Size == "10.49MB"' >/dev/null ||
    fail "no log size limit: $(podman_inspect one | jq -c '.[0].HostConfig.LogConfig')"
  podman_inspect one | jq -e '.[0].NetworkSettings.Networks | keys == ["ledge"]' >/dev/null || fail "not on the ledge network"
  gwip=$(docker network inspect ledge | jq -r '.[0].IPAM.Config[0].Gateway')
  assert_eq "$(docker inspect one | jq -r '.[0].HostConfig.ExtraHosts[0]')" "ledge-gw.local:$gwip" "the gateway host name leads to the host on the ledge network"
  # module names resolve to the other modules' addresses (aardvark-dns on the network's gateway)
  ip2=$(docker inspect two | jq -r '.[0].NetworkSettings.Networks.ledge.IPAddress')
  assert_eq "$(dns_query "$gwip" two)" "$ip2" "two's address as one's resolver ($gwip) gives it"
else
  docker inspect one | jq -e '.[0].HostConfig.LogConfig.Config["max-file"] == "3"' >/dev/null || fail "no log rotation"
  docker inspect one | jq -e '.[0].HostConfig.NetworkMode == "ledge"' >/dev/null || fail "not on the ledge network"
  gwip=$(docker network inspect ledge | jq -r '.[0].IPAM.Config[0].Gateway')
  assert_eq "$(docker inspect one | jq -r '.[0].HostConfig.ExtraHosts[0]')" "ledge-gw.local:$gwip" "the gateway host name leads to the host on the ledge network"
fi

log "status-only change keeps the container"
id2=$(container_id two); id1=$(container_id one)
deploy "$(testmod one running 1), $(testmod two stopped 2), $(testmod three running 3)" > "$T/out"
wait_for 20 "two stopped" status_is two stopped
assert_eq "$(container_id two)" "$id2" "stopped module was recreated"
deploy "$(testmod one running 1), $(testmod two running 2), $(testmod three running 3)" > "$T/out"
wait_for 20 "two running" status_is two running
assert_eq "$(container_id two)" "$id2" "restarted module was recreated"

log "config change recreates only that module"
deploy "$(testmod one running 1), $(testmod two running 2 '"NEW": {"value": "1"}'), $(testmod three running 3)" > "$T/out"
grep -q "recreate  two" "$T/out" || fail "expected a recreate: $(cat "$T/out")"
wait_for 20 "two running" status_is two running
[ "$(container_id two)" != "$id2" ] || fail "changed module kept its container"
assert_eq "$(container_id one)" "$id1" "unchanged module was recreated"

log "logs"
wait_for 10 "two logs" sh -c "'$LEDGE_BIN' -H '$T/run/mgmt.sock' logs two | grep -q 'tick 1'"
ledge logs two --tail 1 | grep -q '^tick' || fail "--tail 1 gave: $(ledge logs two --tail 1)"
[ "$(ledge logs two --tail 1 | wc -l)" = 1 ] || fail "--tail 1 printed more than one line"
ledge logs two --timestamps --tail 1 | grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' || fail "no timestamps"
timeout 3 "$LEDGE_BIN" -H "$T/run/mgmt.sock" logs -f two > "$T/follow" || true
[ "$(grep -c tick "$T/follow")" -ge 2 ] || fail "follow did not stream: $(cat "$T/follow")"
ledge logs nosuch 2>"$T/err" && fail "logs of a missing module succeeded"
grep -q 'no module named "nosuch"' "$T/err" || fail "bad error: $(cat "$T/err")"

log "invalid manifest: 400 with every error, nothing changes"
cat > "$T/bad.json" <<'JSON'
{"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
  "runtime": {"type": "docker", "settings": {}},
  "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "x"}}},
  "modules": {
    "one": {"type": "docker", "status": "run", "settings": {"image": "ledge-testmod"}},
    "bad": {"type": "docker", "status": "running", "settings": {"image": "ledge-testmod", "createOptions": "{\"HostConfig\": {"}}}}},
  "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}}}
JSON
ledge deploy "$T/bad.json" 2>"$T/err" && fail "invalid manifest accepted"
grep -q 'modules.one.status' "$T/err" || fail "status error not reported: $(cat "$T/err")"
grep -q 'modules.bad.settings.createOptions: not valid JSON' "$T/err" || fail "createOptions error not reported: $(cat "$T/err")"
code=$(api POST /deployment --data-binary @"$T/bad.json" -o "$T/body" -w '%{http_code}')
assert_eq "$code" 400 "status of an invalid deployment"
jq -e '.errors | length >= 2' "$T/body" >/dev/null || fail "errors array: $(cat "$T/body")"
assert_eq "$(container_id one)" "$id1" "a rejected manifest changed a module"
ledge list | grep -q '^bad' && fail "a rejected module appeared"
api GET /deployment | jq -e '.modulesContent["$edgeAgent"]["properties.desired"].modules.two' >/dev/null || fail "stored deployment changed"

log "dry run changes nothing"
deploy_dry=$(manifest "$(testmod one running 1)"); echo "$deploy_dry" > "$T/dry.json"
ledge deploy --dry-run "$T/dry.json" > "$T/out"
grep -q "remove    two" "$T/out" || fail "dry run plan: $(cat "$T/out")"
status_is two running || fail "dry run removed a module"

log "removal"
deploy "$(testmod one running 1), $(testmod three running 3)" > "$T/out"
grep -q "remove    two" "$T/out" || fail "no remove step: $(cat "$T/out")"
container_exists two && fail "removed module's container still exists"
ledge list | grep -q '^two' && fail "removed module still listed"

log "API errors"
code=$(api GET /modules/nosuch -o "$T/body" -w '%{http_code}'); assert_eq "$code" 404 "unknown module"
jq -e '.message' "$T/body" >/dev/null || fail "error without message"
code=$(api POST /modules/nosuch/start -o /dev/null -w '%{http_code}'); assert_eq "$code" 404 "start unknown"
code=$(api GET /nope -o /dev/null -w '%{http_code}'); assert_eq "$code" 404 "unknown path"
code=$(api DELETE /modules -o /dev/null -w '%{http_code}'); assert_eq "$code" 405 "wrong method"
rc=0; ledge start 2>/dev/null || rc=$?; assert_eq "$rc" 2 "usage error exit code"

log "stop/start/restart"
ledge stop one >/dev/null; wait_for 10 "one stopped" status_is one stopped
sleep 1; status_is one stopped || fail "restart policy restarted a module stopped by request"
ledge start one >/dev/null; wait_for 10 "one running" status_is one running
r0=$(container_started one)
ledge restart one >/dev/null; wait_for 10 "one running" status_is one running
[ "$(container_started one)" != "$r0" ] || fail "restart did not restart"
stop_ledged
log "ok"
