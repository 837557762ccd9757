#!/usr/bin/env bash
# The oci engine on its own, with no dockerd anywhere in the test (DOCKER_HOST and engine.uri
# point at a socket that does not exist): an image made here and pushed with curl to a TLS
# registry with htpasswd auth is pulled by ledged through registryCredentials (imagePullPolicy
# on-create); its published port answers from the host; createOptions the engine cannot honour
# are refused at deploy time naming the field; a wrong password fails the module saying so; with
# the registry gone the local image is used (offline); `ledge image list|load|rm|prune`; GC;
# `ledge check` names the runtime and passes the engine's requirements. Registered twice: on
# the runtime engine.runtime auto picks here (runc on this CI machine) and on crun
# (system-oci-crun, LEDGE_OCI_RUNTIME=crun: lib.sh runs it where crun accepts the cgroups).
export LEDGE_ENGINE=oci
source "$(dirname "$0")/lib.sh"
need_engine
need "test -x /bin/busybox && /bin/busybox --list | grep -qx httpd" "busybox-static missing (scripts/vm-deps)"
need "command -v python3" "python3 missing"
source "$(dirname "$0")/registry-lib.sh"
export DOCKER_HOST="unix://$T/no-docker.sock" # nothing here may talk to dockerd
start_registry tls
REG="$REG_TLS_ADDR"

log "an image made here: busybox httpd serving one page, pushed with curl"
mkdir -p "$T/img/rootfs/bin" "$T/img/rootfs/www"
cp /bin/busybox "$T/img/rootfs/bin/busybox"
echo "hello from the oci engine" > "$T/img/rootfs/www/index.html"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$T/img/rootfs" -cf "$T/img/layer.tar" .
layer_digest=$(registry_put_blob tls web "$T/img/layer.tar")
cat > "$T/img/config.json" <<JSON
{"architecture": "amd64", "os": "linux",
 "config": {"Entrypoint": ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
            "Env": ["FROM_IMAGE=yes"], "ExposedPorts": {"8080/tcp": {}}},
 "rootfs": {"type": "layers", "diff_ids": ["$layer_digest"]}}
JSON
config_digest=$(registry_put_blob tls web "$T/img/config.json")
cat > "$T/img/manifest.json" <<JSON
{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
 "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "$config_digest",
            "size": $(stat -c %s "$T/img/config.json")},
 "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "$layer_digest",
             "size": $(stat -c %s "$T/img/layer.tar")}]}
JSON
registry_put_manifest tls web 1 application/vnd.oci.image.manifest.v1+json "$T/img/manifest.json"

HOST_PORT=$(registry_free_port 127.0.0.1)
PORTS_CO="{\"HostConfig\": {\"PortBindings\": {\"8080/tcp\": [{\"HostPort\": \"$HOST_PORT\"}]}}}"
web_module() { # web_module [CREATE_OPTIONS_JSON]: the module, its createOptions as IoT Edge has them (a string)
  jq -cn --arg img "$REG/web:1" --arg co "${1:-$PORTS_CO}" \
    '{"type": "docker", "status": "running", "restartPolicy": "always",
      "settings": {"image": $img, "createOptions": $co}}' | sed 's/^/"web": /'
}
with_creds() { # with_creds PASSWORD MANIFEST_FILE: registryCredentials into $edgeAgent
  jq --arg a "$REG" --arg u "$REG_USER" --arg p "$1" \
    '.modulesContent["$edgeAgent"]["properties.desired"].runtime.settings.registryCredentials =
       {"test": {"address": $a, "username": $u, "password": $p}}' "$2" > "$2.tmp" && mv "$2.tmp" "$2"
}
deploy_web() { # deploy_web PASSWORD [CREATE_OPTIONS]
  manifest "$(web_module "${2:-}")" > "$T/deploy.json"
  with_creds "$1" "$T/deploy.json"
  ledge deploy "$T/deploy.json"
}
start_ledged

log "pull through registryCredentials (TLS, basic auth), run, published port from the host"
deploy_web "$REG_PASSWORD" > "$T/out" || fail "deploy failed: $(cat "$T/out")"
wait_for 60 "web running" status_is web running
grep -q "web: pull" "$T/ledged.log" || fail "no pull progress in the log"
wait_for 20 "the published port answers" sh -c "curl -sf http://127.0.0.1:$HOST_PORT/ | grep -q 'hello from the oci engine'"
ip=$(jq -r .ip "$(oci_record web)")
curl -sf "http://$ip:8080/" | grep -q "hello from the oci engine" || fail "the container's own address does not answer"
container_env web | grep -qx FROM_IMAGE=yes || fail "the image's Env is missing"
ledge logs web --tail 5 | grep -q "response:200" || fail "httpd's request log is not in ledge logs: $(ledge logs web --tail 5)"
grep -q "$REG_PASSWORD" "$T/ledged.log" && fail "the registry password is in ledged's log"
"$(oci_runtime)" --root "$OCI_RUNTIME_ROOT" state "$(container_id web)" | jq -e '.status == "running"' >/dev/null ||
  fail "$(oci_runtime) does not know the container as running"

log "ledge check: the engine's requirements, and which runtime it runs"
"$LEDGE_BIN" -H "$T/run/mgmt.sock" check --config "$T/config.yaml" --output json > "$T/check.json" || true
for id in engine engine-version engine-product oci-runtime oci-kernel oci-network; do
  [ "$(jq -r --arg id "$id" '.checks[] | select(.id == $id) | .result' "$T/check.json")" = ok ] ||
    fail "check $id: $(jq -c --arg id "$id" '.checks[] | select(.id == $id)' "$T/check.json")"
done
jq -r '.checks[] | select(.id == "oci-runtime") | .message' "$T/check.json" | grep -q "^$(oci_runtime) version [0-9]" ||
  fail "oci-runtime does not name $(oci_runtime): $(jq -c '.checks[] | select(.id == "oci-runtime")' "$T/check.json")"

log "ledge image list shows the pulled image and who uses it"
ledge image list --json > "$T/images.json"
jq -e --arg n "$REG/web:1" '.[] | select(.name == $n) | .usedBy == ["web"]' "$T/images.json" >/dev/null ||
  fail "image list: $(cat "$T/images.json")"
ledge image rm "$REG/web:1" 2>"$T/err" && fail "removed an image a module uses"
grep -q "used by module web" "$T/err" || fail "rm refusal: $(cat "$T/err")"

log "createOptions the engine cannot honour: refused at deploy, naming each field"
manifest "$(web_module '{"Tty": true, "HostConfig": {"Links": ["a:b"], "NetworkMode": "mynet"}}')" > "$T/bad.json"
with_creds "$REG_PASSWORD" "$T/bad.json"
id=$(container_id web)
ledge deploy "$T/bad.json" 2>"$T/err" && fail "unsupported createOptions accepted"
grep -q "modules.web.settings.createOptions.Tty" "$T/err" || fail "Tty not named: $(cat "$T/err")"
grep -q "modules.web.settings.createOptions.HostConfig.Links" "$T/err" || fail "Links not named: $(cat "$T/err")"
grep -q "HostConfig.NetworkMode" "$T/err" || fail "NetworkMode not named: $(cat "$T/err")"
assert_eq "$(container_id web)" "$id" "a refused deployment changed the module"

log "a wrong password: the pull fails and says why (the image is not here to fall back on)"
registry_put_manifest tls web 2 application/vnd.oci.image.manifest.v1+json "$T/img/manifest.json"
manifest "$(web_module), $(web_module | sed 's/^"web"/"web2"/; s#/web:1#/web:2#')" > "$T/deploy.json"
with_creds "wrong-$REG_PASSWORD" "$T/deploy.json"
! ledge deploy "$T/deploy.json" > "$T/out" 2>&1 || fail "a deployment whose pull fails was applied: $(cat "$T/out")"
grep -qi "credentials" "$T/out" || fail "the failed deploy does not say why: $(cat "$T/out")"
status_is web running || fail "web stopped running over the rolled-back deployment"
[ -z "$(module_field web2 name)" ] || fail "web2 is still there after the rollback: $(module_field web2 runtimeStatus)"
log "the same with --no-rollback: web2 stays, failed, saying why"
ledge deploy --no-rollback "$T/deploy.json" >/dev/null 2>&1 || true
wait_for 30 "web2 failed" status_is web2 failed
module_field web2 statusDescription | grep -qi "auth" || fail "web2: $(module_field web2 statusDescription)"
status_is web running || fail "web stopped running over web2's failure"

log "offline: the registry gone, a recreate pulls in vain and uses the local image"
stop_registries
deploy_web "$REG_PASSWORD" "{\"Env\": [\"NEW=1\"], \"HostConfig\": {\"PortBindings\": {\"8080/tcp\": [{\"HostPort\": \"$HOST_PORT\"}]}}}" > "$T/out" ||
  fail "offline redeploy failed: $(cat "$T/out")"
wait_for 60 "web running again" sh -c "[ \"\$(cd / && '$LEDGE_BIN' -H '$T/run/mgmt.sock' list --json | jq -r '.[] | select(.name==\"web\") | .runtimeStatus')\" = running ] && [ '$id' != \"\$(jq -r .id \$(grep -l '\"name\":\"web\"' '$T'/state/oci/containers/*/record.json))\" ]"
grep -q "created from the local image" "$T/ledged.log" || fail "the offline rule was not applied"
container_env web | grep -qx NEW=1 || fail "the recreated container lacks the new Env"
wait_for 20 "the published port answers again" sh -c "curl -sf http://127.0.0.1:$HOST_PORT/ | grep -q hello"

log "ledge image load (a docker save archive made without docker), rm, prune"
mkdir -p "$T/save/blobs"
cp "$T/img/layer.tar" "$T/save/layer.tar"
cp "$T/img/config.json" "$T/save/$(echo "$config_digest" | cut -c8-).json"
echo "[{\"Config\": \"$(echo "$config_digest" | cut -c8-).json\", \"RepoTags\": [\"local/web:saved\"], \"Layers\": [\"layer.tar\"]}]" > "$T/save/manifest.json"
tar -C "$T/save" -cf "$T/saved.tar" manifest.json layer.tar "$(echo "$config_digest" | cut -c8-).json"
ledge image load "$T/saved.tar" | grep -q "loaded docker.io/local/web:saved" || fail "image load"
ledge image list | grep -q "docker.io/local/web:saved" || fail "loaded image not listed"
ledge image rm local/web:saved | grep -q "removed local/web:saved" || fail "image rm"
ledge image list | grep -q "local/web:saved" && fail "removed image still listed"
ledge image load "$T/saved.tar" >/dev/null
deploy "" >/dev/null # web goes: its image is unused now
wait_for 20 "web removed" sh -c "! ls '$T'/state/oci/containers/*/record.json >/dev/null 2>&1"
ledge image prune > "$T/out"
grep -q "removed $REG/web:1" "$T/out" || fail "prune: $(cat "$T/out")"
grep -q "removed docker.io/local/web:saved" "$T/out" || fail "prune: $(cat "$T/out")"
[ "$(ledge image list --json | jq length)" = 0 ] || fail "images left after prune: $(ledge image list)"
[ -z "$(ls "$T/state/oci/images/layers/sha256/")" ] || fail "layers left after prune"
stop_ledged
log "ok"
