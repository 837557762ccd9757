/* crypt.c — AES-256-GCM sealing for the workload API (layout and binding in crypt.h). */
#include "crypt.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/macro.h"

DEFINE_CLEANUP(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free)

static int set_aad(EVP_CIPHER_CTX *c, int enc, const void *iv, size_t iv_len)
{
    const unsigned char version = CRYPT_VERSION;
    int outl = 0;
    int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int) =
        enc ? EVP_EncryptUpdate : EVP_DecryptUpdate;
    if (update(c, NULL, &outl, &version, 1) != 1)
        return -EIO;
    if (iv_len && update(c, NULL, &outl, iv, (int)iv_len) != 1)
        return -EIO;
    return 0;
}

int crypt_encrypt(const uint8_t key[CRYPT_KEY_LEN], const void *iv, size_t iv_len,
                  const void *plaintext, size_t n, struct lbuf *out)
{
    if (n > CRYPT_MAX_INPUT || iv_len > CRYPT_MAX_INPUT)
        return -E2BIG;
    unsigned char nonce[CRYPT_NONCE_LEN];
    int r = lcrypto_random(nonce, sizeof(nonce));
    if (r < 0)
        return r;
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return -ENOMEM;
    if (EVP_EncryptInit_ex2(c, EVP_aes_256_gcm(), key, nonce, NULL) != 1)
        return -EIO;
    if ((r = set_aad(c, 1, iv, iv_len)) < 0)
        return r;
    size_t start = out->len;
    if ((r = lbuf_reserve(out, n + CRYPT_OVERHEAD)) < 0)
        return r;
    unsigned char *p = (unsigned char *)out->data + start;
    p[0] = CRYPT_VERSION;
    memcpy(p + 1, nonce, sizeof(nonce));
    int outl = 0, finl = 0;
    if ((n && EVP_EncryptUpdate(c, p + 1 + CRYPT_NONCE_LEN, &outl, plaintext, (int)n) != 1) ||
        EVP_EncryptFinal_ex(c, p + 1 + CRYPT_NONCE_LEN + outl, &finl) != 1 ||
        (size_t)(outl + finl) != n ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, CRYPT_TAG_LEN, p + 1 + CRYPT_NONCE_LEN + n) !=
            1) {
        lcrypto_wipe(p, n + CRYPT_OVERHEAD);
        out->data[start] = 0;
        return -EIO;
    }
    out->len = start + n + CRYPT_OVERHEAD;
    out->data[out->len] = 0;
    return 0;
}

int crypt_decrypt(const uint8_t key[CRYPT_KEY_LEN], const void *iv, size_t iv_len,
                  const void *ciphertext, size_t n, struct lbuf *out, struct lerr *e)
{
    const unsigned char *in = ciphertext;
    if (n >= 1 && in[0] != CRYPT_VERSION)
        return lerr_set(e, -EINVAL, "unsupported ciphertext version %u", in[0]);
    if (n < CRYPT_OVERHEAD)
        return lerr_set(e, -EINVAL, "ciphertext is shorter than %d bytes", CRYPT_OVERHEAD);
    if (n - CRYPT_OVERHEAD > CRYPT_MAX_INPUT || iv_len > CRYPT_MAX_INPUT)
        return lerr_set(e, -E2BIG, "ciphertext too large");
    size_t len = n - CRYPT_OVERHEAD;
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return lerr_set(e, -ENOMEM, "out of memory");
    if (EVP_DecryptInit_ex2(c, EVP_aes_256_gcm(), key, in + 1, NULL) != 1 ||
        set_aad(c, 0, iv, iv_len) < 0 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, CRYPT_TAG_LEN,
                            (void *)(in + 1 + CRYPT_NONCE_LEN + len)) != 1)
        return lerr_set(e, -EIO, "cannot set up decryption");
    /* Decrypt into a private buffer: nothing reaches out before the tag has been checked. */
    unsigned char *tmp = malloc(len + 1);
    if (!tmp)
        return lerr_set(e, -ENOMEM, "out of memory");
    int outl = 0, finl = 0, r = 0;
    if ((len && EVP_DecryptUpdate(c, tmp, &outl, in + 1 + CRYPT_NONCE_LEN, (int)len) != 1) ||
        EVP_DecryptFinal_ex(c, tmp + outl, &finl) != 1 || (size_t)(outl + finl) != len)
        r = lerr_set(e, -EBADMSG,
                     "ciphertext does not authenticate (tampered, or sealed for "
                     "another module, generation or initialization vector)");
    else
        r = lbuf_append(out, tmp, len);
    lcrypto_wipe(tmp, len + 1);
    free(tmp);
    if (r < 0 && e && !e->code)
        lerr_set(e, r, "out of memory");
    return r;
}
