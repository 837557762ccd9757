#!/usr/bin/env bash
# Images for a child device through its parent (issue 13 part 3, docs/registry-proxy.md): a TLS
# registry with htpasswd auth (Debian's docker-registry) behind a parent ledged's registry proxy
# (registry_proxy: TLS with the parent's server certificate), a middle ledged whose proxy targets
# its own $upstream (the parent), and a child ledged on the oci engine that deploys
# $upstream:PORT/app:1 through both, with registryCredentials for $upstream:PORT passed through
# to the registry untouched; a wrong password fails the module saying so; the proxy itself:
# 401 with the registry's challenge, the same manifest digest and length as the registry
# (HEAD), a blob byte for byte, pushes (405), paths outside /v2/ (404) and a ninth request while
# max_connections (8) slow pulls run (503) refused with a log line; a registry redirecting a blob
# to its storage (307) followed by the parent, Authorization kept from the storage host; a
# Bearer-token registry (auth.token, its realm tests/system/token-server.js) behind a parent
# proxy and a middle chained to it: each challenge names that proxy's /ledge/token/0, tokens come
# through the proxies, the children pull with registryCredentials (oci and dockerd); a child
# without
# upstream.parent refuses the deployment naming the module and the field. The oci children need
# no dockerd; then a child on dockerd (the machine's, through the host's own address): without
# the parent's CA in certs.d `ledge check` warns and the pull fails on the certificate, with it
# (the operator's step) the module is pulled through the proxy and runs.
export LEDGE_ENGINE=oci
source "$(dirname "$0")/lib.sh"
need_engine
need "test -x /bin/busybox" "busybox-static missing (scripts/vm-deps)"
need "command -v python3" "python3 missing"
source "$(dirname "$0")/registry-lib.sh"
export DOCKER_HOST="unix://$T/no-docker.sock" # only the docker part talks to dockerd (moby)
start_registry tls
REG="$REG_TLS_ADDR"

log "an image made here (busybox), pushed to the registry with curl as app:1 and app:2"
mkdir -p "$T/img/rootfs/bin"
cp /bin/busybox "$T/img/rootfs/bin/busybox"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$T/img/rootfs" -cf "$T/img/layer.tar" .
layer_digest=$(registry_put_blob tls app "$T/img/layer.tar")
cat > "$T/img/config.json" <<JSON
{"architecture": "amd64", "os": "linux",
 "config": {"Entrypoint": ["/bin/busybox", "sh", "-c", "echo pulled-through-the-parent; exec /bin/busybox sleep 1000"]},
 "rootfs": {"type": "layers", "diff_ids": ["$layer_digest"]}}
JSON
config_digest=$(registry_put_blob tls app "$T/img/config.json")
cat > "$T/img/manifest.json" <<JSON
{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
 "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "$config_digest",
            "size": $(stat -c %s "$T/img/config.json")},
 "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "$layer_digest",
             "size": $(stat -c %s "$T/img/layer.tar")}]}
JSON
for tag in 1 2; do
  registry_put_manifest tls app "$tag" application/vnd.oci.image.manifest.v1+json "$T/img/manifest.json"
done

devkey() { head -c 32 /dev/urandom | base64; }
# Ports for ledged's listeners below the kernel's ephemeral range (32768-): a port an outgoing
# connection holds locally cannot be listened on.
low_free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
}
PPORT=$(low_free_port)
MPORT=$(low_free_port)
NOHUB=$(low_free_port) # upstream.port of the middle and the child: nothing there

# layer_config NAME EXTRA_YAML: a ledged of its own under $T/NAME (no dockerd, no dashboard,
# no metrics port), started and stopped by start_layer/stop_layer
layer_config() {
  mkdir -p "$T/$1"
  cat > "$T/$1/config.yaml" <<YAML
state_dir: $T/$1/state
run_dir: $T/$1/run
log_level: debug
device:
  id: st-$TEST_NAME-$1
  key: $(devkey)
  iothub_hostname: ledge-parent.local
engine:
  uri: unix://$T/no-docker.sock
metrics:
  enabled: false
dashboard:
  enabled: false
$2
YAML
}
declare -A LAYER_PID
start_layer() {
  LEDGE_BOOT_ID_PATH="$T/boot_id" "$LEDGED" --config "$T/$1/config.yaml" >>"$T/$1/ledged.log" 2>&1 &
  LAYER_PID[$1]=$!
  wait_for 30 "the $1 ledged" bash -c "'$LEDGE_BIN' -H '$T/$1/run/mgmt.sock' version | grep -q '^ledged '"
}
stop_layer() {
  local pid="${LAYER_PID[$1]:-}" rc=0
  [ -n "$pid" ] || return 0
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  LAYER_PID[$1]=""
  [ $rc = 0 ] || { tail -30 "$T/$1/ledged.log" >&2; fail "the $1 ledged exited with $rc"; }
}
layers_cleanup() {
  local rc=$? n
  set +e
  for n in dchild rparent tmiddle tparent middle parent; do
    [ -n "${LAYER_PID[$n]:-}" ] && kill -TERM "${LAYER_PID[$n]}" 2>/dev/null && wait "${LAYER_PID[$n]}" 2>/dev/null
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ -f "$T/$n/ledged.log" ] &&
      { log "the $n ledged's log tail:"; tail -25 "$T/$n/ledged.log" >&2; }
    grep -q "ERROR: AddressSanitizer\|runtime error:" "$T/$n/ledged.log" 2>/dev/null &&
      { log "the $n ledged's sanitizer report:"; grep -A30 "ERROR: AddressSanitizer\|runtime error:" "$T/$n/ledged.log" >&2; rc=1; }
  done
  (exit $rc)
  registry_cleanup
}
trap layers_cleanup EXIT

log "the parent: its registry proxy on 127.0.0.1:$PPORT to https://$REG (the registry's CA)"
# (the host's own address for the docker part: dockerd skips certificate checks on loopback)
HOSTIP=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' | head -1 || true)
layer_config parent "certificates:
  extra_names: [${HOSTIP:-127.0.0.1}]
registry_proxy:
  listen: 0.0.0.0:$PPORT
  target: https://$REG
  target_ca_file: $REG_CA
  max_connections: 8"
start_layer parent
PCA="$T/parent/state/certs/trust-bundle.pem"
wait_for 10 "the parent's proxy" curl -s -o /dev/null --cacert "$PCA" "https://127.0.0.1:$PPORT/v2/"
grep -q "serving the registry API on https://0.0.0.0:$PPORT/v2/, forwarded to https://$REG" "$T/parent/ledged.log" ||
  fail "no start line in the parent's log"

log "the proxy passes the registry's challenge and credentials through untouched"
pcurl() { curl -sS --cacert "$PCA" "$@"; }
assert_eq "$(pcurl -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PPORT/v2/")" 401 "/v2/ without credentials"
pcurl -o /dev/null -D "$T/h401" "https://127.0.0.1:$PPORT/v2/"
grep -qi '^www-authenticate: Basic realm="ledge-test"' "$T/h401" || fail "the challenge did not come through: $(cat "$T/h401")"
assert_eq "$(pcurl -u "$REG_USER:$REG_PASSWORD" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PPORT/v2/")" 200 "/v2/ with credentials"
assert_eq "$(pcurl -u "$REG_USER:wrong" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PPORT/v2/")" 401 "a wrong password"
ACCEPT="Accept: application/vnd.oci.image.manifest.v1+json"
pcurl -u "$REG_USER:$REG_PASSWORD" -I -H "$ACCEPT" "https://127.0.0.1:$PPORT/v2/app/manifests/1" | tr -d '\r' > "$T/hproxy"
reg_curl tls /v2/app/manifests/1 -I -H "$ACCEPT" | tr -d '\r' > "$T/hdirect"
for h in docker-content-digest content-length content-type; do
  # (header names' case aside: curl speaks HTTP/2 to the registry itself)
  assert_eq "$(grep -i "^$h:" "$T/hproxy" | tr A-Z a-z)" "$(grep -i "^$h:" "$T/hdirect" | tr A-Z a-z)" "HEAD's $h through the proxy"
done
grep -qi "^docker-content-digest: sha256:" "$T/hproxy" || fail "no digest in HEAD: $(cat "$T/hproxy")"
pcurl -u "$REG_USER:$REG_PASSWORD" -o "$T/blob" "https://127.0.0.1:$PPORT/v2/app/blobs/$layer_digest"
assert_eq "sha256:$(sha256sum "$T/blob" | cut -d' ' -f1)" "$layer_digest" "the layer through the proxy"
assert_eq "$(pcurl -u "$REG_USER:$REG_PASSWORD" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PPORT/v2/app/manifests/nope")" 404 "an unknown tag"

log "refused: pushes, paths outside /v2/, .. segments — each with a log line"
assert_eq "$(pcurl -u "$REG_USER:$REG_PASSWORD" -X POST -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PPORT/v2/app/blobs/uploads/")" 405 "a push"
assert_eq "$(pcurl -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PPORT/debug/vars")" 404 "outside /v2/"
assert_eq "$(pcurl --path-as-is -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PPORT/v2/../debug")" 404 "a .. segment"
wait_for 5 "the refusals logged" bash -c "grep -q 'refused POST /v2/app/blobs/uploads/: pulls only' '$T/parent/ledged.log' &&
  grep -q 'refused GET /debug/vars: not the registry API' '$T/parent/ledged.log' &&
  grep -q 'refused GET /v2/../debug: not the registry API' '$T/parent/ledged.log'"

log "max_connections (8): eight slow pulls in progress, the ninth is refused (503, logged)"
# (a blob larger than the kernel's socket buffers and the proxy's 1 MiB, so that each relay lasts)
head -c $((16 << 20)) /dev/urandom > "$T/big.blob"
big_digest=$(registry_put_blob tls app "$T/big.blob")
SLOW=()
slow_pull() { # slow_pull I: one rate-limited pull of the big blob; its curl's status in slow-I.rc
  rm -f "$T/slow-$1.rc"
  { curl -s --cacert "$PCA" -u "$REG_USER:$REG_PASSWORD" --limit-rate 20k -o /dev/null \
      "https://127.0.0.1:$PPORT/v2/app/blobs/$big_digest"; echo $? > "$T/slow-$1.rc"; } &
  SLOW[$1]=$!
}
for i in 1 2 3 4 5 6 7 8; do slow_pull "$i"; done
relaying() {
  # a pull that ended already (a CI run once had only seven in progress, cause unknown) is
  # started again and said so: the point is eight in progress, then the ninth
  local i
  for i in 1 2 3 4 5 6 7 8; do
    [ -f "$T/slow-$i.rc" ] && { echo "slow pull $i ended early (curl $(cat "$T/slow-$i.rc")): again" >> "$T/slow-again.log"; slow_pull "$i"; }
  done
  [ "$(curl -s --cacert "$PCA" -o /dev/null -w "%{http_code}" "https://127.0.0.1:$PPORT/v2/")" = 503 ]
}
wait_for 20 "the ninth request refused" relaying
[ -s "$T/slow-again.log" ] && log "$(cat "$T/slow-again.log")"
wait_for 5 "the refusal logged" grep -q "requests in progress (registry_proxy.max_connections)" "$T/parent/ledged.log"
for pid in "${SLOW[@]}"; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
wait_for 10 "the relays ended with their clients" grep -q "the client went after" "$T/parent/ledged.log"
wait_for 10 "requests served again" bash -c "[ \"\$(curl -s --cacert '$PCA' -o /dev/null -w '%{http_code}' https://127.0.0.1:$PPORT/v2/)\" = 401 ]"

log "redirects: a registry sending a blob to its storage elsewhere (307) — the parent follows it, Authorization stays with the registry"
RDIR="$T/redirecting"
mkdir -p "$RDIR"
RPORT_REG=$(low_free_port)
RPORT_STORE=$(low_free_port)
cp "$T/img/layer.tar" "$RDIR/blob"
python3 - "$RPORT_REG" "$RPORT_STORE" "$RDIR" > "$RDIR/log" 2>&1 <<'PY' &
import http.server, sys, threading
reg, store, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def note(name, text):
    with open(f"{d}/{name}", "a") as f:
        f.write(text + "\n")
class Registry(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        note("registry-auth", self.headers.get("Authorization", "none"))
        if self.path.startswith("/v2/app/blobs/"):
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{store}/storage/blob?sig=s1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
class Storage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        note("storage-auth", self.headers.get("Authorization", "none"))
        data = open(f"{d}/blob", "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
servers = [http.server.ThreadingHTTPServer(("127.0.0.1", p), h) for p, h in ((reg, Registry), (store, Storage))]
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
open(f"{d}/ready", "w").close()
threading.Event().wait()
PY
REDIR_PID=$!
wait_for 10 "the redirecting registry" test -f "$RDIR/ready"
RPP=$(low_free_port)
layer_config rparent "registry_proxy:
  listen: 127.0.0.1:$RPP
  target: http://127.0.0.1:$RPORT_REG"
start_layer rparent
RPCA="$T/rparent/state/certs/trust-bundle.pem"
wait_for 10 "the redirecting parent's proxy" curl -s -o /dev/null --cacert "$RPCA" "https://127.0.0.1:$RPP/v2/"
curl -sS --cacert "$RPCA" -u "someone:secret" -D "$RDIR/headers" -o "$RDIR/got" \
  "https://127.0.0.1:$RPP/v2/app/blobs/$layer_digest" || fail "the redirected blob through the proxy"
head -1 "$RDIR/headers" | grep -q " 200" || fail "not 200 through the proxy: $(head -1 "$RDIR/headers")"
grep -qi '^location:' "$RDIR/headers" && fail "the redirect reached the child"
cmp -s "$RDIR/got" "$T/img/layer.tar" || fail "the redirected blob differs"
grep -q '^Basic ' "$RDIR/registry-auth" || fail "the registry did not get the credentials: $(cat "$RDIR/registry-auth")"
assert_eq "$(sort -u "$RDIR/storage-auth")" none "Authorization at the storage host"
kill "$REDIR_PID" 2>/dev/null; wait "$REDIR_PID" 2>/dev/null || true
stop_layer rparent

log "a Bearer-token registry (auth.token; the realm an ES256 token server) behind a parent proxy: the challenge names the proxy, the token requests pass through it"
start_registry tls-token
TREG="$REG_TT_ADDR"
for f in layer.tar config.json; do registry_put_blob tls-token app "$T/img/$f" >/dev/null; done
registry_put_manifest tls-token app 1 application/vnd.oci.image.manifest.v1+json "$T/img/manifest.json"
TPPORT=$(low_free_port)
TMPORT=$(low_free_port)
layer_config tparent "certificates:
  extra_names: [${HOSTIP:-127.0.0.1}]
registry_proxy:
  listen: 0.0.0.0:$TPPORT
  target: https://$TREG
  target_ca_file: $REG_CA"
start_layer tparent
TPCA="$T/tparent/state/certs/trust-bundle.pem"
wait_for 10 "the token registry's parent proxy" curl -s -o /dev/null --cacert "$TPCA" "https://127.0.0.1:$TPPORT/v2/"
curl -sS --cacert "$TPCA" -o /dev/null -D "$T/tch" "https://127.0.0.1:$TPPORT/v2/app/manifests/1" | true
grep -qi "^www-authenticate: Bearer realm=\"https://127.0.0.1:$TPPORT/ledge/token/0\",service=\"ledge-test-registry\",scope=\"repository:app:pull\"" "$T/tch" ||
  fail "the challenge does not name the proxy's realm: $(cat "$T/tch")"
grep -qF "$REG_TT_REALM" "$T/tch" && fail "the target's own realm reached the child"
grep -q "the target's token realm $REG_TT_REALM is served to children as /ledge/token/0" "$T/tparent/ledged.log" ||
  fail "no log line for the learned realm"
ttoken() { # ttoken PORT CA USER:PASSWORD: a pull token through that proxy's realm
  curl -sS --cacert "$2" -u "$3" "https://127.0.0.1:$1/ledge/token/0?service=ledge-test-registry&scope=repository:app:pull"
}
tok=$(ttoken "$TPPORT" "$TPCA" "$REG_TT_USER:$REG_TT_PASSWORD" | jq -r .token)
[ -n "$tok" ] && [ "$tok" != null ] || fail "no token through the proxy's realm"
grep -Eq "GET /token\?service=ledge-test-registry&scope=repository(%3A|:)app(%3A|:)pull user=$REG_TT_USER 200" "$REG_TT_LOG" ||
  fail "the token server did not see the child's request with its credentials: $(tail -3 "$REG_TT_LOG")"
assert_eq "$(curl -sS --cacert "$TPCA" -H "Authorization: Bearer $tok" -H "$ACCEPT" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$TPPORT/v2/app/manifests/1")" 200 "the manifest with the token, through the proxy"
assert_eq "$(curl -sS --cacert "$TPCA" -u "$REG_TT_USER:wrong" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$TPPORT/ledge/token/0?service=ledge-test-registry")" 401 "a wrong password at the token realm"
assert_eq "$(curl -sS --cacert "$TPCA" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$TPPORT/ledge/token/7")" 404 "a realm the target never named"
layer_config tmiddle "upstream:
  parent: 127.0.0.1
  port: $NOHUB
  ca_file: $TPCA
registry_proxy:
  listen: 127.0.0.1:$TMPORT
  target: https://\$upstream:$TPPORT"
start_layer tmiddle
TMCA="$T/tmiddle/state/certs/trust-bundle.pem"
wait_for 10 "the token chain's middle proxy" curl -s -o /dev/null --cacert "$TMCA" "https://127.0.0.1:$TMPORT/v2/"
curl -sS --cacert "$TMCA" -o /dev/null -D "$T/tmch" "https://127.0.0.1:$TMPORT/v2/" | true
grep -qi "^www-authenticate: Bearer realm=\"https://127.0.0.1:$TMPORT/ledge/token/0\"" "$T/tmch" ||
  fail "the middle's challenge does not name the middle: $(cat "$T/tmch")"
tok=$(ttoken "$TMPORT" "$TMCA" "$REG_TT_USER:$REG_TT_PASSWORD" | jq -r .token)
assert_eq "$(curl -sS --cacert "$TMCA" -H "Authorization: Bearer $tok" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$TMPORT/v2/")" 200 "a token through two layers"

log "the middle: its proxy on 127.0.0.1:$MPORT targets its own \$upstream (the parent)"
layer_config middle "upstream:
  parent: 127.0.0.1
  port: $NOHUB
  ca_file: $PCA
registry_proxy:
  listen: 127.0.0.1:$MPORT
  target: https://\$upstream:$PPORT"
start_layer middle
MCA="$T/middle/state/certs/trust-bundle.pem"
wait_for 10 "the middle's proxy" curl -s -o /dev/null --cacert "$MCA" "https://127.0.0.1:$MPORT/v2/"
grep -q "forwarded to https://127.0.0.1:$PPORT" "$T/middle/ledged.log" || fail "the middle's proxy does not target the parent"
assert_eq "$(curl -sS --cacert "$MCA" -u "$REG_USER:$REG_PASSWORD" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$MPORT/v2/")" 200 "/v2/ through the chain"
cat "$PCA" "$MCA" "$TPCA" "$TMCA" > "$T/parents-ca.pem"

creds() { # creds PASSWORD MANIFEST_FILE: registryCredentials for both $upstream ports, and the
  # token registry's user for the token proxies' ports
  jq --arg a "\$upstream:$PPORT" --arg b "\$upstream:$MPORT" --arg u "$REG_USER" --arg p "$1" \
     --arg c "\$upstream:$TPPORT" --arg d "\$upstream:$TMPORT" --arg tu "$REG_TT_USER" --arg tp "$REG_TT_PASSWORD" \
    '.modulesContent["$edgeAgent"]["properties.desired"].runtime.settings.registryCredentials =
       {"parent": {"address": $a, "username": $u, "password": $p},
        "middle": {"address": $b, "username": $u, "password": $p},
        "tparent": {"address": $c, "username": $tu, "password": $tp},
        "tmiddle": {"address": $d, "username": $tu, "password": $tp}}' "$2" > "$2.tmp" && mv "$2.tmp" "$2"
}
upmod() { # upmod NAME IMAGE
  printf '"%s": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "%s"}}' "$1" "$2"
}

log "a child without upstream.parent refuses a \$upstream image at deploy time"
write_config
start_ledged
manifest "$(upmod direct "\$upstream:$PPORT/app:1")" > "$T/deploy.json"
creds "$REG_PASSWORD" "$T/deploy.json"
if ledge deploy "$T/deploy.json" > "$T/out" 2>&1; then fail "deployed without upstream.parent: $(cat "$T/out")"; fi
grep -qF "modules.direct.settings.image: \$upstream:$PPORT/app:1 names the parent device's registry (\$upstream) and upstream.parent is not set in this device's config" "$T/out" ||
  fail "the refusal does not say why: $(cat "$T/out")"
container_exists direct && fail "a container was made for the refused module"
stop_ledged

log "the child with upstream.parent: one module through the parent, one through the chain; the same from the token registry"
EXTRA_CONFIG="upstream:
  parent: 127.0.0.1
  port: $NOHUB
  ca_file: $T/parents-ca.pem"
write_config
sed -i "s|^  id: st-$TEST_NAME\$|&\n  key: $(devkey)\n  iothub_hostname: ledge-parent.local|" "$T/config.yaml"
start_ledged
manifest "$(upmod direct "\$upstream:$PPORT/app:1"), $(upmod chained "\$upstream:$MPORT/app:1"), $(upmod tokdirect "\$upstream:$TPPORT/app:1"), $(upmod tokchained "\$upstream:$TMPORT/app:1")" > "$T/deploy.json"
creds "$REG_PASSWORD" "$T/deploy.json"
ledge deploy "$T/deploy.json" > "$T/out" 2>&1 || fail "deploy failed: $(cat "$T/out")"
logged() { container_logs "$1" | grep -q pulled-through-the-parent; }
declare -A MODPORT=([direct]=$PPORT [chained]=$MPORT [tokdirect]=$TPPORT [tokchained]=$TMPORT)
for m in direct chained tokdirect tokchained; do
  wait_for 30 "$m running" status_is $m running
  wait_for 10 "$m's output" logged $m
  assert_eq "$(container_label $m dev.ledge.image)" "\$upstream:${MODPORT[$m]}/app:1" "$m's image label (the deployment's spelling)"
done
# the oci puller got its tokens from the realm each proxy named (the token server saw them all
# come through the parent's proxy, with the registryCredentials' user)
[ "$(grep -Ec "scope=repository(%3A|:)app(%3A|:)pull user=$REG_TT_USER 200" "$REG_TT_LOG")" -ge 4 ] ||
  fail "the token server saw too few pulls' tokens: $(cat "$REG_TT_LOG")"
ledge image list > "$T/images" 2>&1 || fail "ledge image list: $(cat "$T/images")"
grep -q "127.0.0.1:$PPORT/app:1" "$T/images" || fail "the store does not name 127.0.0.1:$PPORT/app:1: $(cat "$T/images")"
grep -q "127.0.0.1:$MPORT/app:1" "$T/images" || fail "the store does not name 127.0.0.1:$MPORT/app:1: $(cat "$T/images")"

log "a wrong password for \$upstream fails the module, saying so"
manifest "$(upmod direct "\$upstream:$PPORT/app:1"), $(upmod chained "\$upstream:$MPORT/app:1"), $(upmod wrong "\$upstream:$PPORT/app:2")" > "$T/deploy2.json"
jq --arg p "$REG_PASSWORD" --arg a "\$upstream:$PPORT" --arg b "\$upstream:$MPORT" --arg u "$REG_USER" \
  '.modulesContent["$edgeAgent"]["properties.desired"].runtime.settings.registryCredentials =
     {"parent": {"address": $a, "username": $u, "password": "wrong"},
      "middle": {"address": $b, "username": $u, "password": $p}}' "$T/deploy2.json" > "$T/deploy3.json"
if ledge deploy "$T/deploy3.json" > "$T/out" 2>&1; then fail "the wrong password deployed: $(cat "$T/out")"; fi
grep -q "registryCredentials.parent" "$T/out" || fail "the failure does not name the credentials: $(cat "$T/out")"
container_exists wrong && fail "a container was made for the module whose pull failed"

stop_ledged

# The docker engine: dockerd verifies the parent with certs.d/<parent>:<port>/ca.crt, which the
# operator installs (docs/registry-proxy.md); on the host's own address, since dockerd treats
# 127.0.0.0/8 as insecure and would not check anything.
if ! moby info >/dev/null 2>&1 || [ -z "$HOSTIP" ]; then
  [ "${CI:-}" = true ] && fail "CI=true but no dockerd or no non-loopback address for the docker part"
  log "SKIP the docker part: no usable dockerd or no non-loopback IPv4 address"
else
  log "docker engine: a child pulling \$upstream:$PPORT/app:1 (htpasswd) and \$upstream:$TPPORT/app:1 (token) through the parents at $HOSTIP"
  DC="$T/dchild"
  layer_config dchild "upstream:
  parent: $HOSTIP
  port: $NOHUB
  ca_file: $PCA"
  sed -i "s|^  uri: unix://$T/no-docker.sock\$|  uri: $MOBY_HOST|" "$DC/config.yaml"
  CERTS="/etc/docker/certs.d/$HOSTIP:$PPORT"
  TCERTS="/etc/docker/certs.d/$HOSTIP:$TPPORT"
  dchild_cleanup() {
    local rc=$?
    set +e
    rm -rf "$CERTS" "$TCERTS"
    local ids; ids=$(moby ps -aq --filter label=dev.ledge.device=st-$TEST_NAME-dchild 2>/dev/null)
    [ -n "$ids" ] && moby rm -f $ids >/dev/null 2>&1
    moby rmi "$HOSTIP:$PPORT/app:1" "$HOSTIP:$TPPORT/app:1" >/dev/null 2>&1
    (exit $rc)
    layers_cleanup
  }
  trap dchild_cleanup EXIT
  moby rmi "$HOSTIP:$PPORT/app:1" "$HOSTIP:$TPPORT/app:1" >/dev/null 2>&1 || true
  start_layer dchild
  dl() { "$LEDGE_BIN" -H "$DC/run/mgmt.sock" "$@"; }
  manifest "$(upmod viaparent "\$upstream:$PPORT/app:1"), $(upmod viatoken "\$upstream:$TPPORT/app:1")" > "$DC/deploy.json"
  creds "$REG_PASSWORD" "$DC/deploy.json"
  log "  without the parent's CA in certs.d: ledge check says so, the pull fails on the certificate"
  dl check --output json --config "$DC/config.yaml" --deployment "$DC/deploy.json" > "$DC/check.json" 2>/dev/null || true
  jq -e '.checks[] | select(.id == "upstream-registry" and .result == "warning")' "$DC/check.json" >/dev/null ||
    fail "ledge check does not warn about certs.d: $(jq -c '.checks[] | select(.id == "upstream-registry")' "$DC/check.json")"
  jq -r '.checks[] | select(.id == "upstream-registry") | .message' "$DC/check.json" | grep -qF "$CERTS/ca.crt" ||
    fail "the check does not name $CERTS/ca.crt"
  if dl deploy "$DC/deploy.json" > "$DC/out" 2>&1; then fail "dockerd pulled without trusting the parent: $(cat "$DC/out")"; fi
  grep -qi "certificate\|x509\|TLS" "$DC/out" || fail "the failure does not say why: $(cat "$DC/out")"
  log "  with it (the operator's step): pulled through the proxy with the credentials, running"
  mkdir -p "$CERTS" "$TCERTS" && cp "$PCA" "$CERTS/ca.crt" && cp "$TPCA" "$TCERTS/ca.crt"
  dl check --output json --config "$DC/config.yaml" --deployment "$DC/deploy.json" > "$DC/check.json" 2>/dev/null || true
  jq -e '.checks[] | select(.id == "upstream-registry" and .result == "ok")' "$DC/check.json" >/dev/null ||
    fail "ledge check still warns: $(jq -c '.checks[] | select(.id == "upstream-registry")' "$DC/check.json")"
  dl deploy "$DC/deploy.json" > "$DC/out" 2>&1 || fail "deploy on docker failed: $(cat "$DC/out")"
  dstatus_is() { [ "$(dl list --json | jq -r '.[] | select(.name == "viaparent") | .runtimeStatus')" = "$1" ]; }
  wait_for 60 "viaparent running on docker" dstatus_is running
  dtoken_running() { [ "$(dl list --json | jq -r '.[] | select(.name == "viatoken") | .runtimeStatus')" = running ]; }
  wait_for 60 "viatoken (the token registry: dockerd gets its token at the proxy) running on docker" dtoken_running
  assert_eq "$(moby inspect -f '{{.Config.Image}}' viatoken)" "$HOSTIP:$TPPORT/app:1" "the token module's image on dockerd"
  grep -Eq "GET /ledge/token/0\?.*scope=repository(%3A|:)app(%3A|:)pull" "$T/tparent/ledged.log" ||
    fail "dockerd's token request did not come through the parent's proxy"
  assert_eq "$(moby inspect -f '{{.Config.Image}}' viaparent)" "$HOSTIP:$PPORT/app:1" "the container's image on dockerd"
  dlogged() { moby logs viaparent 2>&1 | grep -q pulled-through-the-parent; }
  wait_for 10 "viaparent's output on docker" dlogged
  manifest "" > "$DC/empty.json"
  dl deploy "$DC/empty.json" >/dev/null 2>&1 || fail "emptying the docker child"
  stop_layer dchild
fi

stop_layer tmiddle
stop_layer tparent
stop_layer middle
stop_layer parent
log "ok"
