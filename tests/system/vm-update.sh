#!/usr/bin/env bash
# vm-update.sh — A/B updates of a real guest under software emulation (QEMU TCG): a VM made with
# `ledge vm create NAME` alone (the image from this tree's package) runs a module with a named
# volume; `ledge vm update --deb` to a good package (another version) boots the new image and
# keeps the module's container and volume; to a broken one (its ledged exits at start) the VM
# boots the previous image again and says why; an updater killed before the switch is
# abandoned by --resume with no boot. Four boots in all (each costs tens of seconds under TCG).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vm-lib.sh"
need "command -v qemu-system-x86_64" "qemu-system-x86 is not installed (scripts/vm-deps)"
need "command -v debootstrap" "debootstrap is not installed (scripts/vm-deps)"
need "command -v busybox" "busybox-static is not installed (scripts/vm-deps)"
need_docker
trap 'vm_cleanup; cleanup' EXIT

t0=$(date +%s)
log "create (no image named: built from this tree) and start"
env -u LEDGE_VM_DEB "$LEDGE_BIN" vm create u1 --memory 1024M --cpus 1 --disk 4G --hub-port 0 \
  >"$T/create.out" 2>"$T/create.err" || { cat "$T/create.err" >&2; fail "create"; }
K1="$(jq -r .image "$VM_DIR/u1/vm.json")"
[ "$(jq -r .dataDisk "$VM_DIR/u1/vm.json")" = true ] || fail "no data disk in the definition"
[ -f "$VM_DIR/u1/data.img" ] || fail "no data.img"
DEB="$(sed -n "s/^ledge vm: ledge's package: //p" "$T/create.err")"
[ -f "$DEB" ] || fail "create named no package: $(cat "$T/create.err")"
log "TIMING create in $(( $(date +%s) - t0 ))s"
s0=$(date +%s)
vm start u1 --timeout 300 >/dev/null || fail "start"
log "TIMING boot 1 (first, formats and seeds the data disk): $(( $(date +%s) - s0 ))s"
vm exec u1 -- sh -c 'mountpoint -q /var/lib/ledge && mountpoint -q /var/lib/docker && grep -q " /var/lib/ledge-data " /proc/mounts' ||
  fail "the guest's state is not on the data disk"
V1="$(vm exec u1 -- dpkg-query -W -f '${Version}' ledge)"

# Packages: the tree's with another version (good), and one whose ledged exits at start (broken).
mkdir -p "$T/deb"
dpkg-deb -R "$DEB" "$T/deb/good"
V2="$V1+vmupdate"
sed -i "s/^Version: .*/Version: $V2/" "$T/deb/good/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz -b "$T/deb/good" "$T/good.deb" >/dev/null
cp -a "$T/deb/good" "$T/deb/broken"
V3="$V1+broken"
sed -i "s/^Version: .*/Version: $V3/" "$T/deb/broken/DEBIAN/control"
printf '#!/bin/sh\necho "broken on purpose" >&2\nexit 1\n' > "$T/deb/broken/usr/sbin/ledged"
dpkg-deb --root-owner-group -Zxz -b "$T/deb/broken" "$T/broken.deb" >/dev/null

log "a module with a named volume"
img="$T/img"
mkdir -p "$img/bin"
cp "$(command -v busybox)" "$img/bin/busybox"
for a in sh cat date sleep; do ln -s busybox "$img/bin/$a"; done
tar -C "$img" --owner=0 --group=0 -c . | docker import --change 'CMD ["/bin/sh"]' - ledge-vm-busybox:upd >/dev/null
gvm u1 image load ledge-vm-busybox:upd >/dev/null || fail "image load"
CMD='[ -f /data/born ] || date > /data/born; cat /data/born; exec sleep 1000000'
CO=$(jq -cn --arg cmd "$CMD" '{Cmd: ["/bin/sh", "-c", $cmd], HostConfig: {Binds: ["keepvol:/data"]}}')
cat > "$T/deploy.json" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4"}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.4"}}},
    "modules": {
      "keeper": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never",
                 "settings": {"image": "ledge-vm-busybox:upd", "createOptions": $(jq -n --arg c "$CO" '$c')}}}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}
}}
JSON
gvm u1 deploy "$T/deploy.json" >&2 || fail "deploy"
kid() { "$LEDGE_BIN" --vm u1 list --json | jq -r '.[] | select(.name == "keeper") | .containerId // empty'; }
krun() { [ "$("$LEDGE_BIN" --vm u1 list --json | jq -r '.[] | select(.name == "keeper") | .runtimeStatus')" = running ]; }
wait_for 180 "keeper running" krun
ID1="$(kid)"
[ -n "$ID1" ] || fail "no container id for keeper"
wait_for 30 "keeper's volume" bash -c "'$LEDGE_BIN' --vm u1 logs keeper 2>&1 | grep -q ."
BORN="$(vm exec u1 -- sh -c 'cat /var/lib/docker/volumes/keepvol/_data/born')"
[ -n "$BORN" ] || fail "the volume has no file"

log "an updater killed before the switch: --resume abandons it, nothing boots"
rc=0; LEDGE_VM_UPDATE_STOP_AT=prepared vm update u1 --deb "$T/good.deb" >"$T/kill.out" 2>&1 || rc=$?
[ $rc -eq 137 ] || { cat "$T/kill.out" >&2; fail "the updater was not killed at 'prepared' (rc $rc)"; }
[ -d "$VM_DIR/u1/next" ] || fail "no next/ slot after the kill"
rc=0; vm update u1 --deb "$T/good.deb" >"$T/refused.out" 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q "was cut short.*--resume" "$T/refused.out" || fail "a new update was not refused: $(cat "$T/refused.out")"
vm update u1 --resume >"$T/resume.out" 2>&1 || { cat "$T/resume.out" >&2; fail "resume"; }
grep -q "abandoned" "$T/resume.out" || fail "resume: $(cat "$T/resume.out")"
[ ! -e "$VM_DIR/u1/next" ] || fail "next/ left behind"
assert_eq "$(jq -r .image "$VM_DIR/u1/vm.json")" "$K1" "the image after an abandoned update"
vm_state_is u1 running || fail "the VM stopped"

log "update to a good package: the new image boots, the module keeps its container and volume"
s0=$(date +%s)
vm update u1 --deb "$T/good.deb" --timeout 600 >"$T/good.out" 2>&1 || { cat "$T/good.out" >&2; fail "good update"; }
cat "$T/good.out" >&2
log "TIMING good update (image build, boot 2, health): $(( $(date +%s) - s0 ))s"
K2="$(jq -r .image "$VM_DIR/u1/vm.json")"
[ "$K2" != "$K1" ] || fail "the image did not change"
assert_eq "$(vm exec u1 -- dpkg-query -W -f '${Version}' ledge)" "$V2" "the guest's ledge after the update"
assert_eq "$(kid)" "$ID1" "keeper's container after the update"
krun || fail "keeper not running after the update"
assert_eq "$(vm exec u1 -- sh -c 'cat /var/lib/docker/volumes/keepvol/_data/born')" "$BORN" "the volume's file"
[ "$(vm update u1 --status --json | jq -r .step)" = done ] || fail "status: $(vm update u1 --status)"
[ ! -e "$VM_DIR/u1/prev" ] || fail "prev/ left after a good update"

log "update to a broken package (ledged exits at start): rolled back to the previous image"
s0=$(date +%s)
rc=0; vm update u1 --deb "$T/broken.deb" --timeout 150 >"$T/broken.out" 2>&1 || rc=$?
cat "$T/broken.out" >&2
log "TIMING broken update (image build, boot 3, deadline, boot 4): $(( $(date +%s) - s0 ))s"
[ $rc -eq 1 ] || fail "the broken update did not report a rollback (rc $rc)"
grep -q "rolled back: the VM runs image $K2 again: the guest's ledged does not answer" "$T/broken.out" ||
  fail "the rollback does not say why"
assert_eq "$(jq -r .image "$VM_DIR/u1/vm.json")" "$K2" "the image after the rollback"
[ "$(vm update u1 --status --json | jq -r .step)" = rolled-back ] || fail "status after the rollback"
wait_for 300 "running on the previous image" vm_state_is u1 running
assert_eq "$(vm exec u1 -- dpkg-query -W -f '${Version}' ledge)" "$V2" "the guest's ledge after the rollback"
wait_for 180 "keeper running after the rollback" krun
assert_eq "$(kid)" "$ID1" "keeper's container after the rollback"
assert_eq "$(vm exec u1 -- sh -c 'cat /var/lib/docker/volumes/keepvol/_data/born')" "$BORN" "the volume after the rollback"

vm delete u1 --force >/dev/null
log "TIMING total $(( $(date +%s) - t0 ))s"
