/* auth.h — authentication for every protocol head: credentials in (the device and module a client
 * claims, and what proves it), an identity out, checked exactly as IoT Hub checks a module
 * (docs/hub.md "Authentication"). */
#pragma once

#include "base/errors.h"
#include "hub/hub.h"

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
