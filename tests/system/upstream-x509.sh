#!/usr/bin/env bash
# The upstream link authenticated by the device's X.509 identity: mosquitto as the upstream
# broker on a TLS listener that requires a client certificate from the test's CA, takes the
# certificate's CN as the user name and lets that user publish only under devices/<device>/ (an
# ACL). The upstream is given as an IP address: its certificate carries it as an IP SAN, and the
# link checks it there. A sensor's readings routed to $upstream arrive; with a device
# certificate from another CA the broker refuses the handshake, nothing arrives, the hub keeps the
# messages and `ledge hub status` says why; with the right certificate back, they drain. A broker
# certificate that does not name the address dialled is refused by the link.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/upstream-lib.sh"
need_docker
need_mosquitto
need "command -v jq && command -v openssl" "no jq or openssl"
need_images ledge-tempsensor:latest

N=20
SUB_PORT=$(free_port)
PKI="$T/pki"
mkdir -p "$PKI"

# ca NAME — a self-signed CA; cert NAME CA SUBJECT_CN [SAN] — a P-256 certificate it issues
ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=$1" -keyout "$PKI/$1.key" -out "$PKI/$1.pem" 2>/dev/null || fail "openssl: CA $1"
}
cert() {
  local ext=()
  if [ -n "${4:-}" ]; then
    printf 'subjectAltName=%s\n' "$4" > "$PKI/$1.ext"
    ext=(-extfile "$PKI/$1.ext")
  fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$3" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null || fail "openssl: request $1"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$2.pem" -CAkey "$PKI/$2.key" -CAcreateserial \
    -days 2 -out "$PKI/$1.pem" "${ext[@]}" 2>/dev/null || fail "openssl: certificate $1"
}
ca upstream-ca
ca rogue-ca
cert broker upstream-ca "upstream broker" "IP:127.0.0.1"
cert broker-dns upstream-ca "upstream broker" "DNS:upstream.example.net"
cert device upstream-ca "$DEVICE"
cert rogue rogue-ca "$DEVICE"
chmod 0600 "$PKI"/*.key

cat > "$T/acl" <<ACL
user $DEVICE
topic write devices/$DEVICE/#
ACL
MOSQ_LISTENERS="per_listener_settings true
listener $UP_PORT 127.0.0.1
cafile $PKI/upstream-ca.pem
certfile $PKI/broker.pem
keyfile $PKI/broker.key
require_certificate true
use_identity_as_username true
acl_file $T/acl
listener $SUB_PORT 127.0.0.1
allow_anonymous true"
UP_TLS=true
UP_EXTRA="  ca_file: $PKI/upstream-ca.pem"
set_identity() { # set_identity CERT_NAME
  DEVICE_EXTRA="  iothub_hostname: x509-hub.example.net
  x509:
    cert_file: $PKI/$1.pem
    key_file: $PKI/$1.key"
  write_hub_config
}
set_identity device
start_mosquitto
start_sub
start_ledged

ROUTES='"up": {"route": "FROM /messages/modules/sensor/outputs/* INTO $upstream"}'
sensor() { # sensor COUNT
  sample_module sensor ledge-tempsensor:latest \
    "\"MessageCount\": {\"value\": \"$1\"}, \"SendInterval\": {\"value\": \"0.05\"}"
}
log "a sensor sends $N readings upstream, the link authenticated by the device certificate"
deploy_hub "$(sensor "$N")" "$ROUTES"
wait_for 60 "$N readings upstream" up_at_least "$N"
grep -q "^devices/$DEVICE/messages/events/" "$T/up.log" || fail "unexpected topics: $(head -3 "$T/up.log")"
hub_status > "$T/status.json"
jq_true '.upstream.connected' "$T/status.json" || fail "upstream status: $(jq -c .upstream "$T/status.json")"
grep -q "New client connected from 127.0.0.1:[0-9]* as $DEVICE .*u'$DEVICE'" "$T/mosq/broker.log" ||
  fail "the broker did not see the certificate's identity: $(grep -i "client" "$T/mosq/broker.log" | tail -3)"

log "a device certificate from a CA the broker does not trust: refused, the readings wait"
stop_ledged
stop_hub
set_identity rogue
start_ledged
before=$(up_count)
deploy_hub "$(sensor $((N + 10)))" "$ROUTES"
link_refused() {
  hub_status > "$T/status.json" 2>/dev/null &&
    jq_true '(.upstream.connected | not) and (.upstream.lastError // "" | test("TLS: the server refused the handshake"))' "$T/status.json"
}
wait_for 30 "the link refused" link_refused
backlog() {
  hub_status | jq_true '[.endpoints[] | select(.endpoint == "$upstream") | .depth] | add >= 5'
}
wait_for 60 "readings queued for \$upstream" backlog
log "upstream status: $(jq -c '.upstream | {connected, lastError}' "$T/status.json")"
[ "$(up_count)" = "$before" ] || fail "readings arrived upstream with the rogue certificate"

log "the right certificate again: the queued readings drain"
stop_ledged
stop_hub
set_identity device
start_ledged
wait_for 60 "the readings upstream" up_at_least $((before + N))
hub_status > "$T/status.json"
jq_true '.upstream.connected' "$T/status.json" || fail "upstream status: $(jq -c .upstream "$T/status.json")"

log "a broker whose certificate names upstream.example.net, not 127.0.0.1: the link refuses it"
stop_mosquitto
MOSQ_LISTENERS=${MOSQ_LISTENERS//broker./broker-dns.}
start_mosquitto
server_refused() {
  hub_status > "$T/status.json" 2>/dev/null &&
    jq_true '(.upstream.connected | not) and (.upstream.lastError // "" | test("certificate is not trusted for \"127.0.0.1\""))' "$T/status.json"
}
wait_for 30 "the broker refused by the link" server_refused
log "upstream status: $(jq -c '.upstream | {connected, lastError}' "$T/status.json")"
stop_ledged
log "ok"
