#!/usr/bin/env bash
# The Debian package on a fresh Debian 12: build the amd64 .deb (scripts/build-deb), then in a
# throw-away layer over a pristine bookworm root made here with debootstrap (cached), install it
# with `apt install ./ledge_*.deb`, run `ledged --version` and `ledge check --output json`
# there, check what the package set up, purge it, and check that nothing it made is left.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || need false "the package test needs root (debootstrap, chroot, mounts)"
need "command -v debootstrap" "debootstrap is not installed (scripts/deps --test)"
need "command -v dpkg-shlibdeps" "dpkg-dev is not installed (scripts/deps --test)"
[ "$(dpkg --print-architecture)" = amd64 ] || skip "the package test installs the amd64 package"

t0=$(date +%s)
log "building the amd64 package"
deb="$("$SRC_ROOT/scripts/build-deb" amd64)" || fail "scripts/build-deb amd64 failed"
[ -f "$deb" ] || fail "no package at $deb"
t1=$(date +%s)
root="$("$SRC_ROOT/scripts/debian-root" base)"
"$SRC_ROOT/scripts/debian-root" create "$root" || fail "cannot make the Debian root $root"
t2=$(date +%s)

mkdir -p "$T/pkg" "$T/out" /var/cache/ledge/apt-archives/partial
cp "$deb" "$T/pkg/"
binds=(--bind "$T/pkg:/pkg:ro" --bind "$T/out:/out" --bind "/var/cache/ledge/apt-archives:/var/cache/apt/archives")
have_engine=0
if [ -S /var/run/docker.sock ] && docker info >/dev/null 2>&1; then
  binds+=(--bind "/var/run/docker.sock:/run/docker.sock") # /var/run is a link to /run
  have_engine=1
fi

# Inside the fresh system. Paths whose listing changes for reasons of their own (package
# manager state, logs, caches) are left out of the before/after snapshots.
cat > "$T/pkg/inside.sh" <<'INSIDE'
set -eu
export DEBIAN_FRONTEND=noninteractive
snapshot() {
  find / -xdev \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache -o -path /var/log \
    -o -path /pkg -o -path /out -o -path /root \) -prune -o -print | sort
}
apt-get update -q >/dev/null
# The package's dependencies (and recommendations) first, so that the snapshots differ only by
# what ledge itself adds and removes.
deps=$(dpkg-deb -f /pkg/ledge_*.deb Depends Recommends | sed -e 's/^[A-Za-z]*: //' \
  -e 's/([^)]*)//g' -e 's/|[^,]*//g' -e 's/,/ /g' | tr '\n' ' ')
apt-get install -y -q $deps >/out/deps.log 2>&1
snapshot > /out/before
cd /pkg
apt install -y ./ledge_*.deb >/out/install.log 2>&1
ledged --version >/out/ledged-version 2>&1
rc=0
ledge check --output json >/out/check.json 2>/out/check.err || rc=$?
echo "$rc" >/out/check.rc
ledge check >/out/check.txt 2>&1 || true
getent group ledge >/out/group || true
stat -c '%a %U' /var/lib/ledge >/out/state-mode
ls /etc/systemd/system/multi-user.target.wants/ >/out/wants 2>/dev/null || true
dpkg -L ledge >/out/files
apt-get remove --purge -y ledge >/out/purge.log 2>&1
dpkg -s ledge >/out/status-after 2>&1 || true
snapshot > /out/after
INSIDE

log "installing into a fresh Debian 12 root ($root, overlay)"
"$SRC_ROOT/scripts/debian-root" run --overlay "${binds[@]}" "$root" -- sh /pkg/inside.sh \
  > "$T/inside.log" 2>&1 || { cat "$T/inside.log" "$T"/out/*.log 2>/dev/null | tail -40 >&2; fail "install/check/purge inside the root failed"; }
t3=$(date +%s)
O="$T/out"

log "ledged --version"
grep -qx "ledged [0-9][0-9.]*" "$O/ledged-version" || fail "ledged --version printed: $(cat "$O/ledged-version")"

log "what the package set up"
grep -q "^ledge:" "$O/group" || fail "no ledge group"
[ "$(cat "$O/state-mode")" = "700 root" ] || fail "/var/lib/ledge is $(cat "$O/state-mode"), not 700 root"
grep -qx "ledged.service" "$O/wants" || fail "ledged.service was not enabled"
for f in /usr/sbin/ledged /usr/bin/ledge /usr/lib/ledge/ledge-hub /lib/systemd/system/ledged.service \
         /etc/ledge/config.yaml; do
  grep -qx "$f" "$O/files" || fail "the package lacks $f"
done

log "ledge check --output json in the root"
jq -e . "$O/check.json" >/dev/null || fail "not JSON: $(head -c 300 "$O/check.json") $(cat "$O/check.err")"
result() { jq -r --arg id "$1" '.checks[] | select(.id == $id) | .result' "$O/check.json"; }
assert_eq "$(jq '.checks | length' "$O/check.json")" "$("$LEDGE_BIN" check-list | wc -l)" "number of checks"
assert_eq "$(result config-file)" ok "config-file (the installed template)"
assert_eq "$(result state-dir)" ok "state-dir"
assert_eq "$(result os)" ok "os"
jq -r '.checks[] | select(.id == "os") | .message' "$O/check.json" | grep -q "Debian GNU/Linux 12 (bookworm) on linux/amd64: tier 1" ||
  fail "os: $(jq -r '.checks[] | select(.id == "os") | .message' "$O/check.json")"
assert_eq "$(result architecture)" ok "architecture"
rc="$(cat "$O/check.rc")"
assert_eq "$(jq .exitCode "$O/check.json")" "$rc" "exitCode in the JSON vs the exit status"
errors="$(jq -r '.checks[] | select(.result == "error") | .id' "$O/check.json" | tr '\n' ' ')"
if [ $have_engine = 1 ]; then
  assert_eq "$(result engine)" ok "engine (the host's dockerd, bound into the root)"
  assert_eq "$(result engine-product)" ok "engine-product (Moby)"
  assert_eq "$rc" 0 "ledge check exit status (errors: $errors)"
else
  assert_eq "$(result engine)" error "engine (no engine here)"
  assert_eq "$rc" 1 "ledge check exit status"
fi

log "purged cleanly"
grep -q "is not installed\|not-installed" "$O/status-after" || fail "still known to dpkg: $(cat "$O/status-after")"
if ! diff "$O/before" "$O/after" > "$T/diff"; then
  cat "$T/diff" >&2
  fail "the purge left the system different from before the install"
fi
log "timings: build $((t1 - t0))s, root $((t2 - t1))s, install+check+purge $((t3 - t2))s"
[ -z "${LEDGE_KEEP_OUT:-}" ] || cp -r "$O" "$LEDGE_KEEP_OUT"
log "ok"
