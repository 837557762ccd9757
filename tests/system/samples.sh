#!/usr/bin/env bash
# The sample modules end to end, as the quickstart deploys them (examples/quickstart.json: the
# routes and module names of IoT Edge's module_to_module fixture, local FROM-scratch images):
# tempSensor → hub → tempFilter → hub → $upstream (a local mosquitto, IoT Hub's device topic
# with the module's origin in the property bag). The filter's threshold comes from its env, then
# from `ledge twin set` (desired properties), then from a direct method through `ledge invoke`;
# every reading arriving upstream is above the threshold it was filtered with, in order.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/upstream-lib.sh"
need_docker
need_mosquitto
need "command -v jq" "no jq"
need_images ledge-tempsensor:latest ledge-tempfilter:latest

write_hub_config
start_mosquitto
start_sub
start_ledged

log "deploy examples/quickstart.json (readings every 50 ms, hub on port $HUB_PORT)"
jq --arg port "$HUB_PORT" '
  .modulesContent["$edgeAgent"]["properties.desired"].modules |= with_entries(
    .value.env += {"LEDGE_HUB_PORT": {"value": $port}})
  | .modulesContent["$edgeAgent"]["properties.desired"].modules.tempSensor.env.SendInterval.value = "0.05"' \
  "$SRC_ROOT/examples/quickstart.json" > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy"; }
for m in edgeHub tempSensor tempFilter; do wait_for 30 "$m running" status_is $m running; done

# Every upstream line: topic with the property bag, then the reading.
check_upstream() { # check_upstream FROM_LINE — each reading above its threshold property
  tail -n +"$1" "$T/up.log" | while read -r topic body; do
    case "$topic" in devices/$DEVICE/messages/events/*) ;; *) echo "topic: $topic"; return 1 ;; esac
    case "$topic" in *'%24.cmid=tempFilter'*'MessageType=Alert'*) ;; *) echo "bag: $topic"; return 1 ;; esac
    th=$(sed -n 's/.*[&/]threshold=\([0-9.]*\).*/\1/p' <<<"$topic")
    jq_true --argjson th "$th" '.machine.temperature > $th' <<<"$body" ||
      { echo "reading not above $th: $body"; return 1; }
  done
}
threshold_lines() { grep -c "threshold=$1\( \|&\)" "$T/up.log" || true; }
threshold_at_least() { [ "$(threshold_lines "$1")" -ge "$2" ]; }

log "filtered readings arrive upstream (threshold 30 from the env)"
wait_for 30 "20 readings upstream" up_at_least 20
out=$(check_upstream 1) || fail "$out"
cp "$T/up.log" "$T/up.snap" # lines keep arriving: count one snapshot
assert_eq "$(grep -c "threshold=30\( \|&\)" "$T/up.snap")" "$(wc -l < "$T/up.snap")" "readings filtered with another threshold"
# readings n with n % 20 >= 10 pass 30: their sequence numbers, in order, nothing skipped
seqs=$(head -20 "$T/up.log" | cut -d' ' -f2- | jq -r .seq)
first=$(head -1 <<<"$seqs")
expect=""; n=$first; k=0
while [ $k -lt 20 ]; do
  [ $((n % 20)) -lt 10 ] || { expect+="$n"$'\n'; k=$((k + 1)); }
  n=$((n + 1))
done
expect=${expect%$'\n'}
assert_eq "$seqs" "$expect" "forwarded readings (sequence numbers)"
wait_for 10 "reported threshold" twin_is tempFilter '.reported.TemperatureThreshold == 30 and .reported.thresholdSource == "env"'

log "threshold 35 from the twin (ledge twin set)"
ledge twin set tempFilter '{"TemperatureThreshold": 35}' > "$T/twin.out"
jq_true '.desired.TemperatureThreshold == 35' "$T/twin.out" || fail "twin set: $(cat "$T/twin.out")"
wait_for 10 "reported threshold 35" twin_is tempFilter '.reported.TemperatureThreshold == 35 and .reported.thresholdSource == "twin"'
wait_for 30 "readings filtered at 35" threshold_at_least 35 5
from=$(grep -n -m1 "threshold=35" "$T/up.log" | cut -d: -f1)
out=$(check_upstream 1) || fail "$out"
[ "$(tail -n +"$from" "$T/up.log" | grep -c "threshold=30")" = 0 ] || fail "a reading filtered at 30 after one at 35"

log "threshold 38 from a direct method (ledge invoke)"
ledge invoke tempFilter SetThreshold --payload '{"threshold": 38}' --timeout 10 > "$T/invoke.out" ||
  fail "invoke: $(cat "$T/invoke.out")"
jq_true '.status == 200 and .payload.threshold == 38' "$T/invoke.out" || fail "invoke reply: $(cat "$T/invoke.out")"
wait_for 30 "readings filtered at 38" threshold_at_least 38 5
from=$(grep -n -m1 "threshold=38" "$T/up.log" | cut -d: -f1)
[ "$(tail -n +"$from" "$T/up.log" | grep -c "threshold=3[05]")" = 0 ] || fail "an older threshold after 38"
out=$(check_upstream 1) || fail "$out"
wait_for 10 "reported threshold 38" twin_is tempFilter '.reported.TemperatureThreshold == 38 and .reported.thresholdSource == "method"'
# the module's own answer to a bad request, and its counters
ledge invoke tempFilter SetThreshold --payload '{"threshold": "hot"}' > "$T/invoke.out" || true
jq_true '.status == 400 and (.payload.message | test("threshold"))' "$T/invoke.out" || fail "bad SetThreshold: $(cat "$T/invoke.out")"
ledge invoke tempFilter GetStats > "$T/invoke.out"
jq_true '.status == 200 and .payload.forwarded >= 30 and .payload.received > .payload.forwarded' "$T/invoke.out" ||
  fail "GetStats: $(cat "$T/invoke.out")"
ledge invoke tempFilter NoSuchMethod > "$T/invoke.out" || true
jq_true '.status == 501' "$T/invoke.out" || fail "unknown method: $(cat "$T/invoke.out")"

log "the sensor's rate from its twin"
ledge twin set tempSensor '{"SendInterval": 0.02}' >/dev/null
wait_for 10 "reported SendInterval" twin_is tempSensor '.reported.SendInterval == 0.02'

hub_status > "$T/status.json"
jq_true '.upstream.connected and .upstream.sent > 0 and .upstream.acked >= .upstream.sent - .upstream.inflight' "$T/status.json" ||
  fail "upstream status: $(jq -c .upstream "$T/status.json")"
jq_true '.counters.expired == 0 and .counters.authFailures == 0' "$T/status.json" ||
  fail "hub counters: $(jq -c .counters "$T/status.json")"
ledge list | grep -q "^tempFilter *running" || fail "tempFilter not running"
stop_ledged
log "ok ($(up_count) readings upstream)"
