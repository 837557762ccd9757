# lib.sh — shared helpers of ledge's benchmarks (bench/*/run): the release build, a private dockerd,
# a private ledged, mosquitto on a free port, statistics and the machine's description. Sourced.
#
# Everything a benchmark starts lives under one work directory and is stopped, by pid, on exit.
# The private dockerd keeps these runs away from any other ledge on the machine: a ledged removes
# every ledge-labelled container it did not deploy, so two of them must not share an engine.
set -euo pipefail

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${LEDGE_BENCH_BUILD:-$BENCH_ROOT/build-bench}"
LOADGEN="$BUILD/bench/mqtt-load"
LEDGED_BIN="$BUILD/src/daemon/ledged"
LEDGE_BIN="$BUILD/src/cli/ledge"
HUB_BIN="$BUILD/src/hub/ledge-hub"
ROUNDS="${ROUNDS:-5}"
BENCH_NAME="${BENCH_NAME:-$(basename "$(dirname "$0")")}"
WORK="$(mktemp -d "/tmp/ledge-bench-$BENCH_NAME-XXXXXX")"
RESULTS_DIR="${RESULTS_DIR:-$BUILD/bench/results}"
mkdir -p "$RESULTS_DIR"
RESULTS="$RESULTS_DIR/$BENCH_NAME-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
: > "$RESULTS"

BG_PIDS=()          # processes this script started, stopped in reverse order on exit
LEDGED_PID=""
HUB_PID=""
DOCKERD_PID=""

say() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ------------------------------------------------------------------ build

# Release build of the daemons and the load generator (ninja makes this a no-op when current).
bench_build() {
  "$BENCH_ROOT/bench/build" >&2
}

# ------------------------------------------------------------------ results and statistics

source "$BENCH_ROOT/bench/stats.sh"

# record KEY=VALUE... : one JSON line in $RESULTS; values that parse as JSON stay JSON.
record() {
  local args=() kv k v
  for kv in "$@"; do
    k="${kv%%=*}" v="${kv#*=}"
    if jq -e . >/dev/null 2>&1 <<<"$v"; then args+=(--argjson "$k" "$v"); else args+=(--arg "$k" "$v"); fi
  done
  jq -cn "${args[@]}" '$ARGS.named' >> "$RESULTS"
}

# ------------------------------------------------------------------ the machine

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
anon_kb() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# rss_breakdown PID -> JSON {"mapping": KiB, ...}: resident memory by mapping (a shared library,
# [heap], [stack], anonymous), largest first; shared libraries count in full in VmRSS.
rss_breakdown() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "[anonymous]" : $6; sub(".*/", "", name) }
       /^Rss:/ { kb[name] += $2 }
       END { for (n in kb) if (kb[n] > 0) printf "%s\t%d\n", n, kb[n] }' "/proc/$1/smaps" 2>/dev/null |
    sort -t$'\t' -k2,2nr | jq -Rn '[inputs | split("\t") | {key: .[0], value: (.[1] | tonumber)}] | from_entries'
}

machine() {
  local cpu
  cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  printf '%s, %s cores, %s MiB RAM, Linux %s, load average %s' "$cpu" "$(nproc)" \
    "$(awk '/^MemTotal:/ {printf "%d", $2/1024}' /proc/meminfo)" "$(uname -r)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# fdatasync latency of the disk under DIR (where the hub's store lives): "p50 p99" in ms
fsync_ms() {
  python3 - "$1" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], ".fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
t = []
for _ in range(200):
    os.write(fd, b"x" * 512)
    a = time.perf_counter(); os.fdatasync(fd); t.append(time.perf_counter() - a)
os.close(fd); os.unlink(path); t.sort()
print("%.3f %.3f" % (t[100] * 1e3, t[197] * 1e3))
PY
}

# header: what ran where, printed and recorded as the first result line
header() {
  local rev bt fs
  rev=$(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$BENCH_ROOT" diff --quiet HEAD -- src 2>/dev/null || rev="$rev+local changes"
  bt=$(meson introspect --buildoptions "$BUILD" 2>/dev/null | jq -r '.[] | select(.name == "buildtype") | .value')
  fs=$(fsync_ms "$WORK")
  record case=header date="$(date -u '+%Y-%m-%d %H:%M UTC')" machine="$(machine)" \
    build="$BUILD ($bt)" revision="$rev" rounds="$ROUNDS" command="${BENCH_COMMAND:-$0}" \
    fsync_p50_ms="${fs% *}" fsync_p99_ms="${fs#* }" mosquitto="$(mosquitto -h 2>/dev/null | head -1)" \
    dockerd="$(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?')"
  jq -r 'select(.case == "header") | "date: \(.date)\nmachine: \(.machine)\nbuild: \(.build), ledge \(.revision)\nfdatasync: p50 \(.fsync_p50_ms) ms, p99 \(.fsync_p99_ms) ms\nrounds: \(.rounds)"' "$RESULTS"
  echo "results: $RESULTS"
  local l
  l=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$l" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    echo "WARNING: load average $l on $(nproc) cores: other work is running; absolute numbers are" \
      "noisy (ratios within a round less so)."
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
  local secs="$1" what="$2"; shift 2
  local end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.05
  done
}

# ------------------------------------------------------------------ background processes

alive() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

bg_stop() { # bg_stop PID — SIGTERM, wait, SIGKILL after 10 s
  local pid="$1"
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  [ -n "$LEDGED_PID" ] && ledged_stop
  local i
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do bg_stop "${BG_PIDS[$i]}"; done
  [ -n "$DOCKERD_PID" ] && dockerd_stop
  if [ $rc -ne 0 ] && [ -z "${KEEP_WORK:-}" ]; then
    say "failed; logs:"
    for f in "$WORK"/*.log "$WORK"/*/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -20 "$f" >&2; }; done
  fi
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ mosquitto

# mosquitto_start NAME PORT [TLS_PORT CERT KEY [WS_PORT]] — sets MOSQ_PID. Persistence off,
# TCP_NODELAY on (ledge-hub sets it too: without it mosquitto's small writes wait for delayed ACKs,
# and its numbers are then about the kernel, not the broker). WS_PORT: mosquitto's own MQTT over
# WebSockets listener (Debian's mosquitto has libwebsockets built in) with the same certificate, so
# wss as ledge's hub.websocket_port; libwebsockets binds it on every address whatever the listener
# line says.
mosquitto_start() {
  local name="$1" port="$2" tls_port="${3:-}" cert="${4:-}" key="${5:-}" ws_port="${6:-}"
  local conf="$WORK/$name.conf"
  {
    echo "user $(id -un)"   # as root it would switch to "mosquitto", who cannot read $WORK
    echo "per_listener_settings false"
    echo "allow_anonymous true"
    echo "persistence false"
    echo "set_tcp_nodelay true"
    echo "max_queued_messages ${MOSQ_MAX_QUEUED:-1000}"
    echo "log_dest stderr"
    local lt
    for lt in ${MOSQ_LOG_TYPES:-error warning}; do echo "log_type $lt"; done
    echo "listener $port 127.0.0.1"
    echo "max_connections -1"
    if [ -n "$tls_port" ]; then
      echo "listener $tls_port 127.0.0.1"
      echo "certfile $cert"
      echo "keyfile $key"
    fi
    if [ -n "$ws_port" ]; then
      echo "listener $ws_port 127.0.0.1"
      echo "protocol websockets"
      echo "certfile $cert"
      echo "keyfile $key"
    fi
  } > "$conf"
  mosquitto -c "$conf" >>"$WORK/$name.log" 2>&1 &
  MOSQ_PID=$!
  BG_PIDS+=("$MOSQ_PID")
  wait_until 10 "mosquitto on port $port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
}

# A self-signed server certificate for the TLS listeners outside ledged: tls_cert DIR NAME
tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$2" -addext "subjectAltName=DNS:$2,IP:127.0.0.1" \
    -keyout "$1/server-key.pem" -out "$1/server-cert.pem" >/dev/null 2>&1
}

# ------------------------------------------------------------------ a private dockerd

# dockerd_start — a dockerd of our own (own data root, exec root, socket; no iptables, no default
# bridge) unless LEDGE_BENCH_DOCKER_HOST names one to use. Exports DOCKER_HOST; loads the images
# the benchmarks need from the machine's dockerd, or builds them (scripts/build-images).
DOCKER_DIR="${LEDGE_BENCH_DOCKER_DIR:-/var/tmp/ledge-bench-docker}"
dockerd_start() {
  if [ -n "${LEDGE_BENCH_DOCKER_HOST:-}" ]; then
    export DOCKER_HOST="$LEDGE_BENCH_DOCKER_HOST"
  else
    # exec root: short path (containerd's socket path has a length limit)
    local exec_root="/tmp/lbd-$$"
    mkdir -p "$DOCKER_DIR/root" "$exec_root"
    # one private dockerd per data root at a time
    local owner
    owner=$(cat "$DOCKER_DIR/owner" 2>/dev/null || true)
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
      die "benchmark $owner uses $DOCKER_DIR (LEDGE_BENCH_DOCKER_DIR picks another)"
    fi
    echo $$ > "$DOCKER_DIR/owner"
    DOCKERD_EXEC="$exec_root"
    export DOCKER_HOST="unix://$exec_root/docker.sock"
    dockerd_launch
    # ours alone: leftovers of an interrupted run go
    local old
    old=$(docker ps -aq)
    [ -z "$old" ] || docker rm -f $old >/dev/null
  fi
  # Made here, not by ledged's first deployment: two modules created at once can each create it
  # (a ledged race, see docs/benchmarks.md), and the shell-loop baseline needs it too.
  local nets
  nets=$(docker network ls -q --filter name='^ledge-bench$')
  if [ "$(wc -w <<<"$nets")" != 1 ]; then
    [ -z "$nets" ] || docker network rm $nets >/dev/null
    docker network create ledge-bench >/dev/null
  fi
  if ! docker image inspect ledge-testmod:latest >/dev/null 2>&1; then
    if DOCKER_HOST= docker image inspect ledge-testmod:latest >/dev/null 2>&1; then
      DOCKER_HOST= docker save ledge-testmod:latest | docker load >/dev/null
    else
      "$BENCH_ROOT/scripts/build-images" testmod >&2
    fi
  fi
}

# dockerd_launch — the private dockerd's process, until it answers (dockerd_start's first start,
# and dockerd_restart's). Appends to $WORK/dockerd.log.
dockerd_launch() {
  dockerd --host "unix://$DOCKERD_EXEC/docker.sock" --data-root "$DOCKER_DIR/root" \
    --exec-root "$DOCKERD_EXEC/x" --pidfile "$DOCKERD_EXEC/docker.pid" --bridge none \
    --iptables=false --ip6tables=false --default-address-pool base=10.126.0.0/16,size=24 \
    >>"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  wait_until 60 "the private dockerd" docker info
}

# dockerd_down — stops the private dockerd as a shutdown would, containers left as they are
# (dockerd stops the running ones itself, with their stop timeouts); waits up to 60 s for it.
dockerd_down() {
  [ -n "$DOCKERD_PID" ] || die "dockerd_down: not our dockerd (LEDGE_BENCH_DOCKER_HOST)"
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 600); do alive "$DOCKERD_PID" || break; sleep 0.1; done
  alive "$DOCKERD_PID" && die "the private dockerd did not stop in 60 s"
  wait "$DOCKERD_PID" 2>/dev/null || true
}

dockerd_stop() {
  local ids
  ids=$(docker ps -aq 2>/dev/null || true)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  bg_stop "$DOCKERD_PID"
  DOCKERD_PID=""
  rm -rf "$DOCKERD_EXEC"
}

# ------------------------------------------------------------------ a private ledged

# ledged_start DIR [EXTRA_YAML] — config in DIR/config.yaml, state and run dirs under DIR, the
# engine is $DOCKER_HOST, the hub is this build's ledge-hub on HUB_TLS_PORT/HUB_PLAIN_PORT.
ledged_start() {
  LDIR="$1"
  mkdir -p "$LDIR"
  local hub_program="$HUB_BIN"
  if [ -n "${HUB_WRAPPER:-}" ]; then # e.g. "valgrind --tool=callgrind" (bench/hub/profile)
    hub_program="$LDIR/hub-wrapper"
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$HUB_WRAPPER" "$HUB_BIN" > "$hub_program"
    chmod +x "$hub_program"
  fi
  HUB_TLS_PORT="${HUB_TLS_PORT:-$(free_port)}"
  HUB_PLAIN_PORT="${HUB_PLAIN_PORT:-$(free_port)}"
  HUB_AMQP_PORT="${HUB_AMQP_PORT:-$(free_port)}"
  cat > "$LDIR/config.yaml" <<YAML
state_dir: $LDIR/state
run_dir: $LDIR/run
log_level: ${LEDGE_LOG_LEVEL:-warn}
device:
  id: bench-device
  gateway_hostname: localhost
engine:
  uri: $DOCKER_HOST
  network: ledge-bench
  stop_timeout: 2s
agent:
  hub_program: $hub_program
hub:
  bind: 127.0.0.1
  tls_port: $HUB_TLS_PORT
  plain_port: $HUB_PLAIN_PORT
  websocket_port: ${HUB_WS_PORT:-0}
  amqp_port: $HUB_AMQP_PORT
  max_connections: 5000
  fsync: always
${2:-}
YAML
  "$LEDGED_BIN" --config "$LDIR/config.yaml" >>"$LDIR/ledged.log" 2>&1 &
  LEDGED_PID=$!
  wait_until 20 "ledged" bash -c "'$LEDGE_BIN' -H '$LDIR/run/mgmt.sock' version | grep -q '^ledged [0-9]'"
}

# Stops ledged and then its hub: a ledged that stops leaves its modules running, the hub too.
ledged_stop() {
  local hub
  hub=$(hub_pid || true)
  hub=${hub:-${HUB_PID:-}}
  bg_stop "$LEDGED_PID"
  LEDGED_PID=""
  [ -z "$hub" ] || bg_stop "$hub"
}

ledge() { "$LEDGE_BIN" -H "$LDIR/run/mgmt.sock" "$@"; }

# The hub ledged runs (its system module edgeHub): the child of ledged running ledge-hub.
hub_pid() {
  local p
  for p in $(pgrep -P "$LEDGED_PID" 2>/dev/null); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "$HUB_BIN"; then echo "$p"; return 0; fi
  done
  return 1
}

# A deployment manifest: manifest MODULES_JSON ROUTES_JSON [HUB]
# (HUB=1 adds systemModules.edgeHub, which ledged runs as this build's ledge-hub)
manifest() {
  local hub=""
  [ "${3:-0}" = 1 ] && hub=', "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.4"}}'
  cat <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4"}}$hub},
    "modules": {$1}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {$2},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}
}}
JSON
}

# testmod NAME [PULL_POLICY]: a module of the local image ledge-testmod
testmod() {
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "%s", "settings": {"image": "ledge-testmod:latest"}}' \
    "$1" "${2:-never}"
}

# The modules the hub benchmarks authenticate as, and the route between them.
BENCH_ROUTE='"bench": "FROM /messages/modules/bench-pub/outputs/out1 INTO BrokeredEndpoint(\"/modules/bench-sub/inputs/in1\")"'

# hub_setup ROUTES_JSON — deploy bench-pub, bench-sub and systemModules.edgeHub with the routes on
# the running ledged; sets HUB_PID, TRUST (the CA bundle of the hub's server certificate) and
# LEDGE_ARGS (mqtt-load's publisher/subscriber identities, topic and filter).
hub_setup() {
  manifest "$(testmod bench-pub), $(testmod bench-sub)" "$1" 1 > "$WORK/manifest.json"
  ledge deploy "$WORK/manifest.json" >"$WORK/deploy.log" 2>&1 || { cat "$WORK/deploy.log" >&2; die "deploy failed"; }
  wait_until 20 "the hub" hub_pid
  HUB_PID=$(hub_pid)
  wait_until 60 "the hub's listener" bash -c "exec 3<>/dev/tcp/127.0.0.1/$HUB_PLAIN_PORT"
  local pub sub
  pub=$(ledge token --json --ttl 86400 bench-pub)
  sub=$(ledge token --json --ttl 86400 bench-sub)
  TRUST=$(jq -r .certificates.trustBundle "$LDIR/run/hub/runtime.json")
  LEDGE_ARGS=(--pub-id "$(jq -r .clientId <<<"$pub")" --pub-user "$(jq -r .username <<<"$pub")"
    --pub-pass "$(jq -r .token <<<"$pub")" --sub-id "$(jq -r .clientId <<<"$sub")"
    --sub-user "$(jq -r .username <<<"$sub")" --sub-pass "$(jq -r .token <<<"$sub")"
    --topic 'devices/bench-device/modules/bench-pub/messages/events/%24.on=out1'
    --filter 'devices/bench-device/modules/bench-sub/inputs/#')
  # the same identities over AMQP (mqtt-load --amqp): link addresses instead of topic and filter
  LEDGE_AMQP_ARGS=("${LEDGE_ARGS[@]:0:12}" --amqp
    --topic '/devices/bench-device/modules/bench-pub/messages/events'
    --filter '/devices/bench-device/modules/bench-sub/messages/events')
}

# standalone_hub N [WRAPPER...] — a ledge-hub of its own (no ledged) whose runtime file lists N
# module identities idle-0 … idle-N-1 sharing one key, what ledged would write for N modules, with
# $WORK/server-{cert,key}.pem (tls_cert). Sets SA_PID, SA_PLAIN, SA_TLS, SA_WS, SA_KEY and IDLE_ARGS
# (mqtt-load's idle options for those identities).
standalone_hub() {
  local n="$1"; shift
  local d="$WORK/hub-alone" key
  rm -rf "$d"
  mkdir -p "$d/run/hub" "$d/state"
  key=$(openssl rand -base64 32)
  SA_PLAIN=$(free_port) SA_TLS=$(free_port) SA_WS=$(free_port) SA_AMQP=$(free_port) SA_KEY=$key
  cat > "$d/config.yaml" <<YAML
state_dir: $d/state
run_dir: $d/run
log_level: warn
hub:
  bind: 127.0.0.1
  tls_port: $SA_TLS
  plain_port: $SA_PLAIN
  websocket_port: $SA_WS
  amqp_port: $SA_AMQP
  max_connections: $((n + 100))
YAML
  jq -n --arg key "$key" --argjson n "$n" --arg cert "$WORK/server-cert.pem" --arg k "$WORK/server-key.pem" '{
      deviceId: "bench-device", iothubHostname: "bench-hub.local", gatewayHostname: "localhost",
      certificates: {serverCert: $cert, serverKey: $k, trustBundle: $cert},
      device: {auth: "sas", key: $key},
      edgeHub: {schemaVersion: "1.1", routes: {}},
      twins: {},
      modules: ([range(0; $n)] | map({key: "idle-\(.)", value: {generationId: "bench", key: $key}}) | from_entries)
    }' > "$d/run/hub/runtime.json"
  chmod 600 "$d/run/hub/runtime.json"
  "$@" "$HUB_BIN" --config "$d/config.yaml" >>"$d/hub.log" 2>&1 &
  SA_PID=$!
  BG_PIDS+=("$SA_PID")
  wait_until 60 "the standalone hub" bash -c "exec 3<>/dev/tcp/127.0.0.1/$SA_PLAIN"
  IDLE_ARGS=(--id-fmt 'bench-device/idle-{i}'
    --user-fmt 'bench-hub.local/bench-device/idle-{i}/?api-version=2021-04-12'
    --sas-key "$SA_KEY" --sas-resource-fmt 'bench-hub.local/devices/bench-device/modules/idle-{i}'
    --sub-fmt 'devices/bench-device/modules/idle-{i}/inputs/#')
  # over AMQP (mqtt-load --amqp): the put-token of the same SAS token, the inputs link
  IDLE_AMQP_ARGS=(--amqp --id-fmt 'bench-device/idle-{i}' --sas-key "$SA_KEY"
    --sas-resource-fmt 'bench-hub.local/devices/bench-device/modules/idle-{i}'
    --sub-fmt '/devices/bench-device/modules/idle-{i}/messages/events')
}
