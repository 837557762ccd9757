/* load.h — loading images from archives into the content store, with no registry: `docker
 * save` tars (manifest.json with RepoTags, Config, Layers) and OCI image layouts (oci-layout,
 * index.json, blobs/sha256/…), plain or gzip/zstd-compressed; Docker 25+ writes both at once
 * and the OCI layout is preferred then. Every blob and layer is checked against its digest. */
#pragma once

#include "base/errors.h"
#include "base/str.h"
#include "image/store.h"

#define IMG_LOAD_FILES_MAX 100000u /* files in one archive */

struct img_load_opts {
    const char *name;     /* name for an image the archive does not name; NULL: none */
    const char *platform; /* which manifest of an index; NULL: this machine's */
    uint64_t max_bytes;   /* the archive's files together; 0: 4 × IMG_LAYER_MAX */
    struct img_unpack_opts unpack;
};

/* Load every image of the archive at path; ret_names (may be NULL) receives the names stored.
 * -ENOENT when the archive names no image and o->name is not given. */
int img_load_archive(struct img_store *s, const char *path, const struct img_load_opts *o,
                     struct lstrv *ret_names, struct lerr *e);
