# iothub-lib.sh — the IoT Hub stand-in (tests/iothub/standin.js) for the system tests, sourced
# after lib.sh (and after upstream-lib.sh when a test uses both): a test PKI (a CA and the
# stand-in's server certificate for 127.0.0.1, localhost and the hub's name), the stand-in on
# ports it picks, `iothub` to call its control API (tests/iothub/README.md), and a cleanup that
# stops it and shows its event log when the test failed.

IOTHUB_DIR="$SRC_ROOT/tests/iothub"
IOTHUB_NAME=${IOTHUB_NAME:-standin-hub.azure-devices.net}
IOTHUB_PKI="$T/iothub-pki"
IOTHUB_CA="$IOTHUB_PKI/ca.pem"
IOTHUB_LOG="$T/iothub.log"
IOTHUB_PID=""

need_iothub() {
  need "command -v node && command -v npm && command -v openssl && command -v curl && command -v jq" \
    "no node, npm, openssl, curl or jq (scripts/deps --test)"
  "$IOTHUB_DIR/install" >&2 || fail "cannot install tests/iothub's npm packages"
}

# iothub_cert NAME CA SUBJECT_CN [SAN] — a P-256 certificate in $IOTHUB_PKI issued by CA
# (a name made by iothub_ca); iothub_ca NAME — a self-signed CA.
iothub_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$IOTHUB_PKI/$1.key" -out "$IOTHUB_PKI/$1.pem" 2>/dev/null || fail "openssl: CA $1"
}
iothub_cert() {
  local ext="$IOTHUB_PKI/$1.ext"
  printf 'basicConstraints=CA:FALSE\n%s' "${4:+subjectAltName=$4
}" > "$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
    -keyout "$IOTHUB_PKI/$1.key" -out "$IOTHUB_PKI/$1.csr" 2>/dev/null || fail "openssl: request $1"
  openssl x509 -req -in "$IOTHUB_PKI/$1.csr" -CA "$IOTHUB_PKI/$2.pem" -CAkey "$IOTHUB_PKI/$2.key" \
    -CAcreateserial -days 2 -out "$IOTHUB_PKI/$1.pem" -extfile "$ext" 2>/dev/null ||
    fail "openssl: certificate $1"
  chmod 0600 "$IOTHUB_PKI/$1.key"
}

# start_iothub [STANDIN ARGS...] — the stand-in on free loopback ports: IOTHUB_MQTTS_PORT (TLS,
# the server certificate chains to IOTHUB_CA), IOTHUB_MQTT_PORT (plain), IOTHUB_CONTROL (the
# control API's URL). Its event log goes to IOTHUB_LOG.
start_iothub() {
  if [ ! -f "$IOTHUB_CA" ]; then
    mkdir -p "$IOTHUB_PKI"
    iothub_ca ca
    iothub_cert server ca "$IOTHUB_NAME" "IP:127.0.0.1,DNS:localhost,DNS:$IOTHUB_NAME"
  fi
  rm -f "$T/iothub.ready"
  node "$IOTHUB_DIR/standin.js" --cert "$IOTHUB_PKI/server.pem" --key "$IOTHUB_PKI/server.key" \
    --hub-name "$IOTHUB_NAME" --ready-file "$T/iothub.ready" "$@" >/dev/null 2>>"$IOTHUB_LOG" &
  IOTHUB_PID=$!
  local i
  for i in $(seq 1 200); do
    [ -s "$T/iothub.ready" ] && break
    kill -0 "$IOTHUB_PID" 2>/dev/null || { tail -20 "$IOTHUB_LOG" >&2; fail "the IoT Hub stand-in exited"; }
    sleep 0.05
  done
  [ -s "$T/iothub.ready" ] || fail "the IoT Hub stand-in did not start"
  IOTHUB_MQTTS_PORT=$(jq -r .mqttsPort "$T/iothub.ready")
  IOTHUB_MQTT_PORT=$(jq -r .mqttPort "$T/iothub.ready")
  IOTHUB_CONTROL="http://127.0.0.1:$(jq -r .controlPort "$T/iothub.ready")"
  export IOTHUB_MQTTS_PORT IOTHUB_MQTT_PORT IOTHUB_CONTROL IOTHUB_CA IOTHUB_PKI IOTHUB_NAME
}

stop_iothub() {
  [ -n "$IOTHUB_PID" ] || return 0
  kill -TERM "$IOTHUB_PID" 2>/dev/null || true
  wait "$IOTHUB_PID" 2>/dev/null || true
  IOTHUB_PID=""
}

# iothub METHOD PATH [JSON] — one control API call; prints the answer's body; fails (exit 22)
# on an HTTP error status, the body still printed.
iothub() {
  local args=(-sS --fail-with-body -X "$1" "$IOTHUB_CONTROL$2")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  curl "${args[@]}"
}

# iothub_events SINCE TYPE DEVICE [MODULE] — the events (JSON lines) of that identity since SINCE.
iothub_events() {
  local q="since=$1&type=$2&deviceId=$(jq -rn --arg v "$3" '$v|@uri')"
  [ $# -ge 4 ] && q+="&moduleId=$(jq -rn --arg v "$4" '$v|@uri')"
  iothub GET "/events?$q" | jq -c '.events[]'
}
iothub_event_seq() { iothub GET "/events?type=none" | jq .next; }

# jq_true [JQ ARGS...] FILTER [FILE] — as upstream-lib.sh's, for tests that do not source it.
declare -f jq_true >/dev/null ||
  jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }

# iothub_edge_device MODULE... — a new device key in KEY; $DEVICE registered in the stand-in as an
# IoT Edge device with it and each MODULE identity with its key, HMAC-SHA256(device key, module
# id) (docs/upstream.md), as the operator registers them; then the hub configuration's upstream
# (UP_PORT, UP_TLS, UP_EXTRA, DEVICE_EXTRA for upstream-lib.sh's write_hub_config) points at the
# stand-in with that key.
iothub_edge_device() {
  KEY=$(head -c 32 /dev/urandom | base64)
  local m auth='{"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "%s"}}}'
  # shellcheck disable=SC2059
  iothub PUT "/devices/$DEVICE" "{\"capabilities\": {\"iotEdge\": true}, $(printf "$auth" "$KEY" | sed 's/^{//; s/}$//')}" >/dev/null ||
    fail "cannot register $DEVICE"
  for m in "$@"; do
    # shellcheck disable=SC2059
    iothub PUT "/devices/$DEVICE/modules/$(jq -rn --arg v "$m" '$v|@uri')" "$(printf "$auth" "$(iothub_module_key "$m")")" >/dev/null ||
      fail "cannot register $m"
  done
  UP_PORT=$IOTHUB_MQTTS_PORT
  UP_TLS=true
  UP_EXTRA="  ca_file: $IOTHUB_CA
  iothub: true"
  DEVICE_EXTRA="  iothub_hostname: $IOTHUB_NAME
  key: $KEY"
}

# iothub_module_key MODULE — that module identity's key, derived from KEY
iothub_module_key() {
  node -e 'const c = require("crypto"); process.stdout.write(c.createHmac("sha256", Buffer.from(process.argv[1], "base64")).update(process.argv[2]).digest("base64"))' "$KEY" "$1"
}

iothub_cleanup() {
  local rc=$1
  set +e # the traps after this one must run whatever fails here
  if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ -f "$IOTHUB_LOG" ]; then
    log "IoT Hub stand-in log tail:"; tail -30 "$IOTHUB_LOG" >&2
    [ -n "${KEEP_LOGS:-}" ] && mkdir -p "$KEEP_LOGS" && cp "$IOTHUB_LOG" "$KEEP_LOGS/"
  fi
  stop_iothub
}

# Run iothub_cleanup before the EXIT trap already set (lib.sh's or upstream-lib.sh's).
iothub_prev_trap=$(trap -p EXIT)
iothub_prev_trap=${iothub_prev_trap#"trap -- '"}
iothub_prev_trap=${iothub_prev_trap%"' EXIT"}
iothub_prev_trap=${iothub_prev_trap//"'\''"/"'"}
# shellcheck disable=SC2064
trap "iothub_rc=\$?; iothub_cleanup \$iothub_rc; (exit \$iothub_rc); $iothub_prev_trap" EXIT
