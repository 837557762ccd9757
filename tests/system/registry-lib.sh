# registry-lib.sh — a real registry for system tests (sourced after lib.sh): Debian's
# docker-registry (the CNCF distribution registry, /usr/bin/docker-registry) on a free loopback
# port, either
#   start_registry plain    plain HTTP, no auth (dockerd treats 127.0.0.0/8 as insecure by
#                           default, so `docker push` works without configuration), or
#   start_registry tls      HTTPS with a CA made here and htpasswd (bcrypt) basic auth; the CA
#                           goes to /etc/docker/certs.d/HOST:PORT/ca.crt for dockerd (read per
#                           connection, no restart) and is removed again on exit.
#   start_registry token    plain HTTP with the distribution token flow (auth.token): the realm
#                           is a static token server (python3 -m http.server) handing out one
#                           RS256 JWT made here with openssl (x5c: a self-signed certificate the
#                           registry trusts), granting pull and push on REG_TOKEN_REPO only.
#   start_registry tls-token HTTPS (the tls kind's certificate) with auth.token whose realm is
#                           tests/system/token-server.js (node): HTTPS with the same
#                           certificate, REG_TT_USER / REG_TT_PASSWORD checked, ES256 tokens
#                           (x5c: a self-signed P-256 certificate the registry trusts) for the
#                           scopes asked; its requests logged in $REG_TT_LOG. REG_TT_REALM is the
#                           realm, REG_TT_TOKEN a pull+push token for app (reg_curl's).
# REG_TLS_HOST (default 127.0.0.1) puts the tls registry on another local address: dockerd treats
# 127.0.0.0/8 as insecure and then skips certificate checks, so a test that wants dockerd to
# verify the CA uses the host's own address (REG_TLS_HOST=$(hostname -I | cut -d' ' -f1)).
# Each start sets REG_<KIND>_ADDR (HOST:PORT), and for tls REG_CA (the CA file),
# REG_USER / REG_PASSWORD. push_image SRC KIND NAME pushes a local docker image with the docker
# CLI (logins go to a private DOCKER_CONFIG, never ~/.docker). registry_put_blob/manifest push
# hand-made images through the registry API with curl. Everything stops on exit (trap).

need "test -x /usr/bin/docker-registry" "docker-registry missing (scripts/deps --test)"
need "command -v htpasswd" "htpasswd missing (apache2-utils; scripts/deps --test)"
need "command -v openssl" "openssl missing"

REG_DIR="$T/registry"
REG_USER=ledge-test
REG_PASSWORD="pw-$RANDOM$RANDOM"
REG_PIDS=()
REG_CERTS_DIRS=()
export DOCKER_CONFIG="$T/docker-config"
mkdir -p "$REG_DIR" "$DOCKER_CONFIG"

# A port nothing listens on now; start_registry retries when the registry loses the race.
registry_free_port() { # registry_free_port [HOST]
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    (exec 3<>"/dev/tcp/${1:-127.0.0.1}/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
}

registry_make_ca() {
  [ -f "$REG_DIR/ca.crt" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ledge test registry CA" \
    -keyout "$REG_DIR/ca.key" -out "$REG_DIR/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$REG_DIR/server.key" -out "$REG_DIR/server.csr" 2>/dev/null
  local alt="IP:127.0.0.1,DNS:localhost"
  [ "${REG_TLS_HOST:-127.0.0.1}" = 127.0.0.1 ] || alt+=",IP:$REG_TLS_HOST"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$alt" > "$REG_DIR/ext"
  openssl x509 -req -in "$REG_DIR/server.csr" -CA "$REG_DIR/ca.crt" -CAkey "$REG_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$REG_DIR/ext" -out "$REG_DIR/server.crt" 2>/dev/null
  REG_CA="$REG_DIR/ca.crt"
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# The token server: a directory with a "token" file served over HTTP on a free port.
REG_TOKEN_REPO=tokrepo
registry_token_server() {
  local dir="$REG_DIR/token-server" port attempt
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ledge test token issuer" \
    -keyout "$REG_DIR/token.key" -out "$REG_DIR/token.crt" 2>/dev/null
  local now x5c header claims signing
  now=$(date +%s)
  x5c=$(openssl x509 -in "$REG_DIR/token.crt" -outform DER | openssl base64 -A)
  header=$(printf '{"alg":"RS256","typ":"JWT","x5c":["%s"]}' "$x5c" | b64url)
  claims=$(printf '{"iss":"ledge-test-issuer","sub":"ledge","aud":"ledge-test-registry","exp":%d,"nbf":%d,"iat":%d,"jti":"%s","access":[{"type":"repository","name":"%s","actions":["pull","push"]}]}' \
    $((now + 3600)) $((now - 60)) $((now - 60)) "$RANDOM$RANDOM" "$REG_TOKEN_REPO" | b64url)
  signing="$header.$claims"
  REG_TOKEN="$signing.$(printf '%s' "$signing" | openssl dgst -sha256 -sign "$REG_DIR/token.key" -binary | b64url)"
  printf '{"token": "%s", "expires_in": 3600}' "$REG_TOKEN" > "$dir/token"
  for attempt in 1 2 3 4 5; do
    port=$(registry_free_port)
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$dir" >"$dir.log" 2>&1 &
    local pid=$! end=$(( $(date +%s) + 10 ))
    while [ "$(date +%s)" -lt "$end" ] && kill -0 "$pid" 2>/dev/null; do
      if curl -sf "http://127.0.0.1:$port/token" >/dev/null 2>&1; then
        REG_PIDS+=("$pid"); REG_TOKEN_REALM="http://127.0.0.1:$port/token"; return 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  done
  fail "the token server did not start: $(cat "$dir.log")"
}

# The token server of the tls-token kind (node), on a free port over HTTPS.
REG_TT_USER=ledge-token-user
REG_TT_PASSWORD="tpw-$RANDOM$RANDOM"
registry_node_token_server() {
  need "command -v node" "node missing (the token server; scripts/deps --test)"
  registry_make_ca
  local dir="$REG_DIR/node-token" attempt
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=ledge test ES256 token issuer" -keyout "$dir/sign.key" -out "$dir/sign.crt" 2>/dev/null
  REG_TT_LOG="$dir/requests.log"
  for attempt in 1 2 3; do
    rm -f "$dir/port"
    node "$(dirname "${BASH_SOURCE[0]}")/token-server.js" --port 0 --port-file "$dir/port" \
      --issuer ledge-test-issuer --service ledge-test-registry --user "$REG_TT_USER" \
      --password "$REG_TT_PASSWORD" --sign-key "$dir/sign.key" --sign-cert "$dir/sign.crt" \
      --cert "$REG_DIR/server.crt" --key "$REG_DIR/server.key" >>"$REG_TT_LOG" 2>&1 &
    local pid=$! end=$(( $(date +%s) + 10 ))
    while [ "$(date +%s)" -lt "$end" ] && kill -0 "$pid" 2>/dev/null; do
      if [ -s "$dir/port" ]; then
        REG_PIDS+=("$pid"); REG_TT_REALM="https://127.0.0.1:$(cat "$dir/port")/token"; return 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  done
  fail "the token server did not start: $(cat "$REG_TT_LOG")"
}

start_registry() { # start_registry plain|tls|token|tls-token
  local kind="$1" dir="$REG_DIR/$1" port tls="" auth="" scheme=http attempt host=127.0.0.1
  [ "$kind" = tls ] && host="${REG_TLS_HOST:-127.0.0.1}"
  if [ "$kind" = tls-token ]; then
    registry_node_token_server
    tls="  tls:
    certificate: $REG_DIR/server.crt
    key: $REG_DIR/server.key"
    auth="auth:
  token:
    realm: $REG_TT_REALM
    service: ledge-test-registry
    issuer: ledge-test-issuer
    rootcertbundle: $REG_DIR/node-token/sign.crt"
    scheme=https
  fi
  mkdir -p "$dir/data"
  if [ "$kind" = token ]; then
    need "command -v python3" "python3 missing (the token server)"
    registry_token_server
    auth="auth:
  token:
    realm: $REG_TOKEN_REALM
    service: ledge-test-registry
    issuer: ledge-test-issuer
    rootcertbundle: $REG_DIR/token.crt"
  fi
  if [ "$kind" = tls ]; then
    registry_make_ca
    htpasswd -Bbc "$dir/htpasswd" "$REG_USER" "$REG_PASSWORD" 2>/dev/null
    tls="  tls:
    certificate: $REG_DIR/server.crt
    key: $REG_DIR/server.key"
    auth="auth:
  htpasswd:
    realm: ledge-test
    path: $dir/htpasswd"
    scheme=https
  fi
  for attempt in 1 2 3 4 5; do
    port=$(registry_free_port "$host")
    cat > "$dir/config.yml" <<YAML
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $host:$port
$tls
$auth
YAML
    /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    local pid=$!
    local end=$(( $(date +%s) + 20 )) up=0
    while [ "$(date +%s)" -lt "$end" ]; do
      kill -0 "$pid" 2>/dev/null || break
      local code
      code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$REG_DIR/ca.crt" \
        "$scheme://$host:$port/v2/" 2>/dev/null || true)
      if [ "$code" = 200 ] || [ "$code" = 401 ]; then up=1; break; fi
      sleep 0.1
    done
    if [ $up = 1 ]; then
      REG_PIDS+=("$pid")
      if [ "$kind" = tls ]; then
        REG_TLS_ADDR="$host:$port"
        local certs="/etc/docker/certs.d/$REG_TLS_ADDR"
        mkdir -p "$certs" && cp "$REG_DIR/ca.crt" "$certs/ca.crt"
        REG_CERTS_DIRS+=("$certs")
      elif [ "$kind" = token ]; then
        REG_TOKEN_ADDR="127.0.0.1:$port"
      elif [ "$kind" = tls-token ]; then
        REG_TT_ADDR="127.0.0.1:$port"
        REG_TT_TOKEN=$(curl -sS --cacert "$REG_CA" -u "$REG_TT_USER:$REG_TT_PASSWORD" \
          "$REG_TT_REALM?service=ledge-test-registry&scope=repository:app:pull,push" | jq -r .token)
        [ -n "$REG_TT_TOKEN" ] && [ "$REG_TT_TOKEN" != null ] || fail "no token from $REG_TT_REALM"
      else
        REG_PLAIN_ADDR="127.0.0.1:$port"
      fi
      log "registry ($kind) on $host:$port"
      return 0
    fi
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    grep -q "address already in use" "$dir/log" || { cat "$dir/log" >&2; fail "docker-registry ($kind) did not start"; }
  done
  fail "docker-registry ($kind): no free port after 5 tries"
}

registry_addr() {
  case "$1" in tls) echo "$REG_TLS_ADDR" ;; token) echo "$REG_TOKEN_ADDR" ;; tls-token) echo "$REG_TT_ADDR" ;; *) echo "$REG_PLAIN_ADDR" ;; esac
}

# push_image SRC KIND NAME: tag a local image as ADDR/NAME and push it with the docker CLI.
push_image() {
  local src="$1" kind="$2" name="$3" addr
  addr=$(registry_addr "$kind")
  if [ "$kind" = tls ]; then
    echo "$REG_PASSWORD" | docker login -u "$REG_USER" --password-stdin "$addr" >/dev/null 2>&1 ||
      fail "docker login $addr failed"
  fi
  docker tag "$src" "$addr/$name"
  docker push -q "$addr/$name" >/dev/null 2>&1 || docker push "$addr/$name" >&2 ||
    fail "docker push $addr/$name failed"
  docker rmi "$addr/$name" >/dev/null 2>&1 || true
}

# curl against a registry's API: reg_curl KIND PATH [curl args...] (basic auth for tls)
reg_curl() {
  local kind="$1" path="$2" addr; shift 2
  addr=$(registry_addr "$kind")
  if [ "$kind" = tls ]; then
    curl -sS --cacert "$REG_CA" -u "$REG_USER:$REG_PASSWORD" "https://$addr$path" "$@"
  elif [ "$kind" = token ]; then
    curl -sS -H "Authorization: Bearer $REG_TOKEN" "http://$addr$path" "$@"
  elif [ "$kind" = tls-token ]; then
    curl -sS --cacert "$REG_CA" -H "Authorization: Bearer $REG_TT_TOKEN" "https://$addr$path" "$@"
  else
    curl -sS "http://$addr$path" "$@"
  fi
}

# registry_put_blob KIND REPO FILE: a monolithic upload (POST, then PUT with the digest).
registry_put_blob() {
  local kind="$1" repo="$2" file="$3" digest location
  digest="sha256:$(sha256sum "$file" | cut -d' ' -f1)"
  location=$(reg_curl "$kind" "/v2/$repo/blobs/uploads/" -X POST -D - -o /dev/null |
    tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  [ -n "$location" ] || fail "blob upload to $repo: no Location"
  case "$location" in http*) location="/${location#*://*/}";; esac
  local sep='?'; case "$location" in *\?*) sep='&';; esac
  reg_curl "$kind" "$location${sep}digest=$digest" -X PUT -H 'Content-Type: application/octet-stream' \
    --data-binary "@$file" -o /dev/null -w '%{http_code}' | grep -q 201 || fail "blob PUT $digest to $repo failed"
  echo "$digest"
}

# registry_put_manifest KIND REPO REF MEDIA_TYPE FILE
registry_put_manifest() {
  local kind="$1" repo="$2" ref="$3" mt="$4" file="$5"
  reg_curl "$kind" "/v2/$repo/manifests/$ref" -X PUT -H "Content-Type: $mt" \
    --data-binary "@$file" -o "$T/put-manifest.out" -w '%{http_code}' | grep -q 201 ||
    { cat "$T/put-manifest.out" >&2; fail "manifest PUT $repo:$ref failed"; }
}

# The file a registry serves for a blob (its filesystem driver's layout), for tampering tests.
registry_blob_file() { # registry_blob_file KIND DIGEST
  local hex="${2#sha256:}"
  echo "$REG_DIR/$1/data/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
}

stop_registries() {
  local pid d
  for pid in "${REG_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
  REG_PIDS=()
  for d in "${REG_CERTS_DIRS[@]}"; do rm -rf "$d"; done
  REG_CERTS_DIRS=()
}

# Chain onto lib.sh's cleanup: the registries go first, whatever happened.
registry_cleanup() { local rc=$?; set +e; stop_registries; (exit $rc); cleanup; }
trap registry_cleanup EXIT
