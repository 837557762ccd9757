/* runtime.c — reads the runtime file ledged writes for the hub (src/daemon/hub_link.c): device
 * and module identities, the $edgeHub section, the desired twins and the TLS material's paths. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "runtime.h"

#define RUNTIME_MAX (8u << 20)

static char *dup_str(const json_t *o, const char *key)
{
    const char *s = ljson_str(o, key);
    return s ? strdup(s) : NULL;
}

void hub_runtime_clear(struct hub_runtime *r)
{
    free(r->device_id);
    free(r->iothub_hostname);
    free(r->gateway_hostname);
    free(r->server_cert);
    free(r->server_key);
    free(r->trust_bundle);
    free(r->device_ca);
    for (size_t i = 0; i < r->n_leaves; i++)
        identity_leaf_free(r->leaves[i]);
    free(r->leaves);
    json_decref(r->edge_hub);
    json_decref(r->twins);
    json_decref(r->device);
    for (size_t i = 0; i < r->n_modules; i++) {
        free(r->modules[i].module_id);
        free(r->modules[i].generation_id);
        lcrypto_wipe(r->modules[i].key, sizeof(r->modules[i].key));
    }
    free(r->modules);
    memset(r, 0, sizeof(*r));
}

int hub_runtime_load(const char *path, struct hub_runtime *ret, struct lerr *err)
{
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int r = lfs_read_file(path, RUNTIME_MAX, &text, &len);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", path, strerror(-r));
    _cleanup_json_ json_t *j = NULL;
    struct lerr pe = {0};
    r = ljson_parse(text, len, &j, &pe);
    lcrypto_wipe(text, len);
    if (r < 0)
        return lerr_set(err, r, "%s: %s", path, pe.msg);
    struct hub_runtime rt = {0};
    rt.device_id = dup_str(j, "deviceId");
    rt.iothub_hostname = dup_str(j, "iothubHostname");
    rt.gateway_hostname = dup_str(j, "gatewayHostname");
    json_t *certs = json_object_get(j, "certificates");
    rt.server_cert = dup_str(certs, "serverCert");
    rt.server_key = dup_str(certs, "serverKey");
    rt.trust_bundle = dup_str(certs, "trustBundle");
    rt.device_ca = dup_str(certs, "deviceCa");
    json_t *eh = json_object_get(j, "edgeHub");
    rt.edge_hub = json_is_object(eh) ? json_incref(eh) : NULL;
    json_t *tw = json_object_get(j, "twins");
    rt.twins = json_is_object(tw) ? json_incref(tw) : json_object();
    json_t *dev = json_object_get(j, "device");
    rt.device = json_is_object(dev) ? json_deep_copy(dev) : NULL;
    if (!rt.device_id || !rt.iothub_hostname || !rt.gateway_hostname) {
        hub_runtime_clear(&rt);
        return lerr_set(err, -EINVAL,
                        "%s: deviceId, iothubHostname and gatewayHostname are required", path);
    }
    json_t *mods = json_object_get(j, "modules");
    size_t n = json_object_size(mods);
    rt.modules = calloc(n ? n : 1, sizeof(*rt.modules));
    if (!rt.modules) {
        hub_runtime_clear(&rt);
        return -ENOMEM;
    }
    const char *name;
    json_t *m;
    json_object_foreach (mods, name, m) {
        const char *gen = ljson_str(m, "generationId");
        const char *key = ljson_str(m, "key");
        if (!gen || !key)
            continue;
        struct lbuf raw = LBUF_INIT;
        if (lcrypto_b64_decode(key, strlen(key), &raw) < 0 || raw.len == 0 || raw.len > 32) {
            if (raw.data)
                lcrypto_wipe(raw.data, raw.len);
            lbuf_free(&raw);
            continue;
        }
        struct hub_module_identity *id = &rt.modules[rt.n_modules++];
        id->module_id = strdup(name);
        id->generation_id = strdup(gen);
        memcpy(id->key, raw.data, raw.len);
        id->keylen = raw.len;
        lcrypto_wipe(raw.data, raw.len);
        lbuf_free(&raw);
    }
    /* Leaf devices: an entry the hub cannot use is left out (that device cannot connect), as a
     * module entry without a key is; ledged wrote them, so this is damage, not input. */
    json_t *leaves = json_object_get(j, "leafDevices");
    rt.leaves = calloc(MAX(json_object_size(leaves), (size_t)1), sizeof(*rt.leaves));
    if (!rt.leaves) {
        hub_runtime_clear(&rt);
        return -ENOMEM;
    }
    json_object_foreach (leaves, name, m) {
        struct identity_leaf *l = NULL;
        if (identity_leaf_from_runtime_json(name, m, &l, NULL) == 0)
            rt.leaves[rt.n_leaves++] = l;
    }
    /* the device's own key must not linger in the JSON copy longer than needed */
    *ret = rt;
    return 0;
}

const struct hub_module_identity *hub_runtime_module(const struct hub_runtime *r,
                                                     const char *module_id)
{
    for (size_t i = 0; i < r->n_modules; i++)
        if (strcasecmp(r->modules[i].module_id, module_id) == 0)
            return &r->modules[i];
    return NULL;
}

const struct identity_leaf *hub_runtime_leaf(const struct hub_runtime *r, const char *device_id)
{
    for (size_t i = 0; i < r->n_leaves; i++)
        if (strcasecmp(r->leaves[i]->device_id, device_id) == 0)
            return r->leaves[i];
    return NULL;
}
