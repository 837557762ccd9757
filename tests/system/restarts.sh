#!/usr/bin/env bash
# Restarts: a restart of ledged recreates nothing and keeps modules running; a simulated reboot
# (modules stopped, new boot id) starts every module again in startupOrder without recreating
# any; a crashing module backs off and then fails; a module whose HEALTHCHECK fails is restarted
# under on-unhealthy.
source "$(dirname "$0")/lib.sh"
need_engine
need_image ledge-testmod:latest
start_ledged

deploy "$(testmod first running 1), $(testmod second running 2), $(testmod third running 3)" >/dev/null
for m in first second third; do wait_for 20 "$m running" status_is $m running; done
ids=$(for m in first second third; do container_id $m; done)
started=$(container_started first)

log "ledged restart: nothing recreated or restarted"
stop_ledged
status=$(container_status first); assert_eq "$status" running "modules stop with ledged"
start_ledged
sleep 1
for m in first second third; do wait_for 10 "$m running" status_is $m running; done
assert_eq "$(for m in first second third; do container_id $m; done)" "$ids" "containers recreated on restart"
assert_eq "$(container_started first)" "$started" "module restarted by a ledged restart"

log "simulated reboot: modules stopped, new boot id"
stop_ledged
simulate_reboot boot-2 first second third
start_ledged
for m in first second third; do wait_for 20 "$m running" status_is $m running; done
assert_eq "$(for m in first second third; do container_id $m; done)" "$ids" "containers recreated on reboot"
s1=$(container_started first); s2=$(container_started second); s3=$(container_started third)
[[ "$s1" < "$s2" && "$s2" < "$s3" ]] || fail "startupOrder not honoured at boot: $s1 $s2 $s3"
grep -q "first start since boot" "$T/ledged.log" || fail "boot not detected"

log "the same reboot with the stored deployment only (offline): ledged restarts from its database"
stop_ledged
simulate_reboot boot-3 first second third
start_ledged
for m in first second third; do wait_for 20 "$m running" status_is $m running; done

log "crashing module: back-off, then failed"
# --no-rollback: a deployment whose new module crashes at once would be rolled back (atomic-deploy.sh)
deploy "$(testmod first running 1), $(testmod crasher running 2 '"TESTMOD_EXIT_AFTER_MS": {"value": "100"}, "TESTMOD_EXIT_CODE": {"value": "3"}' on-failure)" --no-rollback >/dev/null
saw_backoff=0
end=$(( $(date +%s) + 60 )) # a deadline by the clock ledged logs with, not a count of sleeps
while [ "$(date +%s)" -lt "$end" ]; do
  # status and count from one answer: two reads could straddle a restart
  s=$(ledge list --json | jq -r '.[] | select(.name == "crasher") | "\(.runtimeStatus) \(.restartCount)"')
  [ "${s% *}" = backoff ] && saw_backoff=1
  [ "$s" = "failed 3" ] && break
  sleep 0.1
done
assert_eq "$saw_backoff" 1 "never saw backoff"
assert_eq "$(module_field crasher runtimeStatus)" failed "crasher status"
assert_eq "$(module_field crasher restartCount)" 3 "restart count"
assert_eq "$(module_field crasher exitCode)" 3 "exit code"
module_field crasher statusDescription | grep -q "gave up" || fail "description: $(module_field crasher statusDescription)"
sleep 1.5
assert_eq "$(module_field crasher restartCount)" 3 "restarted after giving up"
# the failure survives a restart of ledged
stop_ledged; start_ledged
sleep 1
assert_eq "$(module_field crasher runtimeStatus)" failed "failed state lost on restart"

log "unhealthy module is restarted (on-unhealthy uses the real HEALTHCHECK)"
deploy "$(testmod first running 1), $(testmod sick running 2 '"TESTMOD_UNHEALTHY_AFTER_MS": {"value": "500"}' on-unhealthy)" --no-rollback >/dev/null
wait_for 30 "sick restarted" sh -c "[ \"\$('$LEDGE_BIN' -H '$T/run/mgmt.sock' list --json | jq '.[] | select(.name==\"sick\") | .restartCount')\" -ge 1 ]"
grep -q "sick: health check failing" "$T/ledged.log" || fail "unhealthy not noticed"
stop_ledged
log "ok"
