/* ca.h — the edge CA: created locally (ECDSA P-256) or loaded from the user's files; issues
 * server and module identity certificates; renews itself in two phases so the trust bundle
 * always holds every CA a served certificate may chain to; PEM helpers. */
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "base/macro.h"

#define CA_DEFAULT_LIFETIME_S (90LL * 86400)
#define CA_DEFAULT_LEAF_LIFETIME_S (30LL * 86400)
/* notBefore is set this far in the past so a peer whose clock lags a little accepts new certs. */
#define CA_CLOCK_SKEW_S 300
/* A leaf is never issued for less than this (the CA is then considered expired). */
#define CA_MIN_LEAF_LIFETIME_S 60
/* Longest DNS name / common name accepted in a certificate request. */
#define CA_DNS_NAME_MAX 253
#define CA_COMMON_NAME_MAX 64
#define CA_SAN_MAX 16
/* Any PEM file we read (CA, chain, trusted CAs, leaves) is bounded by this. */
#define CA_PEM_FILE_MAX (1024 * 1024)

struct ca_config {
    /* Directory of the generated CA (<state>/certs, created 0700). NULL: keep a generated CA
     * in memory only (tests, fuzzers). Unused with a user-provided CA. */
    const char *dir;
    const char *device_id; /* for the generated CA's CN "ledge edge CA <device>" */
    /* User-provided CA: certificate PEM (may be followed by its chain) and private key PEM;
     * chain_path optionally adds the certificates above it. All NULL: generate one. */
    const char *cert_path;
    const char *key_path;
    const char *chain_path;
    /* Extra CA certificates (PEM files) the trust bundle carries, e.g. an upstream root. */
    const char *const *trusted_ca_paths;
    size_t n_trusted_ca_paths;
    int64_t lifetime_s;        /* generated CA lifetime; 0 = CA_DEFAULT_LIFETIME_S */
    int64_t renew_threshold_s; /* announce the next CA this long before expiry; 0 = lifetime/5 */
    int64_t overlap_s;         /* switch to it this long after announcing; 0 = threshold/2 */
};

struct ca;

/* Load the user-provided CA, or load (creating on first start) the generated one. A generated CA
 * found expired is replaced at once. now is unix seconds. */
int ca_open(const struct ca_config *cfg, int64_t now, struct ca **ret, struct lerr *e);
void ca_free(struct ca *ca);
DEFINE_CLEANUP(struct ca *, ca_free)

bool ca_is_user_provided(const struct ca *ca);
/* The CA that signs leaves now (borrowed). */
X509 *ca_cert(const struct ca *ca);
int64_t ca_not_after(const struct ca *ca);

/* Trust bundle PEM: the current CA and its chain, the announced next CA, retired CAs not yet
 * expired, then the configured extra trusted CAs. Appends to out. */
int ca_trust_bundle(const struct ca *ca, struct lbuf *out);
/* Only the edge CA's own certificates, without the configured extra trusted CAs: the current CA,
 * the announced next one, retired ones not yet expired — every CA a leaf this CA issued may chain
 * to (the hub verifies leaf devices' certificates from `ledge device cert` against it). */
int ca_issuers_bundle(const struct ca *ca, struct lbuf *out);

/* ---- issuing ------------------------------------------------------------------------------ */

enum ca_leaf_kind {
    CA_LEAF_SERVER, /* EKU serverAuth */
    CA_LEAF_CLIENT, /* EKU clientAuth */
};

struct ca_leaf_request {
    enum ca_leaf_kind kind;
    const char *common_name; /* 1..64 printable characters */
    const char *const *dns;  /* DNS SANs (validated host names) */
    size_t n_dns;
    const char *const *ips; /* IP SANs (IPv4 or IPv6 text) */
    size_t n_ips;
    const char *uri;    /* optional URI SAN, printable ASCII */
    int64_t lifetime_s; /* 0 = CA_DEFAULT_LEAF_LIFETIME_S; capped by the CA's remaining life */
};

struct ca_leaf {
    char *cert_pem;    /* the leaf, then the issuing CA and its chain */
    char *key_pem;     /* PKCS#8 PEM of a fresh ECDSA P-256 key; wiped by ca_leaf_done */
    int64_t not_after; /* unix seconds */
};

int ca_issue(struct ca *ca, const struct ca_leaf_request *req, int64_t now, struct ca_leaf *ret,
             struct lerr *e);
void ca_leaf_done(struct ca_leaf *leaf);

/* ---- renewal ------------------------------------------------------------------------------ */

/* True when cert expires within threshold_s of now (or already has). */
bool ca_needs_renewal(const X509 *cert, int64_t now, int64_t threshold_s);

#define CA_RENEW_ANNOUNCED 1 /* a next CA was created; it is in the trust bundle from now on */
#define CA_RENEW_SWITCHED                                                                          \
    2                     /* leaves are issued by the new CA from now on: re-issue served certs    \
                           */
#define CA_RENEW_PRUNED 4 /* an expired retired CA left the trust bundle */

/* Run the generated CA's renewal (call periodically, e.g. hourly, and at start): when the CA is
 * within renew_threshold_s of expiry a next CA is created and announced in the trust bundle;
 * overlap_s later (or at once if the current CA has expired) it becomes current and the old one
 * is retired to the bundle until it expires, which is also when the last leaf it signed expires,
 * because leaves never outlive their CA. The caller should make modules reload the trust bundle
 * (restart them) on ANNOUNCED, and re-issue certificates it serves on SWITCHED. Returns a mask of
 * CA_RENEW_* (0: nothing to do; always 0 for a user-provided CA) or -errno. */
int ca_renew(struct ca *ca, int64_t now, struct lerr *e);

/* Keep a certificate served from files (e.g. the hub's TLS server cert) valid: re-issue it (new
 * key; key file 0600 written first, then the certificate, both atomically) unless the existing
 * pair parses, matches, was signed by the current CA, carries exactly the requested names and is
 * not within threshold_s of expiry (threshold_s <= 0: a fifth of its lifetime). Returns 1 when it
 * (re)issued, 0 when the existing pair is fine. */
int ca_leaf_ensure(struct ca *ca, const struct ca_leaf_request *req, const char *cert_path,
                   const char *key_path, int64_t now, int64_t threshold_s, struct lerr *e);

/* ---- helpers ------------------------------------------------------------------------------ */

/* A DNS host name: 1..253 characters, dot-separated labels of 1..63 letters, digits, '-' or '_'
 * not starting or ending with '-'. No wildcards, no trailing dot. */
bool ca_dns_name_valid(const char *s);
/* An IPv4 or IPv6 address in text form. */
bool ca_ip_valid(const char *s);

/* Parse every certificate in a PEM text (at least one, else -EINVAL with a message). */
int ca_pem_read_certs(const char *pem, size_t len, STACK_OF(X509) * *ret, struct lerr *e);
/* Same, from a file of at most CA_PEM_FILE_MAX bytes. */
int ca_pem_load_certs(const char *path, STACK_OF(X509) * *ret, struct lerr *e);
int ca_pem_write_cert(const X509 *cert, struct lbuf *out);
/* PKCS#8, unencrypted. The caller wipes out when done. */
int ca_pem_write_key(const EVP_PKEY *key, struct lbuf *out);
/* Unix seconds of a certificate's notAfter / notBefore; -EINVAL if unreadable. */
int ca_cert_not_after(const X509 *cert, int64_t *ret);
int ca_cert_not_before(const X509 *cert, int64_t *ret);
void ca_cert_stack_free(STACK_OF(X509) * sk);
