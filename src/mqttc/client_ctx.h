/* client_ctx.h — the TLS client contexts of mqttc connections, shared. A hub with an IoT Hub
 * upstream keeps one connection per identity (docs/upstream.md "Sessions per identity"): with a
 * context each, every connection loaded its own copy of the CA file (all of the system's CAs when
 * none is configured) and kept its own buffers. Connections with the same CA file, client
 * certificate and key share one context; files whose contents changed make a new one for the
 * connections made after (the digest of their contents is part of the key). Contexts are made
 * with SSL_MODE_RELEASE_BUFFERS: an idle connection holds no read or write buffer.
 * Single-threaded, as the event loop. */
#pragma once

#include <openssl/ssl.h>

/* A client context (TLS 1.2 or later, the peer verified against ca_file, or the system's CAs when
 * NULL; cert_file and key_file as the client's certificate when not NULL) with a reference for the
 * caller (SSL_CTX_free it); NULL when a file cannot be read or used. */
SSL_CTX *mqttc_client_ctx(const char *ca_file, const char *cert_file, const char *key_file);
/* Forget the cached contexts (the connections keep theirs); for tests and a clean exit. */
void mqttc_client_ctx_flush(void);
