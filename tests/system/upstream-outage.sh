#!/usr/bin/env bash
# Store and forward through an upstream outage (mosquitto as the upstream broker): two sensors
# route to $upstream at priorities 0 and 5; the broker is stopped mid-stream and the sensors
# keep publishing; the hub is killed with SIGKILL during the outage (ledged restarts it) while
# they publish; a third sensor's messages, routed with a 2 s TTL, wait past their TTL; then the
# broker comes back. Every message acknowledged to a sensor arrives upstream once or more, none
# is lost, each priority in order (and the backlog of priority 0 before that of priority 5);
# the expired ones are dropped and counted, not delivered.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/upstream-lib.sh"
need_docker
need_mosquitto
need "command -v jq" "no jq"
need_images ledge-tempsensor:latest

N=${OUTAGE_MESSAGES:-1500}   # per sensor
M=40                         # TTL sensor
UP_TOPIC='up/{module}/{properties}'
write_hub_config
start_mosquitto
start_sub
start_ledged

sensor() { # sensor NAME COUNT INTERVAL
  sample_module "$1" ledge-tempsensor:latest \
    "\"MessageCount\": {\"value\": \"$2\"}, \"SendInterval\": {\"value\": \"$3\"}"
}
ROUTES='"hi": {"route": "FROM /messages/modules/sensorHi/outputs/* INTO $upstream", "priority": 0},
        "lo": {"route": "FROM /messages/modules/sensorLo/outputs/* INTO $upstream", "priority": 5},
        "ttl": {"route": "FROM /messages/modules/sensorTtl/outputs/* INTO $upstream", "priority": 1, "timeToLiveSecs": 2}'
MODULES="$(sensor sensorHi "$N" 0.004), $(sensor sensorLo "$N" 0.004)"

log "two sensors, $N readings each, to the upstream broker on port $UP_PORT"
deploy_hub "$MODULES" "$ROUTES"
wait_for 30 "readings upstream" up_at_least 100

log "upstream broker stopped mid-stream; the sensors keep publishing"
stop_mosquitto
t_stop=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
lines_at_outage=$(up_count)
depth() { hub_status | jq '[.endpoints[] | select(.endpoint == "$upstream") | .depth] | add // 0'; }
depth_at_least() { [ "$(depth)" -ge "$1" ]; }
wait_for 30 "a backlog for \$upstream" depth_at_least 200

log "SIGKILL to the hub during the outage"
old=$(hub_pid)
kill -KILL "$old"
new_hub() { local p; p=$(hub_pid); [ -n "$p" ] && [ "$p" != "$old" ] && hub_running; }
wait_for 30 "the hub restarted by ledged" new_hub
reported_sent() { # reported_sent MODULE COUNT — the sensor has sent (and reported) them all
  twin_is "$1" ".reported.readingsSent == $2"
}
acked_all() { # the sensor's hub acknowledged everything it sent (its log says so)
  docker logs "$1" 2>&1 | grep -q "all $2 readings acknowledged by the hub"
}
wait_for 120 "sensorHi sent all" reported_sent sensorHi "$N"
wait_for 120 "sensorLo sent all" reported_sent sensorLo "$N"
wait_for 30 "sensorHi acknowledged" acked_all sensorHi "$N"
wait_for 30 "sensorLo acknowledged" acked_all sensorLo "$N"
[ "$(up_count)" = "$lines_at_outage" ] || fail "messages arrived while the broker was down"

log "a sensor whose route has a 2 s TTL publishes $M readings during the outage"
deploy_hub "$MODULES, $(sensor sensorTtl "$M" 0.01)" "$ROUTES"
wait_for 60 "sensorTtl sent all" reported_sent sensorTtl "$M"
wait_for 30 "sensorTtl acknowledged" acked_all sensorTtl "$M"
hub_status > "$T/before.json"
backlog=$(jq '[.endpoints[] | select(.endpoint == "$upstream") | .depth] | add' "$T/before.json")
sleep 2.5 # past the TTL

log "upstream broker back: the backlog of $backlog drains"
t0=$(date +%s%N)
start_mosquitto
all_arrived() {
  local m
  for m in sensorHi sensorLo; do
    [ "$(grep "^up/$m/" "$T/up.log" | cut -d' ' -f2- | jq -r .seq | sort -un | wc -l)" = "$N" ] || return 1
  done
}
wait_for 120 "every reading upstream" all_arrived
t1=$(date +%s%N)
hub_status > "$T/after.json"

# none lost, each priority in first-arrival order, nothing from the TTL sensor
for m in sensorHi sensorLo; do
  grep "^up/$m/" "$T/up.log" | cut -d' ' -f2- | jq -r .seq > "$T/$m.seq"
  firsts=$(awk '!seen[$1]++' "$T/$m.seq")
  [ "$firsts" = "$(seq 0 $((N - 1)))" ] || fail "$m: readings missing or out of order (first arrivals)"
  log "$m: $N readings, $(( $(wc -l < "$T/$m.seq") - N )) duplicates"
done
grep -q "^up/sensorTtl/" "$T/up.log" && fail "an expired message was delivered"
# strict priority: of the readings made during the outage (the broker may still hold older ones
# for the subscriber), priority 0's came before priority 5's
paste -d' ' <(cut -d' ' -f1 "$T/up.log" | cut -d/ -f2) <(cut -d' ' -f2- "$T/up.log" | jq -r .timeCreated) |
  awk -v t="$t_stop" '$2 > t {print $1}' > "$T/after.order"
last_hi=$(grep -n '^sensorHi$' "$T/after.order" | tail -1 | cut -d: -f1)
first_lo=$(grep -n -m1 '^sensorLo$' "$T/after.order" | cut -d: -f1)
[ -z "$last_hi" ] || [ -z "$first_lo" ] || [ "$last_hi" -lt "$first_lo" ] ||
  fail "priority 5 delivered before priority 0's backlog was done (lines $first_lo < $last_hi)"
expired=$(jq '.counters.expired' "$T/after.json")
[ "$expired" = "$M" ] || fail "expired messages counted: $expired, not $M: $(jq -c '.counters, .endpoints' "$T/after.json") before: $(jq -c '.counters, .endpoints' "$T/before.json")"
jq_true '.upstream.connected and .upstream.connects >= 1' "$T/after.json" ||
  fail "upstream status: $(jq -c .upstream "$T/after.json")"
drain=$(( (t1 - t0) / 1000000 ))
log "drained $backlog messages in ${drain} ms after the broker came back (first delivery $(jq '.upstream.firstDeliveryAfterConnectMs // "?"' "$T/after.json") ms after connecting)"
wait_for 10 "an empty \$upstream queue" sh -c "[ \"\$('$LEDGE_BIN' -H '$T/run/mgmt.sock' hub status --json | jq '[.endpoints[] | select(.endpoint == \"\$upstream\") | .depth] | add')\" = 0 ]"
stop_ledged
log "ok"
