/* store.h — the content store of the oci engine: blobs (manifests, indexes, configs) once by
 * digest, layers once unpacked by diff_id, and an index of image names written atomically.
 *
 *   <dir>/blobs/sha256/<hex>    manifests, indexes, configs (read-only files)
 *   <dir>/layers/sha256/<hex>   unpacked layers by diff_id, overlayfs lower directories
 *   <dir>/ingest/               downloads and unpacks in progress (never seen under their name)
 *   <dir>/images.json           {"version": 1, "images": {NAME: {manifest, config, layers, …}}}
 *
 * Every open store holds a shared lock; the garbage collector needs it exclusively, so it never
 * removes what a pull or load running elsewhere has written but not yet named. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/str.h"
#include "image/digest.h"
#include "image/ref.h"
#include "image/unpack.h"

#define IMG_NAME_MAX (IMG_REF_MAX + 1 + IMG_TAG_MAX + 1 + IMG_DIGEST_MAX)
#define IMG_INDEX_FILE_MAX (16u << 20) /* images.json */

struct img_store;

int img_store_open(const char *dir, struct img_store **ret, struct lerr *e);
void img_store_close(struct img_store *s);
DEFINE_CLEANUP(struct img_store *, img_store_close)
#define _cleanup_img_store_ _cleanup_(img_store_closep)
const char *img_store_dir(const struct img_store *s);

/* ---- blobs ---- */
int img_store_blob_path(const struct img_store *s, const char *digest, char *dst, size_t size);
bool img_store_has_blob(const struct img_store *s, const char *digest);
/* Read a blob of at most max bytes, checking that its content still has its digest. */
int img_store_read_blob(struct img_store *s, const char *digest, size_t max, char **ret,
                        size_t *ret_len, struct lerr *e);
/* Store data under its digest (expected may be NULL; else it must match). */
int img_store_put_blob(struct img_store *s, const void *data, size_t n, const char *expected,
                       char ret_digest[IMG_DIGEST_LEN + 1], struct lerr *e);

/* A blob being written: a temporary file in ingest/ hashed as it is written, bounded by the
 * expected size, that becomes visible under its digest only on commit (fsync, rename, fsync). */
struct img_ingest;
int img_ingest_begin(struct img_store *s, const char *expected_digest, uint64_t expected_size,
                     struct img_ingest **ret, struct lerr *e);
int img_ingest_write(struct img_ingest *ig, const void *data, size_t n, struct lerr *e);
uint64_t img_ingest_written(const struct img_ingest *ig);
/* Check size and digest; on success the fd (rewound) can be read for unpacking. */
int img_ingest_verify(struct img_ingest *ig, int *ret_fd, struct lerr *e);
/* Verify and make the blob durable under blobs/sha256/. */
int img_ingest_commit(struct img_ingest *ig, struct lerr *e);
/* Remove the temporary file unless committed; accepts NULL. */
void img_ingest_free(struct img_ingest *ig);
DEFINE_CLEANUP(struct img_ingest *, img_ingest_free)
#define _cleanup_img_ingest_ _cleanup_(img_ingest_freep)

/* ---- layers ---- */
bool img_store_has_layer(const struct img_store *s, const char *diff_id);
int img_store_layer_path(const struct img_store *s, const char *diff_id, char *dst, size_t size);
/* Unpack the layer read from fd into a temporary directory, check that its diff_id is
 * expected_diff_id (NULL: any), and rename it into layers/sha256/. ret_stats may be NULL. */
int img_store_unpack(struct img_store *s, int fd, const char *expected_diff_id,
                     const struct img_unpack_opts *o, struct img_unpack_stats *ret_stats,
                     struct lerr *e);

/* ---- images ---- */
struct img_image {
    char name[IMG_NAME_MAX + 1];       /* normalised reference (img_ref_format) */
    char manifest[IMG_DIGEST_LEN + 1]; /* the image manifest for this machine's platform */
    char index[IMG_DIGEST_LEN + 1];    /* the index it was chosen from, or "" */
    char config[IMG_DIGEST_LEN + 1];
    char platform[64];
    struct lstrv layers; /* diff_ids, bottom first */
};
void img_image_clear(struct img_image *im);

/* Name an image (replacing what the name pointed at). Its blobs and layers must be stored. */
int img_store_tag(struct img_store *s, const struct img_image *im, struct lerr *e);
/* -ENOENT when the name is not in the index. name is normalised first. */
int img_store_get(struct img_store *s, const char *name, struct img_image *ret, struct lerr *e);
int img_store_untag(struct img_store *s, const char *name, struct lerr *e);
/* The index document ({"version", "images"}), for listing. */
int img_store_list(struct img_store *s, json_t **ret, struct lerr *e);

struct img_gc_stats {
    unsigned blobs_removed, layers_removed, ingest_removed;
    unsigned blobs_kept, layers_kept;
};
/* Remove every blob and layer no named image references, and leftovers of interrupted pulls.
 * -EBUSY when another process has the store open (a pull or load may be running). */
int img_store_gc(struct img_store *s, struct img_gc_stats *ret, struct lerr *e);
