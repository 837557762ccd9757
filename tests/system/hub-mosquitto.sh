#!/usr/bin/env bash
# ledge-hub with unmodified mosquitto clients over TLS and SAS tokens from `ledge token`: routing
# with system and application properties carried through, conditions on the body, authorisation
# refusals counted in `ledge hub status`, QoS 2 and retain answered as IoT Hub does, the plain
# listener on loopback only, a persistent session's backlog, priorities, TTL expiry.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"

ROUTES='{
  "r1": "FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint(\"/modules/receiver/inputs/in1\")",
  "cond": "FROM /messages/modules/sender/outputs/cond WHERE $body.temp > 20 AND level = '"'hi'"' INTO BrokeredEndpoint(\"/modules/receiver/inputs/hot\")",
  "hi": {"route": "FROM /messages/modules/sender/outputs/hi INTO BrokeredEndpoint(\"/modules/receiver/inputs/prio\")", "priority": 0},
  "lo": {"route": "FROM /messages/modules/sender/outputs/lo INTO BrokeredEndpoint(\"/modules/receiver/inputs/prio\")", "priority": 7},
  "short": {"route": "FROM /messages/modules/sender/outputs/short INTO BrokeredEndpoint(\"/modules/receiver/inputs/short\")", "timeToLiveSecs": 1},
  "up": "FROM /messages/modules/sender/outputs/up INTO $upstream"
}'

hub_config
start_hub_ledged
hub_deploy "$(idle sender), $(idle receiver), $(idle other)" "$ROUTES"
wait_hub

subscribed() { # subscribed MODULE: connected with at least one subscription
  hub_status | jq -e --arg c "$DEVICE/$1" '.sessions[] | select(.clientId == $c and .connected and .subscriptions > 0)' >/dev/null
}

log "TLS, SAS tokens: a message routed with its properties"
msub receiver -q 1 -v -t "$(inputs receiver)" -C 1 -W 20 > "$T/m1" &
sub=$!
wait_for 10 "receiver subscribed" subscribed receiver
mpub sender -q 1 -t "$(events sender '%24.on=out1&%24.mid=m-1&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.cmid=spoofed&color=blue%20sky')" \
  -m '{"temp":25}'
wait $sub || fail "receiver got nothing"
line=$(cat "$T/m1")
log "delivered: $line"
topic=${line%% *}
case "$topic" in devices/$DEVICE/modules/receiver/inputs/in1/*) ;; *) fail "topic: $topic";; esac
for want in '%24.mid=m-1' '%24.cid=c-1' '%24.ct=application%2Fjson' '%24.ce=utf-8' \
            "%24.cdid=$DEVICE" '%24.cmid=sender' 'color=blue%20sky'; do
  grep -qF -- "$want" <<< "$topic" || fail "delivered topic lacks $want"
done
! grep -q 'spoofed\|%24.on' <<< "$topic" || fail "sender's spoofed identity or output name passed on: $topic"
assert_eq "${line#* }" '{"temp":25}' "body"

log "a condition on the body and an application property"
msub receiver -q 1 -v -t "$(inputs receiver)" -C 1 -W 20 > "$T/m2" &
sub=$!
wait_for 10 "receiver subscribed" subscribed receiver
bag='%24.on=cond&%24.ct=application%2Fjson&%24.ce=utf-8'
mpub sender -q 1 -t "$(events sender "$bag&level=hi")" -m '{"temp":10}'
mpub sender -q 1 -t "$(events sender "$bag&level=lo")" -m '{"temp":30}'
mpub sender -q 1 -t "$(events sender "$bag&level=hi")" -m '{"temp":30,"n":3}'
wait $sub || fail "receiver got nothing"
grep -q '/inputs/hot/.* {"temp":30,"n":3}$' "$T/m2" || fail "condition: $(cat "$T/m2")"

log "RETAIN: not kept, the receiver sees mqtt-retain=true (IoT Hub's behaviour)"
msub receiver -q 1 -v -t "$(inputs receiver)" -C 1 -W 20 > "$T/m3" &
sub=$!
wait_for 10 "receiver subscribed" subscribed receiver
mpub sender -q 1 -r -t "$(events sender '%24.on=out1')" -m retained
wait $sub || fail "receiver got nothing"
grep -q 'mqtt-retain=true.* retained$' "$T/m3" || fail "retain: $(cat "$T/m3")"
# nothing retained for a later subscriber
msub receiver -q 1 -t "$(inputs receiver)" -C 1 -W 2 > "$T/m3b" 2>/dev/null || true
[ ! -s "$T/m3b" ] || fail "a retained message was delivered again: $(cat "$T/m3b")"

log "QoS 2: a publish closes the connection, a subscription is granted QoS 1"
if mpub sender -q 2 -t "$(events sender '%24.on=out1')" -m q2 2>"$T/q2.err"; then
  fail "QoS 2 publish accepted"
fi
assert_eq "$(hub_counter qos2Refused)" 1 "qos2Refused"
msub receiver -q 2 -d -t "$(inputs receiver)" -E > "$T/q2sub" 2>&1 || true
grep -q "Subscribed (mid: [0-9]*): 1$" "$T/q2sub" || fail "QoS 2 subscription: $(cat "$T/q2sub")"

log "authorisation: refused, logged once, counted"
before=$(hub_counter unauthorized)
msub receiver -q 1 -d -t "devices/$DEVICE/modules/sender/inputs/#" -E > "$T/deny" 2>&1 || true
grep -q "Subscribed (mid: [0-9]*): 128$" "$T/deny" || fail "foreign subscription: $(cat "$T/deny")"
msub receiver -q 1 -d -t "#" -E > "$T/deny" 2>&1 || true
grep -q "Subscribed (mid: [0-9]*): 128$" "$T/deny" || fail "# subscription: $(cat "$T/deny")"
for topic in "$(events receiver '%24.on=out1')" "devices/$DEVICE/modules/receiver/inputs/in1/" \
             "devices/$DEVICE/messages/events/" "anything/else"; do
  if mpub sender -q 1 -t "$topic" -m x 2>/dev/null; then fail "publish to $topic accepted"; fi
done
assert_eq "$(hub_counter unauthorized)" $((before + 6)) "unauthorized counter"
n=$(grep -c "refused: a module may only subscribe" "$HUB_LOG" || true)
assert_eq "$n" 1 "subscription refusals logged once per module"
n=$(grep -c "PUBLISH to .* refused" "$HUB_LOG" || true)
assert_eq "$n" 1 "publish refusals logged once per module"
before=$(hub_counter authFailures)
if mosquitto_pub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$DEVICE/sender" -u "$(user_of sender)" \
     -P "$(token receiver)" -q 1 -t "$(events sender '')" -m x 2>"$T/auth.err"; then
  fail "another module's token accepted"
fi
grep -qi "not authori[sz]ed" "$T/auth.err" || fail "refusal: $(cat "$T/auth.err")"
assert_eq "$(hub_counter authFailures)" $((before + 1)) "authFailures"

log "a token good for longer than hub.max_token_lifetime (1 day) is refused, and it says so"
long=$(ledge token sender --ttl 2592000 --json | jq -r .token)
if mosquitto_pub -h 127.0.0.1 -p "$HUB_TLS_PORT" --cafile "$CA" -i "$DEVICE/sender" -u "$(user_of sender)" \
     -P "$long" -q 1 -t "$(events sender '')" -m x 2>"$T/long.err"; then
  fail "a 30-day token accepted"
fi
grep -qi "not authori[sz]ed" "$T/long.err" || fail "refusal: $(cat "$T/long.err")"
hub_status | jq -r .refusals.auth.last | grep -q "beyond hub.max_token_lifetime (86400 s)" \
  || fail "the refusal's reason: $(hub_status | jq -c .refusals.auth)"

log "plain listener: loopback only, works without TLS"
ss -ltn | grep -q "127.0.0.1:$HUB_PLAIN_PORT " || fail "plain listener not on 127.0.0.1:$HUB_PLAIN_PORT"
! ss -ltn | grep -q "0.0.0.0:$HUB_PLAIN_PORT \|\[::\]:$HUB_PLAIN_PORT " || fail "plain listener beyond loopback"
mosquitto_pub -h 127.0.0.1 -p "$HUB_PLAIN_PORT" -i "$DEVICE/sender" -u "$(user_of sender)" \
  -P "$(token sender)" -q 1 -t "$(events sender '%24.on=nowhere')" -m plain || fail "plain publish"

log "a persistent session gets its backlog on reconnect"
msub receiver -c -q 1 -t "$(inputs receiver)" -E >/dev/null
for i in 1 2 3 4 5; do mpub sender -q 1 -t "$(events sender '%24.on=out1')" -m "b$i"; done
assert_eq "$(endpoint_depth /modules/receiver/inputs/in1)" 5 "backlog depth"
hub_status | jq -e --arg c "$DEVICE/receiver" '.sessions[] | select(.clientId == $c and (.connected | not) and .persistent)' >/dev/null \
  || fail "no disconnected persistent session: $(hub_status | jq -c .sessions)"
# -W, not -C: a client that exits on its count closes with the SUBACK unread, its TCP stack
# resets the connection and the hub never sees its last PUBACKs (they come again later)
msub receiver -c -q 1 -t "$(inputs receiver)" -W 2 > "$T/backlog" 2>/dev/null || true
assert_eq "$(tr '\n' ' ' < "$T/backlog")" "b1 b2 b3 b4 b5 " "backlog order"
assert_eq "$(endpoint_depth /modules/receiver/inputs/in1)" 0 "depth after the backlog"

log "priorities: the highest drains first"
for m in lo:l1 lo:l2 hi:h1 lo:l3 hi:h2 hi:h3; do
  mpub sender -q 1 -t "$(events sender "%24.on=${m%%:*}")" -m "${m#*:}"
done
msub receiver -c -q 1 -t "$(inputs receiver)" -W 2 > "$T/prio" 2>/dev/null || true
assert_eq "$(tr '\n' ' ' < "$T/prio")" "h1 h2 h3 l1 l2 l3 " "priority order"
hub_status | jq -e '.endpoints[] | select(.endpoint == "/modules/receiver/inputs/prio") | [.queues[].priority] | sort == ["0","7"]' >/dev/null \
  || fail "queues per priority: $(hub_status | jq -c .endpoints)"

log "TTL: an expired message is counted and never delivered"
expired0=$(hub_counter expired)
mpub sender -q 1 -t "$(events sender '%24.on=short')" -m stale
mpub sender -q 1 -t "$(events sender '%24.on=out1')" -m fresh
sleep 1.6
msub receiver -c -q 1 -t "$(inputs receiver)" -W 2 > "$T/ttl" 2>/dev/null || true
assert_eq "$(tr '\n' ' ' < "$T/ttl")" "fresh " "after TTL"
assert_eq "$(hub_counter expired)" $((expired0 + 1)) "expired counter"

log "\$upstream: queued durably while no upstream is configured"
mpub sender -q 1 -t "$(events sender '%24.on=up')" -m up1
assert_eq "$(endpoint_depth '$upstream')" 1 "\$upstream depth"

log "ledge hub status"
ledge hub status > "$T/status.txt"
cat "$T/status.txt" >&2
grep -q "^ledge-hub " "$T/status.txt" || fail "status header"
grep -q '\$upstream *1 ' "$T/status.txt" || fail "status endpoint line"
hub_status | jq -e '.connections.open >= 0 and .counters.routed >= 15 and .counters.delivered >= 15
  and (.endpoints | length) >= 5 and .store.bytes > 0 and .store.fsync == "always"' >/dev/null \
  || fail "status fields: $(hub_status | jq -c '{connections, counters, store}')"
log "PASS"
