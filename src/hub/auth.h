/* auth.h — authentication for every protocol head: credentials in (the device and module a client
 * claims, and what proves it), an identity out, checked exactly as IoT Hub checks a module
 * (docs/hub.md "Authentication"). */
#pragma once

#include "base/errors.h"
#include "hub.h"

struct hub_credentials {
    const char *device_id;
    const char *module_id; /* NULL or "": a device identity */
    const char *sas_token; /* the SharedAccessSignature */
};

/* 0 with *ret (owned by the caller: hub_identity_clear()), or -EACCES with the reason in err
 * ("unknown module", "module m: the token expired ..."): the client is not who it claims, or may
 * not connect here. */
int auth_check(struct hub *h, const struct hub_credentials *cr, struct hub_identity *ret,
               struct lerr *err);

/* The runtime file changed from old to h->rt: an identity that is gone or is now another one
 * loses its live sessions at once (docs/hub.md "Authentication"). A module that left the
 * deployment, or whose generation id changed (recreated), also loses what the heads keep for it
 * while it is away (persistent sessions); one whose key was rotated keeps that and may connect
 * again with a token of the new key. Its queued inputs stay (they are addressed to the module's
 * name, and expire by their TTL). */
void auth_identities_changed(struct hub *h, const struct hub_runtime *old);
