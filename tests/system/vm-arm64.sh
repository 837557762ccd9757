#!/usr/bin/env bash
# vm-arm64.sh — a foreign architecture: an arm64 guest under emulation on this host (the image
# from scripts/vm-test-image arm64, cached between runs) runs an arm64 module image built here
# from Debian's arm64 busybox-static; the host's ledged refuses that image (the platform rule)
# and `ledge deploy` points at the VM.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vm-lib.sh"
need "command -v qemu-system-aarch64" "qemu-system-arm is not installed (scripts/vm-deps)"
need "command -v debootstrap" "debootstrap is not installed (scripts/vm-deps)"
need "[ -e /usr/lib/binfmt.d/qemu-aarch64.conf ]" "qemu-user-static is not installed (scripts/vm-deps)"
need_docker
[ "$(uname -m)" = x86_64 ] || skip "this test runs an arm64 guest on an amd64 host"
trap 'vm_cleanup; cleanup' EXIT

t0=$(date +%s)
KEY="$("$SRC_ROOT/scripts/vm-test-image" arm64 "$LEDGE_BUILD" | tail -1)" || fail "building the arm64 guest image"
log "image $KEY ready after $(( $(date +%s) - t0 ))s"

log "create and start an arm64 guest"
vm create a1 --arch arm64 --image "$KEY" --disk 4G --hub-port 0 >/dev/null
s0=$(date +%s%N)
vm start a1 --timeout 600 >&2 || fail "start"
log "TIMING arm64 vm start -> guest runtime answering: $(( ($(date +%s%N) - s0) / 1000000 )) ms"
vm status a1 > "$T/status.out"
grep -q "an arm64 guest on an amd64 host" "$T/status.out" || fail "status does not say it is emulated"
assert_eq "$(vm exec a1 -- uname -m)" "aarch64" "guest architecture"
wait_for 180 "the guest's engine" bash -c "'$LEDGE_BIN' vm status a1 --json | jq -e '.boot.engineMs' >/dev/null"
log "TIMING arm64 guest engine connected $(vm_field a1 .boot.engineMs) ms after boot start"

log "an arm64 module image, built here"
img="$T/img"
mkdir -p "$img/bin"
vm exec a1 -- cat /bin/busybox > "$img/bin/busybox" # Debian's arm64 busybox-static
chmod 755 "$img/bin/busybox"
for a in sh echo sleep uname; do ln -s busybox "$img/bin/$a"; done
printf 'FROM scratch\nCOPY bin /bin\nCMD ["/bin/sh"]\n' > "$img/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q --platform linux/arm64 -t ledge-vm-busybox:arm64 "$img" >/dev/null
assert_eq "$(docker image inspect -f '{{.Architecture}}' ledge-vm-busybox:arm64)" "arm64" "image architecture"

manifest_arm() {
  cat <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4"}}},
    "modules": {"armmod": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never",
      "settings": {"image": "ledge-vm-busybox:arm64",
        "createOptions": "{\"Cmd\":[\"/bin/sh\",\"-c\",\"while true; do echo running-on-\$(uname -m); sleep 2; done\"]}"}}}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}
}}
JSON
}
manifest_arm > "$T/arm.json"

log "the host refuses the arm64 image and points at a VM"
start_ledged
ledge deploy "$T/arm.json" > "$T/host-deploy.out" 2>&1 && fail "the host accepted an arm64 module"
grep -q "image is built for linux/arm64" "$T/host-deploy.out" || fail "no platform message: $(cat "$T/host-deploy.out")"
grep -q "ledge vm create NAME --arch arm64" "$T/host-deploy.out" || fail "no VM hint: $(cat "$T/host-deploy.out")"
stop_ledged

log "the arm64 guest runs it"
gvm a1 image load ledge-vm-busybox:arm64 > "$T/load.out" || fail "image load"
grep -q "Loaded image" "$T/load.out" || fail "image load: $(cat "$T/load.out")"
gvm a1 deploy "$T/arm.json" >&2 || fail "deploy in the arm64 guest"
wait_for 120 "armmod running" bash -c "[ \"\$('$LEDGE_BIN' --vm a1 list --json | jq -r '.[] | select(.name == \"armmod\") | .runtimeStatus')\" = running ]"
wait_for 60 "the module's output" bash -c "'$LEDGE_BIN' --vm a1 logs armmod --tail 5 | grep -q running-on-aarch64"

vm delete a1 --force >/dev/null
[ ! -e "$VM_DIR/a1" ] && [ -z "$(vm_procs a1)" ] || fail "the VM left something behind"
docker rmi ledge-vm-busybox:arm64 >/dev/null 2>&1 || true
log "PASS in $(( $(date +%s) - t0 ))s"
