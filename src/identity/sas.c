/* sas.c — SAS token make/parse/verify (see sas.h). Tokens come from the network (MQTT passwords),
 * so parsing is bounded and strict, and nothing secret goes into error messages. */
#include "identity/sas.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/str.h"
#include "identity/keys.h"

int sas_token_make(const char *resource_uri, const void *key, size_t keylen, uint64_t expiry_unix,
                   const char *key_name, struct lbuf *out)
{
    if (lstr_empty(resource_uri) || !key || keylen == 0 || expiry_unix > INT64_MAX)
        return -EINVAL;
    _cleanup_lbuf_ struct lbuf sr = LBUF_INIT, to_sign = LBUF_INIT, sig = LBUF_INIT;
    int r = lstr_url_encode(resource_uri, strlen(resource_uri), &sr);
    if (r < 0)
        return r;
    r = lbuf_printf(&to_sign, "%s\n%" PRIu64, sr.data, expiry_unix);
    if (r < 0)
        return r;
    uint8_t mac[LCRYPTO_SHA256_LEN];
    r = lcrypto_hmac_sha256(key, keylen, to_sign.data, to_sign.len, mac);
    if (r < 0)
        return r;
    r = lcrypto_b64_encode(mac, sizeof(mac), &sig);
    lcrypto_wipe(mac, sizeof(mac));
    if (r < 0)
        return r;
    if ((r = lbuf_puts(out, SAS_PREFIX "sr=")) < 0 || (r = lbuf_puts(out, sr.data)) < 0 ||
        (r = lbuf_puts(out, "&sig=")) < 0 || (r = lstr_url_encode(sig.data, sig.len, out)) < 0 ||
        (r = lbuf_printf(out, "&se=%" PRIu64, expiry_unix)) < 0)
        return r;
    if (!lstr_empty(key_name)) {
        if ((r = lbuf_puts(out, "&skn=")) < 0 ||
            (r = lstr_url_encode(key_name, strlen(key_name), out)) < 0)
            return r;
    }
    return 0;
}

void sas_token_done(struct sas_token *t)
{
    if (!t)
        return;
    free(t->sr);
    free(t->sr_dec);
    free(t->sig);
    free(t->skn);
    *t = (struct sas_token){0};
}

/* URL-decode a field value into a new string; decoded control characters (NUL included) are
 * refused so that later string handling and messages are safe. */
static int decode_field(const char *name, const char *v, size_t n, char **ret, struct lerr *e)
{
    _cleanup_lbuf_ struct lbuf b = LBUF_INIT;
    b.max = n + 1;
    if (lstr_url_decode(v, n, false, &b) < 0)
        return lerr_set(e, -EINVAL, "SAS token: %s has a malformed %%-escape", name);
    for (size_t i = 0; i < b.len; i++)
        if ((unsigned char)b.data[i] < 0x20 || b.data[i] == 0x7f)
            return lerr_set(e, -EINVAL, "SAS token: %s contains a control character", name);
    if (b.len == 0)
        return lerr_set(e, -EINVAL, "SAS token: %s is empty", name);
    *ret = lbuf_steal(&b);
    return 0;
}

static int parse_expiry(const char *v, size_t n, uint64_t *ret, struct lerr *e)
{
    /* Strict: the text must be the canonical decimal, because the signature covers the text
     * and we re-create it from the number. 19 digits always fit in 63 bits' range check. */
    if (n == 0 || n > 19 || (n > 1 && v[0] == '0'))
        return lerr_set(e, -EINVAL, "SAS token: se is not a plain decimal number of seconds");
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return lerr_set(e, -EINVAL, "SAS token: se is not a plain decimal number of seconds");
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (x > INT64_MAX)
        return lerr_set(e, -EINVAL, "SAS token: se is out of range");
    *ret = x;
    return 0;
}

int sas_token_parse(const char *text, size_t len, struct sas_token *ret, struct lerr *e)
{
    static const size_t plen = sizeof(SAS_PREFIX) - 1;
    if (!text || len == 0)
        return lerr_set(e, -EINVAL, "SAS token: empty");
    if (len > SAS_TOKEN_MAX)
        return lerr_set(e, -EINVAL, "SAS token: longer than %d bytes", SAS_TOKEN_MAX);
    if (len < plen || memcmp(text, SAS_PREFIX, plen) != 0)
        return lerr_set(e, -EINVAL, "SAS token: does not start with '" SAS_PREFIX "'");
    for (size_t i = plen; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c <= 0x20 || c >= 0x7f)
            return lerr_set(e, -EINVAL,
                            "SAS token: whitespace, control or non-ASCII character at offset %zu",
                            i);
    }

    struct sas_token t = {0};
    bool have_se = false;
    int r = 0;
    const char *p = text + plen, *end = text + len;
    while (p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *fend = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(fend - p));
        if (fend == p) {
            r = lerr_set(e, -EINVAL, "SAS token: empty field");
            goto fail;
        }
        if (!eq) {
            r = lerr_set(e, -EINVAL, "SAS token: field '%.*s' has no '='",
                         (int)MIN((size_t)(fend - p), 16), p);
            goto fail;
        }
        size_t nlen = (size_t)(eq - p);
        const char *v = eq + 1;
        size_t vlen = (size_t)(fend - v);
        char **slot = NULL;
        const char *name = NULL;
        if (nlen == 2 && memcmp(p, "sr", 2) == 0)
            slot = &t.sr, name = "sr";
        else if (nlen == 3 && memcmp(p, "sig", 3) == 0)
            slot = &t.sig, name = "sig";
        else if (nlen == 3 && memcmp(p, "skn", 3) == 0)
            slot = &t.skn, name = "skn";
        else if (nlen == 2 && memcmp(p, "se", 2) == 0)
            name = "se";
        if (!name) {
            r = lerr_set(e, -EINVAL, "SAS token: unknown field '%.*s'", (int)MIN(nlen, 16), p);
            goto fail;
        }
        if ((slot && *slot) || (!slot && have_se)) {
            r = lerr_set(e, -EINVAL, "SAS token: %s given more than once", name);
            goto fail;
        }
        if (vlen == 0) {
            r = lerr_set(e, -EINVAL, "SAS token: %s is empty", name);
            goto fail;
        }
        if (!slot) {
            r = parse_expiry(v, vlen, &t.se, e);
            have_se = true;
        } else if (slot == &t.sr) {
            /* Keep sr exactly as sent (the signature covers it) and decoded (for the audience). */
            t.sr = lstr_ndup(v, vlen);
            r = t.sr ? decode_field(name, v, vlen, &t.sr_dec, e) : -ENOMEM;
        } else {
            r = decode_field(name, v, vlen, slot, e);
        }
        if (r < 0) {
            if (r == -ENOMEM)
                lerr_set(e, r, "out of memory");
            goto fail;
        }
        p = fend + 1;
    }
    if (!t.sr || !t.sig || !have_se) {
        r = lerr_set(e, -EINVAL, "SAS token: missing %s", !t.sr ? "sr" : !t.sig ? "sig" : "se");
        goto fail;
    }
    *ret = t;
    return 0;
fail:
    sas_token_done(&t);
    return r;
}

static bool host_accepted(const char *host, size_t n, const char *const *hosts, size_t n_hosts)
{
    for (size_t i = 0; i < n_hosts; i++)
        if (hosts[i] && strlen(hosts[i]) == n && strncasecmp(hosts[i], host, n) == 0)
            return true;
    return false;
}

int sas_token_verify(const char *token, const char *const *accepted_hosts, size_t n_hosts,
                     const char *device_id, const char *module_id, const void *key, size_t keylen,
                     uint64_t now_unix, struct lerr *e)
{
    if (!token || lstr_empty(device_id) || (module_id && !*module_id) || !key || keylen == 0)
        return lerr_set(e, -EINVAL, "SAS token: nothing to verify against");
    /* The ids come from the peer too (MQTT client id): a '/' in one would let the path compare
     * below match a different split. */
    if (!identity_id_valid(device_id) || (module_id && !identity_id_valid(module_id)))
        return lerr_set(e, -EINVAL, "SAS token: invalid device or module id");
    size_t tlen = strnlen(token, SAS_TOKEN_MAX + 1);
    _cleanup_free_ char *want = NULL;
    _cleanup_lbuf_ struct lbuf mac_given = LBUF_INIT, to_sign = LBUF_INIT;
    struct sas_token t;
    int r = sas_token_parse(token, tlen, &t, e);
    if (r < 0)
        return r;

    /* Audience: "<host>/devices/<d>[/modules/<m>]" after decoding. */
    const char *slash = strchr(t.sr_dec, '/');
    if (!slash || slash == t.sr_dec) {
        r = lerr_set(e, -EACCES, "SAS token: resource '%.200s' is not <host>/devices/<id>",
                     t.sr_dec);
        goto out;
    }
    if (!host_accepted(t.sr_dec, (size_t)(slash - t.sr_dec), accepted_hosts, n_hosts)) {
        r = lerr_set(e, -EACCES, "SAS token: audience host '%.*s' is not this hub or gateway",
                     (int)MIN((size_t)(slash - t.sr_dec), 200), t.sr_dec);
        goto out;
    }
    want = module_id ? lstr_printf("/devices/%s/modules/%s", device_id, module_id)
                     : lstr_printf("/devices/%s", device_id);
    if (!want) {
        r = lerr_set(e, -ENOMEM, "out of memory");
        goto out;
    }
    if (strcasecmp(slash, want) != 0) {
        r = lerr_set(e, -EACCES, "SAS token: resource '%.200s' is not for %s%s%s", slash + 1,
                     device_id, module_id ? "/" : "", module_id ? module_id : "");
        goto out;
    }
    if (t.se <= now_unix) {
        r = lerr_set(e, -EKEYEXPIRED, "SAS token: expired at %" PRIu64 " (now %" PRIu64 ")", t.se,
                     now_unix);
        goto out;
    }

    mac_given.max = 64;
    if (lcrypto_b64_decode(t.sig, strlen(t.sig), &mac_given) < 0 ||
        mac_given.len != LCRYPTO_SHA256_LEN) {
        r = lerr_set(e, -EACCES, "SAS token: sig is not a base64 HMAC-SHA256");
        goto out;
    }
    uint8_t mac[LCRYPTO_SHA256_LEN];
    if ((r = lbuf_printf(&to_sign, "%s\n%" PRIu64, t.sr, t.se)) < 0 ||
        (r = lcrypto_hmac_sha256(key, keylen, to_sign.data, to_sign.len, mac)) < 0) {
        lerr_set(e, r, "SAS token: cannot compute the signature");
        goto out;
    }
    bool ok = lcrypto_memeq(mac, mac_given.data, sizeof(mac));
    lcrypto_wipe(mac, sizeof(mac));
    if (!ok) {
        r = lerr_set(e, -EACCES, "SAS token: signature does not match");
        goto out;
    }
    r = 0;
out:
    sas_token_done(&t);
    return r;
}
