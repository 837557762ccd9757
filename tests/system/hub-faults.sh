#!/usr/bin/env bash
# ledge-hub's bad input and limits: malformed and oversized packets (plain and TLS) close that
# connection and nothing else; a flood of idle connections hits hub.max_connections while
# authenticated clients keep working and new ones still get in; a subscription flood hits
# hub.max_subscriptions; every refusal is counted in `ledge hub status`.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"

HUB_EXTRA="  max_connections: 12
  max_subscriptions: 8"
hub_config
start_hub_ledged
hub_deploy "$(idle sender), $(idle receiver)" \
  '{"r1": "FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint(\"/modules/receiver/inputs/in1\")"}'
wait_hub

# One receiver stays connected through everything and must see every message sent around it.
msub receiver -q 1 -t "$(inputs receiver)" > "$T/rx" 2>"$T/rx.err" &
RX=$!
receiver_subscribed() {
  hub_status | jq -e --arg c "$DEVICE/receiver" '.sessions[] | select(.clientId == $c and .subscriptions > 0)' >/dev/null
}
wait_for 10 "receiver subscribed" receiver_subscribed
n_sent=0
send() { mpub sender -q 1 -t "$(events sender '%24.on=out1')" -m "$1" || fail "send $1"; n_sent=$((n_sent + 1)); }
received() { grep -c . "$T/rx" 2>/dev/null || true; }
all_received() { [ "$(received)" -ge "$n_sent" ]; }
send before

sender_conn="$DEVICE/sender,$(user_of sender),$(token sender)"
closes() { # closes DESCRIPTION raw-args...: the hub closes that connection within 3 s
  local what="$1"; shift
  "${RAW[@]}" send --timeout 3000 "$@" > "$T/raw.out" || fail "$what: connection left open ($(cat "$T/raw.out"))"
}

log "malformed input closes only that connection"
closes "HTTP instead of MQTT" --port "$HUB_PLAIN_PORT" --hex "$(printf 'GET / HTTP/1.1\r\n\r\n' | od -An -tx1 | tr -d ' \n')"
closes "5-byte remaining length" --port "$HUB_PLAIN_PORT" --hex 10ffffffff01
closes "CONNECT with protocol level 3" --port "$HUB_PLAIN_PORT" --hex 100c00044d5154540302003c0000
closes "PUBLISH with a wildcard topic (TLS)" --port "$HUB_TLS_PORT" --tls --ca "$CA" --connect "$sender_conn" --hex 30050003612f23
closes "PUBLISH with QoS 3" --port "$HUB_TLS_PORT" --tls --ca "$CA" --connect "$sender_conn" --hex 36050001610001
closes "SUBSCRIBE with no filter" --port "$HUB_PLAIN_PORT" --connect "$sender_conn" --hex 82020001
closes "a second CONNECT" --port "$HUB_PLAIN_PORT" --connect "$sender_conn" --hex 100c00044d5154540402003c0000
closes "PUBREL (no QoS 2 here)" --port "$HUB_PLAIN_PORT" --connect "$sender_conn" --hex 62020001
closes "a bad property bag" --port "$HUB_PLAIN_PORT" --connect "$sender_conn" --pub "$(events sender '=v')"
closes "a publish as another module" --port "$HUB_PLAIN_PORT" --connect "$sender_conn" --pub "$(events receiver '')"
malformed=$(hub_counter malformed)
[ "$malformed" -ge 8 ] || fail "malformed counter: $malformed"
send "after malformed"

log "oversized packets (over 256 KiB + envelope) close the connection before their bytes arrive"
# a PUBLISH announcing 300 KiB, after a valid CONNECT; nothing of the body is sent
closes "announced 300 KiB" --port "$HUB_TLS_PORT" --tls --ca "$CA" --connect "$sender_conn" --hex 3280e012
head -c 300000 /dev/urandom > "$T/big"
if mpub sender -q 1 -t "$(events sender '%24.on=out1')" -f "$T/big" 2>"$T/big.err"; then
  fail "a 300 KB message was accepted"
fi
# a body just over 256 KiB in a packet that fits the envelope
head -c 262145 /dev/zero | tr '\0' a > "$T/over"
if mpub sender -q 1 -t "$(events sender '%24.on=out1')" -f "$T/over" 2>/dev/null; then
  fail "a 256 KiB + 1 message was accepted"
fi
head -c 262144 /dev/zero | tr '\0' b > "$T/max"
mpub sender -q 1 -t "$(events sender '%24.on=nowhere')" -f "$T/max" || fail "a 256 KiB message was refused"
assert_eq "$(hub_counter oversized)" 3 "oversized counter"
send "after oversized"
wait_for 10 "the receiver got every message" all_received
kill -0 $RX 2>/dev/null || fail "the receiver lost its connection: $(cat "$T/rx.err")"

log "connection flood: idle connections beyond hub.max_connections make room for real clients"
"${RAW[@]}" flood --port "$HUB_PLAIN_PORT" --n 40 --hold 4000 > "$T/flood" &
FLOOD=$!
evicted_20() { [ "$(hub_counter connectionsEvicted)" -ge 20 ]; }
wait_for 10 "the flood reaching the limit" evicted_20
# while the flood holds its connections: the receiver keeps receiving, a sender gets in
send "during the flood"
wait_for 10 "the receiver got the message sent during the flood" all_received
wait $FLOOD
log "flood: $(cat "$T/flood")"
jq -e '.opened == 40 and .closedByHub >= 28' "$T/flood" >/dev/null || fail "flood: $(cat "$T/flood")"
open=$(hub_status | jq .connections.open)
[ "$open" -le 12 ] || fail "connections open: $open"
kill -0 $RX 2>/dev/null || fail "the receiver lost its connection in the flood"
grep -q "hub.max_connections (12) reached" "$HUB_LOG" || fail "the limit is not logged"

log "subscription flood: hub.max_subscriptions"
args=()
for i in $(seq 1 20); do args+=(-t "devices/$DEVICE/modules/sender/inputs/i$i"); done
msub sender -q 1 -d -E "${args[@]}" > "$T/subs" 2>&1 || true
grep -q "Subscribed (mid: 1): 1, 1, 1, 1, 1, 1, 1, 1, 128, 128" "$T/subs" || fail "subscriptions: $(grep Subscribed "$T/subs")"
assert_eq "$(hub_counter subscriptionsRefused)" 12 "subscriptionsRefused"
send "after the subscription flood"
wait_for 10 "the receiver got every message" all_received
assert_eq "$(tr '\n' ' ' < "$T/rx")" "before after malformed after oversized during the flood after the subscription flood " "messages"
kill_tree $RX
log "PASS"
