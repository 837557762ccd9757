#!/usr/bin/env bash
# Nested edge, three layers in network namespaces (docs/nested.md): top, middle and bottom, each
# its own ledged and hub in its own namespace, joined by veth pairs (top 10.212.1.1 — 10.212.1.2
# middle 10.212.2.1 — 10.212.2.2 bottom); the top has no IoT Hub (its upstream a mosquitto in
# its namespace), the middle's parent is the top, the bottom's the middle. The top deploys the
# middle (`ledge --device middle deploy`) and, through the middle, the bottom: the bottom's
# $edgeAgent twin lives on the top and the middle relays it. The bottom's sensor readings reach
# the top's upstream from bottom/sensor; the middle's link to the top is cut while the sensor
# keeps sending (its connections there killed): the bottom keeps working through the middle (a method on its module from the
# middle, its status in the middle's twin cache, its ledged restarted logs in to the middle
# again and keeps its deployment), the readings wait on the middle; the link is
# restored: every reading arrives, all from bottom/sensor (none as the middle), and what the
# bottom reported meanwhile reaches the top.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nested-lib.sh"
need "[ \"\$(id -u)\" = 0 ]" "network namespaces need root"
need "ip netns list" "no ip netns (iproute2)"
need "[ -x '$SENSOR' ] && [ -x '$FILTER' ]" "the sample modules are not built"

NS_T=lnt$$ NS_M=lnm$$ NS_B=lnb$$
LAYER_NS_top=$NS_T LAYER_NS_middle=$NS_M LAYER_NS_bottom=$NS_B
TOP_IP=10.212.1.1 MID_UP_IP=10.212.1.2 MID_IP=10.212.2.1 BOT_IP=10.212.2.2
netns_cleanup() {
  ip netns del "$NS_T" 2>/dev/null
  ip netns del "$NS_M" 2>/dev/null
  ip netns del "$NS_B" 2>/dev/null
  return 0
}
NESTED_EXTRA_CLEANUP=netns_cleanup
for ns in $NS_T $NS_M $NS_B; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "vt$$" netns "$NS_T" type veth peer name "vmt$$" netns "$NS_M"
ip link add "vmb$$" netns "$NS_M" type veth peer name "vb$$" netns "$NS_B"
ip -n "$NS_T" addr add "$TOP_IP/24" dev "vt$$"
ip -n "$NS_M" addr add "$MID_UP_IP/24" dev "vmt$$"
ip -n "$NS_M" addr add "$MID_IP/24" dev "vmb$$"
ip -n "$NS_B" addr add "$BOT_IP/24" dev "vb$$"
for pair in "$NS_T vt$$" "$NS_M vmt$$" "$NS_M vmb$$" "$NS_B vb$$"; do set -- $pair; ip -n "$1" link set "$2" up; done
# reach L IP PORT — a TCP connection from layer L's namespace to IP:PORT
reach() { ip netns exec "$1" timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }

HUB=top.local.ledge # the hierarchy's IoT hub host name: the top's (generated identity "top")
KEY_M=$(openssl rand -base64 32)
KEY_B=$(openssl rand -base64 32)
N=300 # readings of the bottom's sensor, one every 50 ms
lstatus() { curl -s --unix-socket "$T/$1/run/mgmt.sock" http://l/status; }

log "top: no IoT Hub, its upstream a mosquitto; it knows the middle and the bottom"
MOSQ_LAYER=top
layer_config top "  id: top
  gateway_hostname: top-gw.local" "  enabled: true
  host: 127.0.0.1
  port: $MOSQ_PORT
  tls: false" "certificates:
  extra_names: [$TOP_IP]"
start_mosquitto
layer_start top
manifest "" '{"up": "FROM /messages/* INTO $upstream"}' > "$T/top.json"
lcli top deploy "$T/top.json" >/dev/null || fail "the top's deployment failed"
lcli top device add middle --key "$KEY_M" >/dev/null || fail "device add middle"
lcli top device add bottom --key "$KEY_B" >/dev/null || fail "device add bottom (at the top)"
reach "$NS_M" "$TOP_IP" "${LAYER_TLS[top]}" || fail "the middle cannot reach the top's hub"
reach "$NS_B" "$TOP_IP" "${LAYER_TLS[top]}" && fail "the bottom reaches the top directly"

log "middle: its parent is the top; deployed from the top"
layer_config middle "  connection_string: \"HostName=$HUB;DeviceId=middle;SharedAccessKey=$KEY_M\"
  gateway_hostname: middle-gw.local" "  parent: $TOP_IP
  port: ${LAYER_TLS[top]}
  ca_file: $T/top/state/certs/trust-bundle.pem
  keepalive: 5s" "certificates:
  extra_names: [$MID_IP]"
layer_start middle
manifest "" '{"up": "FROM /messages/* INTO $upstream"}' > "$T/middle.json"
lcli top --device middle deploy "$T/middle.json" --timeout 60s > "$T/dm.out" 2>&1 || fail "deploy middle from the top: $(cat "$T/dm.out")"
lcli middle device add bottom --key "$KEY_B" >/dev/null || fail "device add bottom (at the middle)"

log "bottom: its parent is the middle; deployed from the top, through the middle"
layer_config bottom "  connection_string: \"HostName=$HUB;DeviceId=bottom;SharedAccessKey=$KEY_B\"
  gateway_hostname: bottom-gw.local" "  parent: $MID_IP
  port: ${LAYER_TLS[middle]}
  ca_file: $T/middle/state/certs/trust-bundle.pem"
layer_start bottom
ROUTES='{"up": "FROM /messages/modules/sensor/outputs/* INTO $upstream"}'
manifest "$(proc_module sensor "$SENSOR" bottom '"SendInterval": {"value": "0.05"}, "MessageCount": {"value": "'$N'"}'), $(proc_module filter "$FILTER" bottom)" "$ROUTES" |
  jq '.modulesContent.filter = {"properties.desired": {"TemperatureThreshold": 25}}' > "$T/bottom.json"
lcli top --device bottom deploy "$T/bottom.json" --timeout 60s > "$T/db.out" 2>&1 || fail "deploy bottom from the top: $(cat "$T/db.out")"
grep -q "^sensor .*running" "$T/db.out" || fail "the top's listing of the bottom: $(cat "$T/db.out")"
bottom_running() { lcli bottom list --json | jq_true '[.[] | select(.name == "sensor" or .name == "filter") | .runtimeStatus == "running"] | length == 2 and all'; }
wait_for 20 "sensor and filter running at the bottom" bottom_running
ftwin() { lcli "$1" --device bottom twin get filter 2>/dev/null | jq_true "$2"; }
wait_for 30 "the top sees the filter's threshold 25" ftwin top '.reported.TemperatureThreshold == 25'

readings() { grep '"machine"' "$T/up.log" 2>/dev/null | cut -d' ' -f2- | jq -r .seq | sort -un | wc -l; }
from_bottom() { grep -c '%24.cdid=bottom&%24.cmid=sensor' "$T/up.log" 2>/dev/null || true; }
some_readings() { [ "$(readings)" -ge 40 ]; }
wait_for 30 "readings of the bottom's sensor at the top's upstream" some_readings
[ "$(from_bottom)" -ge 1 ] || fail "the readings do not come from bottom/sensor: $(grep -m1 machine "$T/up.log")"

log "the middle's link to the top is cut, its connections there killed; the sensor keeps sending"
ip -n "$NS_M" link set "vmt$$" down
# the connections die too (the device link and every relay session: they retry with back-off),
# as when the parent restarts; without this they would outlive a short cut
ip netns exec "$NS_M" ss -K dst "$TOP_IP" >/dev/null
[ "$(ip netns exec "$NS_M" ss -Htn state established dst "$TOP_IP" | wc -l)" = 0 ] ||
  fail "connections to the top outlived ss -K: $(ip netns exec "$NS_M" ss -Htn dst "$TOP_IP")"
sleep 1
before=$(readings)
lcli middle --device bottom invoke filter SetThreshold --payload '{"threshold": 31}' --timeout 10 > "$T/inv.out" ||
  fail "a method on the bottom's module from the middle, offline: $(cat "$T/inv.out")"
wait_for 20 "the middle's twin cache has the new threshold" ftwin middle '.reported.TemperatureThreshold == 31'
lcli middle --device bottom list > "$T/mlist.out" || fail "the middle's listing of the bottom, offline"
grep -q "^sensor .*running" "$T/mlist.out" || fail "the middle's listing: $(cat "$T/mlist.out")"
log "offline, the bottom's ledged restarts: it logs in to the middle again and keeps its deployment"
kill -TERM "${LAYER_PID[bottom]}"; wait "${LAYER_PID[bottom]}" || fail "the bottom's ledged exited with $?"
layer_start bottom
bottom_cloud() { lstatus bottom | jq_true '.cloud.edgeAgent.connected and .cloud.edgeHub.connected'; }
wait_for 30 "the bottom's \$edgeAgent and \$edgeHub back on the middle" bottom_cloud
lstatus bottom | jq_true '.cloud.lastDesired.code == 200' || fail "the bottom's view offline: $(lstatus bottom | jq -c .cloud)"
bottom_running || fail "the bottom's modules after its restart, offline: $(lcli bottom list)"
sleep 1
queued() { lcli middle hub status --json | jq_true '[.endpoints[] | select(.endpoint == "$upstream") | .depth] | add > 0'; }
queued || fail "nothing waits in the middle's \$upstream queue while its link is cut"
during=$(readings)
[ $(( during - before )) -le 5 ] || fail "$(( during - before )) readings crossed a cut link"
ftwin top '.reported.TemperatureThreshold == 31' && fail "the top saw the threshold through a cut link"

log "restored: every reading arrives, and what the bottom reported meanwhile"
ip -n "$NS_M" link set "vmt$$" up
all_readings() { [ "$(readings)" -ge $N ]; }
wait_for 90 "all $N readings at the top's upstream" all_readings
lo=$(grep '"machine"' "$T/up.log" | cut -d' ' -f2- | jq -r .seq | sort -n | head -1)
hi=$(grep '"machine"' "$T/up.log" | cut -d' ' -f2- | jq -r .seq | sort -n | tail -1)
[ "$lo" = 0 ] && [ "$hi" = $((N - 1)) ] || fail "readings $lo..$hi, expected 0..$((N - 1))"
# every one from bottom/sensor: what waited in the middle went over its relay session once that
# was back, none as the middle device (docs/upstream.md "Telemetry follows its identity")
not_bottom=$(grep '"machine"' "$T/up.log" | grep -vc '%24.cdid=bottom&%24.cmid=sensor' || true)
[ "$not_bottom" = 0 ] ||
  fail "$not_bottom readings did not come from bottom/sensor: $(grep '"machine"' "$T/up.log" | grep -v '%24.cdid=bottom&%24.cmid=sensor' | head -2)"
wait_for 30 "the top sees the threshold reported while cut off" ftwin top '.reported.TemperatureThreshold == 31'
lcli top --device bottom list --json | jq_true '.modules.sensor.runtimeStatus and .lastDesiredStatus.code == 200' ||
  fail "the top's view of the bottom: $(lcli top --device bottom list --json)"
log "ok: $N readings, all from bottom/sensor, $(( $(grep -c machine "$T/up.log") - N )) duplicates"
