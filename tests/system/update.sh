#!/usr/bin/env bash
# `ledge update` with automatic rollback (docs/update.md), in a throw-away Debian 12 root (like
# package.sh) with the host's dockerd bound in and no systemd, in a PID namespace of its own so
# that everything it started dies with it. One build of the package (scripts/build-deb), repacked
# with dpkg-deb as other versions: a good one, one whose ledged exits at start and one whose hub
# does. Checked: a good update keeps every module's container, restarts ledged and the hub on the
# new programs, and the new version answers; a broken update exits non-zero saying why, and the
# previous version runs again with the same containers; an updater killed right after each step
# of its journal is finished by `ledge update --resume` or by the next start of ledged, and ends
# in one consistent, installed and running version. `ledge update --apt` from a local apt
# repository: refused without one, a failed download changes nothing, an upgrade, "up to date".
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || need false "the update test needs root (debootstrap, chroot, mounts, dpkg)"
need "command -v debootstrap" "debootstrap is not installed (scripts/deps --test)"
need "command -v dpkg-shlibdeps" "dpkg-dev is not installed (scripts/deps --test)"
[ "$(dpkg --print-architecture)" = amd64 ] || skip "the update test installs the amd64 package"
need_docker
need_image ledge-testmod:latest

t0=$(date +%s)
log "building the amd64 package (reused when nothing changed)"
deb="$("$SRC_ROOT/scripts/build-deb" amd64)" || fail "scripts/build-deb amd64 failed"
t1=$(date +%s)

# The versions, repacked from the one build: only the control file (and, for the broken ones,
# one program) differ.
P="$T/pkg"
mkdir -p "$P" "$T/out"
v1="$(dpkg-deb -f "$deb" Version)"
base="${v1%-*}"
repack() { # repack VERSION OUT [PROGRAM-TO-BREAK]
  local x="$T/x-$1"
  dpkg-deb -R "$deb" "$x"
  sed -i "s/^Version: .*/Version: $1/" "$x/DEBIAN/control"
  if [ -n "${3:-}" ]; then
    printf '#!/bin/sh\necho "%s: broken on purpose (tests/system/update.sh)" >&2\nexit 3\n' \
      "$(basename "$3")" > "$x$3"
  fi
  dpkg-deb --root-owner-group -Zgzip -z1 -b "$x" "$P/$2" >/dev/null
  rm -rf "$x"
}
cp "$deb" "$P/v1.deb"
repack "$base-2" v2.deb
repack "$base-3" broken-ledged.deb /usr/sbin/ledged
repack "$base-4" broken-hub.deb /usr/lib/ledge/ledge-hub
repack "$base-5" v5.deb
# A local apt repository (Packages from dpkg-scanpackages) offering a newer good version.
mkdir -p "$P/repo"
repack "$base-6" "repo/ledge_$base-6_amd64.deb"
(cd "$P/repo" && dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null) ||
  fail "dpkg-scanpackages failed"

# A root with the package's dependencies, dpkg-repack and jq, made once and cached; each run is
# a throw-away layer over it.
deps=$(dpkg-deb -f "$deb" Depends | sed -e 's/([^)]*)//g' -e 's/|[^,]*//g' -e 's/,/ /g')
root=/var/cache/ledge/update-root
"$SRC_ROOT/scripts/debian-root" create "$root" $deps dpkg-repack jq >/dev/null ||
  fail "cannot make the Debian root $root"
t2=$(date +%s)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
TLS_PORT=$(free_port)
PLAIN_PORT=$(free_port)
cat > "$P/config.yaml" <<YAML
log_level: debug
device:
  id: st-$TEST_NAME
  gateway_hostname: ledge-gw.local
engine:
  stop_timeout: 2s
agent:
  backoff_base: 200ms
  backoff_max: 1s
hub:
  tls_port: $TLS_PORT
  plain_port: $PLAIN_PORT
YAML
manifest "$(testmod one), $(testmod two)" '{"all": "FROM /messages/* INTO $upstream"}' > "$P/deploy.json"

cat > "$P/inside.sh" <<'INSIDE'
set -u
export DEBIAN_FRONTEND=noninteractive
STEP=""
say() { printf '[inside] %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; tail -30 /var/log/ledged.log >&2; echo "FAIL: $*" > /out/result; exit 1; }
running_ledged() { ledge system status --json 2>/dev/null | jq -r .pid; }
start_ledged() {
  setsid /usr/sbin/ledged --config /etc/ledge/config.yaml >>/var/log/ledged.log 2>&1 < /dev/null &
  for _ in $(seq 300); do [ -n "$(running_ledged)" ] && return 0; sleep 0.1; done
  fail "ledged did not come up"
}
ids() { ledge list --json | jq -r 'sort_by(.name) | .[] | "\(.name)=\(.containerId)"' | tr '\n' ' '; }
all_running() { [ "$(ledge list --json | jq '[.[] | select(.runtimeStatus != "running")] | length')" = 0 ]; }
installed() { dpkg-query -W -f '${Version} ${Status}' ledge; }
replaced() { readlink "/proc/$1/exe" | grep -q deleted; }
hub_pid() { ledge hub status --json | jq -r .pid; }
wait_until() { # wait_until SECONDS WHAT COMMAND...
  local n=$(( $1 * 10 )) what="$2"; shift 2
  for _ in $(seq $n); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "timed out waiting for: $what"
}
# The runtime is one consistent version: installed and configured, ledged and the hub running
# its programs, every module running in the container it had at the start.
consistent() { # consistent VERSION
  assert "$(installed)" "$1 install ok installed" "the installed package"
  local p; p=$(running_ledged)
  [ -n "$p" ] || fail "ledged does not answer"
  replaced "$p" && fail "ledged runs a replaced program"
  wait_until 20 "every module running" all_running
  assert "$(ids)" "$IDS" "the modules' containers"
  local h; h=$(hub_pid)
  [ -n "$h" ] && [ "$h" != null ] || fail "the hub does not answer"
  replaced "$h" && fail "the hub runs a replaced program"
  return 0
}
assert() { [ "$1" = "$2" ] || fail "${3:-}: expected '$2', got '$1'"; }
update() { # update ARGS... — the output in /tmp/update.out, the exit status in $rc
  rc=0
  ledge update "$@" > /tmp/update.out 2>&1 || rc=$?
  cat /tmp/update.out >> /out/update.log
}

say "install the first version with dpkg, start ledged by hand (no systemd here), deploy"
dpkg -i /pkg/v1.deb > /out/install.log 2>&1 || fail "dpkg -i v1: $(tail -5 /out/install.log)"
cp /pkg/config.yaml /etc/ledge/config.yaml
start_ledged
ledge deploy /pkg/deploy.json > /out/deploy.log 2>&1 || fail "deploy: $(cat /out/deploy.log)"
wait_until 60 "every module running" all_running
IDS=$(ids)
echo "$IDS" | grep -q "edgeHub=proc-" || fail "no hub among the modules: $IDS"
V1=$(dpkg-deb -f /pkg/v1.deb Version); V2=$(dpkg-deb -f /pkg/v2.deb Version)
VB=$(dpkg-deb -f /pkg/broken-ledged.deb Version); VH=$(dpkg-deb -f /pkg/broken-hub.deb Version)
V5=$(dpkg-deb -f /pkg/v5.deb Version)

say "a good update: $V1 -> $V2"
old_ledged=$(running_ledged); old_hub=$(hub_pid)
update /pkg/v2.deb
[ $rc = 0 ] || fail "ledge update v2 exited $rc: $(cat /tmp/update.out)"
grep -q "packed the installed ledge $V1 again with dpkg-repack" /tmp/update.out ||
  fail "no copy of $V1 was made: $(cat /tmp/update.out)"
grep -q "is installed and healthy" /tmp/update.out || fail "no success line: $(cat /tmp/update.out)"
consistent "$V2"
[ "$(running_ledged)" != "$old_ledged" ] || fail "ledged was not restarted"
[ "$(hub_pid)" != "$old_hub" ] || fail "the hub was not restarted"
ledge version | grep -q "^ledged " || fail "the new ledged does not answer ledge version"
assert "$(ledge update --status --json | jq -r .step)" done "the journal's last step"
[ -f "/var/lib/ledge/updates/ledge_${V1}_amd64.deb" ] || fail "the previous package is not kept"

say "a broken update: ledged $VB exits at start"
update --deadline 20s /pkg/broken-ledged.deb
[ $rc = 1 ] || fail "ledge update of a broken ledged exited $rc: $(cat /tmp/update.out)"
grep -q "update failed and was rolled back: ledged exited at start" /tmp/update.out ||
  fail "no reason given: $(cat /tmp/update.out)"
grep -q "rolled back to ledge $V2" /tmp/update.out || fail "no rollback said: $(cat /tmp/update.out)"
consistent "$V2"
grep -q "ledged: broken on purpose" /var/log/ledged.log || fail "the broken ledged never ran"

say "a broken update: the hub $VH exits at start"
update --deadline 8s /pkg/broken-hub.deb
[ $rc = 1 ] || fail "ledge update of a broken hub exited $rc: $(cat /tmp/update.out)"
grep -q "update failed and was rolled back: the hub" /tmp/update.out ||
  fail "no reason given: $(cat /tmp/update.out)"
consistent "$V2"

say "the installed version again is refused before anything changes"
update /pkg/v2.deb
[ $rc = 1 ] && grep -q "ledge $V2 is installed already" /tmp/update.out ||
  fail "updating to the installed version: $rc $(cat /tmp/update.out)"

# Killed right after journaling step N (1 prepared .. 5 checking, 6 done, 7 rolling back), then
# finished by a restart of ledged (killed too, as by a power cut) after steps 1, 3 and 5, by
# `ledge update --resume` after the others (after 7 the installed ledged is the broken one, which
# cannot start to resume anything).
cur="$V2"
for n in 1 2 3 4 5 6 7; do
  if [ $n = 7 ]; then target=/pkg/broken-ledged.deb
  elif [ "$cur" = "$V2" ]; then target=/pkg/v5.deb
  else target=/pkg/v2.deb; fi
  tv=$(dpkg-deb -f "$target" Version)
  say "killed after step $n of $cur -> $tv"
  rc=0
  LEDGE_UPDATE_STOP_AT=$n ledge update --deadline 20s "$target" > /tmp/update.out 2>&1 || rc=$?
  cat /tmp/update.out >> /out/update.log
  assert "$rc" 137 "the updater's exit status when killed after step $n ($(tail -1 /tmp/update.out))"
  step=$(ledge update --status --json | jq -r .step)
  if [ $n != 1 ] && [ $n != 3 ] && [ $n != 5 ]; then
    update --resume
    [ $rc = 0 ] || fail "ledge update --resume after step $n exited $rc: $(cat /tmp/update.out)"
  else
    p=$(running_ledged)
    [ -n "$p" ] && kill -9 "$p"
    start_ledged
    wait_until 90 "the resumed update finished" sh -c \
      '[ "$(ledge update --status --json | jq -r .step)" = done ] || [ "$(ledge update --status --json | jq -r .step)" = rolled-back ]'
    cat /var/lib/ledge/updates/resume.log >> /out/update.log 2>/dev/null
  fi
  final=$(ledge update --status --json | jq -r .step)
  case "$step" in
    done) want="$tv"; assert "$final" done "after a kill once done" ;;
    *) want="$cur"; assert "$final" rolled-back "the journal after resuming from $step" ;;
  esac
  wait_until 30 "ledged answers after resuming" running_ledged
  consistent "$want"
  say "  journal was at $step: now $want, $(ledge update --status | head -1 | cut -c1-160)"
  cur="$want"
done

# From apt (`ledge update --apt`): refused without a repository offering ledge; a failed download
# names the package and apt's error and changes nothing; then the upgrade, and "up to date".
V6=$(dpkg-deb -f /pkg/repo/ledge_*.deb Version)
say "ledge update --apt with no repository offering ledge"
update --apt
[ $rc = 1 ] && grep -q "no apt repository offers the package ledge" /tmp/update.out ||
  fail "--apt without a repository: $rc $(cat /tmp/update.out)"
cp -r /pkg/repo /srv/ledge-repo
echo 'deb [trusted=yes] file:/srv/ledge-repo ./' > /etc/apt/sources.list.d/ledge.list
# only the local list: the root's Debian lists stay as they are (no network)
apt-get update -o Dir::Etc::sourcelist=sources.list.d/ledge.list -o Dir::Etc::sourceparts=- \
  -o APT::Get::List-Cleanup=0 > /out/apt-update.log 2>&1 || fail "apt-get update: $(tail -5 /out/apt-update.log)"
say "ledge update --apt whose download fails"
mv "/srv/ledge-repo/ledge_${V6}_amd64.deb" /tmp/held.deb
update --apt
[ $rc = 1 ] && grep -q "downloading the package ledge=$V6 failed: apt-get: exit status 100: E: Failed to fetch" /tmp/update.out ||
  fail "--apt with a failing download: $rc $(cat /tmp/update.out)"
[ ! -e /var/lib/ledge/updates/apt ] || fail "the download folder was left behind"
consistent "$cur"
mv /tmp/held.deb "/srv/ledge-repo/ledge_${V6}_amd64.deb"
say "ledge update --apt: $cur -> $V6"
old_ledged=$(running_ledged); old_hub=$(hub_pid)
update --apt
[ $rc = 0 ] || fail "ledge update --apt exited $rc: $(cat /tmp/update.out)"
grep -q "downloading ledge $V6 with apt-get" /tmp/update.out &&
  grep -q "ledge $V6 is installed and healthy" /tmp/update.out ||
  fail "no download or success line: $(cat /tmp/update.out)"
consistent "$V6"
[ "$(running_ledged)" != "$old_ledged" ] || fail "ledged was not restarted"
[ "$(hub_pid)" != "$old_hub" ] || fail "the hub was not restarted"
assert "$(ledge update --status --json | jq -r .step)/$(ledge update --status --json | jq -r .toVersion)" \
  "done/$V6" "the journal after --apt"
[ ! -e /var/lib/ledge/updates/apt ] || fail "the download folder was left behind"
say "ledge update --apt again: up to date"
update --apt
[ $rc = 0 ] && grep -q "ledge $V6 is up to date" /tmp/update.out ||
  fail "--apt when up to date: $rc $(cat /tmp/update.out)"
consistent "$V6"
echo ok > /out/result
INSIDE

log "in a fresh Debian 12 root ($root, overlay, its own PID namespace)"
binds=(--bind "$P:/pkg:ro" --bind "$T/out:/out" --bind "/var/run/docker.sock:/run/docker.sock")
rc=0
unshare --pid --fork --kill-child -- "$SRC_ROOT/scripts/debian-root" run --overlay "${binds[@]}" \
  "$root" -- bash /pkg/inside.sh > "$T/inside.log" 2>&1 || rc=$?
t3=$(date +%s)
cat "$T/inside.log" >&2
[ "$(cat "$T/out/result" 2>/dev/null)" = ok ] && [ $rc = 0 ] || {
  tail -60 "$T/out/update.log" >&2 2>/dev/null
  fail "$(cat "$T/out/result" 2>/dev/null || echo "the run inside the root failed ($rc)")"
}
log "timings: package $((t1 - t0))s, root $((t2 - t1))s, updates $((t3 - t2))s"
log "ok"
