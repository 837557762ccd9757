#!/usr/bin/env bash
# The upstream link's SAS login against the IoT Hub stand-in (tests/iothub), over TLS: the
# device's key (device.key) signs the token, the stand-in checks it against the key registered
# for the device. A sensor's readings routed to $upstream arrive on the device's telemetry topic
# with their system and application properties; the token (upstream.token_lifetime: 1m) is
# renewed before it expires — the stand-in, like IoT Hub, ends a connection when its token
# expires; then the device's key changes in the registry: the link is refused (CONNACK 5),
# `ledge hub status` says so and the readings wait; the key back, they drain, none lost.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/upstream-lib.sh"
source "$(dirname "$0")/iothub-lib.sh"
need_docker
need_iothub
need_images ledge-tempsensor:latest

N=${SAS_READINGS:-450} # at 0.2 s: the sensor publishes through the renewal and the refusal
start_iothub
KEY=$(head -c 32 /dev/urandom | base64)
iothub PUT "/devices/$DEVICE" "{\"authentication\": {\"type\": \"sas\", \"symmetricKey\": {\"primaryKey\": \"$KEY\"}}}" >/dev/null ||
  fail "cannot register $DEVICE"
UP_PORT=$IOTHUB_MQTTS_PORT
UP_TLS=true
UP_EXTRA="  ca_file: $IOTHUB_CA
  token_lifetime: 1m"
DEVICE_EXTRA="  iothub_hostname: $IOTHUB_NAME
  key: $KEY"
write_hub_config
start_ledged

ROUTES='"up": {"route": "FROM /messages/modules/sensor/outputs/* INTO $upstream"}'
log "a sensor sends $N readings to \$upstream: the link logs in to the stand-in with a SAS token"
deploy_hub "$(sample_module sensor ledge-tempsensor:latest "\"MessageCount\": {\"value\": \"$N\"}, \"SendInterval\": {\"value\": \"0.2\"}")" "$ROUTES"
telemetry() { iothub GET "/telemetry?deviceId=$DEVICE&limit=100000" | jq -c '.messages[]'; }
arrived_at_least() { [ "$(telemetry | wc -l)" -ge "$1" ]; }
wait_for 60 "readings at the stand-in" arrived_at_least 5

first=$(iothub_events 0 connect "$DEVICE" | sed -n 1p)
jq_true '.auth == "sas" and .transport == "mqtts" and .cleanSession == false and (.apiVersion | length > 0) and (.deviceClientType | startswith("ledge/"))' <<<"$first" ||
  fail "the link's connection: $first"
connect_at=$(jq -r .time <<<"$first")
expiry=$(jq -r .tokenExpiry <<<"$first")
lifetime=$(( $(date -d "$expiry" +%s) - $(date -d "$connect_at" +%s) ))
[ "$lifetime" -ge 58 ] && [ "$lifetime" -le 61 ] || fail "the token is valid for ${lifetime}s, not upstream.token_lifetime (60s): $first"

log "the readings arrive with their properties, as IoT Hub would see them"
iothub GET "/telemetry?deviceId=$DEVICE&limit=1" | jq -c ".messages[0]" > "$T/first.json"
jq_true --arg d "$DEVICE" '
  .moduleId == null and (.topic | startswith("devices/\($d)/messages/events/")) and
  .systemProperties.messageId == "tempsensor-\(.body | fromjson | .seq)" and
  .systemProperties.contentType == "application/json" and .systemProperties.contentEncoding == "utf-8" and
  .systemProperties.connectionDeviceId == $d and .systemProperties.connectionModuleId == "sensor" and
  .systemProperties.outputName == "temperatureOutput" and
  .properties.seq == (.body | fromjson | .seq | tostring) and
  .annotations["iothub-connection-device-id"] == $d and .qos == 1 and (.bagErrors | not)' "$T/first.json" ||
  fail "the first reading at the stand-in: $(cat "$T/first.json")"

log "the token is renewed before it expires (connected at $connect_at, token until $expiry)"
renewed() {
  local n
  n=$(iothub_events 0 connect "$DEVICE" | wc -l)
  [ "$n" -ge 2 ]
}
wait_for 75 "a second connection with a fresh token" renewed
second=$(iothub_events 0 connect "$DEVICE" | sed -n 2p)
ended=$(iothub_events 0 disconnect "$DEVICE" | sed -n 1p)
log "renewal: $(jq -c '{reason, detail, time}' <<<"$ended") then $(jq -c '{time, tokenExpiry}' <<<"$second")"
# the link closes the old connection itself, its DISCONNECT written out before the socket closes
jq_true '.reason == "client-disconnect"' <<<"$ended" ||
  fail "the first connection did not end with the link's DISCONNECT: $ended"
[ "$(date -d "$(jq -r .time <<<"$second")" +%s%N)" -lt "$(date -d "$expiry" +%s%N)" ] ||
  fail "reconnected after the token expired: $second (expiry $expiry)"
[ "$(date -d "$(jq -r .tokenExpiry <<<"$second")" +%s)" -gt "$(date -d "$expiry" +%s)" ] ||
  fail "the second connection's token is not a fresh one: $second"
iothub_events 0 disconnect "$DEVICE" | jq_true --slurp 'map(select(.reason == "token-expired")) | length == 0' ||
  fail "a connection outlived its token: $(iothub_events 0 disconnect "$DEVICE")"
count=$(telemetry | wc -l)
wait_for 30 "readings after the renewal" arrived_at_least $((count + 5))

log "the device's key changes in the registry: the link is refused and says so; readings wait"
since=$(iothub_event_seq)
iothub PUT "/devices/$DEVICE" '{"authentication": {"type": "sas"}}' >/dev/null || fail "cannot change the key"
refused_status() {
  hub_status > "$T/status.json" 2>/dev/null &&
    jq_true '(.upstream.connected | not) and .upstream.lastError == "refused by the server (CONNACK 5)"' "$T/status.json"
}
wait_for 30 "ledge hub status: refused" refused_status
status_text=$(ledge hub status)
[[ "$status_text" == *"refused by the server (CONNACK 5)"* ]] || fail "ledge hub status does not say why: $status_text"
iothub_events "$since" refused "$DEVICE" | sed -n 1p | jq_true '.returnCode == 5 and (.reason | test("signature does not match"))' ||
  fail "the stand-in's refusal: $(iothub_events "$since" refused "$DEVICE")"
queued() { hub_status | jq_true '[.endpoints[] | select(.endpoint == "$upstream") | .depth] | add >= 10'; }
wait_for 30 "readings queued for \$upstream" queued
during=$(telemetry | wc -l)

log "the key back: the link logs in again and the queued readings drain"
iothub PUT "/devices/$DEVICE" "{\"authentication\": {\"type\": \"sas\", \"symmetricKey\": {\"primaryKey\": \"$KEY\"}}}" >/dev/null ||
  fail "cannot restore the key"
all_arrived() { [ "$(telemetry | jq -r '.body | fromjson | .seq' | sort -un | wc -l)" = "$N" ]; }
wait_for 180 "all $N readings at the stand-in" all_arrived
telemetry | jq -r '.body | fromjson | .seq' | awk '!seen[$1]++' > "$T/first-arrivals"
[ "$(cat "$T/first-arrivals")" = "$(seq 0 $((N - 1)))" ] || fail "readings missing or out of order (first arrivals)"
total=$(telemetry | wc -l)
log "$N readings, $((total - N)) duplicates; $((total - during)) arrived after the key came back"
hub_status > "$T/status.json"
jq_true '.upstream.connected and .upstream.connects >= 3' "$T/status.json" ||
  fail "upstream status: $(jq -c .upstream "$T/status.json")"
iothub_events 0 disconnect "$DEVICE" | jq_true --slurp 'map(select(.reason == "token-expired")) | length == 0' ||
  fail "a connection outlived its token: $(iothub_events 0 disconnect "$DEVICE")"
stop_ledged
log "ok"
