/* listener.h — the hub's TCP listeners and its TLS server context (the certificate ledged issues
 * for the gateway host name, replaced when the runtime file brings a new one), for every protocol
 * head. A head asks for a listener and gets each accepted socket. */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>

#include "base/errors.h"
#include "hub.h"

typedef void (*listener_accept_fn)(struct hub *h, int fd, bool tls);

int listener_start(struct hub *h);
/* Close every listener and free the TLS context. */
void listener_stop(struct hub *h);
/* A TLS server context for the runtime file's certificate and key, or NULL with err set. */
SSL_CTX *listener_tls_context(const struct hub_runtime *rt, struct lerr *err);
/* Use ctx (owned from now on) for connections accepted from now on; open ones keep theirs. */
void listener_set_tls(struct hub *h, SSL_CTX *ctx);
SSL_CTX *listener_tls(struct hub *h);
/* Listen on addr:port (an IP address); accept gets every connection (tls: on this listener the
 * head must speak TLS with listener_tls()). */
int listener_listen(struct hub *h, const char *addr, int port, bool tls, listener_accept_fn accept,
                    struct lerr *err);
/* Stop accepting (shutdown): the listeners close, the TLS context stays for open connections. */
void listener_close_all(struct hub *h);
