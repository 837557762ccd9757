/* manifest.h — the registry's documents: image manifests (Docker v2 schema 2, OCI), manifest
 * lists and OCI image indexes, and image configs; the platform rule that picks one manifest of
 * an index for this machine. Pure: text in, validated structures out, errors naming the field. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/str.h"
#include "image/digest.h"

/* Documented bounds (docs/engine-oci.md "images"): what a registry can make us read. */
#define IMG_MANIFEST_MAX (4u << 20) /* a manifest or index, bytes (the distribution registry's) */
#define IMG_CONFIG_MAX (8u << 20)   /* an image config, bytes */
#define IMG_LAYERS_MAX 256          /* layers in one image */
#define IMG_INDEX_MAX 1024          /* manifests in one index */

#define IMG_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define IMG_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define IMG_MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define IMG_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define IMG_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define IMG_MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define IMG_MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
/* The Accept header of a manifest request. */
#define IMG_MANIFEST_ACCEPT                                                                        \
    IMG_MT_OCI_INDEX ", " IMG_MT_DOCKER_LIST ", " IMG_MT_OCI_MANIFEST ", " IMG_MT_DOCKER_MANIFEST

struct img_platform {
    char os[32];           /* "linux" */
    char architecture[32]; /* GOARCH: "amd64", "arm64", "arm" */
    char variant[16];      /* "v7", "v8", or "" */
};

enum img_compression {
    IMG_COMPRESSION_NONE,
    IMG_COMPRESSION_GZIP,
    IMG_COMPRESSION_ZSTD,
};

struct img_desc {
    char media_type[128];
    char digest[IMG_DIGEST_LEN + 1];
    uint64_t size;
    bool has_platform;
    struct img_platform platform;     /* index entries */
    enum img_compression compression; /* layers */
};

enum img_manifest_kind {
    IMG_KIND_IMAGE, /* an image manifest: config + layers */
    IMG_KIND_INDEX, /* a manifest list / image index: manifests */
};

struct img_manifest {
    enum img_manifest_kind kind;
    char media_type[128];
    struct img_desc config; /* IMG_KIND_IMAGE */
    struct img_desc *descs; /* layers (IMG_KIND_IMAGE) or manifests (IMG_KIND_INDEX) */
    size_t n_descs;
};

/* Parse a manifest or index. content_type (the HTTP Content-Type, may be NULL) is used when the
 * document does not name its own mediaType; when both are given they must agree. Docker schema 1
 * and unknown media types are errors that say so. */
int img_manifest_parse(const char *text, size_t n, const char *content_type,
                       struct img_manifest **ret, struct lerr *e);
void img_manifest_free(struct img_manifest *m);
DEFINE_CLEANUP(struct img_manifest *, img_manifest_free)
#define _cleanup_img_manifest_ _cleanup_(img_manifest_freep)

/* This machine's platform (uname, normalised to Go's names: x86_64 -> amd64, aarch64 -> arm64
 * v8, armv7l -> arm v7). */
int img_platform_host(struct img_platform *ret);
/* "linux/arm/v7", "linux/arm64", "amd64" (os linux). */
int img_platform_parse(const char *s, struct img_platform *ret, struct lerr *e);
int img_platform_format(const struct img_platform *p, char *dst, size_t size);
/* The platform rule: os and architecture must match (after normalisation); arm64's variant ""
 * and "v8" are one; an arm vN machine runs v(N-1)... but prefers its own; other architectures
 * ignore variants. Returns a score (higher is better) or -1 for no match. */
int img_platform_score(const struct img_platform *want, const struct img_platform *have);
/* The index entry for want (the best score, the first of equals); -ENOENT with e listing the
 * platforms the index offers. */
int img_index_select(const struct img_manifest *index, const struct img_platform *want,
                     const struct img_desc **ret, struct lerr *e);

struct img_config {
    struct img_platform platform;
    struct lstrv diff_ids; /* rootfs.diff_ids: digests of the uncompressed layers, in order */
    json_t *doc;           /* the whole document (config.Env, Cmd, … for the runtime) */
};
int img_config_parse(const char *text, size_t n, struct img_config **ret, struct lerr *e);
void img_config_free(struct img_config *c);
DEFINE_CLEANUP(struct img_config *, img_config_free)
#define _cleanup_img_config_ _cleanup_(img_config_freep)
