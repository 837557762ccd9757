/* client_ctx.c — shared TLS client contexts (client_ctx.h). */
#include "client_ctx.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"

#define CTX_CACHE_MAX 8 /* distinct (CA, certificate, key) sets: a hub has one or two */
#define CTX_FILE_MAX (8 << 20)

struct cached {
    char *ca, *cert, *key; /* NULL: not set */
    uint8_t digest[32];    /* of the three files' contents, as they were when ctx was made */
    SSL_CTX *ctx;          /* the cache's own reference */
    unsigned long used;
};

static struct cached cache[CTX_CACHE_MAX];
static unsigned long clock_;

/* SHA-256 over what the context is made of: the files' contents (the system's CA bundle when
 * there is no CA file), each with its length; a file that cannot be read counts as empty. */
static int digest(const char *ca_file, const char *cert_file, const char *key_file, uint8_t out[32])
{
    const char *files[3] = {ca_file ? ca_file : X509_get_default_cert_file(), cert_file, key_file};
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        char *data = NULL;
        size_t len = 0;
        if (files[i] && lfs_read_file(files[i], CTX_FILE_MAX, &data, &len) < 0)
            data = NULL;
        uint64_t n = data ? len : 0;
        EVP_DigestUpdate(md, &n, sizeof(n));
        if (data) {
            EVP_DigestUpdate(md, data, len);
            OPENSSL_cleanse(data, len); /* a key file */
            free(data);
        }
    }
    unsigned int n = 0;
    int ok = EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
    return ok == 1 && n == 32 ? 0 : -1;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void drop(struct cached *c)
{
    SSL_CTX_free(c->ctx);
    free(c->ca);
    free(c->cert);
    free(c->key);
    memset(c, 0, sizeof(*c));
}

static SSL_CTX *make(const char *ca_file, const char *cert_file, const char *key_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1 ||
        (cert_file && (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
                       SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1))) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *mqttc_client_ctx(const char *ca_file, const char *cert_file, const char *key_file)
{
    uint8_t now[32];
    if (digest(ca_file, cert_file, key_file, now) < 0)
        return make(ca_file, cert_file, key_file); /* not cached */
    struct cached *slot = &cache[0];
    for (size_t i = 0; i < CTX_CACHE_MAX; i++) {
        struct cached *c = &cache[i];
        if (c->ctx && same_str(c->ca, ca_file) && same_str(c->cert, cert_file) &&
            same_str(c->key, key_file) && memcmp(c->digest, now, sizeof(now)) == 0) {
            c->used = ++clock_;
            SSL_CTX_up_ref(c->ctx);
            return c->ctx;
        }
        if (!c->ctx || (slot->ctx && c->used < slot->used))
            slot = c; /* an empty slot, else the least recently used */
    }
    SSL_CTX *ctx = make(ca_file, cert_file, key_file);
    if (!ctx)
        return NULL;
    drop(slot);
    *slot = (struct cached){.ctx = ctx, .used = ++clock_};
    if ((ca_file && !(slot->ca = strdup(ca_file))) ||
        (cert_file && !(slot->cert = strdup(cert_file))) ||
        (key_file && !(slot->key = strdup(key_file)))) {
        /* not cached; the caller still gets its context */
        free(slot->ca);
        free(slot->cert);
        free(slot->key);
        memset(slot, 0, sizeof(*slot));
        return ctx;
    }
    memcpy(slot->digest, now, sizeof(now));
    SSL_CTX_up_ref(ctx);
    return ctx;
}

void mqttc_client_ctx_flush(void)
{
    for (size_t i = 0; i < CTX_CACHE_MAX; i++)
        drop(&cache[i]);
}
