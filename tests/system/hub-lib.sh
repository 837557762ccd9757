# hub-lib.sh — helpers for the ledge-hub system tests (tests/system/hub-*.sh), sourced after
# lib.sh: free ports, a config with the hub's ports, manifests with systemModules.edgeHub and idle
# process modules (module identities without containers), SAS tokens from `ledge token`,
# mosquitto clients over TLS, `ledge hub status` fields, and a cleanup that stops the hub and the
# modules (process modules outlive ledged) and fails on a sanitizer report in the hub's log.

# A TCP port nothing listens on (the kernel's pick; another process could take it before the hub
# binds, which start_hub_ledged detects).
RAW=(node "$SRC_ROOT/tests/node/hub-raw.js")
free_port() { "${RAW[@]}" port; }

need "command -v node" "node missing (scripts/deps --test)"
HUB_TLS_PORT=${HUB_TLS_PORT:-$(free_port)}
HUB_PLAIN_PORT=$(free_port)
while [ "$HUB_PLAIN_PORT" = "$HUB_TLS_PORT" ]; do HUB_PLAIN_PORT=$(free_port); done
# MQTT over WebSockets (hub.websocket_port; 443 by default, which tests leave alone).
HUB_WS_PORT=${HUB_WS_PORT:-$(free_port)}
while [ "$HUB_WS_PORT" = "$HUB_TLS_PORT" ] || [ "$HUB_WS_PORT" = "$HUB_PLAIN_PORT" ]; do HUB_WS_PORT=$(free_port); done
# AMQP (hub.amqp_port; 5671 by default, which only hub-amqp.sh takes: the SDK connects to it only).
HUB_AMQP_PORT=${HUB_AMQP_PORT:-$(free_port)}
while [ "$HUB_AMQP_PORT" = "$HUB_TLS_PORT" ] || [ "$HUB_AMQP_PORT" = "$HUB_PLAIN_PORT" ] ||
  [ "$HUB_AMQP_PORT" = "$HUB_WS_PORT" ]; do HUB_AMQP_PORT=$(free_port); done
CA="$T/state/certs/trust-bundle.pem"
HUB_LOG="$T/state/process/edgeHub.log"
DEVICE="st-$TEST_NAME" # lib.sh labels and cleans up containers by it

# The config (lib.sh's, plus the hub's ports). HUB_EXTRA adds keys under hub:, TOP_EXTRA
# top-level sections. The engine points at no socket unless a test needs docker (USE_DOCKER=1):
# ledged then leaves alone the containers of anything else running on this machine. With
# LEDGE_ENGINE=oci or podman the engine is lib.sh's engine_config.
hub_config() {
  local uri=""
  [ "${USE_DOCKER:-0}" = 1 ] || uri="uri: unix://$T/no-docker.sock"
  [ "$ENGINE" = docker ] || uri=$(engine_config | sed '1s/^  //')
  cat > "$T/config.yaml" <<YAML
state_dir: $T/state
run_dir: $T/run
log_level: debug
device:
  id: $DEVICE
  gateway_hostname: ledge-gw.local
engine:
  stop_timeout: 2s
  $uri
agent:
  backoff_base: ${BACKOFF_BASE:-200ms}
  backoff_max: ${BACKOFF_MAX:-1s}
  max_restarts: ${MAX_RESTARTS:-3}
hub:
  tls_port: $HUB_TLS_PORT
  plain_port: $HUB_PLAIN_PORT
  websocket_port: $HUB_WS_PORT
  amqp_port: $HUB_AMQP_PORT
${HUB_EXTRA:-}
${TOP_EXTRA:-}
YAML
}

# An idle process module: a copy of sleep under $T, so that cleanup finds it by its path.
idle() { # idle NAME
  [ -x "$T/bin/idle" ] || { mkdir -p "$T/bin"; cp "$(command -v sleep)" "$T/bin/idle"; }
  printf '"%s": {"type": "process", "status": "running", "restartPolicy": "always", "settings": {"path": "%s", "args": ["infinity"]}}' "$1" "$T/bin/idle"
}

# hub_manifest MODULES_JSON ROUTES_JSON [STORE_AND_FORWARD_JSON] [SCHEMA] (lib.sh's manifest)
hub_manifest() { manifest "$1" "$2" "${3:-}" "${4:-}"; }

hub_deploy() { # hub_deploy MODULES_JSON ROUTES_JSON [SAF_JSON] [SCHEMA]
  hub_manifest "$@" > "$T/deploy.json"
  ledge deploy "$T/deploy.json" >/dev/null
}

hub_pid() { jq -r '.pid // empty' "$T/state/process/edgeHub.json" 2>/dev/null; }

hub_ready() { ledge hub status --json >/dev/null 2>&1; }

wait_hub() { wait_for "${1:-20}" "the hub answering" hub_ready; }

# Start ledged with the hub config, deploy, and wait for the hub.
start_hub_ledged() {
  [ -f "$T/config.yaml" ] || hub_config
  start_ledged
}

hub_status() { ledge hub status --json; }

# sdk_burst_across_restart MODULE INPUT PREFIX — the SDK module MODULE (tests/node/sdk-module.js,
# its events in `docker logs`) sends 40 JSON messages (method "send", output "burst") which a route
# with a WHERE on $body brings back to its own input INPUT; after 10 are acknowledged the hub is
# killed with -9 and ledged starts it again. The SDK reconnects on its own and goes on; every
# message it was told was acknowledged arrives at INPUT (a message may arrive twice: at least
# once).
sdk_burst_across_restart() {
  local mod="$1" input="$2" prefix="$3" pid n=40
  ev() { container_logs "$mod" 2>/dev/null | grep '^{' | jq -c --slurp "$1"; }
  burst_acked() { [ "$(ev "map(select(.event == \"burst\" and .prefix == \"$prefix\" and .ok)) | length")" -ge "$1" ]; }
  burst_done() { [ "$(ev "map(select(.event == \"burstDone\" and .prefix == \"$prefix\")) | length")" -ge 1 ]; }
  ledge invoke "$mod" send --payload "{\"n\": $n, \"prefix\": \"$prefix\", \"output\": \"burst\", \"intervalMs\": 100}" --timeout 10 \
    > "$T/burst-$prefix.out" || fail "invoke send: $(cat "$T/burst-$prefix.out")"
  wait_for 60 "10 of $prefix acknowledged" burst_acked 10
  pid=$(hub_pid)
  kill -9 "$pid"
  log "kill -9 of the hub (pid $pid) during $mod's burst $prefix"
  restarted() { local p; p=$(hub_pid); [ -n "$p" ] && [ "$p" != "$pid" ] && hub_ready; }
  wait_for 60 "the hub restarted" restarted
  wait_for 180 "$mod's burst $prefix done" burst_done
  ev "map(select(.event == \"burstDone\" and .prefix == \"$prefix\"))[0]" > "$T/burst-$prefix.done"
  jq_true ".acked == $n and .failed == 0" "$T/burst-$prefix.done" ||
    fail "$mod's burst across the restart: $(cat "$T/burst-$prefix.done")"
  all_back() {
    ev "[.[] | select(.event == \"input\" and .input == \"$input\" and .props.burst == \"$prefix\") | (.body | fromjson | .seq)] | unique | length == $n" | grep -qx true
  }
  wait_for 60 "all $n of $prefix back at $mod's input $input" all_back
}
hub_counter() { hub_status | jq -r ".counters.$1"; }
endpoint_depth() { hub_status | jq -r --arg e "$1" '[.endpoints[] | select(.endpoint == $e) | .depth] | add // 0'; }

token() { # a SAS token for module $1 from `ledge token`, minted once per test
  [ -s "$T/token.$1" ] || ledge token "$1" --json | jq -r .token > "$T/token.$1"
  cat "$T/token.$1"
}
user_of() { echo "$DEVICE.local.ledge/$DEVICE/$1/?api-version=2021-04-12"; }

# mosquitto over TLS as module M: mpub M [mosquitto_pub args...], msub M [mosquitto_sub args...]
mpub() {
  local m="$1"; shift
  mosquitto_pub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$DEVICE/$m" -u "$(user_of "$m")" \
    -P "$(token "$m")" "$@"
}
msub() {
  local m="$1"; shift
  mosquitto_sub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$DEVICE/$m" -u "$(user_of "$m")" \
    -P "$(token "$m")" "$@"
}
events() { echo "devices/$DEVICE/modules/$1/messages/events/$2"; } # events MODULE BAG
inputs() { echo "devices/$DEVICE/modules/$1/inputs/#"; }

# Kill a background job and the client it runs (a function run with & is a subshell).
kill_tree() { pkill -P "$1" 2>/dev/null || true; kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# PIDs of the processes ledged started for this test (they carry LEDGE_CONFIG=$T/config.yaml).
test_pids() {
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "LEDGE_CONFIG=$T/config.yaml" && echo "${p#/proc/}"
  done
  return 0
}

# Stop the hub with SIGTERM (it must exit 0: ASan reports leaks through its exit code) and the
# modules; report sanitizer findings in the hub's log.
hub_cleanup() {
  local rc=0 pid
  pid=$(hub_pid)
  if [ -n "$pid" ] && [ -n "$LEDGED_PID" ] && kill -0 "$pid" 2>/dev/null; then
    ledge stop edgeHub >/dev/null 2>&1 || true
    local code
    code=$(module_field edgeHub exitCode 2>/dev/null)
    if [ -n "$code" ] && [ "$code" != 0 ] && [ "$code" != null ]; then
      log "the hub exited with $code when stopped"; rc=1
    fi
  fi
  # ledged first (it would restart the modules), then what it leaves running
  if [ -n "$LEDGED_PID" ]; then
    kill -TERM "$LEDGED_PID" 2>/dev/null
    wait "$LEDGED_PID" 2>/dev/null
    LEDGED_PID=""
  fi
  for pid in $(test_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  if [ -f "$HUB_LOG" ] && grep -q "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$HUB_LOG"; then
    log "sanitizer report in the hub's log:"
    grep -A30 "ERROR: AddressSanitizer\|runtime error:\|ERROR: LeakSanitizer" "$HUB_LOG" | head -80 >&2
    rc=1
  fi
  return $rc
}

hub_on_exit() {
  local rc=$?
  set +e
  hub_cleanup || { [ $rc -eq 0 ] && rc=1; }
  # a file system a test mounted (after the hub that had files open on it is gone)
  if [ -n "${HUB_UMOUNT:-}" ] && mountpoint -q "$HUB_UMOUNT"; then umount "$HUB_UMOUNT" || umount -l "$HUB_UMOUNT"; fi
  if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ -f "$HUB_LOG" ]; then
    log "hub log tail:"; tail -30 "$HUB_LOG" >&2
  fi
  (exit $rc)
  cleanup
}
trap hub_on_exit EXIT

need "command -v mosquitto_pub && command -v mosquitto_sub" "mosquitto clients missing (apt-get install mosquitto-clients)"
