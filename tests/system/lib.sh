# lib.sh — shared helpers for ledge's system tests: each test gets its own state and run
# directories and config, starts the real ledged (the ASan build under ./scripts/test), talks to
# it with the real CLI, and checks what the real dockerd did. Sourced, not run.
set -euo pipefail

: "${LEDGE_BUILD:?LEDGE_BUILD must point at a meson build directory}"
LEDGED="$LEDGE_BUILD/src/daemon/ledged"
LEDGE_BIN="$LEDGE_BUILD/src/cli/ledge"
SRC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:exitcode=66}"

TEST_NAME="$(basename "$0" .sh)"
T="$(mktemp -d /tmp/ledge-st-XXXXXX)"
LEDGED_PID=""

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# Tests skip only when the machine truly lacks something, and never in CI.
need() {
  local what="$1" why="$2"
  if ! eval "$what" >/dev/null 2>&1; then
    [ "${CI:-}" = "true" ] && fail "CI=true but $why"
    skip "$why"
  fi
}

need_docker() { need "docker info" "no usable dockerd (run scripts/start-dockerd)"; }

write_config() {
  cat > "$T/config.yaml" <<YAML
state_dir: $T/state
run_dir: $T/run
log_level: debug
device:
  id: st-$TEST_NAME
  gateway_hostname: ledge-gw.local
engine:
  stop_timeout: 2s
agent:
  backoff_base: ${BACKOFF_BASE:-200ms}
  backoff_max: ${BACKOFF_MAX:-1s}
  max_restarts: ${MAX_RESTARTS:-3}
${EXTRA_CONFIG:-}
YAML
}

start_ledged() {
  [ -f "$T/config.yaml" ] || write_config
  LEDGE_BOOT_ID_PATH="$T/boot_id" "$LEDGED" --config "$T/config.yaml" >>"$T/ledged.log" 2>&1 &
  LEDGED_PID=$!
  local end=$(( $(date +%s) + 30 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    [ -S "$T/run/mgmt.sock" ] && ledge version 2>/dev/null | grep -q '^ledged [0-9]' && return 0
    kill -0 "$LEDGED_PID" 2>/dev/null || { cat "$T/ledged.log" >&2; fail "ledged exited at start"; }
    sleep 0.1
  done
  cat "$T/ledged.log" >&2
  fail "ledged did not come up"
}

# Stop ledged with SIGTERM and insist that it exits cleanly (ASan reports make it exit 66).
stop_ledged() {
  [ -n "$LEDGED_PID" ] || return 0
  kill -TERM "$LEDGED_PID" 2>/dev/null || true
  local rc=0
  wait "$LEDGED_PID" || rc=$?
  LEDGED_PID=""
  if [ $rc -ne 0 ]; then
    tail -50 "$T/ledged.log" >&2
    fail "ledged exited with $rc"
  fi
}

ledge() { "$LEDGE_BIN" -H "$T/run/mgmt.sock" "$@"; }

api() { # api METHOD PATH [curl args...]
  local m="$1" p="$2"; shift 2
  curl -sS --unix-socket "$T/run/mgmt.sock" -X "$m" "http://localhost$p" "$@"
}

module_field() { # module_field NAME FIELD
  ledge list --json | jq -r --arg n "$1" --arg f "$2" '.[] | select(.name == $n) | .[$f]'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs="$1" what="$2"; shift 2
  local end=$(( $(date +%s%N) / 1000000 + secs * 1000 ))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ $(( $(date +%s%N) / 1000000 )) -ge $end ]; then
      ledge list >&2 || true
      tail -30 "$T/ledged.log" >&2
      fail "timed out after ${secs}s waiting for: $what"
    fi
    sleep 0.1
  done
}

status_is() { [ "$(module_field "$1" runtimeStatus)" = "$2" ]; }

assert_eq() { [ "$1" = "$2" ] || fail "${3:-values differ}: expected '$2', got '$1'"; }

container_id() { docker inspect -f '{{.Id}}' "$1" 2>/dev/null; }

# A manifest with the given modules JSON (the inside of "modules": {...}). Given ROUTES_JSON (an
# object), ledge's hub runs too: the edgeHub system module with those routes, store-and-forward
# settings SAF_JSON (default: a 7200 s time to live) and $edgeHub schemaVersion SCHEMA (1.1).
manifest() { # manifest MODULES_JSON [ROUTES_JSON [SAF_JSON [SCHEMA]]]
  local hub="" routes="{}" saf='{"timeToLiveSecs": 7200}' schema="1.1"
  if [ $# -ge 2 ]; then
    hub=', "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.4"}}'
    routes="$2" saf="${3:-$saf}" schema="${4:-$schema}"
  fi
  cat <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4"}}$hub},
    "modules": {$1}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "$schema", "routes": $routes,
    "storeAndForwardConfiguration": $saf}}
}}
JSON
}

# A testmod module: testmod NAME [STATUS] [ORDER] [EXTRA_ENV_JSON] [RESTART]
testmod() {
  local name="$1" status="${2:-running}" order="${3:-4294967295}" env="${4:-}" rp="${5:-always}"
  printf '"%s": {"type": "docker", "status": "%s", "restartPolicy": "%s", "imagePullPolicy": "never", "startupOrder": %s, "settings": {"image": "ledge-testmod:latest"}, "env": {"TESTMOD_MARK": {"value": "%s"}%s}}' \
    "$name" "$status" "$rp" "$order" "$name" "${env:+, $env}"
}

deploy() { # deploy MODULES_JSON — writes and applies
  manifest "$1" > "$T/deploy.json"
  ledge deploy "$T/deploy.json"
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$LEDGED_PID" ]; then
    kill -TERM "$LEDGED_PID" 2>/dev/null
    wait "$LEDGED_PID" 2>/dev/null
  fi
  # Containers this test's ledged created: its device label, never another instance's.
  local ids
  ids=$(docker ps -aq --filter label=dev.ledge.owner=ledge --filter "label=dev.ledge.device=st-$TEST_NAME" 2>/dev/null)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  pkill -f "$T/" 2>/dev/null
  # process modules outlive ledged by design: the ones this test's ledged started carry its
  # config in their environment (a script that exec'd another program has no $T in its argv)
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "LEDGE_CONFIG=$T/config.yaml" &&
      kill -KILL "${p#/proc/}" 2>/dev/null
  done
  if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ -f "$T/ledged.log" ]; then
    log "ledged log tail:"; tail -40 "$T/ledged.log" >&2
  fi
  if grep -q "ERROR: AddressSanitizer\|runtime error:" "$T/ledged.log" 2>/dev/null; then
    log "sanitizer report in ledged.log"; grep -A20 "AddressSanitizer\|runtime error:" "$T/ledged.log" >&2
    rc=1
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
echo "boot-1" > "$T/boot_id"
