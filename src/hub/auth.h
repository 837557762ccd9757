/* auth.h — authentication for every protocol head: credentials in (the device and module a client
 * claims, and what proves it), an identity out, checked exactly as IoT Hub checks a module or a
 * device (docs/hub.md "Authentication", docs/gateway.md for leaf devices). */
#pragma once

#include <openssl/x509.h>

#include "base/errors.h"
#include "hub.h"

struct hub_credentials {
    const char *device_id;
    const char *module_id;  /* NULL or "": a device identity (a leaf device of this gateway) */
    const char *sas_token;  /* the SharedAccessSignature, or NULL */
    X509 *cert;             /* the TLS client certificate, or NULL */
    STACK_OF(X509) * chain; /* what the client sent with it (may be NULL) */
};

/* 0 with *ret (owned by the caller: hub_identity_clear()), or -EACCES with the reason in err
 * ("unknown module", "module m: the token expired ...", "device d: the certificate's thumbprint
 * is not one of the device's"): the client is not who it claims, or may not connect here. A
 * module proves itself with a SAS token of its key; a leaf device with a SAS token of one of its
 * keys (resource <host>/devices/<d>), or with its client certificate: one of its thumbprints, or
 * for a CA-signed device one with CN = its id that chains to the device CA bundle. */
int auth_check(struct hub *h, const struct hub_credentials *cr, struct hub_identity *ret,
               struct lerr *err);

/* The runtime file changed from old to h->rt: an identity that is gone or is now another one
 * loses its live sessions at once (docs/hub.md "Authentication"). A module that left the
 * deployment, or whose generation id changed (recreated), also loses what the heads keep for it
 * while it is away (persistent sessions); one whose key was rotated keeps that and may connect
 * again with a token of the new key. Its queued inputs stay (they are addressed to the module's
 * name, and expire by their TTL). */
void auth_identities_changed(struct hub *h, const struct hub_runtime *old);
