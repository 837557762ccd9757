#!/usr/bin/env bash
# An offline reboot for real: ledged stopped, dockerd restarted (its containers stop with it: ledge
# gives them restart policy "no"), a new boot id, the registry the modules were pulled from
# (imagePullPolicy on-create) gone and its address answered by a recorder that serves nothing,
# then ledged started. Every module whose desired status is running runs again from the stored
# deployment, in startupOrder, in the same container (nothing recreated), with no pull tried
# (the recorder saw no connection, the engine no pull or create); a module desired stopped stays
# stopped. The modules have restart policy "never", so only the boot logic can start them again,
# and the first in startupOrder publishes 100 ports, which makes its start take about a second
# longer than the others': without the wait between startupOrder groups the later ones start
# before it. A second reboot has ledged start before dockerd and restart once before dockerd
# answers: the boot is not lost.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/registry-lib.sh"
need_docker
need "command -v python3" "python3 missing (the registry's stand-in recorder)"
need_image ledge-testmod:latest
start_registry plain
REG_PID=${REG_PIDS[-1]}
IMG="$REG_PLAIN_ADDR/boot/testmod:v1"
push_image ledge-testmod:latest plain boot/testmod:v1
docker image inspect "$IMG" >/dev/null 2>&1 && fail "$IMG is on the engine before the deployment pulled it"

# bootmod NAME ORDER [STATUS [CREATE_OPTIONS_JSON]]: pulled on create, restart policy never
bootmod() {
  local opts="${4:-}"
  printf '"%s": {"type": "docker", "status": "%s", "restartPolicy": "never", "startupOrder": %s, "settings": {"image": "%s"%s}, "env": {"TESTMOD_MARK": {"value": "%s"}}}' \
    "$1" "${3:-running}" "$2" "$IMG" "${opts:+, \"createOptions\": $(jq -Rn --arg o "$opts" '$o')}" "$1"
}
# 100 ports on ephemeral loopback host ports: Docker sets up each (NAT rules, a proxy) in start
SLOW_OPTS=$(jq -cn '[range(9001; 9101) | "\(.)/tcp"] |
  {ExposedPorts: (map({key: ., value: {}}) | from_entries),
   HostConfig: {PortBindings: (map({key: ., value: [{HostIp: "127.0.0.1", HostPort: ""}]}) | from_entries)}}')
RUNNING="first second third"
ALL="$RUNNING resting"
MODULES="$(bootmod first 1 running "$SLOW_OPTS"), $(bootmod second 2), $(bootmod third 3), $(bootmod resting 2 stopped)"

stop_dockerd() {
  if [ -d /run/systemd/system ] && systemctl is-active -q docker 2>/dev/null; then
    systemctl stop docker.socket docker
  else
    pkill -TERM -x dockerd || true
    for _ in $(seq 1 150); do pgrep -x dockerd >/dev/null || return 0; sleep 0.2; done
    fail "dockerd did not stop"
  fi
}
# When the engine last started NAME's container, and when the module itself said it started
# (its "testmod starting" line, as the engine's log timestamps it): nanoseconds since the epoch.
ns() { date -d "$1" +%s%N; }
engine_started() { container_started "$1"; }
module_started() { ns "$(docker logs -t "$1" 2>&1 | grep 'testmod starting' | tail -1 | cut -d' ' -f1)"; }
assert_order() { # assert_order WHEN: first, second, third started in that order, by both clocks
  local f s t
  for clock in engine_started module_started; do
    f=$($clock first); s=$($clock second); t=$($clock third)
    [ "$f" -lt "$s" ] && [ "$s" -lt "$t" ] ||
      fail "startupOrder not honoured $1 ($clock): first $f, second $s, third $t"
    log "  $1, $clock: second $(( (s - f) / 1000000 )) ms after first, third $(( (t - s) / 1000000 )) ms after second"
  done
}
all_running() { for m in $RUNNING; do status_is $m running || return 1; done; }
ids() { for m in $ALL; do container_id $m; done; }
# Engine events (a pull, a create) while the engine lives: one watcher per dockerd run.
EVENTS_PID=""
watch_events() {
  docker events --format '{{.Type}} {{.Action}} {{.Actor.ID}}' >>"$T/events" 2>/dev/null &
  EVENTS_PID=$!
}
unwatch_events() { [ -z "$EVENTS_PID" ] || { kill "$EVENTS_PID" 2>/dev/null; wait "$EVENTS_PID" 2>/dev/null || true; EVENTS_PID=""; }; }
# Whatever happened, dockerd runs again for the tests after this one (and cleanup's docker rm).
boot_cleanup() {
  local rc=$?
  set +e
  unwatch_events
  pgrep -x dockerd >/dev/null || "$SRC_ROOT/scripts/start-dockerd" >&2
  (exit $rc); registry_cleanup
}
trap boot_cleanup EXIT

start_ledged
log "first deployment: pulled from the registry, started in startupOrder"
manifest "$MODULES" > "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/out" 2>&1 || fail "deploy failed: $(cat "$T/out")"
wait_for 60 "all running" all_running
status_is resting stopped || fail "resting: $(module_field resting runtimeStatus)"
docker image inspect "$IMG" >/dev/null || fail "$IMG was not pulled"
assert_order "on the first deployment"
IDS=$(ids)

log "reboot 1: ledged stopped, the registry gone, dockerd restarted, a new boot id"
stop_ledged
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true
# The registry's address answers nothing: a recorder notes every connection and closes it.
python3 - "${REG_PLAIN_ADDR##*:}" "$T/registry-connections" <<'PY' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
open(sys.argv[2], "a").close()
while True:
    c, _ = s.accept()
    with open(sys.argv[2], "a") as f:
        f.write("connection at %f\n" % time.time())
    c.close()
PY
REG_PIDS+=($!)
wait_for 10 "the recorder listening" test -f "$T/registry-connections"
curl -s --max-time 2 "http://$REG_PLAIN_ADDR/v2/" >/dev/null && fail "the registry still answers"
: > "$T/registry-connections"
stop_dockerd
"$SRC_ROOT/scripts/start-dockerd"
for m in $RUNNING; do
  assert_eq "$(container_status $m)" exited "$m after the engine's restart"
done
watch_events
sleep 0.5 # the watcher subscribed
echo boot-2 > "$T/boot_id"
mark=$(wc -l < "$T/ledged.log")
t0=$(date +%s%N)
start_ledged
wait_for 30 "all running after the reboot" all_running
log "  all running $(( ($(date +%s%N) - t0) / 1000000 )) ms after ledged was started"
assert_eq "$(ids)" "$IDS" "containers recreated on the reboot"
not_running resting || fail "resting (desired stopped) runs after the reboot"
status_is resting stopped || fail "resting: $(module_field resting runtimeStatus)"
assert_order "on the reboot"
tail -n +"$((mark + 1))" "$T/ledged.log" > "$T/boot.log"
grep -q "first start since boot" "$T/boot.log" || fail "boot not detected"
sleep 1 # events in flight
unwatch_events
grep -E '^image pull|^container (create|destroy) ' "$T/events" && fail "the engine pulled or created: $(cat "$T/events")"
[ "$(grep -c '^container start ' "$T/events")" = 3 ] || fail "engine starts: $(cat "$T/events")"
[ -s "$T/registry-connections" ] && fail "a pull was tried: $(cat "$T/registry-connections")"
grep -Ei "cannot pull|: pull|pulling|local image|: (create|recreate|remove) \(" "$T/boot.log" && fail "ledged pulled or created on the reboot"

log "reboot 2: ledged comes up before dockerd, and restarts once before dockerd answers"
stop_ledged
stop_dockerd
echo boot-3 > "$T/boot_id"
start_ledged
sleep 1
stop_ledged
start_ledged
"$SRC_ROOT/scripts/start-dockerd"
wait_for 60 "all running after the second reboot" all_running
assert_eq "$(ids)" "$IDS" "containers recreated on the second reboot"
not_running resting || fail "resting (desired stopped) runs after the second reboot"
assert_order "on the second reboot"
[ -s "$T/registry-connections" ] && fail "a pull was tried: $(cat "$T/registry-connections")"

log "ledged restarted in the same boot: nothing started again"
started=$(engine_started first)
stop_ledged
docker stop -t 1 third >/dev/null
start_ledged
sleep 2
assert_eq "$(engine_started first)" "$started" "first restarted by a ledged restart"
assert_eq "$(container_status third)" exited "third (never) started again without a reboot"
stop_ledged
docker rmi "$IMG" >/dev/null 2>&1 || true
log "ok"
