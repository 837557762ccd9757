#!/usr/bin/env bash
# A new deployment reaches the running hub without a restart and without disturbing messages in
# flight: MQTT.js (from npm, on the host, over TLS with SAS tokens) streams QoS 1 messages while
# the routes change twice — a second endpoint is added, then the first route removed — and the
# store cap changes. Every acknowledged message arrives; the hub keeps its pid; the endpoint no
# route names any more drains and goes away. A module removed by a redeploy loses its open
# connection at once.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"

R1='"r1": "FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint(\"/modules/receiver/inputs/in1\")"'
R2='"r2": {"route": "FROM /messages/modules/sender/* INTO BrokeredEndpoint(\"/modules/receiver/inputs/in2\")", "priority": 1, "timeToLiveSecs": 600}'
hub_config
start_hub_ledged
hub_deploy "$(idle sender), $(idle receiver)" "{$R1}"
wait_hub
pid=$(hub_pid)

STREAM=(node "$SRC_ROOT/tests/node/mqttjs-stream.js")
stream() { # stream pub|sub MODULE [args...] — run in the background: it becomes node
  local mode=$1 m=$2; shift 2
  exec "${STREAM[@]}" "$mode" --port "$HUB_TLS_PORT" --ca "$CA" --device "$DEVICE" --module "$m" --token "$(token "$m")" "$@"
}
lines() { [ -f "$1" ] && grep -c . "$1" || echo 0; }
N=3000
stream sub receiver --out "$T/received" --with-input 1 > "$T/sub.log" 2>&1 &
SUB=$!
wait_for 10 "the subscriber" grep -q subscribed "$T/sub.log"
stream pub sender --output out1 --count $N --window 50 --rate 600 --acked "$T/acked" > "$T/pub.log" 2>&1 &
PUB=$!
acked_at_least() { [ "$(lines "$T/acked")" -ge "$1" ]; }

wait_for 30 "800 acknowledged" acked_at_least 800
log "redeploy: a second route into a new endpoint, new TTL and store cap ($(lines "$T/acked") acknowledged)"
hub_deploy "$(idle sender), $(idle receiver)" "{$R1, $R2}" \
  '{"timeToLiveSecs": 3600, "storeLimits": {"maxSizeBytes": 50000000}}'
new_route() { grep -q '^in2 ' "$T/received"; }
wait_for 10 "messages through the new route" new_route
assert_eq "$(hub_status | jq .store.maxBytes)" 50000000 "store cap after the redeploy"

wait_for 30 "1800 acknowledged" acked_at_least 1800
log "redeploy: the first route removed ($(lines "$T/acked") acknowledged)"
hub_deploy "$(idle sender), $(idle receiver)" "{$R2}"
wait $PUB || fail "publisher: $(tail -5 "$T/pub.log")"
assert_eq "$(lines "$T/acked")" $N "acknowledged"
all_arrived() { [ -z "$(comm -23 <(sort -u "$T/acked") <(awk '{print $2}' "$T/received" | sort -u))" ]; }
wait_for 30 "every acknowledged id at the subscriber" all_arrived
assert_eq "$(hub_pid)" "$pid" "the hub's pid (restarted by a redeploy)"
assert_eq "$(module_field edgeHub restartCount)" 0 "hub restarts"
grep -q "configuration loaded: 2 routes" "$HUB_LOG" || fail "the hub did not load the second deployment"
in1=$(grep -c '^in1 ' "$T/received"); in2=$(grep -c '^in2 ' "$T/received")
log "received $in1 on in1, $in2 on in2, $(lines "$T/received") in all; $N acknowledged"
# every id sent after the first route went away came through in2 only
last_in1=$(awk '$1 == "in1" {print $2}' "$T/received" | sort -n | tail -1)
[ "$last_in1" -lt $N ] || fail "in1 still routed after its route was removed"
pruned() { ! hub_status | jq -e '.endpoints[] | select(.endpoint == "/modules/receiver/inputs/in1")' >/dev/null; }
wait_for 15 "the unused, drained endpoint removed" pruned
grep -q "endpoint /modules/receiver/inputs/in1: no route uses it and it is empty; removed" "$HUB_LOG" \
  || fail "endpoint removal not logged"
kill_tree $SUB

log "a module that leaves the deployment loses its open connection at once"
hub_deploy "$(idle sender), $(idle receiver), $(idle modb)" "{$R2}"
modb_known() { grep -q "configuration loaded: .* 3 module identities" "$HUB_LOG"; }
wait_for 10 "modb in the hub's identities" modb_known
msub modb -c -q 1 -t "$(inputs modb)" > "$T/modb.out" 2> "$T/modb.err" &
MODB=$!
modb_connected() { hub_status | jq -e --arg c "$DEVICE/modb" '.sessions[] | select(.clientId == $c and .connected)' >/dev/null; }
wait_for 10 "modb connected" modb_connected
hub_deploy "$(idle sender), $(idle receiver)" "{$R2}"
modb_cut() { ! hub_status | jq -e --arg c "$DEVICE/modb" '.sessions[] | select(.clientId == $c)' >/dev/null; }
wait_for 10 "modb's connection cut and its persistent session dropped" modb_cut
grep -q "module modb: it left the deployment: 1 connection closed" "$HUB_LOG" || fail "the cut is not logged"
kill_tree $MODB
log "PASS"
