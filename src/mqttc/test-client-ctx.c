/* test-client-ctx.c — shared TLS client contexts (client_ctx.h): the same files give the same
 * context, other files or changed contents another, an unreadable CA none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "client_ctx.h"

static char dir[] = "/tmp/test-client-ctx-XXXXXX";

/* A self-signed CA certificate named cn, as PEM. */
static char *ca_pem(const char *cn)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, n);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *data;
    long len = BIO_get_mem_data(b, &data);
    char *pem = malloc((size_t)len + 1);
    assert_non_null(pem);
    memcpy(pem, data, (size_t)len);
    pem[len] = 0;
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(pk);
    return pem;
}

static void write_file(const char *path, const char *text)
{
    assert_int_equal(lfs_write_atomic(path, text, strlen(text), 0600), 0);
}

/* the subject CN of the one CA ctx trusts */
static const char *trusted_cn(SSL_CTX *ctx, char *buf, size_t size)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    assert_int_equal(sk_X509_OBJECT_num(objs), 1);
    X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, 0));
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)size);
    return buf;
}

static void test_shared(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(dir));
    char a[64], b[64];
    snprintf(a, sizeof(a), "%s/a.pem", dir);
    snprintf(b, sizeof(b), "%s/b.pem", dir);
    char *one = ca_pem("one"), *two = ca_pem("two"), *three = ca_pem("three");
    write_file(a, one);
    write_file(b, two);

    SSL_CTX *x = mqttc_client_ctx(a, NULL, NULL);
    SSL_CTX *y = mqttc_client_ctx(a, NULL, NULL);
    assert_non_null(x);
    assert_ptr_equal(x, y); /* one CA file, one context */
    assert_int_equal(SSL_CTX_get_verify_mode(x), SSL_VERIFY_PEER);
    assert_true(SSL_CTX_get_mode(x) & SSL_MODE_RELEASE_BUFFERS);
    assert_int_equal(SSL_CTX_get_min_proto_version(x), TLS1_2_VERSION);
    char cn[64];
    assert_string_equal(trusted_cn(x, cn, sizeof(cn)), "one");

    SSL_CTX *z = mqttc_client_ctx(b, NULL, NULL);
    assert_ptr_not_equal(z, x);
    assert_string_equal(trusted_cn(z, cn, sizeof(cn)), "two");

    /* the CA file replaced (same name): the next connection gets the new CA, the old ones keep
     * theirs */
    write_file(a, three);
    SSL_CTX *w = mqttc_client_ctx(a, NULL, NULL);
    assert_ptr_not_equal(w, x);
    assert_string_equal(trusted_cn(w, cn, sizeof(cn)), "three");
    assert_string_equal(trusted_cn(x, cn, sizeof(cn)), "one");

    /* a CA file that cannot be read: no context */
    char missing[80];
    snprintf(missing, sizeof(missing), "%s/missing.pem", dir);
    assert_null(mqttc_client_ctx(missing, NULL, NULL));
    /* more distinct files than the cache holds: each still gets its own, right context */
    for (int i = 0; i < 12; i++) {
        char p[80], name[16];
        snprintf(p, sizeof(p), "%s/n%d.pem", dir, i);
        snprintf(name, sizeof(name), "ca%d", i);
        char *pem = ca_pem(name);
        write_file(p, pem);
        free(pem);
        SSL_CTX *c = mqttc_client_ctx(p, NULL, NULL);
        assert_string_equal(trusted_cn(c, cn, sizeof(cn)), name);
        SSL_CTX_free(c);
        unlink(p);
    }

    SSL_CTX_free(x);
    SSL_CTX_free(y);
    SSL_CTX_free(z);
    SSL_CTX_free(w);
    mqttc_client_ctx_flush();
    unlink(a);
    unlink(b);
    rmdir(dir);
    free(one);
    free(two);
    free(three);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_shared)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
