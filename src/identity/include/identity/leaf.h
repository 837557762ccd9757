/* leaf.h — identities of downstream (leaf) devices that connect through this edge as a
 * transparent gateway (docs/gateway.md): one record per device (SAS keys, X.509 thumbprints, or a
 * certificate chaining to a CA the operator trusts), its keys sealed at rest under a key derived
 * from the master secret (ledged.db alone holds no usable key), the connection string to give the
 * device, certificate thumbprints, and the CAs registered for CA-signed devices. No I/O. */
#pragma once

#include <jansson.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/macro.h"
#include "identity/keys.h"

enum identity_leaf_auth {
    IDENTITY_LEAF_SAS,             /* primary and secondary symmetric keys */
    IDENTITY_LEAF_X509_THUMBPRINT, /* a client certificate with one of two thumbprints */
    IDENTITY_LEAF_X509_CA,         /* a client certificate with CN = device id, chaining to a CA */
};

#define IDENTITY_LEAF_SLOTS 2    /* primary, secondary (keys or thumbprints), as IoT Hub has */
#define IDENTITY_LEAF_KEY_LEN 32 /* generated keys: 256 bits, as IoT Hub generates them */
/* A given key is 16-64 bytes once decoded: IoT Hub's bounds for device keys. */
#define IDENTITY_LEAF_KEY_MIN 16
#define IDENTITY_LEAF_KEY_MAX 64
/* Thumbprints: SHA-1 (40 hex digits) or SHA-256 (64), upper case, as IoT Hub shows them. */
#define IDENTITY_THUMBPRINT_SIZE 65

struct identity_leaf {
    char *device_id;
    char *generation_id; /* minted when added: a removed and re-added device is another one */
    enum identity_leaf_auth auth;
    uint8_t key[IDENTITY_LEAF_SLOTS][IDENTITY_LEAF_KEY_MAX]; /* SAS; wiped on free */
    size_t keylen[IDENTITY_LEAF_SLOTS];
    char thumbprint[IDENTITY_LEAF_SLOTS][IDENTITY_THUMBPRINT_SIZE]; /* X509_THUMBPRINT; "" none */
    int64_t created_ms;
    int64_t keys_changed_ms; /* keys or thumbprints last set */
};

/* "sas", "x509-thumbprint", "x509-ca". */
const char *identity_leaf_auth_name(enum identity_leaf_auth a);
int identity_leaf_auth_from_name(const char *s, enum identity_leaf_auth *ret);

struct identity_leaf_spec {
    const char *device_id;
    enum identity_leaf_auth auth;
    const char *primary_key;   /* SAS: base64, NULL: generated */
    const char *secondary_key; /* SAS: base64, NULL: generated */
    const char *thumbprints;   /* X509_THUMBPRINT: "HEX[,HEX2]" (primary, secondary) */
};

/* A new leaf from spec: the id checked (identity_id_valid), a fresh generation id, keys decoded
 * or generated, thumbprints parsed. -EINVAL with the reason ("--key: not valid base64", ...). */
int identity_leaf_new(const struct identity_leaf_spec *spec, int64_t now_ms,
                      struct identity_leaf **ret, struct lerr *e);
/* Fresh random keys for the SAS slots in mask (bit 0 primary, bit 1 secondary). -EINVAL for a
 * device that has no keys. */
int identity_leaf_rotate(struct identity_leaf *l, unsigned mask, int64_t now_ms, struct lerr *e);
void identity_leaf_free(struct identity_leaf *l);
DEFINE_CLEANUP(struct identity_leaf *, identity_leaf_free)

/* The stored form (for ledged.db): JSON with each SAS key sealed (crypt.h's AES-256-GCM under
 * identity_leaf_seal_key(), the device id, generation id and slot bound as associated data, so a
 * sealed key moved to another record does not open). */
int identity_leaf_seal(const struct identity_keys *k, const char *edge_device_id,
                       const struct identity_leaf *l, json_t **ret);
/* Back from the stored form; -EINVAL / -EBADMSG with the reason (a key sealed under another
 * master secret: "its keys do not unseal"). */
int identity_leaf_unseal(const struct identity_keys *k, const char *edge_device_id,
                         const json_t *rec, struct identity_leaf **ret, struct lerr *e);

/* {"deviceId", "generationId", "auth", "thumbprints": [...], "createdAt", "keysChangedAt"}:
 * what the management API shows; never a key. NULL on ENOMEM. */
json_t *identity_leaf_json(const struct identity_leaf *l);
/* What the hub needs (the runtime file's "leafDevices" entries): {"generationId", "auth",
 * "keys": [b64, b64] | "thumbprints": [...]}. NULL on ENOMEM. */
json_t *identity_leaf_runtime_json(const struct identity_leaf *l);
/* Back from identity_leaf_runtime_json() (the hub reading its runtime file): device_id is the
 * entry's name. -EINVAL with the reason. */
int identity_leaf_from_runtime_json(const char *device_id, const json_t *o,
                                    struct identity_leaf **ret, struct lerr *e);
/* The key of module_id of a SAS leaf device that is itself an edge device (a child ledge in a
 * nested hierarchy, docs/nested.md), derived from the device's key of slot as a device derives
 * its modules' cloud keys (identity_cloud_module_key): HMAC-SHA256(key, module id). The caller
 * wipes out. -EOPNOTSUPP for an X.509 device or an empty slot, -EINVAL for a bad module id. */
int identity_leaf_module_key(const struct identity_leaf *l, int slot, const char *module_id,
                             uint8_t out[IDENTITY_MODULE_KEY_LEN]);
/* The connection string to give the device:
 * "HostName=<iothub>;DeviceId=<id>;SharedAccessKey=<key of slot>;GatewayHostName=<gateway>"
 * for SAS, "HostName=..;DeviceId=..;x509=true;GatewayHostName=.." for X.509. NULL on ENOMEM. */
char *identity_leaf_connection_string(const struct identity_leaf *l, const char *iothub_host,
                                      const char *gateway_host, int slot);

/* ---- certificates ------------------------------------------------------------------------- */

/* 40 or 64 hex digits in either case, optionally ':'-separated pairs (`openssl x509
 * -fingerprint`), into upper-case hex without separators. -EINVAL with the reason. */
int identity_thumbprint_parse(const char *text, char out[IDENTITY_THUMBPRINT_SIZE], struct lerr *e);
/* The certificate's SHA-1 and SHA-256 thumbprints (of its DER), upper-case hex. */
int identity_cert_thumbprints(X509 *cert, char sha1[41], char sha256[65]);

/* A CA registered for CA-signed leaf devices (`ledge device ca add`). */
struct identity_device_ca {
    char thumbprint[65]; /* SHA-256, the CA's name in the API */
    char *subject;       /* one line, RFC 2253 */
    int64_t not_after;   /* unix seconds */
    char *pem;           /* the certificate alone, re-encoded */
};

/* Exactly one certificate (at most CA_PEM_FILE_MAX bytes of PEM), a CA (basicConstraints
 * CA:TRUE) and, when now_s > 0, valid at now_s. -EINVAL with the reason. */
int identity_device_ca_parse(const char *pem, size_t len, int64_t now_s,
                             struct identity_device_ca *ret, struct lerr *e);
void identity_device_ca_clear(struct identity_device_ca *ca);
/* {"thumbprint", "subject", "notAfter" (RFC 3339)[, "pem"]}. NULL on ENOMEM. */
json_t *identity_device_ca_json(const struct identity_device_ca *ca, bool with_pem);
