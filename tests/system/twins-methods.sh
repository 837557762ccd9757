#!/usr/bin/env bash
# Module twins and direct methods through the real hub: desired properties from the deployment
# and from `ledge twin set` reach the module (tempFilter), its reported properties come back with
# $version and are routed from /twinChangeNotifications; the whole twin survives a restart and a
# SIGKILL of the hub. `ledge invoke`: an answer, 504 when a connected module does not answer in
# time (a mosquitto_sub subscribed to methods with the module's `ledge token`), 404 for a module
# that is not connected, not listening for methods, or not in the deployment.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/upstream-lib.sh"
need_docker
need_mosquitto
need "command -v jq" "no jq"
need_images ledge-tempfilter:latest ledge-testmod:latest

UP_TOPIC='up/{module}/{properties}'
write_hub_config
start_mosquitto
start_sub
start_ledged

filter() { sample_module tempFilter ledge-tempfilter:latest '"TemperatureThreshold": {"value": "25"}'; }
silent='"silent": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "ledge-testmod:latest"}}'
ROUTES='"twin": "FROM /twinChangeNotifications INTO $upstream"'
twin() { ledge twin get "$1"; }

log "desired properties from the deployment"
hub_manifest "$(filter), $silent" "$ROUTES" |
  jq '.modulesContent.tempFilter = {"properties.desired": {"TemperatureThreshold": 33}}' > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy"; }
for m in edgeHub tempFilter silent; do wait_for 30 "$m running" status_is $m running; done
wait_for 15 "reported threshold 33" twin_is tempFilter '.reported.TemperatureThreshold == 33 and .reported.thresholdSource == "twin"'
twin_is tempFilter '.desired.TemperatureThreshold == 33 and (.desired["$version"] | type) == "number" and (.reported["$version"] | type) == "number"' ||
  fail "twin: $(twin tempFilter)"

log "ledge twin set: merged into desired, pushed to the module, reported back"
ledge twin set tempFilter '{"TemperatureThreshold": 36, "note": {"by": "test"}}' > "$T/set.out"
jq_true '.desired.TemperatureThreshold == 36 and .desired.note.by == "test"' "$T/set.out" || fail "set: $(cat "$T/set.out")"
wait_for 15 "reported threshold 36" twin_is tempFilter '.reported.TemperatureThreshold == 36'
ledge twin set tempFilter '{"note": null}' >/dev/null
twin_is tempFilter '.desired | has("note") | not' || fail "null did not remove a desired key: $(twin tempFilter)"
ledge twin set tempFilter '[1]' 2>"$T/err" && fail "a non-object patch was accepted"
ledge twin get nosuch 2>"$T/err" && fail "twin of a module not in the deployment"
grep -q 'no module named "nosuch"' "$T/err" || fail "twin get nosuch: $(cat "$T/err")"

log "reported changes are routed from /twinChangeNotifications"
wait_for 15 "a twin change notification upstream" grep -q '^up/tempFilter/.*"TemperatureThreshold":36' "$T/up.log"
line=$(grep -m1 '^up/tempFilter/.*"TemperatureThreshold":36' "$T/up.log")
cut -d' ' -f2- <<<"$line" | jq_true '.properties.reported.TemperatureThreshold == 36 and (.version | type) == "number"' ||
  fail "notification body: $line"
case "$line" in *'%24.cmid=tempFilter'*) ;; *) fail "notification without its origin: $line" ;; esac

before=$(twin tempFilter | jq -cS .)
log "the twin survives a restart of the hub (SIGTERM, then SIGKILL)"
for sig in TERM KILL; do
  old=$(hub_pid)
  kill -$sig "$old"
  new_hub() { local p; p=$(hub_pid); [ -n "$p" ] && [ "$p" != "$old" ] && hub_running; }
  wait_for 30 "the hub back after SIG$sig" new_hub
  after=$(twin tempFilter | jq -cS .)
  assert_eq "$after" "$before" "twin after SIG$sig"
done
wait_for 30 "tempFilter reconnected" invoke_is tempFilter GetStats '.status == 200'
# after reconnecting the module read its desired properties again: same version, nothing new
twin_is tempFilter '.reported.TemperatureThreshold == 36' || fail "reported lost: $(twin tempFilter)"

log "ledge invoke: an answer"
ledge invoke tempFilter SetThreshold --payload '{"threshold": 40}' > "$T/inv.out"
jq_true '.status == 200 and .payload.threshold == 40' "$T/inv.out" || fail "invoke: $(cat "$T/inv.out")"

log "ledge invoke: 404 (not connected, not in the deployment)"
rc=0; ledge invoke silent Ping --timeout 2 >"$T/out" 2>"$T/err" || rc=$?
[ $rc != 0 ] || fail "invoke of a module that is not connected succeeded"
grep -q "module silent is not connected to the hub" "$T/err" || fail "404: $(cat "$T/err")"
code=$(api POST "/modules/silent/methods/Ping?timeout=2" -o "$T/body" -w '%{http_code}')
assert_eq "$code" 404 "API status for a module that is not connected"
rc=0; ledge invoke nosuch Ping 2>"$T/err" || rc=$?
[ $rc != 0 ] && grep -q 'no module named "nosuch"' "$T/err" || fail "invoke nosuch: $(cat "$T/err")"

log "ledge invoke: 504 when a connected module does not answer"
ledge token silent --json > "$T/token.json"
mosquitto_sub -h 127.0.0.1 -p "$HUB_PLAIN_PORT" -i "$(jq -r .clientId "$T/token.json")" \
  -u "$(jq -r .username "$T/token.json")" -P "$(jq -r .token "$T/token.json")" \
  -t '$iothub/methods/POST/#' -q 0 -v > "$T/silent.log" 2>&1 &
SILENT_PID=$!
silent_connected() { hub_status | jq_true --arg id "$DEVICE/silent" '[.sessions[] | select(.clientId == $id) | .connected] | any'; }
wait_for 10 "silent connected" silent_connected
t0=$(date +%s%N)
rc=0; ledge invoke silent Ping --payload '{"x": 1}' --timeout 2 >"$T/out" 2>"$T/err" || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ $rc != 0 ] || fail "an unanswered method succeeded: $(cat "$T/out")"
grep -q "did not answer method Ping within 2 s" "$T/err" || fail "504: $(cat "$T/err")"
[ $ms -ge 1900 ] && [ $ms -lt 6000 ] || fail "the timeout took $ms ms"
grep -q '^\$iothub/methods/POST/Ping/?\$rid=[^ ]* {"x":1}$' "$T/silent.log" || fail "the request the module saw: $(cat "$T/silent.log")"
code=$(api POST "/modules/silent/methods/Ping?timeout=1" -o "$T/body" -w '%{http_code}')
assert_eq "$code" 504 "API status of an unanswered call"
rc=0; ledge invoke silent Ping --timeout 0 2>"$T/err" || rc=$?
[ $rc != 0 ] && grep -q "timeout" "$T/err" || fail "timeout 0 accepted: $(cat "$T/err")"
kill "$SILENT_PID"; wait "$SILENT_PID" 2>/dev/null || true

log "ledge invoke: 404 once the module stopped"
ledge stop tempFilter >/dev/null
wait_for 15 "tempFilter stopped" status_is tempFilter stopped
rc=0; ledge invoke tempFilter GetStats --timeout 2 2>"$T/err" || rc=$?
[ $rc != 0 ] && grep -q "module tempFilter is not connected to the hub" "$T/err" || fail "stopped module: $(cat "$T/err")"
stop_ledged
log "ok"
