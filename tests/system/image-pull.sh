#!/usr/bin/env bash
# The oci engine's image half against a real registry (Debian's docker-registry, started here):
# pulls over plain HTTP, over HTTPS with htpasswd auth (credentials from a deployment's
# registryCredentials) and through the token flow, digests as the registry states them, layers
# unpacked with whiteouts and checked through a real overlayfs mount, manifest lists by platform,
# a pull killed with -9 mid-unpack, `docker save` and OCI layout archives, garbage collection;
# and the failures, each naming image and registry: no or a wrong password, a token for another
# repository, an unknown tag, a tampered blob, an unknown platform, malicious layers (traversal,
# symlinks and hard links out) that must write nothing outside their directory.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/registry-lib.sh"
need_docker
docker image inspect ledge-testmod:latest >/dev/null 2>&1 || "$SRC_ROOT/scripts/build-images" testmod

TOOL="$LEDGE_BUILD/tests/ledge-image"
STORE="$T/store"
limg() { "$TOOL" "$@" 2>"$T/err"; }
expect_fail() { # expect_fail "MESSAGE PART"... -- ARGS...
  local parts=()
  while [ "$1" != "--" ]; do parts+=("$1"); shift; done
  shift
  if "$TOOL" "$@" >"$T/out" 2>"$T/err"; then fail "ledge-image $* succeeded"; fi
  local p
  for p in "${parts[@]}"; do
    grep -qF -- "$p" "$T/err" || fail "ledge-image $*: error lacks '$p': $(cat "$T/err")"
  done
  log "  refused: $(cat "$T/err")"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

start_registry plain
start_registry tls
PLAIN=$REG_PLAIN_ADDR
TLS=$REG_TLS_ADDR

log "push ledge-testmod to both registries with docker"
push_image ledge-testmod:latest plain testmod:v1
push_image ledge-testmod:latest tls team/testmod:v1

# The testmod binary as docker has it, to compare with what we unpack.
docker save ledge-testmod:latest -o "$T/testmod-save.tar"
mkdir -p "$T/save" && tar -C "$T/save" -xf "$T/testmod-save.tar"
want_bin=""
for l in $(jq -r '.[0].Layers[]' "$T/save/manifest.json"); do
  if tar -tf "$T/save/$l" | grep -qx 'testmod'; then
    want_bin=$(tar -xOf "$T/save/$l" testmod | sha256sum | cut -d' ' -f1)
  fi
done
[ -n "$want_bin" ] || fail "no /testmod in docker save's layers"

accept='application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json'
registry_digest() { # registry_digest KIND REPO REF — Docker-Content-Digest of a manifest
  reg_curl "$1" "/v2/$2/manifests/$3" -I -H "Accept: $accept" | tr -d '\r' |
    sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'
}
layer_file() { # layer_file STORE DIFF_ID PATH
  echo "$("$TOOL" layer-path "$1" "$2")/$3"
}

log "pull over plain HTTP (loopback, no auth)"
limg pull "$STORE" "$PLAIN/testmod:v1" > "$T/pulled.json" || fail "pull: $(cat "$T/err")"
assert_eq "$(jq -r .manifest "$T/pulled.json")" "$(registry_digest plain testmod v1)" "manifest digest"
assert_eq "$(jq -r .name "$T/pulled.json")" "$PLAIN/testmod:v1" "name"
last=$(jq -r '.layers[-1]' "$T/pulled.json")
got_bin=$(sha "$(layer_file "$STORE" "$last" testmod)")
assert_eq "$got_bin" "$want_bin" "/testmod unpacked"
[ -x "$(layer_file "$STORE" "$last" testmod)" ] || fail "/testmod lost its mode"
# The config docker saved is the config blob we pulled: same digest.
assert_eq "$(jq -r .config "$T/pulled.json")" "sha256:$(sha "$T/save/$(jq -r '.[0].Config' "$T/save/manifest.json")")" "config digest"

log "pull again: nothing new is written"
store_files() { find "$STORE/blobs" "$STORE/layers" -maxdepth 2 | sort; }
store_files > "$T/files.before"
limg pull "$STORE" "$PLAIN/testmod:v1" >/dev/null || fail "second pull: $(cat "$T/err")"
store_files | diff -u "$T/files.before" - >&2 || fail "the second pull changed the store"

log "HTTPS with basic auth: refused without credentials, with a wrong password, without the CA"
expect_fail "pulling $TLS/team/testmod:v1 from $TLS" "authentication" -- \
  pull "$STORE" --ca "$REG_CA" "$TLS/team/testmod:v1"
expect_fail "pulling $TLS/team/testmod:v1 from $TLS" "wrong username or password" -- \
  pull "$STORE" --ca "$REG_CA" --user "$REG_USER" --password wrong "$TLS/team/testmod:v1"
expect_fail "pulling $TLS/team/testmod:v1 from $TLS" "registry unreachable" "certificate" -- \
  pull "$STORE" --user "$REG_USER" --password "$REG_PASSWORD" "$TLS/team/testmod:v1"

log "HTTPS with the credentials a deployment's registryCredentials gives (address with scheme)"
cat > "$T/deployment.json" <<JSON
{"modulesContent": {"\$edgeAgent": {"properties.desired": {"schemaVersion": "1.1",
  "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25", "registryCredentials": {
    "other": {"address": "other.example.com", "username": "x", "password": "y"},
    "test": {"address": "https://$TLS/", "username": "$REG_USER", "password": "$REG_PASSWORD"}}}},
  "systemModules": {}, "modules": {}}}}}
JSON
limg pull "$STORE" --ca "$REG_CA" --creds "$T/deployment.json" "$TLS/team/testmod:v1" > "$T/tls.json" ||
  fail "pull with registryCredentials: $(cat "$T/err")"
assert_eq "$(jq -r .manifest "$T/tls.json")" "$(registry_digest tls team/testmod v1)" "TLS manifest digest"
assert_eq "$(jq -c .layers "$T/tls.json")" "$(jq -c .layers "$T/pulled.json")" "same layers from both"
grep -q "$REG_PASSWORD" "$T/err" "$T/tls.json" && fail "the password shows in the output"

log "an unknown tag and an unknown repository"
expect_fail "pulling $PLAIN/testmod:nope from $PLAIN" "tag nope not found in repository testmod" -- \
  pull "$STORE" "$PLAIN/testmod:nope"
expect_fail "pulling $PLAIN/nothere:v1 from $PLAIN" "not found" -- pull "$STORE" "$PLAIN/nothere:v1"

# ---- hand-made images: whiteouts, an index, tampering, malicious layers -------------------
mkdir -p "$T/l1/etc" "$T/l1/d" "$T/l2/etc" "$T/l2/d"
echo a > "$T/l1/etc/a"; echo b > "$T/l1/etc/b"; echo x > "$T/l1/d/x"
chmod 4755 "$T/l1/etc/b"
ln -s ../etc/b "$T/l1/d/to-b"
: > "$T/l2/etc/.wh.a"; : > "$T/l2/d/.wh..wh..opq"; echo y > "$T/l2/d/y"
tar_layer() { # tar_layer DIR OUT.tar.gz — ownership 0:0 and a fixed time, as image builders do
  tar -C "$1" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "${2%.gz}" .
  gzip -n -f "${2%.gz}"
}
tar_layer "$T/l1" "$T/l1.tar.gz"
tar_layer "$T/l2" "$T/l2.tar.gz"
diffid() { echo "sha256:$(gzip -dc "$1" | sha256sum | cut -d' ' -f1)"; }

# make_image KIND REPO TAG ARCH LAYER.tar.gz... → prints the manifest digest
make_image() {
  local kind="$1" repo="$2" tag="$3" arch="$4"; shift 4
  local ids=() descs=() f d
  for f in "$@"; do
    d=$(registry_put_blob "$kind" "$repo" "$f")
    ids+=("\"$(diffid "$f")\"")
    descs+=("{\"mediaType\": \"application/vnd.oci.image.layer.v1.tar+gzip\", \"digest\": \"$d\", \"size\": $(stat -c %s "$f")}")
  done
  local IFS=,
  printf '{"architecture": "%s", "os": "linux", "config": {"Cmd": ["/testmod"]}, "rootfs": {"type": "layers", "diff_ids": [%s]}}' \
    "$arch" "${ids[*]}" > "$T/config-$repo-$tag.json"
  local cd
  cd=$(registry_put_blob "$kind" "$repo" "$T/config-$repo-$tag.json")
  printf '{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "%s", "size": %s}, "layers": [%s]}' \
    "$cd" "$(stat -c %s "$T/config-$repo-$tag.json")" "${descs[*]}" > "$T/manifest-$repo-$tag.json"
  registry_put_manifest "$kind" "$repo" "$tag" application/vnd.oci.image.manifest.v1+json "$T/manifest-$repo-$tag.json"
  echo "sha256:$(sha "$T/manifest-$repo-$tag.json")"
}

log "an image with whiteouts and an opaque directory, through overlayfs"
m_amd=$(make_image plain layered amd64 amd64 "$T/l1.tar.gz" "$T/l2.tar.gz")
limg pull "$STORE" --platform linux/amd64 "$PLAIN/layered:amd64" > "$T/layered.json" ||
  fail "pull layered: $(cat "$T/err")"
assert_eq "$(jq -r .manifest "$T/layered.json")" "$m_amd" "layered manifest"
L1=$("$TOOL" layer-path "$STORE" "$(jq -r '.layers[0]' "$T/layered.json")")
L2=$("$TOOL" layer-path "$STORE" "$(jq -r '.layers[1]' "$T/layered.json")")
[ "$(stat -c '%F %t:%T' "$L2/etc/a")" = "character special file 0:0" ] || fail "no whiteout for etc/a: $(stat -c '%F' "$L2/etc/a")"
[ -e "$L2/etc/.wh.a" ] && fail "the .wh. file itself was kept"
[ "$(stat -c '%a %u' "$L1/etc/b")" = "4755 0" ] || fail "etc/b mode/owner: $(stat -c '%a %u' "$L1/etc/b")"
[ "$(readlink "$L1/d/to-b")" = "../etc/b" ] || fail "symlink d/to-b"
mkdir -p "$T/ov/upper" "$T/ov/work" "$T/ov/merged"
if mount -t overlay overlay -o "lowerdir=$L2:$L1,upperdir=$T/ov/upper,workdir=$T/ov/work" "$T/ov/merged" 2>"$T/mount.err"; then
  merged_ok=1
  [ -e "$T/ov/merged/etc/a" ] && merged_ok=0
  [ "$(cat "$T/ov/merged/etc/b" 2>/dev/null)" = b ] || merged_ok=0
  [ -e "$T/ov/merged/d/x" ] && merged_ok=0
  [ "$(cat "$T/ov/merged/d/y" 2>/dev/null)" = y ] || merged_ok=0
  [ "$(cat "$T/ov/merged/d/to-b" 2>/dev/null)" = b ] && merged_ok=0 # d is opaque: to-b is gone
  umount "$T/ov/merged"
  [ $merged_ok = 1 ] || fail "the overlay view is wrong (whiteout or opaque directory not honoured)"
  log "  overlayfs: etc/a deleted, d/ opaque, etc/b kept"
else
  [ "$(id -u)" = 0 ] && fail "overlay mount failed as root: $(cat "$T/mount.err")"
  log "  (not root: overlay mount skipped)"
fi

log "a manifest list: the platform rule picks the manifest"
mkdir -p "$T/l3" && printf 'arm64\n' > "$T/l3/arch"
tar_layer "$T/l3" "$T/l3.tar.gz"
m_arm=$(make_image plain layered arm64v8 arm64 "$T/l3.tar.gz")
printf '{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": [
 {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "%s", "size": %s, "platform": {"os": "linux", "architecture": "amd64"}},
 {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "%s", "size": %s, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}' \
  "$m_amd" "$(stat -c %s "$T/manifest-layered-amd64.json")" "$m_arm" "$(stat -c %s "$T/manifest-layered-arm64v8.json")" > "$T/list.json"
registry_put_manifest plain layered multi application/vnd.docker.distribution.manifest.list.v2+json "$T/list.json"
limg pull "$STORE" --platform linux/arm64 "$PLAIN/layered:multi" > "$T/multi.json" || fail "pull arm64: $(cat "$T/err")"
assert_eq "$(jq -r .manifest "$T/multi.json")" "$m_arm" "arm64 manifest chosen"
assert_eq "$(jq -r .index "$T/multi.json")" "sha256:$(sha "$T/list.json")" "index recorded"
assert_eq "$(jq -r .platform "$T/multi.json")" "linux/arm64" "platform"
limg pull "$STORE" --platform linux/amd64 "$PLAIN/layered:multi" > "$T/multi.json" || fail "pull amd64: $(cat "$T/err")"
assert_eq "$(jq -r .manifest "$T/multi.json")" "$m_amd" "amd64 manifest chosen"
expect_fail "pulling $PLAIN/layered:multi from $PLAIN" "no manifest for platform linux/arm/v7" "linux/amd64, linux/arm64" -- \
  pull "$STORE" --platform linux/arm/v7 "$PLAIN/layered:multi"
expect_fail "pulling $PLAIN/layered:arm64v8" "the image is for linux/arm64" -- \
  pull "$STORE" --platform linux/amd64 "$PLAIN/layered:arm64v8"

log "the distribution token flow (Bearer): a token from the realm, scoped to the repository"
start_registry token
TOKEN=$REG_TOKEN_ADDR
m_tok=$(make_image token "$REG_TOKEN_REPO" v1 amd64 "$T/l1.tar.gz")
limg pull "$STORE" --platform linux/amd64 "$TOKEN/$REG_TOKEN_REPO:v1" > "$T/tok.json" ||
  fail "pull with a token: $(cat "$T/err")"
assert_eq "$(jq -r .manifest "$T/tok.json")" "$m_tok" "token registry manifest"
curl -s -o /dev/null -w '%{http_code}' "http://$TOKEN/v2/$REG_TOKEN_REPO/manifests/v1" | grep -q 401 ||
  fail "the token registry answers without a token"
# The token grants tokrepo only: another repository's 401 survives the token.
expect_fail "pulling $TOKEN/other:v1 from $TOKEN" "token does not grant this repository" -- \
  pull "$STORE" --platform linux/amd64 "$TOKEN/other:v1"

log "a tampered blob in the registry: digest mismatch, nothing stored"
mkdir -p "$T/l4"; head -c 4096 /dev/urandom > "$T/l4/random"; tar_layer "$T/l4" "$T/l4.tar.gz"
make_image plain tampered v1 amd64 "$T/l4.tar.gz" >/dev/null
blob=$(jq -r '.layers[0].digest' "$T/manifest-tampered-v1.json")
file=$(registry_blob_file plain "$blob")
[ -f "$file" ] || fail "no registry file for $blob"
size=$(stat -c %s "$file")
head -c "$size" /dev/urandom > "$file"
expect_fail "pulling $PLAIN/tampered:v1 from $PLAIN" "blob $blob: digest mismatch" -- \
  pull "$STORE" --platform linux/amd64 "$PLAIN/tampered:v1"
[ -z "$(ls -A "$STORE/ingest")" ] || fail "the tampered download was left in ingest/: $(ls "$STORE/ingest")"
"$TOOL" inspect "$STORE" "$PLAIN/tampered:v1" >/dev/null 2>&1 && fail "the tampered image got a name"

log "malicious layers: traversal refused, symlinks and hard links kept inside the layer"
mkdir -p "$T/outside" "$T/m1" "$T/m2a" "$T/m2b/link" "$T/m3"
echo secret > "$T/outside/secret"
escape="ledge-escape-$$"
echo pwned > "$T/m1/$escape"
tar -C "$T/m1" -P --transform "s,^$escape,../../../../../../tmp/$escape," -cf "$T/mal1.tar" "$escape"
gzip -nf "$T/mal1.tar"
make_image plain mal traversal amd64 "$T/mal1.tar.gz" >/dev/null
expect_fail "pulling $PLAIN/mal:traversal" "\"..\" in a layer path is refused" -- \
  pull "$STORE" --platform linux/amd64 "$PLAIN/mal:traversal"
[ -e "/tmp/$escape" ] && { rm -f "/tmp/$escape"; fail "a layer wrote /tmp/$escape"; }
# A symlink to the real directory outside, then a file written through it: the symlink resolves
# inside the layer, where that directory does not exist.
ln -s "$T/outside" "$T/m2a/link"
tar -C "$T/m2a" -cf "$T/mal2.tar" link
echo pwned > "$T/m2b/link/secret"
tar -C "$T/m2b" -rf "$T/mal2.tar" link/secret
gzip -nf "$T/mal2.tar"
make_image plain mal symlink amd64 "$T/mal2.tar.gz" >/dev/null
expect_fail "pulling $PLAIN/mal:symlink" "entry link/secret: parent link resolves to nothing" -- \
  pull "$STORE" --platform linux/amd64 "$PLAIN/mal:symlink"
# A relative symlink climbing out, a file through it, and an absolute name: all land inside.
mkdir -p "$T/m4a" "$T/m4b/up"
ln -s ../../../../../../../.. "$T/m4a/up"
tar -C "$T/m4a" -cf "$T/mal4.tar" up
echo pwned > "$T/m4b/up/$escape"; echo abs > "$T/m4b/abs-$escape"
tar -C "$T/m4b" -rf "$T/mal4.tar" "up/$escape"
tar -C "$T/m4b" -P --transform "s,^abs,/abs," -rf "$T/mal4.tar" "abs-$escape"
gzip -nf "$T/mal4.tar"
make_image plain mal climb amd64 "$T/mal4.tar.gz" >/dev/null
limg pull "$STORE" --platform linux/amd64 "$PLAIN/mal:climb" > "$T/mal4.json" || fail "pull mal:climb: $(cat "$T/err")"
for p in "/$escape" "/abs-$escape" "/tmp/$escape"; do
  [ -e "$p" ] && { rm -f "$p"; fail "a layer wrote $p"; }
done
M2=$("$TOOL" layer-path "$STORE" "$(jq -r '.layers[0]' "$T/mal4.json")")
assert_eq "$(cat "$M2/$escape")" pwned "the write through the climbing symlink, inside the layer"
assert_eq "$(cat "$M2/abs-$escape")" abs "the absolute name, inside the layer"
echo x > "$T/m3/a"
ln "$T/m3/a" "$T/m3/b"
# b becomes a hard link to the path of the file outside (GNU tar drops the leading "/").
tar -C "$T/m3" -P --transform "s,^a\$,$T/outside/secret,RSh" -cf "$T/mal3.tar" a b 2>/dev/null
tar -tvf "$T/mal3.tar" | grep -q "b link to /\?${T#/}/outside/secret" || fail "mal3.tar: $(tar -tvf "$T/mal3.tar")"
gzip -nf "$T/mal3.tar"
make_image plain mal hardlink amd64 "$T/mal3.tar.gz" >/dev/null
expect_fail "pulling $PLAIN/mal:hardlink" "entry b: hard link target" "outside/secret is not in the layer" -- \
  pull "$STORE" --platform linux/amd64 "$PLAIN/mal:hardlink"
assert_eq "$(stat -c %h "$T/outside/secret")" 1 "links to the file outside"
assert_eq "$(ls "$T/outside")" secret "the directory outside"
log "the same layers with the fallback resolver (no openat2)"
"$TOOL" unpack "$T/fallback1" <(gzip -dc "$T/mal2.tar.gz") --no-openat2 > "$T/fb.out" 2>&1 &&
  fail "fallback: a symlinked parent was followed: $(cat "$T/fb.out")"
grep -q "symlinks in layer paths are not followed without openat2" "$T/fb.out" || fail "fallback message: $(cat "$T/fb.out")"
assert_eq "$(cat "$T/outside/secret")" secret "the file outside (fallback)"

log "kill -9 in the middle of a pull: nothing half-made is named or visible, the next pull completes"
mkdir -p "$T/big"
for i in $(seq 1 40); do mkdir -p "$T/big/d$i"; for j in $(seq 1 500); do : > "$T/big/d$i/f$j"; done; done
tar_layer "$T/big" "$T/big.tar.gz"
make_image plain big v1 amd64 "$T/l1.tar.gz" "$T/big.tar.gz" >/dev/null
# A store of its own; a machine fast enough to finish the unpack between two looks gets three tries.
killed=0
for attempt in 1 2 3; do
  KS="$T/store-kill-$attempt"
  "$TOOL" pull "$KS" --platform linux/amd64 "$PLAIN/big:v1" >/dev/null 2>&1 &
  pull_pid=$!
  end=$(( $(date +%s) + 60 ))
  while [ "$(date +%s)" -lt "$end" ] && kill -0 "$pull_pid" 2>/dev/null; do
    # The big layer's unpack directory (20,000 entries) is there for a while.
    if compgen -G "$KS/ingest/layer.*/d1" >/dev/null; then kill -9 "$pull_pid"; killed=1; break; fi
    sleep 0.02
  done
  wait "$pull_pid" 2>/dev/null || true
  [ $killed = 1 ] && break
done
[ $killed = 1 ] || fail "the pull ended three times before it could be killed mid-unpack"
"$TOOL" inspect "$KS" "$PLAIN/big:v1" >/dev/null 2>&1 && fail "a killed pull named its image"
big_diff=$(diffid "$T/big.tar.gz")
[ -e "$("$TOOL" layer-path "$KS" "$big_diff")" ] && fail "a half-unpacked layer is visible under its diff_id"
[ -n "$(ls -A "$KS/ingest")" ] || fail "the killed pull left nothing in ingest/ (was it killed mid-unpack?)"
limg pull "$KS" --platform linux/amd64 "$PLAIN/big:v1" > "$T/big.json" || fail "pull after kill -9: $(cat "$T/err")"
[ "$(find "$("$TOOL" layer-path "$KS" "$big_diff")" -type f | wc -l)" = 20000 ] || fail "the big layer is incomplete"
"$TOOL" gc "$KS" | grep -q 'ingest_removed=[1-9]' || fail "gc did not remove what the killed pull left"

log "docker save archive and OCI layout archive: load with no registry"
limg load "$STORE" "$T/testmod-save.tar" > "$T/loaded" || fail "load docker save: $(cat "$T/err")"
assert_eq "$(cat "$T/loaded")" "docker.io/library/ledge-testmod:latest" "loaded name"
"$TOOL" inspect "$STORE" ledge-testmod > "$T/loaded.json" || fail "inspect ledge-testmod"
assert_eq "$(jq -c .layers "$T/loaded.json")" "$(jq -c .layers "$T/pulled.json")" "same layers as pulled"
assert_eq "$(jq -r .config "$T/loaded.json")" "$(jq -r .config "$T/pulled.json")" "same config as pulled"
mkdir -p "$T/oci/blobs/sha256"
for f in "$T/l1.tar.gz" "$T/l2.tar.gz" "$T/config-layered-amd64.json" "$T/manifest-layered-amd64.json"; do
  cp "$f" "$T/oci/blobs/sha256/$(sha "$f")"
done
echo '{"imageLayoutVersion": "1.0.0"}' > "$T/oci/oci-layout"
printf '{"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "%s", "size": %s, "annotations": {"io.containerd.image.name": "example.com/oci/layered:1", "org.opencontainers.image.ref.name": "1"}}]}' \
  "$m_amd" "$(stat -c %s "$T/manifest-layered-amd64.json")" > "$T/oci/index.json"
tar -C "$T/oci" -czf "$T/oci.tar.gz" .
limg load "$STORE" "$T/oci.tar.gz" > "$T/loaded" || fail "load OCI layout: $(cat "$T/err")"
assert_eq "$(cat "$T/loaded")" "example.com/oci/layered:1" "OCI name"
assert_eq "$("$TOOL" inspect "$STORE" example.com/oci/layered:1 | jq -r .manifest)" "$m_amd" "OCI manifest"
cp "$T/l4.tar.gz" "$T/oci/blobs/sha256/$(sha "$T/l1.tar.gz")"
tar -C "$T/oci" -czf "$T/oci-bad.tar.gz" .
expect_fail "loading $T/oci-bad.tar.gz" "digest mismatch" -- load "$STORE" "$T/oci-bad.tar.gz"

log "garbage collection: only what no image names goes"
"$TOOL" list "$STORE" | jq -e '.images | length == 8' >/dev/null || fail "images: $("$TOOL" list "$STORE")"
for n in "$PLAIN/layered:amd64" "$PLAIN/layered:multi" example.com/oci/layered:1 "$PLAIN/mal:climb" \
    "$TOKEN/$REG_TOKEN_REPO:v1"; do
  "$TOOL" rm "$STORE" "$n" || fail "rm $n"
done
"$TOOL" gc "$STORE" > "$T/gc" || fail "gc: $(cat "$T/err")"
log "  $(cat "$T/gc")"
[ -d "$L1" ] && fail "layer $L1 survived gc"
[ -d "$M2" ] && fail "layer $M2 survived gc"
grep -q 'layers_removed=[1-9]' "$T/gc" || fail "gc removed no layer"
for n in "$PLAIN/testmod:v1" "$TLS/team/testmod:v1" ledge-testmod; do
  "$TOOL" inspect "$STORE" "$n" > "$T/kept.json" || fail "$n lost by gc"
  for l in $(jq -r '.layers[]' "$T/kept.json"); do
    [ -d "$("$TOOL" layer-path "$STORE" "$l")" ] || fail "$n: layer $l lost by gc"
  done
done
[ "$(sha "$(layer_file "$STORE" "$last" testmod)")" = "$want_bin" ] || fail "testmod changed by gc"

log "ok"
