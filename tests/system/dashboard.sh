#!/usr/bin/env bash
# The web dashboard end to end (docs/dashboard.md): ledged serves it on dashboard.listen; Debian's
# Chromium, headless, driven by playwright-core (tests/system/dashboard.js) logs in with a token
# from `ledge dashboard token`, deploys a manifest with an error and sees it at its JSON path,
# fixes it, sees the plan, applies it, follows a module's logs, stops and starts it and rolls back
# to an earlier deployment (not the previous one) from the history, its plan first; on the twins
# page it edits a module's and a leaf device's desired properties (seen by `ledge twin get`) and
# invokes a method on a module (tests/node/method-echo.js answering as it); on the VMs page
# (a fake QEMU, as vm-supervisor.sh) it changes a VM's CPUs, starts it, adds a port forward,
# reads its console, stops it and creates another from the cached image. Beside the browser, with curl: nothing but the login
# page answers without a session, a change without the CSRF header or from another origin is
# refused, a revoked token's session ends. Then remote management: a second ledged (dashboard on
# 0.0.0.0, so TLS) added in the browser by address and its token, its key pinned, its pages and
# a module managed through this one; with curl, the proxy's CSRF check, the bearer token, and a
# changed key refused. The fleet page: this device, the second ledged and a third that stopped
# answering (tests/system/dashboard-fake-device.py) side by side, with their VMs — the dead one
# shown unreachable (timeout, later refused) without holding up the others; a VM of the second
# ledged restarted and one of this device deleted from there, a VM rebooted and deleted through
# the proxy. DASHBOARD_SHOTS=DIR copies the screenshots there (docs/images holds the
# ones docs/dashboard.md shows).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/vm-lib.sh"
jq_true() { local out; out=$(jq -c "$@" 2>/dev/null) || return 1; [ "${out##*$'\n'}" = true ]; }
need "command -v jq && command -v curl && command -v gcc" "no jq, curl or gcc"
need "command -v node && command -v npm" "no node/npm (scripts/deps --test)"
need "test -x /usr/bin/chromium" "no /usr/bin/chromium (scripts/deps --test)"
"$SRC_ROOT/src/dashboard/web/install" >&2 || fail "cannot install src/dashboard/web's packages (npm ci)"
for f in preact.js uplot.js; do
  [ -f "$LEDGE_BUILD/src/dashboard/www/$f" ] ||
    fail "the build has no dashboard/www/$f (meson setup before src/dashboard/web/install?)"
done

# The modules are tests/images/testmod as native programs (the process engine): the dashboard is
# the same on every engine, and this test needs no container engine (engine.uri points nowhere).
mkdir -p "$T/bin"
gcc -O2 -o "$T/bin/testmod" "$SRC_ROOT/tests/images/testmod/testmod.c" || fail "cannot build testmod"
procmod() { # procmod NAME [PRINT_MS]
  printf '"%s": {"type": "process", "status": "running", "restartPolicy": "always", "settings": {"path": "%s"}, "env": {"TESTMOD_MARK": {"value": "%s"}, "TESTMOD_PRINT_MS": {"value": "%s"}}}' \
    "$1" "$T/bin/testmod" "$1" "${2:-1000}"
}
engine_config() { printf '  uri: unix://%s/no-docker.sock\n' "$T"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
# The hub runs (its twins and direct methods are a page), on ports of its own.
HUB_TLS_PORT=$(free_port) HUB_PLAIN_PORT=$(free_port) HUB_WS_PORT=$(free_port) HUB_AMQP_PORT=$(free_port)
EXTRA_CONFIG="dashboard:
  listen: 127.0.0.1:$PORT
  chart_interval: 1s
hub:
  tls_port: $HUB_TLS_PORT
  plain_port: $HUB_PLAIN_PORT
  websocket_port: $HUB_WS_PORT
  amqp_port: $HUB_AMQP_PORT"
# A VM for the VMs page: a fake image and QEMU (tests/system/vm-fake-qemu.py, as
# vm-supervisor.sh), in this ledged's VMs' directory ($T/state/vm, vm-lib.sh).
CACHE="$T/cache"
export LEDGE_VM_CACHE="$CACHE"
KEY=amd64-0123456789abcdef
mkdir -p "$CACHE/$KEY"
truncate -s 1M "$CACHE/$KEY/rootfs.img"
echo kernel > "$CACHE/$KEY/kernel"
echo initrd > "$CACHE/$KEY/initrd.img"
echo '{"arch": "amd64", "key": "'$KEY'", "ledge": "test", "built": "2026-01-01T00:00:00Z"}' > "$CACHE/$KEY/manifest.json"
printf '#!/bin/sh\nexec python3 "%s/tests/system/vm-fake-qemu.py" "$@"\n' "$SRC_ROOT" > "$T/bin/qemu-system-x86_64"
chmod +x "$T/bin/qemu-system-x86_64"
export PATH="$T/bin:$PATH"
VM_HUB_PORT=$(free_port) VM_MAN_PORT=$(free_port)
vm create f1 --image "$KEY" --accel tcg --disk 2G --hub-port "$VM_HUB_PORT" --boot-timeout 10 >/dev/null ||
  fail "vm create f1"

write_config
start_ledged
wait_for 10 "the dashboard listening" curl -s -o /dev/null "$URL/login"
# Deployments with the hub (lib.sh's manifest with routes: systemModules.edgeHub); web's
# messages go upstream, where they stay queued (no upstream link): the charts' queue depth.
ROUTES='{"up": "FROM /messages/modules/web/* INTO $upstream"}'
hub_deploy() { manifest "$1" "$ROUTES" > "$T/deploy.json"; ledge deploy "$T/deploy.json"; }

log "the earlier deployments: web and old (the one the browser rolls back to), then web alone"
hub_deploy "$(procmod web), $(procmod old 5000)" > "$T/deploy1.out" 2>&1 || { cat "$T/deploy1.out" >&2; fail "first deploy"; }
FIRST_ID=$(api GET /deployments | jq -r .current)
hub_deploy "$(procmod web)" > "$T/deploy2.out" 2>&1 || { cat "$T/deploy2.out" >&2; fail "second deploy"; }
wait_for 30 "web running" status_is web running
wait_for 30 "the hub answering" bash -c "'$LEDGE_BIN' -H '$T/run/mgmt.sock' hub status --json >/dev/null 2>&1"

log "web's direct methods: tests/node/method-echo.js connected to the hub as web; a leaf device"
"$SRC_ROOT/tests/node/install" >&2 || fail "cannot install tests/node's packages"
ledge token web --json > "$T/web.token.json" || fail "ledge token web"
NODE_PATH="$SRC_ROOT/tests/node/node_modules" node "$SRC_ROOT/tests/node/method-echo.js" \
  --port "$HUB_TLS_PORT" --ca "$T/state/certs/trust-bundle.pem" --device "st-$TEST_NAME" --module web \
  --token "$(jq -r .token "$T/web.token.json")" --telemetry-ms 200 > "$T/echo.out" 2>&1 &
ECHO_PID=$!
for _ in $(seq 100); do grep -q '"event":"ready"' "$T/echo.out" && break; sleep 0.2; done
grep -q '"event":"ready"' "$T/echo.out" ||
  { cat "$T/echo.out" >&2; tail -20 "$T/state/process/edgeHub.log" >&2; fail "method-echo did not connect"; }
ledge device add leaf1 > /dev/null || fail "ledge device add leaf1"

# The browser's manifests: two added, first with a restartPolicy that does not exist.
manifest "$(procmod web), $(procmod two 200)" "$ROUTES" > "$T/good.json"
jq '.modulesContent["$edgeAgent"]["properties.desired"].modules.two.restartPolicy = "sometimes"' \
  "$T/good.json" > "$T/bad.json"

log "without a session: only the login page, its script and the stylesheet"
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
for p in /login /login.js /style.css; do assert_eq "$(code "$URL$p")" 200 "GET $p"; done
for p in / /index.html /app.js /api.js /preact.js /nosuch.js; do
  assert_eq "$(code "$URL$p")" 303 "GET $p without a session"
done
curl -s -D "$T/h" -o /dev/null "$URL/"
grep -qi '^location: /login' "$T/h" || fail "no redirect to /login: $(cat "$T/h")"
grep -q '^HTTP/1.1 303 See Other' "$T/h" || fail "the 303's reason: $(head -1 "$T/h")"
for p in /api/modules /api/deployment /api/deployments /api/systeminfo /api/session /api/host; do
  assert_eq "$(code "$URL$p")" 401 "GET $p without a session"
done
assert_eq "$(code -X POST -H "Origin: $URL" "$URL/api/modules/web/stop")" 401 "POST without a session"
assert_eq "$(code -X POST -H "Origin: $URL" -H 'Content-Type: application/json' \
  -d '{"token": "ldt_x"}' "$URL/login")" 401 "login with a wrong token"

log "tokens: ledge dashboard token, tokens, --revoke"
ledge dashboard token > "$T/token" 2> "$T/token.err" || fail "ledge dashboard token: $(cat "$T/token.err")"
TOKEN=$(cat "$T/token")
grep -q "for $URL/" "$T/token.err" || fail "the token's URL: $(cat "$T/token.err")"
ledge dashboard tokens --json > "$T/tokens.json" || fail "ledge dashboard tokens"
jq_true '.tokens | length == 1' "$T/tokens.json" || fail "tokens: $(cat "$T/tokens.json")"
! grep -rq "$TOKEN" "$T/state" || fail "the token is stored in clear in the state directory"

login() { # login TOKEN COOKIE_JAR → the CSRF token
  curl -sf -c "$2" -H "Origin: $URL" -H 'Content-Type: application/json' \
    -d "{\"token\": \"$1\"}" "$URL/login" | jq -r .csrf
}
CSRF=$(login "$TOKEN" "$T/jar") || fail "curl login"
[ -n "$CSRF" ] && [ "$CSRF" != null ] || fail "no CSRF token from /login"
grep -q 'HttpOnly' "$T/jar" || grep -q '#HttpOnly_' "$T/jar" || fail "the session cookie is not HttpOnly"
assert_eq "$(code -b "$T/jar" "$URL/api/modules")" 200 "GET /api/modules with the session"
assert_eq "$(code -b "$T/jar" -X POST -H "Origin: $URL" "$URL/api/modules/web/restart")" 403 \
  "POST without X-CSRF-Token"
assert_eq "$(code -b "$T/jar" -X POST -H "Origin: http://evil.example" -H "X-CSRF-Token: $CSRF" \
  "$URL/api/modules/web/restart")" 403 "POST from another origin"
assert_eq "$(code -b "$T/jar" -X POST -H "X-CSRF-Token: $CSRF" "$URL/api/modules/web/restart")" 403 \
  "POST without an Origin"
assert_eq "$(code -b "$T/jar" "$URL/api/dashboard/tokens")" 404 "minting tokens is not under /api"
[ "$(module_field web restartCount)" = 0 ] || fail "a refused POST restarted web"
log "a revoked token's session ends"
ID=$(jq -r '.tokens[0].id' "$T/tokens.json")
ledge dashboard token --revoke "$ID" >/dev/null || fail "revoke"
assert_eq "$(code -b "$T/jar" "$URL/api/modules")" 401 "the revoked token's session"
assert_eq "$(code -H "Origin: $URL" -H 'Content-Type: application/json' \
  -d "{\"token\": \"$TOKEN\"}" "$URL/login")" 401 "login with the revoked token"

log "a second ledged to manage remotely: its dashboard on a non-loopback address, so TLS only"
R2="$T/r2"
R2_PID=""
mkdir -p "$R2"
PORT2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$R2/config.yaml" <<YAML
state_dir: $R2/state
run_dir: $R2/run
log_level: debug
device:
  id: st-$TEST_NAME-r2
  gateway_hostname: ledge-r2.local
engine:
  uri: unix://$R2/no-docker.sock
agent:
  deploy_settle: 1s
dashboard:
  listen: 0.0.0.0:$PORT2
YAML
r2() { "$LEDGE_BIN" -H "$R2/run/mgmt.sock" "$@"; }
start_r2() {
  LEDGE_BOOT_ID_PATH="$T/boot_id" "$LEDGED" --config "$R2/config.yaml" >>"$R2/ledged.log" 2>&1 &
  R2_PID=$!
  wait_for 30 "the second ledged" bash -c "'$LEDGE_BIN' -H '$R2/run/mgmt.sock' version | grep -q '^ledged '"
  wait_for 10 "its dashboard (TLS)" curl -sk -o /dev/null "https://127.0.0.1:$PORT2/login"
}
stop_r2() {
  [ -n "$R2_PID" ] || return 0
  kill -TERM "$R2_PID"
  local rc=0
  wait "$R2_PID" || rc=$?
  R2_PID=""
  [ $rc = 0 ] || { tail -30 "$R2/ledged.log" >&2; fail "the second ledged exited with $rc"; }
}
r2_cleanup() {
  [ -n "$R2_PID" ] && kill -KILL "$R2_PID" 2>/dev/null
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qx "LEDGE_CONFIG=$R2/config.yaml" &&
      kill -KILL "${p#/proc/}" 2>/dev/null
  done
  [ -n "${FAKE3_PID:-}" ] && kill -KILL "$FAKE3_PID" 2>/dev/null
  pkill -9 -f -- "$R2/state/vm/" 2>/dev/null || true
  grep -q "ERROR: AddressSanitizer\|runtime error:" "$R2/ledged.log" 2>/dev/null &&
    { grep -A20 "AddressSanitizer\|runtime error:" "$R2/ledged.log" >&2; return 1; }
  return 0
}
trap 'rc=$?; r2_cleanup || rc=1; (exit $rc); vm_cleanup || rc=1; (exit $rc); cleanup' EXIT
# A VM of the second ledged for the fleet page (the same fake image and QEMU).
mkdir -p "$R2/state/vm"
LEDGE_VM_DIR="$R2/state/vm" "$LEDGE_BIN" vm create r2vm --image "$KEY" --accel tcg --disk 2G \
  --hub-port "$(free_port)" --boot-timeout 10 >/dev/null || fail "vm create r2vm (the second ledged's)"
r2vm_state() { LEDGE_VM_DIR="$R2/state/vm" "$LEDGE_BIN" vm status r2vm --json 2>/dev/null | jq -r .state; }
start_r2
manifest "$(procmod far 300)" > "$R2/deploy.json"
r2 deploy "$R2/deploy.json" > "$R2/deploy.out" 2>&1 || { cat "$R2/deploy.out" >&2; fail "deploy on the second ledged"; }
assert_eq "$(code "http://127.0.0.1:$PORT2/login")" 000 "plain HTTP off loopback"
R2_TOKEN=$(r2 dashboard token 2>/dev/null)
pin_of() { openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64; }
R2_PIN="sha256//$(pin_of "$R2/state/certs/hub-server.pem")"

log "a third device for the fleet page: a fake dashboard, added (its key pinned), then hanging"
PORT3=$(free_port)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=fake3 \
  -keyout "$T/fake3.key" -out "$T/fake3.pem" 2>/dev/null || fail "openssl req (the fake device's certificate)"
python3 "$SRC_ROOT/tests/system/dashboard-fake-device.py" "$PORT3" "$T/fake3.pem" "$T/fake3.key" "$T/fake3.hang" \
  > "$T/fake3.log" 2>&1 &
FAKE3_PID=$!
wait_for 10 "the fake device" curl -sk -o /dev/null "https://127.0.0.1:$PORT3/api/systeminfo"
TOKENF=$(ledge dashboard token 2>/dev/null)
CSRFF=$(login "$TOKENF" "$T/jarf") || fail "curl login"
curl -sf -b "$T/jarf" -H "Origin: $URL" -H "X-CSRF-Token: $CSRFF" -H 'Content-Type: application/json' \
  -d "{\"name\": \"edge3\", \"address\": \"127.0.0.1:$PORT3\", \"token\": \"ldt_0000fake_$(printf '0%.0s' $(seq 64))\"}" \
  "$URL/api/remotes" > /dev/null || fail "adding the fake device"
touch "$T/fake3.hang"
log "GET /api/fleet: a device that does not answer costs its timeout, not more"
START_MS=$(date +%s%3N)
curl -sf -b "$T/jarf" "$URL/api/fleet?timeout=2" > "$T/fleet1.json" || fail "GET /api/fleet"
ELAPSED=$(( $(date +%s%3N) - START_MS ))
[ "$ELAPSED" -lt 6000 ] || fail "GET /api/fleet?timeout=2 took $ELAPSED ms"
jq_true --arg id "st-$TEST_NAME" '.devices | length == 2 and .[0].local and .[0].reachable and .[0].deviceId == $id and
         (.[0].vms | map(.name) | sort) == ["f1"] and .[0].modules.total >= 1 and
         .[1].name == "edge3" and (.[1].reachable | not) and .[1].reason == "timeout"' "$T/fleet1.json" ||
  fail "fleet: $(cat "$T/fleet1.json")"

log "the browser (Chromium headless, playwright-core)"
TOKEN=$(ledge dashboard token --expires 1h 2>/dev/null)
mkdir -p "$T/shots"
DASH_URL="$URL" DASH_TOKEN="$TOKEN" BAD_MANIFEST="$T/bad.json" GOOD_MANIFEST="$T/good.json" \
  SHOTS="$T/shots" DEVICE_ID="st-$TEST_NAME" ROLLBACK_TO="$FIRST_ID" VM_HUB_PORT="$VM_HUB_PORT" \
  VM_MAN_PORT="$VM_MAN_PORT" VM_KEY="$KEY" REMOTE_ADDRESS="127.0.0.1:$PORT2" \
  REMOTE_TOKEN="$R2_TOKEN" REMOTE_PIN="$R2_PIN" REMOTE_DEVICE="st-$TEST_NAME-r2" NODE_PATH="$SRC_ROOT/src/dashboard/web/node_modules" \
  timeout 400 node "$SRC_ROOT/tests/system/dashboard.js" >&2 ||
  { mkdir -p "$LEDGE_BUILD/meson-logs/dashboard-shots"; cp "$T"/shots/*.png "$LEDGE_BUILD/meson-logs/dashboard-shots/" 2>/dev/null
    fail "the browser run (its screenshots: $LEDGE_BUILD/meson-logs/dashboard-shots)"; }
if [ -n "${DASHBOARD_SHOTS:-}" ]; then
  mkdir -p "$DASHBOARD_SHOTS"
  cp "$T"/shots/dashboard-*.png "$DASHBOARD_SHOTS/"
  log "screenshots copied to $DASHBOARD_SHOTS"
fi

log "what the browser did, as ledged saw it"
api GET /deployments > "$T/history.json"
jq_true '.deployments[0].kind == "rollback" and .deployments[0].outcome == "applied" and
         .deployments[1].outcome == "applied" and .deployments[2].outcome == "applied" and
         .current == .deployments[0].id' "$T/history.json" ||
  fail "history: $(jq -c '.deployments[:3]' "$T/history.json")"
two_gone() { api GET /modules | jq -e '[.modules[].name] | index("two") == null' >/dev/null; }
wait_for 30 "two removed by the rollback" two_gone
status_is web running || fail "web after the rollback: $(module_field web runtimeStatus)"
wait_for 30 "old back by the rollback to deployment $FIRST_ID" status_is old running
log "the twins the browser changed, as ledge twin get shows them; the methods it invoked"
ledge twin get web > "$T/twin.web" || fail "ledge twin get web"
jq_true '.desired.color == "blue" and .desired.level == 3' "$T/twin.web" || fail "web's twin: $(cat "$T/twin.web")"
ledge twin get --device leaf1 > "$T/twin.leaf1" || fail "ledge twin get --device leaf1"
jq_true '.desired.mode == "eco"' "$T/twin.leaf1" || fail "leaf1's twin: $(cat "$T/twin.leaf1")"
grep -q '"name":"echo","payload":{"x":1}' "$T/echo.out" || fail "web got no echo call: $(cat "$T/echo.out")"
grep -q '"name":"silent"' "$T/echo.out" || fail "web got no silent call: $(cat "$T/echo.out")"
kill "$ECHO_PID" 2>/dev/null; wait "$ECHO_PID" 2>/dev/null

log "the charts' samples (GET /metrics/history): web's memory, the hub's messages and queue"
api GET /metrics/history > "$T/history-samples.json"
jq_true '.intervalSeconds == 1 and (.times | length) > 5 and
         ([.series["memory.web"].values[] | select(. != null)] | length) > 5 and
         ([.series["hub.received"].values[] | select(. != null and . > 0)] | length) > 0 and
         ([.series["queue.$upstream"].values[] | select(. != null and . > 0)] | length) > 0 and
         .series["hub.received"].kind == "counter"' "$T/history-samples.json" ||
  fail "samples: $(jq -c '{intervalSeconds, n: (.times | length), series: (.series | keys)}' "$T/history-samples.json")"

log "the VMs the browser managed, as ledge vm shows them (f2 created, then deleted on the fleet page)"
vm list --json > "$T/vms.json" || fail "ledge vm list"
jq_true '[.[] | .name] | sort == ["f1"]' "$T/vms.json" || jq_true '[.vms[] | .name] | sort == ["f1"]' "$T/vms.json" ||
  fail "vm list: $(cat "$T/vms.json")"
[ ! -e "$VM_DIR/f2" ] || fail "f2's directory is still there after its delete"
assert_eq "$(jq -r .cpus "$VM_DIR/f1/vm.json")" 2 "f1's CPUs, set on the VM page"
jq -e --arg p "$VM_MAN_PORT" '.ports[] | select(.hostPort == ($p|tonumber) and .guestPort == 80)' "$VM_DIR/f1/vm.json" >/dev/null ||
  fail "the forward added on the VM page is not in f1's vm.json: $(cat "$VM_DIR/f1/vm.json")"
vm_state_is f1 stopped || fail "f1 after the browser stopped it: $(vm_field f1 .state)"
api GET /vms/nosuch > "$T/nosuch.json"
grep -q "nosuch" "$T/nosuch.json" || fail "GET /vms/nosuch: $(cat "$T/nosuch.json")"

log "ledge deploy --rollback N: an unknown N refused, a known one planned"
ledge deploy --rollback 999 > "$T/rb999.out" 2>&1 && fail "rollback to 999 succeeded"
grep -q "no deployment 999 in the history" "$T/rb999.out" || fail "rollback to 999: $(cat "$T/rb999.out")"
ledge deploy --rollback 0 > "$T/rb0.out" 2>&1 && fail "rollback to 0 accepted"
api GET "/deployments/$FIRST_ID" | jq -e '.modulesContent["$edgeAgent"]["properties.desired"].modules | has("old")' >/dev/null ||
  fail "GET /deployments/$FIRST_ID: $(api GET "/deployments/$FIRST_ID")"
api GET /deployments/999 | grep -q "no deployment 999" || fail "GET /deployments/999: $(api GET /deployments/999)"
ledge deploy --rollback "$(jq -r '.deployments[1].id' "$T/history.json")" --dry-run > "$T/rbplan.out" 2>&1 ||
  fail "ledge deploy --rollback N --dry-run: $(cat "$T/rbplan.out")"
grep -q "create.*two" "$T/rbplan.out" && grep -q "remove.*old" "$T/rbplan.out" ||
  fail "the plan of rolling back to the browser's deployment: $(cat "$T/rbplan.out")"
grep -q 'dashboard.*login with token' "$T/ledged.log" || fail "ledged did not log the login"

log "the remote device, as both ledgeds saw it"
r2_status() { api_r2 GET /modules | jq -r '.modules[] | select(.name == "far") | .runtimeStatus'; }
api_r2() { curl -sS --unix-socket "$R2/run/mgmt.sock" -X "$1" "http://localhost$2"; }
assert_eq "$(r2_status)" running "far on the second ledged"
TOKEN3=$(ledge dashboard token 2>/dev/null)
CSRF=$(login "$TOKEN3" "$T/jar3") || fail "curl login"
curl -sf -b "$T/jar3" "$URL/api/remotes" > "$T/remotes.json" || fail "GET /api/remotes"
jq_true --arg pin "$R2_PIN" '.remotes | length == 2 and (map(select(.name == "edge2"))[0].pin == $pin) and (map(has("token")) | any | not)' \
  "$T/remotes.json" || fail "remotes: $(cat "$T/remotes.json")"
assert_eq "$(stat -c %a "$T/state/dashboard-remotes.json")" 600 "the remotes file's mode (it holds tokens)"
assert_eq "$(code -b "$T/jar3" "$URL/api/remotes/edge2/api/modules")" 200 "the remote's modules through the proxy"
log "the remote's VM r2vm, restarted on the fleet page: running; rebooted and deleted through the proxy"
assert_eq "$(r2vm_state)" running "r2vm after its restart on the fleet page"
curl -sf -b "$T/jar3" "$URL/api/remotes/edge2/api/vms" > "$T/r2-vms.json" || fail "the remote's VMs through the proxy"
jq_true '.vms | map(.name) == ["r2vm"]' "$T/r2-vms.json" || fail "the remote's VMs: $(cat "$T/r2-vms.json")"
assert_eq "$(code -b "$T/jar3" -X POST -H "Origin: $URL" -H "X-CSRF-Token: $CSRF" \
  "$URL/api/remotes/edge2/api/vms/r2vm/reboot")" 200 "a proxied VM reboot"
assert_eq "$(code -b "$T/jar3" -X DELETE -H "Origin: $URL" "$URL/api/remotes/edge2/api/vms/r2vm?force=1")" 403 \
  "a proxied VM delete without X-CSRF-Token"
assert_eq "$(code -b "$T/jar3" -X DELETE -H "Origin: $URL" -H "X-CSRF-Token: $CSRF" \
  "$URL/api/remotes/edge2/api/vms/r2vm")" 409 "deleting a running VM without force"
assert_eq "$(code -b "$T/jar3" -X DELETE -H "Origin: $URL" -H "X-CSRF-Token: $CSRF" \
  "$URL/api/remotes/edge2/api/vms/r2vm?force=1")" 200 "a proxied VM delete (forced: stopped first)"
[ ! -e "$R2/state/vm/r2vm" ] || fail "r2vm's directory is still there after its delete"
log "the fake device gone: refused, at once"
kill "$FAKE3_PID" 2>/dev/null || true
wait "$FAKE3_PID" 2>/dev/null || true
FAKE3_PID=""
curl -sf -b "$T/jar3" "$URL/api/fleet?device=edge3" > "$T/fleet3.json" || fail "GET /api/fleet?device=edge3"
jq_true '.devices | length == 1 and .[0].reason == "refused" and .[0].address != null' "$T/fleet3.json" ||
  fail "the stopped fake device: $(cat "$T/fleet3.json")"
assert_eq "$(code -b "$T/jar3" -X POST -H "Origin: $URL" "$URL/api/remotes/edge2/api/modules/far/restart")" 403 \
  "a proxied POST without X-CSRF-Token"
assert_eq "$(code -b "$T/jar3" -X POST -H "Origin: $URL" -H "X-CSRF-Token: $CSRF" \
  "$URL/api/remotes/edge2/api/modules/far/restart")" 200 "a proxied restart"
assert_eq "$(code "https://127.0.0.1:$PORT2/api/modules" -k -H "Authorization: Bearer $R2_TOKEN")" 200 "the bearer token"
assert_eq "$(code "https://127.0.0.1:$PORT2/" -k -H "Authorization: Bearer $R2_TOKEN")" 404 "a bearer token outside /api"
assert_eq "$(code "https://127.0.0.1:$PORT2/api/modules" -k -H "Authorization: Bearer ldt_x")" 401 "a wrong bearer token"

log "the second ledged with another key: the pin refuses it"
stop_r2
rm -f "$R2"/state/certs/hub-server*
start_r2
[ "sha256//$(pin_of "$R2/state/certs/hub-server.pem")" != "$R2_PIN" ] || fail "the second ledged kept its key"
curl -s -b "$T/jar3" "$URL/api/remotes/edge2/api/modules" -w '\n%{http_code}' > "$T/mismatch.out"
assert_eq "$(tail -1 "$T/mismatch.out")" 502 "the proxy to a device whose key changed"
grep -q "not the one pinned" "$T/mismatch.out" || fail "the refusal says why: $(cat "$T/mismatch.out")"
curl -sf -b "$T/jar3" "$URL/api/fleet?device=edge2" > "$T/fleet2.json" || fail "GET /api/fleet?device=edge2"
jq_true '.devices[0].reason == "key changed"' "$T/fleet2.json" || fail "the fleet's edge2 with another key: $(cat "$T/fleet2.json")"
manifest "" > "$R2/empty.json"
r2 deploy "$R2/empty.json" >/dev/null || fail "emptying the second ledged"
stop_r2
stop_ledged
# The hub (an ASan build under scripts/test) ran the twins, methods and queues the pages showed.
if grep -q "ERROR: AddressSanitizer\|runtime error:" "$T/state/process/edgeHub.log" 2>/dev/null; then
  grep -A20 "ERROR: AddressSanitizer\|runtime error:" "$T/state/process/edgeHub.log" | head -60 >&2
  fail "a sanitizer report in the hub's log"
fi
log "ok"
