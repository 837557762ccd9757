/* digest.h — content digests ("sha256:<64 hex>") and a streaming SHA-256 for verifying blobs
 * and layers while they are read or written. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define IMG_DIGEST_LEN 71 /* "sha256:" + 64 hex digits */

/* Whether s is exactly "sha256:" followed by 64 lower-case hex digits. */
bool img_digest_valid(const char *s);
/* The hex part of a valid digest. */
static inline const char *img_digest_hex(const char *digest)
{
    return digest + 7;
}

struct img_hash;
int img_hash_new(struct img_hash **ret);
int img_hash_update(struct img_hash *h, const void *data, size_t n);
/* The digest of everything fed so far ("sha256:…"); the hash is spent afterwards. */
int img_hash_final(struct img_hash *h, char out[IMG_DIGEST_LEN + 1]);
void img_hash_free(struct img_hash *h);
static inline void img_hash_freep(struct img_hash **h)
{
    img_hash_free(*h);
}
#define _cleanup_img_hash_ _cleanup_(img_hash_freep)

/* The digest of a buffer. */
int img_digest_of(const void *data, size_t n, char out[IMG_DIGEST_LEN + 1]);
