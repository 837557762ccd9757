/* creds.h — registry credentials: which entry of an IoT Edge deployment's registryCredentials
 * ($edgeAgent runtime.settings.registryCredentials: {name: {address, username, password}})
 * belongs to an image's registry, and the Engine API's X-Registry-Auth header built from it.
 * Shared by the oci engine's registry client and the docker backend. Pure. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "base/errors.h"

/* Borrowed from the JSON it was looked up in. */
struct img_cred {
    const char *name; /* the registryCredentials key */
    const char *address;
    const char *username;
    const char *password;
};

/* The comparable form of a registry address: scheme ("https://") and path ("/v1/") dropped,
 * lower case, the https port ":443" dropped, and Docker Hub's aliases (index.docker.io,
 * registry-1.docker.io) folded into "docker.io". -EINVAL for an address with no host. */
int img_registry_key(const char *address, char *dst, size_t size);
/* Whether a credential address names the registry of an image (img_ref.registry). */
bool img_registry_matches(const char *address, const char *registry);

/* The entry of registry_credentials (the JSON object, may be NULL) for registry: -ENOENT when
 * none matches (pull anonymously), -EINVAL (e says which entry and field) when the matching
 * entry lacks a username or password. When several match, the lowest name wins (key order in
 * a deployment means nothing; agent/manifest.h's deployment_credential_for agrees). */
int img_creds_lookup(const json_t *registry_credentials, const char *registry, struct img_cred *ret,
                     struct lerr *e);

/* X-Registry-Auth value for the Engine API: base64url of {"username","password",
 * "serveraddress"}. out receives the value (a secret: wipe it after use). */
int img_creds_registry_auth(const struct img_cred *c, const char *registry, struct lbuf *out);
