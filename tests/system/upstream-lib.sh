# upstream-lib.sh — helpers for the system tests of the hub's upstream link, twins, methods and
# the sample modules (sourced after lib.sh): a config with the hub and an upstream link on free
# ports, a private Debian mosquitto as the upstream broker (with a persistent subscriber session
# recording what arrives), manifests with edgeHub and routes, and the hub process itself.
# Set DOCKER_HOST=unix:///... to run against a private dockerd.

ENGINE_URI="${DOCKER_HOST:-unix:///var/run/docker.sock}"
DEVICE="st-$TEST_NAME"   # lib.sh's cleanup removes the containers labelled with it
MOSQ_PID=""
SUB_PID=""

need_mosquitto() {
  need "command -v mosquitto && command -v mosquitto_sub" \
    "no mosquitto/mosquitto_sub (apt-get install mosquitto mosquitto-clients)"
}

need_images() { # need_images IMAGE... — builds the sample images when missing (in dockerd)
  local img missing=0
  for img in "$@"; do moby image inspect "$img" >/dev/null 2>&1 || missing=1; done
  [ $missing = 0 ] || DOCKER_HOST="$MOBY_HOST" "$SRC_ROOT/scripts/build-images" samples testmod >&2 ||
    fail "cannot build the sample images"
  [ "$ENGINE" = docker ] || for img in "$@"; do need_image "$img"; done # into the test's engine
}

free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 30000 ))
    ss -Htln "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
  done
  fail "no free TCP port found"
}

HUB_PORT=${HUB_PORT:-$(free_port)}
DEFAULT_UP_TOPIC='devices/{device}/messages/events/{properties}'
[ -n "${UP_TOPIC:-}" ] || UP_TOPIC=$DEFAULT_UP_TOPIC
HUB_PLAIN_PORT=$(free_port)
UP_PORT=$(free_port)

# The test's config: ledge's hub on HUB_PORT (TLS) and HUB_PLAIN_PORT (loopback), upstream link
# to the local mosquitto on UP_PORT, topic template UP_TOPIC.
write_hub_config() {
  cat > "$T/config.yaml" <<YAML
state_dir: $T/state
run_dir: $T/run
log_level: debug
device:
  id: $DEVICE
  gateway_hostname: ledge-gw.local
${DEVICE_EXTRA:-}
engine:
  stop_timeout: 2s
$(if [ "$ENGINE" = docker ]; then echo "  uri: $ENGINE_URI"; else engine_config; fi)
agent:
  backoff_base: 200ms
  backoff_max: 1s
  max_restarts: 0
hub:
  tls_port: $HUB_PORT
  plain_port: $HUB_PLAIN_PORT
  websocket_port: 0
  amqp_port: 0
  fsync: ${HUB_FSYNC:-always}
upstream:
  enabled: true
  host: 127.0.0.1
  port: $UP_PORT
  tls: ${UP_TLS:-false}
  topic: "$UP_TOPIC"
${UP_EXTRA:-}
${EXTRA_CONFIG:-}
YAML
  # ledged creates this network on first use; creating it here avoids its two parallel
  # container creations racing to create it twice.
  [ "$ENGINE" = oci ] || docker network inspect ledge >/dev/null 2>&1 || docker network create ledge >/dev/null
}

# MOSQ_LISTENERS replaces the one anonymous plain listener on UP_PORT (e.g. a TLS listener that
# requires client certificates, and a plain one on SUB_PORT for the recording subscriber).
start_mosquitto() {
  mkdir -p "$T/mosq"
  cat > "$T/mosq/mosquitto.conf" <<CONF
${MOSQ_LISTENERS:-listener $UP_PORT 127.0.0.1
allow_anonymous true}
user root
persistence true
persistence_location $T/mosq/
autosave_interval 0
max_queued_messages 0
max_inflight_messages 20
CONF
  mosquitto -c "$T/mosq/mosquitto.conf" >>"$T/mosq/broker.log" 2>&1 &
  MOSQ_PID=$!
  local i
  for i in $(seq 1 100); do
    ss -Htln "sport = :$UP_PORT" | grep -q . && return 0
    kill -0 "$MOSQ_PID" 2>/dev/null || { cat "$T/mosq/broker.log" >&2; fail "mosquitto exited"; }
    sleep 0.05
  done
  fail "mosquitto did not listen on $UP_PORT"
}

stop_mosquitto() {
  [ -n "$MOSQ_PID" ] || return 0
  kill -TERM "$MOSQ_PID" 2>/dev/null || true
  wait "$MOSQ_PID" 2>/dev/null || true
  MOSQ_PID=""
}

# A persistent QoS 1 subscription to everything, appending "topic payload" lines to $T/up.log.
# Messages published while it is away wait in the broker (and across broker restarts).
start_sub() {
  mosquitto_sub -h 127.0.0.1 -p "${SUB_PORT:-$UP_PORT}" -i st-upstream-sub -c -q 1 -t '#' -v \
    >>"$T/up.log" 2>>"$T/sub.err" &
  SUB_PID=$!
  sleep 0.3
  kill -0 "$SUB_PID" 2>/dev/null || { cat "$T/sub.err" >&2; fail "mosquitto_sub exited"; }
}

stop_sub() {
  [ -n "$SUB_PID" ] || return 0
  kill -TERM "$SUB_PID" 2>/dev/null || true
  wait "$SUB_PID" 2>/dev/null || true
  SUB_PID=""
}

# jq_true [JQ ARGS...] FILTER [FILE] — the filter's last output is true. jq 1.6's -e exits 0 on
# empty input, so it cannot tell a failed command's silence from success; this can.
jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }
twin_is() { ledge twin get "$1" 2>/dev/null | jq_true "$2"; }       # twin_is MODULE FILTER
invoke_is() { ledge invoke "$1" "$2" --timeout 5 2>/dev/null | jq_true "$3"; } # MODULE METHOD FILTER

up_count() { [ -f "$T/up.log" ] && wc -l < "$T/up.log" || echo 0; }
up_at_least() { [ "$(up_count)" -ge "$1" ]; }

# The payloads that arrived upstream (one JSON document per line).
up_bodies() { [ -f "$T/up.log" ] && cut -d' ' -f2- "$T/up.log"; }

hub_pid() {
  local rec
  rec=$(find "$T/state" -name edgeHub.json -print -quit 2>/dev/null)
  [ -n "$rec" ] && jq -r '.pid // empty' "$rec"
}

hub_status() { ledge hub status --json 2>/dev/null || api GET /hub/status; }

# hub_manifest MODULES_JSON ROUTES_JSON — with the edgeHub system module (ledge-hub); ROUTES_JSON
# is the inside of "routes": {...}.
hub_manifest() { manifest "$1" "{$2}" "{\"timeToLiveSecs\": ${TTL_SECS:-7200}}"; }

# sample_module NAME IMAGE [EXTRA_ENV_JSON] — a sample module that reaches the hub on HUB_PORT.
sample_module() {
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "settings": {"image": "%s"}, "env": {"LEDGE_HUB_PORT": {"value": "%s"}, "RuntimeLogLevel": {"value": "info"}%s}}' \
    "$1" "$2" "$HUB_PORT" "${3:+, $3}"
}

deploy_hub() { # deploy_hub MODULES_JSON ROUTES_JSON
  hub_manifest "$1" "$2" > "$T/deploy.json"
  ledge deploy "$T/deploy.json" > "$T/deploy.out" 2>&1 || { cat "$T/deploy.out" >&2; fail "deploy failed"; }
}

hub_running() { [ -n "$(hub_pid)" ] && kill -0 "$(hub_pid)" 2>/dev/null && ledge hub status >/dev/null; }

# ledged leaves modules running when it stops; the hub is ours to stop: SIGTERM, and wait up to
# 5 s for it to exit.
stop_hub() {
  local pid
  pid=$(hub_pid)
  [ -n "$pid" ] || return 0
  kill -TERM "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

upstream_cleanup() {
  local rc=$1
  set +e
  if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
    local f c
    f=$(find "$T/state" -name edgeHub.log -print -quit 2>/dev/null)
    [ -n "$f" ] && { log "hub log tail:"; tail -25 "$f" >&2; }
    for c in $(docker ps -aq --filter label=dev.ledge.owner=ledge --filter "label=dev.ledge.device=$DEVICE" 2>/dev/null); do
      log "$(docker inspect -f '{{.Name}}' "$c") log tail:"; docker logs --tail 8 "$c" 2>&1 | sed 's/^/  /' >&2
    done
    if [ "$ENGINE" = oci ]; then
      for f in "$T"/state/oci/containers/*/record.json; do
        [ -f "$f" ] || continue
        c=$(jq -r .name "$f")
        log "$c log tail:"; container_logs "$c" | tail -8 | sed 's/^/  /' >&2
      done
    fi
    [ -f "$T/mosq/broker.log" ] && { log "mosquitto log tail:"; tail -5 "$T/mosq/broker.log" >&2; }
    if [ -n "${KEEP_LOGS:-}" ]; then
      mkdir -p "$KEEP_LOGS" && cp -r "$T"/*.log "$T/state/process" "$T/mosq" "$KEEP_LOGS/" 2>/dev/null
      for c in $(docker ps -aq --filter label=dev.ledge.owner=ledge --filter "label=dev.ledge.device=$DEVICE" 2>/dev/null); do
        docker logs "$c" > "$KEEP_LOGS/$(docker inspect -f '{{.Name}}' "$c" | tr -d /).log" 2>&1
      done
      log "logs kept in $KEEP_LOGS"
    fi
  fi
  stop_sub
  stop_mosquitto
  local pid
  pid=$(hub_pid)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # ledged first: it would restart the hub
    [ -n "$LEDGED_PID" ] && kill -TERM "$LEDGED_PID" 2>/dev/null && wait "$LEDGED_PID" 2>/dev/null
    LEDGED_PID=""
    stop_hub 2>/dev/null
  fi
  local hublog
  hublog=$(find "$T/state" -name edgeHub.log -print -quit 2>/dev/null)
  if [ -n "$hublog" ] && grep -q "ERROR: AddressSanitizer\|runtime error:" "$hublog"; then
    log "sanitizer report in the hub's log:"; grep -A30 "AddressSanitizer\|runtime error:" "$hublog" >&2
    return 1
  fi
  return 0
}
trap 'rc=$?; upstream_cleanup $rc || rc=1; (exit $rc); cleanup' EXIT
