#!/usr/bin/env bash
# The Prometheus endpoint (docs/metrics.md): the real ledged and hub with idle process modules,
# known traffic from mosquitto clients, then a scrape of http://<metrics.listen>/metrics checked
# value by value against that traffic (IoT Edge's edgehub_* names and labels, ledge's own),
# validated by Prometheus's own parser (promtool check metrics) and scraped once by a real
# Prometheus server whose HTTP API must answer a query with the same numbers.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"
source "$(dirname "$0")/metrics-lib.sh"

need "command -v promtool && command -v prometheus" "prometheus missing (scripts/deps --test)"
need "command -v curl" "curl missing"

METRICS_PORT=$(free_port)
UP_PORT=$(free_port) # nothing listens there: the upstream link stays down, messages wait
while [ "$METRICS_PORT" = "$UP_PORT" ]; do UP_PORT=$(free_port); done
TOP_EXTRA="metrics:
  listen: 127.0.0.1:$METRICS_PORT
upstream:
  enabled: true
  host: 127.0.0.1
  port: $UP_PORT
  tls: false"

ROUTES='{
  "r1": "FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint(\"/modules/receiver/inputs/in1\")",
  "hi": {"route": "FROM /messages/modules/sender/outputs/hi INTO BrokeredEndpoint(\"/modules/receiver/inputs/prio\")", "priority": 0},
  "short": {"route": "FROM /messages/modules/sender/outputs/short INTO BrokeredEndpoint(\"/modules/late/inputs/short\")", "timeToLiveSecs": 1},
  "up": "FROM /messages/modules/sender/outputs/up INTO $upstream"
}'

hub_config
start_hub_ledged
hub_deploy "$(idle sender), $(idle receiver), $(idle late)" "$ROUTES"
wait_hub

URL="http://127.0.0.1:$METRICS_PORT/metrics"
subscribed() {
  hub_status | jq -e --arg c "$DEVICE/$1" '.sessions[] | select(.clientId == $c and .connected and .subscriptions > 0)' >/dev/null
}

log "the endpoint answers with the text format before any traffic"
scrape
ctype=$(curl -sf -o /dev/null -w '%{content_type}' "$URL")
assert_eq "$ctype" "text/plain; version=0.0.4; charset=utf-8" "Content-Type"
expect ledge_hub_up 1
expect edgehub_connected_clients 0
prom_check || fail "promtool: the first scrape is not valid"

log "known traffic: 3 routed to receiver/in1, 2 unrouted, 4 upstream, 2 at priority 0, 1 expiring"
msub receiver -q 1 -t "$(inputs receiver)" -C 3 -W 20 > "$T/in1" &
sub=$!
wait_for 10 "receiver subscribed" subscribed receiver
scrape
expect edgehub_connected_clients 1
for i in 1 2 3; do mpub sender -q 1 -t "$(events sender '%24.on=out1')" -m "m$i"; done
wait $sub || fail "receiver got $(wc -l < "$T/in1") of 3"
for i in 1 2; do mpub sender -q 1 -t "$(events sender '%24.on=nowhere')" -m "x$i"; done
for i in 1 2 3 4; do mpub sender -q 1 -t "$(events sender '%24.on=up')" -m "u$i"; done
for i in 1 2; do mpub sender -q 1 -t "$(events sender '%24.on=hi')" -m "h$i"; done
mpub sender -q 1 -t "$(events sender '%24.on=short')" -m "s1"
log "a twin read and a refused CONNECT"
mpub sender -q 1 -t '$iothub/twin/GET/?$rid=7' -m ''
if mosquitto_pub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$DEVICE/sender" \
     -u "$(user_of sender)" -P "$(token receiver)" -q 1 -t "$(events sender '')" -m x 2>/dev/null; then
  fail "another module's token accepted"
fi
sleep 1.5 # the short route's message expires; late's connection makes the store skip it
mosquitto_sub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$DEVICE/late" -u "$(user_of late)" \
  -P "$(token late)" -q 1 -t "$(inputs late)" -W 2 > "$T/late" 2>/dev/null || true
[ ! -s "$T/late" ] || fail "an expired message was delivered: $(cat "$T/late")"

log "the scrape against the traffic"
scrape
common="iothub=\"$DEVICE.local.ledge\" edge_device=\"$DEVICE\""
expect edgehub_messages_received_total 3 "id=\"$DEVICE/sender\"" 'route_output="out1"' $common
expect edgehub_messages_received_total 2 'route_output="nowhere"'
expect edgehub_messages_received_total 4 'route_output="up"'
expect edgehub_messages_received_total 2 'route_output="hi"'
expect edgehub_messages_sent_total 3 "from=\"$DEVICE/sender\"" "to=\"$DEVICE/receiver\"" \
  'from_route_output="out1"' 'to_route_input="in1"' 'priority="2000000000"' 'ms_telemetry="True"'
expect edgehub_messages_dropped_total 2 'reason="no_route"' "from=\"$DEVICE/sender\"" 'from_route_output="nowhere"'
expect edgehub_messages_dropped_total 1 'reason="ttl_expiry"'
expect edgehub_queue_length 4 'endpoint="iothub"' 'priority="2000000000"'
expect edgehub_queue_length 2 "endpoint=\"$DEVICE/receiver/prio\"" 'priority="0"'
expect edgehub_queue_length 0 "endpoint=\"$DEVICE/receiver/in1\"" 'priority="2000000000"'
expect edgehub_gettwin_total 1 'source="edge_hub"' "id=\"$DEVICE/sender\""
# the summaries: 12 messages of 2 bytes; the 3 routed to in1 handed over; the twin read answered
expect edgehub_message_size_bytes_count 12 "id=\"$DEVICE/sender\"" 'ms_telemetry="True"'
expect edgehub_message_size_bytes_sum 24 "id=\"$DEVICE/sender\""
expect edgehub_message_process_duration_seconds_count 3 "from=\"$DEVICE/sender\"" "to=\"$DEVICE/receiver\"" 'priority="2000000000"'
pd=$(metric edgehub_message_process_duration_seconds_sum "from=\"$DEVICE/sender\"" "to=\"$DEVICE/receiver\"")
gt 3 "$pd" || fail "3 messages handed over at once took $pd s in all"
expect edgehub_gettwin_duration_seconds_count 1 'source="edge_hub"' "id=\"$DEVICE/sender\""
grep -q '^# TYPE edgehub_gettwin_duration_seconds summary$' "$T/scrape.txt" || fail "no summary TYPE for edgehub_gettwin_duration_seconds"
# their quantiles (IoT Edge's objectives: a histogram's and timer's six, a duration's four) lie in
# the observed range: the sizes all 2 (within the sketch's 2 %), the durations between 0 and their
# sum (every one is >= 0), a single twin read's its own duration
within() { awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v != "absent" && v + 0 >= lo - 1e-9 && v + 0 <= hi + 1e-9) }'; }
for q in 0.5 0.9 0.95 0.99 0.999 0.9999; do
  v=$(metric edgehub_message_size_bytes "id=\"$DEVICE/sender\"" "quantile=\"$q\"")
  within "$v" 1.96 2.04 || fail "edgehub_message_size_bytes{quantile=\"$q\"}: $v (12 messages of 2 bytes)"
done
for q in 0.1 0.5 0.9 0.99; do
  v=$(metric edgehub_message_process_duration_seconds "from=\"$DEVICE/sender\"" "to=\"$DEVICE/receiver\"" "quantile=\"$q\"")
  within "$v" 0 "$(awk -v s="$pd" 'BEGIN { print s * 1.02 }')" || fail "edgehub_message_process_duration_seconds{quantile=\"$q\"}: $v (sum $pd)"
done
tw=$(metric edgehub_gettwin_duration_seconds_sum 'source="edge_hub"' "id=\"$DEVICE/sender\"")
v=$(metric edgehub_gettwin_duration_seconds 'source="edge_hub"' "id=\"$DEVICE/sender\"" 'quantile="0.5"')
within "$v" "$(awk -v s="$tw" 'BEGIN { print s * 0.98 }')" "$(awk -v s="$tw" 'BEGIN { print s * 1.02 }')" \
  || fail "edgehub_gettwin_duration_seconds{quantile=\"0.5\"}: $v, the one read took $tw s"
# the send durations: the receiver acknowledged (QoS 1) the 3 handed to it; nothing upstream did
send_l=("from=\"$DEVICE/sender\"" "to=\"$DEVICE/receiver\"" 'from_route_output="out1"' 'to_route_input="in1"')
expect edgehub_message_send_duration_seconds_count 3 "${send_l[@]}"
sd=$(metric edgehub_message_send_duration_seconds_sum "${send_l[@]}")
within "$sd" 0 20 || fail "edgehub_message_send_duration_seconds_sum: $sd"
for q in 0.5 0.9999; do
  v=$(metric edgehub_message_send_duration_seconds "${send_l[@]}" "quantile=\"$q\"")
  within "$v" 0 "$(awk -v s="$sd" 'BEGIN { print s * 1.02 }')" || fail "edgehub_message_send_duration_seconds{quantile=\"$q\"}: $v (sum $sd)"
done
[ "$(metric edgehub_message_send_duration_seconds_count 'to="upstream"')" = absent ] || \
  fail "a send duration upstream, which never acknowledged"
expect edgehub_client_connect_failed_total 1 "id=\"$DEVICE/sender\"" 'reason="not_authenticated"'
expect edgehub_connected_clients 0
offline=$(metric edgehub_offline_count_total "id=\"$DEVICE/\$edgeHub\"")
[ "$offline" != absent ] && [ "$offline" -ge 1 ] || fail "edgehub_offline_count_total: $offline (the upstream never connected)"
expect ledge_hub_upstream_connected 0
expect ledge_hub_up 1
expect ledge_build_info 1
expect ledge_modules 4 'runtime_status="running"'
grep -q '^edgehub_messages_sent_total{.*instance_number="[0-9a-f-]\{36\}"' "$T/scrape.txt" \
  || fail "no instance_number UUID on the hub's samples"
prom_check || fail "promtool rejects the scrape"

log "a real Prometheus scrapes it once and answers a query with the same numbers"
PROM_PORT=$(free_port)
mkdir -p "$T/prom"
cat > "$T/prom/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: ledge
    static_configs:
      - targets: ["127.0.0.1:$METRICS_PORT"]
YAML
prometheus --config.file="$T/prom/prometheus.yml" --storage.tsdb.path="$T/prom/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" > "$T/prom/log" 2>&1 &
PROM_PID=$!
metrics_on_exit() {
  local rc=$?
  kill "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null
  (exit $rc)
  hub_on_exit
}
trap metrics_on_exit EXIT
promq() { curl -sf --max-time 5 "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1"; }
scraped() { promq 'up{job="ledge"}' | jq -e '.data.result[0].value[1] == "1"' >/dev/null; }
wait_for 60 "Prometheus scraped ledge" scraped
health=$(curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/targets" | jq -r '.data.activeTargets[0].health')
assert_eq "$health" up "the target's health (a parse error would make it down)"
q=$(promq "sum(edgehub_messages_received_total{edge_device=\"$DEVICE\"})" | jq -r '.data.result[0].value[1]')
assert_eq "$q" 12 "Prometheus: messages received (3 + 2 + 4 + 2 + 1)"
q=$(promq 'edgehub_queue_length{endpoint="iothub",priority="2000000000"}' | jq -r '.data.result[0].value[1]')
assert_eq "$q" 4 "Prometheus: the upstream queue"
q=$(promq 'edgehub_messages_dropped_total{reason="no_route"}' | jq -r '.data.result[0].value[1]')
assert_eq "$q" 2 "Prometheus: dropped, no route"
n=$(promq 'count({job="ledge"})' | jq -r '.data.result[0].value[1]')
log "Prometheus holds $n series from one scrape"

log "edgeAgent_*: starts and stops asked, a restarted and a killed module, time running correctly"
scrape
for mod in sender receiver late edgeHub; do
  expect edgeAgent_module_start_total 1 "module_name=\"$mod\"" 'module_version=""' 'ms_telemetry="True"'
  expect edgeAgent_module_stop_total 0 "module_name=\"$mod\""
done
run1=$(metric edgeAgent_total_time_running_correctly_seconds 'module_name="sender"')
exp1=$(metric edgeAgent_total_time_expected_running_seconds 'module_name="sender"')
[ "$run1" != absent ] && gt "$run1" 0 || fail "sender's time running correctly: $run1"
gt "$run1" "$exp1" && fail "running correctly ($run1) > expected running ($exp1)"
ledge restart receiver >/dev/null
kill -9 "$(jq -r .pid "$T/state/process/late.json")"
late_restarted() { scrape; [ "$(metric edgeAgent_module_start_total 'module_name="late"')" = 2 ]; }
wait_for 30 "late restarted by its restart policy" late_restarted
wait_for 20 "late running" status_is late running
ledge stop sender >/dev/null
sleep 2
scrape
expect edgeAgent_module_start_total 2 'module_name="receiver"'
expect edgeAgent_module_stop_total 1 'module_name="receiver"'
expect edgeAgent_module_start_total 2 'module_name="late"'
expect edgeAgent_module_stop_total 0 'module_name="late"'
expect edgeAgent_module_stop_total 1 'module_name="sender"'
run2=$(metric edgeAgent_total_time_running_correctly_seconds 'module_name="sender"')
exp2=$(metric edgeAgent_total_time_expected_running_seconds 'module_name="sender"')
gt "$exp2" "$(awk -v a="$exp1" 'BEGIN { print a + 1.5 }')" || fail "sender's expected running time did not grow: $exp1 -> $exp2"
hub2=$(metric edgeAgent_total_time_running_correctly_seconds 'module_name="edgeHub"')
sleep 2
scrape
run3=$(metric edgeAgent_total_time_running_correctly_seconds 'module_name="sender"')
exp3=$(metric edgeAgent_total_time_expected_running_seconds 'module_name="sender"')
hub3=$(metric edgeAgent_total_time_running_correctly_seconds 'module_name="edgeHub"')
assert_eq "$run3" "$run2" "a stopped module's time running correctly stays"
gt "$exp3" "$(awk -v a="$exp2" 'BEGIN { print a + 1.5 }')" || fail "a stopped module's expected time: $exp2 -> $exp3"
gt "$hub3" "$(awk -v a="$hub2" 'BEGIN { print a + 1.5 }')" || fail "edgeHub's time running correctly: $hub2 -> $hub3"
ledge start sender >/dev/null
starts=$(metric edgeAgent_command_latency_seconds_count 'command="start"')
gt "$starts" 5 || fail "edgeAgent_command_latency_seconds_count{command=\"start\"}: $starts (6 starts asked)"
gt "$(metric edgeAgent_command_latency_seconds_sum 'command="start"')" 0 || fail "no start latency"
ssum=$(metric edgeAgent_command_latency_seconds_sum 'command="start"')
for q in 0.1 0.5 0.9 0.99; do
  v=$(metric edgeAgent_command_latency_seconds 'command="start"' "quantile=\"$q\"")
  within "$v" 0 "$(awk -v s="$ssum" 'BEGIN { print s * 1.02 }')" || fail "edgeAgent_command_latency_seconds{command=\"start\",quantile=\"$q\"}: $v (sum $ssum)"
done

log "edgeAgent_*: module resources and the host"
mem=$(metric edgeAgent_used_memory_bytes 'module_name="edgeHub"')
[ "$mem" != absent ] && gt "$mem" 1000000 || fail "edgeHub's memory: $mem"
hub_rss=$(( $(awk '/^VmRSS/ { print $2 }' "/proc/$(hub_pid)/status") * 1024 ))
gt "$mem" $(( hub_rss / 2 )) && gt $(( hub_rss * 2 )) "$mem" || fail "edgeHub's memory $mem, its VmRSS $hub_rss"
gt "$(metric edgeAgent_created_pids_total 'module_name="edgeHub"')" 0 || fail "edgeHub's threads"
gt "$(metric edgeAgent_used_memory_bytes 'module_name="receiver"')" 0 || fail "receiver's memory"
[ "$(metric edgeAgent_used_cpu_percent 'module_name="edgeHub"')" != absent ] || fail "no CPU percent for edgeHub on the second scrape"
expect ledge_module_resources_source 1 'module_name="edgeHub"' 'source="process"'
# the hub's store is on disk: its program's write_bytes (/proc/<pid>/io); a process module shares
# the host's network namespace, whose bytes are not its own
gt "$(metric edgeAgent_total_disk_write_bytes 'module_name="edgeHub"')" 0 || fail "edgeHub's disk writes"
[ "$(metric edgeAgent_total_network_in_bytes 'module_name="edgeHub"')" = absent ] || fail "a process module with the host's network bytes"
host_up=$(metric edgeAgent_host_uptime_seconds)
real_up=$(cut -d' ' -f1 /proc/uptime)
{ gt "$host_up" "$(awk -v a="$real_up" 'BEGIN { print a - 10 }')" && ! gt "$host_up" "$real_up"; } \
  || fail "host uptime $host_up, /proc/uptime $real_up"
ledged_up=$(metric edgeAgent_iotedged_uptime_seconds)
gt "$ledged_up" 1 && gt "$host_up" "$ledged_up" || fail "ledged's uptime $ledged_up (host $host_up)"
size=$(df -B1 --output=size "$T/state" | tail -1 | tr -d ' ')
grep -q "^edgeAgent_total_disk_space_bytes{.*} $size\$" "$T/scrape.txt" \
  || { grep ^edgeAgent_ "$T/scrape.txt" | grep disk >&2; fail "no disk of $size bytes (the state directory's file system)"; }
awk '/^edgeAgent_available_disk_space_bytes/ { if ($NF + 0 <= 0) bad = 1; n++ } END { exit bad || !n }' "$T/scrape.txt" \
  || fail "available disk space"
grep -q '^edgeAgent_metadata{.*edge_agent_version="[^"]\+".*host_information="{.*NumCpus' "$T/scrape.txt" \
  || fail "edgeAgent_metadata"
prom_check || fail "promtool rejects the scrape with the agent's families"

log "the hub down: ledged still answers, ledge_hub_up 0"
ledge stop edgeHub >/dev/null
hub_down() { ! ledge hub status --json >/dev/null 2>&1; } # ledge is a function: not bash -c
wait_for 20 "the hub stopped" hub_down
scrape
expect ledge_hub_up 0
[ "$(metric edgehub_messages_received_total)" = absent ] || fail "hub families without the hub"
prom_check || fail "promtool rejects the scrape without the hub"
expect edgeAgent_module_stop_total 1 'module_name="edgeHub"'
ledge start edgeHub >/dev/null
wait_hub
scrape
expect ledge_hub_up 1
expect edgeAgent_module_start_total 2 'module_name="edgeHub"'

log "ok"
