/* sas.h — IoT Hub shared access signature tokens: make, parse and verify, byte-compatible with
 * the Azure IoT SDKs (contract §5; sdk-node common/core/src/shared_access_signature.ts). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"

#define SAS_PREFIX "SharedAccessSignature "
/* Longest token accepted (an MQTT password or HTTP header): real ones are ~200-400 bytes. */
#define SAS_TOKEN_MAX 4096

struct sas_token {
    char *sr;     /* resource as it appeared: URL-encoded, what the signature covers */
    char *sr_dec; /* sr URL-decoded: "<host>/devices/<d>[/modules/<m>]" */
    char *sig;    /* signature, URL-decoded: base64 text */
    char *skn;    /* key name, URL-decoded, or NULL */
    uint64_t se;  /* expiry, unix seconds */
};

/* "SharedAccessSignature sr=<enc(resource_uri)>&sig=<enc(b64(hmac))>&se=<expiry>[&skn=<enc>]".
 * resource_uri is given unencoded ("host/devices/d/modules/m") and is encoded the way the
 * Node SDK's encodeUriComponentStrict does (only A-Z a-z 0-9 - _ . ~ kept); the string signed is
 * enc(resource_uri) + "\n" + expiry. key is the decoded key. Appends to out. */
int sas_token_make(const char *resource_uri, const void *key, size_t keylen, uint64_t expiry_unix,
                   const char *key_name, struct lbuf *out);

/* Parse a token of at most SAS_TOKEN_MAX bytes: the exact prefix, then name=value fields
 * separated by '&' in any order, each at most once, sr/sig/se required, skn optional, no other
 * names, no whitespace or control characters, valid %XX escapes, se a plain decimal (no sign,
 * no leading zeros, fits in 63 bits). On failure e says what is wrong. */
int sas_token_parse(const char *text, size_t len, struct sas_token *ret, struct lerr *e);
void sas_token_done(struct sas_token *t);

/* Verify a token presented by device_id/module_id (module_id NULL: a device-scoped token):
 * the decoded resource must be "<host>/devices/<d>[/modules/<m>]" with host one of
 * accepted_hosts and d, m equal to the given ids, all compared case-insensitively; the token
 * must not be expired (se > now); and the signature must equal
 * HMAC-SHA256(key, sr + "\n" + se) with sr exactly as presented, compared in constant time.
 * Returns 0 or -EACCES/-EINVAL/-EKEYEXPIRED with the reason in e. */
int sas_token_verify(const char *token, const char *const *accepted_hosts, size_t n_hosts,
                     const char *device_id, const char *module_id, const void *key, size_t keylen,
                     uint64_t now_unix, struct lerr *e);
