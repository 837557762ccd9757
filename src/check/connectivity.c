/* connectivity.c — the hub's port and the upstream link, checked the way a client would use them:
 * a TCP connection and a TLS handshake verified against the trust a module (or the hub) has. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/crypto.h"
#include "check-internal.h"

#define CONNECT_TIMEOUT_MS 5000

/* Is ledge's hub part of the deployment? */
static bool deployment_has_hub(const struct check_deployment *d)
{
    for (size_t i = 0; d && i < d->n_modules; i++)
        if (d->modules[i].system)
            return true;
    return false;
}

/* TCP connect with a deadline; returns the fd or -errno. */
static int tcp_connect(const char *host, int port, int timeout_ms)
{
    char p[8];
    snprintf(p, sizeof(p), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int g = getaddrinfo(host, p, &hints, &res);
    if (g != 0)
        return g == EAI_NONAME || g == EAI_NODATA || g == EAI_AGAIN || g == EAI_FAIL
                   ? -ENXIO
                   : -EHOSTUNREACH;
    int r = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            r = -errno;
            close(fd);
            continue;
        }
        struct pollfd pf = {fd, POLLOUT, 0};
        int n = poll(&pf, 1, timeout_ms);
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (n == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0) {
            /* back to blocking, with deadlines, for the TLS handshake */
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
            struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            freeaddrinfo(res);
            return fd;
        }
        r = n == 0 ? -ETIMEDOUT : soerr ? -soerr : -ECONNREFUSED;
        close(fd);
    }
    freeaddrinfo(res);
    return r;
}

/* TLS handshake over fd, verifying the peer against ca_file (or the system's CAs when NULL) and
 * name. On failure err says why; *ret_not_after gets the certificate's expiry. */
static int tls_handshake(int fd, const char *ca_file, const char *name, time_t *ret_not_after,
                         struct lerr *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int r = 0;
    if (!ctx) {
        r = lerr_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if ((ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        r = lerr_set(err, -ENOENT, "cannot load the trusted CAs from %s",
                     ca_file ? ca_file : "the system store");
        goto out;
    }
    ssl = SSL_new(ctx);
    if (!ssl) {
        r = lerr_set(err, -ENOMEM, "out of memory");
        goto out;
    }
    if (lcrypto_tls_expect_peer(ssl, name) < 0) {
        r = lerr_set(err, -EINVAL, "\"%s\" cannot be checked against a certificate", name);
        goto out;
    }
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK)
            r = lerr_set(err, -EPROTO,
                         "TLS: the server's certificate is not trusted for \"%s\": %s", name,
                         X509_verify_cert_error_string(v));
        else
            r = lerr_set(err, -EPROTO, "TLS handshake failed: %s",
                         ERR_reason_error_string(ERR_get_error()) ?: "the server closed it");
        goto out;
    }
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (peer) {
        const ASN1_TIME *na = X509_get0_notAfter(peer);
        struct tm tm;
        if (ASN1_TIME_to_tm(na, &tm) == 1)
            *ret_not_after = timegm(&tm);
        X509_free(peer);
    }
out:
    if (ssl)
        SSL_free(ssl);
    SSL_CTX_free(ctx);
    return r;
}

void check_hub_ports(struct check_ctx *ctx, struct check_report *rep)
{
    const struct ledge_config *c = ctx->cfg;
    if (!deployment_has_hub(ctx->in->deployment)) {
        check_report_skip(rep, "the hub is not part of this deployment%s%s",
                    ctx->in->deployment ? "" : ": ",
                    ctx->in->deployment ? "" : ctx->in->no_deployment ?: "no deployment");
        return;
    }
    if (!c->hub.tls_port) {
        check_report_skip(rep, "the hub's TLS listener is off (hub.tls_port: 0)");
        return;
    }
    const char *addr = strcmp(c->hub.bind, "0.0.0.0") == 0 || strcmp(c->hub.bind, "::") == 0
                           ? "127.0.0.1"
                           : c->hub.bind;
    int fd = tcp_connect(addr, c->hub.tls_port, CONNECT_TIMEOUT_MS);
    if (fd < 0) {
        check_report_set(rep, CHECK_ERROR,
                         "`ledge list` shows whether edgeHub runs; its log is `ledge logs edgeHub`",
                         "nothing answers on the hub's port %s:%d (%s): modules cannot connect",
                         addr, c->hub.tls_port, strerror(-fd));
        return;
    }
    char bundle[4200];
    snprintf(bundle, sizeof(bundle), "%s/certs/trust-bundle.pem", c->state_dir);
    struct lerr err = {0};
    time_t not_after = 0;
    int r = tls_handshake(fd, bundle, c->device.gateway_hostname, &not_after, &err);
    close(fd);
    if (r < 0) {
        char fix[256];
        snprintf(fix, sizeof(fix),
                 "another program may hold the port (`ss -ltnp sport = :%d`), or "
                 "device.gateway_hostname changed: restart ledged to re-issue the certificate",
                 c->hub.tls_port);
        check_report_set(rep, CHECK_ERROR, fix,
                         "port %d answers, but not as ledge's hub for %s: %s", c->hub.tls_port,
                         c->device.gateway_hostname, err.msg);
        return;
    }
    char when[64] = "?";
    struct tm tm;
    if (not_after && gmtime_r(&not_after, &tm))
        strftime(when, sizeof(when), "%Y-%m-%d", &tm);
    check_report_ok(rep,
                    "the hub answers TLS on %s:%d with a certificate for %s trusted by the "
                    "modules' trust bundle (valid until %s)",
                    addr, c->hub.tls_port, c->device.gateway_hostname, when);
}

void check_upstream(struct check_ctx *ctx, struct check_report *rep)
{
    const struct config_upstream *u = &ctx->cfg->upstream;
    if (!u->enabled || !u->host) {
        check_report_skip(rep, "upstream is not enabled (upstream.enabled)");
        return;
    }
    int fd = tcp_connect(u->host, u->port, CONNECT_TIMEOUT_MS);
    if (fd < 0) {
        /* Store-and-forward keeps messages while it is away: a warning, not an error. */
        check_report_set(rep, CHECK_WARNING,
                         fd == -ENXIO
                             ? "check upstream.host and the DNS configuration"
                             : "check the network path and firewall to the upstream; messages "
                               "are kept (store-and-forward) until it is reachable",
                         "upstream %s:%d is not reachable: %s", u->host, u->port,
                         fd == -ENXIO ? "the name does not resolve" : strerror(-fd));
        return;
    }
    if (!u->tls) {
        close(fd);
        check_report_ok(rep, "upstream %s:%d accepts TCP connections (TLS is off: upstream.tls)",
                        u->host, u->port);
        return;
    }
    struct lerr err = {0};
    time_t not_after = 0;
    int r = tls_handshake(fd, u->ca_file, u->host, &not_after, &err);
    close(fd);
    if (r < 0) {
        check_report_set(
            rep, CHECK_ERROR,
            "set upstream.ca_file to the CA that issued the upstream's certificate, and "
            "upstream.host to a name that certificate carries",
            "upstream %s:%d: %s", u->host, u->port, err.msg);
        return;
    }
    check_report_ok(rep, "upstream %s:%d is reachable and its TLS certificate is trusted", u->host,
                    u->port);
}
