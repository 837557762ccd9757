#!/usr/bin/env bash
# Atomic deployments on the real dockerd (docs/deployments.md): a deployment whose changed module
# cannot be pulled, exits at once, or never becomes healthy before the deadline is rolled back —
# the untouched container keeps its id, the replaced one is back with its previous config, the
# added one is gone — and `ledge deploy` exits non-zero naming the module and the reason;
# --no-rollback keeps the failed state; `ledge deploy --rollback`; the history (`ledge
# deployments`, GET /deployments); kill -9 of ledged mid-deployment, then its restart finishes
# the rollback from ledged.db.
source "$(dirname "$0")/lib.sh"
need_docker
need_image ledge-testmod:latest
DEPLOY_SETTLE=1s DEPLOY_TIMEOUT=20s
start_ledged

hash_of() { container_label "$1" dev.ledge.config-hash; }
has_env() { container_env "$1" | grep -qx "$2"; }
newest() { ledge deployments --json | jq -r ".deployments[0].$1"; }
# A module whose HEALTHCHECK never passes (a missing program) within a start period of 10
# minutes: running, "health: starting" for good.
never_healthy() {
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never", "startupOrder": 2, "settings": {"image": "ledge-testmod:latest", "createOptions": "{\\"Healthcheck\\": {\\"Test\\": [\\"CMD\\", \\"/nosuch\\"], \\"Interval\\": 500000000, \\"StartPeriod\\": 600000000000}}"}, "env": {"TESTMOD_MARK": {"value": "%s"}, "SLOW": {"value": "1"}}}' "$1" "$1"
}
A="$(testmod one running 1), $(testmod two running 2)"

log "a good deployment applies"
deploy "$A" > "$T/out" || fail "deploy A: $(cat "$T/out")"
grep -q "Deployment applied (id " "$T/out" || fail "not applied: $(cat "$T/out")"
for m in one two; do wait_for 20 "$m running" status_is $m running; done
id_a=$(newest id)
assert_eq "$(newest outcome)" applied "A's outcome"
id1=$(container_id one); id2=$(container_id two); hash2=$(hash_of two)

# after_rollback: one untouched, two back with A's config, three gone, A in force
after_rollback() {
  assert_eq "$(container_id one)" "$id1" "one (untouched) after the rollback"
  assert_eq "$(hash_of two)" "$hash2" "two's config after the rollback"
  has_env two "TESTMOD_MARK=two" || fail "two's env after the rollback: $(container_env two)"
  has_env two "$1" && fail "two still has the failed deployment's $1"
  wait_for 20 "two running" status_is two running
  container_exists three && fail "three (added by the failed deployment) still exists"
  api GET /deployment | jq -e '.modulesContent["$edgeAgent"]["properties.desired"].modules | has("three") | not' >/dev/null ||
    fail "the failed deployment is still in force"
  assert_eq "$(ledge deployments --json | jq -r .current)" "$id_a" "the deployment in force"
}

log "a changed module exits at once: rolled back"
rc=0
deploy "$(testmod one running 1), $(testmod two running 2 '"TESTMOD_EXIT_AFTER_MS": {"value": "200"}, "TESTMOD_EXIT_CODE": {"value": "3"}'), $(testmod three running 1)" > "$T/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a deployment whose module exits at once applied: $(cat "$T/out")"
grep -q "failed and was rolled back to deployment $id_a: module two: exited with code 3" "$T/out" ||
  fail "the failure does not name the module and reason: $(cat "$T/out")"
grep -q "^Rollback:" "$T/out" || fail "no rollback steps printed: $(cat "$T/out")"
[ "$(container_id two)" != "$id2" ] || fail "two was not replaced at all"
after_rollback "TESTMOD_EXIT_CODE=3"
assert_eq "$(newest outcome)" rolled-back "outcome in the history"
newest reason | grep -q "module two: exited with code 3" || fail "history reason: $(newest reason)"
ledge deployments | grep -q "rolled-back" || fail "ledge deployments: $(ledge deployments)"
id2=$(container_id two)

log "a changed module's image cannot be pulled: rolled back, the previous container never stopped"
dead="127.0.0.1:9"
rc=0
deploy "$(testmod one running 1), $(testmod three running 1), \"two\": {\"type\": \"docker\", \"status\": \"running\", \"startupOrder\": 2, \"settings\": {\"image\": \"$dead/nosuch:v1\"}}" > "$T/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a deployment whose image cannot be pulled applied: $(cat "$T/out")"
grep -q "rolled back to deployment $id_a: module two: cannot pull $dead/nosuch:v1" "$T/out" ||
  fail "the failure does not name the module and reason: $(cat "$T/out")"
assert_eq "$(container_id two)" "$id2" "two's container after a failed pull (same one)"
after_rollback "SLOW=1"

log "a changed module never becomes healthy before the deadline (--timeout): rolled back"
rc=0
deploy "$(testmod one running 1), $(never_healthy two), $(testmod three running 1)" --timeout 4s > "$T/out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a never-healthy deployment applied: $(cat "$T/out")"
grep -q "module two: did not reach running within 4s (running, health check still starting)" "$T/out" ||
  fail "the failure does not name the module and reason: $(cat "$T/out")"
after_rollback "SLOW=1"
id2=$(container_id two)

log "--no-rollback keeps the failed state"
deploy "$(testmod one running 1), $(testmod two running 2 '"TESTMOD_EXIT_AFTER_MS": {"value": "200"}, "TESTMOD_EXIT_CODE": {"value": "3"}')" --no-rollback > "$T/out" 2>&1 ||
  fail "--no-rollback: the deploy failed: $(cat "$T/out")"
has_env two "TESTMOD_EXIT_CODE=3" || fail "--no-rollback: two is not the new one"
wait_for 20 "two crashing" sh -c "'$LEDGE_BIN' -H '$T/run/mgmt.sock' list --json | jq -e '.[] | select(.name == \"two\") | .exitCode == 3' "
assert_eq "$(container_id one)" "$id1" "one after --no-rollback"
id_c=$(newest id)
assert_eq "$(ledge deployments --json | jq -r .current)" "$id_c" "in force after --no-rollback"

log "ledge deploy --rollback: the previous deployment again"
ledge deploy --rollback > "$T/out" 2>&1 || fail "deploy --rollback: $(cat "$T/out")"
assert_eq "$(hash_of two)" "$hash2" "two's config after --rollback"
wait_for 20 "two running" status_is two running
assert_eq "$(newest kind)" rollback "kind of the explicit rollback"
assert_eq "$(newest outcome)" applied "outcome of the explicit rollback"
api GET /deployments | jq -e '.deployments | length >= 6' >/dev/null || fail "GET /deployments: $(api GET /deployments)"
id_a=$(newest id); id1=$(container_id one); id2=$(container_id two)

log "kill -9 of ledged mid-deployment: its restart finishes the rollback"
manifest "$(testmod one running 1), $(never_healthy two), $(testmod three running 1)" > "$T/slow.json"
"$LEDGE_BIN" -H "$T/run/mgmt.sock" deploy --timeout 6s "$T/slow.json" > "$T/slow.out" 2>&1 &
cli=$!
wait_for 30 "deployment watching" sh -c "curl -sS --unix-socket '$T/run/mgmt.sock' http://localhost/status | jq -e '.deploying.phase == \"watching\"'"
kill -9 "$LEDGED_PID"; wait "$LEDGED_PID" 2>/dev/null || true; LEDGED_PID=""
wait "$cli" 2>/dev/null && fail "the CLI said the deployment applied: $(cat "$T/slow.out")"
has_env two "SLOW=1" || fail "two is not the slow one while ledged is down"
container_exists three || fail "three was not created before the kill"
start_ledged
wait_for 40 "the rollback finished" sh -c "'$LEDGE_BIN' -H '$T/run/mgmt.sock' deployments --json | jq -e '.inProgress == null'"
assert_eq "$(newest outcome)" rolled-back "outcome after the restart"
newest reason | grep -q "module two: did not reach running within 6s" || fail "reason after the restart: $(newest reason)"
grep -q "was interrupted by a restart of ledged" "$T/ledged.log" || fail "the restart did not say it resumed"
after_rollback "SLOW=1"
stop_ledged
log "ok"
