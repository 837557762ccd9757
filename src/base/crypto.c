/* crypto.c — OpenSSL-backed primitives (see crypto.h). */
#include "base/crypto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <string.h>

int lcrypto_b64_encode(const void *data, size_t n, struct lbuf *out)
{
    if (n > (SIZE_MAX / 4) * 3 - 3 || n > INT32_MAX / 2)
        return -E2BIG;
    size_t need = 4 * ((n + 2) / 3);
    int r = lbuf_reserve(out, need);
    if (r < 0)
        return r;
    int w = EVP_EncodeBlock((unsigned char *)out->data + out->len, data, (int)n);
    out->len += (size_t)w;
    out->data[out->len] = 0;
    return 0;
}

int lcrypto_b64_decode(const char *text, size_t n, struct lbuf *out)
{
    if (n % 4 != 0 || n > INT32_MAX / 2)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' || (c == '=' && i >= n - 2);
        if (!ok)
            return -EINVAL;
    }
    if (n >= 2 && text[n - 2] == '=' && text[n - 1] != '=')
        return -EINVAL;
    int r = lbuf_reserve(out, n / 4 * 3);
    if (r < 0)
        return r;
    if (n == 0)
        return 0;
    int w =
        EVP_DecodeBlock((unsigned char *)out->data + out->len, (const unsigned char *)text, (int)n);
    if (w < 0)
        return -EINVAL;
    /* EVP_DecodeBlock counts padding bytes as output; drop them. */
    if (text[n - 1] == '=')
        w--;
    if (text[n - 2] == '=')
        w--;
    out->len += (size_t)w;
    out->data[out->len] = 0;
    return 0;
}

int lcrypto_sha256(const void *data, size_t n, uint8_t out[LCRYPTO_SHA256_LEN])
{
    return SHA256(data, n, out) ? 0 : -EIO;
}

int lcrypto_sha1(const void *data, size_t n, uint8_t out[LCRYPTO_SHA1_LEN])
{
    return SHA1(data, n, out) ? 0 : -EIO;
}

int lcrypto_sha256_hex(const void *data, size_t n, char out[2 * LCRYPTO_SHA256_LEN + 1])
{
    uint8_t md[LCRYPTO_SHA256_LEN];
    int r = lcrypto_sha256(data, n, md);
    if (r < 0)
        return r;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(md); i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * LCRYPTO_SHA256_LEN] = 0;
    return 0;
}

int lcrypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t n,
                        uint8_t out[LCRYPTO_SHA256_LEN])
{
    unsigned int len = 0;
    if (keylen > INT32_MAX)
        return -EINVAL;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len) || len != LCRYPTO_SHA256_LEN)
        return -EIO;
    return 0;
}

int lcrypto_random(void *out, size_t n)
{
    if (n > INT32_MAX)
        return -EINVAL;
    return RAND_bytes(out, (int)n) == 1 ? 0 : -EIO;
}

bool lcrypto_memeq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void lcrypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

int lcrypto_tls_expect_peer(void *ssl_, const char *name)
{
    SSL *ssl = ssl_;
    unsigned char addr[16];
    if (inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -EINVAL;
    if (SSL_set_tlsext_host_name(ssl, name) != 1 || SSL_set1_host(ssl, name) != 1)
        return -EINVAL;
    return 0;
}
