/* hub_link.c — what ledged tells ledge-hub, its system module: a runtime file
 * (<run_dir>/hub/runtime.json: 0600 in a 0700 directory on the run tmpfs, so its secrets never
 * reach persistent storage; replaced atomically) with the device identity, the module
 * identities the hub authenticates (generation id and derived key), the leaf devices
 * (devices.c), the $edgeHub section and the modules' desired twins from the deployment, and the
 * paths of its TLS material (with the CA bundle for leaf devices' certificates). The hub reads it
 * at start and again on SIGHUP, which ledged sends whenever any of it changes. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/str.h"
#include "ledged.h"
#include "identity/keys.h"
#include "log/log.h"

#define COMP "hub-link"
#define HUB_MODULE "edgeHub"

static json_t *module_identities(struct ledged *d, const struct deployment *dep)
{
    json_t *mods = json_object();
    for (size_t i = 0; dep && mods && i < dep->n_modules; i++) {
        const struct module_spec *m = &dep->modules[i];
        if (m->system)
            continue;
        const char *gen = agent_module_generation(d->agent, m->name);
        if (!gen)
            continue;
        uint8_t key[IDENTITY_MODULE_KEY_LEN];
        if (identity_module_key(d->keys, d->cfg.device.id, m->name, gen, key) < 0)
            continue;
        struct lbuf b64 = LBUF_INIT;
        if (lcrypto_b64_encode(key, sizeof(key), &b64) == 0)
            json_object_set_new(mods, m->name,
                                json_pack("{s:s, s:s}", "generationId", gen, "key", b64.data));
        lcrypto_wipe(key, sizeof(key));
        if (b64.data)
            lcrypto_wipe(b64.data, b64.len);
        lbuf_free(&b64);
    }
    return mods;
}

static json_t *device_json(struct ledged *d)
{
    const struct identity_device *dev = d->device;
    if (!dev)
        return json_null();
    if (dev->auth == IDENTITY_AUTH_X509)
        return json_pack("{s:s, s:s, s:s}", "auth", "x509", "certFile",
                         d->cfg.device.x509.cert_file, "keyFile", d->cfg.device.x509.key_file);
    struct lbuf b64 = LBUF_INIT;
    json_t *j = NULL;
    if (lcrypto_b64_encode(dev->key, dev->keylen, &b64) == 0)
        j = json_pack("{s:s, s:s}", "auth", "sas", "key", b64.data);
    if (b64.data)
        lcrypto_wipe(b64.data, b64.len);
    lbuf_free(&b64);
    return j ? j : json_null();
}

char *hub_runtime_path(struct ledged *d)
{
    return lstr_printf("%s/hub/runtime.json", d->cfg.run_dir);
}

int hub_runtime_write(struct ledged *d)
{
    const struct deployment *dep = agent_deployment(d->agent);
    const char *device_ca = devices_ca_bundle_write(d);
    json_t *j =
        json_pack("{s:s, s:s, s:s, s:o, s:{s:s, s:s, s:s, s:s*}, s:O?, s:O?, s:o, s:o}", "deviceId",
                  d->cfg.device.id, "iothubHostname", d->cfg.device.iothub_hostname,
                  "gatewayHostname", d->cfg.device.gateway_hostname, "device", device_json(d),
                  "certificates", "serverCert", d->hub_cert_path, "serverKey", d->hub_key_path,
                  "trustBundle", d->trust_bundle_path, "deviceCa", device_ca, "edgeHub",
                  dep ? dep->edge_hub : NULL, "twins", dep ? dep->module_twins : NULL, "modules",
                  module_identities(d, dep), "leafDevices", devices_runtime_json(d));
    if (!j)
        return -ENOMEM;
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    _cleanup_free_ char *path = hub_runtime_path(d);
    _cleanup_free_ char *dir = lstr_printf("%s/hub", d->cfg.run_dir);
    int r = (!text || !path || !dir) ? -ENOMEM : lfs_mkdir_p(dir, 0700);
    if (r == 0)
        r = lfs_write_atomic(path, text, strlen(text), 0600);
    if (text) {
        lcrypto_wipe(text, strlen(text));
        free(text);
    }
    if (r < 0)
        log_error(COMP, "cannot write the hub's runtime file: %s", strerror(-r));
    return r;
}

/* Is SIGHUP caught, blocked or ignored by pid? Not yet, right after exec: the hub blocks it
 * first thing in main() and then reads the runtime file, so a SIGHUP before that point would
 * kill it for nothing (the file it is about to read is already the new one). */
static bool sighup_handled(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    _cleanup_free_ char *text = NULL;
    size_t len;
    if (lfs_read_file(path, 64 * 1024, &text, &len) < 0)
        return true; /* cannot tell: signal as before */
    unsigned long long mask = 0;
    static const char *const keys[] = {"\nSigBlk:", "\nSigIgn:", "\nSigCgt:"};
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        const char *p = strstr(text, keys[i]);
        if (p)
            mask |= strtoull(p + strlen(keys[i]), NULL, 16);
    }
    return mask & (1ull << (SIGHUP - 1));
}

void hub_runtime_changed(struct ledged *d)
{
    /* Before the agent runs there is nothing to tell: its first deployment_applied writes it. */
    if (!d->agent || hub_runtime_write(d) < 0)
        return;
    int pid = agent_module_pid(d->agent, HUB_MODULE);
    if (pid <= 0)
        return;
    if (!sighup_handled(pid))
        log_debug(COMP, "the hub (pid %d) is starting: it reads the new runtime file itself", pid);
    else if (kill(pid, SIGHUP) == 0)
        log_debug(COMP, "asked the hub (pid %d) to reload", pid);
}

void hub_certificates_changed(struct ledged *d)
{
    hub_runtime_changed(d);
    dashboard_certificates_changed(d);
    registry_proxy_certificates_changed(d);
}
