#!/usr/bin/env bash
# ledge-hub with a full disk: hub.store_dir on a 4 MiB tmpfs. Filled by another file, new QoS 1
# messages are refused visibly (the sender's connection is closed, `refused` counts, the log
# says why once) and QoS 0 ones dropped and counted; when the file goes, messages flow again.
# Filled by the hub's own backlog, the same; once the receiver drains it, the space comes back.
# Meanwhile a client retrying in a loop gets one log line a minute (every refusal counted), and a
# persistent subscription that cannot be saved is refused (SUBACK 0x80) until there is room.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/hub-lib.sh"
need "[ \$(id -u) = 0 ]" "mounting a tmpfs needs root"

STORE="$T/hubstore"
mkdir -p "$STORE"
need "mount -t tmpfs -o size=4m,mode=0700 ledge-hub-test '$STORE'" "cannot mount a tmpfs"
HUB_UMOUNT="$STORE"
HUB_EXTRA="  store_dir: $STORE"
hub_config
start_hub_ledged
hub_deploy "$(idle sender), $(idle receiver)" \
  '{"r1": "FROM /messages/modules/sender/outputs/out1 INTO BrokeredEndpoint(\"/modules/receiver/inputs/in1\")"}'
wait_hub

send() { mpub sender -q "${2:-1}" -t "$(events sender '%24.on=out1')" -m "$1"; }
# the receiver: a persistent session, offline while the store fills
msub receiver -c -q 1 -t "$(inputs receiver)" -E >/dev/null
send first || fail "first message"

log "another file fills the disk: messages refused, counted, logged once"
dd if=/dev/zero of="$STORE/filler" bs=64k 2>/dev/null || true
df -k "$STORE" | tail -1 >&2
if send "$(head -c 20000 /dev/zero | tr '\0' x)" 2>/dev/null; then fail "a message was accepted on a full disk"; fi
if send "$(head -c 20000 /dev/zero | tr '\0' y)" 2>/dev/null; then fail "a message was accepted on a full disk"; fi
refused=$(hub_counter refused)
[ "$refused" -ge 2 ] || fail "refused counter: $refused"
send "q0 dropped $(head -c 20000 /dev/zero | tr '\0' z)" 0 || fail "QoS 0 publish"
qos0_counted() { [ "$(hub_counter refused)" -gt "$refused" ]; }
wait_for 5 "the QoS 0 refusal counted" qos0_counted
assert_eq "$(grep -c "message refused: the store is full" "$HUB_LOG")" 1 "refusals logged once"
hub_ready || fail "the hub stopped answering"

log "a client retrying into the full store does not flood the log: one line a minute, all counted"
warn0=$(grep -c "QoS 1 message refused" "$HUB_LOG" || true)
connected_lines() { grep -cE " info +hub: .* connected as $DEVICE/sender" "$HUB_LOG" || true; } # not debug
conn0=$(connected_lines)
full0=$(hub_status | jq '.refusals.storeFull.count // 0')
for i in $(seq 1 15); do
  if send "retry $i $(head -c 20000 /dev/zero | tr '\0' r)" 2>/dev/null; then fail "retry $i accepted"; fi
done
warned=$(( $(grep -c "QoS 1 message refused" "$HUB_LOG" || true) - warn0 ))
connected=$(( $(connected_lines) - conn0 ))
[ "$warned" -le 1 ] || fail "$warned warnings for 15 refused retries"
[ "$connected" -le 1 ] || fail "$connected 'connected' lines for 15 reconnects"
[ "$(hub_status | jq '.refusals.storeFull.count')" -ge $((full0 + 15)) ] \
  || fail "refusals counted: $(hub_status | jq -c .refusals)"

log "a persistent subscription is granted only when it is saved: SUBACK 0x80 on the full disk"
msub sender -c -q 1 -d -t "devices/$DEVICE/modules/sender/inputs/x/#" -E > "$T/subfull" 2>&1 || true
grep -q "Subscribed (mid: [0-9]*): 128$" "$T/subfull" || fail "persistent subscription on a full disk: $(cat "$T/subfull")"
hub_status | jq -e '.refusals.sessionSave.count >= 1' >/dev/null || fail "session save refusal not counted"

log "space returns: messages flow again"
rm -f "$STORE/filler"
send second || fail "a message after space returned"
msub sender -c -q 1 -d -t "devices/$DEVICE/modules/sender/inputs/x/#" -E > "$T/subok" 2>&1 || true
grep -q "Subscribed (mid: [0-9]*): 1$" "$T/subok" || fail "persistent subscription after space returned: $(cat "$T/subok")"
msub receiver -c -q 1 -t "$(inputs receiver)" -W 2 > "$T/got1" 2>/dev/null || true
assert_eq "$(tr '\n' ' ' < "$T/got1")" "first second " "delivered after recovery"

log "the backlog itself fills the disk; the receiver drains it and the space comes back"
sent=0
while send "$(printf 'b%04d' $sent)$(head -c 60000 /dev/zero | tr '\0' b)" 2>/dev/null; do
  sent=$((sent + 1))
  [ $sent -lt 200 ] || fail "4 MiB never filled"
done
log "$sent messages of 60 KB stored before the disk was full"
[ $sent -ge 20 ] || fail "only $sent messages fitted"
msub receiver -c -q 1 -t "$(inputs receiver)" -W 3 > "$T/got2" 2>/dev/null || true
assert_eq "$(grep -c . "$T/got2")" $sent "backlog delivered"
reclaimed() { [ "$(hub_status | jq .store.bytes)" -lt 1000000 ]; }
wait_for 10 "the store reclaiming its segments" reclaimed
send third || fail "a message after the backlog drained"
msub receiver -c -q 1 -t "$(inputs receiver)" -W 2 > "$T/got3" 2>/dev/null || true
assert_eq "$(tr '\n' ' ' < "$T/got3")" "third " "delivered after the drain"
log "PASS"
