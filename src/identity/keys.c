/* keys.c — master secret storage, module key derivation and device identity parsing (see
 * keys.h and docs/security.md). */
#include "identity/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/str.h"
#include "identity/ca.h"
#include "identity/sas.h"

struct identity_keys {
    uint8_t master[IDENTITY_MASTER_KEY_LEN];
};

/* Certificates and keys of a device: far below this, and bounding it keeps a wrong path (a log
 * file, a device node) from being slurped. */
#define DEVICE_PEM_MAX (256 * 1024)

int identity_keys_from_secret(const void *secret, size_t n, struct identity_keys **ret)
{
    if (n != IDENTITY_MASTER_KEY_LEN)
        return -EINVAL;
    struct identity_keys *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    memcpy(k->master, secret, n);
    *ret = k;
    return 0;
}

void identity_keys_free(struct identity_keys *k)
{
    if (!k)
        return;
    lcrypto_wipe(k, sizeof(*k));
    free(k);
}

static int read_master(const char *path, uint8_t out[IDENTITY_MASTER_KEY_LEN], struct lerr *e)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return neg_errno();
    struct stat st;
    if (fstat(fd, &st) < 0)
        return lerr_set(e, neg_errno(), "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return lerr_set(e, -EINVAL, "%s: not a regular file", path);
    if (st.st_uid != geteuid())
        return lerr_set(e, -EPERM, "%s: owned by uid %u, expected %u", path, (unsigned)st.st_uid,
                        (unsigned)geteuid());
    if (st.st_mode & 077)
        return lerr_set(e, -EPERM,
                        "%s: mode %04o lets others read the master secret; treat it as leaked: "
                        "remove it (all module keys change) or chmod 600",
                        path, (unsigned)(st.st_mode & 07777));
    if (st.st_size != IDENTITY_MASTER_KEY_LEN)
        return lerr_set(e, -EINVAL, "%s: %lld bytes, expected %d", path, (long long)st.st_size,
                        IDENTITY_MASTER_KEY_LEN);
    size_t got = 0;
    while (got < IDENTITY_MASTER_KEY_LEN) {
        ssize_t r = read(fd, out + got, IDENTITY_MASTER_KEY_LEN - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return lerr_set(e, neg_errno(), "%s: %s", path, strerror(errno));
        if (r == 0)
            return lerr_set(e, -EINVAL, "%s: truncated", path);
        got += (size_t)r;
    }
    return 0;
}

int identity_keys_load_or_create(const char *state_dir, struct identity_keys **ret, struct lerr *e)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (snprintf(dir, sizeof(dir), "%s/identity", state_dir) >= (int)sizeof(dir) ||
        snprintf(path, sizeof(path), "%s/master.key", dir) >= (int)sizeof(path))
        return lerr_set(e, -ENAMETOOLONG, "%s: path too long", state_dir);
    int r = lfs_mkdir_p(dir, 0700);
    if (r < 0)
        return lerr_set(e, r, "%s: cannot create: %s", dir, strerror(-r));

    uint8_t secret[IDENTITY_MASTER_KEY_LEN];
    r = read_master(path, secret, e);
    if (r == -ENOENT) {
        r = lcrypto_random(secret, sizeof(secret));
        if (r < 0) {
            lerr_set(e, r, "no randomness for the master secret");
        } else {
            r = lfs_write_atomic(path, secret, sizeof(secret), 0600);
            if (r < 0)
                lerr_set(e, r, "%s: cannot write: %s", path, strerror(-r));
        }
    } else if (r < 0 && e && !e->code) {
        lerr_set(e, r, "%s: %s", path, strerror(-r));
    }
    if (r >= 0)
        r = identity_keys_from_secret(secret, sizeof(secret), ret);
    lcrypto_wipe(secret, sizeof(secret));
    return r;
}

bool identity_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    if (n == 0 || n > IDENTITY_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("-.%_*?!(),:=@$'", c);
        if (!ok || c == 0)
            return false;
    }
    return true;
}

static int derive(const struct identity_keys *k, const char *label, const char *device_id,
                  const char *module_id, const char *generation_id,
                  uint8_t out[IDENTITY_MODULE_KEY_LEN])
{
    const char *parts[] = {label, device_id, module_id, generation_id};
    uint8_t msg[64 + 3 * (IDENTITY_ID_MAX + 1)];
    size_t len = 0;
    for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
        if (!parts[i])
            return -EINVAL;
        size_t n = strlen(parts[i]);
        if (n == 0 || n > IDENTITY_ID_MAX || len + n + 1 > sizeof(msg))
            return -EINVAL;
        memcpy(msg + len, parts[i], n);
        len += n;
        /* NUL separators; the last part is not terminated (it ends the message). */
        if (i + 1 < ARRAY_SIZE(parts))
            msg[len++] = 0;
    }
    int r = lcrypto_hmac_sha256(k->master, sizeof(k->master), msg, len, out);
    lcrypto_wipe(msg, sizeof(msg));
    return r;
}

int identity_module_key(const struct identity_keys *k, const char *device_id, const char *module_id,
                        const char *generation_id, uint8_t out[IDENTITY_MODULE_KEY_LEN])
{
    return derive(k, "ledge/module-key/v1", device_id, module_id, generation_id, out);
}

int identity_module_crypt_key(const struct identity_keys *k, const char *device_id,
                              const char *module_id, const char *generation_id,
                              uint8_t out[IDENTITY_MODULE_KEY_LEN])
{
    return derive(k, "ledge/module-crypt/v1", device_id, module_id, generation_id, out);
}

int identity_leaf_seal_key(const struct identity_keys *k, const char *device_id,
                           uint8_t out[IDENTITY_MODULE_KEY_LEN])
{
    return derive(k, "ledge/leaf-seal/v1", device_id, "leaf-keys", "1", out);
}

int identity_cloud_module_key(const struct identity_device *d, const char *module_id,
                              uint8_t out[IDENTITY_MODULE_KEY_LEN])
{
    if (!d || d->auth != IDENTITY_AUTH_SAS || !d->key)
        return -EOPNOTSUPP;
    size_t n = module_id ? strlen(module_id) : 0;
    if (n == 0 || n > IDENTITY_ID_MAX)
        return -EINVAL;
    return lcrypto_hmac_sha256(d->key, d->keylen, module_id, n, out);
}

int identity_cloud_module_key_b64(const struct identity_device *d, const char *module_id,
                                  struct lbuf *out)
{
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    int r = identity_cloud_module_key(d, module_id, key);
    if (r < 0)
        return r;
    r = lcrypto_b64_encode(key, sizeof(key), out);
    lcrypto_wipe(key, sizeof(key));
    return r;
}

int identity_module_credentials(const struct identity_keys *k, const char *host,
                                const char *device_id, const char *module_id,
                                const char *generation_id, uint64_t expiry,
                                struct identity_module_credentials *ret)
{
    if (lstr_empty(host))
        return -EINVAL;
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    int r = identity_module_key(k, device_id, module_id, generation_id, key);
    if (r < 0)
        return r;
    _cleanup_free_ char *resource =
        lstr_printf("%s/devices/%s/modules/%s", host, device_id, module_id);
    struct lbuf tok = LBUF_INIT;
    r = resource ? sas_token_make(resource, key, sizeof(key), expiry, NULL, &tok) : -ENOMEM;
    lcrypto_wipe(key, sizeof(key));
    struct identity_module_credentials c = {
        .client_id = lstr_printf("%s/%s", device_id, module_id),
        .username = lstr_printf("%s/%s/%s/?api-version=" IDENTITY_IOTHUB_API_VERSION, host,
                                device_id, module_id),
        .token = lbuf_steal(&tok),
        .expiry = expiry,
    };
    if (r == 0 && (!c.client_id || !c.username || !c.token))
        r = -ENOMEM;
    if (r < 0) {
        identity_module_credentials_clear(&c);
        return r;
    }
    *ret = c;
    return 0;
}

void identity_module_credentials_clear(struct identity_module_credentials *c)
{
    if (!c)
        return;
    if (c->token)
        lcrypto_wipe(c->token, strlen(c->token));
    free(c->token);
    free(c->client_id);
    free(c->username);
    memset(c, 0, sizeof(*c));
}

int identity_new_generation_id(char out[IDENTITY_GENID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t rnd[IDENTITY_GENID_LEN / 2];
    int r = lcrypto_random(rnd, sizeof(rnd));
    if (r < 0)
        return r;
    for (size_t i = 0; i < sizeof(rnd); i++) {
        out[2 * i] = hex[rnd[i] >> 4];
        out[2 * i + 1] = hex[rnd[i] & 15];
    }
    out[IDENTITY_GENID_LEN] = 0;
    return 0;
}

/* ---- device identity ---------------------------------------------------------------------- */

void identity_device_free(struct identity_device *d)
{
    if (!d)
        return;
    free(d->hub_hostname);
    free(d->device_id);
    free(d->gateway_hostname);
    if (d->key) {
        lcrypto_wipe(d->key, d->keylen);
        free(d->key);
    }
    free(d->cert_pem);
    if (d->key_pem) {
        lcrypto_wipe(d->key_pem, strlen(d->key_pem));
        free(d->key_pem);
    }
    free(d);
}

static int check_host_and_id(const char *what, const char *hub_hostname, const char *device_id,
                             struct lerr *e)
{
    if (lstr_empty(hub_hostname))
        return lerr_set(e, -EINVAL, "%sIoT hub host name is missing", what);
    if (!ca_dns_name_valid(hub_hostname) || !strchr(hub_hostname, '.'))
        return lerr_set(e, -EINVAL, "%sIoT hub host name '%s' is not a fully qualified host name",
                        what, hub_hostname);
    if (lstr_empty(device_id))
        return lerr_set(e, -EINVAL, "%sdevice id is missing", what);
    if (!identity_id_valid(device_id))
        return lerr_set(e, -EINVAL,
                        "%sdevice id '%.*s' is not valid (1-128 of letters, digits and "
                        "-.%%_*?!(),:=@$')",
                        what, 140, device_id);
    return 0;
}

static int device_new(const char *hub_hostname, const char *device_id, struct identity_device **ret)
{
    struct identity_device *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->hub_hostname = strdup(hub_hostname);
    d->device_id = strdup(device_id);
    if (!d->hub_hostname || !d->device_id) {
        identity_device_free(d);
        return -ENOMEM;
    }
    *ret = d;
    return 0;
}

static int decode_device_key(const char *what, const char *key_b64, struct identity_device *d,
                             struct lerr *e)
{
    if (lstr_empty(key_b64))
        return lerr_set(e, -EINVAL, "%sdevice key is missing", what);
    size_t n = strlen(key_b64);
    if (n > 4 * ((IDENTITY_DEVICE_KEY_MAX + 2) / 3))
        return lerr_set(e, -EINVAL, "%sdevice key is longer than %d bytes", what,
                        IDENTITY_DEVICE_KEY_MAX);
    struct lbuf b = LBUF_INIT;
    int r = lcrypto_b64_decode(key_b64, n, &b);
    if (r < 0 || b.len == 0) {
        if (b.data)
            lcrypto_wipe(b.data, b.len);
        lbuf_free(&b);
        return lerr_set(e, -EINVAL, "%sdevice key is not valid base64", what);
    }
    d->keylen = b.len;
    d->key = (uint8_t *)lbuf_steal(&b);
    d->auth = IDENTITY_AUTH_SAS;
    return 0;
}

int identity_device_from_key(const char *hub_hostname, const char *device_id, const char *key_b64,
                             struct identity_device **ret, struct lerr *e)
{
    int r = check_host_and_id("", hub_hostname, device_id, e);
    if (r < 0)
        return r;
    _cleanup_(identity_device_freep) struct identity_device *d = NULL;
    r = device_new(hub_hostname, device_id, &d);
    if (r < 0)
        return lerr_set(e, r, "out of memory");
    r = decode_device_key("", key_b64, d, e);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(d);
    return 0;
}

/* Connection string fields we know. Values are kept as slices of a private copy. */
enum { CS_HOST, CS_DEVICE, CS_KEY, CS_GATEWAY, CS_MODULE, CS_KEYNAME, CS_X509, CS_N };
static const char *const cs_names[CS_N] = {
    [CS_HOST] = "HostName",       [CS_DEVICE] = "DeviceId",
    [CS_KEY] = "SharedAccessKey", [CS_GATEWAY] = "GatewayHostName",
    [CS_MODULE] = "ModuleId",     [CS_KEYNAME] = "SharedAccessKeyName",
    [CS_X509] = "x509",
};

#define CONNECTION_STRING_MAX 4096

int identity_device_from_connection_string(const char *cs, struct identity_device **ret,
                                           struct lerr *e)
{
    static const char what[] = "connection string: ";
    if (!cs)
        return lerr_set(e, -EINVAL, "%sempty", what);
    size_t n = strlen(cs);
    if (n == 0)
        return lerr_set(e, -EINVAL, "%sempty", what);
    if (n > CONNECTION_STRING_MAX)
        return lerr_set(e, -EINVAL, "%slonger than %d characters", what, CONNECTION_STRING_MAX);
    _cleanup_free_ char *copy = strdup(cs);
    if (!copy)
        return lerr_set(e, -ENOMEM, "out of memory");
    _cleanup_(identity_device_freep) struct identity_device *d = NULL;
    const char *val[CS_N] = {0};
    int r = 0;
    char *save = NULL;
    for (char *part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(part, '=');
        if (!eq || eq == part) {
            r = lerr_set(e, -EINVAL, "%sexpected Name=value, got '%.40s'", what, part);
            goto out;
        }
        *eq = 0;
        size_t i;
        for (i = 0; i < CS_N; i++)
            if (strcmp(part, cs_names[i]) == 0)
                break;
        if (i == CS_N) {
            r = lerr_set(e, -EINVAL, "%sunknown field '%.40s'", what, part);
            goto out;
        }
        if (val[i]) {
            r = lerr_set(e, -EINVAL, "%s%s given twice", what, cs_names[i]);
            goto out;
        }
        val[i] = eq + 1;
    }
    if (val[CS_MODULE]) {
        r = lerr_set(e, -EINVAL,
                     "%sthis is a module connection string (ModuleId); give the "
                     "device's connection string",
                     what);
        goto out;
    }
    if (val[CS_KEYNAME]) {
        r = lerr_set(e, -EINVAL,
                     "%sthis is an IoT hub policy connection string (SharedAccessKeyName); give "
                     "the device's connection string",
                     what);
        goto out;
    }
    if (val[CS_X509]) {
        r = lerr_set(e, -EINVAL,
                     "%sx509 devices are configured with a certificate and key file, "
                     "not a connection string",
                     what);
        goto out;
    }
    if (!val[CS_HOST] || !val[CS_DEVICE] || !val[CS_KEY]) {
        r = lerr_set(e, -EINVAL, "%smissing %s", what,
                     !val[CS_HOST]     ? "HostName"
                     : !val[CS_DEVICE] ? "DeviceId"
                                       : "SharedAccessKey");
        goto out;
    }
    r = check_host_and_id(what, val[CS_HOST], val[CS_DEVICE], e);
    if (r < 0)
        goto out;
    if (val[CS_GATEWAY] && !ca_dns_name_valid(val[CS_GATEWAY]) && !ca_ip_valid(val[CS_GATEWAY])) {
        r = lerr_set(e, -EINVAL, "%sGatewayHostName '%.64s' is not a host name or IP address", what,
                     val[CS_GATEWAY]);
        goto out;
    }
    r = device_new(val[CS_HOST], val[CS_DEVICE], &d);
    if (r < 0) {
        lerr_set(e, r, "out of memory");
        goto out;
    }
    if (val[CS_GATEWAY] && !(d->gateway_hostname = strdup(val[CS_GATEWAY]))) {
        r = lerr_set(e, -ENOMEM, "out of memory");
        goto out;
    }
    r = decode_device_key(what, val[CS_KEY], d, e);
    if (r < 0)
        goto out;
    *ret = TAKE_PTR(d);
out:
    lcrypto_wipe(copy, n);
    return r;
}

DEFINE_CLEANUP(X509 *, X509_free)
DEFINE_CLEANUP(EVP_PKEY *, EVP_PKEY_free)
DEFINE_CLEANUP(BIO *, BIO_free)

int identity_device_from_x509(const char *hub_hostname, const char *device_id,
                              const char *cert_path, const char *key_path,
                              struct identity_device **ret, struct lerr *e)
{
    int r = check_host_and_id("", hub_hostname, device_id, e);
    if (r < 0)
        return r;
    if (lstr_empty(cert_path) || lstr_empty(key_path))
        return lerr_set(e, -EINVAL, "device certificate and key files are both required");
    _cleanup_(identity_device_freep) struct identity_device *d = NULL;
    r = device_new(hub_hostname, device_id, &d);
    if (r < 0)
        return lerr_set(e, r, "out of memory");
    d->auth = IDENTITY_AUTH_X509;
    size_t len = 0;
    r = lfs_read_file(cert_path, DEVICE_PEM_MAX, &d->cert_pem, &len);
    if (r < 0)
        return lerr_set(e, r, "%s: %s", cert_path, strerror(-r));
    r = lfs_read_file(key_path, DEVICE_PEM_MAX, &d->key_pem, &len);
    if (r < 0)
        return lerr_set(e, r, "%s: %s", key_path, strerror(-r));

    _cleanup_(BIO_freep) BIO *cb = BIO_new_mem_buf(d->cert_pem, -1);
    _cleanup_(BIO_freep) BIO *kb = BIO_new_mem_buf(d->key_pem, -1);
    if (!cb || !kb)
        return lerr_set(e, -ENOMEM, "out of memory");
    _cleanup_(X509_freep) X509 *cert = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    if (!cert)
        return lerr_set(e, -EINVAL, "%s: no PEM certificate", cert_path);
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    if (!key)
        return lerr_set(e, -EINVAL, "%s: no PEM private key (encrypted keys are not supported)",
                        key_path);
    if (X509_check_private_key(cert, key) != 1)
        return lerr_set(e, -EINVAL, "%s does not match the certificate in %s", key_path, cert_path);
    *ret = TAKE_PTR(d);
    return 0;
}

int identity_device_sas_token(const struct identity_device *d, uint64_t expiry_unix,
                              struct lbuf *out)
{
    if (d->auth != IDENTITY_AUTH_SAS)
        return -EOPNOTSUPP;
    _cleanup_free_ char *res = lstr_printf("%s/devices/%s", d->hub_hostname, d->device_id);
    if (!res)
        return -ENOMEM;
    return sas_token_make(res, d->key, d->keylen, expiry_unix, NULL, out);
}
