/* ref.h — image references as Docker reads them: [registry[:port]/]repository[:tag][@digest],
 * normalised (docker.io, library/, latest) so that one image has one spelling. Pure. */
#pragma once

#include <stdbool.h>

#include "base/errors.h"

#define IMG_REF_MAX 255    /* the whole normalised name, as Docker's reference grammar bounds it */
#define IMG_TAG_MAX 128    /* [A-Za-z0-9_][A-Za-z0-9_.-]{0,127} */
#define IMG_DIGEST_MAX 128 /* "sha256:" + 64 hex, room for the grammar's other algorithms */

/* Docker Hub as the reference names it, and the host its registry API answers on. */
#define IMG_DOCKER_HUB "docker.io"
#define IMG_DOCKER_HUB_API "registry-1.docker.io"

struct img_ref {
    char registry[IMG_REF_MAX + 1];  /* "docker.io", "localhost:5000", "[::1]:5000", as written */
    char repo[IMG_REF_MAX + 1];      /* "library/alpine", "team/app" */
    char tag[IMG_TAG_MAX + 1];       /* "latest" when neither tag nor digest was given; may be "" */
    char digest[IMG_DIGEST_MAX + 1]; /* "sha256:<64 hex>" or "" */
};

/* Parse a reference. Errors name what is wrong ("repository name must be lowercase", "invalid
 * tag", "unsupported digest algorithm"). Only sha256 digests are accepted. */
int img_ref_parse(const char *s, struct img_ref *ret, struct lerr *e);

/* The normalised full name: "docker.io/library/alpine:3.19", "localhost:5000/x@sha256:…";
 * with both tag and digest, "name:tag@digest" (the digest is what is pulled). */
int img_ref_format(const struct img_ref *r, char *dst, size_t size);
/* The name without tag or digest: "docker.io/library/alpine". */
int img_ref_name(const struct img_ref *r, char *dst, size_t size);
/* What a manifest request asks for: the digest when there is one, else the tag. */
const char *img_ref_selector(const struct img_ref *r);

/* A registry host[:port] as the registry API is reached: Docker Hub's name maps to
 * registry-1.docker.io, everything else is itself. */
const char *img_ref_api_host(const struct img_ref *r);
/* True for registries on this host only (localhost, 127.0.0.0/8, ::1), which Docker allows over
 * plain HTTP without being told. */
bool img_registry_is_loopback(const char *registry);
