/* certs.c — certificate checks: the edge CA (ledge's generated one under <state_dir>/certs, or
 * the user's certificates.ca_cert) and the hub's server certificate: readable, already valid,
 * not expired and not about to expire. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/timeutil.h"
#include "check-internal.h"

static int asn1_time_unix(const ASN1_TIME *t, int64_t *ret)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return -EINVAL;
    *ret = (int64_t)timegm(&tm);
    return 0;
}

static void format_time(int64_t s, char buf[static LTIME_RFC3339_MAX])
{
    ltime_format_rfc3339(s * 1000, buf);
}

static void check_cert_file(struct check_ctx *ctx, struct check_report *rep, const char *what,
                            const char *path, bool user, const char *fix_expiry)
{
    BIO *bio = BIO_new_file(path, "r");
    if (!bio) {
        int e = errno;
        ERR_clear_error();
        if (e == ENOENT && !user)
            check_report_skip(rep, "%s does not exist yet: ledged creates the %s when it starts",
                              path, what);
        else if (e == EACCES)
            check_report_set(rep, CHECK_WARNING, "run `ledge check` as root (ledged runs as root)",
                             "cannot read the %s %s: %s", what, path, strerror(e));
        else
            check_report_set(rep, CHECK_ERROR, "correct certificates.ca_cert",
                             "cannot read the %s %s: %s", what, path, strerror(e ? e : EIO));
        return;
    }
    X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!cert) {
        check_report_set(rep, CHECK_ERROR,
                         user ? "point certificates.ca_cert at a PEM certificate"
                              : "move the file away and restart ledged: it issues a new one",
                         "%s holds no PEM certificate", path);
        return;
    }
    int64_t nb, na;
    int r1 = asn1_time_unix(X509_get0_notBefore(cert), &nb);
    int r2 = asn1_time_unix(X509_get0_notAfter(cert), &na);
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    X509_free(cert);
    if (r1 < 0 || r2 < 0) {
        check_report_set(rep, CHECK_ERROR, NULL, "%s: unreadable validity dates", path);
        return;
    }
    int64_t now = (ctx->in->now_ms ? ctx->in->now_ms : ltime_now_ms()) / 1000;
    char nbs[LTIME_RFC3339_MAX], nas[LTIME_RFC3339_MAX];
    format_time(nb, nbs);
    format_time(na, nas);
    if (now < nb) {
        check_report_set(
            rep, CHECK_ERROR,
            "correct the clock (see the clock check); peers refuse a certificate that is "
            "not valid yet",
            "the %s (%s) is not valid until %s: this host's clock is behind, or the "
            "certificate was issued on a machine whose clock is ahead",
            what, path, nbs);
        return;
    }
    if (now >= na) {
        check_report_set(rep, CHECK_ERROR, fix_expiry, "the %s (%s, \"%s\") expired at %s", what,
                         path, cn, nas);
        return;
    }
    double days = (double)(na - now) / 86400;
    if (na - now < CHECK_CERT_WARN_S) {
        check_report_set(rep, CHECK_WARNING, fix_expiry,
                         "the %s (%s, \"%s\") expires in %.1f days, at %s", what, path, cn, days,
                         nas);
        return;
    }
    check_report_ok(rep, "the %s (\"%s\") is valid until %s (%.0f days)%s", what, cn, nas, days,
                    user ? "; provided by certificates.ca_cert" : "");
}

void check_edge_ca(struct check_ctx *ctx, struct check_report *rep)
{
    const struct ledge_config *c = ctx->cfg;
    if (c->certificates.ca_cert) {
        check_cert_file(ctx, rep, "edge CA", c->certificates.ca_cert, true,
                        "replace certificates.ca_cert and ca_key with a renewed CA and restart "
                        "ledged");
        return;
    }
    char path[4200];
    /* edge-ca.crt is the public copy; edge-ca.pem (key + certificate) is the one ledged loads. */
    snprintf(path, sizeof(path), "%s/certs/edge-ca.pem", c->state_dir);
    check_cert_file(ctx, rep, "edge CA", path, false,
                    "ledged renews its generated CA while it runs: start it, and look in its log "
                    "for renewal errors");
}

void check_hub_cert(struct check_ctx *ctx, struct check_report *rep)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/certs/hub-server.pem", ctx->cfg->state_dir);
    check_cert_file(ctx, rep, "hub server certificate", path, false,
                    "ledged renews the hub's certificate while it runs: start it, and look in "
                    "its log for renewal errors");
}
