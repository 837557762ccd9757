/* listener.c — TCP listeners and the TLS server context (listener.h). */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

#define LISTENERS_MAX 8

struct listen_entry {
    struct hub *h;
    struct evconnlistener *l;
    listener_accept_fn accept;
    bool tls;
};

struct listener {
    SSL_CTX *tls;
    struct listen_entry v[LISTENERS_MAX];
    size_t n;
};

int listener_start(struct hub *h)
{
    h->listener = calloc(1, sizeof(*h->listener));
    return h->listener ? 0 : -ENOMEM;
}

void listener_close_all(struct hub *h)
{
    struct listener *ls = h->listener;
    if (!ls)
        return;
    for (size_t i = 0; i < ls->n; i++)
        evconnlistener_free(ls->v[i].l);
    ls->n = 0;
}

void listener_stop(struct hub *h)
{
    if (!h->listener)
        return;
    listener_close_all(h);
    SSL_CTX_free(h->listener->tls);
    free(h->listener);
    h->listener = NULL;
}

/* Every client certificate is taken here, whatever it is: auth.c checks it against the identity
 * the client claims (a leaf device's thumbprint, or its chain to the device CA bundle), and a
 * client without one (a module, a SAS device) is not asked to have one. */
static int accept_any_client_cert(int preverify_ok, X509_STORE_CTX *ctx)
{
    return 1;
}

SSL_CTX *listener_tls_context(const struct hub_runtime *rt, struct lerr *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        lerr_set(err, -ENOMEM, "TLS: cannot create a context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Ask for a client certificate (X.509 leaf devices); resumed sessions need a context id. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_client_cert);
    static const unsigned char sid_ctx[] = "ledge-hub";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    if (!rt->server_cert || !rt->server_key ||
        SSL_CTX_use_certificate_chain_file(ctx, rt->server_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, rt->server_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
        lerr_set(err, -EINVAL, "TLS: server certificate %s / key %s: %s",
                 rt->server_cert ? rt->server_cert : "(none)",
                 rt->server_key ? rt->server_key : "(none)", buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void listener_set_tls(struct hub *h, SSL_CTX *ctx)
{
    /* Existing connections keep their TLS session (SSL objects hold their context). */
    SSL_CTX_free(h->listener->tls);
    h->listener->tls = ctx;
}

SSL_CTX *listener_tls(struct hub *h)
{
    return h->listener ? h->listener->tls : NULL;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    struct listen_entry *e = arg;
    e->accept(e->h, fd, e->tls);
}

int listener_listen(struct hub *h, const char *addr, int port, bool tls, listener_accept_fn accept,
                    struct lerr *err)
{
    struct listener *ls = h->listener;
    if (ls->n == LISTENERS_MAX)
        return lerr_set(err, -EMFILE, "cannot listen on %s:%d: too many listeners", addr, port);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof(*a4);
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof(*a6);
    } else {
        return lerr_set(err, -EINVAL, "hub.bind: \"%s\" is not an IP address", addr);
    }
    struct listen_entry *e = &ls->v[ls->n];
    *e = (struct listen_entry){h, NULL, accept, tls};
    e->l = evconnlistener_new_bind(
        h->base, accept_cb, e, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE,
        512, (struct sockaddr *)&ss, (int)len);
    if (!e->l)
        return lerr_set(err, neg_errno(), "cannot listen on %s:%d: %s", addr, port,
                        strerror(errno));
    ls->n++;
    return 0;
}
