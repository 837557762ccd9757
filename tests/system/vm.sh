#!/usr/bin/env bash
# vm.sh — a real guest under software emulation (QEMU TCG): create with no image named (built from
# this build tree's package; the Debian base layer cached between runs) → start → an image copied
# from this host's engine into the guest's → a module deployed through the host CLI runs in the guest → a host program reaches its
# published port (forwarded automatically) and a live forward → the module reaches a host
# service by the stable name host.ledge.internal → a shared folder is visible to the module as
# a bind mount → a host program talks to the guest's hub as a leaf client (MQTT over TLS through
# the hub forward) → exec → stop/start and an in-guest reboot keep the deployment → delete
# leaves nothing behind. Then the oci variant (`create --engine oci`: crun, no Moby in the
# image): the same module loaded, deployed and reached through its forward, the share and the
# host's name, its runtime crun; ~2 min more once its Debian base is cached. Timings are logged
# (docs/benchmarks.md).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vm-lib.sh"
need "command -v qemu-system-x86_64" "qemu-system-x86 is not installed (scripts/vm-deps)"
need "command -v debootstrap" "debootstrap is not installed (scripts/vm-deps)"
need "command -v busybox" "busybox-static is not installed (scripts/vm-deps)"
need "command -v mosquitto_pub" "mosquitto-clients missing (scripts/deps --test)"
need_docker
trap 'vm_cleanup; cleanup' EXIT

HOST_SVC=$(free_port); WEB=$(free_port); LIVE=$(free_port); HUB=$(free_port)

log "create with no image and no package: built from this build tree's ledge (scripts/build-deb)"
t0=$(date +%s)
env -u LEDGE_VM_DEB "$LEDGE_BIN" vm create t1 --memory 1024M --cpus 1 --disk 4G --hub-port "$HUB" \
  >"$T/create.out" 2>"$T/create.err" || { cat "$T/create.err" >&2; fail "create"; }
grep -q "building the guest image from ledge's amd64 package built from $SRC_ROOT" "$T/create.err" ||
  fail "create did not build from the tree: $(cat "$T/create.err")"
KEY="$(jq -r .image "$VM_DIR/t1/vm.json")"
grep -q "image $KEY" "$T/create.out" || fail "create output: $(cat "$T/create.out")"
log "TIMING create (package, image $KEY) in $(( $(date +%s) - t0 ))s"

log "the image is cached, and rebuilt from the same inputs it is the same, bit for bit"
IMG_DIR="${LEDGE_VM_CACHE:-/var/cache/ledge/vm}/$KEY"
before=$(sha256sum "$IMG_DIR/rootfs.img" "$IMG_DIR/kernel" "$IMG_DIR/initrd.img" | cut -d' ' -f1)
DEB="$(jq -r .ledgeDebPath "$IMG_DIR/manifest.json")"
if [ -f "$DEB" ]; then
  "$LEDGE_BUILD/src/vm/ledge-vm-build" --arch amd64 --deb "$DEB" 2>&1 | grep -q "is cached" || fail "not cached"
  t1=$(date +%s)
  "$LEDGE_BUILD/src/vm/ledge-vm-build" --arch amd64 --deb "$DEB" --rebuild >/dev/null 2>&1 || fail "rebuild"
  after=$(sha256sum "$IMG_DIR/rootfs.img" "$IMG_DIR/kernel" "$IMG_DIR/initrd.img" | cut -d' ' -f1)
  [ "$before" = "$after" ] || fail "the rebuilt image differs"
  log "TIMING image layer rebuilt (identical) in $(( $(date +%s) - t1 ))s"
fi

# A module image built here from busybox-static (no registry): an HTTP server, and a client of
# the host's service.
img="$T/img"
mkdir -p "$img/bin" "$T/share" "$T/www"
cp "$(command -v busybox)" "$img/bin/busybox"
for a in sh httpd wget cat echo sleep mkdir; do ln -s busybox "$img/bin/$a"; done
tar -C "$img" --owner=0 --group=0 -c . | docker import --change 'CMD ["/bin/sh"]' - ledge-vm-busybox:test >/dev/null
echo "hello-from-the-host-share" > "$T/share/hello.txt"
echo "pong-from-the-host" > "$T/www/ping.txt"
busybox httpd -f -p "127.0.0.1:$HOST_SVC" -h "$T/www" &
HTTPD_PID=$!

log "start (software emulation)"
vm share add t1 "$T/share" /mnt/hostshare --ro >/dev/null
s0=$(date +%s%N)
vm start t1 --timeout 300 | tee "$T/start.out" >&2 || fail "start"
log "TIMING vm start -> guest runtime answering: $(( ($(date +%s%N) - s0) / 1000000 )) ms"
vm status t1 | tee "$T/status.out" >&2
grep -q "software emulation\|KVM" "$T/status.out" || fail "status does not say which accelerator"
grep -q "127.0.0.1:$HUB->8883/tcp.*hub.*active" "$T/status.out" || fail "no hub forward"
grep -q "$T/share -> /mnt/hostshare (read-only)" "$T/status.out" || fail "status lacks the share"
wait_for 120 "the guest's engine" bash -c "'$LEDGE_BIN' vm status t1 --json | jq -e '.boot.engineMs' >/dev/null"
log "TIMING guest engine connected $(vm_field t1 .boot.engineMs) ms after boot start"

log "an image from this host's engine into the guest's"
gvm t1 image load ledge-vm-busybox:test > "$T/load.out" || fail "image load"
grep -q "Loaded image: ledge-vm-busybox:test" "$T/load.out" || fail "image load: $(cat "$T/load.out")"

log "deploy through the host CLI"
CMD="mkdir -p /www; echo hi-from-the-module > /www/index.html; cat /data/hello.txt; httpd -p 8080 -h /www; while true; do wget -q -O - http://host.ledge.internal:$HOST_SVC/ping.txt; sleep 2; done"
CO=$(jq -cn --arg cmd "$CMD" --arg web "$WEB" '{Cmd: ["/bin/sh", "-c", $cmd], ExposedPorts: {"8080/tcp": {}}, HostConfig: {Binds: ["/mnt/hostshare:/data:ro"], PortBindings: {"8080/tcp": [{HostPort: $web}]}}}')
IDLE='"type": "process", "status": "running", "restartPolicy": "always", "settings": {"path": "/bin/sleep", "args": ["infinity"]}'
cat > "$T/deploy.json" <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {
      "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4"}},
      "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.4"}}},
    "modules": {
      "web": {"type": "docker", "status": "running", "restartPolicy": "always", "imagePullPolicy": "never",
              "settings": {"image": "ledge-vm-busybox:test", "createOptions": $(jq -n --arg c "$CO" '$c')}},
      "hostin": {$IDLE},
      "hostout": {$IDLE}}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "1.1",
    "routes": {"hostToHost": "FROM /messages/modules/hostout/outputs/* INTO BrokeredEndpoint(\"/modules/hostin/inputs/in\")"},
    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}
}}
JSON
gvm t1 deploy "$T/deploy.json" >&2 || fail "deploy through --vm"
vstatus() { gvm t1 list --json | jq -r --arg n "$1" '.[] | select(.name == $n) | .runtimeStatus'; }
wait_for 180 "web running in the guest" bash -c "[ \"\$('$LEDGE_BIN' --vm t1 list --json | jq -r '.[] | select(.name == \"web\") | .runtimeStatus')\" = running ]"
gvm t1 list >&2

log "a host program reaches the module's published port (forwarded automatically)"
web_ok() { [ "$(curl -s -m 5 "http://127.0.0.1:$1/")" = "hi-from-the-module" ]; }
wait_for 60 "the automatic forward of $WEB" web_ok "$WEB"
vm port list t1 > "$T/ports.out"
grep -q "127.0.0.1:$WEB->$WEB/tcp.*auto.*active (module web)" "$T/ports.out" || fail "port list lacks the automatic forward"

log "live forwards: added and removed while running"
vm port add t1 "$LIVE:$WEB" >/dev/null
wait_for 20 "the live forward" web_ok "$LIVE"
vm port remove t1 "$LIVE:$WEB" >/dev/null
wait_for 20 "the live forward to go" bash -c "! curl -s -m 3 http://127.0.0.1:$LIVE/ >/dev/null"

log "the module reaches a host service by name, and reads the shared folder"
wait_for 60 "the module reaching host.ledge.internal" bash -c "'$LEDGE_BIN' --vm t1 logs web --tail 200 | grep -q pong-from-the-host"
gvm t1 logs web > "$T/web.log" 2>&1 # (no pipe into grep -q: pipefail and SIGPIPE)
grep -q "hello-from-the-host-share" "$T/web.log" || fail "the module did not see the shared folder"
[ "$(vm exec t1 -- cat /mnt/hostshare/hello.txt)" = "hello-from-the-host-share" ] || fail "exec: the share in the guest"

log "the guest's state is on its data disk"
vm exec t1 -- sh -c 'mountpoint -q /var/lib/ledge && mountpoint -q /var/lib/docker && grep -q "^/dev/vdb /var/lib/ledge-data " /proc/mounts' ||
  fail "the guest's state is not on the data disk"

log "exec: exit codes, stderr, stdin"
rc=0; vm exec t1 -- sh -c 'exit 7' || rc=$?
assert_eq "$rc" 7 "exec exit code"
[ "$(echo stdin-data | vm exec t1 -- tr a-z A-Z)" = "STDIN-DATA" ] || fail "exec stdin"
[ "$(vm exec t1 -- sh -c 'echo to-stderr >&2' 2>&1 >/dev/null)" = "to-stderr" ] || fail "exec stderr"
gvm t1 check --output json > "$T/check.json" 2>/dev/null || true
jq -e 'length > 0' "$T/check.json" >/dev/null 2>&1 || jq -e '.checks | length > 0' "$T/check.json" >/dev/null ||
  fail "ledge --vm t1 check did not run the guest's checks"

log "a host program is a leaf of the guest's hub (MQTT over TLS through the hub forward)"
vm exec t1 -- cat /var/lib/ledge/certs/trust-bundle.pem > "$T/ca.pem"
DEV=t1
user_of() { echo "$DEV.local.ledge/$DEV/$1/?api-version=2021-04-12"; }
tok() { gvm t1 token "$1" --json | jq -r .token; }
wait_for 60 "the guest hub" bash -c "'$LEDGE_BIN' --vm t1 hub status --json >/dev/null"
mosquitto_sub -h 127.0.0.1 -p "$HUB" --cafile "$T/ca.pem" -i "$DEV/hostin" -u "$(user_of hostin)" \
  -P "$(tok hostin)" -q 1 -t "devices/$DEV/modules/hostin/inputs/#" -C 1 -W 60 > "$T/received" &
SUB=$!
sleep 3
mosquitto_pub -h 127.0.0.1 -p "$HUB" --cafile "$T/ca.pem" -i "$DEV/hostout" -u "$(user_of hostout)" \
  -P "$(tok hostout)" -q 1 -t "devices/$DEV/modules/hostout/messages/events/%24.on=out1" -m "from-a-host-program" ||
  fail "publishing to the guest's hub from the host"
wait "$SUB" || fail "the host subscriber got nothing from the guest's hub"
grep -q "from-a-host-program" "$T/received" || fail "received: $(cat "$T/received")"

log "stop and start keep the deployment"
vm stop t1 >/dev/null
web_down() { ! curl -s -m 3 "http://127.0.0.1:$WEB/" >/dev/null; }
web_down || fail "the forward is still open while stopped"
s0=$(date +%s%N)
vm start t1 --timeout 300 >/dev/null || fail "second start"
log "TIMING second start -> runtime answering: $(( ($(date +%s%N) - s0) / 1000000 )) ms"
wait_for 180 "web running again" bash -c "[ \"\$('$LEDGE_BIN' --vm t1 list --json | jq -r '.[] | select(.name == \"web\") | .runtimeStatus')\" = running ]"
wait_for 60 "the published port again" web_ok "$WEB"

log "an in-guest reboot brings the VM back with its deployment"
qpid=$(vm_field t1 .qemuPid)
vm exec t1 -- systemctl reboot >/dev/null 2>&1 || true
wait_for 60 "the reboot to be seen" bash -c "[ \$('$LEDGE_BIN' vm status t1 --json | jq .boots) -ge 2 ]"
wait_for 300 "running after the reboot" vm_state_is t1 running
assert_eq "$(vm_field t1 .qemuPid)" "$qpid" "the same QEMU (reset in place)"
wait_for 180 "web running after the reboot" bash -c "[ \"\$('$LEDGE_BIN' --vm t1 list --json | jq -r '.[] | select(.name == \"web\") | .runtimeStatus')\" = running ]"
wait_for 60 "the published port after the reboot" web_ok "$WEB"

log "logs: supervisor, console, guest runtime"
vm logs t1 --tail 20 > "$T/logs.out" || fail "vm logs"
grep -q "==> .*vmm.log" "$T/logs.out" && grep -q "journalctl -u ledged" "$T/logs.out" || fail "vm logs sections"

log "resources: set while stopped, applied at the next start"
vm stop t1 >/dev/null
vm set t1 --memory 1536M --disk 5G >/dev/null
vm start t1 --timeout 300 >/dev/null
ps -o args= -p "$(vm_field t1 .qemuPid)" | grep -q -- "-m 1536M" || fail "memory not applied"
wait_for 60 "the grown root" bash -c "[ \$('$LEDGE_BIN' vm exec t1 -- df -BM --output=size / | tail -1 | tr -dc 0-9) -gt 4500 ]"
wait_for 180 "web running with the new resources" bash -c "[ \"\$('$LEDGE_BIN' --vm t1 list --json | jq -r '.[] | select(.name == \"web\") | .runtimeStatus')\" = running ]"

log "delete leaves nothing behind"
vm delete t1 --force >/dev/null
[ ! -e "$VM_DIR/t1" ] || fail "the VM's directory remains"
[ -z "$(vm_procs t1)" ] || fail "processes remain: $(vm_procs t1)"
web_down || fail "a forward remains after delete"
! curl -s -m 3 "http://127.0.0.1:$HUB/" >/dev/null || fail "the hub forward remains after delete"
log "the oci variant: ledge's own engine on crun, no dockerd, containerd or shims in the guest"
o0=$(date +%s)
env -u LEDGE_VM_DEB "$LEDGE_BIN" vm create t2 --engine oci --memory 1024M --cpus 1 --disk 4G \
  --hub-port 0 >"$T/create2.out" 2>"$T/create2.err" || { cat "$T/create2.err" >&2; fail "create --engine oci"; }
grep -q "engine oci" "$T/create2.out" || fail "create --engine oci: $(cat "$T/create2.out")"
KEY2="$(jq -r .image "$VM_DIR/t2/vm.json")"
[ "$(jq -r .engine "$VM_DIR/t2/vm.json")" = oci ] || fail "vm.json: $(cat "$VM_DIR/t2/vm.json")"
IMG2="${LEDGE_VM_CACHE:-/var/cache/ledge/vm}/$KEY2"
[ "$(jq -r .engine "$IMG2/manifest.json")" = oci ] || fail "the image's manifest names no oci engine"
grep -q '^crun ' "$IMG2/packages.txt" || fail "no crun in the oci image"
! grep -qE '^(docker\.io|containerd|runc) ' "$IMG2/packages.txt" || fail "Moby in the oci image: $(grep -E '^(docker|containerd|runc)' "$IMG2/packages.txt")"
[ "$KEY2" != "$KEY" ] && [ -f "$IMG_DIR/manifest.json" ] || fail "the oci image replaced the docker one in the cache"
log "TIMING create --engine oci (image $KEY2) in $(( $(date +%s) - o0 ))s; roots: docker $(du -m --apparent-size "$IMG_DIR/rootfs.img" | cut -f1) MiB ($(du -m "$IMG_DIR/rootfs.img" | cut -f1) on disk), oci $(du -m --apparent-size "$IMG2/rootfs.img" | cut -f1) MiB ($(du -m "$IMG2/rootfs.img" | cut -f1) on disk)"
vm share add t2 "$T/share" /mnt/hostshare --ro >/dev/null
s0=$(date +%s%N)
vm start t2 --timeout 300 >/dev/null || fail "start the oci VM"
log "TIMING oci VM start -> guest runtime answering: $(( ($(date +%s%N) - s0) / 1000000 )) ms"
vm status t2 > "$T/status2.out"
grep -q "engine oci" "$T/status2.out" || fail "status does not name the engine: $(cat "$T/status2.out")"
! grep -q "Docker API" "$T/status2.out" || fail "status offers a Docker API for the oci VM"
vm exec t2 -- sh -c '! command -v dockerd && ! command -v containerd && ! command -v runc && command -v crun && [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]' >/dev/null ||
  fail "the oci guest: Moby present, crun missing or no unified cgroup v2"
gvm t2 image load ledge-vm-busybox:test > "$T/load2.out" || fail "image load into the oci guest"
grep -q "loaded docker.io/library/ledge-vm-busybox:test" "$T/load2.out" || fail "image load: $(cat "$T/load2.out")"
gvm t2 image list | grep -q "ledge-vm-busybox:test" || fail "image list in the oci guest"
gvm t2 deploy "$T/deploy.json" >&2 || fail "deploy to the oci guest"
wait_for 180 "web running in the oci guest" bash -c "[ \"\$('$LEDGE_BIN' --vm t2 list --json | jq -r '.[] | select(.name == \"web\") | .runtimeStatus')\" = running ]"
wait_for 60 "the oci module's published port (automatic forward)" web_ok "$WEB"
wait_for 60 "the oci module reaching host.ledge.internal" bash -c "'$LEDGE_BIN' --vm t2 logs web --tail 200 | grep -q pong-from-the-host"
gvm t2 logs web > "$T/web2.log" 2>&1
grep -q "hello-from-the-host-share" "$T/web2.log" || fail "the oci module did not see the shared folder"
vm exec t2 -- sh -c 'ls /run/ledge/oci/runtime | grep -q . && pgrep -x ledge-keeper >/dev/null && ! pgrep containerd' >/dev/null ||
  fail "the oci guest's containers are not the keeper's"
gvm t2 check --output json > "$T/check2.json" 2>/dev/null || true
jq -e '.checks[] | select(.id == "engine") | .message | test("crun")' "$T/check2.json" >/dev/null ||
  fail "the oci guest's ledge check does not name crun: $(jq -c '.checks[] | select(.group == "engine")' "$T/check2.json")"
vm delete t2 --force >/dev/null
[ ! -e "$VM_DIR/t2" ] && [ -z "$(vm_procs t2)" ] || fail "the oci VM left something"
log "TIMING the oci variant in $(( $(date +%s) - o0 ))s"

kill "$HTTPD_PID" 2>/dev/null || true
docker rmi ledge-vm-busybox:test >/dev/null 2>&1 || true
log "PASS in $(( $(date +%s) - t0 ))s"
