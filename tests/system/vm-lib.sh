# vm-lib.sh — helpers for the VM system tests (sourced after lib.sh): a private VMs' directory
# under the test's state directory (so the test's ledged autostarts them), the CLI's `vm` verb,
# free ports, and waiting on a VM's state.
VM_DIR="$T/state/vm"
export LEDGE_VM_DIR="$VM_DIR"
export LEDGE_VM_LIBDIR="$LEDGE_BUILD/src/vm"
mkdir -p "$VM_DIR"

vm() { "$LEDGE_BIN" vm "$@"; }
gvm() { local name="$1"; shift; "$LEDGE_BIN" --vm "$name" "$@"; }

vm_field() { # vm_field NAME JQ-FILTER
  "$LEDGE_BIN" vm status "$1" --json 2>/dev/null | jq -r "$2"
}

vm_state_is() { [ "$(vm_field "$1" .state)" = "$2" ]; }

free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
  done
  fail "no free port"
}

# The processes of a VM (its supervisor and QEMU carry the VM's directory in their command line).
vm_procs() { pgrep -f -- "$VM_DIR/$1/\|--vm-dir $VM_DIR --name $1\$" || true; }

vm_cleanup() {
  local rc=$? d
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    for d in "$VM_DIR"/*/; do
      [ -f "$d/vmm.log" ] || continue
      log "$(basename "$d"): supervisor log tail:"; tail -25 "$d/vmm.log" >&2
      [ -f "$d/console.log" ] && { log "$(basename "$d"): console tail:"; tail -15 "$d/console.log" >&2; }
    done
  fi
  for d in "$VM_DIR"/*/; do
    [ -f "$d/vm.json" ] || continue
    "$LEDGE_BIN" vm stop "$(basename "$d")" --timeout 20 >/dev/null 2>&1 || true
  done
  pkill -9 -f -- "$VM_DIR/" 2>/dev/null || true
  return $rc
}
