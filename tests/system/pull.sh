#!/usr/bin/env bash
# Images from real registries (Debian's docker-registry, started here): imagePullPolicy
# on-create pulls when a module is created, anonymously over plain HTTP and with htpasswd basic
# auth behind TLS (a CA made here, which the engine verifies), with registryCredentials matched
# to the image's registry (with and without a scheme, a decoy for another port) and sent as
# X-Registry-Auth; pull progress in `ledge deploy`'s output; wrong credentials, an unknown image
# and an unreachable registry fail with the module, the image and the registry named and the
# module's previous container untouched (same id, still running); offline with the image present
# the module is created from the local image with one warning; imagePullPolicy never with the
# image missing is refused at validation and nothing changes.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/registry-lib.sh"
need_docker
command docker image inspect ledge-testmod:latest >/dev/null 2>&1 || "$SRC_ROOT/scripts/build-images" testmod
# The engine verifies the CA only for a registry off loopback (127.0.0.0/8 is insecure to it).
REG_TLS_HOST=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' | head -1)
need "[ -n '$REG_TLS_HOST' ]" "no non-loopback IPv4 address for the TLS registry"

start_registry plain
PLAIN_PID=${REG_PIDS[-1]}
start_registry tls
PLAIN=$REG_PLAIN_ADDR
TLS=$REG_TLS_ADDR

log "push the test images (docker push)"
push_image ledge-testmod:latest plain testmod:v1
for tag in v1 v2 v3 v4; do push_image ledge-testmod:latest tls "team/testmod:$tag"; done
# An image with a layer of its own (random bytes) so that the pull has something to download.
mkdir -p "$T/big"
head -c $((24 << 20)) /dev/urandom > "$T/big/blob"
printf 'FROM ledge-testmod:latest\nCOPY blob /blob\n' > "$T/big/Dockerfile"
DOCKER_BUILDKIT=0 command docker build -q -t "ledge-pull-big-$$:latest" "$T/big" >/dev/null || fail "cannot build the big image"
push_image "ledge-pull-big-$$:latest" plain big:v1
command docker rmi "ledge-pull-big-$$:latest" >/dev/null

# Nothing of these is on the engine before the test pulls it.
for img in "$PLAIN/testmod:v1" "$PLAIN/big:v1" "$TLS/team/testmod:v1" "$TLS/team/testmod:v2" "$TLS/team/testmod:v3"; do
  docker image inspect "$img" >/dev/null 2>&1 && fail "$img is on the engine before the test pulled it"
done

# A module pulled on create (imagePullPolicy left at its default): regmod NAME IMAGE [MARK]
regmod() {
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "%s"}, "env": {"TESTMOD_MARK": {"value": "%s"}}}' \
    "$1" "$2" "${3:-$1}"
}
# deploy_creds MODULES_JSON CREDENTIALS_JSON: a manifest with runtime.settings.registryCredentials
deploy_creds() {
  manifest "$1" | jq --argjson c "$2" \
    '.modulesContent["$edgeAgent"]["properties.desired"].runtime.settings.registryCredentials = $c' > "$T/deploy.json"
  ledge deploy "$T/deploy.json"
}
cred() { printf '{"address": "%s", "username": "%s", "password": "%s"}' "$1" "$2" "$3"; }
exists() { container_exists "$1"; }
running_id() { # the container's id, only while it runs
  [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] && container_id "$1"
}
# expect_deploy_fail MODULES CREDS PART...: the deploy fails and its output names every PART
expect_deploy_fail() {
  local mods="$1" creds="$2"; shift 2
  if deploy_creds "$mods" "$creds" > "$T/out" 2>&1; then fail "the deploy succeeded: $(cat "$T/out")"; fi
  local p
  for p in "$@"; do grep -qF -- "$p" "$T/out" || fail "the deploy's output lacks '$p': $(cat "$T/out")"; done
  log "  refused: $(grep -m1 -E 'error|not present' "$T/out")"
}

GOOD=$(printf '{"a-decoy": %s, "tlsreg": %s}' \
  "$(cred "${TLS%:*}:1" "$REG_USER" wrong-password)" "$(cred "https://$TLS" "$REG_USER" "$REG_PASSWORD")")
start_ledged

log "on-create: anonymous over plain HTTP, and basic auth over TLS with registryCredentials"
deploy_creds "$(regmod plain "$PLAIN/testmod:v1"), $(regmod secure "$TLS/team/testmod:v1")" "$GOOD" > "$T/out" 2>&1 ||
  fail "deploy failed: $(cat "$T/out")"
grep -q "Deployment applied" "$T/out" || fail "not applied: $(cat "$T/out")"
for m in plain secure; do wait_for 30 "$m running" status_is $m running; done
docker image inspect "$PLAIN/testmod:v1" >/dev/null || fail "$PLAIN/testmod:v1 was not pulled"
docker image inspect "$TLS/team/testmod:v1" >/dev/null || fail "$TLS/team/testmod:v1 was not pulled"
assert_eq "$(docker inspect -f '{{.Config.Image}}' secure)" "$TLS/team/testmod:v1" "secure's image"
grep -q "  secure: " "$T/out" || fail "no pull progress for secure in the deploy's output: $(cat "$T/out")"

log "the address without a scheme matches too (the decoy for another port does not)"
deploy_creds "$(regmod plain "$PLAIN/testmod:v1"), $(regmod secure "$TLS/team/testmod:v2")" \
  "$(printf '{"a-decoy": %s, "tlsreg": %s}' "$(cred "$REG_TLS_HOST:1" "$REG_USER" wrong-password)" "$(cred "$TLS" "$REG_USER" "$REG_PASSWORD")")" \
  > "$T/out" 2>&1 || fail "deploy with a scheme-less address failed: $(cat "$T/out")"
wait_for 30 "secure running v2" bash -c "[ \"\$(docker inspect -f '{{.Config.Image}}' secure)\" = '$TLS/team/testmod:v2' ]"
wait_for 30 "secure running" status_is secure running

log "pull progress: a 24 MB layer, summarised in the deploy's output while it runs"
deploy_creds "$(regmod plain "$PLAIN/testmod:v1"), $(regmod secure "$TLS/team/testmod:v2"), $(regmod big "$PLAIN/big:v1")" "$GOOD" \
  > "$T/out" 2>&1 || fail "deploy of big failed: $(cat "$T/out")"
grep -Eq "^  big: downloading [0-9.]+ of 2[0-9.]+ MB, [0-9]+ of [0-9]+ layers done$" "$T/out" ||
  fail "no download progress for big: $(cat "$T/out")"
# the progress came before the outcome: streamed, not reported at the end
first_progress=$(grep -n "^  big: " "$T/out" | head -1 | cut -d: -f1)
outcome=$(grep -n "^Outcome:" "$T/out" | cut -d: -f1)
[ "$first_progress" -lt "$outcome" ] || fail "progress after the outcome: $(cat "$T/out")"
wait_for 30 "big running" status_is big running

# The secret never shows: not in the deploy's output, not in ledged's log.
grep -rqF -- "$REG_PASSWORD" "$T/out" "$T/ledged.log" && fail "the registry password shows in the output or the log"

id_plain=$(running_id plain); id_secure=$(running_id secure)
[ -n "$id_plain" ] && [ -n "$id_secure" ] || fail "plain and secure are not running"
started_secure=$(docker inspect -f '{{.State.StartedAt}}' secure)
unchanged() { # unchanged: both previous containers are the same ones, still running
  assert_eq "$(running_id plain)" "$id_plain" "plain's container after a failed pull"
  assert_eq "$(running_id secure)" "$id_secure" "secure's container after a failed pull"
  assert_eq "$(docker inspect -f '{{.State.StartedAt}}' secure)" "$started_secure" "secure was restarted"
}

log "wrong credentials: refused, named, and the previous container keeps running"
expect_deploy_fail "$(regmod plain "$PLAIN/testmod:v1"), $(regmod secure "$TLS/team/testmod:v3"), $(regmod big "$PLAIN/big:v1")" \
  "$(printf '{"tlsreg": %s}' "$(cred "$TLS" "$REG_USER" not-the-password)")" \
  "cannot pull $TLS/team/testmod:v3 from registry $TLS" "the registry refused the credentials of registryCredentials.tlsreg" \
  "module secure keeps its previous container"
unchanged
grep -q "secure: cannot pull $TLS/team/testmod:v3 from registry $TLS" "$T/ledged.log" || fail "the failure is not in the log"

log "no credentials for a registry that wants them"
expect_deploy_fail "$(regmod plain "$PLAIN/testmod:v1"), $(regmod secure "$TLS/team/testmod:v3"), $(regmod big "$PLAIN/big:v1")" '{}' \
  "cannot pull $TLS/team/testmod:v3 from registry $TLS" "no registryCredentials entry matches $TLS" \
  "module secure keeps its previous container"
unchanged

log "an unknown image"
expect_deploy_fail "$(regmod plain "$PLAIN/testmod:nosuch"), $(regmod secure "$TLS/team/testmod:v2"), $(regmod big "$PLAIN/big:v1")" "$GOOD" \
  "cannot pull $PLAIN/testmod:nosuch from registry $PLAIN" "the registry has no such image" \
  "module plain keeps its previous container"
unchanged

log "an unreachable registry"
dead=127.0.0.1:$(registry_free_port)
expect_deploy_fail "$(regmod plain "$dead/testmod:v1"), $(regmod secure "$TLS/team/testmod:v2"), $(regmod big "$PLAIN/big:v1")" "$GOOD" \
  "cannot pull $dead/testmod:v1 from registry $dead" "the registry cannot be reached" \
  "module plain keeps its previous container"
unchanged
log "a new module that cannot be pulled is not created"
expect_deploy_fail "$(regmod plain "$PLAIN/testmod:v1"), $(regmod secure "$TLS/team/testmod:v2"), $(regmod big "$PLAIN/big:v1"), $(regmod fresh "$dead/testmod:v1")" "$GOOD" \
  "cannot pull $dead/testmod:v1 from registry $dead" "module fresh is not created (the image is not present either)"
exists fresh && fail "fresh was created"
unchanged

log "imagePullPolicy never, image missing: refused at validation, nothing touched"
never='"never": {"type": "docker", "status": "running", "imagePullPolicy": "never", "settings": {"image": "ledge-pull-missing:v1"}}'
expect_deploy_fail "$(regmod plain "$PLAIN/testmod:v1" changed), $(regmod secure "$TLS/team/testmod:v2"), $never" "$GOOD" \
  "modules.never.settings.image: ledge-pull-missing:v1 is not present on the engine and imagePullPolicy is \"never\""
grep -q "^Plan:" "$T/out" && fail "a plan was made for a refused deployment: $(cat "$T/out")"
unchanged
exists never && fail "never was created"
exists big || fail "big was removed by a refused deployment"

log "offline (registry gone) with the image present: created from the local image, said once"
kill "$PLAIN_PID"; wait "$PLAIN_PID" 2>/dev/null || true
deploy_creds "$(regmod plain "$PLAIN/testmod:v1" offline), $(regmod secure "$TLS/team/testmod:v2"), $(regmod big "$PLAIN/big:v1")" "$GOOD" \
  > "$T/out" 2>&1 || fail "offline deploy failed: $(cat "$T/out")"
grep -q "Deployment applied" "$T/out" || fail "not applied: $(cat "$T/out")"
wait_for 30 "plain running" status_is plain running
[ "$(running_id plain)" != "$id_plain" ] || fail "plain was not recreated"
docker inspect plain | jq -e '.[0].Config.Env | index("TESTMOD_MARK=offline") != null' >/dev/null || fail "plain runs the old config"
warning="cannot pull $PLAIN/testmod:v1 from registry $PLAIN: the registry cannot be reached"
assert_eq "$(grep -cF "warning: $warning" "$T/out")" 1 "warnings in the deploy's output"
grep -F "warning: $warning" "$T/out" | grep -q "created from the local image" || fail "the warning does not say what was done: $(cat "$T/out")"
# other passes (a restart of another module) say nothing more
ledge restart secure >/dev/null
wait_for 20 "secure running" status_is secure running
sleep 1
assert_eq "$(grep -cF "$warning" "$T/ledged.log")" 1 "warnings in ledged's log"
assert_eq "$(running_id secure)" "$id_secure" "secure's container"

stop_ledged
log "ok"
