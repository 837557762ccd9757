#!/usr/bin/env bash
# `ledge check` against the real host and the real dockerd: before ledged ever ran (state and
# certificates not there yet), with ledged running a deployment (its deployment read from the
# management API, certificates valid, images matching), a manifest whose image is built for
# another architecture (an error stating the host/guest rule, exit 1), --warnings-as-errors,
# an invalid config, JSON and text output, check-list, and ledged running the same table for its
# own deployment (GET /check).
source "$(dirname "$0")/lib.sh"
need_docker
docker image inspect ledge-testmod:latest >/dev/null 2>&1 || "$SRC_ROOT/scripts/build-images"

EXTRA_CONFIG="check:
  ntp_timeout: 1s"
write_config
# DOCKER_HOST=unix:///path runs the test against another engine (docker and ledge alike).
case "${DOCKER_HOST:-}" in unix://*) sed -i "s|^engine:\$|engine:\n  uri: $DOCKER_HOST|" "$T/config.yaml" ;; esac
check() { "$LEDGE_BIN" -H "$T/run/mgmt.sock" check --config "$T/config.yaml" "$@"; }
result() { jq -r --arg id "$1" '.checks[] | select(.id == $id) | .result' "$2"; }
message() { jq -r --arg id "$1" '.checks[] | select(.id == $id) | .message' "$2"; }
expect() { # expect ID RESULT FILE
  local got
  got="$(result "$1" "$3")"
  [ "$got" = "$2" ] || fail "$1: expected $2, got $got: $(message "$1" "$3")"
}

log "check-list names every check once"
"$LEDGE_BIN" check-list > "$T/list"
n=$(wc -l < "$T/list")
[ "$n" -ge 20 ] || fail "check-list has $n checks"
[ "$(cut -d' ' -f1 "$T/list" | sort -u | wc -l)" = "$n" ] || fail "duplicate ids in check-list"
"$LEDGE_BIN" check-list --output json | jq -e 'length == '"$n"' and all(.[]; .id and .description)' >/dev/null ||
  fail "check-list --output json"

log "before ledged ever ran"
rc=0
check --output json > "$T/before.json" || rc=$?
jq -e . "$T/before.json" >/dev/null || fail "not JSON: $(head -c 300 "$T/before.json")"
assert_eq "$(jq '.checks | length' "$T/before.json")" "$n" "checks run"
assert_eq "$(jq .exitCode "$T/before.json")" "$rc" "exitCode vs exit status"
expect config-file ok "$T/before.json"
expect state-dir warning "$T/before.json"        # ledged creates it
message state-dir "$T/before.json" | grep -q "does not exist yet" || fail "state-dir: $(message state-dir "$T/before.json")"
expect engine ok "$T/before.json"
message engine "$T/before.json" | grep -q "(API 1\.[0-9]*, linux/" || fail "engine: $(message engine "$T/before.json")"
expect engine-version ok "$T/before.json"
expect log-rotation ok "$T/before.json"
for id in oci-runtime oci-kernel oci-network; do expect "$id" skipped "$T/before.json"; done # docker
expect module-platforms skipped "$T/before.json"
message module-platforms "$T/before.json" | grep -q "ledged is not reachable" || fail "module-platforms: $(message module-platforms "$T/before.json")"
expect edge-ca skipped "$T/before.json"
expect hub-server-cert skipped "$T/before.json"
expect hostname ok "$T/before.json"
expect architecture ok "$T/before.json"
if grep -q '^ID=debian' /etc/os-release && grep -q '^VERSION_ID="12"' /etc/os-release &&
   [ "$(uname -m)" = x86_64 ]; then
  expect os ok "$T/before.json"
  message os "$T/before.json" | grep -q "tier 1" || fail "os: $(message os "$T/before.json")"
fi
# The engine product: Debian's docker.io is Moby
if docker version --format '{{.Server.Platform.Name}}' 2>/dev/null | grep -qv .; then
  expect engine-product ok "$T/before.json"
fi
# every result is one of the four, and every warning and error says how to fix it
jq -e 'all(.checks[]; (.result | IN("ok","warning","error","skipped")) and (.message | length > 0))' \
  "$T/before.json" >/dev/null || fail "a check without a result or message"
jq -e 'all(.checks[] | select(.result == "warning" or .result == "error"); .fix != null)' \
  "$T/before.json" >/dev/null || fail "a warning or error without a fix"
# no errors on this machine at this point but the ones CI machines cannot avoid
errs="$(jq -r '[.checks[] | select(.result == "error") | .id] | join(" ")' "$T/before.json")"
[ -z "$errs" ] || fail "errors before ledged ran: $errs ($(jq -c '.checks[] | select(.result == "error")' "$T/before.json"))"
assert_eq "$rc" 0 "exit status with warnings only"

log "text output"
check > "$T/before.txt" || fail "text run failed"
grep -q "^configuration$" "$T/before.txt" || fail "no group header: $(head "$T/before.txt")"
grep -qE "^  +ok +engine +the container engine is reachable" "$T/before.txt" || fail "no engine line"
grep -qE "^[0-9]+ ok, [0-9]+ warnings?, 0 errors, [0-9]+ skipped$" "$T/before.txt" || fail "no summary: $(tail -2 "$T/before.txt")"
check --verbose > "$T/verbose.txt"
grep -q "Moby\|Docker\|Podman" "$T/verbose.txt" || fail "--verbose does not show ok messages"

log "--warnings-as-errors: a warning (free memory under a 1 TiB threshold) fails the run"
sed -i 's/^check:$/check:\n  min_free_memory: 1TiB/' "$T/config.yaml"
check --output json > "$T/mem.json" || fail "warnings alone failed the run"
expect memory warning "$T/mem.json"
rc=0
check --warnings-as-errors > /dev/null || rc=$?
assert_eq "$rc" 1 "exit status with --warnings-as-errors"
sed -i '/min_free_memory: 1TiB/d' "$T/config.yaml"

log "with ledged running a deployment"
start_ledged
deploy "$(testmod chka running 1), $(testmod chkb running 2)" > "$T/out"
wait_for 20 "chka running" status_is chka running
check --output json > "$T/running.json" || fail "check failed with ledged running: $(jq -c '.checks[] | select(.result == "error")' "$T/running.json")"
expect state-dir ok "$T/running.json"
expect edge-ca ok "$T/running.json"
expect hub-server-cert ok "$T/running.json"
expect module-platforms ok "$T/running.json"
message module-platforms "$T/running.json" | grep -q "chka (ledge-testmod:latest): linux/" ||
  fail "module-platforms: $(message module-platforms "$T/running.json")"
jq -e '.deployment | startswith("ledged at ")' "$T/running.json" >/dev/null || fail "deployment not read from ledged"
expect log-rotation ok "$T/running.json"
message log-rotation "$T/running.json" | grep -q "2 container modules rotate" || fail "log-rotation: $(message log-rotation "$T/running.json")"
expect engine-version ok "$T/running.json"
message engine-version "$T/running.json" | grep -q "minDockerVersion v1.25" || fail "engine-version: $(message engine-version "$T/running.json")"

log "ledged runs the same checks (GET /check): the same table, its own deployment"
api GET /check > "$T/daemon.json" & p1=$!
api GET /check > "$T/daemon2.json" & p2=$! # a second request while the first runs shares it
wait "$p1" && wait "$p2" || fail "GET /check failed"
jq -e . "$T/daemon.json" >/dev/null || fail "GET /check: not JSON: $(head -c 300 "$T/daemon.json")"
assert_eq "$(jq -c '[.checks[].id]' "$T/daemon.json")" "$(jq -c '[.checks[].id]' "$T/running.json")" "the daemon's checks"
assert_eq "$(jq -c '[.checks[].id]' "$T/daemon2.json")" "$(jq -c '[.checks[].id]' "$T/running.json")" "the concurrent request's checks"
assert_eq "$(jq -r .deployment "$T/daemon.json")" "ledged" "the daemon's deployment"
expect module-platforms ok "$T/daemon.json"
message module-platforms "$T/daemon.json" | grep -q "chka (ledge-testmod:latest): linux/" ||
  fail "the daemon's module-platforms: $(message module-platforms "$T/daemon.json")"
expect edge-ca ok "$T/daemon.json"
expect engine ok "$T/daemon.json"
assert_eq "$(jq .exitCode "$T/daemon.json")" "$(jq .exitCode "$T/running.json")" "the daemon's exit code"

log "a module whose image is built for another architecture: an error, the rule stated"
foreign=ledge-test-foreign:latest
host_arch="$(docker version --format '{{.Server.Arch}}')"
other=arm64
[ "$host_arch" = arm64 ] && other=amd64
d="$T/img"
mkdir -p "$d"
tar cf "$d/layer.tar" --files-from /dev/null
L=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/x"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$other" "$L" > "$d/config.json"
C=$(sha256sum "$d/config.json" | cut -d' ' -f1)
mv "$d/config.json" "$d/$C.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$C" "$foreign" > "$d/manifest.json"
tar cf "$d/img.tar" -C "$d" manifest.json "$C.json" layer.tar
docker load -i "$d/img.tar" >/dev/null || fail "cannot load the $other test image"
trap 'rc=$?; docker rmi -f '"$foreign"' >/dev/null 2>&1; (exit $rc); cleanup' EXIT
manifest "$(testmod chka running 1), \"alien\": {\"type\": \"docker\", \"status\": \"running\", \"restartPolicy\": \"never\", \"imagePullPolicy\": \"never\", \"settings\": {\"image\": \"$foreign\"}}" > "$T/alien.json"
rc=0
check --deployment "$T/alien.json" --output json > "$T/alien-out.json" || rc=$?
assert_eq "$rc" 1 "exit status with a mismatching image"
expect module-platforms error "$T/alien-out.json"
msg="$(message module-platforms "$T/alien-out.json")"
echo "$msg" | grep -q "module alien ($foreign): image is built for linux/$other, this host is linux/" ||
  fail "module-platforms message: $msg"
echo "$msg" | grep -q "must match the host's OS family" || fail "the rule is not stated: $msg"
jq -e '.deployment | startswith("file ")' "$T/alien-out.json" >/dev/null || fail "--deployment not used"
check --deployment "$T/alien.json" > "$T/alien.txt" || true
grep -qE "ERROR +module-platforms" "$T/alien.txt" || fail "text output lacks the error: $(cat "$T/alien.txt")"
# ledged's deploy-time validation (the agent's) refuses it too, dry run or not, and changes nothing
before=$(container_id chka)
for how in --dry-run ""; do
  if ledge deploy $how "$T/alien.json" > "$T/alien-deploy.out" 2>&1; then fail "deploy $how of a foreign image accepted"; fi
  grep -q "modules.alien.settings.image: .*linux/$other.*ledge vm create NAME --arch $other" "$T/alien-deploy.out" ||
    fail "deploy $how: the refusal does not state the rule: $(cat "$T/alien-deploy.out")"
done
assert_eq "$(container_id chka)" "$before" "chka's container after the refused deployments"
[ -z "$(docker ps -aq --filter name='^alien$')" ] || fail "the refused module was created"

log "an invalid --deployment file is refused"
echo '{"modulesContent": {}}' > "$T/bad.json"
rc=0
check --deployment "$T/bad.json" > /dev/null 2> "$T/err" || rc=$?
assert_eq "$rc" 1 "exit status with an invalid manifest"
grep -q "bad.json" "$T/err" || fail "no message: $(cat "$T/err")"

log "an invalid config: an error, dependent checks skipped"
printf 'devce:\n  id: x\n' > "$T/broken.yaml"
rc=0
"$LEDGE_BIN" check --config "$T/broken.yaml" --output json > "$T/broken.json" || rc=$?
assert_eq "$rc" 1 "exit status with an invalid config"
expect config-file error "$T/broken.json"
message config-file "$T/broken.json" | grep -q 'broken.yaml:1: devce: unknown key (did you mean "device"?)' ||
  fail "config-file: $(message config-file "$T/broken.json")"
expect engine skipped "$T/broken.json"
rc=0
"$LEDGE_BIN" check --config "$T/missing.yaml" > /dev/null || rc=$?
assert_eq "$rc" 1 "exit status with a missing --config file"

log "usage errors"
rc=0
"$LEDGE_BIN" check --output yaml 2>/dev/null || rc=$?
assert_eq "$rc" 2 "--output yaml"
rc=0
"$LEDGE_BIN" check --frobnicate 2>/dev/null || rc=$?
assert_eq "$rc" 2 "unknown option"

stop_ledged
log "ok"
