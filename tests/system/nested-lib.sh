# nested-lib.sh — helpers for the nested-edge system tests (docs/nested.md), sourced after lib.sh:
# several ledge devices ("layers"), each its own ledged, hub, state and run directories under
# $T/<layer>, optionally inside a network namespace (LAYER_NS_<layer>), their modules native
# programs on the process engine (the sample modules of this build); a private mosquitto as the
# top's upstream with a recording subscriber; a cleanup that stops every layer (its hub must exit
# 0 under the sanitizers) and kills what each left running.

need "command -v mosquitto && command -v mosquitto_sub" \
  "no mosquitto/mosquitto_sub (apt-get install mosquitto mosquitto-clients)"
LAYERS=()
touch "$T/ledged.log" # lib.sh's wait_for shows its tail
declare -A LAYER_PID=() LAYER_TLS=() LAYER_PLAIN=() LAYER_HOST=()
MOSQ_PID=""
SUB_PID=""
SENSOR="$LEDGE_BUILD/modules/tempsensor/tempsensor"
FILTER="$LEDGE_BUILD/modules/tempfilter/tempfilter"

# A TCP port nothing listens on and this test has not picked already (in $T/ports: the callers
# run in subshells).
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 30000 ))
    grep -qx "$p" "$T/ports" 2>/dev/null && continue
    ss -Htlna "sport = :$p" 2>/dev/null | grep -q . && continue
    echo "$p" >> "$T/ports"
    echo "$p"
    return 0
  done
  fail "no free TCP port found"
}

# in_layer L CMD... — CMD in layer L's network namespace (or here without one). The command is
# exec'd: `in_layer L prog &` gives prog's own pid in $! (a function run with & is a subshell).
in_layer() {
  local l="$1"; shift
  local ns_var="LAYER_NS_$l"
  if [ -n "${!ns_var:-}" ]; then exec ip netns exec "${!ns_var}" "$@"; else exec "$@"; fi
}

# lcli L ARGS... — the CLI against layer L's ledged.
lcli() { local l="$1"; shift; "$LEDGE_BIN" -H "$T/$l/run/mgmt.sock" "$@"; }

# layer_config L DEVICE_YAML UPSTREAM_YAML [EXTRA_YAML] — the config of layer L: its device
# section and its upstream section (both indented under their keys), top-level EXTRA_YAML, the
# hub on free ports (TLS on every address, plain on loopback), no docker, no dashboard or metrics
# listeners.
layer_config() {
  local l="$1" device="$2" upstream="$3" extra="${4:-}"
  mkdir -p "$T/$l"
  LAYERS+=("$l")
  LAYER_TLS[$l]=${LAYER_TLS[$l]:-$(free_port)}
  LAYER_PLAIN[$l]=$(free_port)
  cat > "$T/$l/config.yaml" <<YAML
state_dir: $T/$l/state
run_dir: $T/$l/run
log_level: debug
device:
$device
engine:
  stop_timeout: 2s
  uri: unix://$T/no-docker.sock
agent:
  backoff_base: 200ms
  backoff_max: 1s
  max_restarts: 3
  deploy_settle: 1s
hub:
  tls_port: ${LAYER_TLS[$l]}
  plain_port: ${LAYER_PLAIN[$l]}
  websocket_port: 0
  amqp_port: 0
metrics:
  enabled: false
dashboard:
  enabled: false
upstream:
$upstream
$extra
YAML
}

layer_start() {
  local l="$1"
  echo "boot-1" > "$T/$l/boot_id"
  LEDGE_BOOT_ID_PATH="$T/$l/boot_id" in_layer "$l" "$LEDGED" --config "$T/$l/config.yaml" \
    >>"$T/$l/ledged.log" 2>&1 &
  LAYER_PID[$l]=$!
  local end=$(( $(date +%s) + 30 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ -S "$T/$l/run/mgmt.sock" ] && lcli "$l" version 2>/dev/null | grep -q '^ledged [0-9]' && return 0
    kill -0 "${LAYER_PID[$l]}" 2>/dev/null || { tail -30 "$T/$l/ledged.log" >&2; fail "$l: ledged exited at start"; }
    sleep 0.1
  done
  tail -30 "$T/$l/ledged.log" >&2
  fail "$l: ledged did not come up"
}

# The hub of layer L: its process module's pid.
layer_hub_pid() { jq -r '.pid // empty' "$T/$1/state/process/edgeHub.json" 2>/dev/null; }

# Stop layer L: its hub through ledged (it must exit 0), then ledged, then what it left.
layer_stop() {
  local l="$1" rc=0 pid code
  pid=$(layer_hub_pid "$l")
  if [ -n "${LAYER_PID[$l]:-}" ] && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    lcli "$l" stop edgeHub >/dev/null 2>&1 || true
    code=$(lcli "$l" list --json 2>/dev/null | jq -r '.[] | select(.name == "edgeHub") | .exitCode' 2>/dev/null)
    # -1: unknown (a hub a restarted ledged adopted is not its child); its log is checked below
    if [ -n "$code" ] && [ "$code" != 0 ] && [ "$code" != -1 ] && [ "$code" != null ]; then log "$l: the hub exited with $code"; rc=1; fi
  fi
  if [ -n "${LAYER_PID[$l]:-}" ]; then
    kill -TERM "${LAYER_PID[$l]}" 2>/dev/null
    wait "${LAYER_PID[$l]}" 2>/dev/null || { local w=$?; [ $w -eq 66 ] && { log "$l: ledged exited 66 (sanitizer)"; rc=1; }; }
    LAYER_PID[$l]=""
  fi
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "LEDGE_CONFIG=$T/$l/config.yaml" &&
      kill -KILL "${p#/proc/}" 2>/dev/null
  done
  local f
  for f in "$T/$l/ledged.log" "$T/$l/state/process/edgeHub.log"; do
    if [ -f "$f" ] && grep -q "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$f"; then
      log "$l: sanitizer report in $f:"; grep -A30 "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$f" | head -60 >&2
      rc=1
    fi
  done
  return $rc
}

# A process module of this build's samples: proc_module NAME PATH LAYER [EXTRA_ENV_JSON]; it
# reaches its layer's hub on the plain loopback port.
proc_module() {
  printf '"%s": {"type": "process", "status": "running", "restartPolicy": "always", "settings": {"path": "%s"}, "env": {"LEDGE_HUB_HOST": {"value": "127.0.0.1"}, "LEDGE_HUB_PORT": {"value": "%s"}, "LEDGE_HUB_TLS": {"value": "false"}, "RuntimeLogLevel": {"value": "debug"}%s}}' \
    "$1" "$2" "${LAYER_PLAIN[$3]}" "${4:+, $4}"
}

# mosquitto on 127.0.0.1:MOSQ_PORT (in the namespace of layer MOSQ_LAYER, if any), anonymous, and
# a persistent QoS 1 subscriber writing "topic payload" lines to $T/up.log.
MOSQ_PORT=$(free_port)
start_mosquitto() {
  mkdir -p "$T/mosq"
  printf 'listener %s %s\nallow_anonymous true\nuser root\npersistence true\npersistence_location %s/\nautosave_interval 0\nmax_queued_messages 0\n' \
    "$MOSQ_PORT" "${MOSQ_ADDR:-127.0.0.1}" "$T/mosq" > "$T/mosq/mosquitto.conf"
  in_layer "${MOSQ_LAYER:-none}" mosquitto -c "$T/mosq/mosquitto.conf" >>"$T/mosq/broker.log" 2>&1 &
  MOSQ_PID=$!
  sleep 0.3
  kill -0 "$MOSQ_PID" 2>/dev/null || { cat "$T/mosq/broker.log" >&2; fail "mosquitto exited"; }
  in_layer "${MOSQ_LAYER:-none}" mosquitto_sub -h "${MOSQ_ADDR:-127.0.0.1}" -p "$MOSQ_PORT" -i st-nested-sub -c -q 1 -t '#' -v \
    >>"$T/up.log" 2>>"$T/sub.err" &
  SUB_PID=$!
  sleep 0.3
  kill -0 "$SUB_PID" 2>/dev/null || { cat "$T/sub.err" >&2; fail "mosquitto_sub exited"; }
}

jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }
up_count() { local n=0; [ -f "$T/up.log" ] && n=$(grep -c -- "${1:-.}" "$T/up.log" || true); echo "${n:-0}"; }

nested_cleanup() {
  local rc=$? l
  set +e
  for l in "${LAYERS[@]}"; do
    layer_stop "$l" || { [ $rc -eq 0 ] && rc=1; }
  done
  [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null
  [ -n "$MOSQ_PID" ] && kill "$MOSQ_PID" 2>/dev/null
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    for l in "${LAYERS[@]}"; do
      log "$l: ledged log tail:"; tail -25 "$T/$l/ledged.log" >&2
      log "$l: hub log tail:"; tail -25 "$T/$l/state/process/edgeHub.log" >&2 2>/dev/null
    done
  fi
  ${NESTED_EXTRA_CLEANUP:-true}
  (exit $rc)
  cleanup
}
trap nested_cleanup EXIT
