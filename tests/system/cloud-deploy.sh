#!/usr/bin/env bash
# Deployments from the cloud, against the IoT Hub stand-in (tests/iothub): ledged logs in as the
# device's $edgeAgent and $edgeHub (SAS tokens signed with their keys, derived from the device
# key and registered in the stand-in as the operator would), the deployment is written into
# their desired properties as IoT Hub's portal does, the modules run on dockerd and
# $edgeAgent's reported properties show them running with lastDesiredStatus 200 (IoT Edge's
# schema); an invalid deployment is reported 400 with the JSON paths and nothing changes; the
# cloud goes away: the deployment stays in force, also across a restart of ledged; the desired
# properties written meanwhile are applied when the link is back; a local `ledge deploy` is
# reported as what runs and the cloud's older version is not applied over it.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/upstream-lib.sh"
source "$(dirname "$0")/iothub-lib.sh"
source "$(dirname "$0")/metrics-lib.sh"
need_docker
need_iothub
need_images ledge-testmod:latest

start_iothub --state-file "$T/iothub-state.json"
iothub_edge_device '$edgeAgent' '$edgeHub'

METRICS_PORT=$(free_port)
URL="http://127.0.0.1:$METRICS_PORT/metrics"
EXTRA_CONFIG="metrics:
  listen: 127.0.0.1:$METRICS_PORT"
write_hub_config
start_ledged

agent_twin() { iothub GET "/twins/$DEVICE/modules/%24edgeAgent"; }
hub_twin() { iothub GET "/twins/$DEVICE/modules/%24edgeHub"; }
reported_is() { agent_twin | jq_true ".properties.reported | $1"; }
cloud_is() { api GET /status | jq_true ".cloud | $1"; }

log "ledged logs in as \$edgeAgent and \$edgeHub; no deployment yet: 417"
wait_for 30 "both cloud sessions connected" cloud_is '.edgeAgent.connected and .edgeHub.connected'
iothub_events 0 connect "$DEVICE" '$edgeAgent' | sed -n 1p |
  jq_true '.auth == "sas" and .transport == "mqtts" and (.apiVersion | length > 0)' ||
  fail "the \$edgeAgent connection: $(iothub_events 0 connect "$DEVICE" '$edgeAgent')"
wait_for 30 "lastDesiredStatus 417" reported_is '.lastDesiredStatus.code == 417'

# desired_of MANIFEST_FILE MODULE — that module twin's desired properties in a manifest
desired_of() { jq -c --arg m "$2" '.modulesContent[$m]["properties.desired"]' "$1"; }
# cloud_deploy MANIFEST_FILE — written as the portal writes a deployment: both twins' desired
cloud_deploy() {
  iothub PUT "/twins/$DEVICE/modules/%24edgeAgent" "{\"properties\": {\"desired\": $(desired_of "$1" '$edgeAgent')}}" >/dev/null ||
    fail "cannot write \$edgeAgent's desired properties"
  iothub PUT "/twins/$DEVICE/modules/%24edgeHub" "{\"properties\": {\"desired\": $(desired_of "$1" '$edgeHub')}}" >/dev/null ||
    fail "cannot write \$edgeHub's desired properties"
}
agent_version() { agent_twin | jq '.properties.desired["$version"]'; }

log "a deployment from the cloud: two modules and the hub"
ROUTES='"up": {"route": "FROM /messages/modules/* INTO $upstream"}'
hub_manifest "$(testmod c1), $(testmod c2)" "$ROUTES" > "$T/d1.json"
cloud_deploy "$T/d1.json"
V1=$(agent_version)
both_running() { status_is "$1" running && status_is "$2" running; }
wait_for 90 "c1 and c2 running" both_running c1 c2
[ "$(container_status c1)" = running ] || fail "c1's container is not running on dockerd"
wait_for 30 "reported: version $V1 applied, c1 and c2 running" reported_is \
  ".lastDesiredStatus.code == 200 and .lastDesiredVersion == $V1 and .modules.c1.runtimeStatus == \"running\" and .modules.c2.runtimeStatus == \"running\" and .systemModules.edgeHub.runtimeStatus == \"running\""
agent_twin | jq '.properties.reported' > "$T/reported.json"
jq_true '.schemaVersion and .version.version and .runtime.type == "docker" and .runtime.platform.os == "linux" and
  .systemModules.edgeAgent.runtimeStatus == "running" and
  (.modules.c1 | (.exitCode == 0) and (.statusDescription | type == "string") and (.lastStartTimeUtc | test("^20")) and
    (.lastExitTimeUtc | type == "string") and (.restartCount == 0) and (.lastRestartTimeUtc | type == "string") and
    (.version | type == "string") and .settings.image == "ledge-testmod:latest" and .restartPolicy == "always")' "$T/reported.json" ||
  fail "\$edgeAgent's reported properties: $(cat "$T/reported.json")"
hub_reported_ok() {
  hub_twin > "$T/hub-twin.json" &&
    jq_true '.properties | .reported.lastDesiredStatus.code == 200 and .reported.lastDesiredVersion == .desired["$version"]' "$T/hub-twin.json"
}
wait_for 30 "\$edgeHub reported: its version applied" hub_reported_ok
api GET /deployment > "$T/deployment-1.json"
# the metrics of it: the whole twin at the connection and the deployment's patch, no failure,
# the time from the change to the deployment applied
scrape
syncs=$(metric edgeAgent_iothub_syncs_total 'ms_telemetry="True"')
gt "$syncs" 1 || fail "edgeAgent_iothub_syncs_total: $syncs (a twin and a patch)"
expect edgeAgent_unsuccessful_iothub_syncs_total 0
dt=$(metric edgeAgent_deployment_time_seconds)
gt "$dt" 0 && gt 90 "$dt" || fail "edgeAgent_deployment_time_seconds: $dt"
hub_status | jq_true '.upstream.enabled' || fail "the hub's upstream link is not configured"

log "an invalid deployment from the cloud: 400 with the JSON paths, nothing changes"
jq '.modulesContent["$edgeAgent"]["properties.desired"].modules.bad = {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": 5}} |
    del(.modulesContent["$edgeAgent"]["properties.desired"].modules.c2)' "$T/d1.json" > "$T/bad.json"
iothub PUT "/twins/$DEVICE/modules/%24edgeAgent" "{\"properties\": {\"desired\": $(desired_of "$T/bad.json" '$edgeAgent')}}" >/dev/null ||
  fail "cannot write the invalid deployment"
VBAD=$(agent_version)
wait_for 30 "reported: 400 for version $VBAD" reported_is ".lastDesiredStatus.code == 400 and .lastDesiredVersion == $VBAD"
reported_is '.lastDesiredStatus.description | test("modules\\.bad\\.settings\\.image")' ||
  fail "the 400 does not name the path: $(agent_twin | jq -c .properties.reported.lastDesiredStatus)"
api GET /deployment > "$T/deployment-2.json"
cmp -s "$T/deployment-1.json" "$T/deployment-2.json" || fail "the invalid deployment changed the applied one"
status_is c2 running || fail "c2 is not running any more after an invalid deployment"
reported_is '.modules.c2.runtimeStatus == "running"' || fail "c2 left the reported properties"

log "offline: the cloud refuses connections; the deployment stays in force, also across a restart of ledged"
iothub PATCH /settings '{"refuseConnections": 3}' >/dev/null
iothub POST /connections/drop-all '{}' >/dev/null
wait_for 30 "the cloud sessions down" cloud_is '(.edgeAgent.connected | not) and (.edgeHub.connected | not)'
stop_ledged
start_ledged
sleep 2
status_is c1 running && status_is c2 running || fail "the deployment is not in force offline: $(ledge list)"
hub_manifest "$(testmod c1), $(testmod c3)" "$ROUTES" > "$T/d2.json"
cloud_deploy "$T/d2.json"
V2=$(agent_version)
sleep 2
container_exists c3 && fail "c3 was created while offline"
cloud_is '(.edgeAgent.connected | not) and .edgeAgent.lastError' || fail "cloud status offline: $(api GET /status | jq -c .cloud)"

log "the link is back: the newer desired properties (version $V2) win"
iothub PATCH /settings '{"refuseConnections": null}' >/dev/null
c3_not_c2() { status_is c3 running && ! container_exists c2; }
wait_for 120 "c3 running, c2 gone" c3_not_c2
wait_for 30 "reported: version $V2 applied" reported_is \
  ".lastDesiredStatus.code == 200 and .lastDesiredVersion == $V2 and .modules.c3.runtimeStatus == \"running\" and (.modules.c2 | not)"
scrape # this ledged started offline: its refused connections are failed syncs
gt "$(metric edgeAgent_unsuccessful_iothub_syncs_total)" 0 || fail "no unsuccessful sync counted while the cloud refused"
gt "$(metric edgeAgent_iothub_syncs_total)" "$(metric edgeAgent_unsuccessful_iothub_syncs_total)" || fail "no successful sync after the link came back"
gt "$(metric edgeAgent_deployment_time_seconds)" 0 || fail "the offline change's deployment time"
prom_check || fail "promtool rejects the scrape"

log "a local ledge deploy: reported as what runs; the cloud's version $V2 is not applied over it"
hub_manifest "$(testmod c1), $(testmod c3), $(testmod loc)" "$ROUTES" > "$T/local.json"
ledge deploy "$T/local.json" > "$T/local.out" 2>&1 || { cat "$T/local.out" >&2; fail "local deploy failed"; }
wait_for 60 "loc running" status_is loc running
wait_for 30 "reported: loc running, version still $V2" reported_is \
  ".lastDesiredVersion == $V2 and .modules.loc.runtimeStatus == \"running\""
sleep 3
status_is loc running || fail "the cloud's deployment was applied over the local one"

since=$(iothub_event_seq)
stop_ledged
iothub_events "$since" disconnect "$DEVICE" '$edgeAgent' | sed -n 1p | jq_true '.reason == "client-disconnect"' ||
  fail "\$edgeAgent's session did not end with DISCONNECT: $(iothub_events "$since" disconnect "$DEVICE" '$edgeAgent')"
log "ok"
