# lib.sh — shared helpers for ledge's system tests: each test gets its own state and run
# directories and config, starts the real ledged (the ASan build under ./scripts/test), talks to
# it with the real CLI, and checks what the real dockerd did. Sourced, not run.
set -euo pipefail

: "${LEDGE_BUILD:?LEDGE_BUILD must point at a meson build directory}"
LEDGED="$LEDGE_BUILD/src/daemon/ledged"
LEDGE_BIN="$LEDGE_BUILD/src/cli/ledge"
SRC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=66}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:exitcode=66}"

# crun 1.8 refuses a hybrid host whose cgroup v2 hierarchy holds a controller ("drop all
# controllers from cgroupv2"). This CI machine (a container) mounts no v1 hierarchy for hugetlb,
# so hugetlb sits in v2; a systemd hybrid host has no controller there. A test on crun
# (LEDGE_OCI_RUNTIME=crun) on a hybrid host therefore runs in a mount namespace of its own in
# which each such controller gets a v1 hierarchy: the kernel moves it off v2 while that is
# mounted, and back once the namespace (and its cgroups) are gone — which happens a moment after
# a test ends, so the next test takes the ones on a v1 hierarchy nothing here mounts as well.
# Nothing else on the machine uses hugetlb.
crun_cgroups_fit() { # what oci_crun_fits() says (src/engine/oci.c)
  local fs; fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo none)
  [ "$fs" = cgroup2fs ] && return 0
  [ "$fs" = tmpfs ] || return 1
  [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] || return 0
  [ -z "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]
}
crun_cgroups_to_move() { # the v2 hierarchy's controllers, and those on a v1 one not mounted here
  { tr ' ' '\n' < /sys/fs/cgroup/unified/cgroup.controllers
    awk 'NR > 1 && $2 != 0 && $4 == 1 {print $1}' /proc/cgroups | while read -r c; do
      grep -qE "^[^ ]+ [^ ]+ cgroup ([^ ]*,)?$c(,| )" /proc/self/mounts || echo "$c"
    done; } | grep . | sort -u
}
if [ "${LEDGE_ENGINE:-}" = oci ] && [ "${LEDGE_OCI_RUNTIME:-}" = crun ] && [ "$(id -u)" = 0 ] &&
   [ -z "${LEDGE_CRUN_NS:-}" ] && [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] &&
   [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] && command -v unshare >/dev/null; then
  export LEDGE_CRUN_NS=1
  exec unshare -m --propagation private bash "$0" "$@"
fi
CRUN_CG_DIR=""
if [ -n "${LEDGE_CRUN_NS:-}" ]; then
  CRUN_CG_DIR="$(mktemp -d /tmp/ledge-crun-cg-XXXXXX)"
  # The previous crun test's hierarchy may still be dying (the kernel frees it, and moves its
  # controllers back to v2, only once its last cgroup is gone): a mount made meanwhile joins the
  # dying one and the controller lands on v2 again. Mount, check, and try again for up to 20 s.
  for _try in $(seq 1 100); do
    for c in $(crun_cgroups_to_move); do
      mkdir -p "$CRUN_CG_DIR/$c"
      mountpoint -q "$CRUN_CG_DIR/$c" && umount "$CRUN_CG_DIR/$c"
      mount -t cgroup -o "$c" "ledge-test-$c" "$CRUN_CG_DIR/$c" ||
        { echo "cannot give the cgroup controller $c a v1 hierarchy for crun" >&2; exit 1; }
    done
    crun_cgroups_fit && break
    sleep 0.2
  done
  [ "$_try" = 1 ] || echo "crun's cgroups: mounted on try $_try (a dying hierarchy)" >&2
  crun_cgroups_fit || { echo "crun still cannot use this host's cgroups: $(cat /sys/fs/cgroup/unified/cgroup.controllers)" >&2; exit 1; }
fi

TEST_NAME="$(basename "$0" .sh)"
T="$(mktemp -d /tmp/ledge-st-XXXXXX)"
LEDGED_PID=""

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# Tests skip only when the machine truly lacks something, and never in CI.
need() {
  local what="$1" why="$2"
  if ! eval "$what" >/dev/null 2>&1; then
    [ "${CI:-}" = "true" ] && fail "CI=true but $why"
    skip "$why"
  fi
}

need_docker() { need "moby info" "no usable dockerd (run scripts/start-dockerd)"; }

# The engine container modules run on: LEDGE_ENGINE=docker (default), oci or podman
# (tests/meson.build registers the variants as system-NAME-oci and system-NAME-podman). The oci
# variants point ledged's engine.uri at a socket that does not exist: nothing of theirs may need
# dockerd. The podman variants run ledged's docker engine against the test Podman's
# Docker-compatible socket (scripts/start-podman, started here); the docker CLI in this file
# then talks to Podman (DOCKER_HOST), and `moby` to dockerd (the test images are built there).
ENGINE="${LEDGE_ENGINE:-docker}"
PODMAN_SOCK=/run/ledge-test-podman.sock
MOBY_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"
moby() { DOCKER_HOST="$MOBY_HOST" command docker "$@"; }
[ "$ENGINE" = podman ] && export DOCKER_HOST="unix://$PODMAN_SOCK"
podman_up() { curl -sf --max-time 5 --unix-socket "$PODMAN_SOCK" http://d/_ping; }
podman_inspect() { podman --url "unix://$PODMAN_SOCK" inspect "$@"; } # Podman's own view
# The A record a DNS server gives for a name (podman: a network's aardvark-dns), or nothing.
dns_query() { # dns_query SERVER NAME
  python3 - "$1" "$2" <<'PY'
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x4c44, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (server, 53))
d = s.recv(512)
if struct.unpack(">H", d[6:8])[0] > 0 and d[-6:-4] == b"\0\4":
    print(socket.inet_ntoa(d[-4:]))
PY
}
need_podman() {
  podman_up >/dev/null 2>&1 || "$SRC_ROOT/scripts/start-podman" >&2 || true
  need podman_up "no usable Podman at $PODMAN_SOCK (scripts/deps --test: podman, netavark, aardvark-dns; scripts/start-podman)"
}
OCI_RUNTIME_ROOT="$T/run/oci/runtime"
oci_runtime() { # the runtime ledged runs: engine.runtime $LEDGE_OCI_RUNTIME, else what auto picks
  if [ -n "${LEDGE_OCI_RUNTIME:-}" ]; then echo "$LEDGE_OCI_RUNTIME"; return; fi
  if crun_cgroups_fit && command -v crun >/dev/null; then echo crun; else echo runc; fi
}
need_engine() {
  if [ "$ENGINE" = docker ]; then need_docker; return; fi
  if [ "$ENGINE" = podman ]; then need_podman; return; fi
  [ "$(id -u)" = 0 ] || skip "the oci engine needs root"
  need "command -v $(oci_runtime)" "the OCI runtime $(oci_runtime) is missing (scripts/deps --test)"
  need "test -x /usr/lib/cni/bridge" "the CNI plugins are missing (scripts/deps --test: containernetworking-plugins)"
  need "grep -qw overlay /proc/filesystems || modprobe overlay" "no overlayfs"
}
engine_config() {
  [ "$ENGINE" = podman ] && printf '  type: docker\n  uri: unix://%s\n' "$PODMAN_SOCK"
  [ "$ENGINE" = oci ] || return 0
  printf '  type: oci\n  uri: unix://%s/no-docker.sock\n' "$T"
  if [ -n "${LEDGE_OCI_RUNTIME:-}" ]; then printf '  runtime: %s\n' "$LEDGE_OCI_RUNTIME"; fi
}

write_config() {
  cat > "$T/config.yaml" <<YAML
state_dir: $T/state
run_dir: $T/run
log_level: debug
device:
  id: st-$TEST_NAME
  gateway_hostname: ledge-gw.local
engine:
  stop_timeout: 2s
$(engine_config)
agent:
  backoff_base: ${BACKOFF_BASE:-200ms}
  backoff_max: ${BACKOFF_MAX:-1s}
  max_restarts: ${MAX_RESTARTS:-3}
  deploy_settle: ${DEPLOY_SETTLE:-1s}
  deploy_timeout: ${DEPLOY_TIMEOUT:-30s}
${EXTRA_CONFIG:-}
YAML
}

start_ledged() {
  [ -f "$T/config.yaml" ] || write_config
  LEDGE_BOOT_ID_PATH="$T/boot_id" "$LEDGED" --config "$T/config.yaml" >>"$T/ledged.log" 2>&1 &
  LEDGED_PID=$!
  local end=$(( $(date +%s) + 30 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    # podman: ready once its engine answered too (Podman's /version and /info take a few hundred
    # ms, Moby's a few; a deploy before that plans against no containers)
    [ -S "$T/run/mgmt.sock" ] && ledge version 2>/dev/null | grep -q '^ledged [0-9]' &&
      { [ "$ENGINE" != podman ] || api GET /status 2>/dev/null | jq -e '[.engines[].connected] | all' >/dev/null; } &&
      return 0
    kill -0 "$LEDGED_PID" 2>/dev/null || { cat "$T/ledged.log" >&2; fail "ledged exited at start"; }
    sleep 0.1
  done
  cat "$T/ledged.log" >&2
  fail "ledged did not come up"
}

# Stop ledged with SIGTERM and insist that it exits cleanly (ASan reports make it exit 66).
stop_ledged() {
  [ -n "$LEDGED_PID" ] || return 0
  kill -TERM "$LEDGED_PID" 2>/dev/null || true
  local rc=0
  wait "$LEDGED_PID" || rc=$?
  LEDGED_PID=""
  if [ $rc -ne 0 ]; then
    tail -50 "$T/ledged.log" >&2
    fail "ledged exited with $rc"
  fi
}

ledge() { "$LEDGE_BIN" -H "$T/run/mgmt.sock" "$@"; }

api() { # api METHOD PATH [curl args...]
  local m="$1" p="$2"; shift 2
  curl -sS --unix-socket "$T/run/mgmt.sock" -X "$m" "http://localhost$p" "$@"
}

module_field() { # module_field NAME FIELD
  ledge list --json | jq -r --arg n "$1" --arg f "$2" '.[] | select(.name == $n) | .[$f]'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs="$1" what="$2"; shift 2
  local end=$(( $(date +%s%N) / 1000000 + secs * 1000 ))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ $(( $(date +%s%N) / 1000000 )) -ge $end ]; then
      ledge list >&2 || true
      tail -30 "$T/ledged.log" >&2
      fail "timed out after ${secs}s waiting for: $what"
    fi
    sleep 0.1
  done
}

status_is() { [ "$(module_field "$1" runtimeStatus)" = "$2" ]; }

assert_eq() { [ "$1" = "$2" ] || fail "${3:-values differ}: expected '$2', got '$1'"; }

# What the engine itself says about a module's container (not ledged's view of it).
oci_record() { # oci_record NAME: the record file of the container of that name
  local f
  for f in "$T"/state/oci/containers/*/record.json; do
    [ -f "$f" ] && [ "$(jq -r .name "$f")" = "$1" ] && { echo "$f"; return 0; }
  done
  return 1
}
container_id() {
  if [ "$ENGINE" = oci ]; then local f; f=$(oci_record "$1") && jq -r .id "$f"
  else
    # dockerd resolves a name it does not know as an id prefix ("c2" matches any container whose id
    # starts with c2), so only a container that has this very name counts.
    docker inspect -f '{{.Name}} {{.Id}}' "$1" 2>/dev/null | awk -v n="/$1" '$1 == n { print $2; f = 1 } END { exit !f }'
  fi
}
# When the engine last started NAME's container: nanoseconds since the epoch, 19 digits, so that
# values compare as numbers and as strings (the engines' RFC 3339 times drop trailing zeros of the
# fraction, which misorders them as strings).
container_started() {
  local t
  if [ "$ENGINE" = oci ]; then local f; f=$(oci_record "$1") && t=$(( $(jq -r .startedMs "$f") * 1000000 ))
  else local id; id=$(container_id "$1") && t=$(date -d "$(docker inspect -f '{{.State.StartedAt}}' "$id")" +%s%N); fi || return 1
  printf '%019d\n' "$t"
}
container_status() { # running, exited, created
  if [ "$ENGINE" = oci ]; then
    local id; id=$(container_id "$1") || return 1
    local st; st=$("$(oci_runtime)" --root "$OCI_RUNTIME_ROOT" state "$id" 2>/dev/null | jq -r .status)
    case "$st" in running) echo running ;; "") jq -r .state "$(oci_record "$1")" ;; *) echo exited ;; esac
  else local id; id=$(container_id "$1") && docker inspect -f '{{.State.Status}}' "$id"; fi
}
container_env() { # one NAME=value per line
  if [ "$ENGINE" = oci ]; then jq -r '.process.env[]' "$(dirname "$(oci_record "$1")")/config.json"
  else docker inspect "$1" | jq -r '.[0].Config.Env[]'; fi
}
container_label() { # container_label NAME KEY
  if [ "$ENGINE" = oci ]; then jq -r --arg k "$2" '.labels[$k] // empty' "$(oci_record "$1")"
  else docker inspect "$1" | jq -r --arg k "$2" '.[0].Config.Labels[$k] // empty'; fi
}
container_logs() { # what the module wrote, stdout and stderr
  if [ "$ENGINE" = oci ]; then
    local id; id=$(container_id "$1") || return 1
    cat "$T/state/oci/logs/$id.log" 2>/dev/null | sed -E 's/^[^ ]+ (stdout|stderr) [FP] ?//'
  else docker logs "$1" 2>&1; fi
}
container_exists() { container_id "$1" >/dev/null 2>&1 && [ -n "$(container_id "$1")" ]; }
# Stop containers behind ledged's back (a reboot, as tests simulate it).
containers_stop() {
  local n id
  for n in "$@"; do
    if [ "$ENGINE" = oci ]; then
      id=$(container_id "$n")
      "$(oci_runtime)" --root "$OCI_RUNTIME_ROOT" kill "$id" KILL 2>/dev/null || true
    else docker stop -t 1 "$n" >/dev/null; fi
  done
  if [ "$ENGINE" = oci ]; then
    for n in "$@"; do wait_for 20 "$n stopped" not_running "$n"; done
  fi
}
not_running() { [ "$(container_status "$1")" != running ]; }
# A reboot as far as the engine can tell, with ledged stopped: the modules' containers stop
# (docker: stopped; oci: killed, and with them the keeper, the mounts, the network namespaces
# and everything under the run directory, which is a tmpfs on a real machine).
simulate_reboot() { # simulate_reboot BOOT_ID MODULES...
  local boot="$1"; shift
  if [ "$ENGINE" = oci ]; then
    containers_stop "$@"
    pkill -KILL -f "ledge-keeper --state $T/" 2>/dev/null || true
    oci_cleanup
    rm -rf "$T/run/oci"
  else
    docker stop -t 1 "$@" >/dev/null
  fi
  echo "$boot" > "$T/boot_id"
}
# The image a test runs, in the engine's store (docker: scripts/build-images; oci: loaded from
# a `docker save` archive made once per build, so that ledged needs no dockerd).
need_image() { # need_image NAME
  local img="$1"
  if [ "$ENGINE" != oci ] || ! command -v docker >/dev/null 2>&1 || ! moby image inspect "$img" >/dev/null 2>&1; then
    moby image inspect "$img" >/dev/null 2>&1 || DOCKER_HOST="$MOBY_HOST" "$SRC_ROOT/scripts/build-images" >/dev/null
  fi
  [ "$ENGINE" = docker ] && return 0
  local cache="$LEDGE_BUILD/tests/images"
  mkdir -p "$cache"
  local id; id=$(moby image inspect -f '{{.Id}}' "$img" 2>/dev/null | cut -c8-19)
  local tar="$cache/${img//[:\/]/_}-$id.tar"
  [ -s "$tar" ] || { moby save "$img" > "$tar.tmp" && mv "$tar.tmp" "$tar"; }
  if [ "$ENGINE" = podman ]; then
    # podman: loaded through its API (it names a short name localhost/NAME; the same image
    # id as dockerd's, so loading again is a no-op)
    [ "$(docker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" = "$(moby image inspect -f '{{.Id}}' "$img")" ] && return 0
    curl -sSf --unix-socket "$PODMAN_SOCK" -X POST -H 'Content-Type: application/x-tar' \
      --data-binary @"$tar" http://d/v1.41/images/load >/dev/null || fail "cannot load $img into Podman"
    return 0
  fi
  "$LEDGE_BUILD/src/engine/ledge-image-helper" load "$T/state/oci/images" "$tar" >/dev/null ||
    fail "cannot load $img into the oci engine's store"
}

# A manifest with the given modules JSON (the inside of "modules": {...}). Given ROUTES_JSON (an
# object), ledge's hub runs too: the edgeHub system module with those routes, store-and-forward
# settings SAF_JSON (default: a 7200 s time to live) and $edgeHub schemaVersion SCHEMA (1.1).
manifest() { # manifest MODULES_JSON [ROUTES_JSON [SAF_JSON [SCHEMA]]]
  local hub="" routes="{}" saf='{"timeToLiveSecs": 7200}' schema="1.1"
  if [ $# -ge 2 ]; then
    hub=', "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.4"}}'
    routes="$2" saf="${3:-$saf}" schema="${4:-$schema}"
  fi
  cat <<JSON
{"modulesContent": {
  "\$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1",
    "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.4"}}$hub},
    "modules": {$1}}},
  "\$edgeHub": {"properties.desired": {"schemaVersion": "$schema", "routes": $routes,
    "storeAndForwardConfiguration": $saf}}
}}
JSON
}

# A testmod module: testmod NAME [STATUS] [ORDER] [EXTRA_ENV_JSON] [RESTART]
testmod() {
  local name="$1" status="${2:-running}" order="${3:-4294967295}" env="${4:-}" rp="${5:-always}"
  printf '"%s": {"type": "docker", "status": "%s", "restartPolicy": "%s", "imagePullPolicy": "never", "startupOrder": %s, "settings": {"image": "ledge-testmod:latest"}, "env": {"TESTMOD_MARK": {"value": "%s"}%s}}' \
    "$name" "$status" "$rp" "$order" "$name" "${env:+, $env}"
}

deploy() { # deploy MODULES_JSON [DEPLOY_ARGS...] — writes and applies
  manifest "$1" > "$T/deploy.json"
  shift
  ledge deploy "$@" "$T/deploy.json"
}

# The oci engine's leftovers of this test: containers (killed, the runtime's state deleted),
# mounts under $T (rootfs overlays, network namespaces; lazily), the keeper (pkill below), and
# the CNI plugins' iptables rules for the containers that never got their DEL.
oci_cleanup() ( # a subshell: nothing in it may end the test
  set +e
  local rt; rt=$(oci_runtime)
  local d id
  for d in "$OCI_RUNTIME_ROOT"/*/; do
    [ -d "$d" ] || continue
    id=$(basename "$d")
    "$rt" --root "$OCI_RUNTIME_ROOT" kill "$id" KILL >/dev/null 2>&1
    "$rt" --root "$OCI_RUNTIME_ROOT" delete --force "$id" >/dev/null 2>&1
  done
  for id in $(ls "$T/run/oci/cni/results" 2>/dev/null | sed 's/\.json$//'); do
    local tbl
    for tbl in nat filter; do
      local chains; chains=$(iptables -t $tbl -S 2>/dev/null | grep -- "$id" | grep -o -- '-j CNI-[0-9a-f]*' | cut -c4- | sort -u)
      iptables -t $tbl -S 2>/dev/null | grep -- "$id" | sed 's/^-A /-D /' |
        while read -r rule; do eval iptables -t $tbl "$rule" 2>/dev/null; done
      for c in $chains; do iptables -t $tbl -F "$c" 2>/dev/null; iptables -t $tbl -X "$c" 2>/dev/null; done
    done
  done
  findmnt -rn -o TARGET | grep "^$T/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
)

cleanup() {
  local rc=$?
  set +e
  if [ "$ENGINE" = oci ] && ls "$T"/state/oci/containers/*/record.json >/dev/null 2>&1; then
    # ledged removes its containers best (CNI DEL for each, in order): one is started for it
    # when the test stopped its own
    if [ -z "$LEDGED_PID" ] || ! kill -0 "$LEDGED_PID" 2>/dev/null; then
      LEDGE_BOOT_ID_PATH="$T/boot_id" "$LEDGED" --config "$T/config.yaml" >>"$T/ledged.log" 2>&1 &
      LEDGED_PID=$!
      local end=$(( $(date +%s) + 15 ))
      while [ "$(date +%s)" -lt "$end" ] && ! "$LEDGE_BIN" -H "$T/run/mgmt.sock" version >/dev/null 2>&1; do sleep 0.1; done
    fi
    manifest "" > "$T/empty.json"
    timeout 30 "$LEDGE_BIN" -H "$T/run/mgmt.sock" deploy "$T/empty.json" >/dev/null 2>&1
  fi
  if [ -n "$LEDGED_PID" ]; then
    kill -TERM "$LEDGED_PID" 2>/dev/null
    wait "$LEDGED_PID" 2>/dev/null
  fi
  # oci: what this test's ledged left (containers, mounts, namespaces, the keeper)
  if [ "$ENGINE" = oci ] && [ -d "$T/run/oci" ]; then oci_cleanup; fi
  # Containers this test's ledged created: its device label, never another instance's.
  local ids=""
  [ "$ENGINE" != oci ] && ids=$(docker ps -aq --filter label=dev.ledge.owner=ledge --filter "label=dev.ledge.device=st-$TEST_NAME" 2>/dev/null)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  pkill -f "$T/" 2>/dev/null
  # process modules outlive ledged by design: the ones this test's ledged started carry its
  # config in their environment (a script that exec'd another program has no $T in its argv)
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "LEDGE_CONFIG=$T/config.yaml" &&
      kill -KILL "${p#/proc/}" 2>/dev/null
  done
  if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ -f "$T/ledged.log" ]; then
    log "ledged log tail:"; tail -40 "$T/ledged.log" >&2
  fi
  if grep -q "ERROR: AddressSanitizer\|runtime error:" "$T/ledged.log" 2>/dev/null; then
    log "sanitizer report in ledged.log"; grep -A20 "AddressSanitizer\|runtime error:" "$T/ledged.log" >&2
    rc=1
  fi
  rm -rf "$T"
  if [ -n "$CRUN_CG_DIR" ]; then
    for p in "$CRUN_CG_DIR"/*; do umount "$p" 2>/dev/null && rmdir "$p"; done
    rmdir "$CRUN_CG_DIR" 2>/dev/null
  fi
  exit $rc
}
trap cleanup EXIT
echo "boot-1" > "$T/boot_id"
