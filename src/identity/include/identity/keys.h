/* keys.h — the device identity (symmetric key, connection string or X.509 pair) and ledged's
 * local master secret, from which every module's signing and encryption keys are derived. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/errors.h"
#include "base/macro.h"

#define IDENTITY_MASTER_KEY_LEN 32
#define IDENTITY_MODULE_KEY_LEN 32
/* Generation ids we mint: 32 lower-case hex digits (128 random bits) + NUL. */
#define IDENTITY_GENID_LEN 32
#define IDENTITY_GENID_SIZE (IDENTITY_GENID_LEN + 1)
/* Longest id (device, module, generation) accepted anywhere in this library. IoT Hub allows 128. */
#define IDENTITY_ID_MAX 128
/* A device key is at most this many bytes once base64-decoded (IoT Hub keys are 32 or 64). */
#define IDENTITY_DEVICE_KEY_MAX 128

/* ---- master secret and derived module keys ------------------------------------------------ */

/* Opaque: holds the 32-byte master secret, wiped on free. */
struct identity_keys;

/* Load <state_dir>/identity/master.key, creating it (32 random bytes, mode 0600, written
 * atomically; the directory 0700) on first start. An existing file must be a regular file of
 * exactly 32 bytes owned by us and not readable by group or others, else this fails and says
 * why. */
int identity_keys_load_or_create(const char *state_dir, struct identity_keys **ret, struct lerr *e);
/* Use a given secret (tests, fuzzers). */
int identity_keys_from_secret(const void *secret, size_t n, struct identity_keys **ret);
void identity_keys_free(struct identity_keys *k);
DEFINE_CLEANUP(struct identity_keys *, identity_keys_free)

/* The module's SAS signing key (what the workload "sign" call uses and what the hub verifies
 * module tokens with):
 *   HMAC-SHA256(master, "ledge/module-key/v1" 0 device 0 module 0 generation)
 * Ids are NUL-free C strings, so the encoding is unambiguous; a new generation id (the module
 * was recreated) gives an unrelated key. -EINVAL on an empty or over-long id. */
int identity_module_key(const struct identity_keys *k, const char *device_id, const char *module_id,
                        const char *generation_id, uint8_t out[IDENTITY_MODULE_KEY_LEN]);
/* The module's encrypt/decrypt key: same construction with label "ledge/module-crypt/v1", so
 * the signing key (handed out indirectly through signatures) and the encryption key are
 * independent. */
int identity_module_crypt_key(const struct identity_keys *k, const char *device_id,
                              const char *module_id, const char *generation_id,
                              uint8_t out[IDENTITY_MODULE_KEY_LEN]);

/* The key ledged seals leaf devices' SAS keys with in ledged.db (leaf.h): same construction
 * with label "ledge/leaf-seal/v1" over device, "leaf-keys", "1" — one key per edge device, so a
 * database copied to another device (or kept after master.key is replaced) opens nothing. */
int identity_leaf_seal_key(const struct identity_keys *k, const char *device_id,
                           uint8_t out[IDENTITY_MODULE_KEY_LEN]);

/* The longest-lived module token minted for tools (`ledge token`): 30 days. */
#define IDENTITY_MODULE_TOKEN_TTL_MAX_S (30LL * 86400)
/* The IoT Hub MQTT API version in the user names minted here (what the Azure IoT SDKs send). */
#define IDENTITY_IOTHUB_API_VERSION "2021-04-12"

/* What a client acting as a module presents to an IoT Hub-style MQTT server (ledge's hub):
 * client id "<device>/<module>", user name "<host>/<device>/<module>/?api-version=...", and a
 * SAS token for "<host>/devices/<device>/modules/<module>" signed with the module's key
 * (identity_module_key of that generation) that expires at expiry (unix seconds). */
struct identity_module_credentials {
    char *client_id;
    char *username;
    char *token; /* wiped by identity_module_credentials_clear() */
    uint64_t expiry;
};

/* Mint them; -EINVAL for an id identity_module_key() refuses or an empty host. ret is written
 * only on success. One function for every caller (the management API's token call, the
 * dashboard), so the token is the one the hub verifies. */
int identity_module_credentials(const struct identity_keys *k, const char *host,
                                const char *device_id, const char *module_id,
                                const char *generation_id, uint64_t expiry,
                                struct identity_module_credentials *ret);
void identity_module_credentials_clear(struct identity_module_credentials *c);

/* A fresh random generation id for a (re)created module. */
int identity_new_generation_id(char out[IDENTITY_GENID_SIZE]);

/* True if s is a usable IoT Hub device/module id: 1..128 characters from the set IoT Hub
 * allows (ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '). */
bool identity_id_valid(const char *s);

/* ---- device identity --------------------------------------------------------------------- */

enum identity_auth {
    IDENTITY_AUTH_SAS,  /* symmetric device key */
    IDENTITY_AUTH_X509, /* client certificate + private key */
};

struct identity_device {
    char *hub_hostname; /* IoT hub host, e.g. "myhub.azure-devices.net" */
    char *device_id;
    char *gateway_hostname; /* parent gateway host from the connection string, or NULL */
    enum identity_auth auth;
    uint8_t *key; /* IDENTITY_AUTH_SAS: decoded key, wiped on free */
    size_t keylen;
    char *cert_pem; /* IDENTITY_AUTH_X509: certificate (chain) PEM */
    char *key_pem;  /* IDENTITY_AUTH_X509: private key PEM, wiped on free */
};

/* "HostName=..;DeviceId=..;SharedAccessKey=..[;GatewayHostName=..]". Fields may come in any
 * order, each once; values may contain '=' (base64 padding). A hub-level policy string
 * (SharedAccessKeyName), a module string (ModuleId) or an x509=true string is rejected with a
 * message saying what to use instead. */
int identity_device_from_connection_string(const char *cs, struct identity_device **ret,
                                           struct lerr *e);
/* Host, device id and base64 device key as separate settings. */
int identity_device_from_key(const char *hub_hostname, const char *device_id, const char *key_b64,
                             struct identity_device **ret, struct lerr *e);
/* Host, device id, and a certificate + private key file pair; the key must match the cert. */
int identity_device_from_x509(const char *hub_hostname, const char *device_id,
                              const char *cert_path, const char *key_path,
                              struct identity_device **ret, struct lerr *e);
void identity_device_free(struct identity_device *d);
DEFINE_CLEANUP(struct identity_device *, identity_device_free)

/* The key of one of the device's module identities in IoT Hub ($edgeAgent, $edgeHub, a
 * module), for the upstream sessions ledge opens per identity (docs/upstream.md, "Keys of the
 * cloud identities"): HMAC-SHA256(device key, module id), the module id as UTF-8 bytes — what
 * the operator registers in IoT Hub for that module (IoT Edge's own runtime derives module keys
 * from a device-held key the same way). -EOPNOTSUPP for an X.509 device, -EINVAL for an empty
 * or over-long id. */
int identity_cloud_module_key(const struct identity_device *d, const char *module_id,
                              uint8_t out[IDENTITY_MODULE_KEY_LEN]);
/* The same key in base64, as a module client's SAS key (NUL-terminated in out, which the caller
 * wipes with lcrypto_wipe(out->data, out->len) before lbuf_free); the raw key never leaves. */
int identity_cloud_module_key_b64(const struct identity_device *d, const char *module_id,
                                  struct lbuf *out);

/* A SAS token for the device (module_id NULL) or one of its modules, signed with the device key
 * (IoT Hub accepts device-key-signed tokens for the device's own scope only; module scope needs
 * the module's key: see sas_token_make). -EOPNOTSUPP for an X.509 device. */
int identity_device_sas_token(const struct identity_device *d, uint64_t expiry_unix,
                              struct lbuf *out);
