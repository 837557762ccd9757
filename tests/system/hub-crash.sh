#!/usr/bin/env bash
# ledge-hub durability: kill -9 of the hub twice during a QoS 1 stream (MQTT.js publisher and
# subscriber on the host) loses no message the hub acknowledged — the process engine restarts
# it, both clients reconnect, every acked id arrives (duplicates allowed); then a truncated and
# a corrupt segment file and a garbage one are salvaged at start-up, reported in the hub's log,
# without a crash loop, and the intact messages are still delivered; a garbage and a truncated
# twins.db are salvaged the same way (kept aside, reported in the log and `ledge hub status`).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"

MAX_RESTARTS=0
hub_config
start_hub_ledged
hub_deploy "$(idle sender), $(idle receiver)" '{
  "r1": "FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint(\"/modules/receiver/inputs/in1\")",
  "r2": "FROM /messages/modules/sender/outputs/out2 INTO BrokeredEndpoint(\"/modules/receiver/inputs/in2\")"}'
wait_hub

STREAM=(node "$SRC_ROOT/tests/node/mqttjs-stream.js")
N=3000
stream() { # stream pub|sub MODULE [args...] — run in the background: it becomes node
  local mode=$1 m=$2; shift 2
  exec "${STREAM[@]}" "$mode" --port "$HUB_TLS_PORT" --ca "$CA" --device "$DEVICE" --module "$m" --token "$(token "$m")" "$@"
}
lines() { [ -f "$1" ] && grep -c . "$1" || echo 0; }

stream sub receiver --out "$T/received" > "$T/sub.log" 2>&1 &
SUB=$!
wait_for 10 "the subscriber" grep -q subscribed "$T/sub.log"
stream pub sender --output out1 --count $N --window 50 --rate 800 --acked "$T/acked" > "$T/pub.log" 2>&1 &
PUB=$!

kill_hub_at() { # kill_hub_at ACKED_COUNT
  local want=$1 pid
  acked_enough() { [ "$(lines "$T/acked")" -ge "$want" ]; }
  wait_for 60 "$want messages acknowledged" acked_enough
  pid=$(hub_pid)
  kill -9 "$pid"
  log "kill -9 of the hub (pid $pid) after $(lines "$T/acked") acknowledgements"
  restarted() { local p; p=$(hub_pid); [ -n "$p" ] && [ "$p" != "$pid" ] && hub_ready; }
  wait_for 20 "the hub restarted by the process engine" restarted
}
kill_hub_at 800
kill_hub_at 2000
wait $PUB || fail "publisher: $(tail -5 "$T/pub.log")"
assert_eq "$(lines "$T/acked")" $N "acknowledged"
all_arrived() { [ -z "$(comm -23 <(sort -u "$T/acked") <(sort -u "$T/received"))" ]; }
wait_for 30 "every acknowledged id at the subscriber" all_arrived
kill $SUB; wait $SUB 2>/dev/null || true
log "stream: $N acknowledged, $(lines "$T/received") received ($(sort -u "$T/received" | grep -c .) distinct), $(grep -c '"connect"' "$T/pub.log") publisher connects"
assert_eq "$(sort -u "$T/received" | grep -c .)" $N "distinct ids received"
assert_eq "$(module_field edgeHub restartCount)" 2 "hub restarts"

log "salvage at start-up: truncated, corrupt and garbage segment files"
for i in $(seq 1 20); do mpub sender -q 1 -t "$(events sender '%24.on=out2')" -m "s$i"; done
assert_eq "$(endpoint_depth /modules/receiver/inputs/in2)" 20 "in2 depth"
ledge stop edgeHub >/dev/null
assert_eq "$(module_field edgeHub exitCode)" 0 "hub exit code on stop"
q="$T/state/hub/queues/modules%2Freceiver%2Finputs%2Fin2%2Fpd"
seg=$(ls "$q"/*.seg | head -1)
[ -n "$seg" ] || fail "no segment in $q: $(ls "$T/state/hub/queues")"
size=$(stat -c %s "$seg")
printf 'XXXX' | dd of="$seg" bs=1 seek=50 conv=notrunc status=none   # inside the first record
truncate -s $((size - 5)) "$seg"                                       # a torn last record
mkdir -p "$T/state/hub/queues/modules%2Fghost%2Finputs%2Fx%2Fp3"
head -c 4096 /dev/urandom > "$T/state/hub/queues/modules%2Fghost%2Finputs%2Fx%2Fp3/00000000000000000001.seg"
ledge start edgeHub >/dev/null
wait_hub
grep "store salvage" "$HUB_LOG" >&2 || fail "no salvage report in the hub's log"
grep -q "store salvage: queue modules/receiver/inputs/in2/pd: .*: invalid tail of [0-9]* bytes at offset [0-9]* truncated" "$HUB_LOG" \
  || fail "truncation not reported"
grep -q "store salvage: queue modules/receiver/inputs/in2/pd: .*: [0-9]* corrupt bytes at offset 0 skipped" "$HUB_LOG" \
  || fail "corruption not reported"
grep -q "store salvage: queue modules/ghost/inputs/x/p3: .*: invalid tail of 4096 bytes" "$HUB_LOG" \
  || fail "garbage file not reported"
restarts=$(module_field edgeHub restartCount)
sleep 1
assert_eq "$(module_field edgeHub runtimeStatus)" running "hub status after salvage"
assert_eq "$(module_field edgeHub restartCount)" "$restarts" "hub restarted after salvage"
msub receiver -c -q 1 -v -t "$(inputs receiver)" -W 2 > "$T/salvaged" 2>/dev/null || true
expected=$(seq 2 19 | sed 's/^/s/' | tr '\n' ' ')
# (in1 may deliver again what was acknowledged after its last checkpoint: at least once)
assert_eq "$(grep '/inputs/in2/' "$T/salvaged" | sed 's/.* //' | tr '\n' ' ')" "$expected" "messages after salvage"

log "a damaged twins.db (garbage, then truncated): salvaged at start-up, reported, queues served"
damaged=0
for how in garbage truncated; do
  for i in $(seq 1 30); do mpub sender -q 1 -t "$(events sender '%24.on=out2')" -m "$how$i"; done
  ledge stop edgeHub >/dev/null
  rm -f "$T/state/hub/twins.db-wal" "$T/state/hub/twins.db-shm"
  if [ $how = garbage ]; then
    head -c 16384 /dev/urandom > "$T/state/hub/twins.db"
  else
    truncate -s 1500 "$T/state/hub/twins.db"
  fi
  restarts=$(module_field edgeHub restartCount)
  ledge start edgeHub >/dev/null
  wait_hub
  damaged=$((damaged + 1))
  assert_eq "$(grep -c "twins database .*/twins.db was damaged" "$HUB_LOG")" $damaged "damage logged ($how)"
  hub_status | jq -e '.twinsDatabase.damaged and .twinsDatabase.available' >/dev/null \
    || fail "status after a $how twins.db: $(hub_status | jq -c .twinsDatabase)"
  ledge hub status | grep -q "twins database: DAMAGED at start" || fail "ledge hub status does not say so: $(ledge hub status)"
  assert_eq "$(ls "$T/state/hub" | grep -c '^twins.db.damaged-[0-9TZ]*$')" $damaged "damaged files kept aside"
  assert_eq "$(stat -c %a "$T/state/hub/twins.db")" 600 "twins.db mode"
  sleep 1
  assert_eq "$(module_field edgeHub runtimeStatus)" running "hub status after a $how twins.db"
  assert_eq "$(module_field edgeHub restartCount)" "$restarts" "hub restarted after a $how twins.db"
  msub receiver -c -q 1 -v -t "$(inputs receiver)" -W 2 > "$T/after-$how" 2>/dev/null || true
  assert_eq "$(grep '/inputs/in2/' "$T/after-$how" | sed 's/.* //' | grep -c "^$how")" 30 \
    "queued messages delivered after a $how twins.db"
done
log "PASS"
