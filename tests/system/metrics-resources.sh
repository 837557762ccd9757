#!/usr/bin/env bash
# Per-module resources on the metrics endpoint (docs/metrics.md "Module resources"): container
# modules of the engine under test (docker; oci and Podman as system-metrics-resources-oci and
# -podman) with known loads — a hog holding 64 MiB under a 256 MiB limit, spinning, writing and
# reading back 1 MiB with fdatasync at each tick — and an idle one; the scrape's edgeAgent_used_memory_bytes,
# _total_memory_bytes, _used_cpu_percent, _created_pids_total, _total_disk_{read,write}_bytes
# and _total_network_{in,out}_bytes checked against the load, against the engine's own view
# (the container's cgroup files; docker stats on dockerd too) and moving with traffic
# sent to the container; read from the cgroup layout this machine has (v2, v1 or hybrid:
# ledge_module_resources_source says which).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/metrics-lib.sh"
need_engine
need "command -v curl && command -v promtool" "curl or promtool missing (scripts/deps --test)"
# the testmod with TESTMOD_ALLOC_KB, TESTMOD_BUSY_MS and TESTMOD_IO_KB (a no-op when it is)
DOCKER_HOST="$MOBY_HOST" "$SRC_ROOT/scripts/build-images" testmod >/dev/null
need_image ledge-testmod:latest

# The layout ledged should find: the memory numbers come from the unified hierarchy only when it
# has the memory controller.
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then layout=v2
elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then layout=hybrid
else layout=v1; fi
case "$layout" in
  v2) grep -qw memory /sys/fs/cgroup/cgroup.controllers && source=cgroup_v2 || source=process ;;
  *) source=cgroup_v1 ;;
esac
log "cgroup layout: $layout (the containers' numbers: $source)"
[ "$source" = process ] && { [ "${CI:-}" = true ] && fail "no memory controller in cgroup v2"; skip "cgroup v2 without the memory controller"; }

METRICS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$METRICS_PORT/metrics"
EXTRA_CONFIG="metrics:
  listen: 127.0.0.1:$METRICS_PORT"
start_ledged

HOG_ENV='"TESTMOD_ALLOC_KB": {"value": "65536"}, "TESTMOD_BUSY_MS": {"value": "200"}, "TESTMOD_IO_KB": {"value": "1024"}, "TESTMOD_PRINT_MS": {"value": "300"}'
hog='"hog": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never",
  "settings": {"image": "ledge-testmod:latest", "createOptions": "{\"HostConfig\": {\"Memory\": 268435456}}"},
  "env": {'"$HOG_ENV"'}}'
deploy "$hog, $(testmod idle running 2)" >/dev/null
for m in hog idle; do wait_for 30 "$m running" status_is $m running; done
allocated() { container_logs hog | grep -q "allocated 65536 KiB"; }
wait_for 20 "hog allocated its memory" allocated

container_ip() {
  if [ "$ENGINE" = oci ]; then jq -r '.ip // empty' "$(oci_record "$1")" | sed 's,/.*,,'
  else docker inspect "$1" | jq -r '[.[0].NetworkSettings.Networks[].IPAddress | select(. != "")][0] // empty'; fi
}
# The container's memory cgroup file, as the engine placed it (v1: the memory controller's
# hierarchy; v2: the unified one), found from its pid as ledged must.
container_pid() {
  if [ "$ENGINE" = oci ]; then "$(oci_runtime)" --root "$OCI_RUNTIME_ROOT" state "$(container_id "$1")" | jq -r .pid
  else docker inspect -f '{{.State.Pid}}' "$1"; fi
}
container_memory() {
  local pid cg
  pid=$(container_pid "$1")
  if [ "$source" = cgroup_v2 ]; then
    cg=$(awk -F: '$1 == "0" { print $3 }' "/proc/$pid/cgroup")
    echo $(( $(cat "/sys/fs/cgroup$cg/memory.current") - $(awk '$1 == "inactive_file" { print $2 }' "/sys/fs/cgroup$cg/memory.stat") ))
  else
    cg=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' "/proc/$pid/cgroup")
    echo $(( $(cat "/sys/fs/cgroup/memory$cg/memory.usage_in_bytes") - $(awk '$1 == "total_inactive_file" { print $2 }' "/sys/fs/cgroup/memory$cg/memory.stat") ))
  fi
}
# docker stats' memory usage in bytes ("64.3MiB / 256MiB")
docker_stats_memory() {
  docker stats --no-stream --format '{{.MemUsage}}' "$1" | awk '{
    v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
    m = (u == "KiB" ? 1024 : u == "MiB" ? 1048576 : u == "GiB" ? 1073741824 : u == "kB" ? 1000 : u == "MB" ? 1e6 : 1)
    printf "%d\n", v * m }'
}
within() { # within A B PERCENT: |A - B| <= PERCENT% of B
  awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= b * p / 100) }'
}

log "the first scrape: every family, from the $source numbers"
scrape
sleep 3 # CPU is the average between two scrapes
scrape
prom_check || fail "promtool rejects the scrape"
for fam in edgeAgent_used_memory_bytes edgeAgent_total_memory_bytes edgeAgent_used_cpu_percent \
           edgeAgent_created_pids_total edgeAgent_total_disk_read_bytes edgeAgent_total_disk_write_bytes \
           edgeAgent_total_network_in_bytes edgeAgent_total_network_out_bytes; do
  grep -q "^# TYPE $fam gauge\$" "$T/scrape.txt" || fail "no TYPE line for $fam"
  grep -q "^# HELP $fam " "$T/scrape.txt" || fail "no HELP line for $fam"
  for m in hog idle; do
    v=$(metric "$fam" "module_name=\"$m\"" 'ms_telemetry="True"')
    [ "$v" != absent ] || { grep "^$fam" "$T/scrape.txt" >&2 || true; fail "$fam has no sample for $m"; }
  done
done
# the label set: IoT Edge's common labels, module_name, ms_telemetry, nothing else
grep '^edgeAgent_used_memory_bytes{' "$T/scrape.txt" | sed 's/^[^{]*{//; s/}.*//' | grep -o '[a-z_]*="' | sed 's/="//' | sort -u | tr '\n' ' ' > "$T/labels"
assert_eq "$(cat "$T/labels")" "edge_device instance_number iothub module_name ms_telemetry " "edgeAgent_used_memory_bytes' labels"
for m in hog idle; do expect ledge_module_resources_source 1 "module_name=\"$m\"" "source=\"$source\""; done

log "memory: the hog's 64 MiB, its 256 MiB limit, against the engine's view"
mem=$(metric edgeAgent_used_memory_bytes 'module_name="hog"')
gt "$mem" $(( 64 << 20 )) && gt $(( 96 << 20 )) "$mem" || fail "hog's memory: $mem (64 MiB held)"
expect edgeAgent_total_memory_bytes 268435456 'module_name="hog"'
idle_mem=$(metric edgeAgent_used_memory_bytes 'module_name="idle"')
gt $(( 16 << 20 )) "$idle_mem" || fail "idle's memory: $idle_mem"
host_mem=$(( $(awk '/^MemTotal/ { print $2 }' /proc/meminfo) * 1024 ))
expect edgeAgent_total_memory_bytes "$host_mem" 'module_name="idle"'
cg_mem=$(container_memory hog)
within "$mem" "$cg_mem" 10 || fail "hog's memory $mem, its cgroup's $cg_mem"
if [ "$ENGINE" = docker ]; then
  ds=$(docker_stats_memory hog)
  within "$mem" "$ds" 10 || fail "hog's memory $mem, docker stats says $ds"
  log "hog: $mem bytes, its cgroup $cg_mem, docker stats $ds"
fi

log "CPU and processes"
cpu=$(metric edgeAgent_used_cpu_percent 'module_name="hog"')
idle_cpu=$(metric edgeAgent_used_cpu_percent 'module_name="idle"')
gt "$cpu" 5 && gt "$cpu" "$idle_cpu" || fail "hog's CPU $cpu% (spinning 200 ms of 500), idle's $idle_cpu%"
gt 5 "$idle_cpu" || fail "idle's CPU: $idle_cpu%"
pids=$(metric edgeAgent_created_pids_total 'module_name="hog"')
gt "$pids" 0 && gt 10 "$pids" || fail "hog's processes: $pids"

log "disk: 1 MiB written and read back at each tick"
w1=$(metric edgeAgent_total_disk_write_bytes 'module_name="hog"')
r1=$(metric edgeAgent_total_disk_read_bytes 'module_name="hog"')
iw1=$(metric edgeAgent_total_disk_write_bytes 'module_name="idle"')
sleep 2
scrape
w2=$(metric edgeAgent_total_disk_write_bytes 'module_name="hog"')
r2=$(metric edgeAgent_total_disk_read_bytes 'module_name="hog"')
iw2=$(metric edgeAgent_total_disk_write_bytes 'module_name="idle"')
gt "$w2" "$(( w1 + (1 << 20) ))" || fail "hog's disk writes: $w1 -> $w2"
gt "$r2" "$r1" || fail "hog's disk reads: $r1 -> $r2"
gt $(( iw1 + (1 << 20) )) "$iw2" || fail "idle's disk writes moved: $iw1 -> $iw2"

log "network: 20 datagrams of 1000 bytes sent to the idle module's address"
ip=$(container_ip idle)
[ -n "$ip" ] || fail "no address for idle"
in1=$(metric edgeAgent_total_network_in_bytes 'module_name="idle"')
out1=$(metric edgeAgent_total_network_out_bytes 'module_name="idle"')
hog_in1=$(metric edgeAgent_total_network_in_bytes 'module_name="hog"')
python3 - "$ip" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):
    s.sendto(b"x" * 1000, (sys.argv[1], 9))  # discard: nothing listens, the kernel answers ICMP
    time.sleep(0.05)
PY
sleep 1
scrape
in2=$(metric edgeAgent_total_network_in_bytes 'module_name="idle"')
out2=$(metric edgeAgent_total_network_out_bytes 'module_name="idle"')
hog_in2=$(metric edgeAgent_total_network_in_bytes 'module_name="hog"')
gt "$in2" $(( in1 + 20000 )) || fail "idle's network in: $in1 -> $in2 (20 x 1000 bytes sent)"
gt "$out2" "$out1" || fail "idle's network out: $out1 -> $out2 (port unreachable answers)"
gt $(( hog_in1 + 20000 )) "$hog_in2" || fail "hog's network in moved with idle's traffic: $hog_in1 -> $hog_in2"
log "idle: in $in1 -> $in2, out $out1 -> $out2"

log "a restarted module: a new container's numbers"
ledge restart hog >/dev/null
wait_for 30 "hog running again" status_is hog running
wait_for 20 "hog allocated its memory again" allocated
hog_fresh() { scrape; gt "$(metric edgeAgent_used_memory_bytes 'module_name="hog"')" $(( 64 << 20 )); }
wait_for 20 "hog's memory in the scrape again" hog_fresh
expect ledge_module_resources_source 1 'module_name="hog"' "source=\"$source\""
ledge stop idle >/dev/null
wait_for 20 "idle stopped" status_is idle stopped
scrape
[ "$(metric edgeAgent_used_memory_bytes 'module_name="idle"')" = absent ] || fail "a stopped module has memory"
prom_check || fail "promtool rejects the last scrape"
log "ok"
