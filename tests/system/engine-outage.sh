#!/usr/bin/env bash
# The container engine goes away and comes back: ledged stays up, reports modules as unknown,
# and brings them back to running when dockerd returns.
source "$(dirname "$0")/lib.sh"
need_docker
docker image inspect ledge-testmod:latest >/dev/null 2>&1 || "$SRC_ROOT/scripts/build-images"
start_ledged
deploy "$(testmod steady running 1)" >/dev/null
wait_for 20 "steady running" status_is steady running

stop_dockerd() {
  if [ -d /run/systemd/system ] && systemctl is-active -q docker 2>/dev/null; then
    systemctl stop docker.socket docker
  else
    pkill -TERM -x dockerd
    for _ in $(seq 1 100); do pgrep -x dockerd >/dev/null || break; sleep 0.2; done
  fi
}

log "stopping dockerd"
stop_dockerd
wait_for 20 "steady unknown" status_is steady unknown
kill -0 "$LEDGED_PID" || fail "ledged died with the engine"
ledge system status | grep -q "UNREACHABLE" || fail "status does not say the engine is down"
# A dry run plans against what the agent last knew: it must say the engine is down rather than
# pass for "nothing to change".
manifest "$(testmod steady running 1)" > "$T/same.json"
ledge deploy --dry-run "$T/same.json" > "$T/dry.out" 2>&1 || fail "dry run: $(cat "$T/dry.out")"
grep -q "warning: the container engine is unreachable" "$T/dry.out" ||
  fail "dry run with the engine down does not say so: $(cat "$T/dry.out")"
log "starting dockerd"
"$SRC_ROOT/scripts/start-dockerd"
wait_for 60 "steady running again" status_is steady running
grep -q "container engine connected" "$T/ledged.log" || fail "no reconnect logged"
stop_ledged
log "ok"
