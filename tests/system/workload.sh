#!/usr/bin/env bash
# Identity, keys, certificates and the workload API end to end (issue 3): the unmodified Azure IoT
# Node SDK runs as a module (ledge-node-module, tests/node/workload-sdk.js) and gets the trust
# bundle and a SAS token from its workload socket; ledge's verifier (tests/tools/sas-verify.c)
# accepts that token and rejects it for another module or generation. Certificates chain to the
# trust bundle with the right SANs, and the hub's is re-issued before expiry (short lifetimes)
# without a restart. Bad input gets the documented statuses; socket permissions and peer
# credentials keep modules apart; a flood of idle and slow connections starves nothing but the
# flooding socket, and only until the request timeout; 10,000 mixed requests leave ledged's fd
# count and RSS flat.
source "$(dirname "$0")/lib.sh"
need_docker
need "[ \"\$(id -u)\" = 0 ]" "needs root (socket ownership, setpriv)"
need "command -v node" "no node (scripts/deps --test installs nodejs)"
need "command -v npm" "no npm (scripts/deps --test installs it)"
need "command -v setpriv" "no setpriv (util-linux)"
SAS_VERIFY="$LEDGE_BUILD/tests/sas-verify"
STRESS="$SRC_ROOT/tests/node/workload-stress.js"
[ -x "$SAS_VERIFY" ] || fail "$SAS_VERIFY not built (ninja -C \$LEDGE_BUILD tests/sas-verify)"
"$SRC_ROOT/scripts/build-images" node-module >/dev/null
docker image inspect ledge-testmod:latest >/dev/null 2>&1 || "$SRC_ROOT/scripts/build-images" testmod >/dev/null
getent group ledge >/dev/null || groupadd --system ledge

API="api-version=2019-01-30"
# Short lifetimes: the hub's certificate (1 h) is due for renewal 10 s after it is issued.
EXTRA_CONFIG='certificates:
  ca_lifetime: 1d
  cert_lifetime: 1h
  renew_before: 3590s
  extra_names: [hub.example.test, 10.9.8.7]'
write_config
# A private engine (DOCKER_HOST=unix://...) is used by ledged as well.
case "${DOCKER_HOST:-}" in
  unix://*) sed -i "s|^engine:|engine:\n  uri: $DOCKER_HOST|" "$T/config.yaml" ;;
esac
# ASan's quarantine (256 MB by default) would make RSS climb through the load test; a small one
# lets RSS settle after the warm-up while still catching use-after-free.
export ASAN_OPTIONS="$ASAN_OPTIONS:quarantine_size_mb=16"
start_ledged
CERTS="$T/state/certs"
BUNDLE="$CERTS/trust-bundle.pem"
WL="$T/run/workload"

wl() { # wl MODULE METHOD PATH [curl args...] — a request on MODULE's socket from the host
  local m="$1" method="$2" path="$3"; shift 3
  curl -sS -m 5 --unix-socket "$WL/$m/workload.sock" -X "$method" "http://localhost$path" "$@"
}
expect_status() { # expect_status WANT MESSAGE_PART DESCRIPTION MODULE METHOD PATH [curl args...]
  local want="$1" part="$2" what="$3"; shift 3
  local code
  rm -f "$T/reply"
  code=$(wl "$@" -o "$T/reply" -w '%{http_code}') || true
  touch "$T/reply"
  [ "$code" = "$want" ] || fail "$what: expected $want, got $code: $(head -c 300 "$T/reply")"
  [ -z "$part" ] || grep -qF -- "$part" "$T/reply" || fail "$what: reply does not say \"$part\": $(head -c 300 "$T/reply")"
}
in_module() { docker exec wl-sdk /usr/bin/node /app/workload-call.js "$@"; }
sas_verify() { # sas_verify MODULE GENERATION TOKEN
  "$SAS_VERIFY" "$T/state" "$DEV" "$1" "$2" "$HUB,$GW" "$3"
}
san_of() { openssl x509 -in "$1" -noout -ext subjectAltName | tail -n +2 | tr -d ' '; }
fd_count() { ls "/proc/$LEDGED_PID/fd" | wc -l; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$LEDGED_PID/status"; }
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }

log "socket permissions"
assert_eq "$(stat -c '%U:%G %a' "$T/run/mgmt.sock")" "root:ledge 660" "management socket owner and mode"
assert_eq "$(stat -c '%U %a' "$WL")" "root 700" "workload directory owner and mode"

# A process module: a shell script that uses its workload socket with curl, as a native program
# would, and makes a SAS token from the signature (what the SDKs do).
cat > "$T/proc-module.sh" <<'SH'
#!/bin/sh
out="$PROC_OUT"
sock="${IOTEDGE_WORKLOADURI#unix://}"
q="api-version=2019-01-30"
curl -sS --unix-socket "$sock" -o "$out.bundle" -w '%{http_code}' "http://localhost/trust-bundle?$q" > "$out.bundle.code"
sr=$(printf '%s' "$IOTEDGE_IOTHUBHOSTNAME/devices/$IOTEDGE_DEVICEID/modules/$IOTEDGE_MODULEID" | sed 's|/|%2F|g')
se=$(( $(date +%s) + 3600 ))
data=$(printf '%s\n%s' "$sr" "$se" | base64 -w0)
curl -sS --unix-socket "$sock" -o "$out.sign" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"$data\"}" \
  "http://localhost/modules/$IOTEDGE_MODULEID/genid/$IOTEDGE_MODULEGENERATIONID/sign?$q" > "$out.sign.code"
sig=$(jq -r '.digest | @uri' "$out.sign")
printf 'SharedAccessSignature sr=%s&sig=%s&se=%s' "$sr" "$sig" "$se" > "$out.token"
echo "$IOTEDGE_MODULEGENERATIONID" > "$out.gen"
exec sleep 100000
SH
chmod 755 "$T/proc-module.sh"

sdk_module() { # sdk_module [EXTRA_ENV_JSON]
  printf '"wl-sdk": {"type": "docker", "status": "running", "restartPolicy": "never", "imagePullPolicy": "never", "settings": {"image": "ledge-node-module:latest"}, "env": {"NODE_MODULE_SCRIPT": {"value": "workload-sdk.js"}%s}}' "${1:+, $1}"
}
modules() {
  printf '%s, %s, "wl-proc": {"type": "process", "status": "running", "restartPolicy": "never", "settings": {"path": "%s"}, "env": {"PROC_OUT": {"value": "%s"}}}' \
    "$(sdk_module "${1:-}")" "$(testmod wl-beta)" "$T/proc-module.sh" "$T/proc"
}

log "deploy the Node SDK module, a testmod and a process module"
deploy "$(modules)" > "$T/out" || fail "deploy: $(cat "$T/out")"
for m in wl-sdk wl-beta wl-proc; do wait_for 60 "$m running" status_is $m running; done
# The SDK module prints JSON lines: env, connect, trust-bundle, ready (or error).
sdk_reported() { # sdk_reported GENERATION
  ledge logs wl-sdk > "$T/sdk.log" 2>&1 || return 1
  grep -q "\"generationId\":\"$1\"" "$T/sdk.log" && grep -qE '"event":"(ready|error)"' "$T/sdk.log"
}
wait_for 60 "the SDK module's report" sdk_reported "$(module_field wl-sdk generationId)"
grep -q '"event":"error"' "$T/sdk.log" && fail "the SDK failed: $(grep '"event":"error"' "$T/sdk.log")"
record() { grep "^{\"event\":\"$1\"" "$T/sdk.log" | tail -1; }
DEV=$(record env | jq -r .deviceId)
HUB=$(record env | jq -r .iothubHostName)
GW=$(record env | jq -r .gatewayHostName)
GEN=$(record env | jq -r .generationId)
assert_eq "$DEV" "st-$TEST_NAME" "IOTEDGE_DEVICEID"
assert_eq "$GW" "ledge-gw.local" "IOTEDGE_GATEWAYHOSTNAME"
assert_eq "$GEN" "$(module_field wl-sdk generationId)" "IOTEDGE_MODULEGENERATIONID vs ledge list"
assert_eq "$(record env | jq -r .workloadUri)" "unix:///var/run/iotedge/workload.sock" "IOTEDGE_WORKLOADURI"
BETA_GEN=$(module_field wl-beta generationId)
[ -n "$BETA_GEN" ] && [ "$BETA_GEN" != null ] || fail "no generation id for wl-beta"

log "the SDK's token (ModuleClient.fromEnvironment → IotEdgeAuthenticationProvider) verifies"
conn=$(record connect)
assert_eq "$(jq -r .authProvider <<<"$conn")" "IotEdgeAuthenticationProvider" "SDK auth provider"
assert_eq "$(jq -r .uri <<<"$conn")" "mqtts://$GW" "SDK MQTT URI"
assert_eq "$(jq -r .clientId <<<"$conn")" "$DEV/wl-sdk" "SDK MQTT client id"
[[ "$(jq -r .username <<<"$conn")" == "$HUB/$DEV/wl-sdk/?api-version="* ]] || fail "SDK MQTT user name: $(jq -r .username <<<"$conn")"
TOKEN=$(jq -r .password <<<"$conn")
[[ "$TOKEN" == "SharedAccessSignature sr=$HUB%2Fdevices%2F$DEV%2Fmodules%2Fwl-sdk&"* ]] || fail "SDK token audience: $TOKEN"
sas_verify wl-sdk "$GEN" "$TOKEN" > "$T/v" || fail "ledge's verifier rejected the SDK's token: $(cat "$T/v")"
log "  $(cat "$T/v")"
se=$(sed -n 's/.*&se=\([0-9]*\).*/\1/p' <<<"$TOKEN")
[ "$se" -gt "$(date +%s)" ] || fail "the SDK's token is already expired (se=$se)"

log "the same token as another module, or another generation, is rejected"
rc=0; sas_verify wl-beta "$BETA_GEN" "$TOKEN" > "$T/v" || rc=$?
assert_eq "$rc" 1 "verifying wl-sdk's token as wl-beta"
grep -q "is not for $DEV/wl-beta" "$T/v" || fail "wrong reason: $(cat "$T/v")"
rc=0; sas_verify wl-sdk "$BETA_GEN" "$TOKEN" > "$T/v" || rc=$?
assert_eq "$rc" 1 "verifying wl-sdk's token with another generation id"
grep -q "signature does not match" "$T/v" || fail "wrong reason: $(cat "$T/v")"

log "the SDK got the trust bundle ledged wrote"
jq -j .ca <<<"$conn" | cmp -s - "$BUNDLE" || fail "the SDK's ca differs from $BUNDLE"
record trust-bundle | jq -j .pem | cmp -s - "$BUNDLE" || fail "getTrustBundle differs from $BUNDLE"
wl wl-sdk GET "/trust-bundle?$API" | jq -j .certificate | cmp -s - "$BUNDLE" || fail "GET /trust-bundle differs from $BUNDLE"

log "certificates chain to the trust bundle with the right names"
openssl verify -CAfile "$BUNDLE" "$CERTS/hub-server.pem" > "$T/v" 2>&1 || fail "hub-server.pem: $(cat "$T/v")"
assert_eq "$(san_of "$CERTS/hub-server.pem")" "DNS:$GW,DNS:localhost,DNS:hub.example.test,IPAddress:127.0.0.1,IPAddress:10.9.8.7" "hub certificate SANs"
openssl x509 -in "$CERTS/hub-server.pem" -noout -ext extendedKeyUsage | grep -q "TLS Web Server Authentication" || fail "hub certificate without serverAuth"
cert_reply() { # cert_reply NAME JSON — writes $T/NAME.crt and $T/NAME.key from a certificate reply
  jq -e -j '.body.certificate' <<<"$2" > "$T/$1.crt" || fail "$1: no certificate in $2"
  jq -e -j '.body.privateKey.bytes' <<<"$2" > "$T/$1.key" || fail "$1: no private key"
  openssl verify -CAfile "$BUNDLE" "$T/$1.crt" > "$T/v" 2>&1 || fail "$1: $(cat "$T/v")"
  [ "$(openssl x509 -in "$T/$1.crt" -noout -pubkey)" = "$(openssl pkey -in "$T/$1.key" -pubout)" ] || fail "$1: key does not match"
  local left=$(( $(date -d "$(openssl x509 -in "$T/$1.crt" -noout -enddate | cut -d= -f2)" +%s) - $(date +%s) ))
  [ "$left" -le 3610 ] || fail "$1: lives ${left}s, beyond certificates.cert_lifetime (1h)"
}
# Requested from inside the module, through the bind-mounted socket; far-away expiration asked.
r=$(in_module POST "/modules/{m}/genid/{g}/certificate/server?$API" '{"commonName": "wl-sdk.example.test", "expiration": "2099-01-01T00:00:00Z"}')
assert_eq "$(jq .status <<<"$r")" 201 "server certificate request"
cert_reply server "$r"
assert_eq "$(san_of "$T/server.crt")" "DNS:wl-sdk.example.test,DNS:wl-sdk" "server certificate SANs"
openssl x509 -in "$T/server.crt" -noout -ext extendedKeyUsage | grep -q "TLS Web Server Authentication" || fail "server certificate without serverAuth"
r=$(in_module POST "/modules/{m}/genid/{g}/certificate/server?$API" '{"commonName": "10.1.2.3"}')
cert_reply server-ip "$r"
assert_eq "$(san_of "$T/server-ip.crt")" "DNS:wl-sdk,IPAddress:10.1.2.3" "IP server certificate SANs"
r=$(in_module POST "/modules/{m}/certificate/identity?$API" '{}')
assert_eq "$(jq .status <<<"$r")" 201 "identity certificate request"
cert_reply identity "$r"
assert_eq "$(san_of "$T/identity.crt")" "URI:azureiot://$HUB/devices/$DEV/modules/wl-sdk" "identity certificate SAN"
openssl x509 -in "$T/identity.crt" -noout -ext extendedKeyUsage | grep -q "TLS Web Client Authentication" || fail "identity certificate without clientAuth"
r=$(in_module POST "/modules/{m}/genid/{g}/certificate/server?$API" "{\"commonName\": \"$GW\"}")
assert_eq "$(jq .status <<<"$r")" 403 "a module asking for the hub's name"

log "workload sockets are reachable only from their module"
# The test directory is 0700 (mktemp); open it so only ledged's own modes keep users out.
chmod 711 "$T"
docker inspect wl-sdk | jq -e --arg src "$WL/wl-sdk" '[.[0].Mounts[] | select(.Destination == "/var/run/iotedge")] | length == 1 and .[0].Source == $src' >/dev/null ||
  fail "wl-sdk's /var/run/iotedge is not its own socket directory: $(docker inspect wl-sdk | jq -c '.[0].Mounts')"
assert_eq "$(docker exec wl-sdk /usr/bin/node -e 'console.log(require("fs").readdirSync("/var/run/iotedge").join(","))')" "workload.sock" "what wl-sdk sees in /var/run/iotedge"
setpriv --reuid=65534 --regid=65534 --clear-groups curl -sS -m 2 --unix-socket "$WL/wl-sdk/workload.sock" "http://localhost/trust-bundle?$API" >/dev/null 2>&1 &&
  fail "an unprivileged host user reached a workload socket"
setpriv --reuid=65534 --regid=65534 --clear-groups curl -sS -m 2 --unix-socket "$T/run/mgmt.sock" http://localhost/modules >/dev/null 2>&1 &&
  fail "a user outside the ledge group reached the management socket"
code=$(setpriv --reuid=65534 --regid=65534 --groups="$(getent group ledge | cut -d: -f3)" curl -sS -m 2 --unix-socket "$T/run/mgmt.sock" http://localhost/modules -o /dev/null -w '%{http_code}') || true
assert_eq "$code" 200 "a member of the ledge group on the management socket"
expect_status 403 "may not act for module 'wl-beta'" "wl-sdk signing as wl-beta" \
  wl-sdk POST "/modules/wl-beta/genid/$BETA_GEN/sign?$API" -d '{"keyId":"primary","algo":"HMACSHA256","data":"aGk="}'
r=$(in_module POST "/modules/wl-beta/genid/$BETA_GEN/sign?$API" '{"keyId":"primary","algo":"HMACSHA256","data":"aGk="}')
assert_eq "$(jq .status <<<"$r")" 403 "wl-sdk signing as wl-beta from inside its container"

log "a process module is checked by the peer credentials of its connection"
wait_for 20 "the process module's calls" test -s "$T/proc.token"
assert_eq "$(cat "$T/proc.bundle.code")" 200 "process module: trust bundle"
assert_eq "$(cat "$T/proc.sign.code")" 200 "process module: sign"
cmp -s <(jq -j .certificate "$T/proc.bundle") "$BUNDLE" || fail "process module got another trust bundle"
assert_eq "$(cat "$T/proc.gen")" "$(module_field wl-proc generationId)" "process module generation id"
sas_verify wl-proc "$(cat "$T/proc.gen")" "$(cat "$T/proc.token")" > "$T/v" || fail "process module's token: $(cat "$T/v")"
expect_status 403 "this socket serves module wl-proc only" "a host process outside wl-proc's session" \
  wl-proc GET "/trust-bundle?$API"

log "bad input on a module's socket"
SIGN="/modules/wl-sdk/genid/$GEN/sign?$API"
GOOD='{"keyId":"primary","algo":"HMACSHA256","data":"aGVsbG8="}'
expect_status 200 '"digest"' "a good sign request" wl-sdk POST "$SIGN" -d "$GOOD"
expect_status 400 "request body: not valid JSON" "malformed JSON" wl-sdk POST "$SIGN" -d '{"keyId": "primary",'
expect_status 400 "must be a JSON object" "a JSON array" wl-sdk POST "$SIGN" -d '[1]'
expect_status 400 "missing required field 'data'" "a missing field" wl-sdk POST "$SIGN" -d '{"keyId":"primary","algo":"HMACSHA256"}'
expect_status 400 "field 'data' is not valid base64" "bad base64" wl-sdk POST "$SIGN" -d '{"keyId":"primary","algo":"HMACSHA256","data":"!!"}'
expect_status 400 "field 'algo' must be" "another algorithm" wl-sdk POST "$SIGN" -d '{"keyId":"primary","algo":"MD5","data":"aGk="}'
expect_status 400 "missing request body" "no body" wl-sdk POST "$SIGN"
expect_status 400 "unsupported api-version '2099-01-01'" "unknown api-version" wl-sdk GET "/trust-bundle?api-version=2099-01-01"
expect_status 400 "missing required query parameter 'api-version'" "no api-version" wl-sdk GET "/trust-bundle"
expect_status 400 "given more than once" "two api-versions" wl-sdk GET "/trust-bundle?$API&$API"
expect_status 404 "has no generation" "another generation" wl-sdk POST "/modules/wl-sdk/genid/$BETA_GEN/sign?$API" -d "$GOOD"
expect_status 403 "may not act for module" "another module's server certificate" wl-sdk POST "/modules/wl-beta/genid/$BETA_GEN/certificate/server?$API" -d '{"commonName":"x.test"}'
expect_status 404 "not found" "an unknown path" wl-sdk GET "/secrets?$API"
expect_status 405 "method not allowed" "a wrong method" wl-sdk DELETE "/trust-bundle?$API"
expect_status 400 "malformed" "a bad %-escape" wl-sdk GET "/modules/%zz/genid/x/sign?$API"
expect_status 414 "" "a 3000-byte target" wl-sdk GET "/$(head -c 3000 /dev/zero | tr '\0' a)?$API"
expect_status 431 "" "9 KiB of headers" wl-sdk GET "/trust-bundle?$API" -H "X-Big: $(head -c 9000 /dev/zero | tr '\0' b)"
# workload.max_body (docs/configuration.md) is 64 KiB: one byte more is 413, before any parsing.
head -c 65536 /dev/zero | tr '\0' ' ' > "$T/64k"
expect_status 400 "not valid JSON" "a 64 KiB body (at the limit)" wl-sdk POST "$SIGN" --data-binary @"$T/64k"
printf ' ' >> "$T/64k"
# (With Expect: 100-continue, as clients send large bodies: ledged answers from the headers and
# closes, so a client still writing the body could see EPIPE before the reply.)
expect_status 413 "request body larger than 65536 bytes" "a body one byte over workload.max_body" \
  wl-sdk POST "$SIGN" --data-binary @"$T/64k" -H 'Expect: 100-continue'
kill -0 "$LEDGED_PID" || fail "ledged died"

log "a flood of idle and slow connections starves nothing, not even the flooded socket"
fds0=$(fd_count)
ls -l "/proc/$LEDGED_PID/fd" > "$T/fds0"
node "$STRESS" flood "$WL/wl-sdk/workload.sock" 200 20 15 > "$T/flood" &
flood_pid=$!
wait_for 10 "the flood to be in place" grep -q '"event":"ready"' "$T/flood"
ready=$(head -1 "$T/flood")
log "  flood: $ready"
# 32 connections per module socket (workload_server.c): at the cap the oldest connection still
# waiting for its request is dropped to make room (net/http_server.c), so the flood holds at most
# 32 and everything else it opened was closed by the server. (The SDK's keep-alive connection
# from inside wl-sdk may still hold a slot.)
held=$(jq .held <<<"$ready"); refused=$(jq .refused503 <<<"$ready"); closed=$(jq .closedByServer <<<"$ready")
[ "$held" -le 32 ] || fail "the flood holds $held connections (cap: 32)"
assert_eq "$(( held + refused + closed ))" 220 "flood connections held + refused + dropped"
[ "$(fd_count)" -le $(( fds0 + 32 + 4 )) ] || fail "ledged holds $(fd_count) fds during the flood (before: $fds0)"
probe() { # probe NAME COMMAND... — must answer 200 within a second
  local what="$1" t0 code; shift
  t0=$(ms_now)
  code=$("$@" -o /dev/null -w '%{http_code}' 2>/dev/null) || true
  local dt=$(( $(ms_now) - t0 ))
  [ "$code" = 200 ] && [ $dt -lt 1000 ] || fail "$what during the flood: status $code after ${dt}ms"
  log "  $what: 200 in ${dt}ms"
}
probe "another module's socket" wl wl-beta POST "/modules/wl-beta/genid/$BETA_GEN/sign?$API" -d "$GOOD"
probe "the management API" api GET /modules
# The flooded socket itself: a real request still gets through (it takes the oldest idle slot).
probe "the flooded socket itself" wl wl-sdk GET "/trust-bundle?$API"
wait "$flood_pid" || fail "flood tool failed"
done_line=$(tail -1 "$T/flood")
log "  flood: $done_line"
# Slow senders that were not dropped to make room get 408 at the request timeout.
[ "$(jq '.answered408 + .closedByServer + .refused503' <<<"$done_line")" -eq 220 ] ||
  fail "every flood connection ends answered or dropped: $done_line"
assert_eq "$(jq .heldAtEnd <<<"$done_line")" 0 "flood connections still open at the end"
# (At most: a keep-alive connection of the SDK may have been open before.)
fds_back() { [ "$(fd_count)" -le "$fds0" ]; }
fds_back || sleep 2
fds_back || { cat "$T/fds0" >&2; ls -l "/proc/$LEDGED_PID/fd" >&2; fail "ledged has $(fd_count) fds after the flood, $fds0 before"; }

log "10,000 mixed good and bad requests leave fds and RSS flat"
node "$STRESS" load "$WL/wl-sdk/workload.sock" wl-sdk "$GEN" 10000 8 > "$T/warmup" || fail "warm-up: $(cat "$T/warmup")"
sleep 1
fds1=$(fd_count); rss1=$(rss_kb)
node "$STRESS" load "$WL/wl-sdk/workload.sock" wl-sdk "$GEN" 10000 8 > "$T/load" || fail "load: $(jq -c .first "$T/load")"
sleep 1
fds2=$(fd_count); rss2=$(rss_kb)
log "  $(jq -c '{requests, seconds, unexpected}' "$T/load"); kinds: $(jq -c '[.kinds | to_entries[] | "\(.key)=\(.value.status)x\(.value.n)"] | join(" ")' "$T/load")"
log "  ledged pid $LEDGED_PID: fds $fds1 -> $fds2, VmRSS ${rss1} kB -> ${rss2} kB"
assert_eq "$fds2" "$fds1" "ledged's fd count after 10,000 requests"
[ "$rss2" -le $(( rss1 + rss1 / 20 )) ] || fail "ledged's RSS grew more than 5%: ${rss1} kB -> ${rss2} kB"

log "a recreated module gets a new generation: the old token no longer verifies"
deploy "$(modules '"ROUND": {"value": "2"}')" > "$T/out" || fail "redeploy: $(cat "$T/out")"
new_generation() { local g; g=$(module_field wl-sdk generationId); [ -n "$g" ] && [ "$g" != null ] && [ "$g" != "$GEN" ]; }
wait_for 30 "wl-sdk recreated" new_generation
wait_for 60 "wl-sdk running" status_is wl-sdk running
GEN2=$(module_field wl-sdk generationId)
wait_for 60 "the new SDK report" sdk_reported "$GEN2"
grep -q '"event":"error"' "$T/sdk.log" && fail "the SDK failed: $(grep '"event":"error"' "$T/sdk.log")"
TOKEN2=$(record connect | jq -r .password)
sas_verify wl-sdk "$GEN2" "$TOKEN2" > "$T/v" || fail "new token: $(cat "$T/v")"
rc=0; sas_verify wl-sdk "$GEN2" "$TOKEN" > "$T/v" || rc=$?
assert_eq "$rc" 1 "the previous generation's token"
expect_status 404 "has no generation" "signing with the previous generation id" wl-sdk POST "$SIGN" -d "$GOOD"

log "the hub's certificate is re-issued before expiry without a restart"
serial() { openssl x509 -in "$CERTS/hub-server.pem" -noout -serial 2>/dev/null; }
serial_changed() { local s; s=$(serial) && [ -n "$s" ] && [ "$s" != "$1" ]; }
s0=$(serial)
wait_for 30 "a new hub certificate" serial_changed "$s0"
s1=$(serial)
wait_for 30 "another hub certificate" serial_changed "$s1"
kill -0 "$LEDGED_PID" || fail "ledged is gone"
assert_eq "$(grep -c ' ready: device ' "$T/ledged.log")" 1 "ledged starts"
openssl verify -CAfile "$BUNDLE" "$CERTS/hub-server.pem" > "$T/v" 2>&1 || fail "renewed hub-server.pem: $(cat "$T/v")"
openssl x509 -in "$CERTS/hub-server.pem" -noout -checkend 3000 >/dev/null || fail "the renewed certificate expires within 50 minutes"
assert_eq "$(san_of "$CERTS/hub-server.pem")" "DNS:$GW,DNS:localhost,DNS:hub.example.test,IPAddress:127.0.0.1,IPAddress:10.9.8.7" "renewed hub certificate SANs"
log "  hub certificate serials: ${s0#serial=} -> ${s1#serial=} -> $(serial | cut -d= -f2)"

stop_ledged
log "ok"
