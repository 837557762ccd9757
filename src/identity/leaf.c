/* leaf.c — leaf device identities (leaf.h): records, keys sealed at rest, connection strings,
 * thumbprints and the CAs registered for CA-signed devices. */
#include "identity/leaf.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "base/timeutil.h"
#include "identity/ca.h"
#include "crypt.h"

#define LEAF_RECORD_VERSION 1

static const char *const auth_names[] = {
    [IDENTITY_LEAF_SAS] = "sas",
    [IDENTITY_LEAF_X509_THUMBPRINT] = "x509-thumbprint",
    [IDENTITY_LEAF_X509_CA] = "x509-ca",
};

const char *identity_leaf_auth_name(enum identity_leaf_auth a)
{
    return (size_t)a < ARRAY_SIZE(auth_names) ? auth_names[a] : "?";
}

int identity_leaf_auth_from_name(const char *s, enum identity_leaf_auth *ret)
{
    for (size_t i = 0; s && i < ARRAY_SIZE(auth_names); i++)
        if (strcmp(s, auth_names[i]) == 0) {
            *ret = (enum identity_leaf_auth)i;
            return 0;
        }
    return -EINVAL;
}

void identity_leaf_free(struct identity_leaf *l)
{
    if (!l)
        return;
    free(l->device_id);
    free(l->generation_id);
    lcrypto_wipe(l, sizeof(*l));
    free(l);
}

static const char *const slot_names[IDENTITY_LEAF_SLOTS] = {"primary", "secondary"};

/* A given key: standard base64 of IDENTITY_LEAF_KEY_MIN..MAX bytes. */
static int decode_key(struct identity_leaf *l, int slot, const char *b64, struct lerr *e)
{
    size_t n = strlen(b64);
    if (n > 4 * ((IDENTITY_LEAF_KEY_MAX + 2) / 3))
        return lerr_set(e, -EINVAL, "%s key: longer than %d bytes", slot_names[slot],
                        IDENTITY_LEAF_KEY_MAX);
    struct lbuf raw = LBUF_INIT;
    int r = lcrypto_b64_decode(b64, n, &raw);
    if (r == 0 && (raw.len < IDENTITY_LEAF_KEY_MIN || raw.len > IDENTITY_LEAF_KEY_MAX))
        r = lerr_set(e, -EINVAL, "%s key: %zu bytes; a device key is %d-%d bytes (base64)",
                     slot_names[slot], raw.len, IDENTITY_LEAF_KEY_MIN, IDENTITY_LEAF_KEY_MAX);
    else if (r < 0)
        r = lerr_set(e, -EINVAL, "%s key: not valid base64", slot_names[slot]);
    else {
        memcpy(l->key[slot], raw.data, raw.len);
        l->keylen[slot] = raw.len;
    }
    if (raw.data)
        lcrypto_wipe(raw.data, raw.len);
    lbuf_free(&raw);
    return r;
}

static int generate_key(struct identity_leaf *l, int slot, struct lerr *e)
{
    int r = lcrypto_random(l->key[slot], IDENTITY_LEAF_KEY_LEN);
    if (r < 0)
        return lerr_set(e, r, "no randomness for a device key");
    l->keylen[slot] = IDENTITY_LEAF_KEY_LEN;
    return 0;
}

int identity_thumbprint_parse(const char *text, char out[IDENTITY_THUMBPRINT_SIZE], struct lerr *e)
{
    static const char hex[] = "0123456789ABCDEF";
    char v[IDENTITY_THUMBPRINT_SIZE];
    size_t n = 0;
    if (!text)
        return lerr_set(e, -EINVAL, "thumbprint: missing");
    for (const char *p = text; *p; p++) {
        if (*p == ':' && p != text && p[1] && p[1] != ':')
            continue;
        const char *d = strchr(hex, *p >= 'a' && *p <= 'f' ? *p - 'a' + 'A' : *p);
        if (!d || !*p)
            return lerr_set(e, -EINVAL,
                            "thumbprint \"%.80s\": expected 40 (SHA-1) or 64 (SHA-256) hex digits",
                            text);
        if (n == IDENTITY_THUMBPRINT_SIZE - 1)
            return lerr_set(e, -EINVAL, "thumbprint \"%.80s\": more than 64 hex digits", text);
        v[n++] = *d;
    }
    if (n != 40 && n != 64)
        return lerr_set(e, -EINVAL,
                        "thumbprint \"%.80s\": %zu hex digits; expected 40 (SHA-1) or 64 (SHA-256)",
                        text, n);
    v[n] = 0;
    memcpy(out, v, n + 1);
    return 0;
}

/* "HEX[,HEX2]" into the two slots; the secondary may be absent. */
static int parse_thumbprints(struct identity_leaf *l, const char *list, struct lerr *e)
{
    if (lstr_empty(list))
        return lerr_set(e, -EINVAL, "an X.509 thumbprint device needs a thumbprint");
    _cleanup_free_ char *copy = strdup(list);
    if (!copy)
        return -ENOMEM;
    char *comma = strchr(copy, ',');
    if (comma) {
        *comma = 0;
        if (strchr(comma + 1, ','))
            return lerr_set(e, -EINVAL, "thumbprints: at most two (primary,secondary)");
    }
    int r = identity_thumbprint_parse(copy, l->thumbprint[0], e);
    if (r == 0 && comma && *(comma + 1))
        r = identity_thumbprint_parse(comma + 1, l->thumbprint[1], e);
    if (r == 0 && strcmp(l->thumbprint[0], l->thumbprint[1]) == 0)
        return lerr_set(e, -EINVAL, "thumbprints: primary and secondary are the same");
    return r;
}

int identity_leaf_new(const struct identity_leaf_spec *spec, int64_t now_ms,
                      struct identity_leaf **ret, struct lerr *e)
{
    if (!identity_id_valid(spec->device_id))
        return lerr_set(e, -EINVAL,
                        "device id \"%.140s\": expected 1-128 of letters, digits and "
                        "-.%%_*?!(),:=@$'",
                        spec->device_id ? spec->device_id : "");
    if ((spec->primary_key || spec->secondary_key) && spec->auth != IDENTITY_LEAF_SAS)
        return lerr_set(e, -EINVAL, "keys are for SAS devices; this one uses %s",
                        identity_leaf_auth_name(spec->auth));
    if (spec->thumbprints && spec->auth != IDENTITY_LEAF_X509_THUMBPRINT)
        return lerr_set(e, -EINVAL, "thumbprints are for x509-thumbprint devices");
    _cleanup_(identity_leaf_freep) struct identity_leaf *l = calloc(1, sizeof(*l));
    char gen[IDENTITY_GENID_SIZE];
    if (!l || !(l->device_id = strdup(spec->device_id)))
        return lerr_set(e, -ENOMEM, "out of memory");
    int r = identity_new_generation_id(gen);
    if (r < 0 || !(l->generation_id = strdup(gen)))
        return lerr_set(e, r < 0 ? r : -ENOMEM, "cannot mint a generation id");
    l->auth = spec->auth;
    l->created_ms = l->keys_changed_ms = now_ms;
    switch (spec->auth) {
    case IDENTITY_LEAF_SAS: {
        const char *given[IDENTITY_LEAF_SLOTS] = {spec->primary_key, spec->secondary_key};
        for (int s = 0; s < IDENTITY_LEAF_SLOTS; s++)
            if ((r = given[s] ? decode_key(l, s, given[s], e) : generate_key(l, s, e)) < 0)
                return r;
        if (l->keylen[0] == l->keylen[1] && lcrypto_memeq(l->key[0], l->key[1], l->keylen[0]))
            return lerr_set(e, -EINVAL, "the primary and secondary keys are the same");
        break;
    }
    case IDENTITY_LEAF_X509_THUMBPRINT:
        if ((r = parse_thumbprints(l, spec->thumbprints, e)) < 0)
            return r;
        break;
    case IDENTITY_LEAF_X509_CA:
        break;
    default:
        return lerr_set(e, -EINVAL, "unknown authentication type");
    }
    *ret = TAKE_PTR(l);
    return 0;
}

int identity_leaf_rotate(struct identity_leaf *l, unsigned mask, int64_t now_ms, struct lerr *e)
{
    if (l->auth != IDENTITY_LEAF_SAS)
        return lerr_set(e, -EINVAL, "device %s uses %s: it has no keys to rotate", l->device_id,
                        identity_leaf_auth_name(l->auth));
    struct identity_leaf next = *l;
    for (int s = 0; s < IDENTITY_LEAF_SLOTS; s++) {
        int r = (mask & (1u << s)) ? generate_key(&next, s, e) : 0;
        if (r < 0) {
            lcrypto_wipe(&next, sizeof(next));
            return r;
        }
    }
    memcpy(l->key, next.key, sizeof(l->key));
    memcpy(l->keylen, next.keylen, sizeof(l->keylen));
    lcrypto_wipe(&next, sizeof(next));
    l->keys_changed_ms = now_ms;
    return 0;
}

/* ------------------------------------------------------------------ stored form */

/* Associated data binding a sealed key to its record: "ledge-leaf" 0 id 0 generation 0 slot. */
static int seal_aad(const char *device_id, const char *generation_id, int slot, struct lbuf *out)
{
    int r = lbuf_puts(out, "ledge-leaf");
    const char *parts[] = {device_id, generation_id, slot_names[slot]};
    for (size_t i = 0; r == 0 && i < ARRAY_SIZE(parts); i++) {
        r = lbuf_putc(out, 0);
        if (r == 0)
            r = lbuf_puts(out, parts[i]);
    }
    return r;
}

int identity_leaf_seal(const struct identity_keys *k, const char *edge_device_id,
                       const struct identity_leaf *l, json_t **ret)
{
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    int r = identity_leaf_seal_key(k, edge_device_id, key);
    if (r < 0)
        return r;
    json_t *keys = json_array(), *thumbs = json_array();
    for (int s = 0; r == 0 && keys && s < IDENTITY_LEAF_SLOTS && l->keylen[s]; s++) {
        struct lbuf aad = LBUF_INIT, sealed = LBUF_INIT, b64 = LBUF_INIT;
        r = seal_aad(l->device_id, l->generation_id, s, &aad);
        if (r == 0)
            r = crypt_encrypt(key, aad.data, aad.len, l->key[s], l->keylen[s], &sealed);
        if (r == 0)
            r = lcrypto_b64_encode(sealed.data, sealed.len, &b64);
        if (r == 0)
            r = json_array_append_new(keys, json_string(b64.data)) == 0 ? 0 : -ENOMEM;
        lbuf_free(&aad);
        lbuf_free(&sealed);
        lbuf_free(&b64);
    }
    lcrypto_wipe(key, sizeof(key));
    for (int s = 0; thumbs && s < IDENTITY_LEAF_SLOTS && l->thumbprint[s][0]; s++)
        json_array_append_new(thumbs, json_string(l->thumbprint[s]));
    json_t *o =
        r == 0 && keys && thumbs
            ? json_pack("{s:i, s:s, s:s, s:s, s:O, s:O, s:I, s:I}", "version", LEAF_RECORD_VERSION,
                        "deviceId", l->device_id, "generationId", l->generation_id, "auth",
                        identity_leaf_auth_name(l->auth), "sealedKeys", keys, "thumbprints", thumbs,
                        "createdMs", (json_int_t)l->created_ms, "keysChangedMs",
                        (json_int_t)l->keys_changed_ms)
            : NULL;
    json_decref(keys);
    json_decref(thumbs);
    if (r < 0)
        return r;
    if (!o)
        return -ENOMEM;
    *ret = o;
    return 0;
}

int identity_leaf_unseal(const struct identity_keys *k, const char *edge_device_id,
                         const json_t *rec, struct identity_leaf **ret, struct lerr *e)
{
    if (!json_is_object(rec))
        return lerr_set(e, -EINVAL, "device record: not a JSON object");
    if (ljson_int(rec, "version", 0) != LEAF_RECORD_VERSION)
        return lerr_set(e, -EINVAL, "device record: unknown version %lld",
                        ljson_int(rec, "version", 0));
    const char *id = ljson_str(rec, "deviceId"), *gen = ljson_str(rec, "generationId");
    enum identity_leaf_auth auth;
    if (!identity_id_valid(id) || !identity_id_valid(gen))
        return lerr_set(e, -EINVAL, "device record: bad deviceId or generationId");
    if (identity_leaf_auth_from_name(ljson_str(rec, "auth"), &auth) < 0)
        return lerr_set(e, -EINVAL, "device %s: unknown auth", id);
    _cleanup_(identity_leaf_freep) struct identity_leaf *l = calloc(1, sizeof(*l));
    if (!l || !(l->device_id = strdup(id)) || !(l->generation_id = strdup(gen)))
        return lerr_set(e, -ENOMEM, "out of memory");
    l->auth = auth;
    l->created_ms = ljson_int(rec, "createdMs", 0);
    l->keys_changed_ms = ljson_int(rec, "keysChangedMs", 0);
    json_t *keys = json_object_get(rec, "sealedKeys");
    json_t *thumbs = json_object_get(rec, "thumbprints");
    if (!json_is_array(keys) || !json_is_array(thumbs) ||
        json_array_size(keys) > IDENTITY_LEAF_SLOTS ||
        json_array_size(thumbs) > IDENTITY_LEAF_SLOTS)
        return lerr_set(e, -EINVAL, "device %s: bad sealedKeys or thumbprints", id);
    if ((auth == IDENTITY_LEAF_SAS) != (json_array_size(keys) == IDENTITY_LEAF_SLOTS) ||
        (auth == IDENTITY_LEAF_X509_THUMBPRINT) != (json_array_size(thumbs) > 0))
        return lerr_set(e, -EINVAL, "device %s: keys or thumbprints do not fit auth %s", id,
                        identity_leaf_auth_name(auth));
    for (size_t s = 0; s < json_array_size(thumbs); s++)
        if (identity_thumbprint_parse(json_string_value(json_array_get(thumbs, s)),
                                      l->thumbprint[s], e) < 0) {
            lerr_prefix(e, "device %s", id);
            return -EINVAL;
        }
    uint8_t key[IDENTITY_MODULE_KEY_LEN];
    int r = identity_leaf_seal_key(k, edge_device_id, key);
    if (r < 0)
        return lerr_set(e, r, "device %s: cannot derive the sealing key", id);
    for (size_t s = 0; r == 0 && s < json_array_size(keys); s++) {
        const char *b64 = json_string_value(json_array_get(keys, s));
        struct lbuf aad = LBUF_INIT, sealed = LBUF_INIT, plain = LBUF_INIT;
        struct lerr ce = {0};
        r = b64 && strlen(b64) < 1024 ? lcrypto_b64_decode(b64, strlen(b64), &sealed) : -EINVAL;
        if (r < 0)
            r = lerr_set(e, -EINVAL, "device %s: a sealed key is not base64", id);
        if (r == 0 && (r = seal_aad(id, gen, (int)s, &aad)) < 0)
            lerr_set(e, r, "out of memory");
        if (r == 0 &&
            crypt_decrypt(key, aad.data, aad.len, sealed.data, sealed.len, &plain, &ce) < 0)
            r = lerr_set(e, -EBADMSG,
                         "device %s: its keys do not unseal (another master secret, or a damaged "
                         "record); rotate them",
                         id);
        if (r == 0 && (plain.len < IDENTITY_LEAF_KEY_MIN || plain.len > IDENTITY_LEAF_KEY_MAX))
            r = lerr_set(e, -EBADMSG, "device %s: a sealed key of %zu bytes", id, plain.len);
        if (r == 0) {
            memcpy(l->key[s], plain.data, plain.len);
            l->keylen[s] = plain.len;
        }
        if (plain.data)
            lcrypto_wipe(plain.data, plain.len);
        lbuf_free(&plain);
        lbuf_free(&aad);
        lbuf_free(&sealed);
    }
    lcrypto_wipe(key, sizeof(key));
    if (r < 0)
        return r;
    *ret = TAKE_PTR(l);
    return 0;
}

/* ------------------------------------------------------------------ views */

static json_t *time_json(int64_t ms)
{
    char buf[LTIME_RFC3339_MAX];
    return ms > 0 ? json_string(ltime_format_rfc3339(ms, buf)) : json_null();
}

static json_t *thumbprints_json(const struct identity_leaf *l)
{
    json_t *a = json_array();
    for (int s = 0; a && s < IDENTITY_LEAF_SLOTS && l->thumbprint[s][0]; s++)
        json_array_append_new(a, json_string(l->thumbprint[s]));
    return a;
}

json_t *identity_leaf_json(const struct identity_leaf *l)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o}", "deviceId", l->device_id, "generationId",
                          l->generation_id, "auth", identity_leaf_auth_name(l->auth), "createdAt",
                          time_json(l->created_ms), "keysChangedAt", time_json(l->keys_changed_ms));
    if (o && l->auth == IDENTITY_LEAF_X509_THUMBPRINT)
        json_object_set_new(o, "thumbprints", thumbprints_json(l));
    return o;
}

json_t *identity_leaf_runtime_json(const struct identity_leaf *l)
{
    json_t *o = json_pack("{s:s, s:s}", "generationId", l->generation_id, "auth",
                          identity_leaf_auth_name(l->auth));
    if (!o)
        return NULL;
    if (l->auth == IDENTITY_LEAF_SAS) {
        json_t *keys = json_array();
        for (int s = 0; keys && s < IDENTITY_LEAF_SLOTS; s++) {
            struct lbuf b64 = LBUF_INIT;
            if (lcrypto_b64_encode(l->key[s], l->keylen[s], &b64) == 0)
                json_array_append_new(keys, json_string(b64.data));
            if (b64.data)
                lcrypto_wipe(b64.data, b64.len);
            lbuf_free(&b64);
        }
        json_object_set_new(o, "keys", keys);
    } else if (l->auth == IDENTITY_LEAF_X509_THUMBPRINT) {
        json_object_set_new(o, "thumbprints", thumbprints_json(l));
    }
    return o;
}

int identity_leaf_from_runtime_json(const char *device_id, const json_t *o,
                                    struct identity_leaf **ret, struct lerr *e)
{
    enum identity_leaf_auth auth;
    const char *gen = ljson_str(o, "generationId");
    if (!identity_id_valid(device_id))
        return lerr_set(e, -EINVAL, "leaf device \"%.140s\": not a valid id",
                        device_id ? device_id : "");
    if (!identity_id_valid(gen) || identity_leaf_auth_from_name(ljson_str(o, "auth"), &auth) < 0)
        return lerr_set(e, -EINVAL, "leaf device %s: bad generationId or auth", device_id);
    _cleanup_(identity_leaf_freep) struct identity_leaf *l = calloc(1, sizeof(*l));
    if (!l || !(l->device_id = strdup(device_id)) || !(l->generation_id = strdup(gen)))
        return lerr_set(e, -ENOMEM, "out of memory");
    l->auth = auth;
    json_t *keys = json_object_get(o, "keys"), *thumbs = json_object_get(o, "thumbprints");
    if (auth == IDENTITY_LEAF_SAS) {
        if (json_array_size(keys) != IDENTITY_LEAF_SLOTS)
            return lerr_set(e, -EINVAL, "leaf device %s: expected two keys", device_id);
        for (int s = 0; s < IDENTITY_LEAF_SLOTS; s++) {
            const char *k = json_string_value(json_array_get(keys, (size_t)s));
            if (!k || decode_key(l, s, k, e) < 0)
                return lerr_set(e, -EINVAL, "leaf device %s: bad %s key", device_id, slot_names[s]);
        }
    } else if (auth == IDENTITY_LEAF_X509_THUMBPRINT) {
        size_t n = json_array_size(thumbs);
        if (n < 1 || n > IDENTITY_LEAF_SLOTS)
            return lerr_set(e, -EINVAL, "leaf device %s: expected one or two thumbprints",
                            device_id);
        for (size_t s = 0; s < n; s++)
            if (identity_thumbprint_parse(json_string_value(json_array_get(thumbs, s)),
                                          l->thumbprint[s], e) < 0) {
                lerr_prefix(e, "leaf device %s", device_id);
                return -EINVAL;
            }
    }
    *ret = TAKE_PTR(l);
    return 0;
}

int identity_leaf_module_key(const struct identity_leaf *l, int slot, const char *module_id,
                             uint8_t out[IDENTITY_MODULE_KEY_LEN])
{
    if (!l || l->auth != IDENTITY_LEAF_SAS || slot < 0 || slot >= IDENTITY_LEAF_SLOTS ||
        !l->keylen[slot])
        return -EOPNOTSUPP;
    size_t n = module_id ? strlen(module_id) : 0;
    if (n == 0 || n > IDENTITY_ID_MAX)
        return -EINVAL;
    return lcrypto_hmac_sha256(l->key[slot], l->keylen[slot], module_id, n, out);
}

char *identity_leaf_connection_string(const struct identity_leaf *l, const char *iothub_host,
                                      const char *gateway_host, int slot)
{
    if (slot < 0 || slot >= IDENTITY_LEAF_SLOTS)
        return NULL;
    if (l->auth != IDENTITY_LEAF_SAS)
        return lstr_printf("HostName=%s;DeviceId=%s;x509=true;GatewayHostName=%s", iothub_host,
                           l->device_id, gateway_host);
    struct lbuf b64 = LBUF_INIT;
    if (lcrypto_b64_encode(l->key[slot], l->keylen[slot], &b64) < 0)
        return NULL;
    char *cs = lstr_printf("HostName=%s;DeviceId=%s;SharedAccessKey=%s;GatewayHostName=%s",
                           iothub_host, l->device_id, b64.data, gateway_host);
    lcrypto_wipe(b64.data, b64.len);
    lbuf_free(&b64);
    return cs;
}

/* ------------------------------------------------------------------ certificates */

static void hex_upper(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = 0;
}

int identity_cert_thumbprints(X509 *cert, char sha1[41], char sha256[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (sha1) {
        if (X509_digest(cert, EVP_sha1(), md, &n) != 1 || n != 20)
            return -EIO;
        hex_upper(md, n, sha1);
    }
    if (sha256) {
        if (X509_digest(cert, EVP_sha256(), md, &n) != 1 || n != 32)
            return -EIO;
        hex_upper(md, n, sha256);
    }
    return 0;
}

DEFINE_CLEANUP(BIO *, BIO_free)

void identity_device_ca_clear(struct identity_device_ca *ca)
{
    if (!ca)
        return;
    free(ca->subject);
    free(ca->pem);
    memset(ca, 0, sizeof(*ca));
}

int identity_device_ca_parse(const char *pem, size_t len, int64_t now_s,
                             struct identity_device_ca *ret, struct lerr *e)
{
    if (len > CA_PEM_FILE_MAX)
        return lerr_set(e, -EFBIG, "CA certificate: more than %d bytes", CA_PEM_FILE_MAX);
    STACK_OF(X509) *certs = NULL;
    int r = ca_pem_read_certs(pem, len, &certs, e);
    if (r < 0) {
        lerr_prefix(e, "CA certificate");
        return r;
    }
    struct identity_device_ca ca = {0};
    X509 *x = sk_X509_value(certs, 0);
    int64_t nb = 0;
    if (sk_X509_num(certs) != 1)
        r = lerr_set(e, -EINVAL,
                     "CA certificate: %d certificates in the file; register each CA on its own",
                     sk_X509_num(certs));
    else if (X509_check_ca(x) < 1)
        r = lerr_set(e, -EINVAL, "CA certificate: not a CA (basicConstraints CA:TRUE is missing)");
    else if (ca_cert_not_after(x, &ca.not_after) < 0 || ca_cert_not_before(x, &nb) < 0)
        r = lerr_set(e, -EINVAL, "CA certificate: unreadable validity");
    else if (now_s > 0 && (ca.not_after <= now_s || nb > now_s))
        r = lerr_set(e, -EINVAL, "CA certificate: not valid now (expired or not yet valid)");
    else if (identity_cert_thumbprints(x, NULL, ca.thumbprint) < 0)
        r = lerr_set(e, -EIO, "CA certificate: cannot compute its thumbprint");
    if (r == 0) {
        struct lbuf out = LBUF_INIT;
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        char *line = NULL;
        if (b && X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
            BUF_MEM *mem = NULL;
            BIO_get_mem_ptr(b, &mem);
            line = mem ? lstr_ndup(mem->data, mem->length) : NULL;
        }
        ca.subject = line;
        if (!ca.subject || ca_pem_write_cert(x, &out) < 0)
            r = lerr_set(e, -ENOMEM, "out of memory");
        ca.pem = lbuf_steal(&out);
        if (r == 0 && !ca.pem)
            r = lerr_set(e, -ENOMEM, "out of memory");
    }
    ca_cert_stack_free(certs);
    if (r < 0) {
        identity_device_ca_clear(&ca);
        return r;
    }
    *ret = ca;
    return 0;
}

json_t *identity_device_ca_json(const struct identity_device_ca *ca, bool with_pem)
{
    json_t *o = json_pack("{s:s, s:s, s:o}", "thumbprint", ca->thumbprint, "subject", ca->subject,
                          "notAfter", time_json(ca->not_after * 1000));
    if (o && with_pem)
        json_object_set_new(o, "pem", json_string(ca->pem));
    return o;
}
