#!/usr/bin/env bash
# State salvage: ledged.db damaged between two runs of ledged. With the module records destroyed
# and the deployment intact, ledged comes up from the stored deployment and recreates nothing;
# with the whole file garbage, nothing is known to be wanted, so ledged keeps the containers it
# finds (holding) until a deployment is applied. Both times it says so once in its log and in
# `ledge system status`, keeps the damaged file aside, and the new file is 0600 (issue 11).
source "$(dirname "$0")/lib.sh"
need_docker
need "command -v python3" "python3 missing"
docker image inspect ledge-testmod:latest >/dev/null 2>&1 || "$SRC_ROOT/scripts/build-images"
start_ledged
DB="$T/state/ledged.db"

deploy "$(testmod first running 1), $(testmod second running 2)" >/dev/null
for m in first second; do wait_for 30 "$m running" status_is $m running; done
ids=$(for m in first second; do container_id $m; done)
assert_eq "$(stat -c %a "$DB")" 600 "ledged.db mode"
# nothing in the state directory but public certificates is readable beyond its owner
open_files=$(find "$T/state" -type f -perm /077 ! -name '*.crt' ! -name trust-bundle.pem ! -name hub-server.pem -printf '%m %P\n')
assert_eq "$open_files" "" "state files open to group or others"

status_json() { ledge system status --json; }
# A pass has listed the containers (their status comes from the listing: the records are gone)
# and finished (it would have removed what it was going to remove).
settled() {
  for m in first second; do status_is $m running || return 1; done
  [ "$(status_json | jq -r '.reconciling')" = false ]
}
running_untouched() {
  for m in first second; do
    [ "$(docker inspect -f '{{.State.Status}}' $m)" = running ] || fail "$m is not running"
  done
  assert_eq "$(for m in first second; do container_id $m; done)" "$ids" "containers recreated or removed"
}

log "module records destroyed: the stored deployment comes back and is applied"
stop_ledged
chmod 0644 "$DB" # as ledge before 0.1 left it: made 0600 again
python3 - "$DB" <<'PY'
import sqlite3, sys
path = sys.argv[1]
db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
pages = [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name = 'modules'")]
size = db.execute("PRAGMA page_size").fetchone()[0]
db.close()
with open(path, "r+b") as f:
    for p in pages:
        f.seek((p - 1) * size)
        f.write(b"\x5a" * size)
print("damaged pages", pages, file=sys.stderr)
PY
start_ledged
wait_for 30 "a pass after the salvage" settled
running_untouched
s=$(status_json)
assert_eq "$(jq -r '.stateDatabase.damaged' <<<"$s")" true "status: damaged"
assert_eq "$(jq -r '.stateDatabase.deploymentRecovered' <<<"$s")" true "status: deployment recovered"
assert_eq "$(jq -r '.holding // "none"' <<<"$s")" none "holding with the deployment back"
assert_eq "$(jq -r '.deployedModules' <<<"$s")" 2 "deployed modules"
aside=$(jq -r '.stateDatabase.damagedPath' <<<"$s")
[ -f "$aside" ] || fail "damaged file not kept: $aside"
assert_eq "$(stat -c %a "$DB")" 600 "salvaged ledged.db mode"
assert_eq "$(grep -c 'ledged.db was damaged and salvaged' "$T/ledged.log")" 1 "salvage logged once"
ledge system status | grep -q "state database: DAMAGED" || fail "ledge system status does not say it"
for m in first second; do wait_for 10 "$m running" status_is $m running; done

log "the whole file garbage: nothing comes back, the containers found are kept"
stop_ledged
head -c 16384 /dev/urandom > "$DB"
rm -f "$DB-wal" "$DB-shm"
start_ledged
wait_for 30 "a pass after the salvage" settled
running_untouched
s=$(status_json)
assert_eq "$(jq -r '.stateDatabase.damaged' <<<"$s")" true "status: damaged"
assert_eq "$(jq -r '.stateDatabase.problem' <<<"$s")" "file is not a database" "status: problem"
assert_eq "$(jq -r '.stateDatabase.deploymentRecovered' <<<"$s")" false "status: deployment recovered"
jq -r '.holding' <<<"$s" | grep -q "no deployment came back" || fail "status does not say it holds: $s"
ledge system status | grep -q "HOLDING" || fail "ledge system status does not say it holds"
grep -q "no deployment came back" "$T/ledged.log" || fail "holding not logged"
assert_eq "$(ls "$T/state" | grep -c '^ledged\.db\.damaged-[0-9]*T[0-9]*Z\(\.[0-9]*\)\?$')" 2 "damaged copies kept"
# a module that exits while holding is not restarted, and nothing is removed
docker stop -t 1 second >/dev/null
wait_for 10 "ledged saw second stop" sh -c "[ \"\$('$LEDGE_BIN' -H '$T/run/mgmt.sock' list --json | jq -r '.[] | select(.name==\"second\") | .runtimeStatus')\" != running ]"
wait_for 30 "the pass after the exit" sh -c "[ \"\$('$LEDGE_BIN' -H '$T/run/mgmt.sock' system status --json | jq -r .reconciling)\" = false ]"
assert_eq "$(docker inspect -f '{{.State.Status}}' second)" exited "second restarted while holding"
assert_eq "$(docker inspect -f '{{.State.Status}}' first)" running "first"

log "a deployment again: holding ends, nothing recreated, second started"
deploy "$(testmod first running 1), $(testmod second running 2)" >/dev/null
wait_for 30 "second running" status_is second running
assert_eq "$(status_json | jq -r '.holding // "none"')" none "still holding after a deployment"
assert_eq "$(for m in first second; do container_id $m; done)" "$ids" "containers recreated after holding"
grep -q "reconciling resumes" "$T/ledged.log" || fail "end of holding not logged"

log "restart: the salvaged database is sound now"
stop_ledged
start_ledged
wait_for 30 "settled" settled
assert_eq "$(status_json | jq -r '.stateDatabase.damaged')" false "damaged after a clean restart"
running_untouched
stop_ledged
log "ok"
