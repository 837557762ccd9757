/* ca.c — edge CA lifecycle and certificate issuing over OpenSSL 3 EVP/X509 (see ca.h and
 * docs/security.md). Everything is built from structures, never from "DNS:a,DNS:b" config
 * strings, so a requested name cannot smuggle extra SANs or extensions in. */
#include "identity/ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/str.h"

DEFINE_CLEANUP(X509 *, X509_free)
DEFINE_CLEANUP(EVP_PKEY *, EVP_PKEY_free)
DEFINE_CLEANUP(BIO *, BIO_free)
DEFINE_CLEANUP(BIGNUM *, BN_free)
DEFINE_CLEANUP(ASN1_INTEGER *, ASN1_INTEGER_free)
DEFINE_CLEANUP(X509_NAME *, X509_NAME_free)
DEFINE_CLEANUP(GENERAL_NAMES *, GENERAL_NAMES_free)
DEFINE_CLEANUP(STACK_OF(X509) *, ca_cert_stack_free)

/* File names inside cfg->dir. The .pem files hold private key + certificate (0600) and are each
 * replaced atomically, so a crash leaves either the old or the new CA, never a key without its
 * certificate. */
#define CA_FILE_CURRENT "edge-ca.pem"
#define CA_FILE_NEXT "edge-ca-next.pem"
#define CA_FILE_PREVIOUS "edge-ca-previous.crt"
#define CA_FILE_PUBLIC "edge-ca.crt"

struct ca {
    bool user;
    char *dir;
    char *device_id;
    int64_t lifetime_s, threshold_s, overlap_s;
    X509 *cert; /* signs leaves */
    EVP_PKEY *key;
    STACK_OF(X509) * chain; /* above cert (user CA) */
    X509 *next_cert;        /* announced, not yet signing */
    EVP_PKEY *next_key;
    STACK_OF(X509) * previous; /* retired, still trusted until they expire */
    STACK_OF(X509) * trusted;  /* extra trusted CAs from the config */
};

void ca_cert_stack_free(STACK_OF(X509) * sk)
{
    if (sk)
        sk_X509_pop_free(sk, X509_free);
}

/* ---- small helpers ----------------------------------------------------------------------- */

static int asn1_to_unix(const ASN1_TIME *t, int64_t *ret)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return -EINVAL;
    *ret = (int64_t)timegm(&tm);
    return 0;
}

int ca_cert_not_after(const X509 *cert, int64_t *ret)
{
    return asn1_to_unix(X509_get0_notAfter(cert), ret);
}

int ca_cert_not_before(const X509 *cert, int64_t *ret)
{
    return asn1_to_unix(X509_get0_notBefore(cert), ret);
}

static int64_t not_after_or_zero(const X509 *cert)
{
    int64_t t = 0;
    return ca_cert_not_after(cert, &t) < 0 ? 0 : t;
}

bool ca_needs_renewal(const X509 *cert, int64_t now, int64_t threshold_s)
{
    int64_t na;
    if (!cert || ca_cert_not_after(cert, &na) < 0)
        return true;
    return na - now <= threshold_s;
}

bool ca_dns_name_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > CA_DNS_NAME_MAX)
        return false;
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == 0) {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || (label == 0 && c == '-'))
            return false;
        label++;
    }
    return true;
}

bool ca_ip_valid(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return s && (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1);
}

static bool printable_ascii(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* Append OpenSSL's error queue to a message, so "cannot sign" says why. */
static int ssl_err(struct lerr *e, int code, const char *what)
{
    unsigned long err = ERR_get_error();
    char buf[256] = "";
    if (err)
        ERR_error_string_n(err, buf, sizeof(buf));
    ERR_clear_error();
    return lerr_set(e, code, "%s%s%s", what, *buf ? ": " : "", buf);
}

int ca_pem_read_certs(const char *pem, size_t len, STACK_OF(X509) * *ret, struct lerr *e)
{
    if (len > INT32_MAX)
        return lerr_set(e, -EFBIG, "PEM text too large");
    ERR_clear_error();
    _cleanup_(BIO_freep) BIO *b = BIO_new_mem_buf(pem, (int)len);
    _cleanup_(ca_cert_stack_freep) STACK_OF(X509) *sk = sk_X509_new_null();
    if (!b || !sk)
        return lerr_set(e, -ENOMEM, "out of memory");
    for (;;) {
        X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
        if (!x)
            break;
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            return lerr_set(e, -ENOMEM, "out of memory");
        }
    }
    /* The loop ends with "no start line" once the text is used up; anything else is damage. */
    unsigned long err = ERR_peek_last_error();
    bool clean_end = !err || ERR_GET_REASON(err) == PEM_R_NO_START_LINE;
    ERR_clear_error();
    if (!clean_end)
        return lerr_set(e, -EINVAL, "malformed PEM certificate");
    if (sk_X509_num(sk) == 0)
        return lerr_set(e, -EINVAL, "no PEM certificate");
    *ret = TAKE_PTR(sk);
    return 0;
}

int ca_pem_load_certs(const char *path, STACK_OF(X509) * *ret, struct lerr *e)
{
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = lfs_read_file(path, CA_PEM_FILE_MAX, &text, &len);
    if (r < 0)
        return lerr_set(e, r, "%s: %s", path, strerror(-r));
    r = ca_pem_read_certs(text, len, ret, e);
    if (r < 0)
        lerr_prefix(e, "%s", path);
    return r;
}

static int bio_to_lbuf(BIO *b, struct lbuf *out)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    if (n < 0)
        return -EIO;
    return lbuf_append(out, p, (size_t)n);
}

int ca_pem_write_cert(const X509 *cert, struct lbuf *out)
{
    _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return -ENOMEM;
    if (PEM_write_bio_X509(b, cert) != 1)
        return -EIO;
    return bio_to_lbuf(b, out);
}

int ca_pem_write_key(const EVP_PKEY *key, struct lbuf *out)
{
    /* secmem: the BIO's buffer is cleansed when freed. */
    _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_secmem());
    if (!b)
        return -ENOMEM;
    if (PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) != 1)
        return -EIO;
    return bio_to_lbuf(b, out);
}

static void lbuf_wipe_free(struct lbuf *b)
{
    if (b->data)
        lcrypto_wipe(b->data, b->cap);
    lbuf_free(b);
}
#define _cleanup_secret_lbuf_ _cleanup_(lbuf_wipe_free)

static void free_wiped(char *p, size_t n)
{
    if (p) {
        lcrypto_wipe(p, n);
        free(p);
    }
}

/* Read a file holding a private key: a regular file we own that nobody else may read. */
static int read_secret_file(const char *path, char **ret, size_t *ret_len, struct lerr *e)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? -ENOENT
                               : lerr_set(e, neg_errno(), "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return lerr_set(e, neg_errno(), "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
        return lerr_set(e, -EPERM, "%s: must be a regular file owned by uid %u with mode 0600",
                        path, (unsigned)geteuid());
    if (st.st_size > CA_PEM_FILE_MAX)
        return lerr_set(e, -EFBIG, "%s: larger than %d bytes", path, CA_PEM_FILE_MAX);
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return lerr_set(e, -ENOMEM, "out of memory");
    while (len < cap - 1) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int r = n < 0 ? lerr_set(e, neg_errno(), "%s: %s", path, strerror(errno))
                          : lerr_set(e, -EIO, "%s: changed while reading", path);
            free_wiped(buf, cap);
            return r;
        }
        len += (size_t)n;
    }
    buf[len] = 0;
    *ret = buf;
    *ret_len = len;
    return 0;
}

static int parse_key(const char *pem, size_t len, EVP_PKEY **ret)
{
    _cleanup_(BIO_freep) BIO *b = BIO_new_mem_buf(pem, (int)MIN(len, (size_t)INT32_MAX));
    if (!b)
        return -ENOMEM;
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    ERR_clear_error();
    if (!k)
        return -EINVAL;
    *ret = k;
    return 0;
}

/* ---- building certificates --------------------------------------------------------------- */

static int set_serial(X509 *x)
{
    /* 127 random bits, positive and non-zero (RFC 5280 4.1.2.2). */
    uint8_t b[16];
    int r = lcrypto_random(b, sizeof(b));
    if (r < 0)
        return r;
    b[0] = (uint8_t)((b[0] & 0x7f) | 0x01);
    _cleanup_(BN_freep) BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
    if (!bn)
        return -ENOMEM;
    _cleanup_(ASN1_INTEGER_freep) ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);
    if (!ai || X509_set_serialNumber(x, ai) != 1)
        return -ENOMEM;
    return 0;
}

static int make_name(const char *cn, X509_NAME **ret)
{
    _cleanup_(X509_NAME_freep) X509_NAME *n = X509_NAME_new();
    if (!n || X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8,
                                         (const unsigned char *)cn, -1, -1, 0) != 1)
        return -EINVAL;
    *ret = TAKE_PTR(n);
    return 0;
}

static int add_basic_constraints(X509 *x, bool is_ca)
{
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    if (!bc)
        return -ENOMEM;
    int ok = 1;
    if (is_ca) {
        bc->ca = 0xff;
        bc->pathlen = ASN1_INTEGER_new();
        ok = bc->pathlen && ASN1_INTEGER_set(bc->pathlen, 0) == 1;
    }
    ok = ok && X509_add1_ext_i2d(x, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) == 1;
    BASIC_CONSTRAINTS_free(bc);
    return ok ? 0 : -EIO;
}

static int add_key_usage(X509 *x, const int *bits, size_t n)
{
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    if (!ku)
        return -ENOMEM;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++)
        ok = ASN1_BIT_STRING_set_bit(ku, bits[i], 1);
    ok = ok && X509_add1_ext_i2d(x, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) == 1;
    ASN1_BIT_STRING_free(ku);
    return ok ? 0 : -EIO;
}

static int add_eku(X509 *x, int nid)
{
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    if (!eku)
        return -ENOMEM;
    int ok = sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(nid)) > 0 &&
             X509_add1_ext_i2d(x, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) == 1;
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    return ok ? 0 : -EIO;
}

static int key_id(X509 *x, ASN1_OCTET_STRING **ret)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    /* RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
    if (X509_pubkey_digest(x, EVP_sha1(), md, &len) != 1)
        return -EIO;
    ASN1_OCTET_STRING *o = ASN1_OCTET_STRING_new();
    if (!o || ASN1_OCTET_STRING_set(o, md, (int)len) != 1) {
        ASN1_OCTET_STRING_free(o);
        return -ENOMEM;
    }
    *ret = o;
    return 0;
}

static int add_key_ids(X509 *x, X509 *issuer)
{
    ASN1_OCTET_STRING *ski = NULL;
    int r = key_id(x, &ski);
    if (r < 0)
        return r;
    int ok = X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_DEFAULT) == 1;
    ASN1_OCTET_STRING_free(ski);
    if (!ok)
        return -EIO;
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    if (!akid)
        return -ENOMEM;
    const ASN1_OCTET_STRING *isk = X509_get0_subject_key_id(issuer);
    if (isk)
        akid->keyid = ASN1_OCTET_STRING_dup(isk);
    else
        r = key_id(issuer, &akid->keyid);
    ok = r >= 0 && akid->keyid &&
         X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) == 1;
    AUTHORITY_KEYID_free(akid);
    return ok ? 0 : -EIO;
}

static int push_ia5_name(GENERAL_NAMES *gens, int type, const char *s)
{
    GENERAL_NAME *g = GENERAL_NAME_new();
    ASN1_IA5STRING *v = ASN1_IA5STRING_new();
    if (!g || !v || ASN1_STRING_set(v, s, (int)strlen(s)) != 1) {
        GENERAL_NAME_free(g);
        ASN1_IA5STRING_free(v);
        return -ENOMEM;
    }
    GENERAL_NAME_set0_value(g, type, v);
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return -ENOMEM;
    }
    return 0;
}

static int push_ip_name(GENERAL_NAMES *gens, const char *s)
{
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(s);
    ERR_clear_error();
    if (!ip)
        return -EINVAL;
    GENERAL_NAME *g = GENERAL_NAME_new();
    if (!g) {
        ASN1_OCTET_STRING_free(ip);
        return -ENOMEM;
    }
    GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
    if (!sk_GENERAL_NAME_push(gens, g)) {
        GENERAL_NAME_free(g);
        return -ENOMEM;
    }
    return 0;
}

static int build_sans(const struct ca_leaf_request *req, GENERAL_NAMES **ret)
{
    _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *gens = GENERAL_NAMES_new();
    if (!gens)
        return -ENOMEM;
    int r = 0;
    for (size_t i = 0; i < req->n_dns && r >= 0; i++)
        r = push_ia5_name(gens, GEN_DNS, req->dns[i]);
    for (size_t i = 0; i < req->n_ips && r >= 0; i++)
        r = push_ip_name(gens, req->ips[i]);
    if (r >= 0 && req->uri)
        r = push_ia5_name(gens, GEN_URI, req->uri);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(gens);
    return 0;
}

static const EVP_MD *sign_md(EVP_PKEY *k)
{
    int id = EVP_PKEY_get_id(k);
    return (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) ? NULL : EVP_sha256();
}

static int set_validity(X509 *x, int64_t not_before, int64_t not_after)
{
    if (!ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after))
        return -EINVAL;
    return 0;
}

static int new_ec_key(EVP_PKEY **ret)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k)
        return -EIO;
    *ret = k;
    return 0;
}

static int make_ca_cert(const char *device_id, int64_t lifetime_s, int64_t now, X509 **ret_cert,
                        EVP_PKEY **ret_key, struct lerr *e)
{
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
    if (new_ec_key(&key) < 0)
        return ssl_err(e, -EIO, "cannot generate the edge CA key");
    /* CN ≤ 64 characters: "ledge edge CA " + up to 50 of the device id. */
    char cn[CA_COMMON_NAME_MAX + 1];
    snprintf(cn, sizeof(cn), "ledge edge CA %.50s", device_id ? device_id : "device");
    _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
    _cleanup_(X509_freep) X509 *x = X509_new();
    static const int ku[] = {0 /* digitalSignature */, 5 /* keyCertSign */, 6 /* cRLSign */};
    int r;
    if (!x)
        return lerr_set(e, -ENOMEM, "out of memory");
    if ((r = make_name(cn, &name)) < 0 || X509_set_version(x, X509_VERSION_3) != 1 ||
        (r = set_serial(x)) < 0 || X509_set_subject_name(x, name) != 1 ||
        X509_set_issuer_name(x, name) != 1 ||
        (r = set_validity(x, now - CA_CLOCK_SKEW_S, now + lifetime_s)) < 0 ||
        X509_set_pubkey(x, key) != 1 || (r = add_basic_constraints(x, true)) < 0 ||
        (r = add_key_usage(x, ku, ARRAY_SIZE(ku))) < 0 || (r = add_key_ids(x, x)) < 0 ||
        X509_sign(x, key, EVP_sha256()) <= 0)
        return ssl_err(e, r < 0 ? r : -EIO, "cannot create the edge CA certificate");
    /* Re-read the signed encoding: OpenSSL caches digests and extension data computed while the
     * certificate was being built (add_key_ids looks at it), and comparisons and chain checks on
     * this object would use that stale cache. */
    _cleanup_(X509_freep) X509 *clean = X509_dup(x);
    if (!clean)
        return ssl_err(e, -ENOMEM, "cannot create the edge CA certificate");
    *ret_cert = TAKE_PTR(clean);
    *ret_key = TAKE_PTR(key);
    return 0;
}

/* ---- persistence ------------------------------------------------------------------------- */

static int ca_path(const struct ca *ca, const char *name, char out[PATH_MAX])
{
    return snprintf(out, PATH_MAX, "%s/%s", ca->dir, name) < PATH_MAX ? 0 : -ENAMETOOLONG;
}

static int write_pair(const struct ca *ca, const char *name, X509 *cert, EVP_PKEY *key,
                      struct lerr *e)
{
    if (!ca->dir)
        return 0;
    char path[PATH_MAX];
    _cleanup_secret_lbuf_ struct lbuf b = LBUF_INIT;
    int r = ca_path(ca, name, path);
    if (r < 0 || (r = ca_pem_write_key(key, &b)) < 0 || (r = ca_pem_write_cert(cert, &b)) < 0)
        return lerr_set(e, r, "%s/%s: cannot encode: %s", ca->dir, name, strerror(-r));
    r = lfs_write_atomic(path, b.data, b.len, 0600);
    if (r < 0)
        return lerr_set(e, r, "%s: cannot write: %s", path, strerror(-r));
    return 0;
}

static int write_certs(const struct ca *ca, const char *name, STACK_OF(X509) * sk, X509 *one,
                       struct lerr *e)
{
    if (!ca->dir)
        return 0;
    char path[PATH_MAX];
    int r = ca_path(ca, name, path);
    if (r < 0)
        return lerr_set(e, r, "%s/%s: path too long", ca->dir, name);
    if (!one && sk_X509_num(sk) == 0) {
        if (unlink(path) < 0 && errno != ENOENT)
            return lerr_set(e, neg_errno(), "%s: cannot remove: %s", path, strerror(errno));
        return lfs_fsync_dir(ca->dir);
    }
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    if (one)
        r = ca_pem_write_cert(one, &b);
    for (int i = 0; sk && i < sk_X509_num(sk) && r >= 0; i++)
        r = ca_pem_write_cert(sk_X509_value(sk, i), &b);
    if (r >= 0)
        r = lfs_write_atomic(path, b.data, b.len, 0644);
    if (r < 0)
        return lerr_set(e, r, "%s: cannot write: %s", path, strerror(-r));
    return 0;
}

static int remove_file(const struct ca *ca, const char *name, struct lerr *e)
{
    if (!ca->dir)
        return 0;
    char path[PATH_MAX];
    int r = ca_path(ca, name, path);
    if (r < 0)
        return lerr_set(e, r, "%s/%s: path too long", ca->dir, name);
    if (unlink(path) < 0 && errno != ENOENT)
        return lerr_set(e, neg_errno(), "%s: cannot remove: %s", path, strerror(errno));
    return lfs_fsync_dir(ca->dir);
}

/* Load a key+certificate file written by write_pair; -ENOENT when absent. */
static int load_pair(const struct ca *ca, const char *name, X509 **ret_cert, EVP_PKEY **ret_key,
                     struct lerr *e)
{
    char path[PATH_MAX];
    int r = ca_path(ca, name, path);
    if (r < 0)
        return lerr_set(e, r, "%s/%s: path too long", ca->dir, name);
    char *text = NULL;
    size_t len = 0;
    r = read_secret_file(path, &text, &len, e);
    if (r < 0)
        return r;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
    _cleanup_(ca_cert_stack_freep) STACK_OF(X509) *certs = NULL;
    r = parse_key(text, len, &key);
    if (r >= 0)
        r = ca_pem_read_certs(text, len, &certs, e);
    free_wiped(text, len);
    if (r < 0 || !key)
        return lerr_set(e, -EINVAL, "%s: not a private key followed by a certificate", path);
    X509 *cert = sk_X509_value(certs, 0);
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        return lerr_set(e, -EINVAL, "%s: the key does not match the certificate", path);
    }
    X509_up_ref(cert);
    *ret_cert = cert;
    *ret_key = TAKE_PTR(key);
    return 0;
}

/* ---- open ---------------------------------------------------------------------------------- */

void ca_free(struct ca *ca)
{
    if (!ca)
        return;
    free(ca->dir);
    free(ca->device_id);
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    ca_cert_stack_free(ca->chain);
    X509_free(ca->next_cert);
    EVP_PKEY_free(ca->next_key);
    ca_cert_stack_free(ca->previous);
    ca_cert_stack_free(ca->trusted);
    free(ca);
}

bool ca_is_user_provided(const struct ca *ca)
{
    return ca->user;
}
X509 *ca_cert(const struct ca *ca)
{
    return ca->cert;
}
int64_t ca_not_after(const struct ca *ca)
{
    return not_after_or_zero(ca->cert);
}

static int check_validity(const char *what, const X509 *cert, int64_t now, struct lerr *e)
{
    int64_t nb, na;
    if (ca_cert_not_before(cert, &nb) < 0 || ca_cert_not_after(cert, &na) < 0)
        return lerr_set(e, -EINVAL, "%s: unreadable validity dates", what);
    if (now < nb)
        return lerr_set(e, -EKEYEXPIRED, "%s: not valid before %lld (now %lld); check the clock",
                        what, (long long)nb, (long long)now);
    if (now >= na)
        return lerr_set(e, -EKEYEXPIRED, "%s: expired at %lld (now %lld)", what, (long long)na,
                        (long long)now);
    return 0;
}

static int open_user_ca(struct ca *ca, const struct ca_config *cfg, int64_t now, struct lerr *e)
{
    if (lstr_empty(cfg->cert_path) || lstr_empty(cfg->key_path))
        return lerr_set(e, -EINVAL, "edge CA: both a certificate and a key file are required");
    ca->user = true;
    _cleanup_(ca_cert_stack_freep) STACK_OF(X509) *certs = NULL;
    int r = ca_pem_load_certs(cfg->cert_path, &certs, e);
    if (r < 0)
        return r;
    ca->cert = sk_X509_shift(certs);
    ca->chain = TAKE_PTR(certs);
    if (!lstr_empty(cfg->chain_path)) {
        _cleanup_(ca_cert_stack_freep) STACK_OF(X509) *more = NULL;
        r = ca_pem_load_certs(cfg->chain_path, &more, e);
        if (r < 0)
            return r;
        while (sk_X509_num(more) > 0) {
            X509 *x = sk_X509_shift(more);
            if (!sk_X509_push(ca->chain, x)) {
                X509_free(x);
                return lerr_set(e, -ENOMEM, "out of memory");
            }
        }
    }
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    r = lfs_read_file(cfg->key_path, CA_PEM_FILE_MAX, &text, &len);
    if (r < 0)
        return lerr_set(e, r, "%s: %s", cfg->key_path, strerror(-r));
    r = parse_key(text, len, &ca->key);
    lcrypto_wipe(text, len);
    if (r < 0)
        return lerr_set(e, -EINVAL, "%s: no PEM private key (encrypted keys are not supported)",
                        cfg->key_path);
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        ERR_clear_error();
        return lerr_set(e, -EINVAL, "%s does not match the certificate in %s", cfg->key_path,
                        cfg->cert_path);
    }
    if (X509_check_ca(ca->cert) < 1 || !(X509_get_key_usage(ca->cert) & KU_KEY_CERT_SIGN))
        return lerr_set(e, -EINVAL,
                        "%s: not a CA certificate (basicConstraints CA:TRUE and "
                        "keyCertSign are required)",
                        cfg->cert_path);
    return check_validity(cfg->cert_path, ca->cert, now, e);
}

static int load_trusted(struct ca *ca, const struct ca_config *cfg, struct lerr *e)
{
    ca->trusted = sk_X509_new_null();
    if (!ca->trusted)
        return lerr_set(e, -ENOMEM, "out of memory");
    for (size_t i = 0; i < cfg->n_trusted_ca_paths; i++) {
        _cleanup_(ca_cert_stack_freep) STACK_OF(X509) *sk = NULL;
        int r = ca_pem_load_certs(cfg->trusted_ca_paths[i], &sk, e);
        if (r < 0)
            return r;
        while (sk_X509_num(sk) > 0) {
            X509 *x = sk_X509_shift(sk);
            if (!sk_X509_push(ca->trusted, x)) {
                X509_free(x);
                return lerr_set(e, -ENOMEM, "out of memory");
            }
        }
    }
    return 0;
}

/* Same certificate? Compares DER encodings rather than trusting X509_cmp's cached digests. */
static bool cert_eq(const X509 *a, const X509 *b)
{
    unsigned char *da = NULL, *db = NULL;
    int na = i2d_X509(a, &da), nb = i2d_X509(b, &db);
    bool eq = na > 0 && na == nb && memcmp(da, db, (size_t)na) == 0;
    OPENSSL_free(da);
    OPENSSL_free(db);
    return eq;
}

/* Drop retired CAs that expired or that are the current/next one (left by a crash mid-switch). */
static bool prune_previous(struct ca *ca, int64_t now)
{
    bool changed = false;
    for (int i = sk_X509_num(ca->previous) - 1; i >= 0; i--) {
        X509 *x = sk_X509_value(ca->previous, i);
        if (not_after_or_zero(x) <= now || cert_eq(x, ca->cert) ||
            (ca->next_cert && cert_eq(x, ca->next_cert))) {
            X509_free(sk_X509_delete(ca->previous, i));
            changed = true;
        }
    }
    return changed;
}

static int switch_to_next(struct ca *ca, int64_t now, struct lerr *e)
{
    /* Disk first (retired list, then the new current, then drop the next file), memory after:
     * a failure leaves the in-memory CA as it was. */
    _cleanup_(ca_cert_stack_freep) STACK_OF(X509) *prev = sk_X509_dup(ca->previous);
    if (!prev)
        return lerr_set(e, -ENOMEM, "out of memory");
    for (int i = 0; i < sk_X509_num(prev); i++)
        X509_up_ref(sk_X509_value(prev, i));
    if (not_after_or_zero(ca->cert) > now) {
        if (!sk_X509_push(prev, ca->cert))
            return lerr_set(e, -ENOMEM, "out of memory");
        X509_up_ref(ca->cert);
    }
    int r = write_certs(ca, CA_FILE_PREVIOUS, prev, NULL, e);
    if (r >= 0)
        r = write_pair(ca, CA_FILE_CURRENT, ca->next_cert, ca->next_key, e);
    if (r >= 0)
        r = remove_file(ca, CA_FILE_NEXT, e);
    if (r < 0)
        return r;
    ca_cert_stack_free(ca->previous);
    ca->previous = TAKE_PTR(prev);
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    ca->cert = TAKE_PTR(ca->next_cert);
    ca->key = TAKE_PTR(ca->next_key);
    return write_certs(ca, CA_FILE_PUBLIC, NULL, ca->cert, e);
}

static int open_generated_ca(struct ca *ca, int64_t now, struct lerr *e)
{
    int r;
    ca->previous = sk_X509_new_null();
    if (!ca->previous)
        return lerr_set(e, -ENOMEM, "out of memory");
    if (ca->dir) {
        r = lfs_mkdir_p(ca->dir, 0700);
        if (r < 0)
            return lerr_set(e, r, "%s: cannot create: %s", ca->dir, strerror(-r));
        r = load_pair(ca, CA_FILE_CURRENT, &ca->cert, &ca->key, e);
        if (r < 0 && r != -ENOENT)
            return r;
        r = load_pair(ca, CA_FILE_NEXT, &ca->next_cert, &ca->next_key, e);
        if (r < 0 && r != -ENOENT)
            return r;
        char path[PATH_MAX];
        if (ca_path(ca, CA_FILE_PREVIOUS, path) < 0)
            return lerr_set(e, -ENAMETOOLONG, "%s: path too long", ca->dir);
        if (access(path, F_OK) == 0) {
            ca_cert_stack_free(ca->previous);
            ca->previous = NULL;
            r = ca_pem_load_certs(path, &ca->previous, e);
            if (r < 0)
                return r;
        }
    }
    lerr_clear(e);
    if (!ca->cert && ca->next_cert) {
        /* A next CA without a current one (the current file was removed by hand): it is a
         * valid CA, promote it rather than starting over. */
        ca->cert = TAKE_PTR(ca->next_cert);
        ca->key = TAKE_PTR(ca->next_key);
        if ((r = write_pair(ca, CA_FILE_CURRENT, ca->cert, ca->key, e)) < 0 ||
            (r = remove_file(ca, CA_FILE_NEXT, e)) < 0)
            return r;
    }
    if (ca->cert && ca->next_cert && cert_eq(ca->cert, ca->next_cert)) {
        /* A switch completed up to removing the next file. */
        X509_free(TAKE_PTR(ca->next_cert));
        EVP_PKEY_free(TAKE_PTR(ca->next_key));
        if ((r = remove_file(ca, CA_FILE_NEXT, e)) < 0)
            return r;
    }
    if (!ca->cert) {
        r = make_ca_cert(ca->device_id, ca->lifetime_s, now, &ca->cert, &ca->key, e);
        if (r < 0 || (r = write_pair(ca, CA_FILE_CURRENT, ca->cert, ca->key, e)) < 0)
            return r;
    } else if (not_after_or_zero(ca->cert) <= now) {
        /* Expired while we were not running: no overlap is possible any more. */
        if (!ca->next_cert && (r = make_ca_cert(ca->device_id, ca->lifetime_s, now, &ca->next_cert,
                                                &ca->next_key, e)) < 0)
            return r;
        if ((r = switch_to_next(ca, now, e)) < 0)
            return r;
    }
    if (prune_previous(ca, now) &&
        (r = write_certs(ca, CA_FILE_PREVIOUS, ca->previous, NULL, e)) < 0)
        return r;
    return write_certs(ca, CA_FILE_PUBLIC, NULL, ca->cert, e);
}

int ca_open(const struct ca_config *cfg, int64_t now, struct ca **ret, struct lerr *e)
{
    _cleanup_(ca_freep) struct ca *ca = calloc(1, sizeof(*ca));
    if (!ca)
        return lerr_set(e, -ENOMEM, "out of memory");
    ca->lifetime_s = cfg->lifetime_s > 0 ? cfg->lifetime_s : CA_DEFAULT_LIFETIME_S;
    ca->threshold_s = cfg->renew_threshold_s > 0 ? cfg->renew_threshold_s : ca->lifetime_s / 5;
    ca->overlap_s = cfg->overlap_s > 0 ? cfg->overlap_s : ca->threshold_s / 2;
    if (ca->lifetime_s < 2 * CA_MIN_LEAF_LIFETIME_S || ca->threshold_s >= ca->lifetime_s ||
        ca->overlap_s >= ca->threshold_s)
        return lerr_set(e, -EINVAL,
                        "edge CA: need lifetime (%llds) >= %ds > renewal threshold (%llds) > "
                        "overlap (%llds)",
                        (long long)ca->lifetime_s, 2 * CA_MIN_LEAF_LIFETIME_S,
                        (long long)ca->threshold_s, (long long)ca->overlap_s);
    if ((cfg->dir && !(ca->dir = strdup(cfg->dir))) ||
        !(ca->device_id = strdup(cfg->device_id ? cfg->device_id : "device")))
        return lerr_set(e, -ENOMEM, "out of memory");
    int r = (cfg->cert_path || cfg->key_path) ? open_user_ca(ca, cfg, now, e)
                                              : open_generated_ca(ca, now, e);
    if (r < 0)
        return r;
    if ((r = load_trusted(ca, cfg, e)) < 0)
        return r;
    if (!ca->chain && !(ca->chain = sk_X509_new_null()))
        return lerr_set(e, -ENOMEM, "out of memory");
    *ret = TAKE_PTR(ca);
    return 0;
}

int ca_trust_bundle(const struct ca *ca, struct lbuf *out)
{
    int r = ca_pem_write_cert(ca->cert, out);
    for (int i = 0; i < sk_X509_num(ca->chain) && r >= 0; i++)
        r = ca_pem_write_cert(sk_X509_value(ca->chain, i), out);
    if (r >= 0 && ca->next_cert)
        r = ca_pem_write_cert(ca->next_cert, out);
    for (int i = 0; i < sk_X509_num(ca->previous) && r >= 0; i++)
        r = ca_pem_write_cert(sk_X509_value(ca->previous, i), out);
    for (int i = 0; i < sk_X509_num(ca->trusted) && r >= 0; i++)
        r = ca_pem_write_cert(sk_X509_value(ca->trusted, i), out);
    return r;
}

int ca_issuers_bundle(const struct ca *ca, struct lbuf *out)
{
    int r = ca_pem_write_cert(ca->cert, out);
    if (r >= 0 && ca->next_cert)
        r = ca_pem_write_cert(ca->next_cert, out);
    for (int i = 0; i < sk_X509_num(ca->previous) && r >= 0; i++)
        r = ca_pem_write_cert(sk_X509_value(ca->previous, i), out);
    return r;
}

/* ---- renewal ----------------------------------------------------------------------------- */

int ca_renew(struct ca *ca, int64_t now, struct lerr *e)
{
    if (ca->user)
        return 0;
    int flags = 0, r;
    if (prune_previous(ca, now)) {
        if ((r = write_certs(ca, CA_FILE_PREVIOUS, ca->previous, NULL, e)) < 0)
            return r;
        flags |= CA_RENEW_PRUNED;
    }
    if (!ca->next_cert && ca_needs_renewal(ca->cert, now, ca->threshold_s)) {
        _cleanup_(X509_freep) X509 *cert = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        if ((r = make_ca_cert(ca->device_id, ca->lifetime_s, now, &cert, &key, e)) < 0 ||
            (r = write_pair(ca, CA_FILE_NEXT, cert, key, e)) < 0)
            return r;
        ca->next_cert = TAKE_PTR(cert);
        ca->next_key = TAKE_PTR(key);
        flags |= CA_RENEW_ANNOUNCED;
    }
    if (ca->next_cert) {
        int64_t announced = 0;
        ca_cert_not_before(ca->next_cert, &announced);
        announced += CA_CLOCK_SKEW_S;
        if (now - announced >= ca->overlap_s || not_after_or_zero(ca->cert) <= now) {
            if ((r = switch_to_next(ca, now, e)) < 0)
                return r;
            flags |= CA_RENEW_SWITCHED;
        }
    }
    return flags;
}

/* ---- issuing ----------------------------------------------------------------------------- */

static int check_request(const struct ca_leaf_request *req, struct lerr *e)
{
    if (!printable_ascii(req->common_name, CA_COMMON_NAME_MAX))
        return lerr_set(e, -EINVAL, "common name must be 1-%d printable ASCII characters",
                        CA_COMMON_NAME_MAX);
    if (req->n_dns + req->n_ips + (req->uri ? 1 : 0) > CA_SAN_MAX)
        return lerr_set(e, -EINVAL, "more than %d subject alternative names", CA_SAN_MAX);
    for (size_t i = 0; i < req->n_dns; i++)
        if (!ca_dns_name_valid(req->dns[i]))
            return lerr_set(e, -EINVAL, "'%.64s' is not a valid DNS name",
                            req->dns[i] ? req->dns[i] : "(null)");
    for (size_t i = 0; i < req->n_ips; i++)
        if (!ca_ip_valid(req->ips[i]))
            return lerr_set(e, -EINVAL, "'%.64s' is not a valid IP address",
                            req->ips[i] ? req->ips[i] : "(null)");
    if (req->uri && (!printable_ascii(req->uri, 1024) || strchr(req->uri, ' ')))
        return lerr_set(e, -EINVAL, "URI name must be printable ASCII without spaces");
    if (req->kind != CA_LEAF_SERVER && req->kind != CA_LEAF_CLIENT)
        return lerr_set(e, -EINVAL, "unknown certificate kind");
    return 0;
}

static int issue_x509(struct ca *ca, const struct ca_leaf_request *req, int64_t now, X509 **ret,
                      EVP_PKEY **ret_key, struct lerr *e)
{
    int r = check_request(req, e);
    if (r < 0)
        return r;
    int64_t ca_na = not_after_or_zero(ca->cert);
    if (ca_na - now < CA_MIN_LEAF_LIFETIME_S)
        return lerr_set(e, -EKEYEXPIRED, "edge CA expires at %lld; cannot issue certificates",
                        (long long)ca_na);
    int64_t lifetime = req->lifetime_s > 0 ? req->lifetime_s : CA_DEFAULT_LEAF_LIFETIME_S;
    int64_t not_after = lifetime > ca_na - now ? ca_na : now + lifetime;

    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
    if (new_ec_key(&key) < 0)
        return ssl_err(e, -EIO, "cannot generate a key");
    _cleanup_(X509_NAME_freep) X509_NAME *name = NULL;
    _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *sans = NULL;
    _cleanup_(X509_freep) X509 *x = X509_new();
    if (!x)
        return lerr_set(e, -ENOMEM, "out of memory");
    if ((r = make_name(req->common_name, &name)) < 0)
        return ssl_err(e, -EINVAL, "invalid common name");
    if ((r = build_sans(req, &sans)) < 0)
        return lerr_set(e, r, "cannot encode the subject alternative names");
    static const int ku[] = {0 /* digitalSignature */};
    if (X509_set_version(x, X509_VERSION_3) != 1 || (r = set_serial(x)) < 0 ||
        X509_set_subject_name(x, name) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1 ||
        (r = set_validity(x, now - CA_CLOCK_SKEW_S, not_after)) < 0 ||
        X509_set_pubkey(x, key) != 1 || (r = add_basic_constraints(x, false)) < 0 ||
        (r = add_key_usage(x, ku, ARRAY_SIZE(ku))) < 0 ||
        (r = add_eku(x, req->kind == CA_LEAF_SERVER ? NID_server_auth : NID_client_auth)) < 0 ||
        (sk_GENERAL_NAME_num(sans) > 0 &&
         X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0, X509V3_ADD_DEFAULT) != 1) ||
        (r = add_key_ids(x, ca->cert)) < 0 || X509_sign(x, ca->key, sign_md(ca->key)) <= 0)
        return ssl_err(e, r < 0 ? r : -EIO, "cannot issue the certificate");
    *ret = TAKE_PTR(x);
    *ret_key = TAKE_PTR(key);
    return 0;
}

void ca_leaf_done(struct ca_leaf *leaf)
{
    if (!leaf)
        return;
    free(leaf->cert_pem);
    if (leaf->key_pem)
        free_wiped(leaf->key_pem, strlen(leaf->key_pem));
    *leaf = (struct ca_leaf){0};
}

static int leaf_chain_pem(const struct ca *ca, X509 *leaf, struct lbuf *out)
{
    int r = ca_pem_write_cert(leaf, out);
    if (r >= 0)
        r = ca_pem_write_cert(ca->cert, out);
    for (int i = 0; i < sk_X509_num(ca->chain) && r >= 0; i++)
        r = ca_pem_write_cert(sk_X509_value(ca->chain, i), out);
    return r;
}

int ca_issue(struct ca *ca, const struct ca_leaf_request *req, int64_t now, struct ca_leaf *ret,
             struct lerr *e)
{
    _cleanup_(X509_freep) X509 *x = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
    int r = issue_x509(ca, req, now, &x, &key, e);
    if (r < 0)
        return r;
    _cleanup_lbuf_ struct lbuf cert = LBUF_INIT;
    _cleanup_secret_lbuf_ struct lbuf kp = LBUF_INIT;
    if ((r = leaf_chain_pem(ca, x, &cert)) < 0 || (r = ca_pem_write_key(key, &kp)) < 0)
        return lerr_set(e, r, "cannot encode the certificate");
    char *kcopy = strdup(kp.data);
    if (!kcopy)
        return lerr_set(e, -ENOMEM, "out of memory");
    ret->not_after = not_after_or_zero(x);
    ret->cert_pem = lbuf_steal(&cert);
    ret->key_pem = kcopy;
    return 0;
}

/* Canonical, sorted "DNS:x" / "IP:hex" / "URI:x" list, to compare a cert's SANs with a request. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ip_key(const unsigned char *p, int n, struct lstrv *sv)
{
    static const char hex[] = "0123456789abcdef";
    char buf[3 + 2 * 16 + 1] = "IP:";
    if (n != 4 && n != 16)
        return lstrv_push(sv, "IP:?");
    for (int i = 0; i < n; i++) {
        buf[3 + 2 * i] = hex[p[i] >> 4];
        buf[4 + 2 * i] = hex[p[i] & 15];
    }
    buf[3 + 2 * n] = 0;
    return lstrv_push(sv, buf);
}

static int request_names(const struct ca_leaf_request *req, struct lstrv *sv)
{
    int r = 0;
    for (size_t i = 0; i < req->n_dns && r >= 0; i++) {
        _cleanup_free_ char *s = lstr_printf("DNS:%s", req->dns[i]);
        lstr_lower(s);
        r = s ? lstrv_push(sv, s) : -ENOMEM;
    }
    for (size_t i = 0; i < req->n_ips && r >= 0; i++) {
        unsigned char b[16];
        if (inet_pton(AF_INET, req->ips[i], b) == 1)
            r = ip_key(b, 4, sv);
        else if (inet_pton(AF_INET6, req->ips[i], b) == 1)
            r = ip_key(b, 16, sv);
        else
            r = -EINVAL;
    }
    if (r >= 0 && req->uri)
        r = lstrv_printf(sv, "URI:%s", req->uri);
    return r;
}

static int cert_names(X509 *x, struct lstrv *sv)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int r = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && r >= 0; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        int type;
        ASN1_STRING *v = GENERAL_NAME_get0_value(g, &type);
        const unsigned char *p = ASN1_STRING_get0_data(v);
        int n = ASN1_STRING_length(v);
        if (type == GEN_DNS || type == GEN_URI) {
            _cleanup_free_ char *s = lstr_printf("%s:%.*s", type == GEN_DNS ? "DNS" : "URI", n, p);
            if (s && type == GEN_DNS)
                lstr_lower(s);
            r = s ? lstrv_push(sv, s) : -ENOMEM;
        } else if (type == GEN_IPADD) {
            r = ip_key(p, n, sv);
        } else {
            r = lstrv_push(sv, "other");
        }
    }
    GENERAL_NAMES_free(gens);
    return r;
}

static bool names_match(X509 *x, const struct ca_leaf_request *req)
{
    _cleanup_lstrv_ struct lstrv want = LSTRV_INIT, have = LSTRV_INIT;
    if (request_names(req, &want) < 0 || cert_names(x, &have) < 0 || want.n != have.n)
        return false;
    if (want.n) {
        qsort(want.v, want.n, sizeof(char *), cmp_str);
        qsort(have.v, have.n, sizeof(char *), cmp_str);
    }
    for (size_t i = 0; i < want.n; i++)
        if (strcmp(want.v[i], have.v[i]) != 0)
            return false;
    char cn[CA_COMMON_NAME_MAX + 2];
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    return n >= 0 && strcmp(cn, req->common_name) == 0;
}

/* Is the existing leaf at cert_path/key_path good enough to keep serving? */
static bool leaf_still_good(struct ca *ca, const struct ca_leaf_request *req, const char *cert_path,
                            const char *key_path, int64_t now, int64_t threshold_s)
{
    _cleanup_(ca_cert_stack_freep) STACK_OF(X509) *certs = NULL;
    if (ca_pem_load_certs(cert_path, &certs, NULL) < 0)
        return false;
    char *text = NULL;
    size_t len = 0;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
    if (read_secret_file(key_path, &text, &len, NULL) < 0)
        return false;
    int r = parse_key(text, len, &key);
    free_wiped(text, len);
    if (r < 0)
        return false;
    X509 *leaf = sk_X509_value(certs, 0);
    bool ok = X509_check_private_key(leaf, key) == 1 &&
              X509_check_issued(ca->cert, leaf) == X509_V_OK &&
              X509_verify(leaf, X509_get0_pubkey(ca->cert)) == 1;
    ERR_clear_error();
    if (!ok)
        return false;
    uint32_t xku = X509_get_extended_key_usage(leaf);
    if (!(xku & (req->kind == CA_LEAF_SERVER ? XKU_SSL_SERVER : XKU_SSL_CLIENT)))
        return false;
    int64_t nb, na;
    if (ca_cert_not_before(leaf, &nb) < 0 || ca_cert_not_after(leaf, &na) < 0)
        return false;
    if (threshold_s <= 0)
        threshold_s = (na - nb) / 5;
    if (now < nb || ca_needs_renewal(leaf, now, threshold_s))
        return false;
    return names_match(leaf, req);
}

int ca_leaf_ensure(struct ca *ca, const struct ca_leaf_request *req, const char *cert_path,
                   const char *key_path, int64_t now, int64_t threshold_s, struct lerr *e)
{
    if (leaf_still_good(ca, req, cert_path, key_path, now, threshold_s))
        return 0;
    struct ca_leaf leaf = {0};
    int r = ca_issue(ca, req, now, &leaf, e);
    if (r < 0)
        return r;
    /* Key first: a crash in between leaves a pair that does not match, which the next call
     * detects and re-issues. */
    r = lfs_write_atomic(key_path, leaf.key_pem, strlen(leaf.key_pem), 0600);
    if (r < 0)
        lerr_set(e, r, "%s: cannot write: %s", key_path, strerror(-r));
    else if ((r = lfs_write_atomic(cert_path, leaf.cert_pem, strlen(leaf.cert_pem), 0644)) < 0)
        lerr_set(e, r, "%s: cannot write: %s", cert_path, strerror(-r));
    ca_leaf_done(&leaf);
    return r < 0 ? r : 1;
}
