/* auth.c — who a client is (auth.h): this device, a module the deployment defines, and a SAS token
 * signed with that module's key for the IoT hub's or the gateway's host name, not expired; or a
 * leaf device of this gateway (docs/gateway.md) with a SAS token of one of its keys or its X.509
 * client certificate (a thumbprint of the device's, or CA-signed with CN = the device id). */
#include "auth.h"

#include <errno.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "base/crypto.h"
#include "base/timeutil.h"
#include "clients.h"
#include "head.h"
#include "identity/sas.h"
#include "log/log.h"
#include "twin.h"

#define COMP "hub"

/* An authentic token that stays valid for longer than hub.max_token_lifetime is refused too: a
 * leaked one must not be good for years. who names the client in the reason. */
static int check_lifetime(struct hub *h, const char *who, const char *token, uint64_t now,
                          struct lerr *err)
{
    struct sas_token t;
    struct lerr e = {0};
    uint64_t max_s = (uint64_t)h->cfg.hub.max_token_lifetime_ms / 1000;
    if (sas_token_parse(token, strlen(token), &t, &e) < 0)
        return lerr_set(err, -EACCES, "%s: %s", who, e.msg);
    uint64_t se = t.se;
    sas_token_done(&t);
    if (max_s && se > now + max_s)
        return lerr_set(err, -EACCES,
                        "%s: the token expires in %llu s, beyond hub.max_token_lifetime (%llu s)",
                        who, (unsigned long long)(se - now), (unsigned long long)max_s);
    return 0;
}

/* A module identity of a leaf device that is itself an edge device (a child ledge, docs/nested.md):
 * its token is signed with the module's key, derived from one of the device's keys as the child
 * derives it (identity_leaf_module_key). At most HUB_MAX_CHILD_MODULES of them per device. */
static int check_child_module(struct hub *h, const struct hub_credentials *cr,
                              struct hub_identity *ret, struct lerr *err)
{
    const struct identity_leaf *l = hub_runtime_leaf(&h->rt, cr->device_id);
    if (!l)
        return lerr_set(err, -EACCES,
                        "unknown device %s: neither this device nor a leaf device of this gateway",
                        cr->device_id);
    size_t ml = strlen(cr->module_id);
    if (ml > IDENTITY_ID_MAX || strchr(cr->module_id, '/'))
        return lerr_set(err, -EACCES, "device %s: \"%.64s\" is not a module id", l->device_id,
                        cr->module_id);
    if (l->auth != IDENTITY_LEAF_SAS)
        return lerr_set(err, -EACCES,
                        "module %s/%s: a child edge device's modules need a SAS device identity",
                        l->device_id, cr->module_id);
    if (!cr->sas_token)
        return lerr_set(err, -EACCES, "module %s/%s: a SAS token is required", l->device_id,
                        cr->module_id);
    const char *hosts[] = {h->rt.iothub_hostname, h->rt.gateway_hostname};
    uint64_t now = (uint64_t)(ltime_now_ms() / 1000);
    struct lerr e = {0};
    int slot = -1;
    for (int i = 0; i < IDENTITY_LEAF_SLOTS && slot < 0; i++) {
        uint8_t key[IDENTITY_MODULE_KEY_LEN];
        if (identity_leaf_module_key(l, i, cr->module_id, key) < 0)
            continue;
        e = (struct lerr){0};
        if (sas_token_verify(cr->sas_token, hosts, 2, cr->device_id, cr->module_id, key,
                             sizeof(key), now, &e) == 0)
            slot = i;
        lcrypto_wipe(key, sizeof(key));
    }
    if (slot < 0)
        return lerr_set(err, -EACCES, "module %s/%s: %s", l->device_id, cr->module_id,
                        e.msg[0] ? e.msg : "no key to check the token with");
    char who[300];
    snprintf(who, sizeof(who), "module %s/%s", l->device_id, cr->module_id);
    int r = check_lifetime(h, who, cr->sas_token, now, err);
    if (r < 0)
        return r;
    struct hub_identity m = {
        .kind = HUB_IDENTITY_CHILD_MODULE,
        .method = HUB_AUTH_SAS,
        .device_id = l->device_id,
        .module_id = (char *)cr->module_id,
        .slot = (uint8_t)slot,
    };
    r = hub_identity_copy(&m, ret);
    if (r < 0)
        return r;
    /* Each module identity keeps a twin here: a device cannot make the hub keep unboundedly
     * many. */
    if (!twins_known(h, ret->address) &&
        twins_child_count(h, l->device_id) >= HUB_MAX_CHILD_MODULES) {
        hub_identity_clear(ret);
        return lerr_set(err, -EACCES,
                        "module %s/%s: the device has %d module identities here already",
                        l->device_id, cr->module_id, HUB_MAX_CHILD_MODULES);
    }
    return 0;
}

static int check_module(struct hub *h, const struct hub_credentials *cr, struct hub_identity *ret,
                        struct lerr *err)
{
    if (cr->device_id && strcasecmp(cr->device_id, h->rt.device_id) != 0)
        return check_child_module(h, cr, ret, err);
    if (!cr->device_id)
        return lerr_set(err, -EACCES, "unknown device");
    const struct hub_module_identity *id = hub_runtime_module(&h->rt, cr->module_id);
    if (!id)
        return lerr_set(err, -EACCES, "unknown module");
    const char *hosts[] = {h->rt.iothub_hostname, h->rt.gateway_hostname};
    struct lerr e = {0};
    uint64_t now = (uint64_t)(ltime_now_ms() / 1000);
    if (!cr->sas_token || sas_token_verify(cr->sas_token, hosts, 2, cr->device_id, cr->module_id,
                                           id->key, id->keylen, now, &e) < 0)
        return lerr_set(err, -EACCES, "module %s: %s", cr->module_id,
                        cr->sas_token ? e.msg : "a SAS token is required");
    char who[160];
    snprintf(who, sizeof(who), "module %s", cr->module_id);
    int r = check_lifetime(h, who, cr->sas_token, now, err);
    if (r < 0)
        return r;
    struct hub_identity m = {
        .kind = HUB_IDENTITY_MODULE,
        .method = HUB_AUTH_SAS,
        .device_id = h->rt.device_id,
        .module_id = id->module_id,
        .address = id->module_id,
    };
    return hub_identity_copy(&m, ret);
}

/* Is cert valid now (notBefore..notAfter)? */
static bool cert_current(X509 *cert)
{
    return X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
           X509_cmp_current_time(X509_get0_notAfter(cert)) > 0;
}

/* A certificate the workload API issued to a module names it in a URI SAN ".../modules/<m>":
 * never a device's. */
static bool cert_names_module(X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI)
            continue;
        const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        for (int k = 0; u && k + 9 <= n; k++)
            if (memcmp(u + k, "/modules/", 9) == 0)
                found = true;
    }
    GENERAL_NAMES_free(names);
    return found;
}

/* A CA-signed device's certificate: CN = the device id, chaining to the device CA bundle (the
 * edge CA, the CAs of `ledge device ca add`, hub.x509_device_ca) for client authentication. */
static int check_ca_signed(struct hub *h, const struct identity_leaf *l,
                           const struct hub_credentials *cr, struct lerr *err)
{
    char cn[256] = "";
    X509_NAME *subj = X509_get_subject_name(cr->cert);
    if (!subj || X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof(cn)) <= 0 ||
        strcasecmp(cn, l->device_id) != 0)
        return lerr_set(err, -EACCES, "device %s: the certificate's CN \"%s\" is not the device id",
                        l->device_id, cn);
    if (!h->rt.device_ca)
        return lerr_set(err, -EACCES, "device %s: no device CA bundle to check its certificate",
                        l->device_id);
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int r = -EACCES;
    const char *why = "cannot check the certificate";
    if (store && ctx && X509_STORE_load_file(store, h->rt.device_ca) == 1 &&
        X509_STORE_CTX_init(ctx, store, cr->cert, cr->chain) == 1) {
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
        if (X509_verify_cert(ctx) == 1)
            r = 0;
        else
            why = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx));
    } else if (store && ctx) {
        why = "the device CA bundle cannot be read";
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    if (r < 0)
        return lerr_set(err, r, "device %s: certificate not trusted: %s", l->device_id, why);
    return 0;
}

static int check_device(struct hub *h, const struct hub_credentials *cr, struct hub_identity *ret,
                        struct lerr *err)
{
    const struct identity_leaf *l = cr->device_id ? hub_runtime_leaf(&h->rt, cr->device_id) : NULL;
    if (!l)
        return lerr_set(err, -EACCES, "unknown device %s: not a leaf device of this gateway",
                        cr->device_id ? cr->device_id : "");
    struct hub_identity who = {
        .kind = HUB_IDENTITY_DEVICE,
        .device_id = l->device_id,
    };
    if (l->auth == IDENTITY_LEAF_SAS) {
        if (!cr->sas_token)
            return lerr_set(err, -EACCES, "device %s: a SAS token is required", l->device_id);
        const char *hosts[] = {h->rt.iothub_hostname, h->rt.gateway_hostname};
        uint64_t now = (uint64_t)(ltime_now_ms() / 1000);
        struct lerr e = {0};
        int slot = -1;
        for (int i = 0; i < IDENTITY_LEAF_SLOTS && slot < 0; i++) {
            if (!l->keylen[i])
                continue;
            e = (struct lerr){0};
            if (sas_token_verify(cr->sas_token, hosts, 2, cr->device_id, NULL, l->key[i],
                                 l->keylen[i], now, &e) == 0)
                slot = i;
        }
        if (slot < 0)
            return lerr_set(err, -EACCES, "device %s: %s", l->device_id, e.msg);
        char name[160];
        snprintf(name, sizeof(name), "device %s", l->device_id);
        int r = check_lifetime(h, name, cr->sas_token, now, err);
        if (r < 0)
            return r;
        who.method = HUB_AUTH_SAS;
        who.slot = (uint8_t)slot;
        return hub_identity_copy(&who, ret);
    }
    /* X.509: the TLS listener asked for a client certificate and took whatever came; it is
     * checked here, against this device. */
    if (!cr->cert)
        return lerr_set(err, -EACCES, "device %s: a client certificate is required (X.509 device)",
                        l->device_id);
    if (!cert_current(cr->cert))
        return lerr_set(err, -EACCES, "device %s: the certificate is expired or not yet valid",
                        l->device_id);
    if (cert_names_module(cr->cert))
        return lerr_set(err, -EACCES, "device %s: the certificate is a module's", l->device_id);
    who.method = HUB_AUTH_X509;
    if (l->auth == IDENTITY_LEAF_X509_THUMBPRINT) {
        char sha1[41], sha256[65];
        if (identity_cert_thumbprints(cr->cert, sha1, sha256) < 0)
            return lerr_set(err, -EACCES, "device %s: cannot read the certificate", l->device_id);
        int slot = -1;
        for (int i = 0; i < IDENTITY_LEAF_SLOTS && slot < 0; i++)
            if (l->thumbprint[i][0] &&
                (strcmp(l->thumbprint[i], sha1) == 0 || strcmp(l->thumbprint[i], sha256) == 0))
                slot = i;
        if (slot < 0)
            return lerr_set(err, -EACCES,
                            "device %s: the certificate's thumbprint %s is not one of the device's",
                            l->device_id, sha1);
        who.slot = (uint8_t)slot;
        return hub_identity_copy(&who, ret);
    }
    int r = check_ca_signed(h, l, cr, err);
    return r < 0 ? r : hub_identity_copy(&who, ret);
}

int auth_check(struct hub *h, const struct hub_credentials *cr, struct hub_identity *ret,
               struct lerr *err)
{
    if (!cr->module_id || !*cr->module_id)
        return check_device(h, cr, ret, err);
    return check_module(h, cr, ret, err);
}

static void cut(struct hub *h, const char *address, const char *what, const char *why, bool forget)
{
    size_t n = clients_close_address(h, address, why, -1);
    if (forget)
        for (size_t k = 0; k < h->n_heads; k++)
            if (h->heads[k]->forget_module)
                h->heads[k]->forget_module(h, address);
    log_info(COMP, "%s: %s: %zu connection%s closed%s", what, why, n, n == 1 ? "" : "s",
             forget ? ", its persistent sessions dropped" : "");
}

/* Does slot of was authenticate differently in now? */
static bool slot_changed(const struct identity_leaf *was, const struct identity_leaf *now, int i)
{
    if (was->auth == IDENTITY_LEAF_SAS)
        return was->keylen[i] != now->keylen[i] ||
               memcmp(was->key[i], now->key[i], was->keylen[i]) != 0;
    if (was->auth == IDENTITY_LEAF_X509_THUMBPRINT)
        return strcmp(was->thumbprint[i], now->thumbprint[i]) != 0;
    return false;
}

static void leaves_changed(struct hub *h, const struct hub_runtime *old)
{
    for (size_t i = 0; i < old->n_leaves; i++) {
        const struct identity_leaf *was = old->leaves[i];
        const struct identity_leaf *now = hub_runtime_leaf(&h->rt, was->device_id);
        char address[300], what[200];
        snprintf(address, sizeof(address), HUB_DEVICE_ADDRESS_PREFIX "%s", was->device_id);
        snprintf(what, sizeof(what), "leaf device %s", was->device_id);
        if (!now || !was->generation_id || !now->generation_id ||
            strcmp(was->generation_id, now->generation_id) != 0) {
            /* Another identity now (or none): nothing of the old one's carries over. */
            cut(h, address, what, now ? "it was recreated (new generation id)" : "it was removed",
                true);
            twins_forget(h, address);
            continue;
        }
        if (was->auth != now->auth) {
            cut(h, address, what, "its authentication changed", false);
            continue;
        }
        /* A rotated key (or thumbprint) cuts the connections that authenticated with it; the
         * session stays, and the device reconnects with the new one. */
        for (int s = 0; s < IDENTITY_LEAF_SLOTS; s++) {
            if (!slot_changed(was, now, s))
                continue;
            size_t n = clients_close_address(
                h, address, s ? "its secondary key was replaced" : "its primary key was replaced",
                s);
            log_info(COMP, "%s: its %s %s was replaced: %zu connection%s closed", what,
                     s ? "secondary" : "primary",
                     was->auth == IDENTITY_LEAF_SAS ? "key" : "thumbprint", n, n == 1 ? "" : "s");
        }
    }
}

void auth_identities_changed(struct hub *h, const struct hub_runtime *old)
{
    bool device_changed =
        !old->device_id || !h->rt.device_id || strcasecmp(old->device_id, h->rt.device_id) != 0;
    for (size_t i = 0; i < old->n_modules; i++) {
        const struct hub_module_identity *was = &old->modules[i];
        const struct hub_module_identity *now =
            device_changed ? NULL : hub_runtime_module(&h->rt, was->module_id);
        const char *why;
        bool forget = true;
        if (!now)
            why = device_changed ? "the device identity changed" : "it left the deployment";
        else if (!was->generation_id || !now->generation_id ||
                 strcmp(was->generation_id, now->generation_id) != 0)
            why = "it was recreated (new generation id)";
        else if (was->keylen != now->keylen || memcmp(was->key, now->key, was->keylen) != 0) {
            why = "its key was rotated";
            forget = false;
        } else {
            continue;
        }
        char what[200];
        snprintf(what, sizeof(what), "module %s", was->module_id);
        cut(h, was->module_id, what, why, forget);
    }
    leaves_changed(h, old);
}
