#!/usr/bin/env bash
# vm-supervisor.sh — ledge-vmm's lifecycle against a fake QEMU (tests/system/vm-fake-qemu.py:
# real QMP and channel sockets, a scripted guest), so it runs in seconds: start and readiness,
# the guest API through the channel, live port forwards (hub, manual, the ports a deployment
# publishes), an in-guest reboot, adoption of a running QEMU by a new supervisor, restart after
# a QEMU crash, hung-boot detection with reset and retry, clean stop, autostart by ledged (and
# ledged restarts that leave VMs running), delete leaving nothing behind.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vm-lib.sh"
need "command -v python3" "python3 is needed for the fake QEMU"
need "command -v jq" "jq is needed"

trap 'vm_cleanup; cleanup' EXIT

# A fake image and a fake QEMU first on PATH.
CACHE="$T/cache"
export LEDGE_VM_CACHE="$CACHE"
KEY=amd64-0123456789abcdef
mkdir -p "$CACHE/$KEY" "$T/bin"
truncate -s 1M "$CACHE/$KEY/rootfs.img"
echo kernel > "$CACHE/$KEY/kernel"
echo initrd > "$CACHE/$KEY/initrd.img"
echo '{"arch": "amd64", "key": "'$KEY'", "ledge": "test", "built": "2026-01-01T00:00:00Z"}' > "$CACHE/$KEY/manifest.json"
cat > "$T/bin/qemu-system-x86_64" <<EOF
#!/bin/sh
exec python3 "$SRC_ROOT/tests/system/vm-fake-qemu.py" "\$@"
EOF
chmod +x "$T/bin/qemu-system-x86_64"
export PATH="$T/bin:$PATH"
export FAKE_QEMU_LOG="$T/qemu-calls.log"
export FAKE_QEMU_DEPLOYMENT="$T/deployment.json"
HUB=$(free_port); MAN=$(free_port); AUTO=$(free_port)

connect_says() { # connect_says PORT TEXT
  [ "$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -1 <&3" 2>/dev/null)" = "$2" ]
}
refused() { ! timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

log "create and start f1 (fake QEMU)"
vm create f1 --image "$KEY" --accel tcg --disk 2G --hub-port "$HUB" --boot-timeout 10 >/dev/null
vm start f1 --timeout 60 | tee "$T/start.out" >&2
grep -q "f1: running" "$T/start.out" || fail "f1 did not reach running"
assert_eq "$(vm_field f1 .accelDetail)" "software emulation (configured)" "accelerator"
assert_eq "$(vm_field f1 .guest.kernel)" "fake-kernel" "guest facts from the agent's HELLO"
wait_for 10 "the hub forward" connect_says "$HUB" "guest-port 8883"

log "the guest API through the channel"
gvm f1 system status --json > "$T/sys.json" || fail "ledge --vm f1 system status failed"
assert_eq "$(jq -r .containerEngineConnected "$T/sys.json")" "true" "guest /status through api.sock"

log "live port forwards"
vm port add f1 "$MAN:80" >/dev/null
wait_for 10 "the manual forward" connect_says "$MAN" "guest-port 80"
vm port list f1 | grep -q "127.0.0.1:$MAN->80/tcp.*manual.*active" || fail "port list lacks the manual forward"
jq -e --arg p "$MAN" '.ports[] | select(.hostPort == ($p|tonumber))' "$VM_DIR/f1/vm.json" >/dev/null ||
  fail "the manual forward is not saved in vm.json"
vm port remove f1 "$MAN:80" >/dev/null
wait_for 10 "the manual forward to go" refused "$MAN"
vm port add f1 "$HUB:1" 2>"$T/err" && fail "a second forward of the hub port was accepted"
grep -q "hub" "$T/err" || fail "conflict message: $(cat "$T/err")"

log "ports published by the deployment are forwarded, and unforwarded when they go"
cat > "$FAKE_QEMU_DEPLOYMENT" <<EOF
{"modulesContent": {"\$edgeAgent": {"properties.desired": {"modules": {
  "web": {"settings": {"image": "x", "createOptions": "{\"HostConfig\":{\"PortBindings\":{\"80/tcp\":[{\"HostPort\":\"$AUTO\"}]}}}"}}}}}}}
EOF
gvm f1 system status >/dev/null # a finished guest API connection triggers a refresh
wait_for 15 "the automatic forward" connect_says "$AUTO" "guest-port $AUTO"
vm status f1 | grep -q "$AUTO.*auto.*active (module web)" || fail "status lacks the automatic forward"
echo '{}' > "$FAKE_QEMU_DEPLOYMENT"
gvm f1 system status >/dev/null
wait_for 15 "the automatic forward to go" refused "$AUTO"

log "an in-guest reboot resets QEMU in place and the VM comes back"
qpid=$(vm_field f1 .qemuPid)
vm reboot f1 >/dev/null
wait_for 20 "the reboot" bash -c "[ \$('$LEDGE_BIN' vm status f1 --json | jq .boots) -ge 2 ]"
wait_for 20 "running after the reboot" vm_state_is f1 running
assert_eq "$(vm_field f1 .qemuPid)" "$qpid" "same QEMU after an in-guest reboot"

log "a new supervisor adopts the running QEMU"
spid=$(vm_field f1 .supervisorPid)
kill -9 "$spid"
sleep 0.5
kill -0 "$qpid" || fail "QEMU died with its supervisor"
vm start f1 --timeout 30 >/dev/null || fail "restarting the supervisor failed"
assert_eq "$(vm_field f1 .adopted)" "true" "adopted"
assert_eq "$(vm_field f1 .qemuPid)" "$qpid" "the adopted QEMU"
wait_for 10 "the hub forward after adoption" connect_says "$HUB" "guest-port 8883"
grep -q "qmp human-monitor-command info usernet" "$FAKE_QEMU_LOG" || fail "the adopter did not look at QEMU's forwards"

log "QEMU crashes: the supervisor starts it again"
kill -9 "$qpid"
wait_for 30 "a new QEMU" bash -c "p=\$('$LEDGE_BIN' vm status f1 --json | jq .qemuPid); [ \"\$p\" != $qpid ] && [ \"\$p\" != 0 ]"
wait_for 30 "running after the crash" vm_state_is f1 running
[ "$(vm_field f1 .crashes)" -ge 1 ] || fail "the crash was not counted"
vm_field f1 .lastError | grep -q "stopped unexpectedly" || fail "lastError: $(vm_field f1 .lastError)"

log "a hung boot is detected, reported, reset and retried, then given up"
vm create f2 --image "$KEY" --accel tcg --disk 2G --hub-port 0 --boot-timeout 10 >/dev/null
: > "$FAKE_QEMU_LOG"
FAKE_QEMU_MODE=hang vm start f2 --no-wait >/dev/null
wait_for 15 "the first hung boot" bash -c "'$LEDGE_BIN' vm status f2 --json | jq -r .lastError | grep -q 'boot hung'"
wait_for 30 "a reset of the hung guest" grep -q "qmp system_reset" "$FAKE_QEMU_LOG"
wait_for 60 "giving up" bash -c "grep -q '\"state\": \"failed\"' '$VM_DIR/f2/state.json'"
grep -q "boot hung 4 times; giving up" "$VM_DIR/f2/state.json" || fail "final error: $(jq -r .lastError "$VM_DIR/f2/state.json")"
[ "$(grep -c 'started mode=hang' "$FAKE_QEMU_LOG")" -ge 2 ] || fail "QEMU was not restarted after the resets"
[ -z "$(vm_procs f2)" ] || fail "processes of the failed VM remain: $(vm_procs f2)"

log "clean stop"
vm stop f1 | grep -q "f1: stopped" || fail "stop"
grep -q "event poweroff" "$FAKE_QEMU_LOG" || fail "the stop did not ask the guest to power off"
[ -z "$(vm_procs f1)" ] || fail "processes remain after stop: $(vm_procs f1)"
[ ! -S "$VM_DIR/f1/run/api.sock" ] || fail "sockets remain after stop"
refused "$HUB" || fail "the hub forward is still open after stop"

log "autostart: ledged brings the VM back, and its restarts leave the VM running"
vm set f1 --autostart on --memory 2G | grep -q "2 GiB memory" || fail "set"
start_ledged
wait_for 30 "autostart" vm_state_is f1 running
grep -q "VM f1: autostart: supervisor started" "$T/ledged.log" || fail "ledged did not log the autostart"
qpid=$(vm_field f1 .qemuPid)
ps -o args= -p "$qpid" | grep -q -- "-m 2048M" || fail "the new memory size was not applied"
stop_ledged
kill -0 "$qpid" || fail "stopping ledged stopped the VM"
start_ledged
grep -q "VM f1: already running" "$T/ledged.log" || fail "ledged did not see the running VM"
assert_eq "$(vm_field f1 .qemuPid)" "$qpid" "same QEMU across ledged restarts"
vm set f1 --cpus 2 2>"$T/err" && fail "set while running was accepted"
grep -q "stop it first" "$T/err" || fail "set-while-running message: $(cat "$T/err")"

log "delete leaves nothing behind"
vm delete f1 2>"$T/err" && fail "deleting a running VM without --force"
vm delete f1 --force >/dev/null
vm delete f2 >/dev/null
[ ! -e "$VM_DIR/f1" ] && [ ! -e "$VM_DIR/f2" ] || fail "VM directories remain"
[ -z "$(vm_procs f1)" ] || fail "processes remain after delete"
refused "$HUB" || fail "a forward remains after delete"
vm list | grep -q "^f1 " && fail "f1 is still listed"
stop_ledged
log "PASS"
