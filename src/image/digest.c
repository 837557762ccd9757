/* digest.c — sha256 digests over OpenSSL's EVP interface (see digest.h). */
#include "image/digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"

struct img_hash {
    EVP_MD_CTX *ctx;
};

bool img_digest_valid(const char *s)
{
    if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != IMG_DIGEST_LEN)
        return false;
    for (const char *p = s + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

int img_hash_new(struct img_hash **ret)
{
    struct img_hash *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        img_hash_free(h);
        return -ENOMEM;
    }
    *ret = h;
    return 0;
}

int img_hash_update(struct img_hash *h, const void *data, size_t n)
{
    if (n && EVP_DigestUpdate(h->ctx, data, n) != 1)
        return -EIO;
    return 0;
}

int img_hash_final(struct img_hash *h, char out[IMG_DIGEST_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(h->ctx, md, &len) != 1 || len != 32)
        return -EIO;
    memcpy(out, "sha256:", 7);
    for (unsigned i = 0; i < len; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
    return 0;
}

void img_hash_free(struct img_hash *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

int img_digest_of(const void *data, size_t n, char out[IMG_DIGEST_LEN + 1])
{
    _cleanup_img_hash_ struct img_hash *h = NULL;
    int r = img_hash_new(&h);
    if (r < 0 || (r = img_hash_update(h, data, n)) < 0)
        return r;
    return img_hash_final(h, out);
}
